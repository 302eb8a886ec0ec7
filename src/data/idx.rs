//! IDX files: MNIST and Fashion-MNIST (<http://yann.lecun.com/exdb/mnist/>).
//!
//! An IDX file is a 4-byte magic number `00 00 tt nd` (tt: element type, 0x08 = u8; nd: number of
//! dimensions), then `nd` big-endian u32 dimensions, then the elements row-major. Images are
//! magic 0x00000803 with dims (n, rows, cols); labels 0x00000801 with dims (n). Files are often
//! gzipped: compression is detected from the content (gzip's 1f 8b), not the name, so a renamed
//! file still reads.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

use super::{Dataset, DatasetKind, ImageShape, Split};
use crate::{Error, Result};

/// Where the Debian package `dataset-fashion-mnist` installs the four gzipped IDX files
/// (`dpkg -L dataset-fashion-mnist`).
pub const SYSTEM_FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";
/// Magic number of an IDX file of u8 with 3 dimensions (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of u8 with 1 dimension (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;
/// The gzip magic bytes.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// MNIST's classes, the digits.
pub const MNIST_CLASSES: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
/// Fashion-MNIST's classes, in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// The (images, labels) file names of a split, without the optional `.gz`.
pub fn file_names(split: Split) -> (&'static str, &'static str) {
    match split {
        Split::Train => ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        Split::Test => ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }
}

/// The directories searched for `kind`, in order.
pub fn search_dirs(kind: DatasetKind, data_dir: &Path) -> Vec<PathBuf> {
    match kind {
        DatasetKind::Mnist => vec![data_dir.join("mnist"), data_dir.to_path_buf()],
        DatasetKind::FashionMnist => {
            vec![data_dir.join("fashion-mnist"), data_dir.to_path_buf(), PathBuf::from(SYSTEM_FASHION_MNIST_DIR)]
        }
        _ => panic!("idx::search_dirs: {kind} is not an IDX dataset"),
    }
}

/// `dir/name`, or `dir/name.gz`, whichever exists.
fn existing(dir: &Path, name: &str) -> Option<PathBuf> {
    [dir.join(name), dir.join(format!("{name}.gz"))].into_iter().find(|p| p.is_file())
}

/// The (images, labels) files of a split: the first searched directory that holds both.
pub fn find_files(kind: DatasetKind, data_dir: &Path, split: Split) -> Result<(PathBuf, PathBuf)> {
    let (images, labels) = file_names(split);
    let dirs = search_dirs(kind, data_dir);
    for dir in &dirs {
        if let (Some(i), Some(l)) = (existing(dir, images), existing(dir, labels)) {
            return Ok((i, l));
        }
    }
    let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    let hint = if kind == DatasetKind::FashionMnist {
        "; install them with `apt-get install dataset-fashion-mnist` or copy them into the data dir"
    } else {
        "; copy them into the data dir"
    };
    Err(Error::Data(format!(
        "{kind} {split} split not found: expected {images}[.gz] and {labels}[.gz] in one of {}{hint}",
        looked.join(", ")
    )))
}

/// Loads one split of MNIST or Fashion-MNIST (see [`search_dirs`] for where it looks).
pub fn load(kind: DatasetKind, data_dir: &Path, split: Split) -> Result<Dataset> {
    let (images, labels) = find_files(kind, data_dir, split)?;
    load_files(&images, &labels, kind.class_names())
}

/// Loads an images file and a labels file, checking that they describe the same number of items
/// and that every label names one of `class_names`.
pub fn load_files(images_path: &Path, labels_path: &Path, class_names: Vec<String>) -> Result<Dataset> {
    let image_bytes = read_idx(images_path)?;
    let (n, rows, cols) = parse_images(images_path, &image_bytes)?;
    let label_bytes = read_idx(labels_path)?;
    let labels = parse_labels(labels_path, &label_bytes)?;
    if labels.len() != n {
        return Err(Error::Data(format!(
            "{} holds {n} images but {} holds {} labels: expected the same count (files from different splits?)",
            images_path.display(),
            labels_path.display(),
            labels.len()
        )));
    }
    if let Some((i, &l)) = labels.iter().enumerate().find(|&(_, &l)| l as usize >= class_names.len()) {
        return Err(Error::Data(format!(
            "{}: label {i} is {l}, expected 0..={}",
            labels_path.display(),
            class_names.len() - 1
        )));
    }
    let header = 4 + 4 * 3;
    let pixels = image_bytes[header..].to_vec();
    let labels = labels.to_vec();
    Dataset::new(pixels, labels, ImageShape::new(1, rows, cols), class_names)
}

