//! Training checkpoints: what `last.safetensors` and `best.safetensors` hold beyond the model,
//! and the checks made before one is written or resumed from.
//!
//! Besides the parameters, a training checkpoint holds the optimizer's moments and, in its
//! metadata, the position reached (epoch, batch, global step, the epoch's running loss and
//! accuracy sums), the best test accuracy so far and the run's recipe. With these, a resumed run
//! continues bit for bit where the saved one stopped.
//!
//! Nothing broken is ever written: a checkpoint whose parameters or moments hold a NaN or an
//! infinity is refused (the run diverged), so the previous one stays as it was. Nothing changed is
//! silently resumed: the recipe must be the same but for the settings of
//! [`SAFE_TO_CHANGE_ON_RESUME`](super::SAFE_TO_CHANGE_ON_RESUME), and the position must be one
//! the run can have reached.

use std::collections::BTreeMap;
use std::path::Path;

use autograd::Device;

use super::recipe::{recipe, recipe_differences, RECIPE_KEY, SAFE_TO_CHANGE_ON_RESUME};
use super::TrainConfig;
use crate::checkpoint::{self, check_finite, Checkpoint, LoadOptions, DATASET_KEY};
use crate::error::{Error, Result};
use crate::nn::ParamStore;
use crate::optim::Optimizer;

const META_EPOCH: &str = "vit.epoch";
const META_BATCH: &str = "vit.batch";
const META_STEP: &str = "vit.global_step";
const META_OPTIM: &str = "vit.optimizer";
const META_OPTIM_STEP: &str = "vit.optimizer_step";
const META_BEST: &str = "vit.best_test_acc";
const META_SEED: &str = "vit.seed";
const META_LOSS_SUM: &str = "vit.epoch_loss_sum";
const META_CORRECT: &str = "vit.epoch_correct";
const META_SEEN: &str = "vit.epoch_seen";
const META_SHARDS: &str = "vit.batch_shards";

/// Where a run stands: the next batch to train on, and the running sums of the epoch under way.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Position {
    /// Completed epochs.
    pub epoch: usize,
    /// Batches of the current epoch done.
    pub batch: usize,
    /// Optimizer steps done.
    pub global_step: u64,
    /// The best test accuracy of a completed epoch.
    pub best_test_acc: f64,
    /// Sum over the epoch's images so far of the training loss.
    pub loss_sum: f64,
    /// The epoch's correctly classified training images so far.
    pub correct: u64,
    /// The epoch's training images so far.
    pub seen: u64,
    /// The shards each global batch was split into up to here (world size x micro-batches; see
    /// [`super::step`]); 0 until known. Checkpoints without it were written by one process.
    pub shards: usize,
}

impl Position {
    /// The position as numbers (every count below 2^53, so exact in f64), to broadcast.
    pub fn to_f64s(self) -> Vec<f64> {
        let p = self;
        [p.epoch as f64, p.batch as f64, p.global_step as f64, p.best_test_acc, p.loss_sum]
            .into_iter()
            .chain([p.correct as f64, p.seen as f64, p.shards as f64])
            .collect()
    }

    /// The inverse of [`Position::to_f64s`].
    pub fn from_f64s(v: &[f64]) -> Position {
        Position {
            epoch: v[0] as usize,
            batch: v[1] as usize,
            global_step: v[2] as u64,
            best_test_acc: v[3],
            loss_sum: v[4],
            correct: v[5] as u64,
            seen: v[6] as u64,
            shards: v[7] as usize,
        }
    }
}

/// Writes the model, the optimizer's state and the run's position, atomically; refuses (with an
/// error naming the tensor, and leaving the file at `path` as it was) when any value is not
/// finite.
pub(crate) fn save(
    path: &Path,
    cfg: &TrainConfig,
    params: &ParamStore<f32>,
    opt: &dyn Optimizer,
    pos: Position,
) -> Result<()> {
    // The same file whatever the device: parameters and moments come to the host first.
    let params = &params.to(Device::Cpu)?;
    let (state, optim_step) = opt.state(params);
    let state = state.into_iter().map(|(n, t)| Ok((n, t.to(Device::Cpu)?))).collect::<Result<Vec<_>>>()?;
    let diverged = |name: &str, v: f32| {
        Error::Train(format!(
            "after step {} (epoch {}), {name} holds {v}: the run diverged; {} was not written",
            pos.global_step,
            pos.epoch + usize::from(pos.batch > 0),
            path.display()
        ))
    };
    for (name, data) in params.iter().map(|p| (&p.name, p.value.data())).chain(state.iter().map(|(n, t)| (n, t.data())))
    {
        if let Some(&v) = data.iter().find(|v| !v.is_finite()) {
            return Err(diverged(name, v));
        }
    }
    let extra: Vec<(String, &autograd::Tensor<f32>)> = state.iter().map(|(n, t)| (n.clone(), t)).collect();
    let mut meta = checkpoint::config_metadata(&cfg.model);
    let recipe = serde_json::to_string(&recipe(cfg)).expect("a map of strings serialises");
    let entries = [
        (META_EPOCH, pos.epoch.to_string()),
        (META_BATCH, pos.batch.to_string()),
        (META_STEP, pos.global_step.to_string()),
        (META_OPTIM, cfg.optimizer.name().into()),
        (META_OPTIM_STEP, optim_step.to_string()),
        (META_BEST, pos.best_test_acc.to_string()),
        (META_SEED, cfg.seed.to_string()),
        (META_LOSS_SUM, pos.loss_sum.to_string()),
        (META_CORRECT, pos.correct.to_string()),
        (META_SEEN, pos.seen.to_string()),
        (META_SHARDS, pos.shards.to_string()),
        (DATASET_KEY, cfg.dataset.name().into()),
        (RECIPE_KEY, recipe),
    ];
    meta.extend(entries.into_iter().map(|(k, v)| (k.to_string(), v)));
    checkpoint::save(path, params, &extra, &meta)
}

