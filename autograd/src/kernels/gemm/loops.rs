//! The loop nest: the sequential BLIS loops over one (sub-)product, around the microkernel.
//!
//! ```text
//!     for pc in 0..k step KC:                   depth block (the first applies beta, later ones add)
//!       [pack all of A[.., pc..] once if M is short (a weight gradient's 192..768 rows)]
//!       for jc in 0..n step NC:                 B block, sized for L2
//!         pack B[pc.., jc..] -> B~               (kc x nc, NR-wide panels, k-major)
//!         for ic in 0..m step MC:               A block, sized for L2
//!           pack A[ic.., pc..] -> A~             (MR-row micro-panels; a row-major A is read in place)
//!           for ir in 0..mc step MR:            one A micro-panel: stays in L1 ...
//!             for jr in 0..nc step NR:          ... while the B panels stream from L2
//!               microkernel: C[ir.., jr..] (+)= alpha A~[ir] B~[jr]   (MR x NR tile in registers)
//!             [last depth block: the epilogue on the MR x nc strip just written, still in L1]
//! ```
//!
//! Reading A in place: a row-contiguous A is never packed where the kernels have strided
//! variants (`GemmArch::DIRECT`: x86 and the portable kernels). They read its rows where they are
//! (`Tile::rsa` apart), since the rows layout of a packed panel is only a copy of them. Packing
//! is memory-bound: for the products with N = 192 (fc2's forward, the input gradients of fc1 and
//! qkv), whose A is the 8320 x 768 (or x 576) activation read for only 192 columns, it took
//! 13-17% of the time (on an Emerald Rapids core those products ran at 79-81% of the FMA peak
//! packed, 89% read in place with the prefetches inside the kernel). The prefetch schedule
//! brings each next A block into L2 meanwhile. A transposed A (the weight gradients') is still
//! packed k-major: read in place, each k step would touch a different row. NEON's kernel reads A
//! by lanes and always packs.
//!
//! The direct path: a small product that is one block in every direction (attention's per-head
//! `65 x 64 x 65`) has nothing to amortise its packing over; there a row-contiguous B whose width
//! is whole vectors is read in place too. Edge tiles of an unpacked A run the kernel of their
//! own height, since there are no zero rows to read past the last.

use super::buffers::Buffers;
use super::dispatch::GemmArch;
use super::kernel::{self, KernelFn, Tile};
use super::mr::choose_mr;
use super::pack;
use super::prefetch::Prefetch;
use super::Gemm;
use crate::kernels::simd::Simd;

/// The widest tile of any ISA, in vectors (`NR / LANES`: 2 on x86, 3 for NEON's 12 columns).
const MAX_NV: usize = 3;

/// The block sizes of one product, worked out once before its loops.
pub(crate) struct Blocking {
    /// Tile height.
    pub(crate) mr: usize,
    /// Whether A is packed k-major (A is not row-contiguous, or the ISA always wants it so)
    /// rather than row by row.
    pub(crate) kmajor: bool,
    /// Floats per packed A micro-panel.
    pub(crate) panel: usize,
    /// The largest depth, B and A blocks.
    pub(crate) kc_max: usize,
    pub(crate) nc_max: usize,
    pub(crate) mc_max: usize,
    /// Whether the whole of A is packed once per depth block and reused for every B block.
    pub(crate) a_once: bool,
    /// A read in place (see the module documentation), and B on the direct path of small
    /// products.
    pub(crate) direct_a: bool,
    pub(crate) direct_b: bool,
}

/// The most prefetches handed to one microkernel call (see `prefetch.rs`).
const PF_MAX: usize = 96;

/// The largest C (elements) of a product that takes the direct path: 128 x 128, a C of 64 KiB.
const DIRECT_MAX_C: usize = 128 * 128;

