//! CIFAR-10 and CIFAR-100, binary version (<https://www.cs.toronto.edu/~kriz/cifar.html>).
//!
//! A batch file is a plain sequence of fixed-size records, no header:
//! - CIFAR-10: 1 label byte (0..=9), then 3072 pixel bytes;
//! - CIFAR-100: 1 coarse label byte (0..=19), 1 fine label byte (0..=99), then 3072 pixel bytes.
//!
//! The 3072 bytes are the red plane, then green, then blue, each 32 x 32 row-major: already the
//! CHW layout of a [`Dataset`] image, so loading is one copy per record. Because there is no
//! header, the only integrity checks available are the file size (a whole number of records)
//! and the label ranges; both are made, and a failure names the file and the offending record.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::{Dataset, DatasetKind, ImageShape, Split};
use crate::{Error, Result};

/// Directory the official CIFAR-10 archive unpacks to.
pub const CIFAR10_DIR: &str = "cifar-10-batches-bin";
/// Directory the official CIFAR-100 archive unpacks to.
pub const CIFAR100_DIR: &str = "cifar-100-binary";
/// Pixel bytes per image: 3 x 32 x 32.
pub const IMAGE_BYTES: usize = 3 * 32 * 32;
/// Bytes per CIFAR-10 record: label + pixels.
pub const CIFAR10_RECORD: usize = 1 + IMAGE_BYTES;
/// Bytes per CIFAR-100 record: coarse label + fine label + pixels.
pub const CIFAR100_RECORD: usize = 2 + IMAGE_BYTES;
/// The CIFAR-10 training batches, in order.
pub const CIFAR10_TRAIN_FILES: [&str; 5] =
    ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"];
/// The CIFAR-10 test batch.
pub const CIFAR10_TEST_FILE: &str = "test_batch.bin";
/// The CIFAR-10 class names file, one name per line.
pub const CIFAR10_META: &str = "batches.meta.txt";
/// The CIFAR-100 training file.
pub const CIFAR100_TRAIN_FILE: &str = "train.bin";
/// The CIFAR-100 test file.
pub const CIFAR100_TEST_FILE: &str = "test.bin";
/// The CIFAR-100 fine class names file, one name per line.
pub const CIFAR100_META: &str = "fine_label_names.txt";

/// CIFAR-10's classes, in label order (as in `batches.meta.txt`).
pub const CIFAR10_CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// CIFAR-100's fine classes, in label order (as in `fine_label_names.txt`).
#[rustfmt::skip]
pub const CIFAR100_CLASSES: [&str; 100] = [
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
];

/// The two record layouts.
#[derive(Clone, Copy, Debug)]
enum Format {
    Cifar10,
    Cifar100,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Cifar10 => "CIFAR-10",
            Format::Cifar100 => "CIFAR-100",
        }
    }

    fn record(self) -> usize {
        match self {
            Format::Cifar10 => CIFAR10_RECORD,
            Format::Cifar100 => CIFAR100_RECORD,
        }
    }

    fn layout(self) -> &'static str {
        match self {
            Format::Cifar10 => "1 label byte + 3072 pixel bytes",
            Format::Cifar100 => "1 coarse label byte + 1 fine label byte + 3072 pixel bytes",
        }
    }
}

/// The directory holding the CIFAR-10 batches under `data_dir`: `data_dir/cifar-10-batches-bin`
/// if it exists, else `data_dir` itself if it holds a batch file, else `None`.
pub fn cifar10_dir(data_dir: &Path) -> Option<PathBuf> {
    find_dir(data_dir, CIFAR10_DIR, &[CIFAR10_TRAIN_FILES[0], CIFAR10_TEST_FILE])
}

/// The directory holding the CIFAR-100 files under `data_dir` (see [`cifar10_dir`]).
pub fn cifar100_dir(data_dir: &Path) -> Option<PathBuf> {
    find_dir(data_dir, CIFAR100_DIR, &[CIFAR100_TRAIN_FILE, CIFAR100_TEST_FILE])
}

