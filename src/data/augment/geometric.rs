//! Byte conversion and the geometric transforms of the light recipe: shift (random crop) and flip.

use autograd::Rng;

use super::check_len;
use crate::data::ImageShape;

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
