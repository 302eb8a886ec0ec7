//! The portable kernel: `wide::f32x8` vectors, 6 x 16 tiles. `wide` picks its instructions at
//! compile time, so this is SSE2 code on a baseline x86-64 build, NEON code on aarch64 (where
//! `neon.rs` is the kernel that runs; this one stays reachable with `AUTOGRAD_ISA=portable`) and
//! scalar code on targets `wide` has no vectors for (riscv64): the fallback of every target
//! without a kernel of its own.

super::dispatch::gemm_arch! {
    simd: crate::kernels::simd::Portable,
    nr: 16, kc_max: 256, pf_in_kernel: false,
    mr: 1 2 3 4 5 6
}
