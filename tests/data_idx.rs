//! IDX loaders (MNIST, Fashion-MNIST) on generated files, raw and gzipped, on corrupt ones, and
//! on the real Fashion-MNIST from the Debian package when it is installed.

mod common;
use common::{data_err, TempDir};

use std::fs;
use std::path::Path;

use vit::data::idx::{self, SYSTEM_FASHION_MNIST_DIR};
use vit::data::{self, DatasetKind, ImageShape, Split};

/// Writes a split of `n` images of `rows x cols` (pixel p of image i = (i * 13 + p) mod 256,
/// label i mod 10) into `dir`; returns (pixels, labels).
fn write_split(dir: &Path, split: Split, n: usize, rows: usize, cols: usize, gzip: bool) -> (Vec<u8>, Vec<u8>) {
    let (images_name, labels_name) = idx::file_names(split);
    let ext = if gzip { ".gz" } else { "" };
    let pixels: Vec<u8> = (0..n).flat_map(|i| (0..rows * cols).map(move |p| ((i * 13 + p) % 256) as u8)).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    idx::write_idx_images(&dir.join(format!("{images_name}{ext}")), n, rows, cols, &pixels, gzip).unwrap();
    idx::write_idx_labels(&dir.join(format!("{labels_name}{ext}")), &labels, gzip).unwrap();
    (pixels, labels)
}

#[test]
fn raw_and_gzipped_idx_round_trip() {
    for gzip in [false, true] {
        let tmp = TempDir::new("roundtrip");
        let (pixels, labels) = write_split(tmp.path(), Split::Train, 12, 5, 7, gzip);
        write_split(tmp.path(), Split::Test, 3, 5, 7, gzip);
        let train = data::load(DatasetKind::Mnist, tmp.path(), Split::Train).unwrap();
        assert_eq!(train.len(), 12);
        assert_eq!(train.shape(), ImageShape::new(1, 5, 7));
        assert_eq!(train.images(), pixels.as_slice());
        assert_eq!(train.labels(), labels.as_slice());
        assert_eq!(train.class_names()[7], "7");
        assert_eq!(train.normalization(), &DatasetKind::Mnist.normalization());
        assert_eq!(data::load(DatasetKind::Mnist, tmp.path(), Split::Test).unwrap().len(), 3);
    }
}

#[test]
fn idx_header_is_big_endian_magic_then_dims() {
    let tmp = TempDir::new("header");
    let path = tmp.path().join("x");
    idx::write_idx_images(&path, 2, 3, 4, &[9; 24], false).unwrap();
    let bytes = fs::read(&path).unwrap();
    assert_eq!(&bytes[..16], &[0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4]);
    assert_eq!(bytes.len(), 16 + 24);
    idx::write_idx_labels(&path, &[1, 2, 3], false).unwrap();
    assert_eq!(fs::read(&path).unwrap(), vec![0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3]);
}

#[test]
fn gzip_is_detected_by_content_not_by_name() {
    let tmp = TempDir::new("sniff");
    let (images_name, labels_name) = idx::file_names(Split::Test);
    let labels = [1u8, 2, 3];
    idx::write_idx_images(&tmp.path().join(images_name), 3, 2, 2, &[7; 12], true).unwrap();
    idx::write_idx_labels(&tmp.path().join(labels_name), &labels, true).unwrap();
    assert_eq!(fs::read(tmp.path().join(images_name)).unwrap()[..2], [0x1f, 0x8b]);
    let ds = data::load(DatasetKind::FashionMnist, tmp.path(), Split::Test).unwrap();
    assert_eq!(ds.labels(), &labels);
    assert_eq!(ds.class_names()[9], "Ankle boot");
}

#[test]
fn the_fashion_mnist_subdir_is_preferred_over_the_data_dir() {
    let tmp = TempDir::new("order");
    write_split(tmp.path(), Split::Test, 4, 2, 2, false);
    let sub = tmp.path().join("fashion-mnist");
    fs::create_dir_all(&sub).unwrap();
    write_split(&sub, Split::Test, 6, 2, 2, true);
    assert_eq!(data::load(DatasetKind::FashionMnist, tmp.path(), Split::Test).unwrap().len(), 6);
    // MNIST looks in data_dir/mnist then data_dir, never in the fashion-mnist subdir.
    assert_eq!(data::load(DatasetKind::Mnist, tmp.path(), Split::Test).unwrap().len(), 4);
    // The system copy is looked at only when no data dir is given.
    let dirs = idx::search_dirs(DatasetKind::FashionMnist, None);
    assert_eq!(dirs.last().unwrap(), Path::new(SYSTEM_FASHION_MNIST_DIR));
    let dirs = idx::search_dirs(DatasetKind::FashionMnist, Some(tmp.path()));
    assert!(!dirs.iter().any(|d| d == Path::new(SYSTEM_FASHION_MNIST_DIR)), "{dirs:?}");
}

#[test]
fn wrong_magic_reports_expected_and_found() {
    let tmp = TempDir::new("magic");
    write_split(tmp.path(), Split::Train, 4, 2, 2, false);
    let (images_name, labels_name) = idx::file_names(Split::Train);
    // Swap the files: the images file now has the labels' magic.
    fs::copy(tmp.path().join(labels_name), tmp.path().join(images_name)).unwrap();
    let msg = data_err(data::load(DatasetKind::Mnist, tmp.path(), Split::Train));
    assert!(msg.contains(images_name), "{msg}");
    assert!(msg.contains("expected IDX magic 0x00000803") && msg.contains("found 0x00000801"), "{msg}");
}

