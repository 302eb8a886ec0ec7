//! The confusion matrix of an evaluation as a picture: rows are the true class, columns the
//! predicted one, each cell coloured by the fraction of its row (so every class reads on the same
//! scale whatever its size), with the counts written in when there are few classes.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::canvas::{colorbar, plot_err, viridis, Canvas, FONT};
use crate::error::{Error, Result};
use crate::train::Metrics;

/// The figure's size in pixels.
pub const CONFUSION_SIZE: (u32, u32) = (900, 900);

/// Writes the confusion matrix of `metrics` as a PNG at `path` and its counts as CSV beside it
/// (`path` with the extension `.csv`: a header of class names, one row per true class).
pub fn write_confusion(metrics: &Metrics, class_names: &[String], path: &Path) -> Result<()> {
    let k = metrics.classes;
    let name = |i: usize| class_names.get(i).cloned().unwrap_or_else(|| i.to_string());
    let mut csv = String::from("true\\predicted");
    for j in 0..k {
        let _ = write!(csv, ",{}", name(j));
    }
    csv.push('\n');
    for i in 0..k {
        csv.push_str(&name(i));
        for j in 0..k {
            let _ = write!(csv, ",{}", metrics.confusion[i * k + j]);
        }
        csv.push('\n');
    }

    let (w, h) = CONFUSION_SIZE;
    let mut canvas = Canvas::new(w, h)?;
    {
        let area = canvas.area();
        area.fill(&WHITE).map_err(plot_err)?;
        let (left, top, side) = (170i32, 70i32, 620i32);
        let cell = side / k.max(1) as i32;
        let side = cell * k as i32;
        let font = |size: i32| (FONT, size).into_font().color(&BLACK);
        let title = format!("confusion matrix: {} samples, top-1 {:.2}%", metrics.count, 100.0 * metrics.top1());
        area.draw(&Text::new(title, (left, 20), font(20))).map_err(plot_err)?;
        let labels = k <= 20;
        for i in 0..k {
            let row = &metrics.confusion[i * k..(i + 1) * k];
            let total: u64 = row.iter().sum();
            for (j, &count) in row.iter().enumerate() {
                let frac = if total > 0 { count as f64 / total as f64 } else { 0.0 };
                let (x, y) = (left + j as i32 * cell, top + i as i32 * cell);
                area.draw(&Rectangle::new([(x, y), (x + cell, y + cell)], viridis(frac).filled())).map_err(plot_err)?;
                if labels && count > 0 {
                    // Light text on the dark end of the map, dark on the light end.
                    let ink = if frac > 0.6 { BLACK } else { WHITE };
                    let style = (FONT, 13).into_font().color(&ink).pos(Pos::new(HPos::Center, VPos::Center));
                    area.draw(&Text::new(count.to_string(), (x + cell / 2, y + cell / 2), style)).map_err(plot_err)?;
                }
            }
            if labels {
                let style = font(14).pos(Pos::new(HPos::Right, VPos::Center));
                area.draw(&Text::new(name(i), (left - 8, top + i as i32 * cell + cell / 2), style))
                    .map_err(plot_err)?;
                let style = font(14).transform(FontTransform::Rotate90).pos(Pos::new(HPos::Left, VPos::Center));
                let at = (left + i as i32 * cell + cell / 2, top + side + 8);
                area.draw(&Text::new(name(i), at, style)).map_err(plot_err)?;
            }
        }
        let axis = font(16);
        area.draw(&Text::new("true class (rows) / predicted class (columns)", (left, top - 24), axis))
            .map_err(plot_err)?;
        colorbar(&area, (left, h as i32 - 70), (240, 14), 0.0, 1.0, "fraction of the true class")?;
        area.present().map_err(plot_err)?;
    }
    canvas.save(path)?;
    let csv_path = path.with_extension("csv");
    fs::write(&csv_path, csv).map_err(|e| Error::io(&csv_path, e))
}
