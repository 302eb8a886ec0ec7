//! One encoder block: eqs. 2 and 3.

use autograd::{Float, Graph, Rng, Tensor, Var};

use super::attention::Attention;
use super::config::ViTConfig;
use super::layer_norm::LayerNorm;
use super::mlp::Mlp;
use super::params::{ParamStore, ParamVars};

/// A pre-norm transformer block:
///
/// ```text
///     z' = z  + drop_path(MSA(LN(z)))        (eq. 2)
///     y  = z' + drop_path(MLP(LN(z')))       (eq. 3)
/// ```
///
/// `drop_path` is stochastic depth (Huang et al. 2016): in training each sample's residual
/// branch is dropped with probability `drop_path` and kept branches are scaled by
/// `1 / (1 - drop_path)`, so the expected output is unchanged; at evaluation it is the identity.
#[derive(Clone, Debug)]
pub struct Block {
    pub norm1: LayerNorm,
    pub attn: Attention,
    pub norm2: LayerNorm,
    pub mlp: Mlp,
    pub drop_path: f64,
}

/// A block's output and its attention probabilities.
pub struct BlockOutput {
    pub z: Var,
    pub attn: Var,
}

impl Block {
    pub fn new<T: Float>(store: &mut ParamStore<T>, name: &str, c: &ViTConfig, drop_path: f64, rng: &mut Rng) -> Self {
        let norm1 = LayerNorm::new(store, &format!("{name}.norm1"), c.dim, c.ln_eps);
        let attn = Attention::new(
            store,
            &format!("{name}.attn"),
            c.dim,
            c.heads,
            c.qkv_bias,
            c.attn_dropout,
            c.dropout,
            c.init,
            rng,
        );
        let norm2 = LayerNorm::new(store, &format!("{name}.norm2"), c.dim, c.ln_eps);
        let mlp = Mlp::new(store, &format!("{name}.mlp"), c.dim, c.mlp_dim, c.gelu, c.dropout, c.init, rng);
        Block { norm1, attn, norm2, mlp, drop_path }
    }

    pub fn forward<T: Float>(&self, g: &mut Graph<T>, p: &ParamVars, z: Var, rng: &mut Rng) -> BlockOutput {
        let h = self.norm1.forward(g, p, z);
        let a = self.attn.forward(g, p, h, rng);
        let branch = drop_path(g, a.y, self.drop_path, rng);
        let z = g.add(z, branch);
        let h = self.norm2.forward(g, p, z);
        let h = self.mlp.forward(g, p, h, rng);
        let branch = drop_path(g, h, self.drop_path, rng);
        BlockOutput { z: g.add(z, branch), attn: a.attn }
    }
}

/// Stochastic depth on a residual branch `x: [B, ...]`: multiplies each sample by
/// `mask_b / (1 - p)`, `mask_b ~ Bernoulli(1 - p)`. Its gradient is the same per-sample scale,
/// which the `mul` op provides. The identity at evaluation or when `p == 0`.
pub fn drop_path<T: Float>(g: &mut Graph<T>, x: Var, p: f64, rng: &mut Rng) -> Var {
    if p == 0.0 || !g.is_training() {
        return x;
    }
    let shape = g.shape(x).to_vec();
    let mut mask_shape = vec![1; shape.len()];
    mask_shape[0] = shape[0];
    let keep = 1.0 - p;
    let mask = Tensor::from_fn(&mask_shape, |_| if rng.uniform() < keep { T::from_f64(1.0 / keep) } else { T::ZERO });
    let mask = g.input(mask);
    g.mul(x, mask)
}
