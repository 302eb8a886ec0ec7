//! The `vit` command: `train`, `eval` and `predict`.
//!
//! The flags' defaults are the default recipe, [`TrainConfig::default`]: one source for both.
//! Every numeric flag is checked (finite, in range) before anything is allocated, with an error
//! naming the flag.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::LazyLock;

use clap::{Args, Parser, Subcommand, ValueEnum};

use vit::checkpoint::{self, Checkpoint, LoadedModel};
use vit::data::augment::{RandAugment, RandomErasing, MAX_MAGNITUDE};
use vit::data::{self, AugmentConfig, DatasetKind, Loader, Split};
use vit::nn::{Classifier, Variant, ViTConfig};
use vit::optim::Decay;
use vit::train::{self, interrupt, OptimizerKind, TrainConfig};
use vit::{Error, Result};

/// The default recipe, which the flags' defaults show.
static DEFAULT: LazyLock<TrainConfig> = LazyLock::new(TrainConfig::default);
/// The SGD momentum when `--optimizer sgd` is given without `--momentum`.
const DEFAULT_MOMENTUM: f64 = 0.9;
/// The largest `--mlp-ratio`.
const MAX_MLP_RATIO: f64 = 64.0;
/// The most RandAugment operations per image.
const MAX_RANDAUGMENT_OPS: usize = 16;

