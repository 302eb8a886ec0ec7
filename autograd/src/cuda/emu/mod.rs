//! The CUDA emulator: [`Driver`] on the CPU, so that the GPU code path runs in tests on a
//! machine without a GPU.
//!
//! It is a test device, not a fast one. Device memory is host memory (freshly allocated blocks
//! are filled with `0xff` bytes, NaN as floats, so a kernel that reads what nobody wrote fails
//! its test); kernels are the very sources NVRTC compiles, built once with the host C++
//! compiler (`$CXX`, else `c++`) against `runtime.h`, which runs each CUDA thread as a fiber
//! and reports barrier misuse; GEMM implements cuBLAS's column-major definition directly, so
//! the row-major-to-cuBLAS mapping above it is checked too. Copies are bounds-checked against
//! the allocations they touch.
//!
//! What it cannot show: speed, and the behaviour of real hardware where it differs from the
//! programming model (memory ordering between blocks, TF32 rounding, launch limits).

use std::collections::BTreeMap;
use std::ffi::{c_char, c_void};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use super::driver::{Arg, CudaError, DevicePtr, Driver, FnHandle, GemmCall, GemmType, LaunchConfig, Result};
use super::kernels::{self, Target};

const RUNTIME: &str = include_str!("runtime.h");

/// Alignment of emulated allocations (cuMemAlloc guarantees 256 bytes).
const ALIGN: usize = 256;

type LaunchFn = unsafe extern "C" fn(*const u32, *mut *mut c_void, *mut c_char, u64) -> i32;

/// The emulated device.
pub(crate) struct Emulator {
    /// Live allocations: start -> length in bytes.
    blocks: Mutex<BTreeMap<u64, usize>>,
    /// The compiled kernels, loaded once and never unloaded (their code must outlive every
    /// handle).
    library: &'static libloading::Library,
}

/// The C++ compiler the emulator builds kernels with.
fn compiler() -> String {
    std::env::var("CXX").unwrap_or_else(|_| "c++".into())
}

