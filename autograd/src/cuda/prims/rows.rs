//! Row kernels: softmax, layer norm, GELU, cross-entropy, dropout.

use super::reduce::sum_mid;
use super::{elementwise_grid, int, name, ptr, rows_grid, scalar};
use crate::cuda::driver::{Arg, LaunchConfig};
use crate::cuda::gpu::DeviceBuffer;
use crate::cuda::kernels::{GELU_ERF, GELU_TANH};
use crate::dtype::Float;
use crate::ops::gelu::GeluKind;

/// Rows per block of the layer-norm parameter-gradient pass.
const LN_CHUNK: usize = 256;

pub(crate) fn gelu_code(kind: GeluKind) -> Arg {
    Arg::I32(match kind {
        GeluKind::Erf => GELU_ERF,
        GeluKind::Tanh => GELU_TANH,
    })
}

/// Softmax (or log-softmax) of each `d`-element row of `x` into `y` (which may be `x`).
pub fn softmax_into<T: Float>(x: &DeviceBuffer<T>, y: &DeviceBuffer<T>, d: usize, log: bool) {
    let rows = x.len().checked_div(d).unwrap_or(0);
    if rows == 0 || d == 0 {
        return;
    }
    let args = [ptr(x), ptr(y), int(rows), int(d), Arg::I32(log as i32)];
    // SAFETY: x and y hold rows*d elements.
    unsafe { x.gpu().launch(&name::<T>("softmax_rows"), rows_grid(rows), &args) };
}

/// Softmax (or log-softmax) of each `d`-element row.
pub fn softmax<T: Float>(x: &DeviceBuffer<T>, d: usize, log: bool) -> DeviceBuffer<T> {
    let y = x.gpu().alloc::<T>(x.len());
    softmax_into(x, &y, d, log);
    y
}

/// The gradient of softmax (or log-softmax) from its output `y` and upstream `g`, into `dx`
/// (which may be `g`).
pub fn softmax_backward_into<T: Float>(
    y: &DeviceBuffer<T>,
    g: &DeviceBuffer<T>,
    dx: &DeviceBuffer<T>,
    d: usize,
    log: bool,
) {
    let rows = y.len().checked_div(d).unwrap_or(0);
    if rows == 0 || d == 0 {
        return;
    }
    let args = [ptr(y), ptr(g), ptr(dx), int(rows), int(d), Arg::I32(log as i32)];
    // SAFETY: all three hold rows*d elements.
    unsafe { y.gpu().launch(&name::<T>("softmax_backward"), rows_grid(rows), &args) };
}

/// See [`softmax_backward_into`].
pub fn softmax_backward<T: Float>(y: &DeviceBuffer<T>, g: &DeviceBuffer<T>, d: usize, log: bool) -> DeviceBuffer<T> {
    let dx = y.gpu().alloc::<T>(y.len());
    softmax_backward_into(y, g, &dx, d, log);
    dx
}

/// Layer norm of each `d`-element row: `(y, mean, rstd)`.
pub fn layer_norm_forward<T: Float>(
    x: &DeviceBuffer<T>,
    w: &DeviceBuffer<T>,
    b: &DeviceBuffer<T>,
    d: usize,
    eps: f64,
) -> (DeviceBuffer<T>, DeviceBuffer<T>, DeviceBuffer<T>) {
    let gpu = x.gpu();
    let rows = x.len().checked_div(d).unwrap_or(0);
    let (y, mean, rstd) = (gpu.alloc::<T>(x.len()), gpu.alloc::<T>(rows), gpu.alloc::<T>(rows));
    if rows > 0 && d > 0 {
        let args = [ptr(x), ptr(w), ptr(b), ptr(&y), ptr(&mean), ptr(&rstd), int(rows), int(d), Arg::F64(eps)];
        // SAFETY: x, y are rows*d; w, b are d; mean, rstd are rows.
        unsafe { gpu.launch(&name::<T>("layer_norm_forward"), rows_grid(rows), &args) };
    }
    (y, mean, rstd)
}

