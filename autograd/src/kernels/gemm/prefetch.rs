//! The prefetch schedule: while one block computes, the source of the next A block and the next
//! B block (or the first blocks of the next product of a batch) are prefetched into L2 a few
//! cache lines per tile, so that packing (or a kernel reading A in place) finds them in cache
//! instead of waiting on DRAM (the operands of the long-K weight gradients are tens of MB).
//!
//! A tile's lines are handed to its microkernel, which issues one every few `k` steps
//! (`Tile::pf`): issued back to back before the tile, 50-60 prefetches to DRAM filled the
//! core's line-fill buffers and stalled it until they came back, 5-7% of a product's time.

use super::loops::Blocking;
use super::Gemm;
use crate::kernels::simd::Simd;

/// A cursor over the cache lines of a strided 2-D region (`runs` contiguous runs of `len`
/// floats, `stride` apart) that issues a few prefetches at a time.
pub(crate) struct Prefetch {
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

    /// Nothing to prefetch.
    pub(crate) fn none() -> Prefetch {
        Prefetch::new(std::ptr::null(), 0, 0, 0)
    }

    /// How many cache lines the region spans (roughly: one per 16 floats and run).
    pub(crate) fn lines(&self) -> usize {
        self.runs * (self.len.div_ceil(16) + 1)
    }

    /// The source of the A block at rows `ic..`, depths `pc..` of `g`.
    pub(crate) fn a_block(g: &Gemm, bl: &Blocking, ic: usize, pc: usize) -> Prefetch {
        let (mc, kc) = (bl.mc_max.min(g.m - ic), bl.kc_max.min(g.k - pc));
        let p = g.a.at(ic, pc);
        // A's own layout, not the packed one (NEON packs a row-major A k-major too).
        if g.a.cs == 1 {
            Prefetch::new(p, mc, g.a.rs, kc)
        } else if g.a.rs == 1 {
            Prefetch::new(p, kc, g.a.cs, mc)
        } else {
            Prefetch::none()
        }
    }

    /// The source of the B block at depths `pc..`, columns `jc..` of `g`.
    pub(crate) fn b_block(g: &Gemm, bl: &Blocking, pc: usize, jc: usize) -> Prefetch {
        let (kc, nc) = (bl.kc_max.min(g.k - pc), bl.nc_max.min(g.n - jc));
        let p = g.b.at(pc, jc);
        if g.b.cs == 1 && g.b.rs as usize == nc {
            // One contiguous run: the hardware prefetcher streams it without help.
            Prefetch::none()
        } else if g.b.cs == 1 {
            Prefetch::new(p, kc, g.b.rs, nc)
        } else if g.b.rs == 1 {
            Prefetch::new(p, nc, g.b.cs, kc)
        } else {
            Prefetch::none()
        }
    }

    /// What to prefetch while B block `(pc, jc)` (of `kc x nc`) computes: the next B block of this
    /// depth, else the first of the next depth, else the first of the next product.
    pub(crate) fn after_b(
        g: &Gemm,
        bl: &Blocking,
        (pc, kc): (usize, usize),
        (jc, nc): (usize, usize),
        next: Option<&Gemm>,
    ) -> Prefetch {
        if jc + nc < g.n {
            Prefetch::b_block(g, bl, pc, jc + nc)
        } else if pc + kc < g.k {
            Prefetch::b_block(g, bl, pc + kc, 0)
        } else if let Some(ng) = next {
            Prefetch::b_block(ng, bl, 0, 0)
        } else {
            Prefetch::none()
        }
    }

    /// What to prefetch while A block `(ic, pc)` computes against the B block ending at column
    /// `jc_end`: the next A block (when A is packed per B block), else the first A block of the
    /// next depth once the last B block of this depth runs, else that of the next product.
    pub(crate) fn after_a(
        g: &Gemm,
        bl: &Blocking,
        (ic, mc): (usize, usize),
        (pc, kc): (usize, usize),
        jc_end: usize,
        next: Option<&Gemm>,
    ) -> Prefetch {
        let last_jc = jc_end >= g.n;
        if !bl.a_once && ic + mc < g.m {
            Prefetch::a_block(g, bl, ic + mc, pc)
        } else if !bl.a_once && !last_jc {
            Prefetch::a_block(g, bl, 0, pc)
        } else if !last_jc {
            Prefetch::none()
        } else if pc + kc < g.k {
            Prefetch::a_block(g, bl, 0, pc + kc)
        } else if let Some(ng) = next {
            Prefetch::a_block(ng, bl, 0, 0)
        } else {
            Prefetch::none()
        }
    }

    /// The next line's address, if any is left (addresses are only hinted, never dereferenced).
    #[inline(always)]
    fn next_line(&mut self) -> Option<*const f32> {
        if self.run >= self.runs {
            return None;
        }
        let row = self.p.wrapping_offset(self.run as isize * self.stride);
        if self.off < self.len {
            self.off += 16;
            Some(row.wrapping_add(self.off - 16))
        } else {
            self.off = 0;
            self.run += 1;
            Some(row.wrapping_add(self.len - 1))
        }
    }

    /// Prefetches the next `count` lines into L1 at once.
    #[inline(always)]
    pub(crate) unsafe fn step<S: Simd>(&mut self, count: usize) {
        for _ in 0..count {
            match self.next_line() {
                Some(p) => S::prefetch(p),
                None => return,
            }
        }
    }

    /// Writes the next `count` lines' addresses into `out` (fewer when fewer are left) and
    /// returns how many it wrote; the kernel then prefetches them one every few `k` steps. Lines
    /// beyond `out`'s room are prefetched at once.
    #[inline(always)]
    pub(crate) unsafe fn take<S: Simd>(&mut self, out: &mut [*const f32], count: usize) -> usize {
        let mut n = 0;
        while n < count.min(out.len()) {
            match self.next_line() {
                Some(p) => out[n] = p,
                None => return n,
            }
            n += 1;
        }
        for _ in n..count {
            match self.next_line() {
                Some(p) => S::prefetch_l2(p),
                None => break,
            }
        }
        n
    }
}
