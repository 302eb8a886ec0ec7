//! Optimizer steps and global-norm clipping on the device (optim.cu).

use std::sync::Arc;

use super::{elementwise_grid, int, name, ptr, scalar};
use crate::cuda::driver::{Arg, LaunchConfig};
use crate::cuda::gpu::{DeviceBuffer, Gpu};
use crate::dtype::Float;
use crate::kernels::rows::AdamW;

/// Elements per block of the sum-of-squares pass (`sumsq` in reduce.cu).
const SUMSQ_CHUNK: usize = 8192;

/// One AdamW step on `(p, m, v)` from `g`, with the coefficients formed exactly as the CPU
/// kernel forms them from `h` (so both devices run the same arithmetic).
pub fn adamw<T: Float>(p: &DeviceBuffer<T>, g: &DeviceBuffer<T>, m: &DeviceBuffer<T>, v: &DeviceBuffer<T>, h: &AdamW) {
    let n = p.len();
    assert!(g.len() == n && m.len() == n && v.len() == n, "adamw: lengths differ");
    if n == 0 {
        return;
    }
    let decay = 1.0 - h.lr * h.weight_decay;
    let (c1, c2) = (h.one_minus_beta1, h.one_minus_beta2);
    let step = h.lr / h.bias_correction1;
    let inv_sqrt_bc2 = 1.0 / h.bias_correction2.sqrt();
    let s = |x: f32| scalar::<T>(x as f64);
    let args = [
        ptr(p),
        ptr(g),
        ptr(m),
        ptr(v),
        int(n),
        s(h.beta1),
        s(h.beta2),
        s(c1),
        s(c2),
        s(decay),
        s(step),
        s(inv_sqrt_bc2),
        s(h.eps),
    ];
    // SAFETY: the four buffers hold n elements each.
    unsafe { p.gpu().launch(&name::<T>("adamw"), elementwise_grid(n), &args) };
}

/// One SGD-with-momentum step (see `src/optim/sgd.rs`).
#[allow(clippy::too_many_arguments)]
pub fn sgd<T: Float>(
    p: &DeviceBuffer<T>,
    g: &DeviceBuffer<T>,
    buf: &DeviceBuffer<T>,
    lr: f32,
    mu: f32,
    wd: f32,
    first: bool,
    nesterov: bool,
) {
    let n = p.len();
    assert!(g.len() == n && buf.len() == n, "sgd: lengths differ");
    if n == 0 {
        return;
    }
    let args = [
        ptr(p),
        ptr(g),
        ptr(buf),
        int(n),
        scalar::<T>(lr as f64),
        scalar::<T>(mu as f64),
        scalar::<T>(wd as f64),
        Arg::I32(first as i32),
        Arg::I32(nesterov as i32),
    ];
    // SAFETY: the three buffers hold n elements each.
    unsafe { p.gpu().launch(&name::<T>("sgd"), elementwise_grid(n), &args) };
}

/// The squared global norm of `grads`, `sum over tensors and elements of g^2`, as a
/// one-element device buffer (in double; fixed chunks, fixed order).
pub fn sum_of_squares<T: Float>(gpu: &Arc<Gpu>, grads: &[&DeviceBuffer<T>]) -> DeviceBuffer<f64> {
    let blocks: Vec<usize> = grads.iter().map(|g| g.len().div_ceil(SUMSQ_CHUNK)).collect();
    let total: usize = blocks.iter().sum();
    let parts = gpu.alloc::<f64>(total.max(1));
    let mut at = 0;
    for (g, &nb) in grads.iter().zip(&blocks) {
        if nb > 0 {
            let args = [ptr(*g), Arg::Ptr(parts.at(at)), int(g.len()), int(SUMSQ_CHUNK)];
            // SAFETY: g holds len elements; blocks at.. at+nb of parts are this tensor's.
            unsafe { gpu.launch(&name::<T>("sumsq"), LaunchConfig::linear(nb as u32, 256), &args) };
        }
        at += nb;
    }
    let out = gpu.alloc::<f64>(1);
    // SAFETY: parts holds `total` partial sums (the kernel reads none when total is 0).
    unsafe { gpu.launch("sum_partials", LaunchConfig::linear(1, 256), &[ptr(&parts), ptr(&out), int(total)]) };
    out
}

/// Scales every gradient by `max_norm / (norm + 1e-6)` when `norm = sqrt(sumsq)` is finite and
/// above `max_norm`; the decision is taken on the device.
pub fn clip<T: Float>(grads: &[&DeviceBuffer<T>], sumsq: &DeviceBuffer<f64>, max_norm: f64) {
    for g in grads.iter().filter(|g| !g.is_empty()) {
        let args = [ptr(*g), int(g.len()), ptr(sumsq), Arg::F64(max_norm)];
        // SAFETY: g holds len elements, sumsq one.
        unsafe { g.gpu().launch(&name::<T>("clip_scale"), elementwise_grid(g.len()), &args) };
    }
}
