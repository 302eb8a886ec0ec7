//! The transformer's MLP (eq. 3).

use autograd::ops::gelu::GeluKind;
use autograd::{Float, Graph, Rng, Var};

use super::init::Init;
use super::linear::Linear;
use super::params::{ParamStore, ParamVars};

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

    /// `MLP(x)` for `x: [..., D]`, as in the formula above; `rng` draws the dropout masks.
    pub fn forward<T: Float>(&self, g: &mut Graph<T>, p: &ParamVars, x: Var, rng: &mut Rng) -> Var {
        let h = self.hidden(g, p, x, rng);
        let y = self.fc2.forward(g, p, h);
        g.dropout(y, self.dropout, rng)
    }

    /// The hidden activations `dropout(GELU(fc1(x)))`: everything before `fc2`, which a block
    /// fuses with its residual sum.
    pub fn hidden<T: Float>(&self, g: &mut Graph<T>, p: &ParamVars, x: Var, rng: &mut Rng) -> Var {
        // fc1 and GELU are one op that keeps neither its pre-activation nor (once released) its
        // output for backward, recomputing them with one more product: with a hidden width of
        // 4D these are the largest tensors a block has.
        let b1 = self.fc1.bias.expect("mlp layers have biases");
        let h = g.linear_gelu(x, p.get(self.fc1.weight), p.get(b1), self.gelu);
        g.dropout(h, self.dropout, rng)
    }
}
