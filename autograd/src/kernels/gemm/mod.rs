//! General matrix multiply, `C = alpha * A B + beta * C`, on arbitrarily strided operands.
//!
//! Strides let backward pass `A^T` or `B^T` without materialising a transpose: a row-major
//! `[k, m]` matrix read with `(rs, cs) = (1, m)` *is* its transpose.
//!
//! # Structure (after BLIS / GotoBLAS)
//!
//! ```text
//!     for pc in 0..k step KC:                   depth block (the first applies beta, later ones add)
//!       [pack all of A[.., pc..] once if M is short (a weight gradient's 192..768 rows)]
//!       for jc in 0..n step NC:                 B block, sized for L2
//!         pack B[pc.., jc..] -> B~               (kc x nc, NR-wide panels, k-major)
//!         for ic in 0..m step MC:               A block, sized for L2
//!           pack A[ic.., pc..] -> A~             (MR-row micro-panels)
//!           for ir in 0..mc step MR:            one A micro-panel: stays in L1 ...
//!             for jr in 0..nc step NR:          ... while the B panels stream from L2
//!               microkernel: C[ir.., jr..] (+)= alpha A~[ir] B~[jr]   (MR x NR tile in registers)
//! ```
//!
//! * `KC` is split evenly (`K = 576` runs as 2 x 288, not 384 + 192); `MR` is chosen per product
//!   from `1..=MR_MAX` to waste the fewest padded rows (65 rows run as 5 x 13, 192 as 16 x 12).
//! * Packing is a copy whenever an operand is row- or column-major: the A micro-panel layout
//!   follows A's contiguous direction (rows of `KCP` floats for a row-major A, `MR` floats per
//!   depth for a transposed one), and a transposed B (`W^T` of a PyTorch-layout weight) goes
//!   through in-register `LANES x LANES` transposes. Any other strides take a gather.
//! * While one block computes, the next A and B blocks (or the next product of a batch) are
//!   prefetched a few cache lines per tile, so packing does not wait on DRAM; each kernel call
//!   prefetches its C tile before its k loop.
//! * Edge tiles run the same kernel with masked loads and stores; a B edge of at most
//!   `DOT_NR` = 4 columns (the 65th column of attention's `Q K^T`) runs as dot products
//!   along k instead of spending a whole vector per column.
//!
//! # Microkernels and dispatch
//!
//! One generic kernel (`kernel.rs`) is instantiated per ISA: AVX-512F 14 x 32 (`avx512.rs`),
//! AVX2+FMA 6 x 16 (`avx2.rs`) and `wide` 6 x 16 (`portable.rs`, which is also the aarch64 NEON
//! path). Each ISA compiles the whole blocked loop inside one `#[target_feature]` function, so
//! packing uses the ISA's vectors too. The ISA is [`Isa::active`] (detected at run time,
//! overridable with `AUTOGRAD_ISA`) or forced per call with [`sgemm_with`]; the normal path pays
//! one relaxed atomic load for it.
//!
//! # Threads
//!
//! The product is cut into at most `rayon::current_num_threads()` tasks (so `RAYON_NUM_THREADS`
//! or an enclosing `ThreadPool::install` sets the count), never below [`MIN_TASK_FLOPS`] each so
//! that small products stay on the calling thread. The cut is along M, N or K, whichever packs
//! the least redundant data: a tall product (`8320 x 192 x 576`) splits its rows and each task
//! packs the small B; a long-K weight gradient (`576 x 8320 x 192`) splits K, each task owns a
//! slice of both operands, and the partial C's are summed at the end. Packing buffers are
//! per-thread and reused, so steady-state calls allocate nothing (a K split allocates its
//! partial C's). [`sgemm_batched`] runs many small products (attention's `B*H` per-head
//! products) in parallel over the batch, one product per thread at a time.
//!
//! `dgemm` (f64) serves gradient checks only and stays on `matrixmultiply`.

mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub(crate) mod kernel;
mod pack;
mod portable;
pub mod timing;

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use self::kernel::{KernelFn, Tile};
use crate::kernels::simd::Simd;
pub use crate::kernels::Isa;

