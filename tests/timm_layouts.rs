//! timm's pooling layouts (`global_pool='avg'` with or without a class token, `global_pool='token'`
//! with `fc_norm`, `fc_norm` after pooling or `norm` before it), against a fixture made by timm
//! itself (tests/fixtures/make_timm_layouts_fixture.py): each state dict is recognised from its
//! names and shapes plus timm's `config.json` beside it, loads strictly, and reproduces timm's
//! logits; our checkpoint JSON keeps the layout. (The f64 gradcheck of the pooling paths is in `tests/nn_modules.rs`, the fused and
//! plain paths' agreement in `tests/fused_vs_plain.rs`.)

mod common;
use common::timm::{assert_timms_logits, layouts_fixture, write_state_dict};
use common::TempDir;

use autograd::{Graph, Rng, Tensor};
use vit::checkpoint::{
    self, config_from_json, config_to_json, infer_config, Checkpoint, LoadOptions, TIMM_CONFIG_FILE,
};
use vit::nn::{Classifier, Ctx, Module, ViTConfig, VisionTransformer};

fn fixture() -> Checkpoint {
    layouts_fixture()
}

/// The fixture's models: `VisionTransformer(img_size=8, patch_size=4, in_chans=3, num_classes=5,
/// embed_dim=12, depth=1, num_heads=3, mlp_ratio=2, ...)` with the layout's pooling.
fn timm_tiny(classifier: Classifier, class_token: bool, fc_norm: bool) -> ViTConfig {
    ViTConfig {
        num_classes: 5,
        dim: 12,
        depth: 1,
        heads: 3,
        mlp_dim: 24,
        classifier,
        class_token,
        fc_norm,
        ..ViTConfig::tiny(4, 8)
    }
}

/// `(tag, config, the final norm's name)` of the fixture's layouts.
fn layouts() -> [(&'static str, ViTConfig, &'static str); 4] {
    [
        ("avg_cls", timm_tiny(Classifier::Gap, true, true), "fc_norm"),
        ("avg", timm_tiny(Classifier::Gap, false, true), "fc_norm"),
        ("avg_prenorm", timm_tiny(Classifier::Gap, false, false), "norm"),
        ("token_fcnorm", timm_tiny(Classifier::Token, true, true), "fc_norm"),
    ]
}

/// Layout `tag`'s state dict as timm saves it (the fixture's `{tag}/` prefix removed), in a
/// directory of its own under `dir`, with timm's `config.json` beside it when `with_config`.
fn state_dict(io: &Checkpoint, tag: &str, dir: &TempDir, with_config: bool) -> Checkpoint {
    let sub = dir.join(format!("{tag}-{with_config}"));
    let ckpt = write_state_dict(io, tag, &sub);
    if with_config {
        let json = io.meta(&format!("{tag}/config.json")).expect("the fixture holds timm's config.json");
        std::fs::write(sub.join(TIMM_CONFIG_FILE), json).unwrap();
    }
    ckpt
}

#[test]
fn every_timm_pooling_layout_is_recognised_loads_and_gives_timms_logits() {
    let io = fixture();
    let dir = TempDir::new("timm-layouts");
    let images = io.tensor::<f32>("images").unwrap();
    for (tag, config, final_norm) in layouts() {
        // With timm's config.json beside the weights (its hub export), as a user gets them;
        // the number of heads comes from it too.
        let ckpt = state_dict(&io, tag, &dir, true);
        assert!(ckpt.shape(&format!("{final_norm}.weight")).is_some(), "{tag}: the fixture lacks {final_norm}");
        assert_eq!(infer_config(&ckpt, None).unwrap(), config, "{tag}: the layout read off the state dict");
        let loaded = checkpoint::load_model(&ckpt, None).unwrap();
        assert_eq!(loaded.model.config, config, "{tag}: load_model");
        assert!(loaded.params.id(&format!("{final_norm}.weight")).is_some(), "{tag}: no {final_norm} in our model");
        assert_timms_logits(&io, tag, &ckpt, &config, &images, 0.5);
    }
}

#[test]
fn without_timms_config_the_shapes_decide_and_token_with_fc_norm_needs_it() {
    let io = fixture();
    let dir = TempDir::new("timm-layouts-bare");
    for (tag, config, _) in layouts() {
        let ckpt = state_dict(&io, tag, &dir, false);
        let inferred = infer_config(&ckpt, Some(3)).unwrap();
        if tag == "token_fcnorm" {
            // The same tensors as global_pool='avg' with a class token: read as timm's default.
            let mut names = ckpt.names().to_vec();
            let mut avg_cls = state_dict(&io, "avg_cls", &dir, false).names().to_vec();
            names.sort();
            avg_cls.sort();
            assert_eq!(names, avg_cls);
            assert_eq!(inferred, ViTConfig { classifier: Classifier::Gap, ..config });
        } else {
            assert_eq!(inferred, config, "{tag}");
        }
        // Without the config the heads are not known for this width.
        let e = infer_config(&ckpt, None).unwrap_err().to_string();
        assert!(e.contains("number of heads"), "{e}");
    }
}

#[test]
fn a_timm_config_that_contradicts_the_tensors_or_pools_otherwise_is_refused() {
    let io = fixture();
    let dir = TempDir::new("timm-layouts-bad-config");
    let ckpt = state_dict(&io, "avg", &dir, true);
    let config_path = ckpt.path().with_file_name(TIMM_CONFIG_FILE);
    let json = io.meta("avg/config.json").unwrap().to_string();
    for (from, to, says) in [
        ("\"global_pool\": \"avg\"", "\"global_pool\": \"token\"", "no cls_token"),
        ("\"global_pool\": \"avg\"", "\"global_pool\": \"map\"", "'token' and 'avg'"),
        ("\"num_heads\": 3", "\"num_heads\": 0", "num_heads"),
        ("\"num_heads\": 3", "\"num_heads\": 3, \"fc_norm\": false", "fc_norm=false"),
        ("{", "{ \"truncated", "not JSON"),
    ] {
        assert!(json.contains(from), "{from} not in timm's config.json:\n{json}");
        std::fs::write(&config_path, json.replace(from, to)).unwrap();
        let e = infer_config(&ckpt, None).unwrap_err().to_string();
        assert!(e.contains(says) && e.contains(TIMM_CONFIG_FILE), "{to}: {e}");
    }
    // Someone else's config.json (no `architecture`) is not timm's and says nothing.
    std::fs::write(&config_path, "{\"num_heads\": 4, \"global_pool\": \"token\"}").unwrap();
    assert_eq!(infer_config(&ckpt, Some(3)).unwrap(), timm_tiny(Classifier::Gap, false, true));
}

#[test]
fn the_checkpoint_json_keeps_the_layout_and_old_files_read_as_before() {
    for (_, c, _) in layouts() {
        let json = config_to_json(&c);
        assert_eq!(config_from_json(&json).unwrap(), c, "{json}");
    }
    // The two layouts that existed before are written as before: no new key.
    for c in [ViTConfig::tiny(4, 8), timm_tiny(Classifier::Gap, false, false)] {
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
    let c = timm_tiny(Classifier::Gap, true, true);
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
