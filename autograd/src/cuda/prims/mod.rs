//! The CUDA implementations of the device primitives: each a kernel launch (or a few, or a
//! cuBLAS call) on [`DeviceBuffer`]s with the shapes spelled out. The ops' math lives in
//! `crate::ops`; these compute exactly the formulas documented there, and the tests compare
//! every one with the CPU.
//!
//! Launch geometry: elementwise kernels are grid-stride loops over 256-thread blocks (at most
//! [`MAX_BLOCKS`] blocks: enough to fill any GPU, few enough to amortise the index setup); row
//! kernels give each row one warp, 8 rows per block.

pub mod attention;
pub mod elementwise;
pub mod linear;
pub mod optim;
pub mod pool;
pub mod reduce;
pub mod resnet;
pub mod rows;

use super::driver::{Arg, LaunchConfig, MAX_RANK};
use super::gpu::DeviceBuffer;
use crate::dtype::{DType, Float};

/// Threads of a 1-D block.
pub(crate) const THREADS: u32 = 256;
/// Upper bound on the blocks of a grid-stride launch.
pub(crate) const MAX_BLOCKS: usize = 8192;
/// Rows per block of the warp-per-row kernels (`ROWS_PER_BLOCK` in softmax.cu).
pub(crate) const ROWS_PER_BLOCK: usize = 8;

/// The kernel-name suffix of element type `T`.
pub(crate) fn suffix<T: Float>() -> &'static str {
    match T::DTYPE {
        DType::F32 => "f32",
        DType::F64 => "f64",
    }
}

/// `base` instantiated for `T`: `softmax_rows` -> `softmax_rows_f32`.
pub(crate) fn name<T: Float>(base: &str) -> String {
    format!("{base}_{}", suffix::<T>())
}

/// A scalar of type `T` as a kernel argument.
pub(crate) fn scalar<T: Float>(v: f64) -> Arg {
    match T::DTYPE {
        DType::F32 => Arg::F32(v as f32),
        DType::F64 => Arg::F64(v),
    }
}

pub(crate) fn ptr<T: Copy>(b: &DeviceBuffer<T>) -> Arg {
    Arg::Ptr(b.ptr())
}

/// An optional buffer: its pointer, or null.
pub(crate) fn opt_ptr<T: Copy>(b: Option<&DeviceBuffer<T>>) -> Arg {
    Arg::Ptr(b.map_or(0, |b| b.ptr()))
}

pub(crate) fn int(v: usize) -> Arg {
    Arg::I64(v as i64)
}

/// A grid-stride launch over `n` elements.
pub(crate) fn elementwise_grid(n: usize) -> LaunchConfig {
    LaunchConfig::linear(n.div_ceil(THREADS as usize).clamp(1, MAX_BLOCKS) as u32, THREADS)
}

/// A warp-per-row launch over `rows` rows.
pub(crate) fn rows_grid(rows: usize) -> LaunchConfig {
    LaunchConfig::linear(rows.div_ceil(ROWS_PER_BLOCK).clamp(1, 65535) as u32, THREADS)
}

/// A shape (padded at the front with 1s) and strides (padded with 0s) as `Dims` arguments,
/// and the rank. Panics above [`MAX_RANK`] axes.
pub(crate) fn dims(shape: &[usize], strides: &[&[isize]]) -> (Arg, Vec<Arg>, i32) {
    let r = shape.len();
    assert!(r <= MAX_RANK, "CUDA kernels take tensors of at most {MAX_RANK} axes, got shape {shape:?}");
    let mut s = [1i64; MAX_RANK];
    for (k, &d) in shape.iter().enumerate() {
        s[MAX_RANK - r + k] = d as i64;
    }
    let st = strides
        .iter()
        .map(|st| {
            assert_eq!(st.len(), r, "strides {st:?} for shape {shape:?}");
            let mut a = [0i64; MAX_RANK];
            for (k, &v) in st.iter().enumerate() {
                a[MAX_RANK - r + k] = v as i64;
            }
            Arg::Dims(a)
        })
        .collect();
    (Arg::Dims(s), st, r as i32)
}

/// Row-major strides of a shape, as `isize`.
pub(crate) fn contiguous_strides(shape: &[usize]) -> Vec<isize> {
    crate::tensor::strides(shape).into_iter().map(|s| s as isize).collect()
}
