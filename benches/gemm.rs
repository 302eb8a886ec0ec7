//! GEMM benchmark: our `sgemm` against `matrixmultiply` (threading feature on), in GFLOP/s and as
//! a percentage of a measured FMA peak, on 1 and 2 threads.
//!
//! ```sh
//! cargo bench --bench gemm                    # full table (about a minute)
//! BENCH_QUICK=1 cargo bench --bench gemm      # smoke run: a few shapes, few repetitions
//! BENCH_SHAPES="1024x1024x1024:NN,8320x192x576:NT,384*65x64x65:NT" cargo bench --bench gemm
//! ```
//!
//! `BENCH_CACHES="32K:768K,48K:1M"` adds a table of our kernel blocked for the running core's
//! caches (as it runs normally) beside the blocking it would get on cores with those L1D:L2
//! sizes, alternating in two rounds, on 1 and 2 threads (`32K:768K` gives the AVX2 blocking
//! that was a constant before it was derived from the caches: 384 KiB B + 192 KiB A blocks).
//!
//! Other knobs: `BENCH_STAT=min` reports the fastest run instead of the median (less sensitive
//! to other load on the machine); `BENCH_CLOCK=cpu` times the 1-thread figures (the peak's
//! included) in the thread's CPU time, which a loaded machine inflates far less than wall time; `BENCH_PER_PRODUCT=1` runs our batched products as one
//! `sgemm` per product from a rayon loop; `BENCH_PROFILE=1` runs only our kernel, one thread,
//! two seconds per shape (`BENCH_PROFILE=SECONDS`), for `perf record` or cachegrind.
//!
//! Shapes: squares 256..2048, and the ViT-Tiny training products at batch 128 (M = 128 * 65 =
//! 8320 token rows) exactly as `autograd::ops::matmul` issues them: forward `x W^T` (B is a
//! PyTorch-layout weight read transposed), input gradient `g W`, weight gradient `g^T x`
//! (A read transposed, K = 8320), and attention's 384 per-head products `Q K^T` (65x64x65) and
//! `P V` (65x65x64), batched.
//!
//! Threads: ours runs inside a `rayon::ThreadPool` of 1 or 2 threads. `matrixmultiply` reads
//! `MATMUL_NUM_THREADS` once per process, so this program sets it to 2 for itself and re-runs
//! itself with `MATMUL_NUM_THREADS=1 BENCH_MM_CHILD=1` to measure matrixmultiply on one thread;
//! the child prints its figures and the parent merges them into the table. For the batched
//! attention products, matrixmultiply is called once per product from a rayon loop over the
//! batch (as our `ops::matmul` did), in the same 1- or 2-thread pool.
//!
//! Peak: a loop of 12 independent FMA chains per thread (AVX-512, and AVX2 for the forced-AVX2
//! rows), run on 1 and on 2 threads at once. Every figure is the median of several timed runs;
//! nothing is asserted.

use std::hint::black_box;
use std::time::{Duration, Instant};

use autograd::kernels::caches::CacheSizes;
use autograd::kernels::gemm::sgemm_with_caches;
use autograd::kernels::{Isa, Layout, MatMut, MatRef};
use rayon::prelude::*;

#[path = "common/peak.rs"]
mod peak;

/// Where an operand comes from: row-major, or a row-major matrix of the transposed shape read
/// through strides (no copy).
#[derive(Clone, Copy, PartialEq)]
enum Op {
    N,
    T,
}

#[derive(Clone)]
struct Shape {
    name: String,
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    ta: Op,
    tb: Op,
}

impl Shape {
    fn new(name: &str, m: usize, k: usize, n: usize, ta: Op, tb: Op) -> Shape {
        Shape { name: name.to_string(), batch: 1, m, k, n, ta, tb }
    }
    fn flops(&self) -> f64 {
        2.0 * (self.batch * self.m * self.k * self.n) as f64
    }
    fn label(&self) -> String {
        let t = |o: Op| if o == Op::T { "^T" } else { "" };
        let b = if self.batch > 1 { format!("{} x ", self.batch) } else { String::new() };
        format!("{} {}{}x{}x{} (A{} B{})", self.name, b, self.m, self.k, self.n, t(self.ta), t(self.tb))
    }
}

