//! Datasets, augmentation and the batch loader.
//!
//! Data flows one way: files ([`cifar`], [`idx`], fetched by [`download`]) become a [`Dataset`]
//! of `u8` images; the [`loader::Loader`] shuffles it, augments each image ([`augment`]) into
//! normalised `f32` and hands out [`loader::Batch`]es. Nothing here knows about the model.
//!
//! Images are kept as `u8` in CHW order (n x C x H x W): that is how CIFAR stores them, a quarter
//! of the memory of `f32`, and the conversion to `f32` happens once per image per epoch inside the
//! (parallel) augmentation, where it is free next to the rest of the work.

pub mod augment;
pub mod cifar;
pub mod download;
pub mod idx;
pub mod loader;
pub mod reshape;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::{Error, Result};

pub use augment::{AugmentConfig, Normalization};
pub use loader::{Batch, Loader, LoaderConfig, Mix, Shard};

/// Which half of a dataset: the one to learn from or the one to report accuracy on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    /// The training split.
    Train,
    /// The test split.
    Test,
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Test => "test",
        })
    }
}

/// The datasets this crate reads, with what is known about each before any file is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DatasetKind {
    /// CIFAR-10 binary version: 50 000 + 10 000 colour images, 32 x 32, 10 classes.
    Cifar10,
    /// CIFAR-100 binary version: 50 000 + 10 000 colour images, 32 x 32, 100 fine classes.
    Cifar100,
    /// MNIST digits in IDX files: 60 000 + 10 000 grey images, 28 x 28, 10 classes.
    Mnist,
    /// Fashion-MNIST in IDX files: 60 000 + 10 000 grey images, 28 x 28, 10 classes.
    FashionMnist,
}

/// The names [`DatasetKind::from_str`] accepts, for error messages and `--help`.
pub const DATASET_NAMES: &str = "cifar10, cifar100, mnist, fashion-mnist";

impl DatasetKind {
    /// Every kind, in the order of [`DATASET_NAMES`].
    pub const ALL: [DatasetKind; 4] =
        [DatasetKind::Cifar10, DatasetKind::Cifar100, DatasetKind::Mnist, DatasetKind::FashionMnist];

    /// The canonical command-line name.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Cifar100 => "cifar100",
            DatasetKind::Mnist => "mnist",
            DatasetKind::FashionMnist => "fashion-mnist",
        }
    }

    /// Number of classes.
    pub fn classes(self) -> usize {
        match self {
            DatasetKind::Cifar100 => 100,
            _ => 10,
        }
    }

    /// The (C, H, W) of every image.
    pub fn shape(self) -> ImageShape {
        match self {
            DatasetKind::Cifar10 | DatasetKind::Cifar100 => ImageShape::new(3, 32, 32),
            DatasetKind::Mnist | DatasetKind::FashionMnist => ImageShape::new(1, 28, 28),
        }
    }

    /// The built-in class names (used when the dataset ships no names file).
    pub fn class_names(self) -> Vec<String> {
        let names: &[&str] = match self {
            DatasetKind::Cifar10 => &cifar::CIFAR10_CLASSES,
            DatasetKind::Cifar100 => &cifar::CIFAR100_CLASSES,
            DatasetKind::Mnist => &idx::MNIST_CLASSES,
            DatasetKind::FashionMnist => &idx::FASHION_MNIST_CLASSES,
        };
        names.iter().map(|s| s.to_string()).collect()
    }

    /// Per-channel mean and standard deviation of the training split's pixels in `[0, 1]`.
    ///
    /// Train and test are normalised with the same (training) statistics, so the constants live
    /// here rather than being recomputed from whichever split is loaded. The CIFAR-10 std is the
    /// true per-pixel std (0.247, 0.243, 0.261), not the often-copied (0.2023, 0.1994, 0.2010),
    /// which is a std of per-image means.
    pub fn normalization(self) -> Normalization {
        let (mean, std): (&[f32], &[f32]) = match self {
            DatasetKind::Cifar10 => (&[0.4914, 0.4822, 0.4465], &[0.2470, 0.2435, 0.2616]),
            DatasetKind::Cifar100 => (&[0.5071, 0.4865, 0.4409], &[0.2673, 0.2564, 0.2762]),
            DatasetKind::Mnist => (&[0.1307], &[0.3081]),
            DatasetKind::FashionMnist => (&[0.2860], &[0.3530]),
        };
        Normalization { mean: mean.to_vec(), std: std.to_vec() }
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DatasetKind {
    type Err = Error;

    /// Accepts the canonical names and the usual spellings (`cifar-10`, `fashion_mnist`, `fmnist`).
    fn from_str(s: &str) -> Result<Self> {
        let key: String = s.to_ascii_lowercase().chars().filter(|c| !matches!(c, '-' | '_')).collect();
        match key.as_str() {
            "cifar10" => Ok(DatasetKind::Cifar10),
            "cifar100" => Ok(DatasetKind::Cifar100),
            "mnist" => Ok(DatasetKind::Mnist),
            "fashionmnist" | "fmnist" => Ok(DatasetKind::FashionMnist),
            _ => Err(Error::Data(format!("unknown dataset {s:?}: expected one of {DATASET_NAMES}"))),
        }
    }
}

/// The (C, H, W) of one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ImageShape {
    /// Channels.
    pub c: usize,
    /// Height in pixels.
    pub h: usize,
    /// Width in pixels.
    pub w: usize,
}

