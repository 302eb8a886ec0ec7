//! Optimizers, learning-rate schedules and gradient clipping: what happens to the gradients
//! between one step's backward and the next step's forward.
//!
//! What each file holds:
//! - [`adamw`]: AdamW (Loshchilov & Hutter, 2019), the paper's pre-training optimizer and our
//!   default: Adam's per-coordinate step `m_hat / (sqrt(v_hat) + eps)` with the weight decay
//!   applied to the weights directly (`p <- p - lr wd p`), not through the gradient, where Adam's
//!   scaling would weaken it for coordinates with large gradients.
//! - [`sgd`]: SGD with momentum, `b <- mu b + g; p <- p - lr b`, the paper's fine-tuning optimizer
//!   (section 4.1, momentum 0.9).
//! - [`schedule`]: linear warmup then cosine (or linear) decay, as the paper trains: warmup keeps
//!   the first updates small while Adam's second-moment estimates are still noisy.
//! - [`clip`]: global-norm clipping at 1 (the paper's setting): all gradients scaled by one factor,
//!   so the update keeps its direction; the norm it returns also flags a non-finite step.
//!
//! Why: the update formulas follow `torch.optim` exactly, scalar by scalar, so a run can be
//! compared with a PyTorch run step for step (the bias corrections and `1 - beta` are computed
//! in f64, so an update lands where the exact formula puts it). Every optimizer walks a
//! [`ParamStore`] together with the step's gradients in the same order
//! (as `ParamVars::take_grads` returns them), so no name lookups happen on the hot path, and its
//! state is a list of named tensors (`optim.<what>.<param name>`) a checkpoint stores beside the
//! weights.

pub mod adamw;
pub mod clip;
pub mod schedule;
pub mod sgd;

pub use adamw::AdamW;
pub use clip::clip_grad_norm;
pub use schedule::{Decay, LrSchedule};
pub use sgd::Sgd;

use autograd::{Device, Tensor};

use crate::nn::ParamStore;

/// What the training loop needs from an optimizer, and what a checkpoint stores of it.
pub trait Optimizer: Send {
    /// Applies one update with learning rate `lr` (the schedule's value for this step).
    fn step(&mut self, params: &mut ParamStore<f32>, grads: &[Tensor<f32>], lr: f64);

    /// The state to checkpoint, as named tensors (`optim.<what>.<param name>`) plus the step
    /// count.
    fn state(&self, params: &ParamStore<f32>) -> (Vec<(String, Tensor<f32>)>, u64);

    /// Moves the state (the moments, the momentum buffers) to `device`, where the parameters it
    /// updates have gone (see `ParamStore::to`).
    fn to(&mut self, device: Device) -> crate::Result<()>;

    /// Restores a state saved by [`Optimizer::state`]; `lookup` finds a saved tensor by name.
    /// The tensors are put on the parameters' device.
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
            Ok(t.to(p.value.device())?)
        })
        .collect()
}

/// Zero buffers shaped like every parameter, on the parameters' device.
pub(crate) fn zeros_like(params: &ParamStore<f32>) -> Vec<Tensor<f32>> {
    params.iter().map(|p| Tensor::full_on(p.value.shape(), 0.0, p.value.device())).collect()
}

/// Moves every buffer of `bufs` to `device`.
pub(crate) fn move_buffers(bufs: &mut [Tensor<f32>], device: Device) -> crate::Result<()> {
    for b in bufs {
        *b = b.to(device)?;
    }
    Ok(())
}
