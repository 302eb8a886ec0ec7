//! CIFAR-10/100 binary loaders on generated files in the exact format, and on corrupt ones.

mod common;
use common::{data_err, TempDir};

use std::fs;
use std::path::Path;

use vit::data::cifar::{self, CIFAR100_RECORD, CIFAR10_RECORD, IMAGE_BYTES};
use vit::data::{self, Dataset, DatasetKind, ImageShape, Split};

#[test]
fn cifar10_tree_round_trips_every_byte_and_label() {
    let tmp = TempDir::new("roundtrip");
    let root = cifar::write_cifar10_tree(tmp.path(), 7, 42).unwrap();
    assert_eq!(root, tmp.path().join("cifar-10-batches-bin"));

    let train = data::load(DatasetKind::Cifar10, tmp.path(), Split::Train).unwrap();
    assert_eq!(train.len(), 35);
    assert_eq!(train.shape(), ImageShape::new(3, 32, 32));
    assert_eq!(train.classes(), 10);
    assert_eq!(train.class_names()[0], "airplane");
    assert_eq!(train.class_names()[9], "truck");
    assert_eq!(train.normalization(), &DatasetKind::Cifar10.normalization());
    for i in 0..35 {
        let (batch, j) = (i / 7, i % 7);
        let label = ((j + batch) % 10) as u8;
        assert_eq!(train.label(i), label as usize, "label of image {i}");
        assert_eq!(train.image(i), cifar::synthetic_image(label, i, 42).as_slice(), "pixels of image {i}");
    }
    let test = data::load(DatasetKind::Cifar10, tmp.path(), Split::Test).unwrap();
    assert_eq!(test.len(), 7);
    assert_eq!(test.label(0), 5); // the test batch is the sixth file: labels start at 5
    assert_eq!(test.image(0), cifar::synthetic_image(5, 35, 42).as_slice());
}

#[test]
fn cifar10_record_layout_is_label_then_red_green_blue_planes() {
    let tmp = TempDir::new("layout");
    let dir = tmp.path().join("cifar-10-batches-bin");
    fs::create_dir_all(&dir).unwrap();
    // One record, written byte by byte without the crate's writer: label 3, then R, G, B planes
    // where pixel (y, x) of plane c holds (c * 80 + y + x) as a byte.
    let mut rec = vec![3u8];
    for c in 0..3 {
        for y in 0..32 {
            for x in 0..32 {
                rec.push((c * 80 + y + x) as u8);
            }
        }
    }
    assert_eq!(rec.len(), CIFAR10_RECORD);
    fs::write(dir.join("test_batch.bin"), &rec).unwrap();
    let test = cifar::load_cifar10(tmp.path(), Split::Test).unwrap();
    assert_eq!(test.len(), 1);
    assert_eq!(test.label(0), 3);
    let img = test.image(0);
    assert_eq!(img[0], 0); // R (0, 0)
    assert_eq!(img[5 * 32 + 7], 12); // R (5, 7)
    assert_eq!(img[1024 + 31 * 32 + 31], 80 + 62); // G (31, 31)
    assert_eq!(img[2048 + 32 + 2], 160 + 3); // B (1, 2)
                                             // And the crate's writer produces the same bytes.
    let other = tmp.path().join("rewritten.bin");
    cifar::write_cifar10_bin(&other, &[3], img).unwrap();
    assert_eq!(fs::read(&other).unwrap(), rec);
}

#[test]
fn cifar10_is_also_found_when_the_data_dir_is_the_batches_dir() {
    let tmp = TempDir::new("direct");
    let root = cifar::write_cifar10_tree(tmp.path(), 3, 1).unwrap();
    let test = data::load(DatasetKind::Cifar10, &root, Split::Test).unwrap();
    assert_eq!(test.len(), 3);
}

#[test]
fn cifar10_without_meta_file_uses_builtin_names() {
    let tmp = TempDir::new("nometa");
    let root = cifar::write_cifar10_tree(tmp.path(), 2, 1).unwrap();
    fs::remove_file(root.join("batches.meta.txt")).unwrap();
    let test = data::load(DatasetKind::Cifar10, tmp.path(), Split::Test).unwrap();
    assert_eq!(test.class_names(), DatasetKind::Cifar10.class_names().as_slice());
}

#[test]
fn cifar10_meta_file_with_wrong_count_is_an_error() {
    let tmp = TempDir::new("badmeta");
    let root = cifar::write_cifar10_tree(tmp.path(), 2, 1).unwrap();
    fs::write(root.join("batches.meta.txt"), "cat\ndog\n").unwrap();
    let msg = data_err(data::load(DatasetKind::Cifar10, tmp.path(), Split::Test));
    assert!(
        msg.contains("batches.meta.txt") && msg.contains("expected 10 class names") && msg.contains("found 2"),
        "{msg}"
    );
}

