//! The figures the `vit` command draws, end to end on generated CIFAR-10 files with a tiny model:
//! `vit train` keeps `curves.png` beside `metrics.jsonl`, `vit eval` draws the confusion matrix
//! beside its table, `vit plot` redraws or overlays runs, and `vit analyze` writes the paper's
//! four figures with their numbers.

mod common;
use common::TempDir;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use vit::data::cifar;

/// The `vit` binary on one thread.
fn vit() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vit"));
    cmd.env_remove("RAYON_NUM_THREADS").arg("--threads").arg("1");
    cmd
}

/// Runs `cmd`; returns (success, stdout, stderr), asserting it did not panic.
fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("the vit binary runs");
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(!stderr.contains("panicked"), "the binary panicked:\n{stderr}");
    (out.status.success(), stdout, stderr)
}

fn expect_ok(cmd: &mut Command) -> (String, String) {
    let (ok, stdout, stderr) = run(cmd);
    assert!(ok, "expected success:\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}");
    (stdout, stderr)
}

/// The error line of a command that must fail with exit code 1.
fn expect_error(cmd: &mut Command) -> String {
    let out = cmd.output().expect("the vit binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "expected an error exit:\n{stderr}");
    assert!(!stderr.contains("panicked"), "the binary panicked:\n{stderr}");
    stderr
}

/// Trains a tiny ViT (dim 16, 2 blocks, patch 8: 16 patches + class token) for `epochs` epochs
/// of 4 steps on generated CIFAR-10 in `data`; returns the run directory.
fn train_tiny(data: &Path, out: &Path, epochs: usize, extra: &[&str]) -> PathBuf {
    let mut cmd = vit();
    cmd.arg("train").arg("--data-dir").arg(data).arg("--out").arg(out).arg("--quiet");
    cmd.args(["--dim", "16", "--depth", "2", "--heads", "2", "--patch", "8", "--mlp-ratio", "2"]);
    cmd.args(["--batch-size", "8", "--train-subset", "32", "--warmup", "0", "--epochs", &epochs.to_string()]);
    cmd.args(extra);
    expect_ok(&mut cmd);
    out.to_path_buf()
}

/// Decodes a PNG completely; returns its width and height.
fn png_size(path: &Path) -> (u32, u32) {
    let file = fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = png::Decoder::new(std::io::BufReader::new(file)).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    (info.width, info.height)
}

#[test]
fn train_draws_curves_eval_draws_confusion_plot_overlays_runs() {
    let tmp = TempDir::new("figures");
    cifar::write_cifar10_tree(tmp.path(), 8, 3).unwrap();
    let run_a = train_tiny(tmp.path(), &tmp.join("a"), 2, &[]);
    assert_eq!(png_size(&run_a.join("curves.png")), vit::analysis::curves::CURVES_SIZE);

    let ckpt = run_a.join("last.safetensors");
    let (stdout, stderr) = expect_ok(vit().arg("eval").arg(&ckpt).arg("--data-dir").arg(tmp.path()));
    assert!(stdout.contains("confusion matrix"), "{stdout}");
    let png = run_a.join("last-confusion.png");
    assert!(stderr.contains(&png.display().to_string()), "says where the picture is: {stderr}");
    assert_eq!(png_size(&png), vit::analysis::confusion::CONFUSION_SIZE);
    let csv = fs::read_to_string(run_a.join("last-confusion.csv")).unwrap();
    // A header and one row per class, the counts summing to the 8 test images.
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 11, "{csv}");
    let total: u64 = rows[1..].iter().flat_map(|r| r.split(',').skip(1)).map(|v| v.parse::<u64>().unwrap()).sum();
    assert_eq!(total, 8, "{csv}");
    // A chosen path that cannot be written is an error; the default place only warns.
    let bad = tmp.join("a/curves.png/x.png");
    let err =
        expect_error(vit().arg("eval").arg(&ckpt).arg("--data-dir").arg(tmp.path()).arg("--confusion-png").arg(&bad));
    assert!(err.contains("x.png"), "{err}");

    let run_b = train_tiny(tmp.path(), &tmp.join("b"), 1, &["--lr", "3e-3"]);
    fs::remove_file(run_b.join("curves.png")).unwrap();
    expect_ok(vit().arg("plot").arg(&run_b));
    assert_eq!(png_size(&run_b.join("curves.png")), vit::analysis::curves::CURVES_SIZE);
    let both = tmp.join("both.png");
    expect_ok(vit().arg("plot").arg(&run_a).arg(&run_b).arg("--out").arg(&both));
    assert_eq!(png_size(&both), vit::analysis::curves::CURVES_SIZE);
    let err = expect_error(vit().arg("plot").arg(tmp.join("no-such-run")));
    assert!(err.contains("metrics.jsonl"), "{err}");
}
