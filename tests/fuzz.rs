//! Fuzz-style property tests of every parser of outside bytes: IDX (raw and gzipped), CIFAR
//! batches, safetensors with the checkpoint metadata and the model built from it, and the PNG and
//! JPEG input of `vit predict`.
//!
//! Each parser gets a few thousand inputs: arbitrary bytes, and mutations of a valid file
//! (truncations, flipped bytes, overwritten length fields, inflated numbers, spliced bytes). Each
//! must give `Ok` (a mutation can leave a file valid) or `Err`, never a panic, and never allocate
//! more than the parser's stated cap, measured by the counting global allocator below. A request
//! above 1 GiB is refused outright, so a parser that sizes an allocation from an unchecked
//! header fails here instead of swapping the machine. Each test prints its case count, and
//! writes it to `target/tmp/fuzz-NAME.txt` for CI's log. `VIT_FUZZ_CASES` sets the count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::sync::{Mutex, Once};

use flate2::write::GzEncoder;
use flate2::Compression;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use vit::checkpoint::{self, Checkpoint};

mod common;
use common::crc32;
use vit::data::{cifar, idx};
use vit::nn::{ViTConfig, VisionTransformer};

// ---------------------------------------------------------------------------------------------
// The counting allocator
// ---------------------------------------------------------------------------------------------

/// Counts live bytes and their peak; refuses any single request above [`REFUSE_ABOVE`].
///
/// Only the allocations of *counted* threads are counted: the thread inside [`measure`], and
/// rayon's workers, to which a parser may hand work. The test harness's own threads are not:
/// between two tests libtest sends the finished one's result down a channel, whose next block
/// (tens of KiB) can be allocated while the next test measures, and a process-wide count then
/// blamed that on the parser (a flaky "allocated 76484 bytes for a 2-byte input").
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);
const REFUSE_ABOVE: usize = 1 << 30;

