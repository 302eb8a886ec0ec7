//! Raw attention per layer: for each image, what the class token (or, for a GAP model, the mean
//! patch token) attends to in every layer on its own, heads averaged and without the residual,
//! beside the rollout that chains them. Early layers look local or diffuse; the rollout shows
//! where the information the classifier reads finally came from.

use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde_json::json;

use super::canvas::{plot_err, Canvas, Raster, FONT};
use super::inputs::ShownImage;
use super::rollout::{pooling, scaled_to_max, zoom, ImageMaps};
use super::write_json;
use crate::error::Result;
use crate::nn::ViTConfig;

/// The figure's size for `n` images through `depth` layers of `size`-pixel images: a row per
/// image, the columns input, layer 1..depth, rollout.
pub fn layers_size(n: usize, depth: usize, size: usize) -> (u32, u32) {
    let c = zoom(size, 96) as usize * size;
    ((150 + (depth + 2) * (c + 8) + 10) as u32, (70 + n.max(1) * (c + 8) + 10) as u32)
}

/// A patch-grid map shown at the image's resolution, each patch a flat square (no smoothing:
/// these are the raw numbers), scaled to its maximum.
fn patch_raster(map: &[f64], grid: usize, patch: usize) -> Raster {
    let size = grid * patch;
    let mut pixels = Vec::with_capacity(size * size);
    let map = scaled_to_max(map);
    for y in 0..size {
        for x in 0..size {
            pixels.push(map[(y / patch) * grid + x / patch]);
        }
    }
    Raster::heat(&pixels, size, size, 0.0, 1.0)
}

/// Writes `attention_layers.png` and `attention_layers.json` (every layer's map per image).
pub fn write_layers(
    shown: &[ShownImage],
    maps: &[ImageMaps],
    config: &ViTConfig,
    out_dir: &Path,
) -> Result<Vec<PathBuf>> {
    let (size, grid, prefix, depth) = (config.image_size, config.grid(), config.num_prefix_tokens(), config.depth);
    let json_path = out_dir.join("attention_layers.json");
    let images: Vec<_> = shown
        .iter()
        .zip(maps)
        .map(|(s, m)| {
            let layers: Vec<Vec<&[f64]>> = m.layers.iter().map(|l| l.chunks(grid).collect()).collect();
            json!({"image": s.name, "caption": s.caption, "layers": layers})
        })
        .collect();
    write_json(
        &json_path,
        &json!({"what": "per-layer attention, heads averaged, no residual", "pooling": pooling(prefix), "grid": grid, "images": images}),
    )?;

    let (w, h) = layers_size(shown.len(), depth, size);
    let s = zoom(size, 96);
    let c = s as i32 * size as i32;
    let mut canvas = Canvas::new(w, h)?;
    {
        let area = canvas.area();
        area.fill(&WHITE).map_err(plot_err)?;
        let title = format!("attention of each layer (heads averaged): {}", pooling(prefix));
        area.draw(&Text::new(title, (10, 12), (FONT, 18).into_font())).map_err(plot_err)?;
        let column_x = |k: usize| 150 + k as i32 * (c + 8);
        let mut headers = vec!["input".to_string()];
        headers.extend((1..=depth).map(|l| format!("layer {l}")));
        headers.push("rollout".into());
        for (k, header) in headers.into_iter().enumerate() {
            area.draw(&Text::new(header, (column_x(k), 46), (FONT, 14).into_font())).map_err(plot_err)?;
        }
        for (i, (image, m)) in shown.iter().zip(maps).enumerate() {
            let y = 70 + i as i32 * (c + 8);
            for (k, line) in image.caption.split('\n').take(2).enumerate() {
                let at = (10, y + 4 + 16 * k as i32);
                area.draw(&Text::new(line.to_string(), at, (FONT, 13).into_font())).map_err(plot_err)?;
            }
            image.raster(config.in_chans, size).draw(&area, (column_x(0), y), s)?;
            for (l, map) in m.layers.iter().chain(std::iter::once(&m.rollout)).enumerate() {
                patch_raster(map, grid, config.patch_pixels()).draw(&area, (column_x(l + 1), y), s)?;
            }
        }
        area.present().map_err(plot_err)?;
    }
    let png = out_dir.join("attention_layers.png");
    canvas.save(&png)?;
    Ok(vec![png, json_path])
}