/// `BENCH_SHAPES="512x512x512:NN,8320x192x576:NT,384*65x64x65:NT"` replaces the list.
fn custom_shapes() -> Option<Vec<Shape>> {
    let spec = std::env::var("BENCH_SHAPES").ok()?;
    let parse = |item: &str| -> Shape {
        let (dims, ops) = item.split_once(':').unwrap_or((item, "NN"));
        let (batch, dims) = dims.split_once('*').map_or((1, dims), |(b, d)| (b.parse().unwrap(), d));
        let d: Vec<usize> = dims.split('x').map(|x| x.parse().expect("BENCH_SHAPES: MxKxN")).collect();
        let op = |c: char| if c == 'T' { Op::T } else { Op::N };
        let mut ops = ops.chars();
        let (ta, tb) = (op(ops.next().unwrap_or('N')), op(ops.next().unwrap_or('N')));
        Shape { batch, ..Shape::new("custom", d[0], d[1], d[2], ta, tb) }
    };
    Some(spec.split(',').map(parse).collect())
}

fn shapes(quick: bool) -> Vec<Shape> {
    use Op::{N, T};
    if let Some(v) = custom_shapes() {
        return v;
    }
    let mut v = Vec::new();
    let squares: &[usize] = if quick { &[512] } else { &[256, 512, 1024, 2048] };
    for &s in squares {
        v.push(Shape::new("square", s, s, s, N, N));
    }
    let m = 8320;
    // (layer, in, out) of ViT-Tiny (D = 192, MLP 768, qkv 3D).
    let layers: &[(&str, usize, usize)] = if quick {
        &[("qkv", 192, 576)]
    } else {
        &[("qkv", 192, 576), ("proj", 192, 192), ("fc1", 192, 768), ("fc2", 768, 192)]
    };
    for &(l, din, dout) in layers {
        v.push(Shape::new(&format!("{l} fwd x W^T"), m, din, dout, N, T));
    }
    for &(l, din, dout) in layers {
        v.push(Shape::new(&format!("{l} dX = g W"), m, dout, din, N, N));
    }
    for &(l, din, dout) in layers {
        v.push(Shape::new(&format!("{l} dW = g^T x"), dout, m, din, T, N));
    }
    let batch = 384;
    v.push(Shape { batch, ..Shape::new("attn Q K^T", 65, 64, 65, N, T) });
    v.push(Shape { batch, ..Shape::new("attn P V", 65, 65, 64, N, N) });
    v
}

/// Operands for one shape, stored row-major in the layout `Op` describes.
struct Operands {
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    // (rs, cs) of op(A) and op(B), per-product strides.
    rsa: isize,
    csa: isize,
    rsb: isize,
    csb: isize,
    sa: usize,
    sb: usize,
    sc: usize,
}

fn operands(s: &Shape) -> Operands {
    let fill = |len: usize, seed: u32| -> Vec<f32> {
        (0..len)
            .map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 9) as f32 / (1 << 23) as f32 - 0.5)
            .collect()
    };
    let (sa, sb, sc) = (s.m * s.k, s.k * s.n, s.m * s.n);
    let (rsa, csa) = if s.ta == Op::T { (1, s.m as isize) } else { (s.k as isize, 1) };
    let (rsb, csb) = if s.tb == Op::T { (1, s.k as isize) } else { (s.n as isize, 1) };
    Operands {
        a: fill(s.batch * sa, 1),
        b: fill(s.batch * sb, 2),
        c: vec![0.0; s.batch * sc],
        rsa,
        csa,
        rsb,
        csb,
        sa,
        sb,
        sc,
    }
}

impl Operands {
    /// The layouts of A, B and C of one product.
    fn layouts(&self, s: &Shape) -> (Layout, Layout, Layout) {
        (
            Layout::strided(s.m, s.k, self.rsa, self.csa),
            Layout::strided(s.k, s.n, self.rsb, self.csb),
            Layout::row_major(s.m, s.n),
        )
    }
}

fn run_ours(isa: Isa, s: &Shape, o: &mut Operands) {
    run_ours_for(isa, CacheSizes::this_machine(), s, o)
}

