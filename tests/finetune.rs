//! Fine-tuning and gradient accumulation: an accumulated step equals the whole-batch step, the
//! fine-tune model takes the source's encoder (pos_embed interpolated, zero head, pre-logits
//! dropped), a frozen backbone stays bit-identical, a fine-tune resumes exactly, and on real
//! data (Fashion-MNIST) fine-tuning on a shifted task beats the linear probe of the same
//! features.

use std::path::Path;

mod common;
use common::TempDir;

use autograd::{Rng, Tensor};
use vit::checkpoint::Checkpoint;
use vit::data::{self, AugmentConfig, Batch, Dataset, DatasetKind, ImageShape, Split};
use vit::dist::Comm;
use vit::fewshot::{self, LinearProbe};
use vit::nn::{ParamStore, ViTConfig, VisionTransformer};
use vit::optim::Sgd;
use vit::train::{train_on, train_step, train_step_sharded, FineTune, OptimizerKind, Sharding, TrainConfig};

/// Class `k` brightens the `k`-th horizontal band, over noise.
fn banded(n: usize, classes: usize, side: usize, seed: u64) -> Dataset {
    let mut rng = Rng::seed(seed);
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for _ in 0..n {
        let k = rng.below(classes);
        labels.push(k as u8);
        for y in 0..side * side {
            let noise = rng.below(120) as u8;
            images.push(if (y / side) * classes / side == k { 120 + noise } else { noise });
        }
    }
    Dataset::new(images, labels, ImageShape::new(1, side, side), (0..classes).map(|k| format!("b{k}")).collect())
        .unwrap()
}

fn run(model: ViTConfig, out: &Path, epochs: usize) -> TrainConfig {
    TrainConfig {
        model,
        dataset: DatasetKind::Mnist, // recorded only; the data is passed in
        epochs,
        batch_size: 16,
        optimizer: OptimizerKind::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8 },
        lr: 3e-3,
        warmup_epochs: 0.5,
        label_smoothing: 0.0,
        augment: AugmentConfig::none(),
        out_dir: out.into(),
        progress: false,
        ..TrainConfig::default()
    }
}

fn one_thread<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(f)
}

fn values(p: &ParamStore<f32>) -> Vec<Vec<f32>> {
    p.iter().map(|p| p.value.data().to_vec()).collect()
}

/// A tiny source model trained a little, saved to `dir/last.safetensors`.
fn source(dir: &Path, pre_logits: bool) -> std::path::PathBuf {
    let model = ViTConfig { representation_size: pre_logits.then_some(8), ..common::tiny_grey_vit(8, 3) };
    let cfg = run(model, dir, 1);
    train_on(&cfg, banded(64, 3, 8, 1), banded(16, 3, 8, 2)).unwrap();
    dir.join("last.safetensors")
}

