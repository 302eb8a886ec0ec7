//! Vectorised `exp` and the two GELU forms, written once over [`Simd`].
//!
//! Accuracy, measured against f64 over dense sweeps by `tests/all/row_kernels.rs`
//! (`transcendental_accuracy`, which asserts bounds a little above these on every ISA; figures
//! from AVX-512, the other ISAs agree to within an ulp or two):
//!
//! | function | method | max error measured |
//! |---|---|---|
//! | `exp(x)` on [-87, 88] | Cody-Waite reduction `x = n ln2 + r`, degree-6 minimax polynomial (Cephes `expf`), `2^n` built in the exponent field | 1.2e-7 relative |
//! | GELU erf form `x Phi(x)`, `Phi(x) = 0.5 erfc(-x / sqrt 2)` | `erfc(z) = t exp(-z^2) Q(t)`, `t = 1 / (1 + z/2)`, `Q` a degree-10 fit on all of `t` in `[0, 1]` (relative error 1.1e-8); `exp(-x^2/2)` from the FMA split of `x^2` and one `exp`, which the density shares | 4.3e-7 relative on [-10, 10] |
//! | GELU tanh form `x sigmoid(2u)` | `0.5 (1 + tanh u) = 1 / (1 + exp(-2u))` exactly, so only `exp` is approximated | 3e-6 relative on [-6, 10] (the f32 rounding of `2u`), 1.3e-5 below -6 (values < 1e-8) |
//! | both GELU derivatives | same pieces (the erf form's density is the CDF's `exp(-x^2/2)`), `1 - s` formed as `e^(-2u) s` | 2e-7 absolute (relative above 1); the derivative crosses 0 near -0.75 by cancellation |
//!
//! `exp` saturates: below -87.34 it returns 0, above 88.3 it returns `exp(88.3)` (≈ 2.2e38), so
//! `1 / (1 + exp(-2u))` goes cleanly to 0 and 1 at the tails.

use crate::kernels::simd::Simd;

/// `sqrt(2 / pi)`, the tanh-form GELU's inner scale.
pub(crate) const SQRT_2_OVER_PI: f32 = 0.797_884_6;
/// The tanh-form GELU's cubic coefficient.
pub(crate) const GELU_CUBIC: f32 = 0.044_715;
const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// `1 / sqrt(2 pi)`, the normal density's scale.
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// `e^x` lane-wise (see the module documentation for range and accuracy).
#[inline(always)]
pub(crate) unsafe fn exp<S: Simd>(x: S::V) -> S::V {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = S::min(S::max(x, S::splat(-87.336_54)), S::splat(88.3));
    let n = S::round(S::mul(xc, S::splat(LOG2E)));
    let r = S::fnma(n, S::splat(LN2_HI), xc);
    let r = S::fnma(n, S::splat(LN2_LO), r);
    let mut p = S::splat(1.987_569_1e-4);
    p = S::fma(p, r, S::splat(1.398_199_9e-3));
    p = S::fma(p, r, S::splat(8.333_452e-3));
    p = S::fma(p, r, S::splat(4.166_579_6e-2));
    p = S::fma(p, r, S::splat(0.166_666_65));
    p = S::fma(p, r, S::splat(0.5));
    let y = S::fma(S::mul(p, r), r, S::add(r, S::splat(1.0)));
    let y = S::mul(y, S::pow2i(n));
    // Flush to 0 below the smallest normal result.
    S::select_neg(S::add(x, S::splat(87.336_54)), S::zero(), y)
}

/// The standard normal CDF `Phi(x) = 0.5 erfc(-x / sqrt 2)`, for GELU's forward.
#[inline(always)]
pub(crate) unsafe fn normal_cdf<S: Simd>(x: S::V) -> S::V {
    normal_cdf_and_pdf::<S>(x).0
}

