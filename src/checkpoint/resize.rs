//! Resizing the position embedding for another image size or patch grid (paper section 3.2).
//!
//! "When feeding images of higher resolution, we keep the patch size the same, which results in a
//! larger effective sequence length. [...] We therefore perform 2D interpolation of the
//! pre-trained position embeddings, according to their location in the original image."
//!
//! ```text
//!     pos_embed [1, prefix + Gh*Gw, D] --split--> class slot(s) [1, prefix, D]   (kept as they are)
//!                                                 patch part [Gh, Gw, D] --interpolate--> [Gh', Gw', D]
//!                                       --concat--> [1, prefix + Gh'*Gw', D]
//! ```
//!
//! The interpolation is PyTorch's `F.interpolate(x, size=(Gh', Gw'), align_corners=False)` (what
//! timm calls on the `[1, D, Gh, Gw]` grid), separable along each axis. Output index `o` samples
//! the input at `s = (o + 0.5) * in / out - 0.5`:
//!
//! - bilinear: `s` clamped below at 0, `i = floor(s)`, `t = s - i`, weights `(1 - t, t)` on
//!   `(i, min(i + 1, in - 1))`;
//! - bicubic (Keys' kernel, `a = -0.75` as PyTorch): `i = floor(s)`, `t = s - i`, weights
//!   `W(t + 1), W(t), W(1 - t), W(2 - t)` on `i - 1 .. i + 2` with indices clamped to `[0, in-1]`,
//!   `W(x) = (a+2)|x|^3 - (a+3)|x|^2 + 1` for `|x| <= 1`, `a|x|^3 - 5a|x|^2 + 8a|x| - 4a` for
//!   `1 < |x| < 2`.
//!
//! The antialiased forms are PyTorch's `antialias=True` (Pillow's resampling): the kernel (the
//! triangle, or Keys' with `a = -0.5`) is centred at `c = (o + 0.5) * in / out`, stretched by
//! `in / out` when downsampling, evaluated at the input centres `j + 0.5` inside its support, and
//! the weights divided by their sum (so at the borders they renormalise instead of clamping).
//! timm's `resample_abs_pos_embed`, and hence its `checkpoint_filter_fn`, defaults to the
//! antialiased bicubic: use [`Interpolation::BicubicAntialias`] to match a timm model loaded at
//! another resolution (it differs from the plain bicubic by up to ~7% of the embedding's scale
//! near the borders, 14x14 -> 24x24).
//!
//! Weights are computed and applied in f64; resizing to the same size is the identity exactly.

use autograd::{Float, Tensor};

use crate::error::{Error, Result};

/// How the patch part of the position embedding is resampled (PyTorch's `F.interpolate` modes,
/// `align_corners=False`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interpolation {
    /// `mode='bilinear'`.
    Bilinear,
    /// `mode='bicubic'`: Keys' kernel with `a = -0.75`, border indices clamped.
    Bicubic,
    /// `mode='bilinear', antialias=True`.
    BilinearAntialias,
    /// `mode='bicubic', antialias=True`: Keys' kernel with `a = -0.5`, weights renormalised at
    /// the borders. timm's default when it resamples `pos_embed`.
    BicubicAntialias,
}

/// The taps of one output position along one axis: up to 4 `(input index, weight)` pairs.
type Taps = Vec<(usize, f64)>;

/// PyTorch's `upsample_bicubic2d` coefficient constant.
const CUBIC_A: f64 = -0.75;

/// The cubic constant of PyTorch's (and Pillow's) antialiased bicubic filter.
const CUBIC_A_ANTIALIAS: f64 = -0.5;

/// Keys' cubic convolution kernel for `|x| <= 1`.
fn cubic1(x: f64, a: f64) -> f64 {
    ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
}

/// Keys' cubic convolution kernel for `1 < |x| < 2`.
fn cubic2(x: f64, a: f64) -> f64 {
    ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
}

/// The antialiasing filters: the triangle, and Keys' kernel with `a = -0.5`.
fn triangle(x: f64) -> f64 {
    (1.0 - x.abs()).max(0.0)
}

