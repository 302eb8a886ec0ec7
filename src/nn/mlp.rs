//! The transformer's MLP (eq. 3).

use autograd::ops::gelu::GeluKind;
use autograd::{Float, Graph, Rng, Var};

use super::init::Init;
use super::linear::Linear;
use super::module::{Ctx, Module};
use super::params::{ParamStore, ParamVars};
use super::residual::residual_branch_end;

/// `y = dropout(fc2(dropout(GELU(fc1(x)))))`, hidden width `mlp_dim` (4 D in the paper).
#[derive(Clone, Debug)]
pub struct Mlp {
    /// The expansion `D -> mlp_dim`.
    pub fc1: Linear,
    /// The projection back `mlp_dim -> D`.
    pub fc2: Linear,
    /// Exact (erf) or tanh-approximated GELU.
    pub gelu: GeluKind,
    /// Dropout rate after the GELU and after `fc2`.
    pub dropout: f64,
}

impl Mlp {
    /// Registers `{name}.fc1` and `{name}.fc2` (timm's names), initialised per `init`.
    #[allow(clippy::too_many_arguments)]
    pub fn new<T: Float>(
        store: &mut ParamStore<T>,
        name: &str,
        dim: usize,
        hidden: usize,
        gelu: GeluKind,
        dropout: f64,
        init: Init,
        rng: &mut Rng,
    ) -> Self {
        let fc1 = Linear::new(store, &format!("{name}.fc1"), dim, hidden, true, init, rng);
        let fc2 = Linear::new(store, &format!("{name}.fc2"), hidden, dim, true, init, rng);
        for l in [&fc1, &fc2] {
            let b = init.mlp_bias(l.out_features, rng);
            store.get_mut(l.bias.expect("mlp layers have biases")).value = b;
        }
        Mlp { fc1, fc2, gelu, dropout }
    }

    /// The hidden activations `dropout(GELU(fc1(x)))`: everything before `fc2`, which the fused
    /// block path merges with the residual sum ([`Mlp::forward_residual`]).
    fn hidden<T: Float>(&self, g: &mut Graph<T>, p: &ParamVars, x: Var, cx: &mut Ctx<'_>) -> Var {
        let h = if cx.fused {
            // fc1 and GELU in one op that keeps only its pre-activation for backward and
            // rebuilds its output from it (one GELU pass, no product): with a hidden width of
            // 4D these are the largest tensors a block has.
            let b1 = self.fc1.bias.expect("mlp layers have biases");
            g.linear_gelu(x, p.get(self.fc1.weight), p.get(b1), self.gelu)
        } else {
            let h = self.fc1.forward(g, p, x, cx);
            g.gelu(h, self.gelu)
        };
        g.dropout(h, self.dropout, cx.rng)
    }

    /// `z + drop_path(MLP(x))` with `fc2`, its dropout, stochastic depth and the sum in one op
    /// when possible (the fused path of eq. 3).
    pub fn forward_residual<T: Float>(
        &self,
        g: &mut Graph<T>,
        p: &ParamVars,
        x: Var,
        z: Var,
        drop_path: f64,
        cx: &mut Ctx<'_>,
    ) -> Var {
        let h = self.hidden(g, p, x, cx);
        residual_branch_end(g, p, &self.fc2, h, self.dropout, z, drop_path, cx.rng)
    }
}

impl Module for Mlp {
    /// `x: [..., D]` -> `[..., D]`.
    fn forward<T: Float>(&self, g: &mut Graph<T>, p: &ParamVars, x: Var, cx: &mut Ctx<'_>) -> Var {
        let h = self.hidden(g, p, x, cx);
        let y = self.fc2.forward(g, p, h, cx);
        g.dropout(y, self.dropout, cx.rng)
    }
}
