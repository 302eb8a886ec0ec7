//! Row-major strided matrix products on cuBLAS, which is column-major.
//!
//! Our matrices are views `(rows, cols, rs, cs)`: element `(i, j)` at `i rs + j cs` (a
//! transpose is the same memory with the strides swapped). cuBLAS takes a column-major matrix,
//! a leading dimension and an op (`N` or `T`). A view with unit row stride *is* a column-major
//! matrix (`op = N`, `ld = cs`); one with unit column stride is the transpose of one (`op = T`,
//! `ld = rs`). The output must itself be column-major; when it is row-major we compute its
//! transpose instead, `C^T = B^T A^T`, which is the same memory.

use super::driver::{DevicePtr, GemmCall, GemmType};
use super::gpu::Gpu;

/// A strided matrix view on the device: element `(i, j)` at `ptr + (i rs + j cs) * size`.
#[derive(Clone, Copy, Debug)]
pub struct Mat {
    /// Device address of element `(0, 0)`.
    pub ptr: DevicePtr,
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Row stride, in elements.
    pub rs: i64,
    /// Column stride, in elements.
    pub cs: i64,
}

impl Mat {
    /// A contiguous row-major `rows x cols` matrix.
    pub fn row_major(ptr: DevicePtr, rows: usize, cols: usize) -> Mat {
        Mat { ptr, rows, cols, rs: cols as i64, cs: 1 }
    }

