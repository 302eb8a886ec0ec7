//! Few-shot linear evaluation (the paper's section 4.1 and Fig. 5 rows): how well a frozen
//! model's representation separates classes it was never fine-tuned on, from a handful of
//! labelled images.
//!
//! For `shots` images per class (drawn with a seed) the evaluator takes the frozen pre-logits
//! features, whitens them with the mean and std of those training features, appends a constant
//! bias feature, and solves the regularised least-squares problem mapping them to `{-1, 1}^K`
//! targets in closed form (see [`ridge`]). The test images' features go through the same
//! whitening and the same `W`; top-1 accuracy is the argmax. This is big_vision's few-shot
//! evaluator (`fewshot_lsr`): `lambda = 2^10` by default and a bias feature of 100, large so
//! that the ridge barely regularises the bias.
//!
//! Several seeds draw several training sets; the report is the mean and spread over them.

pub mod ridge;

use std::collections::BTreeMap;

use autograd::{Graph, Rng, Tensor};

use crate::data::loader::derive_rng;
use crate::data::{Dataset, ImageShape, Loader};
use crate::error::{Error, Result};
use crate::nn::{Ctx, ParamStore, VisionTransformer};

/// big_vision's default ridge strength, `2^10`.
pub const DEFAULT_L2: f64 = 1024.0;
/// The constant appended to every whitened feature vector so that `W`'s last row is the bias.
pub const BIAS_FEATURE: f64 = 100.0;
/// Added to each feature's std before whitening (a feature constant over the shots would
/// otherwise divide by zero).
pub const STD_EPS: f64 = 1e-5;
const SHOTS_STREAM: u64 = 0x7368_6f74; // "shot"

/// What to evaluate: shot counts, how many seeds each, the ridge strength, the batch size of
/// feature extraction.
#[derive(Clone, Debug, PartialEq)]
pub struct FewShotConfig {
    /// Training images per class, one evaluation per count.
    pub shots: Vec<usize>,
    /// Training sets drawn per shot count (seeds `0..seeds`).
    pub seeds: usize,
    /// `lambda` of the ridge.
    pub l2: f64,
    /// Images per forward pass when computing features.
    pub batch_size: usize,
}

impl Default for FewShotConfig {
    /// 1, 5, 10 and 25 shots, 3 seeds, `lambda = 2^10`.
    fn default() -> Self {
        FewShotConfig { shots: vec![1, 5, 10, 25], seeds: 3, l2: DEFAULT_L2, batch_size: 256 }
    }
}

/// The accuracies of one shot count, one per seed.
#[derive(Clone, Debug, PartialEq)]
pub struct FewShotResult {
    /// Training images per class.
    pub shots: usize,
    /// Top-1 test accuracy (in `[0, 1]`) of seed `i`.
    pub accuracies: Vec<f64>,
}

impl FewShotResult {
    /// Mean accuracy over the seeds.
    pub fn mean(&self) -> f64 {
        self.accuracies.iter().sum::<f64>() / self.accuracies.len().max(1) as f64
    }

    /// Sample standard deviation over the seeds (0 for one seed).
    pub fn std(&self) -> f64 {
        let n = self.accuracies.len();
        if n < 2 {
            return 0.0;
        }
        let m = self.mean();
        (self.accuracies.iter().map(|a| (a - m).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    }
}

/// The frozen features `[N, F]` (row-major) of every image of `dataset`, which must have the
/// model's input shape: the representation the head reads ([`VisionTransformer::features`]),
/// computed without a tape.
pub fn features(
    model: &VisionTransformer,
    params: &ParamStore<f32>,
    dataset: &Dataset,
    batch_size: usize,
) -> Result<Vec<f32>> {
    check_input_shape(model, dataset)?;
    let loader = Loader::eval(dataset.clone(), batch_size)?;
    let mut out = Vec::new();
    for batch in loader.epoch(0) {
        let mut g = Graph::inference();
        let p = params.bind(&mut g);
        let x = g.input(Tensor::from_vec(batch.images, &batch.shape));
        let y = model.features(&mut g, &p, x, &mut Ctx::new(&mut Rng::seed(0)));
        out.extend_from_slice(g.value(y).data());
    }
    Ok(out)
}

/// An error unless `dataset`'s images are the model's input (see [`Dataset::to_shape`]).
pub fn check_input_shape(model: &VisionTransformer, dataset: &Dataset) -> Result<()> {
    let c = &model.config;
    let want = ImageShape::new(c.in_chans, c.image_size, c.image_size);
    if dataset.shape() != want {
        return Err(Error::Config(format!("the model takes {want} images, the dataset has {}", dataset.shape())));
    }
    Ok(())
}

/// `shots` training indices per class of `dataset`, drawn without replacement from the class's
/// images by seed `seed`; class by class, in class order. An error if a class has fewer images.
pub fn sample_shots(dataset: &Dataset, shots: usize, seed: u64) -> Result<Vec<usize>> {
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); dataset.classes()];
    for (i, &l) in dataset.labels().iter().enumerate() {
        by_class[l as usize].push(i);
    }
    let mut picked = Vec::with_capacity(shots * by_class.len());
    for (class, mut pool) in by_class.into_iter().enumerate() {
        if pool.len() < shots {
            return Err(Error::Data(format!(
                "class {class} ({}) has {} training images, fewer than {shots} shots",
                dataset.class_names()[class],
                pool.len()
            )));
        }
        // A partial Fisher-Yates shuffle: the first `shots` entries are a uniform sample.
        let mut rng = derive_rng(seed, &[SHOTS_STREAM, class as u64]);
        for i in 0..shots {
            let j = i + rng.below(pool.len() - i);
            pool.swap(i, j);
        }
        picked.extend_from_slice(&pool[..shots]);
    }
    Ok(picked)
}

