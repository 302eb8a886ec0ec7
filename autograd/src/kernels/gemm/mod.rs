//! General matrix multiply, `C = alpha * A B + beta * C`, on strided views ([`MatRef`],
//! [`MatMut`]) of single matrices or batches of them.
//!
//! Strides let backward pass `A^T` or `B^T` without materialising a transpose, and let attention
//! read its heads straight out of the fused qkv projection; see [`crate::kernels::mat`].
//!
//! # Structure (after BLIS / GotoBLAS), one file per piece
//!
//! | file | what it holds |
//! |---|---|
//! | `mod.rs` | the entry points: [`gemm`] (any element type), [`sgemm`], [`sgemm_with`], [`gemm_then`] (with an epilogue) |
//! | `dispatch.rs` | what an ISA provides (`GemmArch`), the macro that builds one, the one `match` on [`Isa`] |
//! | `split.rs` | the thread-split cost model: how a product is cut along M, N and K |
//! | `threads.rs` | running a cut product (and a batch of products) on rayon's threads |
//! | `blocking.rs` | the depth and block sizes, from the running core's cache sizes |
//! | `mr.rs` | choosing the tile height `MR` for a product of `m` rows |
//! | `buffers.rs` | the per-thread, reused packing buffers |
//! | `loops.rs` | the five loops around the microkernel |
//! | `prefetch.rs` | the prefetch schedule of the next blocks while one computes |
//! | `pack.rs` | packing A and B blocks into the layouts the microkernel reads |
//! | `kernel.rs` | the register-blocked microkernel, written once over `Simd` |
//! | `avx512.rs`, `avx2.rs`, `portable.rs` | one ISA's tile shape and kernel instantiation each |
//! | `neon.rs` | aarch64: its own 8 x 12 microkernel (FMAs by vector lane) |
//! | `timing.rs` | opt-in accounting of GEMM time for benchmarks |
//!
//! * The blocking (`blocking.rs`) is worked out from the L1D and L2 sizes the OS reports for the
//!   running core ([`CacheSizes::this_machine`], read once), by one rule for every ISA: the B
//!   block takes half of L2, the A block a quarter, the A micro-panel at most half of L1.
//! * `KC` is split evenly (`K = 576` runs as 2 x 288, not 384 + 192); `MR` is chosen per product
//!   from `1..=MR_MAX` to waste the fewest padded rows (65 rows run as 5 x 13, 192 as 16 x 12).
//! * Packing is a copy whenever an operand is row- or column-major: the A micro-panel layout
//!   follows A's contiguous direction (rows of `KCP` floats for a row-major A, `MR` floats per
//!   depth for a transposed one), and a transposed B (`W^T` of a PyTorch-layout weight) goes
//!   through in-register `LANES x LANES` transposes. Any other strides take a gather.
//! * While one block computes, the next A and B blocks (or the next product of a batch) are
//!   prefetched a few cache lines per tile, so packing does not wait on DRAM; each kernel call
//!   prefetches its C tile before its k loop.
//! * An epilogue ([`gemm_then`]) runs on each strip of C (`MR` rows of one B block) right after
//!   the last depth block's microkernels wrote it, while it is in L1: a Linear's bias, its
//!   residual sum or its GELU are applied there instead of in another pass over the output.
//! * Edge tiles run the same kernel with masked loads and stores; a B edge of at most
//!   `DOT_NR` = 4 columns (the 65th column of attention's `Q K^T`) runs as dot products
//!   along k instead of spending a whole vector per column.
//!
//! # Microkernels and dispatch
//!
//! One generic kernel (`kernel.rs`) is instantiated per x86 ISA: AVX-512F 14 x 32 (`avx512.rs`),
//! AVX2+FMA 6 x 16 (`avx2.rs`), and `wide` 6 x 16 (`portable.rs`, the path of every target
//! without its own kernel). aarch64 has its own 8 x 12 NEON kernel (`neon.rs`), which multiplies
//! by A values in vector lanes and so always packs A k-major. Each ISA compiles the whole blocked
//! loop inside one `#[target_feature]` function, so packing uses the ISA's vectors too; the
//! x86-only and aarch64-only files compile only on their architecture. The ISA is
//! [`Isa::active`] (detected at run time, overridable with `AUTOGRAD_ISA`) or forced per call
//! with [`sgemm_with`]; the normal path pays one relaxed atomic load for it.
//!
//! # Threads
//!
//! A product is cut into at most `rayon::current_num_threads()` tasks, never below
//! [`MIN_TASK_FLOPS`] each, so that small products stay on the calling thread. Packing buffers
//! are per-thread and reused, so steady-state calls allocate nothing. A batch of small products
//! (attention's `B*H` per-head products) runs in parallel over the batch, one product per thread
//! at a time.
//!
//! f64 products (gradient checks: exact, not fast) go to `matrixmultiply`.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod blocking;
mod buffers;
mod dispatch;
pub(crate) mod kernel;
mod loops;
mod mr;
#[cfg(target_arch = "aarch64")]
mod neon;
mod pack;
mod portable;
mod prefetch;
mod split;
mod threads;
pub mod timing;

