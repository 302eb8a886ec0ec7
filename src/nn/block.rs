//! One encoder block: eqs. 2 and 3.

use autograd::{Float, Graph, Rng, Tensor, Var};

use super::attention::Attention;
use super::config::ViTConfig;
use super::layer_norm::LayerNorm;
use super::linear::Linear;
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
///
/// Each branch's last Linear, its stochastic-depth scale and the residual sum are one op
/// ([`residual_branch_end`]), and attention is one op from qkv to the heads, so the block
/// keeps only the tensors its backward needs.
#[derive(Clone, Debug)]
pub struct Block {
    /// The LN before attention (eq. 2).
    pub norm1: LayerNorm,
    /// The MSA of eq. 2.
    pub attn: Attention,
    /// The LN before the MLP (eq. 3).
    pub norm2: LayerNorm,
    /// The MLP of eq. 3.
    pub mlp: Mlp,
    /// This block's stochastic-depth rate (it grows with depth; see [`super::ViTConfig::drop_path`]).
    pub drop_path: f64,
}

/// A block's output and, if asked for, its attention probabilities `[B, H, N, N]`.
pub struct BlockOutput {
    /// The block's output tokens `z_l`, `[B, N, D]`.
    pub z: Var,
    /// The attention probabilities, when [`Block::forward_ex`] was asked to keep them.
    pub attn: Option<Var>,
}

impl Block {
    /// Registers `{name}.norm1`, `.attn`, `.norm2` and `.mlp` (timm's names), shaped by `c`.
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

    /// `z_l` from `z_{l-1}`, eqs. 2 and 3; `rng` draws the dropout and drop-path masks.
    pub fn forward<T: Float>(&self, g: &mut Graph<T>, p: &ParamVars, z: Var, rng: &mut Rng) -> BlockOutput {
        self.forward_ex(g, p, z, rng, false)
    }

    /// [`Block::forward`], also returning the attention probabilities if `keep_attention`.
    pub fn forward_ex<T: Float>(
        &self,
        g: &mut Graph<T>,
        p: &ParamVars,
        z: Var,
        rng: &mut Rng,
        keep_attention: bool,
    ) -> BlockOutput {
        let (heads, dropout) = (self.attn.heads, self.attn.attn_dropout);
        let z_in = z;
        let h = self.norm1.forward(g, p, z);
        let qkv = self.attn.qkv.forward(g, p, h);
        // Layer norm is cheap to recompute from z and its saved statistics: backward does that
        // instead of the tape keeping [B, N, D] per norm until then.
        g.release(h);
        let (y, attn) = if keep_attention {
            let (y, a) = g.attention_with_probs(qkv, heads, dropout, rng);
            (y, Some(a))
        } else {
            (g.attention(qkv, heads, dropout, rng), None)
        };
        let mask = drop_path_mask(g, g.shape(z)[0], self.drop_path, rng);
        let z = residual_branch_end(g, p, &self.attn.proj, y, self.attn.proj_dropout, z, mask, rng);
        let h = self.norm2.forward(g, p, z);
        let a = self.mlp.hidden(g, p, h, rng);
        g.release(h);
        let mask = drop_path_mask(g, g.shape(z)[0], self.drop_path, rng);
        let z_mid = z;
        let z = residual_branch_end(g, p, &self.mlp.fc2, a, self.mlp.dropout, z, mask, rng);
        // Done with these in forward. Training keeps them (backward reads them; this is then a
        // no-op); inference frees them now, so it holds about one block's tensors at a time.
        for v in [z_in, qkv, y, z_mid, a] {
            g.release(v);
        }
        BlockOutput { z, attn }
    }
}

/// Stochastic depth's per-sample scale for a batch of `batch`: `mask_b / (1 - p)` with
/// `mask_b ~ Bernoulli(1 - p)`, so the expected output is unchanged; `None` (the identity) at
/// evaluation or when `p == 0`.
pub fn drop_path_mask<T: Float>(g: &Graph<T>, batch: usize, p: f64, rng: &mut Rng) -> Option<Vec<T>> {
    if p == 0.0 || !g.is_training() {
        return None;
    }
    let keep = 1.0 - p;
    Some((0..batch).map(|_| if rng.uniform() < keep { T::from_f64(1.0 / keep) } else { T::ZERO }).collect())
}

/// The end of a residual branch: `z + drop_path(dropout(linear(h)))`.
///
/// Without active dropout this is one fused op (`Graph::linear_residual`): the branch's output
/// goes from the product straight into the residual sum, scaled per sample by the stochastic
/// depth mask, and never exists as a tensor of its own. With dropout (an elementwise mask inside
/// the branch) it falls back to separate ops.
#[allow(clippy::too_many_arguments)]
pub fn residual_branch_end<T: Float>(
    g: &mut Graph<T>,
    p: &ParamVars,
    linear: &Linear,
    h: Var,
    dropout: f64,
    z: Var,
    drop_path: Option<Vec<T>>,
    rng: &mut Rng,
) -> Var {
    let (w, b) = (p.get(linear.weight), linear.bias.map(|b| p.get(b)));
    if dropout == 0.0 || !g.is_training() {
        return g.linear_residual(h, w, b, z, drop_path);
    }
    let y = g.linear(h, w, b);
    let y = g.dropout(y, dropout, rng);
    let y = match drop_path {
        Some(s) => {
            let mut shape = vec![1; g.shape(y).len()];
            shape[0] = s.len();
            let mask = g.input(Tensor::from_vec(s, &shape));
            g.mul(y, mask)
        }
        None => y,
    };
    g.add(z, y)
}
