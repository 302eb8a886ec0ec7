//! Compiles every CUDA kernel source through NVRTC to PTX, for each architecture given
//! (default: sm_80 and sm_90), and fails on any compile error or warning, or if a kernel the
//! sources declare is missing from the PTX. CI runs it, with NVRTC from the `nvidia-cuda-nvrtc`
//! wheel on `LD_LIBRARY_PATH`, so no kernel reaches main without having compiled.
//!
//! ```sh
//! cargo run --release -p vit-autograd --features cuda --example nvrtc_check -- [--arch 80 --arch 90] [--out DIR]
//! ```
//!
//! `--out DIR` writes each architecture's PTX there (`vit_kernels.sm_90.ptx`) for inspection.

use std::process::ExitCode;

use autograd::cuda::kernels::{self, Target};
use autograd::cuda::nvrtc;

fn main() -> ExitCode {
    let mut archs: Vec<(u32, u32)> = Vec::new();
    let mut out: Option<std::path::PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--arch" => {
                let v = args.next().unwrap_or_default();
                let Ok(n) = v.trim_start_matches("sm_").parse::<u32>() else {
                    eprintln!("nvrtc_check: --arch expects e.g. 80 or sm_90, got {v:?}");
                    return ExitCode::FAILURE;
                };
                archs.push((n / 10, n % 10));
            }
            "--out" => out = args.next().map(Into::into),
            _ => {
                eprintln!("usage: nvrtc_check [--arch 80 ...] [--out DIR]");
                return ExitCode::FAILURE;
            }
        }
    }
    if archs.is_empty() {
        archs = vec![(8, 0), (9, 0)];
    }
    match nvrtc::version() {
        Ok((major, minor)) => println!("NVRTC {major}.{minor}"),
        Err(e) => {
            eprintln!("nvrtc_check: {e}");
            return ExitCode::FAILURE;
        }
    }
    // The check itself: a source with a known warning must produce a non-empty log, or a
    // warning in our kernels would slip through unseen.
    let probe = "extern \"C\" __global__ void probe(float* y) { int unused; y[0] = 1.0f; }";
    match nvrtc::compile("warning_probe.cu", probe, archs[0]) {
        Ok(c) if !c.log.is_empty() => {}
        Ok(_) => {
            eprintln!("nvrtc_check: NVRTC reported no warning for a source with an unused variable; the warning check cannot work");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("nvrtc_check: the warning probe did not compile: {e}");
            return ExitCode::FAILURE;
        }
    }
    let source = kernels::program(Target::Nvrtc, "");
    let mut declared = kernels::kernel_names();
    declared.sort();
    let mut ok = true;
    for arch in archs {
        let t0 = std::time::Instant::now();
        match nvrtc::compile("vit_kernels.cu", &source, arch) {
            Ok(c) => {
                let mut entries = nvrtc::ptx_entries(&c.ptx);
                entries.sort();
                println!(
                    "sm_{}{}: {} kernels, {} bytes of PTX in {:.1}s",
                    arch.0,
                    arch.1,
                    entries.len(),
                    c.ptx.len(),
                    t0.elapsed().as_secs_f64()
                );
                if !c.log.is_empty() {
                    eprintln!("sm_{}{}: NVRTC reported warnings (treated as errors):\n{}", arch.0, arch.1, c.log);
                    ok = false;
                }
                if entries != declared {
                    let missing: Vec<_> = declared.iter().filter(|k| !entries.contains(k)).collect();
                    let extra: Vec<_> = entries.iter().filter(|k| !declared.contains(k)).collect();
                    eprintln!("sm_{}{}: kernels declared but not in the PTX: {missing:?}; in the PTX but not declared: {extra:?}", arch.0, arch.1);
                    ok = false;
                }
                if let Some(dir) = &out {
                    let path = dir.join(format!("vit_kernels.sm_{}{}.ptx", arch.0, arch.1));
                    let text = c.ptx.strip_suffix(&[0]).unwrap_or(&c.ptx);
                    if let Err(e) = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, text)) {
                        eprintln!("writing {}: {e}", path.display());
                        ok = false;
                    }
                }
            }
            Err(e) => {
                eprintln!("{e}");
                ok = false;
            }
        }
    }
    if ok {
        println!("every kernel compiled cleanly");
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
