//! timm compatibility, against fixtures made by timm itself (tests/fixtures/make_timm_fixture.py):
//! a timm ViT's state dict loads and reproduces timm's logits; its f16 version loads converted;
//! our save of it is tensor-for-tensor the same file content; and our pos_embed interpolation
//! matches PyTorch's `F.interpolate`.
//!
//! The other direction (a checkpoint saved by us, loaded into timm) needs PyTorch, so it is a
//! manual check: `ours_for_timm` writes a model of ours, the fixture images and our logits to
//! `$VIT_TIMM_CHECK_DIR` (default: `<temp dir>/vit-timm-check`), and
//! `tests/fixtures/check_ours_in_timm.py` loads them into timm and compares the logits.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use autograd::{Graph, Rng, Tensor};
use vit::checkpoint::{self, infer_config, resize_pos_embed, Checkpoint, Dtype, Interpolation, LoadOptions};
use vit::nn::{Ctx, Module, ParamStore, ViTConfig, VisionTransformer};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// The fixture's model: timm's `VisionTransformer(img_size=8, patch_size=4, in_chans=3,
/// num_classes=5, embed_dim=12, depth=2, num_heads=3, mlp_ratio=2)`: exact GELU, eps 1e-6.
fn timm_tiny() -> ViTConfig {
    ViTConfig { num_classes: 5, dim: 12, depth: 2, heads: 3, mlp_dim: 24, ..ViTConfig::tiny(4, 8) }
}

fn io() -> Checkpoint {
    Checkpoint::open(fixture("timm_vit_tiny_io.safetensors")).unwrap()
}

fn logits(model: &VisionTransformer, store: &ParamStore, images: &Tensor<f32>) -> Tensor<f32> {
    let mut g = Graph::inference();
    let vars = store.bind(&mut g);
    let x = g.input(images.clone());
    let logits = model.forward(&mut g, &vars, x, &mut Ctx::new(&mut Rng::seed(0)));
    g.value(logits).clone()
}

fn max_abs_diff(a: &Tensor<f32>, b: &Tensor<f32>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.data().iter().zip(b.data()).map(|(x, y)| (x - y).abs() as f64).fold(0.0, f64::max)
}

#[test]
fn timm_state_dict_reproduces_timm_logits() {
    let ckpt = Checkpoint::open(fixture("timm_vit_tiny.safetensors")).unwrap();
    let config = timm_tiny();
    assert_eq!(infer_config(&ckpt, Some(3)).unwrap(), config);
    let (model, mut store) = VisionTransformer::init::<f32>(&config, 0).unwrap();
    let report = checkpoint::load_params(&ckpt, &config, &mut store, &LoadOptions::default()).unwrap();
    assert_eq!(report.loaded.len(), store.len());
    assert_eq!(ckpt.len(), store.len(), "timm's state dict has exactly our parameters");

    let io = io();
    let images = io.tensor::<f32>("images").unwrap();
    let want = io.tensor::<f32>("logits").unwrap();
    let got = logits(&model, &store, &images);
    let diff = max_abs_diff(&got, &want);
    eprintln!("max |ours - timm| over the logits: {diff:e}");
    assert!(diff <= 1e-5, "logits differ from timm's by {diff:e}:\n ours {got:?}\n timm {want:?}");
    // The fixture's logits are O(1): a 1e-5 match is not a match of near-zero numbers.
    assert!(want.data().iter().any(|v| v.abs() > 0.5), "{want:?}");
}

#[test]
fn timm_f16_state_dict_loads_converted() {
    let ckpt = Checkpoint::open(fixture("timm_vit_tiny_f16.safetensors")).unwrap();
    assert_eq!(ckpt.dtype("blocks.0.attn.qkv.weight"), Some(Dtype::F16));
    let config = timm_tiny();
    let (model, mut store) = VisionTransformer::init::<f32>(&config, 0).unwrap();
    let report = checkpoint::load_params(&ckpt, &config, &mut store, &LoadOptions::default()).unwrap();
    assert_eq!(report.converted.len(), store.len());
    let io = io();
    let got = logits(&model, &store, &io.tensor("images").unwrap());
    let want = io.tensor::<f32>("logits_f16").unwrap();
    let diff = max_abs_diff(&got, &want);
    assert!(diff <= 1e-5, "logits of the f16 weights differ from timm's by {diff:e}");
}

