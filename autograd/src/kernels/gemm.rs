//! General matrix multiply, `C = alpha * A B + beta * C`, on arbitrarily strided operands.
//!
//! Strides let backward pass `A^T` or `B^T` without materialising a transpose: a row-major
//! `[k, m]` matrix read with `(rs, cs) = (1, m)` *is* its transpose.
//!
//! For now both entry points call `matrixmultiply`; they are the single seam through which every
//! product in the crate goes, so our own kernels can replace them in one place.

/// f32 GEMM. Shapes: A `m x k`, B `k x n`, C `m x n`; `rs*`/`cs*` are row and column strides in
/// elements. When `beta == 0`, C is written without being read (NaNs in C do not propagate).
///
/// # Safety
/// The pointers must address valid matrices under the given strides; C must not alias A or B.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: *const f32,
    rsa: isize,
    csa: isize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    beta: f32,
    c: *mut f32,
    rsc: isize,
    csc: isize,
) {
    matrixmultiply::sgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
}

/// f64 GEMM, same contract as [`sgemm`]. It serves gradient checks: exact, not fast.
///
/// # Safety
/// As for [`sgemm`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn dgemm(
    m: usize,
    k: usize,
    n: usize,
    alpha: f64,
    a: *const f64,
    rsa: isize,
    csa: isize,
    b: *const f64,
    rsb: isize,
    csb: isize,
    beta: f64,
    c: *mut f64,
    rsc: isize,
    csc: isize,
) {
    matrixmultiply::dgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
}
