//! Reductions: sum and mean over any set of axes (or all of them), max along an axis, and the
//! `argmax` used to score predictions.
//!
//! ```text
//!     y = s * sum_{axes} x,   s = 1 (sum) or 1/count (mean)      dx = s * g broadcast over axes
//!     y = max_{axis} x                                            (recorded as a constant)
//! ```
//!
//! A sum sees its input as `[outer, r, inner]` whenever the reduced axes are adjacent in memory
//! (ignoring size-1 axes): a sum of contiguous runs when `inner = 1` (last axes), else a sum of
//! `inner`-element rows (leading or middle axes). Both are plain loops the compiler vectorises,
//! run in parallel over `outer` when there is enough work. Other axis sets (e.g. axes 0 and 2)
//! take the general broadcasting path, [`reduce_to`].

use rayon::prelude::*;

use super::broadcast::reduce_to;
use super::shape::{expand, split_at_axis};
use super::unary::scaled;
use crate::dtype::Float;
use crate::graph::{BackwardCtx, Graph, Op, Var};
use crate::kernels::parallel::{sum_rows, GRAIN};
use crate::tensor::{numel, Tensor};

/// Which axes are reduced, one flag per axis; panics naming `op` and `shape` on an axis out of
/// range or listed twice.
fn reduced_axes(op: &str, shape: &[usize], axes: &[usize]) -> Vec<bool> {
    let mut mask = vec![false; shape.len()];
    for &a in axes {
        assert!(a < shape.len(), "{op}: axis {a} out of range for shape {shape:?}");
        assert!(!mask[a], "{op}: axis {a} repeated in {axes:?} (shape {shape:?})");
        mask[a] = true;
    }
    mask
}

/// `shape` with the reduced axes set to 1 (`keepdim = true`) or removed (`keepdim = false`).
fn reduced_shape(shape: &[usize], mask: &[bool], keepdim: bool) -> Vec<usize> {
    let kept = shape.iter().zip(mask);
    if keepdim {
        kept.map(|(&d, &m)| if m { 1 } else { d }).collect()
    } else {
        kept.filter(|(_, &m)| !m).map(|(&d, _)| d).collect()
    }
}

/// `(outer, r, inner)` if the reduced axes of size > 1 are adjacent once size-1 axes (which take
/// no memory) are dropped; `None` if kept axes of size > 1 lie between reduced ones.
pub(crate) fn outer_reduced_inner(shape: &[usize], mask: &[bool]) -> Option<(usize, usize, usize)> {
    let axes: Vec<(usize, bool)> = shape.iter().zip(mask).filter(|(&d, _)| d != 1).map(|(&d, &m)| (d, m)).collect();
    let product = |s: &[(usize, bool)]| s.iter().map(|&(d, _)| d).product::<usize>();
    let Some(first) = axes.iter().position(|&(_, m)| m) else {
        return Some((numel(shape), 1, 1));
    };
    let last = axes.iter().rposition(|&(_, m)| m).unwrap_or(first);
    axes[first..=last]
        .iter()
        .all(|&(_, m)| m)
        .then(|| (product(&axes[..first]), product(&axes[first..=last]), product(&axes[last + 1..])))
}

/// Sum of a contiguous run, accumulated in f64 over eight independent lanes: the lanes let the
/// compiler vectorise the loop, and f64 keeps a 10M-element f32 sum correct to f32 precision
/// (an f32 accumulator's rounding errors grow with the number of terms).
fn sum_contiguous<T: Float>(x: &[T]) -> T {
    let mut lanes = [0.0f64; 8];
    let mut runs = x.chunks_exact(8);
    for run in &mut runs {
        for (l, &v) in lanes.iter_mut().zip(run) {
            *l += v.to_f64();
        }
    }
    let tail: f64 = runs.remainder().iter().map(|v| v.to_f64()).sum();
    T::from_f64(lanes.iter().sum::<f64>() + tail)
}

