//! Every block's attention probabilities for a batch of images, read off the model's own forward
//! pass ([`VisionTransformer::forward_with_attention`], which keeps what the fused attention op
//! `attention_with_probs` computed), in inference mode (no dropout).

use autograd::{Graph, Rng, Tensor};

use crate::nn::{ParamStore, VisionTransformer};

/// The attention probabilities of `batch` images: for each layer, `[B, H, N, N]` row-major, where
/// row `i` of head `h` is how query token `i` spreads its attention over the `N` keys.
#[derive(Clone, Debug)]
pub struct AttentionMaps {
    /// Images `B` in the pass.
    pub batch: usize,
    /// Attention heads `H` per layer.
    pub heads: usize,
    /// Tokens `N` (patches, plus the class token first when the model has one).
    pub tokens: usize,
    /// Tokens before the patches: 1 for a class-token model, 0 for GAP.
    pub prefix: usize,
    /// One `[B, H, N, N]` softmax output per block, first block first.
    pub layers: Vec<Vec<f32>>,
    /// The logits `[B, classes]` of the same pass.
    pub logits: Vec<f32>,
}

impl AttentionMaps {
    /// Head `h`'s `N x N` attention of image `b` in layer `l`.
    pub fn head(&self, l: usize, b: usize, h: usize) -> &[f32] {
        let nn = self.tokens * self.tokens;
        let at = (b * self.heads + h) * nn;
        &self.layers[l][at..at + nn]
    }

    /// Layer `l`'s attention of image `b`, averaged over the heads (`N x N`).
    pub fn head_mean(&self, l: usize, b: usize) -> Vec<f64> {
        let mut mean = vec![0.0; self.tokens * self.tokens];
        for h in 0..self.heads {
            for (m, &a) in mean.iter_mut().zip(self.head(l, b, h)) {
                *m += a as f64 / self.heads as f64;
            }
        }
        mean
    }
}

/// Runs `images` (normalised, `[B, C, H, W]` flattened) through the model and returns every
/// layer's attention probabilities and the logits.
pub fn attention_maps(model: &VisionTransformer, params: &ParamStore<f32>, images: Vec<f32>) -> AttentionMaps {
    let c = &model.config;
    let batch = images.len() / (c.in_chans * c.image_size * c.image_size);
    let mut g = Graph::inference();
    let p = params.bind(&mut g);
    let x = g.input(Tensor::from_vec(images, &[batch, c.in_chans, c.image_size, c.image_size]));
    let out = model.forward_with_attention(&mut g, &p, x, &mut Rng::seed(0));
    let layers = out.attn.iter().map(|&a| g.value(a).data().to_vec()).collect();
    AttentionMaps {
        batch,
        heads: c.heads,
        tokens: c.num_tokens(),
        prefix: c.num_prefix_tokens(),
        layers,
        logits: g.value(out.logits).data().to_vec(),
    }
}