impl Blocking {
    fn of<G: GemmArch>(g: &Gemm) -> Blocking {
        let (m, n, k, nr) = (g.m, g.n, g.k, G::NR);
        let mr = choose_mr::<G>(m);
        let kmajor = G::A_KMAJOR_ALWAYS || g.a.cs != 1;
        let cache = G::cache_blocking(g);
        // Depth blocks of equal size (`K = 576` runs as 2 x 288, not 384 + 192); B blocks
        // within the L2 budget; A blocks of whole micro-panels within theirs.
        let kc_max = k.div_ceil(k.div_ceil(cache.kc));
        let nc_cap = (cache.b_block_bytes / (4 * kc_max) / nr * nr).max(nr);
        let nc_max = n.div_ceil(n.div_ceil(nc_cap)).next_multiple_of(nr);
        // A k-major panel ends in a vector's worth of padding for the packing's full-width stores.
        let panel = if kmajor { (kc_max * mr).next_multiple_of(16) + 16 } else { mr * G::KCP };
        let mc_cap = (cache.a_block_bytes / (4 * panel)).max(1) * mr;
        // A short A (a weight gradient's M = 192..768) is packed once per depth block and reused
        // for every B block, with a larger budget (it then shares L2 only with the B block).
        let a_once = m <= (2 * cache.a_block_bytes / (4 * panel)).max(1) * mr;
        let mc_max = if a_once { m.next_multiple_of(mr) } else { m.div_ceil(m.div_ceil(mc_cap)).next_multiple_of(mr) };
        let small = G::DIRECT && kc_max == k && n <= nc_max && m <= mc_max && m * n <= DIRECT_MAX_C;
        let direct_a = G::DIRECT && !kmajor && g.a.rs > 0;
        let direct_b = small && g.b.cs == 1 && g.b.rs > 0 && n.is_multiple_of(<G::S as Simd>::LANES);
        Blocking { mr, kmajor, panel, kc_max, nc_max, mc_max, a_once, direct_a, direct_b }
    }

    /// Packs rows `ic..ic + mc`, depths `pc..pc + kc` of A into micro-panels at `abuf`.
    #[inline(always)]
    unsafe fn pack_a<G: GemmArch>(&self, g: &Gemm, (ic, mc): (usize, usize), (pc, kc): (usize, usize), abuf: *mut f32) {
        let a = g.a.at(ic, pc) as *const f32;
        if self.kmajor {
            pack::pack_a_kmajor::<G::S>(self.panel, (mc, self.mr, kc), (a, g.a.rs, g.a.cs), abuf);
        } else {
            pack::pack_a_rows::<G::S>(G::KCP, (mc, self.mr, kc), (a, g.a.rs), abuf);
        }
    }
}

