//! The safetensors file format: atomic writes and a reader that never panics on bad input.
//!
//! ```text
//!     [u64 little-endian: header length n] [n bytes: JSON header, space-padded to 8] [tensor data]
//!     header = { "__metadata__": { "key": "value", ... },
//!                "name": { "dtype": "F32", "shape": [..], "data_offsets": [begin, end] }, ... }
//! ```
//!
//! Offsets are relative to the start of the data, tensors are row-major and little-endian, and
//! their data must tile the data section exactly. The header is built and validated by the
//! `safetensors` crate; the data is streamed here, straight from the tensors, so saving a model
//! never holds a second copy of it in memory.
//!
//! The header is written in one fixed order (metadata keys sorted, tensors in data order), so the
//! same tensors and metadata always give the same bytes.
//!
//! Writes are atomic: the file is written to a temporary sibling (same directory, hence same file
//! system), flushed to disk (`fsync`), and renamed over the target; the directory is synced after
//! the rename. A crash or an error at any point leaves either the old file or the new one, never
//! a torn mix, and the temporary file is removed on error. The temporary file has one fixed name
//! per target (`.NAME.tmp`), so a write cut short by a kill leaves at most one, which the next
//! write replaces (and [`remove_stale_temporaries`] clears).

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use ::safetensors::tensor::Metadata;
pub use ::safetensors::Dtype;
use ::safetensors::{SafeTensorError, SafeTensors};
use autograd::{DType, Float, Tensor};

use crate::error::{Error, Result};
use crate::nn::ParamStore;

/// The metadata key Hugging Face loaders look at; set to `"pt"` (PyTorch layout) unless given.
const FORMAT_KEY: &str = "format";

/// Saves a model's parameters (under their store names), then `extra` tensors (e.g. optimizer
/// state under a prefix such as `optim.exp_avg.`), with string `metadata` in the header.
///
/// Tensors are written in store order, then in `extra` order; every name must be unique. The
/// write is atomic (see the module documentation): on error the previous file at `path`, if any,
/// is untouched.
pub fn save<T: Float>(
    path: impl AsRef<Path>,
    params: &ParamStore<T>,
    extra: &[(String, &Tensor<T>)],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let tensors: Vec<(&str, &Tensor<T>)> = params
        .iter()
        .map(|p| (p.name.as_str(), &p.value))
        .chain(extra.iter().map(|(name, t)| (name.as_str(), *t)))
        .collect();
    write_tensors(path, &tensors, metadata)
}

/// Writes named tensors and string metadata to a safetensors file, atomically. The element type
/// of the file is `T`'s (F32 or F64). A `"format": "pt"` entry is added to the metadata unless
/// one is given, as PyTorch's and Hugging Face's writers do.
pub fn write_tensors<T: Float>(
    path: impl AsRef<Path>,
    tensors: &[(&str, &Tensor<T>)],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let path = path.as_ref();
    let fail = |msg: String| Error::Checkpoint(format!("{}: {msg}", path.display()));
    let mut seen = HashSet::new();
    for (name, _) in tensors {
        if name.is_empty() || *name == "__metadata__" {
            return Err(fail(format!("invalid tensor name {name:?}")));
        }
        if !seen.insert(*name) {
            return Err(fail(format!("{name}: tensor name given twice")));
        }
    }

    let (dtype, elem_bytes) = match T::DTYPE {
        DType::F32 => ("F32", 4),
        DType::F64 => ("F64", 8),
    };
    assert_eq!(
        std::mem::size_of::<T>(),
        elem_bytes,
        "write_tensors: {:?} elements must be {elem_bytes} bytes",
        T::DTYPE
    );
    let mut meta = metadata.clone();
    meta.entry(FORMAT_KEY.into()).or_insert_with(|| "pt".into());
    let mut header =
        header_json(&meta, tensors.iter().map(|(name, t)| (*name, t.shape(), t.numel() * elem_bytes)), dtype)
            .map_err(|e| fail(format!("cannot encode the header: {e}")))?;
    // Pad with spaces so the data starts 8-byte aligned (as the reference writer does).
    header.resize(header.len().next_multiple_of(8), b' ');
    // What we write must be what we read: validate the header as the reader will.
    let mut probe = (header.len() as u64).to_le_bytes().to_vec();
    probe.extend_from_slice(&header);
    if let Err(e) = SafeTensors::read_metadata(&probe).map(|_| ()).or_else(|e| match e {
        // The data is not in the probe: only its absence may be reported.
        SafeTensorError::MetadataIncompleteBuffer => Ok(()),
        e => Err(e),
    }) {
        return Err(fail(format!("cannot build the header: {e}")));
    }

    write_atomic(path, |w| {
        w.write_all(&(header.len() as u64).to_le_bytes())?;
        w.write_all(&header)?;
        for (_, t) in tensors {
            write_le(w, t.data())?;
        }
        Ok(())
    })
}

