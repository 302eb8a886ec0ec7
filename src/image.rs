//! Reading PNG images into the model's input layout (for `vit predict` and `vit analyze`).

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use crate::error::{Error, Result};

/// Decodes a PNG to 8-bit samples: `(samples, width, height, samples per pixel)`.
fn decode(path: &Path) -> Result<(Vec<u8>, usize, usize, usize)> {
    let bad = |m: String| Error::Data(format!("{}: {m}", path.display()));
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut decoder = png::Decoder::new(BufReader::new(file));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().map_err(|e| bad(format!("not a readable PNG: {e}")))?;
    let mut buf = vec![0; reader.output_buffer_size().ok_or_else(|| bad("image too large".into()))?];
    let info = reader.next_frame(&mut buf).map_err(|e| bad(format!("corrupt PNG: {e}")))?;
    Ok((buf, info.width as usize, info.height as usize, info.color_type.samples()))
}

/// [`read_png`] for an image that must already be `size x size` (where resizing would change
/// what a figure claims about the image): another size is an error naming both.
pub fn read_png_exact(path: &Path, chans: usize, size: usize) -> Result<Vec<f32>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = png::Decoder::new(BufReader::new(file))
        .read_info()
        .map_err(|e| Error::Data(format!("{}: not a readable PNG: {e}", path.display())))?;
    let (w, h) = (reader.info().width as usize, reader.info().height as usize);
    if (w, h) != (size, size) {
        return Err(Error::Data(format!(
            "{}: the image is {w}x{h} pixels but the model takes {size}x{size}",
            path.display()
        )));
    }
    read_png(path, chans, size)
}

/// Reads a PNG as `chans x size x size` floats in `[0, 1]` (CHW), converting colour to grey
/// (ITU-R 601 luma) or grey to colour as the model needs, and resizing bilinearly (pixel
/// centres aligned, as `align_corners=False`) when the image is another size.
pub fn read_png(path: &Path, chans: usize, size: usize) -> Result<Vec<f32>> {
    let (buf, w, h, src_chans) = decode(path)?;
    let px = |x: usize, y: usize, c: usize| buf[(y * w + x) * src_chans + c] as f32 / 255.0;
    // The source as `chans` planes, ignoring alpha.
    let colour = src_chans >= 3;
    let plane = |c: usize, x: usize, y: usize| -> f32 {
        match (chans, colour) {
            (1, true) => 0.299 * px(x, y, 0) + 0.587 * px(x, y, 1) + 0.114 * px(x, y, 2),
            (_, true) => px(x, y, c.min(2)),
            (_, false) => px(x, y, 0),
        }
    };
    let mut out = vec![0.0; chans * size * size];
    let (sx, sy) = (w as f32 / size as f32, h as f32 / size as f32);
    for c in 0..chans {
        for oy in 0..size {
            let fy = ((oy as f32 + 0.5) * sy - 0.5).clamp(0.0, (h - 1) as f32);
            let (y0, ty) = (fy.floor() as usize, fy - fy.floor());
            let y1 = (y0 + 1).min(h - 1);
            for ox in 0..size {
                let fx = ((ox as f32 + 0.5) * sx - 0.5).clamp(0.0, (w - 1) as f32);
                let (x0, tx) = (fx.floor() as usize, fx - fx.floor());
                let x1 = (x0 + 1).min(w - 1);
                let top = plane(c, x0, y0) * (1.0 - tx) + plane(c, x1, y0) * tx;
                let bottom = plane(c, x0, y1) * (1.0 - tx) + plane(c, x1, y1) * tx;
                out[(c * size + oy) * size + ox] = top * (1.0 - ty) + bottom * ty;
            }
        }
    }
    Ok(out)
}
