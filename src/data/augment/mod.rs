//! Data augmentation on `f32` CHW images, one image slice at a time, plus batch-level mixup and
//! cutmix.
//!
//! Small-data ViTs lack the convolutional priors that let CNNs learn CIFAR from crops and flips
//! alone; the paper's successors (DeiT, "How to train your ViT") close the gap with RandAugment,
//! mixup, cutmix and random erasing. Every transform here takes the RNG as an argument, so the
//! loader can give each image its own stream derived from (seed, epoch, index) and the result does
//! not depend on which thread ran it.
//!
//! Pixel transforms work in the *pixel domain*: values in `[0, 1]` (byte / 255), where the
//! RandAugment ops are defined (they mirror PIL's on `u8`: posterize and equalize quantise to the
//! 256 byte levels). Normalisation then maps to the *model domain*, where random erasing writes
//! zeros (the dataset mean). [`augment_image`] runs the whole per-image pipeline in that order:
//! bytes -> `[0, 1]` -> crop -> flip -> RandAugment -> normalise -> erase.
//!
//! One file per kind of transform:
//!
//! - `normalize`: [`Normalization`], pixel domain to model domain and back;
//! - `geometric`: byte conversion, shift / random crop, horizontal flip;
//! - `randaugment`: [`RandAugment`] and its fourteen operations ([`AugOp`]);
//! - `erasing`: [`RandomErasing`];
//! - `mix`: the batch-level mixup and cutmix ([`Mix`], [`mix_batch`]).
//!
//! This file holds what ties them together: the settings ([`AugmentConfig`]) and the per-image
//! pipelines ([`augment_image`] for training, [`prepare_image`] for evaluation).

mod erasing;
mod geometric;
mod mix;
mod normalize;
mod randaugment;

use autograd::Rng;

pub use erasing::{random_erasing, RandomErasing};
pub use geometric::{crop_offset, hflip, random_crop, shift, shift_flip_bytes, to_unit};
pub use mix::{
    cutmix, cutmix_box, cutmix_with, mix_batch, mixup, mixup_with, permutation, plan_mix, sample_beta, CutBox, Mix,
    MixPlan,
};
pub use normalize::Normalization;
pub use randaugment::{apply_op, AugOp, RandAugment, MAX_MAGNITUDE};

use super::ImageShape;
use crate::{Error, Result};

/// Panics unless `img` holds exactly one image of `shape` (a caller's bug, not bad input).
fn check_len(op: &str, img: &[f32], shape: ImageShape) {
    assert_eq!(img.len(), shape.len(), "{op}: image of {} values for shape {shape}", img.len());
}

/// What is done to each training image and to each batch. Eval uses [`AugmentConfig::none`].
#[derive(Clone, Debug, PartialEq)]
pub struct AugmentConfig {
    /// Random crop after zero padding by this many pixels on every side; 0 disables it.
    pub crop_padding: usize,
    /// Horizontal flip with probability 1/2.
    pub hflip: bool,
    /// RandAugment after crop and flip, if any.
    pub randaugment: Option<RandAugment>,
    /// Random erasing after normalisation, if any.
    pub erasing: Option<RandomErasing>,
    /// Beta(alpha, alpha) for mixup's lambda; 0 disables mixup.
    pub mixup_alpha: f32,
    /// Beta(alpha, alpha) for cutmix's lambda; 0 disables cutmix.
    pub cutmix_alpha: f32,
    /// Probability that a batch is mixed at all (when mixup or cutmix is on).
    pub mix_prob: f32,
    /// When both are on: probability of cutmix rather than mixup for a batch.
    pub switch_prob: f32,
}

impl Default for AugmentConfig {
    /// The CIFAR default: random crop with 4 pixels of padding and horizontal flip.
    fn default() -> Self {
        AugmentConfig {
            crop_padding: 4,
            hflip: true,
            randaugment: None,
            erasing: None,
            mixup_alpha: 0.0,
            cutmix_alpha: 0.0,
            mix_prob: 1.0,
            switch_prob: 0.5,
        }
    }
}

impl AugmentConfig {
    /// No augmentation at all (evaluation): bytes -> `[0, 1]` -> normalise.
    pub fn none() -> Self {
        AugmentConfig { crop_padding: 0, hflip: false, ..Default::default() }
    }

    /// The DeiT-style recipe for small-data ViTs: crop + flip, RandAugment(2, 9), mixup 0.8,
    /// cutmix 1.0, random erasing 0.25.
    pub fn strong() -> Self {
        AugmentConfig {
            randaugment: Some(RandAugment::default()),
            erasing: Some(RandomErasing::default()),
            mixup_alpha: 0.8,
            cutmix_alpha: 1.0,
            ..Default::default()
        }
    }

    /// The light default for a dataset: crop + flip for CIFAR, crop with 2 pixels of padding plus
    /// flip for Fashion-MNIST (clothes are left-right symmetric), crop only for MNIST digits.
    pub fn for_dataset(kind: super::DatasetKind) -> Self {
        use super::DatasetKind::*;
        match kind {
            Cifar10 | Cifar100 => AugmentConfig::default(),
            FashionMnist => AugmentConfig { crop_padding: 2, ..Default::default() },
            Mnist => AugmentConfig { crop_padding: 2, hflip: false, ..Default::default() },
        }
    }

