//! The flags of `vit train` and the recipe they make (part of the `vit` binary).
//!
//! The flags' defaults are the default recipe, [`TrainConfig::default`]: one source for both.
//! Every numeric flag is checked (finite, in range) before anything is allocated, with an error
//! naming the flag.

use std::path::PathBuf;
use std::sync::LazyLock;

use clap::{Args, ValueEnum};

use vit::budget::MAX_IMAGE_SIZE;
use vit::data::augment::{RandAugment, RandomErasing, MAX_MAGNITUDE};
use vit::data::{AugmentConfig, DatasetKind};
use vit::nn::{Classifier, ResNetStemConfig, Variant, ViTConfig};
use vit::optim::Decay;
use vit::train::{OptimizerKind, TrainConfig};
use vit::{Error, Result};

use super::run_args::RunArgs;

/// The default recipe, which the flags' defaults show.
static DEFAULT: LazyLock<TrainConfig> = LazyLock::new(TrainConfig::default);
/// The SGD momentum when `--optimizer sgd` is given without `--momentum`.
const DEFAULT_MOMENTUM: f64 = 0.9;
/// The largest `--mlp-ratio`.
const MAX_MLP_RATIO: f64 = 64.0;
/// The most RandAugment operations per image.
const MAX_RANDAUGMENT_OPS: usize = 16;

#[derive(Clone, Copy, ValueEnum)]
enum OptimizerArg {
    Adamw,
    Sgd,
}

#[derive(Clone, Copy, ValueEnum)]
enum DecayArg {
    Cosine,
    Linear,
    Constant,
}

#[derive(Clone, Copy, ValueEnum)]
enum AugmentArg {
    /// No augmentation.
    None,
    /// Random crop (pad 4 on CIFAR) and horizontal flip (not on digits).
    Light,
    /// Light + RandAugment(2, 9), mixup 0.8, cutmix 1.0, random erasing 0.25.
    Strong,
}

