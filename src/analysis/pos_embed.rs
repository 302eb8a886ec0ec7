//! Position-embedding similarity, the paper's Fig. 7 (centre) and Fig. 10: the cosine
//! similarity of each patch's learned position embedding with every other's, drawn as a grid of
//! tiles — tile `(r, c)` is the patch at row `r`, column `c`, and shows its similarity with all
//! patches in their places. A model that learned the 2D layout shows a bright spot at the
//! tile's own position, and rows and columns that resemble each other.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::canvas::{colorbar, plot_err, Canvas, Raster, FONT};
use crate::error::{Error, Result};
use crate::nn::ViTConfig;

/// Cosine similarities `[n, n]` of the rows of `rows: [n, d]` (a zero row is similar to nothing).
pub fn cosine_similarity(rows: &[f32], n: usize, d: usize) -> Vec<f64> {
    assert_eq!(rows.len(), n * d, "cosine_similarity: {} values for {n} x {d}", rows.len());
    let row = |i: usize| &rows[i * d..(i + 1) * d];
    let norms: Vec<f64> = (0..n).map(|i| row(i).iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt()).collect();
    let mut sim = vec![0.0; n * n];
    for i in 0..n {
        for j in i..n {
            let dot: f64 = row(i).iter().zip(row(j)).map(|(&a, &b)| a as f64 * b as f64).sum();
            let s = if norms[i] > 0.0 && norms[j] > 0.0 { dot / (norms[i] * norms[j]) } else { 0.0 };
            sim[i * n + j] = s;
            sim[j * n + i] = s;
        }
    }
    sim
}

/// Pixels per patch inside a tile, and the tile gap.
fn cell(grid: usize) -> (usize, usize) {
    ((72 / grid.max(1)).max(2), 4)
}

/// The figure's size for a `grid x grid` patch layout.
pub fn pos_embed_size(grid: usize) -> (u32, u32) {
    let (px, gap) = cell(grid);
    let span = grid * (grid * px + gap);
    ((90 + span + 30) as u32, (90 + span + 70) as u32)
}

/// Writes `pos_embed_similarity.png` and `pos_embed_similarity.csv` (the `N_p x N_p` matrix,
/// patches row-major) for `pos_embed: [1, N, D]`, skipping the class token's slot.
pub fn write_pos_embed(pos_embed: &[f32], config: &ViTConfig, out_dir: &Path) -> Result<Vec<PathBuf>> {
    let (grid, d, prefix) = (config.grid(), config.dim, config.num_prefix_tokens());
    let np = grid * grid;
    if pos_embed.len() != (np + prefix) * d {
        return Err(Error::Checkpoint(format!(
            "pos_embed has {} values; the model needs {} x {d}",
            pos_embed.len(),
            np + prefix
        )));
    }
    let sim = cosine_similarity(&pos_embed[prefix * d..], np, d);
    let mut csv = String::from("patch");
    (0..np).for_each(|j| {
        let _ = write!(csv, ",{j}");
    });
    csv.push('\n');
    for i in 0..np {
        let _ = write!(csv, "{i}");
        sim[i * np..(i + 1) * np].iter().for_each(|v| {
            let _ = write!(csv, ",{v:.5}");
        });
        csv.push('\n');
    }
    let csv_path = out_dir.join("pos_embed_similarity.csv");
    fs::write(&csv_path, csv).map_err(|e| Error::io(&csv_path, e))?;

    let (w, h) = pos_embed_size(grid);
    let (px, gap) = cell(grid);
    let tile = (grid * px) as i32;
    let (left, top) = (90i32, 90i32);
    let mut canvas = Canvas::new(w, h)?;
    {
        let area = canvas.area();
        area.fill(&WHITE).map_err(plot_err)?;
        let title = "position embedding similarity (cosine)";
        area.draw(&Text::new(title, (left, 14), (FONT, 18).into_font())).map_err(plot_err)?;
        area.draw(&Text::new("input patch column", (left, top - 46), (FONT, 15).into_font())).map_err(plot_err)?;
        let vertical = (FONT, 15).into_font().transform(FontTransform::Rotate90);
        area.draw(&Text::new("input patch row", (40, top), vertical)).map_err(plot_err)?;
        let centred = (FONT, 13).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Center));
        for r in 0..grid {
            let y = top + r as i32 * (tile + gap as i32);
            let label = Text::new((r + 1).to_string(), (left - 14, y + tile / 2), centred.clone());
            area.draw(&label).map_err(plot_err)?;
            for c in 0..grid {
                let x = left + c as i32 * (tile + gap as i32);
                if r == 0 {
                    let label = Text::new((c + 1).to_string(), (x + tile / 2, top - 14), centred.clone());
                    area.draw(&label).map_err(plot_err)?;
                }
                let i = r * grid + c;
                Raster::heat(&sim[i * np..(i + 1) * np], grid, grid, -1.0, 1.0).draw(&area, (x, y), px as u32)?;
            }
        }
        let bar_y = top + grid as i32 * (tile + gap as i32) + 16;
        colorbar(&area, (left, bar_y), (200, 14), -1.0, 1.0, "cosine similarity")?;
        area.present().map_err(plot_err)?;
    }
    let png = out_dir.join("pos_embed_similarity.png");
    canvas.save(&png)?;
    Ok(vec![png, csv_path])
}
