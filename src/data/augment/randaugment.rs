//! RandAugment (Cubuk et al. 2020): fourteen operations, PIL's definitions on pixels in `[0, 1]`.

use autograd::Rng;

use super::{check_len, shift};
use crate::data::ImageShape;

/// RandAugment (Cubuk et al. 2020): `ops` operations drawn uniformly from [`AugOp::ALL`], each
/// at the same magnitude `magnitude` on torchvision's scale 0..=30 (default N=2, M=9).
#[derive(Clone, Debug, PartialEq)]
pub struct RandAugment {
    /// Operations per image (N).
    pub ops: usize,
    /// Magnitude of every operation (M), on the scale 0..=30.
    pub magnitude: f32,
}

impl Default for RandAugment {
    fn default() -> Self {
        RandAugment { ops: 2, magnitude: 9.0 }
    }
}

/// The highest RandAugment magnitude (torchvision's 31 bins, 0..=30).
pub const MAX_MAGNITUDE: f32 = 30.0;

/// The RandAugment operations (torchvision's list, with its magnitude ranges at level 1):
/// geometric ones sample bilinearly and fill with black; colour ones are PIL's definitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AugOp {
    /// Leave the image as it is.
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
    /// Shear along y by up to 0.3.
    ShearY,
    /// Translate by up to 150/331 of the width (integer pixels).
    TranslateX,
    /// Translate by up to 150/331 of the height (integer pixels).
    TranslateY,
}

impl AugOp {
    /// Every operation, in torchvision's order.
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
