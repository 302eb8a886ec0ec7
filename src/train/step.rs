//! One optimisation step, on one process or as one rank of a data-parallel run.
//!
//! A step's global batch of `B` images is split into `S` near-equal shards (rows
//! `s * B / S .. (s + 1) * B / S`). Each rank of a run of `W` holds `A = S / W` consecutive shards
//! and runs them one after the other as micro-batches (gradient accumulation). The gradient of
//! shard `s` is seeded with `n_s / B` instead of 1, so that summing the shards' gradients, in the
//! process and then across ranks, gives the gradient of the global batch's mean loss:
//!
//! ```text
//!     dL/dθ = sum_s (n_s / B) d(mean loss of shard s)/dθ
//! ```
//!
//! The trajectory therefore depends on `B` and `S`, not on how the shards are spread over
//! processes: one process with `A = 2` and two ranks with `A = 1` sum the same two shard
//! gradients (`a + b` either way: bit for bit). Each shard draws its dropout and stochastic
//! depth from its own stream, (seed, step, shard).

use autograd::{Device, Graph, Rng, Tensor};
use rayon::prelude::*;

use crate::data::{Batch, Shard};
use crate::dist::{Comm, GradReducer, ReduceStats};
use crate::error::{Error, Result};
use crate::nn::{Ctx, Module, ParamStore, VisionTransformer};
use crate::optim::{clip_grad_norm, Optimizer};

/// What a step measured.
#[derive(Clone, Copy, Debug)]
pub struct StepOutput {
    /// The (mean over the global batch) training loss.
    pub loss: f64,
    /// Correct top-1 predictions against the batch's (first) labels, over the global batch.
    pub correct: usize,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// The step's communication (zero on one process).
    pub reduce: ReduceStats,
}

/// How a step's global batch is spread over shards, and which of them this process holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sharding {
    /// Images per step, over all processes.
    pub global_batch: usize,
    /// Shards the global batch is split into (`S`).
    pub shards: usize,
    /// This process's first shard.
    pub first: usize,
    /// This process's number of shards (`A`, its micro-batches).
    pub count: usize,
}

impl Sharding {
    /// The whole batch as one shard, on one process.
    pub fn whole(global_batch: usize) -> Self {
        Sharding { global_batch, shards: 1, first: 0, count: 1 }
    }

    /// Rank `rank` of `world`, each with `accum` micro-batches.
    pub fn of_rank(global_batch: usize, rank: usize, world: usize, accum: usize) -> Self {
        Sharding { global_batch, shards: world * accum, first: rank * accum, count: accum }
    }

    /// The rows of the global batch this process holds (what its loader assembles).
    pub fn rows(&self) -> std::ops::Range<usize> {
        let s = self.shards;
        self.first * self.global_batch / s..(self.first + self.count) * self.global_batch / s
    }

    /// The rows of shard `first + k`, within this process's rows.
    fn micro_batch(&self, k: usize) -> std::ops::Range<usize> {
        let rows = Shard { index: self.first + k, count: self.shards }.rows(self.global_batch);
        let base = self.rows().start;
        rows.start - base..rows.end - base
    }
}

/// Forward, loss, backward, clip, update, on one process with the whole batch. With
/// mixup/cutmix the loss is the mixed cross-entropy `lambda CE(y_a) + (1 - lambda) CE(y_b)` —
/// the same as cross-entropy against the mixed one-hot target, since CE is linear in the target.
///
/// The step runs where the parameters live ([`ParamStore::device`]): the batch is uploaded there,
/// and what comes back to the host is what the step reports (the loss, the gradient norm, the
/// logits for the accuracy).
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
    let sharding = Sharding::whole(batch.len());
    let out = train_step_sharded(
        model,
        params,
        opt,
        batch,
        lr,
        label_smoothing,
        clip_grad,
        &sharding,
        std::slice::from_mut(rng),
        &Comm::local(),
        None,
    )?;
    Ok(out)
}

