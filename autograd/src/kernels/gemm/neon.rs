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
//! Blocking comes from the cache sizes the OS reports, by the rule every ISA shares
//! (`blocking.rs`, with defaults for Apple M-series and Neoverse cores when nothing is reported).
//!
//! Its speed on hardware is unmeasured here (CI runs it under `qemu-aarch64`, where timings mean
//! nothing); the disassembly of the inner loop is the evidence of its shape.

use core::arch::aarch64::*;

use super::buffers::Buffers;
use super::dispatch::GemmArch;
use super::kernel::{prefetch_c, store_tile, KernelFn, Tile};
use super::Gemm;
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

pub(crate) struct Arch;

impl GemmArch for Arch {
    type S = Neon;
    const NR: usize = NR;
    const MR_MAX: usize = MR;
    const A_KMAJOR_ALWAYS: bool = true;
    const KC_MAX: usize = 512;
    /// Unused: A is never packed in the rows layout here.
    const KCP: usize = 0;

    fn kernel(mr: usize, nv: usize, kmajor: bool, strided: bool) -> KernelFn {
        assert!(kmajor && !strided, "sgemm: the NEON kernel reads A k-major, from packed panels");
        table!(mr, nv; 1 2 3 4 5 6 7 8)
    }

    fn dot_kernel(_mr: usize, _strided: bool) -> Option<KernelFn> {
        None
    }

    unsafe fn block(g: &Gemm, bufs: &mut Buffers, next: Option<&Gemm>) {
        // SAFETY: the caller guarantees the operands; NEON is always there on aarch64.
        unsafe { block(g, bufs, next) }
    }
}
