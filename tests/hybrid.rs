//! The ViT-CNN hybrid (paper section 3.1): the official R+ViT-Ti/16's parameter count, the
//! standardised convolution against plain loops, the stem's feature-map size, and the hybrid
//! trained on Fashion-MNIST from the command line, its checkpoint read back with and without the
//! stored config. (The stem's and the whole hybrid's f64 gradchecks are in `tests/nn_modules.rs`.)

mod common;
use common::TempDir;

use std::process::Command;

use autograd::{Graph, Rng, Tensor};
use vit::checkpoint::{infer_config, Checkpoint};
use vit::nn::{Ctx, Module, ParamStore, ResNetStem, ResNetStemConfig, StdConv, Variant, ViTConfig, VisionTransformer};

/// The official `models_test.py` gives R+ViT-Ti/16 (224 px, 1000 classes) 6,337,704 parameters:
/// ViT-Ti/16's 5,717,416 less its 16x16 pixel patch embedding and 197-token `pos_embed`, plus the
/// ResNet root (conv 64x3x7x7, group norm 2x64), an 8x8 patch embedding of the 64-channel
/// feature map and a 50-token `pos_embed`.
#[test]
fn r_ti16_has_the_official_parameter_count() {
    let c = ViTConfig::hybrid(Variant::Tiny, 8, 224);
    assert_eq!((c.feature_size(), c.grid(), c.num_tokens()), (56, 7, 50));
    assert_eq!(c.num_params(), 6_337_704);
    let (_, store) = VisionTransformer::init::<f32>(&c, 0).unwrap();
    assert_eq!(store.iter().map(|p| p.value.numel()).sum::<usize>(), 6_337_704);
    // timm's names (vit_tiny_r_s16_p8_224), so its state dicts line up.
    let names: Vec<&str> = store.iter().map(|p| p.name.as_str()).collect();
    for n in [
        "patch_embed.backbone.stem.conv.weight",
        "patch_embed.backbone.stem.norm.weight",
        "patch_embed.backbone.stem.norm.bias",
        "patch_embed.proj.weight",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    // The plain ViT-Ti/16 for comparison.
    assert_eq!(ViTConfig::tiny(16, 224).num_params(), 5_717_416);
}

/// `conv(x, (W - mean) / sqrt(var + eps))` per output channel, SAME padding, in plain loops.
fn std_conv_reference(x: &Tensor<f64>, w: &Tensor<f64>, stride: usize, eps: f64) -> Vec<f64> {
    let (&[b, c, h, wd], &[o, _, k, _]) = (x.shape(), w.shape()) else { unreachable!() };
    let fan = c * k * k;
    let mut ws = w.data().to_vec();
    for row in ws.chunks_mut(fan) {
        let m = row.iter().sum::<f64>() / fan as f64;
        let v = row.iter().map(|x| (x - m).powi(2)).sum::<f64>() / fan as f64;
        row.iter_mut().for_each(|x| *x = (*x - m) / (v + eps).sqrt());
    }
    let (ho, wo) = (h.div_ceil(stride), wd.div_ceil(stride));
    let pad = |size: usize, out: usize| (((out - 1) * stride + k).saturating_sub(size)) / 2;
    let (pt, pl) = (pad(h, ho), pad(wd, wo));
    let mut y = vec![0.0; b * o * ho * wo];
    for bi in 0..b {
        for oc in 0..o {
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut acc = 0.0;
                    for ic in 0..c {
                        for ky in 0..k {
                            for kx in 0..k {
                                let (iy, ix) = (
                                    (oy * stride + ky) as isize - pt as isize,
                                    (ox * stride + kx) as isize - pl as isize,
                                );
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                                    let xv = x.data()[((bi * c + ic) * h + iy as usize) * wd + ix as usize];
                                    acc += xv * ws[((oc * c + ic) * k + ky) * k + kx];
                                }
                            }
                        }
                    }
                    y[((bi * o + oc) * ho + oy) * wo + ox] = acc;
                }
            }
        }
    }
    y
}

