//! The one module interface: `forward(g, p, x, cx) -> Var`, the same for every layer.

use autograd::{Float, Graph, Rng, Var};

use super::params::ParamVars;

/// A layer: builds its part of a step's tape from its input and returns its output.
///
/// `g` is the step's tape, `p` the model's parameters bound to it, `x` the input and `cx` what
/// the pass carries besides (randomness, the fused/plain switch, attention maps when asked for).
/// Modules hold no tensors, only parameter ids, so one module tree runs in f32 and in f64.
pub trait Module {
    /// This layer's output for input `x`.
    fn forward<T: Float>(&self, g: &mut Graph<T>, p: &ParamVars, x: Var, cx: &mut Ctx<'_>) -> Var;
}

/// What a forward pass carries besides the tape, the parameters and the input.
pub struct Ctx<'a> {
    /// Draws dropout masks and stochastic depth when the tape is in training mode.
    pub rng: &'a mut Rng,
    /// The one switch between the two paths (timm's `fused_attn`, for the whole model): fused
    /// ops (the default: attention from qkv to heads in one op, Linear+GELU in one op, each
    /// branch's last Linear with its residual sum in one op) or the plain path, op by op as the
    /// equations are written. Both give the same loss and gradients (`tests/fused_vs_plain.rs`).
    pub fused: bool,
    /// When `Some`, every attention layer appends its probabilities `[B, H, N, N]` (before
    /// attention dropout), kept on the tape for the caller.
    pub attention: Option<Vec<Var>>,
}

impl<'a> Ctx<'a> {
    /// The fused path, attention maps not collected.
    pub fn new(rng: &'a mut Rng) -> Self {
        Ctx { rng, fused: true, attention: None }
    }

    /// The plain, op-by-op path.
    pub fn plain(rng: &'a mut Rng) -> Self {
        Ctx { fused: false, ..Ctx::new(rng) }
    }

    /// Also collect every attention layer's probabilities.
    pub fn with_attention(self) -> Self {
        Ctx { attention: Some(Vec::new()), ..self }
    }
}
