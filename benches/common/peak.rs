//! The FMA peak loops the benchmarks measure a core's peak with: 12 independent FMA chains
//! (enough to cover the FMA latency on every current core), one vector per chain, for each ISA
//! with a microkernel of ours. Shared by `benches/gemm.rs` and `benches/train_bench.rs`, so a
//! percentage of peak means the same in both.

use autograd::kernels::Isa;

#[cfg(target_arch = "x86_64")]
mod loops {
    use core::arch::x86_64::*;
    pub const CHAINS: usize = 12;

    /// `iters` rounds of 12 independent 16-lane FMAs.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn avx512(iters: usize, x: f32) -> f32 {
        let mut acc = [_mm512_set1_ps(x); CHAINS];
        let (m, a) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
        for _ in 0..iters {
            for v in acc.iter_mut() {
                *v = _mm512_fmadd_ps(*v, m, a);
            }
        }
        let mut s = _mm512_setzero_ps();
        for v in acc {
            s = _mm512_add_ps(s, v);
        }
        _mm512_reduce_add_ps(s)
    }

    /// `iters` rounds of 12 independent 8-lane FMAs.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn avx2(iters: usize, x: f32) -> f32 {
        let mut acc = [_mm256_set1_ps(x); CHAINS];
        let (m, a) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
        for _ in 0..iters {
            for v in acc.iter_mut() {
                *v = _mm256_fmadd_ps(*v, m, a);
            }
        }
        let mut s = _mm256_setzero_ps();
        for v in acc {
            s = _mm256_add_ps(s, v);
        }
        let mut out = [0.0f32; 8];
        _mm256_storeu_ps(out.as_mut_ptr(), s);
        out.iter().sum()
    }
}

#[cfg(target_arch = "aarch64")]
mod loops {
    use core::arch::aarch64::*;
    pub const CHAINS: usize = 12;

    /// `iters` rounds of 12 independent 4-lane FMAs.
    pub unsafe fn neon(iters: usize, x: f32) -> f32 {
        let mut acc = [vdupq_n_f32(x); CHAINS];
        let (m, a) = (vdupq_n_f32(0.999_999), vdupq_n_f32(1e-7));
        for _ in 0..iters {
            for v in acc.iter_mut() {
                *v = vfmaq_f32(a, *v, m);
            }
        }
        let mut s = vdupq_n_f32(0.0);
        for v in acc {
            s = vaddq_f32(s, v);
        }
        vaddvq_f32(s)
    }
}

/// `iters` rounds of an FMA loop, returning a value that depends on every round.
pub type PeakLoop = unsafe fn(usize, f32) -> f32;

/// The FMA loop for `isa` and the flops of one of its rounds, where this program has one.
pub fn peak_loop(isa: Isa) -> Option<(PeakLoop, usize)> {
    if !isa.available() {
        return None;
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => Some((loops::avx512, 2 * 16 * loops::CHAINS)),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => Some((loops::avx2, 2 * 8 * loops::CHAINS)),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => Some((loops::neon, 2 * 4 * loops::CHAINS)),
        _ => None,
    }
}