#[test]
fn an_accumulated_step_is_the_whole_batch_step() {
    let c = ViTConfig { dropout: 0.0, drop_path: 0.0, ..common::tiny_grey_vit(8, 3) };
    let (model, start) = VisionTransformer::init::<f32>(&c, 3).unwrap();
    let mut rng = Rng::seed(4);
    let batch = Batch {
        images: Tensor::<f32>::randn(&[10, 1, 8, 8], 0.0, 1.0, &mut rng).into_vec(),
        labels: (0..10).map(|i| i % 3).collect(),
        mix: None,
        shape: [10, 1, 8, 8],
        indices: (0..10).collect(),
    };
    // One process, `accum` micro-batches (what `--accum-steps` makes); no dropout, so the
    // micro-batches' own random streams do not matter.
    let step = |accum: usize| {
        let mut params = start.clone();
        let mut opt = Sgd::new(&params, 0.9, 0.0, false);
        let sharding = Sharding::of_rank(10, 0, 1, accum);
        let mut rngs: Vec<Rng> = (0..accum as u64).map(Rng::seed).collect();
        let (lr, smoothing, clip) = (0.1, 0.1, Some(1.0));
        let out = if accum == 1 {
            train_step(&model, &mut params, &mut opt, batch.clone(), lr, smoothing, clip, &mut rngs[0])
        } else {
            let comm = Comm::local();
            let b = batch.clone();
            train_step_sharded(&model, &mut params, &mut opt, b, lr, smoothing, clip, &sharding, &mut rngs, &comm, None)
        };
        (out.unwrap(), values(&params))
    };
    let (whole, pw) = step(1);
    for accum in [2, 3, 10] {
        let (part, pa) = step(accum);
        assert!((part.loss - whole.loss).abs() < 1e-5, "accum {accum}: loss {} vs {}", part.loss, whole.loss);
        assert_eq!(part.correct, whole.correct);
        assert!((part.grad_norm - whole.grad_norm).abs() < 1e-4 * whole.grad_norm, "accum {accum}: grad norm");
        let diff = pw.iter().flatten().zip(pa.iter().flatten()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(diff < 1e-5, "accum {accum}: parameters differ by {diff}");
    }
}

#[test]
fn the_fine_tune_model_takes_the_encoder_at_the_new_grid_with_a_zero_head() {
    let tmp = TempDir::new("ft-load");
    let src = source(&tmp.join("src"), true);
    let ckpt = Checkpoint::open(&src).unwrap();
    let src_cfg = ckpt.config().unwrap().unwrap();
    let ft = FineTune { checkpoint: src.clone(), freeze_backbone: false };
    let cfg = FineTune::model_config(&src_cfg, 5, 16);
    assert_eq!((cfg.num_classes, cfg.image_size, cfg.representation_size), (5, 16, None));
    let (_, mut store) = VisionTransformer::init::<f32>(&cfg, 9).unwrap();
    let report = ft.load(&cfg, &mut store).unwrap();
    assert!(report.dropped.iter().any(|n| n.starts_with("pre_logits.")), "{report:?}");
    for p in store.iter() {
        if p.name.starts_with("head.") {
            assert!(p.value.data().iter().all(|&v| v == 0.0), "{} is not zero", p.name);
        } else if p.name == "pos_embed" {
            // 1 class slot + 4x4 patches, from 1 + 2x2; the class slot copied as is.
            assert_eq!(p.value.shape(), &[1, 17, 16]);
            let file: Tensor<f32> = ckpt.tensor("pos_embed").unwrap();
            assert_eq!(&p.value.data()[..16], &file.data()[..16]);
        } else {
            let file: Tensor<f32> = ckpt.tensor(&p.name).unwrap();
            assert_eq!(p.value.data(), file.data(), "{} was not copied", p.name);
        }
    }
    // A source of another width is refused, naming both.
    let other = ViTConfig { dim: 24, heads: 2, ..cfg.clone() };
    let (_, mut s2) = VisionTransformer::init::<f32>(&other, 0).unwrap();
    let e = ft.load(&other, &mut s2).unwrap_err().to_string();
    assert!(e.contains("dim 16") && e.contains("dim 24"), "{e}");
}

#[test]
fn a_frozen_backbone_stays_bit_identical_and_only_the_head_moves() {
    let tmp = TempDir::new("ft-frozen");
    let src = source(&tmp.join("src"), false);
    let ft = FineTune { checkpoint: src.clone(), freeze_backbone: true };
    let src_cfg = Checkpoint::open(&src).unwrap().config().unwrap().unwrap();
    let model = FineTune::model_config(&src_cfg, 3, 8);
    // AdamW with weight decay: a frozen parameter must not even decay.
    let cfg = TrainConfig { weight_decay: 0.1, finetune: Some(ft), ..run(model, &tmp.join("ft"), 2) };
    let report = train_on(&cfg, banded(64, 3, 8, 3), banded(16, 3, 8, 4)).unwrap();
    let ckpt = Checkpoint::open(&src).unwrap();
    let mut head_moved = false;
    for p in report.params.iter() {
        if p.name.starts_with("head.") {
            head_moved |= p.value.data().iter().any(|&v| v != 0.0);
        } else {
            let file: Tensor<f32> = ckpt.tensor(&p.name).unwrap();
            assert_eq!(p.value.data(), file.data(), "{} moved", p.name);
        }
    }
    assert!(head_moved, "the head did not train");
}

#[test]
fn a_fine_tune_resumes_exactly_where_it_stopped() {
    let tmp = TempDir::new("ft-resume");
    let src = source(&tmp.join("src"), false);
    let src_cfg = Checkpoint::open(&src).unwrap().config().unwrap().unwrap();
    let ft = FineTune { checkpoint: src, freeze_backbone: false };
    let model = FineTune::model_config(&src_cfg, 3, 12);
    let (train, test) = (banded(48, 3, 8, 5), banded(16, 3, 8, 6));
    let base = |dir: &str| ft.recipe(model.clone(), DatasetKind::Mnist, tmp.join(dir));
    let small = |c: TrainConfig| TrainConfig { batch_size: 16, grad_accum: Some(2), epochs: 2, progress: false, ..c };
    let whole = one_thread(|| train_on(&small(base("whole")), train.clone(), test.clone()).unwrap());
    assert_eq!(whole.global_step, 6);
    let first = TrainConfig { max_steps: Some(4), ..small(base("split")) };
    one_thread(|| train_on(&first, train.clone(), test.clone()).unwrap());
    // Resuming may change --accum-steps (the same update in other pieces), not the recipe.
    let resumed = TrainConfig { resume: true, grad_accum: Some(1), ..small(base("split")) };
    let rest = one_thread(|| train_on(&resumed, train.clone(), test.clone()).unwrap());
    assert_eq!(rest.global_step, 6);
    let diff = values(&whole.params)
        .iter()
        .flatten()
        .zip(values(&rest.params).iter().flatten())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-5, "resumed run differs by {diff}");
    let frozen = TrainConfig {
        resume: true,
        finetune: Some(FineTune { freeze_backbone: true, ..ft.clone() }),
        ..small(base("split"))
    };
    let e = train_on(&frozen, train.clone(), test.clone()).err().expect("a changed recipe is refused").to_string();
    assert!(e.contains("--freeze-backbone"), "{e}");
}