fn find_dir(data_dir: &Path, sub: &str, markers: &[&str]) -> Option<PathBuf> {
    let nested = data_dir.join(sub);
    if nested.is_dir() {
        return Some(nested);
    }
    markers.iter().any(|m| data_dir.join(m).is_file()).then(|| data_dir.to_path_buf())
}

/// The CIFAR-10 batch files missing from `dir` (empty when complete).
pub fn cifar10_missing_files(dir: &Path) -> Vec<&'static str> {
    CIFAR10_TRAIN_FILES.iter().chain([&CIFAR10_TEST_FILE]).copied().filter(|f| !dir.join(f).is_file()).collect()
}

/// Checks that `dir` holds all six CIFAR-10 batch files, each a non-empty whole number of records,
/// without reading them (used by the downloader before moving an unpacked archive into place).
pub fn check_cifar10_dir(dir: &Path) -> Result<()> {
    let missing = cifar10_missing_files(dir);
    if !missing.is_empty() {
        return Err(Error::Data(format!(
            "{}: incomplete CIFAR-10 directory: missing {} (expected data_batch_1..5.bin and test_batch.bin)",
            dir.display(),
            missing.join(", ")
        )));
    }
    for f in CIFAR10_TRAIN_FILES.iter().chain([&CIFAR10_TEST_FILE]) {
        let path = dir.join(f);
        let len = fs::metadata(&path).map_err(|e| Error::io(&path, e))?.len();
        check_size(&path, len, Format::Cifar10)?;
    }
    Ok(())
}

/// Loads one split of CIFAR-10 from `data_dir` (see [`cifar10_dir`]). Class names come from
/// `batches.meta.txt` when present, else the built-in list.
pub fn load_cifar10(data_dir: &Path, split: Split) -> Result<Dataset> {
    let dir = cifar10_dir(data_dir).ok_or_else(|| {
        Error::Data(format!(
            "CIFAR-10 not found: expected {} holding data_batch_1..5.bin and test_batch.bin \
             (the binary version, cifar-10-binary.tar.gz); `vit train` downloads it when online",
            data_dir.join(CIFAR10_DIR).display()
        ))
    })?;
    let files: Vec<&str> = match split {
        Split::Train => CIFAR10_TRAIN_FILES.to_vec(),
        Split::Test => vec![CIFAR10_TEST_FILE],
    };
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    for f in &files {
        read_records(&dir.join(f), Format::Cifar10, &mut images, &mut labels)?;
    }
    let names = read_names(&dir.join(CIFAR10_META), DatasetKind::Cifar10)?;
    let sources = files.iter().map(|f| dir.join(f)).collect();
    Ok(Dataset::new(images, labels, ImageShape::new(3, 32, 32), names)?.with_sources(sources))
}

/// Loads one split of CIFAR-100 (fine labels) from `data_dir` (see [`cifar100_dir`]).
pub fn load_cifar100(data_dir: &Path, split: Split) -> Result<Dataset> {
    let dir = cifar100_dir(data_dir).ok_or_else(|| {
        Error::Data(format!(
            "CIFAR-100 not found: expected {} holding train.bin and test.bin \
             (the binary version, cifar-100-binary.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html)",
            data_dir.join(CIFAR100_DIR).display()
        ))
    })?;
    let file = match split {
        Split::Train => CIFAR100_TRAIN_FILE,
        Split::Test => CIFAR100_TEST_FILE,
    };
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    read_records(&dir.join(file), Format::Cifar100, &mut images, &mut labels)?;
    let names = read_names(&dir.join(CIFAR100_META), DatasetKind::Cifar100)?;
    Ok(Dataset::new(images, labels, ImageShape::new(3, 32, 32), names)?.with_sources(vec![dir.join(file)]))
}

