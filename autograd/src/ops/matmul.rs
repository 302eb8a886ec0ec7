//! Matrix products, plain and batched, with either operand optionally transposed.
//!
//! ```text
//!     C = op(A) op(B),   op(X) = X or X^T,   op(A): M x K,  op(B): K x N
//!     dA = g op(B)^T            (if A is used as is)        dA = op(B) g^T   (if A^T is used)
//!     dB = op(A)^T g            (if B is used as is)        dB = g^T op(A)   (if B^T is used)
//! ```
//!
//! Every transpose above is a choice of strides handed to the GEMM, never a copy: a row-major
//! `R x S` matrix read with row stride 1 and column stride `S` is its own transpose.
//!
//! Batching: `A` is `[..., M, K]` and `B` is either `[..., K, N]` with the same leading axes
//! (attention's per-head products) or a plain `[K, N]` shared by the whole batch (a Linear layer
//! over `[B, N, D]` activations). In the shared case the batch folds into `M` and the weight
//! gradient is one long-`K` product.

use rayon::prelude::*;

use crate::dtype::{DType, Float};
use crate::graph::{BackwardCtx, Graph, Op, Var};
use crate::tensor::Tensor;

/// A strided matrix operand: `(data, offset, rows, cols, row stride, col stride)`.
#[derive(Clone, Copy)]
struct MatRef<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a, T: Float> MatRef<'a, T> {
    /// A row-major `rows x cols` matrix starting at the beginning of `data`.
    fn new(data: &'a [T], rows: usize, cols: usize) -> Self {
        MatRef { data, rows, cols, rs: cols, cs: 1 }
    }
    fn t(self) -> Self {
        MatRef { rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs, ..self }
    }
}

/// `c = alpha * a b + beta * c` with `c` row-major `a.rows x b.cols`.
fn gemm_into<T: Float>(alpha: T, a: MatRef<'_, T>, b: MatRef<'_, T>, beta: T, c: &mut [T]) {
    assert_eq!(a.cols, b.rows, "gemm: inner dimensions differ");
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(c.len(), m * n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for x in c.iter_mut() {
            *x = if beta == T::ZERO { T::ZERO } else { *x * beta };
        }
        return;
    }
    // SAFETY: the slices cover every element the strides address: the largest offset read is
    // (rows-1)*rs + (cols-1)*cs, inside `data` by construction of each MatRef.
    unsafe {
        T::gemm(
            m,
            k,
            n,
            alpha,
            a.data.as_ptr(),
            a.rs as isize,
            a.cs as isize,
            b.data.as_ptr(),
            b.rs as isize,
            b.cs as isize,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        )
    }
}

/// The geometry of one (batched) product, worked out once in forward and reused in backward.
#[derive(Clone, Debug)]
struct Dims {
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    trans_a: bool,
    trans_b: bool,
    /// `B` is a single matrix shared by every batch entry.
    shared_b: bool,
}

impl Dims {
    fn of(a: &[usize], b: &[usize], trans_a: bool, trans_b: bool) -> Dims {
        let name = "matmul";
        assert!(a.len() >= 2 && b.len() >= 2, "{name}: operands must have rank >= 2, got {a:?} and {b:?}");
        let (ar, ac) = (a[a.len() - 2], a[a.len() - 1]);
        let (br, bc) = (b[b.len() - 2], b[b.len() - 1]);
        let (m, k) = if trans_a { (ac, ar) } else { (ar, ac) };
        let (kb, n) = if trans_b { (bc, br) } else { (br, bc) };
        assert_eq!(
            k,
            kb,
            "{name}: inner dimensions differ: {a:?}{} @ {b:?}{}",
            if trans_a { "^T" } else { "" },
            if trans_b { "^T" } else { "" }
        );
        let batch_a = &a[..a.len() - 2];
        let shared_b = b.len() == 2;
        if !shared_b {
            assert_eq!(
                batch_a,
                &b[..b.len() - 2],
                "{name}: batch axes differ: {a:?} @ {b:?} (B must be 2-D or share A's leading axes)"
            );
        }
        Dims { batch: batch_a.iter().product(), m, k, n, trans_a, trans_b, shared_b }
    }