fn keys_antialias(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        cubic1(x, CUBIC_A_ANTIALIAS)
    } else if x < 2.0 {
        cubic2(x, CUBIC_A_ANTIALIAS)
    } else {
        0.0
    }
}

/// The taps of an antialiased resampling (PyTorch's `_compute_index_ranges_weights`): `filter`
/// of half-width `support` centred at `(o + 0.5) * scale`, stretched by `scale` when
/// downsampling, normalised to sum one.
fn antialias_taps(len_in: usize, scale: f64, o: usize, support: f64, filter: fn(f64) -> f64) -> Taps {
    let (support, inv) = if scale >= 1.0 { (support * scale, 1.0 / scale) } else { (support, 1.0) };
    let center = scale * (o as f64 + 0.5);
    // C++'s truncating casts, as PyTorch computes the range.
    let lo = ((center - support + 0.5) as i64).max(0) as usize;
    let hi = ((center + support + 0.5) as i64).clamp(0, len_in as i64) as usize;
    let mut taps: Taps = (lo..hi).map(|j| (j, filter((j as f64 - center + 0.5) * inv))).collect();
    let total: f64 = taps.iter().map(|t| t.1).sum();
    if total != 0.0 {
        taps.iter_mut().for_each(|t| t.1 /= total);
    }
    taps
}

/// The taps of every output position along an axis of `len_in` inputs and `len_out` outputs.
fn axis_taps(len_in: usize, len_out: usize, mode: Interpolation) -> Vec<Taps> {
    let scale = len_in as f64 / len_out as f64;
    (0..len_out)
        .map(|o| {
            let s = (o as f64 + 0.5) * scale - 0.5;
            match mode {
                Interpolation::Bilinear => {
                    let s = s.max(0.0);
                    let i = s.floor() as usize;
                    let t = s - i as f64;
                    let i = i.min(len_in - 1);
                    vec![(i, 1.0 - t), ((i + 1).min(len_in - 1), t)]
                }
                Interpolation::Bicubic => {
                    let f = s.floor();
                    let t = s - f;
                    let a = CUBIC_A;
                    let w = [cubic2(t + 1.0, a), cubic1(t, a), cubic1(1.0 - t, a), cubic2(2.0 - t, a)];
                    let clamp = |k: f64| (k.max(0.0) as usize).min(len_in - 1);
                    (0..4).map(|k| (clamp(f - 1.0 + k as f64), w[k])).collect()
                }
                Interpolation::BilinearAntialias => antialias_taps(len_in, scale, o, 1.0, triangle),
                Interpolation::BicubicAntialias => antialias_taps(len_in, scale, o, 2.0, keys_antialias),
            }
        })
        .collect()
}

/// Interpolates a channel-last grid `[h, w, d]` (row-major in `grid`) to `[new_h, new_w, d]`.
/// Panics if `grid` does not hold `h * w * d` values or a size is zero.
pub fn interpolate_grid<T: Float>(
    grid: &[T],
    (h, w): (usize, usize),
    d: usize,
    (new_h, new_w): (usize, usize),
    mode: Interpolation,
) -> Vec<T> {
    assert_eq!(grid.len(), h * w * d, "interpolate_grid: {} values cannot be a [{h}, {w}, {d}] grid", grid.len());
    assert!(h > 0 && w > 0 && new_h > 0 && new_w > 0, "interpolate_grid: empty grid [{h}, {w}] -> [{new_h}, {new_w}]");
    let (ty, tx) = (axis_taps(h, new_h, mode), axis_taps(w, new_w, mode));
    // Along x first ([h, w, d] -> [h, new_w, d]), then along y, accumulating in f64.
    let mut rows = vec![0.0f64; h * new_w * d];
    for y in 0..h {
        for (x, taps) in tx.iter().enumerate() {
            let out = &mut rows[(y * new_w + x) * d..][..d];
            for &(i, wt) in taps {
                for (o, &v) in out.iter_mut().zip(&grid[(y * w + i) * d..][..d]) {
                    *o += wt * v.to_f64();
                }
            }
        }
    }
    let mut out = vec![0.0f64; new_h * new_w * d];
    for (y, taps) in ty.iter().enumerate() {
        let dst = &mut out[y * new_w * d..][..new_w * d];
        for &(i, wt) in taps {
            for (o, &v) in dst.iter_mut().zip(&rows[i * new_w * d..][..new_w * d]) {
                *o += wt * v;
            }
        }
    }
    out.into_iter().map(T::from_f64).collect()
}

