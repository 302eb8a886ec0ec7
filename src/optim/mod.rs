//! Optimizers, learning-rate schedules and gradient clipping.
//!
//! Every optimizer walks a [`ParamStore`] together with the step's
//! gradients in the same order (as `ParamVars::take_grads` returns them), so no name lookups
//! happen on the hot path.

pub mod adamw;
pub mod clip;
pub mod schedule;
pub mod sgd;

pub use adamw::AdamW;
pub use clip::clip_grad_norm;
pub use schedule::{Decay, LrSchedule};
pub use sgd::Sgd;

use autograd::Tensor;

use crate::nn::ParamStore;

/// What the training loop needs from an optimizer, and what a checkpoint stores of it.
pub trait Optimizer: Send {
    /// Applies one update with learning rate `lr` (the schedule's value for this step).
    fn step(&mut self, params: &mut ParamStore<f32>, grads: &[Tensor<f32>], lr: f64);

    /// The state to checkpoint, as named tensors (`optim.<what>.<param name>`) plus the step
    /// count.
    fn state(&self, params: &ParamStore<f32>) -> (Vec<(String, Tensor<f32>)>, u64);

    /// Restores a state saved by [`Optimizer::state`]; `lookup` finds a saved tensor by name.
    fn load_state(
        &mut self,
        params: &ParamStore<f32>,
        step: u64,
        lookup: &mut dyn FnMut(&str) -> Option<Tensor<f32>>,
    ) -> crate::Result<()>;
}

/// Restores one per-parameter buffer list from checkpointed tensors, checking names and shapes.
pub(crate) fn load_buffers(
    what: &str,
    params: &ParamStore<f32>,
    lookup: &mut dyn FnMut(&str) -> Option<Tensor<f32>>,
) -> crate::Result<Vec<Tensor<f32>>> {
    params
        .iter()
        .map(|p| {
            let name = format!("optim.{what}.{}", p.name);
            let t = lookup(&name).ok_or_else(|| {
                crate::Error::Checkpoint(format!("{name}: missing from the checkpoint (optimizer state)"))
            })?;
            if t.shape() != p.value.shape() {
                return Err(crate::Error::Checkpoint(format!(
                    "{name}: expected shape {:?}, found {:?}",
                    p.value.shape(),
                    t.shape()
                )));
            }
            Ok(t)
        })
        .collect()
}
