//! Fetching CIFAR-10 when it is missing: download, verify, unpack, move into place.
//!
//! A data directory only ever holds a complete `cifar-10-batches-bin` or none at all. Each stage
//! writes somewhere private and the next starts only when it succeeded:
//! 1. download to `cifar-10-binary.tar.gz.<pid>.part`, hashing while writing;
//! 2. compare the MD5 with the expected one (a mismatch deletes the part file);
//! 3. unpack into a hidden temporary directory inside the data dir and check the six batch
//!    files are there and whole;
//! 4. rename the unpacked directory into place (atomic on one file system, which is why the
//!    temporary directory lives inside the data dir and not in `/tmp`).
//!
//! Every private path is removed by a guard on the way out, on success and on error alike.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flate2::read::GzDecoder;
use indicatif::{ProgressBar, ProgressStyle};
use md5::{Digest, Md5};

use super::cifar::{self, CIFAR10_DIR};
use crate::{Error, Result};

/// The official CIFAR-10 binary archive.
pub const CIFAR10_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
/// Its MD5, as published on <https://www.cs.toronto.edu/~kriz/cifar.html>.
pub const CIFAR10_MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";
/// The archive's file name; a copy placed in the data dir is used instead of downloading.
pub const CIFAR10_ARCHIVE: &str = "cifar-10-binary.tar.gz";
/// Environment variable overriding the download URL (a mirror).
pub const URL_ENV: &str = "VIT_CIFAR10_URL";
/// Environment variable overriding the expected MD5 (a mirror serving a repacked archive).
pub const MD5_ENV: &str = "VIT_CIFAR10_MD5";

/// Where to fetch CIFAR-10 from and what to expect. `None` fields fall back to the environment
/// ([`URL_ENV`], [`MD5_ENV`]), then to the official values.
#[derive(Clone, Debug, Default)]
pub struct DownloadOptions {
    /// The archive's URL.
    pub url: Option<String>,
    /// The archive's expected MD5, hex.
    pub md5: Option<String>,
    /// Draw a progress bar on stderr (indicatif hides it when stderr is not a terminal).
    pub progress: bool,
}

impl DownloadOptions {
    /// The URL to use: the option, else `$VIT_CIFAR10_URL`, else [`CIFAR10_URL`].
    pub fn resolved_url(&self) -> String {
        resolve(&self.url, URL_ENV, CIFAR10_URL)
    }

    /// The expected MD5 (lower-case hex): the option, else `$VIT_CIFAR10_MD5`, else [`CIFAR10_MD5`].
    pub fn resolved_md5(&self) -> String {
        resolve(&self.md5, MD5_ENV, CIFAR10_MD5).to_ascii_lowercase()
    }
}

