//! `vit finetune`: a pre-trained checkpoint fine-tuned on another dataset, optionally at a
//! higher resolution, with the paper's recipe as the defaults (part of the `vit` binary; the
//! mechanism is [`vit::train::FineTune`]).

use std::path::PathBuf;
use std::sync::LazyLock;

use clap::Args;

use vit::checkpoint::{self, Checkpoint};
use vit::data::DatasetKind;
use vit::train::{FineTune, TrainConfig};
use vit::Result;

use super::flag;
use super::run_args::RunArgs;

/// The paper's fine-tuning recipe, which the flags' defaults show.
static DEFAULT: LazyLock<TrainConfig> = LazyLock::new(|| {
    let ft = FineTune { checkpoint: PathBuf::new(), freeze_backbone: false };
    ft.recipe(vit::nn::ViTConfig::tiny(4, 32), DatasetKind::Cifar10, PathBuf::from("runs/finetune"))
});

#[derive(Args)]
#[command(allow_negative_numbers = true)]
pub struct FinetuneArgs {
    /// The pre-trained checkpoint: one written by `vit train`, or a timm ViT state dict.
    checkpoint: PathBuf,
    /// The downstream dataset: cifar10, cifar100, mnist, fashion-mnist.
    #[arg(long)]
    dataset: String,
    /// Fine-tune resolution (default: the pre-training one). Images are upsampled to it and the
    /// position embeddings interpolated to the larger patch grid; the patch size stays.
    #[arg(long)]
    img_size: Option<usize>,
    /// Train the new head alone on the frozen features (a linear probe).
    #[arg(long)]
    freeze_backbone: bool,
    /// Epochs in all.
    #[arg(long, default_value_t = DEFAULT.epochs)]
    epochs: usize,
    /// Images per optimizer step (the paper's 512).
    #[arg(long, default_value_t = DEFAULT.batch_size)]
    batch_size: usize,
    /// Peak learning rate of SGD with momentum 0.9 (the paper sweeps 0.001 to 0.03).
    #[arg(long, default_value_t = DEFAULT.lr)]
    lr: f64,
    /// Warmup in epochs, then cosine decay to 0.
    #[arg(long, default_value_t = DEFAULT.warmup_epochs)]
    warmup: f64,
    /// Weight decay (the paper uses none for fine-tuning).
    #[arg(long, default_value_t = DEFAULT.weight_decay)]
    weight_decay: f64,
    /// Global gradient-norm clipping threshold (0 disables).
    #[arg(long, default_value_t = DEFAULT.clip_grad.unwrap_or(0.0))]
    clip_grad: f64,
    /// Output directory for checkpoints and metrics.
    #[arg(long, default_value_os_t = DEFAULT.out_dir.clone())]
    out: PathBuf,
    /// Number of heads, for a checkpoint without a stored config whose width is not a standard
    /// variant's.
    #[arg(long)]
    heads: Option<usize>,
    /// The flags every training run takes (--accum-steps when a batch of 512 does not fit).
    #[command(flatten)]
    run: RunArgs,
}

/// The run `a` describes: the source's encoder at the new size, the paper's recipe with the
/// flags' changes.
pub fn finetune_config(a: &FinetuneArgs) -> Result<TrainConfig> {
    if let Some(h) = a.heads {
        flag(h >= 1, "--heads", "at least 1", h)?;
    }
    let c = a.clip_grad;
    flag(c.is_finite() && c >= 0.0, "--clip-grad", "a finite number >= 0 (0 disables clipping)", c)?;
    let dataset: DatasetKind = a.dataset.parse()?;
    let ckpt = Checkpoint::open(&a.checkpoint)?;
    let source = match ckpt.config()? {
        Some(c) => c,
        None => checkpoint::infer_config(&ckpt, a.heads)?,
    };
    let size = a.img_size.unwrap_or(source.image_size);
    flag(
        size >= 1 && size.is_multiple_of(source.patch_size),
        "--img-size",
        &format!("a multiple of the patch size {}", source.patch_size),
        size,
    )?;
    let ft = FineTune { checkpoint: a.checkpoint.clone(), freeze_backbone: a.freeze_backbone };
    let model = FineTune::model_config(&source, dataset.classes(), size);
    let cfg = TrainConfig {
        epochs: a.epochs,
        batch_size: a.batch_size,
        lr: a.lr,
        warmup_epochs: a.warmup,
        weight_decay: a.weight_decay,
        clip_grad: (c > 0.0).then_some(c),
        ..ft.recipe(model, dataset, a.out.clone())
    };
    let cfg = a.run.apply(cfg)?;
    cfg.validate()?;
    Ok(cfg)
}

/// `vit finetune`: the run [`finetune_config`] describes.
pub fn run_finetune(a: &FinetuneArgs) -> Result<()> {
    let cfg = finetune_config(a)?;
    let m = &cfg.model;
    let what = format!(
        "fine-tuning {} on {} at {}x{} ({} patches, {} parameters{}), {} epochs, batch {}, lr {}, {} threads",
        a.checkpoint.display(),
        cfg.dataset,
        m.image_size,
        m.image_size,
        m.num_patches(),
        m.num_params(),
        if a.freeze_backbone { ", backbone frozen: a linear probe" } else { "" },
        cfg.epochs,
        cfg.batch_size,
        cfg.lr,
        rayon::current_num_threads()
    );
    a.run.run(&cfg, &what)
}
