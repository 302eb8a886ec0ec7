//! The whole training step on a CUDA device against the CPU (issue: "a whole ViT training step:
//! parameters after 3 steps on GPU vs CPU within tolerance"), and checkpoints that move between
//! devices: a run started on the CPU continues on the device and back, landing where a run on
//! the CPU alone lands.
//!
//! Every test runs on the CUDA emulator (the kernels compiled for the host and run thread by
//! thread; it checks index math, launches and the cuBLAS mapping, not the hardware) and on each
//! GPU the machine has; without one it says `skipped:` for the GPU runs. Built only with
//! `--features cuda`.

mod common;
use common::{banded_dataset, small_run, TempDir};

use autograd::{Device, Rng, Tensor};
use vit::data::Batch;
use vit::nn::{ParamStore, ViTConfig, VisionTransformer};
use vit::optim::{AdamW, Optimizer, Sgd};
use vit::train::{train_on, train_on_with, train_step, OptimizerKind, TrainConfig};

/// The emulator, and every GPU the driver reports (or a visible `skipped:` line).
/// `AUTOGRAD_CUDA_EMULATOR=0` leaves the emulator out (a GPU machine's check), as the CUDA tests.
fn devices(test: &str) -> Vec<Device> {
    let mut out = Vec::new();
    if std::env::var("AUTOGRAD_CUDA_EMULATOR").as_deref() == Ok("0") {
        println!("skipped: AUTOGRAD_CUDA_EMULATOR=0: {test} not run on the emulator");
    } else {
        out.push(Device::Cuda(Device::EMULATOR));
    }
    match autograd::cuda::device_count() {
        Ok(n) if n > 0 => out.extend((0..n).map(Device::Cuda)),
        Ok(_) => println!("skipped: no CUDA device (the driver reports none): {test} not run on a GPU"),
        Err(e) => println!("skipped: no CUDA device ({e}): {test} not run on a GPU"),
    }
    out
}

fn tiny(dropout: f64) -> ViTConfig {
    ViTConfig {
        image_size: 8,
        patch_size: 4,
        in_chans: 3,
        num_classes: 4,
        dim: 16,
        depth: 2,
        heads: 2,
        mlp_dim: 32,
        dropout,
        drop_path: 0.25,
        ..ViTConfig::tiny(4, 8)
    }
}

/// Largest `|a - b| / (1 + |b|)` over every parameter, with `a` brought to the host.
fn distance(a: &ParamStore<f32>, b: &ParamStore<f32>) -> (f64, String) {
    let a = a.to(Device::Cpu).unwrap();
    let mut worst = (0.0, String::new());
    for (p, q) in a.iter().zip(b.iter()) {
        assert_eq!(p.name, q.name);
        for (&x, &y) in p.value.data().iter().zip(q.value.data()) {
            let d = (x as f64 - y as f64).abs() / (1.0 + (y as f64).abs());
            // A NaN counts as the worst difference.
            if d.is_nan() || d > worst.0 {
                worst = (d, p.name.clone());
            }
        }
    }
    worst
}

fn new_opt(sgd: bool, params: &ParamStore<f32>) -> Box<dyn Optimizer> {
    if sgd {
        Box::new(Sgd::new(params, 0.9, 1e-4, false))
    } else {
        Box::new(AdamW::new(params, 0.9, 0.999, EPS, 0.05))
    }
}

/// AdamW's `eps` in these tests. The key bias's gradient is zero in exact arithmetic (a softmax
/// does not change when every score of a query shifts by one amount), so in floating point it is
/// rounding noise whose sign depends on the summation order; with `eps = 1e-8` AdamW would turn
/// that noise into steps of `lr` in either direction, and two devices would part by `2 lr` there.
/// `1e-4` keeps such coordinates still and leaves the others' steps as they were.
const EPS: f64 = 1e-4;

