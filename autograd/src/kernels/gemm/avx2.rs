//! AVX2 + FMA: 6 x 16 tiles (two ymm per row of the tile: 12 accumulators, 2 B vectors and a
//! broadcast in the 16 ymm registers), the classic Haswell-to-Zen shape.

super::dispatch::gemm_arch! {
    simd: crate::kernels::simd::Avx2,
    feature: "avx2,fma",
    nr: 16, kc_max: 256, pf_in_kernel: false,
    mr: 1 2 3 4 5 6
}