/// Fashion-MNIST images of `classes` only, relabelled `0..classes.len()` in that order.
fn select(d: &Dataset, classes: &[usize], limit: usize) -> Dataset {
    let idx: Vec<usize> = (0..d.len()).filter(|&i| classes.contains(&d.label(i))).take(limit).collect();
    let sub = d.subset(&idx).unwrap();
    let labels = idx.iter().map(|&i| classes.iter().position(|&c| c == d.label(i)).unwrap() as u8).collect();
    let names = classes.iter().map(|&c| d.class_names()[c].clone()).collect();
    Dataset::new(sub.images().to_vec(), labels, d.shape(), names)
        .unwrap()
        .with_normalization(d.normalization().clone())
        .unwrap()
}

#[test]
fn fine_tuning_on_a_shifted_task_beats_the_linear_probe_of_the_same_features() {
    let (train, test) = match (
        data::load_from(DatasetKind::FashionMnist, None, Split::Train),
        data::load_from(DatasetKind::FashionMnist, None, Split::Test),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true but Fashion-MNIST is missing ({e}); .ci/run installs dataset-fashion-mnist")
        }
        (Err(e), _) | (_, Err(e)) => {
            eprintln!(
                "SKIPPED: Fashion-MNIST not found ({e}); `apt-get install dataset-fashion-mnist` to run this test"
            );
            return;
        }
    };
    let tmp = TempDir::new("ft-fmnist");
    // Pre-train on the five upper-body and dress classes at 28 px ...
    let (upper, other) = ([0, 2, 3, 4, 6], [1, 5, 7, 8, 9]);
    let pre = ViTConfig { num_classes: 5, dim: 32, depth: 2, heads: 2, mlp_dim: 64, ..common::tiny_grey_vit(28, 5) };
    let pre_cfg = TrainConfig { batch_size: 64, lr: 2e-3, weight_decay: 0.05, ..run(pre, &tmp.join("pre"), 1) };
    let r = train_on(&pre_cfg, select(&train, &upper, 15_000), select(&test, &upper, 2_000)).unwrap();
    eprintln!("pre-training on {upper:?}: test accuracy {:.2}%", 100.0 * r.best_test_acc);
    // ... then move to the other five (trousers, sandals, sneakers, bags, boots) at 32 px.
    let (ft_train, ft_test) = (select(&train, &other, 3_000), select(&test, &other, 2_000));
    let src = tmp.join("pre").join("last.safetensors");
    let src_cfg = Checkpoint::open(&src).unwrap().config().unwrap().unwrap();
    let model = FineTune::model_config(&src_cfg, 5, 32);
    let tune = |freeze: bool, lr: f64, dir: &str| {
        let ft = FineTune { checkpoint: src.clone(), freeze_backbone: freeze };
        let cfg = TrainConfig {
            batch_size: 64,
            epochs: 6,
            lr,
            progress: false,
            ..ft.recipe(model.clone(), DatasetKind::FashionMnist, tmp.join(dir))
        };
        train_on(&cfg, ft_train.clone(), ft_test.clone()).unwrap().best_test_acc
    };
    let finetuned = tune(false, 0.05, "ft");
    let probe_sgd = tune(true, 0.05, "probe");
    // The best linear probe of these features: closed-form ridge on all 3000 training images.
    let (m, params) = VisionTransformer::init::<f32>(&model, 0).unwrap();
    let mut params = params;
    FineTune { checkpoint: src, freeze_backbone: true }.load(&model, &mut params).unwrap();
    let input = ImageShape::new(1, 32, 32);
    let (xtr, xte) = (ft_train.to_shape(input).unwrap(), ft_test.to_shape(input).unwrap());
    let ftr = fewshot::features(&m, &params, &xtr, 256).unwrap();
    let fte = fewshot::features(&m, &params, &xte, 256).unwrap();
    let lab = |d: &Dataset| d.labels().iter().map(|&l| l as usize).collect::<Vec<_>>();
    let probe_ridge = LinearProbe::fit(&ftr, &lab(&xtr), 5, 1.0).unwrap().accuracy(&fte, &lab(&xte));
    eprintln!(
        "shifted task {other:?} at 32 px: fine-tuned {:.2}%, linear probe (SGD, frozen backbone) {:.2}%, linear probe (ridge) {:.2}%",
        100.0 * finetuned,
        100.0 * probe_sgd,
        100.0 * probe_ridge
    );
    assert!(finetuned > probe_sgd && finetuned > probe_ridge, "fine-tuning did not beat the linear probes");
}
