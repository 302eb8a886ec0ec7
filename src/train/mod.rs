//! Training: the recipe ([`TrainConfig`]), the loop ([`train`]), evaluation ([`evaluate()`]) and
//! metrics.
//!
//! One step, as data flows through the floors of the house:
//!
//! ```text
//!     Batch (loader thread) -> Tensor -> tape: ViT forward -> cross-entropy -> backward
//!       -> gradients (moved out of the tape) -> clip global norm -> optimizer -> ParamStore
//! ```

pub mod evaluate;
pub mod finetune;
pub mod interrupt;
pub mod log;
pub mod metrics;
pub mod recipe;
pub mod step;
pub mod trainer;

mod checkpointing;
mod replicas;

use std::path::PathBuf;

pub use crate::checkpoint::DATASET_KEY as META_DATASET;
pub use evaluate::{evaluate, evaluate_until, predict_logits};
pub use finetune::FineTune;
pub use log::EpochRecord;
pub use metrics::Metrics;
pub use recipe::{recipe, recipe_differences, RECIPE_KEY, SAFE_TO_CHANGE_ON_RESUME};
pub use step::{train_step, train_step_sharded, Sharding, StepOutput};
pub use trainer::{train, train_on, train_on_with, train_with, TrainReport};

use autograd::Device;

use crate::budget;
use crate::data::{AugmentConfig, DatasetKind, ImageShape};
use crate::error::{Error, Result};
use crate::nn::ViTConfig;
use crate::optim::Decay;

/// Which optimizer a run uses.
#[derive(Clone, Debug, PartialEq)]
pub enum OptimizerKind {
    /// AdamW with its moment decay rates and denominator epsilon.
    AdamW {
        /// Decay of the first moment.
        beta1: f64,
        /// Decay of the second moment.
        beta2: f64,
        /// Added to the second moment's square root.
        eps: f64,
    },
    /// SGD with momentum.
    Sgd {
        /// Momentum factor in `[0, 1)`.
        momentum: f64,
        /// Nesterov's form of momentum.
        nesterov: bool,
    },
}

impl OptimizerKind {
    /// The command-line name (`--optimizer`).
    pub fn name(&self) -> &'static str {
        match self {
            OptimizerKind::AdamW { .. } => "adamw",
            OptimizerKind::Sgd { .. } => "sgd",
        }
    }
}

/// A whole training run: model, data, optimisation and bookkeeping.
///
/// [`TrainConfig::default`] is the default recipe, the one `vit train` runs with no flags.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    /// The model to train.
    pub model: ViTConfig,
    /// The dataset to train and evaluate on.
    pub dataset: DatasetKind,
    /// Where the dataset lives; `None`: [`crate::data::DEFAULT_DATA_DIR`] (and, for
    /// Fashion-MNIST, the system copy), see [`crate::data::load_from`].
    pub data_dir: Option<PathBuf>,
    /// Train on the first `n` training images only (quick experiments and tests).
    pub train_subset: Option<usize>,
    /// Evaluate on the first `n` test images only.
    pub test_subset: Option<usize>,
    /// Epochs to train for, in all (a resumed run counts the epochs already done).
    pub epochs: usize,
    /// Images per optimizer step.
    pub batch_size: usize,
    /// The optimizer and its settings.
    pub optimizer: OptimizerKind,
    /// Peak learning rate, reached after warmup.
    pub lr: f64,
    /// The learning rate the decay ends at.
    pub min_lr: f64,
    /// Linear warmup, in epochs.
    pub warmup_epochs: f64,
    /// The decay after warmup.
    pub decay: Decay,
    /// Weight decay (decoupled for AdamW, L2 for SGD).
    pub weight_decay: f64,
    /// Label smoothing of the training loss, in `[0, 1)`.
    pub label_smoothing: f64,
    /// Global-norm gradient clipping threshold (`None`: no clipping).
    pub clip_grad: Option<f64>,
    /// The training augmentation.
    pub augment: AugmentConfig,
    /// The seed every random choice of the run derives from.
    pub seed: u64,
    /// Where checkpoints (`last.safetensors`, `best.safetensors`) and `metrics.jsonl` go.
    pub out_dir: PathBuf,
    /// Continue from `out_dir/last.safetensors`.
    pub resume: bool,
    /// Show a progress bar (and download progress).
    pub progress: bool,
    /// Stop after this many optimizer steps in total (benchmarks, tests); `None`: run all epochs.
    pub max_steps: Option<u64>,
    /// Micro-batches per process and step (gradient accumulation): the global batch is split
    /// into world size x this many shards. `None`: 1, or on resume what keeps the run's shards.
    pub grad_accum: Option<usize>,
    /// In a distributed run, sum each bucket of gradients across ranks as soon as backward has
    /// finished it (rather than after backward: only to measure what the overlap hides).
    pub overlap_comm: bool,
    /// Start from a pre-trained checkpoint (`vit finetune`) instead of a fresh initialisation.
    pub finetune: Option<FineTune>,
    /// Where the parameters, optimizer state and each step run (`--device`): the set-up
    /// (initialisation, resume, the broadcast of a distributed run) happens on the CPU, then the
    /// state moves there once. Checkpoints are the same files whatever the device.
    pub device: Device,
}

