//! reshape, permute, transpose, narrow, concat, index_select, broadcast_to: forward against
//! plain loops over multi-indices, gradients against finite differences, and the edge shapes
//! (rank 0, size-1 and empty axes, repeated indices).

use crate::common::*;
use autograd::{Graph, Tensor};
use proptest::prelude::*;

/// A shape with an axis in range: `(shape, axis)`.
fn shape_and_axis() -> impl Strategy<Value = (Vec<usize>, usize)> {
    shape(1, 4, 5).prop_flat_map(|s| {
        let r = s.len();
        (Just(s), 0..r)
    })
}

/// A permutation of `0..r`.
fn permutation(r: usize) -> impl Strategy<Value = Vec<usize>> {
    Just((0..r).collect::<Vec<_>>()).prop_shuffle()
}

/// `(x, target)`: a tensor and a shape with as many elements: its dims shuffled, or flattened.
fn reshape_case() -> impl Strategy<Value = (Tensor<f64>, Vec<usize>)> {
    shape(0, 4, 5).prop_flat_map(|s| {
        let n = s.iter().product::<usize>();
        let target = prop_oneof![Just(s.clone()).prop_shuffle(), Just(vec![n]), Just(vec![1, n, 1])];
        (tensor(s), target)
    })
}

fn permute_case() -> impl Strategy<Value = (Tensor<f64>, Vec<usize>)> {
    shape(0, 4, 5).prop_flat_map(|s| {
        let r = s.len();
        (tensor(s), permutation(r))
    })
}

/// `(x, axis, start, len)` with `start + len <= x.dim(axis)`.
fn narrow_case() -> impl Strategy<Value = (Tensor<f64>, usize, usize, usize)> {
    shape_and_axis()
        .prop_flat_map(|(s, axis)| {
            let d = s[axis];
            (Just(s), Just(axis), 0..=d)
        })
        .prop_flat_map(|(s, axis, start)| {
            let d = s[axis];
            (tensor(s), Just(axis), Just(start), 0..=d - start)
        })
}

/// `(xs, axis)`: one to three tensors that agree on every axis but `axis`, where each has its
/// own size (0 included).
fn concat_case() -> impl Strategy<Value = (Vec<Tensor<f64>>, usize)> {
    shape_and_axis()
        .prop_flat_map(|(s, axis)| {
            (Just(s), Just(axis), prop::collection::vec(prop_oneof![Just(0usize), dim(4)], 1..=3))
        })
        .prop_flat_map(|(s, axis, sizes)| {
            let parts: Vec<_> = sizes
                .into_iter()
                .map(|d| {
                    let mut s = s.clone();
                    s[axis] = d;
                    tensor(s)
                })
                .collect();
            (parts, Just(axis))
        })
}

/// `(x, axis, indices)`: up to 6 indices into `axis`, repeats allowed.
fn index_select_case() -> impl Strategy<Value = (Tensor<f64>, usize, Vec<usize>)> {
    shape_and_axis().prop_flat_map(|(s, axis)| {
        let d = s[axis];
        (tensor(s), Just(axis), prop::collection::vec(0..d, 0..=6))
    })
}

