//! timm's pooling layouts (`global_pool='avg'` with or without a class token, `fc_norm` after
//! pooling or `norm` before it), against a fixture made by timm itself
//! (tests/fixtures/make_timm_layouts_fixture.py): each state dict is recognised from its names
//! and shapes alone, loads strictly, and reproduces timm's logits; our checkpoint JSON keeps the
//! layout. (The f64 gradcheck of the pooling paths is in `tests/nn_modules.rs`, the fused and
//! plain paths' agreement in `tests/fused_vs_plain.rs`.)

mod common;
use common::TempDir;

use std::collections::BTreeMap;
use std::path::Path;

use autograd::{Graph, Rng, Tensor};
use vit::checkpoint::{self, config_from_json, config_to_json, infer_config, Checkpoint, LoadOptions};
use vit::nn::{Classifier, Ctx, Module, ViTConfig, VisionTransformer};

fn fixture() -> Checkpoint {
    Checkpoint::open(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/timm_vit_layouts.safetensors")).unwrap()
}

/// The fixture's models: `VisionTransformer(img_size=8, patch_size=4, in_chans=3, num_classes=5,
/// embed_dim=12, depth=1, num_heads=3, mlp_ratio=2, ...)` with the layout's pooling.
fn timm_tiny(class_token: bool, fc_norm: bool) -> ViTConfig {
    ViTConfig {
        num_classes: 5,
        dim: 12,
        depth: 1,
        heads: 3,
        mlp_dim: 24,
        classifier: Classifier::Gap,
        class_token,
        fc_norm,
        ..ViTConfig::tiny(4, 8)
    }
}

/// Layout `tag`'s state dict as timm saves it (the fixture's `{tag}/` prefix removed), in `dir`.
fn state_dict(io: &Checkpoint, tag: &str, dir: &TempDir) -> Checkpoint {
    let prefix = format!("{tag}/");
    let tensors: Vec<(String, Tensor<f32>)> =
        io.tensors_with_prefix(&prefix).unwrap().into_iter().filter(|(n, _)| n != "logits").collect();
    let refs: Vec<(&str, &Tensor<f32>)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let path = dir.join(format!("{tag}.safetensors"));
    checkpoint::write_tensors(&path, &refs, &BTreeMap::new()).unwrap();
    Checkpoint::open(&path).unwrap()
}

#[test]
fn every_timm_pooling_layout_is_recognised_loads_and_gives_timms_logits() {
    let io = fixture();
    let dir = TempDir::new("timm-layouts");
    let images = io.tensor::<f32>("images").unwrap();
    for (tag, class_token, fc_norm, final_norm) in
        [("avg_cls", true, true, "fc_norm"), ("avg", false, true, "fc_norm"), ("avg_prenorm", false, false, "norm")]
    {
        let ckpt = state_dict(&io, tag, &dir);
        assert!(ckpt.shape(&format!("{final_norm}.weight")).is_some(), "{tag}: the fixture lacks {final_norm}");
        let config = timm_tiny(class_token, fc_norm);
        assert_eq!(infer_config(&ckpt, Some(3)).unwrap(), config, "{tag}: the layout read off the state dict");
        let (model, mut store) = VisionTransformer::init::<f32>(&config, 0).unwrap();
        assert!(store.id(&format!("{final_norm}.weight")).is_some(), "{tag}: no {final_norm} in our model");
        let report = checkpoint::load_params(&ckpt, &config, &mut store, &LoadOptions::default()).unwrap();
        assert_eq!((report.loaded.len(), ckpt.len()), (store.len(), store.len()), "{tag}: a strict, complete load");

        let mut g = Graph::inference();
        let p = store.bind(&mut g);
        let x = g.input(images.clone());
        let logits = model.forward(&mut g, &p, x, &mut Ctx::new(&mut Rng::seed(0)));
        let (got, want) = (g.value(logits).clone(), io.tensor::<f32>(&format!("{tag}/logits")).unwrap());
        assert_eq!(got.shape(), want.shape());
        let diff = got.data().iter().zip(want.data()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        eprintln!("{tag}: max |ours - timm| over the logits: {diff:e}");
        assert!(diff <= 1e-5, "{tag}: logits differ from timm's by {diff:e}:\n ours {got:?}\n timm {want:?}");
        assert!(want.data().iter().any(|v| v.abs() > 0.5), "{tag}: {want:?}");
    }
}

#[test]
fn the_checkpoint_json_keeps_the_layout_and_old_files_read_as_before() {
    for (class_token, fc_norm) in [(true, true), (false, true), (false, false), (true, false)] {
        let c = timm_tiny(class_token, fc_norm);
        let json = config_to_json(&c);
        assert_eq!(config_from_json(&json).unwrap(), c, "{json}");
    }
    // The two layouts that existed before are written as before: no new key.
    for c in [ViTConfig::tiny(4, 8), timm_tiny(false, false)] {
        let json = config_to_json(&c);
        assert!(!json.contains("class_token") && !json.contains("fc_norm"), "{json}");
    }
    // Token pooling without a class token is refused by name.
    let bad = ViTConfig { class_token: false, ..ViTConfig::tiny(4, 8) };
    let e = bad.validate().unwrap_err().to_string();
    assert!(e.contains("class token"), "{e}");
}

#[test]
fn a_gap_model_with_a_class_token_and_fc_norm_saves_and_reloads_by_timms_names() {
    let dir = TempDir::new("timm-layouts-save");
    let c = timm_tiny(true, true);
    let (model, store) = VisionTransformer::init::<f32>(&c, 3).unwrap();
    let names: Vec<&str> = store.iter().map(|p| p.name.as_str()).collect();
    assert!(names.contains(&"cls_token") && names.contains(&"fc_norm.weight") && !names.contains(&"norm.weight"));
    assert_eq!(store.num_elements(), c.num_params());
    let path = dir.join("m.safetensors");
    checkpoint::save(&path, &store, &[], &checkpoint::config_metadata(&c)).unwrap();
    let ckpt = Checkpoint::open(&path).unwrap();
    assert_eq!(ckpt.config().unwrap().unwrap(), c);
    // Without the JSON the shapes say the same (the class token and fc_norm.* are there).
    assert_eq!(infer_config(&ckpt, Some(3)).unwrap(), c);
    let (_, mut back) = VisionTransformer::init::<f32>(&c, 0).unwrap();
    checkpoint::load_params(&ckpt, &c, &mut back, &LoadOptions::default()).unwrap();
    let run = |store: &vit::nn::ParamStore| {
        let mut g = Graph::inference();
        let p = store.bind(&mut g);
        let x = g.input(Tensor::randn(&[2, 3, 8, 8], 0.0, 1.0, &mut Rng::seed(1)));
        let y = model.forward(&mut g, &p, x, &mut Ctx::new(&mut Rng::seed(0)));
        g.value(y).data().to_vec()
    };
    assert_eq!(run(&store), run(&back));
}
