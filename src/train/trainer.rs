//! The training loop: epochs of steps, evaluation, metrics and checkpoints, with exact resume.
//!
//! Every source of randomness is derived from the run's seed and a position — the loader's
//! shuffle and augmentation from `(seed, epoch, index)`, each step's dropout and stochastic
//! depth from `(seed, global step)` — so the state a checkpoint needs to continue exactly is
//! the parameters, the optimizer's moments and the position (see `train/checkpointing.rs`).
//!
//! The order of the writes at the end of an epoch is what makes a kill at any instant lose
//! nothing: the metrics line first (a resumed run drops lines its checkpoint does not cover),
//! then `best.safetensors` when the epoch improved, then `last.safetensors`, which records the
//! new best accuracy only once the best model is on disk; then the curves, and the metrics line
//! is completed with the time those writes took (see `train/log.rs`).
//!
//! In a data-parallel run ([`train_on_with`] with a [`Comm`] of several ranks) every rank runs
//! this loop on its shard of each batch, and only rank 0 writes (checkpoints, metrics, curves)
//! and prints; the outcome of each write is broadcast, so a failed write stops every rank with
//! rank 0's error. Every decision that ends the loop (a stop request, a diverged step) is taken
//! from summed values, so all ranks take it at the same step.

use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use autograd::Device;
use indicatif::{ProgressBar, ProgressStyle};

use super::checkpointing::{resume, save, Position};
use super::evaluate::{evaluate, evaluate_until};
use super::interrupt;
use super::log::{self, EpochRecord};
use super::metrics::Metrics;
use super::replicas::{broadcast_state, check_same_run, sum_metrics};
use super::step::{train_step_sharded, Sharding};
use super::{OptimizerKind, TrainConfig};
use crate::checkpoint::{model::message, remove_stale_temporaries};
use crate::data::loader::derive_rng;
use crate::data::{self, Dataset, ImageShape, Loader, LoaderConfig, Shard, Split};
use crate::dist::{Comm, GradReducer, ReduceStats};
use crate::error::{Error, Result};
use crate::nn::{ParamStore, VisionTransformer};
use crate::optim::{AdamW, LrSchedule, Optimizer, Sgd};

const STEP_STREAM: u64 = 0x7374_6570; // "step"
const LAST: &str = "last.safetensors";
const BEST: &str = "best.safetensors";

/// What a run produced.
pub struct TrainReport {
    /// The model trained.
    pub model: VisionTransformer,
    /// Its parameters at the end.
    pub params: ParamStore<f32>,
    /// One record per epoch completed in this invocation.
    pub epochs: Vec<EpochRecord>,
    /// The best test accuracy of any completed epoch of the run.
    pub best_test_acc: f64,
    /// Optimizer steps taken in all.
    pub global_step: u64,
    /// `last.safetensors`.
    pub last_checkpoint: PathBuf,
    /// Steps taken in this invocation.
    pub steps_run: u64,
    /// The shards each global batch was split into (world size x micro-batches per rank).
    pub shards: usize,
    /// Communication over this invocation's steps, summed.
    pub reduce: ReduceStats,
}

/// Loads the datasets named by `cfg` (downloading CIFAR-10 if needed), says which files it read,
/// and trains.
pub fn train(cfg: &TrainConfig) -> Result<TrainReport> {
    train_with(cfg, &Comm::local())
}

/// [`train`] as one rank of `comm`: rank 0 loads (and if need be downloads) the data first,
/// then the others load their copies.
pub fn train_with(cfg: &TrainConfig, comm: &Comm) -> Result<TrainReport> {
    cfg.validate()?;
    let dir = cfg.data_dir.as_deref();
    let load = || -> Result<(Dataset, Dataset)> {
        let train = data::load_or_download(cfg.dataset, dir, Split::Train, cfg.progress && comm.is_root())?;
        Ok((train, data::load_from(cfg.dataset, dir, Split::Test)?))
    };
    let root_sets = comm.agree("waiting for rank 0 to load the data", comm.is_root().then(load))?;
    let (mut train_set, mut test_set) = match root_sets {
        Some(sets) => sets,
        None => load()?,
    };
    if comm.is_root() {
        for (split, set) in [(Split::Train, &train_set), (Split::Test, &test_set)] {
            let files: Vec<String> = set.sources().iter().map(|p| p.display().to_string()).collect();
            eprintln!("{} {split}: {} images from {}", cfg.dataset, set.len(), files.join(", "));
        }
    }
    if let Some(n) = cfg.train_subset {
        train_set = train_set.take(n);
    }
    if let Some(n) = cfg.test_subset {
        test_set = test_set.take(n);
    }
    train_on_with(cfg, train_set, test_set, comm)
}

