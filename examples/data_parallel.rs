//! Data-parallel scaling: images/s of ViT-Tiny/4 training steps on one process or as the ranks
//! of `mpirun`, and the time of the gradient all-reduce per step.
//!
//! ```sh
//! cargo build --release --features mpi --example data_parallel
//! mpirun -np 1 target/release/examples/data_parallel --threads 1
//! mpirun -np 2 target/release/examples/data_parallel --threads 1
//! mpirun -np 2 target/release/examples/data_parallel --threads 1 --no-overlap
//! ```
//!
//! The run is `vit::train::train_on_with` (the loop `vit train` runs: sharded loader, bucketed
//! all-reduce overlapped with backward, rank-0 checkpoint at the end) on synthetic CIFAR-shaped
//! data (random 32x32x3 images in 10 classes), the default recipe's model (ViT-Ti/4) and
//! optimizer, batch `--batch` (global, 128), for `--steps` steps after one warm-up step; no
//! augmentation, dropout or stochastic depth. Rank 0 prints images/s over the timed steps (the
//! global batch per step time) and, per step, the gradient bytes, the engine's all-reduce time
//! and the part of it backward did not hide. Nothing is asserted.

use std::time::{Duration, Instant};

use autograd::Rng;
use vit::data::{AugmentConfig, Dataset, ImageShape};
use vit::train::{train_on_with, TrainConfig};

fn flag(args: &[String], name: &str) -> Option<usize> {
    let i = args.iter().position(|a| a == name)?;
    Some(args.get(i + 1)?.parse().unwrap_or_else(|_| panic!("{name} wants a number")))
}

fn synthetic(n: usize, seed: u64) -> Dataset {
    let shape = ImageShape::new(3, 32, 32);
    let mut rng = Rng::seed(seed);
    let images = (0..n * shape.len()).map(|_| rng.below(256) as u8).collect();
    let labels = (0..n).map(|_| rng.below(10) as u8).collect();
    Dataset::new(images, labels, shape, (0..10).map(|k| format!("class{k}")).collect()).expect("a valid dataset")
}

fn main() -> vit::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let threads = flag(&args, "--threads").unwrap_or(1);
    let steps = flag(&args, "--steps").unwrap_or(10) as u64;
    let batch = flag(&args, "--batch").unwrap_or(128);
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().expect("a thread pool");
    let comm = vit::dist::from_environment(vit::dist::DEFAULT_TIMEOUT, autograd::Device::Cpu, Default::default())?;
    let out = std::env::temp_dir().join(format!("vit-data-parallel-{}", std::process::id()));
    let mut cfg = TrainConfig {
        epochs: 1,
        batch_size: batch,
        augment: AugmentConfig::none(),
        out_dir: out.clone(),
        progress: false,
        overlap_comm: !args.iter().any(|a| a == "--no-overlap"),
        device: autograd::Device::Cpu,
        ..TrainConfig::default()
    };
    cfg.model.drop_path = 0.0;
    let (train, test) = (synthetic(batch * (steps as usize + 2), 1), synthetic(comm.world_size(), 2));

    // One warm-up step, then the timed ones (resumed from it, as a run continues).
    cfg.max_steps = Some(1);
    train_on_with(&cfg, train.clone(), test.clone(), &comm)?;
    cfg.max_steps = Some(1 + steps);
    cfg.resume = true;
    let t = Instant::now();
    let report = train_on_with(&cfg, train, test, &comm)?;
    let secs = t.elapsed().as_secs_f64();
    if comm.is_root() {
        let per = |d: Duration| 1e3 * d.as_secs_f64() / report.steps_run as f64;
        println!(
            "ranks {}  threads/rank {threads}  batch {batch}  steps {}  overlap {}  {:.1} images/s  all-reduce {:.1} MB/step: \
             {:.1} ms/step in the engine, {:.1} ms/step not hidden",
            comm.world_size(),
            report.steps_run,
            cfg.overlap_comm,
            (report.steps_run as usize * batch) as f64 / secs,
            report.reduce.bytes as f64 / report.steps_run as f64 / 1e6,
            per(report.reduce.all_reduce),
            per(report.reduce.exposed)
        );
        let _ = std::fs::remove_dir_all(&out);
    }
    Ok(())
}
