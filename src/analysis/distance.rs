//! Mean attention distance, the paper's Fig. 7 (right) and Fig. 11: for each head of each layer,
//! how far in image space a query patch reaches, on average, weighted by its attention —
//! the transformer's analogue of a receptive field size.
//!
//! ```text
//!     dist(h, l) = mean over images and query patches i of  sum_j A_l^h[i, j] d(i, j) / sum_j A_l^h[i, j]
//! ```
//!
//! over key patches `j`, with `d(i, j)` the distance in pixels between the two patch centres.
//! The class token has no place in the image, so it is left out as query and as key, and the
//! weights are renormalised over the patch keys. A head attending uniformly scores the mean
//! pairwise patch distance; one attending only to its own patch scores 0.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::attention::AttentionMaps;
use super::canvas::{plot_err, series_color, Canvas, FONT};
use crate::error::{Error, Result};
use crate::nn::ViTConfig;

/// The figure's size in pixels.
pub const DISTANCE_SIZE: (u32, u32) = (900, 640);

/// Distances in pixels between the centres of the patches of a `grid x grid` layout of
/// `patch`-pixel patches: `[N_p, N_p]`, patches row-major.
pub fn patch_distances(grid: usize, patch: usize) -> Vec<f64> {
    let np = grid * grid;
    let centre = |i: usize| (((i / grid) as f64 + 0.5) * patch as f64, ((i % grid) as f64 + 0.5) * patch as f64);
    let mut d = Vec::with_capacity(np * np);
    for i in 0..np {
        for j in 0..np {
            let ((yi, xi), (yj, xj)) = (centre(i), centre(j));
            d.push(((yi - yj).powi(2) + (xi - xj).powi(2)).sqrt());
        }
    }
    d
}

/// The mean attention distance of one head's `N x N` attention `attn` whose first `prefix`
/// tokens are not patches, given [`patch_distances`] `dist`.
pub fn mean_distance(attn: &[f32], n: usize, prefix: usize, dist: &[f64]) -> f64 {
    let np = n - prefix;
    let mut total = 0.0;
    for i in 0..np {
        let row = &attn[(prefix + i) * n + prefix..(prefix + i + 1) * n];
        let (mut weighted, mut mass) = (0.0, 0.0);
        for (j, &a) in row.iter().enumerate() {
            weighted += a as f64 * dist[i * np + j];
            mass += a as f64;
        }
        if mass > 0.0 {
            total += weighted / mass;
        }
    }
    total / np.max(1) as f64
}

/// Running sums of every head's mean distance over the images seen so far.
#[derive(Clone, Debug)]
pub struct DistanceSums {
    /// `[layer][head]` sums of per-image mean distances.
    pub sums: Vec<Vec<f64>>,
    /// How many images the sums are over (the divisor of the mean).
    pub images: usize,
    dist: Vec<f64>,
}

impl DistanceSums {
    /// Zero sums for `config`'s layers and heads, with the patch-centre distances of its grid.
    pub fn new(config: &ViTConfig) -> Self {
        DistanceSums {
            sums: vec![vec![0.0; config.heads]; config.depth],
            images: 0,
            dist: patch_distances(config.grid(), config.patch_pixels()),
        }
    }

    /// Adds every image of a batch.
    pub fn add(&mut self, maps: &AttentionMaps) {
        for (l, sums) in self.sums.iter_mut().enumerate() {
            for b in 0..maps.batch {
                for (h, s) in sums.iter_mut().enumerate() {
                    *s += mean_distance(maps.head(l, b, h), maps.tokens, maps.prefix, &self.dist);
                }
            }
        }
        self.images += maps.batch;
    }

    /// `[layer][head]` means over the images.
    pub fn means(&self) -> Vec<Vec<f64>> {
        let n = self.images.max(1) as f64;
        self.sums.iter().map(|row| row.iter().map(|s| s / n).collect()).collect()
    }
}

/// Writes `attention_distance.png` (the scatter of head distances against depth) and
/// `attention_distance.csv` (`layer,head,mean_distance_px`, layers and heads from 1).
pub fn write_distance(means: &[Vec<f64>], images: usize, config: &ViTConfig, out_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut csv = String::from("layer,head,mean_distance_px\n");
    for (l, row) in means.iter().enumerate() {
        for (h, d) in row.iter().enumerate() {
            let _ = writeln!(csv, "{},{},{d:.4}", l + 1, h + 1);
        }
    }
    let csv_path = out_dir.join("attention_distance.csv");
    fs::write(&csv_path, csv).map_err(|e| Error::io(&csv_path, e))?;

    let (w, h) = DISTANCE_SIZE;
    let mut canvas = Canvas::new(w, h)?;
    {
        let area = canvas.area();
        area.fill(&WHITE).map_err(plot_err)?;
        let top = means.iter().flatten().fold(0.0f64, |m, &v| m.max(v));
        let y_max = (config.image_size as f64 * 0.75).max(top * 1.1);
        let caption = format!("mean attention distance ({images} test images, {} px)", config.image_size);
        let mut chart = ChartBuilder::on(&area)
            .caption(caption, (FONT, 20))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(0.5..means.len() as f64 + 0.5, 0.0..y_max)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("network depth (layer)")
            .y_desc("mean attention distance (pixels)")
            .x_labels(means.len().max(1))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style((FONT, 14))
            .draw()
            .map_err(plot_err)?;
        for head in 0..config.heads {
            let color = series_color(head);
            // Heads sit side by side around their layer, so points do not hide each other.
            let offset = |h: usize| (h as f64 - (config.heads - 1) as f64 / 2.0) * 0.3 / config.heads as f64;
            let points = means.iter().enumerate().map(|(l, row)| (l as f64 + 1.0 + offset(head), row[head]));
            chart
                .draw_series(points.map(|p| Circle::new(p, 5, color.filled())))
                .map_err(plot_err)?
                .label(format!("head {}", head + 1))
                .legend(move |(x, y)| Circle::new((x + 8, y), 5, color.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.4))
            .label_font((FONT, 14))
            .draw()
            .map_err(plot_err)?;
        area.present().map_err(plot_err)?;
    }
    let png = out_dir.join("attention_distance.png");
    canvas.save(&png)?;
    Ok(vec![png, csv_path])
}
