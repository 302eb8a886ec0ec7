//! The `vit` command end to end: the built binary run as a user would run it, on generated,
//! format-exact CIFAR-10 files in temporary directories, with tiny models so each test takes
//! seconds.
//!
//! - `vit train` writes its checkpoints and metrics, `--resume` continues exactly where a
//!   `--max-steps` run stopped, and bad flags fail with a message naming the problem;
//! - with CIFAR-10 missing it downloads it from a loopback HTTP server (`VIT_CIFAR10_URL`),
//!   and with the server unreachable it says what to do instead;
//! - `vit eval` prints the accuracy report, `vit predict` classifies PNG images of any size and
//!   colour type, and corrupt inputs give errors, never panics.

mod common;
use common::{crc32, TempDir};

use std::borrow::BorrowMut;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flate2::write::GzEncoder;
use flate2::Compression;

use vit::checkpoint::Checkpoint;
use vit::data::cifar::{self, CIFAR10_CLASSES};
use vit::data::download::{CIFAR10_ARCHIVE, MD5_ENV, URL_ENV};
use vit::data::{idx, Split};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// What a run of the binary produced.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// Both streams, for assertion messages.
    fn dump(&self) -> String {
        format!("exit code {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}", self.code, self.stdout, self.stderr)
    }

    /// Asserts success (showing both streams otherwise).
    fn expect_ok(self) -> Self {
        assert!(self.ok(), "expected success, got:\n{}", self.dump());
        self
    }

    /// Asserts a failure that is an orderly error exit, not a panic or a signal, and returns the
    /// error output.
    fn expect_error(self) -> String {
        assert_eq!(self.code, Some(1), "expected exit code 1 (an error), got:\n{}", self.dump());
        assert!(!self.stderr.contains("panicked"), "the binary panicked:\n{}", self.dump());
        assert!(
            self.stderr.starts_with("vit: ") || self.stderr.contains("\nvit: "),
            "no `vit:` error line:\n{}",
            self.dump()
        );
        self.stderr
    }
}

/// The `vit` binary with one worker thread (deterministic and light on a shared machine) and
/// without any download override inherited from the caller's environment.
fn vit() -> Command {
    let mut cmd = common::vit_binary();
    cmd.env_remove(URL_ENV).env_remove(MD5_ENV).env_remove("RAYON_NUM_THREADS").arg("--threads").arg("1");
    cmd
}

/// Runs a command (owned or borrowed) to completion.
fn run(mut cmd: impl BorrowMut<Command>) -> Run {
    let Output { status, stdout, stderr } = cmd.borrow_mut().output().expect("the vit binary runs");
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// A generated CIFAR-10 tree in `dir` with 8 images per batch file: 40 training and 8 test images.
fn cifar_data(dir: &Path) {
    cifar::write_cifar10_tree(dir, 8, 3).unwrap();
}

/// `vit train` with a tiny model (dim 16, one block, patch 8: 17 tokens) on the first 32
/// training images in batches of 8 (4 steps an epoch) and the 8 test images, then `extra`
/// flags; a flag given in `extra` replaces the default one (clap refuses repeated flags).
fn train_cmd(data_dir: &Path, out: &Path, extra: &[&str]) -> Command {
    const DEFAULTS: [(&str, &str); 10] = [
        ("--dim", "16"),
        ("--depth", "1"),
        ("--heads", "2"),
        ("--patch", "8"),
        ("--mlp-ratio", "2"),
        ("--batch-size", "8"),
        ("--train-subset", "32"),
        ("--test-subset", "8"),
        ("--warmup", "0"),
        ("--epochs", "1"),
    ];
    let mut cmd = vit();
    cmd.arg("train").arg("--data-dir").arg(data_dir).arg("--out").arg(out).arg("--quiet");
    for (flag, value) in DEFAULTS {
        if !extra.contains(&flag) {
            cmd.args([flag, value]);
        }
    }
    cmd.args(extra);
    cmd
}

/// Trains the tiny model for one epoch into `out` and returns the path of `last.safetensors`.
fn trained_checkpoint(data_dir: &Path, out: &Path) -> PathBuf {
    run(train_cmd(data_dir, out, &[])).expect_ok();
    let last = out.join("last.safetensors");
    assert!(last.is_file(), "no checkpoint at {}", last.display());
    last
}

/// The lines of `metrics.jsonl`, parsed.
fn metrics(out: &Path) -> Vec<serde_json::Value> {
    let text = fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}"))).collect()
}

/// Every tensor of a checkpoint, by name, as raw f32 bits (for exact comparisons).
fn tensors(path: &Path) -> Vec<(String, Vec<u32>)> {
    let ckpt = Checkpoint::open(path).unwrap();
    ckpt.names()
        .iter()
        .map(|n| (n.clone(), ckpt.tensor::<f32>(n).unwrap().data().iter().map(|v| v.to_bits()).collect()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// vit train
// ---------------------------------------------------------------------------------------------

#[test]
fn train_writes_checkpoints_and_metrics() {
    let tmp = TempDir::new("train");
    cifar_data(tmp.path());
    let out = tmp.join("run");
    let r = run(train_cmd(tmp.path(), &out, &["--epochs", "2"])).expect_ok();
    assert!(r.stdout.contains("epoch   1/2") && r.stdout.contains("epoch   2/2"), "{}", r.dump());
    assert!(r.stderr.contains("best test accuracy"), "{}", r.dump());
    for f in ["last.safetensors", "best.safetensors", "metrics.jsonl"] {
        assert!(out.join(f).is_file(), "{f} missing from {}: {:?}", out.display(), fs::read_dir(&out).unwrap().count());
    }
    let records = metrics(&out);
    assert_eq!(records.len(), 2, "one metrics line per epoch");
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["epoch"], i + 1);
        assert_eq!(r["step"], 4 * (i + 1), "4 steps an epoch");
        for key in ["train_loss", "test_loss"] {
            let v = r[key].as_f64().unwrap();
            assert!(v.is_finite() && v > 0.0, "{key} = {v}");
        }
        for key in ["train_acc", "test_acc", "test_top5"] {
            let v = r[key].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&v), "{key} = {v}");
        }
    }
    // The checkpoints are complete training checkpoints: the model's config, the run's position
    // and the optimizer's moments.
    let ckpt = Checkpoint::open(out.join("last.safetensors")).unwrap();
    let config = ckpt.config().unwrap().expect("the model config is stored");
    assert_eq!((config.dim, config.depth, config.heads, config.patch_size), (16, 1, 2, 8));
    assert_eq!(ckpt.meta("vit.dataset"), Some("cifar10"));
    assert_eq!(ckpt.meta("vit.epoch"), Some("2"));
    assert!(ckpt.names().iter().any(|n| n.starts_with("optim.")), "no optimizer state in {:?}", ckpt.names());
    Checkpoint::open(out.join("best.safetensors")).unwrap();

    // A fresh run (no --resume) in the same directory starts its own metrics file.
    run(train_cmd(tmp.path(), &out, &["--seed", "1"])).expect_ok();
    assert_eq!(metrics(&out).len(), 1, "the earlier run's lines are gone");
    assert_eq!(Checkpoint::open(out.join("best.safetensors")).unwrap().meta("vit.seed"), Some("1"));
}

