//! Time to accuracy: trains a recipe as `vit train` does and prints the wall time at which the
//! test accuracy first reaches each of a few levels. This is the figure a laptop user feels:
//! loading, augmentation, the steps, evaluation and checkpoints all count.
//!
//! ```sh
//! cargo bench --bench time_to_accuracy                          # the recipe below, 3 epochs
//! cargo bench --bench time_to_accuracy -- --epochs 5 --levels 0.80,0.85,0.88 --threads 1
//! ```
//!
//! The recipe (the small Fashion-MNIST ViT of `BENCHMARKS.md`; `benches/peers/pytorch_time_to_accuracy.py`
//! is the same recipe in PyTorch + timm): 28x28x1, patch 4, dim 64, depth 4, heads 4, MLP 128,
//! batch 64; AdamW (betas 0.9/0.999, eps 1e-8, weight decay 0.05, none on biases, norms,
//! `pos_embed`, `cls_token`), lr 2e-3 with a linear warmup of half an epoch then cosine decay to
//! 1e-5 over the run, per step; label smoothing 0.1, stochastic depth 0.1 (linear over depth),
//! gradient clipping at 1; random crop (zero padding 2) and horizontal flip; evaluation on the
//! whole test set after every epoch. Fashion-MNIST is read from `--data-dir` or the system copy.
//!
//! Accuracy is known once per epoch, after its evaluation, so each level's time is that of the
//! first epoch whose evaluation reached it: from the start of the program (data loading
//! included) to the end of that evaluation (the epoch's checkpoint writes after it not
//! included). Nothing is asserted: this prints figures.

use std::path::PathBuf;
use std::time::Instant;

use vit::data::{AugmentConfig, DatasetKind};
use vit::nn::ViTConfig;
use vit::optim::Decay;
use vit::train::{train, OptimizerKind, TrainConfig};

struct Options {
    epochs: usize,
    threads: usize,
    levels: Vec<f64>,
    data_dir: Option<PathBuf>,
    out: PathBuf,
    train_subset: Option<usize>,
}

const USAGE: &str = "usage: time_to_accuracy [--epochs 3] [--threads 2] [--levels 0.75,0.80,0.85] \
                     [--data-dir DIR] [--out DIR] [--train-subset N]";

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        epochs: 3,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        levels: vec![0.75, 0.80, 0.85],
        data_dir: None,
        out: std::env::temp_dir().join(format!("vit-time-to-accuracy-{}", std::process::id())),
        train_subset: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value\n{USAGE}"));
        let number = |v: String| v.parse::<usize>().map_err(|_| format!("{a}: expected a whole number, got {v:?}"));
        match a.as_str() {
            "--epochs" => o.epochs = number(value()?)?,
            "--threads" => o.threads = number(value()?)?,
            "--train-subset" => o.train_subset = Some(number(value()?)?),
            "--levels" => {
                o.levels = value()?
                    .split(',')
                    .map(|l| l.trim().parse::<f64>().map_err(|_| format!("--levels: not a number: {l:?}")))
                    .collect::<Result<_, _>>()?
            }
            "--data-dir" => o.data_dir = Some(value()?.into()),
            "--out" => o.out = value()?.into(),
            "--bench" => {}
            "-h" | "--help" => return Err(USAGE.into()),
            _ => return Err(format!("unexpected argument {a:?}\n{USAGE}")),
        }
    }
    if o.epochs == 0 || o.threads == 0 || o.levels.iter().any(|l| !(0.0..=1.0).contains(l)) {
        return Err(format!("--epochs and --threads must be positive, --levels in [0, 1]\n{USAGE}"));
    }
    Ok(o)
}

/// The recipe of the module documentation.
fn recipe(o: &Options) -> TrainConfig {
    let model = ViTConfig {
        image_size: 28,
        in_chans: 1,
        num_classes: 10,
        dim: 64,
        depth: 4,
        heads: 4,
        mlp_dim: 128,
        drop_path: 0.1,
        ..ViTConfig::tiny(4, 28)
    };
    TrainConfig {
        model,
        dataset: DatasetKind::FashionMnist,
        data_dir: o.data_dir.clone(),
        train_subset: o.train_subset,
        epochs: o.epochs,
        batch_size: 64,
        optimizer: OptimizerKind::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8 },
        lr: 2e-3,
        min_lr: 1e-5,
        warmup_epochs: 0.5,
        decay: Decay::Cosine,
        weight_decay: 0.05,
        label_smoothing: 0.1,
        clip_grad: Some(1.0),
        augment: AugmentConfig::for_dataset(DatasetKind::FashionMnist),
        out_dir: o.out.clone(),
        progress: false,
        ..TrainConfig::default()
    }
}

fn main() {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let start = Instant::now();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(o.threads).build().expect("a thread pool");
    let cfg = recipe(&o);
    println!(
        "time_to_accuracy: Fashion-MNIST, ViT dim 64 depth 4 heads 4 MLP 128 patch 4, batch 64, {} epochs, {} thread(s)",
        o.epochs, o.threads
    );
    let report = match pool.install(|| train(&cfg)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("time_to_accuracy: {e}");
            std::process::exit(1);
        }
    };
    let total = start.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&o.out);
    // Everything before the first epoch (loading, initialisation) is the part of the total that
    // no epoch accounts for.
    let mut clock = total - report.epochs.iter().map(|r| r.seconds).sum::<f64>();
    println!("setup (data loading, model): {clock:.1} s");
    println!();
    println!("| epoch | wall time at its evaluation (s) | test accuracy | training images/s |");
    println!("|---:|---:|---:|---:|");
    let mut at = Vec::new();
    for r in &report.epochs {
        let evaluated = clock + r.seconds - r.checkpoint_secs;
        clock += r.seconds;
        println!("| {} | {:.1} | {:.2}% | {:.0} |", r.epoch, evaluated, 100.0 * r.test_acc, r.images_per_sec);
        at.push((evaluated, r.test_acc));
    }
    println!();
    println!("| test accuracy reached | wall time (s) | epoch |");
    println!("|---:|---:|---:|");
    for &level in &o.levels {
        match at.iter().position(|&(_, acc)| acc >= level) {
            Some(e) => println!("| {:.0}% | {:.1} | {} |", 100.0 * level, at[e].0, e + 1),
            None => println!("| {:.0}% | not reached in {} epochs | - |", 100.0 * level, o.epochs),
        }
    }
    println!("total wall time: {total:.1} s");
    memory(&report.params);
}

/// The peak resident memory of this process beside what the run needs (see `BENCHMARKS.md`).
fn memory(params: &vit::nn::ParamStore<f32>) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
    let mib = |bytes: usize| bytes as f64 / (1 << 20) as f64;
    let pool = autograd::pool::stats::<f32>();
    // f32 weights, their gradients and AdamW's two moments.
    let model = 16 * params.num_elements();
    match peak_kib {
        Some(kib) => println!("peak resident memory (VmHWM): {:.1} MiB", kib / 1024.0),
        None => println!("peak resident memory: unknown (no /proc/self/status)"),
    }
    println!(
        "parameters + gradients + AdamW moments: {:.1} MiB; buffer pool at the end: {:.1} MiB free, {:.1} MiB in \
         use, bound {:.1} MiB (the largest working set of tensor buffers it served)",
        mib(model),
        mib(pool.retained),
        mib(pool.in_use),
        mib(pool.bound)
    );
}
