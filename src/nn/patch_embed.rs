//! Patch embedding: the first half of eq. 1.

use autograd::{Float, Graph, Rng, Var};

use super::config::ViTConfig;
use super::init::Init;
use super::module::{Ctx, Module};
use super::params::{ParamId, ParamStore, ParamVars};
use super::resnet_stem::ResNetStem;

/// `x_p^i E + b` for every patch `i`: the paper's stride-`P`, kernel-`P` convolution, computed
/// as what it is — cut the image into non-overlapping `P x P` patches, flatten each to a
/// `C*P*P` vector, and apply one Linear:
///
/// ```text
///     images [B, C, H, W] --patchify--> [B, N, C*P*P] --(@ W^T + b)--> [B, N, D]
/// ```
///
/// The weight is stored as a convolution's `[D, C, P, P]` (timm's `patch_embed.proj.weight`) and
/// viewed as `[D, C*P*P]` on the tape (a reshape, no copy), because patchify orders each patch
/// vector `(c, py, px)` exactly as the convolution's weight is laid out.
///
/// In the hybrid the image first goes through a ResNet (`backbone`, as timm's `HybridEmbed`)
/// and the patches are cut from its feature map, `C` being its channels.
#[derive(Clone, Debug)]
pub struct PatchEmbed {
    /// The hybrid's CNN (timm's `HybridEmbed.backbone`), run before the patches are cut; `None`
    /// for a plain ViT.
    pub backbone: Option<ResNetStem>,
    /// `E`, stored `[D, C, P, P]`.
    pub weight: ParamId,
    /// `b`, `[D]`.
    pub bias: ParamId,
    /// Patch side `P`.
    pub patch_size: usize,
    /// Channels `C` of what the patches are cut from: the image, or the stem's feature map.
    pub in_chans: usize,
    /// Token width `D`.
    pub dim: usize,
}

impl PatchEmbed {
    /// Registers `{name}.proj.weight` and `{name}.proj.bias` (timm's names, from its
    /// convolution), initialised per `init`.
    pub fn new<T: Float>(
        store: &mut ParamStore<T>,
        name: &str,
        in_chans: usize,
        patch_size: usize,
        dim: usize,
        init: Init,
        rng: &mut Rng,
    ) -> Self {
        let (w, b) = init.patch_embed::<T>(dim, in_chans, patch_size, rng);
        let weight = store.add(format!("{name}.proj.weight"), w, true);
        let bias = store.add(format!("{name}.proj.bias"), b, false);
        PatchEmbed { backbone: None, weight, bias, patch_size, in_chans, dim }
    }

    /// The patch embedding `config` describes: on the image, or on the hybrid's feature map
    /// (the stem registered first, under `{name}.backbone`).
    pub fn for_config<T: Float>(store: &mut ParamStore<T>, name: &str, c: &ViTConfig, rng: &mut Rng) -> Self {
        let backbone =
            c.resnet.clone().map(|r| ResNetStem::new(store, &format!("{name}.backbone"), c.in_chans, r, rng));
        let embed = Self::new(store, name, c.patch_chans(), c.patch_size, c.dim, c.init, rng);
        PatchEmbed { backbone, ..embed }
    }
}

impl Module for PatchEmbed {
    /// `images: [B, C, H, W]` -> tokens `[B, N, D]`.
    fn forward<T: Float>(&self, g: &mut Graph<T>, p: &ParamVars, images: Var, cx: &mut Ctx<'_>) -> Var {
        let features = match &self.backbone {
            Some(stem) => stem.forward(g, p, images, cx),
            None => images,
        };
        let patches = g.patchify(features, self.patch_size);
        let w = g.reshape(p.get(self.weight), &[self.dim, self.in_chans * self.patch_size * self.patch_size]);
        g.linear(patches, w, Some(p.get(self.bias)))
    }
}