/// The layer norm output again from the saved statistics.
pub fn layer_norm_apply<T: Float>(
    x: &DeviceBuffer<T>,
    w: &DeviceBuffer<T>,
    b: &DeviceBuffer<T>,
    mean: &DeviceBuffer<T>,
    rstd: &DeviceBuffer<T>,
    d: usize,
) -> DeviceBuffer<T> {
    let y = x.gpu().alloc::<T>(x.len());
    let rows = mean.len();
    if !x.is_empty() {
        let args = [ptr(x), ptr(w), ptr(b), ptr(mean), ptr(rstd), ptr(&y), int(rows), int(d)];
        // SAFETY: as in layer_norm_forward.
        unsafe { x.gpu().launch(&name::<T>("layer_norm_apply"), elementwise_grid(x.len()), &args) };
    }
    y
}

/// Layer norm's gradients `(dx, dw, db)` (each only if asked for).
#[allow(clippy::type_complexity)]
pub fn layer_norm_backward<T: Float>(
    x: &DeviceBuffer<T>,
    w: &DeviceBuffer<T>,
    mean: &DeviceBuffer<T>,
    rstd: &DeviceBuffer<T>,
    g: &DeviceBuffer<T>,
    d: usize,
    needs: [bool; 3],
) -> (Option<DeviceBuffer<T>>, Option<DeviceBuffer<T>>, Option<DeviceBuffer<T>>) {
    let gpu = x.gpu();
    let rows = mean.len();
    let dx = needs[0].then(|| {
        let dx = gpu.alloc::<T>(x.len());
        if rows > 0 && d > 0 {
            let args = [ptr(x), ptr(w), ptr(mean), ptr(rstd), ptr(g), ptr(&dx), int(rows), int(d)];
            // SAFETY: x, g, dx are rows*d; w is d; mean, rstd are rows.
            unsafe { gpu.launch(&name::<T>("layer_norm_dx"), rows_grid(rows), &args) };
        }
        dx
    });
    let (dw, db) = if !(needs[1] || needs[2]) {
        (None, None)
    } else if rows == 0 || d == 0 {
        let zeros = || super::elementwise::fill(gpu, d, T::ZERO);
        (Some(zeros()), Some(zeros()))
    } else {
        let chunk = LN_CHUNK.max(rows.div_ceil(65535));
        let chunks = rows.div_ceil(chunk);
        let (pw, pb) = (gpu.alloc::<T>(chunks * d), gpu.alloc::<T>(chunks * d));
        let cfg = LaunchConfig { grid: (d.div_ceil(32) as u32, chunks as u32, 1), block: (32, 8, 1), shared_bytes: 0 };
        let args = [ptr(x), ptr(mean), ptr(rstd), ptr(g), ptr(&pw), ptr(&pb), int(rows), int(d), int(chunk)];
        // SAFETY: x and g are rows*d, mean and rstd rows; the partials hold chunks*d elements.
        unsafe { gpu.launch(&name::<T>("layer_norm_dwdb"), cfg, &args) };
        // The per-chunk partials [chunks, d], summed over chunks in order.
        let total = |p: DeviceBuffer<T>| if chunks == 1 { p } else { sum_mid(&p, 1, chunks, d, 1.0) };
        (Some(total(pw)), Some(total(pb)))
    };
    (dx, dw.filter(|_| needs[1]), db.filter(|_| needs[2]))
}

/// `y = gelu(x)`.
pub fn gelu_forward<T: Float>(x: &DeviceBuffer<T>, kind: GeluKind) -> DeviceBuffer<T> {
    let y = x.gpu().alloc::<T>(x.len());
    if !x.is_empty() {
        // SAFETY: both hold len elements.
        unsafe {
            x.gpu().launch(
                &name::<T>("gelu_forward"),
                elementwise_grid(x.len()),
                &[gelu_code(kind), ptr(x), ptr(&y), int(x.len())],
            )
        };
    }
    y
}

/// `dx = g gelu'(x)`.
pub fn gelu_backward<T: Float>(x: &DeviceBuffer<T>, g: &DeviceBuffer<T>, kind: GeluKind) -> DeviceBuffer<T> {
    let dx = x.gpu().alloc::<T>(x.len());
    if !x.is_empty() {
        let args = [gelu_code(kind), ptr(x), ptr(g), ptr(&dx), int(x.len())];
        // SAFETY: all hold len elements.
        unsafe { x.gpu().launch(&name::<T>("gelu_backward"), elementwise_grid(x.len()), &args) };
    }
    dx
}

