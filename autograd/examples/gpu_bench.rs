//! GPU benchmark of the ops that run on CUDA through the device seam so far: one ViT-Ti/4
//! encoder block (dim 192, 3 heads, MLP 768, 65 tokens) written with the unfused ops that have
//! a CUDA path (layer norm, `matmul_t` + bias, batched `matmul` and softmax for attention,
//! GELU, residual adds), forward and backward from a scalar loss, at batch 128 and 512.
//!
//! ```sh
//! cargo run --release -p autograd --features cuda --example gpu_bench -- [--steps 10] [--warmup 3] [--batch 128 --batch 512] [--tf32] [--emulator]
//! ```
//!
//! Prints, per batch: images/s of a forward + backward (median over `--steps` after `--warmup`,
//! the device synchronised before each clock read), of a forward alone, and the allocator's peak
//! device memory (reserved and in use) and driver allocations per steady-state step; and the
//! same step on the CPU (this process's threads) for the ratio. Without a GPU it prints
//! `skipped:` and why. `--emulator` runs it on the CUDA emulator instead, a check that the
//! program runs end to end: those figures measure the emulator, not a GPU.
//!
//! The whole ViT (fused ops, optimizer, data path) is measured by the `vit` crate's
//! `examples/gpu_train_bench.rs`; this one isolates the unfused ops of one block.

use std::time::Instant;

use autograd::cuda::{self, Gpu};
use autograd::ops::gelu::GeluKind;
use autograd::{Device, Graph, Rng, Tensor, Var};

const DIM: usize = 192;
const HEADS: usize = 3;
const MLP: usize = 768;
const TOKENS: usize = 65;

/// The block's parameters, in the order `block` reads them.
fn params(device: Device) -> Vec<Tensor> {
    let mut rng = Rng::seed(7);
    let mut w = |shape: &[usize]| Tensor::randn(shape, 0.0, 0.02, &mut rng).to(device).expect("upload");
    let ones = |n: usize| Tensor::ones(&[n]).to(device).expect("upload");
    let zeros = |n: usize| Tensor::zeros(&[n]).to(device).expect("upload");
    vec![
        ones(DIM),
        zeros(DIM),
        w(&[3 * DIM, DIM]),
        zeros(3 * DIM),
        w(&[DIM, DIM]),
        zeros(DIM),
        ones(DIM),
        zeros(DIM),
        w(&[MLP, DIM]),
        zeros(MLP),
        w(&[DIM, MLP]),
        zeros(DIM),
    ]
}

/// `x + MSA(LN(x))`, then `+ MLP(LN(.))` (eqs. 2-3 of the paper), reduced to `mean(y^2)`; the
/// attention is the model's plain (unfused) path: QKV split into heads by a permute, softmax of
/// the scaled scores, heads merged back.
fn block(g: &mut Graph, x: Var, p: &[Var], batch: usize) -> Var {
    let dh = DIM / HEADS;
    let h = g.layer_norm(x, p[0], p[1], 1e-6);
    let qkv = g.matmul_t(h, p[2]);
    let qkv = g.add(qkv, p[3]);
    let qkv = g.reshape(qkv, &[batch, TOKENS, 3, HEADS, dh]);
    let qkv = g.permute(qkv, &[2, 0, 3, 1, 4]);
    let [q, k, v] = [0, 1, 2].map(|i| {
        let t = g.narrow(qkv, 0, i, 1);
        g.reshape(t, &[batch, HEADS, TOKENS, dh])
    });
    let s = g.matmul_t(q, k);
    let s = g.mul_scalar(s, 1.0 / (dh as f64).sqrt());
    let a = g.softmax(s);
    let o = g.matmul(a, v);
    let o = g.permute(o, &[0, 2, 1, 3]);
    let o = g.reshape(o, &[batch, TOKENS, DIM]);
    let o = g.matmul_t(o, p[4]);
    let o = g.add(o, p[5]);
    let x = g.add(x, o);
    let h = g.layer_norm(x, p[6], p[7], 1e-6);
    let h = g.matmul_t(h, p[8]);
    let h = g.add(h, p[9]);
    let h = g.gelu(h, GeluKind::Erf);
    let h = g.matmul_t(h, p[10]);
    let h = g.add(h, p[11]);
    let y = g.add(x, h);
    let y2 = g.mul(y, y);
    g.mean_all(y2)
}

