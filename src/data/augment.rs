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

use rand_distr::{Beta, Distribution};

use autograd::Rng;

use super::ImageShape;
use crate::{Error, Result};

/// Per-channel normalisation statistics of pixels in `[0, 1]`: `x' = (x - mean) / std`.
#[derive(Clone, Debug, PartialEq)]
pub struct Normalization {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalization {
    /// Checks there is one positive, finite std and one finite mean per channel.
    pub fn check(&self, channels: usize) -> Result<()> {
        if self.mean.len() != channels || self.std.len() != channels {
            return Err(Error::Data(format!(
                "normalisation needs one mean and one std per channel: expected {channels}, found {} means \
                 and {} stds",
                self.mean.len(),
                self.std.len()
            )));
        }
        if let Some(s) = self.std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(Error::Data(format!("normalisation std must be finite and > 0, found {s}")));
        }
        if let Some(m) = self.mean.iter().find(|m| !m.is_finite()) {
            return Err(Error::Data(format!("normalisation mean must be finite, found {m}")));
        }
        Ok(())
    }

    /// `x = (x - mean[c]) / std[c]` in place, for one CHW image.
    pub fn normalize(&self, img: &mut [f32], shape: ImageShape) {
        check_len("normalize", img, shape);
        for (c, plane) in img.chunks_exact_mut(shape.plane()).enumerate() {
            let (m, inv) = (self.mean[c], 1.0 / self.std[c]);
            plane.iter_mut().for_each(|v| *v = (*v - m) * inv);
        }
    }

    /// The inverse of [`Normalization::normalize`]: `x = x * std[c] + mean[c]`.
    pub fn denormalize(&self, img: &mut [f32], shape: ImageShape) {
        check_len("denormalize", img, shape);
        for (c, plane) in img.chunks_exact_mut(shape.plane()).enumerate() {
            let (m, s) = (self.mean[c], self.std[c]);
            plane.iter_mut().for_each(|v| *v = *v * s + m);
        }
    }
}

fn check_len(op: &str, img: &[f32], shape: ImageShape) {
    assert_eq!(img.len(), shape.len(), "{op}: image of {} values for shape {shape}", img.len());
}

/// Random erasing (Zhong et al. 2020): with probability `prob`, one rectangle covering a
/// fraction `area` of the image with aspect ratio in `aspect` (sampled log-uniformly) is set to
/// zero in the normalised domain, i.e. to the dataset mean.
#[derive(Clone, Debug, PartialEq)]
pub struct RandomErasing {
    pub prob: f32,
    pub area: (f32, f32),
    pub aspect: (f32, f32),
}

impl Default for RandomErasing {
    /// timm's and torchvision's defaults, with timm's recipe probability 0.25.
    fn default() -> Self {
        RandomErasing { prob: 0.25, area: (0.02, 1.0 / 3.0), aspect: (0.3, 3.3) }
    }
}

/// RandAugment (Cubuk et al. 2020): `ops` operations drawn uniformly from [`AugOp::ALL`], each
/// at the same magnitude `magnitude` on torchvision's scale 0..=30 (default N=2, M=9).
#[derive(Clone, Debug, PartialEq)]
pub struct RandAugment {
    pub ops: usize,
    pub magnitude: f32,
}

impl Default for RandAugment {
    fn default() -> Self {
        RandAugment { ops: 2, magnitude: 9.0 }
    }
}

/// The highest RandAugment magnitude (torchvision's 31 bins, 0..=30).
pub const MAX_MAGNITUDE: f32 = 30.0;

/// What is done to each training image and to each batch. Eval uses [`AugmentConfig::none`].
#[derive(Clone, Debug, PartialEq)]
pub struct AugmentConfig {
    /// Random crop after zero padding by this many pixels on every side; 0 disables it.
    pub crop_padding: usize,
    /// Horizontal flip with probability 1/2.
    pub hflip: bool,
    pub randaugment: Option<RandAugment>,
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

/// Bytes to the pixel domain: `dst = src / 255`.
pub fn to_unit(src: &[u8], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "to_unit: {} bytes into {} floats", src.len(), dst.len());
    dst.iter_mut().zip(src).for_each(|(d, &s)| *d = s as f32 * (1.0 / 255.0));
}

