//! Loading a checkpoint into a model's parameters.
//!
//! Every parameter of the store is matched by name with a tensor of the file, checked for shape,
//! and converted to the store's element type. All problems are collected and reported together,
//! one line per tensor, and nothing in the store changes unless the whole load succeeds.
//!
//! Names follow timm; a `module.` prefix (a `DistributedDataParallel` state dict) is removed, and
//! our own files' one old name is read as today's (`current_name`).
//! Three deliberate mismatches are handled on request ([`LoadOptions`]):
//!
//! - a classifier head of another class count (fine-tuning on a new dataset): the model keeps its
//!   freshly initialised head and the file's is dropped; a pre-logits layer (`pre_logits.fc.*`)
//!   that the model lacks is dropped the same way, as the paper does when fine-tuning ("we remove
//!   the pre-trained prediction head and attach a zero-initialized D x K feedforward layer");
//! - a `pos_embed` of another patch grid (another image or patch size): its patch part is
//!   interpolated, the class slot kept ([`super::resize`]);
//! - extra tensors under the prefixes of [`LoadOptions::ignore_prefixes`] (optimizer state) are
//!   skipped silently, and with `strict: false` any other missing or unexpected tensor is only
//!   reported, as `load_state_dict(strict=False)` does. A wrong shape is always an error.

use std::collections::HashMap;

use autograd::{Float, Tensor};

use super::resize::{resize_pos_embed, Interpolation};
use super::safetensors::{Checkpoint, Dtype};
use crate::error::{Error, Result};
use crate::nn::{ParamStore, ViTConfig};

/// The prefix under which a training loop stores optimizer state (e.g. `optim.exp_avg.<name>`);
/// skipped by the model loader by default.
pub const OPTIM_PREFIX: &str = "optim.";

/// The prefix a `DistributedDataParallel` state dict puts on every name.
const DDP_PREFIX: &str = "module.";

/// The groups of classifier parameters that `allow_head_mismatch` may leave freshly initialised.
const HEAD_GROUPS: [&str; 2] = ["pre_logits.fc.", "head."];

/// How a checkpoint is matched to a model.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadOptions {
    /// Missing and unexpected tensors are errors (otherwise they are listed in the report and the
    /// missing parameters keep their current values). Default true.
    pub strict: bool,
    /// Keep the model's own (freshly initialised) head when the file's has another shape or is
    /// absent, and drop a pre-logits layer the model does not have. Default false.
    pub allow_head_mismatch: bool,
    /// Interpolate `pos_embed` when its patch grid differs from the model's. Default `None`: a
    /// different `pos_embed` shape is an error.
    pub resize_pos_embed: Option<Interpolation>,
    /// The file's patch grid `(rows, cols)` when it is not square (otherwise inferred).
    pub pos_embed_grid: Option<(usize, usize)>,
    /// File tensors under these prefixes are not model parameters and are skipped (default:
    /// [`OPTIM_PREFIX`]).
    pub ignore_prefixes: Vec<String>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            strict: true,
            allow_head_mismatch: false,
            resize_pos_embed: None,
            pos_embed_grid: None,
            ignore_prefixes: vec![OPTIM_PREFIX.into()],
        }
    }
}

/// What a load did, by parameter name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadReport {
    /// Parameters set from the file (resized and converted ones included).
    pub loaded: Vec<String>,
    /// Parameters converted from another stored dtype.
    pub converted: Vec<(String, Dtype)>,
    /// Parameters interpolated from another shape: `(name, file shape, model shape)`.
    pub resized: Vec<(String, Vec<usize>, Vec<usize>)>,
    /// Parameters left at their current (fresh) values because of a head mismatch.
    pub reinitialized: Vec<String>,
    /// File tensors dropped because of a head mismatch.
    pub dropped: Vec<String>,
    /// Parameters absent from the file (only with `strict: false`).
    pub missing: Vec<String>,
    /// File tensors that are not parameters of the model (only with `strict: false`).
    pub unexpected: Vec<String>,
    /// File tensors skipped because of `ignore_prefixes`.
    pub ignored: Vec<String>,
}