/// Sums `x`, seen as `[outer, r, inner]`, over its middle axis: `outer * inner` values.
fn sum_middle<T: Float>(x: &[T], outer: usize, r: usize, inner: usize) -> Vec<T> {
    if r == 1 {
        return x.to_vec();
    }
    let mut out = crate::pool::zeros(outer * inner);
    if out.is_empty() || r == 0 {
        return out;
    }
    let slab = r * inner;
    if inner > 1 {
        // Each slab is `r` rows of `inner`: the column sum.
        let sum_slab = |(dst, src): (&mut [T], &[T])| sum_rows(src, dst);
        out.par_chunks_mut(inner).zip(x.par_chunks(slab)).with_min_len(GRAIN.div_ceil(slab)).for_each(sum_slab);
    } else if x.len() >= GRAIN && outer > 1 {
        out.par_iter_mut()
            .zip(x.par_chunks(slab))
            .with_min_len(GRAIN.div_ceil(slab))
            .for_each(|(d, s)| *d = sum_contiguous(s));
    } else {
        out.iter_mut().zip(x.chunks(slab)).for_each(|(d, s)| *d = sum_contiguous(s));
    }
    out
}

/// The sums over the masked axes, row-major over the kept axes.
fn sum_over<T: Float>(x: &Tensor<T>, mask: &[bool]) -> Vec<T> {
    match outer_reduced_inner(x.shape(), mask) {
        Some((outer, r, inner)) => sum_middle(x.data(), outer, r, inner),
        None => reduce_to(x, &reduced_shape(x.shape(), mask, true)).into_vec(),
    }
}

/// NaN is the one value unordered even against itself (the trait has no `is_nan`).
fn is_nan<T: Float>(v: T) -> bool {
    v.partial_cmp(&v).is_none()
}

/// Whether `v` replaces `best` as the running maximum: a strictly larger value, or the first NaN
/// (NaN propagates, as in NumPy and PyTorch), so ties keep their first index.
fn beats<T: Float>(v: T, best: T) -> bool {
    v > best || (is_nan(v) && !is_nan(best))
}

/// The maxima along `axis` and their (first) indices, row-major over the other axes.
fn max_along<T: Float>(op: &str, t: &Tensor<T>, axis: usize) -> (Vec<T>, Vec<usize>) {
    let shape = t.shape();
    assert!(axis < shape.len(), "{op}: axis {axis} out of range for shape {shape:?}");
    let (outer, n, inner) = split_at_axis(shape, axis);
    if outer * inner == 0 {
        return (Vec::new(), Vec::new());
    }
    assert!(n > 0, "{op}: cannot reduce the empty axis {axis} of shape {shape:?}");
    let mut best = Vec::with_capacity(outer * inner);
    let mut arg = vec![0; outer * inner];
    for (o, slab) in t.data().chunks_exact(n * inner).enumerate() {
        best.extend_from_slice(&slab[..inner]);
        let (best, arg) = (&mut best[o * inner..], &mut arg[o * inner..(o + 1) * inner]);
        for (k, row) in slab.chunks_exact(inner).enumerate().skip(1) {
            for ((b, a), &v) in best.iter_mut().zip(arg.iter_mut()).zip(row) {
                if beats(v, *b) {
                    *b = v;
                    *a = k;
                }
            }
        }
    }
    (best, arg)
}

/// `y = s * sum_{axes} x` with `s = 1` (sum) or `s = 1/count` (mean, `count` the number of
/// elements summed into each output);  `dx = s * g`, broadcast back over the reduced axes.
struct Sum<T> {
    op: &'static str,
    axes: Vec<usize>,
    /// The output's shape with the reduced axes kept as size 1, whatever `keepdim` was.
    keep_shape: Vec<usize>,
    scale: T,
}
impl<T: Float> Op<T> for Sum<T> {
    fn name(&self) -> String {
        format!("{}(axes={:?})", self.op, self.axes)
    }
    fn backward(&self, c: &BackwardCtx<'_, T>) -> Vec<Option<Tensor<T>>> {
        let dx = expand(&c.grad.reshape(&self.keep_shape), c.inputs[0].shape());
        vec![Some(if self.scale != T::ONE { scaled(&dx, self.scale) } else { dx })]
    }
}