/// A task below this many flops (`2 m n k`) is not worth a thread: ~40 us on one core.
pub const MIN_TASK_FLOPS: usize = 8_000_000;

/// One ISA's blocking parameters and kernels.
pub(crate) trait GemmArch {
    type S: Simd;
    /// Tile width (columns of C per microkernel call); B panels are this wide.
    const NR: usize;
    /// The tallest tile; the kernel exists for every `MR` in `1..=MR_MAX`.
    const MR_MAX: usize;
    /// The largest depth block.
    const KC: usize;
    /// Row stride of a rows-layout A micro-panel (`KC` plus one cache line, so rows spread over
    /// cache sets).
    const KCP: usize;
    /// Budget for one packed B block (`kc x nc` floats), sized for L2.
    const B_BLOCK_BYTES: usize;
    /// Budget for one packed A block (whole micro-panels), sized for L2 next to the B block.
    const A_BLOCK_BYTES: usize;
    /// The microkernel for `mr` rows, `nv` vectors, A layout.
    fn kernel(mr: usize, nv: usize, kmajor: bool) -> KernelFn;
    /// The dot-product kernel for the narrowest B edges, rows-layout A.
    fn dot_kernel(mr: usize) -> KernelFn;
    /// [`block`] compiled for this ISA: a `#[target_feature]` function into which the generic
    /// loops, the packing and the vector intrinsics are all inlined.
    ///
    /// # Safety
    /// The CPU must support the ISA; `g` must describe valid operands.
    unsafe fn block(g: &Gemm, bufs: &mut Buffers, next: Option<&Gemm>);
}

/// One product's operands, as raw strided pointers.
#[derive(Clone, Copy)]
pub(crate) struct Gemm {
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
}

// SAFETY: a `Gemm` is only shared between the tasks of one call, which write disjoint parts of C
// (or their own temporary buffers) and only read A and B.
unsafe impl Send for Gemm {}
unsafe impl Sync for Gemm {}

impl Gemm {
    /// The `p`-th product of a batch with the given operand strides.
    fn nth(&self, p: usize, stride_a: isize, stride_b: isize, stride_c: isize) -> Gemm {
        Gemm {
            a: self.a.wrapping_offset(p as isize * stride_a),
            b: self.b.wrapping_offset(p as isize * stride_b),
            c: self.c.wrapping_offset(p as isize * stride_c),
            ..*self
        }
    }
}

/// f32 GEMM. Shapes: A `m x k`, B `k x n`, C `m x n`; `rs*`/`cs*` are row and column strides in
/// elements (any sign and size). When `beta == 0`, C is written without being read (NaNs in C do
/// not propagate); when `k == 0` or `alpha == 0`, `C = beta * C` and A, B are not read.
///
/// # Safety
/// The pointers must address valid matrices under the given strides; C must not alias A or B,
/// and distinct `(i, j)` must address distinct elements of C.
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
    sgemm_with(Isa::active(), m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
}

/// [`sgemm`] on a chosen ISA (for tests and benchmarks).
///
/// # Safety
/// As for [`sgemm`]; panics if `isa` is not available on this machine.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm_with(
    isa: Isa,
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
    let _timing = timing::Span::enter(2 * m * n * k); // opt-in instrumentation, see `timing`
    let g = Gemm { m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc };
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 || alpha == 0.0 {
        scale_c(&g);
        return;
    }
    let threads = rayon::current_num_threads();
    dispatch(isa, &g, threads, None);
}

/// Many products of one shape: for `p in 0..batch`, `C_p = alpha A_p B_p + beta C_p` with
/// `X_p = x + p * stride_x` (a stride of 0 shares an operand). Parallel over the batch when
/// each product is small (attention's `B*H` products of `N x Dh x N`), otherwise one threaded
/// product after another.
///
/// # Safety
/// As for [`sgemm`], for every `p`; the `C_p` must not overlap each other.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm_batched(
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: *const f32,
    stride_a: isize,
    rsa: isize,
    csa: isize,
    b: *const f32,
    stride_b: isize,
    rsb: isize,
    csb: isize,
    beta: f32,
    c: *mut f32,
    stride_c: isize,
    rsc: isize,
    csc: isize,
) {
    sgemm_batched_with(
        Isa::active(),
        batch,
        m,
        k,
        n,
        alpha,
        a,
        stride_a,
        rsa,
        csa,
        b,
        stride_b,
        rsb,
        csb,
        beta,
        c,
        stride_c,
        rsc,
        csc,
    )
}

