//! Nothing a run had is lost: a diverged model never replaces a good checkpoint, a failed write
//! of `best.safetensors` never loses that epoch's best model, resume refuses another recipe or a
//! corrupt position, `metrics.jsonl` stays valid JSON with one line per epoch, interrupted writes
//! leave nothing behind, and identical runs write identical files.
//!
//! Each test is the regression test of an item of issue 9 (named in its doc comment).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

mod common;
use common::TempDir;

use autograd::{Rng, Tensor};
use vit::checkpoint::{self, Checkpoint, Dtype};
use vit::data::{AugmentConfig, Batch, Dataset, DatasetKind, ImageShape};
use vit::nn::{ViTConfig, VisionTransformer};
use vit::optim::{Decay, Sgd};
use vit::train::{train_on, train_step, OptimizerKind, TrainConfig};
use vit::Error;

/// `n` noisy 8 x 8 grey images in 3 classes (class k brightens band k).
fn dataset(n: usize, seed: u64) -> Dataset {
    let mut rng = Rng::seed(seed);
    let mut images = Vec::with_capacity(n * 64);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let k = rng.below(3);
        labels.push(k as u8);
        for y in 0..8 {
            for _ in 0..8 {
                let noise = rng.below(120) as u8;
                images.push(if y * 3 / 8 == k { 120 + noise } else { noise });
            }
        }
    }
    Dataset::new(images, labels, ImageShape::new(1, 8, 8), (0..3).map(|k| format!("band{k}")).collect()).unwrap()
}

/// A tiny ViT on 8 x 8 images, 2 steps an epoch (16 images, batch 8), 2 epochs.
fn config(out: &Path) -> TrainConfig {
    TrainConfig {
        model: ViTConfig {
            image_size: 8,
            patch_size: 4,
            in_chans: 1,
            num_classes: 3,
            dim: 16,
            depth: 1,
            heads: 2,
            mlp_dim: 32,
            ..ViTConfig::tiny(4, 8)
        },
        dataset: DatasetKind::Mnist,
        data_dir: None,
        train_subset: None,
        test_subset: None,
        epochs: 2,
        batch_size: 8,
        optimizer: OptimizerKind::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8 },
        lr: 3e-3,
        min_lr: 1e-5,
        warmup_epochs: 0.0,
        decay: Decay::Cosine,
        weight_decay: 0.05,
        label_smoothing: 0.1,
        clip_grad: Some(1.0),
        augment: AugmentConfig::none(),
        seed: 3,
        out_dir: out.into(),
        progress: false,
        ..TrainConfig::default()
    }
}

/// Trains `cfg` on one thread (bit-exact across runs) on the standard data.
fn run(cfg: &TrainConfig) -> vit::Result<vit::train::TrainReport> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(|| train_on(cfg, dataset(16, 1), dataset(8, 2)))
}