fn resolve(value: &Option<String>, env: &str, default: &str) -> String {
    value
        .clone()
        .or_else(|| std::env::var(env).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// What to do instead when CIFAR-10 cannot be fetched.
pub fn offline_help(data_dir: &Path) -> String {
    format!(
        "To go on without this download, do one of:\n  \
         - put a copy of cifar-10-batches-bin (or {CIFAR10_ARCHIVE}) in {dir};\n  \
         - set {URL_ENV} to a mirror of {CIFAR10_ARCHIVE};\n  \
         - train on Fashion-MNIST instead: `apt-get install dataset-fashion-mnist`, then \
         `vit train --dataset fashion-mnist`.",
        dir = data_dir.display()
    )
}

/// Makes sure `data_dir` holds CIFAR-10 and returns its batches directory. Does nothing if it is
/// already there; unpacks `data_dir/cifar-10-binary.tar.gz` if that is there; downloads otherwise.
pub fn ensure_cifar10(data_dir: &Path, opts: &DownloadOptions) -> Result<PathBuf> {
    if let Some(dir) = cifar::cifar10_dir(data_dir) {
        let missing = cifar::cifar10_missing_files(&dir);
        if missing.is_empty() {
            return Ok(dir);
        }
        return Err(Error::Data(format!(
            "{} exists but lacks {}: expected data_batch_1..5.bin and test_batch.bin; remove the directory \
             to have it downloaded again, or complete it",
            dir.display(),
            missing.join(", ")
        )));
    }
    fetch_cifar10(data_dir, &opts.resolved_url(), &opts.resolved_md5(), opts.progress)
}

/// Fetches CIFAR-10 into `data_dir/cifar-10-batches-bin` from `url`, checking the archive's MD5
/// against `md5` (hex). Uses a local `data_dir/cifar-10-binary.tar.gz` instead if there is one
/// (it is verified too, and left in place). Returns the batches directory.
pub fn fetch_cifar10(data_dir: &Path, url: &str, md5: &str, progress: bool) -> Result<PathBuf> {
    // A data dir made for this download goes again if the download fails.
    let created = !data_dir.exists();
    fs::create_dir_all(data_dir).map_err(|e| Error::io(data_dir, e))?;
    let result = fetch_into(data_dir, url, md5, progress);
    if result.is_err() && created {
        // Only if still empty: `remove_dir` refuses a directory with anything in it.
        let _ = fs::remove_dir(data_dir);
    }
    result
}

fn fetch_into(data_dir: &Path, url: &str, md5: &str, progress: bool) -> Result<PathBuf> {
    let md5 = md5.trim().to_ascii_lowercase();
    let local = data_dir.join(CIFAR10_ARCHIVE);
    if local.is_file() {
        let found = md5_file(&local)?;
        if found != md5 {
            return Err(Error::Download(format!(
                "{}: checksum mismatch: expected MD5 {md5}, found {found}; it is not the CIFAR-10 binary \
                 archive (or is incomplete): delete it to have it downloaded again",
                local.display()
            )));
        }
        return unpack(&local, data_dir);
    }
    let part = Guard(data_dir.join(format!("{CIFAR10_ARCHIVE}.{}.part", std::process::id())));
    let found = download(url, &part.0, progress).map_err(|e| {
        Error::Download(format!("could not download CIFAR-10 from {url}: {e}\n{}", offline_help(data_dir)))
    })?;
    if found != md5 {
        return Err(Error::Download(format!(
            "checksum mismatch for {url}: expected MD5 {md5}, found {found}; the download was deleted. \
             If this is a mirror serving a different archive, set {MD5_ENV}.\n{}",
            offline_help(data_dir)
        )));
    }
    unpack(&part.0, data_dir)
}

/// A path removed (file or directory) when the guard goes out of scope.
struct Guard(PathBuf);

impl Drop for Guard {
    fn drop(&mut self) {
        if self.0.is_dir() {
            let _ = fs::remove_dir_all(&self.0);
        } else {
            let _ = fs::remove_file(&self.0);
        }
    }
}

/// The MD5 of a file, lower-case hex.
pub fn md5_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// True for `localhost` and loopback addresses, which must never go through a proxy.
fn is_loopback(url: &str) -> bool {
    let Ok(uri) = url.parse::<ureq::http::Uri>() else { return false };
    let host = uri.host().unwrap_or("").trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Streams `url` into `dest`, hashing as it goes; returns the MD5 (hex). The error is a plain
/// reason; the caller adds the URL and what to do about it.
fn download(url: &str, dest: &Path, progress: bool) -> std::result::Result<String, String> {
    let mut config = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_per_read(Some(Duration::from_secs(60)));
    if is_loopback(url) {
        config = config.proxy(None);
    }
    let agent = ureq::Agent::new_with_config(config.build());
    let response = agent.get(url).call().map_err(|e| match e {
        ureq::Error::StatusCode(code) => format!("the server answered HTTP {code}"),
        e => e.to_string(),
    })?;
    let total = response.body().content_length();
    let bar = if progress { ProgressBar::new(total.unwrap_or(0)) } else { ProgressBar::hidden() };
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:40.cyan/blue}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(format!("CIFAR-10 {CIFAR10_ARCHIVE}"));

    let mut reader = response.into_body().into_reader();
    let file = File::create(dest).map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
    let mut out = BufWriter::new(file);
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut received = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(|e| format!("connection failed after {received} bytes: {e}"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
        received += n as u64;
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    if let Some(total) = total {
        if received != total {
            return Err(format!("expected {total} bytes, received {received}: the transfer was cut short"));
        }
    }
    let file = out.into_inner().map_err(|e| format!("cannot write {}: {}", dest.display(), e.error()))?;
    file.sync_all().map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
    Ok(hex(&hasher.finalize()))
}

/// Unpacks a verified archive into a temporary directory inside `data_dir`, checks it holds a
/// complete `cifar-10-batches-bin`, and renames that into `data_dir`.
fn unpack(archive: &Path, data_dir: &Path) -> Result<PathBuf> {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let tmp = Guard(data_dir.join(format!(".cifar-10-unpack.{}.{nanos}", std::process::id())));
    fs::create_dir(&tmp.0).map_err(|e| Error::io(&tmp.0, e))?;
    let file = File::open(archive).map_err(|e| Error::io(archive, e))?;
    // `unpack` refuses entries that would land outside the destination (absolute or `..` paths).
    tar::Archive::new(GzDecoder::new(file)).unpack(&tmp.0).map_err(|e| {
        Error::Download(format!("{}: cannot unpack (expected a gzipped tar archive): {e}", archive.display()))
    })?;
    let unpacked = tmp.0.join(CIFAR10_DIR);
    if !unpacked.is_dir() {
        return Err(Error::Download(format!(
            "{}: expected the archive to hold a {CIFAR10_DIR}/ directory, found none",
            archive.display()
        )));
    }
    cifar::check_cifar10_dir(&unpacked)?;
    let dest = data_dir.join(CIFAR10_DIR);
    if let Err(e) = fs::rename(&unpacked, &dest) {
        // Another process may have finished the same download first; its copy is as good.
        if !(dest.is_dir() && cifar::cifar10_missing_files(&dest).is_empty()) {
            return Err(Error::io(&dest, e));
        }
    }
    Ok(dest)
}