/// One step on `device`: forward (and backward when `train`), then a wait for the device.
fn step(device: Device, gpu: Option<&Gpu>, params: &[Tensor], x: &Tensor, batch: usize, train: bool) {
    let mut g = if train { Graph::new() } else { Graph::inference() };
    g.set_record_grad_norms(false);
    let xv = g.input(x.clone());
    let p: Vec<Var> = params.iter().map(|t| g.param(t)).collect();
    let loss = block(&mut g, xv, &p, batch);
    if train {
        g.backward(loss);
        // Take the gradients off the tape, as a training step hands them to its optimizer.
        for &v in &p {
            std::hint::black_box(g.take_grad(v));
        }
    }
    debug_assert_eq!(g.value(loss).device(), device);
    if let Some(gpu) = gpu {
        gpu.synchronize();
    }
}

/// Median seconds of `steps` calls after `warmup`.
fn median_seconds(warmup: usize, steps: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..warmup {
        f();
    }
    let mut t: Vec<f64> = (0..steps)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut steps, mut warmup, mut batches, mut tf32, mut emulator) = (10usize, 3usize, Vec::new(), false, false);
    while let Some(a) = args.next() {
        let mut num = |what: &str| -> usize {
            let v = args.next().unwrap_or_default();
            v.parse().unwrap_or_else(|_| {
                eprintln!("gpu_bench: {what} expects a positive number, got {v:?}");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "--steps" => steps = num("--steps").max(1),
            "--warmup" => warmup = num("--warmup"),
            "--batch" => batches.push(num("--batch").max(1)),
            "--tf32" => tf32 = true,
            "--emulator" => emulator = true,
            _ => {
                eprintln!("usage: gpu_bench [--steps N] [--warmup N] [--batch B ...] [--tf32] [--emulator]");
                std::process::exit(2)
            }
        }
    }
    if batches.is_empty() {
        batches = vec![128, 512];
    }
    let gpu = if emulator {
        cuda::emulator()
    } else {
        match cuda::device_count() {
            Ok(n) if n > 0 => cuda::device(0),
            Ok(_) => {
                println!("skipped: no CUDA device (the driver reports none): nothing measured");
                return;
            }
            Err(e) => {
                println!("skipped: no CUDA device ({e}): nothing measured");
                return;
            }
        }
    };
    let gpu = match gpu {
        Ok(g) => g,
        Err(e) => {
            println!("skipped: the CUDA device cannot be opened ({e}): nothing measured");
            return;
        }
    };
    gpu.set_tf32(tf32);
    let dev = Device::Cuda(gpu.ordinal());
    println!("device: {} ({dev}), TF32 {}", gpu.describe(), if tf32 { "on" } else { "off" });
    if emulator {
        println!("note: the CUDA emulator runs the kernels on the CPU: these figures measure the emulator, not a GPU");
    }
    println!("one ViT-Ti/4 encoder block (dim {DIM}, {HEADS} heads, MLP {MLP}, {TOKENS} tokens), unfused ops, f32");
    println!(
        "{:>6} {:>14} {:>14} {:>14} {:>12} {:>12} {:>16}",
        "batch", "train img/s", "infer img/s", "cpu train img/s", "peak MiB", "in use MiB", "driver allocs/step"
    );
    let (gpu_params, cpu_params) = (params(dev), params(Device::Cpu));
    for &batch in &batches {
        let x = Tensor::randn(&[batch, TOKENS, DIM], 0.0, 1.0, &mut Rng::seed(1));
        let xd = x.to(dev).expect("upload");
        gpu.reset_peak_memory();
        let train = median_seconds(warmup, steps, || step(dev, Some(&gpu), &gpu_params, &xd, batch, true));
        let before = gpu.memory_stats().driver_allocations;
        step(dev, Some(&gpu), &gpu_params, &xd, batch, true);
        let allocs = gpu.memory_stats().driver_allocations - before;
        let mem = gpu.memory_stats();
        let infer = median_seconds(warmup, steps, || step(dev, Some(&gpu), &gpu_params, &xd, batch, false));
        let cpu = median_seconds(1, steps.min(3), || step(Device::Cpu, None, &cpu_params, &x, batch, true));
        println!(
            "{batch:>6} {:>14.1} {:>14.1} {:>14.1} {:>12.1} {:>12.1} {allocs:>16}",
            batch as f64 / train,
            batch as f64 / infer,
            batch as f64 / cpu,
            mib(mem.peak_reserved),
            mib(mem.peak_in_use),
        );
    }
}
