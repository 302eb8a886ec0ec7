//! Multi-head self-attention (MSA in eq. 2).

use autograd::{Float, Graph, Rng, Var};

use super::init::Init;
use super::linear::Linear;
use super::module::{Ctx, Module};
use super::params::{ParamStore, ParamVars};
use super::residual::residual_branch_end;

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

    /// `concat_h(A_h v_h)`: everything before the output projection, which the fused block
    /// path merges with the residual sum ([`Attention::forward_residual`]).
    fn heads<T: Float>(&self, g: &mut Graph<T>, p: &ParamVars, x: Var, cx: &mut Ctx<'_>) -> Var {
        let qkv = self.qkv.forward(g, p, x, cx); // [B, N, 3D]
        if !cx.fused {
            return self.heads_plain(g, qkv, cx);
        }
        // One op from qkv to the concatenated heads: per-head scores, softmax, dropout and the
        // value product, read from qkv and written into the heads through strides, keeping
        // nothing N x N for backward (`autograd::ops::attention`).
        if cx.attention.is_none() {
            return g.attention(qkv, self.heads, self.attn_dropout, cx.rng);
        }
        let (y, attn) = g.attention_with_probs(qkv, self.heads, self.attn_dropout, cx.rng);
        collect(g, cx, attn);
        y
    }

    /// The same, op by op: split qkv into heads, `softmax(q k^T / sqrt(Dh))`, dropout, `A v`,
    /// heads back side by side.
    fn heads_plain<T: Float>(&self, g: &mut Graph<T>, qkv: Var, cx: &mut Ctx<'_>) -> Var {
        let (b, n, d) = (g.shape(qkv)[0], g.shape(qkv)[1], self.heads * self.head_dim);
        let (h, dh) = (self.heads, self.head_dim);
        let t = g.reshape(qkv, &[b, n, 3, h, dh]);
        let t = g.permute(t, &[2, 0, 3, 1, 4]); // [3, B, H, N, Dh]
        let mut part = |i| {
            let x = g.narrow(t, 0, i, 1);
            g.reshape(x, &[b, h, n, dh])
        };
        let (q, k, v) = (part(0), part(1), part(2));
        let s = g.matmul_t(q, k);
        let s = g.mul_scalar(s, 1.0 / (dh as f64).sqrt());
        let a = g.softmax(s); // [B, H, N, N]
        collect(g, cx, a);
        let a = g.dropout(a, self.attn_dropout, cx.rng);
        let o = g.matmul(a, v); // [B, H, N, Dh]
        let o = g.permute(o, &[0, 2, 1, 3]);
        g.reshape(o, &[b, n, d])
    }

    /// `z + drop_path(MSA(x))` with the output projection, its dropout, stochastic depth and
    /// the sum in one op when possible (the fused path of eq. 2).
    pub fn forward_residual<T: Float>(
        &self,
        g: &mut Graph<T>,
        p: &ParamVars,
        x: Var,
        z: Var,
        drop_path: f64,
        cx: &mut Ctx<'_>,
    ) -> Var {
        let y = self.heads(g, p, x, cx);
        residual_branch_end(g, p, &self.proj, y, self.proj_dropout, z, drop_path, cx.rng)
    }
}

/// Keeps attention probabilities for the caller who asked for them.
fn collect<T: Float>(g: &mut Graph<T>, cx: &mut Ctx<'_>, attn: Var) {
    if let Some(maps) = &mut cx.attention {
        g.keep(attn);
        maps.push(attn);
    }
}

impl Module for Attention {
    /// `x: [B, N, D]` -> `[B, N, D]`; see the type's documentation for the equations.
    fn forward<T: Float>(&self, g: &mut Graph<T>, p: &ParamVars, x: Var, cx: &mut Ctx<'_>) -> Var {
        let y = self.heads(g, p, x, cx);
        let y = self.proj.forward(g, p, y, cx);
        g.dropout(y, self.proj_dropout, cx.rng)
    }
}
