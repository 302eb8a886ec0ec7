//! sum, mean (over any set of axes, or all), max and argmax: forward against plain loops over
//! multi-indices, gradients against finite differences, edge shapes (rank 0, size-1 and empty
//! axes, an empty list of axes), and large f32 inputs that take the parallel paths.

use crate::common::*;
use autograd::ops::reduce::argmax;
use autograd::{Graph, Tensor};
use proptest::prelude::*;

/// The sum over `axes` by definition: every element added into the output slot found by
/// zeroing its reduced coordinates.
fn reference_sum(x: &Tensor<f64>, axes: &[usize], keepdim: bool) -> Tensor<f64> {
    let keep: Vec<usize> = (0..x.ndim()).map(|k| if axes.contains(&k) { 1 } else { x.dim(k) }).collect();
    let mut y = Tensor::zeros(&keep);
    for idx in indices(x.shape()) {
        let mut o = idx.clone();
        for &a in axes {
            o[a] = 0;
        }
        let v = y.at(&o) + x.at(&idx);
        y.set(&o, v);
    }
    if keepdim {
        y
    } else {
        let squeezed: Vec<usize> = (0..x.ndim()).filter(|k| !axes.contains(k)).map(|k| x.dim(k)).collect();
        y.reshape(&squeezed)
    }
}

/// The number of elements summed into each output.
fn count(shape: &[usize], axes: &[usize]) -> usize {
    axes.iter().map(|&a| shape[a]).product()
}

/// `(max, first argmax)` along `axis` by definition, with the reduced axis kept as size 1.
fn reference_max(x: &Tensor<f64>, axis: usize) -> (Tensor<f64>, Vec<usize>) {
    let mut keep = x.shape().to_vec();
    keep[axis] = 1;
    let mut best = Tensor::zeros(&keep);
    let mut arg = Vec::new();
    for idx in indices(&keep) {
        let mut src = idx.clone();
        let (mut b, mut a) = (x.at(&src), 0);
        for k in 1..x.dim(axis) {
            src[axis] = k;
            if x.at(&src) > b {
                (b, a) = (x.at(&src), k);
            }
        }
        best.set(&idx, b);
        arg.push(a);
    }
    (best, arg)
}

/// `(x, axes, keepdim)`: any subset of the axes, in any order.
fn sum_case() -> impl Strategy<Value = (Tensor<f64>, Vec<usize>, bool)> {
    shape(0, 4, 5).prop_flat_map(|s| {
        let r = s.len();
        let axes = prop::sample::subsequence((0..r).collect::<Vec<_>>(), 0..=r).prop_shuffle();
        (tensor(s), axes, any::<bool>())
    })
}

