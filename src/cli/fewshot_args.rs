//! `vit fewshot`: few-shot linear evaluation of a checkpoint's frozen features (part of the
//! `vit` binary; the evaluator is [`vit::fewshot`]).

use std::path::PathBuf;

use clap::Args;

use vit::data::{self, DatasetKind, ImageShape, Split};
use vit::fewshot::{self, FewShotConfig};
use vit::{Error, Result};

use super::flag;

#[derive(Args)]
pub struct FewshotArgs {
    /// A checkpoint written by `vit train` / `vit finetune`, or a timm state dict.
    checkpoint: PathBuf,
    /// Dataset to evaluate on (default: the one the checkpoint was trained on). Images are
    /// resized to the model's input (grey ones repeated over its channels).
    #[arg(long)]
    dataset: Option<String>,
    /// Where datasets live (default: data/, and for Fashion-MNIST the system copy).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Training images per class, comma-separated: one evaluation each.
    #[arg(long, default_value = "1,5,10,25", value_delimiter = ',')]
    shots: Vec<usize>,
    /// Training sets drawn per shot count (seeds 0..N); the report gives mean and spread.
    #[arg(long, default_value_t = 3)]
    seeds: usize,
    /// Ridge strength lambda (big_vision's default 2^10).
    #[arg(long, default_value_t = fewshot::DEFAULT_L2)]
    l2: f64,
    /// Score on the first N test images only.
    #[arg(long)]
    test_subset: Option<usize>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    /// Number of heads, for a checkpoint without a stored config whose width is not a
    /// standard variant's.
    #[arg(long)]
    heads: Option<usize>,
}

/// The most shot counts and seeds (each is a solve and a pass over the test features).
const MAX_RUNS: usize = 1000;

pub fn run_fewshot(a: &FewshotArgs) -> Result<()> {
    flag(
        !a.shots.is_empty() && a.shots.iter().all(|&s| s >= 1),
        "--shots",
        "a list of counts >= 1",
        format!("{:?}", a.shots),
    )?;
    flag(a.seeds >= 1, "--seeds", "at least 1", a.seeds)?;
    flag(
        a.shots.len() * a.seeds <= MAX_RUNS,
        "--shots x --seeds",
        &format!("at most {MAX_RUNS} runs"),
        a.shots.len() * a.seeds,
    )?;
    flag(a.l2.is_finite() && a.l2 > 0.0, "--l2", "a finite number > 0", a.l2)?;
    flag(a.batch_size >= 1, "--batch-size", "at least 1", a.batch_size)?;
    if let Some(n) = a.test_subset {
        flag(n >= 1, "--test-subset", "at least 1", n)?;
    }
    let vit::checkpoint::LoadedModel { model, params, dataset: trained_on } =
        super::open_model(&a.checkpoint, a.heads)?;
    let dataset: DatasetKind = match &a.dataset {
        Some(d) => d.parse()?,
        None => trained_on
            .ok_or_else(|| Error::Config(format!("{}: records no dataset; pass --dataset", a.checkpoint.display())))?,
    };
    let c = &model.config;
    let shape = ImageShape::new(c.in_chans, c.image_size, c.image_size);
    let train = data::load_from(dataset, a.data_dir.as_deref(), Split::Train)?;
    let mut test = data::load_from(dataset, a.data_dir.as_deref(), Split::Test)?;
    if let Some(n) = a.test_subset {
        test = test.take(n);
    }
    let (train, test) = (train.to_shape(shape)?, test.to_shape(shape)?);
    let cfg = FewShotConfig { shots: a.shots.clone(), seeds: a.seeds, l2: a.l2, batch_size: a.batch_size };
    eprintln!("few-shot on {dataset} ({} test images at {shape}), lambda {}, {} seeds", test.len(), cfg.l2, cfg.seeds);
    println!("{}: few-shot linear evaluation on {dataset}", a.checkpoint.display());
    for r in fewshot::evaluate(&model, &params, &train, &test, &cfg)? {
        let each: Vec<String> = r.accuracies.iter().map(|a| format!("{:.2}", 100.0 * a)).collect();
        println!(
            "{:>4}-shot: {:6.2}% +- {:.2} (seeds: {})",
            r.shots,
            100.0 * r.mean(),
            100.0 * r.std(),
            each.join(", ")
        );
    }
    Ok(())
}