    fn a_size(&self) -> usize {
        self.m * self.k
    }
    fn b_size(&self) -> usize {
        self.k * self.n
    }
    fn c_size(&self) -> usize {
        self.m * self.n
    }

    /// The `p`-th `A` as `op(A)` (M x K).
    fn a<'a, T: Float>(&self, a: &'a [T], p: usize) -> MatRef<'a, T> {
        let s = &a[p * self.a_size()..(p + 1) * self.a_size()];
        if self.trans_a {
            MatRef::new(s, self.k, self.m).t()
        } else {
            MatRef::new(s, self.m, self.k)
        }
    }

    /// The `p`-th `B` as `op(B)` (K x N).
    fn b<'a, T: Float>(&self, b: &'a [T], p: usize) -> MatRef<'a, T> {
        let p = if self.shared_b { 0 } else { p };
        let s = &b[p * self.b_size()..(p + 1) * self.b_size()];
        if self.trans_b {
            MatRef::new(s, self.n, self.k).t()
        } else {
            MatRef::new(s, self.k, self.n)
        }
    }
}

/// For every batch entry `p`, `out_p = a_p b_p` where `(a_p, b_p) = ab(p)` and `out_p` is the
/// `p`-th `size`-element chunk of `out`. f32 goes through the batched GEMM
/// ([`crate::kernels::gemm::sgemm_batched`]: parallel over the batch, each product on one
/// thread, the next product's operands prefetched while one computes), which attention's many
/// small products need; f64 (gradient checks) runs one `gemm_into` per entry in parallel.
fn per_batch<'a, T: Float>(
    out: &mut [T],
    size: usize,
    ab: impl Fn(usize) -> (MatRef<'a, T>, MatRef<'a, T>) + Sync + Send,
) {
    if size == 0 {
        return;
    }
    let batch = out.len() / size;
    if batch > 1 && T::DTYPE == DType::F32 {
        let ((a0, b0), (a1, b1)) = (ab(0), ab(1));
        assert!(a0.cols == b0.rows && a0.rows * b0.cols == size, "gemm: operand shapes do not match the output");
        // Entries are equally spaced in their buffers (or shared: stride 0).
        let stride =
            |x0: &[T], x1: &[T]| (x1.as_ptr() as isize - x0.as_ptr() as isize) / std::mem::size_of::<T>() as isize;
        // SAFETY: T is f32 (checked through DTYPE), so the casts only rename the element type.
        // Entry p's operands are ab(p), which lie inside their tensors' storage; the outputs are
        // the disjoint chunks of `out`.
        unsafe {
            crate::kernels::gemm::sgemm_batched(
                batch,
                a0.rows,
                a0.cols,
                b0.cols,
                1.0,
                a0.data.as_ptr() as *const f32,
                stride(a0.data, a1.data),
                a0.rs as isize,
                a0.cs as isize,
                b0.data.as_ptr() as *const f32,
                stride(b0.data, b1.data),
                b0.rs as isize,
                b0.cs as isize,
                0.0,
                out.as_mut_ptr() as *mut f32,
                size as isize,
                b0.cols as isize,
                1,
            );
        }
    } else if batch > 1 {
        out.par_chunks_mut(size).enumerate().for_each(|(p, c)| {
            let (a, b) = ab(p);
            gemm_into(T::ONE, a, b, T::ZERO, c)
        });
    } else {
        let (a, b) = ab(0);
        gemm_into(T::ONE, a, b, T::ZERO, out);
    }
}

/// `C = op(A) op(B)`; see the module documentation for the gradients.
struct MatMul {
    dims: Dims,
}

impl<T: Float> Op<T> for MatMul {
    fn name(&self) -> String {
        let d = &self.dims;
        format!(
            "matmul{}{}{}",
            if d.trans_a { "(A^T)" } else { "" },
            if d.trans_b { "(B^T)" } else { "" },
            if d.batch > 1 { format!("[x{}]", d.batch) } else { String::new() }
        )
    }

