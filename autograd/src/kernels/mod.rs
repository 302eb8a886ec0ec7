//! Compute kernels: GEMM and SIMD row kernels.
//!
//! Everything numerically heavy funnels through here, so that faster kernels slot in without
//! touching the ops. Each kernel family is written once against a small vector abstraction
//! (`simd.rs`) and compiled per instruction set ([`Isa`]), chosen at run time.

pub mod gemm;
pub mod isa;
pub mod rows;
pub(crate) mod simd;

pub use isa::Isa;

use std::any::TypeId;

use crate::dtype::Float;

/// `x` as `&[f32]` when `T` is `f32`: how a generic op hands its f32 tensors to the SIMD row
/// kernels while f64 (gradient checks) keeps the plain generic path.
pub(crate) fn as_f32<T: Float>(x: &[T]) -> Option<&[f32]> {
    // SAFETY: T is f32 (same TypeId), so the slice already is a &[f32].
    (TypeId::of::<T>() == TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts(x.as_ptr().cast(), x.len()) })
}

/// `x` as `&mut [f32]` when `T` is `f32`.
pub(crate) fn as_f32_mut<T: Float>(x: &mut [T]) -> Option<&mut [f32]> {
    // SAFETY: as for `as_f32`.
    (TypeId::of::<T>() == TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr().cast(), x.len()) })
}
