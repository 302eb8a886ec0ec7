//! What keeps the ranks of a data-parallel run replicas of one another, beyond the step's
//! gradient sum: the same run on every rank, the same starting point, and evaluation counts
//! summed.
//!
//! Only rank 0 reads and writes files. It broadcasts the initial parameters (or those it
//! resumed), the optimizer's state and the position, so ranks on other machines need no copy
//! of the checkpoint, and the copies start bit-identical even if their initialisation would
//! have differed.

use super::checkpointing::Position;
use super::metrics::Metrics;
use super::recipe::recipe;
use super::TrainConfig;
use crate::dist::Comm;
use crate::error::{Error, Result};
use crate::nn::ParamStore;
use crate::optim::Optimizer;

/// Checks that every rank runs the same recipe on the same data (a rank started with other
/// flags, or on a machine with another copy of the dataset, would silently train another
/// model): rank 0's description is broadcast and compared everywhere.
pub(crate) fn check_same_run(comm: &Comm, cfg: &TrainConfig, train_len: usize, test_len: usize) -> Result<()> {
    if comm.world_size() == 1 {
        return Ok(());
    }
    let mine = format!(
        "{}\ntraining images: {train_len}, test images: {test_len}",
        serde_json::to_string(&recipe(cfg)).expect("a map of strings serialises")
    );
    let root = comm.broadcast_bytes("comparing the ranks' recipes", mine.clone().into_bytes())?;
    let differs = root != mine.as_bytes();
    let count = comm.sum_f64("comparing the ranks' recipes", vec![f64::from(u8::from(differs))])?[0];
    if count > 0.0 {
        let here = if differs { format!("this rank's differs: {mine}") } else { "this rank agrees with rank 0".into() };
        return Err(Error::Distributed(format!(
            "{count} rank(s) run another recipe or dataset than rank 0 ({here}); start every rank with the same flags \
             and the same data"
        )));
    }
    Ok(())
}

/// Makes every rank's parameters, optimizer state and position rank 0's.
pub(crate) fn broadcast_state(
    comm: &Comm,
    params: &mut ParamStore<f32>,
    opt: &mut dyn Optimizer,
    pos: Position,
) -> Result<Position> {
    if comm.world_size() == 1 {
        return Ok(pos);
    }
    let (state, step) = opt.state(params);
    let mut flat: Vec<f32> = Vec::with_capacity(params.num_elements() * (1 + state.len() / params.len().max(1)));
    for p in params.iter() {
        flat.extend_from_slice(p.value.data());
    }
    for (_, t) in &state {
        flat.extend_from_slice(t.data());
    }
    let flat = comm.broadcast_f32("receiving rank 0's parameters and optimizer state", flat)?;
    let mut head = pos.to_f64s();
    head.push(step as f64);
    let head = comm.broadcast_f64("receiving rank 0's position", head)?;
    if comm.is_root() {
        return Ok(pos);
    }
    let mut offset = 0;
    for p in params.iter_mut() {
        let n = p.value.numel();
        p.value.data_mut().copy_from_slice(&flat[offset..offset + n]);
        offset += n;
    }
    let mut received = std::collections::HashMap::new();
    for (name, t) in state {
        let n = t.numel();
        received.insert(name, autograd::Tensor::from_vec(flat[offset..offset + n].to_vec(), t.shape()));
        offset += n;
    }
    let step = *head.last().expect("the position ends with the optimizer step") as u64;
    opt.load_state(params, step, &mut |name| received.remove(name))?;
    Ok(Position::from_f64s(&head))
}

/// Every rank's evaluation counts summed into each rank's `metrics` (each rank evaluated its
/// own slice of the test set).
pub(crate) fn sum_metrics(comm: &Comm, metrics: Metrics) -> Result<Metrics> {
    if comm.world_size() == 1 {
        return Ok(metrics);
    }
    let mut v: Vec<f64> = metrics.confusion.iter().map(|&c| c as f64).collect();
    v.extend([metrics.top5_correct as f64, metrics.loss_sum, metrics.count as f64, metrics.non_finite as f64]);
    let v = comm.sum_f64("summing the evaluation counts", v)?;
    let c = metrics.confusion.len();
    Ok(Metrics {
        confusion: v[..c].iter().map(|&x| x as u64).collect(),
        top5_correct: v[c] as u64,
        loss_sum: v[c + 1],
        count: v[c + 2] as u64,
        non_finite: v[c + 3] as u64,
        ..metrics
    })
}