/// Opens the file at `path` and loads it into `store` (see [`load_params`]).
pub fn load<T: Float>(
    path: impl AsRef<std::path::Path>,
    config: &ViTConfig,
    store: &mut ParamStore<T>,
    opts: &LoadOptions,
) -> Result<LoadReport> {
    load_params(&Checkpoint::open(path)?, config, store, opts)
}

/// Loads the checkpoint's tensors into the parameters of `store`, a model built from `config`.
/// On error, the message lists every offending tensor, one per line (e.g. `blocks.0.attn.qkv.weight:
/// expected shape [576, 192], found [576, 190]`), and `store` is unchanged.
pub fn load_params<T: Float>(
    ckpt: &Checkpoint,
    config: &ViTConfig,
    store: &mut ParamStore<T>,
    opts: &LoadOptions,
) -> Result<LoadReport> {
    let mut report = LoadReport::default();
    let mut problems = Vec::new();

    // The file's model tensors by their timm name (prefix removed, an old name renamed).
    let mut file: HashMap<String, &str> = HashMap::new();
    let mut file_order = Vec::new();
    for full in ckpt.names() {
        let key = full.strip_prefix(DDP_PREFIX).unwrap_or(full);
        if opts.ignore_prefixes.iter().any(|p| full.starts_with(p.as_str()) || key.starts_with(p.as_str())) {
            report.ignored.push(full.clone());
            continue;
        }
        let key = current_name(key, config);
        if let Some(first) = file.insert(key.clone(), full) {
            let (a, b) = if first < full.as_str() { (first, full.as_str()) } else { (full.as_str(), first) };
            problems.push(format!(
                "{key}: stored twice, as {a} and as {b} (the same once `module.` is removed or an old name renamed)"
            ));
        } else {
            file_order.push(key);
        }
    }

    // With `allow_head_mismatch`, a head group is loaded only if it matches as a whole; the head
    // is also kept fresh when the pre-logits layer before it is not loaded.
    let mut fresh_groups: Vec<&str> = Vec::new();
    if opts.allow_head_mismatch {
        for group in HEAD_GROUPS {
            let model: Vec<(&str, &[usize])> = store
                .iter()
                .filter(|p| p.name.starts_with(group))
                .map(|p| (p.name.as_str(), p.value.shape()))
                .collect();
            let in_file = file.keys().filter(|k| k.starts_with(group)).count();
            let matches = in_file == model.len()
                && model.iter().all(|(n, s)| file.get(*n).and_then(|f| ckpt.shape(f)) == Some(*s));
            if !matches || !fresh_groups.is_empty() {
                fresh_groups.push(group);
            }
        }
    }
    let fresh = |name: &str| fresh_groups.iter().any(|g| name.starts_with(g));

    let mut updates: Vec<(usize, Tensor<T>)> = Vec::new();
    for (index, p) in store.iter().enumerate() {
        let name = p.name.as_str();
        if fresh(name) {
            report.reinitialized.push(name.into());
            continue;
        }
        let Some(&full) = file.get(name) else {
            if opts.strict {
                problems.push(format!("{name}: missing from the checkpoint"));
            } else {
                report.missing.push(name.into());
            }
            continue;
        };
        let value = match ckpt.tensor::<T>(full) {
            Ok(v) => v,
            // The reader's message already names the tensor (with the file's path in front).
            Err(Error::Checkpoint(msg)) => {
                problems.push(msg.strip_prefix(&format!("{}: ", ckpt.path().display())).unwrap_or(&msg).to_string());
                continue;
            }
            Err(e) => return Err(e),
        };
        let (want, found) = (p.value.shape(), value.shape());
        let value = if want == found {
            value
        } else if let Some(mode) = opts.resize_pos_embed.filter(|_| name == "pos_embed") {
            match resize_pos_embed_to(&value, want, config, mode, opts.pos_embed_grid) {
                Ok(v) => {
                    report.resized.push((name.into(), found.to_vec(), want.to_vec()));
                    v
                }
                Err(msg) => {
                    problems.push(format!("{name}: {msg}"));
                    continue;
                }
            }
        } else {
            let hint = if name == "pos_embed" {
                " (another patch grid: set resize_pos_embed to interpolate it)"
            } else if HEAD_GROUPS.iter().any(|g| name.starts_with(g)) {
                " (another head: set allow_head_mismatch to keep a fresh one)"
            } else {
                ""
            };
            problems.push(format!("{name}: expected shape {want:?}, found {found:?}{hint}"));
            continue;
        };
        if let Some(dtype) = ckpt.dtype(full).filter(|d| !stored_natively::<T>(*d)) {
            report.converted.push((name.into(), dtype));
        }
        report.loaded.push(name.into());
        updates.push((index, value));
    }

    for key in &file_order {
        let full = file[key].to_string();
        if fresh(key) {
            report.dropped.push(full);
        } else if store.id(key).is_some() {
            continue;
        } else if opts.strict {
            let hint = if HEAD_GROUPS.iter().any(|g| key.starts_with(g)) {
                " (the model has no such layer: set allow_head_mismatch to drop it)"
            } else {
                ""
            };
            problems.push(format!("{full}: unexpected tensor, not a parameter of this model{hint}"));
        } else {
            report.unexpected.push(full);
        }
    }

    if !problems.is_empty() {
        return Err(ckpt.error(format!(
            "cannot load into the model ({} problem{}):\n  {}",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" },
            problems.join("\n  ")
        )));
    }
    let mut params: Vec<_> = store.iter_mut().collect();
    for (index, value) in updates {
        params[index].value = value;
    }
    Ok(report)
}

