//! aarch64 NEON: 8 x 12 tiles, the shape BLIS uses for Armv8 sgemm.
//!
//! 24 accumulators (8 rows x 3 `float32x4_t`), 3 B vectors and 2 A vectors take 29 of the 32
//! 128-bit registers. Each `k` step loads the 8 A values of one depth as two vectors and the 12 B
//! values as three, and issues 24 `fmla v.4s, b.4s, a.s[lane]` (`vfmaq_laneq_f32`): the A value
//! is used straight from its lane, so nothing is broadcast and a step costs 5 loads for 24 FMAs.
//!
//! That needs A k-major (`A~[i, k]` at `k * MR + i`, four rows per vector), so this ISA packs A
//! that way whatever its layout: a row-major A is transposed 4 x 4 in registers while packing,
//! which is paid once per A block and amortised over all its `nc / 12` tiles. For the same
//! reason there is no dot-product edge kernel: a leftover B column costs one 4-lane vector here,
//! not the 8 or 16 lanes it costs on x86.
//!
//! Blocking comes from the cache sizes the OS reports ([`CacheSizes`]), with defaults for the
//! machines this path is for when it reports nothing: Apple M-series performance cores (128 KiB
//! L1D, a 12-16 MiB L2 shared by 4 cores) and Neoverse N1/V1/N2 (64 KiB L1D, 1 MiB L2).
//!
//! Its speed on hardware is unmeasured here (CI runs it under `qemu-aarch64`, where timings mean
//! nothing); the disassembly of the inner loop is the evidence of its shape.

use core::arch::aarch64::*;
use std::sync::OnceLock;

use super::buffers::Buffers;
use super::dispatch::{CacheBlocking, GemmArch};
use super::kernel::{prefetch_c, store_tile, KernelFn, Tile};
use super::Gemm;
use crate::kernels::caches::CacheSizes;
use crate::kernels::simd::Neon;

const MR: usize = 8;
const NR: usize = 12;

/// `acc + b * a[lane]`, with `lane` a constant once the kernel's loops are unrolled.
#[inline(always)]
unsafe fn fma_lane(acc: float32x4_t, b: float32x4_t, a: float32x4_t, lane: usize) -> float32x4_t {
    match lane {
        0 => vfmaq_laneq_f32::<0>(acc, b, a),
        1 => vfmaq_laneq_f32::<1>(acc, b, a),
        2 => vfmaq_laneq_f32::<2>(acc, b, a),
        _ => vfmaq_laneq_f32::<3>(acc, b, a),
    }
}

/// The microkernel: a `ROWS x 4 NV` tile of `C = alpha A~ B~ (+ beta C)` from a k-major A
/// micro-panel (`ROWS` floats per depth) and a B micro-panel (`NR` floats per depth).
///
/// ```text
///     for k in 0..kc:
///         a0, a1 = A~[k, 0..4], A~[k, 4..8]       (2 loads; 1 when ROWS <= 4)
///         b_v    = B~[k, 4v .. 4v + 4]            (NV loads)
///         acc[i][v] += b_v * a_(i/4)[i % 4]       (ROWS * NV fmla by element)
/// ```
///
/// A `ROWS < 8` panel still loads whole vectors; the lanes past `ROWS` belong to the next depth
/// (or the panel's padding) and are never used.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn kernel<const ROWS: usize, const NV: usize>(t: &Tile) {
    prefetch_c::<Neon, ROWS>(t);
    let mut acc = [[vdupq_n_f32(0.0); NV]; ROWS];
    let (mut a, mut b) = (t.a, t.b);
    for _ in 0..t.kc {
        let a0 = vld1q_f32(a);
        let a1 = if ROWS > 4 { vld1q_f32(a.add(4)) } else { a0 };
        let mut bv = [vdupq_n_f32(0.0); NV];
        for v in 0..NV {
            bv[v] = vld1q_f32(b.add(4 * v));
        }
        for i in 0..ROWS {
            let av = if i < 4 { a0 } else { a1 };
            for v in 0..NV {
                acc[i][v] = fma_lane(acc[i][v], bv[v], av, i % 4);
            }
        }
        a = a.add(ROWS);
        b = b.add(NR);
    }
    store_tile::<Neon, ROWS, NV>(&acc, t);
}

#[target_feature(enable = "neon")]
unsafe fn k<const ROWS: usize, const NV: usize>(t: &Tile) {
    // SAFETY: forwarded contract (valid panels and C tile); NEON is in the aarch64 baseline.
    unsafe { kernel::<ROWS, NV>(t) }
}

