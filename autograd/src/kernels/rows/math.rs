//! Vectorised `exp` and the two GELU forms, written once over [`Simd`].
//!
//! Accuracy (measured against f64 over dense sweeps in `tests/row_kernels.rs`, which asserts
//! these bounds on every ISA):
//!
//! | function | method | max error |
//! |---|---|---|
//! | `exp(x)`, `x` in [-87.3, 88.3] | Cody-Waite reduction `x = n ln2 + r`, degree-6 minimax polynomial (Cephes `expf`), `2^n` built in the exponent field | 2 ulp-ish: relative 3e-7 |
//! | `Phi(x) = 0.5 erfc(-x / sqrt 2)` | Numerical Recipes' `erfcc` Chebyshev fit (fractional error < 1.2e-7), with `z^2` split exactly by an FMA | relative 1e-6 on `x Phi(x)` |
//! | `sigmoid(2u)` for the tanh form | `0.5 (1 + tanh u) = 1 / (1 + exp(-2u))` exactly, so only `exp` is approximated | relative 1e-6 on the GELU |
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

/// The standard normal CDF `Phi(x) = 0.5 erfc(-x / sqrt 2)`.
#[inline(always)]
pub(crate) unsafe fn normal_cdf<S: Simd>(x: S::V) -> S::V {
    let z = S::mul(S::abs(x), S::splat(FRAC_1_SQRT_2));
    let t = S::div(S::splat(1.0), S::fma(z, S::splat(0.5), S::splat(1.0)));
    let mut p = S::splat(0.170_872_77);
    for c in [-0.822_152_23f32, 1.488_515_9, -1.135_203_98, 0.278_868_07, -0.186_288_06, 0.096_784_18, 0.374_091_96, 1.000_023_7]
    {
        p = S::fma(p, t, S::splat(c));
    }
    p = S::fma(p, t, S::splat(-1.265_512_2));
    // -z^2 = -(hi + lo) exactly.
    let hi = S::mul(z, z);
    let lo = S::fma(z, z, S::sub(S::zero(), hi));
    let arg = S::sub(S::sub(p, hi), lo);
    // q = 0.5 erfc(|x| / sqrt 2): the tail mass; Phi is q for x < 0 and 1 - q otherwise.
    let q = S::mul(S::mul(t, exp::<S>(arg)), S::splat(0.5));
    S::select_neg(x, q, S::sub(S::splat(1.0), q))
}

/// The standard normal density `phi(x) = exp(-x^2 / 2) / sqrt(2 pi)`.
#[inline(always)]
pub(crate) unsafe fn normal_pdf<S: Simd>(x: S::V) -> S::V {
    let hi = S::mul(x, x);
    let lo = S::fma(x, x, S::sub(S::zero(), hi));
    let arg = S::mul(S::add(hi, lo), S::splat(-0.5));
    S::mul(exp::<S>(arg), S::splat(FRAC_1_SQRT_2PI))
}

/// `sigmoid(2u)` with `u = sqrt(2/pi) (x + 0.044715 x^3)`, and `u'(x)`.
#[inline(always)]
pub(crate) unsafe fn gelu_tanh_gate<S: Simd>(x: S::V) -> (S::V, S::V) {
    let x2 = S::mul(x, x);
    let inner = S::fma(S::mul(x2, S::splat(GELU_CUBIC)), x, x);
    let u = S::mul(inner, S::splat(SQRT_2_OVER_PI));
    let e = exp::<S>(S::mul(u, S::splat(-2.0)));
    let s = S::div(S::splat(1.0), S::add(S::splat(1.0), e));
    let du = S::mul(S::fma(x2, S::splat(3.0 * GELU_CUBIC), S::splat(1.0)), S::splat(SQRT_2_OVER_PI));
    (s, du)
}
