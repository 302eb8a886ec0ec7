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

use crate::dtype::Float;
use crate::graph::{BackwardCtx, Graph, Op, Var};
use crate::kernels::gemm::gemm;
use crate::kernels::{Layout, MatMut, MatRef};
use crate::tensor::Tensor;

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

    /// `op(A)` of every product: `batch` matrices of `M x K`.
    fn a(&self) -> Layout {
        let l = if self.trans_a { Layout::row_major(self.k, self.m).t() } else { Layout::row_major(self.m, self.k) };
        l.batched(self.batch, (self.m * self.k) as isize)
    }

    /// `op(B)` of every product: `K x N`, one shared or `batch` of them.
    fn b(&self) -> Layout {
        let l = if self.trans_b { Layout::row_major(self.n, self.k).t() } else { Layout::row_major(self.k, self.n) };
        if self.shared_b {
            l
        } else {
            l.batched(self.batch, (self.k * self.n) as isize)
        }
    }

    /// `C` (or `g`) of every product: `batch` row-major `M x N` matrices.
    fn c(&self) -> Layout {
        Layout::row_major(self.m, self.n).batched(self.batch, (self.m * self.n) as isize)
    }

    /// With one shared `B` and `A` used as is, the batch folds into `M`: one tall product.
    fn folds(&self) -> bool {
        self.shared_b && !self.trans_a
    }

    /// `X` stacked: `batch * M` rows of `cols`.
    fn tall(&self, cols: usize) -> Layout {
        Layout::row_major(self.batch * self.m, cols)
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
        let (one, zero) = (T::ONE, T::ZERO);

        let da = c.needs_grad[0].then(|| {
            let mut da = crate::pool::zeros(a.len());
            if d.folds() {
                // dA = g op(B)^T, all products stacked: (batch*M) x N @ N x K.
                gemm(
                    one,
                    MatRef::new(g, d.tall(d.n)),
                    MatRef::new(b, d.b().t()),
                    zero,
                    MatMut::new(&mut da, d.tall(d.k)),
                );
            } else if d.trans_a {
                // A is stored K x M:  dA = op(B) g^T.
                let da_l = Layout::row_major(d.k, d.m).batched(d.batch, (d.k * d.m) as isize);
                gemm(one, MatRef::new(b, d.b()), MatRef::new(g, d.c().t()), zero, MatMut::new(&mut da, da_l));
            } else {
                // dA = g op(B)^T  (M x K).
                gemm(one, MatRef::new(g, d.c()), MatRef::new(b, d.b().t()), zero, MatMut::new(&mut da, d.a()));
            }
            Tensor::from_vec(da, c.inputs[0].shape())
        });

        let db = c.needs_grad[1].then(|| {
            let mut db = crate::pool::zeros(b.len());
            // dB = op(A)^T g, or, with B stored N x K (trans_b), dB = g^T op(A).
            let product = |a_l: Layout, g_l: Layout, beta: T, out: MatMut<'_, T>| {
                if d.trans_b {
                    gemm(one, MatRef::new(g, g_l.t()), MatRef::new(a, a_l), beta, out)
                } else {
                    gemm(one, MatRef::new(a, a_l.t()), MatRef::new(g, g_l), beta, out)
                }
            };
            let db_one = if d.trans_b { Layout::row_major(d.n, d.k) } else { Layout::row_major(d.k, d.n) };
            if d.folds() {
                // The batch folds into the long inner dimension of one product.
                product(d.tall(d.k), d.tall(d.n), zero, MatMut::new(&mut db, db_one));
            } else if d.shared_b {
                // A transposed and B shared: the products' contributions add up in turn.
                for p in 0..d.batch {
                    let beta = if p == 0 { zero } else { one };
                    product(d.a().nth(p), d.c().nth(p), beta, MatMut::new(&mut db, db_one));
                }
            } else {
                let db_l = db_one.batched(d.batch, (d.k * d.n) as isize);
                product(d.a(), d.c(), zero, MatMut::new(&mut db, db_l));
            }
            Tensor::from_vec(db, c.inputs[1].shape())
        });
        vec![da, db]
    }
}

fn matmul_forward<T: Float>(a: &Tensor<T>, b: &Tensor<T>, d: &Dims) -> Tensor<T> {
    let mut shape = a.shape()[..a.ndim() - 2].to_vec();
    shape.extend([d.m, d.n]);
    let mut c = crate::pool::zeros(d.batch * d.m * d.n);
    let (one, zero) = (T::ONE, T::ZERO);
    if d.folds() {
        // One tall product: (batch*M) x K @ K x N.
        let a_all = MatRef::new(a.data(), d.tall(d.k));
        gemm(one, a_all, MatRef::new(b.data(), d.b()), zero, MatMut::new(&mut c, d.tall(d.n)));
    } else {
        gemm(one, MatRef::new(a.data(), d.a()), MatRef::new(b.data(), d.b()), zero, MatMut::new(&mut c, d.c()));
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