/// The name a file's tensor `key` has in a model of `config` today. One rename: a bare ResNet
/// root (no stages) was registered as `patch_embed.backbone.stem.*` before the stages existed;
/// timm, and we now, call it `patch_embed.backbone.*`.
fn current_name(key: &str, config: &ViTConfig) -> String {
    const OLD_ROOT: &str = "patch_embed.backbone.stem.";
    match key.strip_prefix(OLD_ROOT) {
        Some(rest) if config.resnet.as_ref().is_some_and(|r| r.layers.is_empty()) => {
            format!("patch_embed.backbone.{rest}")
        }
        _ => key.to_string(),
    }
}

/// Whether a stored dtype is exactly `T` (no conversion).
fn stored_natively<T: Float>(dtype: Dtype) -> bool {
    matches!((T::DTYPE, dtype), (autograd::DType::F32, Dtype::F32) | (autograd::DType::F64, Dtype::F64))
}

/// Interpolates the file's `pos_embed` to the model's shape `want = [1, prefix + G*G, D]`.
fn resize_pos_embed_to<T: Float>(
    value: &Tensor<T>,
    want: &[usize],
    config: &ViTConfig,
    mode: Interpolation,
    old_grid: Option<(usize, usize)>,
) -> std::result::Result<Tensor<T>, String> {
    let prefix = config.num_prefix_tokens();
    let grid = config.grid();
    let found = value.shape();
    if want != [1, prefix + grid * grid, config.dim] {
        return Err(format!("the model's shape {want:?} does not match its config (grid {grid}x{grid})"));
    }
    if found.len() != 3 || found[0] != 1 || found[2] != want[2] {
        return Err(format!("expected shape [1, tokens, {}] to interpolate, found {found:?}", want[2]));
    }
    match resize_pos_embed(value, prefix, old_grid, (grid, grid), mode) {
        Ok(v) => Ok(v),
        Err(Error::Checkpoint(msg)) => Err(msg.strip_prefix("pos_embed: ").unwrap_or(&msg).to_string()),
        Err(e) => Err(e.to_string()),
    }
}