use rayon::prelude::*;

pub use self::dispatch::split_for;
pub use self::split::MIN_TASK_FLOPS;
use crate::dtype::Float;
use crate::kernels::caches::CacheSizes;
pub use crate::kernels::mat::{Layout, MatMut, MatRef};
use crate::kernels::parallel::for_row_blocks;
use crate::kernels::send_ptr::SendPtr;
pub use crate::kernels::Isa;

/// One operand as the loops see it: element `(0, 0)` and the strides.
#[derive(Clone, Copy)]
pub(crate) struct Operand {
    pub(crate) p: SendPtr<f32>,
    pub(crate) rs: isize,
    pub(crate) cs: isize,
}

impl Operand {
    /// The address of element `(i, j)` (arithmetic only: nothing is read).
    #[inline(always)]
    pub(crate) fn at(self, i: usize, j: usize) -> *mut f32 {
        self.p.get().wrapping_offset(i as isize * self.rs + j as isize * self.cs)
    }

    /// The `p`-th matrix of a batch `stride` elements apart.
    fn nth(self, p: usize, stride: isize) -> Operand {
        Operand { p: SendPtr::new(self.p.get().wrapping_offset(p as isize * stride)), ..self }
    }
}

/// What a product does to its finished output, a row piece at a time: `f(row, col0, values)`
/// with `values` the final `C[row, col0..col0 + values.len()]` (row and column indices of the
/// whole C), called once for every element of C, from any thread, in no particular order.
pub type Epilogue<'e, T> = dyn Fn(usize, usize, &mut [T]) + Sync + 'e;

/// One f32 product as the loops see it: `C = alpha A B + beta C`, A `m x k`, B `k x n`.
#[derive(Clone, Copy)]
pub(crate) struct Gemm<'e> {
    pub(crate) m: usize,
    pub(crate) k: usize,
    pub(crate) n: usize,
    pub(crate) alpha: f32,
    pub(crate) beta: f32,
    pub(crate) a: Operand,
    pub(crate) b: Operand,
    pub(crate) c: Operand,
    /// The caches the blocking is derived from (the running core's, except in tests).
    pub(crate) caches: CacheSizes,
    /// Run on C's row pieces once they are final (C is then row-contiguous, `c.cs == 1`).
    pub(crate) epilogue: Option<&'e Epilogue<'e, f32>>,
    /// Where this (sub-)product's C starts in the caller's C: the epilogue's row and column.
    pub(crate) origin: (usize, usize),
}

