//! A dataset brought to another input shape: its images resized (fine-tuning at a higher
//! resolution upsamples its inputs, the paper's section 3.2) and grey images repeated over the
//! channels of a colour model.

use super::{Dataset, ImageShape, Normalization};
use crate::error::{Error, Result};
use crate::image::resize_bilinear;

/// The most bytes a reshaped dataset may hold (images are kept in memory as bytes).
pub const MAX_RESHAPED_BYTES: usize = 16 << 30;

impl Dataset {
    /// This dataset with every image resized bilinearly to `shape.h x shape.w` (square) and, if
    /// it is grey and `shape` has more channels, the grey plane repeated over them (the
    /// normalisation statistics repeated with it). The same dataset when the shape already fits.
    pub fn to_shape(&self, shape: ImageShape) -> Result<Dataset> {
        let from = self.shape;
        if shape == from {
            return Ok(self.clone());
        }
        if shape.h != shape.w || shape.is_empty() {
            return Err(Error::Data(format!("cannot resize {from} images to {shape}: the target must be square")));
        }
        if shape.c != from.c && from.c != 1 {
            return Err(Error::Data(format!(
                "cannot turn {from} images into {shape} ones: only grey images are repeated over channels"
            )));
        }
        let bytes = shape.len().checked_mul(self.len()).filter(|&b| b <= MAX_RESHAPED_BYTES).ok_or_else(|| {
            Error::Data(format!(
                "{} images of {shape} would take more than {} GiB; take a subset",
                self.len(),
                MAX_RESHAPED_BYTES >> 30
            ))
        })?;
        let mut images = Vec::with_capacity(bytes);
        for i in 0..self.len() {
            let image = self.image(i);
            for c in 0..shape.c {
                let plane = &image[(c % from.c) * from.plane()..][..from.plane()];
                let resized = if (from.h, from.w) == (shape.h, shape.w) {
                    plane.iter().map(|&v| v as f32).collect()
                } else {
                    resize_bilinear(from.w, from.h, shape.h, |x, y| plane[y * from.w + x] as f32)
                };
                images.extend(resized.into_iter().map(|v| v.round().clamp(0.0, 255.0) as u8));
            }
        }
        let repeat = |v: &[f32]| (0..shape.c).map(|c| v[c % v.len()]).collect();
        let n = &self.normalization;
        let normalization = Normalization { mean: repeat(&n.mean), std: repeat(&n.std) };
        Ok(Dataset { images, labels: self.labels.clone(), shape, normalization, ..self.clone_meta() })
    }
}