/// `(x, target)`: `x`'s shape is `target` with some leading axes dropped and some axes set to 1.
fn broadcast_case() -> impl Strategy<Value = (Tensor<f64>, Vec<usize>)> {
    (shape(0, 4, 5), any::<u64>()).prop_flat_map(|(target, bits)| {
        let drop = (bits % (target.len() as u64 + 1)) as usize;
        let from: Vec<usize> =
            target[drop..].iter().enumerate().map(|(i, &d)| if bits >> (8 + i) & 1 == 1 { 1 } else { d }).collect();
        (tensor(from), Just(target))
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn reshape_keeps_row_major_order((x, target) in reshape_case()) {
        let y = forward1(|g, v| g.reshape(v, &target), &x);
        prop_assert_eq!(y.shape(), &target[..]);
        for (a, b) in indices(x.shape()).iter().zip(indices(&target)) {
            prop_assert_eq!(x.at(a), y.at(&b));
        }
        gradcheck1(|g, v| g.reshape(v, &target), &x);
    }

    #[test]
    fn permute_matches_reference((x, perm) in permute_case()) {
        let y = forward1(|g, v| g.permute(v, &perm), &x);
        let want_shape: Vec<usize> = perm.iter().map(|&p| x.dim(p)).collect();
        prop_assert_eq!(y.shape(), &want_shape[..]);
        for idx in indices(&want_shape) {
            let mut src = vec![0; idx.len()];
            for (k, &p) in perm.iter().enumerate() {
                src[p] = idx[k];
            }
            prop_assert_eq!(y.at(&idx), x.at(&src));
        }
        gradcheck1(|g, v| g.permute(v, &perm), &x);
    }

    #[test]
    fn transpose_swaps_two_axes((x, a0, a1) in shape_and_axis().prop_flat_map(|(s, a0)| {
        let r = s.len();
        (tensor(s), Just(a0), 0..r)
    })) {
        let s = x.shape().to_vec();
        let y = forward1(|g, v| g.transpose(v, a0, a1), &x);
        let mut want_shape = s.clone();
        want_shape.swap(a0, a1);
        prop_assert_eq!(y.shape(), &want_shape[..]);
        for idx in indices(&s) {
            let mut t = idx.clone();
            t.swap(a0, a1);
            prop_assert_eq!(y.at(&t), x.at(&idx));
        }
        gradcheck1(|g, v| g.transpose(v, a0, a1), &x);
    }

    #[test]
    fn narrow_matches_reference((x, axis, start, len) in narrow_case()) {
        let y = forward1(|g, v| g.narrow(v, axis, start, len), &x);
        let mut want_shape = x.shape().to_vec();
        want_shape[axis] = len;
        prop_assert_eq!(y.shape(), &want_shape[..]);
        for idx in indices(&want_shape) {
            let mut src = idx.clone();
            src[axis] += start;
            prop_assert_eq!(y.at(&idx), x.at(&src));
        }
        gradcheck1(|g, v| g.narrow(v, axis, start, len), &x);
    }

    #[test]
    fn concat_matches_reference((xs, axis) in concat_case()) {
        let y = forward(|g, v| g.concat(v, axis), &xs);
        let mut want_shape = xs[0].shape().to_vec();
        want_shape[axis] = xs.iter().map(|x| x.dim(axis)).sum();
        prop_assert_eq!(y.shape(), &want_shape[..]);
        for idx in indices(&want_shape) {
            // Walk the parts to find the one that holds position idx[axis].
            let (mut part, mut src) = (0, idx.clone());
            while src[axis] >= xs[part].dim(axis) {
                src[axis] -= xs[part].dim(axis);
                part += 1;
            }
            prop_assert_eq!(y.at(&idx), xs[part].at(&src));
        }
        assert_gradcheck(|g, v| g.concat(v, axis), &xs);
    }

    #[test]
    fn concat_of_a_value_with_itself_adds_both_gradients((s, axis) in shape_and_axis().prop_flat_map(|(s, a)| (tensor(s), Just(a)))) {
        gradcheck1(|g, v| g.concat(&[v, v], axis), &s);
    }

    #[test]
    fn index_select_matches_reference((x, axis, idxs) in index_select_case()) {
        let y = forward1(|g, v| g.index_select(v, axis, &idxs), &x);
        let mut want_shape = x.shape().to_vec();
        want_shape[axis] = idxs.len();
        prop_assert_eq!(y.shape(), &want_shape[..]);
        for idx in indices(&want_shape) {
            let mut src = idx.clone();
            src[axis] = idxs[idx[axis]];
            prop_assert_eq!(y.at(&idx), x.at(&src));
        }
        gradcheck1(|g, v| g.index_select(v, axis, &idxs), &x);
    }

    #[test]
    fn broadcast_to_matches_reference((x, target) in broadcast_case()) {
        let y = forward1(|g, v| g.broadcast_to(v, &target), &x);
        prop_assert_eq!(y.shape(), &target[..]);
        let pad = target.len() - x.ndim();
        for idx in indices(&target) {
            let src: Vec<usize> = (0..x.ndim()).map(|k| if x.dim(k) == 1 { 0 } else { idx[k + pad] }).collect();
            prop_assert_eq!(y.at(&idx), x.at(&src));
        }
        gradcheck1(|g, v| g.broadcast_to(v, &target), &x);
    }
}

#[test]
fn reshape_shares_storage() {
    let mut g = Graph::<f32>::new();
    let x = g.input(Tensor::from_fn(&[2, 3], |i| i as f32));
    let y = g.reshape(x, &[3, 1, 2]);
    assert_eq!(g.value(x).data().as_ptr(), g.value(y).data().as_ptr());
}

#[test]
fn permuting_only_size_one_axes_copies_nothing() {
    let mut g = Graph::<f32>::new();
    let x = g.input(Tensor::from_fn(&[4, 1, 3], |i| i as f32));
    let y = g.permute(x, &[1, 0, 2]);
    assert_eq!(g.shape(y), &[1, 4, 3]);
    assert_eq!(g.value(x).data().as_ptr(), g.value(y).data().as_ptr());
    // A real move copies, and matches a hand-written transpose.
    let z = g.transpose(x, 0, 2);
    assert_eq!(g.shape(z), &[3, 1, 4]);
    assert_eq!(g.value(z).data(), &[0.0, 3.0, 6.0, 9.0, 1.0, 4.0, 7.0, 10.0, 2.0, 5.0, 8.0, 11.0]);
}

#[test]
fn rank_zero_edge_cases() {
    let s = Tensor::<f64>::scalar(2.5);
    let y = forward1(|g, v| g.reshape(v, &[1, 1]), &s);
    assert_eq!((y.shape(), y.data()), (&[1usize, 1][..], &[2.5][..]));
    let y = forward1(|g, v| g.permute(v, &[]), &s);
    assert_eq!((y.shape(), y.data()), (&[][..], &[2.5][..]));
    let y = forward1(|g, v| g.broadcast_to(v, &[2, 3]), &s);
    assert_eq!(y.data(), &[2.5; 6]);
    gradcheck1(|g, v| g.broadcast_to(v, &[2, 3]), &s);
    gradcheck1(
        |g, v| {
            let m = g.reshape(v, &[1, 1]);
            g.reshape(m, &[])
        },
        &s,
    );
}

#[test]
fn broadcast_to_sums_gradients_of_copies() {
    let mut g = Graph::<f64>::new();
    let x = g.param(&Tensor::from_f64s(&[1.0, 2.0, 3.0], &[3, 1]));
    let y = g.broadcast_to(x, &[2, 3, 4]);
    let s = g.sum_all(y);
    g.backward(s);
    assert_eq!(g.grad(x).unwrap().data(), &[8.0, 8.0, 8.0]);
}

#[test]
fn repeated_indices_accumulate_and_empty_selections_are_legal() {
    let mut g = Graph::<f64>::new();
    let x = g.param(&Tensor::from_f64s(&[10.0, 20.0, 30.0], &[3]));
    let y = g.index_select(x, 0, &[0, 0, 2, 0]);
    assert_eq!(g.value(y).data(), &[10.0, 10.0, 30.0, 10.0]);
    let e = g.index_select(x, 0, &[]);
    assert_eq!(g.shape(e), &[0]);
    let n = g.narrow(x, 0, 3, 0);
    assert_eq!(g.shape(n), &[0]);
    let all = g.concat(&[y, e, n], 0);
    let s = g.sum_all(all);
    g.backward(s);
    assert_eq!(g.grad(x).unwrap().data(), &[3.0, 0.0, 1.0]);
}

#[test]
fn concat_of_one_input_and_full_narrow_are_identities() {
    let x = Tensor::<f64>::from_fn(&[2, 3, 5], |i| i as f64);
    assert_eq!(forward1(|g, v| g.concat(&[v], 1), &x).data(), x.data());
    assert_eq!(forward1(|g, v| g.narrow(v, 2, 0, 5), &x).data(), x.data());
    assert_eq!(forward1(|g, v| g.transpose(v, 1, 1), &x).data(), x.data());
}

#[test]
#[should_panic(expected = "reshape: cannot view shape [2, 3] as [4]")]
fn reshape_to_another_size_panics() {
    let mut g = Graph::<f32>::new();
    let x = g.input(Tensor::zeros(&[2, 3]));
    g.reshape(x, &[4]);
}

#[test]
#[should_panic(expected = "permute: [0, 0] is not a permutation of the axes of shape [2, 3]")]
fn permute_with_a_repeated_axis_panics() {
    let mut g = Graph::<f32>::new();
    let x = g.input(Tensor::zeros(&[2, 3]));
    g.permute(x, &[0, 0]);
}

#[test]
#[should_panic(expected = "transpose: axes (0, 2) out of range for shape [2, 3]")]
fn transpose_out_of_range_panics() {
    let mut g = Graph::<f32>::new();
    let x = g.input(Tensor::zeros(&[2, 3]));
    g.transpose(x, 0, 2);
}

#[test]
#[should_panic(expected = "narrow: range 2..4 out of bounds for axis 1 of shape [2, 3]")]
fn narrow_past_the_end_panics() {
    let mut g = Graph::<f32>::new();
    let x = g.input(Tensor::zeros(&[2, 3]));
    g.narrow(x, 1, 2, 2);
}

#[test]
#[should_panic(expected = "concat: shapes [[2, 3], [3, 3]] differ outside axis 1")]
fn concat_of_mismatched_shapes_panics() {
    let mut g = Graph::<f32>::new();
    let a = g.input(Tensor::zeros(&[2, 3]));
    let b = g.input(Tensor::zeros(&[3, 3]));
    g.concat(&[a, b], 1);
}

#[test]
#[should_panic(expected = "index_select: index 3 out of range for axis 0 of shape [3, 2]")]
fn index_select_out_of_range_panics() {
    let mut g = Graph::<f32>::new();
    let x = g.input(Tensor::zeros(&[3, 2]));
    g.index_select(x, 0, &[0, 3]);
}

#[test]
#[should_panic(expected = "broadcast_to: cannot broadcast shape [2, 3] to [3, 3]")]
fn broadcast_to_an_incompatible_shape_panics() {
    let mut g = Graph::<f32>::new();
    let x = g.input(Tensor::zeros(&[2, 3]));
    g.broadcast_to(x, &[3, 3]);
}
