//! Real data: a small ViT learns Fashion-MNIST (from the Debian package `dataset-fashion-mnist`)
//! to at least 85% test accuracy in about a minute and a half on two cores. Patches of 7 pixels
//! (16 tokens) rather than 4 (49): the same learning check at a third of the cost, since this
//! test is the longest of the suite (86.5% after 3 epochs in 1.5 min on two Zen 3 cores; patch 4
//! took 3.7 min for 86.2%).
//!
//! Without the data the test says it is skipped; under CI (`CI=true`) missing data is a failure,
//! since `.ci/run` installs the package.

use std::time::Instant;

use vit::data::{self, AugmentConfig, DatasetKind, Split};
use vit::nn::ViTConfig;
use vit::optim::Decay;
use vit::train::{train_on, OptimizerKind, TrainConfig};

#[test]
fn small_vit_reaches_85_percent_on_fashion_mnist() {
    let train = match data::load_from(DatasetKind::FashionMnist, None, Split::Train) {
        Ok(d) => d,
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true but Fashion-MNIST is missing ({e}); .ci/run installs dataset-fashion-mnist")
        }
        Err(e) => {
            eprintln!(
                "SKIPPED: Fashion-MNIST not found ({e}); `apt-get install dataset-fashion-mnist` to run this test"
            );
            return;
        }
    };
    let test = data::load_from(DatasetKind::FashionMnist, None, Split::Test).unwrap();
    assert_eq!((train.len(), test.len()), (60_000, 10_000));

    let model = ViTConfig {
        image_size: 28,
        patch_size: 7,
        in_chans: 1,
        num_classes: 10,
        dim: 64,
        depth: 4,
        heads: 4,
        mlp_dim: 128,
        ..ViTConfig::tiny(4, 28)
    };
    let out = std::env::temp_dir().join(format!("vit-fmnist-{}", std::process::id()));
    let cfg = TrainConfig {
        model,
        dataset: DatasetKind::FashionMnist,
        data_dir: None,
        train_subset: None,
        test_subset: None,
        epochs: 3,
        batch_size: 64,
        optimizer: OptimizerKind::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8 },
        lr: 2e-3,
        min_lr: 1e-5,
        warmup_epochs: 0.3,
        decay: Decay::Cosine,
        weight_decay: 0.05,
        label_smoothing: 0.0,
        clip_grad: Some(1.0),
        augment: AugmentConfig::none(),
        seed: 0,
        out_dir: out.clone(),
        progress: false,
        ..TrainConfig::default()
    };
    let t0 = Instant::now();
    let report = train_on(&cfg, train, test).unwrap();
    let minutes = t0.elapsed().as_secs_f64() / 60.0;
    let acc = report.epochs.last().unwrap().test_acc;
    eprintln!("Fashion-MNIST: test accuracy {:.2}% after {} epochs in {minutes:.1} min", 100.0 * acc, cfg.epochs);
    let _ = std::fs::remove_dir_all(&out);
    assert!(acc >= 0.85, "test accuracy {:.2}% < 85%", 100.0 * acc);
}
