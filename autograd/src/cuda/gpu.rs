//! A CUDA device ready to run ops: its driver, the caching allocator, the loaded kernels and the
//! cuBLAS settings; and the registry that opens each device once.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::alloc::{CachingAllocator, MemoryStats};
use super::driver::{Arg, CudaError, DevicePtr, Driver, FnHandle, GemmCall, LaunchConfig, Result};
use super::kernels::{self, Target};

/// The ordinal under which the emulator is registered (see [`emulator`]).
pub const EMULATOR: usize = crate::device::Device::EMULATOR;

/// An open CUDA device (or the emulator). Shared by every buffer on it.
pub struct Gpu {
    ordinal: usize,
    driver: Box<dyn Driver>,
    alloc: CachingAllocator,
    kernels: HashMap<String, FnHandle>,
    tf32: AtomicBool,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.driver.describe())
    }
}

impl Gpu {
    fn open_with(ordinal: usize, driver: Box<dyn Driver>) -> Result<Gpu> {
        let names = kernels::kernel_names();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let source = kernels::program(Target::Nvrtc, "");
        let handles = driver.load("vit_kernels", &source, &refs)?;
        let kernels = names.into_iter().zip(handles).collect();
        Ok(Gpu { ordinal, driver, alloc: CachingAllocator::default(), kernels, tf32: AtomicBool::new(false) })
    }

    /// The device's ordinal ([`EMULATOR`] for the emulator).
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// Whether this is the emulator rather than a GPU.
    pub fn is_emulator(&self) -> bool {
        self.ordinal == EMULATOR
    }

    /// Name, compute capability and memory, for the user.
    pub fn describe(&self) -> String {
        self.driver.describe()
    }

    /// Lets f32 products use TF32 tensor cores (off by default, so results match the CPU's to
    /// f32 accuracy; TF32 keeps 10 mantissa bits of each factor).
    pub fn set_tf32(&self, on: bool) {
        self.tf32.store(on, Ordering::Relaxed);
    }

    /// Whether f32 products may use TF32 (see [`Gpu::set_tf32`]).
    pub fn tf32(&self) -> bool {
        self.tf32.load(Ordering::Relaxed)
    }

    /// The allocator's counters.
    pub fn memory_stats(&self) -> MemoryStats {
        self.alloc.stats()
    }

    /// Restarts the peak memory counters from the current use.
    pub fn reset_peak_memory(&self) {
        self.alloc.reset_peaks()
    }

    /// Returns cached device memory to the driver.
    pub fn trim(&self) {
        self.alloc.trim(&*self.driver)
    }

    /// Waits for all queued work.
    pub fn synchronize(&self) {
        self.driver.synchronize().unwrap_or_else(|e| panic!("{}: {e}", self.describe()))
    }

    pub(crate) fn driver(&self) -> &dyn Driver {
        &*self.driver
    }

    /// The CUDA stream of a real GPU (`None` on the emulator).
    pub(crate) fn cuda_stream(&self) -> Option<Arc<cudarc::driver::CudaStream>> {
        self.driver.cuda_stream()
    }

    /// A buffer of `len` elements with unspecified contents.
    pub fn alloc<T: Copy>(self: &Arc<Self>, len: usize) -> DeviceBuffer<T> {
        let bytes = len * std::mem::size_of::<T>();
        let (ptr, class) = self.alloc.take(&*self.driver, bytes).unwrap_or_else(|e| {
            let s = self.alloc.stats();
            panic!(
                "{}: cannot allocate {bytes} bytes ({} in use, {} reserved): {e}",
                self.describe(),
                s.in_use,
                s.reserved
            )
        });
        DeviceBuffer { gpu: self.clone(), ptr, len, class, _t: PhantomData }
    }

    /// A buffer of `len` zero bytes' elements.
    pub fn zeros<T: Copy>(self: &Arc<Self>, len: usize) -> DeviceBuffer<T> {
        let b = self.alloc::<T>(len);
        // SAFETY: the range is the buffer just allocated.
        unsafe { self.driver.zero(b.ptr, b.bytes()) }.unwrap_or_else(|e| panic!("{}: {e}", self.describe()));
        b
    }

    /// A buffer holding a copy of `data`.
    pub fn upload<T: Copy>(self: &Arc<Self>, data: &[T]) -> DeviceBuffer<T> {
        let b = self.alloc::<T>(data.len());
        // SAFETY: `data` is valid for its bytes, the buffer for as many.
        unsafe { self.driver.upload(b.ptr, data.as_ptr().cast(), b.bytes()) }
            .unwrap_or_else(|e| panic!("{}: {e}", self.describe()));
        b
    }

    /// Queues `kernel` (a name from the sources) on the device's stream.
    ///
    /// # Safety
    /// `args` match the kernel's parameters, and every pointer addresses a live buffer of the
    /// extent the kernel touches under `cfg`.
    pub(crate) unsafe fn launch(&self, kernel: &str, cfg: LaunchConfig, args: &[Arg]) {
        let f = *self.kernels.get(kernel).unwrap_or_else(|| panic!("no CUDA kernel named {kernel}"));
        self.driver.launch(f, cfg, args).unwrap_or_else(|e| panic!("{}: kernel {kernel}: {e}", self.describe()))
    }

    /// Queues a GEMM (see [`super::blas`] for the row-major entry points).
    ///
    /// # Safety
    /// As [`Driver::gemm`].
    pub(crate) unsafe fn gemm(&self, call: &GemmCall) {
        self.driver.gemm(call, self.tf32()).unwrap_or_else(|e| panic!("{}: {e}", self.describe()))
    }
}

