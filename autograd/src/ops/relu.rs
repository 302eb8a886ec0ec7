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
        let (x, g) = (c.inputs[0], c.grad);
        let dx = on_device!([x, g],
        cuda: crate::cuda::ops::binary("relu backward", crate::cuda::kernels::BinaryOp::ReluBack, g, x, 0.0),
        cpu: x.zip_map(g, |x, g| if x > T::ZERO { g } else { T::ZERO }));
        vec![Some(dx)]
    }

    fn saves(&self) -> Saves {
        Saves::recompute(0)
    }

    fn recompute(&self, inputs: &[&Tensor<T>]) -> Option<Recomputed<T>> {
        Some(Recomputed { output: relu(inputs[0]) })
    }
}

fn relu<T: Float>(x: &Tensor<T>) -> Tensor<T> {
    on_device!([x],
        cuda: crate::cuda::ops::unary(crate::cuda::kernels::UnaryOp::Relu, x, 0.0),
        cpu: x.map(|v| if v > T::ZERO { v } else { T::ZERO }))
}

impl<T: Float> Graph<T> {
    /// `max(x, 0)` elementwise.
    pub fn relu(&mut self, x: Var) -> Var {
        let y = relu(self.value(x));
        self.push(y, Relu, &[x])
    }
}