/// Compiles the kernel program for the host (once per process; the shared library is cached
/// on disk by the hash of its source, so later test runs skip the compile).
fn library() -> Result<&'static libloading::Library> {
    static LIB: OnceLock<std::result::Result<&'static libloading::Library, CudaError>> = OnceLock::new();
    LIB.get_or_init(|| {
        let source = kernels::program(Target::Emulator, RUNTIME);
        let cxx = compiler();
        let flags = ["-std=c++17", "-O1", "-fPIC", "-shared", "-Wall", "-Wno-unused-function", "-Werror"];
        let key = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (&source, &cxx, &flags).hash(&mut h);
            h.finish()
        };
        let dir = std::env::temp_dir().join("autograd-cuda-emulator");
        std::fs::create_dir_all(&dir).map_err(|e| CudaError(format!("creating {}: {e}", dir.display())))?;
        let so = dir.join(format!("kernels-{key:016x}.so"));
        if !so.exists() {
            let src = dir.join(format!("kernels-{key:016x}-{}.cpp", std::process::id()));
            std::fs::write(&src, &source).map_err(|e| CudaError(format!("writing {}: {e}", src.display())))?;
            let tmp: PathBuf = dir.join(format!("kernels-{key:016x}-{}.so.tmp", std::process::id()));
            let out = std::process::Command::new(&cxx)
                .args(flags)
                .arg("-o")
                .arg(&tmp)
                .arg(&src)
                .output()
                .map_err(|e| CudaError(format!("the CUDA emulator needs a C++ compiler ({cxx}): {e}")))?;
            let _ = std::fs::remove_file(&src);
            if !out.status.success() {
                return Err(CudaError(format!(
                    "compiling the kernels for the emulator with {cxx} failed:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                )));
            }
            // Atomic: test processes running at once never load a half-written library.
            std::fs::rename(&tmp, &so).map_err(|e| CudaError(format!("installing {}: {e}", so.display())))?;
        }
        // SAFETY: the library is our own kernel program; its initialisers only set up statics.
        let lib = unsafe { libloading::Library::new(&so) }
            .map_err(|e| CudaError(format!("loading {}: {e}", so.display())))?;
        Ok(&*Box::leak(Box::new(lib)))
    })
    .clone()
}

impl Emulator {
    /// The emulator, with its kernels compiled (an error if no C++ compiler works).
    pub fn open() -> Result<Emulator> {
        Ok(Emulator { blocks: Mutex::new(BTreeMap::new()), library: library()? })
    }

    /// Panics unless `[ptr, ptr + bytes)` lies inside one live allocation: an out-of-range
    /// copy is a bug in the code above the driver, which this is here to catch.
    fn check(&self, ptr: u64, bytes: usize, what: &str) {
        if bytes == 0 {
            return;
        }
        let blocks = self.blocks.lock().unwrap_or_else(|e| e.into_inner());
        let ok =
            blocks.range(..=ptr).next_back().is_some_and(|(&start, &len)| ptr + bytes as u64 <= start + len as u64);
        assert!(ok, "CUDA emulator: {what} of {bytes} bytes at {ptr:#x} is outside every allocation");
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let blocks = std::mem::take(&mut *self.blocks.lock().unwrap_or_else(|e| e.into_inner()));
        for (start, len) in blocks {
            // SAFETY: every live block was allocated by `malloc` with this layout.
            unsafe { std::alloc::dealloc(start as *mut u8, std::alloc::Layout::from_size_align(len, ALIGN).unwrap()) };
        }
    }
}

impl Driver for Emulator {
    fn describe(&self) -> String {
        "cuda-emulator (CUDA kernels compiled for the CPU; a test device)".into()
    }

    fn compute_capability(&self) -> (u32, u32) {
        (9, 0)
    }

    fn memory_info(&self) -> Result<(usize, usize)> {
        Ok((usize::MAX / 2, usize::MAX / 2))
    }

    fn malloc(&self, bytes: usize) -> Result<DevicePtr> {
        let len = bytes.max(1);
        let layout =
            std::alloc::Layout::from_size_align(len, ALIGN).map_err(|e| CudaError(format!("malloc({bytes}): {e}")))?;
        // SAFETY: a non-zero-sized layout.
        let p = unsafe { std::alloc::alloc(layout) };
        if p.is_null() {
            return Err(CudaError(format!("out of memory allocating {bytes} bytes (emulator)")));
        }
        // SAFETY: p is valid for len bytes.
        unsafe { std::ptr::write_bytes(p, 0xff, len) };
        self.blocks.lock().unwrap_or_else(|e| e.into_inner()).insert(p as u64, len);
        Ok(p as u64)
    }

    unsafe fn free(&self, ptr: DevicePtr) {
        let len = self.blocks.lock().unwrap_or_else(|e| e.into_inner()).remove(&ptr);
        let len = len.unwrap_or_else(|| panic!("CUDA emulator: free of {ptr:#x}, which is not an allocation"));
        std::alloc::dealloc(ptr as *mut u8, std::alloc::Layout::from_size_align(len, ALIGN).unwrap());
    }

    unsafe fn upload(&self, dst: DevicePtr, src: *const u8, bytes: usize) -> Result<()> {
        self.check(dst, bytes, "upload");
        std::ptr::copy_nonoverlapping(src, dst as *mut u8, bytes);
        Ok(())
    }

    unsafe fn download(&self, dst: *mut u8, src: DevicePtr, bytes: usize) -> Result<()> {
        self.check(src, bytes, "download");
        std::ptr::copy_nonoverlapping(src as *const u8, dst, bytes);
        Ok(())
    }

    unsafe fn copy(&self, dst: DevicePtr, src: DevicePtr, bytes: usize) -> Result<()> {
        self.check(dst, bytes, "copy (destination)");
        self.check(src, bytes, "copy (source)");
        std::ptr::copy_nonoverlapping(src as *const u8, dst as *mut u8, bytes);
        Ok(())
    }

    unsafe fn zero(&self, dst: DevicePtr, bytes: usize) -> Result<()> {
        self.check(dst, bytes, "memset");
        std::ptr::write_bytes(dst as *mut u8, 0, bytes);
        Ok(())
    }

    fn load(&self, _family: &str, _source: &str, kernels: &[&str]) -> Result<Vec<FnHandle>> {
        kernels
            .iter()
            .map(|k| {
                let symbol = format!("emu_launch_{k}");
                // SAFETY: every exported launcher has the `LaunchFn` signature (EMU_EXPORT).
                let f: libloading::Symbol<'static, LaunchFn> = unsafe { self.library.get(symbol.as_bytes()) }
                    .map_err(|e| CudaError(format!("kernel {k}: {e}")))?;
                Ok(FnHandle(*f as usize as u64))
            })
            .collect()
    }

    unsafe fn launch(&self, f: FnHandle, cfg: LaunchConfig, args: &[Arg]) -> Result<()> {
        let dims = [cfg.grid.0, cfg.grid.1, cfg.grid.2, cfg.block.0, cfg.block.1, cfg.block.2, cfg.shared_bytes];
        let mut params: Vec<*mut c_void> = args.iter().map(Arg::as_ptr).collect();
        let mut err = [0 as c_char; 512];
        // SAFETY: `f` came from `load`, so it is a launcher with this signature.
        let launch: LaunchFn = std::mem::transmute::<usize, LaunchFn>(f.0 as usize);
        if launch(dims.as_ptr(), params.as_mut_ptr(), err.as_mut_ptr(), err.len() as u64) != 0 {
            let msg = std::ffi::CStr::from_ptr(err.as_ptr()).to_string_lossy().into_owned();
            return Err(CudaError(format!(
                "emulated kernel launch (grid {:?}, block {:?}): {msg}",
                cfg.grid, cfg.block
            )));
        }
        Ok(())
    }

    unsafe fn gemm(&self, g: &GemmCall, _tf32: bool) -> Result<()> {
        match g.ty {
            GemmType::F32 => gemm_reference::<f32>(g),
            GemmType::F64 => gemm_reference::<f64>(g),
        }
        Ok(())
    }

    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
}

/// An element type the reference GEMM handles.
trait Elem: Copy {
    fn to_f64(self) -> f64;
    fn from_f64(x: f64) -> Self;
}
impl Elem for f32 {
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(x: f64) -> Self {
        x as f32
    }
}
impl Elem for f64 {
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(x: f64) -> Self {
        x
    }
}

/// `cublas<t>gemmStridedBatched` from its definition (see [`GemmCall`]), accumulating in f64.
/// As in cuBLAS, `beta = 0` means C is not read (it may hold NaN).
unsafe fn gemm_reference<E: Elem>(g: &GemmCall) {
    let (m, n, k) = (g.m as i64, g.n as i64, g.k as i64);
    for batch in 0..g.batch as i64 {
        let a = (g.a as *const E).offset((batch * g.stride_a) as isize);
        let b = (g.b as *const E).offset((batch * g.stride_b) as isize);
        let c = (g.c as *mut E).offset((batch * g.stride_c) as isize);
        // op(A)(r, p): A(r, p) or A(p, r); column-major, leading dimension lda.
        let at = |r: i64, p: i64| {
            let off = if g.trans_a { p + r * g.lda as i64 } else { r + p * g.lda as i64 };
            (*a.offset(off as isize)).to_f64()
        };
        let bt = |p: i64, col: i64| {
            let off = if g.trans_b { col + p * g.ldb as i64 } else { p + col * g.ldb as i64 };
            (*b.offset(off as isize)).to_f64()
        };
        for col in 0..n {
            for r in 0..m {
                let mut acc = 0.0f64;
                for p in 0..k {
                    acc += at(r, p) * bt(p, col);
                }
                let dst = c.offset((r + col * g.ldc as i64) as isize);
                let old = if g.beta == 0.0 { 0.0 } else { g.beta * (*dst).to_f64() };
                *dst = E::from_f64(g.alpha * acc + old);
            }
        }
    }
}
