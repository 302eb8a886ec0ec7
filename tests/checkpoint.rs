//! Checkpoints: bit-exact round trips, atomic writes, an error naming the tensor for every kind of
//! bad file, f16/bf16 conversion, head mismatch for fine-tuning, and pos_embed resizing on load.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use autograd::ops::gelu::GeluKind;
use autograd::{Graph, Rng, Tensor};
use safetensors::tensor::TensorView;
use vit::checkpoint::{
    self, config_from_json, config_to_json, infer_config, interpolate_grid, Checkpoint, Dtype, Interpolation,
    LoadOptions, CONFIG_KEY,
};
use vit::nn::{Classifier, Ctx, Init, Module, ParamStore, ViTConfig, VisionTransformer};
use vit::Error;

/// A scratch directory for one test, emptied first.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vit-checkpoint-{test}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    v.sort();
    v
}

/// The tiny ViT of the timm fixture: 8 px, patch 4, 12 wide, 2 blocks of 3 heads, 5 classes.
fn tiny() -> ViTConfig {
    ViTConfig {
        image_size: 8,
        patch_size: 4,
        num_classes: 5,
        dim: 12,
        depth: 2,
        heads: 3,
        mlp_dim: 24,
        ..ViTConfig::tiny(4, 8)
    }
}

/// A model's parameters with every value redrawn (so no tensor is all zeros or ones).
fn random_store(config: &ViTConfig, seed: u64) -> ParamStore {
    let (_, mut store) = VisionTransformer::init::<f32>(config, seed).unwrap();
    let mut rng = Rng::seed(seed ^ 0x5eed);
    for p in store.iter_mut() {
        p.value = Tensor::randn(p.value.shape(), 0.0, 0.5, &mut rng);
    }
    store
}

fn bits(t: &Tensor<f32>) -> Vec<u32> {
    t.data().iter().map(|x| x.to_bits()).collect()
}

fn assert_same_params(a: &ParamStore, b: &ParamStore) {
    assert_eq!(a.len(), b.len());
    for (p, q) in a.iter().zip(b.iter()) {
        assert_eq!(p.name, q.name);
        assert_eq!(p.value.shape(), q.value.shape(), "{}", p.name);
        assert_eq!(bits(&p.value), bits(&q.value), "{} differs", p.name);
    }
}

