//! Our f32 GEMM against a naive triple loop (in f64), on every ISA this machine can run: random
//! shapes biased to 1, primes and the sizes either side of every blocking edge (MR, NR, KC, NC),
//! row-major, column-major (transposed), padded and arbitrarily strided operands, negative
//! strides, and alpha/beta including `beta = 0` over a NaN-filled C and `beta = 1` accumulation.
//!
//! Tolerance: each element may differ from the exact result by `(k + 2) * 2 eps` times the sum
//! of the magnitudes that went into it (`|alpha| sum_p |a_ip b_pj| + |beta c_ij|`), the standard
//! bound for a length-k dot product in f32 (no cancellation-free assumption needed).

use autograd::kernels::caches::CacheSizes;
use autograd::kernels::gemm::{sgemm, sgemm_with, sgemm_with_caches, MIN_TASK_FLOPS};
use autograd::kernels::{Isa, MatMut, MatRef};
use proptest::prelude::*;

fn cases() -> ProptestConfig {
    ProptestConfig::with_cases(crate::common::cases(96))
}

/// How a matrix sits in its buffer.
#[derive(Clone, Copy, Debug)]
enum Layout {
    /// Row-major with `pad` extra elements per row.
    Rows { pad: usize },
    /// Column-major (the transpose of a row-major matrix) with `pad` extra per column.
    Cols { pad: usize },
    /// Neither stride is 1: `rs = (cols * cs) + pad`, `cs = step`.
    Strided { step: usize, pad: usize },
    /// Row-major, rows stored bottom-up (negative row stride).
    RowsReversed,
}

/// A strided view into its own buffer, whose unused elements hold a sentinel.
#[derive(Clone, Debug)]
struct Mat {
    buf: Vec<f32>,
    origin: usize,
    rows: usize,
    cols: usize,
    rs: isize,
    cs: isize,
}

const SENTINEL: f32 = -7777.0;

impl Mat {
    fn new(rows: usize, cols: usize, layout: Layout, fill: impl Fn(usize, usize) -> f32) -> Mat {
        let (rs, cs, len, origin) = match layout {
            Layout::Rows { pad } => ((cols + pad) as isize, 1, rows * (cols + pad), 0),
            Layout::Cols { pad } => (1, (rows + pad) as isize, cols * (rows + pad), 0),
            Layout::Strided { step, pad } => {
                let rs = cols * step + pad;
                (rs as isize, step as isize, rows * rs, 0)
            }
            Layout::RowsReversed => (-(cols as isize), 1, rows * cols, (rows.max(1) - 1) * cols),
        };
        let mut m = Mat { buf: vec![SENTINEL; len.max(1)], origin, rows, cols, rs, cs };
        for i in 0..rows {
            for j in 0..cols {
                let idx = m.idx(i, j);
                m.buf[idx] = fill(i, j);
            }
        }
        m
    }
    fn idx(&self, i: usize, j: usize) -> usize {
        (self.origin as isize + i as isize * self.rs + j as isize * self.cs) as usize
    }
    fn at(&self, i: usize, j: usize) -> f32 {
        self.buf[self.idx(i, j)]
    }
    fn layout(&self) -> autograd::kernels::Layout {
        autograd::kernels::Layout::strided(self.rows, self.cols, self.rs, self.cs).at(self.origin)
    }
    fn view(&self) -> MatRef<'_, f32> {
        MatRef::new(&self.buf, self.layout())
    }
    fn view_mut(&mut self) -> MatMut<'_, f32> {
        let l = self.layout();
        MatMut::new(&mut self.buf, l)
    }
}

