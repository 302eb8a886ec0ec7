//! A model out of a checkpoint file, with the file checked before anything is allocated.
//!
//! A checkpoint says how large its model is twice: in the config of its metadata, and in its
//! tensors' shapes. Neither is trusted alone. Before a model is built, its config (stored, or
//! inferred from the shapes) must be within [`crate::budget`]'s limits, must not describe more
//! parameters than the file holds values (so neither the metadata nor a zero-sized tensor of
//! shape `[10^9, 0]` can make the model larger than the file), and the shapes that fix the
//! model's size must agree with the file's. Only then are the parameters allocated and loaded,
//! and they must all be finite.

use autograd::Float;

use super::config::infer_config;
use super::load::{load_params, LoadOptions, OPTIM_PREFIX};
use super::safetensors::Checkpoint;
use crate::budget;
use crate::data::DatasetKind;
use crate::error::{Error, Result};
use crate::nn::{ParamStore, ViTConfig, VisionTransformer};

/// The metadata key naming the dataset a checkpoint was trained on (for its class names and
/// normalisation).
pub const DATASET_KEY: &str = "vit.dataset";

/// A model read from a checkpoint, with the dataset it was trained on (if recorded).
pub struct LoadedModel {
    /// The model, built from the checkpoint's config.
    pub model: VisionTransformer,
    /// Its parameters, as stored.
    pub params: ParamStore<f32>,
    /// The dataset recorded under [`DATASET_KEY`].
    pub dataset: Option<DatasetKind>,
}

/// Opens `ckpt`'s model: its stored config, or one inferred from the shapes with `heads` heads
/// (see [`infer_config`]), checked against the file ([`check_config_against_file`]) and against
/// this machine's memory, then built and loaded, all parameters finite.
pub fn load_model(ckpt: &Checkpoint, heads: Option<usize>) -> Result<LoadedModel> {
    let config = match ckpt.config()? {
        Some(c) => c,
        None => infer_config(ckpt, heads).map_err(|e| match e {
            Error::Checkpoint(m) if heads.is_none() && m.contains("number of heads") => {
                Error::Checkpoint(format!("{m} with --heads N"))
            }
            e => e,
        })?,
    };
    check_config_against_file(ckpt, &config)?;
    budget::check_runnable(&config).map_err(|e| ckpt.error(e.to_string()))?;
    let dataset = ckpt
        .meta(DATASET_KEY)
        .map(|name| name.parse().map_err(|e: Error| ckpt.error(format!("metadata {DATASET_KEY:?}: {}", message(&e)))))
        .transpose()?;
    let (model, mut params) = VisionTransformer::init::<f32>(&config, 0)?;
    load_params(ckpt, &config, &mut params, &LoadOptions::default())?;
    check_finite(ckpt, params.iter().map(|p| (p.name.as_str(), p.value.data())))?;
    Ok(LoadedModel { model, params, dataset })
}

/// An error's message without its kind's prefix (`dataset: `, `config: `...).
pub(crate) fn message(e: &Error) -> String {
    match e {
        Error::Data(m) | Error::Config(m) | Error::Checkpoint(m) | Error::Train(m) | Error::Download(m) => m.clone(),
        Error::Interrupted(m) => m.clone(),
        e => e.to_string(),
    }
}

/// Checks a config against the tensors of `ckpt` before a model is built from it: within the
/// size limits of [`budget::model_params`], no more parameters than the file's model tensors
/// (those not under [`OPTIM_PREFIX`]) hold values, and `patch_embed.proj.weight`, `pos_embed` and
/// `head.weight`, where present, of the shapes the config gives them.
pub fn check_config_against_file(ckpt: &Checkpoint, config: &ViTConfig) -> Result<()> {
    let params = budget::model_params(config).map_err(|e| ckpt.error(format!("model config: {}", message(&e))))?;
    let strip = |n: &str| n.strip_prefix("module.").unwrap_or(n).to_string();
    let stored: u64 =
        ckpt.names().iter().filter(|n| !strip(n).starts_with(OPTIM_PREFIX)).filter_map(|n| ckpt.numel(n)).sum();
    if params > stored {
        return Err(ckpt.error(format!(
            "the model config (dim {}, depth {}, MLP width {}, ...) describes {params} parameters, but the \
             file's tensors hold only {stored} values: its metadata or shapes are corrupt",
            config.dim, config.depth, config.mlp_dim
        )));
    }
    let c = config;
    let head_in = c.representation_size.unwrap_or(c.dim);
    let expected = [
        ("patch_embed.proj.weight", vec![c.dim, c.patch_chans(), c.patch_size, c.patch_size]),
        ("pos_embed", vec![1, c.num_tokens(), c.dim]),
        ("head.weight", vec![c.num_classes, head_in]),
    ];
    let mut problems = Vec::new();
    for (name, want) in expected {
        let found = ckpt.shape(name).or_else(|| ckpt.shape(&format!("module.{name}")));
        if let Some(found) = found.filter(|f| *f != want.as_slice()) {
            problems.push(format!("{name}: the config gives it shape {want:?}, the file {found:?}"));
        }
    }
    if !problems.is_empty() {
        return Err(ckpt.error(format!("the model config does not match the tensors: {}", problems.join("; "))));
    }
    Ok(())
}

/// An error naming the first tensor of `tensors` that holds a NaN or an infinity.
pub fn check_finite<'a, T: Float + 'a>(
    ckpt: &Checkpoint,
    tensors: impl IntoIterator<Item = (&'a str, &'a [T])>,
) -> Result<()> {
    for (name, data) in tensors {
        if let Some(v) = data.iter().find(|v| !v.is_finite()) {
            return Err(ckpt.error(format!(
                "{name} holds a non-finite value ({}): the model diverged before it was saved and cannot be used",
                v.to_f64()
            )));
        }
    }
    Ok(())
}