/// The header JSON: `__metadata__` first (keys sorted), then each tensor in data order with its
/// keys in the reference writer's order. Built by hand so the bytes never depend on a hash order.
fn header_json<'a>(
    metadata: &BTreeMap<String, String>,
    tensors: impl Iterator<Item = (&'a str, &'a [usize], usize)>,
    dtype: &str,
) -> serde_json::Result<Vec<u8>> {
    let mut out = String::from("{\"__metadata__\":");
    out.push_str(&serde_json::to_string(metadata)?);
    let mut offset = 0;
    for (name, shape, n) in tensors {
        out.push(',');
        out.push_str(&serde_json::to_string(name)?);
        out.push_str(&format!(
            ":{{\"dtype\":\"{dtype}\",\"shape\":{},\"data_offsets\":[{offset},{}]}}",
            serde_json::to_string(shape)?,
            offset + n
        ));
        offset += n;
    }
    out.push('}');
    Ok(out.into_bytes())
}

/// Writes `data` as little-endian bytes.
fn write_le<T: Float>(w: &mut dyn Write, data: &[T]) -> io::Result<()> {
    if cfg!(target_endian = "little") {
        // SAFETY: `T` is f32 or f64 (checked against `T::DTYPE` by the caller): plain bytes with
        // no padding, already little-endian on this target; the slice covers exactly `data`.
        let bytes = unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<u8>(), std::mem::size_of_val(data)) };
        w.write_all(bytes)
    } else {
        for &x in data {
            match T::DTYPE {
                DType::F32 => w.write_all(&(x.to_f64() as f32).to_le_bytes())?,
                DType::F64 => w.write_all(&x.to_f64().to_le_bytes())?,
            }
        }
        Ok(())
    }
}