impl<'e> Gemm<'e> {
    /// The `p`-th product of a batch with the given operand strides.
    fn nth(&self, p: usize, (sa, sb, sc): (isize, isize, isize)) -> Gemm<'e> {
        Gemm { a: self.a.nth(p, sa), b: self.b.nth(p, sb), c: self.c.nth(p, sc), ..*self }
    }

    /// A product with no operands, only a shape and a layout (for the cost model).
    pub(crate) fn shape_only(m: usize, k: usize, n: usize, a_t: bool, b_t: bool) -> Gemm<'static> {
        let null = SendPtr::new(std::ptr::null_mut());
        let (rsa, csa) = if a_t { (1, m as isize) } else { (k as isize, 1) };
        let (rsb, csb) = if b_t { (1, k as isize) } else { (n as isize, 1) };
        Gemm {
            m,
            k,
            n,
            alpha: 1.0,
            beta: 0.0,
            a: Operand { p: null, rs: rsa, cs: csa },
            b: Operand { p: null, rs: rsb, cs: csb },
            c: Operand { p: null, rs: n as isize, cs: 1 },
            caches: CacheSizes::this_machine(),
            epilogue: None,
            origin: (0, 0),
        }
    }
}

/// `(batch, m, k, n)` of `C = A B` on these layouts; panics with the shapes if they do not fit.
fn shapes(a: Layout, b: Layout, c: Layout) -> (usize, usize, usize, usize) {
    assert!(
        a.cols == b.rows && a.rows == c.rows && b.cols == c.cols,
        "gemm: A {}x{} times B {}x{} does not fit C {}x{}",
        a.rows,
        a.cols,
        b.rows,
        b.cols,
        c.rows,
        c.cols
    );
    for (name, x) in [("A", a), ("B", b)] {
        assert!(
            x.batch == c.batch || x.batch == 1,
            "gemm: {name} holds {} matrices for a batch of {} (it must hold one, shared, or as many)",
            x.batch,
            c.batch
        );
    }
    (c.batch, a.rows, a.cols, b.cols)
}

/// The distance between consecutive products of an operand (0 when one matrix is shared).
fn batch_stride(x: Layout) -> isize {
    if x.batch == 1 {
        0
    } else {
        x.bs
    }
}

/// `C = alpha A B + beta C` for any element type: f32 takes our kernels ([`sgemm`]), f64 (the
/// gradient checks) `matrixmultiply`. Views may be batches (`C_p = alpha A_p B_p + beta C_p`;
/// an operand of one matrix is shared by every product).
///
/// When `beta == 0`, C is written without being read (NaNs in C do not propagate); when `k == 0`
/// or `alpha == 0`, `C = beta * C` and A, B are not read. Panics if the shapes do not fit.
pub fn gemm<T: Float>(alpha: T, a: MatRef<'_, T>, b: MatRef<'_, T>, beta: T, c: MatMut<'_, T>) {
    if crate::dtype::is::<T, f32>() {
        // SAFETY: T is f32 (same TypeId), so the views only change their element type's name.
        let (a, b, c) = unsafe { (a.cast::<f32>(), b.cast::<f32>(), c.cast::<f32>()) };
        return sgemm(alpha.to_f64() as f32, a, b, beta.to_f64() as f32, c);
    }
    dgemm(alpha.to_f64(), a, b, beta.to_f64(), c)
}

/// f32 GEMM on the active ISA; see [`gemm`] for the contract.
pub fn sgemm(alpha: f32, a: MatRef<'_, f32>, b: MatRef<'_, f32>, beta: f32, c: MatMut<'_, f32>) {
    sgemm_with(Isa::active(), alpha, a, b, beta, c)
}

/// [`sgemm`] on a chosen ISA (for tests and benchmarks); panics if `isa` is not available.
pub fn sgemm_with(isa: Isa, alpha: f32, a: MatRef<'_, f32>, b: MatRef<'_, f32>, beta: f32, c: MatMut<'_, f32>) {
    sgemm_with_caches(isa, CacheSizes::this_machine(), alpha, a, b, beta, c)
}

/// [`sgemm_with`] blocked for a core with the given caches instead of the running one's: how the
/// tests cover every blocking the detection can produce, and how the benchmark compares
/// blockings in one run. The result is the same whatever the caches (up to rounding).
#[doc(hidden)]
pub fn sgemm_with_caches(
    isa: Isa,
    caches: CacheSizes,
    alpha: f32,
    a: MatRef<'_, f32>,
    b: MatRef<'_, f32>,
    beta: f32,
    c: MatMut<'_, f32>,
) {
    sgemm_full(isa, caches, alpha, a, b, beta, c, None)
}

