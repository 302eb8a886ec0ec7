//! The portable kernel: `wide::f32x8` vectors, 6 x 16 tiles. `wide` picks its instructions at
//! compile time, so this is SSE2 code on a baseline x86-64 build and NEON code on aarch64 (where
//! each `f32x8` is two 128-bit registers: 24 accumulators of NEON's 32), which makes it the
//! aarch64 kernel as well as the fallback everywhere else.

use super::kernel::{dot_kernel, dot_table, kernel, kernel_table, KernelFn, Tile};
use super::{Buffers, Gemm, GemmArch};
use crate::kernels::simd::Portable;

const NR: usize = 16;
const KC: usize = 256;
const KCP: usize = KC + 16;

unsafe fn k<const MR: usize, const NV: usize, const KMAJOR: bool>(t: &Tile) {
    kernel::<Portable, MR, NV, KMAJOR, NR, KCP>(t)
}

unsafe fn block(g: &Gemm, bufs: &mut Buffers, next: Option<&Gemm>) {
    super::block::<Arch>(g, bufs, next)
}

unsafe fn d<const MR: usize>(t: &Tile) {
    dot_kernel::<Portable, MR, KCP>(t)
}

pub(crate) struct Arch;

impl GemmArch for Arch {
    type S = Portable;
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