/// Three steps of a tiny ViT (dropout and stochastic depth on, label smoothing, clipping) on
/// `device` and on the CPU from the same initialisation and the same random streams: the losses,
/// gradient norms and the parameters after the third step agree within f32 tolerance.
#[test]
fn three_training_steps_on_the_device_match_the_cpu() {
    let (b, shape) = (6, [6, 3, 8, 8]);
    let mut rng = Rng::seed(11);
    let images = Tensor::<f32>::randn(&shape, 0.0, 1.0, &mut rng).into_vec();
    let labels: Vec<usize> = (0..b).map(|i| (i * 3) % 4).collect();
    let batch =
        || Batch { images: images.clone(), labels: labels.clone(), mix: None, shape, indices: (0..b).collect() };
    for device in devices("three_training_steps_on_the_device_match_the_cpu") {
        // Dropout 0.1 takes the plain path at each branch's end, 0 the fused linear_residual.
        for (dropout, sgd) in [(0.1, false), (0.0, false), (0.0, true)] {
            let (model, cpu) = VisionTransformer::init::<f32>(&tiny(dropout), 3).unwrap();
            let mut cpu = cpu;
            let mut dev = cpu.to(device).unwrap();
            assert_eq!(dev.device(), device);
            let (mut opt_cpu, mut opt_dev) = (new_opt(sgd, &cpu), new_opt(sgd, &dev));
            let what = format!("{device}, dropout {dropout}, {}", if sgd { "sgd" } else { "adamw" });
            for step in 0..3u64 {
                let lr = 1e-2;
                let run = |p: &mut ParamStore<f32>, o: &mut Box<dyn Optimizer>| {
                    train_step(&model, p, o.as_mut(), batch(), lr, 0.1, Some(1.0), &mut Rng::seed(100 + step)).unwrap()
                };
                let (a, c) = (run(&mut dev, &mut opt_dev), run(&mut cpu, &mut opt_cpu));
                let close = |x: f64, y: f64| (x - y).abs() <= 1e-4 * (1.0 + y.abs());
                assert!(
                    close(a.loss, c.loss),
                    "{what}, step {step}: loss {} on the device, {} on the cpu",
                    a.loss,
                    c.loss
                );
                assert!(
                    close(a.grad_norm, c.grad_norm),
                    "{what}, step {step}: gradient norm {} on the device, {} on the cpu",
                    a.grad_norm,
                    c.grad_norm
                );
                assert_eq!(a.correct, c.correct, "{what}, step {step}: accuracy");
            }
            assert_eq!(dev.device(), device, "{what}: the parameters stayed on the device");
            let (d, name) = distance(&dev, &cpu);
            // The steps moved the parameters far more than the devices differ (so the comparison
            // compared something).
            let (moved, _) =
                VisionTransformer::init::<f32>(&tiny(dropout), 3).map(|(_, p)| distance(&p, &cpu)).unwrap();
            println!("{what}: after 3 steps the largest difference is {d:.2e} ({name}); the steps moved {moved:.2e}");
            assert!(d <= TOL, "{what}: after 3 steps {name} differs by {d:.2e} (relative) from the cpu's");
            assert!(moved > 100.0 * TOL, "{what}: 3 steps moved no parameter by more than {moved:.2e}");
        }
    }
}

/// f32 results of two devices after 3 steps: different summation orders in the products and
/// reductions (~1e-7 relative), carried through three updates (the emulator: at most 3.4e-7).
const TOL: f64 = 1e-4;

fn run_config(out: &std::path::Path, device: Device, max_steps: u64, resume: bool) -> TrainConfig {
    let mut cfg = small_run(out, ViTConfig { in_chans: 1, num_classes: 3, ..tiny(0.1) });
    cfg.epochs = 3;
    cfg.optimizer = OptimizerKind::AdamW { beta1: 0.9, beta2: 0.999, eps: EPS };
    cfg.seed = 5;
    TrainConfig { resume, max_steps: Some(max_steps), device, ..cfg }
}

/// A run on the CPU for 2 steps, resumed on the device to step 4 and on the CPU again to step 6
/// (checkpoints written from the device's tensors, read back onto either device), ends within
/// f32 tolerance of 6 steps on the CPU; its checkpoint holds host tensors like any other.
#[test]
fn a_run_moves_between_devices_through_its_checkpoints() {
    let (train, test) = (banded_dataset(32, 3, 8, 1), banded_dataset(8, 3, 8, 2));
    for device in devices("a_run_moves_between_devices_through_its_checkpoints") {
        let tmp = TempDir::new("gpu-resume");
        let straight =
            train_on(&run_config(&tmp.join("cpu"), Device::Cpu, 6, false), train.clone(), test.clone()).unwrap();
        let split = tmp.join("split");
        let legs = [(Device::Cpu, 2, false), (device, 4, true), (Device::Cpu, 6, true)];
        let mut last = None;
        for (on, steps, resume) in legs {
            let report = train_on(&run_config(&split, on, steps, resume), train.clone(), test.clone()).unwrap();
            assert_eq!(report.global_step, steps, "{on}");
            assert_eq!(report.params.device(), Device::Cpu, "a report's parameters are on the host");
            last = Some(report);
        }
        let resumed = last.unwrap();
        let (d, name) = distance(&resumed.params, &straight.params);
        println!("cpu -> {device} -> cpu: the largest difference from the cpu alone is {d:.2e} ({name})");
        assert!(d <= TOL, "{device}: cpu -> {device} -> cpu differs from the cpu alone in {name} by {d:.2e}");
        let ckpt = vit::checkpoint::Checkpoint::open(&resumed.last_checkpoint).unwrap();
        let loaded = vit::checkpoint::load_model(&ckpt, None).unwrap();
        assert_eq!(distance(&loaded.params, &resumed.params).0, 0.0, "{device}: the checkpoint holds the parameters");
    }
}