/// The message of a checkpoint error (any other kind of error fails the test).
fn checkpoint_error<T: std::fmt::Debug>(r: vit::Result<T>) -> String {
    match r {
        Err(Error::Checkpoint(msg)) => msg,
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
}

/// Writes raw safetensors through the reference crate (for dtypes and names we never write).
fn write_raw(path: &Path, tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, TensorView<'_>)> =
        tensors.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

fn f32_bytes(t: &Tensor<f32>) -> Vec<u8> {
    t.data().iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The store's tensors as raw f32 entries, with `edit` applied to the list.
fn raw_f32(
    store: &ParamStore,
    edit: impl FnOnce(&mut Vec<(String, Dtype, Vec<usize>, Vec<u8>)>),
) -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
    let mut v: Vec<_> =
        store.iter().map(|p| (p.name.clone(), Dtype::F32, p.value.shape().to_vec(), f32_bytes(&p.value))).collect();
    edit(&mut v);
    v
}

#[test]
fn round_trip_is_bit_exact() {
    let dir = scratch("round-trip");
    let path = dir.join("model.safetensors");
    let config = tiny();
    let store = random_store(&config, 1);

    // Optimizer moments under a prefix, a scalar step count, and string metadata.
    let mut rng = Rng::seed(9);
    let moments: Vec<(String, Tensor<f32>)> = store
        .iter()
        .map(|p| (format!("optim.exp_avg.{}", p.name), Tensor::randn(p.value.shape(), 0.0, 1.0, &mut rng)))
        .chain([("optim.step".to_string(), Tensor::scalar(1234.0))])
        .collect();
    let extra: Vec<(String, &Tensor<f32>)> = moments.iter().map(|(n, t)| (n.clone(), t)).collect();
    let mut meta = checkpoint::config_metadata(&config);
    meta.insert("epoch".into(), "7".into());
    meta.insert("rng".into(), format!("{:?}", Rng::seed(3).state()));
    checkpoint::save(&path, &store, &extra, &meta).unwrap();

    let ckpt = Checkpoint::open(&path).unwrap();
    // Every tensor, in the order written, bit for bit.
    let expected: Vec<(&str, &Tensor<f32>)> =
        store.iter().map(|p| (p.name.as_str(), &p.value)).chain(extra.iter().map(|(n, t)| (n.as_str(), *t))).collect();
    assert_eq!(ckpt.names(), expected.iter().map(|(n, _)| n.to_string()).collect::<Vec<_>>());
    for (name, t) in &expected {
        assert_eq!(ckpt.dtype(name), Some(Dtype::F32));
        let back: Tensor<f32> = ckpt.tensor(name).unwrap();
        assert_eq!(back.shape(), t.shape(), "{name}");
        assert_eq!(bits(&back), bits(t), "{name}");
    }
    // Metadata: ours plus the conventional format tag.
    let mut want = meta.clone();
    want.insert("format".into(), "pt".into());
    assert_eq!(ckpt.metadata(), &want);
    assert_eq!(ckpt.meta("epoch"), Some("7"));
    assert_eq!(ckpt.config().unwrap(), Some(config.clone()));
    // Extra tensors by prefix, named without it.
    let back_moments = ckpt.tensors_with_prefix::<f32>("optim.exp_avg.").unwrap();
    assert_eq!(back_moments.len(), store.len());
    for ((name, t), p) in back_moments.iter().zip(store.iter()) {
        assert_eq!(name, &p.name);
        assert_eq!(bits(t), bits(&moments.iter().find(|m| m.0 == format!("optim.exp_avg.{name}")).unwrap().1));
    }
    assert_eq!(ckpt.tensor::<f32>("optim.step").unwrap().shape(), &[] as &[usize]);

    // Into a freshly initialised model: every parameter bit-exact, the optimizer state skipped.
    let mut fresh = random_store(&config, 2);
    let report = checkpoint::load_params(&ckpt, &config, &mut fresh, &LoadOptions::default()).unwrap();
    assert_same_params(&fresh, &store);
    assert_eq!(report.loaded.len(), store.len());
    assert_eq!(report.ignored.len(), store.len() + 1);
    assert!(report.converted.is_empty() && report.missing.is_empty() && report.unexpected.is_empty());
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn f64_round_trip_is_bit_exact() {
    let dir = scratch("f64");
    let path = dir.join("model.safetensors");
    let config = tiny();
    let store: ParamStore<f64> = random_store(&config, 3).cast();
    let noise = Tensor::<f64>::from_f64s(&[std::f64::consts::PI, 1e-300, -0.1], &[3]);
    checkpoint::save(&path, &store, &[("extra.noise".into(), &noise)], &BTreeMap::new()).unwrap();
    let ckpt = Checkpoint::open(&path).unwrap();
    assert_eq!(ckpt.dtype("cls_token"), Some(Dtype::F64));
    assert_eq!(ckpt.tensor::<f64>("extra.noise").unwrap().data(), noise.data());
    let (_, mut back) = VisionTransformer::init::<f64>(&config, 4).unwrap();
    let opts = LoadOptions { ignore_prefixes: vec!["extra.".into()], ..LoadOptions::default() };
    checkpoint::load_params(&ckpt, &config, &mut back, &opts).unwrap();
    for (p, q) in back.iter().zip(store.iter()) {
        assert_eq!(p.value.data(), q.value.data(), "{}", p.name);
    }
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn overwriting_is_atomic_and_leaves_no_temporary_files() {
    let dir = scratch("atomic");
    let path = dir.join("model.safetensors");
    let config = tiny();
    let first = random_store(&config, 5);
    let second = random_store(&config, 6);
    checkpoint::save(&path, &first, &[], &BTreeMap::new()).unwrap();
    checkpoint::save(&path, &second, &[], &BTreeMap::new()).unwrap();
    assert_eq!(listing(&dir), ["model.safetensors"]);
    let mut back = random_store(&config, 7);
    checkpoint::load(&path, &config, &mut back, &LoadOptions::default()).unwrap();
    assert_same_params(&back, &second);

    // A save that fails (a name given twice) leaves the last good file byte-identical.
    let good = fs::read(&path).unwrap();
    let dup = Tensor::<f32>::zeros(&[1, 1, 12]);
    let msg = checkpoint_error(checkpoint::save(&path, &first, &[("cls_token".into(), &dup)], &BTreeMap::new()));
    assert!(msg.contains("cls_token: tensor name given twice"), "{msg}");
    assert_eq!(fs::read(&path).unwrap(), good);
    assert_eq!(listing(&dir), ["model.safetensors"]);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_failed_rename_keeps_the_target_and_removes_the_temporary() {
    let dir = scratch("rename-fails");
    // The target is a non-empty directory: the data is written, but the rename over it fails.
    let target = dir.join("model.safetensors");
    fs::create_dir(&target).unwrap();
    fs::write(target.join("keep.txt"), b"precious").unwrap();
    let store = random_store(&tiny(), 8);
    let err = checkpoint::save(&target, &store, &[], &BTreeMap::new()).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(err.to_string().contains("model.safetensors"), "{err}");
    assert_eq!(listing(&dir), ["model.safetensors"]);
    assert_eq!(fs::read(target.join("keep.txt")).unwrap(), b"precious");

    // A directory that does not exist: an I/O error naming the path, nothing created.
    let missing = dir.join("no-such-dir").join("model.safetensors");
    let err = checkpoint::save(&missing, &store, &[], &BTreeMap::new()).unwrap_err();
    assert!(matches!(err, Error::Io { .. }) && err.to_string().contains("no-such-dir"), "{err}");
    assert_eq!(listing(&dir), ["model.safetensors"]);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_tensor_is_named() {
    let dir = scratch("missing");
    let path = dir.join("m.safetensors");
    let config = tiny();
    let store = random_store(&config, 10);
    write_raw(&path, &raw_f32(&store, |v| v.retain(|t| t.0 != "blocks.1.norm1.weight")));
    let ckpt = Checkpoint::open(&path).unwrap();

    let mut target = random_store(&config, 11);
    let before = target.clone();
    let msg = checkpoint_error(checkpoint::load_params(&ckpt, &config, &mut target, &LoadOptions::default()));
    assert!(msg.contains("blocks.1.norm1.weight: missing from the checkpoint"), "{msg}");
    assert!(msg.contains("(1 problem)"), "{msg}");
    assert_same_params(&target, &before); // nothing changed on error

    // Not strict: the rest loads, the missing one keeps its value and is reported.
    let opts = LoadOptions { strict: false, ..LoadOptions::default() };
    let report = checkpoint::load_params(&ckpt, &config, &mut target, &opts).unwrap();
    assert_eq!(report.missing, ["blocks.1.norm1.weight"]);
    for (p, (q, b)) in target.iter().zip(store.iter().zip(before.iter())) {
        let want = if p.name == "blocks.1.norm1.weight" { b } else { q };
        assert_eq!(bits(&p.value), bits(&want.value), "{}", p.name);
    }
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unexpected_tensor_is_named() {
    let dir = scratch("unexpected");
    let path = dir.join("u.safetensors");
    let config = tiny();
    let store = random_store(&config, 12);
    let stray = Tensor::<f32>::ones(&[12]);
    write_raw(
        &path,
        &raw_f32(&store, |v| {
            v.push(("blocks.2.norm1.weight".into(), Dtype::F32, vec![12], f32_bytes(&stray)));
            v.push(("optim.exp_avg.norm.weight".into(), Dtype::F32, vec![12], f32_bytes(&stray)));
        }),
    );
    let ckpt = Checkpoint::open(&path).unwrap();
    let mut target = random_store(&config, 13);
    let msg = checkpoint_error(checkpoint::load_params(&ckpt, &config, &mut target, &LoadOptions::default()));
    assert!(msg.contains("blocks.2.norm1.weight: unexpected tensor, not a parameter of this model"), "{msg}");
    assert!(!msg.contains("optim."), "optimizer state is not a model tensor: {msg}");

    let opts = LoadOptions { strict: false, ..LoadOptions::default() };
    let report = checkpoint::load_params(&ckpt, &config, &mut target, &opts).unwrap();
    assert_eq!(report.unexpected, ["blocks.2.norm1.weight"]);
    assert_eq!(report.ignored, ["optim.exp_avg.norm.weight"]);
    assert_same_params(&target, &store);

    // Without the default ignore list, the optimizer state is unexpected too.
    let opts = LoadOptions { ignore_prefixes: vec![], ..LoadOptions::default() };
    let msg = checkpoint_error(checkpoint::load_params(&ckpt, &config, &mut target, &opts));
    assert!(msg.contains("optim.exp_avg.norm.weight: unexpected tensor"), "{msg}");
    assert!(msg.contains("(2 problems)"), "{msg}");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn misshaped_tensor_is_named() {
    let dir = scratch("misshaped");
    let path = dir.join("s.safetensors");
    let config = ViTConfig { depth: 1, ..ViTConfig::tiny(16, 32) };
    let (_, store) = VisionTransformer::init::<f32>(&config, 0).unwrap();
    let wrong = Tensor::<f32>::zeros(&[576, 190]);
    write_raw(
        &path,
        &raw_f32(&store, |v| {
            let qkv = v.iter_mut().find(|t| t.0 == "blocks.0.attn.qkv.weight").unwrap();
            *qkv = (qkv.0.clone(), Dtype::F32, vec![576, 190], f32_bytes(&wrong));
        }),
    );
    let mut target = store.clone();
    let msg = checkpoint_error(checkpoint::load(&path, &config, &mut target, &LoadOptions::default()));
    assert!(msg.contains("blocks.0.attn.qkv.weight: expected shape [576, 192], found [576, 190]"), "{msg}");
    assert!(msg.contains("s.safetensors"), "the message names the file: {msg}");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unsupported_dtype_is_named() {
    let dir = scratch("dtype");
    let path = dir.join("d.safetensors");
    let config = tiny();
    let store = random_store(&config, 14);
    write_raw(
        &path,
        &raw_f32(&store, |v| {
            let t = v.iter_mut().find(|t| t.0 == "norm.bias").unwrap();
            *t = (t.0.clone(), Dtype::I64, vec![12], vec![0u8; 96]);
        }),
    );
    let ckpt = Checkpoint::open(&path).unwrap();
    let msg = checkpoint_error(ckpt.tensor::<f32>("norm.bias"));
    assert!(msg.contains("norm.bias: unsupported dtype I64"), "{msg}");
    let mut target = random_store(&config, 15);
    let msg = checkpoint_error(checkpoint::load_params(&ckpt, &config, &mut target, &LoadOptions::default()));
    assert!(msg.contains("norm.bias: unsupported dtype I64"), "{msg}");
    let msg = checkpoint_error(ckpt.tensor::<f32>("no.such.tensor"));
    assert!(msg.contains("no.such.tensor: no such tensor"), "{msg}");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn truncated_and_garbage_files_are_errors_not_panics() {
    let dir = scratch("truncated");
    let path = dir.join("t.safetensors");
    let config = tiny();
    let store = random_store(&config, 16);
    checkpoint::save(&path, &store, &[], &BTreeMap::new()).unwrap();
    let good = fs::read(&path).unwrap();

    // Cut inside the data: the error names the first tensor that no longer fits.
    let cut = good.len() - 10;
    let msg = checkpoint_error(Checkpoint::from_bytes(good[..cut].to_vec(), "cut.safetensors"));
    assert!(msg.contains("truncated file: tensor head.bias ends at byte"), "{msg}");
    assert!(msg.starts_with("cut.safetensors: "), "{msg}");
    fs::write(&path, &good[..good.len() / 2]).unwrap();
    let msg = checkpoint_error(Checkpoint::open(&path));
    assert!(msg.contains("truncated file: tensor "), "{msg}");
    // Cut inside the header, and before its length field.
    for cut in [100, 5, 0] {
        let msg = checkpoint_error(Checkpoint::from_bytes(good[..cut].to_vec(), "x"));
        assert!(msg.contains("truncated or not a safetensors file"), "{cut}: {msg}");
    }
    // Every prefix of the file is an error; none panics.
    for cut in 0..good.len() {
        assert!(Checkpoint::from_bytes(good[..cut].to_vec(), "x").is_err(), "a {cut}-byte prefix was accepted");
    }
    // Garbage: text, a plausible length followed by junk, random bytes.
    let msg = checkpoint_error(Checkpoint::from_bytes(b"this is not a checkpoint at all".to_vec(), "g"));
    assert!(msg.contains("not a safetensors file"), "{msg}");
    let mut junk = 16u64.to_le_bytes().to_vec();
    junk.extend(b"{\"a\": [1, 2, 3]}");
    let msg = checkpoint_error(Checkpoint::from_bytes(junk, "g"));
    assert!(msg.contains("not a safetensors file: the header is not valid JSON"), "{msg}");
    let mut rng = Rng::seed(17);
    for _ in 0..200 {
        let n = rng.below(300);
        let bytes: Vec<u8> = (0..n).map(|_| rng.below(256) as u8).collect();
        assert!(Checkpoint::from_bytes(bytes, "r").is_err());
    }
    // Flipped bytes anywhere: an error or a file that still parses, never a panic.
    for i in (0..good.len()).step_by(7) {
        let mut bad = good.clone();
        bad[i] ^= 0x5a;
        if let Ok(ckpt) = Checkpoint::from_bytes(bad, "f") {
            let mut target = random_store(&config, 18);
            let _ = checkpoint::load_params(&ckpt, &config, &mut target, &LoadOptions::default());
        }
    }
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn f16_and_bf16_tensors_load_converted() {
    let dir = scratch("half");
    let config = tiny();
    let store = random_store(&config, 19);
    for (dtype, rel) in [(Dtype::F16, 2f64.powi(-11)), (Dtype::BF16, 2f64.powi(-8))] {
        let path = dir.join(format!("{dtype:?}.safetensors"));
        let round = |x: f32| -> f32 {
            match dtype {
                Dtype::F16 => half::f16::from_f32(x).to_f32(),
                _ => half::bf16::from_f32(x).to_f32(),
            }
        };
        let raw = store
            .iter()
            .map(|p| {
                let bytes = p
                    .value
                    .data()
                    .iter()
                    .flat_map(|&x| match dtype {
                        Dtype::F16 => half::f16::from_f32(x).to_le_bytes(),
                        _ => half::bf16::from_f32(x).to_le_bytes(),
                    })
                    .collect();
                (p.name.clone(), dtype, p.value.shape().to_vec(), bytes)
            })
            .collect::<Vec<_>>();
        write_raw(&path, &raw);
        let mut back = random_store(&config, 20);
        let report = checkpoint::load(&path, &config, &mut back, &LoadOptions::default()).unwrap();
        assert_eq!(report.converted.len(), store.len());
        assert!(report.converted.iter().all(|(_, d)| *d == dtype));
        for (p, q) in back.iter().zip(store.iter()) {
            for (&got, &want) in p.value.data().iter().zip(q.value.data()) {
                // Exactly the format's rounding of the original, hence within its precision.
                assert_eq!(got, round(want), "{dtype:?} {}", p.name);
                let tol = rel * want.abs() as f64 + 1e-7;
                assert!(((got - want) as f64).abs() <= tol, "{dtype:?} {}: {got} vs {want}", p.name);
            }
        }
    }
    // F64 converts to the nearest f32.
    let path = dir.join("f64.safetensors");
    checkpoint::save(&path, &store.cast::<f64>(), &[], &BTreeMap::new()).unwrap();
    let mut back = random_store(&config, 21);
    let report = checkpoint::load(&path, &config, &mut back, &LoadOptions::default()).unwrap();
    assert!(report.converted.iter().all(|(_, d)| *d == Dtype::F64));
    assert_same_params(&back, &store);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn head_of_another_class_count() {
    let dir = scratch("head");
    let path = dir.join("h.safetensors");
    let config = tiny();
    let store = random_store(&config, 22);
    checkpoint::save(&path, &store, &[], &checkpoint::config_metadata(&config)).unwrap();

    let config7 = ViTConfig { num_classes: 7, ..config.clone() };
    let (_, mut target) = VisionTransformer::init::<f32>(&config7, 23).unwrap();
    let fresh = target.clone();
    let msg = checkpoint_error(checkpoint::load(&path, &config7, &mut target, &LoadOptions::default()));
    assert!(msg.contains("head.weight: expected shape [7, 12], found [5, 12]"), "{msg}");
    assert!(msg.contains("head.bias: expected shape [7], found [5]"), "{msg}");
    assert!(msg.contains("allow_head_mismatch"), "the message says how to proceed: {msg}");

    let opts = LoadOptions { allow_head_mismatch: true, ..LoadOptions::default() };
    let report = checkpoint::load(&path, &config7, &mut target, &opts).unwrap();
    assert_eq!(report.reinitialized, ["head.weight", "head.bias"]);
    assert_eq!(report.dropped, ["head.weight", "head.bias"]);
    for ((p, q), f) in target.iter().zip(store.iter()).zip(fresh.iter()) {
        let want = if p.name.starts_with("head.") { f } else { q };
        assert_eq!(bits(&p.value), bits(&want.value), "{}", p.name);
    }
    // With a matching head, the option changes nothing: the head loads.
    let mut same = random_store(&config, 24);
    let report = checkpoint::load(&path, &config, &mut same, &opts).unwrap();
    assert!(report.reinitialized.is_empty() && report.dropped.is_empty());
    assert_same_params(&same, &store);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn pre_logits_layer() {
    let dir = scratch("pre-logits");
    let path = dir.join("p.safetensors");
    let with = ViTConfig { representation_size: Some(10), ..tiny() };
    let store = random_store(&with, 25);
    let names: Vec<&str> = store.iter().map(|p| p.name.as_str()).collect();
    assert!(names.contains(&"pre_logits.fc.weight") && names.contains(&"pre_logits.fc.bias"));
    checkpoint::save(&path, &store, &[], &BTreeMap::new()).unwrap();

    // Into a model that has it: loads like any layer.
    let mut back = random_store(&with, 26);
    checkpoint::load(&path, &with, &mut back, &LoadOptions::default()).unwrap();
    assert_same_params(&back, &store);

    // Into a model without it (fine-tuning): unexpected unless the head may be replaced.
    let without = tiny();
    let mut target = random_store(&without, 27);
    let msg = checkpoint_error(checkpoint::load(&path, &without, &mut target, &LoadOptions::default()));
    assert!(msg.contains("pre_logits.fc.weight: unexpected tensor"), "{msg}");
    assert!(msg.contains("head.weight: expected shape [5, 12], found [5, 10]"), "{msg}");
    let opts = LoadOptions { allow_head_mismatch: true, ..LoadOptions::default() };
    let report = checkpoint::load(&path, &without, &mut target, &opts).unwrap();
    assert_eq!(report.dropped, ["pre_logits.fc.weight", "pre_logits.fc.bias", "head.weight", "head.bias"]);
    assert_eq!(report.reinitialized, ["head.weight", "head.bias"]);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn module_prefix_is_removed() {
    let dir = scratch("ddp");
    let path = dir.join("ddp.safetensors");
    let config = tiny();
    let store = random_store(&config, 28);
    write_raw(&path, &raw_f32(&store, |v| v.iter_mut().for_each(|t| t.0 = format!("module.{}", t.0))));
    let mut back = random_store(&config, 29);
    checkpoint::load(&path, &config, &mut back, &LoadOptions::default()).unwrap();
    assert_same_params(&back, &store);
    assert_eq!(infer_config(&Checkpoint::open(&path).unwrap(), Some(3)).unwrap(), config);

    // The same parameter with and without the prefix is ambiguous.
    write_raw(
        &path,
        &raw_f32(&store, |v| {
            let dup = v.iter().find(|t| t.0 == "norm.bias").unwrap().clone();
            v.push((format!("module.{}", dup.0), dup.1, dup.2, dup.3));
        }),
    );
    let msg = checkpoint_error(checkpoint::load(&path, &config, &mut back, &LoadOptions::default()));
    assert!(msg.contains("norm.bias: stored twice, as module.norm.bias and as norm.bias"), "{msg}");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn loading_at_a_new_image_size_interpolates_pos_embed() {
    let dir = scratch("resize");
    let path = dir.join("r.safetensors");
    let config = tiny(); // 8 px, patch 4: a 2x2 grid
    let store = random_store(&config, 30);
    checkpoint::save(&path, &store, &[], &BTreeMap::new()).unwrap();

    let big = ViTConfig { image_size: 16, ..config.clone() }; // a 4x4 grid
    let (model, mut target) = VisionTransformer::init::<f32>(&big, 31).unwrap();
    let msg = checkpoint_error(checkpoint::load(&path, &big, &mut target, &LoadOptions::default()));
    assert!(msg.contains("pos_embed: expected shape [1, 17, 12], found [1, 5, 12]"), "{msg}");
    assert!(msg.contains("resize_pos_embed"), "{msg}");

    for mode in [Interpolation::Bilinear, Interpolation::Bicubic] {
        let opts = LoadOptions { resize_pos_embed: Some(mode), ..LoadOptions::default() };
        let report = checkpoint::load(&path, &big, &mut target, &opts).unwrap();
        assert_eq!(report.resized, [("pos_embed".to_string(), vec![1, 5, 12], vec![1, 17, 12])]);
        let old = &store.iter().find(|p| p.name == "pos_embed").unwrap().value;
        let new = &target.iter().find(|p| p.name == "pos_embed").unwrap().value;
        assert_eq!(new.shape(), [1, 17, 12]);
        assert_eq!(new.data()[..12], old.data()[..12], "the class slot is kept");
        let grid: Vec<f32> = interpolate_grid(&old.data()[12..], (2, 2), 12, (4, 4), mode);
        assert_eq!(new.data()[12..], grid[..]);
        if mode == Interpolation::Bilinear {
            // 2 -> 4 bilinear: the corner output samples the corner input alone.
            assert_eq!(new.data()[12..24], old.data()[12..24]);
        }
        // Everything else loaded as is, and the model runs at the new size.
        for (p, q) in target.iter().zip(store.iter()).filter(|(p, _)| p.name != "pos_embed") {
            assert_eq!(bits(&p.value), bits(&q.value), "{}", p.name);
        }
        let mut g = Graph::inference();
        let vars = target.bind(&mut g);
        let x = g.input(Tensor::randn(&[2, 3, 16, 16], 0.0, 1.0, &mut Rng::seed(1)));
        let logits = model.forward(&mut g, &vars, x, &mut Ctx::new(&mut Rng::seed(2)));
        assert_eq!(g.shape(logits), [2, 5]);
        assert!(g.value(logits).data().iter().all(|v| v.is_finite()));
    }

    // Another width cannot be interpolated.
    let wide = ViTConfig { image_size: 16, dim: 24, heads: 3, mlp_dim: 24, ..config.clone() };
    let mut target = random_store(&wide, 32);
    let opts = LoadOptions { resize_pos_embed: Some(Interpolation::Bicubic), ..LoadOptions::default() };
    let msg = checkpoint_error(checkpoint::load(&path, &wide, &mut target, &opts));
    assert!(msg.contains("pos_embed: expected shape [1, tokens, 24] to interpolate, found [1, 5, 12]"), "{msg}");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn config_json_round_trips_and_rejects_bad_input() {
    let configs = [
        tiny(),
        ViTConfig::base(16, 384),
        ViTConfig {
            classifier: Classifier::Gap,
            class_token: false,
            gelu: GeluKind::Tanh,
            init: Init::Jax,
            representation_size: Some(768),
            qkv_bias: false,
            dropout: 0.1,
            attn_dropout: 0.05,
            drop_path: 0.2,
            ln_eps: 1e-5,
            ..ViTConfig::small(32, 224)
        },
    ];
    for c in configs {
        let json = config_to_json(&c);
        assert_eq!(config_from_json(&json).unwrap(), c, "{json}");
    }
    let json = config_to_json(&tiny());
    for (bad, expect) in [
        ("{", "model config JSON"),
        (&json.replace("\"gelu\":\"erf\"", "\"gelu\":\"relu\""), "gelu \"relu\" is not one of erf, tanh"),
        (&json.replace("\"heads\":3", "\"heads\":5"), "dim 12 is not divisible by heads 5"),
        (&json.replace("{", "{\"future\":1,"), "unknown field `future`"),
        (&json.replace("\"depth\":2,", ""), "missing field `depth`"),
    ] {
        match config_from_json(bad) {
            Err(Error::Config(msg)) => assert!(msg.contains(expect), "{bad}: {msg}"),
            other => panic!("{bad}: expected a config error, got {other:?}"),
        }
    }
    // A checkpoint with a broken config says which key.
    let dir = scratch("bad-config");
    let path = dir.join("c.safetensors");
    let meta = BTreeMap::from([(CONFIG_KEY.to_string(), "{\"dim\": 1}".to_string())]);
    checkpoint::save(&path, &random_store(&tiny(), 33), &[], &meta).unwrap();
    let msg = checkpoint_error(Checkpoint::open(&path).unwrap().config());
    assert!(msg.contains("metadata \"vit.config\""), "{msg}");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn config_inferred_from_shapes() {
    let dir = scratch("infer");
    let path = dir.join("i.safetensors");
    for config in [
        tiny(),
        ViTConfig {
            classifier: Classifier::Gap,
            class_token: false,
            representation_size: Some(7),
            qkv_bias: false,
            ..tiny()
        },
    ] {
        checkpoint::save(&path, &random_store(&config, 34), &[], &BTreeMap::new()).unwrap();
        let ckpt = Checkpoint::open(&path).unwrap();
        assert_eq!(ckpt.config().unwrap(), None);
        assert_eq!(infer_config(&ckpt, Some(3)).unwrap(), config);
        let msg = checkpoint_error(infer_config(&ckpt, None));
        assert!(msg.contains("cannot infer the number of heads for width 12"), "{msg}");
    }
    let ti = ViTConfig { depth: 1, ..ViTConfig::tiny(16, 48) };
    checkpoint::save(&path, &VisionTransformer::init::<f32>(&ti, 0).unwrap().1, &[], &BTreeMap::new()).unwrap();
    assert_eq!(infer_config(&Checkpoint::open(&path).unwrap(), None).unwrap(), ti);
    fs::remove_dir_all(&dir).unwrap();
}

/// Issue 9, item 13: a tensor whose header claims 4 TiB is the one named, not the tensor after it.
#[test]
fn a_tensor_claiming_more_data_than_the_file_holds_is_named() {
    let tib4: u64 = 1 << 42;
    let header = format!(
        "{{\"a.weight\":{{\"dtype\":\"F32\",\"shape\":[{}],\"data_offsets\":[0,{tib4}]}},\
         \"b.weight\":{{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,32]}}}}",
        tib4 / 4
    );
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.extend([0u8; 32]);
    let msg = checkpoint_error(Checkpoint::from_bytes(bytes, "big.safetensors"));
    assert!(msg.contains("a.weight") && !msg.contains("b.weight"), "{msg}");
}
