//! The part of a CUDA driver the rest of `cuda/` uses, as one small trait.
//!
//! Two implementations stand behind it: [`super::nvidia`], the real GPU through cudarc, and
//! [`super::emu`], a CPU emulator of the same calls that compiles the very same kernel sources
//! with a host C++ compiler and runs each CUDA thread as a fiber. Everything above the trait
//! (the allocator, buffers, launch configurations, the cuBLAS argument mapping, the primitives)
//! is therefore exercised by the tests on a machine without a GPU; only the trait's real
//! implementation needs one.

use std::fmt;

/// A device address (`CUdeviceptr`).
pub type DevicePtr = u64;

/// A loaded kernel: `CUfunction` on a GPU, a launcher in the emulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FnHandle(pub u64);

/// Rank of the shape and stride arrays passed to kernels by value.
pub const MAX_RANK: usize = 8;

/// One kernel argument, passed by value as `cuLaunchKernel` wants it.
#[derive(Clone, Copy, Debug)]
pub enum Arg {
    /// A device pointer (`const T*` / `T*`); 0 stands for a null pointer.
    Ptr(DevicePtr),
    /// A `long long`.
    I64(i64),
    /// An `int`.
    I32(i32),
    /// An `unsigned long long` (e.g. a dropout seed).
    U64(u64),
    /// A `float`.
    F32(f32),
    /// A `double`.
    F64(f64),
    /// A `Dims` struct (`long long d[8]`): a shape or strides, padded with leading entries.
    Dims([i64; MAX_RANK]),
}

impl Arg {
    /// The argument's bytes, where `cuLaunchKernel` (and the emulator) read them.
    pub fn as_ptr(&self) -> *mut std::ffi::c_void {
        let p: *const std::ffi::c_void = match self {
            Arg::Ptr(v) | Arg::U64(v) => (v as *const u64).cast(),
            Arg::I64(v) => (v as *const i64).cast(),
            Arg::I32(v) => (v as *const i32).cast(),
            Arg::F32(v) => (v as *const f32).cast(),
            Arg::F64(v) => (v as *const f64).cast(),
            Arg::Dims(v) => v.as_ptr().cast(),
        };
        p.cast_mut()
    }
}

/// Grid and block sizes of a launch, and its dynamic shared memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchConfig {
    /// Blocks per grid, `(x, y, z)`.
    pub grid: (u32, u32, u32),
    /// Threads per block, `(x, y, z)`.
    pub block: (u32, u32, u32),
    /// Dynamic shared memory per block, in bytes.
    pub shared_bytes: u32,
}

impl LaunchConfig {
    /// A 1-D launch of `blocks` blocks of `threads` threads.
    pub fn linear(blocks: u32, threads: u32) -> Self {
        LaunchConfig { grid: (blocks, 1, 1), block: (threads, 1, 1), shared_bytes: 0 }
    }
}

/// Element type of a GEMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmType {
    /// `cublasSgemmStridedBatched`.
    F32,
    /// `cublasDgemmStridedBatched`.
    F64,
}

/// One `cublas<t>gemmStridedBatched` call, in cuBLAS's own column-major terms:
///
/// ```text
///     C_i = alpha op(A_i) op(B_i) + beta C_i      i < batch,   X_i = X + i * stride_x
///     op(A) is m x k, op(B) is k x n, C is m x n; element (r, c) of a column-major matrix with
///     leading dimension ld sits at r + c * ld; op(X) = X^T when trans_x.
/// ```
///
/// [`super::blas`] maps our row-major strided views onto this; the emulator implements exactly
/// this definition, so the mapping is tested without a GPU.
#[derive(Clone, Copy, Debug)]
pub struct GemmCall {
    /// Element type (which cuBLAS function).
    pub ty: GemmType,
    /// `op(A) = A^T`.
    pub trans_a: bool,
    /// `op(B) = B^T`.
    pub trans_b: bool,
    /// Rows of `op(A)` and C.
    pub m: i32,
    /// Columns of `op(B)` and C.
    pub n: i32,
    /// Columns of `op(A)`, rows of `op(B)`.
    pub k: i32,
    /// Scale of the product.
    pub alpha: f64,
    /// Device address of `A_0`.
    pub a: DevicePtr,
    /// Leading dimension of A.
    pub lda: i32,
    /// Elements from `A_i` to `A_{i+1}`.
    pub stride_a: i64,
    /// Device address of `B_0`.
    pub b: DevicePtr,
    /// Leading dimension of B.
    pub ldb: i32,
    /// Elements from `B_i` to `B_{i+1}`.
    pub stride_b: i64,
    /// Scale of C's old value.
    pub beta: f64,
    /// Device address of `C_0`.
    pub c: DevicePtr,
    /// Leading dimension of C.
    pub ldc: i32,
    /// Elements from `C_i` to `C_{i+1}`.
    pub stride_c: i64,
    /// Number of products.
    pub batch: i32,
}

