//! The training loop: epochs of steps, evaluation, metrics and checkpoints, with exact resume.
//!
//! Every source of randomness is derived from the run's seed and a position — the loader's
//! shuffle and augmentation from `(seed, epoch, index)`, each step's dropout and stochastic
//! depth from `(seed, global step)` — so the state a checkpoint needs to continue exactly is
//! the parameters, the optimizer's moments and the position `(epoch, batch, global step)`.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use super::evaluate::evaluate;
use super::step::train_step;
use super::{OptimizerKind, TrainConfig};
use crate::checkpoint::{self, Checkpoint, LoadOptions};
use crate::data::loader::derive_rng;
use crate::data::{self, Dataset, Loader, LoaderConfig, Split};
use crate::error::{Error, Result};
use crate::nn::{ParamStore, VisionTransformer};
use crate::optim::{AdamW, LrSchedule, Optimizer, Sgd};

const STEP_STREAM: u64 = 0x7374_6570; // "step"
const META_EPOCH: &str = "vit.epoch";
const META_BATCH: &str = "vit.batch";
const META_STEP: &str = "vit.global_step";
const META_OPTIM: &str = "vit.optimizer";
const META_OPTIM_STEP: &str = "vit.optimizer_step";
const META_BEST: &str = "vit.best_test_acc";
const META_SEED: &str = "vit.seed";
/// The dataset a checkpoint was trained on (for its class names and normalisation).
pub const META_DATASET: &str = "vit.dataset";

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochRecord {
    pub epoch: usize,
    pub global_step: u64,
    pub lr: f64,
    pub train_loss: f64,
    pub train_acc: f64,
    pub test_loss: f64,
    pub test_acc: f64,
    pub test_top5: f64,
    pub images_per_sec: f64,
    pub seconds: f64,
}

impl EpochRecord {
    fn to_json(&self) -> String {
        format!(
            "{{\"epoch\":{},\"step\":{},\"lr\":{:.6e},\"train_loss\":{:.6},\"train_acc\":{:.6},\"test_loss\":{:.6},\"test_acc\":{:.6},\"test_top5\":{:.6},\"images_per_sec\":{:.2},\"seconds\":{:.2}}}",
            self.epoch,
            self.global_step,
            self.lr,
            self.train_loss,
            self.train_acc,
            self.test_loss,
            self.test_acc,
            self.test_top5,
            self.images_per_sec,
            self.seconds
        )
    }
}

/// What a run produced.
pub struct TrainReport {
    pub model: VisionTransformer,
    pub params: ParamStore<f32>,
    /// One record per epoch completed in this invocation.
    pub epochs: Vec<EpochRecord>,
    pub best_test_acc: f64,
    pub global_step: u64,
    pub last_checkpoint: PathBuf,
}

/// Loads the datasets named by `cfg` (downloading CIFAR-10 if needed) and trains.
pub fn train(cfg: &TrainConfig) -> Result<TrainReport> {
    cfg.validate()?;
    let mut train_set = data::load_or_download(cfg.dataset, &cfg.data_dir, Split::Train, cfg.progress)?;
    let mut test_set = data::load(cfg.dataset, &cfg.data_dir, Split::Test)?;
    if let Some(n) = cfg.train_subset {
        train_set = train_set.take(n);
    }
    if let Some(n) = cfg.test_subset {
        test_set = test_set.take(n);
    }
    train_on(cfg, train_set, test_set)
}

fn new_optimizer(cfg: &TrainConfig, params: &ParamStore<f32>) -> Box<dyn Optimizer> {
    match cfg.optimizer {
        OptimizerKind::AdamW { beta1, beta2, eps } => Box::new(AdamW::new(params, beta1, beta2, eps, cfg.weight_decay)),
        OptimizerKind::Sgd { momentum, nesterov } => Box::new(Sgd::new(params, momentum, cfg.weight_decay, nesterov)),
    }
}

/// Where a run stands.
#[derive(Clone, Copy, Debug, Default)]
struct Position {
    epoch: usize,
    batch: usize,
    global_step: u64,
    best_test_acc: f64,
}

