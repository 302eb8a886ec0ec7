//! [`Comm`]: the engine on a thread of its own, every wait with a deadline.
//!
//! The training loop hands operations to the engine's thread as jobs and waits for their
//! results, or (for the gradient buckets) goes on computing and collects them later. The
//! engine's thread is the only one that calls the engine, so MPI sees one thread at a time
//! (only the abort of a hung job comes from elsewhere).
//!
//! A wait that passes its deadline means a rank died or hangs. The other ranks cannot tell
//! which, and cannot finish the collective without it, so the waiting rank says what it was
//! waiting for and aborts the whole job: every rank exits in bounded time, and since only
//! complete checkpoints are ever renamed into place, the last one stays intact.

use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{Aborter, Collective, Local};
use crate::error::{Error, Result};

/// How long a rank waits for the others by default before aborting the job (a checkpoint
/// written by rank 0 or an unbalanced evaluation is well under this; a hung rank is not).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

type Job = Box<dyn FnOnce(&mut dyn Collective) + Send>;

/// The exit code of a job aborted because a rank failed or did not answer.
const ABORT_CODE: i32 = 1;

/// The training loop's handle on the ranks of a run. See the module documentation.
pub struct Comm {
    rank: usize,
    world: usize,
    engine: &'static str,
    timeout: Duration,
    worker: Option<Worker>,
}

struct Worker {
    jobs: Option<Sender<Job>>,
    abort: Aborter,
    handle: Option<JoinHandle<()>>,
}

/// The result of an operation under way on the engine's thread.
pub struct Pending<R> {
    what: String,
    rx: Option<Receiver<Result<R>>>,
    ready: Option<Result<R>>,
}

impl Comm {
    /// The world of one process: no thread, every operation the identity.
    pub fn local() -> Self {
        Comm { rank: 0, world: 1, engine: Local.name(), timeout: DEFAULT_TIMEOUT, worker: None }
    }

    /// Starts the engine that `make` creates on a thread of its own (an MPI engine must be
    /// created on the thread that calls it); waits on other ranks at most `timeout`.
    pub fn spawn(
        timeout: Duration,
        make: impl FnOnce() -> Result<Box<dyn Collective>> + Send + 'static,
    ) -> Result<Self> {
        let (jobs_tx, jobs_rx) = channel::<Job>();
        let (hello_tx, hello_rx) = channel();
        let handle = std::thread::Builder::new()
            .name("vit-collective".into())
            .spawn(move || {
                let mut engine = match make() {
                    Ok(e) => e,
                    Err(e) => {
                        let _ = hello_tx.send(Err(e));
                        return;
                    }
                };
                let _ = hello_tx.send(Ok((engine.rank(), engine.world_size(), engine.name(), engine.aborter())));
                // Runs jobs until the Comm is dropped; then the engine is dropped here, on its
                // own thread (MPI_Finalize).
                for job in jobs_rx {
                    job(engine.as_mut());
                }
            })
            .map_err(|e| Error::Distributed(format!("cannot start the collective thread: {e}")))?;
        let (rank, world, engine, abort) =
            hello_rx.recv().map_err(|_| Error::Distributed("the collective thread died while starting".into()))??;
        Ok(Comm {
            rank,
            world,
            engine,
            timeout,
            worker: Some(Worker { jobs: Some(jobs_tx), abort, handle: Some(handle) }),
        })
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of processes.
    pub fn world_size(&self) -> usize {
        self.world
    }

    /// Whether this is the world of one without an engine thread, where every collective is
    /// the identity (a spawned engine of one rank, such as NCCL checked on one GPU, is not).
    pub fn is_local(&self) -> bool {
        self.worker.is_none()
    }

    /// Whether this is the rank that writes files and prints progress.
    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// The engine's name.
    pub fn engine(&self) -> &'static str {
        self.engine
    }

