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
        let (a, b, g) = (c.inputs[0], c.inputs[1], c.grad);
        let (one, zero) = (T::ONE, T::ZERO);

        let da = c.needs_grad[0].then(|| {
            let mut da = Tensor::full_on(a.shape(), zero, a.device());
            if d.folds() {
                // dA = g op(B)^T, all products stacked: (batch*M) x N @ N x K.
                product((g, d.tall(d.n)), (b, d.b().t()), zero, (&mut da, d.tall(d.k)));
            } else if d.trans_a {
                // A is stored K x M:  dA = op(B) g^T.
                let da_l = Layout::row_major(d.k, d.m).batched(d.batch, (d.k * d.m) as isize);
                product((b, d.b()), (g, d.c().t()), zero, (&mut da, da_l));
            } else {
                // dA = g op(B)^T  (M x K).
                product((g, d.c()), (b, d.b().t()), zero, (&mut da, d.a()));
            }
            da
        });

        let db = c.needs_grad[1].then(|| {
            let mut db = Tensor::full_on(b.shape(), zero, b.device());
            // dB = op(A)^T g, or, with B stored N x K (trans_b), dB = g^T op(A).
            let mut grad_b = |a_l: Layout, g_l: Layout, beta: T, db_l: Layout| {
                if d.trans_b {
                    product((g, g_l.t()), (a, a_l), beta, (&mut db, db_l))
                } else {
                    product((a, a_l.t()), (g, g_l), beta, (&mut db, db_l))
                }
            };
            let db_one = if d.trans_b { Layout::row_major(d.n, d.k) } else { Layout::row_major(d.k, d.n) };
            if d.folds() {
                // The batch folds into the long inner dimension of one product.
                grad_b(d.tall(d.k), d.tall(d.n), zero, db_one);
            } else if d.shared_b {
                // A transposed and B shared: the products' contributions add up in turn.
                for p in 0..d.batch {
                    let beta = if p == 0 { zero } else { one };
                    grad_b(d.a().nth(p), d.c().nth(p), beta, db_one);
                }
            } else {
                grad_b(d.a(), d.c(), zero, db_one.batched(d.batch, (d.k * d.n) as isize));
            }
            db
        });
        vec![da, db]
    }
}

/// `C = op(A) op(B) + beta C` on the operands' device: our GEMM on the CPU, cuBLAS on a GPU.
fn product<T: Float>(a: (&Tensor<T>, Layout), b: (&Tensor<T>, Layout), beta: T, c: (&mut Tensor<T>, Layout)) {
    on_device!([a.0, b.0],
        cuda: crate::cuda::ops::gemm(a, b, beta.to_f64(), c),
        cpu: gemm(T::ONE, MatRef::new(a.0.data(), a.1), MatRef::new(b.0.data(), b.1), beta, MatMut::new(c.0.data_mut(), c.1)))
}

fn matmul_forward<T: Float>(a: &Tensor<T>, b: &Tensor<T>, d: &Dims) -> Tensor<T> {
    let mut shape = a.shape()[..a.ndim() - 2].to_vec();
    shape.extend([d.m, d.n]);
    let mut c = Tensor::full_on(&shape, T::ZERO, a.device());
    if d.folds() {
        // One tall product: (batch*M) x K @ K x N.
        product((a, d.tall(d.k)), (b, d.b()), T::ZERO, (&mut c, d.tall(d.n)));
    } else {
        product((a, d.a()), (b, d.b()), T::ZERO, (&mut c, d.c()));
    }
    c
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