/// Trains on the given datasets (the entry point for tests and for data from elsewhere).
pub fn train_on(cfg: &TrainConfig, train_set: Dataset, test_set: Dataset) -> Result<TrainReport> {
    cfg.model.validate()?;
    let shape = train_set.shape();
    let m = &cfg.model;
    if (shape.c, shape.h, shape.w) != (m.in_chans, m.image_size, m.image_size) || train_set.classes() > m.num_classes {
        return Err(Error::Config(format!(
            "the model expects {}x{}x{} images in {} classes, the data has {}x{}x{} in {}",
            m.in_chans,
            m.image_size,
            m.image_size,
            m.num_classes,
            shape.c,
            shape.h,
            shape.w,
            train_set.classes()
        )));
    }
    fs::create_dir_all(&cfg.out_dir).map_err(|e| Error::io(&cfg.out_dir, e))?;
    let last_path = cfg.out_dir.join("last.safetensors");
    let best_path = cfg.out_dir.join("best.safetensors");

    let (model, mut params) = VisionTransformer::init::<f32>(&cfg.model, cfg.seed)?;
    let mut opt = new_optimizer(cfg, &params);
    let loader = Loader::new(train_set, LoaderConfig::train(cfg.batch_size, cfg.seed, cfg.augment.clone()))?;
    let eval_loader = Loader::eval(test_set, cfg.batch_size)?;
    let steps_per_epoch = loader.batches_per_epoch();
    if steps_per_epoch == 0 {
        return Err(Error::Config(format!(
            "the training set ({} images) is smaller than one batch ({})",
            loader.dataset().len(),
            cfg.batch_size
        )));
    }
    let schedule = LrSchedule {
        base_lr: cfg.lr,
        min_lr: cfg.min_lr,
        warmup_steps: (cfg.warmup_epochs * steps_per_epoch as f64).round() as u64,
        total_steps: (cfg.epochs * steps_per_epoch) as u64,
        decay: cfg.decay,
    };

    let metrics_path = cfg.out_dir.join("metrics.jsonl");
    let mut pos = Position::default();
    // Whether `best.safetensors` belongs to this run: the first evaluated epoch always writes it
    // (even at 0% accuracy), so a fresh run never leaves an older run's file in its place.
    let mut have_best = cfg.resume && best_path.is_file();
    if cfg.resume {
        pos = resume(&last_path, cfg, &mut params, opt.as_mut())?;
        eprintln!(
            "resuming from {} at epoch {}, batch {} (step {})",
            last_path.display(),
            pos.epoch + 1,
            pos.batch,
            pos.global_step
        );
    }

    let mut records = Vec::new();
    let started = Instant::now();
    'epochs: while pos.epoch < cfg.epochs {
        let epoch = pos.epoch;
        let bar = progress_bar(cfg.progress, (steps_per_epoch - pos.batch) as u64, epoch, cfg.epochs);
        let t0 = Instant::now();
        let (mut loss_sum, mut correct, mut seen, mut lr) = (0.0, 0usize, 0usize, schedule.lr(pos.global_step));
        for batch in loader.epoch_from(epoch as u64, pos.batch) {
            if cfg.max_steps.is_some_and(|max| pos.global_step >= max) {
                bar.finish_and_clear();
                save(&last_path, cfg, &params, opt.as_ref(), pos)?;
                break 'epochs;
            }
            lr = schedule.lr(pos.global_step);
            let n = batch.len();
            let mut rng = derive_rng(cfg.seed, &[STEP_STREAM, pos.global_step]);
            let out =
                train_step(&model, &mut params, opt.as_mut(), batch, lr, cfg.label_smoothing, cfg.clip_grad, &mut rng)
                    .map_err(|e| {
                        bar.abandon();
                        let kept = if last_path.exists() {
                            format!("the last good checkpoint, {}, is intact", last_path.display())
                        } else {
                            "no checkpoint had been written yet".to_string()
                        };
                        Error::Train(format!(
                    "{e} at epoch {}, step {}: stopping; {kept}. Try a lower --lr, a longer --warmup or --clip-grad 1",
                    epoch + 1,
                    pos.global_step
                ))
                    })?;
            pos.global_step += 1;
            pos.batch += 1;
            loss_sum += out.loss * n as f64;
            correct += out.correct;
            seen += n;
            let secs = t0.elapsed().as_secs_f64();
            bar.set_message(format!(
                "loss {:.4}  acc {:5.2}%  {:.0} img/s  lr {:.2e}",
                loss_sum / seen as f64,
                100.0 * correct as f64 / seen as f64,
                seen as f64 / secs,
                lr
            ));
            bar.inc(1);
        }
        bar.finish_and_clear();
        let train_secs = t0.elapsed().as_secs_f64();
        let metrics = evaluate(&model, &params, &eval_loader);
        pos.epoch += 1;
        pos.batch = 0;
        let record = EpochRecord {
            epoch: pos.epoch,
            global_step: pos.global_step,
            lr,
            train_loss: loss_sum / seen.max(1) as f64,
            train_acc: correct as f64 / seen.max(1) as f64,
            test_loss: metrics.mean_loss(),
            test_acc: metrics.top1(),
            test_top5: metrics.top5(),
            images_per_sec: seen as f64 / train_secs,
            seconds: t0.elapsed().as_secs_f64(),
        };
        println!(
            "epoch {:>3}/{}  train loss {:.4} acc {:5.2}%  test loss {:.4} acc {:5.2}% (top-5 {:5.2}%)  {:.0} img/s  {:.0} s",
            record.epoch,
            cfg.epochs,
            record.train_loss,
            100.0 * record.train_acc,
            record.test_loss,
            100.0 * record.test_acc,
            100.0 * record.test_top5,
            record.images_per_sec,
            record.seconds
        );
        // A fresh run in a used directory starts its own metrics file (at its first record, so an
        // interrupted start loses nothing) rather than appending to another run's lines.
        let fresh_file = !cfg.resume && records.is_empty();
        append_metrics(&metrics_path, &record, fresh_file)?;
        // The curves are a view of metrics.jsonl: failing to draw them never stops training.
        if let Err(e) = crate::analysis::curves::write_run_curves(&cfg.out_dir) {
            eprintln!("warning: could not draw the training curves: {e}");
        }
        let improved = !have_best || record.test_acc > pos.best_test_acc;
        if improved {
            pos.best_test_acc = record.test_acc;
        }
        save(&last_path, cfg, &params, opt.as_ref(), pos)?;
        if improved {
            save(&best_path, cfg, &params, opt.as_ref(), pos)?;
            have_best = true;
        }
        records.push(record);
    }
    if cfg.progress {
        eprintln!("trained {} steps in {:.0} s", pos.global_step, started.elapsed().as_secs_f64());
    }
    Ok(TrainReport {
        model,
        params,
        epochs: records,
        best_test_acc: pos.best_test_acc,
        global_step: pos.global_step,
        last_checkpoint: last_path,
    })
}