/// `(Phi(x), phi(x))`, the normal CDF and density `phi(x) = exp(-x^2 / 2) / sqrt(2 pi)`, from one
/// `exp` that both share:
///
/// ```text
///     erfc(z) = t exp(-z^2) Q(t),     t = 1 / (1 + z / 2),   z = |x| / sqrt 2
///     x^2 = hi + lo                    exactly, lo by an FMA
///     exp(-z^2) = exp(-hi/2) (1 - lo/2)          to within lo^2 / 8 ~ 1e-14 (relative)
///     q = t exp(-z^2) Q(t) / 2         the tail mass: Phi for x < 0, 1 - Phi otherwise
/// ```
///
/// `Q(t) = erfcx(z) / t` is smooth on all of `t` in `[0, 1]` (`z` from infinity to 0, with
/// `Q(0) = 1 / sqrt pi`), so one polynomial covers every `x`: [`erfc_q`], a degree-10 fit with
/// relative error 1.1e-8. In the tails the result's relative error is that of `exp(-z^2)`, so the
/// exponent is not rounded to f32 before the `exp`: only its leading part `-hi/2` goes in, and
/// the FMA's remainder `lo` is applied as a factor. `Phi` is the same bits whichever of
/// `normal_cdf` and this is called (the GELU forward's output and the recompute's agree).
#[inline(always)]
pub(crate) unsafe fn normal_cdf_and_pdf<S: Simd>(x: S::V) -> (S::V, S::V) {
    let z = S::mul(S::abs(x), S::splat(FRAC_1_SQRT_2));
    let t = S::div(S::splat(1.0), S::fma(z, S::splat(0.5), S::splat(1.0)));
    let (hi, half_lo) = square_split::<S>(x);
    let e_hi = exp::<S>(S::mul(hi, S::splat(-0.5)));
    let e = S::fnma(e_hi, half_lo, e_hi);
    let q = S::mul(S::mul(t, e), erfc_q::<S>(t));
    (S::select_neg(x, q, S::sub(S::splat(1.0), q)), S::mul(e, S::splat(FRAC_1_SQRT_2PI)))
}

/// `Q(t) / 2` of [`normal_cdf_and_pdf`] (the CDF's one half folded in), by Horner's rule: a
/// least-squares fit reweighted towards minimax (Lawson) of `erfc(z) exp(z^2) / (2t)`, `z = 2
/// (1 - t) / t`, at 4000 Chebyshev nodes of `[0, 1]`, against 30-digit values (mpmath); max
/// relative error 1.1e-8 in exact arithmetic. The coefficients are small and of mixed sign but do
/// not cancel: Horner in f32 adds about an ulp.
#[inline(always)]
unsafe fn erfc_q<S: Simd>(t: S::V) -> S::V {
    let mut p = S::splat(0.021_176_986);
    for c in [
        -0.115_431_97,
        0.243_095_49,
        -0.223_495_13,
        0.063_548_76,
        -0.028_617_784,
        0.046_500_646,
        0.087_688_37,
        0.123_440_295,
        0.141_046_93,
    ] {
        p = S::fma(p, t, S::splat(c));
    }
    S::fma(p, t, S::splat(0.141_047_4))
}

/// `(hi, lo / 2)` with `x^2 = hi + lo` exactly (`lo` by an FMA).
#[inline(always)]
unsafe fn square_split<S: Simd>(x: S::V) -> (S::V, S::V) {
    let hi = S::mul(x, x);
    (hi, S::mul(S::fma(x, x, S::sub(S::zero(), hi)), S::splat(0.5)))
}

/// `(s, 1 - s, u'(x))` with `s = sigmoid(2u) = 1 / (1 + e^(-2u))`,
/// `u = sqrt(2/pi) (x + 0.044715 x^3)`; `1 - s = e^(-2u) s` is formed directly, not by a
/// subtraction that would cancel as `s -> 1`.
#[inline(always)]
pub(crate) unsafe fn gelu_tanh_gate<S: Simd>(x: S::V) -> (S::V, S::V, S::V) {
    let x2 = S::mul(x, x);
    let inner = S::fma(S::mul(x2, S::splat(GELU_CUBIC)), x, x);
    let u = S::mul(inner, S::splat(SQRT_2_OVER_PI));
    let e = exp::<S>(S::mul(u, S::splat(-2.0)));
    let s = S::div(S::splat(1.0), S::add(S::splat(1.0), e));
    let du = S::mul(S::fma(x2, S::splat(3.0 * GELU_CUBIC), S::splat(1.0)), S::splat(SQRT_2_OVER_PI));
    (s, S::mul(e, s), du)
}

/// `(s, gelu'(x))` of the tanh form, `gelu(x) = x s`: `gelu'(x) = s + x s (1 - s) 2 u'(x)`
/// (see [`gelu_tanh_gate`]).
#[inline(always)]
pub(crate) unsafe fn gelu_tanh_grad<S: Simd>(x: S::V) -> (S::V, S::V) {
    let (s, one_minus_s, du) = gelu_tanh_gate::<S>(x);
    let ds = S::mul(S::mul(s, one_minus_s), S::add(du, du));
    (s, S::fma(x, ds, s))
}
