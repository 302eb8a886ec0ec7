//! The real GPU: [`Driver`] on the CUDA driver API and cuBLAS, through cudarc with every
//! library loaded at run time.
//!
//! cudarc panics when it first calls into a library it cannot load, so nothing here touches
//! the driver before [`probe`] has checked that `libcuda` is present; cuBLAS and NVRTC are
//! checked the same way before a device is opened. A machine without CUDA therefore gets a
//! clear error (and the CLI falls back to the CPU) instead of a panic.

use std::ffi::c_void;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::cublas::{result as blas, sys as blas_sys};
use cudarc::driver::{result as drv, sys as drv_sys, CudaContext, CudaStream};

use super::driver::{Arg, CudaError, DevicePtr, Driver, FnHandle, GemmCall, GemmType, LaunchConfig, Result};

fn err(what: &str, e: impl std::fmt::Debug) -> CudaError {
    CudaError(format!("{what}: {e:?}"))
}

/// How many CUDA devices this machine has, or why it has none usable: the driver library is
/// missing, or it is there but finds no device.
pub fn probe() -> std::result::Result<usize, String> {
    static PROBE: OnceLock<std::result::Result<usize, String>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            // SAFETY: only tries to dlopen the driver library by its candidate names.
            if !unsafe { drv_sys::is_culib_present() } {
                return Err("no CUDA driver found (libcuda.so could not be loaded)".into());
            }
            drv::init().map_err(|e| format!("the CUDA driver is installed but failed to start: {e:?}"))?;
            let n = drv::device::get_count().map_err(|e| format!("cuDeviceGetCount: {e:?}"))?;
            if n <= 0 {
                return Err("the CUDA driver found no device".into());
            }
            Ok(n as usize)
        })
        .clone()
}

/// Bytes of cuBLAS workspace, allocated once per device (cuBLAS's recommendation for Hopper).
const CUBLAS_WORKSPACE: usize = 32 << 20;

struct Blas {
    handle: blas_sys::cublasHandle_t,
    tf32: bool,
}

/// A CUDA device: its primary context, one stream every call is ordered on, a cuBLAS handle.
pub(crate) struct Nvidia {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: Mutex<Blas>,
    modules: Mutex<Vec<usize>>,
    workspace: DevicePtr,
    describe: String,
    cc: (u32, u32),
}

// SAFETY: the raw cuBLAS handle and module handles are used under a mutex or are immutable
// after creation; the driver API is thread-safe once the context is bound (every call binds).
unsafe impl Send for Nvidia {}
// SAFETY: as above.
unsafe impl Sync for Nvidia {}

impl Nvidia {
    /// Opens device `ordinal`: checks the driver, cuBLAS and NVRTC are loadable first.
    pub fn open(ordinal: usize) -> Result<Nvidia> {
        let count = probe().map_err(CudaError)?;
        if ordinal >= count {
            return Err(CudaError(format!("cuda:{ordinal} does not exist: this machine has {count} CUDA device(s)")));
        }
        // SAFETY: only tries to dlopen the library.
        if !unsafe { blas_sys::is_culib_present() } {
            return Err(CudaError("cuBLAS (libcublas.so) not found on the library path".into()));
        }
        if !super::nvrtc::available() {
            return Err(CudaError("NVRTC (libnvrtc.so) not found on the library path".into()));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| err("creating the CUDA context", e))?;
        let stream = ctx.new_stream().map_err(|e| err("creating a stream", e))?;
        let cc = ctx.compute_capability().map_err(|e| err("compute capability", e))?;
        let cc = (cc.0 as u32, cc.1 as u32);
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let total = ctx.total_mem().unwrap_or(0);
        let handle = blas::create_handle().map_err(|e| err("cublasCreate", e))?;
        // SAFETY: the handle is fresh, the stream belongs to the bound context; the workspace is
        // allocated on that context and lives as long as the handle.
        let workspace = unsafe {
            blas::set_stream(handle, stream.cu_stream() as _).map_err(|e| err("cublasSetStream", e))?;
            let ws = drv::malloc_sync(CUBLAS_WORKSPACE).map_err(|e| err("allocating the cuBLAS workspace", e))?;
            blas_sys::cublasSetWorkspace_v2(handle, ws as *mut c_void, CUBLAS_WORKSPACE)
                .result()
                .map_err(|e| err("cublasSetWorkspace", e))?;
            blas_sys::cublasSetMathMode(handle, blas_sys::cublasMath_t::CUBLAS_DEFAULT_MATH)
                .result()
                .map_err(|e| err("cublasSetMathMode", e))?;
            ws
        };
        let describe =
            format!("cuda:{ordinal} {name} (sm_{}{}, {:.1} GiB)", cc.0, cc.1, total as f64 / (1u64 << 30) as f64);
        Ok(Nvidia {
            ctx,
            stream,
            blas: Mutex::new(Blas { handle, tf32: false }),
            modules: Mutex::new(Vec::new()),
            workspace,
            describe,
            cc,
        })
    }