/// [`sgemm_batched`] on a chosen ISA.
///
/// # Safety
/// As for [`sgemm_batched`]; panics if `isa` is not available on this machine.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm_batched_with(
    isa: Isa,
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: *const f32,
    stride_a: isize,
    rsa: isize,
    csa: isize,
    b: *const f32,
    stride_b: isize,
    rsb: isize,
    csb: isize,
    beta: f32,
    c: *mut f32,
    stride_c: isize,
    rsc: isize,
    csc: isize,
) {
    let _timing = timing::Span::enter(batch * 2 * m * n * k); // opt-in instrumentation, see `timing`
    if batch == 0 || m == 0 || n == 0 {
        return;
    }
    let g = Gemm { m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc };
    // Product `p`, telling it about `p + 1` when the same thread runs that next.
    let one = |p: usize, last: usize, threads: usize| {
        let gp = g.nth(p, stride_a, stride_b, stride_c);
        if k == 0 || alpha == 0.0 {
            scale_c(&gp);
        } else {
            let next = (p + 1 < last).then(|| g.nth(p + 1, stride_a, stride_b, stride_c));
            dispatch(isa, &gp, threads, next.as_ref());
        }
    };
    let threads = rayon::current_num_threads();
    let flops = 2 * m * n * k.max(1);
    if threads > 1 && batch > 1 && flops < MIN_TASK_FLOPS * threads {
        // Each product on one thread; enough products per task to amortise the fork.
        let per_task = (MIN_TASK_FLOPS / 4 / flops).clamp(1, batch.div_ceil(threads));
        let chunks = batch.div_ceil(per_task);
        (0..chunks).into_par_iter().for_each(|ch| {
            let last = ((ch + 1) * per_task).min(batch);
            for p in ch * per_task..last {
                one(p, last, 1);
            }
        });
    } else {
        for p in 0..batch {
            one(p, batch, threads);
        }
    }
}

/// f64 GEMM, same contract as [`sgemm`]. It serves gradient checks: exact, not fast, so it stays
/// on `matrixmultiply`.
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

/// `C = beta * C` (zeros when `beta == 0`, without reading C).
unsafe fn scale_c(g: &Gemm) {
    for i in 0..g.m {
        for j in 0..g.n {
            let p = g.c.offset(i as isize * g.rsc + j as isize * g.csc);
            *p = if g.beta == 0.0 { 0.0 } else { g.beta * *p };
        }
    }
}

unsafe fn dispatch(isa: Isa, g: &Gemm, threads: usize, next: Option<&Gemm>) {
    assert!(isa.available(), "sgemm: ISA {isa} is not available on this machine");
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => gemm::<avx512::Arch>(g, threads, next),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => gemm::<avx2::Arch>(g, threads, next),
        _ => gemm::<portable::Arch>(g, threads, next),
    }
}

/// How a product is cut into tasks: `tm x tn x tk` pieces along M, N and K.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Split {
    tm: usize,
    tn: usize,
    tk: usize,
}

/// The task grid `(tm, tn, tk)` that a product of this shape and layout is cut into on
/// `threads` threads (row-major operands unless transposed). For tests and benchmarks.
#[doc(hidden)]
pub fn split_for(
    isa: Isa,
    m: usize,
    k: usize,
    n: usize,
    a_t: bool,
    b_t: bool,
    threads: usize,
) -> (usize, usize, usize) {
    let (rsa, csa) = if a_t { (1, m as isize) } else { (k as isize, 1) };
    let (rsb, csb) = if b_t { (1, k as isize) } else { (n as isize, 1) };
    let g = Gemm {
        m,
        k,
        n,
        alpha: 1.0,
        a: std::ptr::null(),
        rsa,
        csa,
        b: std::ptr::null(),
        rsb,
        csb,
        beta: 0.0,
        c: std::ptr::null_mut(),
        rsc: n as isize,
        csc: 1,
    };
    let s = match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => plan::<avx512::Arch>(&g, threads),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => plan::<avx2::Arch>(&g, threads),
        _ => plan::<portable::Arch>(&g, threads),
    };
    (s.tm, s.tn, s.tk)
}