#[derive(Parser)]
#[command(
    name = "vit",
    version,
    about = "Train, evaluate and run Vision Transformers (Dosovitskiy et al., 2021)",
    allow_negative_numbers = true
)]
struct Cli {
    /// Worker threads (default: RAYON_NUM_THREADS, else every core).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Train a ViT (default: ViT-Tiny, patch 4, 32x32 CIFAR-10, downloaded on first use).
    Train(Box<TrainArgs>),
    /// Evaluate a checkpoint: top-1/top-5 accuracy, per-class accuracy, confusion matrix.
    Eval(EvalArgs),
    /// Classify PNG or JPEG images with a checkpoint.
    Predict(PredictArgs),
    /// Draw the training curves of a run (or overlay several) from their metrics.jsonl.
    Plot(PlotArgs),
    /// Draw what a trained model learned (the paper's section 4.5): attention rollout and
    /// per-layer attention maps, mean attention distance, position-embedding similarity and
    /// patch-embedding filters, each PNG with its numbers as CSV/JSON.
    Analyze(AnalyzeArgs),
}

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
struct TrainArgs {
    /// Dataset: cifar10, cifar100, mnist, fashion-mnist.
    #[arg(long, default_value_t = DEFAULT.dataset.to_string())]
    dataset: String,
    /// Where datasets live (default: data/, where CIFAR-10 is downloaded if missing; Fashion-MNIST
    /// also comes from the system copy when data/ lacks it). A directory given here is the only
    /// place looked in.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Model size: ti, s, b, l, h.
    #[arg(long, default_value = "ti")]
    model: String,
    /// Patch size in pixels.
    #[arg(long, default_value_t = DEFAULT.model.patch_size)]
    patch: usize,
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
    /// Seed of every random choice (initialisation, order, augmentation, dropout).
    #[arg(long, default_value_t = DEFAULT.seed)]
    seed: u64,
    /// Output directory for checkpoints and metrics.
    #[arg(long, default_value_os_t = DEFAULT.out_dir.clone())]
    out: PathBuf,
    /// Continue from OUT/last.safetensors, exactly where it stopped, with the run's flags. Safe
    /// to change: --epochs (to extend or shorten a run: the learning-rate schedule is re-planned
    /// over the new total from the step reached), --max-steps, --test-subset, --data-dir, --quiet
    /// and --threads; any other changed flag is refused with the list of differences.
    #[arg(long)]
    resume: bool,
    /// Train on the first N training images only.
    #[arg(long)]
    train_subset: Option<usize>,
    /// Evaluate on the first N test images only.
    #[arg(long)]
    test_subset: Option<usize>,
    /// Stop after N optimizer steps in all (a checkpoint is written; --resume continues).
    #[arg(long)]
    max_steps: Option<u64>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct EvalArgs {
    /// A checkpoint written by `vit train` (or any with its config in the metadata).
    checkpoint: PathBuf,
    /// Dataset (default: the one the checkpoint was trained on).
    #[arg(long)]
    dataset: Option<String>,
    /// Where datasets live (default: data/, and for Fashion-MNIST the system copy).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Images per batch.
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    /// Evaluate on the first N test images only.
    #[arg(long)]
    subset: Option<usize>,
    /// Number of heads, for a checkpoint without a stored config (e.g. a timm state dict) whose
    /// width is not a standard variant's.
    #[arg(long)]
    heads: Option<usize>,
    /// Where to draw the confusion matrix (default: CHECKPOINT's directory, STEM-confusion.png;
    /// its counts go beside it as .csv).
    #[arg(long)]
    confusion_png: Option<PathBuf>,
}

#[derive(Args)]
struct PredictArgs {
    /// A checkpoint written by `vit train`.
    checkpoint: PathBuf,
    /// PNG or JPEG images (resized to the model's input size); one that cannot be read is
    /// reported and the others are still classified.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// How many classes to list per image.
    #[arg(long, default_value_t = 3)]
    top: usize,
    /// Number of heads, for a checkpoint without a stored config (e.g. a timm state dict) whose
    /// width is not a standard variant's.
    #[arg(long)]
    heads: Option<usize>,
}

#[derive(Args)]
struct PlotArgs {
    /// Run directories (each holding the metrics.jsonl that `vit train` writes).
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Where to write the PNG (default: RUN_DIR/curves.png for one run, ./curves.png for several).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct AnalyzeArgs {
    /// A checkpoint written by `vit train` (or any with its config in the metadata).
    checkpoint: PathBuf,
    /// PNG images of the model's input size to show (default: test images, one per class).
    images: Vec<PathBuf>,
    /// Directory for the figures.
    #[arg(long, default_value = "analysis")]
    out: PathBuf,
    /// Dataset (default: the one the checkpoint was trained on).
    #[arg(long)]
    dataset: Option<String>,
    /// Where datasets live (default: data/, and for Fashion-MNIST the system copy).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Test images the mean attention distance averages over.
    #[arg(long, default_value_t = 128)]
    samples: usize,
    /// Test images to show when no image is given.
    #[arg(long, default_value_t = 10)]
    show: usize,
    /// Number of heads, for a checkpoint without a stored config.
    #[arg(long)]
    heads: Option<usize>,
}

/// An error unless `ok`, naming the flag, the accepted range and the value.
fn flag(ok: bool, name: &str, range: &str, value: impl std::fmt::Display) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!("{name} must be {range}, got {value}")))
    }
}

fn train_config(a: &TrainArgs) -> Result<TrainConfig> {
    let dataset: DatasetKind = a.dataset.parse()?;
    let shape = dataset.shape();
    // The flags that become other numbers below are checked here, under their own names; the
    // rest in `TrainConfig::validate`.
    for (name, value) in [("--patch", Some(a.patch)), ("--dim", a.dim), ("--depth", a.depth), ("--heads", a.heads)] {
        if let Some(v) = value {
            flag(v >= 1, name, "at least 1", v)?;
        }
    }
    let r = a.mlp_ratio;
    flag(r.is_finite() && r > 0.0 && r <= MAX_MLP_RATIO, "--mlp-ratio", &format!("in (0, {MAX_MLP_RATIO}]"), r)?;
    let c = a.clip_grad;
    flag(c.is_finite() && c >= 0.0, "--clip-grad", "a finite number >= 0 (0 disables clipping)", c)?;
    let mut model = ViTConfig::variant(Variant::parse(&a.model)?, a.patch, shape.h);
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
        model.classifier = Classifier::Gap;
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
        data_dir: a.data_dir.clone(),
        train_subset: a.train_subset,
        test_subset: a.test_subset,
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
        seed: a.seed,
        out_dir: a.out.clone(),
        resume: a.resume,
        progress: !a.quiet,
        max_steps: a.max_steps,
    };
    cfg.validate()?;
    Ok(cfg)
}