    fn bind(&self) -> Result<()> {
        self.ctx.bind_to_thread().map_err(|e| err("binding the CUDA context", e))
    }

    fn stream(&self) -> drv_sys::CUstream {
        self.stream.cu_stream()
    }
}

impl Drop for Nvidia {
    fn drop(&mut self) {
        if self.bind().is_err() {
            return;
        }
        let _ = self.stream.synchronize();
        let blas = self.blas.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: all work is done; the handle, modules and workspace are released once.
        unsafe {
            let _ = blas::destroy_handle(blas.handle);
            for &m in self.modules.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                let _ = drv::module::unload(m as drv_sys::CUmodule);
            }
            let _ = drv::free_sync(self.workspace);
        }
    }
}

impl Driver for Nvidia {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn compute_capability(&self) -> (u32, u32) {
        self.cc
    }

    fn memory_info(&self) -> Result<(usize, usize)> {
        self.bind()?;
        self.ctx.mem_get_info().map_err(|e| err("cuMemGetInfo", e))
    }

    fn malloc(&self, bytes: usize) -> Result<DevicePtr> {
        self.bind()?;
        // SAFETY: a plain allocation; the caller owns the result.
        unsafe { drv::malloc_sync(bytes.max(1)) }.map_err(|e| err(&format!("cuMemAlloc of {bytes} bytes"), e))
    }

    unsafe fn free(&self, ptr: DevicePtr) {
        if self.bind().is_ok() {
            // Pending work may still read the block: finish it first (frees are rare: the
            // caching allocator keeps blocks, and only trims under memory pressure).
            let _ = self.stream.synchronize();
            let _ = drv::free_sync(ptr);
        }
    }

    unsafe fn upload(&self, dst: DevicePtr, src: *const u8, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        self.bind()?;
        // From pageable memory the driver stages the bytes before returning, so the host buffer
        // may be dropped right after.
        drv::memcpy_htod_async(dst, std::slice::from_raw_parts(src, bytes), self.stream())
            .map_err(|e| err("cuMemcpyHtoDAsync", e))
    }

    unsafe fn download(&self, dst: *mut u8, src: DevicePtr, bytes: usize) -> Result<()> {
        self.bind()?;
        if bytes > 0 {
            drv::memcpy_dtoh_async(std::slice::from_raw_parts_mut(dst, bytes), src, self.stream())
                .map_err(|e| err("cuMemcpyDtoHAsync", e))?;
        }
        self.stream.synchronize().map_err(|e| err("waiting for the device", e))
    }

    unsafe fn copy(&self, dst: DevicePtr, src: DevicePtr, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        self.bind()?;
        drv::memcpy_dtod_async(dst, src, bytes, self.stream()).map_err(|e| err("cuMemcpyDtoDAsync", e))
    }