/// A small deterministic generator of values in [-1, 1].
fn values(seed: u64) -> impl Fn(usize, usize) -> f32 {
    move |i, j| {
        let mut x = seed ^ ((i as u64) << 32 | j as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// The exact `alpha * a b + beta * c0` (in f64) and each element's tolerance: `(k + 2) * 2 eps`
/// times the sum of the magnitudes that went into it. Computed once per case and compared with
/// every ISA's and every thread count's result (under emulation this naive loop is the cost).
struct Expected {
    exact: Vec<f64>,
    tol: Vec<f64>,
    cols: usize,
}

fn expected(a: &Mat, b: &Mat, c0: &Mat, alpha: f32, beta: f32) -> Expected {
    let k = a.cols;
    let eps = f32::EPSILON as f64;
    let (mut exact_all, mut tol_all) = (Vec::with_capacity(c0.rows * c0.cols), Vec::with_capacity(c0.rows * c0.cols));
    for i in 0..c0.rows {
        for j in 0..c0.cols {
            let (mut exact, mut mag) = (0.0f64, 0.0f64);
            for p in 0..k {
                let t = a.at(i, p) as f64 * b.at(p, j) as f64;
                exact += t;
                mag += t.abs();
            }
            exact *= alpha as f64;
            mag *= (alpha as f64).abs();
            if beta != 0.0 {
                exact += beta as f64 * c0.at(i, j) as f64;
                mag += (beta as f64 * c0.at(i, j) as f64).abs();
            }
            exact_all.push(exact);
            tol_all.push((k as f64 + 2.0) * 2.0 * eps * mag + 1e-30);
        }
    }
    Expected { exact: exact_all, tol: tol_all, cols: c0.cols }
}

/// Checks `got` against the expected product elementwise, and that nothing outside C's view
/// moved (`c0` is C before the product).
fn check_against(want: &Expected, c0: &Mat, got: &Mat, what: &str) {
    for i in 0..got.rows {
        for j in 0..got.cols {
            let (exact, tol) = (want.exact[i * want.cols + j], want.tol[i * want.cols + j]);
            let g = got.at(i, j) as f64;
            assert!(
                (g - exact).abs() <= tol,
                "{what}: C[{i},{j}] = {g}, want {exact} (|diff| {:e} > tol {tol:e})",
                (g - exact).abs()
            );
        }
    }
    let mut inside = vec![false; got.buf.len()];
    for i in 0..got.rows {
        for j in 0..got.cols {
            inside[got.idx(i, j)] = true;
        }
    }
    for (idx, (&x, &inn)) in got.buf.iter().zip(&inside).enumerate() {
        if !inn {
            assert!(x == SENTINEL || (x.is_nan() && c0.buf[idx].is_nan()), "{what}: element {idx} outside C changed");
        }
    }
}

/// Checks `got = alpha * a b + beta * c0` (see [`expected`] and [`check_against`]).
fn check(a: &Mat, b: &Mat, c0: &Mat, got: &Mat, alpha: f32, beta: f32, what: &str) {
    check_against(&expected(a, b, c0, alpha, beta), c0, got, what);
}

/// One product on each of `isas` (in each of `pools`, or on the calling thread's pool when
/// none is given) against one naive reference.
#[allow(clippy::too_many_arguments)]
fn run_case(
    isas: &[Isa],
    pools: &[rayon::ThreadPool],
    m: usize,
    k: usize,
    n: usize,
    la: Layout,
    lb: Layout,
    lc: Layout,
    alpha: f32,
    beta: f32,
    seed: u64,
) {
    let a = Mat::new(m, k, la, values(seed));
    let b = Mat::new(k, n, lb, values(seed + 1));
    let c0 = if beta == 0.0 { Mat::new(m, n, lc, |_, _| f32::NAN) } else { Mat::new(m, n, lc, values(seed + 2)) };
    let want = expected(&a, &b, &c0, alpha, beta);
    let product = |isa: Isa, threads: usize| {
        let mut c = c0.clone();
        sgemm_with(isa, alpha, a.view(), b.view(), beta, c.view_mut());
        let what =
            format!("{isa}, {threads} threads: {m}x{k}x{n} A {la:?} B {lb:?} C {lc:?} alpha {alpha} beta {beta}");
        check_against(&want, &c0, &c, &what);
    };
    for &isa in isas {
        if pools.is_empty() {
            product(isa, rayon::current_num_threads());
        }
        for pool in pools {
            pool.install(|| product(isa, pool.current_num_threads()));
        }
    }
}

/// Sizes that straddle the blocking edges of every ISA (MR 6/14, NR 16/32, KC 256), primes and 1.
fn dim_m() -> impl Strategy<Value = usize> {
    prop_oneof![
        3 => prop::sample::select(vec![1usize, 2, 3, 5, 6, 7, 11, 12, 13, 14, 15, 17, 27, 28, 29, 31, 37, 65, 97]),
        1 => 1usize..=120,
    ]
}
fn dim_k() -> impl Strategy<Value = usize> {
    prop_oneof![
        3 => prop::sample::select(vec![1usize, 2, 3, 7, 13, 16, 31, 64, 65, 127, 255, 256, 257, 300, 511, 513]),
        1 => 1usize..=600,
    ]
}
fn dim_n() -> impl Strategy<Value = usize> {
    prop_oneof![
        3 => prop::sample::select(vec![1usize, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 48, 63, 64, 65, 97]),
        1 => 1usize..=150,
    ]
}
fn layout() -> impl Strategy<Value = Layout> {
    prop_oneof![
        3 => (0usize..3).prop_map(|pad| Layout::Rows { pad }),
        3 => (0usize..3).prop_map(|pad| Layout::Cols { pad }),
        1 => (2usize..4, 0usize..3).prop_map(|(step, pad)| Layout::Strided { step, pad }),
        1 => Just(Layout::RowsReversed),
    ]
}
fn scalars() -> impl Strategy<Value = (f32, f32)> {
    (
        prop::sample::select(vec![1.0f32, 1.0, -1.0, 0.5, 2.75]),
        prop::sample::select(vec![0.0f32, 0.0, 1.0, 1.0, -0.5, 3.0]),
    )
}

proptest! {
    #![proptest_config(cases())]

    /// Every available ISA, forced, against the naive product.
    #[test]
    fn sgemm_matches_naive_on_every_isa(
        m in dim_m(), k in dim_k(), n in dim_n(),
        la in layout(), lb in layout(), lc in layout(),
        (alpha, beta) in scalars(),
        seed in any::<u64>(),
    ) {
        run_case(&Isa::all_available(), &[], m, k, n, la, lb, lc, alpha, beta, seed);
    }
}

/// Cache sizes the detection could report, from tiny and odd ones (a 3000-byte L1D, a 50 KiB
/// L2, which give depth blocks of 32 and B blocks of a few panels) through the machines the
/// defaults stand for to huge ones, and sizes the OS did not report.
fn cache_sizes() -> impl Strategy<Value = CacheSizes> {
    let l1d = prop_oneof![
        2 => prop::sample::select(vec![1usize << 10, 3000, 12 << 10, 32 << 10, 48 << 10, 64 << 10, 128 << 10]),
        1 => 512usize..=200_000,
    ];
    let l2 = prop_oneof![
        2 => prop::sample::select(vec![8usize << 10, 50 << 10, 100_000, 256 << 10, 512 << 10, 1 << 20, 3 << 20, 64 << 20]),
        1 => 4096usize..=4 << 20,
    ];
    (prop::option::weighted(0.9, l1d), prop::option::weighted(0.9, l2)).prop_map(|(l1d, l2)| CacheSizes { l1d, l2 })
}

proptest! {
    #![proptest_config(cases())]

    /// Every blocking the cache detection can produce gives the naive product, on every ISA:
    /// shapes that cross several depth, B and A blocks of the blocking drawn.
    #[test]
    fn sgemm_matches_naive_for_any_cache_sizes(
        caches in cache_sizes(),
        m in prop_oneof![dim_m(), 100usize..=300], k in prop_oneof![dim_k(), 300usize..=900],
        n in prop_oneof![dim_n(), 100usize..=400],
        la in layout(), lb in layout(),
        (alpha, beta) in scalars(),
        seed in any::<u64>(),
    ) {
        let a = Mat::new(m, k, la, values(seed));
        let b = Mat::new(k, n, lb, values(seed + 1));
        let c0 = if beta == 0.0 { Mat::new(m, n, Layout::Rows { pad: 1 }, |_, _| f32::NAN) }
            else { Mat::new(m, n, Layout::Rows { pad: 1 }, values(seed + 2)) };
        let want = expected(&a, &b, &c0, alpha, beta);
        for isa in Isa::all_available() {
            let mut c = c0.clone();
            sgemm_with_caches(isa, caches, alpha, a.view(), b.view(), beta, c.view_mut());
            check_against(&want, &c0, &c, &format!("{isa} {caches:?}: {m}x{k}x{n} A {la:?} B {lb:?}"));
        }
    }
}

/// Columns past the L2 budget of one packed B block (NC), several depth blocks, edge tiles in
/// both directions, on every ISA.
#[test]
fn sgemm_crosses_nc_and_kc_blocks() {
    let isas = Isa::all_available();
    for &(m, k, n) in &[(15, 700, 1300), (29, 257, 2100), (3, 1100, 641)] {
        let (rows, cols) = (Layout::Rows { pad: 0 }, Layout::Cols { pad: 0 });
        run_case(&isas, &[], m, k, n, Layout::Rows { pad: 1 }, rows, Layout::Rows { pad: 2 }, 1.0, 1.0, 7);
        run_case(&isas, &[], m, k, n, cols, Layout::Cols { pad: 1 }, cols, -0.5, 0.0, 8);
    }
}

/// Attention's per-head products as the op issues them, which take the direct path (operands
/// read in place, unpacked, by the strided kernels): heads inside wide rows (`3D = 576` apart,
/// sentinels between them), every combination of transposed and row-major operands, tile
/// heights that leave an edge (64 and 65 rows), and widths of whole vectors or not (64, 65).
#[test]
fn small_products_read_in_place_match_naive() {
    let isas = Isa::all_available();
    let (wide, square, cols) = (Layout::Rows { pad: 512 }, Layout::Rows { pad: 0 }, Layout::Cols { pad: 0 });
    for &(m, k, n) in &[(65, 64, 65), (65, 65, 64), (64, 64, 64), (65, 64, 64), (37, 16, 48), (128, 48, 128)] {
        for (s, &(la, lb)) in
            [(wide, cols), (square, wide), (cols, wide), (wide, wide), (square, square)].iter().enumerate()
        {
            run_case(&isas, &[], m, k, n, la, lb, wide, 1.0, 0.0, 20 + s as u64);
            run_case(&isas, &[], m, k, n, la, lb, square, 0.125, 1.0, 30 + s as u64);
        }
    }
}

/// Products big enough to be cut into tasks, in pools of 2, 3 and 4 threads: tall (split M),
/// wide (split N) and long-K (split K, partial products summed) shapes, with beta = 0 over NaN
/// and beta = 1 accumulation.
#[test]
fn threaded_splits_match_naive() {
    let shapes = [(400, 128, 200), (48, 160, 1500), (24, 24000, 20), (200, 5000, 96)];
    for &(m, k, n) in &shapes {
        assert!(2 * m * n * k >= 2 * MIN_TASK_FLOPS, "shape {m}x{k}x{n} too small to be split");
    }
    let pools: Vec<_> =
        [2, 3, 4].map(|t| rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap()).into_iter().collect();
    let isas = Isa::all_available();
    for (s, &(m, k, n)) in shapes.iter().enumerate() {
        let lb = if s % 2 == 0 { Layout::Cols { pad: 0 } } else { Layout::Rows { pad: 0 } };
        let la = if s < 2 { Layout::Rows { pad: 0 } } else { Layout::Cols { pad: 0 } };
        run_case(&isas, &pools, m, k, n, la, lb, Layout::Rows { pad: 0 }, 1.0, 0.0, s as u64);
        run_case(&isas, &pools, m, k, n, la, lb, Layout::Cols { pad: 1 }, 0.5, 1.0, s as u64 + 10);
    }
}

/// `k == 0` and `alpha == 0` scale C by beta without reading A or B (empty or unused here);
/// `beta == 0` then writes zeros over NaN.
#[test]
fn degenerate_products_scale_c() {
    use autograd::kernels::Layout as L;
    for isa in Isa::all_available() {
        for (k, alpha) in [(0usize, 1.0f32), (5, 0.0)] {
            let (a, b) = (vec![f32::NAN; 2 * k], vec![f32::NAN; 3 * k]);
            let (a, b) = (MatRef::row_major(&a, 2, k), MatRef::row_major(&b, k, 3));
            let mut c = vec![f32::NAN; 6];
            sgemm_with(isa, alpha, a, b, 0.0, MatMut::row_major(&mut c, 2, 3));
            assert_eq!(c, vec![0.0; 6]);
            let mut c = vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
            sgemm_with(isa, alpha, a, b, 2.0, MatMut::row_major(&mut c, 2, 3));
            assert_eq!(c, vec![2.0, 4.0, 6.0, 8.0, 10.0, 12.0]);
        }
        // m == 0 or n == 0: nothing is touched.
        let mut c = vec![f32::NAN; 1];
        let ab = vec![0.0f32; 12];
        sgemm_with(
            isa,
            1.0,
            MatRef::row_major(&ab, 0, 4),
            MatRef::row_major(&ab, 4, 3),
            0.0,
            MatMut::new(&mut c, L::row_major(0, 3)),
        );
        assert!(c[0].is_nan());
    }
}

/// Views that do not fit are refused with the shapes in the message.
#[test]
fn mismatched_views_panic() {
    let x = vec![0.0f32; 12];
    let mut c = vec![0.0f32; 12];
    let err = std::panic::catch_unwind(move || {
        sgemm(1.0, MatRef::row_major(&x, 3, 4), MatRef::row_major(&x, 3, 4), 0.0, MatMut::row_major(&mut c, 3, 4))
    })
    .unwrap_err();
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("A 3x4 times B 3x4"), "{msg}");
}

/// The batched entry point equals one product at a time, with a shared (stride 0) B and with
/// per-entry B, in a 2-thread pool (parallel over the batch).
#[test]
fn batched_matches_naive() {
    use autograd::kernels::Layout as L;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    pool.install(|| {
        for isa in Isa::all_available() {
            let (batch, m, k, n) = (37, 65, 64, 65);
            let a: Vec<f32> = (0..batch * m * k).map(|i| values(1)(i, 0)).collect();
            let b: Vec<f32> = (0..batch * k * n).map(|i| values(2)(i, 0)).collect();
            for shared_b in [false, true] {
                let mut c = vec![f32::NAN; batch * m * n];
                // B read transposed (as in Q K^T): B_p[kk, j] = b[p*k*n + j*k + kk].
                let bl = L::row_major(n, k).t();
                let bl = if shared_b { bl } else { bl.batched(batch, (k * n) as isize) };
                let al = L::row_major(m, k).batched(batch, (m * k) as isize);
                let cl = L::row_major(m, n).batched(batch, (m * n) as isize);
                sgemm_with(isa, 1.0, MatRef::new(&a, al), MatRef::new(&b, bl), 0.0, MatMut::new(&mut c, cl));
                for p in 0..batch {
                    let am = Mat::new(m, k, Layout::Rows { pad: 0 }, |i, j| a[p * m * k + i * k + j]);
                    let bo = if shared_b { 0 } else { p * k * n };
                    let bm = Mat::new(k, n, Layout::Rows { pad: 0 }, |kk, j| b[bo + j * k + kk]);
                    let c0 = Mat::new(m, n, Layout::Rows { pad: 0 }, |_, _| f32::NAN);
                    let got = Mat::new(m, n, Layout::Rows { pad: 0 }, |i, j| c[p * m * n + i * n + j]);
                    check(&am, &bm, &c0, &got, 1.0, 0.0, &format!("{isa} batched p={p} shared_b={shared_b}"));
                }
            }
        }
    });
}

/// The default entry point runs on the detected ISA and agrees with the forced one bit for bit.
#[test]
fn default_entry_point_is_the_active_isa() {
    let isa = Isa::active();
    assert!(isa.available());
    let (m, k, n) = (33, 70, 45);
    let a = Mat::new(m, k, Layout::Rows { pad: 0 }, values(3));
    let b = Mat::new(k, n, Layout::Cols { pad: 0 }, values(4));
    let mut c1 = Mat::new(m, n, Layout::Rows { pad: 0 }, |_, _| 0.0);
    let mut c2 = c1.clone();
    sgemm(1.0, a.view(), b.view(), 0.0, c1.view_mut());
    sgemm_with(isa, 1.0, a.view(), b.view(), 0.0, c2.view_mut());
    assert_eq!(c1.buf, c2.buf);
    eprintln!("ISAs tested on this machine: {:?} (active: {isa})", Isa::all_available());
}

/// Each architecture runs its own kernels: NEON is detected (and, unless `AUTOGRAD_ISA` forces
/// another, active) on aarch64 and nowhere else, so the aarch64 runs under emulation test the
/// NEON GEMM and row kernels rather than silently falling back to the portable ones.
#[test]
fn neon_is_the_aarch64_isa() {
    assert_eq!(Isa::Neon.available(), cfg!(target_arch = "aarch64"));
    assert_eq!(Isa::all_available().contains(&Isa::Neon), cfg!(target_arch = "aarch64"));
    if cfg!(target_arch = "aarch64") && std::env::var_os("AUTOGRAD_ISA").is_none() {
        assert_eq!(Isa::active(), Isa::Neon);
    }
}

/// The f32 matmul op (which runs its batches through one batched `sgemm`) agrees with the f64 op
/// (one product at a time) in forward and in both gradients: batched attention-like products
/// with either operand transposed, and a shared 2-D B.
#[test]
fn f32_batched_matmul_op_matches_f64() {
    use autograd::{Graph, Tensor};
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    pool.install(|| {
        for &(batch, m, k, n, ta, tb, shared_b) in &[
            (6, 13, 8, 13, false, true, false),
            (6, 13, 13, 8, false, false, false),
            (5, 7, 9, 11, true, false, false),
            (5, 7, 9, 11, true, true, true),
            (4, 17, 33, 5, false, true, true),
        ] {
            let a_shape = if ta { vec![batch, k, m] } else { vec![batch, m, k] };
            let mut b_shape = if tb { vec![n, k] } else { vec![k, n] };
            if !shared_b {
                b_shape.insert(0, batch);
            }
            let size = |s: &[usize]| s.iter().product::<usize>();
            let a: Vec<f64> = (0..size(&a_shape)).map(|i| values(11)(i, 0) as f64).collect();
            let b: Vec<f64> = (0..size(&b_shape)).map(|i| values(12)(i, 0) as f64).collect();
            let w: Vec<f64> = (0..batch * m * n).map(|i| values(13)(i, 0) as f64).collect();

            let mut g64 = Graph::<f64>::new();
            let (a64, b64) =
                (g64.param(&Tensor::from_vec(a.clone(), &a_shape)), g64.param(&Tensor::from_vec(b.clone(), &b_shape)));
            let y64 = g64.matmul_ex(a64, b64, ta, tb);
            let w64 = g64.input(Tensor::from_vec(w.clone(), &[batch, m, n]));
            let l64 = g64.mul(y64, w64);
            let l64 = g64.sum_all(l64);
            g64.backward(l64);

            let f = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
            let mut g32 = Graph::<f32>::new();
            let (a32, b32) =
                (g32.param(&Tensor::from_vec(f(&a), &a_shape)), g32.param(&Tensor::from_vec(f(&b), &b_shape)));
            let y32 = g32.matmul_ex(a32, b32, ta, tb);
            let w32 = g32.input(Tensor::from_vec(f(&w), &[batch, m, n]));
            let l32 = g32.mul(y32, w32);
            let l32 = g32.sum_all(l32);
            g32.backward(l32);

            let what = format!("batch {batch} {m}x{k}x{n} ta {ta} tb {tb} shared_b {shared_b}");
            let close = |name: &str, got: &[f32], want: &[f64], depth: usize| {
                assert_eq!(got.len(), want.len(), "{what}: {name} lengths");
                for (i, (&x, &y)) in got.iter().zip(want).enumerate() {
                    let tol = 4.0 * (depth as f64 + 2.0) * f32::EPSILON as f64 * (1.0 + y.abs());
                    assert!((x as f64 - y).abs() <= tol, "{what}: {name}[{i}] = {x}, want {y}");
                }
            };
            close("y", g32.value(y32).data(), g64.value(y64).data(), k);
            close("dA", g32.grad(a32).unwrap().data(), g64.grad(a64).unwrap().data(), n);
            let db_depth = if shared_b { batch * m } else { m };
            close("dB", g32.grad(b32).unwrap().data(), g64.grad(b64).unwrap().data(), db_depth);
        }
    });
}

/// The task grid follows the shape: tall products split their rows, long-K weight gradients
/// split K (no redundant packing), wide ones their columns, small ones stay on one thread; and
/// the threaded test above covers each kind.
#[test]
fn task_split_follows_the_shape() {
    use autograd::kernels::gemm::split_for;
    for isa in Isa::all_available() {
        // A tall product splits M or N (whichever packs less: with AVX2's smaller B blocks,
        // halving N saves a B block), never K.
        let (tm, tn, tk) = split_for(isa, (8320, 192, 576), false, true, 2);
        assert!(tk == 1 && tm * tn == 2, "{isa}: tall forward product split {:?}", (tm, tn, tk));
        assert_eq!(split_for(isa, (576, 8320, 192), true, false, 2), (1, 1, 2), "{isa}: weight gradient");
        assert_eq!(split_for(isa, (48, 160, 1500), false, false, 2), (1, 2, 1), "{isa}: wide product");
        assert_eq!(split_for(isa, (65, 64, 65), false, true, 2), (1, 1, 1), "{isa}: attention product");
        assert_eq!(split_for(isa, (1024, 1024, 1024), false, false, 1), (1, 1, 1), "{isa}: one thread");
        // The shapes of `threaded_splits_match_naive`: rows, columns and K.
        assert_eq!(split_for(isa, (400, 128, 200), false, true, 2).0, 2, "{isa}");
        assert_eq!(split_for(isa, (48, 160, 1500), false, false, 2).1, 2, "{isa}");
        assert_eq!(split_for(isa, (24, 24000, 20), true, true, 2).2, 2, "{isa}");
    }
}

/// The epilogue of [`gemm_then`] sees every element of C exactly once, after its last depth
/// block (so it reads the final product), at its own row and column: checked through an
/// epilogue `v -> 2 v + i - j / 2` that also counts its visits, on every ISA, with 1 to 3
/// threads, on shapes that cross depth and B blocks, edge tiles, and a long K that is split
/// across threads (where the epilogue must wait for the partial sums), and for f64.
#[test]
fn the_epilogue_sees_each_final_element_once() {
    use autograd::kernels::gemm::{gemm_then, sgemm_then_with};
    use std::sync::atomic::{AtomicU32, Ordering};
    let f = |i: usize, j: usize, v: f64| 2.0 * v + i as f64 - j as f64 / 2.0;
    let pools: Vec<_> =
        [1, 2, 3].map(|t| rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap()).into_iter().collect();
    let caches = [CacheSizes::this_machine(), CacheSizes { l1d: Some(3000), l2: Some(50 << 10) }];
    let shapes = [(1, 1, 1), (7, 13, 17), (29, 257, 2100), (400, 128, 200), (24, 24000, 20), (3, 0, 5)];
    for &(m, k, n) in &shapes {
        let a = Mat::new(m, k, Layout::Rows { pad: 1 }, values(m as u64));
        let b = Mat::new(k, n, Layout::Cols { pad: 0 }, values(n as u64));
        for beta in [0.0f32, 1.0] {
            let c0 = if beta == 0.0 {
                Mat::new(m, n, Layout::Rows { pad: 2 }, |_, _| f32::NAN)
            } else {
                Mat::new(m, n, Layout::Rows { pad: 2 }, values(7))
            };
            let mut want = expected(&a, &b, &c0, 1.0, beta);
            for i in 0..m {
                for j in 0..n {
                    let e = &mut want.exact[i * n + j];
                    *e = f(i, j, *e);
                    want.tol[i * n + j] = 2.0 * want.tol[i * n + j] + 1e-5 * (i + j) as f64;
                }
            }
            for isa in Isa::all_available() {
                for pool in &pools {
                    for &cs in &caches {
                        let visits: Vec<AtomicU32> = (0..m * n).map(|_| AtomicU32::new(0)).collect();
                        let mut c = c0.clone();
                        let then = |i: usize, j0: usize, piece: &mut [f32]| {
                            for (dj, v) in piece.iter_mut().enumerate() {
                                visits[i * n + j0 + dj].fetch_add(1, Ordering::Relaxed);
                                *v = f(i, j0 + dj, *v as f64) as f32;
                            }
                        };
                        pool.install(|| sgemm_then_with(isa, cs, 1.0, a.view(), b.view(), beta, c.view_mut(), &then));
                        let what =
                            format!("{isa}, {} threads, {cs:?}: {m}x{k}x{n} beta {beta}", pool.current_num_threads());
                        let seen: Vec<u32> = visits.iter().map(|v| v.load(Ordering::Relaxed)).collect();
                        assert!(seen.iter().all(|&s| s == 1), "{what}: visits per element {seen:?}");
                        check_against(&want, &c0, &c, &what);
                    }
                }
            }
            // f64: the product, then the epilogue on each whole row.
            let (a64, b64): (Vec<f64>, Vec<f64>) = (
                (0..m * k).map(|e| a.at(e / k.max(1), e % k.max(1)) as f64).collect(),
                (0..k * n).map(|e| b.at(e / n, e % n) as f64).collect(),
            );
            let mut c64: Vec<f64> = (0..m * n).map(|e| c0.at(e / n, e % n) as f64).collect();
            gemm_then(
                1.0,
                MatRef::row_major(&a64, m, k),
                MatRef::row_major(&b64, k, n),
                beta as f64,
                MatMut::row_major(&mut c64, m, n),
                &|i, j0, piece: &mut [f64]| {
                    for (dj, v) in piece.iter_mut().enumerate() {
                        *v = f(i, j0 + dj, *v);
                    }
                },
            );
            for (e, (&got, &exact)) in c64.iter().zip(&want.exact).enumerate() {
                assert!(
                    (got - exact).abs() <= 1e-9 * (1.0 + exact.abs()),
                    "f64 {m}x{k}x{n}: C[{e}] = {got}, want {exact}"
                );
            }
        }
    }
}

/// The opt-in accounting (`gemm::timing`) keys each product by its shape and how its operands
/// are read, counts its calls and `2 m n k` flops per product, and resets on `take_by_shape`.
/// The shapes are odd sizes no other test uses, so products of tests running at the same time
/// (the accounting is process-wide) land in other entries.
#[test]
fn timing_accounts_each_shape_apart() {
    use autograd::kernels::gemm::timing::{self, Access};
    use autograd::kernels::Layout;
    let (m, k, n) = (37, 13, 29);
    let a = vec![1.0f32; m * k];
    let b = vec![0.5f32; k * n];
    let bt = vec![0.5f32; n * k];
    let mut c = vec![0.0f32; m * n];
    let three = vec![0.0f32; 3 * m * n];
    let batched = |rows, cols| Layout::row_major(rows, cols).batched(3, (rows * cols) as isize);
    timing::enable(true);
    timing::take_by_shape();
    for _ in 0..2 {
        sgemm(1.0, MatRef::row_major(&a, m, k), MatRef::row_major(&b, k, n), 0.0, MatMut::row_major(&mut c, m, n));
    }
    sgemm(1.0, MatRef::row_major(&a, m, k), MatRef::row_major(&bt, n, k).t(), 0.0, MatMut::row_major(&mut c, m, n));
    let (a3, b3, mut c3) = (vec![1.0f32; 3 * m * k], vec![1.0f32; 3 * k * n], three);
    sgemm(
        1.0,
        MatRef::new(&a3, batched(m, k)),
        MatRef::new(&b3, batched(k, n)),
        0.0,
        MatMut::new(&mut c3, batched(m, n)),
    );
    let got = timing::take_by_shape();
    let again = timing::take_by_shape();
    timing::enable(false);
    assert!(c.iter().all(|&x| x == 6.5) && c3.iter().all(|&x| x == 13.0), "the accounting changed a result");
    let find = |v: &[(timing::GemmShape, timing::GemmTotals)], batch, b| {
        v.iter()
            .find(|(s, _)| (s.batch, s.m, s.k, s.n, s.a, s.b) == (batch, m, k, n, Access::N, b))
            .map(|(s, t)| (s.to_string(), t.calls, t.flops, t.nanos))
    };
    let flops = (2 * m * k * n) as u64;
    let (name, calls, f, nanos) = find(&got, 1, Access::N).expect("the NN product is accounted");
    assert_eq!((name.as_str(), calls, f), ("37x13x29:NN", 2, 2 * flops));
    assert!(nanos > 0);
    let (name, calls, f, _) = find(&got, 1, Access::T).expect("the NT product is accounted");
    assert_eq!((name.as_str(), calls, f), ("37x13x29:NT", 1, flops));
    let (name, calls, f, _) = find(&got, 3, Access::N).expect("the batched product is accounted");
    assert_eq!((name.as_str(), calls, f), ("3*37x13x29:NN", 1, 3 * flops));
    // Read and reset: a second take starts from zero.
    assert!(find(&again, 1, Access::N).is_none_or(|(_, calls, f, _)| calls == 0 && f == 0));
}