/// `C = alpha A B + beta C`, then `then(row, col0, piece)` on every row piece of the final C
/// while it is still in cache (see [`Epilogue`]): how a layer applies its bias, residual or
/// activation without another pass over its output. C must be one matrix with contiguous rows
/// (panics otherwise). The result is that of [`gemm`] followed by `then` on each row.
pub fn gemm_then<T: Float>(
    alpha: T,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    beta: T,
    mut c: MatMut<'_, T>,
    then: &Epilogue<'_, T>,
) {
    if crate::dtype::is::<T, f32>() {
        // SAFETY: T is f32 (same TypeId): the views and the slices only change their element
        // type's name.
        let (a, b, c) = unsafe { (a.cast::<f32>(), b.cast::<f32>(), c.cast::<f32>()) };
        let then32 = |r: usize, c0: usize, piece: &mut [f32]| {
            // SAFETY: as above, T is f32.
            then(r, c0, unsafe { std::slice::from_raw_parts_mut(piece.as_mut_ptr().cast::<T>(), piece.len()) })
        };
        let (alpha, beta) = (alpha.to_f64() as f32, beta.to_f64() as f32);
        return sgemm_then_with(Isa::active(), CacheSizes::this_machine(), alpha, a, b, beta, c, &then32);
    }
    let lc = c.layout();
    assert_rows_contiguous(lc);
    let (rows, cols, rs) = (lc.rows, lc.cols, lc.rs);
    dgemm(alpha.to_f64(), a, b, beta.to_f64(), c.rb());
    if cols == 0 {
        return;
    }
    let p = SendPtr::new(c.as_mut_ptr());
    for_row_blocks(rows, cols, 1, |block| {
        for r in block {
            // SAFETY: row r of C is `cols` contiguous elements (asserted above), distinct from
            // every other row's (C's layout is injective), and this block's task alone touches it.
            let row = unsafe { std::slice::from_raw_parts_mut(p.get().wrapping_offset(r as isize * rs), cols) };
            then(r, 0, row)
        }
    });
}

/// What an epilogue needs of C: one matrix whose rows are contiguous (panics otherwise).
fn assert_rows_contiguous(lc: Layout) {
    assert!(
        lc.batch == 1 && (lc.cs == 1 || lc.cols <= 1),
        "gemm_then: C must be one matrix with contiguous rows (batch {}, column stride {})",
        lc.batch,
        lc.cs
    );
}

/// [`gemm_then`] in f32 on a chosen ISA, blocked for the given caches (for tests: the epilogue
/// must see every element once, final, however the product was blocked and split).
#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub fn sgemm_then_with(
    isa: Isa,
    caches: CacheSizes,
    alpha: f32,
    a: MatRef<'_, f32>,
    b: MatRef<'_, f32>,
    beta: f32,
    c: MatMut<'_, f32>,
    then: &Epilogue<'_, f32>,
) {
    assert_rows_contiguous(c.layout());
    sgemm_full(isa, caches, alpha, a, b, beta, c, Some(then))
}

/// [`sgemm_with_caches`] with an optional epilogue ([`gemm_then`]).
#[allow(clippy::too_many_arguments)]
fn sgemm_full(
    isa: Isa,
    caches: CacheSizes,
    alpha: f32,
    a: MatRef<'_, f32>,
    b: MatRef<'_, f32>,
    beta: f32,
    mut c: MatMut<'_, f32>,
    epilogue: Option<&Epilogue<'_, f32>>,
) {
    let (la, lb, lc) = (a.layout(), b.layout(), c.layout());
    let (batch, m, k, n) = shapes(la, lb, lc);
    debug_assert!(epilogue.is_none() || (batch == 1 && (lc.cs == 1 || n <= 1)));
    // Opt-in instrumentation, see `timing`.
    let _timing = timing::Span::enter(|| timing::GemmShape::new(batch, (m, k, n), (la.rs, la.cs), (lb.rs, lb.cs)));
    if batch == 0 || m == 0 || n == 0 {
        return;
    }
    let g = Gemm {
        m,
        k,
        n,
        alpha,
        beta,
        a: Operand { p: SendPtr::from_const(a.as_ptr()), rs: la.rs, cs: la.cs },
        b: Operand { p: SendPtr::from_const(b.as_ptr()), rs: lb.rs, cs: lb.cs },
        c: Operand { p: SendPtr::new(c.as_mut_ptr()), rs: lc.rs, cs: lc.cs },
        caches,
        epilogue,
        origin: (0, 0),
    };
    let strides = (batch_stride(la), batch_stride(lb), lc.bs);
    if k == 0 || alpha == 0.0 {
        for p in 0..batch {
            // SAFETY: the views' constructors vouch that every element of C is valid and
            // distinct.
            unsafe {
                scale_c(&g.nth(p, strides));
                g.finish_rows(0..m)
            };
        }
        return;
    }
    // SAFETY: the views vouch for A, B and C (in bounds, C's elements distinct and not
    // aliased by A or B, which are borrowed immutably while C is borrowed mutably).
    unsafe { threads::batch(isa, batch, &g, strides) }
}