fn run_train(a: &TrainArgs) -> Result<()> {
    let cfg = train_config(a)?;
    let m = &cfg.model;
    eprintln!(
        "training ViT (dim {}, depth {}, heads {}, patch {}, {} parameters) on {} for {} epochs, batch {}, {} threads",
        m.dim,
        m.depth,
        m.heads,
        m.patch_size,
        m.num_params(),
        cfg.dataset,
        cfg.epochs,
        cfg.batch_size,
        rayon::current_num_threads()
    );
    interrupt::install_handler()?;
    let report = train::train(&cfg)?;
    eprintln!(
        "best test accuracy {:.2}%; checkpoint: {}",
        100.0 * report.best_test_acc,
        report.last_checkpoint.display()
    );
    Ok(())
}

/// The command line that resumes this one: the same arguments, with `--resume`.
fn resume_command() -> String {
    let mut args: Vec<String> = std::env::args().collect();
    if let Some(first) = args.first_mut() {
        *first = "vit".into();
    }
    if !args.iter().any(|a| a == "--resume") {
        args.push("--resume".into());
    }
    let quote = |a: &String| {
        if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=,:+".contains(c)) {
            a.clone()
        } else {
            format!("'{}'", a.replace('\'', "'\\''"))
        }
    };
    args.iter().map(quote).collect::<Vec<_>>().join(" ")
}

/// A checkpoint's model, parameters and dataset (see [`checkpoint::load_model`]).
fn open_model(path: &PathBuf, heads: Option<usize>) -> Result<LoadedModel> {
    if let Some(h) = heads {
        flag(h >= 1, "--heads", "at least 1", h)?;
    }
    checkpoint::load_model(&Checkpoint::open(path)?, heads)
}

fn run_eval(a: &EvalArgs) -> Result<()> {
    flag(a.batch_size >= 1, "--batch-size", "at least 1", a.batch_size)?;
    if let Some(n) = a.subset {
        flag(n >= 1, "--subset", "at least 1", n)?;
    }
    let LoadedModel { model, params, dataset: trained_on } = open_model(&a.checkpoint, a.heads)?;
    let dataset = match &a.dataset {
        Some(d) => d.parse()?,
        None => trained_on
            .ok_or_else(|| Error::Config(format!("{}: records no dataset; pass --dataset", a.checkpoint.display())))?,
    };
    let (c, shape) = (&model.config, dataset.shape());
    if (shape.c, shape.h, shape.w) != (c.in_chans, c.image_size, c.image_size) || dataset.classes() > c.num_classes {
        return Err(Error::Config(format!(
            "{}: the model takes {}x{}x{} images in {} classes, {} has {}x{}x{} images in {}",
            a.checkpoint.display(),
            c.in_chans,
            c.image_size,
            c.image_size,
            c.num_classes,
            dataset,
            shape.c,
            shape.h,
            shape.w,
            dataset.classes()
        )));
    }
    let mut test = data::load_from(dataset, a.data_dir.as_deref(), Split::Test)?;
    if let Some(n) = a.subset {
        test = test.take(n);
    }
    let names = test.class_names().to_vec();
    let loader = Loader::eval(test, a.batch_size)?;
    let metrics = train::evaluate(&model, &params, &loader);
    println!("{} on the {} test set", a.checkpoint.display(), dataset);
    print!("{}", metrics.report(&names));
    // The picture beside the table: a failure at the default place (a read-only checkpoint
    // directory) only warns, since the report is out; a path the user chose must work.
    let default_png = || {
        let stem = a.checkpoint.file_stem().unwrap_or_default().to_string_lossy();
        a.checkpoint.with_file_name(format!("{stem}-confusion.png"))
    };
    let png = a.confusion_png.clone().unwrap_or_else(default_png);
    match vit::analysis::confusion::write_confusion(&metrics, &names, &png) {
        Ok(()) => eprintln!("confusion matrix: {}", png.display()),
        Err(e) if a.confusion_png.is_none() => eprintln!("warning: {e}; pass --confusion-png PATH"),
        Err(e) => return Err(e),
    }
    Ok(())
}