#[test]
fn std_conv_matches_plain_loops_and_ignores_the_weight_scale() {
    for (side, chans, out, k, stride) in [(9, 2, 3, 7, 2), (8, 3, 2, 7, 2), (5, 1, 4, 3, 1), (6, 2, 2, 3, 2)] {
        let mut store = ParamStore::<f64>::new();
        let conv = StdConv::new(&mut store, "conv", (chans, out), k, stride, &mut Rng::seed(1));
        let mut rng = Rng::seed(side as u64);
        let w = Tensor::<f64>::randn(&[out, chans, k, k], 0.3, 2.0, &mut rng);
        store.iter_mut().next().unwrap().value = w.clone();
        let x = Tensor::<f64>::randn(&[2, chans, side, side], 0.0, 1.0, &mut rng);
        let mut g = Graph::<f64>::inference();
        let p = store.bind(&mut g);
        let xv = g.input(x.clone());
        let y = conv.forward(&mut g, &p, xv, &mut Ctx::new(&mut Rng::seed(0)));
        let want = std_conv_reference(&x, &w, stride, conv.eps);
        let got = g.value(y).data().to_vec();
        assert_eq!(got.len(), want.len(), "side {side}, k {k}, stride {stride}");
        let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(diff < 1e-9, "side {side}, k {k}, stride {stride}: max diff {diff}");
        // Standardisation: scaling and shifting the weight changes nothing.
        store.iter_mut().next().unwrap().value =
            Tensor::from_vec(w.data().iter().map(|v| 5.0 * v - 1.0).collect(), w.shape());
        let mut g = Graph::<f64>::inference();
        let p = store.bind(&mut g);
        let xv = g.input(x.clone());
        let y2 = conv.forward(&mut g, &p, xv, &mut Ctx::new(&mut Rng::seed(0)));
        let diff = g.value(y2).data().iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        // Up to eps = 1e-8 against a variance of about 4 (then 100).
        assert!(diff < 1e-6, "the output moved by {diff} with the weight's scale");
    }
}

#[test]
fn the_stem_quarters_the_image_with_same_padding() {
    for (side, want) in [(224, 56), (28, 7), (32, 8), (9, 3), (5, 2)] {
        let cfg = ResNetStemConfig { width: 4 };
        assert_eq!(cfg.feature_size(side), want);
        let mut store = ParamStore::<f32>::new();
        let stem = ResNetStem::new(&mut store, "b", 3, cfg, &mut Rng::seed(0));
        let mut g = Graph::<f32>::inference();
        let p = store.bind(&mut g);
        let x = g.input(Tensor::randn(&[1, 3, side, side], 0.0, 1.0, &mut Rng::seed(1)));
        let y = stem.forward(&mut g, &p, x, &mut Ctx::new(&mut Rng::seed(0)));
        assert_eq!(g.shape(y), &[1, 4, want, want], "side {side}");
        // After the ReLU, every feature is >= 0.
        assert!(g.value(y).data().iter().all(|&v| v >= 0.0));
    }
    // A patch of one feature pixel spans 4x4 image pixels (the analysis figures' scale).
    assert_eq!((ViTConfig::hybrid(Variant::Tiny, 1, 28).patch_pixels(), ViTConfig::tiny(4, 28).patch_pixels()), (4, 4));
    // A feature map the patches do not tile is a config error naming it.
    let e = ViTConfig::hybrid(Variant::Tiny, 3, 28).validate().unwrap_err().to_string();
    assert!(e.contains("7x7 feature map") && e.contains("patch size 3"), "{e}");
}

#[test]
fn the_hybrid_trains_on_fashion_mnist_from_the_command_line() {
    if vit::data::load_from(vit::data::DatasetKind::FashionMnist, None, vit::data::Split::Test).is_err() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true but Fashion-MNIST is missing; .ci/run installs dataset-fashion-mnist");
        }
        println!("skipped: Fashion-MNIST not found; `apt-get install dataset-fashion-mnist` to run this test");
        return;
    }
    let tmp = TempDir::new("hybrid-cli");
    let out = tmp.join("run");
    #[rustfmt::skip]
    let args = [
        "train", "--dataset", "fashion-mnist", "--model", "r-ti", "--patch", "1", "--dim", "32",
        "--depth", "2", "--heads", "2", "--mlp-ratio", "2", "--epochs", "3", "--batch-size", "64",
        "--lr", "3e-3", "--warmup", "0.2", "--augment", "none", "--label-smoothing", "0",
        "--train-subset", "3000", "--test-subset", "1000", "--quiet", "--out",
    ];
    let o = Command::new(env!("CARGO_BIN_EXE_vit")).args(args).arg(&out).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "vit train --model r-ti failed:\n{stderr}");
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    let acc = last["test_acc"].as_f64().unwrap();
    println!("hybrid r-ti (dim 32, depth 2), 3 epochs on 3000 Fashion-MNIST images: test accuracy {:.2}%", 100.0 * acc);
    // 141 steps from scratch (60.0% here): well above the 10% of chance, far from converged.
    assert!(acc > 0.45, "test accuracy {acc}:\n{stderr}");
    // The checkpoint records the stem; read off the shapes alone, it is the same model.
    let ckpt = Checkpoint::open(out.join("last.safetensors")).unwrap();
    let stored = ckpt.config().unwrap().unwrap();
    assert_eq!((stored.resnet, stored.feature_size(), stored.grid()), (Some(ResNetStemConfig::bit()), 7, 7));
    let inferred = infer_config(&ckpt, Some(2)).unwrap();
    let shape = |c: &ViTConfig| (c.resnet, c.image_size, c.patch_size, c.in_chans, c.dim, c.depth, c.num_params());
    assert_eq!(shape(&inferred), shape(&stored));
}
