//! `metrics.jsonl`: one JSON object per completed epoch.
//!
//! Every line is valid JSON: a value that is not a finite number (a mean over no images) is
//! written as `null`, never as `NaN`.
//!
//! Each line says where its epoch's wall time went: `data_secs` (the loop waiting for the
//! loader's next batch), `step_secs` (the training steps), `eval_secs` (the test-set pass) and
//! `checkpoint_secs` (writing this file, the curves and the checkpoints); they add up to
//! `seconds` but for the loop's own bookkeeping (the progress bar), a few milliseconds. The line
//! is appended before the checkpoints are written (see the trainer's order of writes) and
//! rewritten with `checkpoint_secs` once they are on disk: a line whose rewrite a kill
//! prevented has `checkpoint_secs` `null` and `seconds` up to the end of its evaluation. A resumed run first drops the lines of epochs its
//! checkpoint does not cover (written after the checkpoint, before a kill) and any torn line (a
//! write cut short by a full disk), so each epoch appears once.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::checkpoint::safetensors::write_atomic;
use crate::error::{Error, Result};

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochRecord {
    /// Epochs completed (1 for the first).
    pub epoch: usize,
    /// Optimizer steps taken in all.
    pub global_step: u64,
    /// The learning rate of the epoch's last step.
    pub lr: f64,
    /// Mean training loss over the epoch.
    pub train_loss: f64,
    /// Training top-1 accuracy over the epoch (against the first labels of mixed batches).
    pub train_acc: f64,
    /// Mean test loss (plain cross-entropy).
    pub test_loss: f64,
    /// Test top-1 accuracy.
    pub test_acc: f64,
    /// Test top-5 accuracy.
    pub test_top5: f64,
    /// Training throughput of this invocation's part of the epoch.
    pub images_per_sec: f64,
    /// Wall time of this invocation's part of the epoch: training, evaluation and the writes.
    pub seconds: f64,
    /// Of which waiting for the loader's batches.
    pub data_secs: f64,
    /// Of which in the training steps.
    pub step_secs: f64,
    /// Of which evaluating on the test set.
    pub eval_secs: f64,
    /// Of which writing `metrics.jsonl`, the curves and the checkpoints (`NaN`, written `null`,
    /// until they are written).
    pub checkpoint_secs: f64,
}

/// `x` with `decimals` digits, or `null` when it is not finite.
fn number(x: f64, decimals: usize) -> String {
    if x.is_finite() {
        format!("{x:.decimals$}")
    } else {
        "null".into()
    }
}

impl EpochRecord {
    /// The record as one line of JSON.
    pub fn to_json(&self) -> String {
        let lr = if self.lr.is_finite() { format!("{:.6e}", self.lr) } else { "null".into() };
        format!(
            "{{\"epoch\":{},\"step\":{},\"lr\":{lr},\"train_loss\":{},\"train_acc\":{},\"test_loss\":{},\"test_acc\":{},\"test_top5\":{},\"images_per_sec\":{},\"seconds\":{},\"data_secs\":{},\"step_secs\":{},\"eval_secs\":{},\"checkpoint_secs\":{}}}",
            self.epoch,
            self.global_step,
            number(self.train_loss, 6),
            number(self.train_acc, 6),
            number(self.test_loss, 6),
            number(self.test_acc, 6),
            number(self.test_top5, 6),
            number(self.images_per_sec, 2),
            number(self.seconds, 3),
            number(self.data_secs, 3),
            number(self.step_secs, 3),
            number(self.eval_secs, 3),
            number(self.checkpoint_secs, 3)
        )
    }
}

impl EpochRecord {
    /// The line `vit train` prints: the epoch's metrics, then where its time went.
    pub fn summary(&self, epochs: usize) -> String {
        format!(
            "epoch {:>3}/{epochs}  train loss {:.4} acc {:5.2}%  test loss {:.4} acc {:5.2}% (top-5 {:5.2}%)  {:.0} img/s  \
             {:.1} s (data {:.1}, step {:.1}, eval {:.1}, checkpoint {:.1})",
            self.epoch,
            self.train_loss,
            100.0 * self.train_acc,
            self.test_loss,
            100.0 * self.test_acc,
            100.0 * self.test_top5,
            self.images_per_sec,
            self.seconds,
            self.data_secs,
            self.step_secs,
            self.eval_secs,
            self.checkpoint_secs
        )
    }
}

/// Appends `record` to the file at `path` (emptied first when `truncate`).
pub fn append(path: &Path, record: &EpochRecord, truncate: bool) -> Result<()> {
    let mut options = OpenOptions::new();
    if truncate {
        options.write(true).truncate(true);
    } else {
        options.append(true);
    }
    let mut f = options.create(true).open(path).map_err(|e| Error::io(path, e))?;
    writeln!(f, "{}", record.to_json()).map_err(|e| Error::io(path, e))
}

/// Replaces the last line of the file at `path`, which must be `record`'s epoch (appended by
/// [`append`]), with `record` (atomically: the file holds either line, whole).
pub fn replace_last(path: &Path, record: &EpochRecord) -> Result<()> {
    let text = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let body = text.strip_suffix('\n').unwrap_or(&text);
    let (head, last) = body.rsplit_once('\n').map_or(("", body), |(h, l)| (h, l));
    let epoch = serde_json::from_str::<serde_json::Value>(last).ok().and_then(|v| v.get("epoch")?.as_u64());
    if epoch != Some(record.epoch as u64) {
        return Err(Error::Data(format!(
            "{}: its last line is not epoch {}'s, cannot complete it",
            path.display(),
            record.epoch
        )));
    }
    let head = if head.is_empty() { String::new() } else { format!("{head}\n") };
    write_atomic(path, |w| w.write_all(format!("{head}{}\n", record.to_json()).as_bytes()))
}

/// Keeps the lines of epochs `1..=epochs`, the first of each, dropping later epochs, repeats and
/// lines that are not JSON objects with an `epoch`; rewrites the file (atomically) only if that
/// changes it. Returns how many lines were dropped.
pub fn keep_epochs(path: &Path, epochs: usize) -> Result<usize> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut next = 1;
    let mut kept = String::new();
    let mut dropped = 0;
    for line in text.lines() {
        let epoch = serde_json::from_str::<serde_json::Value>(line).ok().and_then(|v| v.get("epoch")?.as_u64());
        if epoch == Some(next as u64) && next <= epochs {
            kept.push_str(line);
            kept.push('\n');
            next += 1;
        } else {
            dropped += 1;
        }
    }
    if dropped > 0 || !text.ends_with('\n') && !text.is_empty() {
        write_atomic(path, |w| w.write_all(kept.as_bytes()))?;
    }
    Ok(dropped)
}
