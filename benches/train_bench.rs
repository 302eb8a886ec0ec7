//! Training-step benchmark: images/s of a whole training step and of inference, peak resident
//! memory, and where a step's time goes, for the two ViTs of issue 6, on 1 and 2 threads.
//!
//! ```sh
//! cargo bench --bench train_bench                        # everything: a few minutes
//! cargo bench --bench train_bench -- --quick             # smoke run: batch 16, 2 steps
//! cargo bench --bench train_bench -- --threads 2 --models vit-ti4 --modes train
//! cargo bench --bench train_bench -- --steps 20 --warmup 5
//! cargo bench --bench train_bench -- --models fmnist --modes train --drop-path 0.1 --label-smoothing 0.1 --clip-grad 1
//! ```
//!
//! Models (the same as `benches/peers/pytorch_vit_bench.py`, timm-equivalent):
//! - `vit-ti4`: ViT-Tiny/4 on 32x32x3 (dim 192, depth 12, heads 3, MLP 768, 10 classes; 65 tokens);
//! - `fmnist`: the small Fashion-MNIST ViT on 28x28x1 (patch 4, dim 128, depth 6, heads 4,
//!   MLP 256, 10 classes; 50 tokens).
//! - `fmnist-r56`: the README's best Fashion-MNIST model, the hybrid on images upsampled to
//!   56x56x1 (`--model r-ti --img-size 56 --patch 2 --dim 64 --depth 6 --heads 4 --mlp-ratio 2`:
//!   BiT's root, a 64-channel 7x7/2 convolution, group norm, ReLU and 3x3/2 max-pool, then patches
//!   of 2x2 of its 14x14 map; 50 tokens). Ours only: the PyTorch script has no hybrid.
//!
//! Both at batch 128 on one fixed synthetic batch (N(0, 1) pixels, random labels), exact-erf GELU,
//! and by default no stochastic depth, label smoothing or clipping, as timm's defaults. The
//! regularisers of a `vit train` recipe that cost time inside the step can be switched on to
//! compare the step with the same recipe run end to end: `--drop-path P` (the model's
//! stochastic-depth rate, as `vit train --drop-path`), `--label-smoothing S`, `--clip-grad C`.
//! Augmentation is not in the step: `vit train` prepares batches on its loader thread while the
//! step runs, and the end-to-end comparison is what shows whether that is hidden.
//!
//! - **train**: one step is [`vit::train::train_step`]: forward, cross-entropy, backward,
//!   gradient norm (clipped only with `--clip-grad`), AdamW (lr 1e-3, weight decay 0.05); images/s = batch / median
//!   step time over `--steps` timed steps after `--warmup` warm-up steps, as the PyTorch script.
//! - **infer**: [`vit::train::predict_logits`] (no tape), same timing.
//! - **threads**: each measurement runs inside a `rayon::ThreadPool` of that many threads
//!   (`install`), so every op and GEMM sees that count.
//! - **CPU time**: the process's CPU time per timed step (median), beside the wall time. On one
//!   thread it is what the step costs even when other jobs share the cores (wall time then
//!   measures the load); "images per CPU-s" = batch / that time, comparable with the PyTorch
//!   script's `img_per_cpu_s` on one thread.
//! - **peak memory**: `VmHWM` of `/proc/self/status`, which is per process and never goes down;
//!   so the program re-runs itself once per (model, mode, threads), as
//!   `train_bench --one vit-ti4 2 train ...`, and reports each child's peak: the whole process
//!   (binary, model, optimizer state, one step's tape), as PyTorch's figure is its whole process.
//! - **breakdown**: after the timed steps, `--breakdown` more steps run the same work as
//!   `train_step` in timed phases (forward + loss; backward + gradients taken off the tape;
//!   gradient norm + AdamW), with the GEMM accounting of
//!   `autograd::kernels::gemm::timing` switched on: the wall time during which a GEMM runs,
//!   per phase. Medians over those steps. The accounting stays off during the timed steps.
//! - **GEMM shapes**: the same breakdown steps also account each product shape apart (M x K x N
//!   and how A and B are read, as `benches/gemm.rs` names them: `8320x192x576:NT` is `x W^T`,
//!   `:NN` an input gradient `g W`, `:TN` a weight gradient `g^T x`; `384*65x64x65` a batch of
//!   384 attention products), per phase: its calls and milliseconds per step, its GFLOP/s and
//!   the percentage of the FMA peak of as many threads, measured here by the loop of
//!   `benches/common/peak.rs`. A forward product's time includes its epilogue (bias, GELU); a
//!   shape of the forward seen again in the backward is the recompute of an activation that was
//!   not kept (fc1's GELU input).
//!
//! Nothing is asserted: this prints figures. The machine is shared; compare medians of several
//! runs, and run the PyTorch script right before or after.

