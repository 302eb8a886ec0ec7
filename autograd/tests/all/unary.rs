//! neg, exp, log, sqrt, tanh, powf: forward against a plain loop over multi-indices, gradients
//! against finite differences (log, sqrt and powf on inputs in [0.5, 2], away from their
//! singularities at 0).

use crate::common::*;
use autograd::{Graph, Tensor, Var};
use proptest::prelude::*;

/// `f` applied at every multi-index, by definition.
fn reference(x: &Tensor<f64>, f: impl Fn(f64) -> f64) -> Tensor<f64> {
    let mut y = Tensor::zeros(x.shape());
    for idx in indices(x.shape()) {
        y.set(&idx, f(x.at(&idx)));
    }
    y
}

type UnOp = fn(&mut Graph<f64>, Var) -> Var;
type Reference = fn(f64) -> f64;
/// (name, op, reference, whether the op needs inputs in [0.5, 2])
const OPS: [(&str, UnOp, Reference, bool); 5] = [
    ("neg", |g, x| g.neg(x), |x| -x, false),
    ("exp", |g, x| g.exp(x), f64::exp, false),
    ("log", |g, x| g.log(x), f64::ln, true),
    ("sqrt", |g, x| g.sqrt(x), f64::sqrt, true),
    ("tanh", |g, x| g.tanh(x), f64::tanh, false),
];

fn any_tensor() -> impl Strategy<Value = Tensor<f64>> {
    shape(0, 4, 5).prop_flat_map(tensor)
}

fn positive_tensor() -> impl Strategy<Value = Tensor<f64>> {
    shape(0, 4, 5).prop_flat_map(|s| tensor_in(s, 0.5, 2.0))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn forward_matches_reference(x in any_tensor(), xp in positive_tensor(), p in -2.5f64..2.5) {
        for (name, op, f, positive) in OPS {
            let x = if positive { &xp } else { &x };
            let got = forward1(op, x);
            let want = reference(x, f);
            prop_assert!(got.allclose(&want, 1e-15, 0.0), "{name}: {got:?} vs {want:?}");
        }
        let got = forward1(|g, v| g.powf(v, p), &xp);
        prop_assert!(got.allclose(&reference(&xp, |x| x.powf(p)), 1e-15, 0.0));
    }

    #[test]
    fn gradients_match_finite_differences(x in any_tensor(), xp in positive_tensor()) {
        for (_, op, _, positive) in OPS {
            let x = if positive { &xp } else { &x };
            gradcheck1(op, x);
        }
    }

    #[test]
    fn powf_gradients_match_finite_differences(x in positive_tensor(), p in -2.5f64..2.5) {
        gradcheck1(|g, v| g.powf(v, p), &x);
    }

    #[test]
    fn integral_powers_of_negative_bases(x in any_tensor(), p in 0i32..4) {
        let got = forward1(|g, v| g.powf(v, p as f64), &x);
        prop_assert!(got.allclose(&reference(&x, |x| x.powi(p)), 1e-14, 0.0));
        gradcheck1(|g, v| g.powf(v, p as f64), &x);
    }
}

#[test]
fn rank_zero_inputs_keep_their_shape() {
    let x = Tensor::<f64>::scalar(1.5);
    for (name, op, f, _) in OPS {
        let y = forward1(op, &x);
        assert_eq!(y.shape(), &[] as &[usize], "{name}");
        assert_eq!(y.item(), f(1.5), "{name}");
        gradcheck1(op, &x);
    }
    gradcheck1(|g, v| g.powf(v, 0.5), &x);
}

#[test]
fn derivatives_at_known_points() {
    // d/dx at x = 1 of -x, e^x, ln x, sqrt x, tanh x, x^3.
    let ops: [(UnOp, f64); 6] = [
        (|g, x| g.neg(x), -1.0),
        (|g, x| g.exp(x), 1f64.exp()),
        (|g, x| g.log(x), 1.0),
        (|g, x| g.sqrt(x), 0.5),
        (|g, x| g.tanh(x), 1.0 - 1f64.tanh().powi(2)),
        (|g, x| g.powf(x, 3.0), 3.0),
    ];
    for (op, want) in ops {
        let mut g = Graph::<f64>::new();
        let x = g.param(&Tensor::ones(&[1]));
        let y = op(&mut g, x);
        g.backward(y);
        assert!((g.grad(x).unwrap().item() - want).abs() < 1e-15, "got {:?}, want {want}", g.grad(x));
    }
}

#[test]
fn powf_edge_exponents() {
    let x = Tensor::<f64>::from_f64s(&[0.5, 1.0, 2.0], &[3]);
    // p = 0: constant ones, zero gradient; p = 1: the identity, unit gradient.
    let mut g = Graph::<f64>::new();
    let v = g.param(&x);
    let y0 = g.powf(v, 0.0);
    assert_eq!(g.value(y0).data(), &[1.0, 1.0, 1.0]);
    let s = g.sum_all(y0);
    g.backward(s);
    assert_eq!(g.grad(v).unwrap().data(), &[0.0, 0.0, 0.0]);

    let mut g = Graph::<f64>::new();
    let v = g.param(&x);
    let y1 = g.powf(v, 1.0);
    assert_eq!(g.value(y1).data(), x.data());
    let s = g.sum_all(y1);
    g.backward(s);
    assert_eq!(g.grad(v).unwrap().data(), &[1.0, 1.0, 1.0]);

    // At x = 0, x^2 and x^0 have derivative 0 (not 0/0 or 0 * inf).
    for p in [2.0, 0.0] {
        let mut g = Graph::<f64>::new();
        let v = g.param(&Tensor::zeros(&[2]));
        let y = g.powf(v, p);
        let s = g.sum_all(y);
        g.backward(s);
        assert_eq!(g.grad(v).unwrap().data(), &[0.0, 0.0], "p = {p}");
    }
}

#[test]
fn f32_matches_f64() {
    let x64 = Tensor::<f64>::from_fn(&[3, 7], |i| 0.5 + i as f64 / 14.0);
    let x32: Tensor<f32> = x64.cast();
    for (name, op, _, _) in OPS {
        let want = forward1(op, &x64);
        let mut g = Graph::<f32>::inference();
        let v = g.input(x32.clone());
        let y = match name {
            "neg" => g.neg(v),
            "exp" => g.exp(v),
            "log" => g.log(v),
            "sqrt" => g.sqrt(v),
            "tanh" => g.tanh(v),
            other => unreachable!("no f32 case for {other}"),
        };
        assert_close(&g.value(y).cast::<f64>(), &want, 1e-6);
    }
}

#[test]
#[should_panic(expected = "powf: the exponent must be finite")]
fn non_finite_exponent_panics_naming_the_op() {
    let mut g = Graph::<f32>::new();
    let x = g.input(Tensor::ones(&[2, 3]));
    g.powf(x, f64::NAN);
}
