//! The ViT-CNN hybrid (paper section 3.1): the official parameter counts of R+ViT-Ti/16,
//! R26+ViT-S/32 and R50+ViT-B/16, the standardised convolution against plain loops, the ResNet's
//! feature-map sizes, timm's tiny hybrids (bare root, and bottleneck stages) reproduced from
//! their state dicts alone, and the hybrid trained on Fashion-MNIST from the command line, its
//! checkpoint read back with and without the stored config. (The f64 gradchecks of the stem,
//! the bottleneck block and whole hybrids are in `tests/nn_modules.rs`.)

mod common;
use common::timm::{assert_timms_logits, layouts_fixture, write_state_dict};
use common::TempDir;

use std::collections::BTreeMap;
use std::process::Command;

use autograd::{Graph, Rng, Tensor};
use vit::checkpoint::{self, config_from_json, config_to_json, infer_config, Checkpoint, LoadOptions};
use vit::nn::{Ctx, Module, ParamStore, ResNetStem, ResNetStemConfig, StdConv, Variant, ViTConfig, VisionTransformer};

/// timm's own parameter counts of its R+ViT-Ti/16, R26+ViT-S/32 and R50+ViT-B/16 (224 px, 1000
/// classes), computed by tests/fixtures/make_timm_layouts_fixture.py.
fn timm_count(name: &str) -> usize {
    let ckpt = fixture();
    let counts: serde_json::Value = serde_json::from_str(ckpt.meta("timm_param_counts").unwrap()).unwrap();
    counts[name].as_u64().unwrap() as usize
}

fn fixture() -> Checkpoint {
    layouts_fixture()
}

