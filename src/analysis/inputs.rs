//! The images a figure shows: files the user named, or test images of the dataset (the first
//! of each class), with their pixels in `[0, 1]` for drawing and normalised for the model.

use std::path::PathBuf;

use super::canvas::Raster;
use crate::data::{Dataset, Normalization};
use crate::error::Result;
use crate::nn::ViTConfig;

/// One image to show: where it came from, its pixels (`C x H x W` in `[0, 1]`), its label when
/// it comes from the dataset, and the caption written above it.
#[derive(Clone, Debug)]
pub struct ShownImage {
    /// The file name, or `test image i` for the dataset's image `i`.
    pub name: String,
    /// `C x H x W` values in `[0, 1]`, before normalisation.
    pub pixels: Vec<f32>,
    /// The true class, for a dataset image.
    pub label: Option<usize>,
    /// The text drawn above the image (see [`ShownImage::caption_with`]).
    pub caption: String,
}

impl ShownImage {
    /// The image as a `size x size` picture to paste into a figure.
    pub fn raster(&self, chans: usize, size: usize) -> Raster {
        Raster::from_chw(&self.pixels, chans, size, size)
    }

    /// Captions the image with its true class (if known) and the model's prediction.
    pub fn caption_with(&mut self, predicted: usize, class_names: &[String]) {
        let name = |i: usize| class_names.get(i).cloned().unwrap_or_else(|| format!("class {i}"));
        let first = match self.label {
            Some(l) => format!("true: {}", name(l)),
            None => self.name.clone(),
        };
        self.caption = format!("{first}\npred: {}", name(predicted));
    }
}

/// PNG files, which must be the model's input size (a figure about a resized image would be
/// about another image).
pub fn from_files(paths: &[PathBuf], config: &ViTConfig) -> Result<Vec<ShownImage>> {
    paths
        .iter()
        .map(|p| {
            let pixels = crate::image::read_image_exact(p, config.in_chans, config.image_size)?;
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            Ok(ShownImage { name, pixels, label: None, caption: String::new() })
        })
        .collect()
}

/// Up to `count` test images: the first of each class in class order, then the next ones.
pub fn from_dataset(test: &Dataset, count: usize) -> Vec<ShownImage> {
    let mut picked: Vec<usize> =
        (0..test.classes()).filter_map(|c| (0..test.len()).find(|&i| test.label(i) == c)).collect();
    let rest: Vec<usize> =
        (0..test.len()).filter(|i| !picked.contains(i)).take(count.saturating_sub(picked.len())).collect();
    picked.extend(rest);
    picked.truncate(count);
    indexed(test, picked)
}

/// Every image of `data`, in order.
pub fn all_of(data: &Dataset) -> Vec<ShownImage> {
    indexed(data, (0..data.len()).collect())
}

fn indexed(data: &Dataset, indices: Vec<usize>) -> Vec<ShownImage> {
    indices
        .into_iter()
        .map(|i| ShownImage {
            name: format!("test image {i}"),
            pixels: data.image(i).iter().map(|&v| v as f32 / 255.0).collect(),
            label: Some(data.label(i)),
            caption: String::new(),
        })
        .collect()
}

/// The model's input for `images`: their pixels normalised, one after the other.
pub fn model_input(images: &[ShownImage], norm: &Normalization, config: &ViTConfig) -> Vec<f32> {
    let shape = crate::data::ImageShape::new(config.in_chans, config.image_size, config.image_size);
    let mut x = Vec::with_capacity(images.len() * shape.len());
    for image in images {
        let mut pixels = image.pixels.clone();
        norm.normalize(&mut pixels, shape);
        x.extend(pixels);
    }
    x
}
