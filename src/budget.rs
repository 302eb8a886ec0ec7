//! Size limits checked before anything is allocated.
//!
//! A model's size comes from numbers a user typed (`--dim`, `--mlp-ratio`) or a file claims (a
//! checkpoint's metadata, its tensor shapes). Either can be absurd, and an allocation sized from
//! an absurd number aborts the process instead of giving an error. So every config is checked
//! here first, from its fields alone:
//!
//! 1. each dimension is within a generous bound ([`MAX_DIM`], ...), which also keeps the
//!    parameter count from overflowing;
//! 2. the parameter count is at most [`MAX_PARAMS`];
//! 3. the memory the model surely needs (its weights, and to train it also the gradients and the
//!    optimizer's moments) fits in this machine's physical memory, when that is known.
//!
//! The error says how many parameters and bytes the model would need.

use crate::error::{Error, Result};
use crate::nn::ViTConfig;

/// The most parameters a model may have (ViT-H has 0.63e9; ViT-G 1.8e9).
pub const MAX_PARAMS: u64 = 1 << 32;
/// The largest width, MLP width, pre-logits width or class count.
pub const MAX_DIM: usize = 1 << 20;
/// The deepest model.
pub const MAX_DEPTH: usize = 4096;
/// The largest input image side.
pub const MAX_IMAGE_SIZE: usize = 8192;
/// The most input channels.
pub const MAX_CHANNELS: usize = 64;

/// Bytes per parameter that training surely holds: f32 weights, gradients and two AdamW moments.
pub const TRAIN_BYTES_PER_PARAM: u64 = 16;
/// Bytes per parameter that inference surely holds: the f32 weights.
pub const INFER_BYTES_PER_PARAM: u64 = 4;

/// Checks `config`'s shapes and size limits (not its memory) and returns its parameter count.
pub fn model_params(config: &ViTConfig) -> Result<u64> {
    config.validate()?;
    let c = config;
    let bounds = [
        ("image size", c.image_size, MAX_IMAGE_SIZE),
        ("input channels", c.in_chans, MAX_CHANNELS),
        ("width (dim)", c.dim, MAX_DIM),
        ("MLP width (mlp_dim)", c.mlp_dim, MAX_DIM),
        ("depth", c.depth, MAX_DEPTH),
        ("classes", c.num_classes, MAX_DIM),
        ("pre-logits width", c.representation_size.unwrap_or(1), MAX_DIM),
    ];
    for (what, value, max) in bounds {
        if value > max {
            return Err(Error::Config(format!("the model's {what} is {value}, more than the supported {max}")));
        }
    }
    // With the bounds above every term of the count fits in 64 bits.
    let params = c.num_params() as u64;
    if params > MAX_PARAMS {
        return Err(Error::Config(format!(
            "the model would have {params} parameters ({} of f32 weights), more than the supported {MAX_PARAMS}",
            bytes(params * INFER_BYTES_PER_PARAM)
        )));
    }
    Ok(params)
}

/// Checks that `config` can be trained here: [`model_params`], then its weights, gradients and
/// optimizer moments against the physical memory.
pub fn check_trainable(config: &ViTConfig) -> Result<()> {
    check_memory(
        config,
        TRAIN_BYTES_PER_PARAM,
        "training it needs at least",
        "weights, gradients and optimizer moments",
    )
}

/// Checks that `config` can be run here: [`model_params`], then its weights against the physical
/// memory.
pub fn check_runnable(config: &ViTConfig) -> Result<()> {
    check_memory(config, INFER_BYTES_PER_PARAM, "running it needs at least", "its f32 weights")
}

fn check_memory(config: &ViTConfig, per_param: u64, needs: &str, what: &str) -> Result<()> {
    let params = model_params(config)?;
    let need = params * per_param;
    match physical_memory() {
        Some(have) if need > have => Err(Error::Config(format!(
            "the model would have {params} parameters: {needs} {} ({what}), more than this machine's {} of memory",
            bytes(need),
            bytes(have)
        ))),
        _ => Ok(()),
    }
}

/// The machine's physical memory in bytes (`MemTotal` of `/proc/meminfo`); `None` where unknown.
pub fn physical_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.trim_start_matches("MemTotal:").trim().trim_end_matches("kB").trim().parse().ok()?;
    kib.checked_mul(1024)
}

/// A byte count for people: `1.5 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} bytes")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
