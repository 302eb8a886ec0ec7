//! AVX2 + FMA: 6 x 16 tiles (two ymm per row of the tile: 12 accumulators, 2 B vectors and a
//! broadcast in the 16 ymm registers), the classic Haswell-to-Zen shape.

use super::kernel::{dot_kernel, dot_table, kernel, kernel_table, KernelFn, Tile};
use super::{Buffers, Gemm, GemmArch};
use crate::kernels::simd::Avx2;

const NR: usize = 16;
const KC: usize = 256;
const KCP: usize = KC + 16;

#[target_feature(enable = "avx2,fma")]
unsafe fn k<const MR: usize, const NV: usize, const KMAJOR: bool>(t: &Tile) {
    kernel::<Avx2, MR, NV, KMAJOR, NR, KCP>(t)
}

/// The BLIS loops, packing included, compiled for this ISA.
#[target_feature(enable = "avx2,fma")]
unsafe fn block(g: &Gemm, bufs: &mut Buffers, next: Option<&Gemm>) {
    super::block::<Arch>(g, bufs, next)
}

#[target_feature(enable = "avx2,fma")]
unsafe fn d<const MR: usize>(t: &Tile) {
    dot_kernel::<Avx2, MR, KCP>(t)
}

pub(crate) struct Arch;

impl GemmArch for Arch {
    type S = Avx2;
    const NR: usize = NR;
    const MR_MAX: usize = 6;
    const KC: usize = KC;
    const KCP: usize = KCP;
    const B_BLOCK_BYTES: usize = 384 * 1024;
    const A_BLOCK_BYTES: usize = 192 * 1024;

    fn kernel(mr: usize, nv: usize, kmajor: bool) -> KernelFn {
        kernel_table!(k, mr, nv, kmajor; 1 2 3 4 5 6)
    }

    fn dot_kernel(mr: usize) -> KernelFn {
        dot_table!(d, mr; 1 2 3 4 5 6)
    }

    unsafe fn block(g: &Gemm, bufs: &mut Buffers, next: Option<&Gemm>) {
        block(g, bufs, next)
    }
}
