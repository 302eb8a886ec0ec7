//! One encoder block: eqs. 2 and 3.

use autograd::{Float, Graph, Rng, Var};

use super::attention::Attention;
use super::config::ViTConfig;
use super::layer_norm::LayerNorm;
use super::mlp::Mlp;
use super::module::{Ctx, Module};
use super::params::{ParamStore, ParamVars};
use super::residual::residual;

/// A pre-norm transformer block:
///
/// ```text
///     z' = drop_path(MSA(LN(z)))  + z         (eq. 2)
///     y  = drop_path(MLP(LN(z'))) + z'        (eq. 3)
/// ```
///
/// `drop_path` is stochastic depth ([`super::residual`]): the identity at evaluation.
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

    /// The same two equations on the fused path: each branch's last Linear, its dropout, its
    /// stochastic depth and the residual sum are one op, so the branch's output never exists as
    /// a tensor (`Attention::forward_residual`, `Mlp::forward_residual`).
    fn forward_fused<T: Float>(&self, g: &mut Graph<T>, p: &ParamVars, z: Var, cx: &mut Ctx<'_>) -> Var {
        let h = self.norm1.forward(g, p, z, cx);
        let z = self.attn.forward_residual(g, p, h, z, self.drop_path, cx);
        let h = self.norm2.forward(g, p, z, cx);
        self.mlp.forward_residual(g, p, h, z, self.drop_path, cx)
    }
}

impl Module for Block {
    /// Eqs. 2 and 3 (the fused path, when `cx.fused`, computes the same).
    fn forward<T: Float>(&self, g: &mut Graph<T>, p: &ParamVars, z: Var, cx: &mut Ctx<'_>) -> Var {
        if cx.fused {
            return self.forward_fused(g, p, z, cx);
        }
        // eq. 2: z' = MSA(LN(z)) + z
        let h = self.norm1.forward(g, p, z, cx);
        let h = self.attn.forward(g, p, h, cx);
        let z = residual(g, z, h, self.drop_path, cx.rng);
        // eq. 3: z = MLP(LN(z')) + z'
        let h = self.norm2.forward(g, p, z, cx);
        let h = self.mlp.forward(g, p, h, cx);
        residual(g, z, h, self.drop_path, cx.rng)
    }
}