/// Writes a file through `write` atomically: into a fresh temporary file next to `path`, synced
/// to disk, then renamed over `path` (and the directory synced). On any error the temporary file
/// is removed and `path` is left as it was.
pub(crate) fn write_atomic(path: &Path, write: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> Result<()> {
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::Checkpoint(format!("{}: not a file path", path.display())))?
        .to_string_lossy();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = dir.join(format!(".{file_name}.tmp"));

    let result = (|| -> io::Result<()> {
        // One writer per target: a leftover of an interrupted write is simply replaced.
        let file = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        write(&mut w)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        // The temp file may not exist (e.g. the directory is missing); nothing else to undo.
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    // Make the rename itself durable. Some file systems refuse to sync a directory; the data is
    // already safe in the renamed file, so that is not an error.
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Removes what interrupted writes of `dir/file_name` left behind: its temporary file (and those
/// of older versions, named `.NAME.<pid>.<n>.tmp`). Returns how many were removed. Call it only
/// where no other process is writing that file.
pub fn remove_stale_temporaries(dir: &Path, file_name: &str) -> usize {
    let prefix = format!(".{file_name}.");
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(&prefix) && name.ends_with(".tmp") && e.file_type().is_ok_and(|t| t.is_file())
        })
        .filter(|e| fs::remove_file(e.path()).is_ok())
        .count()
}

/// A safetensors file read into memory: its tensors by name, decoded on request, and its string
/// metadata.
///
/// Opening validates the whole header (names, dtypes, shapes, offsets tiling the data exactly), so
/// a truncated or corrupt file is rejected up front with an error saying what is wrong; after that
/// [`Checkpoint::tensor`] fails only on a missing name or an unsupported dtype.
#[derive(Debug)]
pub struct Checkpoint {
    path: PathBuf,
    bytes: Vec<u8>,
    /// Where the data section starts in `bytes`.
    data_start: usize,
    header: Metadata,
    /// Tensor names in file (offset) order.
    names: Vec<String>,
    metadata: BTreeMap<String, String>,
}

impl Checkpoint {
    /// Reads and validates the file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(bytes, path)
    }

    /// Validates a file's bytes; `path` is used in error messages only.
    pub fn from_bytes(bytes: Vec<u8>, path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let (header_len, header) = match SafeTensors::read_metadata(&bytes) {
            Ok(ok) => ok,
            Err(e) => return Err(Error::Checkpoint(format!("{}: {}", path.display(), explain(&bytes, &e)))),
        };
        let names = header.offset_keys();
        let metadata = header.metadata().as_ref().map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
        Ok(Checkpoint {
            path,
            data_start: 8 + header_len,
            bytes,
            header,
            names,
            metadata: metadata.unwrap_or_default(),
        })
    }

    /// The file this checkpoint was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every tensor name, in file order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when the file holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Whether the file holds a tensor called `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.header.info(name).is_some()
    }

    /// The stored shape of tensor `name`.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.header.info(name).map(|i| i.shape.as_slice())
    }

    /// The stored element type of tensor `name`.
    pub fn dtype(&self, name: &str) -> Option<Dtype> {
        self.header.info(name).map(|i| i.dtype)
    }

    /// Tensor `name`, converted to `T`. F32 and F64 convert exactly where `T` can hold the value
    /// (F64 into f32 rounds to nearest); F16 and BF16 widen exactly. Other dtypes are an error
    /// naming the tensor.
    pub fn tensor<T: Float>(&self, name: &str) -> Result<Tensor<T>> {
        let info = self.header.info(name).ok_or_else(|| self.error(format!("{name}: no such tensor in the file")))?;
        let (begin, end) = info.data_offsets;
        // Offsets were validated against the file's length on open.
        let bytes = &self.bytes[self.data_start + begin..self.data_start + end];
        let data = decode(info.dtype, bytes).ok_or_else(|| {
            self.error(format!(
                "{name}: unsupported dtype {:?} (F32 is expected; F64, F16 and BF16 are converted)",
                info.dtype
            ))
        })?;
        Ok(Tensor::from_vec(data, &info.shape))
    }

    /// The string metadata of the header (`__metadata__`).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// One metadata value.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    /// The number of elements of tensor `name` (the product of its shape).
    pub fn numel(&self, name: &str) -> Option<u64> {
        // Validated on open: the product fits, and its bytes are in the file.
        self.shape(name).map(|s| s.iter().map(|&d| d as u64).product())
    }

    /// The names under `prefix`, with the prefix removed, in file order (e.g. the parameter names
    /// of `optim.exp_avg.*`).
    pub fn names_with_prefix(&self, prefix: &str) -> Vec<&str> {
        self.names.iter().filter_map(|n| n.strip_prefix(prefix)).collect()
    }

    /// The tensors under `prefix`, named without it, converted to `T`.
    pub fn tensors_with_prefix<T: Float>(&self, prefix: &str) -> Result<Vec<(String, Tensor<T>)>> {
        self.names
            .iter()
            .filter_map(|n| n.strip_prefix(prefix).map(|short| (n, short)))
            .map(|(full, short)| Ok((short.to_string(), self.tensor(full)?)))
            .collect()
    }

    /// A checkpoint error prefixed with this file's path.
    pub(crate) fn error(&self, msg: String) -> Error {
        Error::Checkpoint(format!("{}: {msg}", self.path.display()))
    }
}

/// Decodes little-endian elements of `dtype`; `None` for a dtype we do not load.
fn decode<T: Float>(dtype: Dtype, bytes: &[u8]) -> Option<Vec<T>> {
    let v = match dtype {
        Dtype::F32 => {
            bytes.chunks_exact(4).map(|b| T::from_f64(f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)).collect()
        }
        Dtype::F64 => {
            bytes.chunks_exact(8).map(|b| T::from_f64(f64::from_le_bytes(b.try_into().expect("8 bytes")))).collect()
        }
        Dtype::F16 => {
            bytes.chunks_exact(2).map(|b| T::from_f64(half::f16::from_le_bytes([b[0], b[1]]).to_f64())).collect()
        }
        Dtype::BF16 => {
            bytes.chunks_exact(2).map(|b| T::from_f64(half::bf16::from_le_bytes([b[0], b[1]]).to_f64())).collect()
        }
        _ => return None,
    };
    Some(v)
}

