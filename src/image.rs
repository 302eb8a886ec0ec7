//! Reading PNG and JPEG images into the model's input layout (for `vit predict` and
//! `vit analyze`).
//!
//! An image's header says how large it is, and a few bytes can claim a huge image; so the size is
//! checked from the header before any pixel buffer is allocated: at most [`MAX_SIDE`] pixels a
//! side and [`MAX_PIXELS`] in all (the decoded buffer is then at most 4 bytes a pixel), and no
//! more pixels than the file's compressed data can code (a PNG's deflate stream expands at most
//! 1032:1; a JPEG codes every 8 x 8 block in at least a bit).

use std::io::Cursor;
use std::path::Path;

use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

use crate::error::{Error, Result};

/// The longest image side read, in pixels.
pub const MAX_SIDE: usize = 16384;
/// The most pixels an image may have (40 megapixels: at most 160 MB decoded).
pub const MAX_PIXELS: usize = 40_000_000;
/// The largest image file read, in bytes.
pub const MAX_FILE_BYTES: u64 = 256 << 20;
/// The most a deflate stream (PNG's image data) expands: 1032 to 1.
const MAX_DEFLATE_RATIO: usize = 1032;
/// Pixels a JPEG byte can code at most (512, with a margin of 2).
const MAX_JPEG_PIXELS_PER_BYTE: usize = 1024;

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
const JPEG_SIGNATURE: &[u8] = &[0xff, 0xd8, 0xff];

/// Decoded 8-bit pixels, interleaved (`chans` samples per pixel, row-major).
struct Pixels {
    width: usize,
    height: usize,
    chans: usize,
    data: Vec<u8>,
}

