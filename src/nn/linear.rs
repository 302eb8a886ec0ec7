//! Linear (fully connected) layer.

use autograd::{Float, Graph, Rng, Var};

use super::init::Init;
use super::module::{Ctx, Module};
use super::params::{ParamId, ParamStore, ParamVars};

/// `y = x W^T + b`, with `W: [out, in]` stored as PyTorch stores it (so checkpoints map 1:1) and
/// `x: [..., in]`: one fused op on the tape (`Graph::linear`), whose product reads `W^T` through
/// strides, not a copy.
///
/// Gradients (from the ops): `dx = g W`, `dW = g^T x` summed over all leading axes, `db = sum g`.
#[derive(Clone, Debug)]
pub struct Linear {
    /// `W`, `[out, in]`.
    pub weight: ParamId,
    /// `b`, `[out]`, if the layer has one.
    pub bias: Option<ParamId>,
    /// Input width `in`.
    pub in_features: usize,
    /// Output width `out`.
    pub out_features: usize,
}

impl Linear {
    /// Registers `{name}.weight` and, if `bias`, `{name}.bias`, initialised per `init`.
    pub fn new<T: Float>(
        store: &mut ParamStore<T>,
        name: &str,
        in_features: usize,
        out_features: usize,
        bias: bool,
        init: Init,
        rng: &mut Rng,
    ) -> Self {
        let (w, b) = init.linear::<T>(in_features, out_features, rng);
        let weight = store.add(format!("{name}.weight"), w, true);
        let bias = bias.then(|| store.add(format!("{name}.bias"), b, false));
        Linear { weight, bias, in_features, out_features }
    }

    /// Parameters of such a layer: `in * out` weights plus `out` biases if `bias`.
    pub fn num_params(in_features: usize, out_features: usize, bias: bool) -> usize {
        in_features * out_features + if bias { out_features } else { 0 }
    }
}

impl Module for Linear {
    /// One fused op in both paths: the product with the bias added while its rows are in cache.
    fn forward<T: Float>(&self, g: &mut Graph<T>, p: &ParamVars, x: Var, _: &mut Ctx<'_>) -> Var {
        g.linear(x, p.get(self.weight), self.bias.map(|b| p.get(b)))
    }
}
