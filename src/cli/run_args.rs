//! The flags every training run takes, `vit train`'s and `vit finetune`'s, and the run itself:
//! one process, or one rank of `mpirun -np N vit ...` (part of the `vit` binary).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use vit::train::{self, interrupt, TrainConfig};
use vit::{Error, Result};

use super::flag;

#[derive(Args)]
pub struct RunArgs {
    /// Where datasets live (default: data/, where CIFAR-10 is downloaded if missing; Fashion-MNIST
    /// also comes from the system copy when data/ lacks it). A directory given here is the only
    /// place looked in.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Seed of every random choice (initialisation, order, augmentation, dropout).
    #[arg(long, default_value_t = TrainConfig::default().seed)]
    pub seed: u64,
    /// Continue from OUT/last.safetensors, exactly where it stopped, with the run's flags. Safe
    /// to change: --epochs (to extend or shorten a run: the learning-rate schedule is re-planned
    /// over the new total from the step reached), --max-steps, --test-subset, --data-dir, --quiet,
    /// --threads, the number of ranks and --accum-steps, --no-overlap and --dist-timeout; any
    /// other changed flag is refused with the list of differences.
    #[arg(long)]
    pub resume: bool,
    /// Train on the first N training images only.
    #[arg(long)]
    pub train_subset: Option<usize>,
    /// Evaluate on the first N test images only.
    #[arg(long)]
    pub test_subset: Option<usize>,
    /// Stop after N optimizer steps in all (a checkpoint is written; --resume continues).
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Micro-batches per process and step (gradient accumulation: the same update in 1/N of the
    /// memory; --batch-size is the global batch over all of them). Default: 1, or on --resume
    /// what keeps the run's trajectory bit for bit (a 2-rank run resumed by 1 process takes 2).
    #[arg(long, alias = "grad-accum")]
    pub accum_steps: Option<usize>,
    /// Under mpirun: sum the gradients across ranks after backward rather than during it (to
    /// measure what the overlap hides).
    #[arg(long)]
    pub no_overlap: bool,
    /// Under mpirun: seconds a rank waits for the others before it aborts the job (a rank that
    /// died or hangs).
    #[arg(long, default_value_t = vit::dist::DEFAULT_TIMEOUT.as_secs_f64())]
    pub dist_timeout: f64,
    /// Under mpirun on GPUs: what sums the gradients. auto: NCCL, GPU to GPU, when libnccl
    /// loads, else host memory over MPI; mpi: host memory over MPI; nccl: NCCL or an error (also
    /// in a run of one process, to check the NCCL path on one GPU).
    #[arg(long, default_value = "auto")]
    pub dist_backend: vit::dist::Backend,
}

impl RunArgs {
    /// `cfg` with these flags' settings.
    pub fn apply(&self, cfg: TrainConfig) -> Result<TrainConfig> {
        let t = self.dist_timeout;
        flag(t.is_finite() && t > 0.0 && t <= 1e9, "--dist-timeout", "a number of seconds > 0", t)?;
        Ok(TrainConfig {
            data_dir: self.data_dir.clone(),
            seed: self.seed,
            resume: self.resume,
            train_subset: self.train_subset,
            test_subset: self.test_subset,
            max_steps: self.max_steps,
            progress: !self.quiet,
            grad_accum: self.accum_steps,
            overlap_comm: !self.no_overlap,
            ..cfg
        })
    }

    /// Runs `cfg` as one process or as this rank of an MPI job; rank 0 first prints `what`
    /// (the run's one-line summary) and at the end the best accuracy.
    pub fn run(&self, cfg: &TrainConfig, what: &str) -> Result<()> {
        let comm =
            vit::dist::from_environment(Duration::from_secs_f64(self.dist_timeout), cfg.device, self.dist_backend)?;
        let (world, root) = (comm.world_size(), comm.is_root());
        if root {
            eprintln!("{what}");
            if world > 1 {
                eprintln!(
                    "data-parallel over {world} ranks ({}): each trains on about {} images of every batch of {}, with \
                     {} threads; rank 0 writes",
                    comm.engine(),
                    cfg.batch_size / world,
                    cfg.batch_size,
                    rayon::current_num_threads()
                );
            }
        }
        interrupt::install_handler()?;
        match train::train_with(cfg, &comm) {
            Ok(report) => {
                if root && report.epochs.is_empty() && report.best_test_acc == 0.0 {
                    // Stopped (--max-steps) before any epoch ended: nothing has been evaluated,
                    // and "0.00%" would read as a result.
                    eprintln!(
                        "stopped after {} steps, before the end of an epoch: not evaluated yet; checkpoint: {}",
                        report.steps_run,
                        report.last_checkpoint.display()
                    );
                } else if root {
                    eprintln!(
                        "best test accuracy {:.2}%; checkpoint: {}",
                        100.0 * report.best_test_acc,
                        report.last_checkpoint.display()
                    );
                }
                Ok(())
            }
            // Every rank stopped at the same step and rank 0 wrote the checkpoint: a clean end.
            Err(Error::Interrupted(_)) if !root => {
                drop(comm);
                std::process::exit(interrupt::EXIT_CODE.into())
            }
            Err(e @ Error::Interrupted(_)) => Err(e),
            // Another rank may be waiting in a collective for this one: end them all now rather
            // than leave them to their deadline. A failure of rank 0 reported to every rank is
            // said once, by rank 0.
            Err(e) if world > 1 => {
                let echo = root || !e.to_string().contains("rank 0 failed");
                comm.abort(&if echo { format!("{e}") } else { "stopping with rank 0".into() })
            }
            Err(e) => Err(e),
        }
    }
}