/// A `match` from `(mr, nv)` to the monomorphised kernel `k::<MR, NV>`, `NV` in 1..=3.
macro_rules! table {
    ($mr:expr, $nv:expr; $($m:literal)*) => {
        match ($mr, $nv) {
            $(
                ($m, 1) => k::<$m, 1> as KernelFn,
                ($m, 2) => k::<$m, 2> as KernelFn,
                ($m, 3) => k::<$m, 3> as KernelFn,
            )*
            (mr, nv) => panic!("sgemm: no NEON microkernel for mr = {mr}, nv = {nv}"),
        }
    };
}

/// The BLIS loops, packing included, compiled for this ISA.
#[target_feature(enable = "neon")]
unsafe fn block(g: &Gemm, bufs: &mut Buffers, next: Option<&Gemm>) {
    // SAFETY: as for `GemmArch::block`.
    unsafe { super::loops::block::<Arch>(g, bufs, next) }
}

/// Blocking for a core with `l1d` bytes of L1 data cache and `l2` bytes of L2 to itself.
///
/// * `kc`: one A micro-panel and one B micro-panel (`(MR + NR) kc` floats) fill half of L1, so
///   the A panel stays there while B panels stream through the other half: 384 for 64 KiB
///   (Neoverse), 512 (the cap) for Apple's 128 KiB.
/// * The packed B block takes half of L2 and the A block a quarter, as on x86 (within
///   128 KiB..2 MiB and 64 KiB..1 MiB: beyond that, blocks outgrow what one core's share of a
///   big shared L2 delivers at L2 speed).
pub(crate) fn blocking_for(caches: CacheSizes) -> CacheBlocking {
    let default = if cfg!(target_os = "macos") {
        CacheSizes { l1d: Some(128 << 10), l2: Some(3 << 20) }
    } else {
        CacheSizes { l1d: Some(64 << 10), l2: Some(1 << 20) }
    };
    let l1d = caches.l1d.or(default.l1d).unwrap_or(64 << 10);
    let l2 = caches.l2.or(default.l2).unwrap_or(1 << 20);
    let kc = (l1d / 2 / (4 * (MR + NR)) / 32 * 32).clamp(128, 512);
    CacheBlocking {
        kc,
        b_block_bytes: (l2 / 2).clamp(128 << 10, 2 << 20),
        a_block_bytes: (l2 / 4).clamp(64 << 10, 1 << 20),
    }
}

pub(crate) struct Arch;

impl GemmArch for Arch {
    type S = Neon;
    const NR: usize = NR;
    const MR_MAX: usize = MR;
    const A_KMAJOR_ALWAYS: bool = true;
    /// Unused: A is never packed in the rows layout here.
    const KCP: usize = 0;

    fn cache_blocking() -> CacheBlocking {
        static BLOCKING: OnceLock<CacheBlocking> = OnceLock::new();
        *BLOCKING.get_or_init(|| blocking_for(CacheSizes::detect()))
    }

    fn kernel(mr: usize, nv: usize, kmajor: bool) -> KernelFn {
        assert!(kmajor, "sgemm: the NEON kernel reads A k-major");
        table!(mr, nv; 1 2 3 4 5 6 7 8)
    }

    fn dot_kernel(_mr: usize) -> Option<KernelFn> {
        None
    }

    unsafe fn block(g: &Gemm, bufs: &mut Buffers, next: Option<&Gemm>) {
        // SAFETY: the caller guarantees the operands; NEON is always there on aarch64.
        unsafe { block(g, bufs, next) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocking_from_reported_caches() {
        // Neoverse N1/V1: 64 KiB L1D, 1 MiB private L2.
        let n1 = blocking_for(CacheSizes { l1d: Some(64 << 10), l2: Some(1 << 20) });
        assert_eq!(n1, CacheBlocking { kc: 384, b_block_bytes: 512 << 10, a_block_bytes: 256 << 10 });
        // Apple M1 performance core: 128 KiB L1D, a quarter of a 12 MiB cluster L2.
        let m1 = blocking_for(CacheSizes { l1d: Some(128 << 10), l2: Some(3 << 20) });
        assert_eq!(m1, CacheBlocking { kc: 512, b_block_bytes: 1536 << 10, a_block_bytes: 768 << 10 });
        // A small core (32 KiB L1D, 256 KiB L2 share) and a huge report are clamped.
        let small = blocking_for(CacheSizes { l1d: Some(32 << 10), l2: Some(256 << 10) });
        assert_eq!(small, CacheBlocking { kc: 192, b_block_bytes: 128 << 10, a_block_bytes: 64 << 10 });
        let huge = blocking_for(CacheSizes { l1d: Some(1 << 20), l2: Some(64 << 20) });
        assert_eq!(huge, CacheBlocking { kc: 512, b_block_bytes: 2 << 20, a_block_bytes: 1 << 20 });
        // Nothing reported: the platform's defaults, never a zero block.
        let none = blocking_for(CacheSizes { l1d: None, l2: None });
        assert!(none.kc >= 128 && none.b_block_bytes >= 128 << 10 && none.a_block_bytes >= 64 << 10);
    }
}