fn progress_bar(show: bool, len: u64, epoch: usize, epochs: usize) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:28}] {pos}/{len}  {msg}  ETA {eta}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("epoch {}/{}", epoch + 1, epochs));
    bar
}

fn append_metrics(path: &Path, record: &EpochRecord, truncate: bool) -> Result<()> {
    let mut options = OpenOptions::new();
    if truncate {
        options.write(true).truncate(true);
    } else {
        options.append(true);
    }
    let mut f = options.create(true).open(path).map_err(|e| Error::io(path, e))?;
    writeln!(f, "{}", record.to_json()).map_err(|e| Error::io(path, e))
}

/// Writes the model, the optimizer's state and the run's position, atomically.
fn save(path: &Path, cfg: &TrainConfig, params: &ParamStore<f32>, opt: &dyn Optimizer, pos: Position) -> Result<()> {
    let (state, optim_step) = opt.state(params);
    let extra: Vec<(String, &autograd::Tensor<f32>)> = state.iter().map(|(n, t)| (n.clone(), t)).collect();
    let mut meta = checkpoint::config_metadata(&cfg.model);
    meta.insert(META_EPOCH.into(), pos.epoch.to_string());
    meta.insert(META_BATCH.into(), pos.batch.to_string());
    meta.insert(META_STEP.into(), pos.global_step.to_string());
    meta.insert(META_OPTIM.into(), cfg.optimizer.name().into());
    meta.insert(META_OPTIM_STEP.into(), optim_step.to_string());
    meta.insert(META_BEST.into(), pos.best_test_acc.to_string());
    meta.insert(META_SEED.into(), cfg.seed.to_string());
    meta.insert(META_DATASET.into(), cfg.dataset.name().into());
    checkpoint::save(path, params, &extra, &meta)
}

/// Restores parameters, optimizer state and position from a training checkpoint.
fn resume(path: &Path, cfg: &TrainConfig, params: &mut ParamStore<f32>, opt: &mut dyn Optimizer) -> Result<Position> {
    if !path.exists() {
        return Err(Error::Checkpoint(format!("--resume: no checkpoint at {}", path.display())));
    }
    let ckpt = Checkpoint::open(path)?;
    if let Some(saved) = ckpt.config()? {
        if saved != cfg.model {
            return Err(Error::Checkpoint(format!(
                "{}: was trained with another model configuration ({saved:?}); resume with the same flags",
                path.display()
            )));
        }
    }
    let meta = |key: &str| -> Result<&str> {
        ckpt.meta(key).ok_or_else(|| {
            Error::Checkpoint(format!("{}: not a training checkpoint (no {key} metadata)", path.display()))
        })
    };
    let num = |key: &str| -> Result<u64> {
        meta(key)?.parse().map_err(|_| Error::Checkpoint(format!("{}: bad {key} metadata", path.display())))
    };
    if meta(META_OPTIM)? != cfg.optimizer.name() {
        return Err(Error::Checkpoint(format!(
            "{}: was trained with {}, not {}",
            path.display(),
            meta(META_OPTIM)?,
            cfg.optimizer.name()
        )));
    }
    if num(META_SEED)? != cfg.seed {
        return Err(Error::Checkpoint(format!(
            "{}: was trained with seed {}, not {}; resume with the same --seed",
            path.display(),
            num(META_SEED)?,
            cfg.seed
        )));
    }
    checkpoint::load_params(&ckpt, &cfg.model, params, &LoadOptions::default())?;
    let optim_step = num(META_OPTIM_STEP)?;
    let mut missing = None;
    opt.load_state(params, optim_step, &mut |name| match ckpt.tensor::<f32>(name) {
        Ok(t) => Some(t),
        Err(e) => {
            missing.get_or_insert(e);
            None
        }
    })?;
    let best =
        meta(META_BEST)?.parse().map_err(|_| Error::Checkpoint(format!("{}: bad {META_BEST}", path.display())))?;
    Ok(Position {
        epoch: num(META_EPOCH)? as usize,
        batch: num(META_BATCH)? as usize,
        global_step: num(META_STEP)?,
        best_test_acc: best,
    })
}