/// NCCL on one GPU (world size 1, the check a one-GPU machine can make): a run whose gradients
/// go through the NCCL engine (packed into device buckets, summed by NCCL on its own stream,
/// copied back after the device waited for it) lands exactly where the plain GPU run lands,
/// since a sum over one rank is the identity. Needs a GPU and libnccl, and says `skipped:`
/// without them (the emulator has no NCCL; its data-parallel runs sum through host memory,
/// `tests/distributed.rs`).
#[test]
fn a_one_rank_nccl_run_matches_the_plain_gpu_run() {
    let gpus: Vec<Device> = devices("a_one_rank_nccl_run_matches_the_plain_gpu_run")
        .into_iter()
        .filter(|&d| d != Device::Cuda(Device::EMULATOR))
        .collect();
    if gpus.is_empty() {
        println!("skipped: no CUDA device: the NCCL run needs a GPU");
        return;
    }
    if !autograd::cuda::nccl::available() {
        println!("skipped: NCCL (libnccl.so.2) not found on the library path: the NCCL run not made");
        return;
    }
    let (train, test) = (banded_dataset(32, 3, 8, 1), banded_dataset(8, 3, 8, 2));
    for device in gpus {
        let tmp = TempDir::new("gpu-nccl");
        let plain = train_on(&run_config(&tmp.join("plain"), device, 4, false), train.clone(), test.clone()).unwrap();
        let comm = match vit::dist::from_environment(vit::dist::DEFAULT_TIMEOUT, device, vit::dist::Backend::Nccl) {
            Ok(c) => c,
            Err(e) => panic!("{device}: NCCL with one rank: {e}"),
        };
        assert_eq!((comm.engine(), comm.world_size()), ("NCCL", 1));
        let cfg = run_config(&tmp.join("nccl"), device, 4, false);
        let nccl = train_on_with(&cfg, train.clone(), test.clone(), &comm).unwrap();
        let (d, name) = distance(&nccl.params, &plain.params);
        println!("{device}: the one-rank NCCL run vs the plain run: largest difference {d:.2e} ({name})");
        assert_eq!(d, 0.0, "{device}: the one-rank NCCL run differs from the plain run in {name} by {d:.2e}");
    }
}

/// Asking for NCCL where it cannot run is an error that says why, never a panic or a silent
/// fall back: on the CPU, and on the emulator (no CUDA stream; on this machine usually no
/// libnccl either).
#[test]
fn nccl_where_it_cannot_run_is_a_clear_error() {
    use vit::dist::{from_environment, Backend, DEFAULT_TIMEOUT};
    let e = from_environment(DEFAULT_TIMEOUT, Device::Cpu, Backend::Nccl).err().expect("NCCL on the cpu refused");
    assert!(e.to_string().contains("--device cuda"), "{e}");
    let e = from_environment(DEFAULT_TIMEOUT, Device::Cuda(Device::EMULATOR), Backend::Nccl)
        .err()
        .expect("NCCL on the emulator refused");
    assert!(e.to_string().contains("NCCL"), "{e}");
    println!("NCCL on the emulator: {e}");
}

