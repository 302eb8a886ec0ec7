//! The fused attention op: forward against loops, gradients against finite differences (with
//! and without attention dropout), and agreement with the same math composed from plain ops.

use crate::common::*;
use autograd::{Graph, Rng, Tensor, Var};
use proptest::prelude::*;

/// Loops over batch, head, query and key: the definition.
fn reference(qkv: &Tensor<f64>, heads: usize) -> (Tensor<f64>, Tensor<f64>) {
    let (b, n, d3) = (qkv.dim(0), qkv.dim(1), qkv.dim(2));
    let d = d3 / 3;
    let dh = d / heads;
    let mut out = Tensor::zeros(&[b, n, d]);
    let mut probs = Tensor::zeros(&[b, heads, n, n]);
    for bi in 0..b {
        for h in 0..heads {
            for i in 0..n {
                let s: Vec<f64> = (0..n)
                    .map(|j| {
                        (0..dh).map(|e| qkv.at(&[bi, i, h * dh + e]) * qkv.at(&[bi, j, d + h * dh + e])).sum::<f64>()
                            / (dh as f64).sqrt()
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::MIN, f64::max);
                let z: f64 = s.iter().map(|v| (v - m).exp()).sum();
                for (j, sj) in s.iter().enumerate() {
                    probs.set(&[bi, h, i, j], (sj - m).exp() / z);
                }
                for e in 0..dh {
                    let v: f64 = (0..n).map(|j| probs.at(&[bi, h, i, j]) * qkv.at(&[bi, j, 2 * d + h * dh + e])).sum();
                    out.set(&[bi, i, h * dh + e], v);
                }
            }
        }
    }
    (out, probs)
}

/// The same attention from unfused ops: reshape, permute, narrow, matmul, softmax.
fn composed(g: &mut Graph<f64>, qkv: Var, heads: usize) -> Var {
    let &[b, n, d3] = g.shape(qkv) else { unreachable!() };
    let dh = d3 / 3 / heads;
    let t = g.reshape(qkv, &[b, n, 3, heads, dh]);
    let t = g.permute(t, &[2, 0, 3, 1, 4]);
    let mut part = |i| {
        let x = g.narrow(t, 0, i, 1);
        g.reshape(x, &[b, heads, n, dh])
    };
    let (q, k, v) = (part(0), part(1), part(2));
    let s = g.matmul_t(q, k);
    let s = g.mul_scalar(s, 1.0 / (dh as f64).sqrt());
    let p = g.softmax(s);
    let o = g.matmul(p, v);
    let o = g.permute(o, &[0, 2, 1, 3]);
    g.reshape(o, &[b, n, heads * dh])
}

fn case() -> impl Strategy<Value = (Tensor<f64>, usize)> {
    (1usize..3, 1usize..6, 1usize..4, 1usize..4)
        .prop_flat_map(|(b, n, heads, dh)| (tensor(vec![b, n, 3 * heads * dh]), Just(heads)))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn forward_matches_loops((qkv, heads) in case()) {
        let mut g = Graph::<f64>::inference();
        let x = g.input(qkv.clone());
        let (y, p) = g.attention_with_probs(x, heads, 0.0, &mut Rng::seed(0));
        let (want_y, want_p) = reference(&qkv, heads);
        assert_close(g.value(y), &want_y, 1e-12);
        assert_close(g.value(p), &want_p, 1e-12);
    }

    #[test]
    fn gradients_match_finite_differences((qkv, heads) in case()) {
        // Probabilities recomputed in backward, and kept.
        assert_gradcheck(|g, v| g.attention(v[0], heads, 0.0, &mut Rng::seed(1)), std::slice::from_ref(&qkv));
        assert_gradcheck(|g, v| g.attention_with_probs(v[0], heads, 0.0, &mut Rng::seed(1)).0, std::slice::from_ref(&qkv));
        // With dropout: the mask comes from a freshly seeded RNG on every evaluation.
        assert_gradcheck(|g, v| g.attention(v[0], heads, 0.3, &mut Rng::seed(2)), std::slice::from_ref(&qkv));
        assert_gradcheck(|g, v| g.attention_with_probs(v[0], heads, 0.3, &mut Rng::seed(2)).0, &[qkv]);
    }

    #[test]
    fn equals_the_composed_ops_forward_and_backward((qkv, heads) in case()) {
        let run = |fused: bool| {
            let mut g = Graph::<f64>::new();
            let x = g.param(&qkv);
            let y = if fused { g.attention(x, heads, 0.0, &mut Rng::seed(0)) } else { composed(&mut g, x, heads) };
            let w = Tensor::from_fn(g.shape(y), |i| (i as f64 * 0.37).sin());
            g.backward_with(y, w);
            (g.value(y).clone(), g.grad(x).unwrap().clone())
        };
        let (y1, g1) = run(true);
        let (y2, g2) = run(false);
        assert_close(&y1, &y2, 1e-12);
        assert_close(&g1, &g2, 1e-12);
    }
}

#[test]
fn dropout_is_off_in_eval_and_drops_in_training() {
    let qkv = Tensor::<f32>::randn(&[2, 5, 12], 0.0, 1.0, &mut Rng::seed(3));
    let run = |train: bool, seed: u64| {
        let mut g = if train { Graph::new() } else { Graph::inference() };
        let x = g.input(qkv.clone());
        let y = g.attention(x, 2, 0.5, &mut Rng::seed(seed));
        g.value(y).clone()
    };
    assert_eq!(run(false, 1).data(), run(false, 2).data());
    assert_ne!(run(true, 1).data(), run(true, 2).data());
}

#[test]
#[should_panic(expected = "attention: qkv must be")]
fn a_width_not_divisible_into_heads_panics_naming_the_op() {
    let mut g = Graph::<f32>::new();
    let x = g.input(Tensor::zeros(&[1, 2, 10]));
    g.attention(x, 2, 0.0, &mut Rng::seed(0));
}

#[test]
fn kept_and_recomputed_probabilities_give_the_same_gradients() {
    let qkv = Tensor::<f32>::randn(&[3, 7, 18], 0.0, 1.0, &mut Rng::seed(5));
    let run = |keep: bool| {
        let mut g = Graph::<f32>::new();
        let x = g.param(&qkv);
        let y = if keep {
            g.attention_with_probs(x, 3, 0.2, &mut Rng::seed(6)).0
        } else {
            g.attention(x, 3, 0.2, &mut Rng::seed(6))
        };
        let w = Tensor::from_fn(g.shape(y), |i| (i as f32 * 0.3).cos());
        g.backward_with(y, w);
        (g.value(y).clone(), g.grad(x).unwrap().clone())
    };
    let (y1, g1) = run(true);
    let (y2, g2) = run(false);
    assert_eq!(y1.data(), y2.data());
    assert_eq!(g1.data(), g2.data());
}
