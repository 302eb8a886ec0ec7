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
