//! The training loop: a tiny ViT overfits a batch, resume is exact, a diverging run stops with a
//! clear error and its last checkpoint intact.

use std::path::Path;

mod common;
use common::{banded_dataset, small_run, TempDir};

use autograd::{Rng, Tensor};
use vit::data::Batch;
use vit::nn::{ParamStore, ViTConfig, VisionTransformer};
use vit::optim::AdamW;
use vit::train::{train_on, train_step, TrainConfig};

fn tiny_model(side: usize, classes: usize) -> ViTConfig {
    ViTConfig { dropout: 0.1, drop_path: 0.1, ..common::tiny_grey_vit(side, classes) }
}

fn config(out: &Path) -> TrainConfig {
    small_run(out, tiny_model(8, 3))
}

fn one_thread<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(f)
}

fn values(p: &ParamStore<f32>) -> Vec<Vec<f32>> {
    p.iter().map(|p| p.value.data().to_vec()).collect()
}

#[test]
fn tiny_vit_overfits_a_small_batch() {
    let mut rng = Rng::seed(1);
    let (b, classes) = (16, 4);
    let images = Tensor::<f32>::randn(&[b, 3, 8, 8], 0.0, 1.0, &mut rng).into_vec();
    let labels: Vec<usize> = (0..b).map(|i| i % classes).collect();
    let c = ViTConfig { in_chans: 3, num_classes: classes, dropout: 0.0, drop_path: 0.0, ..tiny_model(8, classes) };
    let (model, mut params) = VisionTransformer::init::<f32>(&c, 0).unwrap();
    let mut opt = AdamW::new(&params, 0.9, 0.999, 1e-8, 0.0);
    let mut last = None;
    for step in 0..400 {
        let batch = Batch {
            images: images.clone(),
            labels: labels.clone(),
            mix: None,
            shape: [b, 3, 8, 8],
            indices: (0..b).collect(),
        };
        let out = train_step(&model, &mut params, &mut opt, batch, 3e-3, 0.0, Some(1.0), &mut Rng::seed(step)).unwrap();
        last = Some(out);
        if out.correct == b && out.loss < 0.05 {
            break;
        }
    }
    let last = last.unwrap();
    assert_eq!(last.correct, b, "did not reach 100% on 16 random images: {last:?}");
    assert!(last.loss < 0.05, "{last:?}");
}

