//! The CIFAR-10 download against a loopback HTTP server serving a generated, format-exact archive:
//! success unpacks a dataset the loader reads; every failure leaves the data dir as it was.

mod common;
use common::TempDir;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flate2::write::GzEncoder;
use flate2::Compression;

use vit::data::cifar;
use vit::data::download::{self, DownloadOptions, CIFAR10_ARCHIVE, CIFAR10_MD5, CIFAR10_URL};
use vit::data::{self, DatasetKind, Split};
use vit::Error;

/// The names in a directory, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// A gzipped tar holding `dir_name/` with the files of `src`.
fn tar_gz(src: &Path, dir_name: &str) -> Vec<u8> {
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    builder.append_dir_all(dir_name, src).unwrap();
    builder.into_inner().unwrap().finish().unwrap()
}

/// A small but format-exact CIFAR-10 archive (10 records per batch file), as the official one
/// is laid out: `cifar-10-batches-bin/` with the six batches and `batches.meta.txt`.
fn cifar10_archive() -> Vec<u8> {
    let src = TempDir::new("src");
    let root = cifar::write_cifar10_tree(src.path(), 10, 7).unwrap();
    tar_gz(&root, "cifar-10-batches-bin")
}

fn md5_hex(bytes: &[u8]) -> String {
    use md5::{Digest, Md5};
    Md5::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// One canned HTTP answer.
struct Reply {
    status: &'static str,
    body: Vec<u8>,
    /// Content-Length to announce (the body's own length unless a short transfer is wanted).
    length: usize,
}

impl Reply {
    fn ok(body: Vec<u8>) -> Self {
        Reply { status: "200 OK", length: body.len(), body }
    }
}

/// A loopback HTTP server answering exactly `replies.len()` requests in turn, then stopping. It
/// also stops by itself after 10 s if fewer requests come. Returns the URL and the thread, whose
/// result is the request paths seen.
fn serve(replies: Vec<Reply>) -> (String, JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/{CIFAR10_ARCHIVE}", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    let handle = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut paths = Vec::new();
        let mut replies = replies.into_iter();
        let mut next = replies.next();
        while let Some(reply) = next.take() {
            if Instant::now() > deadline {
                break;
            }
            match listener.accept() {
                Ok((stream, _)) => {
                    paths.push(answer(stream, &reply));
                    next = replies.next();
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    next = Some(reply);
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
        paths
    });
    (url, handle)
}

/// Reads one request's head and writes `reply`; returns the request line.
fn answer(mut stream: TcpStream, reply: &Reply) -> String {
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    let request_line = String::from_utf8_lossy(&head).lines().next().unwrap_or("").to_string();
    let header = format!(
        "HTTP/1.1 {}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
        reply.status, reply.length
    );
    let _ = stream.write_all(header.as_bytes());
    let _ = stream.write_all(&reply.body);
    let _ = stream.flush();
    request_line
}

fn download_err(r: vit::Result<PathBuf>) -> String {
    match r {
        Err(Error::Download(msg)) => msg,
        Err(e) => panic!("expected Error::Download, found {e}"),
        Ok(p) => panic!("expected an error, got {}", p.display()),
    }
}

#[test]
fn download_verifies_unpacks_and_the_loader_reads_it() {
    let archive = cifar10_archive();
    let (url, server) = serve(vec![Reply::ok(archive.clone())]);
    let data_dir = TempDir::new("ok");
    let opts = DownloadOptions { url: Some(url), md5: Some(md5_hex(&archive)), progress: false };
    let dir = download::ensure_cifar10(data_dir.path(), &opts).unwrap();
    assert_eq!(dir, data_dir.path().join("cifar-10-batches-bin"));
    let paths = server.join().unwrap();
    assert_eq!(paths, vec![format!("GET /{CIFAR10_ARCHIVE} HTTP/1.1")]);
    // Only the dataset is left: no part file, no temporary directory.
    assert_eq!(entries(data_dir.path()), vec!["cifar-10-batches-bin"]);

    let train = data::load(DatasetKind::Cifar10, data_dir.path(), Split::Train).unwrap();
    let test = data::load(DatasetKind::Cifar10, data_dir.path(), Split::Test).unwrap();
    assert_eq!((train.len(), test.len()), (50, 10));
    assert_eq!(train.image(13), cifar::synthetic_image(train.label(13) as u8, 13, 7).as_slice());

    // Present now: no second request is made (the URL points at a closed port).
    let closed = DownloadOptions { url: Some(closed_port_url()), ..opts };
    assert_eq!(download::ensure_cifar10(data_dir.path(), &closed).unwrap(), dir);
}

#[test]
fn wrong_checksum_leaves_no_dataset_and_no_partial_file() {
    let (url, server) = serve(vec![Reply::ok(cifar10_archive())]);
    let data_dir = TempDir::new("md5");
    let wrong = "0123456789abcdef0123456789abcdef";
    let msg = download_err(download::fetch_cifar10(data_dir.path(), &url, wrong, false));
    server.join().unwrap();
    assert!(msg.contains("checksum mismatch") && msg.contains(wrong), "{msg}");
    assert!(entries(data_dir.path()).is_empty(), "left behind: {:?}", entries(data_dir.path()));
}

#[test]
fn http_404_gives_a_clear_error_with_what_to_do_instead() {
    let (url, server) = serve(vec![Reply { status: "404 Not Found", body: b"no such file".to_vec(), length: 12 }]);
    let data_dir = TempDir::new("404");
    let msg = download_err(download::fetch_cifar10(data_dir.path(), &url, CIFAR10_MD5, false));
    server.join().unwrap();
    assert!(msg.contains(&url) && msg.contains("HTTP 404"), "{msg}");
    assert!(msg.contains("cifar-10-batches-bin") && msg.contains("VIT_CIFAR10_URL"), "{msg}");
    assert!(msg.contains("--dataset fashion-mnist") && msg.contains("apt-get install dataset-fashion-mnist"), "{msg}");
    assert!(entries(data_dir.path()).is_empty(), "left behind: {:?}", entries(data_dir.path()));
}

/// A URL on a loopback port nobody listens on (bound, then released).
fn closed_port_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/{CIFAR10_ARCHIVE}")
}

#[test]
fn unreachable_server_says_what_to_do_instead() {
    let data_dir = TempDir::new("offline");
    let url = closed_port_url();
    let msg = download_err(download::fetch_cifar10(data_dir.path(), &url, CIFAR10_MD5, false));
    assert!(msg.contains("could not download CIFAR-10") && msg.contains("VIT_CIFAR10_URL"), "{msg}");
    assert!(entries(data_dir.path()).is_empty(), "left behind: {:?}", entries(data_dir.path()));
}

#[test]
fn a_transfer_cut_short_leaves_nothing_behind() {
    let archive = cifar10_archive();
    let md5 = md5_hex(&archive);
    let half = archive[..archive.len() / 2].to_vec();
    let (url, server) = serve(vec![Reply { status: "200 OK", body: half, length: archive.len() }]);
    let data_dir = TempDir::new("short");
    let msg = download_err(download::fetch_cifar10(data_dir.path(), &url, &md5, false));
    server.join().unwrap();
    assert!(msg.contains("could not download CIFAR-10"), "{msg}");
    assert!(entries(data_dir.path()).is_empty(), "left behind: {:?}", entries(data_dir.path()));
}

#[test]
fn an_archive_without_the_batches_dir_is_rejected_and_cleaned_up() {
    let src = TempDir::new("wrongsrc");
    fs::write(src.path().join("readme.txt"), "not cifar").unwrap();
    let archive = tar_gz(src.path(), "something-else");
    let (url, server) = serve(vec![Reply::ok(archive.clone())]);
    let data_dir = TempDir::new("wrong");
    let msg = download_err(download::fetch_cifar10(data_dir.path(), &url, &md5_hex(&archive), false));
    server.join().unwrap();
    assert!(msg.contains("expected the archive to hold a cifar-10-batches-bin/ directory"), "{msg}");
    assert!(entries(data_dir.path()).is_empty(), "left behind: {:?}", entries(data_dir.path()));
}

#[test]
fn an_archive_with_a_truncated_batch_is_rejected_and_cleaned_up() {
    let src = TempDir::new("badsrc");
    let root = cifar::write_cifar10_tree(src.path(), 3, 1).unwrap();
    let path = root.join("data_batch_4.bin");
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let archive = tar_gz(&root, "cifar-10-batches-bin");
    let (url, server) = serve(vec![Reply::ok(archive.clone())]);
    let data_dir = TempDir::new("bad");
    let err = download::fetch_cifar10(data_dir.path(), &url, &md5_hex(&archive), false).unwrap_err().to_string();
    server.join().unwrap();
    assert!(err.contains("data_batch_4.bin") && err.contains("truncated"), "{err}");
    assert!(entries(data_dir.path()).is_empty(), "left behind: {:?}", entries(data_dir.path()));
}

#[test]
fn a_local_archive_in_the_data_dir_is_used_without_network() {
    let archive = cifar10_archive();
    let data_dir = TempDir::new("local");
    fs::write(data_dir.path().join(CIFAR10_ARCHIVE), &archive).unwrap();
    let dir = download::fetch_cifar10(data_dir.path(), &closed_port_url(), &md5_hex(&archive), false).unwrap();
    assert_eq!(data::load(DatasetKind::Cifar10, data_dir.path(), Split::Test).unwrap().len(), 10);
    assert_eq!(dir, data_dir.path().join("cifar-10-batches-bin"));
    // The user's archive stays; nothing else is left.
    assert_eq!(entries(data_dir.path()), vec!["cifar-10-batches-bin", CIFAR10_ARCHIVE]);

    // A local archive that does not verify is an error that says which file to delete.
    let other = TempDir::new("localbad");
    fs::write(other.path().join(CIFAR10_ARCHIVE), b"garbage").unwrap();
    let msg = download_err(download::fetch_cifar10(other.path(), &closed_port_url(), CIFAR10_MD5, false));
    assert!(msg.contains(CIFAR10_ARCHIVE) && msg.contains("checksum mismatch") && msg.contains("delete it"), "{msg}");
    assert_eq!(entries(other.path()), vec![CIFAR10_ARCHIVE]);
}

#[test]
fn an_incomplete_existing_dataset_is_reported_not_overwritten() {
    let data_dir = TempDir::new("incomplete");
    let root = cifar::write_cifar10_tree(data_dir.path(), 2, 1).unwrap();
    fs::remove_file(root.join("test_batch.bin")).unwrap();
    let opts = DownloadOptions { url: Some(closed_port_url()), ..Default::default() };
    let err = download::ensure_cifar10(data_dir.path(), &opts).unwrap_err().to_string();
    assert!(err.contains("lacks test_batch.bin"), "{err}");
    assert!(root.join("data_batch_1.bin").is_file());
}

#[test]
fn md5_and_option_resolution() {
    let tmp = TempDir::new("md5file");
    let path = tmp.path().join("abc");
    fs::write(&path, b"abc").unwrap();
    // RFC 1321's test vector.
    assert_eq!(download::md5_file(&path).unwrap(), "900150983cd24fb0d6963f7d28e17f72");
    let opts =
        DownloadOptions { url: Some("http://mirror/x.tar.gz".into()), md5: Some("ABCDEF".into()), progress: false };
    assert_eq!(opts.resolved_url(), "http://mirror/x.tar.gz");
    assert_eq!(opts.resolved_md5(), "abcdef");
    if std::env::var_os(download::URL_ENV).is_none() {
        assert_eq!(DownloadOptions::default().resolved_url(), CIFAR10_URL);
    }
    if std::env::var_os(download::MD5_ENV).is_none() {
        assert_eq!(DownloadOptions::default().resolved_md5(), CIFAR10_MD5);
    }
}
