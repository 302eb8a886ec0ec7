//! NCCL: sums over the GPUs of a data-parallel job, queued on the devices beside their work.
//!
//! A job runs one process per GPU. The processes agree on a 128-byte id ([`unique_id`], made
//! by rank 0 and sent to the others over whatever the job already has, MPI in `vit`), and each
//! opens its end of the communicator with it ([`Nccl::new`]). An all-reduce is then a kernel
//! like any other: queued, not waited for, moving the data GPU to GPU (NVLink, PCIe, or the
//! network through NCCL's own transports) without a copy through host memory.
//!
//! The sums run on a stream of their own, so that a bucket of gradients is summed while the
//! device goes on with the backward of the layers below (PyTorch DDP's design, on the device):
//!
//! ```text
//!     device stream   ... backward L ... | copy into bucket | backward L-1 ... | wait | copy out
//!                                               \  (event)                       ^ (event)
//!     NCCL stream                                 all-reduce bucket ------------/
//! ```
//!
//! [`Nccl::all_reduce_sum_f32`] makes the NCCL stream wait for the work queued so far on the
//! device's stream (the copy into the bucket) and queues the sum behind it;
//! [`Nccl::join`] makes the device's stream wait for every sum queued so far, before it reads
//! the buckets. The host waits for neither.
//!
//! The library is loaded at run time, like the rest of `cuda/`: [`available`] says whether it
//! can be, and nothing here calls into it before that was checked.

use std::sync::Arc;

use cudarc::driver::CudaStream;
use cudarc::nccl::{result as nccl, sys};

use super::driver::{CudaError, Result};
use super::gpu::{DeviceBuffer, Gpu};

/// Bytes of an NCCL communicator id.
pub const ID_BYTES: usize = 128;

fn err(what: &str, e: impl std::fmt::Debug) -> CudaError {
    CudaError(format!("{what}: {e:?}"))
}

/// Whether the NCCL library (`libnccl.so`) can be loaded.
pub fn available() -> bool {
    // SAFETY: only tries to dlopen the library by its candidate names.
    unsafe { sys::is_culib_present() }
}

fn check_available() -> Result<()> {
    if available() {
        Ok(())
    } else {
        Err(CudaError(
            "NCCL (libnccl.so.2) not found on the library path: install it (e.g. the nvidia-nccl-cu12 wheel or \
             NVIDIA's libnccl2 package) or sum through host memory instead"
                .into(),
        ))
    }
}

/// A fresh communicator id, made by one process (rank 0) and given to every rank.
pub fn unique_id() -> Result<[u8; ID_BYTES]> {
    check_available()?;
    let id = nccl::get_uniqueid().map_err(|e| err("ncclGetUniqueId", e))?;
    Ok(id.internal.map(|c| c as u8))
}

/// This process's end of an NCCL communicator, on one GPU. Not `Send`: it is made, used and
/// dropped on one thread (the collective thread of `vit`'s `Comm`).
pub struct Nccl {
    comm: sys::ncclComm_t,
    /// The device's stream (where the gradients are written and read).
    device: Arc<CudaStream>,
    /// The stream the sums run on.
    side: Arc<CudaStream>,
    gpu: Arc<Gpu>,
    rank: usize,
    world: usize,
}

impl std::fmt::Debug for Nccl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Nccl(rank {} of {} on {:?})", self.rank, self.world, self.gpu)
    }
}

impl Nccl {
    /// Joins the communicator `id` as `rank` of `world`, on `gpu`. Every rank calls this with the
    /// same id; it returns once all have (NCCL's own rendezvous).
    pub fn new(gpu: &Arc<Gpu>, rank: usize, world: usize, id: &[u8; ID_BYTES]) -> Result<Nccl> {
        if rank >= world {
            return Err(CudaError(format!("NCCL: rank {rank} of a world of {world}")));
        }
        let device = gpu.cuda_stream().ok_or_else(|| {
            CudaError(format!("NCCL needs a GPU; {} has no CUDA stream (the emulator cannot run NCCL)", gpu.describe()))
        })?;
        check_available()?;
        device.context().bind_to_thread().map_err(|e| err("binding the CUDA context", e))?;
        let side = device.fork().map_err(|e| err("creating NCCL's stream", e))?;
        let unique = sys::ncclUniqueId { internal: id.map(|b| b as std::ffi::c_char) };
        let mut comm = std::ptr::null_mut();
        // SAFETY: `comm` is a valid place for the handle; the context of `gpu` is bound to this
        // thread, so NCCL takes that device.
        unsafe { nccl::comm_init_rank(&mut comm, world as i32, unique, rank as i32) }
            .map_err(|e| err(&format!("ncclCommInitRank (rank {rank} of {world})"), e))?;
        Ok(Nccl { comm, device, side, gpu: gpu.clone(), rank, world })
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of processes (GPUs).
    pub fn world_size(&self) -> usize {
        self.world
    }

    /// Queues `buf <- sum over ranks of buf`, in place, after the work queued so far on the
    /// device's stream. The buffer must not be written or freed before [`Nccl::join`].
    pub fn all_reduce_sum_f32(&self, buf: &mut DeviceBuffer<f32>) -> Result<()> {
        if !Arc::ptr_eq(buf.gpu(), &self.gpu) {
            return Err(CudaError(format!("NCCL on {:?}: a buffer on {:?}", self.gpu, buf.gpu())));
        }
        self.side.join(&self.device).map_err(|e| err("ordering the all-reduce after the gradients", e))?;
        let ptr = buf.ptr() as *mut std::ffi::c_void;
        // SAFETY: `ptr` addresses `buf.len()` f32 on this communicator's device, alive and
        // unwritten by others until `join` (the caller's contract); send and receive buffers may
        // be the same (in place).
        unsafe {
            nccl::all_reduce(
                ptr,
                ptr,
                buf.len(),
                sys::ncclDataType_t::ncclFloat32,
                sys::ncclRedOp_t::ncclSum,
                self.comm,
                self.side.cu_stream() as _,
            )
        }
        .map(|_| ())
        .map_err(|e| err(&format!("ncclAllReduce ({} values)", buf.len()), e))
    }

    /// Makes the device's stream wait for every all-reduce queued so far (the host does not).
    pub fn join(&self) -> Result<()> {
        self.device.join(&self.side).map_err(|e| err("waiting for the all-reduces", e))
    }
}

impl Drop for Nccl {
    fn drop(&mut self) {
        // Finish what is queued, then free the communicator (errors are past reporting here).
        let _ = self.side.synchronize();
        // SAFETY: the communicator was made by `new` and is destroyed once, with nothing queued.
        let _ = unsafe { nccl::comm_destroy(self.comm) };
    }
}
