//! Data-parallel training under `mpirun` (feature `mpi`): two ranks follow the trajectory of one
//! process, resume on any number of ranks continues it, and a rank that dies or hangs brings
//! the job down in bounded time with the last checkpoint intact.
//!
//! The runs are `vit train` processes on the small Fashion-MNIST recipe (README), on subsets,
//! with one thread per rank. `mpirun` runs as root here (CI), so it gets `--allow-run-as-root`
//! (through its environment variables), and `--oversubscribe --bind-to none` so two ranks and
//! their collective threads share this machine's two cores.
//!
//! What is bit for bit and what within f32 tolerance:
//! - two ranks (one shard each) equal, bit for bit, one process accumulating the same two
//!   shards (`--accum-steps 2`): the same per-shard computations on one thread, and the sum of
//!   two gradients is `a + b` either way;
//! - against one process computing the whole batch at once they agree within f32 tolerance
//!   only: the GEMMs then sum over all the batch's rows in one pass, in another order.

mod common;
use common::TempDir;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use vit::checkpoint::Checkpoint;

const VIT: &str = env!("CARGO_BIN_EXE_vit");

/// The small Fashion-MNIST recipe of the README, on subsets small enough for seconds per run
/// (256 training images: 4 steps an epoch).
const RECIPE: &[&str] = &[
    "--dataset",
    "fashion-mnist",
    "--dim",
    "64",
    "--depth",
    "4",
    "--heads",
    "4",
    "--mlp-ratio",
    "2",
    "--batch-size",
    "64",
    "--lr",
    "2e-3",
    "--warmup",
    "0.3",
    "--label-smoothing",
    "0",
    "--drop-path",
    "0",
    "--augment",
    "none",
    "--train-subset",
    "256",
    "--test-subset",
    "200",
];

/// Whether this build can run the tests; says why not, visibly, when it cannot.
fn available() -> bool {
    if !cfg!(feature = "mpi") {
        println!("skipped: built without the `mpi` feature (`cargo test --release --features mpi --test distributed`)");
        return false;
    }
    if vit::data::load_from(vit::data::DatasetKind::FashionMnist, None, vit::data::Split::Test).is_err() {
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "CI=true but Fashion-MNIST is missing");
        println!("skipped: Fashion-MNIST not found (`apt-get install dataset-fashion-mnist`)");
        return false;
    }
    true
}

/// `vit`'s arguments: one thread, [`RECIPE`] but the flags `extra` sets again, no progress bar,
/// the output directory, `extra`.
fn args(out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = ["--threads", "1", "train", "--quiet"].map(String::from).to_vec();
    for pair in RECIPE.chunks(2).filter(|p| !extra.contains(&p[0])) {
        a.extend(pair.iter().map(|s| s.to_string()));
    }
    a.extend(["--out".to_string(), out.display().to_string()]);
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn mpirun(np: usize) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["-np", &np.to_string(), "--oversubscribe", "--bind-to", "none", VIT]);
    c.env("OMPI_ALLOW_RUN_AS_ROOT", "1").env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    c
}