#[test]
fn truncated_cifar10_batch_names_the_file_and_the_sizes() {
    let tmp = TempDir::new("truncated");
    let root = cifar::write_cifar10_tree(tmp.path(), 4, 1).unwrap();
    let path = root.join("data_batch_2.bin");
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
    let msg = data_err(data::load(DatasetKind::Cifar10, tmp.path(), Split::Train));
    let found = 4 * CIFAR10_RECORD - 5;
    assert!(msg.contains("data_batch_2.bin"), "{msg}");
    assert!(msg.contains("3073-byte CIFAR-10 records"), "{msg}");
    assert!(msg.contains(&format!("found {found} bytes")), "{msg}");
    assert!(msg.contains("truncated"), "{msg}");
}

#[test]
fn empty_cifar10_batch_is_an_error() {
    let tmp = TempDir::new("empty");
    let root = cifar::write_cifar10_tree(tmp.path(), 2, 1).unwrap();
    fs::write(root.join("test_batch.bin"), b"").unwrap();
    let msg = data_err(data::load(DatasetKind::Cifar10, tmp.path(), Split::Test));
    assert!(msg.contains("test_batch.bin") && msg.contains("found 0 bytes"), "{msg}");
}

#[test]
fn cifar10_label_out_of_range_names_the_record() {
    let tmp = TempDir::new("label");
    let root = cifar::write_cifar10_tree(tmp.path(), 5, 1).unwrap();
    let path = root.join("test_batch.bin");
    let mut bytes = fs::read(&path).unwrap();
    bytes[3 * CIFAR10_RECORD] = 10;
    fs::write(&path, &bytes).unwrap();
    let msg = data_err(data::load(DatasetKind::Cifar10, tmp.path(), Split::Test));
    assert!(msg.contains("test_batch.bin") && msg.contains("record 3") && msg.contains("label 10"), "{msg}");
    assert!(msg.contains("expected 0..=9"), "{msg}");
}

#[test]
fn missing_cifar10_batch_names_the_missing_file() {
    let tmp = TempDir::new("missing");
    let root = cifar::write_cifar10_tree(tmp.path(), 2, 1).unwrap();
    fs::remove_file(root.join("data_batch_3.bin")).unwrap();
    let msg = data_err(data::load(DatasetKind::Cifar10, tmp.path(), Split::Train));
    assert!(msg.contains("data_batch_3.bin"), "{msg}");
    // The test split does not need it.
    assert_eq!(data::load(DatasetKind::Cifar10, tmp.path(), Split::Test).unwrap().len(), 2);
    assert_eq!(cifar::cifar10_missing_files(&root), vec!["data_batch_3.bin"]);
    assert!(cifar::check_cifar10_dir(&root).is_err());
}

#[test]
fn absent_cifar10_says_where_it_looked() {
    let tmp = TempDir::new("absent");
    let msg = data_err(data::load(DatasetKind::Cifar10, tmp.path(), Split::Train));
    assert!(msg.contains("CIFAR-10 not found") && msg.contains("cifar-10-batches-bin"), "{msg}");
}

fn write_cifar100(dir: &Path, n: usize) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let coarse: Vec<u8> = (0..n).map(|i| (i % 20) as u8).collect();
    let fine: Vec<u8> = (0..n).map(|i| ((i * 7) % 100) as u8).collect();
    let images: Vec<u8> = (0..n * IMAGE_BYTES).map(|i| (i * 31 % 251) as u8).collect();
    cifar::write_cifar100_bin(&dir.join("train.bin"), &coarse, &fine, &images).unwrap();
    cifar::write_cifar100_bin(&dir.join("test.bin"), &coarse[..2], &fine[..2], &images[..2 * IMAGE_BYTES]).unwrap();
    (coarse, fine, images)
}

#[test]
fn cifar100_reads_fine_labels() {
    let tmp = TempDir::new("c100");
    let dir = tmp.path().join("cifar-100-binary");
    fs::create_dir_all(&dir).unwrap();
    let (_, fine, images) = write_cifar100(&dir, 23);
    let train = data::load(DatasetKind::Cifar100, tmp.path(), Split::Train).unwrap();
    assert_eq!(train.len(), 23);
    assert_eq!(train.classes(), 100);
    assert_eq!(train.class_names()[99], "worm");
    assert_eq!(train.images(), images.as_slice());
    assert_eq!(train.labels(), fine.as_slice());
    assert_eq!(train.normalization(), &DatasetKind::Cifar100.normalization());
    let test = data::load(DatasetKind::Cifar100, tmp.path(), Split::Test).unwrap();
    assert_eq!(test.len(), 2);
}