/// Reads one CIFAR-10 batch file: (images as n x 3072 bytes, labels).
pub fn read_cifar10_bin(path: &Path) -> Result<(Vec<u8>, Vec<u8>)> {
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    read_records(path, Format::Cifar10, &mut images, &mut labels)?;
    Ok((images, labels))
}

fn check_size(path: &Path, len: u64, format: Format) -> Result<()> {
    let record = format.record() as u64;
    if len == 0 || !len.is_multiple_of(record) {
        return Err(Error::Data(format!(
            "{}: expected a whole, non-zero number of {}-byte {} records ({}), found {len} bytes \
             ({} records and {} bytes left over): the file is truncated or not a {} binary batch",
            path.display(),
            record,
            format.name(),
            format.layout(),
            len / record,
            len % record,
            format.name()
        )));
    }
    Ok(())
}

/// Appends the records of `path` to `images` and `labels` (the fine label for CIFAR-100).
fn read_records(path: &Path, format: Format, images: &mut Vec<u8>, labels: &mut Vec<u8>) -> Result<()> {
    let file = File::open(path)
        .map_err(|e| Error::Data(format!("{}: cannot open {} batch file: {e}", path.display(), format.name())))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::Data(format!(
            "{}: is a directory (or not a file), expected a {} binary batch file",
            path.display(),
            format.name()
        )));
    }
    check_size(path, meta.len(), format)?;
    // SAFETY: the map is only read, and only within this function. Mutating the file while it is
    // mapped would be undefined behaviour; dataset files are written once (by the downloader, via
    // an atomic rename) and never modified while training reads them, which is the contract here.
    // The length was checked above, and a file truncated concurrently would fault, not misread.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    parse_records(path, &map, format, images, labels)
}

/// Parses a CIFAR-10 batch file's bytes: (images as n x 3072 bytes, labels). `path` is used in
/// error messages only.
pub fn parse_cifar10(path: &Path, bytes: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    parse_records(path, bytes, Format::Cifar10, &mut images, &mut labels)?;
    Ok((images, labels))
}

/// Parses a CIFAR-100 file's bytes: (images as n x 3072 bytes, fine labels).
pub fn parse_cifar100(path: &Path, bytes: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    parse_records(path, bytes, Format::Cifar100, &mut images, &mut labels)?;
    Ok((images, labels))
}

/// Appends the records in `bytes` to `images` and `labels`, checking the size and every label.
fn parse_records(path: &Path, bytes: &[u8], format: Format, images: &mut Vec<u8>, labels: &mut Vec<u8>) -> Result<()> {
    check_size(path, bytes.len() as u64, format)?;
    let record = format.record();
    let n = bytes.len() / record;
    images.reserve(n * IMAGE_BYTES);
    labels.reserve(n);
    for (i, rec) in bytes.chunks_exact(record).enumerate() {
        let (label, pixels) = match format {
            Format::Cifar10 => {
                if rec[0] >= 10 {
                    return Err(bad_label(path, i, record, "label", rec[0], 10));
                }
                (rec[0], &rec[1..])
            }
            Format::Cifar100 => {
                if rec[0] >= 20 {
                    return Err(bad_label(path, i, record, "coarse label", rec[0], 20));
                }
                if rec[1] >= 100 {
                    return Err(bad_label(path, i, record, "fine label", rec[1], 100));
                }
                (rec[1], &rec[2..])
            }
        };
        labels.push(label);
        images.extend_from_slice(pixels);
    }
    Ok(())
}

fn bad_label(path: &Path, index: usize, record: usize, what: &str, found: u8, classes: u8) -> Error {
    Error::Data(format!(
        "{}: record {index} (byte offset {}) has {what} {found}, expected 0..={}: the file is corrupt \
         or not in this format",
        path.display(),
        index * record,
        classes - 1
    ))
}