/// `out[c][y][x] = img[c][y + dy][x + dx]`, zero where that falls outside the image.
///
/// This is exactly a crop of the image zero-padded by `p` at offset `(p + dy, p + dx)`, and also
/// an integer translation by `(-dy, -dx)`.
pub fn shift(img: &[f32], shape: ImageShape, dy: isize, dx: isize, out: &mut [f32]) {
    check_len("shift", img, shape);
    check_len("shift", out, shape);
    let (h, w) = (shape.h as isize, shape.w as isize);
    // The columns x of the output whose source column x + dx lies inside the image.
    let x0 = (-dx).clamp(0, w) as usize;
    let x1 = (w - dx).clamp(0, w) as usize;
    for (src, dst) in img.chunks_exact(shape.plane()).zip(out.chunks_exact_mut(shape.plane())) {
        for y in 0..shape.h {
            let row = &mut dst[y * shape.w..(y + 1) * shape.w];
            let sy = y as isize + dy;
            if !(0..h).contains(&sy) || x0 >= x1 {
                row.fill(0.0);
                continue;
            }
            let s = sy as usize * shape.w;
            row[..x0].fill(0.0);
            row[x1..].fill(0.0);
            let sx0 = (x0 as isize + dx) as usize;
            row[x0..x1].copy_from_slice(&src[s + sx0..s + sx0 + (x1 - x0)]);
        }
    }
}

/// Random crop of the zero-padded image (torchvision's `RandomCrop(size, padding=pad)`): the
/// offset is uniform in `-pad..=pad` on each axis. Returns the `(dy, dx)` used (see [`shift`]).
pub fn random_crop(img: &[f32], shape: ImageShape, pad: usize, rng: &mut Rng, out: &mut [f32]) -> (isize, isize) {
    let dy = rng.below(2 * pad + 1) as isize - pad as isize;
    let dx = rng.below(2 * pad + 1) as isize - pad as isize;
    shift(img, shape, dy, dx, out);
    (dy, dx)
}

/// Mirrors the image left-right in place.
pub fn hflip(img: &mut [f32], shape: ImageShape) {
    check_len("hflip", img, shape);
    img.chunks_exact_mut(shape.w).for_each(|row| row.reverse());
}

/// Applies random erasing in place (normalised domain). Returns the erased box
/// `(y, x, height, width)`, or `None` when the coin said no or no box fitted in 10 tries.
pub fn random_erasing(
    img: &mut [f32],
    shape: ImageShape,
    cfg: &RandomErasing,
    rng: &mut Rng,
) -> Option<(usize, usize, usize, usize)> {
    check_len("random_erasing", img, shape);
    if rng.uniform() >= cfg.prob as f64 {
        return None;
    }
    let area = shape.plane() as f64;
    let (lr0, lr1) = ((cfg.aspect.0 as f64).ln(), (cfg.aspect.1 as f64).ln());
    for _ in 0..10 {
        let target = area * lerp(cfg.area.0 as f64, cfg.area.1 as f64, rng.uniform());
        let aspect = lerp(lr0, lr1, rng.uniform()).exp();
        let eh = (target * aspect).sqrt().round() as usize;
        let ew = (target / aspect).sqrt().round() as usize;
        if eh == 0 || ew == 0 || eh >= shape.h || ew >= shape.w {
            continue;
        }
        let y = rng.below(shape.h - eh + 1);
        let x = rng.below(shape.w - ew + 1);
        for plane in img.chunks_exact_mut(shape.plane()) {
            for row in plane.chunks_exact_mut(shape.w).skip(y).take(eh) {
                row[x..x + ew].fill(0.0);
            }
        }
        return Some((y, x, eh, ew));
    }
    None
}

fn lerp(a: f64, b: f64, t: f64) -> f64 {
    a + (b - a) * t
}

/// The RandAugment operations (torchvision's list, with its magnitude ranges at level 1):
/// geometric ones sample bilinearly and fill with black; colour ones are PIL's definitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AugOp {
    Identity,
    /// Stretch each channel to the full range `[0, 1]`.
    AutoContrast,
    /// Histogram equalisation per channel, PIL's algorithm on the 256 byte levels.
    Equalize,
    /// Rotate by up to 30 degrees about the centre.
    Rotate,
    /// Invert pixels at or above a threshold going from 1 (level 0) down to 0 (level 1).
    Solarize,
    /// Saturation: blend with the greyscale image by a factor 1 +- 0.9.
    Color,
    /// Keep from 8 (level 0) down to 4 (level 1) bits per byte.
    Posterize,
    /// Blend with the mean grey level by a factor 1 +- 0.9.
    Contrast,
    /// Blend with black by a factor 1 +- 0.9.
    Brightness,
    /// Blend with PIL's smoothed image by a factor 1 +- 0.9.
    Sharpness,
    /// Shear along x by up to 0.3.
    ShearX,
    ShearY,
    /// Translate by up to 150/331 of the width (integer pixels).
    TranslateX,
    TranslateY,
}