    /// The same memory seen as the transpose.
    pub fn t(self) -> Mat {
        Mat { ptr: self.ptr, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }
}

/// `(transpose, ld)` expressing `m` as `op(M)` for a column-major `M`, or `None` if neither
/// stride is 1 (a layout no op of ours produces). A stride along an axis of length 1 is never
/// used, so such an axis fits either way.
fn as_op(m: &Mat) -> Option<(bool, i64)> {
    let (r, c) = (m.rows as i64, m.cols as i64);
    if m.rs == 1 || r <= 1 {
        let ld = if c <= 1 { r.max(1) } else { m.cs };
        if ld >= r.max(1) {
            return Some((false, ld));
        }
    }
    if m.cs == 1 || c <= 1 {
        let ld = if r <= 1 { c.max(1) } else { m.rs };
        if ld >= c.max(1) {
            return Some((true, ld));
        }
    }
    None
}

/// Per-batch element strides of a strided-batched product.
#[derive(Clone, Copy, Debug)]
pub struct Batch {
    /// Number of products.
    pub count: usize,
    /// Elements from one product's A to the next.
    pub a: i64,
    /// Elements from one product's B to the next.
    pub b: i64,
    /// Elements from one product's C to the next.
    pub c: i64,
}

impl Batch {
    /// A single product.
    pub const ONE: Batch = Batch { count: 1, a: 0, b: 0, c: 0 };
}

/// `C_i = alpha A_i B_i + beta C_i` for `i < batch.count`, on strided views.
#[derive(Clone, Copy, Debug)]
pub struct Product {
    /// Element type of A, B and C.
    pub ty: GemmType,
    /// Scale of the product `A B`.
    pub alpha: f64,
    /// Left factor, `m x k`.
    pub a: Mat,
    /// Right factor, `k x n`.
    pub b: Mat,
    /// Scale of C's old value (0: C is only written).
    pub beta: f64,
    /// Output, `m x n`.
    pub c: Mat,
    /// How many products, and the strides between them.
    pub batch: Batch,
}

/// The cuBLAS call computing a [`Product`], or a message naming the layout it cannot express.
pub fn plan(p: &Product) -> Result<GemmCall, String> {
    let Product { ty, alpha, a, b, beta, c, batch } = *p;
    assert!(
        a.rows == c.rows && b.cols == c.cols && a.cols == b.rows,
        "gemm: shapes {}x{} @ {}x{} -> {}x{} do not fit",
        a.rows,
        a.cols,
        b.rows,
        b.cols,
        c.rows,
        c.cols
    );
    let unsupported = |what: &str, m: &Mat| format!("gemm: {what} view {m:?} has no unit stride");
    // C column-major: as is. C row-major: compute C^T = B^T A^T.
    let (a, b, c, batch) = match as_op(&c) {
        Some((false, _)) => (a, b, c, batch),
        Some((true, _)) => (b.t(), a.t(), c.t(), Batch { count: batch.count, a: batch.b, b: batch.a, c: batch.c }),
        None => return Err(unsupported("output", &c)),
    };
    let (_, ldc) = as_op(&c).filter(|&(t, _)| !t).ok_or_else(|| unsupported("output", &c))?;
    let (ta, lda) = as_op(&a).ok_or_else(|| unsupported("left", &a))?;
    let (tb, ldb) = as_op(&b).ok_or_else(|| unsupported("right", &b))?;
    let int =
        |v: i64, what: &str| i32::try_from(v).map_err(|_| format!("gemm: {what} = {v} exceeds cuBLAS's 32-bit sizes"));
    Ok(GemmCall {
        ty,
        trans_a: ta,
        trans_b: tb,
        m: int(c.rows as i64, "m")?,
        n: int(c.cols as i64, "n")?,
        k: int(a.cols as i64, "k")?,
        alpha,
        a: a.ptr,
        lda: int(lda, "lda")?,
        stride_a: batch.a,
        b: b.ptr,
        ldb: int(ldb, "ldb")?,
        stride_b: batch.b,
        beta,
        c: c.ptr,
        ldc: int(ldc, "ldc")?,
        stride_c: batch.c,
        batch: int(batch.count as i64, "batch")?,
    })
}

/// Queues a [`Product`]; nothing when C is empty. With `k = 0` the product is
/// empty and C becomes `beta C`, which cuBLAS computes as well.
///
/// # Safety
/// Every view (under its batch stride, for `batch.count` matrices) lies in live device memory
/// of element type `ty` on `gpu`; C overlaps neither A nor B.
pub unsafe fn gemm(gpu: &Gpu, p: &Product) {
    if p.c.rows == 0 || p.c.cols == 0 || p.batch.count == 0 {
        return;
    }
    let call = plan(p).unwrap_or_else(|e| panic!("{e}"));
    gpu.gemm(&call);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(a: Mat, b: Mat, c: Mat) -> Product {
        Product { ty: GemmType::F32, alpha: 1.0, a, b, beta: 0.0, c, batch: Batch::ONE }
    }

    #[test]
    fn row_major_output_becomes_the_transposed_product() {
        // C (2x3, row-major) = A (2x4 row-major) B (4x3 row-major): cuBLAS computes C^T = B^T A^T,
        // both operands column-major as stored (no transposes), ld = their row lengths.
        let (a, b, c) = (Mat::row_major(1000, 2, 4), Mat::row_major(2000, 4, 3), Mat::row_major(3000, 2, 3));
        let g = plan(&product(a, b, c)).unwrap();
        assert_eq!((g.m, g.n, g.k), (3, 2, 4));
        assert_eq!((g.a, g.lda, g.trans_a), (2000, 3, false));
        assert_eq!((g.b, g.ldb, g.trans_b), (1000, 4, false));
        assert_eq!((g.c, g.ldc), (3000, 3));
    }

    #[test]
    fn transposed_views_become_ops() {
        // C = A B^T with B stored [n, k] row-major (a Linear's weight).
        let (a, w, c) = (Mat::row_major(0, 5, 7), Mat::row_major(0, 6, 7), Mat::row_major(0, 5, 6));
        let g = plan(&product(a, w.t(), c)).unwrap();
        // C^T = W A^T: W is stored column-major as W^T (7x6, ld 7), so op = T.
        assert_eq!((g.m, g.n, g.k, g.trans_a, g.lda, g.trans_b, g.ldb, g.ldc), (6, 5, 7, true, 7, false, 7, 6));
    }

    #[test]
    fn views_without_a_unit_stride_are_refused() {
        let bad = Mat { ptr: 0, rows: 3, cols: 3, rs: 6, cs: 2 };
        let ok = Mat::row_major(0, 3, 3);
        assert!(plan(&product(bad, ok, ok)).is_err());
    }
}
