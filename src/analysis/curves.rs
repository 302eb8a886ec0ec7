//! Training curves from `metrics.jsonl`: train/test loss and accuracy per epoch, the learning
//! rate, and test accuracy against training time, for one run or several overlaid.
//!
//! `vit train` redraws `curves.png` beside `metrics.jsonl` after every epoch; `vit plot` redraws
//! it for any run directory, or overlays several runs in one figure.

use std::fs;
use std::path::{Path, PathBuf};

use plotters::chart::SeriesAnno;
use plotters::prelude::*;
use serde_json::Value;

use super::canvas::{padded_range, plot_err, series_color, Area, Canvas, FONT};
use crate::error::{Error, Result};

/// The figure's size in pixels.
pub const CURVES_SIZE: (u32, u32) = (1200, 800);

/// One epoch of a run, as `metrics.jsonl` records it.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochPoint {
    /// The epoch number, counted from 1 (as the plot's x coordinate).
    pub epoch: f64,
    /// The learning rate of the epoch's last step.
    pub lr: f64,
    /// Mean training loss over the epoch (augmented batches, dropout on).
    pub train_loss: f64,
    /// Training top-1 accuracy over the epoch, in `[0, 1]`.
    pub train_acc: f64,
    /// Mean cross-entropy on the test set, in eval mode (no dropout).
    pub test_loss: f64,
    /// Fraction of test images classified correctly, in `[0, 1]`.
    pub test_acc: f64,
    /// Training time up to the end of this epoch (the sum of the epochs' durations).
    pub elapsed_seconds: f64,
}

/// A run: its name (for the legend) and its epochs in order.
#[derive(Clone, Debug)]
pub struct RunCurves {
    /// The legend entry: the run folder's name.
    pub name: String,
    /// Epochs in increasing order, one point each.
    pub epochs: Vec<EpochPoint>,
}

/// Reads `dir/metrics.jsonl`. When an epoch appears twice (a run resumed from a checkpoint
/// written before its last metrics line) the later line wins.
pub fn read_run(dir: &Path) -> Result<RunCurves> {
    let path = dir.join("metrics.jsonl");
    let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let bad = |line: usize, m: String| Error::Data(format!("{}, line {line}: {m}", path.display()));
    let mut rows: Vec<(f64, f64, [f64; 5])> = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).map_err(|e| bad(i + 1, format!("not JSON: {e}")))?;
        let field = |k: &str| v.get(k).and_then(Value::as_f64);
        let epoch = field("epoch").ok_or_else(|| bad(i + 1, "no \"epoch\" number".into()))?;
        let get = |k: &str| field(k).unwrap_or(f64::NAN);
        let values = [get("lr"), get("train_loss"), get("train_acc"), get("test_loss"), get("test_acc")];
        rows.retain(|r| r.0 != epoch);
        rows.push((epoch, field("seconds").unwrap_or(0.0), values));
    }
    if rows.is_empty() {
        return Err(Error::Data(format!("{}: no epochs recorded yet", path.display())));
    }
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut elapsed = 0.0;
    let epochs = rows
        .into_iter()
        .map(|(epoch, seconds, [lr, train_loss, train_acc, test_loss, test_acc])| {
            elapsed += seconds;
            EpochPoint { epoch, lr, train_loss, train_acc, test_loss, test_acc, elapsed_seconds: elapsed }
        })
        .collect();
    Ok(RunCurves { name: run_name(dir), epochs })
}

/// A short name for a run directory: its last path component.
fn run_name(dir: &Path) -> String {
    dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| dir.display().to_string())
}

/// Redraws `dir/curves.png` from `dir/metrics.jsonl`; returns the figure's path.
pub fn write_run_curves(dir: &Path) -> Result<PathBuf> {
    let run = read_run(dir)?;
    let path = dir.join("curves.png");
    draw_curves(std::slice::from_ref(&run), &path)?;
    Ok(path)
}

/// One panel: `(x, y)` per epoch for every run, each run in its colour; `two` draws a second,
/// dashed series (test beside train).
struct Panel<'a> {
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
    log_y: bool,
    legend_at: SeriesLabelPosition,
    series: Vec<Series>,
}

struct Series {
    label: String,
    color: RGBColor,
    dashed: bool,
    points: Vec<(f64, f64)>,
}

