//! Patch-embedding filters, the paper's Fig. 7 (left): the top principal components of the
//! rows of `E` (each row a `C x P x P` filter the patches are projected on), shown as images.
//! Trained models show smooth low-frequency bases — "plausible basis functions for a
//! low-dimensional representation of the fine structure within each patch".
//!
//! A hybrid's `E` reads the CNN's feature channels, not pixels, so there the figure is drawn for
//! the first map that does read pixels: the stem's 7x7 convolution, each filter standardised as
//! the forward pass uses it (`(W - mean) / sqrt(var + eps)` per output channel).
//!
//! PCA: centre the `D` filters, form their `K x K` covariance (`K = C P P`), and take its
//! eigenvectors by cyclic Jacobi rotations (exact to rounding, and `K` is small: 16 for
//! Fashion-MNIST patches of 4, 48 for CIFAR, 768 for ViT-B/16).

use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde_json::json;

use super::canvas::{plot_err, Canvas, Raster, FONT};
use super::write_json;
use crate::error::{Error, Result};
use crate::nn::ViTConfig;

/// Eigenvalues (descending) and unit eigenvectors (`vectors[k]` for `values[k]`) of the
/// symmetric `n x n` matrix `a`, by cyclic Jacobi rotations.
pub fn symmetric_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
    assert_eq!(a.len(), n * n, "symmetric_eigen: {} values for {n} x {n}", a.len());
    let mut m = a.to_vec();
    let mut v = vec![0.0; n * n];
    (0..n).for_each(|i| v[i * n + i] = 1.0);
    let scale: f64 = a.iter().map(|x| x * x).sum::<f64>().max(f64::MIN_POSITIVE);
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| m[i * n + j].powi(2))
            .sum();
        if off <= 1e-24 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = m[p * n + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                // The rotation that zeroes m[p][q]: tan(2θ) = 2 a_pq / (a_qq - a_pp).
                let theta = (m[q * n + q] - m[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (mkp, mkq) = (m[k * n + p], m[k * n + q]);
                    m[k * n + p] = c * mkp - s * mkq;
                    m[k * n + q] = s * mkp + c * mkq;
                }
                for k in 0..n {
                    let (mpk, mqk) = (m[p * n + k], m[q * n + k]);
                    m[p * n + k] = c * mpk - s * mqk;
                    m[q * n + k] = s * mpk + c * mqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| m[j * n + j].total_cmp(&m[i * n + i]));
    let values = order.iter().map(|&i| m[i * n + i]).collect();
    let vectors = order.iter().map(|&i| (0..n).map(|k| v[k * n + i]).collect()).collect();
    (values, vectors)
}

/// The principal components of `d` filters of length `k` (`filters: [d, k]`): eigenvalues of
/// their covariance (descending) and the unit components.
pub fn principal_components(filters: &[f32], d: usize, k: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
    assert_eq!(filters.len(), d * k, "principal_components: {} values for {d} x {k}", filters.len());
    let mut mean = vec![0.0; k];
    for row in filters.chunks(k) {
        mean.iter_mut().zip(row).for_each(|(m, &v)| *m += v as f64 / d as f64);
    }
    let mut cov = vec![0.0; k * k];
    for row in filters.chunks(k) {
        let c: Vec<f64> = row.iter().zip(&mean).map(|(&v, m)| v as f64 - m).collect();
        for i in 0..k {
            for j in 0..k {
                cov[i * k + j] += c[i] * c[j] / (d.max(2) - 1) as f64;
            }
        }
    }
    symmetric_eigen(&cov, k)
}

/// How many components the figure shows (the paper shows 28).
pub const COMPONENTS: usize = 28;
const COLUMNS: usize = 7;

/// The figure's size for `components` tiles of `patch`-pixel filters.
pub fn filters_size(components: usize, patch: usize) -> (u32, u32) {
    let t = (64 / patch).max(2) * patch;
    let rows = components.div_ceil(COLUMNS).max(1);
    ((20 + COLUMNS * (t + 10) + 10) as u32, (50 + rows * (t + 28) + 10) as u32)
}

/// Writes `patch_embed_pca.png` (the top components as `C x P x P` images, each scaled to its
/// own range) and `patch_embed_pca.json` (eigenvalues, explained variance, components) for the
/// patch-embedding weight `[D, C, P, P]`.
pub fn write_filters(weight: &[f32], config: &ViTConfig, out_dir: &Path) -> Result<Vec<PathBuf>> {
    let shape = (config.dim, config.in_chans, config.patch_size);
    write_pca(weight, shape, "patch_embed.proj.weight", "patch embedding filters", "patch_embed_pca", out_dir)
}

/// The hybrid's version of the figure: `stem_conv_pca.png` and `.json`, the top components of
/// the stem convolution's `[O, C, k, k]` filters, each standardised first as
/// [`StdConv`](crate::nn::StdConv) does in the forward pass (`eps` its epsilon).
pub fn write_stem_filters(
    weight: &[f32],
    shape: (usize, usize, usize),
    eps: f64,
    out_dir: &Path,
) -> Result<Vec<PathBuf>> {
    let (o, c, k) = shape;
    let len = c * k * k;
    if weight.len() != o * len || len == 0 {
        return Err(Error::Checkpoint(format!(
            "the stem convolution's weight has {} values; expected {o} x {c} x {k} x {k}",
            weight.len()
        )));
    }
    let mut standardised = Vec::with_capacity(weight.len());
    for filter in weight.chunks(len) {
        let mean = filter.iter().map(|&v| v as f64).sum::<f64>() / len as f64;
        let var = filter.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / len as f64;
        let inv = 1.0 / (var + eps).sqrt();
        standardised.extend(filter.iter().map(|&v| ((v as f64 - mean) * inv) as f32));
    }
    write_pca(
        &standardised,
        shape,
        "the stem convolution's weight",
        "stem convolution filters",
        "stem_conv_pca",
        out_dir,
    )
}

/// The figure and its numbers for `d` filters of shape `c x p x p` (`shape = (d, c, p)`), written
/// as `out_dir/NAME.png` and `out_dir/NAME.json`.
fn write_pca(
    weight: &[f32],
    (d, c, p): (usize, usize, usize),
    tensor: &str,
    what: &str,
    name: &str,
    out_dir: &Path,
) -> Result<Vec<PathBuf>> {
    let k = c * p * p;
    if weight.len() != d * k {
        return Err(Error::Checkpoint(format!("{tensor} has {} values; expected {d} x {k}", weight.len())));
    }
    let (values, vectors) = principal_components(weight, d, k);
    let total: f64 = values.iter().map(|v| v.max(0.0)).sum::<f64>().max(f64::MIN_POSITIVE);
    let shown = COMPONENTS.min(k).min(d);
    let explained: Vec<f64> = values.iter().map(|v| v.max(0.0) / total).collect();
    let json_path = out_dir.join(format!("{name}.json"));
    write_json(
        &json_path,
        &json!({
            "filters": d, "filter_shape": [c, p, p],
            "eigenvalues": values, "explained_variance_ratio": explained,
            "components": vectors[..shown],
        }),
    )?;

    let (w, h) = filters_size(shown, p);
    let zoom = (64 / p).max(2) as u32;
    let t = zoom as i32 * p as i32;
    let mut canvas = Canvas::new(w, h)?;
    {
        let area = canvas.area();
        area.fill(&WHITE).map_err(plot_err)?;
        let title = format!("{what}: top {shown} principal components of {d} filters");
        area.draw(&Text::new(title, (20, 14), (FONT, 18).into_font())).map_err(plot_err)?;
        for (i, v) in vectors.iter().take(shown).enumerate() {
            let (lo, hi) = v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)));
            let span = if hi > lo { hi - lo } else { 1.0 };
            let pixels: Vec<f32> = v.iter().map(|&x| ((x - lo) / span) as f32).collect();
            let (col, row) = ((i % COLUMNS) as i32, (i / COLUMNS) as i32);
            let (x, y) = (20 + col * (t + 10), 50 + row * (t + 28));
            Raster::from_chw(&pixels, c, p, p).draw(&area, (x, y), zoom)?;
            let label = format!("PC{} {:.1}%", i + 1, 100.0 * explained[i]);
            area.draw(&Text::new(label, (x, y + t + 6), (FONT, 12).into_font())).map_err(plot_err)?;
        }
        area.present().map_err(plot_err)?;
    }
    let png = out_dir.join(format!("{name}.png"));
    canvas.save(&png)?;
    Ok(vec![png, json_path])
}
