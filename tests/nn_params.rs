//! Parameter counts against the published ones, and config validation.

use vit::nn::{Classifier, ParamStore, Variant, ViTConfig, VisionTransformer};
use vit::Error;

fn allocated_count(c: &ViTConfig) -> usize {
    let (_, store) = VisionTransformer::init::<f32>(c, 0).unwrap();
    store.num_elements()
}

#[test]
fn counts_match_the_published_ones() {
    // timm / the paper, at 224 px with 1000 classes.
    assert_eq!(ViTConfig::tiny(16, 224).num_params(), 5_717_416);
    assert_eq!(ViTConfig::small(16, 224).num_params(), 22_050_664);
    assert_eq!(ViTConfig::base(16, 224).num_params(), 86_567_656);
    assert_eq!(ViTConfig::large(16, 224).num_params(), 304_326_632);
    assert_eq!(ViTConfig::huge(14, 224).num_params(), 632_045_800);
}

#[test]
fn the_analytic_count_is_what_the_model_registers() {
    assert_eq!(allocated_count(&ViTConfig::tiny(16, 224)), 5_717_416);
    assert_eq!(allocated_count(&ViTConfig::small(16, 224)), 22_050_664);
    // Variations: gap (no class token), pre-logits, no qkv bias, another mlp width.
    let mut c = ViTConfig::tiny(4, 32);
    c.num_classes = 10;
    (c.classifier, c.class_token) = (Classifier::Gap, false);
    c.representation_size = Some(48);
    c.qkv_bias = false;
    c.mlp_dim = 300;
    assert_eq!(allocated_count(&c), c.num_params());
}

#[test]
fn names_follow_timm() {
    let mut c = ViTConfig::tiny(16, 32);
    c.depth = 1;
    let (_, store): (_, ParamStore) = VisionTransformer::init(&c, 0).unwrap();
    let names: Vec<&str> = store.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "patch_embed.proj.weight",
            "patch_embed.proj.bias",
            "cls_token",
            "pos_embed",
            "blocks.0.norm1.weight",
            "blocks.0.norm1.bias",
            "blocks.0.attn.qkv.weight",
            "blocks.0.attn.qkv.bias",
            "blocks.0.attn.proj.weight",
            "blocks.0.attn.proj.bias",
            "blocks.0.norm2.weight",
            "blocks.0.norm2.bias",
            "blocks.0.mlp.fc1.weight",
            "blocks.0.mlp.fc1.bias",
            "blocks.0.mlp.fc2.weight",
            "blocks.0.mlp.fc2.bias",
            "norm.weight",
            "norm.bias",
            "head.weight",
            "head.bias",
        ]
    );
    let shape = |n: &str| store.get(store.id(n).unwrap()).value.shape().to_vec();
    assert_eq!(shape("patch_embed.proj.weight"), [192, 3, 16, 16]);
    assert_eq!(shape("pos_embed"), [1, 5, 192]);
    assert_eq!(shape("blocks.0.attn.qkv.weight"), [576, 192]);
    // Weight decay only on matrices.
    for p in store.iter() {
        assert_eq!(p.weight_decay, p.name.ends_with("weight") && p.value.ndim() >= 2, "{}", p.name);
    }
}

fn config_error(c: &ViTConfig) -> String {
    match c.validate() {
        Err(Error::Config(m)) => m,
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn bad_configs_give_clear_errors() {
    let mut c = ViTConfig::tiny(16, 32);
    c.image_size = 30;
    assert_eq!(config_error(&c), "image size 30 is not divisible by patch size 16");
    let mut c = ViTConfig::tiny(16, 32);
    c.heads = 5;
    assert_eq!(config_error(&c), "dim 192 is not divisible by heads 5");
    let mut c = ViTConfig::tiny(16, 32);
    c.depth = 0;
    assert_eq!(config_error(&c), "depth must be positive, got 0");
    let mut c = ViTConfig::tiny(16, 32);
    c.dropout = 1.0;
    assert!(config_error(&c).contains("dropout"));
    assert!(VisionTransformer::init::<f32>(&c, 0).is_err());
    assert!(Variant::parse("xl").is_err());
    assert_eq!(Variant::parse("Ti").unwrap(), Variant::Tiny);
}

#[test]
fn init_is_seeded() {
    let c = ViTConfig { depth: 2, ..ViTConfig::tiny(8, 32) };
    let (_, a) = VisionTransformer::init::<f32>(&c, 1).unwrap();
    let (_, b) = VisionTransformer::init::<f32>(&c, 1).unwrap();
    let (_, d) = VisionTransformer::init::<f32>(&c, 2).unwrap();
    let w = |s: &ParamStore| s.get(s.id("blocks.1.mlp.fc1.weight").unwrap()).value.clone();
    assert_eq!(w(&a).data(), w(&b).data());
    assert_ne!(w(&a).data(), w(&d).data());
    // timm's scheme: std 0.02 weights.
    let std = (w(&a).data().iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / w(&a).numel() as f64).sqrt();
    assert!((std - 0.02).abs() < 0.002, "std {std}");
}