/// Ours, blocked for a core with these caches.
fn run_ours_for(isa: Isa, caches: CacheSizes, s: &Shape, o: &mut Operands) {
    let (la, lb, lc) = o.layouts(s);
    if s.batch > 1 && std::env::var("BENCH_PER_PRODUCT").is_ok() {
        // One `sgemm` per product from a rayon loop.
        let (a, b) = (&o.a, &o.b);
        o.c.par_chunks_mut(o.sc).enumerate().for_each(|(p, c)| {
            let (a, b) = (MatRef::new(a, la.at(p * o.sa)), MatRef::new(b, lb.at(p * o.sb)));
            sgemm_with_caches(isa, caches, 1.0, a, b, 0.0, MatMut::new(c, lc));
        });
        return;
    }
    let batched = |l: Layout, stride: usize| l.batched(s.batch, stride as isize);
    let (a, b) = (MatRef::new(&o.a, batched(la, o.sa)), MatRef::new(&o.b, batched(lb, o.sb)));
    sgemm_with_caches(isa, caches, 1.0, a, b, 0.0, MatMut::new(&mut o.c, batched(lc, o.sc)));
}

fn run_mm(s: &Shape, o: &mut Operands) {
    // SAFETY: every slice passed in starts a whole product's operands (`sa`, `sb`, `sc` elements,
    // `operands`), and the strides address only the `m x k`, `k x n`, `m x n` elements
    // inside them; `c` is a distinct `&mut` (one chunk per product), so C aliases neither A nor B
    // and the parallel products write disjoint memory.
    let one = |a: &[f32], b: &[f32], c: &mut [f32]| unsafe {
        matrixmultiply::sgemm(
            s.m,
            s.k,
            s.n,
            1.0,
            a.as_ptr(),
            o.rsa,
            o.csa,
            b.as_ptr(),
            o.rsb,
            o.csb,
            0.0,
            c.as_mut_ptr(),
            s.n as isize,
            1,
        );
    };
    if s.batch == 1 {
        one(&o.a, &o.b, &mut o.c);
    } else {
        let (a, b) = (&o.a, &o.b);
        o.c.par_chunks_mut(o.sc).enumerate().for_each(|(p, c)| one(&a[p * o.sa..], &b[p * o.sb..], c));
    }
}

/// Seconds on the clock the benchmark reads: wall time, or with `BENCH_CLOCK=cpu` and one thread
/// the calling thread's CPU time, which leaves out the time other processes hold the core (on a
/// loaded machine the wall-clock figures measure the load as much as the kernel).
fn clock_secs(cpu: bool) -> f64 {
    if cpu {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid timespec to write; CLOCK_THREAD_CPUTIME_ID always exists on Linux.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
    } else {
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_secs_f64()
    }
}

/// Whether this thread's runs are timed in CPU time (`BENCH_CLOCK=cpu` in a 1-thread pool).
fn cpu_clock() -> bool {
    rayon::current_num_threads() == 1 && std::env::var("BENCH_CLOCK").is_ok_and(|v| v == "cpu")
}

/// Median seconds of `f` over enough runs to fill `budget` (at least `min_runs`), after a warm-up.
fn time(mut f: impl FnMut(), budget: Duration, min_runs: usize) -> f64 {
    let cpu = cpu_clock();
    f();
    let t0 = clock_secs(cpu);
    f();
    let once = (clock_secs(cpu) - t0).max(1e-7);
    let runs = ((budget.as_secs_f64() / once) as usize).clamp(min_runs, 200);
    let mut ts: Vec<f64> = (0..runs)
        .map(|_| {
            let t = clock_secs(cpu);
            f();
            clock_secs(cpu) - t
        })
        .collect();
    ts.sort_by(|a, b| a.partial_cmp(b).unwrap());
    // BENCH_STAT=min reports the fastest run instead (less sensitive to other load on the machine).
    if std::env::var("BENCH_STAT").is_ok_and(|v| v == "min") {
        ts[0]
    } else {
        ts[ts.len() / 2]
    }
}

