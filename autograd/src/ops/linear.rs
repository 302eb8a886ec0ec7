//! The affine map of a Linear layer, fused: one product and the bias in one op.
//!
//! ```text
//!     y = x W^T + b              x: [..., K],  W: [N, K] (PyTorch's [out, in]),  b: [N]
//!     dx = g W                   (rows x N) @ (N x K)
//!     dW = g^T x                 (N x rows) @ (rows x K): every leading axis folds into one long
//!                                inner dimension, so the batch's contributions sum inside the GEMM
//!     db = sum over rows of g
//! ```
//!
//! Compared with `matmul_t` followed by a broadcasting `add`, the bias is added in the product's
//! epilogue, to each piece of a row while it is still in L1, and no second `[..., N]` tensor is
//! written; backward sums the bias gradient straight from `g` instead of going through the
//! general broadcast reduction.

use super::gelu::{gelu_backward, gelu_forward, gelu_forward_grad, gelu_in_place, scale_by, GeluKind};
use crate::dtype::Float;
use crate::graph::{BackwardCtx, Graph, Op, Var};
use crate::kernels::gemm::{gemm, gemm_then, Epilogue};
use crate::kernels::parallel::{scale_sum_rows, sum_rows};
use crate::kernels::rows::Rows;
use crate::kernels::send_ptr::SendPtr;
use crate::kernels::{as_f32, as_f32_mut, MatMut, MatRef};
use crate::memory::{Recomputed, Saves};
use crate::tensor::Tensor;

/// The gradients of `y = x W^T + b` given `g = dL/dy` (rows x n): `(dx, dW, db)`, each only if
/// asked for.
#[allow(clippy::type_complexity)]
fn linear_grads<T: Float>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    g: &[T],
    (rows, k, n): (usize, usize, usize),
    needs: [bool; 3],
) -> (Option<Tensor<T>>, Option<Tensor<T>>, Option<Tensor<T>>) {
    let some = rows > 0 && k > 0 && n > 0;
    // With a non-empty product every element is written by the GEMM (beta = 0): no zero fill.
    let buffer = |len: usize| if some { crate::pool::take(len) } else { crate::pool::zeros(len) };
    let (g_m, w_m) = (MatRef::row_major(g, rows, n), MatRef::row_major(w.data(), n, k));
    let dx = needs[0].then(|| {
        let mut dx = buffer(rows * k);
        // (rows x n) @ (n x k), both row-major.
        gemm(T::ONE, g_m, w_m, T::ZERO, MatMut::row_major(&mut dx, rows, k));
        Tensor::from_vec(dx, x.shape())
    });
    let dw = needs[1].then(|| {
        let mut dw = buffer(n * k);
        // g^T (n x rows, read through strides) @ x (rows x k).
        gemm(T::ONE, g_m.t(), MatRef::row_major(x.data(), rows, k), T::ZERO, MatMut::row_major(&mut dw, n, k));
        Tensor::from_vec(dw, w.shape())
    });
    let db = needs[2].then(|| {
        let mut db = crate::pool::zeros(n);
        sum_rows(g, &mut db);
        Tensor::from_vec(db, &[n])
    });
    (dx, dw, db)
}

/// `y = x W^T + b`, or with a residual `y = r + s (x W^T + b)`; see the module documentation.
struct Linear<T> {
    rows: usize,
    k: usize,
    n: usize,
    bias: bool,
    residual: bool,
    /// Per-sample scale `s` (one per index of the first axis), e.g. stochastic depth's mask.
    scale: Option<Vec<T>>,
}

impl<T: Float> Op<T> for Linear<T> {
    fn name(&self) -> String {
        let extra = match (self.residual, self.scale.is_some()) {
            (false, _) => "",
            (true, false) => " + residual",
            (true, true) => " + residual, per-sample scale",
        };
        format!("linear({}x{} -> {}{extra})", self.rows, self.k, self.n)
    }

    fn saves(&self) -> Saves {
        Saves::keep(self.scale.as_ref().map_or(0, |s| s.len() * std::mem::size_of::<T>()))
    }

