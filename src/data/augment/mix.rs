//! Batch-level mixing: mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019).

use rand_distr::{Beta, Distribution};

use autograd::Rng;

use super::AugmentConfig;
use crate::data::ImageShape;

/// How a batch was mixed: the loss is `lambda * CE(labels) + (1 - lambda) * CE(labels_b)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Mix {
    /// The labels of the images mixed in, `labels[perm[i]]`.
    pub labels_b: Vec<usize>,
    /// The weight of the batch's own labels, in `[0, 1]`.
    pub lambda: f32,
}

/// A uniformly random permutation of `0..n` (Fisher-Yates).
pub fn permutation(n: usize, rng: &mut Rng) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        p.swap(i, rng.below(i + 1));
    }
    p
}

/// A Beta(alpha, alpha) sample (alpha > 0).
pub fn sample_beta(alpha: f32, rng: &mut Rng) -> f32 {
    let beta = Beta::new(alpha as f64, alpha as f64).expect("sample_beta: alpha must be > 0");
    (beta.sample(rng) as f32).clamp(0.0, 1.0)
}

/// Mixup with a given pairing and weight: `x_i = lambda x_i + (1 - lambda) x_perm[i]`, in place
/// over a batch of `perm.len()` images.
pub fn mixup_with(images: &mut [f32], shape: ImageShape, perm: &[usize], lambda: f32) {
    let n = shape.len();
    assert_eq!(images.len(), perm.len() * n, "mixup: {} values for {} images of {shape}", images.len(), perm.len());
    let orig = images.to_vec();
    for (i, img) in images.chunks_exact_mut(n).enumerate() {
        mixup_one(img, &orig[perm[i] * n..(perm[i] + 1) * n], lambda);
    }
}

/// One image of mixup: `own <- lambda own + (1 - lambda) other`.
fn mixup_one(own: &mut [f32], other: &[f32], lambda: f32) {
    own.iter_mut().zip(other).for_each(|(a, b)| *a = lambda * *a + (1.0 - lambda) * b);
}

/// Mixup (Zhang et al. 2018): lambda ~ Beta(alpha, alpha), a random pairing; in place.
pub fn mixup(images: &mut [f32], shape: ImageShape, labels: &[usize], alpha: f32, rng: &mut Rng) -> Mix {
    let lambda = sample_beta(alpha, rng);
    let perm = permutation(labels.len(), rng);
    mixup_with(images, shape, &perm, lambda);
    Mix { labels_b: perm.iter().map(|&p| labels[p]).collect(), lambda }
}

/// A cutmix rectangle: rows `y0..y1`, columns `x0..x1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CutBox {
    /// First row.
    pub y0: usize,
    /// One past the last row.
    pub y1: usize,
    /// First column.
    pub x0: usize,
    /// One past the last column.
    pub x1: usize,
}

impl CutBox {
    /// Pixels in the box.
    pub fn area(&self) -> usize {
        (self.y1 - self.y0) * (self.x1 - self.x0)
    }
}

/// The cutmix box for a target `lambda`: sides `sqrt(1 - lambda)` of the image's (rounded down),
/// centred at a uniform pixel, clipped to the image (so its area can be smaller than
/// `1 - lambda` asks; [`cutmix_with`] corrects lambda for that).
pub fn cutmix_box(shape: ImageShape, lambda: f32, rng: &mut Rng) -> CutBox {
    let cut = (1.0 - lambda as f64).clamp(0.0, 1.0).sqrt();
    let (ch, cw) = ((shape.h as f64 * cut) as isize, (shape.w as f64 * cut) as isize);
    let (cy, cx) = (rng.below(shape.h) as isize, rng.below(shape.w) as isize);
    let (y0, x0) = (cy - ch / 2, cx - cw / 2);
    let clip = |v: isize, hi: usize| v.clamp(0, hi as isize) as usize;
    CutBox { y0: clip(y0, shape.h), y1: clip(y0 + ch, shape.h), x0: clip(x0, shape.w), x1: clip(x0 + cw, shape.w) }
}

/// Pastes the box of image `perm[i]` into image `i`, in place, and returns the corrected
/// lambda `1 - box area / image area`: the fraction of each image that is still its own.
pub fn cutmix_with(images: &mut [f32], shape: ImageShape, perm: &[usize], b: CutBox) -> f32 {
    let n = shape.len();
    assert_eq!(images.len(), perm.len() * n, "cutmix: {} values for {} images of {shape}", images.len(), perm.len());
    let orig = images.to_vec();
    for (i, img) in images.chunks_exact_mut(n).enumerate() {
        paste_box(img, &orig[perm[i] * n..(perm[i] + 1) * n], shape, b);
    }
    1.0 - b.area() as f32 / shape.plane() as f32
}

