//! The rectified linear unit, the hybrid ResNet's activation.
//!
//! ```text
//!     y = max(x, 0),    dx = g [x > 0]
//! ```
//!
//! At `x = 0` the gradient is taken as 0 (PyTorch's choice). Backward reads only the sign of
//! the input, and the output can be rebuilt from the input, so its output is not kept for backward (`crate::memory`).

use crate::dtype::Float;
use crate::graph::{BackwardCtx, Graph, Op, Var};
use crate::memory::{Recomputed, Saves};
use crate::tensor::Tensor;

/// `y = max(x, 0)`;  `dx = g [x > 0]`.
struct Relu;

impl<T: Float> Op<T> for Relu {
    fn name(&self) -> String {
        "relu".into()
    }

    fn backward(&self, c: &BackwardCtx<'_, T>) -> Vec<Option<Tensor<T>>> {
        let (x, g) = (c.inputs[0].data(), c.grad.data());
        let dx = x.iter().zip(g).map(|(&x, &g)| if x > T::ZERO { g } else { T::ZERO }).collect();
        vec![Some(Tensor::from_vec(dx, c.inputs[0].shape()))]
    }

    fn saves(&self) -> Saves {
        Saves::recompute(0)
    }

    fn recompute(&self, inputs: &[&Tensor<T>]) -> Option<Recomputed<T>> {
        Some(Recomputed { output: relu(inputs[0]) })
    }
}

fn relu<T: Float>(x: &Tensor<T>) -> Tensor<T> {
    x.map(|v| if v > T::ZERO { v } else { T::ZERO })
}

impl<T: Float> Graph<T> {
    /// `max(x, 0)` elementwise.
    pub fn relu(&mut self, x: Var) -> Var {
        let y = relu(self.value(x));
        self.push(y, Relu, &[x])
    }
}