#[test]
fn resume_continues_exactly_where_it_stopped() {
    let tmp = TempDir::new("resume");
    let dir = tmp.path();
    let (train, test) = (banded_dataset(96, 3, 8, 1), banded_dataset(48, 3, 8, 2));

    let whole = config(&dir.join("whole"));
    let straight = one_thread(|| train_on(&whole, train.clone(), test.clone()).unwrap());
    assert_eq!(straight.global_step, 60);

    // Stop mid-way through the second epoch (12 steps per epoch), then resume to the end.
    let mut first = config(&dir.join("split"));
    first.max_steps = Some(20);
    let stopped = one_thread(|| train_on(&first, train.clone(), test.clone()).unwrap());
    assert_eq!(stopped.global_step, 20);
    assert_ne!(values(&stopped.params), values(&straight.params));
    let second = TrainConfig { resume: true, ..config(&dir.join("split")) };
    let resumed = one_thread(|| train_on(&second, train.clone(), test.clone()).unwrap());
    assert_eq!(resumed.global_step, 60);
    assert_eq!(values(&resumed.params), values(&straight.params), "resumed parameters differ");
    assert_eq!(resumed.epochs.last().unwrap().test_acc, straight.epochs.last().unwrap().test_acc);
    // Each completed epoch left a metrics line.
    let lines = std::fs::read_to_string(dir.join("whole/metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 5);
    assert!(lines.lines().all(|l| l.starts_with("{\"epoch\":") && l.contains("\"test_acc\":")));
    // It learned something: the bands are easy.
    assert!(straight.best_test_acc > 0.6, "best test accuracy {}", straight.best_test_acc);
}

/// Each epoch says where its time went: waiting for data, the steps, evaluation and the writes
/// add up to the epoch's wall time (up to the loop's own bookkeeping), in the report and in
/// every line of `metrics.jsonl`, completed once the checkpoints are written.
#[test]
fn an_epochs_time_is_split_into_data_step_eval_and_checkpoint() {
    let tmp = TempDir::new("times");
    let cfg = TrainConfig { epochs: 2, ..config(tmp.path()) };
    let report = train_on(&cfg, banded_dataset(96, 3, 8, 1), banded_dataset(48, 3, 8, 2)).unwrap();
    let text = std::fs::read_to_string(tmp.path().join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    for (r, line) in report.epochs.iter().zip(&lines) {
        let parts = [r.data_secs, r.step_secs, r.eval_secs, r.checkpoint_secs];
        assert!(parts.iter().all(|p| p.is_finite() && *p >= 0.0), "{r:?}");
        assert!(r.step_secs > 0.0 && r.eval_secs > 0.0 && r.checkpoint_secs > 0.0, "{r:?}");
        let sum: f64 = parts.iter().sum();
        assert!(sum <= r.seconds + 1e-9, "the parts ({sum} s) exceed the epoch ({} s)", r.seconds);
        assert!(
            r.seconds - sum <= 0.05 + 0.1 * r.seconds,
            "{} s of {} s unaccounted for: {r:?}",
            r.seconds - sum,
            r.seconds
        );
        for (key, value) in
            [("seconds", r.seconds), ("data_secs", r.data_secs), ("step_secs", r.step_secs), ("eval_secs", r.eval_secs)]
                .into_iter()
                .chain([("checkpoint_secs", r.checkpoint_secs)])
        {
            let logged = line[key].as_f64().unwrap_or_else(|| panic!("no number {key} in {line}"));
            assert!((logged - value).abs() <= 1e-3, "{key}: {logged} logged, {value} measured");
        }
    }
}

#[test]
fn a_diverging_run_stops_with_a_clear_error_and_keeps_its_checkpoint() {
    let tmp = TempDir::new("nan");
    let dir = tmp.path();
    let (train, test) = (banded_dataset(32, 3, 8, 3), banded_dataset(8, 3, 8, 4));
    let mut cfg = config(dir);
    cfg.epochs = 1;
    train_on(&cfg, train.clone(), test.clone()).unwrap();
    let last = dir.join("last.safetensors");
    let before = std::fs::read(&last).unwrap();

    // A new run in the same directory with an absurd learning rate and no clipping: the weights
    // blow up, and nothing is written over the earlier run's checkpoint.
    let wild = TrainConfig { epochs: 3, lr: 1e30, clip_grad: None, ..cfg };
    let err = train_on(&wild, train, test).err().expect("an exploding run must fail").to_string();
    assert!(err.contains("is inf") || err.contains("is NaN") || err.contains("non-finite"), "{err}");
    assert!(err.contains("no checkpoint"), "{err}");
    assert_eq!(std::fs::read(&last).unwrap(), before, "the last good checkpoint changed");
}

#[test]
fn bad_training_configs_are_errors() {
    let tmp = TempDir::new("badcfg");
    let dir = tmp.path();
    let mut cfg = config(dir);
    cfg.model.heads = 3; // 16 is not divisible by 3
    let err = train_on(&cfg, banded_dataset(16, 3, 8, 5), banded_dataset(8, 3, 8, 6)).err().unwrap().to_string();
    assert!(err.contains("not divisible by heads"), "{err}");
    let cfg = TrainConfig { batch_size: 64, ..config(dir) };
    let err = train_on(&cfg, banded_dataset(16, 3, 8, 5), banded_dataset(8, 3, 8, 6)).err().unwrap().to_string();
    assert!(err.contains("smaller than one batch"), "{err}");
    let cfg = TrainConfig { resume: true, ..config(&dir.join("nothing")) };
    let err = train_on(&cfg, banded_dataset(16, 3, 8, 5), banded_dataset(8, 3, 8, 6)).err().unwrap().to_string();
    assert!(err.contains("no checkpoint"), "{err}");
}
