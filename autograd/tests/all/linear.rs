//! The fused Linear op: forward against loops, gradients against finite differences.

use crate::common::*;
use autograd::{Graph, Tensor};
use proptest::prelude::*;

fn reference(x: &Tensor<f64>, w: &Tensor<f64>, b: Option<&Tensor<f64>>) -> Tensor<f64> {
    let (n, k) = (w.dim(0), w.dim(1));
    let rows = x.numel() / k;
    let mut shape = x.shape().to_vec();
    *shape.last_mut().unwrap() = n;
    let mut y = vec![0.0; rows * n];
    for r in 0..rows {
        for j in 0..n {
            y[r * n + j] =
                b.map_or(0.0, |b| b.data()[j]) + (0..k).map(|i| x.data()[r * k + i] * w.at(&[j, i])).sum::<f64>();
        }
    }
    Tensor::from_vec(y, &shape)
}

fn case() -> impl Strategy<Value = (Tensor<f64>, Tensor<f64>, Tensor<f64>)> {
    (shape(0, 2, 4), dim(9), dim(9)).prop_flat_map(|(lead, k, n)| {
        let mut xs = lead;
        xs.push(k);
        (tensor(xs), tensor(vec![n, k]), tensor(vec![n]))
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn forward_matches_loops((x, w, b) in case()) {
        let y = forward(|g, v| g.linear(v[0], v[1], Some(v[2])), &[x.clone(), w.clone(), b.clone()]);
        assert_close(&y, &reference(&x, &w, Some(&b)), 1e-13);
        let y = forward(|g, v| g.linear(v[0], v[1], None), &[x.clone(), w.clone()]);
        assert_close(&y, &reference(&x, &w, None), 1e-13);
    }

    #[test]
    fn gradients_match_finite_differences((x, w, b) in case()) {
        assert_gradcheck(|g, v| g.linear(v[0], v[1], Some(v[2])), &[x.clone(), w.clone(), b]);
        assert_gradcheck(|g, v| g.linear(v[0], v[1], None), &[x, w]);
    }
}

/// (x, w, b, residual, per-sample scale) with x: [B, T, K].
type ResidualCase = (Tensor<f64>, Tensor<f64>, Tensor<f64>, Tensor<f64>, Vec<f64>);

fn residual_case() -> impl Strategy<Value = ResidualCase> {
    (dim(3), dim(4), dim(6), dim(6)).prop_flat_map(|(b, t, k, n)| {
        let scale = prop::collection::vec(prop_oneof![Just(0.0), Just(1.25), 0.1f64..2.0], b);
        (tensor(vec![b, t, k]), tensor(vec![n, k]), tensor(vec![n]), tensor(vec![b, t, n]), scale)
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn residual_forward_matches_loops((x, w, b, r, s) in residual_case()) {
        let y = forward(|g, v| g.linear_residual(v[0], v[1], Some(v[2]), v[3], Some(s.clone())), &[x.clone(), w.clone(), b.clone(), r.clone()]);
        let branch = reference(&x, &w, Some(&b));
        let per = branch.numel() / s.len();
        let want = Tensor::from_fn(r.shape(), |i| r.data()[i] + s[i / per] * branch.data()[i]);
        assert_close(&y, &want, 1e-13);
    }

    #[test]
    fn residual_gradients_match_finite_differences((x, w, b, r, s) in residual_case()) {
        assert_gradcheck(|g, v| g.linear_residual(v[0], v[1], Some(v[2]), v[3], Some(s.clone())), &[x.clone(), w.clone(), b, r.clone()]);
        assert_gradcheck(|g, v| g.linear_residual(v[0], v[1], None, v[2], None), &[x, w, r]);
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn linear_gelu_equals_linear_then_gelu((x, w, b) in case(), tanh: bool) {
        use autograd::ops::gelu::GeluKind;
        let kind = if tanh { GeluKind::Tanh } else { GeluKind::Erf };
        let fused = forward(|g, v| g.linear_gelu(v[0], v[1], v[2], kind), &[x.clone(), w.clone(), b.clone()]);
        let plain = forward(|g, v| { let h = g.linear(v[0], v[1], Some(v[2])); g.gelu(h, kind) }, &[x.clone(), w.clone(), b.clone()]);
        assert_close(&fused, &plain, 1e-14);
        assert_gradcheck(|g, v| g.linear_gelu(v[0], v[1], v[2], kind), &[x, w, b]);
    }
}

/// Off the tape the fused Linear+GELU keeps no pre-activation and applies GELU in place in the
/// product's epilogue: its output must be bit for bit the recorded op's (f32: the SIMD kernels,
/// with rows that end in a partial vector; f64: the scalar path).
#[test]
fn linear_gelu_off_the_tape_equals_the_recorded_op() {
    use autograd::ops::gelu::GeluKind;
    fn both<T: autograd::Float>(x: &Tensor<T>, w: &Tensor<T>, b: &Tensor<T>, kind: GeluKind) -> (Vec<T>, Vec<T>) {
        let mut g = Graph::<T>::new();
        let (xv, wv, bv) = (g.param(x), g.param(w), g.param(b));
        let y = g.linear_gelu(xv, wv, bv, kind);
        let recorded = g.value(y).data().to_vec();
        let mut g = Graph::<T>::inference();
        let (xv, wv, bv) = (g.input(x.clone()), g.input(w.clone()), g.input(b.clone()));
        let y = g.linear_gelu(xv, wv, bv, kind);
        (recorded, g.value(y).data().to_vec())
    }
    let mut rng = autograd::Rng::seed(11);
    for kind in [GeluKind::Erf, GeluKind::Tanh] {
        let x = Tensor::<f32>::randn(&[3, 37, 24], 0.0, 2.0, &mut rng);
        let w = Tensor::<f32>::randn(&[53, 24], 0.0, 0.5, &mut rng);
        let b = Tensor::<f32>::randn(&[53], 0.0, 1.0, &mut rng);
        let (recorded, off) = both(&x, &w, &b, kind);
        assert!(recorded.iter().zip(&off).all(|(a, b)| a.to_bits() == b.to_bits()), "{kind:?}: f32 outputs differ");
        assert!(
            recorded.iter().any(|&v| v < 0.0) && recorded.iter().any(|&v| v > 1.0),
            "{kind:?}: GELU's range not covered"
        );
        let cast = |t: &Tensor<f32>| Tensor::from_fn(t.shape(), |i| t.data()[i] as f64);
        let (recorded, off) = both(&cast(&x), &cast(&w), &cast(&b), kind);
        assert!(recorded.iter().zip(&off).all(|(a, b)| a.to_bits() == b.to_bits()), "{kind:?}: f64 outputs differ");
    }
}

#[test]
fn large_f32_bias_gradient_matches_f64() {
    // Many rows exercise the parallel, blocked bias reduction.
    let mut rng = autograd::Rng::seed(4);
    let x = Tensor::<f32>::randn(&[300, 7, 16], 0.0, 1.0, &mut rng);
    let w = Tensor::<f32>::randn(&[24, 16], 0.0, 1.0, &mut rng);
    let b = Tensor::<f32>::randn(&[24], 0.0, 1.0, &mut rng);
    let run = |x: &Tensor<f32>| {
        let mut g = Graph::<f32>::new();
        let (xv, wv, bv) = (g.param(x), g.param(&w), g.param(&b));
        let y = g.linear(xv, wv, Some(bv));
        let s = g.sum_all(y);
        g.backward(s);
        g.grad(bv).unwrap().clone()
    };
    let db = run(&x);
    // d(sum y)/db_j = number of rows.
    assert!(db.data().iter().all(|&v| (v - 2100.0).abs() < 1e-3), "{db:?}");
}

#[test]
#[should_panic(expected = "linear: x [2, 3] does not fit weight [4, 5]")]
fn mismatched_shapes_panic_naming_the_op() {
    let mut g = Graph::<f32>::new();
    let x = g.input(Tensor::zeros(&[2, 3]));
    let w = g.input(Tensor::zeros(&[4, 5]));
    g.linear(x, w, None);
}

/// The fused Linear+GELU keeps its pre-activation as state and, once its segment ends, drops
/// its output: backward rebuilds it from the pre-activation, and the gradients are those of the
/// kept run.
#[test]
fn dropped_linear_gelu_output_is_recomputed_with_identical_gradients() {
    use autograd::ops::gelu::GeluKind;
    let mut rng = autograd::Rng::seed(11);
    let x = Tensor::<f64>::randn(&[3, 4, 5], 0.0, 1.0, &mut rng);
    let w = Tensor::<f64>::randn(&[7, 5], 0.0, 0.5, &mut rng);
    let b = Tensor::<f64>::randn(&[7], 0.0, 0.5, &mut rng);
    let w2 = Tensor::<f64>::randn(&[2, 7], 0.0, 0.5, &mut rng);
    let run = |segment: bool| {
        let mut g = Graph::<f64>::new();
        let (xv, wv, bv, w2v) = (g.param(&x), g.param(&w), g.param(&b), g.param(&w2));
        let mlp = |g: &mut Graph<f64>| {
            let a = g.linear_gelu(xv, wv, bv, GeluKind::Erf);
            g.linear(a, w2v, None) // its weight gradient reads a
        };
        let y = if segment { g.segment("mlp", xv, mlp) } else { mlp(&mut g) };
        let kept_bytes = g.held_bytes();
        let l = g.sum_all(y);
        g.backward(l);
        (kept_bytes, [xv, wv, bv, w2v].map(|v| g.grad(v).unwrap().clone()))
    };
    let ((kept_bytes, kept), (dropped_bytes, dropped)) = (run(false), run(true));
    assert_eq!(kept_bytes - dropped_bytes, 3 * 4 * 7 * 8, "the segment drops exactly a: [3, 4, 7] f64");
    for (a, b) in kept.iter().zip(&dropped) {
        assert_eq!(a.data(), b.data());
    }
}

/// In f32 the recompute makes `a` and `gelu'(h)` in one SIMD pass and the backward only
/// multiplies by the saved derivative: `a` (and so the next layer's weight gradient) is the
/// forward's bit for bit, and the fused op's own gradients agree with the kept run's (which
/// computes `gelu'(h)` in its backward) to the last bits of the derivative.
#[test]
fn recomputed_linear_gelu_in_f32_saves_its_derivative_for_backward() {
    use autograd::ops::gelu::GeluKind;
    let mut rng = autograd::Rng::seed(12);
    let x = Tensor::<f32>::randn(&[5, 13, 24], 0.0, 1.0, &mut rng);
    let w = Tensor::<f32>::randn(&[67, 24], 0.0, 0.4, &mut rng);
    let b = Tensor::<f32>::randn(&[67], 0.0, 0.5, &mut rng);
    let w2 = Tensor::<f32>::randn(&[9, 67], 0.0, 0.5, &mut rng);
    for kind in [GeluKind::Erf, GeluKind::Tanh] {
        let run = |segment: bool| {
            let mut g = Graph::<f32>::new();
            let (xv, wv, bv, w2v) = (g.param(&x), g.param(&w), g.param(&b), g.param(&w2));
            let mlp = |g: &mut Graph<f32>| {
                let a = g.linear_gelu(xv, wv, bv, kind);
                g.linear(a, w2v, None)
            };
            let y = if segment { g.segment("mlp", xv, mlp) } else { mlp(&mut g) };
            let l = g.sum_all(y);
            g.backward(l);
            [xv, wv, bv, w2v].map(|v| g.grad(v).unwrap().clone())
        };
        let (kept, dropped) = (run(false), run(true));
        assert_eq!(kept[3].data(), dropped[3].data(), "{kind:?}: the weight gradient that reads a");
        for (name, (k, d)) in ["dx", "dW", "db"].iter().zip(kept.iter().zip(&dropped)) {
            let scale = k.data().iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let worst = k.data().iter().zip(d.data()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(
                worst <= 1e-5 * scale,
                "{kind:?} {name}: the saved derivative moved it by {worst:e} (scale {scale:e})"
            );
        }
    }
}
