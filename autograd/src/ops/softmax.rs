//! Softmax and log-softmax over the last axis, numerically stable.
//!
//! ```text
//!     softmax:      y_i = exp(x_i - m) / sum_j exp(x_j - m),        m = max_j x_j
//!                   dx_i = y_i (g_i - sum_j g_j y_j)
//!     log_softmax:  y_i = (x_i - m) - ln sum_j exp(x_j - m)
//!                   dx_i = g_i - softmax(x)_i sum_j g_j,            softmax(x) = exp(y)
//! ```
//!
//! Subtracting the row max `m` cancels out mathematically but keeps every exponent <= 0, so no
//! row overflows however large its logits. Both backwards need only the op's output, so neither
//! op saves anything: log-softmax recovers the probabilities as `exp(y)` rather than keeping a
//! second `[.., D]` tensor alive until backward.
//!
//!
//! f32 rows take the SIMD kernels ([`crate::kernels::rows`]); f64 rows (gradient checks) the
//! scalar code below, with f64 sums.

use super::last_axis;
use crate::dtype::Float;
use crate::graph::{BackwardCtx, Graph, Op, Var};
use crate::kernels::parallel::for_each_row;
use crate::kernels::rows::Rows;
use crate::kernels::{as_f32, as_f32_mut};
use crate::tensor::Tensor;

/// The row's maximum; NaN does not win `max`, but then poisons the exponentials, as it should.
fn row_max<T: Float>(x: &[T]) -> T {
    x.iter().fold(x[0], |m, &v| m.max(v))
}

/// `y = softmax(x)` for one row: `e_i = exp(x_i - m)`, `y_i = e_i / sum e`.
fn softmax_row<T: Float>(x: &[T], y: &mut [T]) {
    let m = row_max(x);
    // Accumulated in f64 so long rows lose nothing; it costs nothing on the scalar path.
    let mut sum = 0.0f64;
    for (yi, &xi) in y.iter_mut().zip(x) {
        let e = (xi - m).exp();
        *yi = e;
        sum += e.to_f64();
    }
    let inv = T::from_f64(1.0 / sum);
    for yi in y.iter_mut() {
        *yi *= inv;
    }
}

/// `y = log_softmax(x)` for one row: `y_i = (x_i - m) - ln sum_j exp(x_j - m)`.
fn log_softmax_row<T: Float>(x: &[T], y: &mut [T]) {
    let m = row_max(x);
    let sum: f64 = x.iter().map(|&xi| (xi - m).exp().to_f64()).sum();
    let log_sum = T::from_f64(sum.ln());
    // (x_i - m) first, so a large offset shared by the row's logits cancels before log_sum
    // (which is small) is subtracted.
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi = (xi - m) - log_sum;
    }
}

/// Row-wise `y = softmax(x)` for rows of `n` (f32: the SIMD kernel).
pub(crate) fn softmax_rows<T: Float>(x: &[T], y: &mut [T], n: usize) {
    if let (Some(x32), Some(y32)) = (as_f32(x), as_f32_mut(y)) {
        return Rows::active().softmax_forward(x32, y32, n);
    }
    for_each_row(y, n, |r, y| softmax_row(&x[r * n..(r + 1) * n], y));
}

/// Row-wise softmax backward from the output `y`: `dx = y * (g - sum(g * y))` (f32: the SIMD
/// kernel).
pub(crate) fn softmax_rows_backward<T: Float>(y: &[T], g: &[T], dx: &mut [T], n: usize) {
    if let (Some(y32), Some(g32), Some(dx32)) = (as_f32(y), as_f32(g), as_f32_mut(dx)) {
        return Rows::active().softmax_backward(y32, g32, dx32, n);
    }
    for_each_row(dx, n, |r, dx| {
        let (y, g) = (&y[r * n..(r + 1) * n], &g[r * n..(r + 1) * n]);
        let dot = T::from_f64(g.iter().zip(y).map(|(&g, &y)| (g * y).to_f64()).sum());
        for ((dx, &g), &y) in dx.iter_mut().zip(g).zip(y) {
            *dx = y * (g - dot);
        }
    });
}