fn metrics_lines(dir: &Path) -> Vec<serde_json::Value> {
    fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

fn epochs_of(dir: &Path) -> Vec<u64> {
    metrics_lines(dir).iter().map(|v| v["epoch"].as_u64().unwrap()).collect()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    v.sort();
    v
}

/// Item 1: with lr 1e30, a constant schedule and no clipping, the single step of the first epoch
/// makes every weight huge (but finite), so the test loss is NaN. That model must not be saved:
/// the run stops with an error naming the epoch and step, the `last.safetensors` and
/// `best.safetensors` an earlier run left in the directory are byte-identical, and
/// `metrics.jsonl` holds no `NaN` (item 9). (Resuming with these flags is refused: item 10.)
#[test]
fn a_diverged_model_never_replaces_the_last_good_checkpoint() {
    let tmp = TempDir::new("guard-diverge");
    let cfg = TrainConfig { batch_size: 16, ..config(tmp.path()) }; // one step an epoch
    run(&cfg).unwrap();
    let before = fs::read(tmp.join("last.safetensors")).unwrap();
    let best_before = fs::read(tmp.join("best.safetensors")).unwrap();
    let wild = TrainConfig { epochs: 4, lr: 1e30, decay: Decay::Constant, clip_grad: None, ..cfg.clone() };
    let err = run(&wild).err().expect("a diverging run fails").to_string();
    assert!(err.contains("diverged") || err.contains("non-finite"), "{err}");
    assert!(err.contains("epoch 1") && err.contains("step"), "names the epoch and step: {err}");
    assert!(!err.contains("training: training"), "the error kind is said once (item 14): {err}");
    assert_eq!(fs::read(tmp.join("last.safetensors")).unwrap(), before, "last.safetensors changed");
    assert_eq!(fs::read(tmp.join("best.safetensors")).unwrap(), best_before, "best.safetensors changed");
    assert_eq!(epochs_of(tmp.path()), [1, 2], "every line JSON, none for the diverged run");
}

/// Item 14: a step's error is reported as one error, not wrapped in its own kind twice.
#[test]
fn a_diverging_step_is_reported_once() {
    let tmp = TempDir::new("guard-twice");
    let wild = TrainConfig { lr: 1e30, clip_grad: None, ..config(tmp.path()) }; // two steps an epoch
    let err = run(&wild).err().expect("a diverging run fails").to_string();
    assert!(err.starts_with("training: ") && !err.contains("training: training"), "{err}");
    assert!(err.contains("at epoch 1, step") && err.contains("no checkpoint"), "{err}");
}

/// Item 1: NaN hyper-parameters are refused before training, naming the flag; and an update that
/// leaves non-finite weights (here SGD with NaN momentum, from its second step on) is an error of
/// the step itself, so the loop never goes on to save it.
#[test]
fn nan_settings_are_refused_and_a_nan_update_is_an_error() {
    let tmp = TempDir::new("guard-nan");
    let base = config(tmp.path());
    let cases: [(TrainConfig, &str); 4] = [
        (
            TrainConfig { optimizer: OptimizerKind::Sgd { momentum: f64::NAN, nesterov: false }, ..base.clone() },
            "--momentum",
        ),
        (TrainConfig { min_lr: f64::NAN, warmup_epochs: 0.0, ..base.clone() }, "--min-lr"),
        (TrainConfig { weight_decay: f64::NAN, ..base.clone() }, "--weight-decay"),
        (TrainConfig { clip_grad: Some(f64::NAN), ..base.clone() }, "--clip-grad"),
    ];
    for (cfg, flag) in cases {
        match run(&cfg) {
            Err(Error::Config(m)) => assert!(m.contains(flag) && m.contains("NaN"), "{m}"),
            Err(e) => panic!("{flag}: expected a config error, got {e}"),
            Ok(_) => panic!("{flag} NaN was accepted"),
        }
    }
    assert!(!tmp.join("last.safetensors").exists(), "nothing written");

    let c = base.model.clone();
    let (model, mut params) = VisionTransformer::init::<f32>(&c, 0).unwrap();
    let mut opt = Sgd::new(&params, f64::NAN, 0.0, false);
    let data = dataset(8, 5);
    let batch = || Batch {
        images: data.images().iter().map(|&b| b as f32 / 255.0).collect(),
        labels: data.labels().iter().map(|&l| l as usize).collect(),
        mix: None,
        shape: [8, 1, 8, 8],
        indices: (0..8).collect(),
    };
    // The first SGD step does not read the momentum buffer; the second multiplies it by NaN.
    train_step(&model, &mut params, &mut opt, batch(), 0.1, 0.0, None, &mut Rng::seed(0)).unwrap();
    let err = train_step(&model, &mut params, &mut opt, batch(), 0.1, 0.0, None, &mut Rng::seed(1))
        .expect_err("a NaN update is an error")
        .to_string();
    assert!(err.contains("non-finite"), "{err}");
}

/// Item 2: when writing `best.safetensors` fails (here: a directory stands in its way; a kill or a
/// full disk does the same), `last.safetensors` must not already record that epoch as the best,
/// or the best model of that epoch is lost for good. After the obstacle is removed, resuming
/// redoes the epoch and writes its best model.
#[test]
fn a_failed_best_write_never_loses_the_best_model() {
    let tmp = TempDir::new("guard-best");
    let first = TrainConfig { epochs: 1, ..config(tmp.path()) };
    run(&first).unwrap();
    let last_before = fs::read(tmp.join("last.safetensors")).unwrap();
    fs::remove_file(tmp.join("best.safetensors")).unwrap();
    fs::create_dir_all(tmp.join("best.safetensors/in-the-way")).unwrap();

    let second = TrainConfig { epochs: 2, resume: true, ..config(tmp.path()) };
    let err = run(&second).err().expect("the write of best.safetensors fails").to_string();
    assert!(err.contains("best.safetensors"), "{err}");
    assert_eq!(fs::read(tmp.join("last.safetensors")).unwrap(), last_before, "last moved on without its best model");

    fs::remove_dir_all(tmp.join("best.safetensors")).unwrap();
    run(&second).unwrap();
    let best = Checkpoint::open(tmp.join("best.safetensors")).expect("the best model was written");
    let last = Checkpoint::open(tmp.join("last.safetensors")).unwrap();
    assert_eq!(best.meta("vit.epoch"), Some("2"));
    assert_eq!(best.meta("vit.best_test_acc"), last.meta("vit.best_test_acc"));
    assert_eq!(epochs_of(tmp.path()), [1, 2]);
}

/// Item 9: a kill after the metrics line of an epoch is written but before its checkpoint (here:
/// the epoch-1 checkpoint put back), and a line torn by a full disk, leave no duplicate or broken
/// line after `--resume`.
#[test]
fn metrics_have_one_valid_line_per_epoch_after_resume() {
    let tmp = TempDir::new("guard-metrics");
    run(&TrainConfig { epochs: 1, ..config(tmp.path()) }).unwrap();
    let epoch1 = fs::read(tmp.join("last.safetensors")).unwrap();
    let resumed = TrainConfig { epochs: 2, resume: true, ..config(tmp.path()) };
    run(&resumed).unwrap();
    assert_eq!(epochs_of(tmp.path()), [1, 2]);
    fs::write(tmp.join("last.safetensors"), epoch1).unwrap();
    let mut text = fs::read_to_string(tmp.join("metrics.jsonl")).unwrap();
    text.push_str("{\"epoch\":3,\"st");
    fs::write(tmp.join("metrics.jsonl"), text).unwrap();
    run(&resumed).unwrap();
    assert_eq!(epochs_of(tmp.path()), [1, 2]);
}

/// Item 8: temporary files left by interrupted writes (today's `.NAME.tmp`, and the older
/// `.NAME.<pid>.<n>.tmp`) are cleared when a run starts in the directory.
#[test]
fn stale_temporary_files_are_removed() {
    let tmp = TempDir::new("guard-tmp");
    run(&TrainConfig { epochs: 1, ..config(tmp.path()) }).unwrap();
    for name in [".last.safetensors.tmp", ".last.safetensors.4242.0.tmp", ".best.safetensors.4242.3.tmp"] {
        fs::write(tmp.join(name), vec![0u8; 4096]).unwrap();
    }
    run(&TrainConfig { epochs: 2, resume: true, ..config(tmp.path()) }).unwrap();
    let left = entries(tmp.path());
    assert!(left.iter().all(|e| !e.ends_with(".tmp")), "{left:?}");
    assert!(left.contains(&"last.safetensors".to_string()), "{left:?}");
}

/// Item 10: resume refuses a changed recipe, listing each difference, but accepts a larger
/// `--epochs`; a corrupt position in the checkpoint is refused too.
#[test]
fn resume_refuses_another_recipe_and_a_corrupt_position() {
    let tmp = TempDir::new("guard-recipe");
    run(&TrainConfig { epochs: 1, max_steps: Some(1), ..config(tmp.path()) }).unwrap();
    let resumed = TrainConfig { resume: true, ..config(tmp.path()) };
    let changed = TrainConfig { batch_size: 4, dataset: DatasetKind::FashionMnist, ..resumed.clone() };
    let err = run(&changed).err().unwrap().to_string();
    assert!(err.contains("--batch-size: 8 when the run started, 4 now"), "{err}");
    assert!(err.contains("--dataset: mnist when the run started, fashion-mnist now"), "{err}");
    assert!(err.contains("2 differences") && err.contains("--epochs"), "says what may change: {err}");

    // The position: batch 1 of epoch 0, step 1. A batch past the end of the epoch is refused.
    let path = tmp.join("last.safetensors");
    let good = fs::read(&path).unwrap();
    rewrite_meta(&path, "vit.batch", "7");
    let err = run(&resumed).err().unwrap().to_string();
    assert!(err.contains("corrupt position"), "{err}");
    fs::write(&path, good).unwrap();
    // More epochs than the run had planned are fine.
    let report = run(&TrainConfig { epochs: 3, ..resumed }).unwrap();
    assert_eq!(report.global_step, 6);
}

/// Item 13: an optimizer tensor of another dtype is reported as such, with the file's name, not
/// as "missing".
#[test]
fn an_optimizer_tensor_of_another_dtype_is_named_with_the_file() {
    let tmp = TempDir::new("guard-dtype");
    run(&TrainConfig { epochs: 1, ..config(tmp.path()) }).unwrap();
    let path = tmp.join("last.safetensors");
    let ckpt = Checkpoint::open(&path).unwrap();
    let victim = ckpt.names().iter().find(|n| n.starts_with("optim.")).unwrap().clone();
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for name in ckpt.names() {
        let t: Tensor<f32> = ckpt.tensor(name).unwrap();
        let (dtype, bytes) = if *name == victim {
            (Dtype::I64, t.data().iter().flat_map(|&v| (v as i64).to_le_bytes()).collect())
        } else {
            (Dtype::F32, t.data().iter().flat_map(|v| v.to_le_bytes()).collect())
        };
        tensors.push((name.clone(), dtype, t.shape().to_vec(), bytes));
    }
    write_raw(&path, &tensors, ckpt.metadata());
    let err = run(&TrainConfig { epochs: 2, resume: true, ..config(tmp.path()) }).err().unwrap().to_string();
    assert!(err.contains(&victim) && err.contains("I64") && err.contains("last.safetensors"), "{err}");
    assert!(!err.contains("missing"), "{err}");
}

/// Item 14: two identical runs write byte-identical checkpoints (the header in one fixed order).
#[test]
fn identical_runs_write_identical_checkpoints() {
    let tmp = TempDir::new("guard-identical");
    let (a, b) = (tmp.join("a"), tmp.join("b"));
    run(&TrainConfig { epochs: 1, ..config(&a) }).unwrap();
    run(&TrainConfig { epochs: 1, ..config(&b) }).unwrap();
    for f in ["last.safetensors", "best.safetensors"] {
        assert!(fs::read(a.join(f)).unwrap() == fs::read(b.join(f)).unwrap(), "{f} differs between identical runs");
    }
}

/// Rewrites one metadata value of a checkpoint, keeping its tensors.
fn rewrite_meta(path: &Path, key: &str, value: &str) {
    let ckpt = Checkpoint::open(path).unwrap();
    let tensors: Vec<(String, Tensor<f32>)> =
        ckpt.names().iter().map(|n| (n.clone(), ckpt.tensor(n).unwrap())).collect();
    let mut meta = ckpt.metadata().clone();
    meta.insert(key.into(), value.into());
    let refs: Vec<(&str, &Tensor<f32>)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    checkpoint::write_tensors(path, &refs, &meta).unwrap();
}

/// Writes tensors of any dtype through the reference crate.
fn write_raw(path: &Path, tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)], meta: &BTreeMap<String, String>) {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let meta: std::collections::HashMap<String, String> = meta.clone().into_iter().collect();
    fs::write(path, safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
}