/// Restores parameters, optimizer state and position from the training checkpoint at `path`,
/// after checking that it was written by this recipe (but for the safe changes) at a position
/// this run can have reached, with `steps_per_epoch` steps an epoch.
pub(crate) fn resume(
    path: &Path,
    cfg: &TrainConfig,
    params: &mut ParamStore<f32>,
    opt: &mut dyn Optimizer,
    steps_per_epoch: usize,
) -> Result<Position> {
    if !path.exists() {
        return Err(Error::Checkpoint(format!("--resume: no checkpoint at {}", path.display())));
    }
    let ckpt = Checkpoint::open(path)?;
    let meta = |key: &str| -> Result<&str> {
        ckpt.meta(key)
            .ok_or_else(|| ckpt.error(format!("not a training checkpoint of this version (no {key} metadata)")))
    };
    let num = |key: &str| -> Result<u64> { meta(key)?.parse().map_err(|_| ckpt.error(format!("bad {key} metadata"))) };
    let saved: BTreeMap<String, String> =
        serde_json::from_str(meta(RECIPE_KEY)?).map_err(|e| ckpt.error(format!("bad {RECIPE_KEY} metadata: {e}")))?;
    let changed = recipe_differences(&saved, &recipe(cfg));
    if !changed.is_empty() {
        return Err(ckpt.error(format!(
            "--resume with another recipe than the run's ({} difference{}):\n  {}\nResume with the run's flags \
             (safe to change: {SAFE_TO_CHANGE_ON_RESUME}), or start a new run in another --out directory",
            changed.len(),
            if changed.len() == 1 { "" } else { "s" },
            changed.join("\n  ")
        )));
    }
    let loss_sum: f64 =
        meta(META_LOSS_SUM)?.parse().map_err(|_| ckpt.error(format!("bad {META_LOSS_SUM} metadata")))?;
    let best: f64 = meta(META_BEST)?.parse().map_err(|_| ckpt.error(format!("bad {META_BEST} metadata")))?;
    let pos = Position {
        epoch: num(META_EPOCH)? as usize,
        batch: num(META_BATCH)? as usize,
        global_step: num(META_STEP)?,
        best_test_acc: best,
        loss_sum,
        correct: num(META_CORRECT)?,
        seen: num(META_SEEN)?,
        shards: if ckpt.meta(META_SHARDS).is_some() { num(META_SHARDS)? as usize } else { 1 },
    };
    let optim_step = num(META_OPTIM_STEP)?;
    // The position must be one this recipe reaches: every count follows from (epoch, batch).
    let consistent = pos.batch <= steps_per_epoch
        && (pos.epoch as u64).checked_mul(steps_per_epoch as u64).and_then(|s| s.checked_add(pos.batch as u64))
            == Some(pos.global_step)
        && optim_step == pos.global_step
        && pos.seen == (pos.batch * cfg.batch_size) as u64
        && pos.correct <= pos.seen
        && loss_sum.is_finite()
        && loss_sum >= 0.0
        && (0.0..=1.0).contains(&best)
        && (1..=cfg.batch_size).contains(&pos.shards);
    if !consistent {
        return Err(ckpt.error(format!(
            "corrupt position: epoch {}, batch {} of {steps_per_epoch}, step {}, optimizer step {optim_step}, \
             {} images seen this epoch, best accuracy {best}, batches in {} shards: these do not fit together",
            pos.epoch, pos.batch, pos.global_step, pos.seen, pos.shards
        )));
    }
    if pos.epoch >= cfg.epochs {
        return Err(ckpt.error(format!(
            "the run has already trained {} epochs, as many as --epochs {} asks: pass a larger --epochs to train on",
            pos.epoch, cfg.epochs
        )));
    }
    checkpoint::load_params(&ckpt, &cfg.model, params, &LoadOptions::default())?;
    check_finite(&ckpt, params.iter().map(|p| (p.name.as_str(), p.value.data())))?;
    // The reader's error (a missing tensor, another dtype) names the file and the tensor; keep it
    // rather than the optimizer's plainer "missing".
    let mut failure = None;
    let loaded = opt.load_state(params, optim_step, &mut |name| {
        let checked = ckpt.tensor::<f32>(name).and_then(|t| match check_finite(&ckpt, [(name, t.data())]) {
            Ok(()) => Ok(t),
            Err(e) => Err(e),
        });
        match checked {
            Ok(t) => Some(t),
            Err(e) => {
                failure.get_or_insert(e);
                None
            }
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    loaded.map_err(|e| ckpt.error(format!("optimizer state: {}", checkpoint::model::message(&e))))?;
    Ok(pos)
}