#[test]
fn cifar100_corrupt_files_are_rejected() {
    let tmp = TempDir::new("c100bad");
    let dir = tmp.path().join("cifar-100-binary");
    fs::create_dir_all(&dir).unwrap();
    write_cifar100(&dir, 4);
    let path = dir.join("train.bin");
    let good = fs::read(&path).unwrap();

    // A CIFAR-10 sized file is not a whole number of CIFAR-100 records.
    fs::write(&path, &good[..3 * CIFAR10_RECORD]).unwrap();
    let msg = data_err(data::load(DatasetKind::Cifar100, tmp.path(), Split::Train));
    assert!(msg.contains("3074-byte CIFAR-100 records"), "{msg}");

    let mut bad = good.clone();
    bad[2 * CIFAR100_RECORD] = 20;
    fs::write(&path, &bad).unwrap();
    let msg = data_err(data::load(DatasetKind::Cifar100, tmp.path(), Split::Train));
    assert!(msg.contains("record 2") && msg.contains("coarse label 20"), "{msg}");

    let mut bad = good.clone();
    bad[CIFAR100_RECORD + 1] = 100;
    fs::write(&path, &bad).unwrap();
    let msg = data_err(data::load(DatasetKind::Cifar100, tmp.path(), Split::Train));
    assert!(msg.contains("record 1") && msg.contains("fine label 100") && msg.contains("0..=99"), "{msg}");
}

#[test]
fn dataset_kind_names_parse_and_unknown_ones_list_the_choices() {
    for kind in DatasetKind::ALL {
        assert_eq!(kind.name().parse::<DatasetKind>().unwrap(), kind);
        assert_eq!(kind.class_names().len(), kind.classes());
        assert_eq!(kind.normalization().mean.len(), kind.shape().c);
    }
    assert_eq!("CIFAR-10".parse::<DatasetKind>().unwrap(), DatasetKind::Cifar10);
    assert_eq!("fashion_mnist".parse::<DatasetKind>().unwrap(), DatasetKind::FashionMnist);
    let err = "imagenet".parse::<DatasetKind>().unwrap_err().to_string();
    assert!(err.contains("imagenet") && err.contains("fashion-mnist"), "{err}");
}

#[test]
fn dataset_checks_its_parts_and_subsets_keep_metadata() {
    let shape = ImageShape::new(1, 2, 2);
    let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let msg = data_err(Dataset::new(vec![0; 7], vec![0, 1], shape, names.clone()));
    assert!(msg.contains("need 8 image bytes") && msg.contains("found 7"), "{msg}");
    let msg = data_err(Dataset::new(vec![0; 8], vec![0, 3], shape, names.clone()));
    assert!(msg.contains("label 3 of image 1"), "{msg}");

    let images: Vec<u8> = (0..12).collect();
    let ds = Dataset::new(images, vec![0, 1, 2], shape, names).unwrap();
    let sub = ds.subset(&[2, 0]).unwrap();
    assert_eq!(sub.images(), &[8, 9, 10, 11, 0, 1, 2, 3]);
    assert_eq!(sub.labels(), &[2, 0]);
    assert_eq!(sub.class_names(), ds.class_names());
    assert!(ds.subset(&[3]).is_err());
    assert_eq!(ds.take(2).labels(), &[0, 1]);
    assert_eq!(ds.take(10).len(), 3);
    assert_eq!(ds.class_counts(), vec![1, 1, 1]);

    // Channel statistics of bytes 0 and 255 in equal numbers: mean 0.5, std 0.5.
    let ds = Dataset::new(vec![0, 255, 0, 255], vec![0], shape, vec!["x".into()]).unwrap();
    let stats = ds.channel_stats();
    assert!((stats.mean[0] - 0.5).abs() < 1e-6 && (stats.std[0] - 0.5).abs() < 1e-6, "{stats:?}");
}

/// Issue 9, item 13: a directory where a batch file should be is called that, not a truncated file.
#[test]
fn a_directory_in_place_of_a_batch_is_named_as_such() {
    let tmp = TempDir::new("cifar-dir");
    let root = cifar::write_cifar10_tree(tmp.path(), 2, 1).unwrap();
    fs::remove_file(root.join("test_batch.bin")).unwrap();
    fs::create_dir(root.join("test_batch.bin")).unwrap();
    let msg = data_err(data::load(DatasetKind::Cifar10, tmp.path(), Split::Test));
    assert!(msg.contains("is a directory") && !msg.contains("truncated"), "{msg}");
}