#[test]
fn best_checkpoint_is_written_even_at_zero_accuracy() {
    // Evaluated on a single image, an epoch scores 0% or 100%; over several seeds some score 0%.
    // Whatever the score, the first epoch's model is the best so far and is saved.
    let tmp = TempDir::new("best");
    cifar_data(tmp.path());
    let mut scores = Vec::new();
    for seed in 0..6 {
        let out = tmp.join(format!("run{seed}"));
        run(train_cmd(tmp.path(), &out, &["--test-subset", "1", "--seed", &seed.to_string()])).expect_ok();
        scores.push(metrics(&out)[0]["test_acc"].as_f64().unwrap());
        assert!(out.join("best.safetensors").is_file(), "seed {seed}: no best.safetensors (scores so far {scores:?})");
    }
}

#[test]
fn max_steps_then_resume_continues_exactly() {
    let tmp = TempDir::new("resume");
    cifar_data(tmp.path());

    // Uninterrupted: 2 epochs of 4 steps.
    let whole = tmp.join("whole");
    run(train_cmd(tmp.path(), &whole, &["--epochs", "2", "--seed", "5"])).expect_ok();

    // Interrupted after 3 steps (inside the first epoch), then resumed.
    let split = tmp.join("split");
    let r = run(train_cmd(tmp.path(), &split, &["--epochs", "2", "--seed", "5", "--max-steps", "3"])).expect_ok();
    assert!(split.join("last.safetensors").is_file(), "--max-steps writes a checkpoint:\n{}", r.dump());
    assert!(!split.join("metrics.jsonl").exists(), "no epoch was completed, so no metrics line");
    assert!(
        r.stderr.contains("stopped after 3 steps, before the end of an epoch: not evaluated yet")
            && !r.stderr.contains("best test accuracy"),
        "a run stopped inside its first epoch must not report an accuracy:\n{}",
        r.dump()
    );
    let ckpt = Checkpoint::open(split.join("last.safetensors")).unwrap();
    assert_eq!(
        (ckpt.meta("vit.epoch"), ckpt.meta("vit.batch"), ckpt.meta("vit.global_step")),
        (Some("0"), Some("3"), Some("3"))
    );

    let r = run(train_cmd(tmp.path(), &split, &["--epochs", "2", "--seed", "5", "--resume"])).expect_ok();
    assert!(r.stderr.contains("resuming from") && r.stderr.contains("(step 3)"), "{}", r.dump());
    assert!(r.stdout.contains("epoch   1/2") && r.stdout.contains("epoch   2/2"), "{}", r.dump());
    let records = metrics(&split);
    assert_eq!(records.iter().map(|r| r["step"].as_u64().unwrap()).collect::<Vec<_>>(), [4, 8]);

    // The same parameters and optimizer state, bit for bit, as the uninterrupted run; and the
    // same evaluation of them.
    assert!(
        tensors(&whole.join("last.safetensors")) == tensors(&split.join("last.safetensors")),
        "resumed run diverged"
    );
    let (a, b) = (metrics(&whole), metrics(&split));
    assert_eq!(a[1]["test_loss"], b[1]["test_loss"]);
    assert_eq!(a[1]["test_acc"], b[1]["test_acc"]);
}

#[test]
fn resume_without_a_checkpoint_or_with_other_flags_is_an_error() {
    let tmp = TempDir::new("resume-bad");
    cifar_data(tmp.path());
    let out = tmp.join("run");
    let err = run(train_cmd(tmp.path(), &out, &["--resume"])).expect_error();
    assert!(err.contains("--resume") && err.contains("no checkpoint"), "{err}");

    run(train_cmd(tmp.path(), &out, &["--max-steps", "1"])).expect_ok();
    let err = run(train_cmd(tmp.path(), &out, &["--resume", "--seed", "9"])).expect_error();
    assert!(err.contains("seed"), "{err}");
    // Another model than the checkpoint's.
    let err = run(train_cmd(tmp.path(), &out, &["--resume", "--dim", "32"])).expect_error();
    assert!(err.contains("--dim: 16 when the run started, 32 now"), "{err}");
}

#[test]
fn bad_flag_combinations_fail_naming_the_problem() {
    let tmp = TempDir::new("flags");
    cifar_data(tmp.path());
    let out = tmp.join("run");
    let err =
        run(vit().args(["train", "--dim", "10", "--heads", "3", "--data-dir"]).arg(tmp.path()).arg("--out").arg(&out))
            .expect_error();
    assert!(err.contains("dim 10 is not divisible by heads 3"), "{err}");

    let err =
        run(vit().args(["train", "--patch", "5", "--data-dir"]).arg(tmp.path()).arg("--out").arg(&out)).expect_error();
    assert!(err.contains("image size 32 is not divisible by patch size 5"), "{err}");

    let err = run(train_cmd(tmp.path(), &out, &["--label-smoothing", "1.5"])).expect_error();
    assert!(err.contains("--label-smoothing must be in [0, 1), got 1.5"), "{err}");

    let err = run(train_cmd(tmp.path(), &out, &["--randaugment", "two"])).expect_error();
    assert!(err.contains("--randaugment expects N,M"), "{err}");

    let err = run(train_cmd(tmp.path(), &out, &["--train-subset", "4"])).expect_error();
    assert!(err.contains("smaller than one batch"), "{err}");
    assert!(!out.join("last.safetensors").exists(), "nothing trained, nothing written");

    let err = run(vit().args(["train", "--model", "xl"])).expect_error();
    assert!(err.contains("unknown model variant \"xl\"") && err.contains("ti, s, b, l, h"), "{err}");
}

