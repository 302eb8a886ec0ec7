//! AVX-512F: 14 x 32 tiles (two zmm per row of the tile, up to 28 accumulators of 32 registers).
//!
//! Zen 4/5 and recent Intel cores retire two 512-bit FMAs per cycle with a 4-cycle latency, so
//! at least 8 independent accumulators are needed; 28 leave headroom and amortise the two
//! B loads of each `k` step over 28 FMAs (plus one broadcast load per tile row). In isolation,
//! on L1-resident panels, this loop runs at 97-98% of the measured FMA peak of a Zen 5 core
//! (broadcasts folded into the FMAs as `{1to16}` memory operands measured 10% slower).

super::dispatch::gemm_arch! {
    simd: crate::kernels::simd::Avx512,
    feature: "avx512f",
    nr: 32, kc_max: 384, pf_in_kernel: true,
    mr: 1 2 3 4 5 6 7 8 9 10 11 12 13 14
}
