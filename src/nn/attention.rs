//! Multi-head self-attention (MSA in eq. 2).

use autograd::{Float, Graph, Rng, Var};

use super::init::Init;
use super::linear::Linear;
use super::params::{ParamStore, ParamVars};

/// Multi-head self-attention over tokens `x: [B, N, D]` with `H` heads of width `Dh = D / H`:
///
/// ```text
///     [q | k | v] = x W_qkv^T + b_qkv                  one fused Linear(D, 3D)
///     A_h = softmax(q_h k_h^T / sqrt(Dh))              [B, H, N, N], per head h
///     y   = concat_h(A_h v_h) W_proj^T + b_proj
/// ```
///
/// The qkv output is laid out `[q | k | v]`, each head-major (`q` = columns `0..D`, head `h`
/// at `h*Dh..(h+1)*Dh`), which is the layout timm's `attn.qkv.weight` has, so checkpoints load.
/// Dropout follows the softmax (`attn_dropout`) and the output projection (`dropout`), never the
/// qkv projection.
#[derive(Clone, Debug)]
pub struct Attention {
    /// `W_qkv, b_qkv`: `D -> 3D`, the three projections in one product.
    pub qkv: Linear,
    /// `W_proj, b_proj`: `D -> D`, mixes the concatenated heads.
    pub proj: Linear,
    /// `H`, the number of heads.
    pub heads: usize,
    /// `Dh = D / H`, each head's width (the `sqrt(Dh)` of the scaling).
    pub head_dim: usize,
    /// Dropout rate on the attention probabilities `A_h`.
    pub attn_dropout: f64,
    /// Dropout rate on the output projection.
    pub proj_dropout: f64,
}

/// What attention produced: the output tokens and the attention probabilities `[B, H, N, N]`
/// (a handle on the tape: keeping it costs nothing).
pub struct AttentionOutput {
    /// The output tokens `y`, `[B, N, D]`.
    pub y: Var,
    /// The probabilities `A_h` of every head, `[B, H, N, N]` (before attention dropout).
    pub attn: Var,
}

impl Attention {
    /// Registers `{name}.qkv` and `{name}.proj` (timm's names); `dim` must divide into `heads`.
    #[allow(clippy::too_many_arguments)]
    pub fn new<T: Float>(
        store: &mut ParamStore<T>,
        name: &str,
        dim: usize,
        heads: usize,
        qkv_bias: bool,
        attn_dropout: f64,
        proj_dropout: f64,
        init: Init,
        rng: &mut Rng,
    ) -> Self {
        assert!(dim.is_multiple_of(heads), "Attention: dim {dim} is not divisible by heads {heads}");
        let qkv = Linear::new(store, &format!("{name}.qkv"), dim, 3 * dim, qkv_bias, init, rng);
        let proj = Linear::new(store, &format!("{name}.proj"), dim, dim, true, init, rng);
        Attention { qkv, proj, heads, head_dim: dim / heads, attn_dropout, proj_dropout }
    }

    /// `MSA(x)` for tokens `x: [B, N, D]`, as in the formula above; `rng` draws the dropout masks.
    pub fn forward<T: Float>(&self, g: &mut Graph<T>, p: &ParamVars, x: Var, rng: &mut Rng) -> AttentionOutput {
        let qkv = self.qkv.forward(g, p, x); // [B, N, 3D]
                                             // One fused op per layer: per-head scores, softmax, dropout and the value product, read
                                             // from qkv and written into the concatenated heads through strides (`autograd::ops::attention`).
        let (y, attn) = g.attention_with_probs(qkv, self.heads, self.attn_dropout, rng); // [B, N, D]
        let y = self.proj.forward(g, p, y);
        let y = g.dropout(y, self.proj_dropout, rng);
        AttentionOutput { y, attn }
    }
}