#[test]
fn an_unknown_dataset_lists_the_valid_names() {
    let tmp = TempDir::new("dataset");
    let err = run(vit().args(["train", "--dataset", "imagenet", "--data-dir"]).arg(tmp.path())).expect_error();
    assert!(err.contains("\"imagenet\"") && err.contains("cifar10, cifar100, mnist, fashion-mnist"), "{err}");
}

#[test]
fn usage_errors_exit_with_2() {
    let r = run(&mut vit());
    assert_eq!(r.code, Some(2), "{}", r.dump());
    assert!(r.stderr.contains("vit train"), "{}", r.dump());
    let r = run(vit().args(["train", "--epochs", "many"]));
    assert_eq!(r.code, Some(2), "{}", r.dump());
    assert!(r.stderr.contains("--epochs"), "{}", r.dump());
    let r = run(vit().args(["predict", "model.safetensors"]));
    assert_eq!(r.code, Some(2), "an image is required:\n{}", r.dump());
}

// ---------------------------------------------------------------------------------------------
// vit train: the CIFAR-10 download
// ---------------------------------------------------------------------------------------------

/// A gzipped tar of a generated CIFAR-10 tree laid out as the official archive
/// (`cifar-10-batches-bin/` with the six batches and `batches.meta.txt`).
fn cifar10_archive() -> Vec<u8> {
    let src = TempDir::new("archive-src");
    let root = cifar::write_cifar10_tree(src.path(), 8, 11).unwrap();
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    builder.append_dir_all("cifar-10-batches-bin", &root).unwrap();
    builder.into_inner().unwrap().finish().unwrap()
}

fn md5_hex(bytes: &[u8]) -> String {
    use md5::{Digest, Md5};
    Md5::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A loopback HTTP server that answers one request with `body`, then stops; it also stops by
/// itself after 60 s if no request comes. Returns the URL and the thread, whose result is the
/// request line it answered (if any).
fn serve_once(body: Vec<u8>) -> (String, JoinHandle<Option<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/mirror/{CIFAR10_ARCHIVE}", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    let handle = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            match listener.accept() {
                Ok((stream, _)) => return Some(answer(stream, &body)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => panic!("accept: {e}"),
            }
        }
        None
    });
    (url, handle)
}

/// Reads one request's head (at most 64 KiB) and answers 200 with `body`; returns the request line.
fn answer(mut stream: TcpStream, body: &[u8]) -> String {
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let header = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/gzip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    // The client may hang up early; the test judges by the binary's outcome.
    let _ = stream.write_all(header.as_bytes()).and_then(|()| stream.write_all(body));
    let _ = stream.flush();
    String::from_utf8_lossy(&head).lines().next().unwrap_or("").to_string()
}

#[test]
fn train_downloads_missing_cifar10_from_a_mirror() {
    let tmp = TempDir::new("download");
    let archive = cifar10_archive();
    let md5 = md5_hex(&archive);
    let (url, server) = serve_once(archive);
    let data_dir = tmp.join("data"); // does not exist yet
    let out = tmp.join("run");
    let r = run(train_cmd(&data_dir, &out, &[]).env(URL_ENV, &url).env(MD5_ENV, &md5)).expect_ok();
    let request = server.join().unwrap().expect("the binary made a request");
    assert_eq!(request, format!("GET /mirror/{CIFAR10_ARCHIVE} HTTP/1.1"));
    assert!(out.join("last.safetensors").is_file(), "{}", r.dump());
    assert_eq!(metrics(&out).len(), 1);
    // The dataset is in place and nothing else was left behind (no part file, no unpack dir).
    assert!(cifar::cifar10_missing_files(&data_dir.join("cifar-10-batches-bin")).is_empty());
    let left: Vec<String> =
        fs::read_dir(&data_dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(left, ["cifar-10-batches-bin"]);

    // A second run finds the data and does not download again (the server is gone).
    run(train_cmd(&data_dir, &tmp.join("run2"), &[]).env(URL_ENV, &url)).expect_ok();
}

#[test]
fn a_wrong_checksum_fails_and_leaves_no_dataset() {
    let tmp = TempDir::new("download-md5");
    let (url, server) = serve_once(cifar10_archive());
    let data_dir = tmp.join("data");
    let wrong = "0123456789abcdef0123456789abcdef";
    let err = run(train_cmd(&data_dir, &tmp.join("run"), &[]).env(URL_ENV, &url).env(MD5_ENV, wrong)).expect_error();
    server.join().unwrap().expect("the binary made a request");
    assert!(err.contains("checksum mismatch") && err.contains(wrong), "{err}");
    let left = fs::read_dir(&data_dir).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "the data dir holds no dataset and no partial file");
}

#[test]
fn an_unreachable_mirror_says_what_to_do_instead() {
    let tmp = TempDir::new("download-closed");
    // A port that was just free: bind, note it, close.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/{CIFAR10_ARCHIVE}");
    let data_dir = tmp.join("data");
    let err = run(train_cmd(&data_dir, &tmp.join("run"), &[]).env(URL_ENV, &url)).expect_error();
    assert!(err.contains("could not download CIFAR-10") && err.contains(&url), "{err}");
    // The three ways out: a local copy, a mirror, or another dataset.
    assert!(err.contains("cifar-10-batches-bin") && err.contains(&data_dir.display().to_string()), "{err}");
    assert!(err.contains(URL_ENV), "{err}");
    assert!(err.contains("--dataset fashion-mnist"), "{err}");
    assert!(!err.contains("panicked") && !err.contains("Backtrace"), "{err}");
    let left = fs::read_dir(&data_dir).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "nothing left behind in the data dir");
    assert!(!tmp.join("run").join("last.safetensors").exists());
}

