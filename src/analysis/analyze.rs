//! `vit analyze`: the four figures of the paper's section 4.5 for a trained model, on the
//! dataset it was trained on — attention rollout and per-layer maps for a few images, mean
//! attention distance over a sample of test images, position-embedding similarity and the
//! principal components of the patch-embedding filters.

use std::fs;
use std::path::{Path, PathBuf};

use super::attention::{attention_maps, AttentionMaps};
use super::distance::{write_distance, DistanceSums};
use super::filters::{write_filters, write_stem_filters};
use super::inputs;
use super::layers::write_layers;
use super::pos_embed::write_pos_embed;
use super::rollout::{image_maps, write_rollout, ImageMaps};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::nn::{ParamStore, VisionTransformer};
use crate::train::metrics::argmax;

/// What to analyse and where the figures go.
#[derive(Clone, Debug)]
pub struct AnalyzeOptions {
    /// The folder the figures (PNG) and their data (JSON) are written to; created if missing.
    pub out_dir: PathBuf,
    /// PNG images (of the model's input size) for the rollout figures; none: test images.
    pub images: Vec<PathBuf>,
    /// How many test images to show when no image is given (the first of each class first).
    pub shown: usize,
    /// How many test images the mean attention distance averages over.
    pub samples: usize,
    /// Images per forward pass.
    pub batch_size: usize,
}

impl Default for AnalyzeOptions {
    fn default() -> Self {
        AnalyzeOptions {
            out_dir: PathBuf::from("analysis"),
            images: Vec::new(),
            shown: 10,
            samples: 128,
            batch_size: 32,
        }
    }
}

/// Writes every figure (PNG) and its numbers (CSV or JSON) into `opts.out_dir`; returns the
/// paths written. `test` is the test split of the dataset the model was trained on.
pub fn analyze(
    model: &VisionTransformer,
    params: &ParamStore<f32>,
    test: &Dataset,
    opts: &AnalyzeOptions,
) -> Result<Vec<PathBuf>> {
    let c = &model.config;
    let shape = test.shape();
    if (shape.c, shape.h, shape.w) != (c.in_chans, c.image_size, c.image_size) || test.classes() > c.num_classes {
        return Err(Error::Config(format!(
            "the model takes {}x{}x{} images in {} classes; the data has {shape} images in {}",
            c.in_chans,
            c.image_size,
            c.image_size,
            c.num_classes,
            test.classes()
        )));
    }
    if opts.batch_size == 0 || opts.samples == 0 {
        return Err(Error::Config("analyze: --samples and the batch size must be at least 1".into()));
    }
    // Read the images before the first file is written: a bad image leaves nothing behind.
    let mut shown = if opts.images.is_empty() {
        inputs::from_dataset(test, opts.shown)
    } else {
        inputs::from_files(&opts.images, c)?
    };
    create_dir(&opts.out_dir)?;

    let mut maps: Vec<ImageMaps> = Vec::new();
    for chunk in shown.chunks_mut(opts.batch_size) {
        let a = attention_maps(model, params, inputs::model_input(chunk, test.normalization(), c));
        for (b, image) in chunk.iter_mut().enumerate() {
            image.caption_with(argmax(&a.logits[b * c.num_classes..(b + 1) * c.num_classes]), test.class_names());
            maps.push(image_maps(&a, b));
        }
    }
    let mut written = write_rollout(&shown, &maps, c, &opts.out_dir)?;
    written.extend(write_layers(&shown, &maps, c, &opts.out_dir)?);

    let sample = test.take(opts.samples);
    let mut sums = DistanceSums::new(c);
    let all = inputs::all_of(&sample);
    for chunk in all.chunks(opts.batch_size) {
        let a: AttentionMaps = attention_maps(model, params, inputs::model_input(chunk, test.normalization(), c));
        sums.add(&a);
    }
    written.extend(write_distance(&sums.means(), sums.images, c, &opts.out_dir)?);
    written.extend(write_pos_embed(params.get(model.pos_embed).value.data(), c, &opts.out_dir)?);
    match &model.patch_embed.backbone {
        // The hybrid's patch embedding reads the stem's feature channels, not pixels: draw the
        // stem's filters, the first map that reads pixels.
        Some(stem) => {
            let conv = &stem.conv;
            let shape = (conv.out_chans, c.in_chans, conv.kernel);
            written.extend(write_stem_filters(params.get(conv.weight).value.data(), shape, conv.eps, &opts.out_dir)?);
        }
        None => written.extend(write_filters(params.get(model.patch_embed.weight).value.data(), c, &opts.out_dir)?),
    }
    Ok(written)
}

/// Creates the output directory, saying which path could not be made.
fn create_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    // Creating succeeds on an existing directory we may not write to: find out now, not after
    // the forward passes.
    let probe = dir.join(".vit-analyze-write-test");
    fs::write(&probe, b"").map_err(|e| Error::io(dir, e))?;
    fs::remove_file(&probe).map_err(|e| Error::io(&probe, e))
}
