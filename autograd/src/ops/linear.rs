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
//! Compared with `matmul_t` followed by a broadcasting `add`, the bias is added to the product's
//! rows while they are still in cache and no second `[..., N]` tensor is written; backward sums
//! the bias gradient straight from `g` instead of going through the general broadcast reduction.

use rayon::prelude::*;

use super::softmax::{for_each_row, rows_per_task};
use crate::dtype::Float;
use crate::graph::{BackwardCtx, Graph, Op, Var};
use crate::tensor::Tensor;

/// Row-major `C = A B^T` for `A: [m, k]`, `B: [n, k]` (C is `[m, n]`), with `beta` as in GEMM.
fn gemm_abt<T: Float>(m: usize, k: usize, n: usize, a: &[T], b: &[T], beta: T, c: &mut [T]) {
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: A is m*k, B is n*k and C is m*n elements, read and written under these strides.
    unsafe {
        T::gemm(
            m,
            k,
            n,
            T::ONE,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            1,
            k as isize,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        )
    }
}

/// Sums the rows of a row-major `[rows, n]` matrix: in parallel over fixed blocks of rows whose
/// partial sums are then added in block order, so the result does not depend on the thread count.
pub(crate) fn sum_rows<T: Float>(g: &[T], n: usize) -> Vec<T> {
    let rows = if n == 0 { 0 } else { g.len() / n };
    let block = rows_per_task(n).max(1);
    let partials: Vec<Vec<T>> = g
        .par_chunks(block * n.max(1))
        .map(|chunk| {
            let mut acc = crate::pool::zeros(n);
            for row in chunk.chunks_exact(n) {
                for (a, &v) in acc.iter_mut().zip(row) {
                    *a += v;
                }
            }
            acc
        })
        .collect();
    let mut out = crate::pool::zeros(n);
    for p in partials {
        for (o, v) in out.iter_mut().zip(p) {
            *o += v;
        }
    }
    debug_assert!(rows == 0 || out.len() == n);
    out
}

/// `y = x W^T + b`; see the module documentation for the gradients.
struct Linear {
    rows: usize,
    k: usize,
    n: usize,
}

impl<T: Float> Op<T> for Linear {
    fn name(&self) -> String {
        format!("linear({}x{} -> {})", self.rows, self.k, self.n)
    }

    fn backward(&self, c: &BackwardCtx<'_, T>) -> Vec<Option<Tensor<T>>> {
        let (rows, k, n) = (self.rows, self.k, self.n);
        let (x, w, g) = (c.inputs[0].data(), c.inputs[1].data(), c.grad.data());
        let dx = c.needs_grad[0].then(|| {
            let mut dx = crate::pool::zeros(rows * k);
            if rows > 0 && k > 0 && n > 0 {
                // (rows x n) @ (n x k), both row-major.
                // SAFETY: sizes as documented above.
                unsafe {
                    T::gemm(
                        rows,
                        n,
                        k,
                        T::ONE,
                        g.as_ptr(),
                        n as isize,
                        1,
                        w.as_ptr(),
                        k as isize,
                        1,
                        T::ZERO,
                        dx.as_mut_ptr(),
                        k as isize,
                        1,
                    )
                }
            }
            Tensor::from_vec(dx, c.inputs[0].shape())
        });
        let dw = c.needs_grad[1].then(|| {
            let mut dw = crate::pool::zeros(n * k);
            if rows > 0 && k > 0 && n > 0 {
                // g^T (n x rows, read through strides) @ x (rows x k).
                // SAFETY: g is rows*n, x is rows*k, dw is n*k.
                unsafe {
                    T::gemm(
                        n,
                        rows,
                        k,
                        T::ONE,
                        g.as_ptr(),
                        1,
                        n as isize,
                        x.as_ptr(),
                        k as isize,
                        1,
                        T::ZERO,
                        dw.as_mut_ptr(),
                        k as isize,
                        1,
                    )
                }
            }
            Tensor::from_vec(dw, c.inputs[1].shape())
        });
        let mut out = vec![dx, dw];
        if c.inputs.len() == 3 {
            out.push(c.needs_grad[2].then(|| Tensor::from_vec(sum_rows(g, n), &[n])));
        }
        out
    }
}

impl<T: Float> Graph<T> {
    /// `x W^T + b` with `x: [..., K]`, `W: [N, K]`, optional `b: [N]`: a Linear layer in one op.
    pub fn linear(&mut self, x: Var, w: Var, b: Option<Var>) -> Var {
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
        let mut y = crate::pool::zeros(rows * n);
        gemm_abt(rows, k, n, self.value(x).data(), self.value(w).data(), T::ZERO, &mut y);
        if let Some(b) = b {
            let bias = self.value(b).data();
            for_each_row(&mut y, n, |_, row| {
                for (v, &bb) in row.iter_mut().zip(bias) {
                    *v += bb;
                }
            });
        }
        let mut shape = xs;
        *shape.last_mut().unwrap() = n;
        let y = Tensor::from_vec(y, &shape);
        let op = Linear { rows, k, n };
        match b {
            Some(b) => self.push(y, op, &[x, w, b]),
            None => self.push(y, op, &[x, w]),
        }
    }
}
