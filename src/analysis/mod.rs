//! What a trained ViT learned and how training went: the figures of the paper's section 4.5
//! ("Inspecting Vision Transformer") and the training curves.
//!
//! Each figure has its own file: the numbers behind it (plain functions, tested on hand-built
//! inputs) and the drawing, which writes a PNG with the numbers beside it as CSV or JSON.
//!
//! - [`rollout`]: attention rollout over the input (Figs. 6, 14); [`layers`]: each layer's raw
//!   attention map beside it;
//! - [`distance`]: mean attention distance of every head against depth (Figs. 7 right, 11);
//! - [`pos_embed`]: cosine similarity of the position embeddings (Figs. 7 centre, 10);
//! - [`filters`]: principal components of the patch-embedding filters (Fig. 7 left);
//! - [`curves`]: train/test loss and accuracy, learning rate, accuracy against time;
//! - [`confusion`]: the confusion matrix of an evaluation.
//!
//! [`analyze()`] runs the first four for `vit analyze`. Attention probabilities come from the
//! model's own forward pass ([`attention`]); drawing goes through [`canvas`]: plotters' bitmap
//! backend with a font embedded in the binary.

pub mod analyze;
pub mod attention;
pub mod canvas;
pub mod confusion;
pub mod curves;
pub mod distance;
pub mod filters;
pub mod inputs;
pub mod layers;
pub mod pos_embed;
pub mod rollout;

use std::path::Path;

pub use analyze::{analyze, AnalyzeOptions};

use crate::error::{Error, Result};

/// Writes `value` as pretty JSON.
fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Plot(format!("{}: {e}", path.display())))?;
    std::fs::write(path, text + "\n").map_err(|e| Error::io(path, e))
}
