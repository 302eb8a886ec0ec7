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

/// The directories searched for `kind`, in order: under an explicit `data_dir`, only there
/// (`data_dir/mnist` or `data_dir/fashion-mnist`, then `data_dir`); with `None`, the default
/// [`super::DEFAULT_DATA_DIR`] the same way, and for Fashion-MNIST then the system copy
/// [`SYSTEM_FASHION_MNIST_DIR`].
pub fn search_dirs(kind: DatasetKind, data_dir: Option<&Path>) -> Vec<PathBuf> {
    let dir = data_dir.unwrap_or(Path::new(super::DEFAULT_DATA_DIR));
    let sub = match kind {
        DatasetKind::Mnist => "mnist",
        DatasetKind::FashionMnist => "fashion-mnist",
        _ => panic!("idx::search_dirs: {kind} is not an IDX dataset"),
    };
    let mut dirs = vec![dir.join(sub), dir.to_path_buf()];
    if kind == DatasetKind::FashionMnist && data_dir.is_none() {
        dirs.push(PathBuf::from(SYSTEM_FASHION_MNIST_DIR));
    }
    dirs
}

/// `dir/name`, or `dir/name.gz`, whichever exists; an error when something that is not a file
/// (a directory) stands in its place, rather than silently looking elsewhere.
fn existing(dir: &Path, name: &str) -> Result<Option<PathBuf>> {
    for path in [dir.join(name), dir.join(format!("{name}.gz"))] {
        match fs::metadata(&path) {
            Ok(m) if m.is_file() => return Ok(Some(path)),
            Ok(_) => {
                return Err(Error::Data(format!(
                    "{}: is a directory (or not a file), expected an IDX file",
                    path.display()
                )))
            }
            Err(_) => {}
        }
    }
    Ok(None)
}

/// The (images, labels) files of a split: the first searched directory that holds both (see
/// [`search_dirs`]).
pub fn find_files(kind: DatasetKind, data_dir: Option<&Path>, split: Split) -> Result<(PathBuf, PathBuf)> {
    let (images, labels) = file_names(split);
    let dirs = search_dirs(kind, data_dir);
    for dir in &dirs {
        if let (Some(i), Some(l)) = (existing(dir, images)?, existing(dir, labels)?) {
            return Ok((i, l));
        }
    }
    let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    let hint = match (kind, data_dir) {
        (DatasetKind::FashionMnist, None) => {
            "; install them with `apt-get install dataset-fashion-mnist` or copy them into the data dir"
        }
        (DatasetKind::FashionMnist, Some(_)) => {
            "; copy them there, or leave out --data-dir to use the system copy (`apt-get install dataset-fashion-mnist`)"
        }
        _ => "; copy them into the data dir",
    };
    Err(Error::Data(format!(
        "{kind} {split} split not found: expected {images}[.gz] and {labels}[.gz] in one of {}{hint}",
        looked.join(", ")
    )))
}

/// Loads one split of MNIST or Fashion-MNIST (see [`search_dirs`] for where it looks).
pub fn load(kind: DatasetKind, data_dir: Option<&Path>, split: Split) -> Result<Dataset> {
    let (images, labels) = find_files(kind, data_dir, split)?;
    load_files(&images, &labels, kind.class_names())
}

/// Loads an images file and a labels file, checking that they describe the same number of items
/// and that every label names one of `class_names`.
pub fn load_files(images_path: &Path, labels_path: &Path, class_names: Vec<String>) -> Result<Dataset> {
    let images = read_idx(images_path)?;
    let labels = read_idx(labels_path)?;
    let dataset = from_bytes(images_path, images, labels_path, labels, class_names)?;
    Ok(dataset.with_sources(vec![images_path.to_path_buf(), labels_path.to_path_buf()]))
}