/// Measured FMA peak in GFLOP/s for `threads` threads running the loop at once (median of runs).
fn fma_peak(isa: Isa, threads: usize) -> f64 {
    let Some((kernel, round_flops)) = peak::peak_loop(isa) else { return f64::NAN };
    let iters = 20_000_000usize;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    let secs = pool.install(|| {
        time(
            || {
                (0..threads).into_par_iter().for_each(|t| {
                    let x = black_box(t as f32 * 1e-3);
                    // SAFETY: `peak_loop` only returns a loop whose ISA is available.
                    black_box(unsafe { kernel(iters, x) });
                })
            },
            Duration::from_millis(300),
            5,
        )
    });
    (threads * iters * round_flops) as f64 / secs / 1e9
}

fn gflops(s: &Shape, secs: f64) -> f64 {
    s.flops() / secs / 1e9
}

fn budget(quick: bool) -> (Duration, usize) {
    if quick {
        (Duration::from_millis(100), 3)
    } else {
        (Duration::from_millis(700), 9)
    }
}

/// Child mode: matrixmultiply on one thread (MATMUL_NUM_THREADS=1), one line per shape.
fn child(quick: bool) {
    let (bud, min_runs) = budget(quick);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    for s in shapes(quick) {
        let mut o = operands(&s);
        let secs = pool.install(|| time(|| run_mm(&s, &mut o), bud, min_runs));
        println!("MM1\t{}\t{}", s.label(), gflops(&s, secs));
    }
}

fn main() {
    let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| v != "0");
    if std::env::var("BENCH_MM_CHILD").is_ok() {
        child(quick);
        return;
    }
    if let Ok(v) = std::env::var("BENCH_PROFILE") {
        // Only our kernel, one thread, about two seconds per shape (or `BENCH_PROFILE=SECONDS`),
        // blocked for the first `BENCH_CACHES` entry if given: for `perf record` or a cache
        // simulator (`valgrind --tool=cachegrind`).
        let budget = Duration::from_secs_f64(v.parse().unwrap_or(2.0));
        let caches = std::env::var("BENCH_CACHES")
            .ok()
            .and_then(|c| parse_caches(&c).first().copied())
            .unwrap_or_else(CacheSizes::this_machine);
        for s in shapes(quick) {
            let mut o = operands(&s);
            let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
            let secs = pool.install(|| time(|| run_ours_for(Isa::active(), caches, &s, &mut o), budget, 3));
            println!("{}: {:.0} GFLOP/s", s.label(), gflops(&s, secs));
        }
        return;
    }
    // matrixmultiply's own thread count, fixed before its first use.
    std::env::set_var("MATMUL_NUM_THREADS", "2");
    let (bud, min_runs) = budget(quick);

    // matrixmultiply on 1 thread, from a child process.
    let exe = std::env::current_exe().expect("current_exe");
    let out = std::process::Command::new(exe)
        .env("MATMUL_NUM_THREADS", "1")
        .env("BENCH_MM_CHILD", "1")
        .output()
        .expect("running the matrixmultiply 1-thread child");
    let mm1: std::collections::HashMap<String, f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            (f.next() == Some("MM1")).then(|| (f.next().unwrap().to_string(), f.next().unwrap().parse().unwrap()))
        })
        .collect();

    let best = Isa::detect();
    let peaks: Vec<(Isa, [f64; 2])> = Isa::all_available()
        .into_iter()
        .filter(|&i| peak::peak_loop(i).is_some())
        .map(|i| (i, [fma_peak(i, 1), fma_peak(i, 2)]))
        .collect();
    let peak_of = |isa: Isa, t: usize| peaks.iter().find(|p| p.0 == isa).map_or(f64::NAN, |p| p.1[t - 1]);
    println!("# GEMM benchmark (f32, GFLOP/s, median of timed runs)");
    println!();
    println!(
        "machine: {} cores visible, ISA detected: {best}; caches reported by the OS: {:?}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        autograd::kernels::caches::CacheSizes::detect()
    );
    let peak_line: Vec<String> =
        peaks.iter().map(|(i, p)| format!("{i} {:.0} (1 thread) / {:.0} (2 threads)", p[0], p[1])).collect();
    println!("measured FMA peak: {}", peak_line.join("; "));
    println!();
    println!("| product (M x K x N) | threads | ours | % of peak | matrixmultiply | ours / mm |");
    println!("|---|---|---|---|---|---|");
    for s in shapes(quick) {
        let mut o = operands(&s);
        for t in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap();
            let ours = gflops(&s, pool.install(|| time(|| run_ours(best, &s, &mut o), bud, min_runs)));
            let mm = if t == 1 {
                mm1.get(&s.label()).copied().unwrap_or(f64::NAN)
            } else {
                gflops(&s, pool.install(|| time(|| run_mm(&s, &mut o), bud, min_runs)))
            };
            println!(
                "| {} | {t} | {ours:.0} | {:.0}% | {mm:.0} | {:.2} |",
                s.label(),
                100.0 * ours / peak_of(best, t),
                ours / mm
            );
        }
    }

    if let Ok(spec) = std::env::var("BENCH_CACHES") {
        compare_blockings(&spec, best, quick, &peak_of);
    }

    // The AVX2 kernel, forced, against the AVX2 peak (and the portable one, for the record):
    // on a 1024 square and the qkv shapes, and on every `BENCH_SHAPES` product.
    println!();
    println!("| forced ISA: product | threads | ours | % of that ISA's peak |");
    println!("|---|---|---|---|");
    let forced: Vec<Shape> = shapes(quick)
        .into_iter()
        .filter(|s| s.name == "square" && s.m == 1024 || s.name.starts_with("qkv") || s.name == "custom")
        .collect();
    for isa in [Isa::Avx2Fma, Isa::Portable] {
        if !isa.available() {
            continue;
        }
        for s in &forced {
            let mut o = operands(s);
            let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
            let g = gflops(s, pool.install(|| time(|| run_ours(isa, s, &mut o), bud, min_runs.min(3))));
            let peak = peak_of(isa, 1);
            let pct = if peak.is_nan() { "-".to_string() } else { format!("{:.0}%", 100.0 * g / peak) };
            println!("| {isa}: {} | 1 | {g:.0} | {pct} |", s.label());
        }
    }
}