#[test]
fn our_save_of_a_timm_model_holds_the_same_tensors() {
    let src = Checkpoint::open(fixture("timm_vit_tiny.safetensors")).unwrap();
    let config = timm_tiny();
    let (_, mut store) = VisionTransformer::init::<f32>(&config, 0).unwrap();
    checkpoint::load_params(&src, &config, &mut store, &LoadOptions::default()).unwrap();
    let dir = std::env::temp_dir().join(format!("vit-timm-resave-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("resaved.safetensors");
    checkpoint::save(&path, &store, &[], &checkpoint::config_metadata(&config)).unwrap();
    let ours = Checkpoint::open(&path).unwrap();
    let mut a: Vec<&String> = ours.names().iter().collect();
    let mut b: Vec<&String> = src.names().iter().collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
    for name in src.names() {
        let (x, y) = (ours.tensor::<f32>(name).unwrap(), src.tensor::<f32>(name).unwrap());
        assert_eq!(x.shape(), y.shape(), "{name}");
        assert!(x.data().iter().zip(y.data()).all(|(p, q)| p.to_bits() == q.to_bits()), "{name}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn pos_embed_resize_matches_pytorch() {
    let io = io();
    let src = io.tensor::<f32>("resize.src").unwrap(); // [1, 1 + 3*3, 4]
    let modes = [
        (Interpolation::Bilinear, "bilinear"),
        (Interpolation::Bicubic, "bicubic"),
        (Interpolation::BilinearAntialias, "bilinear_aa"),
        (Interpolation::BicubicAntialias, "bicubic_aa"),
    ];
    for (mode, tag) in modes {
        for side in [5, 2] {
            let want = io.tensor::<f32>(&format!("resize.{tag}_{side}")).unwrap();
            let got = resize_pos_embed(&src, 1, None, (side, side), mode).unwrap();
            let diff = max_abs_diff(&got, &want);
            assert!(diff <= 1e-6, "{tag} 3x3 -> {side}x{side}: {diff:e} from PyTorch");
        }
    }
    // timm's own resampling (what its checkpoint_filter_fn does) is the antialiased bicubic.
    for side in [5, 2] {
        let want = io.tensor::<f32>(&format!("resize.timm_{side}")).unwrap();
        let got = resize_pos_embed(&src, 1, None, (side, side), Interpolation::BicubicAntialias).unwrap();
        assert!(max_abs_diff(&got, &want) <= 1e-6, "timm 3x3 -> {side}x{side}");
    }
}

/// Writes a model of ours (not from timm), the fixture images and our logits for
/// tests/fixtures/check_ours_in_timm.py. Also checks here that what was written reloads.
#[test]
fn ours_for_timm() {
    let dir = std::env::var_os("VIT_TIMM_CHECK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("vit-timm-check"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = timm_tiny();
    let (model, mut store) = VisionTransformer::init::<f32>(&config, 7).unwrap();
    // Values of order one everywhere (timm's init would make every logit tiny).
    let mut rng = Rng::seed(8);
    for p in store.iter_mut() {
        let is_norm_weight = p.name.contains("norm") && p.name.ends_with("weight");
        let noise = Tensor::<f32>::randn(p.value.shape(), 0.0, if is_norm_weight { 0.2 } else { 0.3 }, &mut rng);
        p.value = if is_norm_weight { noise.map(|v| v + 1.0) } else { noise };
    }
    let images = io().tensor::<f32>("images").unwrap();
    let ours = logits(&model, &store, &images);
    let model_path = dir.join("vit_ours.safetensors");
    checkpoint::save(&model_path, &store, &[], &checkpoint::config_metadata(&config)).unwrap();
    let io_tensors = [("images", &images), ("logits", &ours)];
    checkpoint::write_tensors(dir.join("vit_ours_io.safetensors"), &io_tensors, &BTreeMap::new()).unwrap();

    let ckpt = Checkpoint::open(&model_path).unwrap();
    let back_config = ckpt.config().unwrap().unwrap();
    let (back_model, mut back) = VisionTransformer::init::<f32>(&back_config, 0).unwrap();
    checkpoint::load_params(&ckpt, &back_config, &mut back, &LoadOptions::default()).unwrap();
    assert_eq!(logits(&back_model, &back, &images).data(), ours.data());
}