// ---------------------------------------------------------------------------------------------
// vit eval
// ---------------------------------------------------------------------------------------------

#[test]
fn eval_prints_top1_top5_per_class_and_the_confusion_matrix() {
    let tmp = TempDir::new("eval");
    cifar_data(tmp.path());
    let ckpt = trained_checkpoint(tmp.path(), &tmp.join("run"));
    let r = run(vit().arg("eval").arg(&ckpt).arg("--data-dir").arg(tmp.path())).expect_ok();
    let out = &r.stdout;
    assert!(out.contains("cifar10 test set"), "{}", r.dump());
    assert!(out.contains("samples: 8"), "all 8 test images:\n{}", r.dump());
    let line = out.lines().find(|l| l.starts_with("top-1 accuracy:")).unwrap_or_else(|| panic!("{}", r.dump()));
    let percents: Vec<f64> =
        line.split_whitespace().filter_map(|w| w.strip_suffix('%')).map(|p| p.parse().unwrap()).collect();
    assert_eq!(percents.len(), 2, "{line}");
    assert!(percents[0] <= percents[1] && percents[1] <= 100.0, "top-1 <= top-5: {line}");
    assert!(out.contains("per-class accuracy:"), "{}", r.dump());
    for name in CIFAR10_CLASSES {
        assert!(out.lines().any(|l| l.trim_start().starts_with(name)), "no per-class line for {name}:\n{}", r.dump());
    }
    let cat = out.lines().find(|l| l.trim_start().starts_with("cat")).unwrap();
    assert!(cat.contains("(no samples)"), "the test batch has no cat: {cat}");
    // The confusion matrix: a header of class indices, then one row per class whose counts sum
    // to that class's test images (the generated test batch's 8 labels are 5..9, 0..2).
    let at = out.find("confusion matrix").unwrap_or_else(|| panic!("{}", r.dump()));
    let rows: Vec<Vec<u64>> = out[at..]
        .lines()
        .skip(2)
        .take(10)
        .map(|l| l.split_whitespace().skip(2).map(|v| v.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), 10);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.len(), 10, "row {i}");
        assert_eq!(row.iter().sum::<u64>(), u64::from(!(3..5).contains(&i)), "row {i}: {row:?}");
    }

    // --subset and --dataset are honoured.
    let r = run(vit().arg("eval").arg(&ckpt).arg("--data-dir").arg(tmp.path()).args([
        "--subset",
        "3",
        "--dataset",
        "cifar10",
    ]))
    .expect_ok();
    assert!(r.stdout.contains("samples: 3"), "{}", r.dump());
}

/// `vit train --img-size` trains on resized images, and `vit eval` and `vit analyze` resize the
/// test set the same way for the dataset the checkpoint was trained on: eval's accuracy equals
/// the one the run measured on the same 8 test images.
#[test]
fn a_model_trained_at_another_size_is_evaluated_at_its_own() {
    let tmp = TempDir::new("img-size");
    cifar_data(tmp.path());
    let out = tmp.join("run");
    // 32 px images at 16: patch 8 gives a 2x2 grid (4 tokens instead of 16).
    let r = run(train_cmd(tmp.path(), &out, &["--img-size", "16", "--test-subset", "8"])).expect_ok();
    assert!(r.stderr.contains("resizing 3x32x32 images to the model's 3x16x16"), "{}", r.dump());
    let ckpt = out.join("last.safetensors");
    let config = Checkpoint::open(&ckpt).unwrap().config().unwrap().expect("a stored config");
    assert_eq!((config.image_size, config.num_patches()), (16, 4));
    let measured = metrics(&out).last().unwrap()["test_acc"].as_f64().unwrap();

    let r = run(vit().arg("eval").arg(&ckpt).arg("--data-dir").arg(tmp.path())).expect_ok();
    assert!(r.stderr.contains("resizing 3x32x32 test images"), "{}", r.dump());
    let line = r.stdout.lines().find(|l| l.starts_with("top-1 accuracy:")).unwrap_or_else(|| panic!("{}", r.dump()));
    let top1: f64 = line.split_whitespace().find_map(|w| w.strip_suffix('%')).unwrap().parse().unwrap();
    assert!((top1 - 100.0 * measured).abs() < 0.01, "eval {top1}% against the run's {measured}");

    let figures = tmp.join("figures");
    run(vit()
        .arg("analyze")
        .arg(&ckpt)
        .arg("--data-dir")
        .arg(tmp.path())
        .arg("--out")
        .arg(&figures)
        .args(["--samples", "4"]))
    .expect_ok();
    assert!(figures.join("rollout.png").is_file());

    // Another dataset is not resized into a model's shape: digits asked of the 16 px model.
    let digits = tmp.join("mnist");
    fs::create_dir_all(&digits).unwrap();
    let (images, labels) = idx::file_names(Split::Test);
    idx::write_idx_images(&digits.join(images), 4, 28, 28, &[7u8; 4 * 28 * 28], false).unwrap();
    idx::write_idx_labels(&digits.join(labels), &[0, 1, 2, 3], false).unwrap();
    let err =
        run(vit().arg("eval").arg(&ckpt).arg("--data-dir").arg(tmp.path()).args(["--dataset", "mnist"])).expect_error();
    assert!(err.contains("3x16x16") && err.contains("1x28x28"), "{err}");
}

