//! The batch loader: per-epoch shuffling, augmentation, and a background thread that prepares
//! the next batches while the current training step runs.
//!
//! The background thread does the work itself, off the rayon pool: the step's every op splits
//! its work over that pool's threads and waits for the slowest, so a batch assembled on it would
//! stall the step, while on its own thread it costs the step one core for well under a
//! millisecond per batch (the light recipe goes from bytes to normalised floats in one pass; see
//! `augment::augment_image`). Each batch's pixels are written into a buffer from the
//! tensor buffer pool (`autograd::pool`), the one the previous batch's tensor returned, so
//! assembling a batch faults in no fresh pages.
//!
//! Everything random is a pure function of the seed, so a run resumed from a checkpoint at
//! (epoch, batch) sees exactly the batches the uninterrupted run would have seen:
//! - the order of epoch `e` is a permutation drawn from an RNG seeded by (seed, e);
//! - image `i`'s augmentation in epoch `e` draws from an RNG seeded by (seed, e, i), so it does not
//!   depend on which rayon thread runs it, nor on the batch size;
//! - batch `b`'s mixup/cutmix draws from an RNG seeded by (seed, e, b).
//!
//! Nothing is carried over from one batch to the next, so the loader itself has no state to save.
//!
//! In data-parallel training each process asks for its [`Shard`] of every batch: the same global
//! order and augmentation, only its rows assembled (and, when the batch is mixed, the partner
//! images its rows are mixed with), so the shards of all processes together are exactly the
//! batch one process would see.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use rayon::prelude::*;

use autograd::Rng;

use super::augment::{self, AugmentConfig, Scratch};
use super::Dataset;
use crate::{Error, Result};

pub use super::augment::Mix;

/// One batch, ready for the model.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// B x C x H x W normalised pixels.
    pub images: Vec<f32>,
    /// The label of each image (the first label of each pair when mixed).
    pub labels: Vec<usize>,
    /// Set when the batch was mixed (mixup or cutmix).
    pub mix: Option<Mix>,
    /// [B, C, H, W].
    pub shape: [usize; 4],
    /// The dataset index of each image.
    pub indices: Vec<usize>,
}

impl Batch {
    /// The rows `rows` of the batch (a micro-batch of it), mixing labels included.
    pub fn rows(&self, rows: std::ops::Range<usize>) -> Batch {
        let n: usize = self.shape[1..].iter().product();
        Batch {
            images: self.images[rows.start * n..rows.end * n].to_vec(),
            labels: self.labels[rows.clone()].to_vec(),
            mix: self.mix.as_ref().map(|m| Mix { labels_b: m.labels_b[rows.clone()].to_vec(), lambda: m.lambda }),
            shape: [rows.len(), self.shape[1], self.shape[2], self.shape[3]],
            indices: self.indices[rows].to_vec(),
        }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True for a batch of no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// How a [`Loader`] batches a dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct LoaderConfig {
    /// Images per batch.
    pub batch_size: usize,
    /// The seed of the order, augmentation and mixing streams.
    pub seed: u64,
    /// Draw a new order every epoch; otherwise dataset order.
    pub shuffle: bool,
    /// Drop the last, partial batch of an epoch (training), rather than yield it (evaluation).
    pub drop_last: bool,
    /// What is done to each image and batch.
    pub augment: AugmentConfig,
    /// Batches prepared ahead by the background thread (1 or 2; 0 is taken as 1).
    pub prefetch: usize,
    /// Augment the images of a batch on the rayon pool rather than on the loader's thread; the
    /// result is identical either way. Off by default: the rayon pool is the training step's.
    pub parallel: bool,
    /// Which rows of each batch to assemble (data-parallel training); [`Shard::WHOLE`]: all.
    pub shard: Shard,
}

/// Part `index` of `count` near-equal contiguous parts of every batch: of a batch of `b` rows,
/// rows `index * b / count .. (index + 1) * b / count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// Which part, in `0..count`.
    pub index: usize,
    /// How many parts.
    pub count: usize,
}

impl Shard {
    /// The whole batch.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// This part's rows of a batch of `b`.
    pub fn rows(self, b: usize) -> std::ops::Range<usize> {
        self.index * b / self.count..(self.index + 1) * b / self.count
    }
}

impl LoaderConfig {
    /// Training: shuffled, the dataset's light augmentation set by the caller, partial batch dropped.
    pub fn train(batch_size: usize, seed: u64, augment: AugmentConfig) -> Self {
        LoaderConfig {
            batch_size,
            seed,
            shuffle: true,
            drop_last: true,
            augment,
            prefetch: 2,
            parallel: false,
            shard: Shard::WHOLE,
        }
    }