/// The official `models_test.py` gives R+ViT-Ti/16 (224 px, 1000 classes) 6,337,704 parameters:
/// ViT-Ti/16's 5,717,416 less its 16x16 pixel patch embedding and 197-token `pos_embed`, plus the
/// ResNet root (conv 64x3x7x7, group norm 2x64), an 8x8 patch embedding of the 64-channel
/// feature map and a 50-token `pos_embed`.
#[test]
fn r_ti16_has_the_official_parameter_count() {
    let c = ViTConfig::hybrid(Variant::Tiny, ResNetStemConfig::bit(), 8, 224);
    assert_eq!((c.feature_size(), c.grid(), c.num_tokens()), (56, 7, 50));
    assert_eq!(c.num_params(), 6_337_704);
    assert_eq!(c.num_params(), timm_count("vit_tiny_r_s16_p8_224"));
    let (_, store) = VisionTransformer::init::<f32>(&c, 0).unwrap();
    assert_eq!(store.iter().map(|p| p.value.numel()).sum::<usize>(), 6_337_704);
    // timm's names (vit_tiny_r_s16_p8_224, whose bare root is a Sequential), so its state dicts
    // line up.
    let names: Vec<&str> = store.iter().map(|p| p.name.as_str()).collect();
    for n in ["patch_embed.backbone.conv.weight", "patch_embed.backbone.norm.weight", "patch_embed.backbone.norm.bias"]
    {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    // The plain ViT-Ti/16 for comparison.
    assert_eq!(ViTConfig::tiny(16, 224).num_params(), 5_717_416);
}

/// The official `models_test.py`: R26+ViT-S/32 has 36,431,912 parameters and R50+ViT-B/16
/// 98,659,112 (224 px, 1000 classes), as timm counts its `vit_small_r26_s32_224` and
/// `vit_base_r50_s16_224`; the feature maps are 7x7x2048 and 14x14x1024.
#[test]
fn r26_s32_and_r50_b16_have_the_official_parameter_counts() {
    let cases = [
        (
            ViTConfig::hybrid(Variant::Small, ResNetStemConfig::r26(), 1, 224),
            36_431_912,
            "vit_small_r26_s32_224",
            7,
            2048,
        ),
        (
            ViTConfig::hybrid(Variant::Base, ResNetStemConfig::r50(), 1, 224),
            98_659_112,
            "vit_base_r50_s16_224",
            14,
            1024,
        ),
    ];
    for (c, official, timm, side, chans) in cases {
        assert_eq!((c.feature_size(), c.patch_chans(), c.num_tokens()), (side, chans, side * side + 1), "{timm}");
        assert_eq!(c.patch_pixels(), 224 / side, "{timm}");
        assert_eq!(c.num_params(), official, "{timm}");
        assert_eq!(c.num_params(), timm_count(timm), "{timm}");
        let (_, store) = VisionTransformer::init::<f32>(&c, 0).unwrap();
        assert_eq!(store.num_elements(), official, "{timm}: the allocated store");
        let names: Vec<&str> = store.iter().map(|p| p.name.as_str()).collect();
        let last = c.resnet.as_ref().unwrap().layers.len() - 1;
        for n in [
            "patch_embed.backbone.stem.conv.weight".to_string(),
            "patch_embed.backbone.stem.norm.bias".into(),
            "patch_embed.backbone.stages.0.blocks.0.downsample.conv.weight".into(),
            "patch_embed.backbone.stages.0.blocks.0.downsample.norm.weight".into(),
            "patch_embed.backbone.stages.0.blocks.1.conv2.weight".into(),
            format!("patch_embed.backbone.stages.{last}.blocks.1.norm3.bias"),
        ] {
            assert!(names.contains(&n.as_str()), "{timm}: {n} missing");
        }
        // Only the first block of a stage projects its shortcut.
        assert!(!names.iter().any(|n| n.contains("blocks.1.downsample")), "{timm}");
        // The checkpoint JSON keeps the stages.
        let json = config_to_json(&c);
        assert!(json.contains("\"resnet_layers\":["), "{json}");
        assert_eq!(config_from_json(&json).unwrap(), c, "{json}");
    }
    // The bare root's JSON is as before the stages existed.
    let json = config_to_json(&ViTConfig::hybrid(Variant::Tiny, ResNetStemConfig::bit(), 8, 224));
    assert!(json.contains("\"resnet_width\":64") && !json.contains("resnet_layers"), "{json}");
    // The CLI names.
    for (name, resnet, variant) in [
        ("r-ti", ResNetStemConfig::bit(), "ti"),
        ("r26-s", ResNetStemConfig::r26(), "s"),
        ("r50-b", ResNetStemConfig::r50(), "b"),
    ] {
        assert_eq!(ResNetStemConfig::from_model_name(name), Some((resnet, variant)));
    }
    assert_eq!(ResNetStemConfig::from_model_name("ti"), None);
    assert_eq!(ResNetStemConfig::from_model_name("r101-b"), None);
}

/// timm's tiny hybrids (tests/fixtures/make_timm_layouts_fixture.py `build_hybrid`): read off
/// their state dicts alone (root width, the stages' blocks, the image size), loaded strictly,
/// they give timm's logits.
#[test]
fn timms_tiny_hybrids_are_recognised_load_and_give_timms_logits() {
    let io = fixture();
    let dir = TempDir::new("timm-hybrids");
    let images = io.tensor::<f32>("hybrid_images").unwrap();
    for (tag, layers, patch_size) in [("hybrid_root", vec![], 2), ("hybrid_stages", vec![1, 1], 1)] {
        let ckpt = write_state_dict(&io, tag, &dir.join(tag));
        let want_config = ViTConfig {
            num_classes: 5,
            dim: 12,
            depth: 1,
            heads: 3,
            mlp_dim: 24,
            ..ViTConfig::hybrid(Variant::Tiny, ResNetStemConfig { width: 8, layers }, patch_size, 16)
        };
        let config = infer_config(&ckpt, Some(3)).unwrap();
        assert_eq!(config, want_config, "{tag}");
        assert_eq!(config.grid(), 2, "{tag}");
        assert_timms_logits(&io, tag, &ckpt, &config, &images, 0.3);
    }
}

/// Our bare-root hybrids of before the stages existed named the root `patch_embed.backbone.stem.*`;
/// such a file still loads (and its shapes still say what it is).
#[test]
fn a_bare_root_hybrid_saved_under_the_old_names_still_loads() {
    let io = fixture();
    let dir = TempDir::new("hybrid-old-names");
    let tensors: Vec<(String, Tensor<f32>)> = io
        .tensors_with_prefix("hybrid_root/")
        .unwrap()
        .into_iter()
        .filter(|(n, _)| n != "logits")
        .map(|(n, t)| (n.replace("patch_embed.backbone.", "patch_embed.backbone.stem."), t))
        .collect();
    assert!(tensors.iter().any(|(n, _)| n == "patch_embed.backbone.stem.conv.weight"));
    let refs: Vec<(&str, &Tensor<f32>)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let path = dir.join("old.safetensors");
    checkpoint::write_tensors(&path, &refs, &BTreeMap::new()).unwrap();
    let ckpt = Checkpoint::open(&path).unwrap();
    let config = infer_config(&ckpt, Some(3)).unwrap();
    assert_eq!(config.resnet, Some(ResNetStemConfig { width: 8, layers: vec![] }));
    let (_, mut store) = VisionTransformer::init::<f32>(&config, 0).unwrap();
    let report = checkpoint::load_params(&ckpt, &config, &mut store, &LoadOptions::default()).unwrap();
    assert_eq!(report.loaded.len(), store.len());
    let conv = store.iter().find(|p| p.name == "patch_embed.backbone.conv.weight").unwrap();
    assert_eq!(conv.value.data(), io.tensor::<f32>("hybrid_root/patch_embed.backbone.conv.weight").unwrap().data());
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
fn the_resnet_shrinks_the_image_with_same_padding() {
    // (side, blocks per stage, feature side, channels): the root quarters the image, every
    // stage after the first halves it again.
    let cases = [
        (224, vec![], 56, 4),
        (28, vec![], 7, 4),
        (32, vec![], 8, 4),
        (9, vec![], 3, 4),
        (5, vec![], 2, 4),
        (9, vec![1], 3, 16),
        (9, vec![1, 2], 2, 32),
        (28, vec![1, 1, 1, 1], 1, 128),
        (224, vec![2, 2, 2, 2], 7, 128),
    ];
    for (side, layers, want, chans) in cases {
        let cfg = ResNetStemConfig { width: 4, layers };
        assert_eq!((cfg.feature_size(side), cfg.out_chans()), (want, chans), "{cfg:?}");
        let mut store = ParamStore::<f32>::new();
        let stem = ResNetStem::new(&mut store, "b", 3, cfg.clone(), &mut Rng::seed(0));
        assert_eq!(store.num_elements(), cfg.num_params(3), "{cfg:?}");
        let mut g = Graph::<f32>::inference();
        let p = store.bind(&mut g);
        let x = g.input(Tensor::randn(&[1, 3, side, side], 0.0, 1.0, &mut Rng::seed(1)));
        let y = stem.forward(&mut g, &p, x, &mut Ctx::new(&mut Rng::seed(0)));
        assert_eq!(g.shape(y), &[1, chans, want, want], "side {side}, {cfg:?}");
        // After the final ReLU, every feature is >= 0.
        assert!(g.value(y).data().iter().all(|&v| v >= 0.0));
    }
    // A patch of one feature pixel spans 4x4 image pixels (the analysis figures' scale).
    let r_ti = |patch, side| ViTConfig::hybrid(Variant::Tiny, ResNetStemConfig::bit(), patch, side);
    assert_eq!((r_ti(1, 28).patch_pixels(), ViTConfig::tiny(4, 28).patch_pixels()), (4, 4));
    // A feature map the patches do not tile is a config error naming it.
    let e = r_ti(3, 28).validate().unwrap_err().to_string();
    assert!(e.contains("7x7 feature map") && e.contains("patch size 3"), "{e}");
    // So are stages beyond ResNet-v2's four, and empty ones.
    for layers in [vec![1; 5], vec![2, 0]] {
        let c = ViTConfig::hybrid(Variant::Tiny, ResNetStemConfig { width: 4, layers }, 1, 64);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("stages"), "{e}");
    }
}

/// Trains `model` (extra flags `extra`) on 3000 Fashion-MNIST images from the command line and
/// returns the test accuracy and the last checkpoint's stored and inferred configs; `None` (and
/// `skipped:` printed) without Fashion-MNIST.
fn train_hybrid(model: &str, extra: &[&str], epochs: &str) -> Option<(f64, ViTConfig, ViTConfig)> {
    if vit::data::load_from(vit::data::DatasetKind::FashionMnist, None, vit::data::Split::Test).is_err() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true but Fashion-MNIST is missing; .ci/run installs dataset-fashion-mnist");
        }
        println!("skipped: Fashion-MNIST not found; `apt-get install dataset-fashion-mnist` to run this test");
        return None;
    }
    let tmp = TempDir::new(&format!("hybrid-cli-{model}"));
    let out = tmp.join("run");
    #[rustfmt::skip]
    let args = [
        "train", "--dataset", "fashion-mnist", "--model", model, "--patch", "1", "--dim", "32",
        "--depth", "2", "--heads", "2", "--mlp-ratio", "2", "--epochs", epochs, "--batch-size", "64",
        "--lr", "3e-3", "--warmup", "0.2", "--augment", "none", "--label-smoothing", "0",
        "--train-subset", "3000", "--test-subset", "1000", "--quiet",
    ];
    let o = Command::new(env!("CARGO_BIN_EXE_vit")).args(args).args(extra).arg("--out").arg(&out).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "vit train --model {model} failed:\n{stderr}");
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    let acc = last["test_acc"].as_f64().unwrap();
    println!(
        "hybrid {model} {extra:?} (dim 32, depth 2), {epochs} epochs on 3000 Fashion-MNIST images: test accuracy {:.2}%",
        100.0 * acc
    );
    let ckpt = Checkpoint::open(out.join("last.safetensors")).unwrap();
    let stored = ckpt.config().unwrap().unwrap();
    let inferred = infer_config(&ckpt, Some(2)).unwrap();
    Some((acc, stored, inferred))
}