impl ImageShape {
    /// The shape `c x h x w`.
    pub const fn new(c: usize, h: usize, w: usize) -> Self {
        ImageShape { c, h, w }
    }

    /// Values per image, C * H * W.
    pub const fn len(self) -> usize {
        self.c * self.h * self.w
    }

    /// True when some dimension is zero.
    pub const fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// Values per channel plane, H * W.
    pub const fn plane(self) -> usize {
        self.h * self.w
    }
}

impl fmt::Display for ImageShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}x{}", self.c, self.h, self.w)
    }
}

/// A labelled image set held in memory: `n` images of `C x H x W` bytes, one label each.
///
/// Labels are one byte because every supported format stores them as one byte; they are widened
/// to `usize` by [`Dataset::label`] and in every [`Batch`].
#[derive(Clone, Debug)]
pub struct Dataset {
    images: Vec<u8>,
    labels: Vec<u8>,
    shape: ImageShape,
    class_names: Vec<String>,
    normalization: Normalization,
    sources: Vec<PathBuf>,
}

impl Dataset {
    /// Builds a dataset from images (n x C x H x W bytes, CHW per image) and labels.
    ///
    /// Normalisation defaults to mean 0.5, std 0.5 per channel (pixels to `[-1, 1]`); loaders of
    /// known datasets set the dataset's own statistics, see [`Dataset::with_normalization`].
    pub fn new(images: Vec<u8>, labels: Vec<u8>, shape: ImageShape, class_names: Vec<String>) -> Result<Self> {
        if shape.is_empty() {
            return Err(Error::Data(format!("image shape {shape} has a zero dimension")));
        }
        if images.len() != labels.len() * shape.len() {
            return Err(Error::Data(format!(
                "{} labels need {} image bytes ({} x {shape}), found {}",
                labels.len(),
                labels.len() * shape.len(),
                labels.len(),
                images.len()
            )));
        }
        if class_names.is_empty() || class_names.len() > 256 {
            return Err(Error::Data(format!(
                "expected 1..=256 classes (labels are one byte), found {}",
                class_names.len()
            )));
        }
        if let Some((i, &l)) = labels.iter().enumerate().find(|&(_, &l)| l as usize >= class_names.len()) {
            return Err(Error::Data(format!(
                "label {l} of image {i} is out of range: expected 0..{}",
                class_names.len()
            )));
        }
        let normalization = Normalization { mean: vec![0.5; shape.c], std: vec![0.5; shape.c] };
        Ok(Dataset { images, labels, shape, class_names, normalization, sources: Vec::new() })
    }

    /// Records the files the dataset was read from (see [`Dataset::sources`]).
    pub fn with_sources(mut self, sources: Vec<PathBuf>) -> Self {
        self.sources = sources;
        self
    }

    /// The files the dataset was read from (empty for one built in memory).
    pub fn sources(&self) -> &[PathBuf] {
        &self.sources
    }

    /// Replaces the per-channel normalisation statistics.
    pub fn with_normalization(mut self, normalization: Normalization) -> Result<Self> {
        normalization.check(self.shape.c)?;
        self.normalization = normalization;
        Ok(self)
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the dataset holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The (C, H, W) of every image.
    pub fn shape(&self) -> ImageShape {
        self.shape
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.class_names.len()
    }

    /// The class names, in label order.
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// The statistics that [`Normalization::normalize`] uses for this dataset.
    pub fn normalization(&self) -> &Normalization {
        &self.normalization
    }

    /// Image `i` as C x H x W bytes.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.shape.len();
        &self.images[i * n..(i + 1) * n]
    }

    /// Label of image `i`.
    pub fn label(&self, i: usize) -> usize {
        self.labels[i] as usize
    }

    /// All images, n x C x H x W bytes.
    pub fn images(&self) -> &[u8] {
        &self.images
    }

    /// All labels.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// How many images each class has.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes()];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }

    /// A new dataset of the images at `indices`, in that order (for small runs and tests).
    pub fn subset(&self, indices: &[usize]) -> Result<Dataset> {
        let n = self.shape.len();
        let mut images = Vec::with_capacity(indices.len() * n);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            if i >= self.len() {
                return Err(Error::Data(format!("subset index {i} is out of range: the dataset has {}", self.len())));
            }
            images.extend_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
        Ok(Dataset { images, labels, ..self.clone_meta() })
    }

