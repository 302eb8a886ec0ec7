//! Layer normalisation over the last axis (Ba et al., 2016), fused into one op: the `LN` of the
//! paper's eqs. 2-4.
//!
//! ```text
//! forward, per row x of width D:
//!     mean = sum_i x_i / D,   var = sum_i (x_i - mean)^2 / D,   rstd = 1 / sqrt(var + eps)
//!     xhat_i = (x_i - mean) rstd,     y_i = w_i xhat_i + b_i
//! backward, with dxhat_i = g_i w_i:
//!     dx_i = rstd (dxhat_i - mean_j(dxhat_j) - xhat_i mean_j(dxhat_j xhat_j))
//!     dw_i = sum over rows of g_i xhat_i,     db_i = sum over rows of g_i
//! ```
//!
//! In `dx`, the two row means remove the parts of `dxhat` that would shift the row's mean or
//! scale its spread: normalisation undoes both, so they cannot reach `x`.
//!
//! Fused because the composed graph (sub, mul, mean, sqrt, div) would keep several `[.., D]`
//! intermediates alive until backward; this op keeps two numbers per row, `mean` and `rstd`,
//! and recomputes `xhat` from `x`. The variance is the biased one (divided by D), as in PyTorch.

use super::last_axis;
use crate::dtype::Float;
use crate::graph::{BackwardCtx, Graph, Op, Var};
use crate::kernels::parallel::{for_each_row, reduce_row_blocks};
use crate::kernels::rows::Rows;
use crate::kernels::send_ptr::SendPtr;
use crate::kernels::{as_f32, as_f32_mut};
use crate::memory::{Recomputed, Saves};
use crate::tensor::Tensor;

/// `y = LN(x) * w + b` over the last axis; see the module documentation for the gradients.
struct LayerNorm<T: Float> {
    /// Per-row mean and 1/sqrt(var + eps), as the forward used them (`[rows]`, on the input's
    /// device).
    mean: Tensor<T>,
    rstd: Tensor<T>,
    eps: f64,
}

impl<T: Float> Op<T> for LayerNorm<T> {
    fn name(&self) -> String {
        format!("layer_norm(eps={:e})", self.eps)
    }

    /// Two numbers per row are kept; the output is recomputed (one cheap pass) when the next
    /// op's backward needs it, instead of staying on the tape.
    fn saves(&self) -> Saves {
        Saves::recompute((self.mean.numel() + self.rstd.numel()) * std::mem::size_of::<T>())
    }

    /// `y = (x - mean) * rstd * w + b` from the saved statistics.
    fn recompute(&self, inputs: &[&Tensor<T>]) -> Option<Recomputed<T>> {
        #[cfg(feature = "cuda")]
        if inputs[0].is_cuda() {
            let output = crate::cuda::ops::layer_norm_apply(inputs, &self.mean, &self.rstd);
            return Some(Recomputed { output });
        }
        let (x, w, b) = (inputs[0].data(), inputs[1].data(), inputs[2].data());
        let (mean, rstd) = (self.mean.data(), self.rstd.data());
        let (_, d) = last_axis(inputs[0].shape(), "layer_norm recompute");
        let mut y = crate::pool::take(x.len());
        if let (Some(x32), Some(w32), Some(b32), Some(m32), Some(r32)) =
            (as_f32(x), as_f32(w), as_f32(b), as_f32(mean), as_f32(rstd))
        {
            // f32: the forward's own kernel, so the recomputed output is the forward's.
            Rows::active().layer_norm_apply(x32, (w32, b32), (m32, r32), as_f32_mut(&mut y).unwrap());
            return Some(Recomputed { output: Tensor::from_vec(y, inputs[0].shape()) });
        }
        for_each_row(&mut y, d, |r, y| {
            let (m, s) = (mean[r], rstd[r]);
            for (j, (y, &x)) in y.iter_mut().zip(&x[r * d..(r + 1) * d]).enumerate() {
                *y = (x - m) * s * w[j] + b[j];
            }
        });
        Some(Recomputed { output: Tensor::from_vec(y, inputs[0].shape()) })
    }