/// A typed block of device memory, returned to its device's caching allocator when dropped.
pub struct DeviceBuffer<T> {
    gpu: Arc<Gpu>,
    ptr: DevicePtr,
    len: usize,
    class: usize,
    _t: PhantomData<T>,
}

impl<T> std::fmt::Debug for DeviceBuffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceBuffer({} elements on {:?})", self.len, self.gpu)
    }
}

impl<T: Copy> DeviceBuffer<T> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer holds no element.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Size in bytes, `len * size_of::<T>()`.
    pub fn bytes(&self) -> usize {
        self.len * std::mem::size_of::<T>()
    }

    /// The device address of element 0.
    pub fn ptr(&self) -> DevicePtr {
        self.ptr
    }

    /// The device address of element `i` (which may be `len`, one past the end).
    pub fn at(&self, i: usize) -> DevicePtr {
        assert!(i <= self.len, "DeviceBuffer::at({i}) past the end ({} elements)", self.len);
        self.ptr + (i * std::mem::size_of::<T>()) as u64
    }

    /// The device (context and allocator) the buffer lives on.
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// The elements, copied to the host (waits for queued work).
    pub fn to_vec(&self) -> Vec<T> {
        let mut v: Vec<T> = Vec::with_capacity(self.len);
        // SAFETY: the vector's capacity holds `len` elements, all written by the download
        // before `set_len`; T is plain data (Copy).
        unsafe {
            self.gpu
                .driver
                .download(v.as_mut_ptr().cast(), self.ptr, self.bytes())
                .unwrap_or_else(|e| panic!("{}: {e}", self.gpu.describe()));
            v.set_len(self.len);
        }
        v
    }

    /// Overwrites the elements from host memory (same length).
    pub fn copy_from_host(&mut self, data: &[T]) {
        assert_eq!(data.len(), self.len, "DeviceBuffer::copy_from_host: length differs");
        // SAFETY: both ranges hold `bytes()` bytes.
        unsafe { self.gpu.driver.upload(self.ptr, data.as_ptr().cast(), self.bytes()) }
            .unwrap_or_else(|e| panic!("{}: {e}", self.gpu.describe()));
    }

    /// Copies `len` elements of `src` from element `from` into this buffer at element `at`
    /// (device to device, queued; both buffers on one device, the ranges inside them).
    pub fn copy_range_from(&mut self, at: usize, src: &DeviceBuffer<T>, from: usize, len: usize) {
        assert!(Arc::ptr_eq(&self.gpu, &src.gpu), "DeviceBuffer::copy_range_from: buffers on two devices");
        assert!(
            at + len <= self.len && from + len <= src.len,
            "DeviceBuffer::copy_range_from: {len} elements from {from} of {} into {at} of {}",
            src.len,
            self.len
        );
        if len == 0 {
            return;
        }
        // SAFETY: both ranges were checked to lie inside their buffers; `self` is borrowed
        // mutably and `src` shared, so they are distinct buffers and the ranges cannot overlap.
        unsafe { self.gpu.driver.copy(self.at(at), src.at(from), len * std::mem::size_of::<T>()) }
            .unwrap_or_else(|e| panic!("{}: {e}", self.gpu.describe()));
    }

    /// A new buffer with the same elements (a device-to-device copy).
    pub fn duplicate(&self) -> DeviceBuffer<T> {
        let b = self.gpu.alloc::<T>(self.len);
        // SAFETY: both buffers hold `bytes()` bytes and are distinct.
        unsafe { self.gpu.driver.copy(b.ptr, self.ptr, self.bytes()) }
            .unwrap_or_else(|e| panic!("{}: {e}", self.gpu.describe()));
        b
    }
}

impl<T> Drop for DeviceBuffer<T> {
    fn drop(&mut self) {
        self.gpu.alloc.give(self.ptr, self.class);
    }
}

fn registry() -> &'static Mutex<HashMap<usize, Arc<Gpu>>> {
    static DEVICES: std::sync::OnceLock<Mutex<HashMap<usize, Arc<Gpu>>>> = std::sync::OnceLock::new();
    DEVICES.get_or_init(|| Mutex::new(HashMap::new()))
}

fn open_cached(ordinal: usize, open: impl FnOnce() -> Result<Box<dyn Driver>>) -> Result<Arc<Gpu>> {
    let mut devices = registry().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(g) = devices.get(&ordinal) {
        return Ok(g.clone());
    }
    let gpu = Arc::new(Gpu::open_with(ordinal, open()?)?);
    devices.insert(ordinal, gpu.clone());
    Ok(gpu)
}

/// CUDA device `ordinal`, opened (context, stream, cuBLAS, kernels compiled by NVRTC) on first
/// use. An error, never a panic, on a machine without CUDA.
pub fn device(ordinal: usize) -> Result<Arc<Gpu>> {
    if ordinal == EMULATOR {
        return emulator();
    }
    open_cached(ordinal, || Ok(Box::new(super::nvidia::Nvidia::open(ordinal)?)))
}

/// The emulator, a test device that runs the CUDA kernels on the CPU (see [`super::emu`]).
/// Fails if no C++ compiler can build the kernels.
pub fn emulator() -> Result<Arc<Gpu>> {
    open_cached(EMULATOR, || Ok(Box::new(super::emu::Emulator::open()?)))
}

/// How many CUDA devices the machine has, or why none can be used.
pub fn device_count() -> std::result::Result<usize, CudaError> {
    super::nvidia::probe().map_err(CudaError)
}