/// Cross-entropy of logits `[rows, classes]` against `labels` (each `< classes`, checked by the
/// caller): the mean loss (a one-element buffer) and `softmax(x)`, saved for backward.
pub fn cross_entropy_forward<T: Float>(
    x: &DeviceBuffer<T>,
    labels: &DeviceBuffer<i64>,
    classes: usize,
    smoothing: f64,
) -> (DeviceBuffer<T>, DeviceBuffer<T>) {
    let gpu = x.gpu();
    let rows = labels.len();
    assert!(rows > 0 && x.len() == rows * classes, "cross_entropy: {} logits for {rows} labels", x.len());
    let probs = gpu.alloc::<T>(x.len());
    let losses = gpu.alloc::<f64>(rows);
    let loss = gpu.alloc::<T>(1);
    let args = [ptr(x), ptr(labels), ptr(&probs), ptr(&losses), int(rows), int(classes), Arg::F64(smoothing)];
    // SAFETY: x and probs are rows*classes, labels and losses rows, loss one element.
    unsafe {
        gpu.launch(&name::<T>("cross_entropy_forward"), rows_grid(rows), &args);
        gpu.launch(&name::<T>("mean_losses"), LaunchConfig::linear(1, 32), &[ptr(&losses), ptr(&loss), int(rows)]);
    }
    (loss, probs)
}

/// `dx = g (p - t) / B` with `g` the loss's gradient (a one-element device buffer).
pub fn cross_entropy_backward<T: Float>(
    probs: &DeviceBuffer<T>,
    labels: &DeviceBuffer<i64>,
    g: &DeviceBuffer<T>,
    classes: usize,
    smoothing: f64,
) -> DeviceBuffer<T> {
    let gpu = probs.gpu();
    let rows = labels.len();
    let dx = gpu.alloc::<T>(probs.len());
    let args = [ptr(probs), ptr(labels), ptr(g), ptr(&dx), int(rows), int(classes), Arg::F64(smoothing)];
    // SAFETY: probs and dx are rows*classes, labels rows, g one element.
    unsafe { gpu.launch(&name::<T>("cross_entropy_backward"), elementwise_grid(probs.len()), &args) };
    dx
}

/// Inverted dropout with the CPU's streams (see dropout.cu): `(y, keep mask)`.
pub fn dropout_forward<T: Float>(x: &DeviceBuffer<T>, p: f64, seed: u64) -> (DeviceBuffer<T>, DeviceBuffer<u8>) {
    let gpu = x.gpu();
    let (y, keep) = (gpu.alloc::<T>(x.len()), gpu.alloc::<u8>(x.len()));
    if !x.is_empty() {
        let pieces = x.len().div_ceil(4096);
        let cfg = LaunchConfig::linear(pieces.div_ceil(64).clamp(1, super::MAX_BLOCKS) as u32, 64);
        let args =
            [ptr(x), ptr(&y), ptr(&keep), int(x.len()), Arg::U64(seed), Arg::F64(p), scalar::<T>(1.0 / (1.0 - p))];
        // SAFETY: x, y and keep hold len elements.
        unsafe { gpu.launch(&name::<T>("dropout_forward"), cfg, &args) };
    }
    (y, keep)
}

/// `dx = g * keep / (1 - p)`.
pub fn dropout_backward<T: Float>(g: &DeviceBuffer<T>, keep: &DeviceBuffer<u8>, p: f64) -> DeviceBuffer<T> {
    let dx = g.gpu().alloc::<T>(g.len());
    if !g.is_empty() {
        let args = [ptr(g), ptr(keep), ptr(&dx), int(g.len()), scalar::<T>(1.0 / (1.0 - p))];
        // SAFETY: all hold len elements.
        unsafe { g.gpu().launch(&name::<T>("dropout_backward"), elementwise_grid(g.len()), &args) };
    }
    dx
}
