//! The Vision Transformer: eqs. 1-4 of the paper.

use autograd::{Float, Graph, Rng, Var};

use super::block::Block;
use super::config::{Classifier, ViTConfig};
use super::layer_norm::LayerNorm;
use super::linear::Linear;
use super::module::{Ctx, Module};
use super::params::{ParamId, ParamStore, ParamVars};
use super::patch_embed::PatchEmbed;
use crate::error::Result;

/// ViT (Dosovitskiy et al., ICLR 2021):
///
/// ```text
///     z_0  = [x_class; x_p^1 E; ...; x_p^N E] + E_pos                      (eq. 1)
///     z'_l = MSA(LN(z_{l-1})) + z_{l-1},   z_l = MLP(LN(z'_l)) + z'_l       (eqs. 2, 3)
///     y    = LN(z_L^0)                                                     (eq. 4)
///     logits = head(y)            or head(tanh(pre_logits(y)))  when pre-training
/// ```
///
/// The pooling and the final LN are timm's `global_pool` and `norm` / `fc_norm`:
///
/// ```text
///     norm before pooling:   y = pool(LN(z_L))        (eq. 4; the LN is `norm`)
///     fc_norm after pooling: y = LN(pool(z_L))        (the LN is `fc_norm`, no `norm`)
///     pool = z^0 (Classifier::Token)  or  mean_i z^i over the patch tokens (Classifier::Gap,
///            a class token, if the model keeps one, left out)
/// ```
///
/// The class token with `fc_norm` (timm's `global_pool='token', fc_norm=True`) is eq. 4 again,
/// `LN(z_L^0)`, since LN acts on each token alone; the avg forms are the paper's Flax GAP model
/// (`norm`) and timm's default `global_pool='avg'` (`fc_norm`). So every layout timm's
/// `VisionTransformer` saves maps to one config: class token or not, `global_pool` token or avg,
/// `norm` or `fc_norm`, pre-logits or not.
///
/// Dropout (rate `dropout`) follows the addition of `E_pos`, and every dense layer but qkv.
#[derive(Clone, Debug)]
pub struct VisionTransformer {
    /// The configuration the model was built from.
    pub config: ViTConfig,
    /// `E` of eq. 1: patches to tokens.
    pub patch_embed: PatchEmbed,
    /// `x_class`, `[1, 1, D]`; absent without `class_token`.
    pub cls_token: Option<ParamId>,
    /// `E_pos`, `[1, N, D]` (class token included), learned.
    pub pos_embed: ParamId,
    /// The `L` encoder blocks, eqs. 2-3.
    pub blocks: Vec<Block>,
    /// The final LN: eq. 4's `norm` before pooling, or timm's `fc_norm` after it.
    pub norm: LayerNorm,
    /// The tanh pre-logits layer of a pre-training head, if `representation_size` is set.
    pub pre_logits: Option<Linear>,
    /// The classification head: `y` (or the pre-logits) to class scores.
    pub head: Linear,
}

/// What [`VisionTransformer::forward_with_attention`] returns: logits `[B, classes]` and every
/// block's attention probabilities `[B, H, N, N]`.
pub struct ViTOutput {
    /// Class scores `[B, classes]`, before softmax.
    pub logits: Var,
    /// One `[B, H, N, N]` per block, first block first, or empty.
    pub attn: Vec<Var>,
}

impl VisionTransformer {
    /// Builds the model and registers its parameters (timm's names) in `store`, initialised per
    /// `config.init` from `rng`. Fails with a clear error on an inconsistent config.
    pub fn new<T: Float>(config: &ViTConfig, store: &mut ParamStore<T>, rng: &mut Rng) -> Result<Self> {
        config.validate()?;
        let c = config;
        let patch_embed = PatchEmbed::for_config(store, "patch_embed", c, rng);
        let cls_token = c.class_token.then(|| store.add("cls_token", c.init.cls_token(c.dim, rng), false));
        let pos_embed = store.add("pos_embed", c.init.pos_embed(c.num_tokens(), c.dim, rng), false);
        let blocks = (0..c.depth)
            .map(|i| {
                // Stochastic depth grows linearly with depth (timm's `dpr`).
                let rate = if c.depth > 1 { c.drop_path * i as f64 / (c.depth - 1) as f64 } else { c.drop_path };
                Block::new(store, &format!("blocks.{i}"), c, rate, rng)
            })
            .collect();
        let norm = LayerNorm::new(store, if c.fc_norm { "fc_norm" } else { "norm" }, c.dim, c.ln_eps);
        let pre_logits =
            c.representation_size.map(|r| Linear::new(store, "pre_logits.fc", c.dim, r, true, c.init, rng));
        let head_in = c.representation_size.unwrap_or(c.dim);
        let (w, b) = c.init.head::<T>(head_in, c.num_classes, rng);
        let head = Linear {
            weight: store.add("head.weight", w, true),
            bias: Some(store.add("head.bias", b, false)),
            in_features: head_in,
            out_features: c.num_classes,
        };
        Ok(VisionTransformer { config: c.clone(), patch_embed, cls_token, pos_embed, blocks, norm, pre_logits, head })
    }

