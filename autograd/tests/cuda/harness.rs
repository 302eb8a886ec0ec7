//! A small test harness for the GPU tests: every test runs on every CUDA device the machine has
//! and on the CUDA emulator, and a missing GPU is reported with the number of tests it skipped.
//! A run on the emulator is named as such: it checks the kernels' index math and the host-side
//! mapping (launch sizes, strides, cuBLAS arguments), not the hardware.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use autograd::cuda::{self, Gpu};
use autograd::Float;
use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};

/// A test: runs on one device, `Err` (or a panic) on failure.
pub type TestFn = fn(&Arc<Gpu>) -> Result<(), String>;

/// Tests of a module, with their names.
pub type Tests = &'static [(&'static str, TestFn)];

/// Proptest cases per property on a device (`PROPTEST_CASES` overrides).
pub fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(64)
}

/// Runs the property `f` on `cases()` values drawn from `strategy` with a fixed seed, shrinking
/// a failure to a small case; `Err` names the failing input.
pub fn prop<S: Strategy>(strategy: S, f: impl Fn(S::Value) -> Result<(), String>) -> Result<(), String>
where
    S::Value: std::fmt::Debug,
{
    prop_cases(cases(), strategy, f)
}

/// [`prop`] with `n` cases (for properties whose every case is expensive, such as a gradcheck).
pub fn prop_cases<S: Strategy>(n: u32, strategy: S, f: impl Fn(S::Value) -> Result<(), String>) -> Result<(), String>
where
    S::Value: std::fmt::Debug,
{
    let config =
        Config { cases: n, rng_seed: RngSeed::Fixed(0x5eed_c0da), failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new(config);
    runner.run(&strategy, |v| f(v).map_err(TestCaseError::fail)).map_err(|e| e.to_string())
}

/// `Ok` if `got` and `want` agree elementwise within `tol` (absolute + relative to `want`).
pub fn close<T: Float>(what: &str, got: &[T], want: &[T], tol: f64) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("{what}: {} values, want {}", got.len(), want.len()));
    }
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        let (a, b) = (a.to_f64(), b.to_f64());
        let same_nan = a.is_nan() && b.is_nan();
        if !same_nan && ((a - b).abs() > tol * (1.0 + b.abs()) || (a - b).is_nan()) {
            return Err(format!("{what}: element {i} of {}: got {a}, want {b} (tolerance {tol})", got.len()));
        }
    }
    Ok(())
}

/// The tolerance for comparing a device result with the CPU's in element type `T`.
pub fn tol<T: Float>() -> f64 {
    match T::DTYPE {
        autograd::DType::F32 => 2e-5,
        autograd::DType::F64 => 1e-11,
    }
}

/// Runs `tests` on every available device; the process's exit code is the verdict.
pub fn run(modules: &[Tests]) -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let tests: Vec<(&str, TestFn)> = modules.iter().flat_map(|m| m.iter().copied()).collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in &tests {
            println!("{name}: test");
        }
        return ExitCode::SUCCESS;
    }
    let filter: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let selected: Vec<(&str, TestFn)> =
        tests.into_iter().filter(|(n, _)| filter.is_empty() || filter.iter().any(|f| n.contains(f.as_str()))).collect();

    let mut devices: Vec<Arc<Gpu>> = Vec::new();
    match cuda::device_count() {
        Ok(n) => {
            for i in 0..n {
                match cuda::device(i) {
                    Ok(g) => devices.push(g),
                    Err(e) => {
                        println!("FAILED: cuda:{i} exists but cannot be opened: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
        }
        Err(e) => println!("skipped: no CUDA device ({e}): {} GPU tests not run on a GPU", selected.len()),
    }
    if std::env::var("AUTOGRAD_CUDA_EMULATOR").as_deref() == Ok("0") {
        println!("skipped: AUTOGRAD_CUDA_EMULATOR=0: {} tests not run on the emulator", selected.len());
    } else {
        match cuda::emulator() {
            Ok(g) => {
                println!(
                    "emulation: {} tests also run on the CUDA emulator (the kernel sources built by the host C++ \
                     compiler, each CUDA thread a fiber, GEMMs by cuBLAS's definition): this checks index math, \
                     launch bounds and barriers, not the GPU, cuBLAS or NVRTC",
                    selected.len()
                );
                devices.push(g)
            }
            Err(e) => {
                println!("FAILED: the CUDA emulator is unavailable (set AUTOGRAD_CUDA_EMULATOR=0 to skip it): {e}");
                return ExitCode::FAILURE;
            }
        }
    }

    let jobs: Vec<(Arc<Gpu>, &str, TestFn)> =
        devices.iter().flat_map(|d| selected.iter().map(move |&(n, f)| (d.clone(), n, f))).collect();
    // `exclusive::` tests read counters that every test on the device moves: run them alone.
    let (exclusive, shared): (Vec<_>, Vec<_>) = jobs.iter().partition(|(_, n, _)| n.starts_with("exclusive::"));
    let failures = Mutex::new(Vec::new());
    let run_one = |(gpu, name, f): &(Arc<Gpu>, &str, TestFn)| {
        let t0 = std::time::Instant::now();
        let verdict = catch_unwind(AssertUnwindSafe(|| f(gpu))).unwrap_or_else(|p| {
            Err(p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panicked".into()))
        });
        let dev = if gpu.is_emulator() { "emulator".to_string() } else { format!("cuda:{}", gpu.ordinal()) };
        match verdict {
            Ok(()) => println!("test {name} on {dev} ... ok ({:.1}s)", t0.elapsed().as_secs_f64()),
            Err(e) => {
                println!("test {name} on {dev} ... FAILED\n    {e}");
                failures.lock().unwrap().push(format!("{name} on {dev}"));
            }
        }
    };
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(8);
    println!("\nrunning {} tests on {} device(s)", jobs.len(), devices.len());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = shared.get(i) else { break };
                run_one(job);
            });
        }
    });
    exclusive.iter().for_each(|job| run_one(job));
    let failures = failures.into_inner().unwrap();
    let passed = jobs.len() - failures.len();
    let on_gpu = jobs.iter().filter(|(g, _, _)| !g.is_emulator()).count();
    println!(
        "\n{on_gpu} runs on a GPU, {} on the emulator{}",
        jobs.len() - on_gpu,
        if on_gpu == 0 { " (nothing here ran on GPU hardware)" } else { "" }
    );
    if failures.is_empty() {
        println!("test result: ok. {passed} passed; 0 failed");
        ExitCode::SUCCESS
    } else {
        println!(
            "failures:\n    {}\ntest result: FAILED. {passed} passed; {} failed",
            failures.join("\n    "),
            failures.len()
        );
        ExitCode::FAILURE
    }
}
