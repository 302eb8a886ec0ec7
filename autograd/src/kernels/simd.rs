//! A small vector abstraction that every kernel is written against once.
//!
//! [`Simd`] is implemented four times: [`Avx512`] (`__m512`, 16 lanes) and [`Avx2`] (`__m256`, 8
//! lanes, FMA) on x86-64, `Neon` (`float32x4_t`, 4 lanes, in `simd/neon.rs`) on aarch64, and
//! [`Portable`] (`wide::f32x8`, whatever the target's baseline offers) everywhere.
//! Kernels are generic `#[inline(always)]` functions over `S: Simd`; an ISA's entry point is a
//! small `#[target_feature]` function that calls the generic body, into which the body, its
//! closures (themselves `#[inline(always)]`) and the intrinsics are all inlined, so the whole
//! loop is compiled for that ISA while the rest of the binary stays baseline x86-64. (A
//! closure handed to a `#[target_feature]` trampoline is *not* enough: LLVM may keep it out of
//! line, compiled without the features, and then every intrinsic becomes a call.)
//!
//! Every method is `unsafe`: the x86 ones require their ISA (the caller checked it with
//! `is_x86_feature_detected!`), and the loads and stores take raw pointers. The x86 impls and
//! their `#[target_feature]` entry points compile only on x86-64, the NEON ones only on aarch64.

#![allow(clippy::missing_safety_doc)]

