//! The portable kernel: `wide::f32x8` vectors, 6 x 16 tiles. `wide` picks its instructions at
//! compile time, so this is SSE2 code on a baseline x86-64 build and NEON code on aarch64 (where
//! each `f32x8` is two 128-bit registers: 24 accumulators of NEON's 32), which makes it the
//! aarch64 kernel as well as the fallback everywhere else.

super::dispatch::gemm_arch! {
    simd: crate::kernels::simd::Portable,
    nr: 16, kc: 256, b_block: 384 * 1024, a_block: 192 * 1024,
    mr: 1 2 3 4 5 6
}
