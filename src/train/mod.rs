//! Training: the recipe ([`TrainConfig`]), the loop ([`train`]), evaluation ([`evaluate`]) and
//! metrics.
//!
//! One step, as data flows through the floors of the house:
//!
//! ```text
//!     Batch (loader thread) -> Tensor -> tape: ViT forward -> cross-entropy -> backward
//!       -> gradients (moved out of the tape) -> clip global norm -> optimizer -> ParamStore
//! ```

pub mod evaluate;
pub mod metrics;
pub mod step;
pub mod trainer;

use std::path::PathBuf;

pub use evaluate::{evaluate, predict_logits};
pub use metrics::Metrics;
pub use step::{train_step, StepOutput};
pub use trainer::{train, train_on, EpochRecord, TrainReport, META_DATASET};

use crate::data::{AugmentConfig, DatasetKind};
use crate::error::{Error, Result};
use crate::nn::ViTConfig;
use crate::optim::Decay;

/// Which optimizer a run uses.
#[derive(Clone, Debug, PartialEq)]
pub enum OptimizerKind {
    AdamW { beta1: f64, beta2: f64, eps: f64 },
    Sgd { momentum: f64, nesterov: bool },
}

impl OptimizerKind {
    pub fn name(&self) -> &'static str {
        match self {
            OptimizerKind::AdamW { .. } => "adamw",
            OptimizerKind::Sgd { .. } => "sgd",
        }
    }
}

/// A whole training run: model, data, optimisation and bookkeeping.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    pub model: ViTConfig,
    pub dataset: DatasetKind,
    pub data_dir: PathBuf,
    /// Train on the first `n` training images only (quick experiments and tests).
    pub train_subset: Option<usize>,
    /// Evaluate on the first `n` test images only.
    pub test_subset: Option<usize>,
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: OptimizerKind,
    /// Peak learning rate, reached after warmup.
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_epochs: f64,
    pub decay: Decay,
    pub weight_decay: f64,
    pub label_smoothing: f64,
    /// Global-norm gradient clipping threshold (`None`: no clipping).
    pub clip_grad: Option<f64>,
    pub augment: AugmentConfig,
    pub seed: u64,
    /// Where checkpoints (`last.safetensors`, `best.safetensors`) and `metrics.jsonl` go.
    pub out_dir: PathBuf,
    /// Continue from `out_dir/last.safetensors`.
    pub resume: bool,
    /// Show a progress bar (and download progress).
    pub progress: bool,
    /// Stop after this many optimizer steps in total (benchmarks, tests); `None`: run all epochs.
    pub max_steps: Option<u64>,
}

impl TrainConfig {
    /// The default recipe: ViT-Tiny, patch 4, 32 x 32 CIFAR-10, AdamW (lr 1e-3, wd 0.05,
    /// betas 0.9/0.999) with 5 warmup epochs then cosine decay, batch 128, label smoothing 0.1,
    /// stochastic depth 0.1, gradient clipping at 1, random crop (pad 4) and horizontal flip.
    pub fn cifar10_default() -> Self {
        let mut model = ViTConfig::tiny(4, 32);
        model.num_classes = 10;
        model.drop_path = 0.1;
        TrainConfig {
            model,
            dataset: DatasetKind::Cifar10,
            data_dir: PathBuf::from("data"),
            train_subset: None,
            test_subset: None,
            epochs: 50,
            batch_size: 128,
            optimizer: OptimizerKind::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8 },
            lr: 1e-3,
            min_lr: 1e-5,
            warmup_epochs: 5.0,
            decay: Decay::Cosine,
            weight_decay: 0.05,
            label_smoothing: 0.1,
            clip_grad: Some(1.0),
            augment: AugmentConfig::for_dataset(DatasetKind::Cifar10),
            seed: 0,
            out_dir: PathBuf::from("runs/vit-ti4-cifar10"),
            resume: false,
            progress: true,
            max_steps: None,
        }
    }

    /// Checks what the model config does not: the optimisation settings.
    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        let bad = |m: String| Err(Error::Config(m));
        if self.batch_size == 0 {
            return bad("batch size must be at least 1".into());
        }
        if !self.lr.is_finite() || self.lr <= 0.0 {
            return bad(format!("learning rate must be positive, got {}", self.lr));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return bad(format!("label smoothing must be in [0, 1), got {}", self.label_smoothing));
        }
        if self.weight_decay < 0.0 || self.warmup_epochs < 0.0 || self.min_lr < 0.0 {
            return bad("weight decay, warmup and min lr must be non-negative".into());
        }
        if let Some(c) = self.clip_grad {
            if c.is_nan() || c <= 0.0 {
                return bad(format!("gradient clipping threshold must be positive, got {c}"));
            }
        }
        let shape = self.dataset.shape();
        let m = &self.model;
        if m.in_chans != shape.c || m.image_size != shape.h || shape.h != shape.w {
            return bad(format!(
                "the model expects {}x{}x{} images but {} has {}x{}x{}",
                m.in_chans, m.image_size, m.image_size, self.dataset, shape.c, shape.h, shape.w
            ));
        }
        if m.num_classes != self.dataset.classes() {
            return bad(format!(
                "the model has {} classes but {} has {}",
                m.num_classes,
                self.dataset,
                self.dataset.classes()
            ));
        }
        Ok(())
    }
}
