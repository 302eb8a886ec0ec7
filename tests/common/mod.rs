//! Helpers shared by the integration tests of the `vit` crate.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use autograd::Rng;
use vit::data::{AugmentConfig, Dataset, DatasetKind, ImageShape};
use vit::nn::ViTConfig;
use vit::optim::Decay;
use vit::train::{OptimizerKind, TrainConfig};
use vit::Error;

pub mod timm;

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("vit-test-{name}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The message of an expected `Error::Data`; panics on success or another error.
pub fn data_err(r: vit::Result<Dataset>) -> String {
    match r {
        Err(Error::Data(msg)) => msg,
        Err(e) => panic!("expected Error::Data, found {e}"),
        Ok(d) => panic!("expected an error, loaded {} images", d.len()),
    }
}

/// The CRC-32 PNG chunks carry (ISO 3309, reflected, polynomial 0xEDB88320).
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// Whether this test runs under an emulator: the aarch64 cargo runner (`.cargo/config.toml`)
/// sets `VIT_EMULATOR` to the command that runs an aarch64 binary on this machine.
pub fn emulator() -> Option<String> {
    std::env::var("VIT_EMULATOR").ok().filter(|e| !e.trim().is_empty())
}

/// Proptest cases per property: `default`, raised by `PROPTEST_CASES`, never lowered below it,
/// except under emulation (every case runs tens of times slower): a quarter, never fewer than 16.
pub fn cases(default: u32) -> u32 {
    let asked = std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(default).max(default);
    if emulator().is_some() {
        (asked / 4).max(16)
    } else {
        asked
    }
}

/// The `vit` binary as a command; under emulation, run through the emulator (the kernel of an
/// x86-64 host cannot exec an aarch64 binary by itself).
pub fn vit_binary() -> Command {
    let exe = env!("CARGO_BIN_EXE_vit");
    match emulator() {
        Some(emu) => {
            let mut words = emu.split_whitespace();
            let mut cmd = Command::new(words.next().unwrap_or_default());
            cmd.args(words).arg(exe);
            cmd
        }
        None => Command::new(exe),
    }
}

/// A tiny ViT for `side x side` grey images in `classes` classes (patch 4, width 16, depth 2,
/// 2 heads, MLP 32): fast enough to train for real in a test.
pub fn tiny_grey_vit(side: usize, classes: usize) -> vit::nn::ViTConfig {
    vit::nn::ViTConfig {
        image_size: side,
        patch_size: 4,
        in_chans: 1,
        num_classes: classes,
        dim: 16,
        depth: 2,
        heads: 2,
        mlp_dim: 32,
        ..vit::nn::ViTConfig::tiny(4, side)
    }
}

/// Images whose class is written in them: class `k` brightens the `k`-th horizontal band, on
/// top of noise, so a small model can learn it but not instantly.
pub fn banded_dataset(n: usize, classes: usize, side: usize, seed: u64) -> Dataset {
    let mut rng = Rng::seed(seed);
    let shape = ImageShape::new(1, side, side);
    let mut images = Vec::with_capacity(n * side * side);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let k = rng.below(classes);
        labels.push(k as u8);
        for y in 0..side {
            for _ in 0..side {
                let band = y * classes / side == k;
                let noise = rng.below(120) as u8;
                images.push(if band { 120 + noise } else { noise });
            }
        }
    }
    Dataset::new(images, labels, shape, (0..classes).map(|k| format!("band{k}")).collect()).unwrap()
}

/// A short run of `model` on data the test passes in, writing into `out`, on the CPU: every
/// field set (AdamW, warmup then cosine, label smoothing, clipping, crop and flip), for a test
/// to change what it is about.
pub fn small_run(out: &Path, model: ViTConfig) -> TrainConfig {
    TrainConfig {
        model,
        dataset: DatasetKind::Mnist, // only recorded in the checkpoint; the data is passed in
        data_dir: Some(out.into()),
        train_subset: None,
        test_subset: None,
        epochs: 5,
        batch_size: 8,
        optimizer: OptimizerKind::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8 },
        lr: 3e-3,
        min_lr: 1e-5,
        warmup_epochs: 0.5,
        decay: Decay::Cosine,
        weight_decay: 0.05,
        label_smoothing: 0.1,
        clip_grad: Some(1.0),
        augment: AugmentConfig { crop_padding: 1, hflip: true, ..AugmentConfig::none() },
        seed: 7,
        out_dir: out.into(),
        progress: false,
        ..TrainConfig::default()
    }
}
