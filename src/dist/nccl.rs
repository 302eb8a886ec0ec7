//! The NCCL engine (feature `cuda`): gradients summed GPU to GPU, one process per GPU.
//!
//! NCCL only moves device memory, and a job needs a few host messages too (rank 0's parameters
//! at the start, the step's loss and counts, the recipe check, the barrier), so [`WithNccl`]
//! pairs NCCL with a host engine: MPI under `mpirun` (which also hands NCCL its communicator id
//! at the start), or [`super::Local`] in a run of one process, where NCCL's sum is the identity
//! and running it checks the path on a one-GPU machine. It is the usual split (Horovod's, and
//! PyTorch's with an MPI or TCP store beside NCCL): the launcher's engine for control, NCCL for
//! the bytes that matter.

use autograd::cuda::nccl::{self, Nccl, ID_BYTES};
use autograd::cuda::DeviceBuffer;
use autograd::Device;

use super::{Aborter, Collective};
use crate::error::{Error, Result};

/// NCCL for the device sums, a host engine for the rest.
pub struct WithNccl {
    host: Box<dyn Collective>,
    nccl: Nccl,
}

impl WithNccl {
    /// Opens NCCL on `device` for the ranks of `host`: rank 0 makes the communicator id, the
    /// host engine broadcasts it, every rank joins.
    pub fn connect(mut host: Box<dyn Collective>, device: Device) -> Result<Self> {
        let Device::Cuda(ordinal) = device else {
            return Err(Error::Distributed(format!("NCCL sums on GPUs; this run is on the {device}")));
        };
        let fail = |e: autograd::cuda::CudaError| Error::Distributed(format!("NCCL on {device}: {e}"));
        let gpu = autograd::cuda::device(ordinal).map_err(fail)?;
        if gpu.is_emulator() {
            return Err(Error::Distributed(format!(
                "NCCL on {device}: the CUDA emulator has no NCCL (it runs kernels on the CPU; its data-parallel runs \
                 sum through host memory: --dist-backend mpi)"
            )));
        }
        // Rank 0 makes the id; an error there is sent on as an all-zero id, so that no rank
        // waits for an id that will never come, and every rank reports it.
        let mut id = [0u8; ID_BYTES];
        let made = if host.rank() == 0 { nccl::unique_id().map(|i| id = i) } else { Ok(()) };
        host.broadcast_bytes(&mut id, 0)?;
        made.map_err(fail)?;
        if id == [0u8; ID_BYTES] {
            return Err(Error::Distributed("rank 0 could not make an NCCL communicator id (see its error)".into()));
        }
        let nccl = Nccl::new(&gpu, host.rank(), host.world_size(), &id).map_err(fail)?;
        Ok(WithNccl { host, nccl })
    }
}

impl Collective for WithNccl {
    fn name(&self) -> &'static str {
        "NCCL"
    }

    fn rank(&self) -> usize {
        self.nccl.rank()
    }

    fn world_size(&self) -> usize {
        self.nccl.world_size()
    }

    fn all_reduce_sum_f32(&mut self, buf: &mut [f32]) -> Result<()> {
        self.host.all_reduce_sum_f32(buf)
    }

    fn all_reduce_sum_f64(&mut self, buf: &mut [f64]) -> Result<()> {
        self.host.all_reduce_sum_f64(buf)
    }

    fn broadcast_bytes(&mut self, buf: &mut [u8], root: usize) -> Result<()> {
        self.host.broadcast_bytes(buf, root)
    }

    fn barrier(&mut self) -> Result<()> {
        self.host.barrier()
    }

    fn aborter(&self) -> Aborter {
        self.host.aborter()
    }

    fn all_reduce_sum_device(&mut self, buf: &mut DeviceBuffer<f32>) -> Result<()> {
        self.nccl.all_reduce_sum_f32(buf).map_err(|e| Error::Distributed(e.to_string()))
    }

    fn join_device(&mut self) -> Result<()> {
        self.nccl.join().map_err(|e| Error::Distributed(e.to_string()))
    }
}