impl<T: Float> Graph<T> {
    /// Sum over `axes` (any order, none repeated; an empty list is the identity). With
    /// `keepdim` the reduced axes stay as size 1, otherwise they are removed.
    pub fn sum(&mut self, x: Var, axes: &[usize], keepdim: bool) -> Var {
        self.scaled_sum("sum", x, axes, keepdim)
    }

    /// Mean over `axes` (see [`Graph::sum`]).
    pub fn mean(&mut self, x: Var, axes: &[usize], keepdim: bool) -> Var {
        self.scaled_sum("mean", x, axes, keepdim)
    }

    /// Sum of every element, as a shape-`[]` scalar.
    pub fn sum_all(&mut self, x: Var) -> Var {
        let axes: Vec<usize> = (0..self.shape(x).len()).collect();
        self.sum(x, &axes, false)
    }

    /// Mean of every element, as a shape-`[]` scalar.
    pub fn mean_all(&mut self, x: Var) -> Var {
        let axes: Vec<usize> = (0..self.shape(x).len()).collect();
        self.mean(x, &axes, false)
    }

    fn scaled_sum(&mut self, op: &'static str, x: Var, axes: &[usize], keepdim: bool) -> Var {
        let shape = self.shape(x);
        let mask = reduced_axes(op, shape, axes);
        let keep_shape = reduced_shape(shape, &mask, true);
        let out_shape = reduced_shape(shape, &mask, keepdim);
        let count: usize = shape.iter().zip(&mask).filter(|(_, &m)| m).map(|(&d, _)| d).product();
        let scale = if op == "mean" { T::ONE / T::from_usize(count) } else { T::ONE };
        let xv = self.value(x);
        let y = on_device!([xv],
            cuda: crate::cuda::ops::sum_over(xv, &mask, &out_shape, scale.to_f64()),
            cpu: {
                let mut y = sum_over(xv, &mask);
                if scale != T::ONE {
                    y.iter_mut().for_each(|v| *v *= scale);
                }
                Tensor::from_vec(y, &out_shape)
            }
        );
        let op = Sum { op, axes: axes.to_vec(), keep_shape, scale };
        self.push(y, op, &[x])
    }

    /// Largest entry along `axis` (NaN if the slice holds one).
    ///
    /// Not differentiable: the result is recorded as a constant (like [`Graph::input`]), so no
    /// gradient flows back to `x` through it. That is what its uses want: the shift in a stable
    /// `x - max(x)` leaves the result unchanged and so needs no gradient, and metrics need none.
    /// Panics if `axis` is out of range or empty.
    pub fn max(&mut self, x: Var, axis: usize, keepdim: bool) -> Var {
        let xv = check_axis("max", self.value(x), axis);
        let mut mask = vec![false; xv.ndim()];
        mask[axis] = true;
        let shape = reduced_shape(xv.shape(), &mask, keepdim);
        let y = on_device!([xv],
            cuda: crate::cuda::ops::max(xv, axis, &shape),
            cpu: Tensor::from_vec(max_along("max", xv, axis).0, &shape));
        self.input(y)
    }
}

/// Index of the largest entry along `axis` (the first one on ties; the first NaN if any), for
/// every position of the other axes in row-major order: for logits `[B, classes]` and `axis = 1`,
/// the predicted class of each example. Panics if `axis` is out of range or empty.
pub fn argmax<T: Float>(t: &Tensor<T>, axis: usize) -> Vec<usize> {
    on_device!([t],
        cuda: crate::cuda::ops::argmax(check_axis("argmax", t, axis), axis),
        cpu: max_along("argmax", t, axis).1)
}

/// `t`, after checking that `axis` is one of its axes and not empty where there is something to
/// reduce.
fn check_axis<'a, T: Float>(op: &str, t: &'a Tensor<T>, axis: usize) -> &'a Tensor<T> {
    let shape = t.shape();
    assert!(axis < shape.len(), "{op}: axis {axis} out of range for shape {shape:?}");
    let (outer, n, inner) = split_at_axis(shape, axis);
    assert!(n > 0 || outer * inner == 0, "{op}: cannot reduce the empty axis {axis} of shape {shape:?}");
    t
}
