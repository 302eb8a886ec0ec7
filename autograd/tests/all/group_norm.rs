//! group_norm: forward against the definition, gradients of x, weight and bias against finite
//! differences on proptest-drawn shapes and group counts, and its two limits (one group per
//! channel = instance norm; one group = layer norm over an image).

use crate::common::*;
use autograd::{Graph, Rng, Tensor};
use proptest::prelude::*;

/// Group norm by definition: per image and group, normalise the group's values, then the
/// per-channel affine map.
fn reference(x: &Tensor<f64>, groups: usize, w: &Tensor<f64>, b: &Tensor<f64>, eps: f64) -> Tensor<f64> {
    let (bn, c) = (x.shape()[0], x.shape()[1]);
    let s: usize = x.shape()[2..].iter().product();
    let n = c / groups * s;
    let mut y = x.clone();
    for (r, chunk) in y.data_mut().chunks_mut(n).enumerate() {
        let mean = chunk.iter().sum::<f64>() / n as f64;
        let var = chunk.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
        for (i, v) in chunk.iter_mut().enumerate() {
            let ch = (r % groups) * (c / groups) + i / s;
            *v = (*v - mean) / (var + eps).sqrt() * w.data()[ch] + b.data()[ch];
        }
    }
    assert_eq!(y.numel(), bn * c * s);
    y
}

/// `(x [B, C, spatial...], groups, weight, bias)` with `groups | C`.
fn inputs() -> impl Strategy<Value = (Tensor<f64>, usize, Tensor<f64>, Tensor<f64>)> {
    (1..=3usize, 1..=3usize, 1..=3usize, shape(0, 2, 4)).prop_flat_map(|(b, groups, cpg, spatial)| {
        let c = groups * cpg;
        let mut s = vec![b, c];
        s.extend(spatial);
        (tensor_in(s, -3.0, 3.0), Just(groups), tensor_in(vec![c], -2.0, 2.0), tensor(vec![c]))
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn forward_matches_reference((x, groups, w, b) in inputs(), eps in prop_oneof![Just(1e-5), Just(0.1)]) {
        let got = forward(|g, v| g.group_norm(v[0], groups, v[1], v[2], eps), &[x.clone(), w.clone(), b.clone()]);
        assert_close(&got, &reference(&x, groups, &w, &b, eps), 1e-12);
    }

    #[test]
    fn gradients_of_x_weight_and_bias_match_finite_differences((x, groups, w, b) in inputs()) {
        // A group of one value normalises to 0 whatever x is: eps keeps that well conditioned.
        assert_gradcheck(|g, v| g.group_norm(v[0], groups, v[1], v[2], 1e-3), &[x, w, b]);
    }
}

#[test]
fn one_group_is_layer_norm_over_the_whole_image() {
    let mut rng = Rng::seed(3);
    let x = Tensor::<f64>::randn(&[2, 4, 3, 3], 0.5, 2.0, &mut rng);
    let (ones, zeros) = (Tensor::<f64>::ones(&[4]), Tensor::<f64>::zeros(&[4]));
    let gn = forward(|g, v| g.group_norm(v[0], 1, v[1], v[2], 1e-5), &[x.clone(), ones, zeros]);
    let flat = x.reshape(&[2, 36]);
    let ln = forward(|g, v| g.layer_norm(v[0], v[1], v[2], 1e-5), &[flat, Tensor::ones(&[36]), Tensor::zeros(&[36])]);
    assert_close(&gn.reshape(&[2, 36]), &ln, 1e-12);
}

#[test]
fn f32_matches_f64_at_the_stem_size_forward_and_backward() {
    // 32 groups of 2 channels over 14x14, as the hybrid stem's GroupNorm(32, 64) on a small image.
    let mut rng = Rng::seed(4);
    let x = Tensor::<f64>::randn(&[2, 64, 14, 14], 1.0, 2.0, &mut rng);
    let w = Tensor::<f64>::randn(&[64], 1.0, 0.3, &mut rng);
    let b = Tensor::<f64>::randn(&[64], 0.0, 0.3, &mut rng);
    let seed = Tensor::<f64>::randn(x.shape(), 0.0, 1.0, &mut rng);
    let grads = |f32_: bool| -> Vec<Tensor<f64>> {
        if f32_ {
            let mut g = Graph::<f32>::new();
            let vs = [g.param(&x.cast()), g.param(&w.cast()), g.param(&b.cast())];
            let y = g.group_norm(vs[0], 32, vs[1], vs[2], 1e-5);
            let out = g.value(y).cast();
            g.backward_with(y, seed.cast());
            std::iter::once(out).chain(vs.iter().map(|&v| g.grad(v).unwrap().cast())).collect()
        } else {
            let mut g = Graph::<f64>::new();
            let vs = [g.param(&x), g.param(&w), g.param(&b)];
            let y = g.group_norm(vs[0], 32, vs[1], vs[2], 1e-5);
            let out = g.value(y).clone();
            g.backward_with(y, seed.clone());
            std::iter::once(out).chain(vs.iter().map(|&v| g.grad(v).unwrap().clone())).collect()
        }
    };
    let (a, b64) = (grads(true), grads(false));
    assert!(a[0].allclose(&reference(&x, 32, &w, &b, 1e-5), 1e-5, 1e-5), "forward");
    for (name, (a, b)) in ["y", "dx", "dw", "db"].iter().zip(a.iter().zip(&b64)) {
        assert!(a.allclose(b, 1e-4, 1e-3), "{name}: max diff {}", a.max_abs_diff(b));
    }
}

#[test]
#[should_panic(expected = "group_norm: 6 channels (shape [1, 6, 2, 2]) do not split into 4 groups")]
fn channels_not_divisible_by_groups_panic() {
    let mut g = Graph::<f32>::new();
    let x = g.input(Tensor::zeros(&[1, 6, 2, 2]));
    let (w, b) = (g.input(Tensor::ones(&[6])), g.input(Tensor::zeros(&[6])));
    g.group_norm(x, 4, w, b, 1e-5);
}