#[derive(Args)]
#[command(allow_negative_numbers = true)]
pub struct TrainArgs {
    /// Dataset: cifar10, cifar100, mnist, fashion-mnist.
    #[arg(long, default_value_t = DEFAULT.dataset.to_string())]
    dataset: String,
    /// Model size: ti, s, b, l, h. With a prefix, the ViT-CNN hybrid, a ResNet whose feature map
    /// is cut into patches (then --patch counts feature pixels): `r-` the bare ResNet root, a
    /// 1/4-size map (r-ti is R+ViT-Ti; --patch 1 or 7 for 28 px Fashion-MNIST, whose map is
    /// 7x7); `r26-` R26, (2, 2, 2, 2) bottleneck blocks, a 1/32 map (r26-s is R26+ViT-S/32 with
    /// --patch 1); `r50-` the paper's R50, (3, 4, 9) blocks, a 1/16 map (r50-b is R50+ViT-B/16
    /// with --patch 1).
    #[arg(long, default_value = "ti")]
    model: String,
    /// Override the hybrid's ResNet width (the root's channels; 64, stage widths 4x to 32x it).
    #[arg(long)]
    resnet_width: Option<usize>,
    /// Override the hybrid's bottleneck blocks per stage, comma-separated (e.g. 2 for one stage
    /// of two blocks at the root's 1/4 map: the first stage keeps the map, each later one halves
    /// it; 0 for the root alone).
    #[arg(long)]
    resnet_layers: Option<String>,
    /// Patch size in pixels (of the feature map for a hybrid).
    #[arg(long, default_value_t = DEFAULT.model.patch_size)]
    patch: usize,
    /// Train at this input side instead of the dataset's: every image is resized to it
    /// (bilinear) once, up front. For a hybrid, doubling it doubles the ResNet's feature map
    /// (28 px Fashion-MNIST at 56 gives a 14x14 map); `vit eval` resizes the same way.
    #[arg(long)]
    img_size: Option<usize>,
    /// Override the variant's width.
    #[arg(long)]
    dim: Option<usize>,
    /// Override the variant's depth.
    #[arg(long)]
    depth: Option<usize>,
    /// Override the variant's number of heads.
    #[arg(long)]
    heads: Option<usize>,
    /// MLP hidden width as a multiple of the width, in (0, 64].
    #[arg(long, default_value_t = DEFAULT.model.mlp_dim as f64 / DEFAULT.model.dim as f64)]
    mlp_ratio: f64,
    /// Pool with the mean of the patch tokens instead of a class token.
    #[arg(long)]
    gap: bool,
    /// Epochs in all (on --resume: more to extend the run).
    #[arg(long, default_value_t = DEFAULT.epochs)]
    epochs: usize,
    /// Images per step.
    #[arg(long, default_value_t = DEFAULT.batch_size)]
    batch_size: usize,
    /// Optimizer.
    #[arg(long, value_enum, default_value = "adamw")]
    optimizer: OptimizerArg,
    /// Peak learning rate (> 0).
    #[arg(long, default_value_t = DEFAULT.lr)]
    lr: f64,
    /// Learning rate at the end of the decay, in [0, --lr].
    #[arg(long, default_value_t = DEFAULT.min_lr)]
    min_lr: f64,
    /// Warmup length in epochs (>= 0).
    #[arg(long, default_value_t = DEFAULT.warmup_epochs)]
    warmup: f64,
    /// Decay after warmup.
    #[arg(long, value_enum, default_value = "cosine")]
    decay: DecayArg,
    /// Weight decay (>= 0; not on biases, norms, pos_embed, cls_token).
    #[arg(long, default_value_t = DEFAULT.weight_decay)]
    weight_decay: f64,
    /// SGD momentum, in [0, 1).
    #[arg(long, default_value_t = DEFAULT_MOMENTUM)]
    momentum: f64,
    /// Label smoothing, in [0, 1).
    #[arg(long, default_value_t = DEFAULT.label_smoothing)]
    label_smoothing: f64,
    /// Global gradient-norm clipping threshold (>= 0; 0 disables).
    #[arg(long, default_value_t = DEFAULT.clip_grad.unwrap_or(0.0))]
    clip_grad: f64,
    /// Augmentation preset.
    #[arg(long, value_enum, default_value = "light")]
    augment: AugmentArg,
    /// Random-crop padding in pixels (0 disables the crop; overrides the augmentation preset,
    /// whose light and strong crops pad 4 on CIFAR and 2 on the 28 px datasets).
    #[arg(long)]
    crop_padding: Option<usize>,
    /// Mixup alpha (>= 0; 0 disables; overrides the augmentation preset).
    #[arg(long)]
    mixup: Option<f32>,
    /// CutMix alpha (>= 0; 0 disables; overrides the augmentation preset).
    #[arg(long)]
    cutmix: Option<f32>,
    /// RandAugment as N,M (e.g. 2,9; N in 0..=16, M in 0..=30; overrides the preset).
    #[arg(long)]
    randaugment: Option<String>,
    /// Random-erasing probability, in [0, 1] (overrides the preset).
    #[arg(long)]
    erasing: Option<f32>,
    /// Dropout rate, in [0, 1).
    #[arg(long, default_value_t = DEFAULT.model.dropout)]
    dropout: f64,
    /// Stochastic depth rate of the last block, in [0, 1).
    #[arg(long, default_value_t = DEFAULT.model.drop_path)]
    drop_path: f64,
    /// Output directory for checkpoints and metrics.
    #[arg(long, default_value_os_t = DEFAULT.out_dir.clone())]
    out: PathBuf,
    /// The flags every training run takes.
    #[command(flatten)]
    pub run: RunArgs,
}

/// An error unless `ok`, naming the flag, the accepted range and the value.
pub fn flag(ok: bool, name: &str, range: &str, value: impl std::fmt::Display) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!("{name} must be {range}, got {value}")))
    }
}

/// `--resnet-layers`: blocks per stage as `3,4,9`, or `0` for the root alone. The counts' range
/// is checked with the rest of the model (`ViTConfig::validate`).
fn parse_resnet_layers(s: &str) -> Result<Vec<usize>> {
    let bad = || Error::Config(format!("--resnet-layers must be block counts per stage like 3,4,9 (or 0), got {s:?}"));
    if s.trim() == "0" {
        return Ok(Vec::new());
    }
    s.split(',').map(|n| n.trim().parse::<usize>().map_err(|_| bad())).collect()
}

