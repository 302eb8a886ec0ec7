//! Evaluation: accuracy, loss and confusion over a dataset, in inference mode.

use autograd::{Device, Graph, Rng, Tensor};

use super::metrics::Metrics;
use crate::data::Loader;
use crate::nn::{Ctx, Module, ParamStore, VisionTransformer};

/// Logits `[B, classes]` for a batch of normalised images `[B, C, H, W]`: no tape recorded,
/// dropout off. The forward runs where the parameters live; the logits come back to the host.
pub fn predict_logits(
    model: &VisionTransformer,
    params: &ParamStore<f32>,
    images: Vec<f32>,
    shape: &[usize],
) -> Tensor<f32> {
    let mut g = Graph::inference();
    let p = params.bind(&mut g);
    let device = params.device();
    // The parameters are on `device`, so it is open: a transfer failing now is a broken device.
    let moved = |t: &Tensor<f32>, to| t.to(to).unwrap_or_else(|e| panic!("{device}: {e}"));
    let x = g.input(moved(&Tensor::from_vec(images, shape), device));
    let logits = model.forward(&mut g, &p, x, &mut Ctx::new(&mut Rng::seed(0)));
    moved(g.value(logits), Device::Cpu)
}

/// Runs the model over every batch of `loader` (an evaluation loader) and accumulates metrics;
/// the loss is plain cross-entropy (no smoothing).
pub fn evaluate(model: &VisionTransformer, params: &ParamStore<f32>, loader: &Loader) -> Metrics {
    evaluate_until(model, params, loader, || false).expect("never stopped")
}

/// [`evaluate`], giving up (`None`) as soon as `stop` says so between two batches.
pub fn evaluate_until(
    model: &VisionTransformer,
    params: &ParamStore<f32>,
    loader: &Loader,
    stop: impl Fn() -> bool,
) -> Option<Metrics> {
    let classes = model.config.num_classes;
    let mut metrics = Metrics::new(classes);
    for batch in loader.epoch(0) {
        if stop() {
            return None;
        }
        let logits = predict_logits(model, params, batch.images, &batch.shape);
        let loss = mean_cross_entropy(logits.data(), &batch.labels, classes);
        metrics.add_batch(logits.data(), &batch.labels, loss);
    }
    Some(metrics)
}

/// `-mean_i log softmax(logits_i)[y_i]`, computed stably in f64.
fn mean_cross_entropy(logits: &[f32], labels: &[usize], classes: usize) -> f64 {
    let total: f64 = logits
        .chunks(classes)
        .zip(labels)
        .map(|(row, &y)| {
            let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
            let lse = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
            lse - row[y] as f64
        })
        .sum();
    total / labels.len().max(1) as f64
}