/// The sequential BLIS loops over one (sub-)product.
///
/// `next` is the product that will run after this one on this thread (the next entry of a
/// batch), whose first blocks are prefetched during the last ones of this product.
///
/// # Safety
/// `g` must describe valid operands; the CPU must support `G`'s ISA.
#[inline(always)]
pub(crate) unsafe fn block<G: GemmArch>(g: &Gemm, bufs: &mut Buffers, next: Option<&Gemm>) {
    let (m, n, k) = (g.m, g.n, g.k);
    let nr = G::NR;
    let lanes = <G::S as Simd>::LANES;
    let bl = Blocking::of::<G>(g);
    let mr = bl.mr;
    // One kernel per tile width in vectors (an edge tile uses fewer).
    let nv_max = nr / lanes;
    debug_assert!(nr.is_multiple_of(lanes) && nv_max <= MAX_NV);
    let strided = bl.direct_a || bl.direct_b;
    let kernels: [KernelFn; MAX_NV] = std::array::from_fn(|v| G::kernel(mr, (v + 1).min(nv_max), bl.kmajor, strided));
    // A B edge of at most DOT_NR columns runs as dot products (rows-layout A only; never on an
    // unpacked B, whose width is whole vectors).
    let dot = if bl.kmajor { None } else { G::dot_kernel(mr, strided) };
    let dot_edge = if dot.is_some() { kernel::DOT_NR } else { 0 };
    // The packed panels' strides, or an unpacked operand's.
    let rsa = if bl.direct_a { g.a.rs as usize } else { G::KCP };
    let rsb = if bl.direct_b { g.b.rs as usize } else { nr };
    let bbuf = bufs.b.get(bl.kc_max * bl.nc_max);
    let abuf = bufs.a.get(bl.mc_max / mr * bl.panel);
    // The prefetch lines handed to each tile's kernel (filled afresh per tile).
    let mut pf = [std::ptr::null::<f32>(); PF_MAX];

    let mut pc = 0;
    while pc < k {
        let kc = bl.kc_max.min(k - pc);
        let beta = if pc == 0 { g.beta } else { 1.0 };
        let last_depth = pc + kc == k && g.epilogue.is_some();
        if bl.a_once && !bl.direct_a {
            bl.pack_a::<G>(g, (0, m), (pc, kc), abuf);
        }
        let mut jc = 0;
        while jc < n {
            let nc = bl.nc_max.min(n - jc);
            let tiles_n = nc.div_ceil(nr);
            if !bl.direct_b {
                pack::pack_b::<G::S>(nr, (kc, nc), (g.b.at(pc, jc) as *const f32, g.b.rs, g.b.cs), bbuf, dot_edge);
            }
            let mut next_b = Prefetch::after_b(g, &bl, (pc, kc), (jc, nc), next);
            let b_per_tile = next_b.lines().div_ceil(m.div_ceil(mr) * tiles_n);
            let mut ic = 0;
            while ic < m {
                let mc = bl.mc_max.min(m - ic);
                if !bl.a_once && !bl.direct_a {
                    bl.pack_a::<G>(g, (ic, mc), (pc, kc), abuf);
                }
                let mut next_a = Prefetch::after_a(g, &bl, (ic, mc), (pc, kc), jc + nc, next);
                let a_per_tile = next_a.lines().div_ceil(mc.div_ceil(mr) * tiles_n);
                let mut ir = 0;
                while ir < mc {
                    let rows = mr.min(mc - ir);
                    let a_panel =
                        if bl.direct_a { g.a.at(ic + ir, pc) as *const f32 } else { abuf.add(ir / mr * bl.panel) };
                    // An unpacked A has no zero rows past its last: its edge tile runs the kernel
                    // of its own height.
                    let edge = bl.direct_a && rows < mr;
                    let mut jr = 0;
                    while jr < nc {
                        let mut pf_n = 0;
                        if G::PF_IN_KERNEL {
                            pf_n = next_a.take::<G::S>(&mut pf, a_per_tile);
                            pf_n += next_b.take::<G::S>(&mut pf[pf_n..], b_per_tile);
                        } else {
                            next_a.step::<G::S>(a_per_tile);
                            next_b.step::<G::S>(b_per_tile);
                        }
                        let nrc = nr.min(nc - jr);
                        let tile = Tile {
                            kc,
                            a: a_panel,
                            b: if bl.direct_b { g.b.at(pc, jc + jr) as *const f32 } else { bbuf.add(jr * kc) },
                            rsa,
                            rsb,
                            c: g.c.at(ic + ir, jc + jr),
                            rsc: g.c.rs,
                            csc: g.c.cs,
                            mr: rows,
                            nr: nrc,
                            alpha: g.alpha,
                            beta,
                            pf: pf.as_ptr(),
                            pf_n,
                        };
                        let nv = nrc.div_ceil(lanes);
                        let f = match dot {
                            Some(f) if nrc <= dot_edge => {
                                // The dot kernels do not prefetch.
                                pf[..pf_n].iter().for_each(|&p| G::S::prefetch_l2(p));
                                if edge {
                                    G::dot_kernel(rows, true)
                                        .expect("an ISA with dot kernels has them for every height")
                                } else {
                                    f
                                }
                            }
                            _ if edge => G::kernel(rows, nv, false, true),
                            _ => kernels[nv - 1],
                        };
                        f(&tile);
                        jr += nr;
                    }
                    if last_depth {
                        // SAFETY: the strip's rows and columns are this product's, contiguous
                        // when there is an epilogue, and final after the last depth block.
                        g.finish(ic + ir..ic + ir + rows, (jc, nc));
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
