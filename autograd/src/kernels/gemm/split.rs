//! The thread-split cost model: into how many pieces along M, N and K a product is cut.
//!
//! The product is cut into at most `threads` tasks, never below [`MIN_TASK_FLOPS`] each, along
//! whichever axes pack the least redundant data: a tall product (`8320 x 192 x 576`) splits its
//! rows and each task packs the small B; a long-K weight gradient (`576 x 8320 x 192`) splits K,
//! each task owns a slice of both operands, and the partial C's are summed at the end.

use super::dispatch::GemmArch;
use super::mr::choose_mr;
use super::Gemm;
use crate::kernels::simd::Simd;

/// A task below this many flops (`2 m n k`) is not worth a thread: ~40 us on one core.
pub const MIN_TASK_FLOPS: usize = 8_000_000;

/// How a product is cut into tasks: `tm x tn x tk` pieces along M, N and K.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Split {
    pub(crate) tm: usize,
    pub(crate) tn: usize,
    pub(crate) tk: usize,
}

impl Split {
    /// One task: the whole product on the calling thread.
    pub(crate) const ONE: Split = Split { tm: 1, tn: 1, tk: 1 };

    /// The number of tasks.
    pub(crate) fn tasks(self) -> usize {
        self.tm * self.tn * self.tk
    }
}

/// Chooses the task grid for `threads` threads by a small cost model, in cycles: the largest
/// task's FMA work plus its packing, plus the final reduction of K-split partial products.
pub(crate) fn plan<G: GemmArch>(g: &Gemm, threads: usize) -> Split {
    let flops = 2.0 * g.m as f64 * g.n as f64 * g.k as f64;
    let tasks = threads.min((flops / MIN_TASK_FLOPS as f64) as usize).max(1);
    if tasks == 1 {
        return Split::ONE;
    }
    let mr = choose_mr::<G>(g.m);
    let (mp, np) = (g.m.div_ceil(mr), g.n.div_ceil(G::NR));
    let flops_per_cycle = 4.0 * <G::S as Simd>::LANES as f64;
    let b_block_bytes = G::cache_blocking(g).b_block_bytes as f64;
    // Cycles per packed element: a copy is cheap, a transpose or gather is not.
    let cost_a = if g.a.cs == 1 || g.a.rs == 1 { 0.15 } else { 1.0 };
    let cost_b = if g.b.cs == 1 { 0.1 } else { 0.6 };
    let mut best = (f64::INFINITY, Split::ONE);
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
            let n_blocks = (cols * depth * 4.0 / b_block_bytes).ceil().max(1.0);
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