impl AugOp {
    pub const ALL: [AugOp; 14] = [
        AugOp::Identity,
        AugOp::AutoContrast,
        AugOp::Equalize,
        AugOp::Rotate,
        AugOp::Solarize,
        AugOp::Color,
        AugOp::Posterize,
        AugOp::Contrast,
        AugOp::Brightness,
        AugOp::Sharpness,
        AugOp::ShearX,
        AugOp::ShearY,
        AugOp::TranslateX,
        AugOp::TranslateY,
    ];
}

impl RandAugment {
    /// Applies `ops` random operations in place to a pixel-domain image (values in `[0, 1]`),
    /// each with a random sign for the signed ones. `scratch` is reused between calls.
    pub fn apply(&self, img: &mut [f32], shape: ImageShape, rng: &mut Rng, scratch: &mut Vec<f32>) {
        let level = (self.magnitude / MAX_MAGNITUDE).clamp(0.0, 1.0);
        for _ in 0..self.ops {
            let op = AugOp::ALL[rng.below(AugOp::ALL.len())];
            let negate = rng.below(2) == 1;
            apply_op(op, level, negate, img, shape, scratch);
        }
    }
}

/// Applies one RandAugment operation at `level` in `[0, 1]` (its signed magnitudes negated if
/// `negate`) in place to a pixel-domain image. Outputs stay in `[0, 1]`.
pub fn apply_op(op: AugOp, level: f32, negate: bool, img: &mut [f32], shape: ImageShape, scratch: &mut Vec<f32>) {
    check_len("apply_op", img, shape);
    let sign = if negate { -1.0 } else { 1.0 };
    let factor = 1.0 + sign * 0.9 * level;
    match op {
        AugOp::Identity => {}
        AugOp::AutoContrast => autocontrast(img, shape),
        AugOp::Equalize => equalize(img, shape),
        AugOp::Rotate => {
            let (s, c) = (sign * 30.0 * level).to_radians().sin_cos();
            affine(img, shape, [c, -s, s, c], scratch);
        }
        AugOp::Solarize => {
            let threshold = 1.0 - level;
            img.iter_mut().for_each(|v| {
                if *v >= threshold {
                    *v = 1.0 - *v
                }
            });
        }
        AugOp::Color => {
            let grey = greyscale(img, shape);
            for plane in img.chunks_exact_mut(shape.plane()) {
                plane.iter_mut().zip(&grey).for_each(|(v, g)| *v = blend(*g, *v, factor));
            }
        }
        AugOp::Posterize => {
            let bits = 8 - (4.0 * level).round() as u32;
            let mask = (0xffu32 << (8 - bits)) as u8;
            img.iter_mut().for_each(|v| *v = (to_byte(*v) & mask) as f32 / 255.0);
        }
        AugOp::Contrast => {
            let grey = greyscale(img, shape);
            let mean = grey.iter().sum::<f32>() / grey.len() as f32;
            img.iter_mut().for_each(|v| *v = blend(mean, *v, factor));
        }
        AugOp::Brightness => img.iter_mut().for_each(|v| *v = blend(0.0, *v, factor)),
        AugOp::Sharpness => sharpness(img, shape, factor, scratch),
        AugOp::ShearX => affine(img, shape, [1.0, sign * 0.3 * level, 0.0, 1.0], scratch),
        AugOp::ShearY => affine(img, shape, [1.0, 0.0, sign * 0.3 * level, 1.0], scratch),
        AugOp::TranslateX | AugOp::TranslateY => {
            let (dy, dx) = if op == AugOp::TranslateX {
                (0, (sign * level * 150.0 / 331.0 * shape.w as f32).round() as isize)
            } else {
                ((sign * level * 150.0 / 331.0 * shape.h as f32).round() as isize, 0)
            };
            scratch.resize(img.len(), 0.0);
            shift(img, shape, dy, dx, scratch);
            img.copy_from_slice(scratch);
        }
    }
}

