//! The figures the `vit` command draws, end to end on generated CIFAR-10 files with a tiny model:
//! `vit train` keeps `curves.png` beside `metrics.jsonl`, `vit eval` draws the confusion matrix
//! beside its table, `vit plot` redraws or overlays runs, and `vit analyze` writes the paper's
//! four figures with their numbers.

mod common;
use common::TempDir;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use vit::data::cifar;

/// The `vit` binary on one thread.
fn vit() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vit"));
    cmd.env_remove("RAYON_NUM_THREADS").arg("--threads").arg("1");
    cmd
}

/// Runs `cmd`; returns (success, stdout, stderr), asserting it did not panic.
fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("the vit binary runs");
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(!stderr.contains("panicked"), "the binary panicked:\n{stderr}");
    (out.status.success(), stdout, stderr)
}

fn expect_ok(cmd: &mut Command) -> (String, String) {
    let (ok, stdout, stderr) = run(cmd);
    assert!(ok, "expected success:\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}");
    (stdout, stderr)
}

/// The error line of a command that must fail with exit code 1.
fn expect_error(cmd: &mut Command) -> String {
    let out = cmd.output().expect("the vit binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "expected an error exit:\n{stderr}");
    assert!(!stderr.contains("panicked"), "the binary panicked:\n{stderr}");
    stderr
}

/// Trains a tiny ViT (dim 16, 2 blocks, patch 8: 16 patches + class token) for `epochs` epochs
/// of 4 steps on generated CIFAR-10 in `data`; returns the run directory.
fn train_tiny(data: &Path, out: &Path, epochs: usize, extra: &[&str]) -> PathBuf {
    let mut cmd = vit();
    cmd.arg("train").arg("--data-dir").arg(data).arg("--out").arg(out).arg("--quiet");
    cmd.args(["--dim", "16", "--depth", "2", "--heads", "2", "--patch", "8", "--mlp-ratio", "2"]);
    cmd.args(["--batch-size", "8", "--train-subset", "32", "--warmup", "0", "--epochs", &epochs.to_string()]);
    cmd.args(extra);
    expect_ok(&mut cmd);
    out.to_path_buf()
}

/// Decodes a PNG completely; returns its width and height.
fn png_size(path: &Path) -> (u32, u32) {
    let file = fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = png::Decoder::new(std::io::BufReader::new(file)).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    (info.width, info.height)
}

#[test]
fn train_draws_curves_eval_draws_confusion_plot_overlays_runs() {
    let tmp = TempDir::new("figures");
    cifar::write_cifar10_tree(tmp.path(), 8, 3).unwrap();
    let run_a = train_tiny(tmp.path(), &tmp.join("a"), 2, &[]);
    assert_eq!(png_size(&run_a.join("curves.png")), vit::analysis::curves::CURVES_SIZE);

    let ckpt = run_a.join("last.safetensors");
    let (stdout, stderr) = expect_ok(vit().arg("eval").arg(&ckpt).arg("--data-dir").arg(tmp.path()));
    assert!(stdout.contains("confusion matrix"), "{stdout}");
    let png = run_a.join("last-confusion.png");
    assert!(stderr.contains(&png.display().to_string()), "says where the picture is: {stderr}");
    assert_eq!(png_size(&png), vit::analysis::confusion::CONFUSION_SIZE);
    let csv = fs::read_to_string(run_a.join("last-confusion.csv")).unwrap();
    // A header and one row per class, the counts summing to the 8 test images.
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 11, "{csv}");
    let total: u64 = rows[1..].iter().flat_map(|r| r.split(',').skip(1)).map(|v| v.parse::<u64>().unwrap()).sum();
    assert_eq!(total, 8, "{csv}");
    // A chosen path that cannot be written is an error; the default place only warns.
    let bad = tmp.join("a/curves.png/x.png");
    let err =
        expect_error(vit().arg("eval").arg(&ckpt).arg("--data-dir").arg(tmp.path()).arg("--confusion-png").arg(&bad));
    assert!(err.contains("x.png"), "{err}");

    let run_b = train_tiny(tmp.path(), &tmp.join("b"), 1, &["--lr", "3e-3"]);
    fs::remove_file(run_b.join("curves.png")).unwrap();
    expect_ok(vit().arg("plot").arg(&run_b));
    assert_eq!(png_size(&run_b.join("curves.png")), vit::analysis::curves::CURVES_SIZE);
    let both = tmp.join("both.png");
    expect_ok(vit().arg("plot").arg(&run_a).arg(&run_b).arg("--out").arg(&both));
    assert_eq!(png_size(&both), vit::analysis::curves::CURVES_SIZE);
    let err = expect_error(vit().arg("plot").arg(tmp.join("no-such-run")));
    assert!(err.contains("metrics.jsonl"), "{err}");
}

/// A 32x32 RGB PNG (or of another size) with a gradient.
fn write_png(path: &Path, width: u32, height: u32) {
    let data: Vec<u8> = (0..width * height * 3).map(|i| (i * 7 % 256) as u8).collect();
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.write_header().unwrap().write_image_data(&data).unwrap();
    }
    fs::write(path, bytes).unwrap();
}

