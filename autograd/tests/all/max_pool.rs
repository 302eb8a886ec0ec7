//! max_pool2d: forward against the definition, the gradient against finite differences on
//! proptest-drawn geometries (inputs with distinct values, so no window has a tie that would
//! make the max non-differentiable), and the first-wins rule on ties.

use crate::common::*;
use autograd::ops::conv2d::Padding;
use autograd::{Graph, Tensor};
use proptest::prelude::*;

fn reference(x: &Tensor<f64>, k: usize, stride: usize, pad: Padding) -> Tensor<f64> {
    let &[b, c, h, w] = x.shape() else { unreachable!() };
    let ho = (h + pad.top + pad.bottom - k) / stride + 1;
    let wo = (w + pad.left + pad.right - k) / stride + 1;
    let mut y = Tensor::zeros(&[b, c, ho, wo]);
    for p in 0..b * c {
        for oy in 0..ho {
            for ox in 0..wo {
                let mut m = f64::NEG_INFINITY;
                for ky in 0..k {
                    for kx in 0..k {
                        let iy = (oy * stride + ky) as isize - pad.top as isize;
                        let ix = (ox * stride + kx) as isize - pad.left as isize;
                        if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                            m = m.max(x.data()[(p * h + iy as usize) * w + ix as usize]);
                        }
                    }
                }
                y.data_mut()[(p * ho + oy) * wo + ox] = m;
            }
        }
    }
    y
}

/// Distinct values: a shuffled ramp with steps of 0.1, far above gradcheck's 1e-6 step.
fn distinct(shape: Vec<usize>) -> impl Strategy<Value = Tensor<f64>> {
    let n: usize = shape.iter().product();
    Just((0..n).map(|i| i as f64 * 0.1 - n as f64 * 0.05).collect::<Vec<_>>())
        .prop_shuffle()
        .prop_map(move |v| Tensor::from_vec(v, &shape))
}

fn inputs() -> impl Strategy<Value = (Tensor<f64>, usize, usize, Padding)> {
    (1..=2usize, 1..=3usize, 1..=3usize, 1..=3usize, [0..=2usize, 0..=2, 0..=2, 0..=2]).prop_flat_map(
        |(b, c, k, stride, [t, bo, l, r])| {
            let pad = Padding { top: t.min(k - 1), bottom: bo.min(k - 1), left: l.min(k - 1), right: r.min(k - 1) };
            let h_min = k.saturating_sub(pad.top + pad.bottom).max(1);
            let w_min = k.saturating_sub(pad.left + pad.right).max(1);
            (h_min..=h_min + 5, w_min..=w_min + 5)
                .prop_flat_map(move |(h, w)| (distinct(vec![b, c, h, w]), Just(k), Just(stride), Just(pad)))
        },
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn forward_matches_reference((x, k, stride, pad) in inputs()) {
        let got = forward(|g, v| g.max_pool2d(v[0], k, stride, pad), std::slice::from_ref(&x));
        assert_close(&got, &reference(&x, k, stride, pad), 0.0);
    }

    #[test]
    fn gradient_matches_finite_differences((x, k, stride, pad) in inputs()) {
        assert_gradcheck(|g, v| g.max_pool2d(v[0], k, stride, pad), &[x]);
    }
}

#[test]
fn overlapping_windows_add_their_gradients_and_ties_go_to_the_first() {
    // 3x3 / 2 on a 1x5 row of [1, 9, 9, 2, 0]; SAME pads one after: windows {1, 9, 9}, {9, 2, 0}.
    let x = Tensor::from_f64s(&[1.0, 9.0, 9.0, 2.0, 0.0], &[1, 1, 1, 5]);
    let mut g = Graph::<f64>::new();
    let xv = g.param(&x);
    let y = g.max_pool2d(xv, 3, 2, Padding { top: 1, bottom: 1, left: 0, right: 0 });
    assert_eq!(g.value(y).data(), &[9.0, 9.0]);
    g.backward_with(y, Tensor::from_f64s(&[1.0, 10.0], &[1, 1, 1, 2]));
    // Window 1 ties at x[1] and x[2]: x[1] wins. Window 2 starts at x[2], its own max.
    assert_eq!(g.grad(xv).unwrap().data(), &[0.0, 1.0, 10.0, 0.0, 0.0]);
}

#[test]
#[should_panic(expected = "must be less than the kernel")]
fn padding_as_wide_as_the_kernel_panics() {
    let mut g = Graph::<f32>::new();
    let x = g.input(Tensor::zeros(&[1, 1, 4, 4]));
    g.max_pool2d(x, 2, 2, Padding::uniform(2));
}
