//! Data-parallel training across processes: the collective seam and the engines behind it.
//!
//! A distributed run is `W` copies of the same program (ranks `0..W`, one per machine, core
//! group or GPU), each holding the whole model. Every step, each rank computes the gradient of
//! its shard of the global batch; the gradients are summed across ranks, so every rank takes
//! the same optimizer step and the copies stay identical. Five operations are all it takes,
//! and they are the whole seam ([`Collective`]):
//!
//! ```text
//!     rank / world size   who am I, how many are we
//!     all-reduce (sum)    gradients (in buckets, during backward), step and evaluation counts
//!     broadcast           the initial parameters and the resume state, from rank 0
//!     barrier             "everyone is here"
//!     abort               bring every rank down now (a rank failed or hung)
//! ```
//!
//! The engines are existing ones: MPI (module `mpi`, feature `mpi`: Open MPI, started by `mpirun`)
//! across CPU processes and machines; [`Local`] is the world of one process, where every
//! operation is the identity; NCCL across GPUs (module `nccl`, feature `cuda`, one process per
//! GPU), which sums the gradients on the devices while MPI (or, alone, [`Local`]) carries the
//! few host messages: the parameters at the start, the step's loss and counts, the barrier.
//! A GPU run over MPI without NCCL sums its gradients through host memory.
//!
//! The training code never calls an engine directly: [`Comm`] runs the engine on a thread of
//! its own, so an all-reduce of a layer's gradients proceeds while backward computes the layers
//! below ([`GradReducer`]), and every wait on another rank has a deadline, after which the job
//! is aborted with an error instead of hanging.

mod comm;
mod reducer;

#[cfg(feature = "mpi")]
pub mod mpi;
#[cfg(feature = "cuda")]
pub mod nccl;

pub use comm::{Comm, Pending, DEFAULT_TIMEOUT};
pub use reducer::{GradReducer, ReduceStats, BUCKET_BYTES};

use crate::error::Result;

/// What an engine provides. Every method is collective: all ranks call it, in the same order,
/// with buffers of the same length. The calls block until the operation is complete on this
/// rank; [`Comm`] is what adds threading and deadlines. An engine need not be `Send`: it is
/// created on the thread that calls it, and stays there (MPI wants that).
pub trait Collective {
    /// The engine's name for messages (`"MPI"`, `"local"`).
    fn name(&self) -> &'static str;

    /// This process's rank, in `0..world_size()`.
    fn rank(&self) -> usize;

    /// The number of processes.
    fn world_size(&self) -> usize;

    /// `buf <- sum over ranks of buf`, elementwise, in place.
    fn all_reduce_sum_f32(&mut self, buf: &mut [f32]) -> Result<()>;

    /// `buf <- sum over ranks of buf` in f64 (counts and loss sums, exact up to 2^53).
    fn all_reduce_sum_f64(&mut self, buf: &mut [f64]) -> Result<()>;

    /// Every rank's `buf <- root's buf`.
    fn broadcast_bytes(&mut self, buf: &mut [u8], root: usize) -> Result<()>;

    /// Returns once every rank has called it.
    fn barrier(&mut self) -> Result<()>;

    /// A function that ends every process of the job with `code`, callable from any thread
    /// while another is blocked in an operation (the deadline's way out of a hung collective).
    fn aborter(&self) -> Aborter;

    /// `buf <- sum over ranks of buf` for a buffer on a GPU. An engine of host memory (MPI)
    /// copies it to the host, sums there and copies back, waiting for the device; NCCL
    /// overrides this to queue the sum on the devices, and returns before it is done (see
    /// [`Collective::join_device`]).
    #[cfg(feature = "cuda")]
    fn all_reduce_sum_device(&mut self, buf: &mut autograd::cuda::DeviceBuffer<f32>) -> Result<()> {
        let mut host = buf.to_vec();
        self.all_reduce_sum_f32(&mut host)?;
        buf.copy_from_host(&host);
        Ok(())
    }