#[test]
fn eval_on_missing_or_mismatched_data_is_an_error() {
    let tmp = TempDir::new("eval-bad");
    cifar_data(tmp.path());
    let ckpt = trained_checkpoint(tmp.path(), &tmp.join("run"));
    let eval =
        |args: &[&str], data_dir: &Path| run(vit().arg("eval").arg(&ckpt).arg("--data-dir").arg(data_dir).args(args));

    let empty = TempDir::new("eval-empty");
    let err = eval(&[], empty.path()).expect_error();
    assert!(err.contains(&empty.path().display().to_string()), "says where it looked: {err}");

    let err = eval(&["--dataset", "svhn"], tmp.path()).expect_error();
    assert!(err.contains("cifar10, cifar100, mnist, fashion-mnist"), "{err}");

    // A model for 32x32x3 images in 10 classes, asked about 28x28x1 digits and about CIFAR-100's
    // 100 classes: both present in the data dir, both refused with the reason.
    let digits = tmp.join("mnist");
    fs::create_dir_all(&digits).unwrap();
    let (images, labels) = idx::file_names(Split::Test);
    idx::write_idx_images(&digits.join(images), 4, 28, 28, &[7u8; 4 * 28 * 28], false).unwrap();
    idx::write_idx_labels(&digits.join(labels), &[0, 1, 2, 3], false).unwrap();
    let err = eval(&["--dataset", "mnist"], tmp.path()).expect_error();
    assert!(err.contains("3x32x32") && err.contains("1x28x28"), "{err}");

    let c100 = tmp.join("cifar-100-binary");
    fs::create_dir_all(&c100).unwrap();
    let fine = [0u8, 50, 99];
    cifar::write_cifar100_bin(&c100.join("test.bin"), &[0, 1, 2], &fine, &[9u8; 3 * 3072]).unwrap();
    cifar::write_cifar100_bin(&c100.join("train.bin"), &[0, 1, 2], &fine, &[9u8; 3 * 3072]).unwrap();
    let err = eval(&["--dataset", "cifar100"], tmp.path()).expect_error();
    assert!(err.contains("10 classes") && err.contains("100"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// vit predict
// ---------------------------------------------------------------------------------------------

/// A PNG of `width x height` pixels of `color` type, 8 bits, filled with a gradient.
fn png_bytes(width: u32, height: u32, color: png::ColorType) -> Vec<u8> {
    let samples = color.samples();
    let data: Vec<u8> = (0..width as usize * height as usize * samples).map(|i| (i * 7 % 256) as u8).collect();
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, width, height);
        encoder.set_color(color);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(&data).unwrap();
    }
    bytes
}

/// The `(class, percent)` pairs of one `vit predict` line.
fn predictions(line: &str) -> Vec<(String, f64)> {
    let (_, list) = line.rsplit_once(": ").unwrap_or_else(|| panic!("not a prediction line: {line:?}"));
    list.split(", ")
        .map(|entry| {
            let (name, p) = entry.rsplit_once(' ').unwrap();
            (name.to_string(), p.strip_suffix('%').unwrap().parse().unwrap())
        })
        .collect()
}

#[test]
fn predict_classifies_pngs_of_any_size_and_colour_type() {
    let tmp = TempDir::new("predict");
    cifar_data(tmp.path());
    let ckpt = trained_checkpoint(tmp.path(), &tmp.join("run"));
    let images = [
        ("rgb.png", png_bytes(45, 30, png::ColorType::Rgb)),
        ("grey.png", png_bytes(17, 17, png::ColorType::Grayscale)),
        ("rgba.png", png_bytes(64, 64, png::ColorType::Rgba)),
        ("one-pixel.png", png_bytes(1, 1, png::ColorType::GrayscaleAlpha)),
        ("exact.png", png_bytes(32, 32, png::ColorType::Rgb)),
    ];
    let mut cmd = vit();
    cmd.arg("predict").arg(&ckpt).args(["--top", "3"]);
    for (name, bytes) in &images {
        fs::write(tmp.join(name), bytes).unwrap();
        cmd.arg(tmp.join(name));
    }
    let r = run(&mut cmd).expect_ok();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), images.len(), "one line per image:\n{}", r.dump());
    for ((name, _), line) in images.iter().zip(&lines) {
        assert!(line.starts_with(&tmp.join(name).display().to_string()), "{line}");
        let top = predictions(line);
        assert_eq!(top.len(), 3, "{line}");
        for (class, p) in &top {
            assert!(CIFAR10_CLASSES.contains(&class.as_str()), "{class} is not a CIFAR-10 class: {line}");
            assert!((0.0..=100.0).contains(p), "{line}");
        }
        assert!(top.windows(2).all(|w| w[0].1 >= w[1].1), "sorted by probability: {line}");
        assert!(top.iter().map(|(_, p)| p).sum::<f64>() <= 100.0 + 0.15, "{line}");
    }

    // --top 10 lists every class once, and the probabilities sum to 100%.
    let r = run(vit().arg("predict").arg(&ckpt).arg(tmp.join("rgb.png")).args(["--top", "10"])).expect_ok();
    let top = predictions(r.stdout.trim_end());
    let mut names: Vec<&str> = top.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    let mut all = CIFAR10_CLASSES.to_vec();
    all.sort_unstable();
    assert_eq!(names, all);
    assert!((top.iter().map(|(_, p)| p).sum::<f64>() - 100.0).abs() < 0.5, "{}", r.stdout);
}

#[test]
fn predict_with_a_timm_state_dict_needs_only_the_number_of_heads() {
    // A timm state dict carries no config: the shapes give all of it but the number of heads,
    // which for a non-standard width (12 here) is asked for. No dataset is recorded, so the
    // classes are listed by index.
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/timm_vit_tiny.safetensors");
    let tmp = TempDir::new("predict-timm");
    let image = tmp.join("img.png");
    fs::write(&image, png_bytes(20, 12, png::ColorType::Rgb)).unwrap();
    let err = run(vit().arg("predict").arg(&fixture).arg(&image)).expect_error();
    assert!(err.contains("number of heads") && err.contains("--heads"), "{err}");
    let r = run(vit().arg("predict").arg(&fixture).arg(&image).args(["--heads", "3", "--top", "5"])).expect_ok();
    let top = predictions(r.stdout.trim_end());
    let mut classes: Vec<&str> = top.iter().map(|(c, _)| c.as_str()).collect();
    classes.sort_unstable();
    assert_eq!(classes, ["0", "1", "2", "3", "4"], "{}", r.dump());
    let err = run(vit().arg("predict").arg(&fixture).arg(&image).args(["--heads", "5"])).expect_error();
    assert!(err.contains("12") && err.contains('5'), "width 12 does not split into 5 heads: {err}");
}

