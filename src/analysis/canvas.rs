//! The surface every figure draws on: an RGB buffer that plotters' bitmap backend paints, saved
//! as PNG with the `png` crate, with text in a font embedded in the binary.
//!
//! The font is DejaVu Sans cut down to the characters figures use (`assets/fonts/`, with its
//! licence), registered with plotters' `ab_glyph` text renderer. Nothing is looked up on the
//! system, so a bare machine with no fonts installed still draws labelled axes.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{Error, Result};

/// The family name figures ask plotters for; it resolves to the embedded font.
pub const FONT: &str = "sans-serif";

static FONT_BYTES: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-subset.ttf");

/// Registers the embedded font once per process (every style falls back to it).
fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES).is_ok());
    if ok {
        Ok(())
    } else {
        Err(Error::Plot("the embedded font does not parse".into()))
    }
}

/// Turns a plotters error into ours.
pub fn plot_err<E: std::fmt::Debug>(e: E) -> Error {
    Error::Plot(format!("{e:?}"))
}

/// A white RGB image of `width x height` pixels to draw a figure on.
pub struct Canvas {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    rgb: Vec<u8>,
}

/// The drawing area plotters gives for a canvas.
pub type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

impl Canvas {
    /// A blank white canvas. Registers the embedded font with plotters first, so text can be
    /// drawn without any system font; fails only if that font does not parse.
    pub fn new(width: u32, height: u32) -> Result<Self> {
        register_font()?;
        Ok(Canvas { width, height, rgb: vec![255; width as usize * height as usize * 3] })
    }

    /// The whole canvas as a plotters drawing area; draw, then drop it before [`Canvas::save`].
    pub fn area(&mut self) -> Area<'_> {
        BitMapBackend::with_buffer(&mut self.rgb, (self.width, self.height)).into_drawing_area()
    }

    /// Writes the canvas as an 8-bit RGB PNG.
    pub fn save(&self, path: &Path) -> Result<()> {
        let file = File::create(path).map_err(|e| Error::io(path, e))?;
        let mut encoder = png::Encoder::new(BufWriter::new(file), self.width, self.height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let fail = |e: png::EncodingError| match e {
            png::EncodingError::IoError(io) => Error::io(path, io),
            e => Error::Plot(format!("{}: {e}", path.display())),
        };
        let mut writer = encoder.write_header().map_err(fail)?;
        writer.write_image_data(&self.rgb).map_err(fail)?;
        writer.finish().map_err(fail)
    }
}

/// A small picture to paste into a figure: `width x height` RGB pixels, row-major.
#[derive(Clone, Debug)]
pub struct Raster {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `width * height` colours, row-major, top row first.
    pub pixels: Vec<RGBColor>,
}

impl Raster {
    /// An image from CHW values in `[0, 1]` (one channel is grey, three are RGB).
    pub fn from_chw(values: &[f32], chans: usize, height: usize, width: usize) -> Self {
        let plane = height * width;
        assert_eq!(values.len(), chans * plane, "Raster: {} values for {chans}x{height}x{width}", values.len());
        let byte = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
        let pixels = (0..plane)
            .map(|i| {
                let c = |ch: usize| byte(values[ch.min(chans - 1) * plane + i]);
                RGBColor(c(0), c(1), c(2))
            })
            .collect();
        Raster { width, height, pixels }
    }

    /// A heat map of `values` (row-major `height x width`) through `colormap`, with `lo..hi`
    /// mapped to the ends of the map.
    pub fn heat(values: &[f64], height: usize, width: usize, lo: f64, hi: f64) -> Self {
        assert_eq!(values.len(), height * width, "Raster::heat: {} values for {height}x{width}", values.len());
        let span = if hi > lo { hi - lo } else { 1.0 };
        let pixels = values.iter().map(|&v| viridis((v - lo) / span)).collect();
        Raster { width, height, pixels }
    }

    /// Pastes the raster with its top-left corner at `(x, y)`, each pixel a `scale x scale`
    /// square (nearest neighbour: the picture's own pixels stay visible).
    pub fn draw(&self, area: &Area, (x, y): (i32, i32), scale: u32) -> Result<()> {
        let s = scale as i32;
        for (i, &color) in self.pixels.iter().enumerate() {
            let (px, py) = (x + (i % self.width) as i32 * s, y + (i / self.width) as i32 * s);
            area.draw(&Rectangle::new([(px, py), (px + s, py + s)], color.filled())).map_err(plot_err)?;
        }
        Ok(())
    }
}

/// The viridis colour map at `t` in `[0, 1]` (matplotlib's default; perceptually uniform and
/// readable in grey), interpolated between nine of its samples.
pub fn viridis(t: f64) -> RGBColor {
    const STOPS: [(u8, u8, u8); 9] = [
        (68, 1, 84),
        (71, 44, 122),
        (59, 81, 139),
        (44, 113, 142),
        (33, 144, 141),
        (39, 173, 129),
        (92, 200, 99),
        (170, 220, 50),
        (253, 231, 37),
    ];
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) } * (STOPS.len() - 1) as f64;
    let i = (t.floor() as usize).min(STOPS.len() - 2);
    let f = t - i as f64;
    let mix = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * f).round() as u8;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Distinct colours for series (the "tab10" palette).
pub fn series_color(i: usize) -> RGBColor {
    const TAB10: [(u8, u8, u8); 10] = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ];
    let (r, g, b) = TAB10[i % TAB10.len()];
    RGBColor(r, g, b)
}

/// A horizontal colour bar for `lo..hi` at `(x, y)`, `w x h` pixels, with its end values.
pub fn colorbar(area: &Area, (x, y): (i32, i32), (w, h): (i32, i32), lo: f64, hi: f64, label: &str) -> Result<()> {
    for i in 0..w {
        let color = viridis(i as f64 / (w - 1).max(1) as f64);
        area.draw(&Rectangle::new([(x + i, y), (x + i + 1, y + h)], color.filled())).map_err(plot_err)?;
    }
    let style = (FONT, 14).into_font().color(&BLACK);
    let text = |s: String, at: (i32, i32)| area.draw(&Text::new(s, at, style.clone())).map_err(plot_err);
    text(format!("{lo:.2}"), (x, y + h + 4))?;
    text(format!("{hi:.2}"), (x + w - 30, y + h + 4))?;
    text(label.to_string(), (x + w + 12, y))?;
    Ok(())
}

/// A range covering `values` with a little room on both sides (and a non-empty one for a single
/// value), ignoring non-finite values; `0..1` when there is none.
pub fn padded_range(values: impl IntoIterator<Item = f64>) -> std::ops::Range<f64> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.into_iter().filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        return 0.0..1.0;
    }
    let pad = if hi > lo { 0.05 * (hi - lo) } else { 0.05 * lo.abs().max(1e-3) };
    (lo - pad)..(hi + pad)
}