    /// Orders the device's later work after every [`Collective::all_reduce_sum_device`] so far
    /// (nothing to do for an engine whose device sums are done when they return).
    #[cfg(feature = "cuda")]
    fn join_device(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Ends the whole job with an exit code; never returns.
pub type Aborter = std::sync::Arc<dyn Fn(i32) + Send + Sync>;

/// The world of one process: every collective is the identity.
#[derive(Clone, Copy, Debug, Default)]
pub struct Local;

impl Collective for Local {
    fn name(&self) -> &'static str {
        "local"
    }

    fn rank(&self) -> usize {
        0
    }

    fn world_size(&self) -> usize {
        1
    }

    fn all_reduce_sum_f32(&mut self, _: &mut [f32]) -> Result<()> {
        Ok(())
    }

    fn all_reduce_sum_f64(&mut self, _: &mut [f64]) -> Result<()> {
        Ok(())
    }

    fn broadcast_bytes(&mut self, _: &mut [u8], _: usize) -> Result<()> {
        Ok(())
    }

    fn barrier(&mut self) -> Result<()> {
        Ok(())
    }

    fn aborter(&self) -> Aborter {
        std::sync::Arc::new(|code| std::process::exit(code))
    }
}

/// The world size an MPI launcher announced in the environment, if any: Open MPI's `mpirun`
/// sets `OMPI_COMM_WORLD_SIZE` in every process, MPICH's `mpiexec` and Slurm's `srun` (with PMI)
/// set `PMI_SIZE`.
pub fn launcher_world_size() -> Option<usize> {
    env_number(&["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"])
}

/// This process's rank among those a launcher started on the same machine, if it says: what
/// picks the process's own GPU (`--device cuda` under `mpirun`: local rank r takes GPU r mod N).
pub fn launcher_local_rank() -> Option<usize> {
    env_number(&["OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID", "LOCAL_RANK"])
}

fn env_number(keys: &[&str]) -> Option<usize> {
    keys.iter().find_map(|k| std::env::var(k).ok()?.trim().parse().ok())
}

/// Which engine sums a GPU run's gradients (`--dist-backend`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// NCCL for a GPU run of several processes when the library loads, else host memory (MPI),
    /// saying so.
    #[default]
    Auto,
    /// The host engine (MPI) for everything; GPU gradients go through host memory.
    Host,
    /// NCCL, or an error saying why not; also for a GPU run of one process (the identity sum,
    /// through NCCL: how a one-GPU machine checks the NCCL path).
    Nccl,
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Backend::Auto),
            "mpi" | "host" => Ok(Backend::Host),
            "nccl" => Ok(Backend::Nccl),
            _ => Err(format!("unknown backend {s:?}: expected auto, mpi or nccl")),
        }
    }
}

/// The collective for this process, training on `device`: MPI when it was started by an MPI
/// launcher (and this build has the `mpi` feature), otherwise the world of one; for a GPU run,
/// NCCL beside it as `backend` says. A launch of several processes by a build without MPI is
/// an error, rather than `W` independent runs writing over each other.
pub fn from_environment(timeout: std::time::Duration, device: autograd::Device, backend: Backend) -> Result<Comm> {
    let announced = launcher_world_size();
    if backend == Backend::Nccl && !device.is_cuda() {
        return Err(crate::Error::Distributed(format!(
            "--dist-backend nccl sums on GPUs; this run is on the {device} (pass --device cuda)"
        )));
    }
    #[cfg(feature = "cuda")]
    let nccl = device.is_cuda()
        && match backend {
            Backend::Nccl => true,
            Backend::Host => false,
            Backend::Auto => {
                // The emulator has no NCCL: its gradients go through host memory, as NCCL's would
                // through the GPUs, which is what lets the tests check the path without a GPU.
                let wanted =
                    announced.is_some_and(|w| w > 1) && device != autograd::Device::Cuda(autograd::Device::EMULATOR);
                let have = wanted && autograd::cuda::nccl::available();
                if wanted && !have && env_number(&["OMPI_COMM_WORLD_RANK", "PMI_RANK"]) == Some(0) {
                    eprintln!("NCCL not found (libnccl.so.2): the GPUs' gradients are summed through host memory");
                }
                have
            }
        };
    #[cfg(feature = "mpi")]
    if announced.is_some() {
        return Comm::spawn(timeout, move || {
            let host = Box::new(mpi::Mpi::init()?) as Box<dyn Collective>;
            #[cfg(feature = "cuda")]
            if nccl {
                return Ok(Box::new(nccl::WithNccl::connect(host, device)?) as Box<dyn Collective>);
            }
            Ok(host)
        });
    }
    match announced {
        Some(w) if w > 1 => Err(crate::Error::Distributed(format!(
            "started by a launcher as one of {w} processes, but this vit was built without MPI: rebuild with \
             `cargo build --release --features mpi` (needs an MPI library, e.g. Debian's libopenmpi-dev)"
        ))),
        #[cfg(feature = "cuda")]
        _ if nccl => Comm::spawn(timeout, move || {
            Ok(Box::new(nccl::WithNccl::connect(Box::new(Local), device)?) as Box<dyn Collective>)
        }),
        _ => {
            let _ = timeout;
            Ok(Comm::local())
        }
    }
}
