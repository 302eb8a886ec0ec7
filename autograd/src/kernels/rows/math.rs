//! Vectorised `exp` and the two GELU forms, written once over [`Simd`].
//!
//! Accuracy, measured against f64 over dense sweeps by `tests/all/row_kernels.rs`
//! (`transcendental_accuracy`, which asserts bounds a little above these on every ISA; figures
//! from AVX-512, the other ISAs agree to within an ulp or two):
//!
//! | function | method | max error measured |
//! |---|---|---|
//! | `exp(x)` on [-87, 88] | Cody-Waite reduction `x = n ln2 + r`, degree-6 minimax polynomial (Cephes `expf`), `2^n` built in the exponent field | 1.2e-7 relative |
//! | GELU erf form `x Phi(x)`, `Phi(x) = 0.5 erfc(-x / sqrt 2)` | Numerical Recipes' `erfcc` Chebyshev fit (fractional error < 1.2e-7), its exponent `-x^2/2 + P` carried exactly (FMA split of `x^2`, TwoSum) into one `exp` | 5e-7 relative on [-10, 10] |
//! | GELU tanh form `x sigmoid(2u)` | `0.5 (1 + tanh u) = 1 / (1 + exp(-2u))` exactly, so only `exp` is approximated | 3e-6 relative on [-6, 10] (the f32 rounding of `2u`), 1.3e-5 below -6 (values < 1e-8) |
//! | both GELU derivatives | same pieces, `1 - s` formed as `e^(-2u) s` | 2e-7 absolute (relative above 1); the derivative crosses 0 near -0.75 by cancellation |
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
///
/// `erfc(z) = t exp(-z^2 + P(t))`, `t = 1 / (1 + z / 2)`, `z = |x| / sqrt 2` ([`erfc_fit`]). In
/// the tails the result's relative error is the absolute error of the exponent, which is
/// dominated by `z^2` (about 50 at `x = -10`), so the exponent is carried exactly as a sum of
/// f32s and only its leading part goes through `exp`:
///
/// ```text
///     x^2 = hi + lo                    exactly, lo by an FMA
///     -hi/2 + P = s + err              exactly, by TwoSum (|err| <= ulp(s) / 2)
///     exp(-z^2 + P) = exp(s) (1 + err - lo/2)     to within (err - lo/2)^2 ~ 1e-11
/// ```
///
/// One `exp` per value; the correction terms are below `4e-6`, so dropping their square costs
/// nothing at f32.
#[inline(always)]
pub(crate) unsafe fn normal_cdf<S: Simd>(x: S::V) -> S::V {
    normal_cdf_split::<S>(x).0
}

/// [`normal_cdf`]'s value and the split `x^2 = hi + lo` it was computed from, `(Phi, hi, lo/2)`.
#[inline(always)]
unsafe fn normal_cdf_split<S: Simd>(x: S::V) -> (S::V, S::V, S::V) {
    let (t, p) = erfc_fit::<S>(x);
    let (hi, half_lo) = square_split::<S>(x);
    let (s, err) = two_sum::<S>(S::mul(hi, S::splat(-0.5)), p);
    let es = exp::<S>(s);
    (tail_to_cdf::<S>(x, t, S::fma(es, S::sub(err, half_lo), es)), hi, half_lo)
}

/// `(Phi(x), phi(x))` with `Phi` bit for bit [`normal_cdf`]'s, for a pass that makes GELU's
/// output and its derivative together (the fused Linear+GELU's recompute, whose output must
/// equal the forward's): the density from a second `exp`, `exp(-hi/2) (1 - lo/2)`.
#[inline(always)]
pub(crate) unsafe fn normal_cdf_and_pdf<S: Simd>(x: S::V) -> (S::V, S::V) {
    let (cdf, hi, half_lo) = normal_cdf_split::<S>(x);
    let e_hi = exp::<S>(S::mul(hi, S::splat(-0.5)));
    (cdf, S::mul(S::fnma(e_hi, half_lo, e_hi), S::splat(FRAC_1_SQRT_2PI)))
}

/// `(Phi(x), phi(x))` together, for GELU's backward, `phi(x) = exp(-x^2 / 2) / sqrt(2 pi)`:
/// both need `exp(-x^2 / 2)`, so it is computed once (as `exp(-hi/2) (1 - lo/2)`) and the CDF's
/// exponent applied as a second factor, `exp(-hi/2) exp(P) (1 - lo/2)`: two `exp`s for the pair,
/// where [`normal_cdf`]'s one-`exp` form and a separate density would take three.
#[inline(always)]
pub(crate) unsafe fn normal_cdf_pdf<S: Simd>(x: S::V) -> (S::V, S::V) {
    let (t, p) = erfc_fit::<S>(x);
    let (hi, half_lo) = square_split::<S>(x);
    let e_hi = exp::<S>(S::mul(hi, S::splat(-0.5)));
    let a = S::mul(e_hi, exp::<S>(p));
    let cdf = tail_to_cdf::<S>(x, t, S::fnma(a, half_lo, a));
    (cdf, S::mul(S::fnma(e_hi, half_lo, e_hi), S::splat(FRAC_1_SQRT_2PI)))
}

/// `(t, P(t))` of Numerical Recipes' `erfcc` fit, `erfc(z) = t exp(-z^2 + P(t))` with
/// `t = 1 / (1 + z / 2)`, `z = |x| / sqrt 2` (fractional error below 1.2e-7 for all `z >= 0`).
#[inline(always)]
unsafe fn erfc_fit<S: Simd>(x: S::V) -> (S::V, S::V) {
    let z = S::mul(S::abs(x), S::splat(FRAC_1_SQRT_2));
    let t = S::div(S::splat(1.0), S::fma(z, S::splat(0.5), S::splat(1.0)));
    let mut p = S::splat(0.170_872_77);
    for c in [
        -0.822_152_23f32,
        1.488_515_9,
        -1.135_204,
        0.278_868_07,
        -0.186_288_06,
        0.096_784_18,
        0.374_091_96,
        1.000_023_7,
    ] {
        p = S::fma(p, t, S::splat(c));
    }
    (t, S::fma(p, t, S::splat(-1.265_512_2)))
}

/// `Phi(x)` from `e = exp(-z^2 + P(t))`: the tail mass `q = 0.5 erfc(|x| / sqrt 2) = t e / 2`
/// is `Phi` for `x < 0` and `1 - Phi` otherwise.
#[inline(always)]
unsafe fn tail_to_cdf<S: Simd>(x: S::V, t: S::V, e: S::V) -> S::V {
    let q = S::mul(S::mul(t, e), S::splat(0.5));
    S::select_neg(x, q, S::sub(S::splat(1.0), q))
}

/// `(hi, lo / 2)` with `x^2 = hi + lo` exactly (`lo` by an FMA).
#[inline(always)]
unsafe fn square_split<S: Simd>(x: S::V) -> (S::V, S::V) {
    let hi = S::mul(x, x);
    (hi, S::mul(S::fma(x, x, S::sub(S::zero(), hi)), S::splat(0.5)))
}

/// `(s, err)` with `s = fl(a + b)` and `a + b = s + err` exactly (Knuth's TwoSum: no
/// assumption on which of `a`, `b` is larger).
#[inline(always)]
unsafe fn two_sum<S: Simd>(a: S::V, b: S::V) -> (S::V, S::V) {
    let s = S::add(a, b);
    let bb = S::sub(s, a);
    let err = S::add(S::sub(a, S::sub(s, bb)), S::sub(b, bb));
    (s, err)
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
