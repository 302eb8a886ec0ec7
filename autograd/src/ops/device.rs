//! Moving a value between devices on the tape.
//!
//! ```text
//!     y = x (on another device),      dx = g (moved back to x's device)
//! ```
//!
//! The identity, differentiable, as PyTorch's `Tensor.to`: a graph may start on the CPU (the
//! data a loader produced) and run on a GPU, and a test can wrap a GPU computation between two
//! transfers and check its gradients on the CPU.

use crate::device::{Device, DeviceError};
use crate::dtype::Float;
use crate::graph::{BackwardCtx, Graph, Op, Var};
use crate::tensor::Tensor;

/// `y = x` on another device;  `dx = g` on `x`'s device.
struct ToDevice {
    from: Device,
}

impl<T: Float> Op<T> for ToDevice {
    fn name(&self) -> String {
        format!("to(from {})", self.from)
    }

    fn backward(&self, c: &BackwardCtx<'_, T>) -> Vec<Option<Tensor<T>>> {
        // The source device held x a moment ago, so it opens (it is open already).
        let dx = c.grad.to(self.from).unwrap_or_else(|e| panic!("to backward: {e}"));
        vec![Some(dx)]
    }
}

impl<T: Float> Graph<T> {
    /// `x` on `device` (no copy if it is there already). Fails if the device cannot be opened.
    pub fn to(&mut self, x: Var, device: Device) -> Result<Var, DeviceError> {
        let xv = self.value(x);
        let from = xv.device();
        if from == device {
            return Ok(x);
        }
        let y = xv.to(device)?;
        Ok(self.push(y, ToDevice { from }, &[x]))
    }
}