/// A pixel-domain value to its byte level.
fn to_byte(v: f32) -> u8 {
    (v * 255.0).round().clamp(0.0, 255.0) as u8
}

/// PIL's `Image.blend(degenerate, img, factor)`, clamped to `[0, 1]`.
fn blend(degenerate: f32, v: f32, factor: f32) -> f32 {
    (degenerate + factor * (v - degenerate)).clamp(0.0, 1.0)
}

/// One greyscale plane: ITU-R 601 luma (PIL's "L") for 3 channels, the mean otherwise.
fn greyscale(img: &[f32], shape: ImageShape) -> Vec<f32> {
    let p = shape.plane();
    if shape.c == 3 {
        (0..p).map(|i| 0.299 * img[i] + 0.587 * img[p + i] + 0.114 * img[2 * p + i]).collect()
    } else {
        let inv = 1.0 / shape.c as f32;
        (0..p).map(|i| (0..shape.c).map(|c| img[c * p + i]).sum::<f32>() * inv).collect()
    }
}

fn autocontrast(img: &mut [f32], shape: ImageShape) {
    for plane in img.chunks_exact_mut(shape.plane()) {
        let lo = plane.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = plane.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if hi > lo {
            let scale = 1.0 / (hi - lo);
            plane.iter_mut().for_each(|v| *v = ((*v - lo) * scale).clamp(0.0, 1.0));
        }
    }
}

/// PIL's `ImageOps.equalize` per channel: a lookup table from the cumulative histogram of the
/// byte levels, with the last occupied level left out of the step so the top stays reachable.
fn equalize(img: &mut [f32], shape: ImageShape) {
    for plane in img.chunks_exact_mut(shape.plane()) {
        let mut hist = [0usize; 256];
        plane.iter().for_each(|&v| hist[to_byte(v) as usize] += 1);
        let last = hist.iter().rev().find(|&&h| h > 0).copied().unwrap_or(0);
        let step = (plane.len() - last) / 255;
        if step == 0 {
            continue;
        }
        let mut lut = [0f32; 256];
        let mut n = step / 2;
        for (l, h) in lut.iter_mut().zip(hist) {
            *l = (n / step).min(255) as f32 / 255.0;
            n += h;
        }
        plane.iter_mut().for_each(|v| *v = lut[to_byte(*v) as usize]);
    }
}

/// PIL's `ImageEnhance.Sharpness`: blend with the image smoothed by the 3x3 kernel
/// [[1,1,1],[1,5,1],[1,1,1]] / 13, whose border pixels are left as they are.
fn sharpness(img: &mut [f32], shape: ImageShape, factor: f32, scratch: &mut Vec<f32>) {
    let (h, w) = (shape.h, shape.w);
    if h < 3 || w < 3 {
        return;
    }
    scratch.clear();
    scratch.extend_from_slice(img);
    for (plane, src) in img.chunks_exact_mut(shape.plane()).zip(scratch.chunks_exact(shape.plane())) {
        for y in 1..h - 1 {
            for x in 1..w - 1 {
                let mut s = 4.0 * src[y * w + x];
                for yy in y - 1..=y + 1 {
                    s += src[yy * w + x - 1] + src[yy * w + x] + src[yy * w + x + 1];
                }
                plane[y * w + x] = blend(s / 13.0, src[y * w + x], factor);
            }
        }
    }
}