const FIGURES: [&str; 10] = [
    "rollout.png",
    "rollout.json",
    "attention_layers.png",
    "attention_layers.json",
    "attention_distance.png",
    "attention_distance.csv",
    "pos_embed_similarity.png",
    "pos_embed_similarity.csv",
    "patch_embed_pca.png",
    "patch_embed_pca.json",
];

#[test]
fn analyze_a_model_trained_for_a_few_steps_end_to_end() {
    use vit::analysis::{distance, filters, layers, pos_embed, rollout};
    let tmp = TempDir::new("analyze");
    cifar::write_cifar10_tree(tmp.path(), 8, 3).unwrap();
    let run = train_tiny(tmp.path(), &tmp.join("run"), 2, &[]);
    let out = tmp.join("figures");
    let (stdout, _) = expect_ok(
        vit().arg("analyze").arg(run.join("last.safetensors")).arg("--data-dir").arg(tmp.path()).arg("--out").arg(&out),
    );
    for name in FIGURES {
        assert!(stdout.contains(&out.join(name).display().to_string()), "lists {name}:\n{stdout}");
    }
    // The generated test split has 8 images of 8 classes: all are shown, one per class. The
    // model: 32x32 images, patch 8 (a 4x4 grid), 2 layers of 2 heads, dim 16, RGB filters 3x8x8.
    assert_eq!(rollout::rollout_size(8, 32), (1404, 420));
    assert_eq!(png_size(&out.join("rollout.png")), (1404, 420));
    assert_eq!(png_size(&out.join("attention_layers.png")), layers::layers_size(8, 2, 32));
    assert_eq!(layers::layers_size(8, 2, 32), (576, 912));
    assert_eq!(png_size(&out.join("attention_distance.png")), distance::DISTANCE_SIZE);
    assert_eq!(png_size(&out.join("pos_embed_similarity.png")), pos_embed::pos_embed_size(4));
    assert_eq!(pos_embed::pos_embed_size(4), (424, 464));
    // 16 filters of 192 values: 16 components.
    assert_eq!(png_size(&out.join("patch_embed_pca.png")), filters::filters_size(16, 8));
    assert_eq!(filters::filters_size(16, 8), (548, 336));

    let json: serde_json::Value = serde_json::from_str(&fs::read_to_string(out.join("rollout.json")).unwrap()).unwrap();
    assert_eq!(json["pooling"], "class token row");
    let images = json["images"].as_array().unwrap();
    assert_eq!(images.len(), 8);
    for image in images {
        let map: Vec<f64> = image["rollout"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap().clone())
            .map(|v| v.as_f64().unwrap())
            .collect();
        // The class token's rollout row over 16 patches: positive, and less than the whole row.
        assert_eq!(map.len(), 16);
        let sum: f64 = map.iter().sum();
        assert!(map.iter().all(|&v| v > 0.0) && sum < 1.0, "{map:?}");
    }
    // One line per head of every layer, each distance between 0 and the grid's diagonal.
    let csv = fs::read_to_string(out.join("attention_distance.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 4, "{csv}");
    for row in rows {
        let d: f64 = row.split(',').nth(2).unwrap().parse().unwrap();
        assert!(d > 0.0 && d < 24.0 * 2f64.sqrt(), "{row}");
    }
    // The similarity matrix: 16 x 16 with ones on the diagonal.
    let csv = fs::read_to_string(out.join("pos_embed_similarity.csv")).unwrap();
    let matrix: Vec<Vec<f64>> =
        csv.lines().skip(1).map(|l| l.split(',').skip(1).map(|v| v.parse().unwrap()).collect()).collect();
    assert_eq!(matrix.len(), 16);
    assert!((0..16).all(|i| matrix[i].len() == 16 && (matrix[i][i] - 1.0).abs() < 1e-4));

    // Images given on the command line replace the test images.
    let image = tmp.join("mine.png");
    write_png(&image, 32, 32);
    let mine = tmp.join("mine");
    expect_ok(
        vit()
            .arg("analyze")
            .arg(run.join("last.safetensors"))
            .arg(&image)
            .arg("--data-dir")
            .arg(tmp.path())
            .arg("--out")
            .arg(&mine),
    );
    assert_eq!(png_size(&mine.join("rollout.png")), rollout::rollout_size(1, 32));
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(mine.join("rollout.json")).unwrap()).unwrap();
    assert_eq!(json["images"][0]["image"], "mine.png");
}

/// A hybrid's patch embedding reads feature channels, so its filter figure is the stem's 7x7
/// convolution (64 filters of 3x7x7: the top 28 components), in place of `patch_embed_pca`.
#[test]
fn analyze_draws_a_hybrids_stem_filters() {
    use vit::analysis::filters;
    let tmp = TempDir::new("analyze-hybrid");
    cifar::write_cifar10_tree(tmp.path(), 8, 3).unwrap();
    // 32 px images: the stem's map is 8x8, patch 2 cuts it into a 4x4 grid.
    let run = tmp.join("run");
    let mut train = vit();
    train.arg("train").arg("--data-dir").arg(tmp.path()).arg("--out").arg(&run).arg("--quiet");
    train.args(["--model", "r-ti", "--patch", "2", "--dim", "16", "--depth", "2", "--heads", "2", "--mlp-ratio", "2"]);
    train.args(["--batch-size", "8", "--train-subset", "32", "--warmup", "0", "--epochs", "1"]);
    expect_ok(&mut train);
    let out = tmp.join("figures");
    let (stdout, stderr) = expect_ok(
        vit().arg("analyze").arg(run.join("last.safetensors")).arg("--data-dir").arg(tmp.path()).arg("--out").arg(&out),
    );
    for name in
        ["stem_conv_pca.png", "stem_conv_pca.json", "rollout.png", "attention_distance.png", "pos_embed_similarity.png"]
    {
        assert!(stdout.contains(&out.join(name).display().to_string()), "lists {name}:\n{stdout}");
    }
    assert!(!out.join("patch_embed_pca.png").exists() && !stderr.contains("skipped"), "{stderr}");
    assert_eq!(png_size(&out.join("stem_conv_pca.png")), filters::filters_size(28, 7));
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("stem_conv_pca.json")).unwrap()).unwrap();
    assert_eq!(json["filter_shape"], serde_json::json!([3, 7, 7]));
    assert_eq!(json["filters"], 64);
    assert_eq!(json["components"].as_array().unwrap().len(), 28);
}

