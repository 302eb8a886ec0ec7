//! Sums over axes and max/argmax along an axis (reduce.cu).

use super::elementwise::fill;
use super::{contiguous_strides, dims, elementwise_grid, int, name, opt_ptr, ptr, scalar};
use crate::cuda::driver::{Arg, LaunchConfig};
use crate::cuda::gpu::DeviceBuffer;
use crate::dtype::Float;
use crate::tensor::numel;

/// Rows summed by one block of `sum_cols` (8 threads x 128 rows each).
const COL_CHUNK: usize = 1024;
/// Elements summed by one block of `sum_rows` (256 threads x 32 each).
const ROW_CHUNK: usize = 8192;
const MAX_GRID_YZ: usize = 65535;

/// The sums of `x`, seen as `[outer, r, inner]`, over its middle axis, times `scale`:
/// `outer * inner` values. Deterministic (fixed chunks, fixed order), accumulated in double.
pub fn sum_mid<T: Float>(x: &DeviceBuffer<T>, outer: usize, r: usize, inner: usize, scale: f64) -> DeviceBuffer<T> {
    let gpu = x.gpu();
    assert_eq!(x.len(), outer * r * inner, "sum_mid: {} elements for [{outer}, {r}, {inner}]", x.len());
    if outer * inner == 0 || r == 0 {
        return fill(gpu, outer * inner, T::ZERO);
    }
    if inner == 1 {
        let chunk = ROW_CHUNK;
        let chunks = r.div_ceil(chunk);
        let y = gpu.alloc::<T>(chunks * outer);
        let s = if chunks == 1 { scale } else { 1.0 };
        let cfg = LaunchConfig {
            grid: (chunks as u32, outer.min(MAX_GRID_YZ) as u32, 1),
            block: (256, 1, 1),
            shared_bytes: 0,
        };
        let args = [ptr(x), ptr(&y), int(outer), int(r), int(chunk), scalar::<T>(s), Arg::I32(0)];
        // SAFETY: x is outer*r elements, y chunks*outer; the kernel stays inside both.
        unsafe { gpu.launch(&name::<T>("sum_rows"), cfg, &args) };
        // The partials [chunks, outer] are summed over their leading axis.
        return if chunks == 1 { y } else { sum_mid(&y, 1, chunks, outer, scale) };
    }
    let chunk = COL_CHUNK.max(r.div_ceil(MAX_GRID_YZ));
    let chunks = r.div_ceil(chunk);
    let y = gpu.alloc::<T>(chunks * outer * inner);
    let s = if chunks == 1 { scale } else { 1.0 };
    let cfg = LaunchConfig {
        grid: (inner.div_ceil(32) as u32, outer.min(MAX_GRID_YZ) as u32, chunks as u32),
        block: (32, 8, 1),
        shared_bytes: 0,
    };
    let args = [ptr(x), ptr(&y), int(outer), int(r), int(inner), int(chunk), scalar::<T>(s)];
    // SAFETY: as above, y holding chunks*outer*inner elements.
    unsafe { gpu.launch(&name::<T>("sum_cols"), cfg, &args) };
    if chunks == 1 {
        y
    } else {
        sum_mid(&y, 1, chunks, outer * inner, scale)
    }
}

/// The sums of `x` of `shape` over the axes where `mask` is set, times `scale`, row-major over
/// the kept axes: any set of axes, one thread per output (for the rare non-adjacent sets).
pub fn sum_general<T: Float>(x: &DeviceBuffer<T>, shape: &[usize], mask: &[bool], scale: f64) -> DeviceBuffer<T> {
    let keep: Vec<usize> = shape.iter().zip(mask).map(|(&d, &m)| if m { 1 } else { d }).collect();
    let red: Vec<usize> = shape.iter().zip(mask).map(|(&d, &m)| if m { d } else { 1 }).collect();
    let (n, m) = (numel(&keep), numel(&red));
    if n == 0 || m == 0 {
        return fill(x.gpu(), n, T::ZERO);
    }
    let y = x.gpu().alloc::<T>(n);
    let sx = contiguous_strides(shape);
    let (dk, _, rank) = dims(&keep, &[]);
    let (dr, st, _) = dims(&red, &[&sx]);
    let args = [ptr(x), ptr(&y), dk, dr, st[0], Arg::I32(rank), int(n), int(m), scalar::<T>(scale)];
    // SAFETY: every offset is a valid multi-index of shape; y holds n.
    unsafe { x.gpu().launch(&name::<T>("sum_general"), elementwise_grid(n), &args) };
    y
}

/// The maxima of `x`, seen as `[outer, n, inner]`, along its middle axis and their first
/// indices (`n > 0`).
pub fn max_along<T: Float>(
    x: &DeviceBuffer<T>,
    outer: usize,
    n: usize,
    inner: usize,
    values: bool,
) -> (Option<DeviceBuffer<T>>, DeviceBuffer<i64>) {
    assert!(n > 0, "max_along: empty axis");
    let gpu = x.gpu();
    let total = outer * inner;
    let y = values.then(|| gpu.alloc::<T>(total));
    let idx = gpu.alloc::<i64>(total);
    if total > 0 {
        let args = [ptr(x), opt_ptr(y.as_ref()), ptr(&idx), int(outer), int(n), int(inner)];
        // SAFETY: x is outer*n*inner; y and idx hold outer*inner.
        unsafe { gpu.launch(&name::<T>("max_along"), elementwise_grid(total), &args) };
    }
    (y, idx)
}