thread_local! {
    // A `const` initialiser and no destructor: reading it allocates nothing, and works at any
    // point of a thread's life, teardown included.
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn counted() -> bool {
    COUNTED.try_with(Cell::get).unwrap_or(false)
}

fn grew(size: usize) {
    if counted() {
        let live = LIVE.fetch_add(size as isize, Ordering::Relaxed) + size as isize;
        PEAK.fetch_max(live, Ordering::Relaxed);
    }
}

fn shrank(size: usize) {
    if counted() {
        LIVE.fetch_sub(size as isize, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded to the system allocator with the caller's layout and pointer;
// the counters are plain atomics and a const thread-local, and never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > REFUSE_ABOVE {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded with the caller's (valid, non-zero) layout.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > REFUSE_ABOVE {
            return std::ptr::null_mut();
        }
        // SAFETY: as in `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator with this layout.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > REFUSE_ABOVE {
            return std::ptr::null_mut();
        }
        // SAFETY: `ptr` came from this allocator with `layout`; `new_size` is non-zero.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            shrank(layout.size());
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The counters are shared by every counted thread: one test at a time, each holding this from
/// its first line.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    // rayon's global pool is built here, once, with its workers counted.
    static POOL: Once = Once::new();
    POOL.call_once(|| {
        // An error means the pool already exists (nothing in this binary builds it earlier);
        // its workers would then go uncounted, which only weakens the caps, so it is ignored.
        let _ = rayon::ThreadPoolBuilder::new().start_handler(|_| COUNTED.with(|c| c.set(true))).build_global();
    });
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` and returns its result with the peak of live bytes above the level at the start.
fn measure<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let was = COUNTED.with(|c| c.replace(true));
    let start = LIVE.load(Ordering::Relaxed);
    PEAK.store(start, Ordering::Relaxed);
    let r = f();
    let used = PEAK.load(Ordering::Relaxed) - start;
    COUNTED.with(|c| c.set(was));
    (r, used.max(0) as usize)
}

// ---------------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------------

/// Arbitrary bytes, and mutations of `valid`.
fn inputs(valid: Vec<u8>) -> BoxedStrategy<Vec<u8>> {
    let len = valid.len();
    let v = valid.clone();
    let truncated = (0..len).prop_map(move |n| v[..n].to_vec());
    let v = valid.clone();
    let flipped = prop::collection::vec((0..len, 1..=255u8), 1..8).prop_map(move |flips| {
        let mut b = v.clone();
        flips.iter().for_each(|&(i, x)| b[i] ^= x);
        b
    });
    // A length or dimension field overwritten with a huge, zero or random value, at any offset,
    // in either byte order.
    let v = valid.clone();
    let lying = (
        0..len.saturating_sub(8).max(1),
        prop_oneof![Just(u64::MAX), Just(0u64), Just(1 << 40), any::<u64>()],
        1..=8usize,
        any::<bool>(),
    )
        .prop_map(move |(at, value, width, big_endian)| {
            let mut b = v.clone();
            let bytes = if big_endian { value.to_be_bytes() } else { value.to_le_bytes() };
            let src = if big_endian { &bytes[8 - width..] } else { &bytes[..width] };
            let end = (at + width).min(b.len());
            b[at..end].copy_from_slice(&src[..end - at]);
            b
        });
    // A decimal number in a text header made 10^7 times larger (shapes, offsets, config fields).
    let v = valid.clone();
    let inflated = (0..len).prop_map(move |at| {
        let mut b = v.clone();
        if let Some(i) = (at..b.len()).find(|&i| b[i].is_ascii_digit()) {
            b.splice(i..i, *b"0000000");
        }
        b
    });
    let v = valid;
    let spliced = (0..len, prop::collection::vec(any::<u8>(), 0..32), 0..16usize).prop_map(move |(at, ins, del)| {
        let mut b = v.clone();
        let end = (at + del).min(b.len());
        b.splice(at..end, ins);
        b
    });
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..2 * len.max(1)),
        2 => truncated,
        3 => flipped,
        3 => lying,
        2 => inflated,
        2 => spliced,
    ]
    .boxed()
}

/// Runs `cases` inputs through `parse`, which must not panic and must keep its allocations at or
/// under `cap(input length)`; prints and records the tally.
fn fuzz(name: &str, inputs: BoxedStrategy<Vec<u8>>, cap: impl Fn(usize) -> usize, parse: impl Fn(&[u8]) -> bool) {
    let cases: u32 = std::env::var("VIT_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(3000);
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let ok = AtomicUsize::new(0);
    let peak = AtomicUsize::new(0);
    let result = runner.run(&inputs, |bytes| {
        let limit = cap(bytes.len());
        let (accepted, used) = measure(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| parse(&bytes))));
        let accepted =
            accepted.map_err(|_| TestCaseError::fail(format!("{name}: panicked on {} bytes", bytes.len())))?;
        if used > limit {
            return Err(TestCaseError::fail(format!(
                "{name}: allocated {used} bytes for a {}-byte input, over the cap of {limit}",
                bytes.len()
            )));
        }
        peak.fetch_max(used, Ordering::Relaxed);
        ok.fetch_add(usize::from(accepted), Ordering::Relaxed);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let line = format!(
        "fuzz {name}: {cases} cases, {} accepted, {} rejected, none panicked; peak allocation {} bytes",
        ok.load(Ordering::Relaxed),
        cases as usize - ok.load(Ordering::Relaxed),
        peak.load(Ordering::Relaxed)
    );
    println!("{line}");
    let _ = std::fs::write(Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fuzz-{name}.txt")), line + "\n");
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// A valid IDX images file (4 images of 5 x 6) and labels file, raw.
fn idx_files() -> (Vec<u8>, Vec<u8>) {
    let dir = std::env::temp_dir().join(format!("vit-fuzz-idx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pixels: Vec<u8> = (0..4 * 30).map(|i| (i * 37 % 256) as u8).collect();
    idx::write_idx_images(&dir.join("i"), 4, 5, 6, &pixels, false).unwrap();
    idx::write_idx_labels(&dir.join("l"), &[0, 3, 9, 1], false).unwrap();
    let files = (std::fs::read(dir.join("i")).unwrap(), std::fs::read(dir.join("l")).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
    files
}

/// An images file and its labels through the whole IDX pipeline.
fn parse_idx(images: &[u8], labels: &[u8]) -> bool {
    let p = Path::new("fuzz");
    let names: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    let Ok(images) = idx::decode_idx(p, images.to_vec()) else { return false };
    let Ok(labels) = idx::decode_idx(p, labels.to_vec()) else { return false };
    idx::from_bytes(p, images, p, labels, names).is_ok()
}

// ---------------------------------------------------------------------------------------------
// The parsers
// ---------------------------------------------------------------------------------------------

/// Raw IDX: the file's bytes, a copy at most, and the dataset (cap: 3 bytes per input byte).
#[test]
fn fuzz_idx_raw() {
    let _serial = serial();
    let (images, labels) = idx_files();
    let l = labels.clone();
    fuzz("idx-raw-images", inputs(images.clone()), |n| 3 * n + (64 << 10), move |b| parse_idx(b, &l));
    fuzz("idx-raw-labels", inputs(labels), |n| 3 * n + (64 << 10), move |b| parse_idx(&images, b));
}

/// Gzipped IDX: never more than the header can honestly describe, at most 1032 bytes per
/// compressed byte (deflate's limit), twice over while the buffer grows, plus the inflater's
/// window and buffers.
#[test]
fn fuzz_idx_gzip() {
    let _serial = serial();
    let (images, labels) = idx_files();
    let cap = |n: usize| 2 * 1032 * n + (256 << 10);
    let gz_labels = gzip(&labels);
    let l = gz_labels.clone();
    fuzz("idx-gzip-compressed", inputs(gzip(&images)), cap, move |b| parse_idx(b, &l));
    // Lies inside the compressed stream: mutate the IDX bytes, then compress them.
    let l = gz_labels;
    let inner = inputs(images).prop_map(|b| gzip(&b)).boxed();
    fuzz("idx-gzip-inner", inner, cap, move |b| parse_idx(b, &l));
}

/// A gzip file whose header says 16 images of 28 x 28 and that then inflates to 50 MB: only as
/// much is inflated as the header says (item 6 of issue 9). And a 64-byte file claiming
/// 4 x 10^9 images is refused before anything is inflated.
#[test]
fn a_gzip_bomb_behind_a_small_header_is_not_inflated() {
    let _serial = serial();
    let mut bomb = vec![0, 0, 8, 3, 0, 0, 0, 16, 0, 0, 0, 28, 0, 0, 0, 28];
    bomb.resize(50 << 20, 0);
    let gz = gzip(&bomb);
    drop(bomb);
    let (r, used) = measure(|| {
        idx::decode_idx(Path::new("bomb.gz"), gz.clone())
            .and_then(|b| idx::parse_images(Path::new("bomb.gz"), &b).map(|_| ()))
    });
    let err = r.unwrap_err().to_string();
    assert!(err.contains("longer than its header says"), "{err}");
    assert!(used < gz.len() + (1 << 20), "inflating a {}-byte file took {used} bytes", gz.len());

    let liar = gzip(&[0, 0, 8, 3, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 28, 0, 0, 0, 28]);
    let (r, used) = measure(|| idx::decode_idx(Path::new("liar.gz"), liar.clone()));
    let err = r.unwrap_err().to_string();
    assert!(err.contains("more than a gzip file of"), "{err}");
    assert!(used < 1 << 20, "{used}");
}

/// CIFAR batches: the records' copy (cap: 2 bytes per input byte).
#[test]
fn fuzz_cifar() {
    let _serial = serial();
    let mut valid = Vec::new();
    for (i, label) in [3u8, 9, 0].into_iter().enumerate() {
        valid.push(label);
        valid.extend((0..3072).map(|p| ((p + i * 11) % 256) as u8));
    }
    let p = Path::new("fuzz.bin");
    fuzz("cifar10", inputs(valid.clone()), |n| 2 * n + (64 << 10), |b| cifar::parse_cifar10(p, b).is_ok());
    let mut c100 = Vec::new();
    for (i, (coarse, fine)) in [(3u8, 50u8), (19, 99), (0, 0)].into_iter().enumerate() {
        c100.extend([coarse, fine]);
        c100.extend((0..3072).map(|p| ((p * 3 + i) % 256) as u8));
    }
    fuzz("cifar100", inputs(c100), |n| 2 * n + (64 << 10), |b| cifar::parse_cifar100(p, b).is_ok());
}

/// A tiny model's checkpoint bytes, with its config and dataset in the metadata (or none).
fn checkpoint_bytes(with_config: bool) -> Vec<u8> {
    let config = ViTConfig {
        image_size: 8,
        patch_size: 4,
        in_chans: 1,
        num_classes: 3,
        dim: 8,
        depth: 1,
        heads: 2,
        mlp_dim: 16,
        ..ViTConfig::tiny(4, 8)
    };
    let (_, store) = VisionTransformer::init::<f32>(&config, 1).unwrap();
    let mut meta = if with_config { checkpoint::config_metadata(&config) } else { Default::default() };
    meta.insert(checkpoint::DATASET_KEY.into(), "mnist".into());
    let path = std::env::temp_dir().join(format!("vit-fuzz-{}-{with_config}.safetensors", std::process::id()));
    checkpoint::save(&path, &store, &[], &meta).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    bytes
}

/// Safetensors, the config and dataset in its metadata, and the model built and loaded from it:
/// the header's structures, then at most the file's own values twice over in f32 (a model larger
/// than the file is refused before it is built).
#[test]
fn fuzz_safetensors_and_checkpoint_metadata() {
    let _serial = serial();
    let parse = |b: &[u8]| {
        let Ok(ckpt) = Checkpoint::from_bytes(b.to_vec(), "fuzz.safetensors") else { return false };
        let a = checkpoint::load_model(&ckpt, None).is_ok();
        let b = checkpoint::load_model(&ckpt, Some(2)).is_ok();
        a || b
    };
    let cap = |n: usize| 24 * n + (1 << 20);
    fuzz("safetensors-with-config", inputs(checkpoint_bytes(true)), cap, parse);
    fuzz("safetensors-shapes-only", inputs(checkpoint_bytes(false)), cap, parse);
}

/// Recomputes every chunk's CRC, so mutated headers reach the decoder's checks past the CRC.
fn fix_png_crcs(mut b: Vec<u8>) -> Vec<u8> {
    let mut at = 8;
    while at + 12 <= b.len() {
        let n = u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) as usize;
        let Some(end) = (at + 8).checked_add(n).filter(|&e| e + 4 <= b.len()) else { break };
        let crc = crc32(&b[at + 4..end]);
        b[end..end + 4].copy_from_slice(&crc.to_be_bytes());
        at = end + 4;
    }
    b
}

/// PNG input of `vit predict`: the decoded image is bounded by what the file's deflate stream can
/// hold (1032 bytes per byte, at up to 32 output bits per input bit of a 1-bit image), plus the
/// decoder's buffers.
#[test]
fn fuzz_png() {
    let _serial = serial();
    let (w, h) = (12u32, 9u32);
    let data: Vec<u8> = (0..w * h * 3).map(|i| (i * 29 % 256) as u8).collect();
    let mut valid = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut valid, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header().unwrap().write_image_data(&data).unwrap();
    }
    let cap = |n: usize| 32 * 1032 * n + (1 << 20);
    let parse = |b: &[u8]| vit::image::decode_image(b, 3, 8).is_ok();
    fuzz("png", inputs(valid.clone()), cap, parse);
    fuzz("png-crc-fixed", inputs(valid).prop_map(fix_png_crcs).boxed(), cap, parse);
}

/// JPEG input of `vit predict`: at most 1024 pixels per file byte are decoded (a JPEG codes
/// every 8 x 8 block in at least a bit), at a few bytes a pixel in the decoder's planes.
#[test]
fn fuzz_jpeg() {
    let _serial = serial();
    let (w, h) = (24u16, 16u16);
    let data: Vec<u8> = (0..w as usize * h as usize * 3).map(|i| (i * 13 % 256) as u8).collect();
    let mut valid = Vec::new();
    jpeg_encoder::Encoder::new(&mut valid, 80).encode(&data, w, h, jpeg_encoder::ColorType::Rgb).unwrap();
    let cap = |n: usize| 16 * 1024 * n + (2 << 20);
    fuzz("jpeg", inputs(valid), cap, |b| vit::image::decode_image(b, 3, 8).is_ok());
}

/// A 165-byte PNG claiming 100000 x 100000 pixels (item 3 of issue 9), and a checkpoint whose
/// metadata claims dim 16384 and depth 64 (item 4): errors, with no allocation of their size.
#[test]
fn huge_claims_are_refused_before_allocating() {
    let _serial = serial();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    let (r, used) = measure(|| vit::image::decode_image(&png, 3, 32));
    let err = r.unwrap_err();
    assert!(err.contains("100000 x 100000") && err.contains("larger than"), "{err}");
    assert!(used < 1 << 20, "{used}");

    let bytes = checkpoint_bytes(true);
    let ckpt = Checkpoint::from_bytes(bytes, "big.safetensors").unwrap();
    let mut config = ckpt.config().unwrap().unwrap();
    config.dim = 16384;
    config.depth = 64;
    config.heads = 16;
    config.mlp_dim = 4 * 16384;
    let names = ckpt.names().to_vec();
    let tensors: Vec<(String, autograd::Tensor<f32>)> =
        names.iter().map(|n| (n.clone(), ckpt.tensor(n).unwrap())).collect();
    let refs: Vec<(&str, &autograd::Tensor<f32>)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let path = std::env::temp_dir().join(format!("vit-fuzz-big-{}.safetensors", std::process::id()));
    checkpoint::write_tensors(&path, &refs, &checkpoint::config_metadata(&config)).unwrap();
    let lying = Checkpoint::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let (r, used) = measure(|| checkpoint::load_model(&lying, None).map(|_| ()));
    let err = r.unwrap_err().to_string();
    assert!(err.contains("parameters"), "{err}");
    assert!(used < 1 << 20, "{used}");
}
