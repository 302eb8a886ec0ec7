//! Training curves and the confusion matrix: `metrics.jsonl` is read as `vit train` writes it (a
//! resumed epoch's later line wins, the time axis sums the epochs' durations), and every figure
//! is a PNG of the stated size with its numbers beside it.

mod common;
use common::TempDir;

use std::fs;
use std::path::Path;

use vit::analysis::confusion::{write_confusion, CONFUSION_SIZE};
use vit::analysis::curves::{self, CURVES_SIZE};
use vit::train::Metrics;
use vit::Error;

fn line(epoch: usize, test_acc: f64, seconds: f64) -> String {
    format!(
        "{{\"epoch\":{epoch},\"step\":{},\"lr\":1e-3,\"train_loss\":{},\"train_acc\":0.5,\"test_loss\":0.7,\"test_acc\":{test_acc},\"test_top5\":0.9,\"images_per_sec\":100.0,\"seconds\":{seconds}}}",
        epoch * 10,
        2.0 / epoch as f64
    )
}

/// The width and height of a PNG file, decoding all of it.
fn png_size(path: &Path) -> (u32, u32) {
    let decoder = png::Decoder::new(std::io::BufReader::new(fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    (info.width, info.height)
}

#[test]
fn reads_metrics_with_the_later_line_of_a_repeated_epoch_and_cumulative_time() {
    let dir = TempDir::new("curves-read");
    let text = [line(1, 0.5, 10.0), line(2, 0.6, 20.0), line(2, 0.65, 30.0), line(3, 0.7, 5.0)].join("\n");
    fs::write(dir.join("metrics.jsonl"), text + "\n").unwrap();
    let run = curves::read_run(dir.path()).unwrap();
    let epochs: Vec<f64> = run.epochs.iter().map(|e| e.epoch).collect();
    assert_eq!(epochs, [1.0, 2.0, 3.0]);
    assert_eq!(run.epochs[1].test_acc, 0.65, "the resumed epoch's later line wins");
    let elapsed: Vec<f64> = run.epochs.iter().map(|e| e.elapsed_seconds).collect();
    assert_eq!(elapsed, [10.0, 40.0, 45.0]);
    assert_eq!(run.epochs[2].train_loss, 2.0 / 3.0);
}

#[test]
fn draws_one_run_and_overlays_several() {
    let (a, b) = (TempDir::new("curves-a"), TempDir::new("curves-b"));
    fs::write(a.join("metrics.jsonl"), [line(1, 0.5, 10.0), line(2, 0.6, 10.0)].join("\n")).unwrap();
    // A single epoch still draws (its ranges are widened around the one point).
    fs::write(b.join("metrics.jsonl"), line(1, 0.4, 12.0)).unwrap();
    let path = curves::write_run_curves(a.path()).unwrap();
    assert_eq!(path, a.join("curves.png"));
    assert_eq!(png_size(&path), CURVES_SIZE);
    let out = a.join("both.png");
    let written = curves::plot_runs(&[a.path().to_path_buf(), b.path().to_path_buf()], Some(&out)).unwrap();
    assert_eq!(written, out);
    assert_eq!(png_size(&out), CURVES_SIZE);
}

#[test]
fn missing_empty_or_corrupt_metrics_are_clear_errors() {
    let dir = TempDir::new("curves-bad");
    match curves::read_run(dir.path()) {
        Err(Error::Io { path, .. }) => assert!(path.ends_with("metrics.jsonl")),
        other => panic!("expected an I/O error naming metrics.jsonl, got {other:?}"),
    }
    fs::write(dir.join("metrics.jsonl"), "\n").unwrap();
    let err = curves::read_run(dir.path()).unwrap_err().to_string();
    assert!(err.contains("no epochs"), "{err}");
    fs::write(dir.join("metrics.jsonl"), line(1, 0.5, 1.0) + "\n{\"epoch\": oops}\n").unwrap();
    let err = curves::read_run(dir.path()).unwrap_err().to_string();
    assert!(err.contains("line 2") && err.contains("not JSON"), "{err}");
    fs::write(dir.join("metrics.jsonl"), "{\"test_acc\": 0.5}\n").unwrap();
    let err = curves::read_run(dir.path()).unwrap_err().to_string();
    assert!(err.contains("line 1") && err.contains("epoch"), "{err}");
}

#[test]
fn confusion_matrix_png_and_csv() {
    let dir = TempDir::new("confusion");
    let mut m = Metrics::new(3);
    // Logits whose argmax is the prediction: (true, predicted) = (0, 0), (0, 2), (1, 1), (2, 1).
    let logits = [5.0, 0.0, 1.0, 0.0, 1.0, 5.0, 0.0, 5.0, 1.0, 1.0, 5.0, 0.0];
    m.add_batch(&logits, &[0, 0, 1, 2], 0.5);
    let names: Vec<String> = ["cat", "dog", "emu"].map(String::from).to_vec();
    let png = dir.join("confusion.png");
    write_confusion(&m, &names, &png).unwrap();
    assert_eq!(png_size(&png), CONFUSION_SIZE);
    let csv = fs::read_to_string(dir.join("confusion.csv")).unwrap();
    assert_eq!(csv, "true\\predicted,cat,dog,emu\ncat,1,0,1\ndog,0,1,0\nemu,0,1,0\n");
    // 100 classes draw too (no per-cell text).
    let big = Metrics::new(100);
    write_confusion(&big, &[], &dir.join("big.png")).unwrap();
    assert_eq!(png_size(&dir.join("big.png")), CONFUSION_SIZE);
    // An output directory that cannot exist: a clear I/O error naming the file.
    let err = write_confusion(&m, &names, &png.join("sub.png")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
}