impl Default for TrainConfig {
    /// The default recipe: ViT-Tiny, patch 4, 32 x 32 CIFAR-10, AdamW (lr 1e-3, wd 0.05,
    /// betas 0.9/0.999) with 5 warmup epochs then cosine decay to 1e-5 over 50 epochs, batch 128,
    /// label smoothing 0.1, stochastic depth 0.1, gradient clipping at 1, random crop (pad 4) and
    /// horizontal flip; data in `data/`, output in `runs/vit`.
    fn default() -> Self {
        let mut model = ViTConfig::tiny(4, 32);
        model.num_classes = 10;
        model.drop_path = 0.1;
        TrainConfig {
            model,
            dataset: DatasetKind::Cifar10,
            data_dir: None,
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
            out_dir: PathBuf::from("runs/vit"),
            resume: false,
            progress: true,
            max_steps: None,
            grad_accum: None,
            overlap_comm: true,
            finetune: None,
            device: Device::Cpu,
        }
    }
}

/// An error unless `ok`, naming the flag, the accepted range and the value.
fn check(ok: bool, flag: &str, range: &str, value: impl std::fmt::Display) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!("{flag} must be {range}, got {value}")))
    }
}

impl TrainConfig {
    /// Checks everything, the model against the dataset's images included (see
    /// [`TrainConfig::validate_recipe`] for the rest).
    pub fn validate(&self) -> Result<()> {
        self.validate_recipe()?;
        let shape = self.dataset.shape();
        let m = &self.model;
        // Images of another size are resized to the model's (`Dataset::to_shape`), grey ones
        // repeated over a colour model's channels.
        if !(m.in_chans == shape.c || shape.c == 1) || shape.h != shape.w {
            return Err(Error::Config(format!(
                "the model expects {}x{}x{} images but {} has {}x{}x{}",
                m.in_chans, m.image_size, m.image_size, self.dataset, shape.c, shape.h, shape.w
            )));
        }
        if m.num_classes != self.dataset.classes() {
            return Err(Error::Config(format!(
                "the model has {} classes but {} has {}",
                m.num_classes,
                self.dataset,
                self.dataset.classes()
            )));
        }
        Ok(())
    }

    /// Checks every setting but the dataset: each number finite and in its range (errors name
    /// the command-line flag), the model's shapes, and that the model fits in memory before any
    /// of it is allocated ([`budget::check_trainable`]).
    pub fn validate_recipe(&self) -> Result<()> {
        let m = &self.model;
        check(self.epochs >= 1, "--epochs", "at least 1", self.epochs)?;
        check(self.batch_size >= 1, "--batch-size", "at least 1", self.batch_size)?;
        check(self.lr.is_finite() && self.lr > 0.0, "--lr", "a finite number > 0", self.lr)?;
        let lr = self.lr;
        check((0.0..=lr).contains(&self.min_lr), "--min-lr", &format!("in [0, --lr = {lr}]"), self.min_lr)?;
        let w = self.warmup_epochs;
        check(w.is_finite() && w >= 0.0, "--warmup", "a finite number of epochs >= 0", w)?;
        let wd = self.weight_decay;
        check(wd.is_finite() && wd >= 0.0, "--weight-decay", "a finite number >= 0", wd)?;
        let ls = self.label_smoothing;
        check((0.0..1.0).contains(&ls), "--label-smoothing", "in [0, 1)", ls)?;
        if let Some(c) = self.clip_grad {
            check(c.is_finite() && c > 0.0, "--clip-grad", "a finite number > 0 (0 disables clipping)", c)?;
        }
        match self.optimizer {
            OptimizerKind::AdamW { beta1, beta2, eps } => {
                check((0.0..1.0).contains(&beta1), "AdamW beta1", "in [0, 1)", beta1)?;
                check((0.0..1.0).contains(&beta2), "AdamW beta2", "in [0, 1)", beta2)?;
                check(eps.is_finite() && eps > 0.0, "AdamW eps", "a finite number > 0", eps)?;
            }
            OptimizerKind::Sgd { momentum, .. } => {
                check((0.0..1.0).contains(&momentum), "--momentum", "in [0, 1)", momentum)?
            }
        }
        check((0.0..1.0).contains(&m.dropout), "--dropout", "in [0, 1)", m.dropout)?;
        check((0.0..1.0).contains(&m.drop_path), "--drop-path", "in [0, 1)", m.drop_path)?;
        if let Some(n) = self.train_subset {
            check(n >= 1, "--train-subset", "at least 1", n)?;
        }
        if let Some(n) = self.test_subset {
            check(n >= 1, "--test-subset", "at least 1", n)?;
        }
        if let Some(a) = self.grad_accum {
            check((1..=self.batch_size).contains(&a), "--accum-steps", "in 1..=--batch-size", a)?;
        }
        budget::check_trainable(m)?;
        self.augment.check(ImageShape::new(m.in_chans, m.image_size, m.image_size))
    }
}