use std::process::Command;
use std::time::Instant;

use autograd::kernels::gemm::timing;
use autograd::{Graph, Rng, Tensor};
use vit::data::Batch;
use vit::nn::{Ctx, Module, ParamStore, ResNetStemConfig, Variant, ViTConfig, VisionTransformer};
use vit::optim::{clip_grad_norm, AdamW, Optimizer};
use vit::train::{predict_logits, train_step};

#[path = "common/peak.rs"]
mod peak;

const MODELS: [&str; 3] = ["vit-ti4", "fmnist", "fmnist-r56"];
const MODES: [&str; 2] = ["train", "infer"];

/// The model of a benchmark name, with the run's stochastic-depth rate.
fn model_config(name: &str, drop_path: f64) -> Result<ViTConfig, String> {
    let mut c = base_config(name)?;
    c.drop_path = drop_path;
    Ok(c)
}

fn base_config(name: &str) -> Result<ViTConfig, String> {
    match name {
        "vit-ti4" => {
            let mut c = ViTConfig::tiny(4, 32);
            c.num_classes = 10;
            Ok(c)
        }
        "fmnist" => {
            let mut c = ViTConfig::tiny(4, 28);
            (c.in_chans, c.num_classes, c.dim, c.depth, c.heads, c.mlp_dim) = (1, 10, 128, 6, 4, 256);
            Ok(c)
        }
        "fmnist-r56" => {
            let mut c = ViTConfig::hybrid(Variant::Tiny, ResNetStemConfig::bit(), 2, 56);
            (c.in_chans, c.num_classes, c.dim, c.depth, c.heads, c.mlp_dim) = (1, 10, 64, 6, 4, 128);
            Ok(c)
        }
        _ => Err(format!("unknown model {name:?}: expected one of {}", MODELS.join(", "))),
    }
}

#[derive(Clone)]
struct Options {
    batch: usize,
    warmup: usize,
    steps: usize,
    breakdown: usize,
    threads: Vec<usize>,
    models: Vec<String>,
    modes: Vec<String>,
    drop_path: f64,
    label_smoothing: f64,
    clip_grad: Option<f64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            batch: 128,
            warmup: 3,
            steps: 10,
            breakdown: 3,
            threads: vec![2, 1],
            models: MODELS.iter().map(|s| s.to_string()).collect(),
            modes: MODES.iter().map(|s| s.to_string()).collect(),
            drop_path: 0.0,
            label_smoothing: 0.0,
            clip_grad: None,
        }
    }
}

const USAGE: &str = "usage: train_bench [--quick] [--batch B] [--warmup W] [--steps N] [--breakdown K] \
                     [--threads 2,1] [--models vit-ti4,fmnist] [--modes train,infer]\n                   \
                     [--drop-path P] [--label-smoothing S] [--clip-grad C]\n       \
                     train_bench --one MODEL THREADS MODE [same options]   (one measurement, as a child)";

/// The one configuration a child measures (`--one MODEL THREADS MODE`).
struct One {
    model: String,
    threads: usize,
    mode: String,
}

