//! The ViT's whole training step and inference on a CUDA device: the issue's benchmark.
//!
//! ```sh
//! cargo run --release --features cuda --example gpu_train_bench -- [--batch 128 --batch 512] [--steps 10] [--warmup 3] [--tf32] [--emulator]
//! ```
//!
//! ViT-Ti/4 on 32x32x3 (dim 192, depth 12, heads 3, MLP 768, 10 classes; the `vit-ti4` of
//! `benches/train_bench.rs` and `vit_tiny_cifar` of `benches/peers/pytorch_vit_bench.py`, run
//! beside it with `--device cuda`), on one fixed synthetic batch, no dropout or stochastic depth.
//!
//! - **train**: [`vit::train::train_step`] with AdamW (lr 1e-3, weight decay 0.05), the
//!   parameters and moments on the device: upload of the batch, forward, cross-entropy,
//!   backward, gradient norm, update, and the loss, norm and logits read back.
//! - **infer**: [`vit::train::predict_logits`] (no tape), logits read back.
//!
//! images/s = batch / median step time over `--steps` timed steps after `--warmup`, each step
//! ending with a read-back (so the device has finished it). Peak device memory is the caching
//! allocator's (reserved: what the process took from the driver; in use: the tensors' share),
//! and the driver allocations per timed step (0 in a steady state). Without a GPU it prints
//! `skipped:` and why; `--emulator` runs it on the CUDA emulator at a small batch instead, a
//! check that the program runs end to end (those figures measure the emulator, not a GPU).

use std::sync::Arc;
use std::time::Instant;

use autograd::cuda::{self, Gpu};
use autograd::{Device, Rng, Tensor};
use vit::data::Batch;
use vit::nn::{ViTConfig, VisionTransformer};
use vit::optim::AdamW;
use vit::train::{predict_logits, train_step};

struct Options {
    batches: Vec<usize>,
    steps: usize,
    warmup: usize,
    tf32: bool,
    emulator: bool,
}

fn parse() -> Result<Options, String> {
    let mut o = Options { batches: Vec::new(), steps: 10, warmup: 3, tf32: false, emulator: false };
    let mut args = std::env::args().skip(1);
    let number = |flag: &str, v: Option<String>| -> Result<usize, String> {
        v.and_then(|v| v.parse().ok()).filter(|&n| n > 0).ok_or(format!("{flag} needs a positive number"))
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--batch" => o.batches.push(number("--batch", args.next())?),
            "--steps" => o.steps = number("--steps", args.next())?,
            "--warmup" => o.warmup = number("--warmup", args.next())?,
            "--tf32" => o.tf32 = true,
            "--emulator" => o.emulator = true,
            _ => return Err(format!("unknown argument {a:?}")),
        }
    }
    if o.batches.is_empty() {
        o.batches = if o.emulator { vec![2] } else { vec![128, 512] };
    }
    Ok(o)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Times `f` `warmup + steps` times; the median of the timed ones, in seconds.
fn time(warmup: usize, steps: usize, mut f: impl FnMut(usize)) -> f64 {
    let mut times = Vec::with_capacity(steps);
    for i in 0..warmup + steps {
        let t = Instant::now();
        f(i);
        if i >= warmup {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    median(times)
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn run(gpu: &Arc<Gpu>, device: Device, o: &Options) -> Result<(), String> {
    let mut c = ViTConfig::tiny(4, 32);
    c.num_classes = 10;
    println!("{}: ViT-Ti/4 (dim 192, depth 12, heads 3, 65 tokens), f32, tf32 {}", gpu.describe(), o.tf32);
    println!("mode\tbatch\timg/s\tstep_ms\tpeak_reserved_mib\tpeak_in_use_mib\tdriver_allocs_per_step\tloss");
    for &b in &o.batches {
        let (model, params) = VisionTransformer::init::<f32>(&c, 0).map_err(|e| e.to_string())?;
        let mut params = params.to(device).map_err(|e| e.to_string())?;
        let mut rng = Rng::seed(42);
        let shape = [b, 3, 32, 32];
        let images = Tensor::<f32>::randn(&shape, 0.0, 1.0, &mut rng).into_vec();
        let labels: Vec<usize> = (0..b).map(|_| rng.below(10)).collect();
        let batch = Batch { images: images.clone(), labels, mix: None, shape, indices: (0..b).collect() };

        let mut opt = AdamW::new(&params, 0.9, 0.999, 1e-8, 0.05);
        gpu.reset_peak_memory();
        let (mut loss, mut allocs_before) = (f64::NAN, 0);
        let train = time(o.warmup, o.steps, |i| {
            if i == o.warmup {
                allocs_before = gpu.memory_stats().driver_allocations;
            }
            let out =
                train_step(&model, &mut params, &mut opt, batch.clone(), 1e-3, 0.0, None, &mut Rng::seed(i as u64))
                    .expect("a training step");
            loss = out.loss;
        });
        let m = gpu.memory_stats();
        let per_step = (m.driver_allocations - allocs_before) as f64 / o.steps as f64;
        println!(
            "train\t{b}\t{:.1}\t{:.2}\t{:.1}\t{:.1}\t{per_step:.1}\t{loss:.4}",
            b as f64 / train,
            1e3 * train,
            mib(m.peak_reserved),
            mib(m.peak_in_use)
        );

        gpu.reset_peak_memory();
        let allocs_before = gpu.memory_stats().driver_allocations;
        let infer = time(o.warmup, o.steps, |_| {
            std::hint::black_box(predict_logits(&model, &params, images.clone(), &shape));
        });
        let m = gpu.memory_stats();
        let per_step = (m.driver_allocations - allocs_before) as f64 / (o.warmup + o.steps) as f64;
        println!(
            "infer\t{b}\t{:.1}\t{:.2}\t{:.1}\t{:.1}\t{per_step:.1}\t-",
            b as f64 / infer,
            1e3 * infer,
            mib(m.peak_reserved),
            mib(m.peak_in_use)
        );
    }
    Ok(())
}

fn main() {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("gpu_train_bench: {e}");
            std::process::exit(2);
        }
    };
    let opened = if o.emulator {
        cuda::emulator().map(|g| (g, Device::Cuda(Device::EMULATOR)))
    } else {
        cuda::device(0).map(|g| (g, Device::Cuda(0)))
    };
    let (gpu, device) = match opened {
        Ok(x) => x,
        Err(e) => {
            println!("skipped: no CUDA device ({e}): nothing measured");
            return;
        }
    };
    if o.emulator {
        println!("emulation: these figures measure the CUDA emulator on the CPU, not a GPU");
    }
    gpu.set_tf32(o.tf32);
    if let Err(e) = run(&gpu, device, &o) {
        eprintln!("gpu_train_bench: {e}");
        std::process::exit(1);
    }
}
