//! The ops of the ViT-CNN hybrid's ResNet stem (and the non-differentiable max) through the
//! device seam: the same tape on the CPU and on a CUDA device, forward values and every input's
//! gradient compared in f32 and f64 (see `ops::same_on_both`).

use std::sync::Arc;

use autograd::cuda::Gpu;
use autograd::ops::conv2d::Padding;
use autograd::ops::reduce::argmax;
use autograd::{Device, Float, Graph, Var};
use proptest::prelude::*;

use crate::both;
use crate::harness::{prop, tol, Tests};
use crate::ops::{gradcheck_on, same_on_both};
use crate::util::{random, shape};

pub const TESTS: Tests = &[
    ("ops::relu_max_argmax", relu_max),
    ("ops::max_pool2d", max_pool),
    ("ops::conv2d", conv2d),
    ("ops::group_norm", group_norm),
    ("ops::gradcheck_f64_resnet_ops_on_the_device", resnet_gradchecks),
];

fn relu_max_case<T: Float>(gpu: &Arc<Gpu>, s: &[usize], axis: usize, keepdim: bool, seed: u64) -> Result<(), String> {
    // Signs of both kinds (an exact 0 has probability 0).
    let x = [random::<T>(s, seed, -2.0, 2.0)];
    same_on_both(gpu, &format!("relu {s:?}"), &x, &|g: &mut Graph<T>, v: &[Var]| g.relu(v[0]), tol::<T>())?;
    let axis = axis % s.len();
    // max is a constant on the tape: `x - max(x)` checks its values and that no gradient
    // reaches x through it (dx = g on both devices).
    let shifted = move |g: &mut Graph<T>, v: &[Var]| {
        let m = g.max(v[0], axis, true);
        g.sub(v[0], m)
    };
    same_on_both(gpu, &format!("x - max(x, axis {axis}) {s:?}"), &x, &shifted, tol::<T>())?;
    let dropped = move |g: &mut Graph<T>, v: &[Var]| g.max(v[0], axis, keepdim);
    let mut g = Graph::<T>::inference();
    let on = g.input(x[0].to(Device::Cuda(gpu.ordinal())).unwrap());
    let y = dropped(&mut g, &[on]);
    let mut h = Graph::<T>::inference();
    let off = h.input(x[0].clone());
    let z = dropped(&mut h, &[off]);
    if g.shape(y) != h.shape(z) {
        return Err(format!("max {s:?} axis {axis} keepdim {keepdim}: shape {:?}, want {:?}", g.shape(y), h.shape(z)));
    }
    let (got, want) = (argmax(&x[0].to(Device::Cuda(gpu.ordinal())).unwrap(), axis), argmax(&x[0], axis));
    if got != want {
        return Err(format!("argmax {s:?} axis {axis}: {got:?}, want {want:?}"));
    }
    Ok(())
}

fn relu_max(gpu: &Arc<Gpu>) -> Result<(), String> {
    let case = (shape(1, 4, 9), 0usize..4, any::<bool>(), any::<u64>());
    prop(case, |(s, axis, keepdim, seed)| both!(relu_max_case(gpu, &s, axis, keepdim, seed)))
}

fn max_pool_case<T: Float>(
    gpu: &Arc<Gpu>,
    (b, c, h, w): (usize, usize, usize, usize),
    (k, stride): (usize, usize),
    pad: [usize; 4],
    seed: u64,
) -> Result<(), String> {
    // Padding below the kernel on each side (the op's rule), and a window that fits.
    let [top, bottom, left, right] = pad.map(|p| p % k);
    let pad = Padding { top, bottom, left, right };
    if h + top + bottom < k || w + left + right < k {
        return Ok(());
    }
    let x = [random::<T>(&[b, c, h, w], seed, -2.0, 2.0)];
    let pool = move |g: &mut Graph<T>, v: &[Var]| g.max_pool2d(v[0], k, stride, pad);
    // Overlapping windows (stride < k) send several gradients to one winner.
    same_on_both(gpu, &format!("max_pool2d [{b}, {c}, {h}, {w}] k {k} s {stride} {pad:?}"), &x, &pool, tol::<T>())
}