/// Picks `MR` for `m` rows: fewest wasted rows, counting that fewer than 4 rows cannot hide the
/// FMA latency and that every row panel costs a little extra (it re-reads the B panels).
fn choose_mr<G: GemmArch>(m: usize) -> usize {
    // The search divides 14 times; remember the last answer (products come in runs of one
    // shape), keyed by `m` and `MR_MAX`: `m << 16 | MR_MAX << 8 | MR`.
    static LAST: AtomicU64 = AtomicU64::new(0);
    let key = (m as u64) << 16 | (G::MR_MAX as u64) << 8;
    let last = LAST.load(Ordering::Relaxed);
    if last & !0xff == key && m < 1 << 40 {
        return (last & 0xff) as usize;
    }
    let mr = (1..=G::MR_MAX)
        .min_by_key(|&mr| {
            let panels = m.div_ceil(mr);
            (panels * (mr.max(4) * 4 + 4), usize::MAX - mr)
        })
        .unwrap_or(G::MR_MAX);
    LAST.store(key | mr as u64, Ordering::Relaxed);
    mr
}

/// Chooses the task grid for `threads` threads by a small cost model, in cycles: the largest
/// task's FMA work plus its packing, plus the final reduction of K-split partial products.
fn plan<G: GemmArch>(g: &Gemm, threads: usize) -> Split {
    let one = Split { tm: 1, tn: 1, tk: 1 };
    let flops = 2.0 * g.m as f64 * g.n as f64 * g.k as f64;
    let tasks = threads.min((flops / MIN_TASK_FLOPS as f64) as usize).max(1);
    if tasks == 1 {
        return one;
    }
    let mr = choose_mr::<G>(g.m);
    let (mp, np) = (g.m.div_ceil(mr), g.n.div_ceil(G::NR));
    let flops_per_cycle = 4.0 * <G::S as Simd>::LANES as f64;
    // Cycles per packed element: a copy is cheap, a transpose or gather is not.
    let cost_a = if g.csa == 1 || g.rsa == 1 { 0.15 } else { 1.0 };
    let cost_b = if g.csb == 1 { 0.1 } else { 0.6 };
    let mut best = (f64::INFINITY, one);
    for tm in 1..=tasks {
        for tn in 1..=tasks / tm {
            let tk = tasks / (tm * tn);
            if tm * tn * tk != tasks || tm > mp || tn > np || tk > g.k {
                continue;
            }
            let rows = (mp.div_ceil(tm) * mr).min(g.m) as f64;
            let cols = (np.div_ceil(tn) * G::NR).min(g.n) as f64;
            let depth = g.k.div_ceil(tk) as f64;
            let compute = 2.0 * rows * cols * depth / flops_per_cycle;
            let n_blocks = (cols * depth * 4.0 / G::B_BLOCK_BYTES as f64).ceil().max(1.0);
            let packing = rows * depth * n_blocks * cost_a + depth * cols * cost_b;
            let reduce = if tk > 1 { g.m as f64 * g.n as f64 * (tk as f64) * 0.5 / tasks as f64 } else { 0.0 };
            let cost = compute + packing + reduce;
            if cost < best.0 * 0.999 {
                best = (cost, Split { tm, tn, tk });
            }
        }
    }
    best.1
}

/// A 64-byte aligned, grow-only scratch buffer of floats.
#[derive(Default)]
struct Scratch(Vec<Align64>);

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Align64([f32; 16]);

impl Scratch {
    fn get(&mut self, floats: usize) -> *mut f32 {
        let blocks = floats.div_ceil(16);
        if self.0.len() < blocks {
            self.0 = vec![Align64([0.0; 16]); blocks];
        }
        self.0.as_mut_ptr() as *mut f32
    }
}

#[derive(Default)]
pub(crate) struct Buffers {
    a: Scratch,
    b: Scratch,
}