    fn backward(&self, c: &BackwardCtx<'_, T>) -> Vec<Option<Tensor<T>>> {
        #[cfg(feature = "cuda")]
        if c.inputs[0].is_cuda() {
            return crate::cuda::ops::layer_norm_backward(c, &self.mean, &self.rstd);
        }
        let (x, w, g) = (c.inputs[0].data(), c.inputs[1].data(), c.grad.data());
        let (mean, rstd) = (self.mean.data(), self.rstd.data());
        let (rows, d) = last_axis(c.inputs[0].shape(), "layer_norm backward");
        let mut dx = crate::pool::take::<T>(x.len());
        // [dw | db], summed over rows by the deterministic blocked reduction.
        let mut dwb = vec![T::ZERO; 2 * d];
        if let (Some(x32), Some(w32), Some(g32), Some(m32), Some(r32)) =
            (as_f32(x), as_f32(w), as_f32(g), as_f32(mean), as_f32(rstd))
        {
            // f32: the SIMD kernel, same formulas.
            let (dx32, dwb32) = (as_f32_mut(&mut dx).unwrap(), as_f32_mut(&mut dwb).unwrap());
            let (dw32, db32) = dwb32.split_at_mut(d);
            Rows::active().layer_norm_backward(x32, w32, (m32, r32), g32, dx32, (dw32, db32));
        } else {
            let dxp = SendPtr::new(dx.as_mut_ptr());
            reduce_row_blocks(rows, d, 3, &mut dwb, |block, acc| {
                let (dw, db) = acc.split_at_mut(d);
                for r in block {
                    let (x, g) = (&x[r * d..(r + 1) * d], &g[r * d..(r + 1) * d]);
                    let (mean, rstd) = (mean[r], rstd[r]);
                    // SAFETY: row r of dx belongs to this block's task alone.
                    let dx = unsafe { std::slice::from_raw_parts_mut(dxp.at(r * d), d) };
                    // First pass: the two row means dx needs, and this row's share of dw, db.
                    let (mut sum_dxhat, mut sum_dxhat_xhat) = (0.0f64, 0.0f64);
                    for j in 0..d {
                        let xhat = (x[j] - mean) * rstd;
                        let dxhat = g[j] * w[j];
                        sum_dxhat += dxhat.to_f64();
                        sum_dxhat_xhat += (dxhat * xhat).to_f64();
                        dw[j] += g[j] * xhat;
                        db[j] += g[j];
                    }
                    let mean_dxhat = T::from_f64(sum_dxhat / d as f64);
                    let mean_dxhat_xhat = T::from_f64(sum_dxhat_xhat / d as f64);
                    // Second pass: xhat is recomputed (two flops) rather than stored per row.
                    for j in 0..d {
                        let xhat = (x[j] - mean) * rstd;
                        dx[j] = rstd * (g[j] * w[j] - mean_dxhat - xhat * mean_dxhat_xhat);
                    }
                }
            });
        }
        let db = dwb.split_off(d);
        vec![
            c.needs_grad[0].then(|| Tensor::from_vec(dx, c.inputs[0].shape())),
            c.needs_grad[1].then(|| Tensor::from_vec(dwb, &[d])),
            c.needs_grad[2].then(|| Tensor::from_vec(db, &[d])),
        ]
    }
}

impl<T: Float> Graph<T> {
    /// Layer normalisation of `x` `[.., D]` over its last axis, then `* weight + bias` (both
    /// `[D]`). ViT uses `eps = 1e-6`; PyTorch's default is `1e-5`.
    pub fn layer_norm(&mut self, x: Var, weight: Var, bias: Var, eps: f64) -> Var {
        let (rows, d) = last_axis(self.shape(x), "layer_norm");
        for (name, v) in [("weight", weight), ("bias", bias)] {
            assert_eq!(
                self.shape(v),
                &[d],
                "layer_norm: {name} must have shape [{d}] to match input {:?}, got {:?}",
                self.shape(x),
                self.shape(v)
            );
        }
        assert!(eps >= 0.0, "layer_norm: eps must be >= 0, got {eps}");
        let (xv, wv, bv) = (self.value(x), self.value(weight), self.value(bias));
        #[cfg(feature = "cuda")]
        if xv.is_cuda() {
            let (y, mean, rstd) = crate::cuda::ops::layer_norm(xv, wv, bv, eps);
            return self.push(y, LayerNorm { mean, rstd, eps }, &[x, weight, bias]);
        }
        let (xd, w, b) = (xv.data(), wv.data(), bv.data());
        let mut y = crate::pool::zeros(xd.len());
        let mut mean = crate::pool::zeros(rows);
        let mut rstd = crate::pool::zeros(rows);
        let fast = (as_f32(xd), as_f32(w), as_f32(b));
        if let (Some(x32), Some(w32), Some(b32), true) = (fast.0, fast.1, fast.2, d > 0) {
            // f32: the SIMD kernel (one pass for the mean, one for the variance, one to write y).
            let (y32, m32, r32) =
                (as_f32_mut(&mut y).unwrap(), as_f32_mut(&mut mean).unwrap(), as_f32_mut(&mut rstd).unwrap());
            Rows::active().layer_norm_forward(x32, (w32, b32), eps as f32, y32, (m32, r32));
        } else if d > 0 {
            let (mp, rp) = (SendPtr::new(mean.as_mut_ptr()), SendPtr::new(rstd.as_mut_ptr()));
            for_each_row(&mut y, d, |r, y| {
                let x = &xd[r * d..(r + 1) * d];
                // Two passes in f64 (mean, then the spread around it): the one-pass
                // E[x^2] - E[x]^2 cancels catastrophically when |mean| >> std.
                let m = x.iter().map(|v| v.to_f64()).sum::<f64>() / d as f64;
                let var = x.iter().map(|v| (v.to_f64() - m).powi(2)).sum::<f64>() / d as f64;
                let (m, s) = (T::from_f64(m), T::from_f64(1.0 / (var + eps).sqrt()));
                // SAFETY: row r's statistics belong to this row's task alone.
                unsafe { (*mp.at(r), *rp.at(r)) = (m, s) };
                for j in 0..d {
                    y[j] = (x[j] - m) * s * w[j] + b[j];
                }
            });
        }
        let (mean, rstd) = (Tensor::from_vec(mean, &[rows]), Tensor::from_vec(rstd, &[rows]));
        self.push(Tensor::from_vec(y, self.shape(x)), LayerNorm { mean, rstd, eps }, &[x, weight, bias])
    }
}
