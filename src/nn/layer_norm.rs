//! Layer normalisation over the last axis.

use autograd::{Float, Graph, Tensor, Var};

use super::module::{Ctx, Module};
use super::params::{ParamId, ParamStore, ParamVars};

/// `y = (x - mean) / sqrt(var + eps) * weight + bias`, statistics over the last axis `D`
/// (Ba et al. 2016). One fused op on the tape: it saves the per-row mean and `1/sqrt(var+eps)`
/// so backward needs no second pass over the statistics. ViT uses `eps = 1e-6`.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    /// The per-feature gain `weight`, `[D]`.
    pub weight: ParamId,
    /// The per-feature shift `bias`, `[D]`.
    pub bias: ParamId,
    /// `D`, the width normalised over.
    pub dim: usize,
    /// Added to the variance so that a constant row does not divide by zero.
    pub eps: f64,
}

impl LayerNorm {
    /// Registers `{name}.weight` (ones) and `{name}.bias` (zeros); neither is weight-decayed.
    pub fn new<T: Float>(store: &mut ParamStore<T>, name: &str, dim: usize, eps: f64) -> Self {
        let weight = store.add(format!("{name}.weight"), Tensor::ones(&[dim]), false);
        let bias = store.add(format!("{name}.bias"), Tensor::zeros(&[dim]), false);
        LayerNorm { weight, bias, dim, eps }
    }

    /// Parameters of a LayerNorm of width `dim`: gain and shift, `2 D`.
    pub fn num_params(dim: usize) -> usize {
        2 * dim
    }
}

impl Module for LayerNorm {
    /// One op in both paths (the composed statistics would keep several `[.., D]` tensors).
    fn forward<T: Float>(&self, g: &mut Graph<T>, p: &ParamVars, x: Var, _: &mut Ctx<'_>) -> Var {
        g.layer_norm(x, p.get(self.weight), p.get(self.bias), self.eps)
    }
}