fn run_predict(a: &PredictArgs) -> Result<()> {
    flag(a.top >= 1, "--top", "at least 1", a.top)?;
    let LoadedModel { model, params, dataset: trained_on } = open_model(&a.checkpoint, a.heads)?;
    let c = &model.config;
    let norm = trained_on.map(|d| d.normalization());
    let names = trained_on.map(|d| d.class_names()).unwrap_or_default();
    let mut failed = 0;
    for path in &a.images {
        // A bad image is reported and skipped: the others are still classified.
        let mut x = match vit::image::read_image(path, c.in_chans, c.image_size) {
            Ok(x) => x,
            Err(e) => {
                eprintln!("vit: {e}");
                failed += 1;
                continue;
            }
        };
        if let Some(n) = &norm {
            n.normalize(&mut x, data::ImageShape::new(c.in_chans, c.image_size, c.image_size));
        }
        let logits = train::predict_logits(&model, &params, x, &[1, c.in_chans, c.image_size, c.image_size]);
        let probs = softmax(logits.data());
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&i, &j| probs[j].total_cmp(&probs[i]));
        let top: Vec<String> = order
            .iter()
            .take(a.top)
            .map(|&i| format!("{} {:.1}%", names.get(i).cloned().unwrap_or_else(|| i.to_string()), 100.0 * probs[i]))
            .collect();
        println!("{}: {}", path.display(), top.join(", "));
    }
    if failed > 0 {
        return Err(Error::Data(format!("{failed} of {} images could not be read (see above)", a.images.len())));
    }
    Ok(())
}

fn run_analyze(a: &AnalyzeArgs) -> Result<()> {
    let LoadedModel { model, params, dataset: trained_on } = open_model(&a.checkpoint, a.heads)?;
    let dataset: DatasetKind = match &a.dataset {
        Some(d) => d.parse()?,
        None => trained_on
            .ok_or_else(|| Error::Config(format!("{}: records no dataset; pass --dataset", a.checkpoint.display())))?,
    };
    let test = data::load_from(dataset, a.data_dir.as_deref(), Split::Test)?;
    let opts = vit::analysis::AnalyzeOptions {
        out_dir: a.out.clone(),
        images: a.images.clone(),
        shown: a.show,
        samples: a.samples,
        ..Default::default()
    };
    for path in vit::analysis::analyze(&model, &params, &test, &opts)? {
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn softmax(x: &[f32]) -> Vec<f64> {
    let m = x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let e: Vec<f64> = x.iter().map(|&v| (v as f64 - m).exp()).collect();
    let z: f64 = e.iter().sum();
    e.into_iter().map(|v| v / z).collect()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(t) = cli.threads {
        let pool = if t == 0 {
            Err("--threads must be at least 1, got 0".to_string())
        } else {
            rayon::ThreadPoolBuilder::new().num_threads(t).build_global().map_err(|e| e.to_string())
        };
        if let Err(e) = pool {
            eprintln!("vit: cannot set {t} threads: {e}");
            return ExitCode::FAILURE;
        }
    }
    let command = cli.command.unwrap_or_else(|| {
        eprintln!("vit: no command given; run `vit train` to train the default recipe, or `vit --help`");
        std::process::exit(2)
    });
    let result = match &command {
        Command::Train(a) => run_train(a),
        Command::Eval(a) => run_eval(a),
        Command::Predict(a) => run_predict(a),
        Command::Analyze(a) => run_analyze(a),
        Command::Plot(a) => vit::analysis::curves::plot_runs(&a.runs, a.out.as_deref())
            .map(|path| eprintln!("wrote {}", path.display())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ Error::Interrupted(_)) => {
            eprintln!("vit: {e}\nto continue: {}", resume_command());
            ExitCode::from(interrupt::EXIT_CODE)
        }
        Err(e) => {
            eprintln!("vit: {e}");
            ExitCode::FAILURE
        }
    }
}