thread_local! {
    static BUFFERS: RefCell<Buffers> = RefCell::new(Buffers::default());
    /// The partial products of a K-split call, kept by the calling thread between calls.
    static PARTIAL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's packing buffers (fresh ones if they are somehow in use already).
fn with_buffers<R>(f: impl FnOnce(&mut Buffers) -> R) -> R {
    BUFFERS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut bufs) => f(&mut bufs),
        Err(_) => f(&mut Buffers::default()),
    })
}

/// Raw pointer that may cross threads (the tasks of one call write disjoint memory).
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

unsafe fn gemm<G: GemmArch>(g: &Gemm, threads: usize, next: Option<&Gemm>) {
    let split = if threads > 1 { plan::<G>(g, threads) } else { Split { tm: 1, tn: 1, tk: 1 } };
    let tasks = split.tm * split.tn * split.tk;
    if tasks == 1 {
        with_buffers(|bufs| G::block(g, bufs, next));
        return;
    }
    let (m, n) = (g.m, g.n);
    let mr = choose_mr::<G>(m);
    let (mp, np) = (m.div_ceil(mr), n.div_ceil(G::NR));
    // Partial products of K slices 1.. go to their own row-major m x n buffers.
    // (Reused from call to call: fresh zeroed pages would cost a page fault per 4 KiB.)
    let mut partial = PARTIAL.with(|p| std::mem::take(&mut *p.borrow_mut()));
    if partial.len() < (split.tk - 1) * m * n {
        partial = vec![0.0f32; (split.tk - 1) * m * n];
    }
    let partial_ptr = SendPtr(partial.as_mut_ptr());
    let range = |parts: usize, units: usize, unit: usize, total: usize, i: usize| {
        ((units * i / parts * unit).min(total), (units * (i + 1) / parts * unit).min(total))
    };
    (0..tasks).into_par_iter().for_each(|t| {
        let (im, rest) = (t % split.tm, t / split.tm);
        let (jn, pk) = (rest % split.tn, rest / split.tn);
        let (r0, r1) = range(split.tm, mp, mr, m, im);
        let (c0, c1) = range(split.tn, np, G::NR, n, jn);
        let (k0, k1) = range(split.tk, g.k, 1, g.k, pk);
        if r0 == r1 || c0 == c1 || k0 == k1 {
            return;
        }
        let (c, rsc, csc, beta) = if pk == 0 {
            (g.c.offset(r0 as isize * g.rsc + c0 as isize * g.csc), g.rsc, g.csc, g.beta)
        } else {
            (partial_ptr.get().add((pk - 1) * m * n + r0 * n + c0), n as isize, 1, 0.0)
        };
        let sub = Gemm {
            m: r1 - r0,
            n: c1 - c0,
            k: k1 - k0,
            a: g.a.offset(r0 as isize * g.rsa + k0 as isize * g.csa),
            b: g.b.offset(k0 as isize * g.rsb + c0 as isize * g.csb),
            c,
            rsc,
            csc,
            beta,
            ..*g
        };
        with_buffers(|bufs| G::block(&sub, bufs, None));
    });
    if split.tk > 1 {
        let c = SendPtr(g.c);
        let (rsc, csc) = (g.rsc, g.csc);
        let add_rows = |i0: usize, i1: usize| {
            for i in i0..i1 {
                for p in 0..split.tk - 1 {
                    let src = &partial[p * m * n + i * n..p * m * n + (i + 1) * n];
                    for (j, &x) in src.iter().enumerate() {
                        *c.get().offset(i as isize * rsc + j as isize * csc) += x;
                    }
                }
            }
        };
        let chunk = (MIN_TASK_FLOPS / 16 / n.max(1)).max(1);
        if m > chunk {
            (0..m.div_ceil(chunk)).into_par_iter().for_each(|b| add_rows(b * chunk, ((b + 1) * chunk).min(m)));
        } else {
            add_rows(0, m);
        }
    }
    PARTIAL.with(|p| *p.borrow_mut() = partial);
}

