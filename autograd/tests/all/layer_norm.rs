//! layer_norm over the last axis: forward against a plain loop, gradients of x, weight and bias
//! together against finite differences, and the edge width D = 1.

use crate::common::*;
use autograd::{Graph, Rng, Tensor};
use proptest::prelude::*;

/// LayerNorm by definition: per row, subtract the mean, divide by sqrt(biased var + eps), then
/// scale and shift.
fn reference(x: &Tensor<f64>, w: &Tensor<f64>, b: &Tensor<f64>, eps: f64) -> Tensor<f64> {
    let d = *x.shape().last().unwrap();
    let mut y = x.clone();
    for row in y.data_mut().chunks_mut(d) {
        let mean = row.iter().sum::<f64>() / d as f64;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / d as f64;
        for (j, v) in row.iter_mut().enumerate() {
            *v = (*v - mean) / (var + eps).sqrt() * w.data()[j] + b.data()[j];
        }
    }
    y
}

/// x of a random shape (rank 1..3) with its weight and bias `[D]`.
fn inputs() -> impl Strategy<Value = (Tensor<f64>, Tensor<f64>, Tensor<f64>)> {
    shape(1, 3, 6).prop_flat_map(|s| {
        let d = *s.last().unwrap();
        (tensor_in(s, -3.0, 3.0), tensor_in(vec![d], -2.0, 2.0), tensor(vec![d]))
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn forward_matches_reference((x, w, b) in inputs(), eps in prop_oneof![Just(1e-6), Just(1e-5), Just(0.1)]) {
        let got = forward(|g, v| g.layer_norm(v[0], v[1], v[2], eps), &[x.clone(), w.clone(), b.clone()]);
        let want = reference(&x, &w, &b, eps);
        assert_close(&got, &want, 1e-12);
    }

    #[test]
    fn gradients_of_x_weight_and_bias_match_finite_differences((x, w, b) in inputs()) {
        assert_gradcheck(|g, v| g.layer_norm(v[0], v[1], v[2], 1e-5), &[x, w, b]);
    }

    #[test]
    fn output_rows_have_zero_mean_and_unit_variance(
        x in (shape(0, 2, 5), 2..=7usize).prop_flat_map(|(mut s, d)| { s.push(d); tensor_in(s, -3.0, 3.0) })
    ) {
        let d = *x.shape().last().unwrap();
        let (w, b) = (Tensor::ones(&[d]), Tensor::zeros(&[d]));
        let y = forward(|g, v| g.layer_norm(v[0], v[1], v[2], 0.0), &[x.clone(), w, b]);
        for (yr, xr) in y.data().chunks(d).zip(x.data().chunks(d)) {
            prop_assume!(xr.iter().any(|&v| (v - xr[0]).abs() > 1e-3));
            let mean = yr.iter().sum::<f64>() / d as f64;
            let var = yr.iter().map(|v| v * v).sum::<f64>() / d as f64 - mean * mean;
            prop_assert!(mean.abs() < 1e-12 && (var - 1.0).abs() < 1e-10, "mean {mean}, var {var}");
        }
    }
}

#[test]
fn width_one_outputs_the_bias_and_passes_no_gradient_to_x() {
    let x = Tensor::from_f64s(&[3.0, -1.0, 0.25, 8.0], &[2, 2, 1]);
    let (w, b) = (Tensor::from_f64s(&[2.5], &[1]), Tensor::from_f64s(&[-0.75], &[1]));
    let mut g = Graph::<f64>::new();
    let (xv, wv, bv) = (g.param(&x), g.param(&w), g.param(&b));
    let y = g.layer_norm(xv, wv, bv, 1e-6);
    assert_eq!(g.value(y).data(), &[-0.75; 4]);
    g.backward_with(y, Tensor::from_f64s(&[1.0, 2.0, 3.0, 4.0], &[2, 2, 1]));
    assert_eq!(g.grad(xv).unwrap().data(), &[0.0; 4]);
    assert_eq!(g.grad(wv).unwrap().data(), &[0.0]); // xhat = 0
    assert_eq!(g.grad(bv).unwrap().data(), &[10.0]); // the sum of g
    assert_gradcheck(|g, v| g.layer_norm(v[0], v[1], v[2], 1e-6), &[x, w, b]);
}

#[test]
fn vit_eps_gradcheck_on_a_batch_of_one() {
    let mut rng = Rng::seed(4);
    let x = Tensor::randn(&[1, 5, 7], 0.5, 2.0, &mut rng);
    let w = Tensor::randn(&[7], 1.0, 0.5, &mut rng);
    let b = Tensor::randn(&[7], 0.0, 0.5, &mut rng);
    assert_gradcheck(|g, v| g.layer_norm(v[0], v[1], v[2], 1e-6), &[x, w, b]);
}

#[test]
fn every_input_receives_a_nonzero_gradient() {
    // Another framework's fused LayerNorm once silently returned no gradients: check that x,
    // weight and bias all get one, through a head and a loss as in a real step.
    let mut rng = Rng::seed(5);
    let mut g = Graph::<f32>::new();
    let x = g.param(&Tensor::randn(&[12, 8], 0.0, 1.0, &mut rng));
    let w = g.param(&Tensor::randn(&[8], 1.0, 0.1, &mut rng));
    let b = g.param(&Tensor::zeros(&[8]));
    let head = g.param(&Tensor::randn(&[8, 5], 0.0, 1.0, &mut rng));
    let y = g.layer_norm(x, w, b, 1e-6);
    let logits = g.matmul(y, head);
    let loss = g.cross_entropy(logits, &[1, 4, 2, 0, 3, 3, 4, 1, 2, 0, 0, 1], 0.0);
    g.backward(loss);
    for (name, v) in [("x", x), ("weight", w), ("bias", b)] {
        let gr = g.grad(v).unwrap_or_else(|| panic!("{name} received no gradient"));
        assert!(gr.norm() > 1e-3, "{name}: gradient norm {}", gr.norm());
    }
}

#[test]
fn large_f32_input_matches_the_f64_reference_forward_and_backward() {
    // 1100 rows of width 64: several row blocks, so the blocked dw/db sums and the parallel row
    // split are both exercised.
    let (rows, d) = (1100, 64);
    let mut rng = Rng::seed(6);
    let x = Tensor::<f64>::randn(&[rows, d], 1.0, 2.0, &mut rng);
    let w = Tensor::<f64>::randn(&[d], 1.0, 0.3, &mut rng);
    let b = Tensor::<f64>::randn(&[d], 0.0, 0.3, &mut rng);
    let seed = Tensor::<f64>::randn(&[rows, d], 0.0, 1.0, &mut rng);
    let eps = 1e-6;

    let mut g = Graph::<f32>::new();
    let (xv, wv, bv) = (g.param(&x.cast()), g.param(&w.cast()), g.param(&b.cast()));
    let y = g.layer_norm(xv, wv, bv, eps);
    g.backward_with(y, seed.cast());
    assert!(g.value(y).cast::<f64>().allclose(&reference(&x, &w, &b, eps), 1e-4, 1e-5), "forward");

    // Backward by the textbook formulas, row by row in f64.
    let (mut dx, mut dw, mut db) = (Tensor::zeros(&[rows, d]), vec![0.0; d], vec![0.0; d]);
    for r in 0..rows {
        let xr = &x.data()[r * d..(r + 1) * d];
        let gr = &seed.data()[r * d..(r + 1) * d];
        let mean = xr.iter().sum::<f64>() / d as f64;
        let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / d as f64;
        let rstd = 1.0 / (var + eps).sqrt();
        let xhat: Vec<f64> = xr.iter().map(|v| (v - mean) * rstd).collect();
        let dxhat: Vec<f64> = (0..d).map(|j| gr[j] * w.data()[j]).collect();
        let m1 = dxhat.iter().sum::<f64>() / d as f64;
        let m2 = (0..d).map(|j| dxhat[j] * xhat[j]).sum::<f64>() / d as f64;
        for j in 0..d {
            dx.set(&[r, j], rstd * (dxhat[j] - m1 - xhat[j] * m2));
            dw[j] += gr[j] * xhat[j];
            db[j] += gr[j];
        }
    }
    assert!(g.grad(xv).unwrap().cast::<f64>().allclose(&dx, 1e-3, 1e-4), "dx");
    assert!(g.grad(wv).unwrap().cast::<f64>().allclose(&Tensor::from_vec(dw, &[d]), 1e-4, 1e-3), "dw");
    assert!(g.grad(bv).unwrap().cast::<f64>().allclose(&Tensor::from_vec(db, &[d]), 1e-4, 1e-3), "db");
}

#[test]
#[should_panic(expected = "layer_norm: weight must have shape [4]")]
fn mismatched_weight_panics_naming_the_op() {
    let mut g = Graph::<f32>::new();
    let x = g.input(Tensor::zeros(&[2, 4]));
    let w = g.input(Tensor::ones(&[3]));
    let b = g.input(Tensor::zeros(&[4]));
    g.layer_norm(x, w, b, 1e-6);
}

/// A layer-norm output the memory policy dropped (its segment ended) is recomputed in
/// backward: the same gradients as when kept.
#[test]
fn a_dropped_output_is_recomputed_with_identical_gradients() {
    use autograd::Rng;
    let mut rng = Rng::seed(9);
    let x = Tensor::<f64>::randn(&[4, 5, 6], 0.0, 1.0, &mut rng);
    let w = Tensor::<f64>::randn(&[6], 1.0, 0.2, &mut rng);
    let b = Tensor::<f64>::randn(&[6], 0.0, 0.2, &mut rng);
    let m = Tensor::<f64>::randn(&[3, 6], 0.0, 1.0, &mut rng);
    let run = |segment: bool| {
        let mut g = Graph::<f64>::new();
        let (xv, wv, bv, mv) = (g.param(&x), g.param(&w), g.param(&b), g.param(&m));
        let branch = |g: &mut Graph<f64>| {
            let h = g.layer_norm(xv, wv, bv, 1e-6);
            g.matmul_t(h, mv) // backward needs h
        };
        let y = if segment { g.segment("ln", xv, branch) } else { branch(&mut g) };
        let held = g.memory().first().map(|s| s.entries[0].held);
        assert_eq!(held, segment.then_some(autograd::memory::Held::Recomputed));
        let l = g.sum_all(y);
        g.backward(l);
        [xv, wv, bv, mv].map(|v| g.grad(v).unwrap().clone())
    };
    let (kept, dropped) = (run(false), run(true));
    for (a, b) in kept.iter().zip(&dropped) {
        assert_eq!(a.data(), b.data());
    }
}

#[test]
#[should_panic(expected = "dropped by the memory policy")]
fn reading_a_dropped_value_panics() {
    let mut g = Graph::<f64>::new();
    let x = g.param(&Tensor::ones(&[2, 3]));
    let w = g.param(&Tensor::ones(&[3]));
    let b = g.param(&Tensor::zeros(&[3]));
    let mut h = None;
    g.segment("ln", x, |g| {
        let hh = g.layer_norm(x, w, b, 1e-6);
        h = Some(hh);
        g.sum_all(hh)
    });
    g.value(h.unwrap());
}
