//! GELU, exact (erf) and tanh forms: forward against references independent of the op's erf,
//! gradients against finite differences, known values, and how close the two forms are.

use crate::common::*;
use autograd::ops::gelu::GeluKind;
use autograd::{Graph, Rng, Tensor};
use proptest::prelude::*;
use std::slice::from_ref;

/// erf by its Maclaurin series, `2/sqrt(pi) sum_n (-1)^n x^(2n+1) / (n! (2n+1))`: slow and
/// obviously right, and independent of libm. For |x| <= 3 the terms peak near 1e3, so f64 keeps
/// about 1e-13 absolute accuracy.
fn erf_series(x: f64) -> f64 {
    assert!(x.abs() <= 3.0);
    let mut term = x; // (-1)^n x^(2n+1) / n!
    let mut sum = x;
    for n in 1..80 {
        term *= -x * x / n as f64;
        sum += term / (2 * n + 1) as f64;
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

fn reference(x: &Tensor<f64>, kind: GeluKind) -> Tensor<f64> {
    x.map(|x| match kind {
        GeluKind::Erf => 0.5 * x * (1.0 + erf_series(x / 2f64.sqrt())),
        GeluKind::Tanh => 0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh()),
    })
}

const KINDS: [GeluKind; 2] = [GeluKind::Erf, GeluKind::Tanh];

proptest! {
    #![proptest_config(config())]

    #[test]
    fn forward_matches_reference(x in shape(0, 3, 7).prop_flat_map(|s| tensor_in(s, -4.0, 4.0))) {
        for kind in KINDS {
            let got = forward(|g, v| g.gelu(v[0], kind), from_ref(&x));
            assert_close(&got, &reference(&x, kind), 1e-12);
        }
    }

    #[test]
    fn gradients_match_finite_differences(x in shape(0, 3, 7).prop_flat_map(|s| tensor_in(s, -5.0, 5.0))) {
        for kind in KINDS {
            assert_gradcheck(|g, v| g.gelu(v[0], kind), from_ref(&x));
        }
    }

    #[test]
    fn the_two_forms_agree_to_5e_4(x in shape(1, 2, 7).prop_flat_map(|s| tensor_in(s, -8.0, 8.0))) {
        let a = forward(|g, v| g.gelu(v[0], GeluKind::Erf), from_ref(&x));
        let b = forward(|g, v| g.gelu(v[0], GeluKind::Tanh), &[x]);
        prop_assert!(a.max_abs_diff(&b) < 5e-4, "{}", a.max_abs_diff(&b));
    }
}

#[test]
fn known_values() {
    // From PyTorch: F.gelu(x) and F.gelu(x, approximate="tanh").
    let x = Tensor::from_f64s(&[1.0, -0.5, 2.0, 0.0], &[4]);
    let erf = forward(|g, v| g.gelu(v[0], GeluKind::Erf), from_ref(&x));
    let tanh = forward(|g, v| g.gelu(v[0], GeluKind::Tanh), &[x]);
    assert_close(
        &erf,
        &Tensor::from_f64s(&[0.8413447460685429, -0.15426876936299344, 1.9544997361036416, 0.0], &[4]),
        1e-15,
    );
    assert_close(
        &tanh,
        &Tensor::from_f64s(&[0.8411919906082768, -0.15428599017485606, 1.954597694087775, 0.0], &[4]),
        1e-15,
    );
}

#[test]
fn derivative_at_zero_is_one_half_and_tails_are_relu() {
    for kind in KINDS {
        let mut g = Graph::<f64>::new();
        let x = g.param(&Tensor::from_f64s(&[0.0, 30.0, -30.0], &[3]));
        let y = g.gelu(x, kind);
        assert_eq!(g.value(y).data(), &[0.0, 30.0, -0.0], "{kind:?}");
        g.backward_with(y, Tensor::ones(&[3]));
        assert_close(g.grad(x).unwrap(), &Tensor::from_f64s(&[0.5, 1.0, 0.0], &[3]), 1e-15);
    }
}

#[test]
fn large_f32_input_matches_the_f64_reference_forward_and_backward() {
    // Several 4096-element pieces, spread over threads.
    let mut rng = Rng::seed(8);
    let x = Tensor::<f64>::uniform(&[7, 100, 131], -3.0, 3.0, &mut rng);
    let seed = Tensor::<f64>::randn(x.shape(), 0.0, 1.0, &mut rng);
    for kind in KINDS {
        let mut g = Graph::<f32>::new();
        let xv = g.param(&x.cast());
        let y = g.gelu(xv, kind);
        g.backward_with(y, seed.cast());
        assert!(g.value(y).cast::<f64>().allclose(&reference(&x, kind), 1e-5, 1e-6), "{kind:?} forward");
        // d/dx by central differences of the f64 reference (h = 1e-5, error ~1e-10).
        let h = 1e-5;
        let (up, down) = (reference(&x.map(|v| v + h), kind), reference(&x.map(|v| v - h), kind));
        let dx = Tensor::from_fn(x.shape(), |i| seed.data()[i] * (up.data()[i] - down.data()[i]) / (2.0 * h));
        assert!(g.grad(xv).unwrap().cast::<f64>().allclose(&dx, 1e-4, 1e-5), "{kind:?} backward");
    }
}

#[test]
fn kinds_parse_from_config_names_and_bad_names_say_gelu() {
    assert_eq!("erf".parse::<GeluKind>(), Ok(GeluKind::Erf));
    assert_eq!("none".parse::<GeluKind>(), Ok(GeluKind::Erf));
    assert_eq!("Tanh".parse::<GeluKind>(), Ok(GeluKind::Tanh));
    let err = "relu".parse::<GeluKind>().unwrap_err();
    assert!(err.starts_with("gelu: unknown kind \"relu\""), "{err}");
}
