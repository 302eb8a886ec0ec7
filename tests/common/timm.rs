//! The timm fixture made by tests/fixtures/make_timm_layouts_fixture.py (pooling layouts and
//! tiny hybrids): a model's state dict written out as timm saves it, and our logits for it
//! checked against timm's.

use std::collections::BTreeMap;
use std::path::Path;

use autograd::{Graph, Rng, Tensor};
use vit::checkpoint::{self, Checkpoint, LoadOptions};
use vit::nn::{Ctx, Module, ViTConfig, VisionTransformer};

/// The fixture file.
pub fn layouts_fixture() -> Checkpoint {
    Checkpoint::open(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/timm_vit_layouts.safetensors")).unwrap()
}

/// Model `tag`'s state dict (the fixture's `{tag}/` tensors, prefix removed, its logits left
/// out) written to `dir/model.safetensors`, as `safetensors.torch.save_file(model.state_dict())`.
pub fn write_state_dict(io: &Checkpoint, tag: &str, dir: &Path) -> Checkpoint {
    let tensors: Vec<(String, Tensor<f32>)> =
        io.tensors_with_prefix(&format!("{tag}/")).unwrap().into_iter().filter(|(n, _)| n != "logits").collect();
    let refs: Vec<(&str, &Tensor<f32>)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("model.safetensors");
    checkpoint::write_tensors(&path, &refs, &BTreeMap::new()).unwrap();
    Checkpoint::open(&path).unwrap()
}

/// Loads `ckpt` strictly and completely into a model of `config`, runs it on `images` and
/// checks the logits against timm's `{tag}/logits` (within 1e-5, printed), which must not be
/// all small (at least one above `min_abs`).
pub fn assert_timms_logits(
    io: &Checkpoint,
    tag: &str,
    ckpt: &Checkpoint,
    config: &ViTConfig,
    images: &Tensor<f32>,
    min_abs: f32,
) {
    let (model, mut store) = VisionTransformer::init::<f32>(config, 0).unwrap();
    let report = checkpoint::load_params(ckpt, config, &mut store, &LoadOptions::default()).unwrap();
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
    assert!(want.data().iter().any(|v| v.abs() > min_abs), "{tag}: {want:?}");
}
