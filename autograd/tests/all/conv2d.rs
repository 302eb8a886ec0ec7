//! conv2d: forward against the seven-loop definition, gradients of input and weight together
//! against finite differences on proptest-drawn geometries (stride, asymmetric padding), the
//! "SAME" padding rule, and f32 (our GEMM) against the f64 reference at the stem's size.

use crate::common::*;
use autograd::ops::conv2d::{same_padding, Padding};
use autograd::{Graph, Rng, Tensor};
use proptest::prelude::*;

/// Convolution by definition: every output is a sum over channels and window offsets.
fn reference(x: &Tensor<f64>, w: &Tensor<f64>, stride: usize, pad: Padding) -> Tensor<f64> {
    let (&[b, c, h, wd], &[o, _, kh, kw]) = (x.shape(), w.shape()) else { unreachable!() };
    let ho = (h + pad.top + pad.bottom - kh) / stride + 1;
    let wo = (wd + pad.left + pad.right - kw) / stride + 1;
    let mut y = Tensor::zeros(&[b, o, ho, wo]);
    for bi in 0..b {
        for oc in 0..o {
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut acc = 0.0;
                    for ci in 0..c {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * stride + ky) as isize - pad.top as isize;
                                let ix = (ox * stride + kx) as isize - pad.left as isize;
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                                    acc += x.at(&[bi, ci, iy as usize, ix as usize]) * w.at(&[oc, ci, ky, kx]);
                                }
                            }
                        }
                    }
                    y.set(&[bi, oc, oy, ox], acc);
                }
            }
        }
    }
    y
}

/// `(x, w, stride, padding)` with a padded input at least as large as the kernel.
fn inputs() -> impl Strategy<Value = (Tensor<f64>, Tensor<f64>, usize, Padding)> {
    (1..=2usize, 1..=3usize, 1..=3usize, 1..=3usize, 1..=3usize, 1..=2usize, [0..=2usize, 0..=2, 0..=2, 0..=2])
        .prop_flat_map(|(b, c, o, kh, kw, stride, [t, bo, l, r])| {
            let pad = Padding { top: t, bottom: bo, left: l, right: r };
            let h_min = kh.saturating_sub(t + bo).max(1);
            let w_min = kw.saturating_sub(l + r).max(1);
            (h_min..=h_min + 5, w_min..=w_min + 5).prop_flat_map(move |(h, w)| {
                (tensor(vec![b, c, h, w]), tensor(vec![o, c, kh, kw]), Just(stride), Just(pad))
            })
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn forward_matches_reference((x, w, stride, pad) in inputs()) {
        let got = forward(|g, v| g.conv2d(v[0], v[1], stride, pad), &[x.clone(), w.clone()]);
        assert_close(&got, &reference(&x, &w, stride, pad), 1e-12);
    }

    #[test]
    fn gradients_of_input_and_weight_match_finite_differences((x, w, stride, pad) in inputs()) {
        assert_gradcheck(|g, v| g.conv2d(v[0], v[1], stride, pad), &[x, w]);
    }
}

#[test]
fn same_padding_puts_the_odd_pixel_after() {
    // The hybrid's stem: 7x7 / 2 on 224 pads 2 before, 3 after (TensorFlow's rule).
    assert_eq!(same_padding(224, 7, 2), (2, 3));
    // Its 3x3 / 2 max-pool on 112: one pixel, after.
    assert_eq!(same_padding(112, 3, 2), (0, 1));
    assert_eq!(same_padding(28, 3, 1), (1, 1));
    assert_eq!(same_padding(5, 1, 1), (0, 0));
    for (size, k, s) in [(224, 7, 2), (112, 3, 2), (28, 7, 2), (13, 3, 2), (9, 4, 3)] {
        let p = Padding::same(size, k, s);
        let out = (size + p.top + p.bottom - k) / s + 1;
        assert_eq!(out, size.div_ceil(s), "SAME keeps ceil(size / stride) pixels: {size} {k} {s}");
    }
}

#[test]
fn f32_stem_convolution_matches_the_f64_reference_forward_and_backward() {
    // 7x7 / 2 with SAME padding, 3 -> 16 channels on a batch of 3 at 30x30: several partial
    // weight gradients, products large enough for the blocked GEMM.
    let mut rng = Rng::seed(7);
    let x = Tensor::<f64>::randn(&[3, 3, 30, 30], 0.0, 1.0, &mut rng);
    let w = Tensor::<f64>::randn(&[16, 3, 7, 7], 0.0, 0.2, &mut rng);
    let pad = Padding::same(30, 7, 2);
    let want = reference(&x, &w, 2, pad);
    let seed = Tensor::<f64>::randn(want.shape(), 0.0, 1.0, &mut rng);

    let mut g = Graph::<f32>::new();
    let (xv, wv) = (g.param(&x.cast()), g.param(&w.cast()));
    let y = g.conv2d(xv, wv, 2, pad);
    assert_eq!(g.shape(y), &[3, 16, 15, 15]);
    assert!(g.value(y).cast::<f64>().allclose(&want, 1e-4, 1e-4), "forward");
    g.backward_with(y, seed.cast());

    let mut g64 = Graph::<f64>::new();
    let (x64, w64) = (g64.param(&x), g64.param(&w));
    let y64 = g64.conv2d(x64, w64, 2, pad);
    g64.backward_with(y64, seed);
    assert!(g.grad(xv).unwrap().cast::<f64>().allclose(g64.grad(x64).unwrap(), 1e-4, 1e-4), "dx");
    assert!(g.grad(wv).unwrap().cast::<f64>().allclose(g64.grad(w64).unwrap(), 1e-4, 1e-3), "dw");
}

#[test]
fn a_one_by_one_convolution_is_a_per_pixel_linear_map() {
    // A 1x1 stride-1 convolution is `W x` at every pixel: compare with matmul over channels.
    let mut rng = Rng::seed(8);
    let x = Tensor::<f64>::randn(&[2, 4, 3, 5], 0.0, 1.0, &mut rng);
    let w = Tensor::<f64>::randn(&[6, 4, 1, 1], 0.0, 1.0, &mut rng);
    let y = forward(|g, v| g.conv2d(v[0], v[1], 1, Padding::default()), &[x.clone(), w.clone()]);
    for b in 0..2 {
        for o in 0..6 {
            for p in 0..15 {
                let want: f64 = (0..4).map(|c| w.at(&[o, c, 0, 0]) * x.data()[(b * 4 + c) * 15 + p]).sum();
                assert!((y.data()[(b * 6 + o) * 15 + p] - want).abs() < 1e-12);
            }
        }
    }
}

#[test]
#[should_panic(expected = "conv2d: weight [2, 3, 3, 3] takes 3 channels, input [1, 2, 5, 5] has 2")]
fn mismatched_channels_panic_naming_the_op() {
    let mut g = Graph::<f32>::new();
    let x = g.input(Tensor::zeros(&[1, 2, 5, 5]));
    let w = g.input(Tensor::zeros(&[2, 3, 3, 3]));
    g.conv2d(x, w, 1, Padding::default());
}

#[test]
#[should_panic(expected = "smaller than the 5x5 window")]
fn a_window_larger_than_the_padded_input_panics() {
    let mut g = Graph::<f32>::new();
    let x = g.input(Tensor::zeros(&[1, 1, 3, 3]));
    let w = g.input(Tensor::zeros(&[1, 1, 5, 5]));
    g.conv2d(x, w, 1, Padding::default());
}