    unsafe fn zero(&self, dst: DevicePtr, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        self.bind()?;
        drv::memset_d8_async(dst, 0, bytes, self.stream()).map_err(|e| err("cuMemsetD8Async", e))
    }

    fn load(&self, family: &str, source: &str, kernels: &[&str]) -> Result<Vec<FnHandle>> {
        let compiled = super::nvrtc::compile(family, source, self.cc)?;
        self.bind()?;
        // SAFETY: the PTX is NUL-terminated; the module stays loaded until the device drops.
        unsafe {
            let module = drv::module::load_data(compiled.ptx.as_ptr().cast())
                .map_err(|e| err(&format!("loading the {family} kernels"), e))?;
            self.modules.lock().unwrap_or_else(|e| e.into_inner()).push(module as usize);
            kernels
                .iter()
                .map(|&k| {
                    let name = std::ffi::CString::new(k).expect("kernel names are plain identifiers");
                    drv::module::get_function(module, name)
                        .map(|f| FnHandle(f as u64))
                        .map_err(|e| err(&format!("kernel {k} in {family}"), e))
                })
                .collect()
        }
    }

    unsafe fn launch(&self, f: FnHandle, cfg: LaunchConfig, args: &[Arg]) -> Result<()> {
        self.bind()?;
        let mut params: Vec<*mut c_void> = args.iter().map(Arg::as_ptr).collect();
        drv::launch_kernel(
            f.0 as drv_sys::CUfunction,
            cfg.grid,
            cfg.block,
            cfg.shared_bytes,
            self.stream(),
            &mut params,
        )
        .map_err(|e| err(&format!("cuLaunchKernel (grid {:?}, block {:?})", cfg.grid, cfg.block), e))
    }

    unsafe fn gemm(&self, g: &GemmCall, tf32: bool) -> Result<()> {
        self.bind()?;
        let mut b = self.blas.lock().unwrap_or_else(|e| e.into_inner());
        if b.tf32 != tf32 {
            let mode = if tf32 {
                blas_sys::cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH
            } else {
                blas_sys::cublasMath_t::CUBLAS_DEFAULT_MATH
            };
            blas_sys::cublasSetMathMode(b.handle, mode).result().map_err(|e| err("cublasSetMathMode", e))?;
            b.tf32 = tf32;
        }
        let op = |t: bool| {
            if t {
                blas_sys::cublasOperation_t::CUBLAS_OP_T
            } else {
                blas_sys::cublasOperation_t::CUBLAS_OP_N
            }
        };
        let (ta, tb) = (op(g.trans_a), op(g.trans_b));
        let r = match g.ty {
            GemmType::F32 => {
                let (alpha, beta) = (g.alpha as f32, g.beta as f32);
                blas::sgemm_strided_batched(
                    b.handle,
                    ta,
                    tb,
                    g.m,
                    g.n,
                    g.k,
                    &alpha,
                    g.a as *const f32,
                    g.lda,
                    g.stride_a,
                    g.b as *const f32,
                    g.ldb,
                    g.stride_b,
                    &beta,
                    g.c as *mut f32,
                    g.ldc,
                    g.stride_c,
                    g.batch,
                )
            }
            GemmType::F64 => blas::dgemm_strided_batched(
                b.handle,
                ta,
                tb,
                g.m,
                g.n,
                g.k,
                &g.alpha,
                g.a as *const f64,
                g.lda,
                g.stride_a,
                g.b as *const f64,
                g.ldb,
                g.stride_b,
                &g.beta,
                g.c as *mut f64,
                g.ldc,
                g.stride_c,
                g.batch,
            ),
        };
        r.map_err(|e| err(&format!("cuBLAS gemm {g:?}"), e))
    }

    fn synchronize(&self) -> Result<()> {
        self.bind()?;
        self.stream.synchronize().map_err(|e| err("waiting for the device", e))
    }

    fn cuda_stream(&self) -> Option<Arc<CudaStream>> {
        Some(self.stream.clone())
    }
}
