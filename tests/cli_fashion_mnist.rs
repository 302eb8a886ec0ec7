//! A smoke test of the command line on real data, light enough for emulation (CI runs it on x86-64
//! and, under `qemu-aarch64`, on aarch64): `vit train` on the first 256 Fashion-MNIST training
//! images for one epoch of 8 steps, then `vit eval` on its checkpoint, whose accuracy on the same
//! 128 test images must be the one training recorded.
//!
//! Without the data the test says it is skipped; under CI (`CI=true`) missing data is a failure,
//! since `.ci/run` installs the Debian package `dataset-fashion-mnist`.

mod common;

use std::path::Path;

use common::TempDir;
use vit::data::idx::SYSTEM_FASHION_MNIST_DIR;

#[test]
fn train_a_few_steps_then_eval_the_checkpoint() {
    if !Path::new(SYSTEM_FASHION_MNIST_DIR).join("train-images-idx3-ubyte.gz").is_file()
        && !Path::new(SYSTEM_FASHION_MNIST_DIR).join("train-images-idx3-ubyte").is_file()
    {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI=true but Fashion-MNIST is missing from {SYSTEM_FASHION_MNIST_DIR}; .ci/run installs dataset-fashion-mnist"
        );
        eprintln!(
            "skipped: Fashion-MNIST not found in {SYSTEM_FASHION_MNIST_DIR} (apt-get install dataset-fashion-mnist)"
        );
        return;
    }
    let tmp = TempDir::new("cli-fmnist");
    let out = tmp.join("run");
    let train = common::vit_binary()
        .arg("train")
        // No --data-dir: the default falls back to the system copy.
        .args(["--dataset", "fashion-mnist"])
        .arg("--out")
        .arg(&out)
        .args(["--dim", "32", "--depth", "2", "--heads", "2", "--patch", "7", "--mlp-ratio", "2"])
        .args(["--batch-size", "32", "--train-subset", "256", "--test-subset", "128", "--epochs", "1"])
        .args(["--lr", "2e-3", "--warmup", "0", "--augment", "none", "--drop-path", "0", "--threads", "2"])
        .arg("--quiet")
        .output()
        .expect("vit train runs");
    let dump = |o: &std::process::Output| {
        format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
    };
    assert!(train.status.success(), "vit train failed:\n{}", dump(&train));
    let ckpt = out.join("last.safetensors");
    assert!(ckpt.is_file(), "no checkpoint at {}:\n{}", ckpt.display(), dump(&train));

    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1, "one epoch, one metrics line: {metrics}");
    let (step, loss, acc) =
        (&lines[0]["step"], lines[0]["train_loss"].as_f64().unwrap(), lines[0]["test_acc"].as_f64());
    assert_eq!(step.as_u64(), Some(8), "256 images in batches of 32: {metrics}");
    assert!(loss.is_finite() && loss > 0.0, "train loss {loss}: {metrics}");
    let acc = acc.unwrap();

    let eval = common::vit_binary()
        .arg("eval")
        .arg(&ckpt)
        .args(["--subset", "128", "--threads", "2"])
        .output()
        .expect("vit eval runs");
    assert!(eval.status.success(), "vit eval failed:\n{}", dump(&eval));
    let stdout = String::from_utf8_lossy(&eval.stdout);
    assert!(stdout.contains("fashion-mnist") && stdout.contains("samples: 128"), "{}", dump(&eval));
    let top1 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("top-1 accuracy: "))
        .and_then(|rest| rest.split('%').next())
        .and_then(|p| p.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no top-1 line:\n{}", dump(&eval)));
    assert!((top1 - 100.0 * acc).abs() < 0.01, "eval's top-1 {top1}% differs from training's {}%", 100.0 * acc);
    eprintln!("fashion-mnist smoke: train loss {loss:.4}, test top-1 {top1:.2}% (128 images)");
}
