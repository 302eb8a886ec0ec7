//! The MPI engine (feature `mpi`), through the `mpi` crate (rsmpi) over the system's MPI
//! library (Open MPI on Debian: `apt-get install libopenmpi-dev openmpi-bin`).
//!
//! Start a run with `mpirun -np N vit train ...`: each process finds its rank and the world
//! size from the launcher, and MPI moves the data (shared memory within a machine, the network
//! between machines). MPI's default error handler ends the whole job on a communication error,
//! and `mpirun` ends it when any process exits with an error or is killed.

use std::sync::Arc;

use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
use mpi::environment::Universe;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::Threading;

use super::{Aborter, Collective};
use crate::error::{Error, Result};

/// MPI's world communicator, owned by the thread that initialised MPI.
pub struct Mpi {
    world: SimpleCommunicator,
    /// Whether MPI may be called from another thread while this one is inside a call (then
    /// a deadline can abort through MPI; otherwise the process exits and `mpirun` ends the
    /// others).
    multiple: bool,
    scratch: Vec<f32>,
    scratch64: Vec<f64>,
    // Dropped last: finalises MPI.
    _universe: Universe,
}

impl Mpi {
    /// Initialises MPI on the calling thread (which must be the one that makes every later
    /// call but an abort).
    pub fn init() -> Result<Self> {
        let (universe, provided) = mpi::initialize_with_threading(Threading::Multiple)
            .ok_or_else(|| Error::Distributed("MPI was already initialised in this process".into()))?;
        if provided < Threading::Serialized {
            return Err(Error::Distributed(format!(
                "the MPI library supports threads only at level {provided:?}; vit needs Serialized or better"
            )));
        }
        let world = universe.world();
        Ok(Mpi {
            world,
            multiple: provided == Threading::Multiple,
            scratch: Vec::new(),
            scratch64: Vec::new(),
            _universe: universe,
        })
    }
}

impl Collective for Mpi {
    fn name(&self) -> &'static str {
        "MPI"
    }

    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn world_size(&self) -> usize {
        self.world.size() as usize
    }

    fn all_reduce_sum_f32(&mut self, buf: &mut [f32]) -> Result<()> {
        self.scratch.clear();
        self.scratch.extend_from_slice(buf);
        self.world.all_reduce_into(&self.scratch[..], buf, SystemOperation::sum());
        Ok(())
    }

    fn all_reduce_sum_f64(&mut self, buf: &mut [f64]) -> Result<()> {
        self.scratch64.clear();
        self.scratch64.extend_from_slice(buf);
        self.world.all_reduce_into(&self.scratch64[..], buf, SystemOperation::sum());
        Ok(())
    }

    fn broadcast_bytes(&mut self, buf: &mut [u8], root: usize) -> Result<()> {
        self.world.process_at_rank(root as i32).broadcast_into(buf);
        Ok(())
    }

    fn barrier(&mut self) -> Result<()> {
        self.world.barrier();
        Ok(())
    }

    fn aborter(&self) -> Aborter {
        if self.multiple {
            // MPI_Abort ends every process of the job, from any thread at level Multiple.
            Arc::new(|code| SimpleCommunicator::world().abort(code))
        } else {
            Arc::new(|code| std::process::exit(code))
        }
    }
}
