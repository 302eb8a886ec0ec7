//! Normalisation: pixels in `[0, 1]` to the model domain, per channel.

use super::check_len;
use crate::data::ImageShape;
use crate::{Error, Result};

/// Per-channel normalisation statistics of pixels in `[0, 1]`: `x' = (x - mean) / std`.
#[derive(Clone, Debug, PartialEq)]
pub struct Normalization {
    /// Per-channel mean.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation (positive).
    pub std: Vec<f32>,
}

impl Normalization {
    /// Checks there is one positive, finite std and one finite mean per channel.
    pub fn check(&self, channels: usize) -> Result<()> {
        if self.mean.len() != channels || self.std.len() != channels {
            return Err(Error::Data(format!(
                "normalisation needs one mean and one std per channel: expected {channels}, found {} means \
                 and {} stds",
                self.mean.len(),
                self.std.len()
            )));
        }
        if let Some(s) = self.std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(Error::Data(format!("normalisation std must be finite and > 0, found {s}")));
        }
        if let Some(m) = self.mean.iter().find(|m| !m.is_finite()) {
            return Err(Error::Data(format!("normalisation mean must be finite, found {m}")));
        }
        Ok(())
    }

    /// `x = (x - mean[c]) / std[c]` in place, for one CHW image.
    pub fn normalize(&self, img: &mut [f32], shape: ImageShape) {
        check_len("normalize", img, shape);
        for (c, plane) in img.chunks_exact_mut(shape.plane()).enumerate() {
            let (m, inv) = (self.mean[c], 1.0 / self.std[c]);
            plane.iter_mut().for_each(|v| *v = (*v - m) * inv);
        }
    }

    /// The model-domain value of every byte, per channel: `table[c][b]` is what
    /// [`to_unit`](super::to_unit) then [`Normalization::normalize`] make of byte `b` in channel
    /// `c`, computed by the same operations, so a lookup gives the same bits.
    pub fn byte_table(&self) -> Vec<[f32; 256]> {
        (0..self.mean.len())
            .map(|c| {
                let (m, inv) = (self.mean[c], 1.0 / self.std[c]);
                std::array::from_fn(|b| (b as f32 * (1.0 / 255.0) - m) * inv)
            })
            .collect()
    }

    /// The inverse of [`Normalization::normalize`]: `x = x * std[c] + mean[c]`.
    pub fn denormalize(&self, img: &mut [f32], shape: ImageShape) {
        check_len("denormalize", img, shape);
        for (c, plane) in img.chunks_exact_mut(shape.plane()).enumerate() {
            let (m, s) = (self.mean[c], self.std[c]);
            plane.iter_mut().for_each(|v| *v = *v * s + m);
        }
    }
}