    /// A freshly initialised model and its parameters.
    pub fn init<T: Float>(config: &ViTConfig, seed: u64) -> Result<(Self, ParamStore<T>)> {
        let mut store = ParamStore::new();
        let model = Self::new(config, &mut store, &mut Rng::seed(seed))?;
        Ok((model, store))
    }

    /// [`Module::forward`] on the fused path that also returns each block's attention
    /// probabilities `[B, H, N, N]`, kept on the tape for analysis.
    pub fn forward_with_attention<T: Float>(
        &self,
        g: &mut Graph<T>,
        p: &ParamVars,
        images: Var,
        rng: &mut Rng,
    ) -> ViTOutput {
        let mut cx = Ctx::new(rng).with_attention();
        let logits = self.forward(g, p, images, &mut cx);
        ViTOutput { logits, attn: cx.attention.unwrap_or_default() }
    }

    /// Eq. 1: `z_0 = [x_class; x_p^1 E; ...; x_p^N E] + E_pos`, then dropout.
    fn embed<T: Float>(&self, g: &mut Graph<T>, p: &ParamVars, images: Var, cx: &mut Ctx<'_>) -> Var {
        let b = g.shape(images)[0];
        let x = self.patch_embed.forward(g, p, images, cx); // [B, N_p, D]: x_p^i E
        let z = match self.cls_token {
            Some(cls) => {
                let cls = g.broadcast_to(p.get(cls), &[b, 1, self.config.dim]);
                g.concat(&[cls, x], 1)
            }
            None => x,
        };
        let z = g.add(z, p.get(self.pos_embed));
        g.dropout(z, self.config.dropout, cx.rng)
    }

    /// Eq. 4: the final LN before pooling (`norm`) or after it (`fc_norm`), pooling the class
    /// token or the mean of the patch tokens, then the tanh pre-logits layer if there is one:
    /// the representation the head reads.
    fn pool<T: Float>(&self, g: &mut Graph<T>, p: &ParamVars, z: Var, cx: &mut Ctx<'_>) -> Var {
        let c = &self.config;
        let (b, d) = (g.shape(z)[0], c.dim);
        let z = if c.fc_norm { z } else { self.norm.forward(g, p, z, cx) };
        let y = match c.classifier {
            Classifier::Token => {
                let y = g.narrow(z, 1, 0, 1);
                g.reshape(y, &[b, d])
            }
            Classifier::Gap => {
                let prefix = c.num_prefix_tokens();
                let patches = if prefix > 0 { g.narrow(z, 1, prefix, c.num_patches()) } else { z };
                g.mean(patches, &[1], false)
            }
        };
        let y = if c.fc_norm { self.norm.forward(g, p, y, cx) } else { y };
        match &self.pre_logits {
            Some(fc) => {
                let y = fc.forward(g, p, y, cx);
                g.tanh(y)
            }
            None => y,
        }
    }

    /// The representation `[B, F]` the head reads for `images: [B, C, H, W]`: eq. 1, the `L`
    /// blocks (eqs. 2-3), eq. 4 (and the pre-logits layer when there is one). What few-shot
    /// evaluation and a linear probe train on; [`Module::forward`] is the head applied to it.
    ///
    /// The embedding and each block are one segment of the tape's memory policy
    /// (`autograd::memory`): when a segment ends, the tape drops what backward will recompute
    /// (training) or everything forward is done with (inference).
    pub fn features<T: Float>(&self, g: &mut Graph<T>, p: &ParamVars, images: Var, cx: &mut Ctx<'_>) -> Var {
        let c = &self.config;
        let shape = g.shape(images);
        assert!(
            shape.len() == 4 && shape[1] == c.in_chans && shape[2] == c.image_size && shape[3] == c.image_size,
            "VisionTransformer: expected images [B, {}, {}, {}], got {:?}",
            c.in_chans,
            c.image_size,
            c.image_size,
            shape
        );
        let mut z = g.segment("embed", images, |g| self.embed(g, p, images, cx)); // eq. 1
        for (l, block) in self.blocks.iter().enumerate() {
            z = g.segment(&format!("blocks.{l}"), z, |g| block.forward(g, p, z, cx));
            // eqs. 2-3
        }
        self.pool(g, p, z, cx) // eq. 4
    }
}

impl Module for VisionTransformer {
    /// Logits `[B, classes]` for `images: [B, C, H, W]`: the head on
    /// [`VisionTransformer::features`].
    fn forward<T: Float>(&self, g: &mut Graph<T>, p: &ParamVars, images: Var, cx: &mut Ctx<'_>) -> Var {
        let y = self.features(g, p, images, cx);
        self.head.forward(g, p, y, cx)
    }
}
