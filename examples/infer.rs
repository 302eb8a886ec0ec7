//! Inference with a ViT: build ViT-Ti/16 at 224 px with 1000 classes (timm's initialisation), or
//! load a checkpoint, run a batch of random images through it in inference mode, and print the
//! logits, the top class of each image, and the time per image.
//!
//! ```sh
//! cargo run --release --example infer                          # a freshly initialised ViT-Ti/16
//! cargo run --release --example infer -- model.safetensors     # ours, or a timm state dict
//! cargo run --release --example infer -- --batch 32 --runs 7
//! cargo run --release --example infer -- tests/fixtures/timm_vit_tiny.safetensors --heads 3
//! ```
//!
//! A checkpoint saved by `vit::checkpoint::save` carries its config; for one that does not (a
//! timm state dict) the config is inferred from the tensor shapes, the number of heads from the
//! standard variant of that width unless `--heads` is given.

use std::time::Instant;

use autograd::{Graph, Rng, Tensor};
use vit::checkpoint::{self, Checkpoint, LoadOptions};
use vit::nn::{Ctx, Module, ParamStore, ViTConfig, VisionTransformer};

struct Args {
    checkpoint: Option<String>,
    batch: usize,
    runs: usize,
    heads: Option<usize>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { checkpoint: None, batch: 8, runs: 5, heads: None };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut number = |flag: &str| -> Result<usize, String> {
            let v = it.next().ok_or(format!("{flag} needs a value"))?;
            v.parse().ok().filter(|&n| n > 0).ok_or(format!("{flag}: expected a positive integer, got {v:?}"))
        };
        match a.as_str() {
            "--batch" => args.batch = number("--batch")?,
            "--runs" => args.runs = number("--runs")?,
            "--heads" => args.heads = Some(number("--heads")?),
            "-h" | "--help" => {
                return Err("usage: infer [CHECKPOINT.safetensors [--heads H]] [--batch N] [--runs R]".into())
            }
            _ if args.checkpoint.is_none() && !a.starts_with('-') => args.checkpoint = Some(a),
            _ => return Err(format!("unexpected argument {a:?}")),
        }
    }
    Ok(args)
}

/// The model and its parameters: from the checkpoint if one is given, else freshly initialised.
fn build(path: Option<&str>, heads: Option<usize>) -> vit::Result<(VisionTransformer, ParamStore)> {
    let Some(path) = path else {
        let config = ViTConfig::tiny(16, 224);
        println!("ViT-Ti/16, 224 px, 1000 classes, timm initialisation (seed 0)");
        return VisionTransformer::init(&config, 0);
    };
    let ckpt = Checkpoint::open(path)?;
    let config = match ckpt.config()? {
        Some(c) => c,
        None => checkpoint::infer_config(&ckpt, heads)?,
    };
    let (model, mut store) = VisionTransformer::init(&config, 0)?;
    let report = checkpoint::load_params(&ckpt, &config, &mut store, &LoadOptions::default())?;
    println!(
        "{path}: {} tensors loaded ({} converted), dim {} depth {} heads {} patch {} at {} px, {} classes",
        report.loaded.len(),
        report.converted.len(),
        config.dim,
        config.depth,
        config.heads,
        config.patch_size,
        config.image_size,
        config.num_classes
    );
    Ok((model, store))
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    let (model, store) = build(args.checkpoint.as_deref(), args.heads).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1)
    });
    let c = &model.config;
    println!("{} parameters", store.num_elements());
    let images =
        Tensor::<f32>::randn(&[args.batch, c.in_chans, c.image_size, c.image_size], 0.0, 1.0, &mut Rng::seed(1));

    // The first run also pays for first-touch page faults and thread start-up: reported apart.
    let mut times = Vec::with_capacity(args.runs);
    let mut logits = None;
    for _ in 0..args.runs {
        let start = Instant::now();
        let mut g = Graph::inference();
        let vars = store.bind(&mut g);
        let x = g.input(images.clone());
        let out = model.forward(&mut g, &vars, x, &mut Ctx::new(&mut Rng::seed(0)));
        logits = Some(g.value(out).clone());
        times.push(start.elapsed().as_secs_f64());
    }
    let logits = logits.expect("at least one run");
    let classes = c.num_classes;
    println!("logits: {:?}", logits.shape());
    for (b, row) in logits.data().chunks(classes).enumerate() {
        let first: Vec<String> = row.iter().take(5).map(|v| format!("{v:+.4}")).collect();
        let (top, score) =
            row.iter().enumerate().fold((0, f32::NEG_INFINITY), |m, (i, &v)| if v > m.1 { (i, v) } else { m });
        println!("  image {b}: top class {top:4} ({score:+.4}); logits[..5] = [{}]", first.join(", "));
    }
    let first = times[0];
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "time: {:.2} ms per batch of {}, {:.2} ms per image (median of {} runs; first run {:.2} ms)",
        median * 1e3,
        args.batch,
        median * 1e3 / args.batch as f64,
        args.runs,
        first * 1e3,
    );
}
