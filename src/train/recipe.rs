//! A run's recipe as a flat list of settings, stored in every training checkpoint so that
//! `--resume` can refuse a changed one and say what changed.
//!
//! The list is keyed by the command-line flag that sets each value (or a descriptive name for
//! the few settings no flag reaches), so a difference reads as the flag to fix: `--batch-size:
//! 8 when the run started, 16 now`. Numbers are written with Rust's shortest round-trip
//! formatting, so equal values compare equal exactly.

use std::collections::BTreeMap;

use super::{OptimizerKind, TrainConfig};
use crate::checkpoint::config_to_json;

/// The metadata key under which a training checkpoint stores [`recipe`] as a JSON object.
pub const RECIPE_KEY: &str = "vit.recipe";

/// What `--resume` lets change, and why it is safe (shown in `vit train --help`).
pub const SAFE_TO_CHANGE_ON_RESUME: &str = "--epochs (to extend or shorten a run: the learning-rate schedule is \
     re-planned over the new total from the step reached), --max-steps, --test-subset, --data-dir, --quiet, \
     --threads, the number of ranks (mpirun -np), --accum-steps, --no-overlap, --dist-timeout and --device (a run \
     trained on a GPU resumes on the CPU and the other way round); every other flag \
     must be as when the run started";

/// The settings that fix a run's trajectory, by flag. Left out, because changing them on resume
/// is safe: the epoch count, `--max-steps`, the test subset, where the data and output live, and
/// the progress bar.
pub fn recipe(cfg: &TrainConfig) -> BTreeMap<String, String> {
    let opt = |v: Option<usize>| v.map_or("all".to_string(), |n| n.to_string());
    let a = &cfg.augment;
    let mut r: BTreeMap<String, String> = [
        ("--dataset", cfg.dataset.name().to_string()),
        ("--train-subset", opt(cfg.train_subset)),
        ("--batch-size", cfg.batch_size.to_string()),
        ("--optimizer", cfg.optimizer.name().to_string()),
        ("--lr", cfg.lr.to_string()),
        ("--min-lr", cfg.min_lr.to_string()),
        ("--warmup", cfg.warmup_epochs.to_string()),
        ("--decay", format!("{:?}", cfg.decay).to_lowercase()),
        ("--weight-decay", cfg.weight_decay.to_string()),
        ("--label-smoothing", cfg.label_smoothing.to_string()),
        ("--clip-grad", cfg.clip_grad.map_or("0 (off)".to_string(), |c| c.to_string())),
        ("--seed", cfg.seed.to_string()),
        ("--augment (crop padding)", a.crop_padding.to_string()),
        ("--augment (flip)", a.hflip.to_string()),
        ("--randaugment", a.randaugment.as_ref().map_or("off".into(), |r| format!("{},{}", r.ops, r.magnitude))),
        (
            "--erasing",
            a.erasing
                .as_ref()
                .map_or("off".into(), |e| format!("{} (area {:?}, aspect {:?})", e.prob, e.area, e.aspect)),
        ),
        ("--mixup", a.mixup_alpha.to_string()),
        ("--cutmix", a.cutmix_alpha.to_string()),
        ("mix probability", a.mix_prob.to_string()),
        ("cutmix-or-mixup switch probability", a.switch_prob.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if let Some(ft) = &cfg.finetune {
        r.insert("fine-tuned from (CHECKPOINT)".into(), ft.checkpoint.display().to_string());
        r.insert("--freeze-backbone".into(), ft.freeze_backbone.to_string());
    }
    match cfg.optimizer {
        OptimizerKind::AdamW { beta1, beta2, eps } => {
            r.insert("AdamW betas, eps".into(), format!("{beta1}, {beta2}, {eps}"));
        }
        OptimizerKind::Sgd { momentum, nesterov } => {
            r.insert("--momentum".into(), momentum.to_string());
            r.insert("nesterov".into(), nesterov.to_string());
        }
    }
    // The model, field by field, as the checkpoint's config JSON spells it.
    let json: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&config_to_json(&cfg.model)).expect("a config serialises to a JSON object");
    for (field, value) in json {
        let key = match field.as_str() {
            "patch_size" => "--patch".to_string(),
            "dim" | "depth" | "heads" | "dropout" => format!("--{field}"),
            "drop_path" => "--drop-path".to_string(),
            "mlp_dim" => "--mlp-ratio (MLP width)".to_string(),
            "classifier" => "--gap (classifier)".to_string(),
            _ => format!("model {field}"),
        };
        r.insert(key, value.to_string());
    }
    r
}

/// The settings that differ between a saved recipe and the current one, one line each
/// (`--batch-size: 8 when the run started, 16 now`); empty when they agree.
pub fn recipe_differences(saved: &BTreeMap<String, String>, now: &BTreeMap<String, String>) -> Vec<String> {
    let mut keys: Vec<&String> = saved.keys().chain(now.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| saved.get(*k) != now.get(*k))
        .map(|k| {
            let show = |v: Option<&String>| v.map_or("(not set)".to_string(), |v| v.clone());
            format!("{k}: {} when the run started, {} now", show(saved.get(k)), show(now.get(k)))
        })
        .collect()
}
