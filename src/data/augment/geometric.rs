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
    let (dy, dx) = crop_offset(pad, rng);
    shift(img, shape, dy, dx, out);
    (dy, dx)
}

/// The offset of a random crop with padding `pad`: `(dy, dx)`, each uniform in `-pad..=pad`,
/// drawn in that order.
pub fn crop_offset(pad: usize, rng: &mut Rng) -> (isize, isize) {
    let dy = rng.below(2 * pad + 1) as isize - pad as isize;
    let dx = rng.below(2 * pad + 1) as isize - pad as isize;
    (dy, dx)
}

/// Mirrors the image left-right in place.
pub fn hflip(img: &mut [f32], shape: ImageShape) {
    check_len("hflip", img, shape);
    img.chunks_exact_mut(shape.w).for_each(|row| row.reverse());
}

/// The light recipe in one pass from bytes: `out[c][y][x] = table[c][img[c][y + dy][x']]` with
/// `x' = x + dx`, or `x' = w - 1 - x + dx` when `flip`, and `table[c][0]` (the zero of the
/// padding, normalised) where that falls outside the image. The same values as [`to_unit`],
/// [`shift`], [`hflip`] and normalisation one after the other, in one write of `out` instead of
/// five passes.
pub fn shift_flip_bytes(
    img: &[u8],
    shape: ImageShape,
    (dy, dx): (isize, isize),
    flip: bool,
    table: &[[f32; 256]],
    out: &mut [f32],
) {
    assert_eq!(img.len(), shape.len(), "shift_flip_bytes: image of {} bytes for shape {shape}", img.len());
    check_len("shift_flip_bytes", out, shape);
    assert_eq!(table.len(), shape.c, "shift_flip_bytes: {} tables for {} channels", table.len(), shape.c);
    let (h, w) = (shape.h as isize, shape.w as isize);
    let x0 = (-dx).clamp(0, w) as usize;
    let x1 = (w - dx).clamp(0, w) as usize;
    let planes = img.chunks_exact(shape.plane()).zip(out.chunks_exact_mut(shape.plane()));
    for ((src, dst), lut) in planes.zip(table) {
        let zero = lut[0];
        for y in 0..shape.h {
            let row = &mut dst[y * shape.w..(y + 1) * shape.w];
            let sy = y as isize + dy;
            if !(0..h).contains(&sy) || x0 >= x1 {
                row.fill(zero);
                continue;
            }
            // Unflipped, columns x0..x1 read source columns x0 + dx..x1 + dx; flipped, output
            // column x holds the unflipped column w - 1 - x.
            let s = &src[sy as usize * shape.w..][..shape.w];
            let inside = &s[(x0 as isize + dx) as usize..(x1 as isize + dx) as usize];
            let (lo, hi) = if flip { (shape.w - x1, shape.w - x0) } else { (x0, x1) };
            row[..lo].fill(zero);
            row[hi..].fill(zero);
            if flip {
                row[lo..hi].iter_mut().zip(inside.iter().rev()).for_each(|(d, &b)| *d = lut[b as usize]);
            } else {
                row[lo..hi].iter_mut().zip(inside).for_each(|(d, &b)| *d = lut[b as usize]);
            }
        }
    }
}
