//! Group normalisation with a per-channel affine: every norm of the hybrid's ResNet.

use autograd::{Float, Graph, Tensor, Var};

use super::module::{Ctx, Module};
use super::params::{ParamId, ParamStore, ParamVars};

/// Group norm's number of groups in BiT's ResNet-v2 (timm's `GroupNormAct(num_groups=32)`).
pub const GN_GROUPS: usize = 32;
/// Group norm's epsilon (Flax's and PyTorch's default).
pub const GN_EPS: f64 = 1e-5;

/// BiT's 32 groups, or for a width that 32 does not divide (the small models of the tests) the
/// largest count below 32 that divides it.
pub fn gn_groups(chans: usize) -> usize {
    (1..=GN_GROUPS.min(chans)).rev().find(|g| chans.is_multiple_of(*g)).unwrap_or(1)
}

/// `y = (x - mean_g) / sqrt(var_g + eps) * weight_c + bias_c` on `[B, C, H, W]`, statistics per
/// sample over each group of `C / groups` channels and all pixels (Wu & He 2018). One op on the
/// tape (`autograd::ops::group_norm`).
#[derive(Clone, Debug)]
pub struct GroupNorm {
    /// The per-channel gain `weight`, `[C]`.
    pub weight: ParamId,
    /// The per-channel shift `bias`, `[C]`.
    pub bias: ParamId,
    /// Number of groups; divides `C`.
    pub groups: usize,
}

impl GroupNorm {
    /// Registers `{name}.weight` (ones) and `{name}.bias` (zeros), [`gn_groups`] groups of
    /// `chans` channels; neither is weight-decayed.
    pub fn new<T: Float>(store: &mut ParamStore<T>, name: &str, chans: usize) -> Self {
        let weight = store.add(format!("{name}.weight"), Tensor::ones(&[chans]), false);
        let bias = store.add(format!("{name}.bias"), Tensor::zeros(&[chans]), false);
        GroupNorm { weight, bias, groups: gn_groups(chans) }
    }
}

impl Module for GroupNorm {
    /// One op in both paths.
    fn forward<T: Float>(&self, g: &mut Graph<T>, p: &ParamVars, x: Var, _: &mut Ctx<'_>) -> Var {
        g.group_norm(x, self.groups, p.get(self.weight), p.get(self.bias), GN_EPS)
    }
}