/// Reads a PNG or JPEG (told apart by their signatures, not the name) as `chans x size x size`
/// floats in `[0, 1]` (CHW); see [`decode_image`].
pub fn read_image(path: &Path, chans: usize, size: usize) -> Result<Vec<f32>> {
    let len = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
    if len > MAX_FILE_BYTES {
        return Err(Error::Data(format!(
            "{}: a file of {len} bytes, more than the {MAX_FILE_BYTES} an image may have",
            path.display()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_image(&bytes, chans, size).map_err(|m| Error::Data(format!("{}: {m}", path.display())))
}

/// [`read_image`] for an image that must already be `size x size` (where resizing would change
/// what a figure claims about the image): another size is an error naming both.
pub fn read_image_exact(path: &Path, chans: usize, size: usize) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |m: String| Error::Data(format!("{}: {m}", path.display()));
    let pixels = decode_pixels(&bytes).map_err(bad)?;
    if (pixels.width, pixels.height) != (size, size) {
        return Err(bad(format!(
            "the image is {}x{} pixels but the model takes {size}x{size}",
            pixels.width, pixels.height
        )));
    }
    Ok(resize(&pixels, chans, size))
}

/// Decodes a PNG or JPEG as `chans x size x size` floats in `[0, 1]` (CHW), converting colour to
/// grey (ITU-R 601 luma) or grey to colour as the model needs, and resizing bilinearly (pixel
/// centres aligned, as `align_corners=False`) when the image is another size. The error is a
/// sentence about the bytes (the caller adds the file name).
pub fn decode_image(bytes: &[u8], chans: usize, size: usize) -> std::result::Result<Vec<f32>, String> {
    Ok(resize(&decode_pixels(bytes)?, chans, size))
}

/// A PNG or JPEG, told apart by its signature, decoded to 8-bit samples.
fn decode_pixels(bytes: &[u8]) -> std::result::Result<Pixels, String> {
    if bytes.starts_with(PNG_SIGNATURE) {
        decode_png(bytes)
    } else if bytes.starts_with(JPEG_SIGNATURE) {
        decode_jpeg(bytes)
    } else {
        Err("not a readable PNG or JPEG image (no PNG or JPEG signature)".into())
    }
}

/// The size check shared by both formats, from the header alone.
fn check_size(width: usize, height: usize) -> std::result::Result<(), String> {
    if width == 0 || height == 0 {
        return Err(format!("the image is {width} x {height} pixels: empty"));
    }
    if width > MAX_SIDE || height > MAX_SIDE || width * height > MAX_PIXELS {
        return Err(format!(
            "the image is {width} x {height} pixels, larger than the {MAX_SIDE} pixels a side and \
             {MAX_PIXELS} pixels in all that are read; scale it down first"
        ));
    }
    Ok(())
}

fn decode_png(bytes: &[u8]) -> std::result::Result<Pixels, String> {
    // The size first, straight from the IHDR chunk that must follow the signature: the decoder
    // reads on to the image data before it reports it.
    if bytes.len() >= 24 && &bytes[12..16] == b"IHDR" {
        let be = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]) as usize;
        check_size(be(16), be(20))?;
    }
    let limits = png::Limits { bytes: 4 * MAX_PIXELS + (1 << 20) };
    let mut decoder = png::Decoder::new_with_limits(Cursor::new(bytes), limits);
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().map_err(|e| format!("not a readable PNG: {e}"))?;
    let info = reader.info();
    let (width, height) = (info.width as usize, info.height as usize);
    check_size(width, height)?;
    // The pixel data is a deflate stream of at least `height * row bytes`: a file too short to
    // hold it is corrupt, whatever its header says.
    let bits = info.bits_per_pixel();
    let least = height * (width * bits).div_ceil(8);
    if least > bytes.len().saturating_mul(MAX_DEFLATE_RATIO) {
        return Err(format!(
            "corrupt PNG: {width} x {height} pixels need at least {least} bytes of image data, more than \
             a file of {} bytes can hold",
            bytes.len()
        ));
    }
    let size = reader.output_buffer_size().ok_or_else(|| "corrupt PNG: image too large".to_string())?;
    let mut data = vec![0; size];
    let frame = reader.next_frame(&mut data).map_err(|e| format!("corrupt PNG: {e}"))?;
    let chans = frame.color_type.samples();
    data.truncate(frame.buffer_size());
    Ok(Pixels { width: frame.width as usize, height: frame.height as usize, chans, data })
}

fn decode_jpeg(bytes: &[u8]) -> std::result::Result<Pixels, String> {
    let options = DecoderOptions::default()
        .set_max_width(MAX_SIDE)
        .set_max_height(MAX_SIDE)
        .jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder.decode_headers().map_err(|e| format!("not a readable JPEG: {e}"))?;
    let (width, height) = decoder.dimensions().ok_or_else(|| "not a readable JPEG: no frame header".to_string())?;
    check_size(width, height)?;
    // Every 8 x 8 block of every component is coded in at least one bit (its DC difference), so
    // a file of n bytes holds at most 512 n pixels; a header claiming more is lying.
    if width * height > MAX_JPEG_PIXELS_PER_BYTE * bytes.len() {
        return Err(format!(
            "corrupt JPEG: {width} x {height} pixels cannot be coded in a file of {} bytes",
            bytes.len()
        ));
    }
    let size = decoder.output_buffer_size().ok_or_else(|| "corrupt JPEG: image too large".to_string())?;
    if size != width * height * 3 {
        return Err(format!("corrupt JPEG: {size} output bytes for {width} x {height} RGB pixels"));
    }
    let mut data = vec![0; size];
    decoder.decode_into(&mut data).map_err(|e| format!("corrupt JPEG: {e}"))?;
    Ok(Pixels { width, height, chans: 3, data })
}

/// The pixels as `chans` planes of `size x size`, in `[0, 1]`, resized bilinearly.
fn resize(p: &Pixels, chans: usize, size: usize) -> Vec<f32> {
    let (w, h, src_chans) = (p.width, p.height, p.chans);
    let px = |x: usize, y: usize, c: usize| p.data[(y * w + x) * src_chans + c] as f32 / 255.0;
    // The source as `chans` planes, ignoring alpha.
    let colour = src_chans >= 3;
    let plane = |c: usize, x: usize, y: usize| -> f32 {
        match (chans, colour) {
            (1, true) => 0.299 * px(x, y, 0) + 0.587 * px(x, y, 1) + 0.114 * px(x, y, 2),
            (_, true) => px(x, y, c.min(2)),
            (_, false) => px(x, y, 0),
        }
    };
    let mut out = Vec::with_capacity(chans * size * size);
    for c in 0..chans {
        out.extend(resize_bilinear(w, h, size, |x, y| plane(c, x, y)));
    }
    out
}

/// A `w x h` plane, read through `at(x, y)`, resized bilinearly to `size x size` with pixel
/// centres aligned (`align_corners=False`): each output pixel samples the source at the position
/// of its centre, clamped to the edge pixels.
pub fn resize_bilinear(w: usize, h: usize, size: usize, at: impl Fn(usize, usize) -> f32) -> Vec<f32> {
    let (sx, sy) = (w as f32 / size as f32, h as f32 / size as f32);
    let mut out = Vec::with_capacity(size * size);
    for oy in 0..size {
        let fy = ((oy as f32 + 0.5) * sy - 0.5).clamp(0.0, (h - 1) as f32);
        let (y0, ty) = (fy.floor() as usize, fy - fy.floor());
        let y1 = (y0 + 1).min(h - 1);
        for ox in 0..size {
            let fx = ((ox as f32 + 0.5) * sx - 0.5).clamp(0.0, (w - 1) as f32);
            let (x0, tx) = (fx.floor() as usize, fx - fx.floor());
            let x1 = (x0 + 1).min(w - 1);
            let top = at(x0, y0) * (1.0 - tx) + at(x1, y0) * tx;
            let bottom = at(x0, y1) * (1.0 - tx) + at(x1, y1) * tx;
            out.push(top * (1.0 - ty) + bottom * ty);
        }
    }
    out
}
