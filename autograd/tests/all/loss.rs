//! cross_entropy (mean over the batch, PyTorch's label smoothing): forward against a plain loop,
//! gradients against finite differences with random labels and smoothing, and its relation to
//! log_softmax.

use crate::common::*;
use autograd::{Graph, Rng, Tensor};
use proptest::prelude::*;
use std::slice::from_ref;

/// Cross-entropy by definition: per row, the smoothed target `t` and `-sum_j t_j ln p_j` with
/// `p = exp(x) / sum exp(x)`; then the mean over rows.
fn reference(x: &Tensor<f64>, labels: &[usize], eps: f64) -> f64 {
    let (b, c) = (x.dim(0), x.dim(1));
    let mut total = 0.0;
    for (r, &label) in labels.iter().enumerate() {
        let z: f64 = (0..c).map(|j| x.at(&[r, j]).exp()).sum();
        for j in 0..c {
            let t = (1.0 - eps) * if j == label { 1.0 } else { 0.0 } + eps / c as f64;
            total -= t * (x.at(&[r, j]).exp() / z).ln();
        }
    }
    total / b as f64
}

/// Logits `[B, C]` (B up to 4, C from the edge-biased dims) and one label per row.
fn batch() -> impl Strategy<Value = (Tensor<f64>, Vec<usize>)> {
    (1..=4usize, dim(7)).prop_flat_map(|(b, c)| (tensor_in(vec![b, c], -4.0, 4.0), prop::collection::vec(0..c, b)))
}

/// Features `[B, K]`, a PyTorch-layout head weight `[C, K]` and labels, for `logits = h W^T`.
fn linear_batch() -> impl Strategy<Value = (Tensor<f64>, Tensor<f64>, Vec<usize>)> {
    (1..=4usize, dim(5), dim(5))
        .prop_flat_map(|(b, k, c)| (tensor(vec![b, k]), tensor(vec![c, k]), prop::collection::vec(0..c, b)))
}

fn smoothing() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.0), Just(0.1), 0.0..=1.0]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn forward_matches_reference((x, labels) in batch(), eps in smoothing()) {
        let got = forward(|g, v| g.cross_entropy(v[0], &labels, eps), from_ref(&x));
        prop_assert_eq!(got.shape(), &[] as &[usize]);
        let want = reference(&x, &labels, eps);
        prop_assert!((got.item() - want).abs() <= 1e-13 * (1.0 + want.abs()), "{} vs {want}", got.item());
    }

    #[test]
    fn gradients_match_finite_differences((x, labels) in batch(), eps in smoothing()) {
        assert_gradcheck(|g, v| g.cross_entropy(v[0], &labels, eps), from_ref(&x));
    }

    #[test]
    fn without_smoothing_it_is_minus_the_mean_log_softmax_at_the_label((x, labels) in batch()) {
        let ce = forward(|g, v| g.cross_entropy(v[0], &labels, 0.0), from_ref(&x)).item();
        let logp = forward(|g, v| g.log_softmax(v[0]), from_ref(&x));
        let want = -labels.iter().enumerate().map(|(r, &l)| logp.at(&[r, l])).sum::<f64>() / labels.len() as f64;
        prop_assert!((ce - want).abs() <= 1e-14 * (1.0 + want.abs()), "{ce} vs {want}");
    }

    #[test]
    fn gradient_is_softmax_minus_target_over_b((x, labels) in batch(), eps in smoothing()) {
        let (b, c) = (x.dim(0), x.dim(1));
        let mut g = Graph::<f64>::new();
        let xv = g.param(&x);
        let loss = g.cross_entropy(xv, &labels, eps);
        g.backward(loss);
        let p = forward(|g, v| g.softmax(v[0]), from_ref(&x));
        let want = Tensor::from_fn(&[b, c], |i| {
            let (r, j) = (i / c, i % c);
            let t = (1.0 - eps) * if j == labels[r] { 1.0 } else { 0.0 } + eps / c as f64;
            (p.data()[i] - t) / b as f64
        });
        assert_close(g.grad(xv).unwrap(), &want, 1e-14);
    }

    #[test]
    fn through_a_linear_layer((h, w, labels) in linear_batch(), eps in smoothing()) {
        assert_gradcheck(
            |g, v| {
                let logits = g.matmul_t(v[0], v[1]);
                g.cross_entropy(logits, &labels, eps)
            },
            &[h, w],
        );
    }
}