/// The timm logits fixture (`tests/timm_compat.rs`) on each CUDA device: timm's ViT, loaded from
/// its state dict into a parameter store on the device and run there, gives timm's logits
/// within the CPU test's 1e-5.
#[test]
fn timm_logits_on_the_device() {
    use vit::checkpoint::{load_params, Checkpoint, LoadOptions};
    use vit::nn::Module;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let ckpt = Checkpoint::open(dir.join("timm_vit_tiny.safetensors")).unwrap();
    // timm's `VisionTransformer(img_size=8, patch_size=4, num_classes=5, embed_dim=12, depth=2,
    // num_heads=3, mlp_ratio=2)`, as in tests/timm_compat.rs.
    let config = ViTConfig { num_classes: 5, dim: 12, depth: 2, heads: 3, mlp_dim: 24, ..ViTConfig::tiny(4, 8) };
    let (model, mut store) = VisionTransformer::init::<f32>(&config, 0).unwrap();
    load_params(&ckpt, &config, &mut store, &LoadOptions::default()).unwrap();
    let io = Checkpoint::open(dir.join("timm_vit_tiny_io.safetensors")).unwrap();
    let (images, want) = (io.tensor::<f32>("images").unwrap(), io.tensor::<f32>("logits").unwrap());
    assert!(want.data().iter().any(|v| v.abs() > 0.5), "the fixture's logits are O(1)");
    for device in devices("timm_logits_on_the_device") {
        let on = store.to(device).unwrap();
        let mut g = autograd::Graph::inference();
        let vars = on.bind(&mut g);
        let x = g.input(images.to(device).unwrap());
        let logits = model.forward(&mut g, &vars, x, &mut vit::nn::Ctx::new(&mut Rng::seed(0)));
        assert_eq!(g.value(logits).device(), device, "the logits are computed on {device}");
        let got = g.value(logits).to(Device::Cpu).unwrap();
        assert_eq!(got.shape(), want.shape());
        let diff = got.data().iter().zip(want.data()).map(|(a, b)| (a - b).abs() as f64).fold(0.0, f64::max);
        println!("{device}: max |ours - timm| over the logits: {diff:.2e}");
        assert!(diff <= 1e-5, "{device}: logits differ from timm's by {diff:.2e}");
    }
}

/// The ViT-CNN hybrid on the device: a ResNet root and one bottleneck stage (weight-standardised
/// convolutions, group norm, ReLU, max-pool) before the transformer. Three AdamW steps land
/// within f32 tolerance of the same steps on the CPU.
#[test]
fn three_hybrid_training_steps_on_the_device_match_the_cpu() {
    use vit::nn::{ResNetStemConfig, Variant};
    let config = ViTConfig {
        in_chans: 1,
        num_classes: 3,
        dim: 16,
        depth: 1,
        heads: 2,
        mlp_dim: 32,
        ..ViTConfig::hybrid(Variant::Tiny, ResNetStemConfig { width: 8, layers: vec![1] }, 1, 16)
    };
    let (b, shape) = (4, [4, 1, 16, 16]);
    let images = Tensor::<f32>::randn(&shape, 0.0, 1.0, &mut Rng::seed(12)).into_vec();
    let labels: Vec<usize> = (0..b).map(|i| i % 3).collect();
    let batch =
        || Batch { images: images.clone(), labels: labels.clone(), mix: None, shape, indices: (0..b).collect() };
    for device in devices("three_hybrid_training_steps_on_the_device_match_the_cpu") {
        let (model, mut cpu) = VisionTransformer::init::<f32>(&config, 4).unwrap();
        let mut dev = cpu.to(device).unwrap();
        let (mut opt_cpu, mut opt_dev) = (new_opt(false, &cpu), new_opt(false, &dev));
        for step in 0..3u64 {
            let run = |p: &mut ParamStore<f32>, o: &mut Box<dyn Optimizer>| {
                train_step(&model, p, o.as_mut(), batch(), 1e-2, 0.1, Some(1.0), &mut Rng::seed(200 + step)).unwrap()
            };
            let (a, c) = (run(&mut dev, &mut opt_dev), run(&mut cpu, &mut opt_cpu));
            assert!(
                (a.loss - c.loss).abs() <= 1e-4 * (1.0 + c.loss.abs()),
                "{device}, step {step}: loss {} vs {}",
                a.loss,
                c.loss
            );
        }
        let (d, name) = distance(&dev, &cpu);
        let moved = VisionTransformer::init::<f32>(&config, 4).map(|(_, p)| distance(&p, &cpu).0).unwrap();
        println!(
            "{device}: the hybrid after 3 steps: largest difference {d:.2e} ({name}); the steps moved {moved:.2e}"
        );
        assert!(d <= TOL, "{device}: after 3 hybrid steps {name} differs by {d:.2e} from the cpu's");
        assert!(moved > 100.0 * TOL, "{device}: 3 hybrid steps moved no parameter by more than {moved:.2e}");
    }
}