/// `y = softmax(x)` over the last axis;  `dx = y * (g - sum(g * y))` per row.
struct Softmax;
impl<T: Float> Op<T> for Softmax {
    fn name(&self) -> String {
        "softmax".into()
    }
    fn backward(&self, c: &BackwardCtx<'_, T>) -> Vec<Option<Tensor<T>>> {
        let y = c.kept_output();
        let (_, d) = last_axis(y.shape(), "softmax backward");
        let dx = on_device!([y, c.grad],
        cuda: crate::cuda::ops::softmax_backward(y, c.grad, false),
        cpu: {
            let mut dx = crate::pool::take(y.numel());
            softmax_rows_backward(y.data(), c.grad.data(), &mut dx, d);
            Tensor::from_vec(dx, y.shape())
        });
        vec![Some(dx)]
    }
}

/// `y = log_softmax(x)` over the last axis;  `dx = g - exp(y) * sum(g)` per row.
struct LogSoftmax;
impl<T: Float> Op<T> for LogSoftmax {
    fn name(&self) -> String {
        "log_softmax".into()
    }
    fn backward(&self, c: &BackwardCtx<'_, T>) -> Vec<Option<Tensor<T>>> {
        let out = c.kept_output();
        let (_, d) = last_axis(out.shape(), "log_softmax backward");
        #[cfg(feature = "cuda")]
        if out.is_cuda() {
            return vec![Some(crate::cuda::ops::softmax_backward(out, c.grad, true))];
        }
        let (y, g) = (out.data(), c.grad.data());
        let mut dx = crate::pool::zeros(y.len());
        for_each_row(&mut dx, d, |r, dx| {
            let (y, g) = (&y[r * d..(r + 1) * d], &g[r * d..(r + 1) * d]);
            let gsum = T::from_f64(g.iter().map(|g| g.to_f64()).sum());
            for ((dx, &g), &y) in dx.iter_mut().zip(g).zip(y) {
                *dx = g - y.exp() * gsum;
            }
        });
        vec![Some(Tensor::from_vec(dx, out.shape()))]
    }
}

/// Applies `row(x_row, y_row)` to every last-axis row of `x`.
fn map_last_axis<T: Float>(x: &Tensor<T>, op: &str, row: fn(&[T], &mut [T])) -> Tensor<T> {
    let (_, d) = last_axis(x.shape(), op);
    let xd = x.data();
    let mut y = crate::pool::zeros(xd.len());
    for_each_row(&mut y, d, |r, y| row(&xd[r * d..(r + 1) * d], y));
    Tensor::from_vec(y, x.shape())
}

impl<T: Float> Graph<T> {
    /// Softmax over the last axis: each row of `x` becomes a probability vector.
    pub fn softmax(&mut self, x: Var) -> Var {
        let xv = self.value(x);
        let (_, d) = last_axis(xv.shape(), "softmax");
        let y = on_device!([xv],
        cuda: crate::cuda::ops::softmax(xv, false),
        cpu: {
            let mut y = crate::pool::take(xv.numel());
            softmax_rows(xv.data(), &mut y, d);
            Tensor::from_vec(y, xv.shape())
        });
        self.push(y, Softmax, &[x])
    }

    /// Log-softmax over the last axis, computed directly (not as `ln(softmax)`, which
    /// underflows to `-inf` for very negative logits).
    pub fn log_softmax(&mut self, x: Var) -> Var {
        let xv = self.value(x);
        let y = on_device!([xv],
            cuda: crate::cuda::ops::softmax(xv, true),
            cpu: map_last_axis(xv, "log_softmax", log_softmax_row));
        self.push(y, LogSoftmax, &[x])
    }
}