    fn backward(&self, c: &BackwardCtx<'_, T>) -> Vec<Option<Tensor<T>>> {
        let (rows, n) = (self.rows, self.n);
        #[cfg(feature = "cuda")]
        if c.grad.is_cuda() {
            let dims = (rows, self.k, n);
            return crate::cuda::ops::linear_backward(c, dims, self.bias, self.residual, self.scale.as_deref());
        }
        // The branch's gradient: g, scaled per sample when the branch was.
        let scaled: Option<Vec<T>> = self.scale.as_ref().map(|s| {
            let per_sample = (rows / s.len().max(1) * n).max(1);
            let mut gs = crate::pool::take(rows * n);
            for ((o, gi), &sb) in gs.chunks_mut(per_sample).zip(c.grad.data().chunks(per_sample)).zip(s) {
                for (a, &b) in o.iter_mut().zip(gi) {
                    *a = b * sb;
                }
            }
            gs
        });
        let g: &[T] = scaled.as_deref().unwrap_or(c.grad.data());
        let needs = [c.needs_grad[0], c.needs_grad[1], self.bias && c.needs_grad[2]];
        let (dx, dw, db) = linear_grads(c.inputs[0], c.inputs[1], g, (rows, self.k, n), needs);
        let mut out = vec![dx, dw];
        if self.bias {
            out.push(db);
        }
        if self.residual {
            // dr = g: the same buffer, shared, not copied.
            out.push(c.needs_grad[out.len()].then(|| c.grad.clone()));
        }
        if let Some(v) = scaled {
            crate::pool::give(v);
        }
        out
    }
}

/// `a = gelu(h)`, `h = x W^T + b`, in one op that keeps the pre-activation `h` as its state
/// and drops its output `a` (its policy is [`OutputPolicy::Recompute`](crate::memory::OutputPolicy::Recompute)):
///
/// ```text
///     h = x W^T + b                kept from forward to backward (the op's state)
///     a = gelu(h)                  recomputed from h when the next layer's backward needs it
///     dh = g * gelu'(h),           then dx, dW, db as for a Linear with gradient dh
/// ```
///
/// In a ViT MLP (`N = 4D`) `h` and `a` are the largest tensors of a block. Keeping one of the
/// two and rebuilding the other costs one elementwise pass in backward; keeping `h` (rather than
/// `a`, from which `gelu'(h)` cannot be had) means no product is recomputed.
///
/// The recompute (for the next layer's weight gradient, which runs just before this op's
/// backward) makes `gelu'(h)` in the same pass as `a`, sharing the CDF, and leaves it for the
/// backward, which then only multiplies: one transcendental pass over `h` in backward instead of
/// two. The derivative lives from that recompute to this op's backward (one block's `h`-sized
/// buffer at a time); a backward that finds none (no recompute ran) computes it from `h`.
struct LinearGelu<T: Float> {
    rows: usize,
    k: usize,
    n: usize,
    kind: GeluKind,
    /// The pre-activation, `[..., N]`.
    h: Tensor<T>,
    /// `gelu'(h)`, left by the recompute for the backward.
    dgelu: std::sync::Mutex<Option<Vec<T>>>,
}

impl<T: Float> Op<T> for LinearGelu<T> {
    fn name(&self) -> String {
        format!("linear_gelu({}x{} -> {}, {:?})", self.rows, self.k, self.n, self.kind)
    }

    fn saves(&self) -> Saves {
        Saves::recompute(self.h.numel() * std::mem::size_of::<T>())
    }

    /// `a = gelu(h)` from the kept pre-activation.
    fn recompute(&self, _inputs: &[&Tensor<T>]) -> Option<Recomputed<T>> {
        #[cfg(feature = "cuda")]
        if self.h.is_cuda() {
            return Some(Recomputed { output: crate::cuda::ops::gelu(self.kind, &self.h) });
        }
        let (mut a, mut d) = (crate::pool::take(self.h.numel()), crate::pool::take(self.h.numel()));
        gelu_forward_grad(self.kind, self.h.data(), &mut a, &mut d);
        let mut slot = self.dgelu.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = slot.replace(d) {
            crate::pool::give(old);
        }
        Some(Recomputed { output: Tensor::from_vec(a, self.h.shape()) })
    }

    fn backward(&self, c: &BackwardCtx<'_, T>) -> Vec<Option<Tensor<T>>> {
        let (x, w) = (c.inputs[0], c.inputs[1]);
        let (rows, k, n) = (self.rows, self.k, self.n);
        #[cfg(feature = "cuda")]
        if x.is_cuda() {
            return crate::cuda::ops::linear_gelu_backward(c, &self.h, self.kind, (rows, k, n));
        }
        let saved = self.dgelu.lock().unwrap_or_else(|e| e.into_inner()).take();
        let (dh, db) = match saved {
            // dh = gelu'(h) g, and with it the bias gradient sum_rows dh, in one pass over dh.
            Some(mut d) if c.needs_grad[2] => {
                let mut db = crate::pool::zeros(n);
                scale_sum_rows(&mut d, c.grad.data(), &mut db);
                (d, Some(Tensor::from_vec(db, &[n])))
            }
            Some(mut d) => {
                scale_by(&mut d, c.grad.data());
                (d, None)
            }
            None => {
                let mut dh = crate::pool::take(rows * n);
                gelu_backward(self.kind, self.h.data(), c.grad.data(), &mut dh);
                (dh, None)
            }
        };
        let needs_db = c.needs_grad[2] && db.is_none();
        let (dx, dw, db2) = linear_grads(x, w, &dh, (rows, k, n), [c.needs_grad[0], c.needs_grad[1], needs_db]);
        crate::pool::give(dh);
        vec![dx, dw, db.or(db2)]
    }
}