/// What went wrong in the driver, cuBLAS or a kernel compiler, in words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CudaError(pub String);

impl fmt::Display for CudaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CudaError {}

/// `Result` with a [`CudaError`].
pub type Result<T> = std::result::Result<T, CudaError>;

/// The driver calls the CUDA code is built on. Every call is ordered on the device's one
/// stream: a kernel sees the effects of every earlier call, and [`Driver::download`] waits
/// for them. See the module documentation.
pub trait Driver: Send + Sync {
    /// A line for the user: the device's name, compute capability and memory.
    fn describe(&self) -> String;

    /// Compute capability `(major, minor)`; kernels are compiled for it.
    fn compute_capability(&self) -> (u32, u32);

    /// `(free, total)` device memory in bytes.
    fn memory_info(&self) -> Result<(usize, usize)>;

    /// Allocates `bytes` of device memory (a real driver allocation: the caching allocator
    /// calls this only when it has no free block of the size).
    fn malloc(&self, bytes: usize) -> Result<DevicePtr>;

    /// Returns memory from [`Driver::malloc`] to the driver.
    ///
    /// # Safety
    /// `ptr` came from `malloc` on this driver, is freed once, and no queued work uses it.
    unsafe fn free(&self, ptr: DevicePtr);

    /// Copies `bytes` from host memory to the device. The host memory may be reused as soon as
    /// this returns.
    ///
    /// # Safety
    /// `src` is valid for `bytes` reads and `dst` for `bytes` writes on the device.
    unsafe fn upload(&self, dst: DevicePtr, src: *const u8, bytes: usize) -> Result<()>;

    /// Copies `bytes` from the device to host memory, after all queued work: the one call that
    /// waits for the device.
    ///
    /// # Safety
    /// `dst` is valid for `bytes` writes and `src` for `bytes` reads on the device.
    unsafe fn download(&self, dst: *mut u8, src: DevicePtr, bytes: usize) -> Result<()>;

    /// Device-to-device copy of `bytes` (the ranges must not overlap).
    ///
    /// # Safety
    /// Both ranges are valid device memory.
    unsafe fn copy(&self, dst: DevicePtr, src: DevicePtr, bytes: usize) -> Result<()>;

    /// Sets `bytes` of device memory to zero.
    ///
    /// # Safety
    /// The range is valid device memory.
    unsafe fn zero(&self, dst: DevicePtr, bytes: usize) -> Result<()>;

    /// Compiles `source` (one kernel family, prelude included) for this device and loads it;
    /// returns the handles of `kernels`, in order.
    fn load(&self, family: &str, source: &str, kernels: &[&str]) -> Result<Vec<FnHandle>>;

    /// Queues a kernel launch.
    ///
    /// # Safety
    /// `args` match the kernel's parameters in number and type, every pointer addresses device
    /// memory of the extent the kernel reads or writes under `cfg`.
    unsafe fn launch(&self, f: FnHandle, cfg: LaunchConfig, args: &[Arg]) -> Result<()>;

    /// Queues a cuBLAS strided-batched GEMM; `tf32` lets f32 products use TF32 tensor cores.
    ///
    /// # Safety
    /// The matrices of `call` lie in valid device memory; C does not overlap A or B.
    unsafe fn gemm(&self, call: &GemmCall, tf32: bool) -> Result<()>;

    /// Waits for all queued work.
    fn synchronize(&self) -> Result<()>;

    /// The CUDA stream the device's work is queued on, for a library that queues its own work
    /// in order with it (NCCL, [`super::nccl`]); `None` on the emulator, which has no stream.
    fn cuda_stream(&self) -> Option<std::sync::Arc<cudarc::driver::CudaStream>> {
        None
    }
}