/// A fitted few-shot classifier: the whitening statistics and the ridge weights `[F + 1, K]`.
#[derive(Clone, Debug)]
pub struct LinearProbe {
    mean: Vec<f64>,
    std: Vec<f64>,
    w: Vec<f64>,
    classes: usize,
}

impl LinearProbe {
    /// Fits the probe to `x` `[N, F]` with `labels` in `0..classes` (see the module docs).
    pub fn fit(x: &[f32], labels: &[usize], classes: usize, l2: f64) -> Result<LinearProbe> {
        let n = labels.len();
        if n == 0 || !x.len().is_multiple_of(n) {
            return Err(Error::Data(format!("{} feature values do not split into {n} images", x.len())));
        }
        let f = x.len() / n;
        let mut mean = vec![0.0f64; f];
        let mut var = vec![0.0f64; f];
        for row in x.chunks(f) {
            row.iter().zip(&mut mean).for_each(|(&v, m)| *m += v as f64 / n as f64);
        }
        for row in x.chunks(f) {
            row.iter().zip(&mean).zip(&mut var).for_each(|((&v, m), s)| *s += (v as f64 - m).powi(2) / n as f64);
        }
        let std: Vec<f64> = var.iter().map(|v| v.sqrt() + STD_EPS).collect();
        let mut probe = LinearProbe { mean, std, w: Vec::new(), classes };
        let xw = probe.whiten(x);
        let mut t = vec![-1.0f64; n * classes];
        for (i, &y) in labels.iter().enumerate() {
            if y >= classes {
                return Err(Error::Data(format!("label {y} of image {i} is out of range: expected 0..{classes}")));
            }
            t[i * classes + y] = 1.0;
        }
        probe.w = ridge::ridge(&xw, n, f + 1, &t, classes, l2)?;
        Ok(probe)
    }

    /// `[(x - mean) / std, BIAS_FEATURE]` per row, as f64.
    fn whiten(&self, x: &[f32]) -> Vec<f64> {
        let f = self.mean.len();
        let mut out = Vec::with_capacity(x.len() / f * (f + 1));
        for row in x.chunks(f) {
            out.extend(row.iter().zip(&self.mean).zip(&self.std).map(|((&v, m), s)| (v as f64 - m) / s));
            out.push(BIAS_FEATURE);
        }
        out
    }

    /// The predicted class of each row of `x` `[M, F]`.
    pub fn predict(&self, x: &[f32]) -> Vec<usize> {
        let (f, k) = (self.mean.len() + 1, self.classes);
        self.whiten(x)
            .chunks(f)
            .map(|row| {
                let score = |c: usize| row.iter().enumerate().map(|(j, v)| v * self.w[j * k + c]).sum::<f64>();
                (0..k).map(|c| (c, score(c))).fold((0, f64::NEG_INFINITY), |b, s| if s.1 > b.1 { s } else { b }).0
            })
            .collect()
    }

    /// Top-1 accuracy on `x` `[M, F]` against `labels`.
    pub fn accuracy(&self, x: &[f32], labels: &[usize]) -> f64 {
        let hits = self.predict(x).iter().zip(labels).filter(|(p, y)| p == y).count();
        hits as f64 / labels.len().max(1) as f64
    }
}

/// Few-shot accuracy of `model`'s frozen features: for each shot count and seed, a probe fitted
/// on `shots` images per class of `train`, scored on all of `test` (both of the model's input
/// shape). Each image's features are computed once.
pub fn evaluate(
    model: &VisionTransformer,
    params: &ParamStore<f32>,
    train: &Dataset,
    test: &Dataset,
    cfg: &FewShotConfig,
) -> Result<Vec<FewShotResult>> {
    if cfg.seeds == 0 || cfg.shots.is_empty() || cfg.shots.contains(&0) {
        return Err(Error::Config(format!(
            "few-shot needs at least one seed and shot counts of at least 1, got --seeds {} and --shots {:?}",
            cfg.seeds, cfg.shots
        )));
    }
    if train.classes() != test.classes() {
        return Err(Error::Data(format!("train has {} classes, test {}", train.classes(), test.classes())));
    }
    let mut draws = Vec::new();
    for &shots in &cfg.shots {
        for seed in 0..cfg.seeds as u64 {
            draws.push((shots, sample_shots(train, shots, seed)?));
        }
    }
    // Every image any draw uses, once: its row in `train_x`.
    let mut rows: BTreeMap<usize, usize> = BTreeMap::new();
    for i in draws.iter().flat_map(|(_, d)| d) {
        let next = rows.len();
        rows.entry(*i).or_insert(next);
    }
    let mut order = vec![0; rows.len()];
    rows.iter().for_each(|(&i, &r)| order[r] = i);
    let train_x = features(model, params, &train.subset(&order)?, cfg.batch_size)?;
    let test_x = features(model, params, test, cfg.batch_size)?;
    let f = train_x.len() / order.len().max(1);
    let test_labels: Vec<usize> = test.labels().iter().map(|&l| l as usize).collect();

    let mut results: Vec<FewShotResult> = Vec::new();
    for (shots, draw) in draws {
        let mut x = Vec::with_capacity(draw.len() * f);
        for i in &draw {
            x.extend_from_slice(&train_x[rows[i] * f..][..f]);
        }
        let labels: Vec<usize> = draw.iter().map(|&i| train.label(i)).collect();
        let acc = LinearProbe::fit(&x, &labels, train.classes(), cfg.l2)?.accuracy(&test_x, &test_labels);
        match results.last_mut() {
            Some(r) if r.shots == shots => r.accuracies.push(acc),
            _ => results.push(FewShotResult { shots, accuracies: vec![acc] }),
        }
    }
    Ok(results)
}