/// Parsed command line: the options, and the one configuration to measure if this is a child.
fn parse_args(args: &[String]) -> Result<(Options, Option<One>), String> {
    let mut o = Options::default();
    let mut one = None;
    let mut it = args.iter();
    let number = |flag: &str, v: Option<&String>| -> Result<usize, String> {
        let v = v.ok_or(format!("{flag} needs a value"))?;
        v.parse().map_err(|_| format!("{flag}: expected a whole number, got {v:?}"))
    };
    let real = |flag: &str, v: Option<&String>| -> Result<f64, String> {
        let v = v.ok_or(format!("{flag} needs a value"))?;
        v.parse().map_err(|_| format!("{flag}: expected a number, got {v:?}"))
    };
    let list = |flag: &str, v: Option<&String>| -> Result<Vec<String>, String> {
        let v = v.ok_or(format!("{flag} needs a value"))?;
        Ok(v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => (o.batch, o.warmup, o.steps, o.breakdown) = (16, 1, 2, 1),
            "--batch" => o.batch = number(a, it.next())?,
            "--warmup" => o.warmup = number(a, it.next())?,
            "--steps" => o.steps = number(a, it.next())?,
            "--breakdown" => o.breakdown = number(a, it.next())?,
            "--threads" => {
                o.threads = list(a, it.next())?
                    .iter()
                    .map(|t| t.parse().map_err(|_| format!("--threads: expected numbers, got {t:?}")))
                    .collect::<Result<_, _>>()?
            }
            "--models" => o.models = list(a, it.next())?,
            "--modes" => o.modes = list(a, it.next())?,
            "--drop-path" => o.drop_path = real(a, it.next())?,
            "--label-smoothing" => o.label_smoothing = real(a, it.next())?,
            "--clip-grad" => o.clip_grad = Some(real(a, it.next())?),
            "--one" => {
                let model = it.next().ok_or("--one needs MODEL THREADS MODE")?.clone();
                let threads = number("--one THREADS", it.next())?;
                let mode = it.next().ok_or("--one needs MODEL THREADS MODE")?.clone();
                one = Some(One { model, threads, mode });
            }
            // `cargo bench` passes `--bench` to every bench target; there is nothing to select.
            "--bench" => {}
            "-h" | "--help" => return Err(USAGE.to_string()),
            _ => return Err(format!("unexpected argument {a:?}\n{USAGE}")),
        }
    }
    if o.batch == 0 || o.steps == 0 || o.threads.contains(&0) {
        return Err("--batch, --steps and --threads must be positive".into());
    }
    if !(0.0..1.0).contains(&o.drop_path) || !(0.0..1.0).contains(&o.label_smoothing) {
        return Err("--drop-path and --label-smoothing must be in [0, 1)".into());
    }
    if o.clip_grad.is_some_and(|c| !(c.is_finite() && c > 0.0)) {
        return Err("--clip-grad must be a finite number > 0".into());
    }
    for m in &o.models {
        model_config(m, o.drop_path)?;
    }
    if let Some(bad) = o.modes.iter().find(|m| !MODES.contains(&m.as_str())) {
        return Err(format!("unknown mode {bad:?}: expected train or infer"));
    }
    Ok((o, one))
}

/// One configuration's figures, passed from child to parent as one `RESULT key=value ...` line.
#[derive(Clone, Debug, Default)]
struct Figures {
    model: String,
    mode: String,
    threads: usize,
    batch: usize,
    params: usize,
    img_per_s: f64,
    step_ms: f64,
    step_ms_min: f64,
    step_ms_max: f64,
    /// Median CPU time of the process per timed step (all its threads): on one thread, what the
    /// step costs whatever else runs on the machine.
    cpu_ms: f64,
    /// Breakdown medians (ms): forward (+ loss), backward, optimizer; GEMM time within the
    /// forward and backward; the instrumented step's total.
    fwd_ms: f64,
    fwd_gemm_ms: f64,
    bwd_ms: f64,
    bwd_gemm_ms: f64,
    opt_ms: f64,
    phases_ms: f64,
    /// GEMM flops of one step (matrix products only, forward and backward).
    gflop: f64,
    peak_mib: f64,
    loss: f64,
    /// The breakdown's products by shape (sent as `SHAPE` lines before the `RESULT` line).
    shapes: Vec<ShapeRow>,
}