    fn backward(&self, c: &BackwardCtx<'_, T>) -> Vec<Option<Tensor<T>>> {
        let d = &self.dims;
        let (a, b, g) = (c.inputs[0].data(), c.inputs[1].data(), c.grad.data());
        let gm = |p: usize| MatRef::new(&g[p * d.c_size()..(p + 1) * d.c_size()], d.m, d.n);

        let da = c.needs_grad[0].then(|| {
            let mut da = crate::pool::zeros(d.batch * d.a_size());
            per_batch(&mut da, d.a_size(), |p| {
                if d.trans_a {
                    // A is stored K x M:  dA = op(B) g^T.
                    (d.b(b, p), gm(p).t())
                } else {
                    // dA = g op(B)^T  (M x K).
                    (gm(p), d.b(b, p).t())
                }
            });
            Tensor::from_vec(da, c.inputs[0].shape())
        });

        let db = c.needs_grad[1].then(|| {
            if d.shared_b {
                let mut db = crate::pool::zeros(d.b_size());
                if !d.trans_a {
                    // Fold the batch into the long inner dimension of one product:
                    // op(A) stacked is (batch*M) x K, g stacked is (batch*M) x N.
                    let a_all = MatRef::new(a, d.batch * d.m, d.k);
                    let g_all = MatRef::new(g, d.batch * d.m, d.n);
                    if d.trans_b {
                        gemm_into(T::ONE, g_all.t(), a_all, T::ZERO, &mut db);
                    } else {
                        gemm_into(T::ONE, a_all.t(), g_all, T::ZERO, &mut db);
                    }
                } else {
                    for p in 0..d.batch {
                        let beta = if p == 0 { T::ZERO } else { T::ONE };
                        if d.trans_b {
                            gemm_into(T::ONE, gm(p).t(), d.a(a, p), beta, &mut db);
                        } else {
                            gemm_into(T::ONE, d.a(a, p).t(), gm(p), beta, &mut db);
                        }
                    }
                }
                Tensor::from_vec(db, c.inputs[1].shape())
            } else {
                let mut db = crate::pool::zeros(d.batch * d.b_size());
                per_batch(&mut db, d.b_size(), |p| {
                    if d.trans_b {
                        // B is stored N x K:  dB = g^T op(A).
                        (gm(p).t(), d.a(a, p))
                    } else {
                        (d.a(a, p).t(), gm(p))
                    }
                });
                Tensor::from_vec(db, c.inputs[1].shape())
            }
        });
        vec![da, db]
    }
}

fn matmul_forward<T: Float>(a: &Tensor<T>, b: &Tensor<T>, d: &Dims) -> Tensor<T> {
    let mut shape = a.shape()[..a.ndim() - 2].to_vec();
    shape.extend([d.m, d.n]);
    let mut c = crate::pool::zeros(d.batch * d.c_size());
    if d.shared_b && !d.trans_a {
        // One tall product: (batch*M) x K @ K x N.
        let a_all = MatRef::new(a.data(), d.batch * d.m, d.k);
        gemm_into(T::ONE, a_all, d.b(b.data(), 0), T::ZERO, &mut c);
    } else {
        per_batch(&mut c, d.c_size(), |p| (d.a(a.data(), p), d.b(b.data(), p)));
    }
    Tensor::from_vec(c, &shape)
}

impl<T: Float> Graph<T> {
    /// `a @ b`: `[..., M, K] @ [..., K, N]` or `[..., M, K] @ [K, N]`.
    pub fn matmul(&mut self, a: Var, b: Var) -> Var {
        self.matmul_ex(a, b, false, false)
    }

    /// `a @ b^T`: `[..., M, K] @ ([..., N, K])^T` or `[..., M, K] @ ([N, K])^T`. This is a Linear
    /// layer's product with a PyTorch-layout `[out, in]` weight, and attention's `Q K^T`.
    pub fn matmul_t(&mut self, a: Var, b: Var) -> Var {
        self.matmul_ex(a, b, false, true)
    }

    /// `op(a) @ op(b)` with each operand optionally transposed (through strides, no copy).
    pub fn matmul_ex(&mut self, a: Var, b: Var, trans_a: bool, trans_b: bool) -> Var {
        let dims = Dims::of(self.shape(a), self.shape(b), trans_a, trans_b);
        let y = matmul_forward(self.value(a), self.value(b), &dims);
        self.push(y, MatMul { dims }, &[a, b])
    }
}