/// The sequential BLIS loops over one (sub-)product.
///
/// `next` is the product that will run after this one on this thread (the next entry of a
/// batch), whose first blocks are prefetched during the last ones of this product.
#[inline(always)]
pub(crate) unsafe fn block<G: GemmArch>(g: &Gemm, bufs: &mut Buffers, next: Option<&Gemm>) {
    let (m, n, k) = (g.m, g.n, g.k);
    let nr = G::NR;
    let lanes = <G::S as Simd>::LANES;
    let mr = choose_mr::<G>(m);
    let kmajor = g.csa != 1;
    let kernels = [G::kernel(mr, 1, kmajor), G::kernel(mr, 2, kmajor)];
    // A B edge of at most DOT_NR columns runs as dot products (rows-layout A only).
    let dot = (!kmajor).then(|| G::dot_kernel(mr));
    let dot_edge = if dot.is_some() { kernel::DOT_NR } else { 0 };
    debug_assert_eq!(nr, 2 * lanes);

    // Depth blocks of equal size; B blocks within the L2 budget; A blocks of whole micro-panels
    // within theirs.
    let kc_max = k.div_ceil(k.div_ceil(G::KC));
    let nc_cap = (G::B_BLOCK_BYTES / (4 * kc_max) / nr * nr).max(nr);
    let nc_max = n.div_ceil(n.div_ceil(nc_cap)).next_multiple_of(nr);
    // A k-major panel ends in a vector's worth of padding for the packing's full-width stores.
    let panel = if kmajor { (kc_max * mr).next_multiple_of(16) + 16 } else { mr * G::KCP };
    let mc_cap = (G::A_BLOCK_BYTES / (4 * panel)).max(1) * mr;
    // A short A (a weight gradient's M = 192..768) is packed once per depth block and reused for
    // every B block, with a larger budget (it then shares L2 only with the B block).
    let a_once = m <= (2 * G::A_BLOCK_BYTES / (4 * panel)).max(1) * mr;
    let mc_max = if a_once { m.next_multiple_of(mr) } else { m.div_ceil(m.div_ceil(mc_cap)).next_multiple_of(mr) };
    let bbuf = bufs.b.get(kc_max * nc_max);
    let abuf = bufs.a.get(mc_max / mr * panel);

    // While one block computes, the source of the next A block and the next B block is
    // prefetched a little per tile, so that packing finds it in cache instead of waiting on
    // DRAM (the operands of the long-K weight gradients are tens of MB).
    let a_src = |g: &Gemm, ic: usize, pc: usize| {
        let (mc, kc) = (mc_max.min(g.m - ic), kc_max.min(g.k - pc));
        let p = g.a.wrapping_offset(ic as isize * g.rsa + pc as isize * g.csa);
        if !kmajor {
            Prefetch::new(p, mc, g.rsa, kc)
        } else if g.rsa == 1 {
            Prefetch::new(p, kc, g.csa, mc)
        } else {
            Prefetch::none()
        }
    };
    let b_src = |g: &Gemm, pc: usize, jc: usize| {
        let (kc, nc) = (kc_max.min(g.k - pc), nc_max.min(g.n - jc));
        let p = g.b.wrapping_offset(pc as isize * g.rsb + jc as isize * g.csb);
        if g.csb == 1 && g.rsb as usize == nc {
            // One contiguous run: the hardware prefetcher streams it without help.
            Prefetch::none()
        } else if g.csb == 1 {
            Prefetch::new(p, kc, g.rsb, nc)
        } else if g.rsb == 1 {
            Prefetch::new(p, nc, g.csb, kc)
        } else {
            Prefetch::none()
        }
    };
    let mut pc = 0;
    while pc < k {
        let kc = kc_max.min(k - pc);
        let beta = if pc == 0 { g.beta } else { 1.0 };
        if a_once {
            pack_a::<G>(g, kmajor, panel, mr, 0, m, pc, kc, abuf);
        }
        let mut jc = 0;
        while jc < n {
            let nc = nc_max.min(n - jc);
            let tiles_n = nc.div_ceil(nr);
            pack::pack_b::<G::S>(
                nr,
                kc,
                nc,
                g.b.offset(pc as isize * g.rsb + jc as isize * g.csb),
                g.rsb,
                g.csb,
                bbuf,
                dot_edge,
            );
            let mut next_b = if jc + nc < n {
                b_src(g, pc, jc + nc)
            } else if pc + kc < k {
                b_src(g, pc + kc, 0)
            } else if let Some(ng) = next {
                b_src(ng, 0, 0)
            } else {
                Prefetch::none()
            };
            let b_per_tile = next_b.lines().div_ceil(m.div_ceil(mr) * tiles_n);
            let mut ic = 0;
            while ic < m {
                let mc = mc_max.min(m - ic);
                if !a_once {
                    pack_a::<G>(g, kmajor, panel, mr, ic, mc, pc, kc, abuf);
                }
                let last_jc = jc + nc >= n;
                let mut next_a = if !a_once && ic + mc < m {
                    a_src(g, ic + mc, pc)
                } else if !a_once && !last_jc {
                    a_src(g, 0, pc)
                } else if !last_jc {
                    Prefetch::none()
                } else if pc + kc < k {
                    a_src(g, 0, pc + kc)
                } else if let Some(ng) = next {
                    a_src(ng, 0, 0)
                } else {
                    Prefetch::none()
                };
                let a_per_tile = next_a.lines().div_ceil(mc.div_ceil(mr) * tiles_n);
                let mut ir = 0;
                while ir < mc {
                    let a_panel = abuf.add(ir / mr * panel);
                    let c_row = g.c.offset((ic + ir) as isize * g.rsc + jc as isize * g.csc);
                    let mut jr = 0;
                    while jr < nc {
                        next_a.step::<G::S>(a_per_tile);
                        next_b.step::<G::S>(b_per_tile);
                        let nrc = nr.min(nc - jr);
                        let tile = Tile {
                            kc,
                            a: a_panel,
                            b: bbuf.add(jr * kc),
                            c: c_row.offset(jr as isize * g.csc),
                            rsc: g.rsc,
                            csc: g.csc,
                            mr: mr.min(mc - ir),
                            nr: nrc,
                            alpha: g.alpha,
                            beta,
                        };
                        match dot {
                            Some(f) if nrc <= dot_edge => f(&tile),
                            _ => kernels[nrc.div_ceil(lanes) - 1](&tile),
                        }
                        jr += nr;
                    }
                    ir += mr;
                }
                ic += mc;
            }
            jc += nc;
        }
        pc += kc;
    }
}