/// One product shape of the breakdown: its totals per step, medians over the breakdown steps.
#[derive(Clone, Debug, Default)]
struct ShapeRow {
    /// `forward` or `backward`.
    phase: String,
    shape: String,
    calls: f64,
    flops: f64,
    ms: f64,
}

impl ShapeRow {
    fn to_line(&self) -> String {
        format!("SHAPE {} {} {} {} {}", self.phase, self.shape, self.calls, self.flops, self.ms)
    }

    fn from_line(line: &str) -> Result<ShapeRow, String> {
        let f: Vec<&str> = line.strip_prefix("SHAPE ").ok_or("not a SHAPE line")?.split_whitespace().collect();
        let [phase, shape, calls, flops, ms] = f[..] else { return Err(format!("bad SHAPE line {line:?}")) };
        let num = |v: &str| v.parse::<f64>().map_err(|_| format!("SHAPE: not a number: {v:?}"));
        Ok(ShapeRow { phase: phase.into(), shape: shape.into(), calls: num(calls)?, flops: num(flops)?, ms: num(ms)? })
    }
}

/// Per-step medians of each shape's totals over the breakdown steps, in the order the shapes
/// first ran (`steps[i]` is one step's `take_by_shape` for the phase).
fn shape_rows(phase: &str, steps: &[Vec<(timing::GemmShape, timing::GemmTotals)>]) -> Vec<ShapeRow> {
    let mut shapes: Vec<timing::GemmShape> = Vec::new();
    for (s, t) in steps.iter().flatten() {
        if t.calls > 0 && !shapes.contains(s) {
            shapes.push(*s);
        }
    }
    shapes
        .into_iter()
        .map(|shape| {
            let per_step = |f: &dyn Fn(&timing::GemmTotals) -> f64| -> f64 {
                let v: Vec<f64> = steps
                    .iter()
                    .map(|step| step.iter().filter(|(s, _)| *s == shape).map(|(_, t)| f(t)).sum())
                    .collect();
                median(&v)
            };
            ShapeRow {
                phase: phase.into(),
                calls: per_step(&|t| t.calls as f64),
                flops: per_step(&|t| t.flops as f64),
                ms: per_step(&|t| t.nanos as f64 / 1e6),
                shape: shape.to_string(),
            }
        })
        .collect()
}

impl Figures {
    fn to_line(&self) -> String {
        format!(
            "RESULT model={} mode={} threads={} batch={} params={} img_per_s={} step_ms={} step_ms_min={} \
             step_ms_max={} cpu_ms={} fwd_ms={} fwd_gemm_ms={} bwd_ms={} bwd_gemm_ms={} opt_ms={} phases_ms={} gflop={} \
             peak_mib={} loss={}",
            self.model,
            self.mode,
            self.threads,
            self.batch,
            self.params,
            self.img_per_s,
            self.step_ms,
            self.step_ms_min,
            self.step_ms_max,
            self.cpu_ms,
            self.fwd_ms,
            self.fwd_gemm_ms,
            self.bwd_ms,
            self.bwd_gemm_ms,
            self.opt_ms,
            self.phases_ms,
            self.gflop,
            self.peak_mib,
            self.loss
        )
    }

    fn from_line(line: &str) -> Result<Figures, String> {
        let mut f = Figures::default();
        let body = line.strip_prefix("RESULT ").ok_or("not a RESULT line")?;
        for kv in body.split_whitespace() {
            let (k, v) = kv.split_once('=').ok_or(format!("bad field {kv:?}"))?;
            let num = || v.parse::<f64>().map_err(|_| format!("{k}: not a number: {v:?}"));
            match k {
                "model" => f.model = v.to_string(),
                "mode" => f.mode = v.to_string(),
                "threads" => f.threads = num()? as usize,
                "batch" => f.batch = num()? as usize,
                "params" => f.params = num()? as usize,
                "img_per_s" => f.img_per_s = num()?,
                "step_ms" => f.step_ms = num()?,
                "step_ms_min" => f.step_ms_min = num()?,
                "step_ms_max" => f.step_ms_max = num()?,
                "cpu_ms" => f.cpu_ms = num()?,
                "fwd_ms" => f.fwd_ms = num()?,
                "fwd_gemm_ms" => f.fwd_gemm_ms = num()?,
                "bwd_ms" => f.bwd_ms = num()?,
                "bwd_gemm_ms" => f.bwd_gemm_ms = num()?,
                "opt_ms" => f.opt_ms = num()?,
                "phases_ms" => f.phases_ms = num()?,
                "gflop" => f.gflop = num()?,
                "peak_mib" => f.peak_mib = num()?,
                "loss" => f.loss = num()?,
                _ => return Err(format!("unknown field {k:?}")),
            }
        }
        Ok(f)
    }
}

fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// `VmHWM` (peak resident set) of this process in MiB, from `/proc/self/status`.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// One fixed synthetic batch: N(0, 1) pixels and uniformly drawn labels.
fn synthetic_batch(c: &ViTConfig, batch: usize) -> Batch {
    let mut rng = Rng::seed(42);
    let shape = [batch, c.in_chans, c.image_size, c.image_size];
    let images = Tensor::<f32>::randn(&shape, 0.0, 1.0, &mut rng).into_vec();
    let labels = (0..batch).map(|_| rng.below(c.num_classes)).collect();
    Batch { images, labels, mix: None, shape, indices: (0..batch).collect() }
}

const LR: f64 = 1e-3;
const WEIGHT_DECAY: f64 = 0.05;

/// Milliseconds since `t`.
fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// CPU time this process has used, all threads, in milliseconds.
fn cpu_now_ms() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to write; CLOCK_PROCESS_CPUTIME_ID always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 * 1e-6
}

/// Measures one configuration in this process (the child side).
fn measure(model_name: &str, threads: usize, mode: &str, o: &Options) -> Result<Figures, String> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().map_err(|e| e.to_string())?;
    pool.install(|| measure_in_pool(model_name, threads, mode, o))
}

fn measure_in_pool(model_name: &str, threads: usize, mode: &str, o: &Options) -> Result<Figures, String> {
    let config = model_config(model_name, o.drop_path)?;
    let (model, mut params) = VisionTransformer::init::<f32>(&config, 0).map_err(|e| e.to_string())?;
    let batch = synthetic_batch(&config, o.batch);
    let mut f = Figures {
        model: model_name.into(),
        mode: mode.into(),
        threads,
        batch: o.batch,
        params: params.num_elements(),
        ..Figures::default()
    };
    let (mut times, mut cpu) = (Vec::with_capacity(o.steps), Vec::with_capacity(o.steps));
    if mode == "train" {
        let mut opt = AdamW::new(&params, 0.9, 0.999, 1e-8, WEIGHT_DECAY);
        for i in 0..o.warmup + o.steps {
            let b = batch.clone();
            let mut rng = Rng::seed(i as u64);
            let (t, c) = (Instant::now(), cpu_now_ms());
            let out = train_step(&model, &mut params, &mut opt, b, LR, o.label_smoothing, o.clip_grad, &mut rng)
                .map_err(|e| e.to_string())?;
            let (dt, dc) = (ms(t), cpu_now_ms() - c);
            f.loss = out.loss;
            if i >= o.warmup {
                times.push(dt);
                cpu.push(dc);
            }
        }
        breakdown_train(&model, &mut params, &mut opt, &batch, o, &mut f);
    } else {
        let shape = batch.shape;
        for i in 0..o.warmup + o.steps {
            let images = batch.images.clone();
            let (t, c) = (Instant::now(), cpu_now_ms());
            let logits = predict_logits(&model, &params, images, &shape);
            let (dt, dc) = (ms(t), cpu_now_ms() - c);
            std::hint::black_box(&logits);
            if i >= o.warmup {
                times.push(dt);
                cpu.push(dc);
            }
        }
        breakdown_infer(&model, &params, &batch, o.breakdown, &mut f);
    }
    f.step_ms = median(&times);
    f.cpu_ms = median(&cpu);
    f.step_ms_min = times.iter().copied().fold(f64::INFINITY, f64::min);
    f.step_ms_max = times.iter().copied().fold(0.0, f64::max);
    f.img_per_s = o.batch as f64 / (f.step_ms / 1e3);
    f.peak_mib = peak_rss_mib();
    Ok(f)
}

