//! [`Simd`] on aarch64 Advanced SIMD (NEON): `float32x4_t`, 4 lanes, 32 vector registers.
//!
//! NEON is part of the aarch64 baseline (every Armv8-A core, Apple's included), so these
//! intrinsics need no run-time check; [`Isa::Neon`](crate::kernels::Isa) still asks
//! `is_aarch64_feature_detected!` for symmetry with x86. Every operation is one instruction
//! except the 4 x 4 transpose (eight `trn1`/`trn2`) and the partial loads and stores (the trait's
//! buffered defaults: NEON has no masked memory operations).

use super::Simd;
use core::arch::aarch64::*;

/// NEON, 4 lanes.
#[derive(Clone, Copy)]
pub(crate) struct Neon;

impl Simd for Neon {
    type V = float32x4_t;
    const LANES: usize = 4;

    #[inline(always)]
    unsafe fn zero() -> float32x4_t {
        vdupq_n_f32(0.0)
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> float32x4_t {
        vdupq_n_f32(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> float32x4_t {
        vld1q_f32(p)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: float32x4_t) {
        vst1q_f32(p, v)
    }
    #[inline(always)]
    unsafe fn add(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        vaddq_f32(a, b)
    }
    #[inline(always)]
    unsafe fn sub(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        vsubq_f32(a, b)
    }
    #[inline(always)]
    unsafe fn mul(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        vmulq_f32(a, b)
    }
    #[inline(always)]
    unsafe fn div(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        vdivq_f32(a, b)
    }
    #[inline(always)]
    unsafe fn fma(a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
        vfmaq_f32(c, a, b)
    }
    #[inline(always)]
    unsafe fn fnma(a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
        vfmsq_f32(c, a, b)
    }
    #[inline(always)]
    unsafe fn max(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        vmaxq_f32(a, b)
    }
    #[inline(always)]
    unsafe fn min(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        vminq_f32(a, b)
    }
    #[inline(always)]
    unsafe fn sqrt(a: float32x4_t) -> float32x4_t {
        vsqrtq_f32(a)
    }
    #[inline(always)]
    unsafe fn abs(a: float32x4_t) -> float32x4_t {
        vabsq_f32(a)
    }
    #[inline(always)]
    unsafe fn round(a: float32x4_t) -> float32x4_t {
        vrndnq_f32(a)
    }
    #[inline(always)]
    unsafe fn pow2i(n: float32x4_t) -> float32x4_t {
        let e = vaddq_s32(vcvtnq_s32_f32(n), vdupq_n_s32(127));
        vreinterpretq_f32_s32(vshlq_n_s32::<23>(e))
    }
    #[inline(always)]
    unsafe fn select_neg(x: float32x4_t, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        vbslq_f32(vcltzq_f32(x), a, b)
    }
    #[inline(always)]
    unsafe fn hsum(a: float32x4_t) -> f32 {
        vaddvq_f32(a)
    }
    #[inline(always)]
    unsafe fn hmax(a: float32x4_t) -> f32 {
        vmaxvq_f32(a)
    }
    #[inline(always)]
    unsafe fn transpose(src: *const f32, rs: isize, dst: *mut f32, drs: usize) {
        // 32-bit then 64-bit interleaves: trn1/trn2 on lanes, then on lane pairs.
        let r = [0, 1, 2, 3].map(|i| vld1q_f32(src.offset(i * rs)));
        let t0 = vreinterpretq_f64_f32(vtrn1q_f32(r[0], r[1]));
        let t1 = vreinterpretq_f64_f32(vtrn2q_f32(r[0], r[1]));
        let t2 = vreinterpretq_f64_f32(vtrn1q_f32(r[2], r[3]));
        let t3 = vreinterpretq_f64_f32(vtrn2q_f32(r[2], r[3]));
        vst1q_f32(dst, vreinterpretq_f32_f64(vtrn1q_f64(t0, t2)));
        vst1q_f32(dst.add(drs), vreinterpretq_f32_f64(vtrn1q_f64(t1, t3)));
        vst1q_f32(dst.add(2 * drs), vreinterpretq_f32_f64(vtrn2q_f64(t0, t2)));
        vst1q_f32(dst.add(3 * drs), vreinterpretq_f32_f64(vtrn2q_f64(t1, t3)));
    }
    #[inline(always)]
    unsafe fn prefetch(p: *const f32) {
        // SAFETY: `prfm` is a hint: it never faults, whatever the address, and changes no
        // architectural state (`_prefetch` in `core::arch::aarch64` is not stable yet).
        core::arch::asm!("prfm pldl1keep, [{0}]", in(reg) p, options(nostack, preserves_flags, readonly));
    }
}
