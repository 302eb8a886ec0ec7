//! The residual connections of eqs. 2-3, `z + drop_path(branch)`, in both paths.
//!
//! `drop_path` is stochastic depth (Huang et al. 2016): in training each sample's residual
//! branch is dropped with probability `p` and kept branches are scaled by `1 / (1 - p)`, so the
//! expected output is unchanged; at evaluation it is the identity.

use autograd::{Float, Graph, Rng, Tensor, Var};

use super::linear::Linear;
use super::params::ParamVars;

/// Stochastic depth's per-sample scale for a batch of `batch`: `mask_b / (1 - p)` with
/// `mask_b ~ Bernoulli(1 - p)`; `None` (the identity) at evaluation or when `p == 0`.
pub fn drop_path_mask<T: Float>(g: &Graph<T>, batch: usize, p: f64, rng: &mut Rng) -> Option<Vec<T>> {
    if p == 0.0 || !g.is_training() {
        return None;
    }
    let keep = 1.0 - p;
    Some((0..batch).map(|_| if rng.uniform() < keep { T::from_f64(1.0 / keep) } else { T::ZERO }).collect())
}

/// `z + drop_path(y)`, op by op (the plain path).
pub fn residual<T: Float>(g: &mut Graph<T>, z: Var, y: Var, drop_path: f64, rng: &mut Rng) -> Var {
    let y = match drop_path_mask(g, g.shape(y)[0], drop_path, rng) {
        Some(s) => {
            let mut shape = vec![1; g.shape(y).len()];
            shape[0] = s.len();
            // On the branch's device, which is open (it holds the branch).
            let device = g.value(y).device();
            let mask = Tensor::from_vec(s, &shape).to(device).unwrap_or_else(|e| panic!("{device}: {e}"));
            let mask = g.input(mask);
            g.mul(y, mask)
        }
        None => y,
    };
    g.add(z, y)
}

/// `z + drop_path(dropout(linear(h)))`: the end of a residual branch (the fused path).
///
/// Without active dropout this is one op (`Graph::linear_residual`): the branch's output goes
/// from the product straight into the residual sum, scaled per sample by the stochastic depth
/// mask, and never exists as a tensor of its own. With dropout (an elementwise mask inside the
/// branch) it is the plain path's ops. Either way randomness is drawn in the plain path's order
/// (dropout, then stochastic depth), so both paths see the same masks.
#[allow(clippy::too_many_arguments)]
pub fn residual_branch_end<T: Float>(
    g: &mut Graph<T>,
    p: &ParamVars,
    linear: &Linear,
    h: Var,
    dropout: f64,
    z: Var,
    drop_path: f64,
    rng: &mut Rng,
) -> Var {
    let (w, b) = (p.get(linear.weight), linear.bias.map(|b| p.get(b)));
    if dropout == 0.0 || !g.is_training() {
        let mask = drop_path_mask(g, g.shape(z)[0], drop_path, rng);
        return g.linear_residual(h, w, b, z, mask);
    }
    let y = g.linear(h, w, b);
    let y = g.dropout(y, dropout, rng);
    residual(g, z, y, drop_path, rng)
}
