//! timm's `config.json`, the file its Hugging Face hub export (`timm.models.push_to_hf_hub`,
//! `save_for_hf`) writes beside `model.safetensors`.
//!
//! A state dict does not say everything about its model. Two of timm's layouts hold the very
//! same tensors (`cls_token`, `fc_norm.*`, no `norm.*`): `global_pool='avg'` with a class token
//! (the class token left out of the mean, then `fc_norm`) and `global_pool='token', fc_norm=True`
//! (the class token, then `fc_norm`); and the number of heads is in no shape. timm's export
//! records both, as the top-level `global_pool` and the `model_args` the model was built with
//! (`num_heads`, `global_pool`, `fc_norm`, `class_token`, ...). [`TimmConfig::beside`] reads the
//! few of those keys that the shapes cannot tell; [`super::config::infer_config`] uses them.

use std::fs;

use serde_json::Value;

use super::safetensors::Checkpoint;
use crate::error::{Error, Result};
use crate::nn::Classifier;

/// The name timm's export gives the file.
pub const TIMM_CONFIG_FILE: &str = "config.json";

/// A `config.json` larger than this is not timm's (its exports are a few KB, label names
/// included); refused before it is read.
const MAX_BYTES: u64 = 1 << 22;

/// What a timm `config.json` says about a model beyond its tensor shapes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TimmConfig {
    /// The pooling, from `global_pool` (top level, or in `model_args`).
    pub pooling: Option<Classifier>,
    /// `model_args.fc_norm`, when given.
    pub fc_norm: Option<bool>,
    /// `model_args.num_heads`, when given.
    pub num_heads: Option<usize>,
}

impl TimmConfig {
    /// The timm config next to `ckpt`'s file, if there is one: `None` when there is no
    /// `config.json` in its directory or that file is not a timm export (no `architecture` key:
    /// someone else's config, which says nothing about this checkpoint). A timm export that
    /// does not parse, or names a pooling we do not implement, is an error.
    pub fn beside(ckpt: &Checkpoint) -> Result<Option<TimmConfig>> {
        let path = ckpt.path().with_file_name(TIMM_CONFIG_FILE);
        match fs::metadata(&path) {
            Ok(m) if m.is_file() && m.len() <= MAX_BYTES => {}
            Ok(m) if m.is_file() => {
                return Err(Error::Checkpoint(format!(
                    "{}: {} bytes, too large for a timm config (at most {MAX_BYTES})",
                    path.display(),
                    m.len()
                )))
            }
            _ => return Ok(None),
        }
        let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        Self::parse(&text).map_err(|m| Error::Checkpoint(format!("{}: {m}", path.display())))
    }

    /// Parses the text of a `config.json` (see [`TimmConfig::beside`]); the error is a message.
    pub fn parse(text: &str) -> std::result::Result<Option<TimmConfig>, String> {
        let json: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        if json.get("architecture").is_none() {
            return Ok(None);
        }
        let args = json.get("model_args");
        let arg = |key: &str| args.and_then(|a| a.get(key)).filter(|v| !v.is_null());
        let pool = arg("global_pool").or_else(|| json.get("global_pool"));
        let pooling = match pool {
            None => None,
            Some(v) => Some(match v.as_str() {
                Some("token") => Classifier::Token,
                Some("avg") => Classifier::Gap,
                _ => return Err(format!("global_pool {v}: only timm's 'token' and 'avg' pooling are supported")),
            }),
        };
        let fc_norm = match arg("fc_norm") {
            None => None,
            Some(v) => Some(v.as_bool().ok_or_else(|| format!("model_args.fc_norm {v} is not a boolean"))?),
        };
        let num_heads = match arg("num_heads") {
            None => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|h| usize::try_from(h).ok())
                    .filter(|h| *h > 0)
                    .ok_or_else(|| format!("model_args.num_heads {v} is not a positive integer"))?,
            ),
        };
        Ok(Some(TimmConfig { pooling, fc_norm, num_heads }))
    }
}