/// Draws the four panels (loss, accuracy, learning rate, test accuracy against time) of `runs`
/// into a PNG of [`CURVES_SIZE`].
pub fn draw_curves(runs: &[RunCurves], path: &Path) -> Result<()> {
    let (w, h) = CURVES_SIZE;
    let mut canvas = Canvas::new(w, h)?;
    {
        let root = canvas.area();
        root.fill(&WHITE).map_err(plot_err)?;
        let panels = root.split_evenly((2, 2));
        let several = runs.len() > 1;
        let label = |run: &RunCurves, what: &str| if several { format!("{} {what}", run.name) } else { what.into() };
        let series = |pick: &dyn Fn(&EpochPoint) -> (f64, f64), what: &str, dashed: bool| -> Vec<Series> {
            runs.iter()
                .enumerate()
                .map(|(i, run)| Series {
                    label: label(run, what),
                    color: series_color(i),
                    dashed,
                    points: run.epochs.iter().map(pick).filter(|p| p.1.is_finite()).collect(),
                })
                .collect()
        };
        let pct = |v: f64| 100.0 * v;
        let mut loss = series(&|e| (e.epoch, e.train_loss), "train", false);
        loss.extend(series(&|e| (e.epoch, e.test_loss), "test", true));
        let mut acc = series(&|e| (e.epoch, pct(e.train_acc)), "train", false);
        acc.extend(series(&|e| (e.epoch, pct(e.test_acc)), "test", true));
        let lr = series(&|e| (e.epoch, e.lr), "lr", false);
        let timed = series(&|e| (e.elapsed_seconds / 60.0, pct(e.test_acc)), "test", true);
        let figures = [
            Panel {
                title: "loss",
                x_label: "epoch",
                y_label: "cross-entropy",
                log_y: false,
                legend_at: SeriesLabelPosition::UpperRight,
                series: loss,
            },
            Panel {
                title: "accuracy",
                x_label: "epoch",
                y_label: "top-1 accuracy (%)",
                log_y: false,
                legend_at: SeriesLabelPosition::LowerRight,
                series: acc,
            },
            Panel {
                title: "learning rate",
                x_label: "epoch",
                y_label: "lr (end of epoch)",
                log_y: true,
                legend_at: SeriesLabelPosition::UpperRight,
                series: lr,
            },
            Panel {
                title: "test accuracy against training time",
                x_label: "training time (minutes)",
                y_label: "test top-1 accuracy (%)",
                log_y: false,
                legend_at: SeriesLabelPosition::LowerRight,
                series: timed,
            },
        ];
        for (area, panel) in panels.iter().zip(figures) {
            draw_panel(area, &panel)?;
        }
        root.present().map_err(plot_err)?;
    }
    canvas.save(path)
}

fn draw_panel(area: &Area, panel: &Panel) -> Result<()> {
    let points = || panel.series.iter().flat_map(|s| s.points.iter().copied());
    let x = padded_range(points().map(|p| p.0));
    let mut chart = ChartBuilder::on(area);
    chart.caption(panel.title, (FONT, 20)).margin(12).x_label_area_size(40).y_label_area_size(70);
    if panel.log_y {
        let positive = points().map(|p| p.1).filter(|v| *v > 0.0);
        let (lo, hi) = positive.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let (lo, hi) = if lo.is_finite() { (lo / 1.5, hi * 1.5) } else { (1e-6, 1.0) };
        let mut chart = chart.build_cartesian_2d(x, (lo..hi).log_scale()).map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc(panel.x_label)
            .y_desc(panel.y_label)
            .x_label_formatter(&|v| tick(*v))
            .y_label_formatter(&|v| format!("{v:.0e}"))
            .label_style((FONT, 14))
            .draw()
            .map_err(plot_err)?;
        for s in &panel.series {
            let drawn = chart
                .draw_series(LineSeries::new(s.points.iter().copied(), s.color.stroke_width(2)))
                .map_err(plot_err)?;
            legend(drawn, &s.label, s.color, s.dashed);
        }
        return finish_legend(&mut chart, panel);
    }
    let y = padded_range(points().map(|p| p.1));
    let mut chart = chart.build_cartesian_2d(x, y).map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc(panel.x_label)
        .y_desc(panel.y_label)
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .label_style((FONT, 14))
        .draw()
        .map_err(plot_err)?;
    for s in &panel.series {
        let style = s.color.stroke_width(2);
        let pts = s.points.iter().copied();
        let drawn = if s.dashed {
            chart.draw_series(DashedLineSeries::new(pts.clone(), 8, 5, style)).map_err(plot_err)?;
            chart.draw_series(pts.map(|p| Circle::new(p, 3, s.color.filled()))).map_err(plot_err)?
        } else {
            chart.draw_series(LineSeries::new(pts, style)).map_err(plot_err)?
        };
        legend(drawn, &s.label, s.color, s.dashed);
    }
    finish_legend(&mut chart, panel)
}

/// A tick label: whole numbers without decimals, others with as few as tell them apart.
fn tick(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Labels a drawn series and gives it a legend sample: a solid segment, or a dot on a dashed one.
fn legend<'a, DB: DrawingBackend + 'a>(anno: &mut SeriesAnno<'a, DB>, label: &str, color: RGBColor, dashed: bool) {
    let style = color.stroke_width(2);
    let anno = anno.label(label);
    if dashed {
        anno.legend(move |(x, y)| {
            EmptyElement::at((x, y))
                + PathElement::new(vec![(0, 0), (6, 0)], style)
                + PathElement::new(vec![(12, 0), (18, 0)], style)
                + Circle::new((9, 0), 3, color.filled())
        });
    } else {
        anno.legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
    }
}

fn finish_legend<'a, 'b: 'a, X, Y>(
    chart: &mut ChartContext<'a, BitMapBackend<'b>, Cartesian2d<X, Y>>,
    panel: &Panel,
) -> Result<()>
where
    X: Ranged,
    Y: Ranged,
{
    if panel.series.is_empty() {
        return Ok(());
    }
    chart
        .configure_series_labels()
        .position(panel.legend_at.clone())
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, 14))
        .draw()
        .map_err(plot_err)
}

/// `vit plot`: the curves of one run (written to `out`, default `RUN_DIR/curves.png`) or of
/// several overlaid (default `curves.png` in the current directory); returns the figure's path.
pub fn plot_runs(dirs: &[PathBuf], out: Option<&Path>) -> Result<PathBuf> {
    if dirs.is_empty() {
        return Err(Error::Config("vit plot: no run directory given".into()));
    }
    let runs = dirs.iter().map(|d| read_run(d)).collect::<Result<Vec<_>>>()?;
    let path = match out {
        Some(p) => p.to_path_buf(),
        None if dirs.len() == 1 => dirs[0].join("curves.png"),
        None => PathBuf::from("curves.png"),
    };
    draw_curves(&runs, &path)?;
    Ok(path)
}