    /// The first `n` images (all of them if there are fewer).
    pub fn take(&self, n: usize) -> Dataset {
        let n = n.min(self.len());
        Dataset {
            images: self.images[..n * self.shape.len()].to_vec(),
            labels: self.labels[..n].to_vec(),
            ..self.clone_meta()
        }
    }

    /// The images `range` (clipped to the dataset): one process's part of an evaluation.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Dataset {
        let (start, end) = (range.start.min(self.len()), range.end.min(self.len()));
        let n = self.shape.len();
        Dataset {
            images: self.images[start * n..end.max(start) * n].to_vec(),
            labels: self.labels[start..end.max(start)].to_vec(),
            ..self.clone_meta()
        }
    }

    fn clone_meta(&self) -> Dataset {
        Dataset {
            images: Vec::new(),
            labels: Vec::new(),
            shape: self.shape,
            class_names: self.class_names.clone(),
            normalization: self.normalization.clone(),
            sources: self.sources.clone(),
        }
    }

    /// Per-channel mean and std of the pixels scaled to `[0, 1]` (to derive normalisation
    /// constants for a new dataset, or to check the built-in ones).
    pub fn channel_stats(&self) -> Normalization {
        let (c, plane) = (self.shape.c, self.shape.plane());
        let mut sum = vec![0u64; c];
        let mut sum_sq = vec![0u64; c];
        for image in self.images.chunks_exact(self.shape.len()) {
            for (ch, p) in image.chunks_exact(plane).enumerate() {
                sum[ch] += p.iter().map(|&v| v as u64).sum::<u64>();
                sum_sq[ch] += p.iter().map(|&v| (v as u64) * (v as u64)).sum::<u64>();
            }
        }
        let count = (self.len() * plane).max(1) as f64;
        let mut mean = Vec::with_capacity(c);
        let mut std = Vec::with_capacity(c);
        for ch in 0..c {
            let m = sum[ch] as f64 / count / 255.0;
            let m2 = sum_sq[ch] as f64 / count / (255.0 * 255.0);
            mean.push(m as f32);
            std.push((m2 - m * m).max(0.0).sqrt() as f32);
        }
        Normalization { mean, std }
    }
}

/// Where datasets are looked for when no directory is given.
pub const DEFAULT_DATA_DIR: &str = "data";

/// Loads one split of a dataset from `data_dir` and nowhere else (see [`load_from`]).
pub fn load(kind: DatasetKind, data_dir: &Path, split: Split) -> Result<Dataset> {
    load_from(kind, Some(data_dir), split)
}

/// Loads one split of a dataset. Never touches the network: see [`load_or_download`] for
/// CIFAR-10's download. `data_dir` is the directory the user named; `None` means the default
/// [`DEFAULT_DATA_DIR`], where Fashion-MNIST may also come from the system copy.
///
/// Where each kind is looked for:
/// - CIFAR-10: `data_dir/cifar-10-batches-bin/` (or `data_dir` itself if it holds the batches);
/// - CIFAR-100: `data_dir/cifar-100-binary/` (or `data_dir` itself);
/// - MNIST: `data_dir/mnist/`, then `data_dir`;
/// - Fashion-MNIST: `data_dir/fashion-mnist/`, then `data_dir`, then, only when no directory was
///   given, [`idx::SYSTEM_FASHION_MNIST_DIR`] (the Debian package `dataset-fashion-mnist`).
///
/// [`Dataset::sources`] says which files were read.
pub fn load_from(kind: DatasetKind, data_dir: Option<&Path>, split: Split) -> Result<Dataset> {
    let dir = data_dir.unwrap_or(Path::new(DEFAULT_DATA_DIR));
    let dataset = match kind {
        DatasetKind::Cifar10 => cifar::load_cifar10(dir, split)?,
        DatasetKind::Cifar100 => cifar::load_cifar100(dir, split)?,
        DatasetKind::Mnist | DatasetKind::FashionMnist => idx::load(kind, data_dir, split)?,
    };
    dataset.with_normalization(kind.normalization())
}

/// Like [`load_from`], but first fetches CIFAR-10 into the data dir if it is not there (see
/// [`download::ensure_cifar10`]; the URL and checksum come from the environment or the defaults).
pub fn load_or_download(kind: DatasetKind, data_dir: Option<&Path>, split: Split, progress: bool) -> Result<Dataset> {
    if kind == DatasetKind::Cifar10 {
        let dir = data_dir.unwrap_or(Path::new(DEFAULT_DATA_DIR));
        download::ensure_cifar10(dir, &download::DownloadOptions { progress, ..Default::default() })?;
    }
    load_from(kind, data_dir, split)
}