/// One image of cutmix: `other`'s box pasted into `own`.
fn paste_box(own: &mut [f32], other: &[f32], shape: ImageShape, b: CutBox) {
    for c in 0..shape.c {
        for y in b.y0..b.y1 {
            let row = c * shape.plane() + y * shape.w;
            own[row + b.x0..row + b.x1].copy_from_slice(&other[row + b.x0..row + b.x1]);
        }
    }
}

/// CutMix (Yun et al. 2019): lambda ~ Beta(alpha, alpha) sets the box size, a random pairing;
/// in place. The returned lambda is corrected for the clipped box area. Also returns the box.
pub fn cutmix(images: &mut [f32], shape: ImageShape, labels: &[usize], alpha: f32, rng: &mut Rng) -> (Mix, CutBox) {
    let lambda = sample_beta(alpha, rng);
    let b = cutmix_box(shape, lambda, rng);
    let perm = permutation(labels.len(), rng);
    let lambda = cutmix_with(images, shape, &perm, b);
    (Mix { labels_b: perm.iter().map(|&p| labels[p]).collect(), lambda }, b)
}

/// How a batch is mixed, drawn before any image is touched, so that a process holding only
/// some rows of a batch (a data-parallel shard) mixes them exactly as the whole batch would be:
/// row `i` with row `perm[i]`, by mixup with weight `lambda` or by pasting `cut`.
#[derive(Clone, Debug, PartialEq)]
pub struct MixPlan {
    /// The partner of each row of the batch.
    pub perm: Vec<usize>,
    /// The weight of each image's own labels (for cutmix, corrected for the box's clipped area).
    pub lambda: f32,
    /// CutMix's box; `None` for mixup.
    pub cut: Option<CutBox>,
}

impl MixPlan {
    /// Mixes one image (`own`, at a row whose partner's image is `partner`), in place.
    pub fn apply(&self, own: &mut [f32], partner: &[f32], shape: ImageShape) {
        match self.cut {
            Some(b) => paste_box(own, partner, shape, b),
            None => mixup_one(own, partner, self.lambda),
        }
    }

    /// The loss's view of the mixing for the rows `rows` of the batch whose labels are `labels`.
    pub fn mix(&self, labels: &[usize], rows: std::ops::Range<usize>) -> Mix {
        Mix { labels_b: self.perm[rows].iter().map(|&p| labels[p]).collect(), lambda: self.lambda }
    }
}

/// The batch-level step of [`AugmentConfig`] for a batch of `n` images, planned: with
/// probability `mix_prob`, mixup or cutmix (chosen by `switch_prob` when both are on). `None`
/// when the batch is left unmixed. Draws from `rng` exactly as [`mix_batch`] does.
pub fn plan_mix(n: usize, shape: ImageShape, cfg: &AugmentConfig, rng: &mut Rng) -> Option<MixPlan> {
    if !cfg.mixes() || n == 0 || rng.uniform() >= cfg.mix_prob as f64 {
        return None;
    }
    let use_cutmix = match (cfg.mixup_alpha > 0.0, cfg.cutmix_alpha > 0.0) {
        (true, true) => rng.uniform() < cfg.switch_prob as f64,
        (false, true) => true,
        _ => false,
    };
    Some(if use_cutmix {
        let b = cutmix_box(shape, sample_beta(cfg.cutmix_alpha, rng), rng);
        let perm = permutation(n, rng);
        MixPlan { perm, lambda: 1.0 - b.area() as f32 / shape.plane() as f32, cut: Some(b) }
    } else {
        let lambda = sample_beta(cfg.mixup_alpha, rng);
        MixPlan { perm: permutation(n, rng), lambda, cut: None }
    })
}

/// The batch-level step of [`AugmentConfig`]: with probability `mix_prob`, mixup or cutmix
/// (chosen by `switch_prob` when both are on), in place. `None` when the batch is left unmixed.
pub fn mix_batch(
    images: &mut [f32],
    shape: ImageShape,
    labels: &[usize],
    cfg: &AugmentConfig,
    rng: &mut Rng,
) -> Option<Mix> {
    let plan = plan_mix(labels.len(), shape, cfg, rng)?;
    let n = shape.len();
    let orig = images.to_vec();
    for (img, &p) in images.chunks_exact_mut(n).zip(&plan.perm) {
        plan.apply(img, &orig[p * n..(p + 1) * n], shape);
    }
    Some(plan.mix(labels, 0..labels.len()))
}