/// `steps` training steps doing what [`train_step`] does, phase by phase, with GEMM accounting.
fn breakdown_train(
    model: &VisionTransformer,
    params: &mut ParamStore<f32>,
    opt: &mut dyn Optimizer,
    batch: &Batch,
    o: &Options,
    f: &mut Figures,
) {
    let (mut fwd, mut fwd_gemm, mut bwd, mut bwd_gemm, mut optim, mut total, mut flops) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut fwd_shapes, mut bwd_shapes) = (vec![], vec![]);
    timing::enable(true);
    for i in 0..o.breakdown {
        let b = batch.clone();
        let mut rng = Rng::seed(i as u64);
        timing::take();
        timing::take_by_shape();
        let t0 = Instant::now();
        // Forward and loss.
        let mut g = Graph::new();
        g.set_record_grad_norms(false);
        let p = params.bind(&mut g);
        let x = g.input(Tensor::from_vec(b.images, &b.shape));
        let logits = model.forward(&mut g, &p, x, &mut Ctx::new(&mut rng));
        let loss = g.cross_entropy(logits, &b.labels, o.label_smoothing);
        std::hint::black_box(g.value(loss).item());
        fwd.push(ms(t0));
        let forward = timing::take();
        fwd_shapes.push(timing::take_by_shape());
        fwd_gemm.push(forward.nanos as f64 / 1e6);
        // Backward, gradients off the tape, tape released.
        let t1 = Instant::now();
        g.backward(loss);
        let mut grads = p.take_grads(&mut g);
        drop(g);
        bwd.push(ms(t1));
        let backward = timing::take();
        bwd_shapes.push(timing::take_by_shape());
        bwd_gemm.push(backward.nanos as f64 / 1e6);
        flops.push((forward.flops + backward.flops) as f64);
        // Gradient norm (clipped with --clip-grad) and AdamW.
        let t2 = Instant::now();
        std::hint::black_box(clip_grad_norm(&mut grads, o.clip_grad.unwrap_or(f64::INFINITY)));
        opt.step(params, &grads, LR);
        optim.push(ms(t2));
        total.push(ms(t0));
    }
    timing::enable(false);
    (f.fwd_ms, f.fwd_gemm_ms, f.bwd_ms, f.bwd_gemm_ms, f.opt_ms, f.phases_ms, f.gflop) = (
        median(&fwd),
        median(&fwd_gemm),
        median(&bwd),
        median(&bwd_gemm),
        median(&optim),
        median(&total),
        median(&flops) / 1e9,
    );
    f.shapes = shape_rows("forward", &fwd_shapes);
    f.shapes.extend(shape_rows("backward", &bwd_shapes));
}

/// `steps` inference passes with GEMM accounting.
fn breakdown_infer(model: &VisionTransformer, params: &ParamStore<f32>, batch: &Batch, steps: usize, f: &mut Figures) {
    let (mut total, mut gemm, mut flops, mut shapes) = (vec![], vec![], vec![], vec![]);
    timing::enable(true);
    for _ in 0..steps {
        let images = batch.images.clone();
        timing::take();
        timing::take_by_shape();
        let t = Instant::now();
        std::hint::black_box(predict_logits(model, params, images, &batch.shape));
        total.push(ms(t));
        let g = timing::take();
        shapes.push(timing::take_by_shape());
        gemm.push(g.nanos as f64 / 1e6);
        flops.push(g.flops as f64);
    }
    timing::enable(false);
    (f.fwd_ms, f.fwd_gemm_ms, f.phases_ms, f.gflop) =
        (median(&total), median(&gemm), median(&total), median(&flops) / 1e9);
    f.shapes = shape_rows("forward", &shapes);
}

