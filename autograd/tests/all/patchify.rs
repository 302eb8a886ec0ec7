//! patchify: forward against an index-by-index loop, gradients against finite differences, the
//! inverse (its backward) restoring the image, and the stride-P convolution it stands in for.

use crate::common::*;
use autograd::{Graph, Rng, Tensor};
use proptest::prelude::*;
use std::slice::from_ref;

/// Patchify by definition: output `[b, gy*Gw + gx, (c*P + py)*P + px]` is pixel
/// `[b, c, gy*P + py, gx*P + px]`.
fn reference(x: &Tensor<f64>, p: usize) -> Tensor<f64> {
    let (b, c, h, w) = (x.dim(0), x.dim(1), x.dim(2), x.dim(3));
    let (gh, gw) = (h / p, w / p);
    let mut y = Tensor::zeros(&[b, gh * gw, c * p * p]);
    for bi in 0..b {
        for gy in 0..gh {
            for gx in 0..gw {
                for ci in 0..c {
                    for py in 0..p {
                        for px in 0..p {
                            let v = x.at(&[bi, ci, gy * p + py, gx * p + px]);
                            y.set(&[bi, gy * gw + gx, (ci * p + py) * p + px], v);
                        }
                    }
                }
            }
        }
    }
    y
}

/// Images `[B, C, Gh*P, Gw*P]` with their patch size `P`.
fn images() -> impl Strategy<Value = (Tensor<f64>, usize)> {
    (1..=3usize, 1..=3usize, 1..=4usize, 1..=3usize, 1..=3usize)
        .prop_flat_map(|(b, c, p, gh, gw)| (tensor(vec![b, c, gh * p, gw * p]), Just(p)))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn forward_matches_reference((x, p) in images()) {
        let y = forward(|g, v| g.patchify(v[0], p), from_ref(&x));
        let want = reference(&x, p);
        prop_assert_eq!(y.shape(), want.shape());
        prop_assert_eq!(y.data(), want.data());
    }

    #[test]
    fn gradients_match_finite_differences((x, p) in images()) {
        assert_gradcheck(|g, v| g.patchify(v[0], p), &[x]);
    }

    #[test]
    fn the_inverse_restores_the_image((x, p) in images()) {
        // Backward is un-patchify: seeding it with the patches gives the image back.
        let mut g = Graph::<f64>::new();
        let xv = g.param(&x);
        let y = g.patchify(xv, p);
        let patches = g.value(y).clone();
        g.backward_with(y, patches);
        prop_assert_eq!(g.grad(xv).unwrap().data(), x.data());
    }

    #[test]
    fn patchify_then_matmul_is_the_stride_p_convolution((x, p) in images(), d in 1..=4usize, k in any::<u64>()) {
        // A PyTorch Conv2d(C, D, kernel_size=P, stride=P) weight [D, C, P, P], flattened to
        // [D, C*P*P], multiplies the patch vectors directly.
        let (b, c, h, w) = (x.dim(0), x.dim(1), x.dim(2), x.dim(3));
        let weight = Tensor::<f64>::randn(&[d, c, p, p], 0.0, 1.0, &mut Rng::seed(k));
        let flat = weight.reshape(&[d, c * p * p]);
        let got = forward(|g, v| { let patches = g.patchify(v[0], p); g.matmul_t(patches, v[1]) }, &[x.clone(), flat]);
        let (gh, gw) = (h / p, w / p);
        let conv = Tensor::from_fn(&[b, gh * gw, d], |i| {
            let (bi, n, o) = (i / (gh * gw * d), (i / d) % (gh * gw), i % d);
            let (oy, ox) = (n / gw, n % gw);
            let mut acc = 0.0;
            for ci in 0..c {
                for ky in 0..p {
                    for kx in 0..p {
                        acc += weight.at(&[o, ci, ky, kx]) * x.at(&[bi, ci, oy * p + ky, ox * p + kx]);
                    }
                }
            }
            acc
        });
        assert_close(&got, &conv, 1e-13);
    }
}

#[test]
fn patch_of_one_puts_channels_last() {
    // P = 1: every pixel is a patch, and its vector is the C channel values: [B, H*W, C].
    let x = Tensor::<f64>::from_fn(&[2, 3, 2, 5], |i| i as f64);
    let y = forward(|g, v| g.patchify(v[0], 1), from_ref(&x));
    assert_eq!(y.shape(), &[2, 10, 3]);
    for (b, n, c) in [(0, 0, 0), (0, 7, 2), (1, 9, 1)] {
        assert_eq!(y.at(&[b, n, c]), x.at(&[b, c, n / 5, n % 5]));
    }
    assert_eq!(y.data(), reference(&x, 1).data());
}

#[test]
fn patch_of_the_image_size_is_one_flat_patch() {
    // P = H = W: a single patch per image, the image itself in (c, y, x) order.
    let x = Tensor::<f64>::from_fn(&[1, 2, 3, 3], |i| i as f64 * 0.5);
    let y = forward(|g, v| g.patchify(v[0], 3), from_ref(&x));
    assert_eq!(y.shape(), &[1, 1, 18]);
    assert_eq!(y.data(), x.data());
    assert_gradcheck(|g, v| g.patchify(v[0], 3), &[x]);
}

#[test]
fn large_f32_batch_matches_reference_and_round_trips() {
    // A CIFAR-sized batch at P = 4, above the parallel grain.
    let x = Tensor::<f64>::uniform(&[32, 3, 32, 32], -1.0, 1.0, &mut Rng::seed(10));
    let mut g = Graph::<f32>::new();
    let xv = g.param(&x.cast());
    let y = g.patchify(xv, 4);
    assert_eq!(g.value(y).cast::<f64>().data(), reference(&x.cast::<f32>().cast(), 4).data());
    let patches = g.value(y).clone();
    g.backward_with(y, patches);
    assert_eq!(g.grad(xv).unwrap().cast::<f64>().data(), x.cast::<f32>().cast::<f64>().data());
}

#[test]
#[should_panic(expected = "patchify: image size 6x8 (shape [1, 3, 6, 8]) is not divisible by the patch size 4")]
fn indivisible_image_panics_naming_the_op() {
    let mut g = Graph::<f32>::new();
    let x = g.input(Tensor::zeros(&[1, 3, 6, 8]));
    g.patchify(x, 4);
}

#[test]
#[should_panic(expected = "patchify: images must be [B, C, H, W]")]
fn a_batch_without_channels_panics_naming_the_op() {
    let mut g = Graph::<f32>::new();
    let x = g.input(Tensor::zeros(&[2, 8, 8]));
    g.patchify(x, 4);
}