/// The side of a square of `n` cells, if `n` is a non-zero perfect square.
pub fn square_side(n: usize) -> Option<usize> {
    let s = (n as f64).sqrt().round() as usize;
    (s > 0 && s * s == n).then_some(s)
}

/// Resizes `pos_embed [1, prefix + Gh*Gw, D]` to `[1, prefix + Gh'*Gw', D]`: the first
/// `num_prefix_tokens` slots (the class token's) are kept, the patch part is interpolated from
/// `old_grid` to `new_grid`. `old_grid = None` infers a square grid from the token count (an
/// error if it is not a perfect square). Errors name the tensor and the shapes.
pub fn resize_pos_embed<T: Float>(
    pos_embed: &Tensor<T>,
    num_prefix_tokens: usize,
    old_grid: Option<(usize, usize)>,
    new_grid: (usize, usize),
    mode: Interpolation,
) -> Result<Tensor<T>> {
    let shape = pos_embed.shape();
    let err = |msg: String| Error::Checkpoint(format!("pos_embed: {msg}"));
    if shape.len() != 3 || shape[0] != 1 || shape[1] < num_prefix_tokens {
        return Err(err(format!(
            "expected shape [1, tokens, D] with {num_prefix_tokens} class token(s), found {shape:?}"
        )));
    }
    let (tokens, d) = (shape[1], shape[2]);
    let patches = tokens - num_prefix_tokens;
    let (gh, gw) = match old_grid {
        Some((gh, gw)) if gh * gw == patches => (gh, gw),
        Some((gh, gw)) => {
            return Err(err(format!(
                "the given grid {gh}x{gw} does not match the {patches} patch tokens of shape {shape:?}"
            )))
        }
        None => match square_side(patches) {
            Some(g) => (g, g),
            None => {
                return Err(err(format!(
                    "{patches} patch tokens (shape {shape:?}) are not a square grid: give the old grid explicitly"
                )))
            }
        },
    };
    if new_grid.0 == 0 || new_grid.1 == 0 {
        return Err(err(format!("cannot resize to an empty grid {}x{}", new_grid.0, new_grid.1)));
    }
    let data = pos_embed.data();
    let (prefix, grid) = data.split_at(num_prefix_tokens * d);
    let mut out = prefix.to_vec();
    out.extend(interpolate_grid(grid, (gh, gw), d, new_grid, mode));
    Ok(Tensor::from_vec(out, &[1, num_prefix_tokens + new_grid.0 * new_grid.1, d]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Interpolation; 4] = [
        Interpolation::Bilinear,
        Interpolation::Bicubic,
        Interpolation::BilinearAntialias,
        Interpolation::BicubicAntialias,
    ];

    /// Each output's weights sum to one (the kernel reproduces constants).
    #[test]
    fn taps_partition_unity() {
        for mode in ALL {
            for (a, b) in [(1, 5), (2, 4), (3, 7), (7, 3), (14, 24), (5, 1)] {
                for taps in axis_taps(a, b, mode) {
                    let s: f64 = taps.iter().map(|t| t.1).sum();
                    assert!((s - 1.0).abs() < 1e-12, "{mode:?} {a}->{b}: {taps:?}");
                }
            }
        }
    }

    #[test]
    fn square_sides() {
        assert_eq!(square_side(196), Some(14));
        assert_eq!(square_side(1), Some(1));
        assert_eq!(square_side(0), None);
        assert_eq!(square_side(12), None);
    }
}
