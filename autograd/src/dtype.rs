//! The element types a tensor can hold: `f32` to train, `f64` to check gradients.
//!
//! Every op is written once, generic over [`Float`]; the trait carries the handful of scalar
//! functions the ops need. Where f32 takes a fast kernel and f64 a plain, exact path (for finite
//! differences), the code asks which type it has with [`is`]: this module depends on nothing
//! else in the crate.

use std::any::TypeId;
use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

/// Which element type a tensor holds (for printing and for checkpoint formats).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    /// 32-bit floats: training.
    F32,
    /// 64-bit floats: gradient checks.
    F64,
}

/// Whether `T` and `U` are the same type (how generic code picks a type-specific kernel).
pub fn is<T: 'static, U: 'static>() -> bool {
    TypeId::of::<T>() == TypeId::of::<U>()
}

/// A floating-point element type: `f32` or `f64`.
pub trait Float:
    Copy
    + Default
    + PartialEq
    + PartialOrd
    + Debug
    + Display
    + Send
    + Sync
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Sum
{
    /// The additive identity, 0 (what accumulators and gradients start from).
    const ZERO: Self;
    /// The multiplicative identity, 1 (the seed gradient dL/dL of backward).
    const ONE: Self;
    /// The runtime tag of this type, for printing and checkpoint headers.
    const DTYPE: DType;

    /// Rounds an f64 to this type (exact for f64). Constants and hyper-parameters are written
    /// in f64 and converted once, so both element types see the same value.
    fn from_f64(x: f64) -> Self;
    /// Widens to f64 (exact for both types): where sums and statistics are accumulated.
    fn to_f64(self) -> f64;
    /// A count (a dimension, a batch size) as this type, e.g. the `1/n` of a mean.
    fn from_usize(x: usize) -> Self {
        Self::from_f64(x as f64)
    }
    /// e^x, the exponential (softmax, GELU's tanh form, AdamW's decay).
    fn exp(self) -> Self;
    /// ln x, the natural logarithm (log-softmax, cross-entropy).
    fn ln(self) -> Self;
    /// The square root (LayerNorm's standard deviation, AdamW's denominator).
    fn sqrt(self) -> Self;
    /// The hyperbolic tangent (GELU's tanh approximation).
    fn tanh(self) -> Self;
    /// `self` to the power `p`, x^p.
    fn powf(self, p: Self) -> Self;
    /// The error function, from `libm` (fdlibm's rational approximations, about 1 ulp).
    fn erf(self) -> Self;
    /// |x|, the absolute value.
    fn abs(self) -> Self;
    /// The larger of `self` and `other` (the running maximum of a stable softmax).
    fn max(self, other: Self) -> Self;
    /// The smaller of `self` and `other`.
    fn min(self, other: Self) -> Self;
    /// Whether the value is neither infinite nor NaN (how gradcheck and the trainer detect a
    /// diverged step).
    fn is_finite(self) -> bool;
}

macro_rules! impl_float {
    ($t:ty, $dtype:expr, $erf:path) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const DTYPE: DType = $dtype;

            #[inline(always)]
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            #[inline(always)]
            fn powf(self, p: Self) -> Self {
                <$t>::powf(self, p)
            }
            #[inline(always)]
            fn erf(self) -> Self {
                $erf(self)
            }
            #[inline(always)]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline(always)]
            fn max(self, other: Self) -> Self {
                <$t>::max(self, other)
            }
            #[inline(always)]
            fn min(self, other: Self) -> Self {
                <$t>::min(self, other)
            }
            #[inline(always)]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
        }
    };
}

impl_float!(f32, DType::F32, libm::erff);
impl_float!(f64, DType::F64, libm::erf);
