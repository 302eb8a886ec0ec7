//! The ViT's modules, one file each, with their equation in a doc comment.
//!
//! The model is the paper's four equations (Dosovitskiy et al., ICLR 2021, section 3.1):
//!
//! ```text
//!     z_0  = [x_class; x_p^1 E; ...; x_p^N E] + E_pos        (eq. 1)  vit.rs, patch_embed.rs
//!     z'_l = MSA(LN(z_{l-1})) + z_{l-1}                      (eq. 2)  block.rs, attention.rs
//!     z_l  = MLP(LN(z'_l)) + z'_l                            (eq. 3)  block.rs, mlp.rs
//!     y    = LN(z_L^0)                                       (eq. 4)  vit.rs, layer_norm.rs
//! ```
//!
//! What each file holds:
//! - [`module`]: the one interface every layer implements, `forward(g, p, x, cx) -> Var`, and
//!   the [`Ctx`] a pass carries (randomness, the fused/plain switch, attention maps).
//! - [`linear`], [`layer_norm`], [`patch_embed`]: the leaf layers, each one op on the tape.
//! - [`attention`] (MSA), [`mlp`], [`block`] (eqs. 2-3), [`residual`] (the residual sums with
//!   stochastic depth), [`vit`] (eqs. 1 and 4 around the blocks).
//! - [`resnet_stem`], [`bottleneck`], [`group_norm`]: the hybrid's CNN (section 3.1), the
//!   ResNet-v2 root and bottleneck stages whose feature map [`patch_embed`] cuts into patches.
//! - [`params`]: the parameters, one flat named list ([`ParamStore`]) that modules index by
//!   [`ParamId`]; [`init`]: timm's and the paper's initialisations; [`config`]: the variants of
//!   Table 1 and their validation; [`memory`]: the per-block listing of what a training step keeps
//!   for backward.
//!
//! Why it is built this way:
//! - **Modules hold ids, not tensors.** A step binds the store to its tape ([`ParamStore::bind`]);
//!   the module tree is plain data, so the same tree runs in f32 for training and in f64 for the
//!   gradient checks, and a checkpoint is the store written out under timm's names.
//! - **Two paths, one switch.** Every module has a plain path, op by op as the equations read,
//!   and the fast path of fused ops (attention from qkv to heads in one op, Linear+GELU in one op,
//!   each residual branch's last Linear with its sum in one op), selected by [`Ctx::fused`] as
//!   timm selects `fused_attn`. `tests/fused_vs_plain.rs` shows both give the same loss and
//!   gradients; read the plain path to learn, run the fused one to train.
//! - **The math of each op and of its gradient lives in `autograd::ops`**, next to its code;
//!   what the tape keeps for backward is decided by `autograd::memory`, not by model code. The
//!   model only marks its segments (the embedding and each block, in [`VisionTransformer`]'s
//!   forward).

pub mod attention;
pub mod block;
pub mod bottleneck;
pub mod config;
pub mod group_norm;
pub mod init;
pub mod layer_norm;
pub mod linear;
pub mod memory;
pub mod mlp;
pub mod module;
pub mod params;
pub mod patch_embed;
pub mod residual;
pub mod resnet_stem;
pub mod vit;

pub use attention::Attention;
pub use block::Block;
pub use bottleneck::{Bottleneck, Downsample};
pub use config::{Classifier, Variant, ViTConfig};
pub use group_norm::GroupNorm;
pub use init::Init;
pub use layer_norm::LayerNorm;
pub use linear::Linear;
pub use mlp::Mlp;
pub use module::{Ctx, Module};
pub use params::{Param, ParamId, ParamStore, ParamVars};
pub use patch_embed::PatchEmbed;
pub use resnet_stem::{ResNetStem, ResNetStemConfig, StdConv};
pub use vit::{ViTOutput, VisionTransformer};