    /// How long a wait on the other ranks may take before the job is aborted.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sets the deadline of every later wait.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Starts `op` on the engine's thread; `what` names it in a timeout's message. In the world
    /// of one, runs it here and now on [`Local`].
    pub fn submit<R: Send + 'static>(
        &self,
        what: impl Into<String>,
        op: impl FnOnce(&mut dyn Collective) -> Result<R> + Send + 'static,
    ) -> Pending<R> {
        let what = what.into();
        let Some(worker) = &self.worker else {
            return Pending { what, rx: None, ready: Some(op(&mut Local)) };
        };
        let (tx, rx) = channel();
        let job: Job = Box::new(move |engine| {
            let _ = tx.send(op(engine));
        });
        match worker.jobs.as_ref().map(|j| j.send(job)) {
            Some(Ok(())) => Pending { what, rx: Some(rx), ready: None },
            _ => Pending {
                what: what.clone(),
                rx: None,
                ready: Some(Err(Error::Distributed(format!("{what}: the collective thread has stopped")))),
            },
        }
    }

    /// Runs `op` on the engine's thread and waits for it (at most the deadline).
    pub fn run<R: Send + 'static>(
        &self,
        what: impl Into<String>,
        op: impl FnOnce(&mut dyn Collective) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        self.submit(what, op).wait(self)
    }

    /// The elementwise sum over ranks of `values`.
    pub fn sum_f64(&self, what: &str, mut values: Vec<f64>) -> Result<Vec<f64>> {
        if self.world == 1 {
            return Ok(values);
        }
        self.run(what, move |c| c.all_reduce_sum_f64(&mut values).map(|()| values))
    }

    /// Whether `flag` is true on any rank.
    pub fn any(&self, what: &str, flag: bool) -> Result<bool> {
        Ok(self.sum_f64(what, vec![f64::from(u8::from(flag))])?[0] > 0.0)
    }

    /// Rank 0's `values` on every rank (same length everywhere).
    pub fn broadcast_f32(&self, what: &str, values: Vec<f32>) -> Result<Vec<f32>> {
        if self.world == 1 {
            return Ok(values);
        }
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let bytes = self.run(what, move |c| {
            let mut bytes = bytes;
            c.broadcast_bytes(&mut bytes, 0).map(|()| bytes)
        })?;
        Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    }

    /// Rank 0's `values` on every rank (same length everywhere).
    pub fn broadcast_f64(&self, what: &str, values: Vec<f64>) -> Result<Vec<f64>> {
        if self.world == 1 {
            return Ok(values);
        }
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let bytes = self.broadcast_bytes(what, bytes)?;
        Ok(bytes.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes"))).collect())
    }

    /// Rank 0's bytes on every rank, whatever their length elsewhere (the length goes first).
    pub fn broadcast_bytes(&self, what: &str, bytes: Vec<u8>) -> Result<Vec<u8>> {
        if self.world == 1 {
            return Ok(bytes);
        }
        self.run(what, move |c| {
            let mut len = (bytes.len() as u64).to_le_bytes();
            c.broadcast_bytes(&mut len, 0)?;
            let mut buf = bytes;
            buf.resize(u64::from_le_bytes(len) as usize, 0);
            // (MPI refuses the dangling pointer of an empty buffer.)
            if !buf.is_empty() {
                c.broadcast_bytes(&mut buf, 0)?;
            }
            Ok(buf)
        })
    }

    /// Waits until every rank is here.
    pub fn barrier(&self, what: &str) -> Result<()> {
        if self.world == 1 {
            return Ok(());
        }
        self.run(what, |c| c.barrier())
    }

    /// Makes the outcome of something only rank 0 did (writing a checkpoint, reading the resume
    /// state) every rank's. Rank 0 passes `Some(its result)` and gets it back (`Ok(Some(value))`
    /// or its own error); the others pass `None` and get `Ok(None)`, or an error carrying rank
    /// 0's message.
    pub fn agree<T>(&self, what: &str, root_result: Option<Result<T>>) -> Result<Option<T>> {
        assert_eq!(root_result.is_some(), self.is_root(), "Comm::agree: rank 0, and only rank 0, has a result");
        if self.world == 1 {
            return root_result.expect("rank 0 has a result").map(Some);
        }
        let message = match &root_result {
            Some(Err(e)) => format!("{e}").into_bytes(),
            _ => Vec::new(),
        };
        let failed = self.broadcast_bytes(what, message)?;
        match root_result {
            Some(r) => r.map(Some),
            None if failed.is_empty() => Ok(None),
            None => Err(Error::Distributed(format!("rank 0 failed: {}", String::from_utf8_lossy(&failed)))),
        }
    }

    /// Ends every process of the job with an error exit code, after saying why; for failures
    /// the other ranks cannot learn about through a collective (this rank cannot go on).
    pub fn abort(&self, why: &str) -> ! {
        eprintln!("vit: rank {} of {}: {why}; aborting all ranks", self.rank, self.world);
        if let Some(w) = &self.worker {
            (w.abort)(ABORT_CODE);
        }
        std::process::exit(ABORT_CODE)
    }
}

impl Drop for Comm {
    /// Stops the engine's thread, which finalises the engine. Called on the way out of a run
    /// that ended at a point all ranks agreed on; a run that failed on its own aborts instead.
    fn drop(&mut self) {
        if let Some(w) = &mut self.worker {
            drop(w.jobs.take());
            if let Some(h) = w.handle.take() {
                let _ = h.join();
            }
        }
    }
}

impl<R> Pending<R> {
    /// The operation's result. A wait past the deadline aborts the job: the other ranks are
    /// gone or hung, and no rank can complete the collective without them.
    pub fn wait(mut self, comm: &Comm) -> Result<R> {
        if let Some(r) = self.ready.take() {
            return r;
        }
        let rx = self.rx.take().expect("a pending operation has a receiver or a result");
        match rx.recv_timeout(comm.timeout) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => comm.abort(&format!(
                "no answer from the other ranks within {} s while {}: a rank has died or hangs",
                comm.timeout.as_secs(),
                self.what
            )),
            Err(RecvTimeoutError::Disconnected) => {
                Err(Error::Distributed(format!("{}: the collective thread stopped", self.what)))
            }
        }
    }
}