/// The contents of an IDX file, gunzipped if it starts with the gzip magic.
pub fn read_idx(path: &Path) -> Result<Vec<u8>> {
    let raw = fs::read(path).map_err(|e| Error::io(path, e))?;
    if !raw.starts_with(&GZIP_MAGIC) {
        return Ok(raw);
    }
    let mut out = Vec::with_capacity(raw.len() * 4);
    MultiGzDecoder::new(raw.as_slice())
        .read_to_end(&mut out)
        .map_err(|e| Error::Data(format!("{}: gzip stream is corrupt or truncated: {e}", path.display())))?;
    Ok(out)
}

/// Parses an IDX header with the given magic: returns the dimensions after checking that the
/// payload length is exactly their product.
fn parse_header(path: &Path, bytes: &[u8], magic: u32, what: &str) -> Result<Vec<usize>> {
    let ndims = (magic & 0xff) as usize;
    let header = 4 + 4 * ndims;
    let short = |found: usize| {
        Error::Data(format!(
            "{}: expected an IDX {what} header of {header} bytes, found a file of {found} bytes",
            path.display()
        ))
    };
    if bytes.len() < 4 {
        return Err(short(bytes.len()));
    }
    // The magic first: a wrong kind of file is the likelier story than a short one.
    let found = u32::from_be_bytes(bytes[0..4].try_into().unwrap());
    if found != magic {
        return Err(Error::Data(format!(
            "{}: expected IDX magic {magic:#010x} ({what}: u8 with {ndims} dimension(s)), found {found:#010x}",
            path.display()
        )));
    }
    if bytes.len() < header {
        return Err(short(bytes.len()));
    }
    let dims: Vec<usize> =
        (0..ndims).map(|d| u32::from_be_bytes(bytes[4 + 4 * d..8 + 4 * d].try_into().unwrap()) as usize).collect();
    let expected = dims.iter().product::<usize>();
    let payload = bytes.len() - header;
    if payload != expected {
        return Err(Error::Data(format!(
            "{}: dims {dims:?} need {expected} bytes after the {header}-byte header, found {payload}: \
             the file is {}",
            path.display(),
            if payload < expected { "truncated" } else { "longer than its header says" }
        )));
    }
    Ok(dims)
}

/// Parses an images file's bytes: (n, rows, cols). The pixels are `bytes[16..]`.
pub fn parse_images(path: &Path, bytes: &[u8]) -> Result<(usize, usize, usize)> {
    let dims = parse_header(path, bytes, IMAGES_MAGIC, "images")?;
    if dims[1] == 0 || dims[2] == 0 {
        return Err(Error::Data(format!(
            "{}: expected non-zero image rows and cols, found {}x{}",
            path.display(),
            dims[1],
            dims[2]
        )));
    }
    Ok((dims[0], dims[1], dims[2]))
}

/// Parses a labels file's bytes: the labels.
pub fn parse_labels<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a [u8]> {
    parse_header(path, bytes, LABELS_MAGIC, "labels")?;
    Ok(&bytes[8..])
}

fn write_idx(path: &Path, magic: u32, dims: &[usize], data: &[u8], gzip: bool) -> Result<()> {
    let mut bytes = Vec::with_capacity(4 + 4 * dims.len() + data.len());
    bytes.extend_from_slice(&magic.to_be_bytes());
    for &d in dims {
        let d = u32::try_from(d).expect("write_idx: dimension exceeds u32");
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    let io = |e| Error::io(path, e);
    if gzip {
        let mut enc = GzEncoder::new(File::create(path).map_err(io)?, Compression::fast());
        enc.write_all(&bytes).map_err(io)?;
        enc.finish().map_err(io)?;
        Ok(())
    } else {
        fs::write(path, bytes).map_err(io)
    }
}

/// Writes an IDX images file (magic 0x00000803, dims n, rows, cols), gzipped if asked.
pub fn write_idx_images(path: &Path, n: usize, rows: usize, cols: usize, pixels: &[u8], gzip: bool) -> Result<()> {
    assert_eq!(pixels.len(), n * rows * cols, "write_idx_images: {n}x{rows}x{cols} needs that many bytes");
    write_idx(path, IMAGES_MAGIC, &[n, rows, cols], pixels, gzip)
}

/// Writes an IDX labels file (magic 0x00000801, dim n), gzipped if asked.
pub fn write_idx_labels(path: &Path, labels: &[u8], gzip: bool) -> Result<()> {
    write_idx(path, LABELS_MAGIC, &[labels.len()], labels, gzip)
}