/// What the shapes fix of a config (the rest, dropout and such, is not in a state dict; nor is
/// the image size, only the patch grid: 28 and 32 px both give R26 a 1x1 map).
fn shape(c: &ViTConfig) -> (Option<ResNetStemConfig>, usize, usize, usize, usize, usize, usize) {
    (c.resnet.clone(), c.grid(), c.patch_size, c.in_chans, c.dim, c.depth, c.num_params())
}

#[test]
fn the_hybrid_trains_on_fashion_mnist_from_the_command_line() {
    let Some((acc, stored, inferred)) = train_hybrid("r-ti", &[], "3") else { return };
    // 141 steps from scratch (60.0% here): well above the 10% of chance, far from converged.
    assert!(acc > 0.45, "test accuracy {acc}");
    // The checkpoint records the stem; read off the shapes alone, it is the same model.
    assert_eq!((stored.resnet.clone(), stored.feature_size(), stored.grid()), (Some(ResNetStemConfig::bit()), 7, 7));
    assert_eq!(shape(&inferred), shape(&stored));
}

#[test]
fn a_hybrid_with_bottleneck_stages_trains_from_the_command_line() {
    // R26's layout, (2, 2, 2, 2) blocks, at width 8 (stage widths 32 ... 256): the 28 px images
    // become a 1x1 map of 256 channels, one token. (A map that small is far from the 7x7 of
    // 224 px: its group norms see one pixel, so this shows the stages train, not R26's accuracy.)
    let Some((acc, stored, inferred)) = train_hybrid("r26-ti", &["--resnet-width", "8"], "2") else { return };
    // 23.0% here after 92 steps, against 10% for chance.
    assert!(acc > 0.15, "test accuracy {acc}");
    let r26 = ResNetStemConfig { width: 8, ..ResNetStemConfig::r26() };
    assert_eq!((stored.resnet.clone(), stored.feature_size(), stored.patch_chans()), (Some(r26), 1, 256));
    // The stage layout read back off the tensor names alone.
    assert_eq!(shape(&inferred), shape(&stored));
}

#[test]
fn a_hybrid_with_one_stage_at_the_roots_map_trains_from_the_command_line() {
    // The root and one stage of one bottleneck block at width 8 (32 channels out, stride 1): the
    // 7x7 map of the root alone, with one residual block of 3x3 convolutions on it.
    let flags = ["--resnet-width", "8", "--resnet-layers", "1"];
    let Some((acc, stored, inferred)) = train_hybrid("r-ti", &flags, "2") else { return };
    // 40.7% here after 94 steps, against 10% for chance.
    assert!(acc > 0.25, "test accuracy {acc}");
    let one_stage = ResNetStemConfig { width: 8, layers: vec![1] };
    assert_eq!((stored.resnet.clone(), stored.feature_size(), stored.patch_chans()), (Some(one_stage), 7, 32));
    assert_eq!(shape(&inferred), shape(&stored));
}