fn max_pool(gpu: &Arc<Gpu>) -> Result<(), String> {
    let case =
        ((1usize..3, 1usize..4, 1usize..10, 1usize..10), (1usize..4, 1usize..3), any::<[usize; 4]>(), any::<u64>());
    prop(case, |(d, ks, pad, seed)| both!(max_pool_case(gpu, d, ks, pad, seed)))
}

fn conv2d_case<T: Float>(
    gpu: &Arc<Gpu>,
    (b, c, h, w, o): (usize, usize, usize, usize, usize),
    (k, stride): (usize, usize),
    pad: [usize; 4],
    seed: u64,
) -> Result<(), String> {
    let [top, bottom, left, right] = pad.map(|p| p % 3);
    let pad = Padding { top, bottom, left, right };
    if h + top + bottom < k || w + left + right < k {
        return Ok(());
    }
    let inputs = [random::<T>(&[b, c, h, w], seed, -2.0, 2.0), random::<T>(&[o, c, k, k], seed ^ 7, -1.0, 1.0)];
    let conv = move |g: &mut Graph<T>, v: &[Var]| g.conv2d(v[0], v[1], stride, pad);
    // Strides below the kernel make overlapping windows: col2im then adds several columns into
    // one pixel; padding on each side sends some of them into the border.
    same_on_both(
        gpu,
        &format!("conv2d [{b}, {c}, {h}, {w}] * [{o}, {c}, {k}, {k}] s {stride} {pad:?}"),
        &inputs,
        &conv,
        tol::<T>(),
    )
}

fn conv2d(gpu: &Arc<Gpu>) -> Result<(), String> {
    let case = (
        (1usize..3, 1usize..4, 1usize..10, 1usize..10, 1usize..5),
        (1usize..4, 1usize..3),
        any::<[usize; 4]>(),
        any::<u64>(),
    );
    prop(case, |(d, ks, pad, seed)| both!(conv2d_case(gpu, d, ks, pad, seed)))
}

fn group_norm_case<T: Float>(
    gpu: &Arc<Gpu>,
    (b, groups, cpg, s): (usize, usize, usize, usize),
    seed: u64,
) -> Result<(), String> {
    let c = groups * cpg;
    let inputs = [
        random::<T>(&[b, c, s], seed, -2.0, 2.0),
        random::<T>(&[c], seed ^ 1, 0.5, 1.5),
        random::<T>(&[c], seed ^ 2, -0.5, 0.5),
    ];
    let norm = move |g: &mut Graph<T>, v: &[Var]| g.group_norm(v[0], groups, v[1], v[2], 1e-5);
    same_on_both(gpu, &format!("group_norm [{b}, {c}, {s}] in {groups} groups"), &inputs, &norm, tol::<T>())
}

fn group_norm(gpu: &Arc<Gpu>) -> Result<(), String> {
    // Groups of up to 5 channels of up to 40 values: rows longer and shorter than a warp.
    let case = ((1usize..3, 1usize..4, 1usize..6, 1usize..40), any::<u64>());
    prop(case, |(d, seed)| both!(group_norm_case(gpu, d, seed)))
}

/// The ResNet ops run on the device against central differences of themselves, in f64.
fn resnet_gradchecks(gpu: &Arc<Gpu>) -> Result<(), String> {
    crate::harness::prop_cases(6, (1usize..3, 1usize..3, any::<u64>()), |(b, c, seed)| {
        let conv = [random::<f64>(&[b, c, 5, 6], seed, -1.0, 1.0), random::<f64>(&[2, c, 3, 3], seed ^ 3, -1.0, 1.0)];
        let pad = Padding { top: 1, bottom: 0, left: 0, right: 1 };
        gradcheck_on(gpu, "conv2d", &conv, &move |g, v| g.conv2d(v[0], v[1], 2, pad))?;
        let norm = [
            random::<f64>(&[b, 2 * c, 3, 2], seed ^ 5, -1.0, 1.0),
            random::<f64>(&[2 * c], seed ^ 6, 0.5, 1.5),
            random::<f64>(&[2 * c], seed ^ 7, -0.5, 0.5),
        ];
        gradcheck_on(gpu, "group_norm", &norm, &|g, v| g.group_norm(v[0], 2, v[1], v[2], 1e-5))
    })
}