pub fn train_config(a: &TrainArgs) -> Result<TrainConfig> {
    let dataset: DatasetKind = a.dataset.parse()?;
    let shape = dataset.shape();
    // The flags that become other numbers below are checked here, under their own names; the
    // rest in `TrainConfig::validate`.
    for (name, value) in [("--patch", Some(a.patch)), ("--dim", a.dim), ("--depth", a.depth), ("--heads", a.heads)] {
        if let Some(v) = value {
            flag(v >= 1, name, "at least 1", v)?;
        }
    }
    let size = a.img_size.unwrap_or(shape.h);
    flag((1..=MAX_IMAGE_SIZE).contains(&size), "--img-size", &format!("in 1..={MAX_IMAGE_SIZE}"), size)?;
    let r = a.mlp_ratio;
    flag(r.is_finite() && r > 0.0 && r <= MAX_MLP_RATIO, "--mlp-ratio", &format!("in (0, {MAX_MLP_RATIO}]"), r)?;
    let c = a.clip_grad;
    flag(c.is_finite() && c >= 0.0, "--clip-grad", "a finite number >= 0 (0 disables clipping)", c)?;
    let mut model = match ResNetStemConfig::from_model_name(&a.model) {
        Some((mut resnet, v)) => {
            if let Some(w) = a.resnet_width {
                flag(w >= 1, "--resnet-width", "at least 1", w)?;
                resnet.width = w;
            }
            if let Some(l) = &a.resnet_layers {
                resnet.layers = parse_resnet_layers(l)?;
            }
            ViTConfig::hybrid(Variant::parse(v)?, resnet, a.patch, size)
        }
        None if a.resnet_width.is_some() || a.resnet_layers.is_some() => {
            let name = if a.resnet_width.is_some() { "--resnet-width" } else { "--resnet-layers" };
            return Err(Error::Config(format!("{name} needs a hybrid --model (r-, r26-, r50-), not {:?}", a.model)));
        }
        None => ViTConfig::variant(Variant::parse(&a.model)?, a.patch, size),
    };
    model.in_chans = shape.c;
    model.num_classes = dataset.classes();
    if let Some(d) = a.dim {
        model.dim = d;
    }
    if let Some(d) = a.depth {
        model.depth = d;
    }
    if let Some(h) = a.heads {
        model.heads = h;
    }
    model.mlp_dim = ((r * model.dim as f64).round() as usize).max(1);
    if a.gap {
        (model.classifier, model.class_token) = (Classifier::Gap, false);
    }
    model.dropout = a.dropout;
    model.drop_path = a.drop_path;

    let mut augment = match a.augment {
        AugmentArg::None => AugmentConfig::none(),
        AugmentArg::Light => AugmentConfig::for_dataset(dataset),
        AugmentArg::Strong => {
            // The dataset's own crop and flip (no flip for digits), plus the strong extras.
            let light = AugmentConfig::for_dataset(dataset);
            AugmentConfig { crop_padding: light.crop_padding, hflip: light.hflip, ..AugmentConfig::strong() }
        }
    };
    if let Some(p) = a.crop_padding {
        // The crop runs on the resized images.
        flag(p <= size, "--crop-padding", &format!("at most the image side, {size}"), p)?;
        augment.crop_padding = p;
    }
    if let Some(m) = a.mixup {
        flag(m.is_finite() && m >= 0.0, "--mixup", "a finite alpha >= 0 (0 disables it)", m)?;
        augment.mixup_alpha = m;
    }
    if let Some(c) = a.cutmix {
        flag(c.is_finite() && c >= 0.0, "--cutmix", "a finite alpha >= 0 (0 disables it)", c)?;
        augment.cutmix_alpha = c;
    }
    if let Some(p) = a.erasing {
        flag((0.0..=1.0).contains(&p), "--erasing", "a probability in [0, 1]", p)?;
        augment.erasing = (p > 0.0).then(|| RandomErasing { prob: p, ..RandomErasing::default() });
    }
    if let Some(s) = &a.randaugment {
        let parsed = s.split_once(',').and_then(|(n, m)| Some((n.trim().parse().ok()?, m.trim().parse().ok()?)));
        let (ops, magnitude): (usize, f32) =
            parsed.ok_or_else(|| Error::Config(format!("--randaugment expects N,M (e.g. 2,9), got {s:?}")))?;
        flag(ops <= MAX_RANDAUGMENT_OPS, "--randaugment N", &format!("in 0..={MAX_RANDAUGMENT_OPS}"), ops)?;
        flag(
            (0.0..=MAX_MAGNITUDE).contains(&magnitude),
            "--randaugment M",
            &format!("in 0..={MAX_MAGNITUDE}"),
            magnitude,
        )?;
        augment.randaugment = (ops > 0).then_some(RandAugment { ops, magnitude });
    }

    let cfg = TrainConfig {
        model,
        dataset,
        epochs: a.epochs,
        batch_size: a.batch_size,
        optimizer: match a.optimizer {
            OptimizerArg::Adamw => DEFAULT.optimizer.clone(),
            OptimizerArg::Sgd => OptimizerKind::Sgd { momentum: a.momentum, nesterov: false },
        },
        lr: a.lr,
        min_lr: a.min_lr,
        warmup_epochs: a.warmup,
        decay: match a.decay {
            DecayArg::Cosine => Decay::Cosine,
            DecayArg::Linear => Decay::Linear,
            DecayArg::Constant => Decay::Constant,
        },
        weight_decay: a.weight_decay,
        label_smoothing: a.label_smoothing,
        clip_grad: (c > 0.0).then_some(c),
        augment,
        out_dir: a.out.clone(),
        ..TrainConfig::default()
    };
    let cfg = a.run.apply(cfg)?;
    cfg.validate()?;
    Ok(cfg)
}