    /// Evaluation: dataset order, no augmentation, the last partial batch kept.
    pub fn eval(batch_size: usize) -> Self {
        LoaderConfig {
            batch_size,
            seed: 0,
            shuffle: false,
            drop_last: false,
            augment: AugmentConfig::none(),
            prefetch: 1,
            parallel: false,
            shard: Shard::WHOLE,
        }
    }
}

/// Stream tags, so the order, image and mix RNGs of one (seed, epoch) never coincide.
const ORDER_STREAM: u64 = 0x006f_7264_6572; // "order"
const IMAGE_STREAM: u64 = 0x0069_6d61_6765; // "image"
const MIX_STREAM: u64 = 0x006d_6978; // "mix"

/// SplitMix64's finaliser: a bijective mix of 64 bits.
fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// An RNG determined by the seed and a path of integers (stream tag, epoch, index...).
pub fn derive_rng(seed: u64, path: &[u64]) -> Rng {
    let h = path.iter().fold(mix64(seed), |h, &x| mix64(h ^ mix64(x)));
    Rng::seed(h)
}

/// Iterates a [`Dataset`] in batches, epoch after epoch. Cheap to clone (the dataset is shared).
#[derive(Clone, Debug)]
pub struct Loader {
    dataset: Arc<Dataset>,
    cfg: LoaderConfig,
}

impl Loader {
    /// A loader over `dataset`, checking the configuration against the dataset's image shape.
    pub fn new(dataset: impl Into<Arc<Dataset>>, cfg: LoaderConfig) -> Result<Self> {
        let dataset = dataset.into();
        if cfg.batch_size == 0 {
            return Err(Error::Config("batch size must be at least 1, found 0".into()));
        }
        let Shard { index, count } = cfg.shard;
        if count == 0 || index >= count || count > cfg.batch_size {
            return Err(Error::Config(format!(
                "shard {index} of {count} of batches of {}: needs 0 <= shard < count <= batch size",
                cfg.batch_size
            )));
        }
        cfg.augment.check(dataset.shape())?;
        Ok(Loader { dataset, cfg })
    }

    /// An evaluation loader: dataset order, no augmentation, every image exactly once.
    pub fn eval(dataset: impl Into<Arc<Dataset>>, batch_size: usize) -> Result<Self> {
        Loader::new(dataset, LoaderConfig::eval(batch_size))
    }

    /// The dataset batched.
    pub fn dataset(&self) -> &Arc<Dataset> {
        &self.dataset
    }

    /// How it is batched.
    pub fn config(&self) -> &LoaderConfig {
        &self.cfg
    }

