//! AVX-512F: 14 x 32 tiles (two zmm per row of the tile, up to 28 accumulators of 32 registers).
//!
//! Zen 4/5 and recent Intel cores retire two 512-bit FMAs per cycle with a 4-cycle latency, so
//! at least 8 independent accumulators are needed; 28 leave headroom and amortise the two
//! B loads of each `k` step over 28 FMAs whose A operand is an embedded broadcast.

use super::kernel::{kernel, kernel_table, KernelFn, Tile};
use super::GemmArch;
use crate::kernels::simd::{run_avx512, Avx512};

const NR: usize = 32;
const KC: usize = 384;
const KCP: usize = KC + 16;

#[target_feature(enable = "avx512f")]
unsafe fn k<const MR: usize, const NV: usize, const KMAJOR: bool>(t: &Tile) {
    kernel::<Avx512, MR, NV, KMAJOR, NR, KCP>(t)
}

pub(crate) struct Arch;

impl GemmArch for Arch {
    type S = Avx512;
    const NR: usize = NR;
    const MR_MAX: usize = 14;
    const KC: usize = KC;
    const KCP: usize = KCP;
    const B_BLOCK_BYTES: usize = 512 * 1024;
    const A_BLOCK_BYTES: usize = 256 * 1024;

    fn kernel(mr: usize, nv: usize, kmajor: bool) -> KernelFn {
        kernel_table!(k, mr, nv, kmajor; 1 2 3 4 5 6 7 8 9 10 11 12 13 14)
    }

    unsafe fn run<R>(f: impl FnOnce() -> R) -> R {
        run_avx512(f)
    }
}
