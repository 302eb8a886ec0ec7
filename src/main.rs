//! The `vit` command: `train`, `eval`, `predict`, `plot`, `analyze`, `finetune`, `fewshot`.
//!
//! The flags of `vit train` are in `cli/train_args.rs`, those it shares with `vit finetune` in
//! `cli/run_args.rs`. Every numeric flag is checked (finite, in
//! range) before anything is allocated, with an error naming the flag.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use autograd::Device;
use clap::{Args, Parser, Subcommand};

use vit::checkpoint::{self, Checkpoint, LoadedModel};
use vit::data::{self, Dataset, DatasetKind, Loader, Split};
use vit::nn::ViTConfig;
use vit::train::{self, interrupt, TrainConfig};
use vit::{Error, Result};

#[path = "cli/train_args.rs"]
mod train_args;
use train_args::{flag, train_config, TrainArgs};
#[path = "cli/fewshot_args.rs"]
mod fewshot_args;
#[path = "cli/run_args.rs"]
mod run_args;
use fewshot_args::FewshotArgs;
#[path = "cli/finetune_args.rs"]
mod finetune_args;
use finetune_args::FinetuneArgs;

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
    /// Where to run: auto (a GPU when one is present), cpu, cuda or cuda:N; under mpirun, auto
    /// and cuda take each process's own GPU (local rank r: GPU r mod N). cuda:emulator runs the
    /// GPU code path on the CPU (slowly), to check it without a GPU. GPUs need a build with
    /// `--features cuda`.
    #[arg(long, global = true, default_value = "cpu")]
    device: autograd::DeviceRequest,
    /// Let f32 matrix products on a GPU use TF32 tensor cores (10-bit mantissas; off by
    /// default, so that results match the CPU's to f32 accuracy).
    #[arg(long, global = true)]
    tf32: bool,
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
    /// Few-shot linear evaluation (the paper's section 4.1): frozen features of N images per
    /// class, closed-form ridge regression to {-1, 1} targets, top-1 accuracy on the test set;
    /// mean and spread over seeds.
    Fewshot(FewshotArgs),
    /// Fine-tune a pre-trained checkpoint (ours or timm's) on another dataset, optionally at a
    /// higher resolution (the paper's section 3.2): new zero head, interpolated position
    /// embeddings, SGD momentum 0.9 with warmup and cosine decay, batch 512.
    Finetune(Box<FinetuneArgs>),
}

#[derive(Args)]
struct EvalArgs {
    /// A checkpoint written by `vit train` (or any with its config in the metadata).
    checkpoint: PathBuf,
    /// Dataset (default: the one the checkpoint was trained on, its images resized to the
    /// model's input as training resized them; another dataset must have the model's shape).
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
    /// Dataset (default: the one the checkpoint was trained on, resized to the model's input
    /// as for `vit eval`).
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

fn run_train(a: &TrainArgs, device: Device) -> Result<()> {
    let cfg = TrainConfig { device, ..train_config(a)? };
    let m = &cfg.model;
    let what = format!(
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
    a.run.run(&cfg, &what)
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

/// `dataset`'s test split (its first `subset` images) as the model `c` of checkpoint `ckpt`
/// takes it. The dataset the checkpoint was trained on is brought to the model's input the way
/// training brought it (resized for `vit train --img-size` or `vit finetune --img-size`, grey
/// images repeated over a colour model's channels); any other dataset must have the model's
/// input shape, since a model asked about images unlike its own is more likely a wrong
/// checkpoint than a question.
fn model_test_set(
    (ckpt, trained_on): (&Path, Option<DatasetKind>),
    c: &ViTConfig,
    dataset: DatasetKind,
    dir: Option<&Path>,
    subset: Option<usize>,
) -> Result<Dataset> {
    let shape = dataset.shape();
    let fits = if trained_on == Some(dataset) {
        shape.c == c.in_chans || shape.c == 1
    } else {
        (shape.c, shape.h, shape.w) == (c.in_chans, c.image_size, c.image_size)
    };
    if dataset.classes() > c.num_classes || !fits {
        return Err(Error::Config(format!(
            "{}: the model takes {}x{}x{} images in {} classes, {} has {}x{}x{} images in {}",
            ckpt.display(),
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
    let mut test = data::load_from(dataset, dir, Split::Test)?;
    if let Some(n) = subset {
        test = test.take(n);
    }
    let input = data::ImageShape::new(c.in_chans, c.image_size, c.image_size);
    if test.shape() != input {
        eprintln!("resizing {} test images to the model's {input}", test.shape());
    }
    test.to_shape(input)
}

fn run_eval(a: &EvalArgs, device: Device) -> Result<()> {
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
    let test = model_test_set((&a.checkpoint, trained_on), &model.config, dataset, a.data_dir.as_deref(), a.subset)?;
    let names = test.class_names().to_vec();
    let loader = Loader::eval(test, a.batch_size)?;
    let params = params.to(device)?;
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

fn run_predict(a: &PredictArgs, device: Device) -> Result<()> {
    flag(a.top >= 1, "--top", "at least 1", a.top)?;
    let LoadedModel { model, params, dataset: trained_on } = open_model(&a.checkpoint, a.heads)?;
    let params = params.to(device)?;
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
    let test = model_test_set((&a.checkpoint, trained_on), &model.config, dataset, a.data_dir.as_deref(), None)?;
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
    // Everything but `plot` computes: it runs on the device asked for, or fails here, before
    // any work, saying why that device cannot be used.
    let device = match &command {
        Command::Plot(_) => Ok(autograd::Device::Cpu),
        _ => vit::device::select(cli.device, cli.tf32),
    };
    let result = device.and_then(|device| match &command {
        Command::Train(a) => run_train(a, device),
        Command::Eval(a) => run_eval(a, device),
        Command::Predict(a) => run_predict(a, device),
        Command::Analyze(a) => vit::device::on_cpu_only("analyze", device).and_then(|()| run_analyze(a)),
        Command::Fewshot(a) => vit::device::on_cpu_only("fewshot", device).and_then(|()| fewshot_args::run_fewshot(a)),
        Command::Finetune(a) => {
            vit::device::on_cpu_only("finetune", device).and_then(|()| finetune_args::run_finetune(a))
        }
        Command::Plot(a) => vit::analysis::curves::plot_runs(&a.runs, a.out.as_deref())
            .map(|path| eprintln!("wrote {}", path.display())),
    });
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