/// `(x, axis, keepdim)`, with values from a small set so that ties are common.
fn max_case() -> impl Strategy<Value = (Tensor<f64>, usize, bool)> {
    shape(1, 4, 5).prop_flat_map(|s| {
        let (r, n) = (s.len(), s.iter().product::<usize>());
        let values = prop::collection::vec(-3i32..3, n)
            .prop_map(move |v| Tensor::from_vec(v.into_iter().map(f64::from).collect(), &s));
        (values, 0..r, any::<bool>())
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn sum_and_mean_match_reference((x, axes, keepdim) in sum_case()) {
        let want = reference_sum(&x, &axes, keepdim);
        let got = forward1(|g, v| g.sum(v, &axes, keepdim), &x);
        assert_close(&got, &want, 1e-13);
        let got = forward1(|g, v| g.mean(v, &axes, keepdim), &x);
        let n = count(x.shape(), &axes) as f64;
        assert_close(&got, &want.map(|s| s / n), 1e-13);
    }

    #[test]
    fn sum_and_mean_gradients_match_finite_differences((x, axes, keepdim) in sum_case()) {
        gradcheck1(|g, v| g.sum(v, &axes, keepdim), &x);
        gradcheck1(|g, v| g.mean(v, &axes, keepdim), &x);
    }

    #[test]
    fn sum_all_and_mean_all_match_reference(x in shape(0, 4, 5).prop_flat_map(tensor)) {
        let total: f64 = indices(x.shape()).iter().map(|i| x.at(i)).sum();
        let s = forward1(|g, v| g.sum_all(v), &x);
        prop_assert_eq!(s.shape(), &[] as &[usize]);
        assert_close(&s, &Tensor::scalar(total), 1e-13);
        let m = forward1(|g, v| g.mean_all(v), &x);
        prop_assert_eq!(m.shape(), &[] as &[usize]);
        assert_close(&m, &Tensor::scalar(total / x.numel() as f64), 1e-13);
        gradcheck1(|g, v| g.sum_all(v), &x);
        gradcheck1(|g, v| g.mean_all(v), &x);
    }

    #[test]
    fn max_and_argmax_match_reference((x, axis, keepdim) in max_case()) {
        let (want, want_arg) = reference_max(&x, axis);
        let got = forward1(|g, v| g.max(v, axis, keepdim), &x);
        let shape = if keepdim { want.shape().to_vec() } else { [&x.shape()[..axis], &x.shape()[axis + 1..]].concat() };
        prop_assert_eq!(got.shape(), &shape[..]);
        prop_assert_eq!(got.data(), want.data());
        prop_assert_eq!(argmax(&x, axis), want_arg);
    }
}

#[test]
fn empty_list_of_axes_is_the_identity() {
    let x = Tensor::<f64>::from_fn(&[2, 1, 3], |i| i as f64 - 2.0);
    for keepdim in [false, true] {
        assert_eq!(forward1(|g, v| g.sum(v, &[], keepdim), &x).data(), x.data());
        let m = forward1(|g, v| g.mean(v, &[], keepdim), &x);
        assert_eq!((m.shape(), m.data()), (x.shape(), x.data()));
    }
    gradcheck1(|g, v| g.sum(v, &[], false), &x);
    gradcheck1(|g, v| g.mean(v, &[], true), &x);
}

#[test]
fn rank_zero_and_size_one_axes() {
    let s = Tensor::<f64>::scalar(-1.5);
    for y in [
        forward1(|g, v| g.sum_all(v), &s),
        forward1(|g, v| g.mean_all(v), &s),
        forward1(|g, v| g.sum(v, &[], true), &s),
    ] {
        assert_eq!((y.shape(), y.item()), (&[][..], -1.5));
    }
    gradcheck1(|g, v| g.mean_all(v), &s);

    // Summing a size-1 axis only drops it (or keeps it with keepdim).
    let x = Tensor::<f64>::from_fn(&[3, 1, 2], |i| i as f64);
    let y = forward1(|g, v| g.sum(v, &[1], false), &x);
    assert_eq!((y.shape(), y.data()), (&[3usize, 2][..], x.data()));
    let y = forward1(|g, v| g.mean(v, &[1], true), &x);
    assert_eq!((y.shape(), y.data()), (x.shape(), x.data()));
}

#[test]
fn sums_over_empty_axes_are_zero() {
    let x = Tensor::<f64>::zeros(&[2, 0, 3]);
    let y = forward1(|g, v| g.sum(v, &[1], false), &x);
    assert_eq!((y.shape(), y.data()), (&[2usize, 3][..], &[0.0; 6][..]));
    let y = forward1(|g, v| g.sum(v, &[0, 2], true), &x);
    assert_eq!(y.shape(), &[1, 0, 1]);
    assert_eq!(forward1(|g, v| g.sum_all(v), &x).item(), 0.0);
}

#[test]
fn known_values() {
    // [[0, 1, 2], [3, 4, 5]]
    let x = Tensor::<f64>::from_fn(&[2, 3], |i| i as f64);
    assert_eq!(forward1(|g, v| g.sum(v, &[0], false), &x).data(), &[3.0, 5.0, 7.0]);
    assert_eq!(forward1(|g, v| g.sum(v, &[1], true), &x).data(), &[3.0, 12.0]);
    assert_eq!(forward1(|g, v| g.mean(v, &[1, 0], false), &x).item(), 2.5);
    assert_eq!(forward1(|g, v| g.max(v, 0, false), &x).data(), &[3.0, 4.0, 5.0]);
    assert_eq!(argmax(&x, 1), vec![2, 2]);
    assert_eq!(argmax(&Tensor::<f32>::from_f64s(&[1.0, 3.0, 3.0, 0.0], &[4]), 0), vec![1]);
}

#[test]
fn max_is_a_constant_on_the_tape() {
    let mut g = Graph::<f64>::new();
    let x = g.param(&Tensor::from_f64s(&[1.0, 5.0, 2.0, 7.0, 0.0, 3.0], &[2, 3]));
    let m = g.max(x, 1, true);
    assert!(!g.requires_grad(m));
    assert_eq!(g.value(m).data(), &[5.0, 7.0]);
    // d/dx sum(x - max(x)) = 1 everywhere: nothing flows through the max.
    let shifted = g.sub(x, m);
    let s = g.sum_all(shifted);
    g.backward(s);
    assert_eq!(g.grad(x).unwrap().data(), &[1.0; 6]);
}

#[test]
fn nan_propagates_through_max_and_argmax() {
    let x = Tensor::<f64>::from_f64s(&[1.0, f64::NAN, 3.0, 4.0, 2.0, f64::NAN], &[2, 3]);
    let m = forward1(|g, v| g.max(v, 1, false), &x);
    assert!(m.data()[0].is_nan() && m.data()[1].is_nan());
    assert_eq!(argmax(&x, 1), vec![1, 2]);
}

#[test]
fn large_f32_reductions_match_f64() {
    // Big enough for the parallel paths: last axes (contiguous runs), leading and middle axes
    // (row sums), and non-adjacent axes (the general path).
    let x64 = Tensor::<f64>::from_fn(&[6, 40, 7, 29], |i| ((i * 7919) % 1000) as f64 / 1000.0 - 0.3);
    let x32: Tensor<f32> = x64.cast();
    for axes in [&[3][..], &[2, 3], &[0], &[1], &[1, 2], &[0, 2], &[1, 3], &[0, 1, 2, 3]] {
        let want = reference_sum(&x64, axes, false);
        let mut g = Graph::<f32>::inference();
        let v = g.input(x32.clone());
        let y = g.sum(v, axes, false);
        assert_close(&g.value(y).cast::<f64>(), &want, 1e-5);
        let y = g.mean(v, axes, true);
        let n = count(x64.shape(), axes) as f64;
        assert_close(&g.value(y).cast::<f64>(), &reference_sum(&x64, axes, true).map(|s| s / n), 1e-5);
    }
}

#[test]
fn long_f32_sums_keep_their_precision() {
    // An f32 accumulator drifts visibly over a million terms of 0.1.
    let x = Tensor::<f32>::full(&[1_000_000], 0.1);
    let mut g = Graph::<f32>::inference();
    let v = g.input(x);
    let s = g.sum_all(v);
    let want = 1_000_000.0 * f64::from(0.1f32);
    assert!((g.value(s).item() as f64 - want).abs() <= 1e-6 * want, "{} vs {want}", g.value(s).item());
}

#[test]
#[should_panic(expected = "sum: axis 3 out of range for shape [2, 3, 4]")]
fn sum_axis_out_of_range_panics() {
    let mut g = Graph::<f32>::new();
    let x = g.input(Tensor::zeros(&[2, 3, 4]));
    g.sum(x, &[0, 3], false);
}

#[test]
#[should_panic(expected = "mean: axis 1 repeated in [1, 1] (shape [2, 3])")]
fn mean_repeated_axis_panics() {
    let mut g = Graph::<f32>::new();
    let x = g.input(Tensor::zeros(&[2, 3]));
    g.mean(x, &[1, 1], true);
}

#[test]
#[should_panic(expected = "max: axis 0 out of range for shape []")]
fn max_of_a_scalar_panics() {
    let mut g = Graph::<f32>::new();
    let x = g.input(Tensor::scalar(1.0));
    g.max(x, 0, false);
}

#[test]
#[should_panic(expected = "argmax: cannot reduce the empty axis 1 of shape [2, 0]")]
fn argmax_of_an_empty_axis_panics() {
    argmax(&Tensor::<f32>::zeros(&[2, 0]), 1);
}