#[test]
fn predict_rejects_corrupt_and_missing_images_with_clear_errors() {
    let tmp = TempDir::new("predict-bad");
    cifar_data(tmp.path());
    let ckpt = trained_checkpoint(tmp.path(), &tmp.join("run"));
    let good = png_bytes(20, 20, png::ColorType::Rgb);

    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("text.png", b"this is not an image".to_vec(), "not a readable PNG"),
        ("truncated.png", good[..good.len() - 30].to_vec(), "PNG"),
        ("empty.png", Vec::new(), "not a readable PNG"),
        // A valid signature and a header claiming 60000 x 60000 pixels, and nothing else: must
        // not try to allocate 10 GB.
        ("huge.png", huge_header_png(), "60000 x 60000 pixels, larger than"),
    ];
    for (name, bytes, expected) in cases {
        let path = tmp.join(name);
        fs::write(&path, bytes).unwrap();
        let err = run(vit().arg("predict").arg(&ckpt).arg(&path)).expect_error();
        assert!(err.contains(name) && err.contains(expected), "{name}: {err}");
    }
    let err = run(vit().arg("predict").arg(&ckpt).arg(tmp.join("absent.png"))).expect_error();
    assert!(err.contains("absent.png") && err.contains("No such file"), "{err}");
}

/// The PNG signature and an IHDR chunk (with a correct CRC) for a 60000 x 60000 RGB image.
fn huge_header_png() -> Vec<u8> {
    huge_header_png_of(60000)
}

/// The PNG signature and an IHDR chunk (with a correct CRC) for a `side x side` RGB image.
fn huge_header_png_of(side: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&side.to_be_bytes());
    ihdr.extend_from_slice(&side.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8 bits, RGB, deflate, no filter, no interlace
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend_from_slice(&13u32.to_be_bytes());
    bytes.extend_from_slice(&ihdr);
    bytes.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    bytes
}