#[test]
fn analyze_rejects_other_models_other_image_sizes_and_unwritable_output() {
    let tmp = TempDir::new("analyze-bad");
    cifar::write_cifar10_tree(tmp.path(), 8, 3).unwrap();
    let run = train_tiny(tmp.path(), &tmp.join("run"), 1, &[]);
    let ckpt = run.join("last.safetensors");
    let analyze = |ckpt: &Path, args: &[&std::ffi::OsStr]| {
        let mut cmd = vit();
        cmd.arg("analyze").arg(ckpt).arg("--data-dir").arg(tmp.path()).args(args);
        cmd
    };

    // An image of another size: named with both sizes, and nothing written.
    let big = tmp.join("big.png");
    write_png(&big, 40, 40);
    let out = tmp.join("never");
    let err = expect_error(&mut analyze(&ckpt, &[big.as_os_str(), "--out".as_ref(), out.as_os_str()]));
    assert!(err.contains("big.png") && err.contains("40x40") && err.contains("32x32"), "{err}");
    assert!(!out.exists(), "no output directory for a failed analysis");

    // An output directory that cannot be created (its parent is a file).
    let blocked = ckpt.join("figures");
    let err = expect_error(&mut analyze(&ckpt, &["--out".as_ref(), blocked.as_os_str()]));
    assert!(err.contains(&blocked.display().to_string()) && err.contains("Not a directory"), "{err}");

    // A checkpoint of another model: tensors of something that is not a ViT.
    let mut store = vit::nn::ParamStore::<f32>::new();
    store.add("conv1.weight", autograd::Tensor::from_vec(vec![0.5; 27], &[1, 3, 3, 3]), true);
    let resnet = tmp.join("resnet.safetensors");
    vit::checkpoint::save(&resnet, &store, &[], &Default::default()).unwrap();
    let err = expect_error(&mut analyze(&resnet, &[]));
    assert!(err.contains("resnet.safetensors") || err.contains("patch_embed"), "{err}");

    // A ViT checkpoint whose recorded config is another model's (width 32, not 16).
    let ck = vit::checkpoint::Checkpoint::open(&ckpt).unwrap();
    let mut config = ck.config().unwrap().unwrap();
    let (_, params) = vit::nn::VisionTransformer::init::<f32>(&config, 0).unwrap();
    config.dim = 32;
    let other = tmp.join("other.safetensors");
    vit::checkpoint::save(&other, &params, &[], &vit::checkpoint::config_metadata(&config)).unwrap();
    let err = expect_error(&mut analyze(&other, &[]));
    assert!(err.contains("checkpoint"), "{err}");

    // The model's data set of another shape: a CIFAR model asked about 28x28 digits.
    let digits = tmp.join("mnist");
    fs::create_dir_all(&digits).unwrap();
    let (images, labels) = vit::data::idx::file_names(vit::data::Split::Test);
    vit::data::idx::write_idx_images(&digits.join(images), 2, 28, 28, &[7u8; 2 * 28 * 28], false).unwrap();
    vit::data::idx::write_idx_labels(&digits.join(labels), &[0, 1], false).unwrap();
    let err = expect_error(&mut analyze(&ckpt, &["--dataset".as_ref(), "mnist".as_ref()]));
    assert!(err.contains("3x32x32") && err.contains("1x28x28"), "{err}");
}
