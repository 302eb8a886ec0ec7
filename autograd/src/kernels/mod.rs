//! Compute kernels: GEMM and SIMD row kernels.
//!
//! Everything numerically heavy funnels through here, so that faster kernels slot in without
//! touching the ops.

pub mod gemm;