#[test]
fn missing_or_garbage_checkpoints_give_clear_errors() {
    let tmp = TempDir::new("ckpt-bad");
    let image = tmp.join("img.png");
    fs::write(&image, png_bytes(32, 32, png::ColorType::Rgb)).unwrap();

    let missing = tmp.join("nope.safetensors");
    for sub in ["predict", "eval"] {
        let mut cmd = vit();
        cmd.arg(sub).arg(&missing);
        if sub == "predict" {
            cmd.arg(&image);
        } else {
            cmd.arg("--data-dir").arg(tmp.path());
        }
        let err = run(&mut cmd).expect_error();
        assert!(err.contains("nope.safetensors") && err.contains("No such file"), "{sub}: {err}");
    }

    let garbage = tmp.join("garbage.safetensors");
    fs::write(&garbage, (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect::<Vec<u8>>())
        .unwrap();
    let err = run(vit().arg("predict").arg(&garbage).arg(&image)).expect_error();
    assert!(err.contains("checkpoint") && err.contains("garbage.safetensors"), "{err}");

    // A real checkpoint cut in half.
    cifar_data(tmp.path());
    let ckpt = trained_checkpoint(tmp.path(), &tmp.join("run"));
    let bytes = fs::read(&ckpt).unwrap();
    let half = tmp.join("half.safetensors");
    fs::write(&half, &bytes[..bytes.len() / 2]).unwrap();
    let err = run(vit().arg("predict").arg(&half).arg(&image)).expect_error();
    assert!(err.contains("checkpoint") && err.contains("half.safetensors"), "{err}");
    let err = run(vit().arg("eval").arg(&half).arg("--data-dir").arg(tmp.path())).expect_error();
    assert!(err.contains("checkpoint") && err.contains("half.safetensors"), "{err}");

    // A PNG is not a checkpoint.
    let err = run(vit().arg("predict").arg(&image).arg(&image)).expect_error();
    assert!(err.contains("checkpoint") && err.contains("img.png"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Issue 9: nothing lost, nothing aborts
// ---------------------------------------------------------------------------------------------

/// Item 11 and 14: every numeric flag is checked, the error naming the flag (the crop and the
/// hybrid's ResNet flags too); negative numbers are read as numbers (`--lr -1`), not as flags.
#[test]
fn numeric_flags_are_validated_naming_the_flag() {
    let tmp = TempDir::new("numeric");
    cifar_data(tmp.path());
    let out = tmp.join("run");
    let cases: [(&[&str], &str); 18] = [
        (&["--epochs", "0"], "--epochs must be at least 1"),
        (&["--clip-grad", "nan"], "--clip-grad"),
        (&["--clip-grad=-1"], "--clip-grad"),
        (&["--lr", "-1"], "--lr must be a finite number > 0, got -1"),
        (&["--optimizer", "sgd", "--momentum", "nan"], "--momentum"),
        (&["--min-lr", "nan", "--warmup", "0"], "--min-lr"),
        (&["--weight-decay", "nan"], "--weight-decay"),
        (&["--mlp-ratio", "1e12"], "--mlp-ratio"),
        (&["--erasing", "2"], "--erasing"),
        (&["--warmup", "inf"], "--warmup"),
        (&["--crop-padding", "33"], "--crop-padding must be at most the image side, 32, got 33"),
        (&["--img-size", "0"], "--img-size must be in 1..=8192, got 0"),
        (&["--img-size", "16", "--crop-padding", "17"], "--crop-padding must be at most the image side, 16"),
        // The hybrid's flags on a plain model, and stage lists that are not ones.
        (&["--resnet-layers", "1"], "--resnet-layers needs a hybrid --model"),
        (&["--resnet-width", "8"], "--resnet-width needs a hybrid --model"),
        (&["--model", "r-ti", "--resnet-layers", "2,x"], "--resnet-layers must be block counts"),
        (&["--model", "r-ti", "--resnet-layers", "1,1,1,1,1"], "at most 4 stages"),
        (&["--model", "r-ti", "--resnet-layers", "2,0"], "at most 4 stages of 1..="),
    ];
    for (flags, expected) in cases {
        let err = run(train_cmd(tmp.path(), &out, flags)).expect_error();
        assert!(err.contains(expected), "{flags:?}: {err}");
    }
    assert!(!out.join("last.safetensors").exists(), "nothing was trained");
}

/// Item 5: a model too large to allocate is refused with its size, before allocating.
#[test]
fn an_absurd_model_size_is_a_config_error() {
    let tmp = TempDir::new("absurd");
    cifar_data(tmp.path());
    let err = run(train_cmd(tmp.path(), &tmp.join("run"), &["--dim", "100000", "--heads", "4", "--depth", "12"]))
        .expect_error();
    assert!(err.contains("parameters") && err.contains("TiB"), "{err}");
}

/// Item 12: SIGINT (and SIGTERM) finish the current step, write a checkpoint at that exact
/// position, say how to resume, and exit with 130; resuming from there gives the same model, bit
/// for bit, as a run that was never interrupted.
#[cfg(unix)]
#[test]
fn sigint_and_sigterm_stop_cleanly_and_resume_bit_exactly() {
    use std::io::BufRead;
    use std::process::Stdio;
    let tmp = TempDir::new("signal");
    cifar_data(tmp.path());
    // A constant learning rate: the schedule does not depend on the epoch count.
    let flags = ["--epochs", "100000", "--decay", "constant", "--seed", "4"];
    let split = tmp.join("split");
    let interrupt = |signal: i32, resume: bool| -> Run {
        let mut cmd = train_cmd(tmp.path(), &split, &flags);
        if resume {
            cmd.arg("--resume");
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        // Wait until an epoch is done, so the run is well inside its training loop.
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        assert!(first.starts_with("epoch"), "{first}");
        // SAFETY: `kill` with the pid of our own child and a valid signal number.
        assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
        let out = child.wait_with_output().unwrap();
        Run { code: out.status.code(), stdout: first + &rest, stderr: String::from_utf8_lossy(&out.stderr).into() }
    };
    let r = interrupt(libc::SIGINT, false);
    assert_eq!(r.code, Some(130), "{}", r.dump());
    assert!(r.stderr.contains("interrupted") && r.stderr.contains("--resume"), "{}", r.dump());
    let r = interrupt(libc::SIGTERM, true);
    assert_eq!(r.code, Some(130), "{}", r.dump());
    let ckpt = Checkpoint::open(split.join("last.safetensors")).unwrap();
    let step: u64 = ckpt.meta("vit.global_step").unwrap().parse().unwrap();
    assert!(step >= 8, "two interrupted runs of at least an epoch each: step {step}");

    // Resume to a fixed step past the interruption, and compare with a run never interrupted.
    let stop = (step + 5).to_string();
    run(train_cmd(tmp.path(), &split, &[&flags[..], &["--resume", "--max-steps", &stop]].concat())).expect_ok();
    let whole = tmp.join("whole");
    run(train_cmd(tmp.path(), &whole, &[&flags[..], &["--max-steps", &stop]].concat())).expect_ok();
    assert!(tensors(&whole.join("last.safetensors")) == tensors(&split.join("last.safetensors")), "resume diverged");
    let strip = |lines: Vec<serde_json::Value>| -> Vec<serde_json::Value> {
        lines
            .into_iter()
            .map(|mut r| {
                let o = r.as_object_mut().unwrap();
                for timing in ["images_per_sec", "seconds", "data_secs", "step_secs", "eval_secs", "checkpoint_secs"] {
                    o.remove(timing);
                }
                r
            })
            .collect()
    };
    assert_eq!(strip(metrics(&whole)), strip(metrics(&split)), "one line per epoch, with the same values");
}

/// Item 7: an explicit `--data-dir` that lacks the Fashion-MNIST files, holds a directory in their
/// place or does not exist is an error, never a silent fall back to the system copy; and a run
/// says which files it reads.
#[test]
fn an_explicit_data_dir_is_the_only_place_looked_in() {
    let tmp = TempDir::new("data-dir");
    let out = tmp.join("run");
    let fashion = |dir: &Path| {
        run(vit()
            .args(["train", "--dataset", "fashion-mnist", "--quiet", "--epochs", "1", "--data-dir"])
            .arg(dir)
            .arg("--out")
            .arg(&out))
    };
    let empty = tmp.join("empty");
    fs::create_dir_all(&empty).unwrap();
    let err = fashion(&empty).expect_error();
    assert!(err.contains("not found") && err.contains(&empty.display().to_string()), "{err}");
    assert!(!err.contains("/usr/share"), "the system copy is not looked at: {err}");
    let err = fashion(&tmp.join("absent")).expect_error();
    assert!(err.contains("not found"), "{err}");
    let (images, _) = idx::file_names(Split::Train);
    fs::create_dir_all(empty.join(images)).unwrap();
    let err = fashion(&empty).expect_error();
    assert!(err.contains("is a directory"), "{err}");

    cifar_data(tmp.path());
    let r = run(train_cmd(tmp.path(), &out, &[])).expect_ok();
    assert!(r.stderr.contains("data_batch_1.bin") && r.stderr.contains("test_batch.bin"), "{}", r.dump());
}

/// Items 3 and 14: JPEG images are read; a bad image (here one claiming 100000 x 100000 pixels)
/// is reported and the others are still classified; the exit code says something failed.
#[test]
fn predict_reads_jpeg_and_goes_on_past_a_bad_image() {
    let tmp = TempDir::new("predict-jpeg");
    cifar_data(tmp.path());
    let ckpt = trained_checkpoint(tmp.path(), &tmp.join("run"));
    let rgb: Vec<u8> = (0..40 * 30 * 3).map(|i| (i * 7 % 256) as u8).collect();
    let mut jpeg = Vec::new();
    jpeg_encoder::Encoder::new(&mut jpeg, 90).encode(&rgb, 40, 30, jpeg_encoder::ColorType::Rgb).unwrap();
    let photo = tmp.join("photo.jpg");
    fs::write(&photo, &jpeg).unwrap();
    let huge = tmp.join("huge.png");
    fs::write(&huge, huge_header_png_of(100_000)).unwrap();
    let r = run(vit().arg("predict").arg(&ckpt).arg(&huge).arg(&photo));
    assert_eq!(r.code, Some(1), "{}", r.dump());
    assert!(r.stderr.contains("huge.png") && r.stderr.contains("100000 x 100000"), "{}", r.dump());
    assert!(r.stderr.contains("1 of 2 images could not be read"), "{}", r.dump());
    let line = r
        .stdout
        .lines()
        .find(|l| l.starts_with(&photo.display().to_string()))
        .unwrap_or_else(|| panic!("{}", r.dump()));
    assert_eq!(predictions(line).len(), 3, "{line}");
}

/// An edit of a checkpoint's tensors and metadata.
type Edit = dyn Fn(&mut Vec<(String, autograd::Tensor<f32>)>, &mut std::collections::BTreeMap<String, String>);

/// Item 4: a checkpoint whose metadata claims a huge model, or whose shapes claim one through a
/// zero-sized tensor, is refused before the model is allocated; item 13: a bad dataset name in
/// the metadata says it came from the checkpoint, and a model with NaN weights is refused
/// instead of scoring 100% top-5.
#[test]
fn lying_and_broken_checkpoints_are_refused_before_allocating() {
    let tmp = TempDir::new("ckpt-lies");
    cifar_data(tmp.path());
    let ckpt = trained_checkpoint(tmp.path(), &tmp.join("run"));
    let image = tmp.join("img.png");
    fs::write(&image, png_bytes(32, 32, png::ColorType::Rgb)).unwrap();
    let source = Checkpoint::open(&ckpt).unwrap();
    let names = source.names().to_vec();
    let tensors: Vec<(String, autograd::Tensor<f32>)> =
        names.iter().map(|n| (n.clone(), source.tensor(n).unwrap())).collect();
    let write = |path: &Path, edit: &Edit| {
        let (mut t, mut m) = (tensors.clone(), source.metadata().clone());
        edit(&mut t, &mut m);
        let refs: Vec<(&str, &autograd::Tensor<f32>)> = t.iter().map(|(n, v)| (n.as_str(), v)).collect();
        vit::checkpoint::write_tensors(path, &refs, &m).unwrap();
    };
    let eval_and_predict = |path: &Path| {
        let e = run(vit().arg("eval").arg(path).arg("--data-dir").arg(tmp.path())).expect_error();
        let p = run(vit().arg("predict").arg(path).arg(&image)).expect_error();
        (e, p)
    };

    let big = tmp.join("big.safetensors");
    write(&big, &|_, m| {
        let mut c = vit::checkpoint::config_from_json(&m["vit.config"]).unwrap();
        (c.dim, c.depth, c.heads, c.mlp_dim) = (16384, 64, 16, 65536);
        m.insert("vit.config".into(), vit::checkpoint::config_to_json(&c));
    });
    for err in <[String; 2]>::from(eval_and_predict(&big)) {
        assert!(err.contains("big.safetensors") && err.contains("parameters"), "{err}");
    }

    let zero = tmp.join("zero.safetensors");
    write(&zero, &|t, m| {
        m.remove("vit.config");
        let fc1 = t.iter_mut().find(|(n, _)| n == "blocks.0.mlp.fc1.weight").unwrap();
        fc1.1 = autograd::Tensor::zeros(&[1_000_000_000, 0]);
    });
    let err = run(vit().arg("predict").arg(&zero).arg(&image).args(["--heads", "2"])).expect_error();
    assert!(err.contains("zero.safetensors") && err.contains("1000000000"), "{err}");

    let named = tmp.join("named.safetensors");
    write(&named, &|_, m| {
        m.insert("vit.dataset".into(), "imagenet".into());
    });
    let err = run(vit().arg("eval").arg(&named).arg("--data-dir").arg(tmp.path())).expect_error();
    assert!(err.contains("named.safetensors") && err.contains("vit.dataset") && err.contains("imagenet"), "{err}");

    let nan = tmp.join("nan.safetensors");
    write(&nan, &|t, _| {
        for (n, v) in t.iter_mut().filter(|(n, _)| !n.starts_with("optim.")) {
            let _ = n;
            *v = autograd::Tensor::from_vec(vec![f32::NAN; v.numel()], v.shape());
        }
    });
    for err in <[String; 2]>::from(eval_and_predict(&nan)) {
        assert!(err.contains("nan.safetensors") && err.contains("non-finite"), "{err}");
    }
}

/// Item 14: a CIFAR-10 data dir made for a download that failed is removed again.
#[test]
fn a_failed_download_leaves_no_data_dir() {
    let tmp = TempDir::new("download-nodir");
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/{CIFAR10_ARCHIVE}");
    let data_dir = tmp.join("data");
    run(train_cmd(&data_dir, &tmp.join("run"), &[]).env(URL_ENV, &url)).expect_error();
    assert!(!data_dir.exists(), "{} was left behind", data_dir.display());
}

/// `--device`: a bad name is a usage error; a GPU that cannot be used (a build without the
/// `cuda` feature, or no GPU on this machine) is an error naming why, before any work; `auto`
/// says what it chose; `--tf32` on the CPU is refused.
#[test]
fn device_flags_choose_or_refuse_clearly() {
    let tmp = TempDir::new("device-flags");
    let missing = tmp.path().join("missing.safetensors");
    let bad = run(vit().args(["eval", "--device", "tpu"]).arg(&missing));
    assert_eq!(bad.code, Some(2), "a usage error:\n{}", bad.dump());
    assert!(bad.stderr.contains("expected auto, cpu, cuda or cuda:N"), "{}", bad.dump());

    let err = run(vit().args(["eval", "--device", "cuda:1"]).arg(&missing)).expect_error();
    assert!(err.contains("device: cuda:1"), "{err}");
    #[cfg(not(feature = "cuda"))]
    assert!(err.contains("--features cuda"), "{err}");
    // Refused before the checkpoint is even looked at.
    assert!(!err.contains("missing.safetensors"), "{err}");

    // auto: the CPU here (no GPU path, or no GPU), said so; then the command runs (and fails
    // on the missing checkpoint).
    let auto = run(vit().args(["eval", "--device", "auto"]).arg(&missing));
    if auto.stderr.contains("device: cpu (auto:") {
        assert!(auto.expect_error().contains("missing.safetensors"));
    } else {
        println!("skipped: a GPU is present; auto chose it: {}", auto.stderr.lines().next().unwrap_or(""));
    }

    let tf32 = run(vit().args(["eval", "--tf32"]).arg(&missing)).expect_error();
    assert!(tf32.contains("--tf32") && tf32.contains("cpu"), "{tf32}");
}
