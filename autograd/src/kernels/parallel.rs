//! The one parallel row driver, and the one deterministic reduction over rows built on it.
//!
//! Every row-wise op and kernel (layer norm, softmax, GELU, the loss, bias passes, AdamW, the
//! column sums of bias gradients) splits its rows the same way: into blocks of
//! [`rows_per_task`] rows, a number that depends on the row width and the kernel's cost per
//! element only, never on the thread count. Small tensors are one block and stay on the calling
//! thread (handing work to rayon costs more than the work below about [`GRAIN`] elements).
//!
//! Because the blocks do not depend on the machine, a reduction that sums each block into its
//! own partial and then adds the partials in block order ([`reduce_row_blocks`],
//! [`sum_rows`]) gives bit-identical results on 1 thread and on 64.

use std::ops::Range;

use rayon::prelude::*;

use super::{as_f32, as_f32_mut, rows::Rows};
use crate::dtype::Float;

/// Elements (times the kernel's relative cost) below which a task is not worth a thread.
pub const GRAIN: usize = 1 << 15;

/// How many `width`-element rows one task takes, for a kernel costing `cost` units per
/// element: at least [`GRAIN`] units of work, and at least one row.
pub fn rows_per_task(width: usize, cost: usize) -> usize {
    GRAIN.div_ceil(width.max(1) * cost.max(1)).max(1)
}

/// The blocks of rows `0..rows` (see [`rows_per_task`]).
fn blocks(rows: usize, width: usize, cost: usize) -> impl IndexedParallelIterator<Item = Range<usize>> {
    let per = rows_per_task(width, cost);
    (0..rows.div_ceil(per)).into_par_iter().map(move |b| b * per..((b + 1) * per).min(rows))
}

/// Calls `f(rows)` for every block of `rows` rows of `width` elements, in parallel when there is
/// more than one block. `f` works on whatever buffers it captured, at rows `rows`.
pub fn for_row_blocks(rows: usize, width: usize, cost: usize, f: impl Fn(Range<usize>) + Sync + Send) {
    if rows == 0 {
        return;
    }
    if rows <= rows_per_task(width, cost) {
        return f(0..rows);
    }
    blocks(rows, width, cost).for_each(f);
}

/// Calls `f(r, row)` for each consecutive `width`-element row `r` of `out` (the last one may be
/// shorter), in parallel over blocks of rows. `f` reads its inputs at `r * width`.
pub fn for_each_row<T: Send>(out: &mut [T], width: usize, f: impl Fn(usize, &mut [T]) + Sync + Send) {
    if out.is_empty() || width == 0 {
        return;
    }
    let per = rows_per_task(width, 1);
    if out.len() <= per * width {
        // One block: on the calling thread, as in `for_row_blocks`.
        return out.chunks_mut(width).enumerate().for_each(|(r, row)| f(r, row));
    }
    out.par_chunks_mut(per * width).enumerate().for_each(|(b, block)| {
        for (i, row) in block.chunks_mut(width).enumerate() {
            f(b * per + i, row)
        }
    });
}

/// A deterministic blocked reduction: `f(rows, partial)` sums its block of rows into `partial`
/// (`acc_len` zeros on entry), and the partials are added into `out` (`acc_len` long) in block
/// order, so the result does not depend on the thread count.
pub fn reduce_row_blocks<T: Float>(
    rows: usize,
    width: usize,
    cost: usize,
    out: &mut [T],
    f: impl Fn(Range<usize>, &mut [T]) + Sync + Send,
) {
    let acc_len = out.len();
    let per = rows_per_task(width, cost);
    if rows <= per {
        // One block: its partial is `out` itself, when `out` starts at zero; otherwise sum into
        // a zeroed partial first, so that `out += block` is the same in both cases.
        let mut partial = crate::pool::zeros::<T>(acc_len);
        if rows > 0 {
            f(0..rows, &mut partial);
        }
        add_rows(&partial, out);
        crate::pool::give(partial);
        return;
    }
    let n_blocks = rows.div_ceil(per);
    let mut partials = crate::pool::zeros::<T>(n_blocks * acc_len);
    partials.par_chunks_mut(acc_len.max(1)).zip(blocks(rows, width, cost)).for_each(|(p, r)| f(r, p));
    add_rows(&partials, out);
    crate::pool::give(partials);
}

/// `out_j += sum_r x[r, j]` over the rows of `x` (`rows x out.len()`), row after row in order.
fn add_rows<T: Float>(x: &[T], out: &mut [T]) {
    let n = out.len();
    if n == 0 {
        return;
    }
    if let (Some(x32), Some(o32)) = (as_f32(x), as_f32_mut(out)) {
        return Rows::active().add_rows(x32, o32);
    }
    for row in x.chunks_exact(n) {
        for (o, &v) in out.iter_mut().zip(row) {
            *o += v;
        }
    }
}

/// The column sums of a row-major `rows x n` matrix, accumulated: `out_j += sum_r x[r, j]`
/// (`n = out.len()`). This is the gradient of anything broadcast over rows (a bias, a layer
/// norm's parameters, `pos_embed` over the batch): parallel over fixed blocks of rows, SIMD for
/// f32, and the same bits on any number of threads.
pub fn sum_rows<T: Float>(x: &[T], out: &mut [T]) {
    let n = out.len();
    assert!(n > 0 && x.len().is_multiple_of(n) || x.is_empty(), "sum_rows: {} elements are not rows of {n}", x.len());
    if let (Some(x32), Some(o32)) = (as_f32(x), as_f32_mut(out)) {
        return Rows::active().sum_rows(x32, o32);
    }
    let rows = x.len().checked_div(n).unwrap_or(0);
    reduce_row_blocks(rows, n, 1, out, |r, partial| add_rows(&x[r.start * n..r.end * n], partial));
}

/// `d *= g` element-wise, and the column sums of the scaled `d` accumulated into `out` (as
/// [`sum_rows`] would add them, bit for bit), in one pass over `d`: a gradient through an
/// element-wise factor and the bias gradient that sums it (the fused Linear+GELU's backward).
pub fn scale_sum_rows<T: Float>(d: &mut [T], g: &[T], out: &mut [T]) {
    let n = out.len();
    assert!(d.len() == g.len(), "scale_sum_rows: d and g differ in length");
    assert!(
        n > 0 && d.len().is_multiple_of(n) || d.is_empty(),
        "scale_sum_rows: {} elements are not rows of {n}",
        d.len()
    );
    if let (Some(d32), Some(g32), Some(o32)) = (as_f32_mut(d), as_f32(g), as_f32_mut(out)) {
        return Rows::active().scale_sum_rows(d32, g32, o32);
    }
    let rows = d.len().checked_div(n).unwrap_or(0);
    let dp = crate::kernels::send_ptr::SendPtr::new(d.as_mut_ptr());
    reduce_row_blocks(rows, n, 1, out, |r, partial| {
        // SAFETY: each block scales its own rows of d.
        let d = unsafe { std::slice::from_raw_parts_mut(dp.at(r.start * n), r.len() * n) };
        for (d, &g) in d.iter_mut().zip(&g[r.start * n..]) {
            *d = g * *d;
        }
        add_rows(d, partial);
    });
}