/// `"32K:768K,48K:1M"`: L1D:L2 sizes (sysfs spellings) to block for, beside the running core's.
fn parse_caches(spec: &str) -> Vec<CacheSizes> {
    let size = |x: &str| autograd::kernels::caches::parse_size(x).unwrap_or_else(|| panic!("BENCH_CACHES: size {x:?}"));
    spec.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (l1d, l2) = p.split_once(':').unwrap_or_else(|| panic!("BENCH_CACHES: {p:?} is not L1D:L2"));
            CacheSizes { l1d: Some(size(l1d)), l2: Some(size(l2)) }
        })
        .collect()
}

/// Our kernel blocked for the running core's caches and for each of `spec`'s, alternating in
/// two rounds per shape and thread count.
fn compare_blockings(spec: &str, isa: Isa, quick: bool, peak_of: &dyn Fn(Isa, usize) -> f64) {
    let mut configs = vec![CacheSizes::this_machine()];
    configs.extend(parse_caches(spec));
    let kib = |x: Option<usize>| x.map_or("-".to_string(), |b| format!("{}K", b >> 10));
    let names: Vec<String> = configs.iter().map(|c| format!("{}:{}", kib(c.l1d), kib(c.l2))).collect();
    println!();
    println!("Blocking for L1D:L2 (first: this core's, as detected), {isa}, GFLOP/s in 2 alternating rounds (% of peak, mean):");
    println!();
    println!("| product | threads | {} |", names.join(" | "));
    println!("|---|---|{}", "---|".repeat(names.len()));
    let (bud, min_runs) = budget(quick);
    for s in shapes(quick) {
        let mut o = operands(&s);
        for t in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap();
            let mut figs = vec![Vec::new(); configs.len()];
            for _round in 0..2 {
                for (c, caches) in configs.iter().enumerate() {
                    let secs = pool.install(|| time(|| run_ours_for(isa, *caches, &s, &mut o), bud, min_runs));
                    figs[c].push(gflops(&s, secs));
                }
            }
            let cells: Vec<String> = figs
                .iter()
                .map(|f| {
                    let mean = f.iter().sum::<f64>() / f.len() as f64;
                    format!("{:.0}, {:.0} ({:.0}%)", f[0], f[1], 100.0 * mean / peak_of(isa, t))
                })
                .collect();
            println!("| {} | {t} | {} |", s.label(), cells.join(" | "));
        }
    }
}