/// `y = x W^T` into `y` (`rows x n`), for `x: [rows, k]` and a PyTorch-layout `W: [n, k]`
/// read transposed through strides; then `then(row, col0, piece)` on each row piece of `y` in
/// the product's epilogue, while the piece is still in L1 (the bias, the residual sum, GELU):
/// no second pass over `y`.
fn affine_then<T: Float>((rows, k, n): (usize, usize, usize), x: &[T], w: &[T], y: &mut [T], then: &Epilogue<'_, T>) {
    let (x, w) = (MatRef::row_major(x, rows, k), MatRef::row_major(w, n, k).t());
    gemm_then(T::ONE, x, w, T::ZERO, MatMut::row_major(y, rows, n), then);
}

/// `piece += bias` (f32: the SIMD kernel), for one row piece of a product.
fn add_bias<T: Float>(piece: &mut [T], bias: &[T]) {
    if let (Some(p32), Some(b32)) = (as_f32_mut(piece), as_f32(bias)) {
        return Rows::active().bias_add(p32, b32);
    }
    piece.iter_mut().zip(bias).for_each(|(v, &bb)| *v += bb);
}

impl<T: Float> Graph<T> {
    /// `x W^T + b` with `x: [..., K]`, `W: [N, K]`, optional `b: [N]`: a Linear layer in one op.
    pub fn linear(&mut self, x: Var, w: Var, b: Option<Var>) -> Var {
        self.linear_ex(x, w, b, None, None)
    }

    /// A residual branch ending in a Linear layer, in one op:
    ///
    /// ```text
    ///     y = r + s_i (x W^T + b)          s_i: one scale per index i of the first axis
    ///     dr = g,   and the Linear's gradients with g replaced by s_i g
    /// ```
    ///
    /// `scale` is stochastic depth's per-sample mask (`0` or `1/(1-p)`); `None` means 1. The
    /// branch's own output never exists as a tensor: it goes from the product into the sum.
    pub fn linear_residual(&mut self, x: Var, w: Var, b: Option<Var>, residual: Var, scale: Option<Vec<T>>) -> Var {
        self.linear_ex(x, w, b, Some(residual), scale)
    }

    /// `gelu(x W^T + b)` in one op that keeps its pre-activation for backward and recomputes its
    /// output from it (no product is recomputed); see `LinearGelu` in this file. A ViT MLP's
    /// first layer.
    pub fn linear_gelu(&mut self, x: Var, w: Var, b: Var, kind: GeluKind) -> Var {
        let (xs, ws) = (self.shape(x).to_vec(), self.shape(w).to_vec());
        assert!(
            ws.len() == 2 && !xs.is_empty() && xs[xs.len() - 1] == ws[1],
            "linear_gelu: x {xs:?} does not fit weight {ws:?} (need x [..., K] and W [N, K])"
        );
        let (n, k) = (ws[0], ws[1]);
        assert_eq!(self.shape(b), &[n], "linear_gelu: bias must have shape [{n}], got {:?}", self.shape(b));
        let rows = xs[..xs.len() - 1].iter().product::<usize>();
        let mut shape = xs;
        *shape.last_mut().unwrap() = n;
        // On a tape that records nothing the op, and with it `h`, is dropped at once.
        #[cfg(feature = "cuda")]
        if self.value(x).is_cuda() {
            let inputs = [self.value(x), self.value(w), self.value(b)];
            let (y, h) = crate::cuda::ops::linear_gelu(&inputs, kind, (rows, k, n), true);
            let op = LinearGelu {
                rows,
                k,
                n,
                kind,
                h: h.expect("linear_gelu: the pre-activation was asked for"),
                dgelu: Default::default(),
            };
            return self.push(y, op, &[x, w, b]);
        }
        let mut h = crate::pool::take(rows * n);
        let bias = self.value(b).data();
        if !self.records(&[x, w, b]) {
            // Off the tape (inference) nothing keeps h: GELU overwrites it in the epilogue, and
            // the output is written once instead of twice.
            affine_then((rows, k, n), self.value(x).data(), self.value(w).data(), &mut h, &|_, c0, h| {
                add_bias(h, &bias[c0..c0 + h.len()]);
                gelu_in_place(kind, h);
            });
            return self.push_unrecorded(Tensor::from_vec(h, &shape));
        }
        let mut y = crate::pool::take::<T>(rows * n);
        let yp = SendPtr::new(y.as_mut_ptr());
        // h = x W^T + b and a = gelu(h), a piece at a time in the product's epilogue.
        affine_then((rows, k, n), self.value(x).data(), self.value(w).data(), &mut h, &|r, c0, h| {
            add_bias(h, &bias[c0..c0 + h.len()]);
            // SAFETY: y has rows x n elements, and the epilogue visits each (row, column) once.
            let a = unsafe { std::slice::from_raw_parts_mut(yp.get().add(r * n + c0), h.len()) };
            gelu_forward(kind, h, a);
        });
        let op = LinearGelu { rows, k, n, kind, h: Tensor::from_vec(h, &shape), dgelu: Default::default() };
        self.push(Tensor::from_vec(y, &shape), op, &[x, w, b])
    }