/// f64 products through `matrixmultiply`, in parallel over a batch.
fn dgemm<T: Float>(alpha: f64, a: MatRef<'_, T>, b: MatRef<'_, T>, beta: f64, mut c: MatMut<'_, T>) {
    assert!(crate::dtype::is::<T, f64>(), "gemm: no kernel for element type {:?}", T::DTYPE);
    let (la, lb, lc) = (a.layout(), b.layout(), c.layout());
    let (batch, m, k, n) = shapes(la, lb, lc);
    let (sa, sb) = (batch_stride(la), batch_stride(lb));
    let (pa, pb) = (SendPtr::from_const(a.as_ptr().cast::<f64>()), SendPtr::from_const(b.as_ptr().cast::<f64>()));
    let pc = SendPtr::new(c.as_mut_ptr().cast::<f64>());
    let one = |p: usize| {
        let off = |s: isize| (p as isize) * s;
        // SAFETY: T is f64 (asserted); the views vouch for every product's operands, and
        // products write disjoint C's (C's layout is injective).
        unsafe {
            matrixmultiply::dgemm(
                m,
                k,
                n,
                alpha,
                pa.get().wrapping_offset(off(sa)),
                la.rs,
                la.cs,
                pb.get().wrapping_offset(off(sb)),
                lb.rs,
                lb.cs,
                beta,
                pc.get().wrapping_offset(off(lc.bs)),
                lc.rs,
                lc.cs,
            )
        }
    };
    if batch > 1 {
        (0..batch).into_par_iter().for_each(one);
    } else if batch == 1 {
        one(0);
    }
}

impl Gemm<'_> {
    /// The epilogue on whole rows `rows` of this product's C, if it has one.
    ///
    /// # Safety
    /// Those rows must be final, this thread's alone, and contiguous (`c.cs == 1`).
    pub(crate) unsafe fn finish_rows(&self, rows: std::ops::Range<usize>) {
        self.finish(rows, (0, self.n))
    }

    /// The epilogue on columns `j0..j0 + len` of rows `rows` of this product's C, if it has one.
    ///
    /// # Safety
    /// As for [`Gemm::finish_rows`].
    #[inline(always)]
    pub(crate) unsafe fn finish(&self, rows: std::ops::Range<usize>, (j0, len): (usize, usize)) {
        let Some(then) = self.epilogue else { return };
        for i in rows {
            // SAFETY: the caller vouches that these elements are final, contiguous and ours.
            let piece = unsafe { std::slice::from_raw_parts_mut(self.c.at(i, j0), len) };
            then(self.origin.0 + i, self.origin.1 + j0, piece);
        }
    }
}

/// `C = beta * C` (zeros when `beta == 0`, without reading C).
///
/// # Safety
/// `g.c` must address `m x n` valid, distinct elements.
unsafe fn scale_c(g: &Gemm) {
    for i in 0..g.m {
        for j in 0..g.n {
            let p = g.c.at(i, j);
            *p = if g.beta == 0.0 { 0.0 } else { g.beta * *p };
        }
    }
}