    /// Batches per epoch.
    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.dataset.len(), self.cfg.batch_size);
        if self.cfg.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The order in which epoch `epoch` visits the dataset.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        if self.cfg.shuffle {
            augment::permutation(self.dataset.len(), &mut derive_rng(self.cfg.seed, &[ORDER_STREAM, epoch]))
        } else {
            (0..self.dataset.len()).collect()
        }
    }

    /// Batch `index` of epoch `epoch`, assembled now on this thread (and the rayon pool if the
    /// configuration says parallel).
    pub fn batch(&self, epoch: u64, index: usize) -> Batch {
        self.batch_in(&self.order(epoch), epoch, index, self.cfg.parallel)
    }

    /// Batch `index` of an epoch whose order is `order`; `parallel` picks rayon or a plain loop,
    /// which give identical batches.
    pub fn batch_in(&self, order: &[usize], epoch: u64, index: usize, parallel: bool) -> Batch {
        assert!(index < self.batches_per_epoch(), "batch {index} of an epoch of {}", self.batches_per_epoch());
        let b = self.cfg.batch_size;
        let indices = order[index * b..((index + 1) * b).min(order.len())].to_vec();
        self.assemble(indices, epoch, index, parallel)
    }

    /// Augments (or, for evaluation, only normalises) this loader's shard of the batch of the
    /// images at `indices`, and mixes it as the whole batch would be mixed.
    fn assemble(&self, indices: Vec<usize>, epoch: u64, index: usize, parallel: bool) -> Batch {
        let ds = &*self.dataset;
        let shape = ds.shape();
        let n = shape.len();
        let (cfg, norm, seed) = (&self.cfg.augment, ds.normalization(), self.cfg.seed);
        let augment_all = |dataset_indices: &[usize]| -> Vec<f32> {
            // Every element is written below.
            let mut images = autograd::pool::take::<f32>(dataset_indices.len() * n);
            let one = |scratch: &mut Scratch, out: &mut [f32], i: usize| {
                let mut rng = derive_rng(seed, &[IMAGE_STREAM, epoch, i as u64]);
                augment::augment_image(ds.image(i), shape, cfg, norm, &mut rng, out, scratch);
            };
            if parallel {
                images
                    .par_chunks_mut(n)
                    .zip(dataset_indices.par_iter())
                    .for_each_init(Scratch::default, |s, (out, &i)| one(s, out, i));
            } else {
                let mut scratch = Scratch::default();
                images.chunks_mut(n).zip(dataset_indices).for_each(|(out, &i)| one(&mut scratch, out, i));
            }
            images
        };
        let rows = self.cfg.shard.rows(indices.len());
        let mut images = augment_all(&indices[rows.clone()]);
        let labels: Vec<usize> = indices.iter().map(|&i| ds.label(i)).collect();
        let mut rng = derive_rng(seed, &[MIX_STREAM, epoch, index as u64]);
        let mix = augment::plan_mix(indices.len(), shape, cfg, &mut rng).map(|plan| {
            // The partners outside this shard are augmented here too (their streams depend on
            // the image only, so they are the images the process holding them sees).
            let mut outside: Vec<usize> =
                plan.perm[rows.clone()].iter().copied().filter(|p| !rows.contains(p)).collect();
            outside.sort_unstable();
            outside.dedup();
            let outside_images = augment_all(&outside.iter().map(|&p| indices[p]).collect::<Vec<_>>());
            let own = images.clone();
            let image_of_row = |p: usize| match outside.binary_search(&p) {
                Ok(k) => &outside_images[k * n..(k + 1) * n],
                Err(_) => &own[(p - rows.start) * n..(p - rows.start + 1) * n],
            };
            for (img, &p) in images.chunks_exact_mut(n).zip(&plan.perm[rows.clone()]) {
                plan.apply(img, image_of_row(p), shape);
            }
            plan.mix(&labels, rows.clone())
        });
        let indices = indices[rows.clone()].to_vec();
        Batch { images, labels: labels[rows].to_vec(), mix, shape: [indices.len(), shape.c, shape.h, shape.w], indices }
    }

    /// The batches of epoch `epoch`, prepared on a background thread.
    pub fn epoch(&self, epoch: u64) -> Batches {
        self.epoch_from(epoch, 0)
    }

    /// The batches of epoch `epoch` from batch `first` on (to resume mid-epoch). The background
    /// thread keeps `prefetch` batches ready and stops as soon as the iterator is dropped.
    pub fn epoch_from(&self, epoch: u64, first: usize) -> Batches {
        let total = self.batches_per_epoch();
        let first = first.min(total);
        let (tx, rx) = sync_channel(self.cfg.prefetch.clamp(1, 2));
        let loader = self.clone();
        let handle = std::thread::Builder::new()
            .name("vit-loader".into())
            .spawn(move || {
                let order = loader.order(epoch);
                for index in first..total {
                    let batch = loader.batch_in(&order, epoch, index, loader.cfg.parallel);
                    if tx.send(batch).is_err() {
                        return; // the consumer stopped early
                    }
                }
            })
            .expect("spawning the loader thread");
        Batches { rx: Some(rx), handle: Some(handle), remaining: total - first }
    }
}

/// The batches of one epoch, built ahead by a background thread (see [`Loader::epoch`]).
pub struct Batches {
    rx: Option<Receiver<Batch>>,
    handle: Option<JoinHandle<()>>,
    remaining: usize,
}

impl Iterator for Batches {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.remaining == 0 {
            return None;
        }
        match self.rx.as_ref()?.recv() {
            Ok(batch) => {
                self.remaining -= 1;
                Some(batch)
            }
            Err(_) => {
                // The producer ended before the epoch did: it panicked. Surface its panic here.
                self.remaining = 0;
                if let Some(Err(panic)) = self.handle.take().map(JoinHandle::join) {
                    std::panic::resume_unwind(panic);
                }
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Batches {}

impl Drop for Batches {
    /// Disconnects the channel first, so a producer blocked on a full channel wakes and exits,
    /// then waits for it: no loader thread outlives its iterator.
    fn drop(&mut self) {
        drop(self.rx.take());
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}