    fn linear_ex(&mut self, x: Var, w: Var, b: Option<Var>, residual: Option<Var>, scale: Option<Vec<T>>) -> Var {
        let (xs, ws) = (self.shape(x).to_vec(), self.shape(w).to_vec());
        assert!(
            ws.len() == 2 && !xs.is_empty() && xs[xs.len() - 1] == ws[1],
            "linear: x {xs:?} does not fit weight {ws:?} (need x [..., K] and W [N, K])"
        );
        let (n, k) = (ws[0], ws[1]);
        if let Some(b) = b {
            assert_eq!(self.shape(b), &[n], "linear: bias must have shape [{n}], got {:?}", self.shape(b));
        }
        let rows = xs[..xs.len() - 1].iter().product::<usize>();
        let mut shape = xs.clone();
        *shape.last_mut().unwrap() = n;
        if let Some(r) = residual {
            assert_eq!(self.shape(r), &shape[..], "linear: residual must have the output's shape {shape:?}");
        }
        if let Some(s) = &scale {
            assert!(residual.is_some(), "linear: a per-sample scale needs a residual");
            assert!(
                xs.len() >= 2 && s.len() == xs[0],
                "linear: scale needs one value per sample ({}), got {}",
                xs[0],
                s.len()
            );
        }
        let op = Linear { rows, k, n, bias: b.is_some(), residual: residual.is_some(), scale };
        let mut inputs = vec![x, w];
        inputs.extend(b);
        inputs.extend(residual);
        #[cfg(feature = "cuda")]
        if self.value(x).is_cuda() {
            let values: Vec<&Tensor<T>> = inputs.iter().map(|&v| self.value(v)).collect();
            let y = crate::cuda::ops::linear(&values, &shape, (rows, k, n), op.bias, op.scale.as_deref());
            return self.push(y, op, &inputs);
        }
        let scale = &op.scale;
        let mut y = crate::pool::take(rows * n);
        let bias = b.map(|b| self.value(b).data());
        let (xv, wv) = (self.value(x).data(), self.value(w).data());
        match residual {
            None => match bias {
                Some(bias) => {
                    affine_then((rows, k, n), xv, wv, &mut y, &|_, c0, y| add_bias(y, &bias[c0..c0 + y.len()]))
                }
                None => gemm(
                    T::ONE,
                    MatRef::row_major(xv, rows, k),
                    MatRef::row_major(wv, n, k).t(),
                    T::ZERO,
                    MatMut::row_major(&mut y, rows, n),
                ),
            },
            Some(r) => {
                // y = r + s (x W^T + b), a piece at a time in the product's epilogue.
                let res = self.value(r).data();
                let rows_per_sample = if xs.len() >= 2 { rows / xs[0].max(1) } else { rows };
                let scale_ref = scale.as_deref();
                affine_then((rows, k, n), xv, wv, &mut y, &|r, c0, y| {
                    let s = scale_ref.map_or(T::ONE, |s| s[r / rows_per_sample.max(1)]);
                    let res = &res[r * n + c0..r * n + c0 + y.len()];
                    match bias {
                        Some(bias) => {
                            y.iter_mut().zip(res).zip(&bias[c0..]).for_each(|((v, &rr), &bb)| *v = rr + s * (*v + bb))
                        }
                        None => y.iter_mut().zip(res).for_each(|(v, &rr)| *v = rr + s * *v),
                    }
                });
            }
        }
        let y = Tensor::from_vec(y, &shape);
        self.push(y, op, &inputs)
    }
}