fn new_optimizer(cfg: &TrainConfig, params: &ParamStore<f32>) -> Box<dyn Optimizer> {
    match cfg.optimizer {
        OptimizerKind::AdamW { beta1, beta2, eps } => Box::new(AdamW::new(params, beta1, beta2, eps, cfg.weight_decay)),
        OptimizerKind::Sgd { momentum, nesterov } => Box::new(Sgd::new(params, momentum, cfg.weight_decay, nesterov)),
    }
}

/// Trains on the given datasets (the entry point for tests and for data from elsewhere).
///
/// Stops early, with `last.safetensors` written at the exact position reached, after
/// `cfg.max_steps` steps (returning the report) or when [`interrupt::stop_requested`] (returning
/// [`Error::Interrupted`]). A run that diverges stops with an error naming the step, writing
/// nothing.
pub fn train_on(cfg: &TrainConfig, train_set: Dataset, test_set: Dataset) -> Result<TrainReport> {
    train_on_with(cfg, train_set, test_set, &Comm::local())
}

/// [`train_on`] as one rank of `comm`: this rank trains on its shard of every global batch
/// (`cfg.batch_size` images over all ranks) and evaluates its slice of the test set; see the
/// module documentation for who writes what.
pub fn train_on_with(cfg: &TrainConfig, train_set: Dataset, test_set: Dataset, comm: &Comm) -> Result<TrainReport> {
    cfg.validate_recipe()?;
    let (rank, world, root) = (comm.rank(), comm.world_size(), comm.is_root());
    let m = &cfg.model;
    if train_set.classes() > m.num_classes {
        return Err(Error::Config(format!(
            "the model has {} classes, the data {}",
            m.num_classes,
            train_set.classes()
        )));
    }
    // Inputs of another size (fine-tuning at a higher resolution) are resized once, up front;
    // grey ones are repeated over a colour model's channels (`Dataset::to_shape`).
    let input = ImageShape::new(m.in_chans, m.image_size, m.image_size);
    let (train_set, test_set) = if train_set.shape() != input || test_set.shape() != input {
        if root {
            eprintln!("resizing {} images to the model's {input}", train_set.shape());
        }
        (train_set.to_shape(input)?, test_set.to_shape(input)?)
    } else {
        (train_set, test_set)
    };
    if cfg.batch_size < world {
        return Err(Error::Config(format!(
            "--batch-size {} is the global batch, shared by the {world} ranks: it must be at least {world}",
            cfg.batch_size
        )));
    }
    check_same_run(comm, cfg, train_set.len(), test_set.len())?;
    let last_path = cfg.out_dir.join(LAST);
    let best_path = cfg.out_dir.join(BEST);
    let prepare = || -> Result<()> {
        fs::create_dir_all(&cfg.out_dir).map_err(|e| Error::io(&cfg.out_dir, e))?;
        // Leftovers of writes cut short by a kill (one run writes into a directory at a time).
        for name in [LAST, BEST] {
            remove_stale_temporaries(&cfg.out_dir, name);
        }
        Ok(())
    };
    comm.agree("waiting for rank 0 to prepare the output directory", root.then(prepare))?;
    // Only rank 0 writes; every rank learns whether the write worked (and fails with it).
    let on_root =
        |what: &str, write: &dyn Fn() -> Result<()>| -> Result<()> { comm.agree(what, root.then(write)).map(|_| ()) };

    let (model, mut params) = VisionTransformer::init::<f32>(&cfg.model, cfg.seed)?;
    if let Some(ft) = &cfg.finetune {
        ft.prepare(&cfg.model, &mut params, cfg.resume, comm)?;
    }
    let mut opt = new_optimizer(cfg, &params);
    let steps_per_epoch = train_set.len() / cfg.batch_size;
    if steps_per_epoch == 0 {
        return Err(Error::Config(format!(
            "the training set ({} images) is smaller than one batch ({})",
            train_set.len(),
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
    // Whether `best.safetensors` belongs to this run: the first evaluated epoch always writes it
    // (even at 0% accuracy), so a fresh run never leaves an older run's file in its place.
    let mut have_best = cfg.resume && root && best_path.is_file();
    let mut pos = Position::default();
    if cfg.resume {
        let read = || -> Result<Position> {
            let pos = resume(&last_path, cfg, &mut params, opt.as_mut(), steps_per_epoch)?;
            log::keep_epochs(&metrics_path, pos.epoch)?;
            Ok(pos)
        };
        if let Some(p) = comm.agree("waiting for rank 0 to read the checkpoint", root.then(read))? {
            pos = p;
        }
    }
    // From here on every rank holds rank 0's parameters, optimizer state and position.
    pos = broadcast_state(comm, &mut params, opt.as_mut(), pos)?;
    if cfg.device != Device::Cpu {
        // Set up on the host; from here on the state lives on the device.
        params = params.to(cfg.device)?;
        opt.to(cfg.device)?;
    }
    let accum = grad_accum(cfg, pos, world, root)?;
    let sharding = Sharding::of_rank(cfg.batch_size, rank, world, accum);
    if cfg.resume && root {
        eprintln!(
            "resuming from {} at epoch {}, batch {} (step {})",
            last_path.display(),
            pos.epoch + 1,
            pos.batch,
            pos.global_step
        );
    }
    pos.shards = sharding.shards;
    let mut loader_cfg = LoaderConfig::train(cfg.batch_size, cfg.seed, cfg.augment.clone());
    loader_cfg.shard = Shard { index: rank, count: world };
    let loader = Loader::new(train_set, loader_cfg)?;
    // Each rank evaluates its slice of the test set; the counts are summed.
    let test_rows = Shard { index: rank, count: world }.rows(test_set.len());
    let eval_loader = Loader::eval(test_set.slice(test_rows), cfg.batch_size)?;
    let mut reducer = if comm.is_local() {
        None
    } else {
        let shapes = params.iter().map(|p| p.value.shape().to_vec()).collect();
        Some(GradReducer::new(shapes, cfg.overlap_comm, cfg.device)?)
    };

    // Whether `last.safetensors` is this run's (what an error may call the last good checkpoint).
    let mut wrote_last = cfg.resume;
    let kept = |wrote_last: bool| {
        if wrote_last {
            format!("the last good checkpoint, {}, is intact", last_path.display())
        } else {
            "this run had written no checkpoint yet".to_string()
        }
    };
    let interrupted = |pos: Position| {
        Error::Interrupted(format!(
            "stopped at epoch {}/{}, batch {}/{steps_per_epoch} (step {}); {} holds that exact position",
            pos.epoch + 1,
            cfg.epochs,
            pos.batch,
            pos.global_step,
            last_path.display()
        ))
    };
    let save_last = |pos: Position, params: &ParamStore<f32>, opt: &dyn Optimizer| {
        on_root("waiting for rank 0 to write last.safetensors", &|| save(&last_path, cfg, params, opt, pos))
    };

    let mut records = Vec::new();
    let (started, start_step) = (Instant::now(), pos.global_step);
    let mut reduce = ReduceStats::default();
    'epochs: while pos.epoch < cfg.epochs {
        let epoch = pos.epoch;
        let bar = progress_bar(cfg.progress && root, (steps_per_epoch - pos.batch) as u64, epoch, cfg.epochs);
        let t0 = Instant::now();
        let (mut data_secs, mut step_secs) = (0.0, 0.0);
        let mut seen_now = 0usize;
        let mut lr = schedule.lr(pos.global_step.saturating_sub(1));
        let mut batches = loader.epoch_from(epoch as u64, pos.batch);
        while let Some(batch) = timed(&mut data_secs, || batches.next()) {
            let max_reached = cfg.max_steps.is_some_and(|max| pos.global_step >= max);
            // A stop asked for on any rank (mpirun passes a Ctrl-C to every rank) stops all.
            if max_reached || comm.any("agreeing on a stop request", interrupt::stop_requested())? {
                bar.finish_and_clear();
                save_last(pos, &params, opt.as_ref())?;
                if max_reached {
                    break 'epochs;
                }
                return Err(interrupted(pos));
            }
            lr = schedule.lr(pos.global_step);
            let mut rngs: Vec<_> = (sharding.first..sharding.first + sharding.count)
                .map(|s| derive_rng(cfg.seed, &[STEP_STREAM, pos.global_step, s as u64]))
                .collect();
            let out = timed(&mut step_secs, || {
                train_step_sharded(
                    &model,
                    &mut params,
                    opt.as_mut(),
                    batch,
                    lr,
                    cfg.label_smoothing,
                    cfg.clip_grad,
                    &sharding,
                    &mut rngs,
                    comm,
                    reducer.as_mut(),
                )
            })
            .map_err(|e| {
                bar.abandon();
                Error::Train(format!(
                    "{} at epoch {}, step {}: stopping; {}. Try a lower --lr, a longer --warmup or --clip-grad 1",
                    message(&e),
                    epoch + 1,
                    pos.global_step,
                    kept(wrote_last)
                ))
            })?;
            reduce.all_reduce += out.reduce.all_reduce;
            reduce.exposed += out.reduce.exposed;
            reduce.bytes += out.reduce.bytes;
            let n = cfg.batch_size;
            pos.global_step += 1;
            pos.batch += 1;
            pos.loss_sum += out.loss * n as f64;
            pos.correct += out.correct as u64;
            pos.seen += n as u64;
            seen_now += n;
            bar.set_message(format!(
                "loss {:.4}  acc {:5.2}%  {:.0} img/s  lr {:.2e}",
                pos.loss_sum / pos.seen as f64,
                100.0 * pos.correct as f64 / pos.seen as f64,
                seen_now as f64 / t0.elapsed().as_secs_f64(),
                lr
            ));
            bar.inc(1);
        }
        drop(batches);
        bar.finish_and_clear();
        let train_secs = t0.elapsed().as_secs_f64();
        let mut eval_secs = 0.0;
        let Some(metrics) = timed(&mut eval_secs, || evaluate_ranks(comm, &model, &params, &eval_loader))? else {
            // Training of the epoch is done; its evaluation is redone on resume.
            save_last(pos, &params, opt.as_ref())?;
            return Err(interrupted(pos));
        };
        if !metrics.mean_loss().is_finite() {
            return Err(Error::Train(format!(
                "the test loss after epoch {} (step {}) is {}: the model diverged; stopping without saving it; {}. \
                 Try a lower --lr, a longer --warmup or --clip-grad 1",
                epoch + 1,
                pos.global_step,
                metrics.mean_loss(),
                kept(wrote_last)
            )));
        }
        let record = EpochRecord {
            epoch: epoch + 1,
            global_step: pos.global_step,
            lr,
            train_loss: pos.loss_sum / pos.seen as f64,
            train_acc: pos.correct as f64 / pos.seen as f64,
            test_loss: metrics.mean_loss(),
            test_acc: metrics.top1(),
            test_top5: metrics.top5(),
            images_per_sec: seen_now as f64 / train_secs,
            seconds: t0.elapsed().as_secs_f64(),
            data_secs,
            step_secs,
            eval_secs,
            checkpoint_secs: f64::NAN,
        };
        let writes = Instant::now();
        // A fresh run in a used directory starts its own metrics file (at its first record, so an
        // interrupted start loses nothing) rather than appending to another run's lines.
        let fresh_file = !cfg.resume && records.is_empty();
        on_root("waiting for rank 0 to append to metrics.jsonl", &|| log::append(&metrics_path, &record, fresh_file))?;
        pos = Position { epoch: epoch + 1, batch: 0, loss_sum: 0.0, correct: 0, seen: 0, ..pos };
        if !have_best || record.test_acc > pos.best_test_acc {
            pos.best_test_acc = record.test_acc;
            // Best first: `last` may claim this accuracy only once its model is on disk.
            on_root("waiting for rank 0 to write best.safetensors", &|| {
                save(&best_path, cfg, &params, opt.as_ref(), pos)
            })?;
            have_best = true;
        }
        save_last(pos, &params, opt.as_ref())?;
        wrote_last = true;
        // The curves are a view of metrics.jsonl: failing to draw them never stops training.
        if root {
            if let Err(e) = crate::analysis::curves::write_run_curves(&cfg.out_dir) {
                eprintln!("warning: could not draw the training curves: {e}");
            }
        }
        let record = EpochRecord {
            checkpoint_secs: writes.elapsed().as_secs_f64(),
            seconds: t0.elapsed().as_secs_f64(),
            ..record
        };
        on_root("waiting for rank 0 to complete metrics.jsonl", &|| log::replace_last(&metrics_path, &record))?;
        if root {
            println!("{}", record.summary(cfg.epochs));
        }
        records.push(record);
    }
    let steps_run = pos.global_step - start_step;
    if cfg.progress && root {
        eprintln!("trained {} steps in {:.0} s", pos.global_step, started.elapsed().as_secs_f64());
    }
    if root && world > 1 && steps_run > 0 {
        {
            let per = |d: std::time::Duration| 1e3 * d.as_secs_f64() / steps_run as f64;
            eprintln!(
                "all-reduce ({}, {world} ranks): {:.1} MB of gradients per step in {} buckets, {:.1} ms per step in \
                 the engine, {:.1} ms per step not hidden by backward",
                comm.engine(),
                reduce.bytes as f64 / steps_run as f64 / 1e6,
                reducer.as_ref().map_or(0, GradReducer::buckets),
                per(reduce.all_reduce),
                per(reduce.exposed)
            );
        }
    }
    Ok(TrainReport {
        model,
        params: params.to(Device::Cpu)?,
        epochs: records,
        best_test_acc: pos.best_test_acc,
        global_step: pos.global_step,
        last_checkpoint: last_path,
        steps_run,
        shards: sharding.shards,
        reduce,
    })
}

/// Micro-batches per rank: `--accum-steps` if given; else, on resume, what keeps the run's
/// shards (so a run resumed on fewer ranks continues bit for bit), when the world size divides
/// them; else 1. Says so when the shards change (the trajectory then continues up to the
/// summation order of the gradients).
fn grad_accum(cfg: &TrainConfig, pos: Position, world: usize, root: bool) -> Result<usize> {
    let saved = if cfg.resume { pos.shards.max(1) } else { 0 };
    let accum = match cfg.grad_accum {
        Some(a) => a,
        None if saved > 0 && saved % world == 0 => saved / world,
        None => 1,
    };
    let shards = world * accum;
    if shards > cfg.batch_size {
        return Err(Error::Config(format!(
            "--batch-size {} split over {world} rank(s) x {accum} micro-batch(es): every micro-batch needs an image",
            cfg.batch_size
        )));
    }
    if root && saved > 0 && (saved > 1 || shards > 1) {
        let same = if saved == shards {
            "the same shards"
        } else {
            "other shards: the same trajectory up to the summation order of the gradients"
        };
        eprintln!(
            "the run's batches of {} were in {saved} shard(s); continuing on {world} rank(s) x {accum} micro-batch(es) = {shards}: {same}",
            cfg.batch_size
        );
    }
    Ok(accum)
}

/// Evaluation of every rank's slice of the test set, the counts summed; on one process it gives
/// up (`None`) as soon as a stop is requested. Ranks evaluate whole (their slices can differ by
/// a batch, so they cannot agree batch by batch); a stop asked for meanwhile is seen at the next
/// step.
fn evaluate_ranks(
    comm: &Comm,
    model: &VisionTransformer,
    params: &ParamStore<f32>,
    loader: &Loader,
) -> Result<Option<Metrics>> {
    if comm.world_size() == 1 {
        return Ok(evaluate_until(model, params, loader, interrupt::stop_requested));
    }
    sum_metrics(comm, evaluate(model, params, loader)).map(Some)
}

/// Runs `f`, adding its wall time to `secs`.
fn timed<R>(secs: &mut f64, f: impl FnOnce() -> R) -> R {
    let t = Instant::now();
    let r = f();
    *secs += t.elapsed().as_secs_f64();
    r
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
