//! Attention rollout (Abnar & Zuidema 2020), the paper's Figs. 6 and 14: which input patches
//! the class token's representation was built from, through every layer.
//!
//! Per layer the heads are averaged, the identity is added for the residual connection and the
//! rows are renormalised; the layers are then multiplied through:
//!
//! ```text
//!     Â_l = rownorm(mean_h A_l^h + I)            A_l^h: [N, N], rows sum to 1
//!     R   = Â_L Â_{L-1} ... Â_1                  R[i, j]: how much output token i draws on input token j
//! ```
//!
//! The map shown is the class token's row of `R` over the patches; a GAP model (no class token)
//! pools the mean of the patch tokens, so its map is the mean of the patch rows.

use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde_json::json;

use super::attention::AttentionMaps;
use super::canvas::{plot_err, viridis, Canvas, Raster, FONT};
use super::inputs::ShownImage;
use super::write_json;
use crate::error::Result;
use crate::nn::ViTConfig;

/// `R = Â_L ... Â_1` for head-averaged layer attentions (`N x N` each, in layer order).
pub fn rollout(layers: &[Vec<f64>], n: usize) -> Vec<f64> {
    let mut r = identity(n);
    for a in layers {
        assert_eq!(a.len(), n * n, "rollout: a layer of {} values for {n} tokens", a.len());
        // Â = rownorm(A + I)
        let mut hat = a.clone();
        for i in 0..n {
            let row = &mut hat[i * n..(i + 1) * n];
            row[i] += 1.0;
            let sum: f64 = row.iter().sum();
            row.iter_mut().for_each(|v| *v /= sum);
        }
        r = matmul(&hat, &r, n);
    }
    r
}

fn identity(n: usize) -> Vec<f64> {
    let mut m = vec![0.0; n * n];
    (0..n).for_each(|i| m[i * n + i] = 1.0);
    m
}

/// `a b` for `n x n` matrices.
fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    let mut c = vec![0.0; n * n];
    for i in 0..n {
        for k in 0..n {
            let aik = a[i * n + k];
            for j in 0..n {
                c[i * n + j] += aik * b[k * n + j];
            }
        }
    }
    c
}

/// The patch part of what the classifier reads from an `N x N` token matrix `m` (attention or
/// rollout): the class token's row over the patches when the model has one (`prefix == 1`),
/// else the mean of the patch rows. `N - prefix` values, row-major over the patch grid.
pub fn patch_map(m: &[f64], n: usize, prefix: usize) -> Vec<f64> {
    if prefix > 0 {
        return m[prefix..n].to_vec();
    }
    let mut mean = vec![0.0; n];
    for row in m.chunks(n) {
        mean.iter_mut().zip(row).for_each(|(s, &v)| *s += v / n as f64);
    }
    mean
}

/// How the maps pool the tokens, for titles and the JSON.
pub fn pooling(prefix: usize) -> &'static str {
    if prefix > 0 {
        "class token row"
    } else {
        "mean over the patch rows (GAP model: no class token)"
    }
}

/// The maps one image's figures show: its rollout and each layer's raw (head-averaged) map,
/// each over the patch grid.
#[derive(Clone, Debug)]
pub struct ImageMaps {
    /// The pooled row of the rollout `R` over the `N_p` patches, row-major on the grid.
    pub rollout: Vec<f64>,
    /// Per block, the same pooled row of the head-mean attention `mean_h A_l^h` alone.
    pub layers: Vec<Vec<f64>>,
}

/// The rollout and per-layer maps of image `b` of a batch.
pub fn image_maps(maps: &AttentionMaps, b: usize) -> ImageMaps {
    let n = maps.tokens;
    let layers: Vec<Vec<f64>> = (0..maps.layers.len()).map(|l| maps.head_mean(l, b)).collect();
    ImageMaps {
        rollout: patch_map(&rollout(&layers, n), n, maps.prefix),
        layers: layers.iter().map(|a| patch_map(a, n, maps.prefix)).collect(),
    }
}

/// A patch-grid map (`grid x grid`) at the image's resolution (`size x size`), bilinear between
/// patch centres (each patch's value sits at its centre, as the paper's upsampled overlays).
pub fn upsample(map: &[f64], grid: usize, size: usize) -> Vec<f64> {
    let at = |x: usize, y: usize| map[y * grid + x] as f32;
    crate::image::resize_bilinear(grid, grid, size, at).into_iter().map(f64::from).collect()
}

