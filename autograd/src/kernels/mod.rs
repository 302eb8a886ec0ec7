//! Compute kernels: GEMM, SIMD row kernels, and the parallel driver they share.
//!
//! Everything numerically heavy funnels through here, so that faster kernels slot in without
//! touching the ops. Each kernel family is written once against a small vector abstraction
//! (`simd.rs`) and compiled per instruction set ([`Isa`]), chosen at run time.
//!
//! | module | what it holds |
//! |---|---|
//! | [`gemm`] | matrix products on strided views ([`mat`]) |
//! | [`rows`] | softmax, layer norm, GELU, `exp`, bias, column sums, AdamW over rows |
//! | [`parallel`] | the one parallel row driver and the deterministic reduction over rows |
//! | [`isa`] | which instruction set runs, detected at run time |
//! | `send_ptr` | the one raw pointer parallel tasks may share |

pub mod caches;
pub mod gemm;
pub mod isa;
pub mod mat;
pub mod parallel;
pub mod rows;
pub(crate) mod send_ptr;
pub(crate) mod simd;

pub use isa::Isa;
pub use mat::{Layout, MatMut, MatRef};
pub use rows::GeluKind;

use crate::dtype::{is, Float};

/// `x` as `&[f32]` when `T` is `f32`: how a generic op hands its f32 tensors to the SIMD row
/// kernels while f64 (gradient checks) keeps the plain generic path.
pub(crate) fn as_f32<T: Float>(x: &[T]) -> Option<&[f32]> {
    // SAFETY: T is f32 (same TypeId), so the slice already is a &[f32].
    is::<T, f32>().then(|| unsafe { std::slice::from_raw_parts(x.as_ptr().cast(), x.len()) })
}

/// `x` as `&mut [f32]` when `T` is `f32`.
pub(crate) fn as_f32_mut<T: Float>(x: &mut [T]) -> Option<&mut [f32]> {
    // SAFETY: as for `as_f32`.
    is::<T, f32>().then(|| unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr().cast(), x.len()) })
}
