//! One optimisation step.

use autograd::{Graph, Rng, Tensor};
use rayon::prelude::*;

use crate::data::Batch;
use crate::error::{Error, Result};
use crate::nn::{ParamStore, VisionTransformer};
use crate::optim::{clip_grad_norm, Optimizer};

/// What a step measured.
#[derive(Clone, Copy, Debug)]
pub struct StepOutput {
    /// The (mean over the batch) training loss.
    pub loss: f64,
    /// Correct top-1 predictions against the batch's (first) labels.
    pub correct: usize,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

/// Forward, loss, backward, clip, update. With mixup/cutmix the loss is the mixed
/// cross-entropy `lambda CE(y_a) + (1 - lambda) CE(y_b)` — the same as cross-entropy against
/// the mixed one-hot target, since CE is linear in the target.
///
/// A non-finite loss or gradient is an error and leaves the parameters untouched. An update that
/// leaves a non-finite parameter (a huge step, a NaN hyper-parameter) is an error too; the
/// parameters are then broken, and the caller must not save them.
#[allow(clippy::too_many_arguments)]
pub fn train_step(
    model: &VisionTransformer,
    params: &mut ParamStore<f32>,
    opt: &mut dyn Optimizer,
    batch: Batch,
    lr: f64,
    label_smoothing: f64,
    clip_grad: Option<f64>,
    rng: &mut Rng,
) -> Result<StepOutput> {
    let classes = model.config.num_classes;
    let mut g = Graph::new();
    g.set_record_grad_norms(false);
    let p = params.bind(&mut g);
    let x = g.input(Tensor::from_vec(batch.images, &batch.shape));
    let logits = model.forward(&mut g, &p, x, rng).logits;
    let loss = match &batch.mix {
        None => g.cross_entropy(logits, &batch.labels, label_smoothing),
        Some(mix) => {
            let a = g.cross_entropy(logits, &batch.labels, label_smoothing);
            let b = g.cross_entropy(logits, &mix.labels_b, label_smoothing);
            let a = g.mul_scalar(a, mix.lambda as f64);
            let b = g.mul_scalar(b, 1.0 - mix.lambda as f64);
            g.add(a, b)
        }
    };
    let loss_value = g.value(loss).item() as f64;
    if !loss_value.is_finite() {
        return Err(Error::Train(format!("the loss is {loss_value}")));
    }
    let correct = g
        .value(logits)
        .data()
        .chunks(classes)
        .zip(&batch.labels)
        .filter(|(row, &y)| super::metrics::argmax(row) == y)
        .count();
    g.backward(loss);
    let mut grads = p.take_grads(&mut g);
    // Release the tape (and its references to the parameters' storage) before updating them in
    // place, so the optimizer writes without copying.
    drop(g);
    let grad_norm = match clip_grad {
        Some(max) => clip_grad_norm(&mut grads, max),
        None => clip_grad_norm(&mut grads, f64::INFINITY),
    };
    if !grad_norm.is_finite() {
        return Err(Error::Train(format!("the gradient norm is {grad_norm} (loss {loss_value})")));
    }
    opt.step(params, &grads, lr);
    let broken =
        params.iter().collect::<Vec<_>>().into_par_iter().find_first(|p| !p.value.data().iter().all(|v| v.is_finite()));
    if let Some(p) = broken {
        return Err(Error::Train(format!(
            "the update (lr {lr:.3e}, gradient norm {grad_norm:.3e}) left non-finite values in {}",
            p.name
        )));
    }
    Ok(StepOutput { loss: loss_value, correct, grad_norm })
}
