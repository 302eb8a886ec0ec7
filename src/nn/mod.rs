//! The ViT's modules, one file each, with their equation in a doc comment.
//!
//! Modules hold [`ParamId`]s into a [`ParamStore`] and build their part of the step's tape in
//! `forward`; the math of each op (and its gradient) lives in `autograd::ops`.

pub mod attention;
pub mod block;
pub mod config;
pub mod init;
pub mod layer_norm;
pub mod linear;
pub mod memory;
pub mod mlp;
pub mod module;
pub mod params;
pub mod patch_embed;
pub mod residual;
pub mod vit;

pub use attention::Attention;
pub use block::Block;
pub use config::{Classifier, Variant, ViTConfig};
pub use init::Init;
pub use layer_norm::LayerNorm;
pub use linear::Linear;
pub use mlp::Mlp;
pub use module::{Ctx, Module};
pub use params::{Param, ParamId, ParamStore, ParamVars};
pub use patch_embed::PatchEmbed;
pub use vit::{ViTOutput, VisionTransformer};