/// Runs one configuration in a child process and reads its figures.
fn run_child(model: &str, threads: usize, mode: &str, o: &Options) -> Result<Figures, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let out = Command::new(exe)
        .args(["--one", model, &threads.to_string(), mode])
        .args(["--batch", &o.batch.to_string(), "--warmup", &o.warmup.to_string()])
        .args(["--steps", &o.steps.to_string(), "--breakdown", &o.breakdown.to_string()])
        .args(["--drop-path", &o.drop_path.to_string(), "--label-smoothing", &o.label_smoothing.to_string()])
        .args(o.clip_grad.map(|c| ["--clip-grad".to_string(), c.to_string()]).into_iter().flatten())
        .env("RAYON_NUM_THREADS", threads.to_string())
        .output()
        .map_err(|e| format!("cannot run the child: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.lines().rev().find(|l| l.starts_with("RESULT ")) {
        Some(line) if out.status.success() => {
            let mut f = Figures::from_line(line)?;
            f.shapes = stdout
                .lines()
                .filter(|l| l.starts_with("SHAPE "))
                .map(ShapeRow::from_line)
                .collect::<Result<_, _>>()?;
            Ok(f)
        }
        _ => Err(format!(
            "{model} {mode} on {threads} threads failed:\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

fn percent(part: f64, whole: f64) -> String {
    if whole > 0.0 && part.is_finite() {
        format!("{:.0}%", 100.0 * part / whole)
    } else {
        "-".into()
    }
}

/// The FMA peak in GFLOP/s of `threads` threads running the loop of `benches/common/peak.rs`
/// at once on the active ISA (median of 5 runs of about 0.2 s); NaN without a loop for it.
fn fma_peak(threads: usize) -> f64 {
    let Some((kernel, round_flops)) = peak::peak_loop(autograd::kernels::Isa::active()) else { return f64::NAN };
    let iters = 10_000_000usize;
    let Ok(pool) = rayon::ThreadPoolBuilder::new().num_threads(threads).build() else { return f64::NAN };
    let mut secs: Vec<f64> = (0..6)
        .map(|_| {
            let t = Instant::now();
            pool.install(|| {
                use rayon::prelude::*;
                (0..threads).into_par_iter().for_each(|i| {
                    // SAFETY: `peak_loop` only returns a loop whose ISA is available.
                    std::hint::black_box(unsafe { kernel(iters, std::hint::black_box(i as f32 * 1e-3)) });
                })
            });
            t.elapsed().as_secs_f64()
        })
        .skip(1)
        .collect();
    secs.sort_by(f64::total_cmp);
    (threads * iters * round_flops) as f64 / secs[secs.len() / 2] / 1e9
}

/// The per-shape GEMM table of every configuration, with `peaks[threads]` for the percentages.
fn print_shape_tables(rows: &[Figures], peaks: &[(usize, f64)]) {
    for r in rows.iter().filter(|r| !r.shapes.is_empty()) {
        let peak = peaks.iter().find(|p| p.0 == r.threads).map_or(f64::NAN, |p| p.1);
        println!();
        println!(
            "GEMM shapes, {} {} on {} thread{} (per step, medians of the breakdown steps; FMA peak {:.1} GFLOP/s):",
            r.model,
            r.mode,
            r.threads,
            if r.threads == 1 { "" } else { "s" },
            peak
        );
        println!();
        println!("| phase | product (M x K x N:AB) | calls | GFLOP | ms | GFLOP/s | % of peak |");
        println!("|---|---|---:|---:|---:|---:|---:|");
        let (mut flops, mut ms) = (0.0, 0.0);
        for s in &r.shapes {
            let rate = s.flops / 1e9 / (s.ms / 1e3);
            println!(
                "| {} | {} | {:.0} | {:.2} | {:.1} | {:.1} | {} |",
                s.phase,
                s.shape,
                s.calls,
                s.flops / 1e9,
                s.ms,
                rate,
                percent(rate, peak)
            );
            (flops, ms) = (flops + s.flops, ms + s.ms);
        }
        let rate = flops / 1e9 / (ms / 1e3);
        println!(
            "| all | (sum of the rows) | | {:.2} | {:.1} | {:.1} | {} |",
            flops / 1e9,
            ms,
            rate,
            percent(rate, peak)
        );
    }
}

fn print_tables(rows: &[Figures]) {
    println!();
    println!(
        "| model | mode | threads | images/s | step ms (median, min-max) | CPU ms/step | images per CPU-s | peak RSS MiB | GEMM GFLOP/step | GFLOP/s |"
    );
    println!("|---|---|---:|---:|---|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.1} | {:.0} ({:.0}-{:.0}) | {:.0} | {:.1} | {:.0} | {:.2} | {:.0} |",
            r.model,
            r.mode,
            r.threads,
            r.img_per_s,
            r.step_ms,
            r.step_ms_min,
            r.step_ms_max,
            r.cpu_ms,
            r.batch as f64 / (r.cpu_ms / 1e3),
            r.peak_mib,
            r.gflop,
            r.gflop / (r.step_ms / 1e3)
        );
    }
    println!();
    println!("Breakdown (median ms of the instrumented steps; GEMM = wall time with a GEMM running):");
    println!();
    println!("| model | mode | threads | total | forward | of which GEMM | backward | of which GEMM | optimizer | GEMM share | GEMM GFLOP/s |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let gemm = r.fwd_gemm_ms + if r.mode == "train" { r.bwd_gemm_ms } else { 0.0 };
        let (bwd, bwd_gemm, opt) = if r.mode == "train" {
            (format!("{:.0}", r.bwd_ms), format!("{:.0}", r.bwd_gemm_ms), format!("{:.0}", r.opt_ms))
        } else {
            ("-".into(), "-".into(), "-".into())
        };
        println!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} | {:.0} |",
            r.model,
            r.mode,
            r.threads,
            r.phases_ms,
            r.fwd_ms,
            r.fwd_gemm_ms,
            bwd,
            bwd_gemm,
            opt,
            percent(gemm, r.phases_ms),
            r.gflop / (gemm / 1e3)
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (o, one) = match parse_args(&args) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Some(One { model, threads, mode }) = one {
        match measure(&model, threads, &mode, &o) {
            Ok(f) => {
                for r in &f.shapes {
                    println!("{}", r.to_line());
                }
                println!("{}", f.to_line())
            }
            Err(e) => {
                eprintln!("train_bench: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    if cfg!(debug_assertions) {
        eprintln!("note: a debug build; run with `cargo bench --bench train_bench` for real figures");
    }
    println!(
        "train_bench: batch {}, {} warm-up + {} timed steps (median), {} breakdown steps; drop-path {}, \
         label smoothing {}, clip-grad {}; ISA {}; {} CPUs",
        o.batch,
        o.warmup,
        o.steps,
        o.breakdown,
        o.drop_path,
        o.label_smoothing,
        o.clip_grad.map_or("none".to_string(), |c| c.to_string()),
        autograd::kernels::Isa::active(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut rows = Vec::new();
    let mut failed = false;
    for &threads in &o.threads {
        for model in &o.models {
            for mode in &o.modes {
                match run_child(model, threads, mode, &o) {
                    Ok(f) => {
                        println!(
                            "{:>8} {:<5} {} thread{}: {:>7.1} images/s  (step {:.0} ms, peak RSS {:.0} MiB{})",
                            f.model,
                            f.mode,
                            f.threads,
                            if threads == 1 { " " } else { "s" },
                            f.img_per_s,
                            f.step_ms,
                            f.peak_mib,
                            if f.mode == "train" { format!(", loss {:.4}", f.loss) } else { String::new() }
                        );
                        rows.push(f);
                    }
                    Err(e) => {
                        eprintln!("{e}");
                        failed = true;
                    }
                }
            }
        }
    }
    print_tables(&rows);
    if rows.iter().any(|r| !r.shapes.is_empty()) {
        let peaks: Vec<(usize, f64)> = o.threads.iter().map(|&t| (t, fma_peak(t))).collect();
        print_shape_tables(&rows, &peaks);
    }
    if failed {
        std::process::exit(1);
    }
}