/// Runs `vit` on `np` ranks (0: one process, no mpirun), checking it succeeded.
fn run(np: usize, out: &Path, extra: &[&str]) -> Output {
    let mut c = if np == 0 { Command::new(VIT) } else { mpirun(np) };
    let o = c.args(args(out, extra)).output().expect("mpirun (openmpi-bin) and vit can be started");
    assert!(
        o.status.success(),
        "{np} rank(s) failed ({}):\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// Every tensor of a checkpoint (parameters and optimizer state), by name.
fn tensors(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let c = Checkpoint::open(dir.join("last.safetensors")).unwrap();
    let mut names: Vec<String> = c.names().to_vec();
    names.sort();
    names.into_iter().map(|n| (n.clone(), c.tensor::<f32>(&n).unwrap().into_vec())).collect()
}

fn step_of(dir: &Path) -> u64 {
    Checkpoint::open(dir.join("last.safetensors")).unwrap().meta("vit.global_step").unwrap().parse().unwrap()
}

fn assert_bitwise(a: &Path, b: &Path) {
    let (ta, tb) = (tensors(a), tensors(b));
    assert_eq!(ta.len(), tb.len());
    for ((na, va), (nb, vb)) in ta.iter().zip(&tb) {
        assert_eq!(na, nb);
        let same = va.iter().zip(vb).all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "{na} differs between {} and {}", a.display(), b.display());
    }
}

/// The largest `|a - b|` over the parameters (optimizer state left out).
fn max_difference(a: &Path, b: &Path) -> f64 {
    let (ta, tb) = (tensors(a), tensors(b));
    let mut worst = 0f64;
    for ((na, va), (_, vb)) in ta.iter().zip(&tb).filter(|((n, _), _)| !n.starts_with("optim.")) {
        for (x, y) in va.iter().zip(vb) {
            let d = (*x as f64 - *y as f64).abs();
            assert!(d.is_finite(), "{na}: {x} vs {y}");
            worst = worst.max(d);
        }
    }
    worst
}

fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn two_ranks_follow_the_one_process_trajectory() {
    if !available() {
        return;
    }
    let tmp = TempDir::new("dist-equal");
    let (one, accum, two) = (tmp.join("one"), tmp.join("accum"), tmp.join("two"));
    // Two epochs of 4 steps: evaluation (sharded over the ranks) and every write included.
    let steps = ["--epochs", "2"];
    run(0, &one, &steps);
    run(0, &accum, &[&steps[..], &["--accum-steps", "2"]].concat());
    let o = run(2, &two, &steps);
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(log.contains("data-parallel over 2 ranks (MPI)"), "{log}");
    assert!(log.contains("all-reduce (MPI, 2 ranks): 0.6 MB of gradients per step"), "{log}");
    assert_eq!(step_of(&two), 8);

    // Two ranks = one process accumulating the same two shards, bit for bit.
    assert_bitwise(&two, &accum);
    // = one process with the whole batch at once, within f32 tolerance. The largest
    // differences are in the attention's key biases, whose true gradient is zero (softmax
    // ignores a shift of the scores): theirs is rounding noise, which AdamW scales to steps of
    // up to the learning rate, 2e-3, in any direction; every other parameter agrees to ~1e-6.
    let d = max_difference(&two, &one);
    println!("2 ranks vs 1 process (whole batch), 8 steps: largest parameter difference {d:.2e}");
    assert!(d < 1e-4, "2 ranks drifted from 1 process: {d:.3e}");
    // The sharded evaluation counts the same test images: the same accuracies.
    let (m1, m2) = (metrics(&accum), metrics(&two));
    assert_eq!(m1.len(), 2);
    for (a, b) in m1.iter().zip(&m2) {
        assert_eq!(a["test_acc"], b["test_acc"]);
        assert_eq!(a["train_acc"], b["train_acc"]);
        let (la, lb) = (a["test_loss"].as_f64().unwrap(), b["test_loss"].as_f64().unwrap());
        assert!((la - lb).abs() < 1e-5, "test loss {la} vs {lb}");
    }
}

/// The shards of a mixed batch (mixup, cutmix) are mixed as the whole batch is, and each
/// shard's dropout and stochastic depth are its own: still bit for bit.
#[test]
fn two_ranks_mix_and_drop_as_one_process_accumulating() {
    if !available() {
        return;
    }
    let tmp = TempDir::new("dist-mix");
    let (accum, two) = (tmp.join("accum"), tmp.join("two"));
    let strong = [
        "--epochs",
        "1",
        "--augment",
        "strong",
        "--mixup",
        "0.8",
        "--cutmix",
        "1.0",
        "--drop-path",
        "0.1",
        "--dropout",
        "0.1",
    ];
    run(0, &accum, &[&strong[..], &["--accum-steps", "2"]].concat());
    run(2, &two, &strong);
    assert_bitwise(&two, &accum);
}

/// Data-parallel training on GPUs, checked on the CUDA emulator (feature `cuda`): the gradient
/// buckets are device buffers, filled and emptied on the device, and summed by the engine. The
/// emulator has no NCCL, so its sums go through host memory over MPI (what a GPU job without
/// libnccl does); two ranks still equal one process accumulating the two shards on the
/// emulator, bit for bit. A tiny model: the emulator runs every CUDA thread on the CPU.
#[test]
fn two_ranks_on_the_cuda_emulator_equal_one_process_accumulating() {
    if !available() {
        return;
    }
    if !cfg!(feature = "cuda") {
        println!("skipped: built without the `cuda` feature: the data-parallel GPU path not run on the emulator");
        return;
    }
    let tmp = TempDir::new("dist-gpu");
    let (accum, two) = (tmp.join("accum"), tmp.join("two"));
    let tiny = [
        "--device",
        "cuda:emulator",
        "--dim",
        "16",
        "--depth",
        "1",
        "--heads",
        "2",
        "--patch",
        "7",
        "--batch-size",
        "16",
        "--train-subset",
        "48",
        "--test-subset",
        "16",
        "--epochs",
        "1",
        "--dropout",
        "0.1",
    ];
    run(0, &accum, &[&tiny[..], &["--accum-steps", "2"]].concat());
    let o = run(2, &two, &tiny);
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(log.contains("device: cuda:emulator"), "{log}");
    assert!(log.contains("data-parallel over 2 ranks (MPI)"), "{log}");
    assert_eq!(step_of(&two), 3);
    assert_bitwise(&two, &accum);
}

#[test]
fn a_two_rank_run_resumes_on_one_or_two_ranks() {
    if !available() {
        return;
    }
    let tmp = TempDir::new("dist-resume");
    let straight = tmp.join("straight");
    run(2, &straight, &["--epochs", "2"]);
    // Stopped after 3 steps, mid-epoch.
    let stopped = tmp.join("stopped");
    run(2, &stopped, &["--epochs", "2", "--max-steps", "3"]);
    assert_eq!(step_of(&stopped), 3);
    for np in [0, 2] {
        let dir = tmp.join(format!("resumed-by-{np}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(stopped.join("last.safetensors"), dir.join("last.safetensors")).unwrap();
        let o = run(np, &dir, &["--epochs", "2", "--resume"]);
        let log = String::from_utf8_lossy(&o.stderr);
        let ranks = if np == 0 { "1 rank(s) x 2" } else { "2 rank(s) x 1" };
        assert!(log.contains(&format!("in 2 shard(s); continuing on {ranks}")), "{log}");
        assert_eq!(step_of(&dir), 8);
        assert_bitwise(&dir, &straight);
    }
}

/// The rank's pid among `mpirun`'s children (found by its environment).
fn rank_pid(mpirun: &Child, rank: usize) -> Option<i32> {
    let want = format!("OMPI_COMM_WORLD_RANK={rank}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        let ppid: u32 = stat.rsplit(')').next()?.split_whitespace().nth(1)?.parse().ok()?;
        let env = std::fs::read(e.path().join("environ")).ok()?;
        let has = env.split(|&b| b == 0).any(|v| v == want.as_bytes());
        (ppid == mpirun.id() && has).then_some(pid)
    })
}

/// Starts a long 2-rank run, waits for its first checkpoint, does `signal` to rank 1, and
/// returns the job's exit status, how long it took to end after the signal, and the checkpoint
/// bytes from before.
fn disturb_rank_one(dir: &Path, signal: i32, extra: &[&str]) -> (std::process::ExitStatus, Duration, Vec<u8>, String) {
    let last = dir.join("last.safetensors");
    let mut job = mpirun(2)
        .args(args(dir, &[&["--epochs", "1000", "--train-subset", "128"][..], extra].concat()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !last.exists() || step_of(dir) < 4 {
        assert!(t.elapsed() < Duration::from_secs(120), "no checkpoint after 2 minutes");
        assert!(job.try_wait().unwrap().is_none(), "the job ended early");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = rank_pid(&job, 1).expect("rank 1 among mpirun's children");
    // SAFETY: sending a signal to a process id has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    let signalled = Instant::now();
    let status = loop {
        if let Some(s) = job.try_wait().unwrap() {
            break s;
        }
        if signalled.elapsed() > Duration::from_secs(90) {
            let _ = job.kill();
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("the job did not end within 90 s of rank 1's {signal}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = signalled.elapsed();
    let mut err = String::new();
    std::io::Read::read_to_string(job.stderr.as_mut().unwrap(), &mut err).unwrap();
    (status, took, std::fs::read(&last).unwrap(), err)
}

/// The checkpoint left is whole: it opens, and one process resumes from it.
fn assert_resumable(dir: &Path) {
    let step = step_of(dir);
    let to = (step + 1).to_string();
    run(0, dir, &["--epochs", "1000", "--train-subset", "128", "--resume", "--max-steps", &to]);
    assert_eq!(step_of(dir), step + 1);
}

#[test]
fn a_killed_rank_ends_the_job_with_the_checkpoint_intact() {
    if !available() {
        return;
    }
    let tmp = TempDir::new("dist-kill");
    let dir: PathBuf = tmp.join("run");
    let (status, took, before, err) = disturb_rank_one(&dir, libc::SIGKILL, &[]);
    println!("killed rank 1: the job ended in {:.1} s with {status}", took.as_secs_f64());
    assert!(!status.success(), "{err}");
    // The launcher names the rank that died and how (Open MPI: "mpirun noticed that process
    // rank 1 ... exited on signal 9 (Killed)").
    assert!(err.contains("rank 1") && err.contains("signal 9"), "no word of rank 1's death: {err}");
    assert!(took < Duration::from_secs(60), "{took:?}");
    let c = Checkpoint::from_bytes(before, dir.join("last.safetensors")).expect("the checkpoint is whole");
    assert!(!c.is_empty());
    assert_resumable(&dir);
}

/// A rank that stops answering (SIGSTOP) is not waited for forever: the other rank's deadline
/// (`--dist-timeout`) aborts the job.
#[test]
fn a_hung_rank_is_aborted_at_the_deadline() {
    if !available() {
        return;
    }
    let tmp = TempDir::new("dist-hang");
    let dir: PathBuf = tmp.join("run");
    let (status, took, _, err) = disturb_rank_one(&dir, libc::SIGSTOP, &["--dist-timeout", "5"]);
    println!("stopped rank 1: the job ended in {:.1} s with {status}", took.as_secs_f64());
    assert!(!status.success(), "{err}");
    assert!(err.contains("no answer from the other ranks within 5 s"), "{err}");
    assert!(took < Duration::from_secs(60), "{took:?}");
    assert_resumable(&dir);
}

/// A build without MPI refuses to be one of several launched processes.
#[test]
fn a_build_without_mpi_refuses_a_multi_process_launch() {
    if cfg!(feature = "mpi") {
        println!("skipped: this build has MPI (the refusal is for builds without it)");
        return;
    }
    let tmp = TempDir::new("dist-nompi");
    let o = Command::new(VIT).args(args(tmp.path(), &[])).env("OMPI_COMM_WORLD_SIZE", "2").output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("built without MPI") && err.contains("--features mpi"), "{err}");
}