/// Reads a names file (one class per line, blank lines ignored), or the built-in names if absent.
fn read_names(path: &Path, kind: DatasetKind) -> Result<Vec<String>> {
    if !path.exists() {
        return Ok(kind.class_names());
    }
    let text = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let names: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    if names.len() != kind.classes() {
        return Err(Error::Data(format!(
            "{}: expected {} class names, one per line, found {}",
            path.display(),
            kind.classes(),
            names.len()
        )));
    }
    Ok(names)
}

/// Writes a CIFAR-10 batch file in the exact binary format: for each image its label byte, then
/// its 3072 CHW pixel bytes. `images` holds `labels.len()` images back to back.
pub fn write_cifar10_bin(path: &Path, labels: &[u8], images: &[u8]) -> Result<()> {
    write_records(path, labels.len(), images, |w, i| w.write_all(&[labels[i]]))
}

/// Writes a CIFAR-100 batch file in the exact binary format: coarse label, fine label, pixels.
pub fn write_cifar100_bin(path: &Path, coarse: &[u8], fine: &[u8], images: &[u8]) -> Result<()> {
    assert_eq!(coarse.len(), fine.len(), "write_cifar100_bin: {} coarse vs {} fine labels", coarse.len(), fine.len());
    write_records(path, fine.len(), images, |w, i| w.write_all(&[coarse[i], fine[i]]))
}

fn write_records(
    path: &Path,
    n: usize,
    images: &[u8],
    mut write_labels: impl FnMut(&mut BufWriter<File>, usize) -> std::io::Result<()>,
) -> Result<()> {
    assert_eq!(images.len(), n * IMAGE_BYTES, "write_cifar: {n} labels need {} image bytes", n * IMAGE_BYTES);
    let file = File::create(path).map_err(|e| Error::io(path, e))?;
    let mut w = BufWriter::new(file);
    let io = |e| Error::io(path, e);
    for (i, image) in images.chunks_exact(IMAGE_BYTES).enumerate() {
        write_labels(&mut w, i).map_err(io)?;
        w.write_all(image).map_err(io)?;
    }
    w.flush().map_err(io)
}

/// A deterministic image of class `label`: a per-class colour gradient plus seeded noise, so small
/// models can tell the classes apart in tests while every byte value still occurs.
pub fn synthetic_image(label: u8, index: usize, seed: u64) -> Vec<u8> {
    let mut rng = autograd::Rng::seed(seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut img = vec![0u8; IMAGE_BYTES];
    for (ch, plane) in img.chunks_exact_mut(1024).enumerate() {
        for (p, v) in plane.iter_mut().enumerate() {
            let (y, x) = (p / 32, p % 32);
            let base = (label as usize * 25 + ch * 60 + if label.is_multiple_of(2) { x } else { y } * 4) % 256;
            *v = (base as u8).wrapping_add(rng.below(32) as u8);
        }
    }
    img
}

/// Writes a complete, format-exact CIFAR-10 directory `dir/cifar-10-batches-bin` with
/// `per_batch` records in each of the six batch files (labels cycle 0..9) and `batches.meta.txt`.
/// Returns the directory. For tests and demos of the full pipeline without the real data.
pub fn write_cifar10_tree(dir: &Path, per_batch: usize, seed: u64) -> Result<PathBuf> {
    let root = dir.join(CIFAR10_DIR);
    fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
    for (b, f) in CIFAR10_TRAIN_FILES.iter().chain([&CIFAR10_TEST_FILE]).enumerate() {
        let labels: Vec<u8> = (0..per_batch).map(|i| ((i + b) % 10) as u8).collect();
        let images: Vec<u8> =
            labels.iter().enumerate().flat_map(|(i, &l)| synthetic_image(l, b * per_batch + i, seed)).collect();
        write_cifar10_bin(&root.join(f), &labels, &images)?;
    }
    let meta = root.join(CIFAR10_META);
    let mut names = CIFAR10_CLASSES.join("\n");
    names.push_str("\n\n");
    fs::write(&meta, names).map_err(|e| Error::io(&meta, e))?;
    Ok(root)
}
