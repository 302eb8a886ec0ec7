//! matmul and batched matmul with transposed operands: forward against a triple loop, gradients
//! against finite differences, on shapes that include 1 and primes.

use crate::common::*;
use autograd::{Graph, Tensor};
use proptest::prelude::*;

/// `op(a) @ op(b)` for 2-D row-major matrices, by definition.
fn naive(a: &Tensor<f64>, b: &Tensor<f64>, ta: bool, tb: bool) -> Tensor<f64> {
    let at = |i: usize, k: usize| if ta { a.at(&[k, i]) } else { a.at(&[i, k]) };
    let bt = |k: usize, j: usize| if tb { b.at(&[j, k]) } else { b.at(&[k, j]) };
    let (m, k) = if ta { (a.dim(1), a.dim(0)) } else { (a.dim(0), a.dim(1)) };
    let n = if tb { b.dim(0) } else { b.dim(1) };
    Tensor::from_fn(&[m, n], |f| {
        let (i, j) = (f / n, f % n);
        (0..k).map(|p| at(i, p) * bt(p, j)).sum()
    })
}

fn mat(rows: usize, cols: usize, t: bool) -> Vec<usize> {
    if t {
        vec![cols, rows]
    } else {
        vec![rows, cols]
    }
}

/// (batch axes, m, k, n, trans_a, trans_b, shared_b)
fn case() -> impl Strategy<Value = (Vec<usize>, usize, usize, usize, bool, bool, bool)> {
    (shape(0, 2, 3), dim(9), dim(9), dim(9), any::<bool>(), any::<bool>(), any::<bool>())
}

fn inputs(
    c: &(Vec<usize>, usize, usize, usize, bool, bool, bool),
) -> impl Strategy<Value = (Tensor<f64>, Tensor<f64>)> {
    let (batch, m, k, n, ta, tb, shared) = c.clone();
    let mut sa = batch.clone();
    sa.extend(mat(m, k, ta));
    let mut sb = if shared || batch.is_empty() { vec![] } else { batch.clone() };
    sb.extend(mat(k, n, tb));
    (tensor(sa), tensor(sb))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn forward_matches_triple_loop(c in case().prop_flat_map(|c| (Just(c.clone()), inputs(&c)))) {
        let ((batch, m, k, n, ta, tb, _), (a, b)) = c;
        let y = forward(|g, v| g.matmul_ex(v[0], v[1], ta, tb), &[a.clone(), b.clone()]);
        let mut want_shape = batch.clone();
        want_shape.extend([m, n]);
        prop_assert_eq!(y.shape(), &want_shape[..]);
        let count: usize = batch.iter().product();
        let (asz, bsz) = (m * k, k * n);
        for p in 0..count {
            let ap = Tensor::from_vec(a.data()[p * asz..(p + 1) * asz].to_vec(), &mat(m, k, ta));
            let boff = if b.ndim() == 2 { 0 } else { p * bsz };
            let bp = Tensor::from_vec(b.data()[boff..boff + bsz].to_vec(), &mat(k, n, tb));
            let want = naive(&ap, &bp, ta, tb);
            let got = Tensor::from_vec(y.data()[p * m * n..(p + 1) * m * n].to_vec(), &[m, n]);
            assert_close(&got, &want, 1e-13);
        }
    }

    #[test]
    fn gradients_match_finite_differences(c in case().prop_flat_map(|c| (Just(c.clone()), inputs(&c)))) {
        let ((_, _, _, _, ta, tb, _), (a, b)) = c;
        assert_gradcheck(|g, v| g.matmul_ex(v[0], v[1], ta, tb), &[a, b]);
    }
}

#[test]
fn matmul_t_is_a_linear_layer_product() {
    // y = x W^T with W stored [out, in].
    let mut g = Graph::<f64>::new();
    let x = g.input(Tensor::from_f64s(&[1.0, 2.0], &[1, 2]));
    let w = g.input(Tensor::from_f64s(&[1.0, 0.0, 0.0, 1.0, 1.0, 1.0], &[3, 2]));
    let y = g.matmul_t(x, w);
    assert_eq!(g.value(y).data(), &[1.0, 2.0, 3.0]);
}

#[test]
#[should_panic(expected = "matmul: inner dimensions differ")]
fn mismatched_inner_dims_panic_with_shapes() {
    let mut g = Graph::<f32>::new();
    let a = g.input(Tensor::zeros(&[2, 3]));
    let b = g.input(Tensor::zeros(&[4, 5]));
    g.matmul(a, b);
}
