//! Fine-tuning (the paper's section 3.2, "Fine-tuning and higher resolution"): a pre-trained
//! model's weights as the starting point of a run on another task, possibly at a higher
//! resolution.
//!
//! From the paper: "we remove the pre-trained prediction head and attach a zero-initialized
//! D x K feedforward layer, where K is the number of downstream classes. It is often beneficial
//! to fine-tune at higher resolution than pre-training. When feeding images of higher
//! resolution, we keep the patch size the same, which results in a larger effective sequence
//! length. [...] We therefore perform 2D interpolation of the pre-trained position embeddings,
//! according to their location in the original image."
//!
//! So the fine-tune model is the source's encoder at the new image size with a new head:
//! every encoder tensor is copied, `pos_embed`'s patch part is interpolated to the new grid
//! (bicubic, as timm), a pre-logits layer is dropped (the fine-tune model has none, as the
//! official loader does), and the head is zero for the new class count. The recipe is the
//! paper's: SGD with momentum 0.9, no weight decay, global-norm clipping at 1, warmup then
//! cosine decay, batch 512 ([`FineTune::recipe`]). With `freeze_backbone` only the head trains:
//! a linear probe of the frozen features.

use std::path::PathBuf;

use super::{OptimizerKind, TrainConfig};
use crate::checkpoint::{self, check_config_against_file, Checkpoint, Interpolation, LoadOptions, LoadReport};
use crate::data::{AugmentConfig, DatasetKind};
use crate::dist::Comm;
use crate::error::{Error, Result};
use crate::nn::{Classifier, ParamStore, ViTConfig};
use crate::optim::Decay;

/// Where a fine-tuning run starts.
#[derive(Clone, Debug, PartialEq)]
pub struct FineTune {
    /// The pre-trained checkpoint (ours, or a timm state dict).
    pub checkpoint: PathBuf,
    /// Train the head alone (a linear probe); every other parameter stays as loaded.
    pub freeze_backbone: bool,
}

/// The parameter names that make up the classifier head, which fine-tuning replaces.
pub fn is_head(name: &str) -> bool {
    name.starts_with("head.")
}

impl FineTune {
    /// The fine-tune model: `source`'s encoder for `classes` classes of `image_size` pixels (the
    /// patch size kept, so the sequence grows with the image), no pre-logits layer.
    pub fn model_config(source: &ViTConfig, classes: usize, image_size: usize) -> ViTConfig {
        ViTConfig { num_classes: classes, image_size, representation_size: None, ..source.clone() }
    }

    /// The paper's fine-tuning recipe for `model` on `dataset`: SGD momentum 0.9, no weight
    /// decay, clipping at global norm 1, batch 512, `lr` 0.01 after a warmup of a tenth of the
    /// run, cosine decay to 0 over 5 epochs; no augmentation, label smoothing, dropout or
    /// stochastic depth.
    pub fn recipe(&self, model: ViTConfig, dataset: DatasetKind, out_dir: PathBuf) -> TrainConfig {
        TrainConfig {
            model: ViTConfig { dropout: 0.0, drop_path: 0.0, ..model },
            dataset,
            epochs: 5,
            batch_size: 512,
            optimizer: OptimizerKind::Sgd { momentum: 0.9, nesterov: false },
            lr: 0.01,
            min_lr: 0.0,
            warmup_epochs: 0.5,
            decay: Decay::Cosine,
            weight_decay: 0.0,
            label_smoothing: 0.0,
            clip_grad: Some(1.0),
            augment: AugmentConfig::none(),
            out_dir,
            finetune: Some(self.clone()),
            ..TrainConfig::default()
        }
    }

    /// Readies a fresh fine-tune model's `store` on every rank of `comm`: rank 0 loads the
    /// source's encoder ([`FineTune::load`]) unless the run resumes (its checkpoint then holds
    /// the fine-tuned values; the trainer broadcasts rank 0's parameters either way), and every
    /// rank freezes the backbone with `freeze_backbone` (constants on the tape, never decayed:
    /// [`ParamStore::freeze`]).
    pub fn prepare(&self, model: &ViTConfig, store: &mut ParamStore<f32>, resume: bool, comm: &Comm) -> Result<()> {
        if !resume {
            let load = || -> Result<()> {
                let r = self.load(model, store)?;
                let dropped = if r.dropped.is_empty() { "none".to_string() } else { r.dropped.join(", ") };
                eprintln!(
                    "fine-tuning from {}: {} tensors loaded ({} resized), head zero-initialised, dropped: {dropped}",
                    self.checkpoint.display(),
                    r.loaded.len(),
                    r.resized.len(),
                );
                Ok(())
            };
            comm.agree("waiting for rank 0 to load the pre-trained checkpoint", comm.is_root().then(load))?;
        }
        if self.freeze_backbone {
            store.freeze(|name| !is_head(name));
        }
        Ok(())
    }

    /// Loads the source checkpoint's encoder into `store` (a model built from `model`): every
    /// tensor but the classifier's, `pos_embed` interpolated to `model`'s grid; then zeroes the
    /// head. Errors name every tensor that does not fit.
    pub fn load(&self, model: &ViTConfig, store: &mut ParamStore<f32>) -> Result<LoadReport> {
        let ckpt = Checkpoint::open(&self.checkpoint)?;
        // The source's own layout, to check the file is the model it claims before loading.
        let source = match ckpt.config()? {
            Some(c) => c,
            None => checkpoint::infer_config(&ckpt, Some(model.heads))?,
        };
        check_config_against_file(&ckpt, &source)?;
        if (source.dim, source.depth, source.patch_size, source.in_chans, source.classifier, &source.resnet)
            != (model.dim, model.depth, model.patch_size, model.in_chans, model.classifier, &model.resnet)
        {
            return Err(Error::Config(format!(
                "{}: a {} model (dim {}, depth {}, patch {}, {} channels) cannot start a {} one (dim {}, depth {}, patch {}, {} channels)",
                self.checkpoint.display(),
                classifier_name(source.classifier),
                source.dim,
                source.depth,
                source.patch_size,
                source.in_chans,
                classifier_name(model.classifier),
                model.dim,
                model.depth,
                model.patch_size,
                model.in_chans
            )));
        }
        let opts = LoadOptions {
            allow_head_mismatch: true,
            resize_pos_embed: Some(Interpolation::BicubicAntialias),
            ..LoadOptions::default()
        };
        let report = checkpoint::load_params(&ckpt, model, store, &opts)?;
        checkpoint::check_finite(&ckpt, store.iter().map(|p| (p.name.as_str(), p.value.data())))?;
        for p in store.iter_mut().filter(|p| is_head(&p.name)) {
            p.value.data_mut().fill(0.0);
        }
        Ok(report)
    }
}

fn classifier_name(c: Classifier) -> &'static str {
    match c {
        Classifier::Token => "class-token",
        Classifier::Gap => "GAP",
    }
}