/// Packs rows `ic..ic + mc`, depths `pc..pc + kc` of A into micro-panels at `abuf`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn pack_a<G: GemmArch>(
    g: &Gemm,
    kmajor: bool,
    panel: usize,
    mr: usize,
    ic: usize,
    mc: usize,
    pc: usize,
    kc: usize,
    abuf: *mut f32,
) {
    let a = g.a.offset(ic as isize * g.rsa + pc as isize * g.csa);
    if kmajor {
        pack::pack_a_kmajor::<G::S>(panel, mc, mr, kc, a, g.rsa, g.csa, abuf);
    } else {
        pack::pack_a_rows::<G::S>(G::KCP, mc, mr, kc, a, g.rsa, abuf);
    }
}

/// A cursor over the cache lines of a strided 2-D region (`runs` contiguous runs of `len`
/// floats, `stride` apart) that issues a few prefetches at a time.
struct Prefetch {
    p: *const f32,
    runs: usize,
    stride: isize,
    len: usize,
    run: usize,
    off: usize,
}

impl Prefetch {
    fn new(p: *const f32, runs: usize, stride: isize, len: usize) -> Prefetch {
        Prefetch { p, runs, stride, len, run: 0, off: 0 }
    }
    fn none() -> Prefetch {
        Prefetch::new(std::ptr::null(), 0, 0, 0)
    }
    fn lines(&self) -> usize {
        self.runs * (self.len.div_ceil(16) + 1)
    }
    /// Prefetches the next `count` lines (addresses are only hinted, never dereferenced).
    #[inline(always)]
    unsafe fn step<S: Simd>(&mut self, count: usize) {
        for _ in 0..count {
            if self.run >= self.runs {
                return;
            }
            let row = self.p.wrapping_offset(self.run as isize * self.stride);
            if self.off < self.len {
                S::prefetch(row.wrapping_add(self.off));
                self.off += 16;
            } else {
                S::prefetch(row.wrapping_add(self.len - 1));
                self.off = 0;
                self.run += 1;
            }
        }
    }
}
