//! softmax and log_softmax over the last axis: forward against a plain loop, gradients against
//! finite differences, and the identities the two must satisfy.

use crate::common::*;
use autograd::{Graph, Tensor, Var};
use proptest::prelude::*;
use std::slice::from_ref;

/// Softmax (or its log) by definition, row by row. No max is subtracted: the test values are
/// small enough for exp not to overflow, which keeps this reference independent of the op's trick.
fn reference(x: &Tensor<f64>, log: bool) -> Tensor<f64> {
    let d = *x.shape().last().unwrap();
    let mut y = x.clone();
    for row in y.data_mut().chunks_mut(d) {
        let z: f64 = row.iter().map(|v| v.exp()).sum();
        for v in row.iter_mut() {
            *v = if log { *v - z.ln() } else { v.exp() / z };
        }
    }
    y
}

type UnaryOp = fn(&mut Graph<f64>, Var) -> Var;
const OPS: [(&str, UnaryOp, bool); 2] =
    [("softmax", |g, x| g.softmax(x), false), ("log_softmax", |g, x| g.log_softmax(x), true)];

fn input() -> impl Strategy<Value = Tensor<f64>> {
    shape(1, 3, 7).prop_flat_map(|s| tensor_in(s, -5.0, 5.0))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn forward_matches_reference(x in input()) {
        for (name, op, log) in OPS {
            let got = forward(|g, v| op(g, v[0]), from_ref(&x));
            let want = reference(&x, log);
            prop_assert!(got.allclose(&want, 1e-13, 1e-15), "{name}: {got:?} vs {want:?}");
        }
    }

    #[test]
    fn gradients_match_finite_differences(x in shape(1, 3, 7).prop_flat_map(tensor)) {
        for (_, op, _) in OPS {
            assert_gradcheck(|g, v| op(g, v[0]), from_ref(&x));
        }
    }

    #[test]
    fn rows_sum_to_one(x in input()) {
        let y = forward(|g, v| g.softmax(v[0]), from_ref(&x));
        let d = *x.shape().last().unwrap();
        for row in y.data().chunks(d) {
            prop_assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-14, "{row:?}");
            prop_assert!(row.iter().all(|&p| p > 0.0));
        }
    }

    #[test]
    fn adding_a_constant_per_row_changes_nothing(x in input(), shift in prop::collection::vec(-50.0f64..50.0, 1..=343)) {
        let d = *x.shape().last().unwrap();
        let shifted = Tensor::from_fn(x.shape(), |i| x.data()[i] + shift[(i / d) % shift.len()]);
        for (name, op, _) in OPS {
            let a = forward(|g, v| op(g, v[0]), from_ref(&x));
            let b = forward(|g, v| op(g, v[0]), from_ref(&shifted));
            prop_assert!(b.allclose(&a, 1e-12, 1e-13), "{name}: {b:?} vs {a:?}");
        }
    }

    #[test]
    fn log_softmax_is_log_of_softmax(x in input()) {
        let p = forward(|g, v| g.softmax(v[0]), from_ref(&x));
        let logp = forward(|g, v| g.log_softmax(v[0]), &[x]);
        prop_assert!(logp.allclose(&p.map(f64::ln), 1e-13, 1e-13), "{logp:?} vs ln {p:?}");
    }
}

#[test]
fn width_one_is_a_constant_one_with_zero_gradient() {
    let x = Tensor::from_f64s(&[-3.0, 0.5, 7.0], &[3, 1]);
    assert_eq!(forward(|g, v| g.softmax(v[0]), from_ref(&x)).data(), &[1.0; 3]);
    assert_eq!(forward(|g, v| g.log_softmax(v[0]), from_ref(&x)).data(), &[0.0; 3]);
    let mut g = Graph::<f64>::new();
    let xv = g.param(&x);
    let y = g.softmax(xv);
    g.backward_with(y, Tensor::from_f64s(&[1.0, -2.0, 3.0], &[3, 1]));
    assert_eq!(g.grad(xv).unwrap().data(), &[0.0; 3]);
}

#[test]
fn huge_logits_do_not_overflow() {
    // exp(1000) is inf in f64; shifted by the row max these are the logits [0, 1, 2].
    let x = Tensor::from_f64s(&[1000.0, 1001.0, 1002.0, -1000.0, -1001.0, -1002.0], &[2, 3]);
    let small = Tensor::from_f64s(&[0.0, 1.0, 2.0, 0.0, -1.0, -2.0], &[2, 3]);
    for (name, op, log) in OPS {
        let got = forward(|g, v| op(g, v[0]), from_ref(&x));
        assert!(got.data().iter().all(|v| v.is_finite()), "{name}: {got:?}");
        assert_close(&got, &reference(&small, log), 1e-14);
    }
    assert_gradcheck(|g, v| g.log_softmax(v[0]), &[x]);
}

#[test]
fn large_f32_rows_match_the_f64_reference_forward_and_backward() {
    // Well above the parallel grain, so several threads' rows are checked.
    let (rows, d) = (301, 257);
    let mut rng = autograd::Rng::seed(1);
    let x = Tensor::<f64>::randn(&[rows, d], 0.0, 3.0, &mut rng);
    let seed = Tensor::<f64>::randn(&[rows, d], 0.0, 1.0, &mut rng);
    for (name, log) in [("softmax", false), ("log_softmax", true)] {
        let mut g = Graph::<f32>::new();
        let xv = g.param(&x.cast());
        let y = if log { g.log_softmax(xv) } else { g.softmax(xv) };
        g.backward_with(y, seed.cast());
        let want = reference(&x, log);
        assert!(g.value(y).cast::<f64>().allclose(&want, 1e-5, 1e-6), "{name} forward");
        // dx from the textbook formulas, row by row in f64.
        let p = reference(&x, false);
        let mut dx = Tensor::<f64>::zeros(&[rows, d]);
        for r in 0..rows {
            let (p, gr) = (&p.data()[r * d..(r + 1) * d], &seed.data()[r * d..(r + 1) * d]);
            let dot: f64 = p.iter().zip(gr).map(|(p, g)| p * g).sum();
            let gsum: f64 = gr.iter().sum();
            for j in 0..d {
                let v = if log { gr[j] - p[j] * gsum } else { p[j] * (gr[j] - dot) };
                dx.set(&[r, j], v);
            }
        }
        assert!(g.grad(xv).unwrap().cast::<f64>().allclose(&dx, 1e-4, 1e-5), "{name} backward");
    }
}

#[test]
#[should_panic(expected = "softmax: needs a tensor of rank >= 1")]
fn scalar_input_panics_naming_the_op() {
    let mut g = Graph::<f32>::new();
    let x = g.input(Tensor::scalar(1.0));
    g.softmax(x);
}