/// A dataset from the (already gunzipped, see [`decode_idx`]) bytes of an images file and a
/// labels file; the paths are used in error messages only.
pub fn from_bytes(
    images_path: &Path,
    images: Vec<u8>,
    labels_path: &Path,
    labels: Vec<u8>,
    class_names: Vec<String>,
) -> Result<Dataset> {
    let (n, rows, cols) = parse_images(images_path, &images)?;
    let label_values = parse_labels(labels_path, &labels)?;
    if label_values.len() != n {
        return Err(Error::Data(format!(
            "{} holds {n} images but {} holds {} labels: expected the same count (files from different splits?)",
            images_path.display(),
            labels_path.display(),
            label_values.len()
        )));
    }
    if let Some((i, &l)) = label_values.iter().enumerate().find(|&(_, &l)| l as usize >= class_names.len()) {
        return Err(Error::Data(format!(
            "{}: label {i} is {l}, expected 0..={}",
            labels_path.display(),
            class_names.len() - 1
        )));
    }
    // Drop the headers in place: no second copy of the pixels.
    let (mut pixels, mut labels) = (images, labels);
    pixels.drain(..IMAGES_HEADER);
    labels.drain(..LABELS_HEADER);
    Dataset::new(pixels, labels, ImageShape::new(1, rows, cols), class_names)
}

/// Bytes of an images file's header: magic and three dimensions.
const IMAGES_HEADER: usize = 4 + 4 * 3;
/// Bytes of a labels file's header: magic and one dimension.
const LABELS_HEADER: usize = 4 + 4;
/// The most a deflate stream can expand: 258 bytes from 2 bits, 1032 to 1.
const MAX_DEFLATE_RATIO: usize = 1032;

/// The contents of an IDX file, gunzipped if it starts with the gzip magic.
pub fn read_idx(path: &Path) -> Result<Vec<u8>> {
    let raw = fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_idx(path, raw)
}

/// An IDX file's bytes, gunzipped if they start with the gzip magic; `path` is used in error
/// messages only.
///
/// A gzipped file is inflated only as far as its header says: the header is inflated first and
/// checked (element type u8, at most 4 dimensions, a payload a gzip stream of this length can
/// hold at all, deflate expanding at most 1032:1), then the payload, and one byte more to tell a
/// longer file. So a small file claiming a huge payload, or a huge stream behind a small header,
/// costs no more memory than the header can honestly describe.
pub fn decode_idx(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>> {
    if !raw.starts_with(&GZIP_MAGIC) {
        return Ok(raw);
    }
    let corrupt =
        |e: std::io::Error| Error::Data(format!("{}: gzip stream is corrupt or truncated: {e}", path.display()));
    let mut stream = MultiGzDecoder::new(raw.as_slice());
    let mut magic = [0u8; 4];
    stream.read_exact(&mut magic).map_err(corrupt)?;
    let ndims = magic[3] as usize;
    if magic[..3] != [0, 0, 0x08] || !(1..=4).contains(&ndims) {
        return Err(Error::Data(format!(
            "{}: expected an IDX file of bytes (magic 00 00 08 0n, n = 1..4), found {:02x} {:02x} {:02x} {:02x}",
            path.display(),
            magic[0],
            magic[1],
            magic[2],
            magic[3]
        )));
    }
    let mut dims = vec![0u8; 4 * ndims];
    stream.read_exact(&mut dims).map_err(corrupt)?;
    let header = 4 + 4 * ndims;
    let payload = dims
        .chunks_exact(4)
        .try_fold(1usize, |n, d| n.checked_mul(u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize));
    let limit = raw.len().saturating_mul(MAX_DEFLATE_RATIO);
    let payload = match payload {
        Some(p) if p <= limit => p,
        _ => {
            return Err(Error::Data(format!(
                "{}: the IDX header claims {} bytes, more than a gzip file of {} bytes can hold",
                path.display(),
                payload.map_or("more than 2^64".to_string(), |p| p.to_string()),
                raw.len()
            )))
        }
    };
    let mut out = Vec::with_capacity(header + payload);
    out.extend_from_slice(&magic);
    out.extend_from_slice(&dims);
    // One byte past the payload, so parse_header can tell a file longer than its header says.
    (&mut stream).take(payload as u64 + 1).read_to_end(&mut out).map_err(corrupt)?;
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
    let expected = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).unwrap_or(usize::MAX);
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
    Ok(&bytes[LABELS_HEADER..])
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