/// [`train_step`] for this process's shards of a global batch (`batch` holds
/// [`Sharding::rows`]), one micro-batch per shard with its own RNG (`rngs`), the gradients
/// summed across the ranks of `comm` by `reducer` (required when `comm` has more than one
/// rank) during the backward of the last micro-batch.
#[allow(clippy::too_many_arguments)]
pub fn train_step_sharded(
    model: &VisionTransformer,
    params: &mut ParamStore<f32>,
    opt: &mut dyn Optimizer,
    batch: Batch,
    lr: f64,
    label_smoothing: f64,
    clip_grad: Option<f64>,
    sharding: &Sharding,
    rngs: &mut [Rng],
    comm: &Comm,
    mut reducer: Option<&mut GradReducer>,
) -> Result<StepOutput> {
    assert_eq!(
        batch.len(),
        sharding.rows().len(),
        "train_step: a batch of {} for shard rows {:?}",
        batch.len(),
        sharding.rows()
    );
    assert_eq!(rngs.len(), sharding.count, "train_step: one RNG per micro-batch");
    assert!(comm.is_local() || reducer.is_some(), "train_step: a distributed step needs a GradReducer");
    let classes = model.config.num_classes;
    let device = params.device();
    let mut earlier: Vec<Option<Tensor<f32>>> = (0..params.len()).map(|_| None).collect();
    let (mut loss_sum, mut correct) = (0.0f64, 0usize);
    let mut summed = None;
    if let Some(r) = reducer.as_deref_mut() {
        r.begin();
    }
    // One micro-batch is the batch itself (no copy of its pixels).
    let micro_batches: Vec<Batch> = if sharding.count == 1 {
        vec![batch]
    } else {
        (0..sharding.count).map(|k| batch.rows(sharding.micro_batch(k))).collect()
    };
    for (k, (rng, mb)) in rngs.iter_mut().zip(micro_batches).enumerate() {
        let n = mb.len();
        let mut g = Graph::new();
        g.set_record_grad_norms(false);
        let p = params.bind(&mut g);
        let x = g.input(Tensor::from_vec(mb.images, &mb.shape).to(device)?);
        let logits = model.forward(&mut g, &p, x, &mut Ctx::new(rng));
        let loss = match &mb.mix {
            None => g.cross_entropy(logits, &mb.labels, label_smoothing),
            Some(mix) => {
                let a = g.cross_entropy(logits, &mb.labels, label_smoothing);
                let b = g.cross_entropy(logits, &mix.labels_b, label_smoothing);
                let a = g.mul_scalar(a, mix.lambda as f64);
                let b = g.mul_scalar(b, 1.0 - mix.lambda as f64);
                g.add(a, b)
            }
        };
        let value = g.value(loss).to(Device::Cpu)?.item() as f64;
        loss_sum += value * n as f64;
        correct += g
            .value(logits)
            .to(Device::Cpu)?
            .data()
            .chunks(classes)
            .zip(&mb.labels)
            .filter(|(row, &y)| super::metrics::argmax(row) == y)
            .count();
        // This shard's share of the global batch's mean loss.
        let seed = Tensor::scalar(n as f32 / sharding.global_batch as f32).to(device)?;
        let last = k + 1 == sharding.count;
        match reducer.as_deref_mut() {
            Some(r) if last => {
                // Parameters are the tape's first leaves, in store order.
                let first = p.vars()[0].index();
                g.backward_hooked(loss, seed, &mut |v, grad| {
                    let i = v.index() - first;
                    r.ready(comm, i, grad, earlier[i].take());
                });
                // Release the tape (and its references to the parameters' storage) before
                // updating them in place, so the optimizer writes without copying.
                drop(g);
                summed = Some(r.finish(comm, std::mem::take(&mut earlier))?);
            }
            _ => {
                g.backward_with(loss, seed);
                for (slot, grad) in earlier.iter_mut().zip(p.take_grads(&mut g)) {
                    match slot {
                        Some(acc) => acc.add_assign(&grad),
                        None => *slot = Some(grad),
                    }
                }
            }
        }
    }
    let (mut grads, reduce) = match summed {
        Some(s) => s,
        None => (
            earlier.into_iter().map(|g| g.expect("every micro-batch gives every gradient")).collect(),
            ReduceStats::default(),
        ),
    };
    let totals = comm.sum_f64("summing the step's loss and accuracy", vec![loss_sum, correct as f64])?;
    let (loss_value, correct) = (totals[0] / sharding.global_batch as f64, totals[1] as usize);
    if !loss_value.is_finite() {
        return Err(Error::Train(format!("the loss is {loss_value}")));
    }
    let grad_norm = match clip_grad {
        Some(max) => clip_grad_norm(&mut grads, max),
        None => clip_grad_norm(&mut grads, f64::INFINITY),
    };
    if !grad_norm.is_finite() {
        return Err(Error::Train(format!("the gradient norm is {grad_norm} (loss {loss_value})")));
    }
    opt.step(params, &grads, lr);
    if let Some(p) = first_non_finite(params) {
        return Err(Error::Train(format!(
            "the update (lr {lr:.3e}, gradient norm {grad_norm:.3e}) left non-finite values in {}",
            p.name
        )));
    }
    Ok(StepOutput { loss: loss_value, correct, grad_norm, reduce })
}

/// The first parameter holding a NaN or an infinity, if any.
fn first_non_finite(params: &ParamStore<f32>) -> Option<&crate::nn::Param<f32>> {
    #[cfg(feature = "cuda")]
    if params.device().is_cuda() {
        // One scalar back per step: the sum of squares (in f64, where no f32 value's square
        // overflows) is finite exactly when every value is; only a broken step looks further.
        let all: Vec<&Tensor<f32>> = params.iter().map(|p| &p.value).collect();
        if autograd::cuda::ops::sum_of_squares(&all).is_finite() {
            return None;
        }
        return params.iter().find(|p| !autograd::cuda::ops::sum_of_squares(&[&p.value]).is_finite());
    }
    params.iter().collect::<Vec<_>>().into_par_iter().find_first(|p| !p.value.data().iter().all(|v| v.is_finite()))
}