#[test]
fn truncated_and_overlong_files_are_rejected() {
    let tmp = TempDir::new("truncated");
    write_split(tmp.path(), Split::Train, 4, 3, 3, false);
    let path = tmp.path().join(idx::file_names(Split::Train).0);
    let good = fs::read(&path).unwrap();

    fs::write(&path, &good[..good.len() - 1]).unwrap();
    let msg = data_err(data::load(DatasetKind::Mnist, tmp.path(), Split::Train));
    assert!(msg.contains("need 36 bytes") && msg.contains("found 35") && msg.contains("truncated"), "{msg}");

    let mut long = good.clone();
    long.push(0);
    fs::write(&path, &long).unwrap();
    let msg = data_err(data::load(DatasetKind::Mnist, tmp.path(), Split::Train));
    assert!(msg.contains("found 37") && msg.contains("longer than its header says"), "{msg}");

    fs::write(&path, &good[..10]).unwrap();
    let msg = data_err(data::load(DatasetKind::Mnist, tmp.path(), Split::Train));
    assert!(msg.contains("header of 16 bytes") && msg.contains("file of 10 bytes"), "{msg}");
}

#[test]
fn truncated_gzip_stream_is_rejected() {
    let tmp = TempDir::new("gz");
    write_split(tmp.path(), Split::Train, 50, 8, 8, true);
    let path = tmp.path().join(format!("{}.gz", idx::file_names(Split::Train).0));
    let good = fs::read(&path).unwrap();
    fs::write(&path, &good[..good.len() / 2]).unwrap();
    let msg = data_err(data::load(DatasetKind::Mnist, tmp.path(), Split::Train));
    assert!(msg.contains("gzip stream is corrupt or truncated"), "{msg}");
}

#[test]
fn label_out_of_range_is_rejected() {
    let tmp = TempDir::new("label");
    write_split(tmp.path(), Split::Test, 4, 2, 2, false);
    idx::write_idx_labels(&tmp.path().join(idx::file_names(Split::Test).1), &[0, 1, 10, 2], false).unwrap();
    let msg = data_err(data::load(DatasetKind::Mnist, tmp.path(), Split::Test));
    assert!(msg.contains("label 2 is 10") && msg.contains("expected 0..=9"), "{msg}");
}

#[test]
fn image_and_label_counts_must_agree() {
    let tmp = TempDir::new("count");
    write_split(tmp.path(), Split::Test, 4, 2, 2, false);
    idx::write_idx_labels(&tmp.path().join(idx::file_names(Split::Test).1), &[0, 1, 2], false).unwrap();
    let msg = data_err(data::load(DatasetKind::Mnist, tmp.path(), Split::Test));
    assert!(msg.contains("holds 4 images") && msg.contains("holds 3 labels"), "{msg}");
}

#[test]
fn missing_mnist_lists_where_it_looked() {
    let tmp = TempDir::new("missing");
    let msg = data_err(data::load(DatasetKind::Mnist, tmp.path(), Split::Train));
    assert!(msg.contains("train-images-idx3-ubyte[.gz]") && msg.contains(&tmp.path().display().to_string()), "{msg}");
}

/// The real Fashion-MNIST, as installed by `apt-get install dataset-fashion-mnist`. Skipped with
/// a message when absent, except under CI=true, where the data is part of the environment.
#[test]
fn real_fashion_mnist_from_the_debian_package() {
    let system = Path::new(SYSTEM_FASHION_MNIST_DIR);
    if !system.join("train-images-idx3-ubyte.gz").is_file() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "CI=true but Fashion-MNIST is missing from {}: run `apt-get install dataset-fashion-mnist`",
                system.display()
            );
        }
        eprintln!(
            "skipped: Fashion-MNIST not installed in {} (apt-get install dataset-fashion-mnist)",
            system.display()
        );
        return;
    }
    // No data dir given (and none at the default `data/`): the loader falls through to the system
    // directory, and says so.
    let train = data::load_from(DatasetKind::FashionMnist, None, Split::Train).unwrap();
    let test = data::load_from(DatasetKind::FashionMnist, None, Split::Test).unwrap();
    assert!(train.sources().iter().all(|p| p.starts_with(system)), "{:?}", train.sources());
    assert_eq!((train.len(), test.len()), (60_000, 10_000));
    assert_eq!(train.shape(), ImageShape::new(1, 28, 28));
    assert_eq!(train.class_counts(), vec![6000; 10]);
    assert_eq!(test.class_counts(), vec![1000; 10]);
    // The built-in normalisation constants are the training split's statistics.
    let stats = train.channel_stats();
    let expected = DatasetKind::FashionMnist.normalization();
    assert!((stats.mean[0] - expected.mean[0]).abs() < 1e-3, "mean {} vs {}", stats.mean[0], expected.mean[0]);
    assert!((stats.std[0] - expected.std[0]).abs() < 1e-3, "std {} vs {}", stats.std[0], expected.std[0]);
}