#[test]
fn one_class_costs_nothing_and_one_row_is_not_averaged() {
    let x = Tensor::from_f64s(&[3.0, -2.0], &[2, 1]);
    for eps in [0.0, 0.3] {
        let mut g = Graph::<f64>::new();
        let xv = g.param(&x);
        let loss = g.cross_entropy(xv, &[0, 0], eps);
        g.backward(loss);
        assert_eq!(g.value(loss).item(), 0.0);
        assert_eq!(g.grad(xv).unwrap().data(), &[0.0, 0.0]);
    }
    // B = 1: the mean is the row's own loss, ln(1 + e^2) for logits [0, 2] and label 0.
    let one = forward(|g, v| g.cross_entropy(v[0], &[0], 0.0), &[Tensor::from_f64s(&[0.0, 2.0], &[1, 2])]);
    assert_close(&one, &Tensor::scalar((1.0 + 2f64.exp()).ln()), 1e-15);
}

#[test]
fn huge_logits_give_a_finite_exact_loss() {
    // Naively exp(1000) overflows; the loss is 1000 (the wrong class wins by 1000).
    let x = Tensor::from_f64s(&[1000.0, 0.0, -1000.0, 0.0], &[2, 2]);
    let loss = forward(|g, v| g.cross_entropy(v[0], &[1, 1], 0.0), from_ref(&x)).item();
    assert!((loss - 500.0).abs() < 1e-12, "{loss}");
    // With smoothing 0.1 over 2 classes, targets are [0.05, 0.95]: row 0 costs 0.95 * 1000 and
    // row 1 costs 0.05 * 1000, so the mean is 500 again.
    let smooth = forward(|g, v| g.cross_entropy(v[0], &[1, 1], 0.1), &[x]).item();
    assert!((smooth - 500.0).abs() < 1e-9, "{smooth}");
}

#[test]
fn a_masked_class_is_fine_without_smoothing() {
    let x = Tensor::from_f64s(&[f64::NEG_INFINITY, 1.0, 1.0], &[1, 3]);
    let loss = forward(|g, v| g.cross_entropy(v[0], &[1], 0.0), &[x]).item();
    assert!((loss - 2f64.ln()).abs() < 1e-15, "{loss}");
}

#[test]
fn large_f32_batch_matches_the_f64_reference() {
    // 100 rows of 1000 classes: enough rows for the parallel split.
    let mut rng = Rng::seed(9);
    let x = Tensor::<f64>::randn(&[100, 1000], 0.0, 3.0, &mut rng);
    let labels: Vec<usize> = (0..100).map(|_| rng.below(1000)).collect();
    for eps in [0.0, 0.1] {
        let mut g = Graph::<f32>::new();
        let xv = g.param(&x.cast());
        let loss = g.cross_entropy(xv, &labels, eps);
        g.backward(loss);
        let want = reference(&x, &labels, eps);
        assert!((g.value(loss).item() as f64 - want).abs() < 1e-5 * want.abs(), "eps {eps}");
        // (softmax - target) / B, row by row in f64.
        let mut want_grad = Tensor::<f64>::zeros(&[100, 1000]);
        for (r, &label) in labels.iter().enumerate() {
            let z: f64 = (0..1000).map(|j| x.at(&[r, j]).exp()).sum();
            for j in 0..1000 {
                let t = (1.0 - eps) * if j == label { 1.0 } else { 0.0 } + eps / 1000.0;
                want_grad.set(&[r, j], (x.at(&[r, j]).exp() / z - t) / 100.0);
            }
        }
        assert!(g.grad(xv).unwrap().cast::<f64>().allclose(&want_grad, 1e-4, 1e-9), "eps {eps} backward");
    }
}

#[test]
#[should_panic(expected = "cross_entropy: label 5 at row 1 is out of range")]
fn a_label_out_of_range_panics_naming_the_op() {
    let mut g = Graph::<f32>::new();
    let x = g.input(Tensor::zeros(&[2, 5]));
    g.cross_entropy(x, &[0, 5], 0.0);
}

#[test]
#[should_panic(expected = "cross_entropy: 3 labels for logits of shape [2, 5]")]
fn a_label_count_mismatch_panics_naming_the_op() {
    let mut g = Graph::<f32>::new();
    let x = g.input(Tensor::zeros(&[2, 5]));
    g.cross_entropy(x, &[0, 1, 2], 0.0);
}