/// Turns the parser's error into a sentence about the file; for a truncated file, names the first
/// tensor whose data lies past the end.
fn explain(bytes: &[u8], e: &SafeTensorError) -> String {
    let len = bytes.len();
    match e {
        SafeTensorError::HeaderTooSmall => {
            format!("truncated or not a safetensors file: {len} bytes, shorter than the 8-byte header length")
        }
        SafeTensorError::HeaderTooLarge | SafeTensorError::InvalidHeaderLength => {
            let n = bytes.get(..8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_le_bytes);
            format!(
                "truncated or not a safetensors file: the header length field says {n} bytes, but the file has {len} bytes"
            )
        }
        SafeTensorError::InvalidHeader(_) | SafeTensorError::InvalidHeaderDeserialization(_) => {
            format!("not a safetensors file: the header is not valid JSON of the expected form ({e})")
        }
        SafeTensorError::MetadataIncompleteBuffer => match past_end(bytes) {
            Some((name, end, have)) => format!(
                "truncated file: tensor {name} ends at byte {end} of the data section, which has only {have} bytes"
            ),
            None => format!("corrupt file: the tensors' data does not cover the file's {len} bytes exactly"),
        },
        // A tensor whose offsets reach past the data is the cause: the tensor after it only looks
        // misplaced because of it.
        SafeTensorError::InvalidOffset(name) => match past_end(bytes) {
            Some((big, end, have)) => format!(
                "corrupt file: tensor {big} claims data up to byte {end}, but the data section has only {have} bytes"
            ),
            None => format!("corrupt file: tensor {name} has data offsets that do not follow the previous tensor's"),
        },
        _ => format!("corrupt file: {e}"),
    }
}

/// For a header that parses but does not fit the file: the first tensor (by offset) whose data
/// ends past the end of the file, its end offset, and the data section's actual length.
fn past_end(bytes: &[u8]) -> Option<(String, u64, usize)> {
    let n = usize::try_from(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)).ok()?;
    let header: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(bytes.get(8..8usize.checked_add(n)?)?).ok()?;
    let have = bytes.len() - 8 - n;
    header
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .filter_map(|(k, v)| Some((k.clone(), v.get("data_offsets")?.get(1)?.as_u64()?)))
        .filter(|&(_, end)| end > have as u64)
        .min_by_key(|&(_, end)| end)
        .map(|(k, end)| (k, end, have))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vit-ckpt-unit-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        v.sort();
        v
    }

    /// A write that fails half-way leaves the old file byte-identical and no temporary behind.
    #[test]
    fn failed_write_keeps_old_file() {
        let dir = scratch("failed-write");
        let target = dir.join("model.safetensors");
        write_atomic(&target, |w| w.write_all(b"the last good checkpoint")).unwrap();
        let err = write_atomic(&target, |w| {
            w.write_all(&[7u8; 1 << 21])?; // more than the buffer: part of it reaches the temp file
            Err(io::Error::other("disk full (simulated)"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("disk full (simulated)"), "{err}");
        assert_eq!(fs::read(&target).unwrap(), b"the last good checkpoint");
        assert_eq!(entries(&dir), ["model.safetensors"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// The target is only replaced once the new contents are complete.
    #[test]
    fn target_replaced_only_after_complete_write() {
        let dir = scratch("complete-write");
        let target = dir.join("model.safetensors");
        write_atomic(&target, |w| w.write_all(b"old")).unwrap();
        write_atomic(&target, |w| {
            w.write_all(b"new ")?;
            // Mid-write, the target still holds the old contents.
            assert_eq!(fs::read(&target)?, b"old");
            w.write_all(b"contents")
        })
        .unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"new contents");
        assert_eq!(entries(&dir), ["model.safetensors"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn decode_formats() {
        let f16: Vec<u8> = [1.5f32, -2.0, 0.0].iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect();
        assert_eq!(decode::<f32>(Dtype::F16, &f16).unwrap(), [1.5, -2.0, 0.0]);
        let bf16: Vec<u8> = [3.0f32, -0.5].iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect();
        assert_eq!(decode::<f64>(Dtype::BF16, &bf16).unwrap(), [3.0, -0.5]);
        assert!(decode::<f32>(Dtype::I64, &[0; 8]).is_none());
    }
}
