//! CUDA devices, behind the `cuda` feature.
//!
//! ```text
//!     prims/        the device primitives on DeviceBuffers: elementwise, reductions, row
//!                   kernels, the fused Linear and attention ops, optimizers
//!       |  kernel launches by name            |  row-major strided GEMMs
//!     kernels/*.cu (NVRTC-compiled)         blas.rs (-> cuBLAS column-major calls)
//!       |                                     |
//!     gpu.rs: Gpu = a Driver + the caching allocator (alloc.rs) + the loaded kernels
//!       |
//!     driver.rs: the Driver trait  <-  nvidia.rs (cudarc, libraries loaded at run time)
//!                                  <-  emu/      (the same calls on the CPU, for tests)
//! ```
//!
//! Everything is loaded at run time: a `cuda` build compiles and starts on a machine without
//! CUDA, where [`device`] returns an error saying what is missing (no driver library, no
//! device, no cuBLAS or NVRTC) instead of panicking. Kernels are compiled by NVRTC for the
//! device's compute capability when the device is opened.
//!
//! All work on a device is queued on one stream, in program order; the host waits only when it
//! reads a value back ([`DeviceBuffer::to_vec`]).

pub mod alloc;
pub mod blas;
pub mod driver;
pub mod emu;
pub mod gpu;
pub mod kernels;
pub mod nccl;
mod nvidia;
pub mod nvrtc;
pub mod ops;
pub mod prims;

pub use alloc::MemoryStats;
pub use driver::CudaError;
pub use gpu::{device, device_count, emulator, DeviceBuffer, Gpu, EMULATOR};