/// Vector operations on `f32` lanes.
pub(crate) trait Simd: Copy + 'static {
    type V: Copy;
    const LANES: usize;

    unsafe fn zero() -> Self::V;
    unsafe fn splat(x: f32) -> Self::V;
    /// Unaligned load of `LANES` floats.
    unsafe fn load(p: *const f32) -> Self::V;
    /// Load of `LANES` floats from a 64-byte aligned address.
    unsafe fn load_aligned(p: *const f32) -> Self::V {
        Self::load(p)
    }
    unsafe fn store(p: *mut f32, v: Self::V);
    /// Loads the first `n < LANES` floats; the other lanes are 0.
    unsafe fn load_partial(p: *const f32, n: usize) -> Self::V {
        let mut buf = [0.0f32; 16];
        std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), n);
        Self::load(buf.as_ptr())
    }
    /// Stores the first `n < LANES` lanes.
    unsafe fn store_partial(p: *mut f32, n: usize, v: Self::V) {
        let mut buf = [0.0f32; 16];
        Self::store(buf.as_mut_ptr(), v);
        std::ptr::copy_nonoverlapping(buf.as_ptr(), p, n);
    }

    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn div(a: Self::V, b: Self::V) -> Self::V;
    /// `a * b + c` (fused where the ISA has FMA).
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `c - a * b` (fused where the ISA has FMA).
    unsafe fn fnma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn min(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn sqrt(a: Self::V) -> Self::V;
    unsafe fn abs(a: Self::V) -> Self::V;
    /// Round to nearest, ties to even.
    unsafe fn round(a: Self::V) -> Self::V;
    /// `2^n` for integral `n` in `[-126, 127]` (built in the exponent field).
    unsafe fn pow2i(n: Self::V) -> Self::V;
    /// Lane-wise `if x < 0 { a } else { b }`.
    unsafe fn select_neg(x: Self::V, a: Self::V, b: Self::V) -> Self::V;
    unsafe fn hsum(a: Self::V) -> f32;
    unsafe fn hmax(a: Self::V) -> f32;
    /// Transposes a `LANES x LANES` tile: row `r` of the source is `LANES` floats at
    /// `src + r * rs`; row `c` of the result, written at `dst + c * drs`, is column `c` of the
    /// source.
    #[inline(always)]
    unsafe fn transpose(src: *const f32, rs: isize, dst: *mut f32, drs: usize) {
        for r in 0..Self::LANES {
            for c in 0..Self::LANES {
                *dst.add(c * drs + r) = *src.offset(r as isize * rs + c as isize);
            }
        }
    }
    /// A hint to bring the cache line at `p` into L1 (no-op where the ISA has none).
    #[inline(always)]
    unsafe fn prefetch(p: *const f32) {
        let _ = p;
    }
    /// A hint to bring the cache line at `p` into L2 only (no-op where the ISA has none).
    #[inline(always)]
    unsafe fn prefetch_l2(p: *const f32) {
        let _ = p;
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx2, Avx512};

mod unrolled;
pub(crate) use unrolled::Unrolled;

#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(target_arch = "aarch64")]
pub(crate) use neon::Neon;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Simd;
    use core::arch::x86_64::*;

    /// AVX-512F, 16 lanes.
    #[derive(Clone, Copy)]
    pub(crate) struct Avx512;

    impl Simd for Avx512 {
        #[inline(always)]
        unsafe fn transpose(src: *const f32, rs: isize, dst: *mut f32, drs: usize) {
            // Four rounds of 16 shuffles: 32-bit interleave, 64-bit interleave, then two rounds
            // of 128-bit lane shuffles.
            let mut r = [_mm512_setzero_ps(); 16];
            for (i, v) in r.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(src.offset(i as isize * rs));
            }
            let mut t = [_mm512_setzero_ps(); 16];
            for i in 0..8 {
                t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
                t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
            }
            for i in 0..4 {
                let (a, b, c, d) = (t[4 * i], t[4 * i + 1], t[4 * i + 2], t[4 * i + 3]);
                r[4 * i] = _mm512_shuffle_ps::<0x44>(a, c);
                r[4 * i + 1] = _mm512_shuffle_ps::<0xEE>(a, c);
                r[4 * i + 2] = _mm512_shuffle_ps::<0x44>(b, d);
                r[4 * i + 3] = _mm512_shuffle_ps::<0xEE>(b, d);
            }
            for h in 0..2 {
                for i in 0..4 {
                    t[8 * h + i] = _mm512_shuffle_f32x4::<0x88>(r[8 * h + i], r[8 * h + 4 + i]);
                    t[8 * h + 4 + i] = _mm512_shuffle_f32x4::<0xDD>(r[8 * h + i], r[8 * h + 4 + i]);
                }
            }
            for i in 0..8 {
                r[i] = _mm512_shuffle_f32x4::<0x88>(t[i], t[8 + i]);
                r[8 + i] = _mm512_shuffle_f32x4::<0xDD>(t[i], t[8 + i]);
            }
            for (i, v) in r.iter().enumerate() {
                _mm512_storeu_ps(dst.add(i * drs), *v);
            }
        }
        #[inline(always)]
        unsafe fn prefetch(p: *const f32) {
            _mm_prefetch::<_MM_HINT_T0>(p as *const i8)
        }
        #[inline(always)]
        unsafe fn prefetch_l2(p: *const f32) {
            _mm_prefetch::<_MM_HINT_T1>(p as *const i8)
        }
        type V = __m512;
        const LANES: usize = 16;

        #[inline(always)]
        unsafe fn zero() -> __m512 {
            _mm512_setzero_ps()
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m512 {
            _mm512_set1_ps(x)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m512 {
            _mm512_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn load_aligned(p: *const f32) -> __m512 {
            _mm512_load_ps(p)
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m512) {
            _mm512_storeu_ps(p, v)
        }
        #[inline(always)]
        unsafe fn load_partial(p: *const f32, n: usize) -> __m512 {
            _mm512_maskz_loadu_ps(((1u32 << n) - 1) as u16, p)
        }
        #[inline(always)]
        unsafe fn store_partial(p: *mut f32, n: usize, v: __m512) {
            _mm512_mask_storeu_ps(p, ((1u32 << n) - 1) as u16, v)
        }
        #[inline(always)]
        unsafe fn add(a: __m512, b: __m512) -> __m512 {
            _mm512_add_ps(a, b)
        }
        #[inline(always)]
        unsafe fn sub(a: __m512, b: __m512) -> __m512 {
            _mm512_sub_ps(a, b)
        }
        #[inline(always)]
        unsafe fn mul(a: __m512, b: __m512) -> __m512 {
            _mm512_mul_ps(a, b)
        }
        #[inline(always)]
        unsafe fn div(a: __m512, b: __m512) -> __m512 {
            _mm512_div_ps(a, b)
        }
        #[inline(always)]
        unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
            _mm512_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn fnma(a: __m512, b: __m512, c: __m512) -> __m512 {
            _mm512_fnmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn max(a: __m512, b: __m512) -> __m512 {
            _mm512_max_ps(a, b)
        }
        #[inline(always)]
        unsafe fn min(a: __m512, b: __m512) -> __m512 {
            _mm512_min_ps(a, b)
        }
        #[inline(always)]
        unsafe fn sqrt(a: __m512) -> __m512 {
            _mm512_sqrt_ps(a)
        }
        #[inline(always)]
        unsafe fn abs(a: __m512) -> __m512 {
            _mm512_abs_ps(a)
        }
        #[inline(always)]
        unsafe fn round(a: __m512) -> __m512 {
            _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a)
        }
        #[inline(always)]
        unsafe fn pow2i(n: __m512) -> __m512 {
            let e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
            _mm512_castsi512_ps(_mm512_slli_epi32::<23>(e))
        }
        #[inline(always)]
        unsafe fn select_neg(x: __m512, a: __m512, b: __m512) -> __m512 {
            let neg = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_setzero_ps());
            _mm512_mask_blend_ps(neg, b, a)
        }
        #[inline(always)]
        unsafe fn hsum(a: __m512) -> f32 {
            _mm512_reduce_add_ps(a)
        }
        #[inline(always)]
        unsafe fn hmax(a: __m512) -> f32 {
            _mm512_reduce_max_ps(a)
        }
    }

    /// AVX2 with FMA, 8 lanes.
    #[derive(Clone, Copy)]
    pub(crate) struct Avx2;

    #[inline(always)]
    unsafe fn mask8(n: usize) -> __m256i {
        // Lane i is active (sign bit set) when i < n.
        let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), idx)
    }

    impl Simd for Avx2 {
        #[inline(always)]
        unsafe fn transpose(src: *const f32, rs: isize, dst: *mut f32, drs: usize) {
            let mut r = [_mm256_setzero_ps(); 8];
            for (i, v) in r.iter_mut().enumerate() {
                *v = _mm256_loadu_ps(src.offset(i as isize * rs));
            }
            let mut t = [_mm256_setzero_ps(); 8];
            for i in 0..4 {
                t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
                t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
            }
            for i in 0..2 {
                let (a, b, c, d) = (t[4 * i], t[4 * i + 1], t[4 * i + 2], t[4 * i + 3]);
                r[4 * i] = _mm256_shuffle_ps::<0x44>(a, c);
                r[4 * i + 1] = _mm256_shuffle_ps::<0xEE>(a, c);
                r[4 * i + 2] = _mm256_shuffle_ps::<0x44>(b, d);
                r[4 * i + 3] = _mm256_shuffle_ps::<0xEE>(b, d);
            }
            for i in 0..4 {
                t[i] = _mm256_permute2f128_ps::<0x20>(r[i], r[4 + i]);
                t[4 + i] = _mm256_permute2f128_ps::<0x31>(r[i], r[4 + i]);
            }
            for (i, v) in t.iter().enumerate() {
                _mm256_storeu_ps(dst.add(i * drs), *v);
            }
        }
        #[inline(always)]
        unsafe fn prefetch(p: *const f32) {
            _mm_prefetch::<_MM_HINT_T0>(p as *const i8)
        }
        #[inline(always)]
        unsafe fn prefetch_l2(p: *const f32) {
            _mm_prefetch::<_MM_HINT_T1>(p as *const i8)
        }
        type V = __m256;
        const LANES: usize = 8;

        #[inline(always)]
        unsafe fn zero() -> __m256 {
            _mm256_setzero_ps()
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m256 {
            _mm256_set1_ps(x)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m256 {
            _mm256_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn load_aligned(p: *const f32) -> __m256 {
            _mm256_load_ps(p)
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m256) {
            _mm256_storeu_ps(p, v)
        }
        #[inline(always)]
        unsafe fn load_partial(p: *const f32, n: usize) -> __m256 {
            _mm256_maskload_ps(p, mask8(n))
        }
        #[inline(always)]
        unsafe fn store_partial(p: *mut f32, n: usize, v: __m256) {
            _mm256_maskstore_ps(p, mask8(n), v)
        }
        #[inline(always)]
        unsafe fn add(a: __m256, b: __m256) -> __m256 {
            _mm256_add_ps(a, b)
        }
        #[inline(always)]
        unsafe fn sub(a: __m256, b: __m256) -> __m256 {
            _mm256_sub_ps(a, b)
        }
        #[inline(always)]
        unsafe fn mul(a: __m256, b: __m256) -> __m256 {
            _mm256_mul_ps(a, b)
        }
        #[inline(always)]
        unsafe fn div(a: __m256, b: __m256) -> __m256 {
            _mm256_div_ps(a, b)
        }
        #[inline(always)]
        unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
            _mm256_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn fnma(a: __m256, b: __m256, c: __m256) -> __m256 {
            _mm256_fnmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn max(a: __m256, b: __m256) -> __m256 {
            _mm256_max_ps(a, b)
        }
        #[inline(always)]
        unsafe fn min(a: __m256, b: __m256) -> __m256 {
            _mm256_min_ps(a, b)
        }
        #[inline(always)]
        unsafe fn sqrt(a: __m256) -> __m256 {
            _mm256_sqrt_ps(a)
        }
        #[inline(always)]
        unsafe fn abs(a: __m256) -> __m256 {
            _mm256_andnot_ps(_mm256_set1_ps(-0.0), a)
        }
        #[inline(always)]
        unsafe fn round(a: __m256) -> __m256 {
            _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a)
        }
        #[inline(always)]
        unsafe fn pow2i(n: __m256) -> __m256 {
            let e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
            _mm256_castsi256_ps(_mm256_slli_epi32::<23>(e))
        }
        #[inline(always)]
        unsafe fn select_neg(x: __m256, a: __m256, b: __m256) -> __m256 {
            let neg = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_setzero_ps());
            _mm256_blendv_ps(b, a, neg)
        }
        #[inline(always)]
        unsafe fn hsum(a: __m256) -> f32 {
            let s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        }
        #[inline(always)]
        unsafe fn hmax(a: __m256) -> f32 {
            let s = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
            let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_max_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        }
    }
}

/// `wide`'s 8-lane vectors: compiled for the target's baseline (SSE2 on x86-64, NEON on aarch64).
#[derive(Clone, Copy)]
pub(crate) struct Portable;

impl Simd for Portable {
    type V = wide::f32x8;
    const LANES: usize = 8;

    #[inline(always)]
    unsafe fn zero() -> wide::f32x8 {
        wide::f32x8::ZERO
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> wide::f32x8 {
        wide::f32x8::splat(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> wide::f32x8 {
        wide::f32x8::from(std::ptr::read_unaligned(p as *const [f32; 8]))
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: wide::f32x8) {
        std::ptr::write_unaligned(p as *mut [f32; 8], v.to_array())
    }
    #[inline(always)]
    unsafe fn add(a: wide::f32x8, b: wide::f32x8) -> wide::f32x8 {
        a + b
    }
    #[inline(always)]
    unsafe fn sub(a: wide::f32x8, b: wide::f32x8) -> wide::f32x8 {
        a - b
    }
    #[inline(always)]
    unsafe fn mul(a: wide::f32x8, b: wide::f32x8) -> wide::f32x8 {
        a * b
    }
    #[inline(always)]
    unsafe fn div(a: wide::f32x8, b: wide::f32x8) -> wide::f32x8 {
        a / b
    }
    #[inline(always)]
    unsafe fn fma(a: wide::f32x8, b: wide::f32x8, c: wide::f32x8) -> wide::f32x8 {
        a.mul_add(b, c)
    }
    #[inline(always)]
    unsafe fn fnma(a: wide::f32x8, b: wide::f32x8, c: wide::f32x8) -> wide::f32x8 {
        a.mul_neg_add(b, c)
    }
    #[inline(always)]
    unsafe fn max(a: wide::f32x8, b: wide::f32x8) -> wide::f32x8 {
        a.fast_max(b)
    }
    #[inline(always)]
    unsafe fn min(a: wide::f32x8, b: wide::f32x8) -> wide::f32x8 {
        a.fast_min(b)
    }
    #[inline(always)]
    unsafe fn sqrt(a: wide::f32x8) -> wide::f32x8 {
        a.sqrt()
    }
    #[inline(always)]
    unsafe fn abs(a: wide::f32x8) -> wide::f32x8 {
        a.abs()
    }
    #[inline(always)]
    unsafe fn round(a: wide::f32x8) -> wide::f32x8 {
        a.round()
    }
    #[inline(always)]
    unsafe fn pow2i(n: wide::f32x8) -> wide::f32x8 {
        let e = (n.round_int() + wide::i32x8::splat(127)) << 23i32;
        // SAFETY: i32x8 and f32x8 are both 32-byte plain-old-data vectors.
        std::mem::transmute::<wide::i32x8, wide::f32x8>(e)
    }
    #[inline(always)]
    unsafe fn select_neg(x: wide::f32x8, a: wide::f32x8, b: wide::f32x8) -> wide::f32x8 {
        use wide::CmpLt;
        x.cmp_lt(wide::f32x8::ZERO).blend(a, b)
    }
    #[inline(always)]
    unsafe fn hsum(a: wide::f32x8) -> f32 {
        a.reduce_add()
    }
    #[inline(always)]
    unsafe fn hmax(a: wide::f32x8) -> f32 {
        let v = a.to_array();
        v.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x))
    }
}