/// Resamples the image in place through the linear map `m = [a, b, c, d]` about the image centre:
/// output pixel `p` takes the bilinear sample at `centre + [[a, b], [c, d]] (p - centre)` of the
/// input, with black outside. An identity map reproduces the image exactly.
fn affine(img: &mut [f32], shape: ImageShape, m: [f32; 4], scratch: &mut Vec<f32>) {
    let (h, w) = (shape.h, shape.w);
    let (cy, cx) = ((h as f32 - 1.0) / 2.0, (w as f32 - 1.0) / 2.0);
    scratch.clear();
    scratch.extend_from_slice(img);
    let at = |src: &[f32], y: isize, x: isize| {
        if y < 0 || x < 0 || y >= h as isize || x >= w as isize {
            0.0
        } else {
            src[y as usize * w + x as usize]
        }
    };
    for (plane, src) in img.chunks_exact_mut(shape.plane()).zip(scratch.chunks_exact(shape.plane())) {
        for y in 0..h {
            for x in 0..w {
                let (px, py) = (x as f32 - cx, y as f32 - cy);
                let sx = cx + m[0] * px + m[1] * py;
                let sy = cy + m[2] * px + m[3] * py;
                let (x0, y0) = (sx.floor(), sy.floor());
                let (fx, fy) = (sx - x0, sy - y0);
                let (x0, y0) = (x0 as isize, y0 as isize);
                let top = at(src, y0, x0) * (1.0 - fx) + at(src, y0, x0 + 1) * fx;
                let bottom = at(src, y0 + 1, x0) * (1.0 - fx) + at(src, y0 + 1, x0 + 1) * fx;
                plane[y * w + x] = (top * (1.0 - fy) + bottom * fy).clamp(0.0, 1.0);
            }
        }
    }
}

/// Reusable buffers for [`augment_image`] (one per worker thread).
#[derive(Default)]
pub struct Scratch {
    a: Vec<f32>,
    b: Vec<f32>,
}

/// The whole per-image training pipeline, writing the normalised image to `out`:
/// bytes -> `[0, 1]` -> random crop -> flip -> RandAugment -> normalise -> random erasing,
/// each step only if `cfg` enables it. Consumes `rng` in a fixed order, so the same RNG state
/// gives the same image.
pub fn augment_image(
    src: &[u8],
    shape: ImageShape,
    cfg: &AugmentConfig,
    norm: &Normalization,
    rng: &mut Rng,
    out: &mut [f32],
    scratch: &mut Scratch,
) {
    to_unit(src, out);
    if cfg.crop_padding > 0 {
        scratch.a.resize(out.len(), 0.0);
        random_crop(out, shape, cfg.crop_padding, rng, &mut scratch.a);
        out.copy_from_slice(&scratch.a);
    }
    if cfg.hflip && rng.below(2) == 1 {
        hflip(out, shape);
    }
    if let Some(ra) = &cfg.randaugment {
        ra.apply(out, shape, rng, &mut scratch.b);
    }
    norm.normalize(out, shape);
    if let Some(e) = &cfg.erasing {
        random_erasing(out, shape, e, rng);
    }
}

/// The evaluation pipeline: bytes -> `[0, 1]` -> normalise.
pub fn prepare_image(src: &[u8], shape: ImageShape, norm: &Normalization, out: &mut [f32]) {
    to_unit(src, out);
    norm.normalize(out, shape);
}

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
        let other = &orig[perm[i] * n..(perm[i] + 1) * n];
        img.iter_mut().zip(other).for_each(|(a, b)| *a = lambda * *a + (1.0 - lambda) * b);
    }
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
    pub y0: usize,
    pub y1: usize,
    pub x0: usize,
    pub x1: usize,
}

impl CutBox {
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
        let other = &orig[perm[i] * n..(perm[i] + 1) * n];
        for c in 0..shape.c {
            for y in b.y0..b.y1 {
                let row = c * shape.plane() + y * shape.w;
                img[row + b.x0..row + b.x1].copy_from_slice(&other[row + b.x0..row + b.x1]);
            }
        }
    }
    1.0 - b.area() as f32 / shape.plane() as f32
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

/// The batch-level step of [`AugmentConfig`]: with probability `mix_prob`, mixup or cutmix
/// (chosen by `switch_prob` when both are on). `None` when the batch is left unmixed.
pub fn mix_batch(
    images: &mut [f32],
    shape: ImageShape,
    labels: &[usize],
    cfg: &AugmentConfig,
    rng: &mut Rng,
) -> Option<Mix> {
    if !cfg.mixes() || labels.is_empty() || rng.uniform() >= cfg.mix_prob as f64 {
        return None;
    }
    let use_cutmix = match (cfg.mixup_alpha > 0.0, cfg.cutmix_alpha > 0.0) {
        (true, true) => rng.uniform() < cfg.switch_prob as f64,
        (false, true) => true,
        _ => false,
    };
    Some(if use_cutmix {
        cutmix(images, shape, labels, cfg.cutmix_alpha, rng).0
    } else {
        mixup(images, shape, labels, cfg.mixup_alpha, rng)
    })
}