    /// True when a batch may be mixed.
    pub fn mixes(&self) -> bool {
        self.mixup_alpha > 0.0 || self.cutmix_alpha > 0.0
    }

    /// Checks the ranges of every setting against an image shape.
    pub fn check(&self, shape: ImageShape) -> Result<()> {
        let prob = |name: &str, p: f32| {
            if (0.0..=1.0).contains(&p) {
                Ok(())
            } else {
                Err(Error::Config(format!("augmentation {name} must be a probability in [0, 1], found {p}")))
            }
        };
        let alpha = |name: &str, a: f32| {
            if a.is_finite() && a >= 0.0 {
                Ok(())
            } else {
                Err(Error::Config(format!("{name} alpha must be >= 0 (0 disables it), found {a}")))
            }
        };
        alpha("mixup", self.mixup_alpha)?;
        alpha("cutmix", self.cutmix_alpha)?;
        prob("mix_prob", self.mix_prob)?;
        prob("switch_prob", self.switch_prob)?;
        if self.crop_padding > shape.h.max(shape.w) {
            return Err(Error::Config(format!(
                "crop padding must be at most the image size {}, found {}",
                shape.h.max(shape.w),
                self.crop_padding
            )));
        }
        if let Some(ra) = &self.randaugment {
            if !(0.0..=MAX_MAGNITUDE).contains(&ra.magnitude) {
                return Err(Error::Config(format!(
                    "RandAugment magnitude must be in 0..={MAX_MAGNITUDE}, found {}",
                    ra.magnitude
                )));
            }
        }
        if let Some(e) = &self.erasing {
            prob("erasing prob", e.prob)?;
            let (a0, a1) = e.area;
            let (r0, r1) = e.aspect;
            if !(0.0 < a0 && a0 <= a1 && a1 <= 1.0 && 0.0 < r0 && r0 <= r1) {
                return Err(Error::Config(format!(
                    "random erasing needs 0 < area min <= area max <= 1 and 0 < aspect min <= aspect max, \
                     found area {:?}, aspect {:?}",
                    e.area, e.aspect
                )));
            }
        }
        Ok(())
    }
}

/// Reusable buffers for [`augment_image`] (one per worker thread), and the byte table of the
/// normalisation last used.
#[derive(Default)]
pub struct Scratch {
    a: Vec<f32>,
    b: Vec<f32>,
    table: Option<(Normalization, Vec<[f32; 256]>)>,
}

impl Scratch {
    /// [`Normalization::byte_table`] of `norm`, built once per worker and normalisation.
    fn table(&mut self, norm: &Normalization) -> &[[f32; 256]] {
        if self.table.as_ref().is_none_or(|(n, _)| n != norm) {
            self.table = Some((norm.clone(), norm.byte_table()));
        }
        &self.table.as_ref().expect("just set").1
    }
}

/// The whole per-image training pipeline, writing the normalised image to `out`:
/// bytes -> `[0, 1]` -> random crop -> flip -> RandAugment -> normalise -> random erasing,
/// each step only if `cfg` enables it. Consumes `rng` in a fixed order, so the same RNG state
/// gives the same image.
///
/// Without RandAugment (which is defined on `[0, 1]` pixels) the bytes go to the model domain in
/// one pass ([`shift_flip_bytes`]): crop, flip and normalisation read each byte once through a
/// table, with the same values as the steps one by one.
pub fn augment_image(
    src: &[u8],
    shape: ImageShape,
    cfg: &AugmentConfig,
    norm: &Normalization,
    rng: &mut Rng,
    out: &mut [f32],
    scratch: &mut Scratch,
) {
    match &cfg.randaugment {
        None => {
            let offset = if cfg.crop_padding > 0 { crop_offset(cfg.crop_padding, rng) } else { (0, 0) };
            let flip = cfg.hflip && rng.below(2) == 1;
            shift_flip_bytes(src, shape, offset, flip, scratch.table(norm), out);
        }
        Some(ra) => {
            to_unit(src, out);
            if cfg.crop_padding > 0 {
                scratch.a.resize(out.len(), 0.0);
                random_crop(out, shape, cfg.crop_padding, rng, &mut scratch.a);
                out.copy_from_slice(&scratch.a);
            }
            if cfg.hflip && rng.below(2) == 1 {
                hflip(out, shape);
            }
            ra.apply(out, shape, rng, &mut scratch.b);
            norm.normalize(out, shape);
        }
    }
    if let Some(e) = &cfg.erasing {
        random_erasing(out, shape, e, rng);
    }
}

/// The evaluation pipeline: bytes -> `[0, 1]` -> normalise.
pub fn prepare_image(src: &[u8], shape: ImageShape, norm: &Normalization, out: &mut [f32]) {
    to_unit(src, out);
    norm.normalize(out, shape);
}
