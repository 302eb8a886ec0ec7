//! Checkpoints: safetensors files with timm's parameter names.
//!
//! A checkpoint is one safetensors file holding
//!
//! - the model's parameters under timm's names (`patch_embed.proj.weight`, `cls_token`,
//!   `pos_embed`, `blocks.{i}.attn.qkv.weight`, ..., `norm.weight`, `head.weight`), so a timm ViT
//!   state dict saved with `safetensors.torch.save_file` loads here and ours loads in timm;
//! - any extra tensors the caller adds under a prefix of its own (the training loop keeps Adam's
//!   moments as `optim.exp_avg.<name>`): the model loader skips names under the prefixes listed
//!   in [`LoadOptions::ignore_prefixes`];
//! - string metadata in the header's `__metadata__` (the model config as JSON under
//!   [`CONFIG_KEY`], an epoch, an RNG state, ...).
//!
//! The pieces, one file each:
//!
//! - `safetensors`: the file format: [`save`] / [`write_tensors`] (atomic: temp file, fsync,
//!   rename) and the [`Checkpoint`] reader (F32, F64, F16, BF16 decoded to the caller's float type;
//!   truncated or corrupt files are errors, never panics).
//! - `load`: a checkpoint into a model's [`ParamStore`](crate::nn::ParamStore), with errors
//!   naming every missing, unexpected or mis-shaped tensor ([`load_params`], [`LoadOptions`]).
//! - `resize`: 2D interpolation of the patch part of `pos_embed` (paper section 3.2): bilinear
//!   and bicubic as PyTorch's `F.interpolate(align_corners=False)`, and their antialiased forms
//!   (timm resamples with the antialiased bicubic).
//! - `config`: [`ViTConfig`](crate::nn::ViTConfig) to and from the JSON string stored in the
//!   metadata ([`Checkpoint::config`]), and a config inferred from a file's tensor shapes (for
//!   timm files).
//! - `timm_config`: the few facts timm's `config.json` (its hub export, beside the weights) adds
//!   to the shapes: the pooling and the number of heads.
//! - `model`: a whole model out of a file ([`load_model`]), its config checked against the
//!   tensors and the size limits before anything is allocated.
//!
//! ```no_run
//! use vit::checkpoint::{self, Checkpoint, LoadOptions};
//! use vit::nn::{ViTConfig, VisionTransformer};
//!
//! let config = ViTConfig::tiny(16, 224);
//! let (_model, store) = VisionTransformer::init::<f32>(&config, 0)?;
//! let mut meta = checkpoint::config_metadata(&config);
//! meta.insert("epoch".into(), "3".into());
//! checkpoint::save("vit-ti.safetensors", &store, &[], &meta)?;
//!
//! let ckpt = Checkpoint::open("vit-ti.safetensors")?;
//! let config = ckpt.config()?.expect("saved with its config");
//! let (_model, mut store) = VisionTransformer::init::<f32>(&config, 1)?;
//! let report = checkpoint::load_params(&ckpt, &config, &mut store, &LoadOptions::default())?;
//! assert_eq!(report.loaded.len(), store.len());
//! # Ok::<(), vit::Error>(())
//! ```

pub mod config;
pub mod load;
pub mod model;
pub mod resize;
pub mod safetensors;
pub mod timm_config;

pub use config::{config_from_json, config_metadata, config_to_json, infer_config, CONFIG_KEY};
pub use load::{load, load_params, LoadOptions, LoadReport, OPTIM_PREFIX};
pub use model::{check_config_against_file, check_finite, load_model, LoadedModel, DATASET_KEY};
pub use resize::{interpolate_grid, resize_pos_embed, square_side, Interpolation};
pub use safetensors::{remove_stale_temporaries, save, write_tensors, Checkpoint, Dtype};
pub use timm_config::{TimmConfig, TIMM_CONFIG_FILE};