/// `values / max(values)` (all zeros stay zeros): maps are compared by shape, not scale.
pub fn scaled_to_max(values: &[f64]) -> Vec<f64> {
    let max = values.iter().fold(0.0f64, |m, &v| m.max(v));
    values.iter().map(|&v| if max > 0.0 { v / max } else { 0.0 }).collect()
}

/// The image with the map laid over it: `0.45 image + 0.55 viridis(map / max)`.
pub fn overlay(image: &Raster, heat: &[f64]) -> Raster {
    let heat = scaled_to_max(heat);
    let pixels = image
        .pixels
        .iter()
        .zip(&heat)
        .map(|(&RGBColor(r, g, b), &m)| {
            let RGBColor(hr, hg, hb) = viridis(m);
            let mix = |a: u8, h: u8| (0.45 * a as f64 + 0.55 * h as f64).round() as u8;
            RGBColor(mix(r, hr), mix(g, hg), mix(b, hb))
        })
        .collect();
    Raster { pixels, ..image.clone() }
}

/// The integer zoom that shows an image of `size` pixels at about `target` pixels.
pub fn zoom(size: usize, target: usize) -> u32 {
    (target / size.max(1)).max(1) as u32
}

/// Images per row of the rollout figure.
pub const ROLLOUT_COLUMNS: usize = 8;

/// The rollout figure's size for `n` images of `size` pixels: a column per image (input above,
/// overlay below), [`ROLLOUT_COLUMNS`] to a row.
pub fn rollout_size(n: usize, size: usize) -> (u32, u32) {
    let t = zoom(size, 160) as usize * size;
    let (cols, rows) = (n.clamp(1, ROLLOUT_COLUMNS), n.div_ceil(ROLLOUT_COLUMNS).max(1));
    ((20 + cols * (t + 12) + 8) as u32, (44 + rows * (36 + 2 * t + 20)) as u32)
}

/// Writes `rollout.png` (each image and its rollout overlay) and `rollout.json` (the maps).
pub fn write_rollout(
    shown: &[ShownImage],
    maps: &[ImageMaps],
    config: &ViTConfig,
    out_dir: &Path,
) -> Result<Vec<PathBuf>> {
    let (size, grid, prefix) = (config.image_size, config.grid(), config.num_prefix_tokens());
    let json_path = out_dir.join("rollout.json");
    let images: Vec<_> = shown
        .iter()
        .zip(maps)
        .map(|(s, m)| json!({"image": s.name, "caption": s.caption, "rollout": m.rollout.chunks(grid).collect::<Vec<_>>()}))
        .collect();
    write_json(
        &json_path,
        &json!({"method": "attention rollout (Abnar & Zuidema 2020)", "pooling": pooling(prefix), "grid": grid, "images": images}),
    )?;

    let (w, h) = rollout_size(shown.len(), size);
    let s = zoom(size, 160);
    let t = s as i32 * size as i32;
    let mut canvas = Canvas::new(w, h)?;
    {
        let area = canvas.area();
        area.fill(&WHITE).map_err(plot_err)?;
        let title = format!("attention rollout through {} layers: {}", config.depth, pooling(prefix));
        area.draw(&Text::new(title, (20, 12), (FONT, 18).into_font())).map_err(plot_err)?;
        for (i, (image, m)) in shown.iter().zip(maps).enumerate() {
            let (col, row) = ((i % ROLLOUT_COLUMNS) as i32, (i / ROLLOUT_COLUMNS) as i32);
            let (x, y) = (20 + col * (t + 12), 44 + row * (36 + 2 * t + 20));
            for (k, line) in image.caption.split('\n').take(2).enumerate() {
                area.draw(&Text::new(line.to_string(), (x, y + 16 * k as i32), (FONT, 13).into_font()))
                    .map_err(plot_err)?;
            }
            let raster = image.raster(config.in_chans, size);
            raster.draw(&area, (x, y + 36), s)?;
            overlay(&raster, &upsample(&m.rollout, grid, size)).draw(&area, (x, y + 36 + t + 6), s)?;
        }
        area.present().map_err(plot_err)?;
    }
    let png = out_dir.join("rollout.png");
    canvas.save(&png)?;
    Ok(vec![png, json_path])
}
