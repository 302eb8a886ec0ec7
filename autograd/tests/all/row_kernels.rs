//! The SIMD row kernels against plain f64 reference implementations, on every ISA this machine
//! can run (AVX-512F, AVX2+FMA, portable), on proptest-drawn shapes whose row lengths straddle
//! the vector widths (1, primes, 15/16/17, 31/33, 65, ...), plus the parallel paths in a 2-thread
//! pool, and dense sweeps that measure the accuracy of the f32 `exp` and both GELU forms.

use autograd::kernels::rows::{AdamW, GeluKind, Rows};
use autograd::kernels::Isa;
use proptest::prelude::*;

fn cases() -> ProptestConfig {
    ProptestConfig::with_cases(crate::common::cases(64))
}

fn isas() -> Vec<Rows> {
    Isa::all_available().into_iter().map(Rows::new).collect()
}

/// `|got - want| <= rel * |want| + abs` for every element, with a message naming the kernel.
fn assert_close(what: &str, got: &[f32], want: &[f64], rel: f64, abs: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(err <= rel * w.abs() + abs, "{what}: element {i}: got {g}, want {w} (error {err:e})");
    }
}

fn row_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        3 => prop::sample::select(vec![1usize, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 65, 100, 192, 197]),
        1 => 1usize..300,
    ]
}

fn data(len: usize, lo: f32, hi: f32) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(lo..hi, len)
}

/// `rows x n` data.
fn matrix(lo: f32, hi: f32) -> impl Strategy<Value = (usize, usize, Vec<f32>)> {
    (1usize..6, row_len()).prop_flat_map(move |(rows, n)| (Just(rows), Just(n), data(rows * n, lo, hi)))
}

fn softmax_ref(x: &[f32], n: usize) -> Vec<f64> {
    x.chunks(n)
        .flat_map(|r| {
            let m = r.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let e: Vec<f64> = r.iter().map(|&v| (v as f64 - m).exp()).collect();
            let s: f64 = e.iter().sum();
            e.into_iter().map(move |v| v / s)
        })
        .collect()
}

/// GELU in f64, in forms without cancellation in the negative tail:
/// `x Phi(x) = 0.5 x erfc(-x / sqrt 2)` and `0.5 x (1 + tanh u) = x / (1 + exp(-2u))`.
fn gelu_ref(kind: GeluKind, x: f64) -> f64 {
    match kind {
        GeluKind::Erf => 0.5 * x * libm::erfc(-x / std::f64::consts::SQRT_2),
        GeluKind::Tanh => x / (1.0 + (-2.0 * tanh_u(x)).exp()),
    }
}

fn tanh_u(x: f64) -> f64 {
    (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)
}

fn gelu_grad_ref(kind: GeluKind, x: f64) -> f64 {
    match kind {
        GeluKind::Erf => {
            0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
                + x * (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
        }
        GeluKind::Tanh => {
            let e = (-2.0 * tanh_u(x)).exp();
            let (s, one_minus_s) = (1.0 / (1.0 + e), e / (1.0 + e));
            let du = (2.0 / std::f64::consts::PI).sqrt() * (1.0 + 3.0 * 0.044715 * x * x);
            s + 2.0 * x * s * one_minus_s * du
        }
    }
}

struct LnRef {
    y: Vec<f64>,
    mean: Vec<f64>,
    rstd: Vec<f64>,
}

fn layer_norm_ref(x: &[f32], w: &[f32], b: &[f32], eps: f64) -> LnRef {
    let n = w.len();
    let mut r = LnRef { y: vec![], mean: vec![], rstd: vec![] };
    for row in x.chunks(n) {
        let mu = row.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let var = row.iter().map(|&v| (v as f64 - mu).powi(2)).sum::<f64>() / n as f64;
        let rs = 1.0 / (var + eps).sqrt();
        r.y.extend(row.iter().zip(w.iter().zip(b)).map(|(&v, (&w, &b))| (v as f64 - mu) * rs * w as f64 + b as f64));
        r.mean.push(mu);
        r.rstd.push(rs);
    }
    r
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn softmax_matches_reference((rows, n, x) in matrix(-30.0, 30.0), dy_seed in data(5 * 300, -1.0, 1.0)) {
        let want = softmax_ref(&x, n);
        let dy = &dy_seed[..rows * n];
        // dx = y (dy - sum dy y), from the exact y.
        let want_dx: Vec<f64> = want
            .chunks(n)
            .zip(dy.chunks(n))
            .flat_map(|(y, g)| {
                let s: f64 = y.iter().zip(g).map(|(&y, &g)| y * g as f64).sum();
                y.iter().zip(g).map(move |(&y, &g)| y * (g as f64 - s)).collect::<Vec<_>>()
            })
            .collect();
        for k in isas() {
            let mut y = vec![f32::NAN; x.len()];
            k.softmax_forward(&x, &mut y, n);
            assert_close(&format!("{} softmax_forward n={n}", k.isa()), &y, &want, 2e-6 * (n as f64).sqrt().max(1.0), 1e-30);
            let mut dx = vec![f32::NAN; x.len()];
            k.softmax_backward(&y, dy, &mut dx, n);
            assert_close(&format!("{} softmax_backward n={n}", k.isa()), &dx, &want_dx, 1e-5, 1e-6);
        }
    }

    #[test]
    fn layer_norm_matches_reference(
        (rows, n, x) in matrix(-3.0, 5.0),
        wb in data(2 * 300, -2.0, 2.0),
        dy_all in data(5 * 300, -1.0, 1.0),
    ) {
        let (w, b) = (&wb[..n], &wb[300..300 + n]);
        let dy = &dy_all[..rows * n];
        let eps = 1e-6;
        let r = layer_norm_ref(&x, w, b, eps);
        // Backward from the exact mean and rstd.
        let (mut dx_ref, mut dw_ref, mut db_ref) = (vec![], vec![0.5f64; n], vec![-0.25f64; n]);
        for (i, (row, g)) in x.chunks(n).zip(dy.chunks(n)).enumerate() {
            let xhat: Vec<f64> = row.iter().map(|&v| (v as f64 - r.mean[i]) * r.rstd[i]).collect();
            let gw: Vec<f64> = g.iter().zip(w).map(|(&g, &w)| g as f64 * w as f64).collect();
            let c1 = gw.iter().sum::<f64>() / n as f64;
            let c2 = gw.iter().zip(&xhat).map(|(a, b)| a * b).sum::<f64>() / n as f64;
            dx_ref.extend(gw.iter().zip(&xhat).map(|(&g, &h)| r.rstd[i] * (g - c1 - h * c2)));
            for j in 0..n {
                dw_ref[j] += g[j] as f64 * xhat[j];
                db_ref[j] += g[j] as f64;
            }
        }
        for k in isas() {
            let (mut y, mut mean, mut rstd) = (vec![f32::NAN; x.len()], vec![f32::NAN; rows], vec![f32::NAN; rows]);
            k.layer_norm_forward(&x, (w, b), eps as f32, &mut y, (&mut mean, &mut rstd));
            let isa = k.isa();
            // rstd can be large for near-constant rows; scale absolute tolerances by it.
            let big = r.rstd.iter().cloned().fold(1.0, f64::max);
            assert_close(&format!("{isa} layer_norm mean"), &mean, &r.mean, 1e-5, 1e-6);
            assert_close(&format!("{isa} layer_norm rstd"), &rstd, &r.rstd, 2e-4, 1e-6);
            assert_close(&format!("{isa} layer_norm y"), &y, &r.y, 2e-4, 1e-5 * big);
            // The recompute from the saved statistics is the forward's output, bit for bit.
            let mut y2 = vec![f32::NAN; x.len()];
            k.layer_norm_apply(&x, (w, b), (&mean, &rstd), &mut y2);
            prop_assert!(y.iter().zip(&y2).all(|(a, b)| a.to_bits() == b.to_bits()), "{isa}: layer_norm_apply differs from the forward");
            let (mut dx, mut dw, mut db) = (vec![f32::NAN; x.len()], vec![0.5f32; n], vec![-0.25f32; n]);
            k.layer_norm_backward(&x, w, (&mean, &rstd), dy, &mut dx, (&mut dw, &mut db));
            assert_close(&format!("{isa} layer_norm dx"), &dx, &dx_ref, 1e-3, 1e-4 * big);
            assert_close(&format!("{isa} layer_norm dw"), &dw, &dw_ref, 1e-4, 1e-4 * big * rows as f64);
            assert_close(&format!("{isa} layer_norm db"), &db, &db_ref, 1e-5, 1e-5 * rows as f64);
        }
    }

    #[test]
    fn gelu_matches_reference(x in prop::collection::vec(-12.0f32..12.0, 1..300), dy in data(300, -1.0, 1.0)) {
        for kind in [GeluKind::Erf, GeluKind::Tanh] {
            let want: Vec<f64> = x.iter().map(|&v| gelu_ref(kind, v as f64)).collect();
            let want_dx: Vec<f64> = x.iter().zip(&dy).map(|(&v, &g)| g as f64 * gelu_grad_ref(kind, v as f64)).collect();
            for k in isas() {
                let mut y = vec![f32::NAN; x.len()];
                k.gelu_forward(kind, &x, &mut y);
                assert_close(&format!("{} gelu {kind:?}", k.isa()), &y, &want, 2e-5, 1e-30);
                let mut dx = vec![f32::NAN; x.len()];
                k.gelu_backward(kind, &x, &dy[..x.len()], &mut dx);
                assert_close(&format!("{} gelu' {kind:?}", k.isa()), &dx, &want_dx, 1e-6, 2e-7);
                // Both in one pass: the forward's bits, and the derivative the backward applies.
                let (mut y2, mut d) = (vec![f32::NAN; x.len()], vec![f32::NAN; x.len()]);
                k.gelu_forward_grad(kind, &x, &mut y2, &mut d);
                let same = y.iter().zip(&y2).all(|(a, b)| a.to_bits() == b.to_bits());
                prop_assert!(same, "{} gelu_forward_grad {kind:?}: y differs from gelu_forward's", k.isa());
                let dx2: Vec<f32> = d.iter().zip(&dy).map(|(d, g)| g * d).collect();
                assert_close(&format!("{} gelu_forward_grad' {kind:?}", k.isa()), &dx2, &want_dx, 1e-6, 2e-7);
            }
        }
    }

    #[test]
    fn bias_add_and_sum_rows_match_reference((rows, n, x) in matrix(-4.0, 4.0), bias in data(300, -2.0, 2.0)) {
        let bias = &bias[..n];
        let want: Vec<f64> = x.chunks(n).flat_map(|r| r.iter().zip(bias).map(|(&a, &b)| a as f64 + b as f64)).collect();
        let mut sums = vec![1.0f64; n];
        for r in x.chunks(n) {
            for j in 0..n {
                sums[j] += r[j] as f64;
            }
        }
        for k in isas() {
            let mut y = x.clone();
            k.bias_add(&mut y, bias);
            assert_close(&format!("{} bias_add", k.isa()), &y, &want, 1e-7, 0.0);
            let mut out = vec![1.0f32; n];
            k.sum_rows(&x, &mut out);
            assert_close(&format!("{} sum_rows", k.isa()), &out, &sums, 1e-6, 1e-6 * rows as f64);
        }
    }

    #[test]
    fn adamw_matches_reference(p0 in prop::collection::vec(-1.0f32..1.0, 1..200), seed in any::<u32>()) {
        let len = p0.len();
        let h = |t: u64| AdamW::at_step(t, 1e-3, (0.9, 0.999), 1e-8, 0.05);
        let grad = |t: u32, i: usize| ((seed.wrapping_add(t * 7919).wrapping_mul(i as u32 + 1) % 2001) as f32 - 1000.0) * 1e-3;
        for k in isas() {
            let (mut p, mut m, mut v) = (p0.clone(), vec![0.0f32; len], vec![0.0f32; len]);
            let (mut pr, mut mr, mut vr): (Vec<f64>, Vec<f64>, Vec<f64>) =
                (p0.iter().map(|&x| x as f64).collect(), vec![0.0; len], vec![0.0; len]);
            for t in 1..=5 {
                let g: Vec<f32> = (0..len).map(|i| grad(t as u32, i)).collect();
                let hp = h(t);
                k.adamw(&mut p, &g, (&mut m, &mut v), &hp);
                // The reference: exact hyper-parameters, f64 arithmetic.
                let (b1, b2, lr, eps, wd) = (0.9f64, 0.999f64, 1e-3f64, 1e-8f64, 0.05f64);
                let (bc1, bc2) = (1.0 - b1.powi(t as i32), 1.0 - b2.powi(t as i32));
                for i in 0..len {
                    let gi = g[i] as f64;
                    pr[i] *= 1.0 - lr * wd;
                    mr[i] = b1 * mr[i] + (1.0 - b1) * gi;
                    vr[i] = b2 * vr[i] + (1.0 - b2) * gi * gi;
                    pr[i] -= lr / bc1 * mr[i] / (vr[i].sqrt() / bc2.sqrt() + eps);
                }
            }
            assert_close(&format!("{} adamw p", k.isa()), &p, &pr, 1e-6, 1e-7);
            assert_close(&format!("{} adamw m", k.isa()), &m, &mr, 1e-5, 5e-8);
            assert_close(&format!("{} adamw v", k.isa()), &v, &vr, 1e-5, 5e-9);
        }
    }
}

/// Tensors big enough to be split over threads (a 2-thread pool) give the same results as the
/// reference: the parallel paths, including the per-chunk partial sums of layer norm's dw, db.
#[test]
fn parallel_paths_match_reference() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let (rows, n) = (700, 192);
    let val = |i: usize| ((i * 7919 % 1000) as f32 / 250.0) - 2.0;
    let x: Vec<f32> = (0..rows * n).map(val).collect();
    let dy: Vec<f32> = (0..rows * n).map(|i| val(i + 17) * 0.5).collect();
    let w: Vec<f32> = (0..n).map(|i| 1.0 + val(i + 3) * 0.1).collect();
    let b: Vec<f32> = (0..n).map(|i| val(i + 5) * 0.1).collect();
    pool.install(|| {
        for k in isas() {
            let isa = k.isa();
            let mut y = vec![0.0; x.len()];
            k.softmax_forward(&x, &mut y, n);
            assert_close(&format!("{isa} parallel softmax"), &y, &softmax_ref(&x, n), 4e-6, 1e-30);

            let r = layer_norm_ref(&x, &w, &b, 1e-6);
            let (mut y, mut mean, mut rstd) = (vec![0.0; x.len()], vec![0.0; rows], vec![0.0; rows]);
            k.layer_norm_forward(&x, (&w, &b), 1e-6, &mut y, (&mut mean, &mut rstd));
            assert_close(&format!("{isa} parallel layer_norm"), &y, &r.y, 1e-4, 1e-5);
            let (mut dx, mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; n], vec![0.0; n]);
            k.layer_norm_backward(&x, &w, (&mean, &rstd), &dy, &mut dx, (&mut dw, &mut db));
            let mut db_ref = vec![0.0f64; n];
            let mut dw_ref = vec![0.0f64; n];
            for (i, g) in dy.chunks(n).enumerate() {
                for j in 0..n {
                    db_ref[j] += g[j] as f64;
                    dw_ref[j] += g[j] as f64 * (x[i * n + j] as f64 - r.mean[i]) * r.rstd[i];
                }
            }
            assert_close(&format!("{isa} parallel layer_norm db"), &db, &db_ref, 1e-5, 1e-3);
            assert_close(&format!("{isa} parallel layer_norm dw"), &dw, &dw_ref, 1e-4, 1e-3);

            let mut out = vec![0.0; n];
            k.sum_rows(&x, &mut out);
            let sums: Vec<f64> = (0..n).map(|j| (0..rows).map(|i| x[i * n + j] as f64).sum()).collect();
            assert_close(&format!("{isa} parallel sum_rows"), &out, &sums, 1e-5, 1e-3);

            let mut g = vec![0.0; x.len()];
            k.gelu_forward(GeluKind::Erf, &x, &mut g);
            let want: Vec<f64> = x.iter().map(|&v| gelu_ref(GeluKind::Erf, v as f64)).collect();
            assert_close(&format!("{isa} parallel gelu"), &g, &want, 2e-6, 1e-30);
        }
    });
}

/// The reductions over rows (column sums, layer norm's parameter gradients, and the ops built on
/// them: a Linear's bias gradient, sums over leading axes) give the same bits on 1, 2 and 3
/// threads: their blocks depend on the row width only.
#[test]
fn reductions_over_rows_do_not_depend_on_the_thread_count() {
    let (rows, n) = (5000, 96);
    let val = |i: usize| ((i * 7919 % 1000) as f32 / 250.0) - 2.0;
    let x: Vec<f32> = (0..rows * n).map(val).collect();
    let w: Vec<f32> = (0..n).map(|i| 1.0 + val(i + 3) * 0.1).collect();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let k = Rows::active();
            let mut sums = vec![0.0f32; n];
            k.sum_rows(&x, &mut sums);
            let (mut mean, mut rstd, mut y) = (vec![0.0; rows], vec![0.0; rows], vec![0.0; x.len()]);
            k.layer_norm_forward(&x, (&w, &w), 1e-6, &mut y, (&mut mean, &mut rstd));
            let (mut dx, mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; n], vec![0.0; n]);
            k.layer_norm_backward(&x, &w, (&mean, &rstd), &y, &mut dx, (&mut dw, &mut db));
            let mut sums64 = vec![0.0f64; n];
            let x64: Vec<f64> = x.iter().map(|&v| v as f64 * 1.1).collect();
            autograd::kernels::parallel::sum_rows(&x64, &mut sums64);
            (sums, dw, db, sums64)
        })
    };
    let one = run(1);
    assert!(one.0.iter().all(|v| v.is_finite()) && one.0.iter().any(|&v| v != 0.0));
    for threads in [2, 3] {
        assert!(run(threads) == one, "{threads} threads sum differently from one");
    }
}

/// Dense sweeps that measure the f32 approximations' worst error against f64 and hold them to
/// the bounds stated in `kernels/rows/math.rs`:
/// - `exp`: relative error on `[-87, 88]`;
/// - GELU: relative error on `[-6, 10]`, and on the far tail `[-10, -6]` (values below 1e-8,
///   where the f32 rounding of the argument `x^2` or `u` dominates);
/// - GELU': error relative to `max(1, |gelu'|)`: the derivative crosses zero near -0.75 by
///   cancellation of two terms of size 0.23, so only an absolute bound is meaningful there.
#[test]
fn transcendental_accuracy() {
    let sweep = |lo: f32, hi: f32, count: usize| -> Vec<f32> {
        (0..count).map(|i| lo + (hi - lo) * i as f32 / (count - 1) as f32).collect()
    };
    for k in isas() {
        let isa = k.isa();
        // exp over its whole normal range.
        let x = sweep(-87.0, 88.0, 400_001);
        let mut y = vec![0.0; x.len()];
        k.exp(&x, &mut y);
        let worst = x
            .iter()
            .zip(&y)
            .map(|(&x, &y)| ((y as f64 - (x as f64).exp()) / (x as f64).exp()).abs())
            .fold(0.0, f64::max);
        eprintln!("{isa}: exp max relative error {worst:.2e}");
        assert!(worst < 3e-7, "{isa}: exp max relative error {worst:e}");
        // Saturation: 0 below the normal range, finite above it.
        let mut t = vec![0.0; 2];
        k.exp(&[-100.0, 100.0], &mut t);
        assert!(t[0] == 0.0 && t[1].is_finite() && t[1] > 1e38, "{isa}: exp tails {t:?}");

        for kind in [GeluKind::Erf, GeluKind::Tanh] {
            let x = sweep(-10.0, 10.0, 200_001);
            let mut y = vec![0.0; x.len()];
            k.gelu_forward(kind, &x, &mut y);
            let mut dx = vec![0.0; x.len()];
            k.gelu_backward(kind, &x, &vec![1.0; x.len()], &mut dx);
            let (mut y2, mut d2) = (vec![0.0; x.len()], vec![0.0; x.len()]);
            k.gelu_forward_grad(kind, &x, &mut y2, &mut d2);
            assert!(y.iter().zip(&y2).all(|(a, b)| a.to_bits() == b.to_bits()), "{isa}: gelu_forward_grad's y");
            // Its derivative is the backward's (here with dy = 1, an exact multiply).
            assert!(dx.iter().zip(&d2).all(|(a, b)| a.to_bits() == b.to_bits()), "{isa}: gelu_forward_grad's d");
            let (mut core, mut tail, mut grad) = (0.0f64, 0.0f64, 0.0f64);
            for (((&x, &y), &d), &d2) in x.iter().zip(&y).zip(&dx).zip(&d2) {
                let (w, wd) = (gelu_ref(kind, x as f64), gelu_grad_ref(kind, x as f64));
                if w != 0.0 {
                    let rel = ((y as f64 - w) / w).abs();
                    if x >= -6.0 {
                        core = core.max(rel);
                    } else {
                        tail = tail.max(rel);
                    }
                }
                grad = grad.max((d as f64 - wd).abs() / wd.abs().max(1.0));
                grad = grad.max((d2 as f64 - wd).abs() / wd.abs().max(1.0));
            }
            eprintln!("{isa}: gelu {kind:?} max relative error {core:.2e} on [-6, 10], {tail:.2e} on [-10, -6]; gelu' {grad:.2e}");
            // The tanh form's argument `2u` (12.7 at x = -6) carries f32 rounding of ~3 ulp
            // relative, which becomes relative error of the result: ~2e-7 |2u|.
            // The portable kernel on baseline x86-64 has no fused multiply-add, so the exact
            // split `x^2 = hi + lo` degrades to `lo = 0`: allow it a few more ulps.
            let slack = if isa == Isa::Portable { 3.0 } else { 1.0 };
            let bound = if kind == GeluKind::Erf { 1e-6 } else { 4e-6 };
            assert!(core < bound * slack, "{isa}: gelu {kind:?} max relative error {core:e} on [-6, 10]");
            assert!(tail < 2e-5 * slack, "{isa}: gelu {kind:?} max relative error {tail:e} on [-10, -6]");
            assert!(grad < 2.5e-7 * slack, "{isa}: gelu' {kind:?} max error {grad:e}");
        }
    }
}

/// The fused multiply-and-column-sum (the Linear+GELU backward's `dh = gelu'(h) g` with its bias
/// gradient) gives the bits of the two passes it replaces, the multiply then `sum_rows`, on every
/// ISA and in f64, one block or many (5000 x 96 is several blocks of rows), and adds into `out`.
#[test]
fn scale_sum_rows_is_the_multiply_then_the_column_sums() {
    let val = |i: usize, s: usize| ((i * 7919 + s) % 1009) as f32 / 250.0 - 2.0;
    for (rows, n) in [(1, 5), (7, 300), (5000, 96), (33, 17)] {
        let d: Vec<f32> = (0..rows * n).map(|i| val(i, 1)).collect();
        let g: Vec<f32> = (0..rows * n).map(|i| val(i, 5) * 0.3).collect();
        for k in isas() {
            let isa = k.isa();
            let want_d: Vec<f32> = d.iter().zip(&g).map(|(&d, &g)| g * d).collect();
            let mut want_sum = vec![0.5f32; n];
            k.sum_rows(&want_d, &mut want_sum);
            let (mut got_d, mut got_sum) = (d.clone(), vec![0.5f32; n]);
            k.scale_sum_rows(&mut got_d, &g, &mut got_sum);
            assert!(got_d == want_d, "{isa} {rows}x{n}: the scaled d differs");
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got_sum), bits(&want_sum), "{isa} {rows}x{n}: the column sums differ");
        }
        let (d64, g64): (Vec<f64>, Vec<f64>) =
            (d.iter().map(|&v| v as f64).collect(), g.iter().map(|&v| v as f64 / 3.0).collect());
        let want_d: Vec<f64> = d64.iter().zip(&g64).map(|(&d, &g)| g * d).collect();
        let mut want_sum = vec![0.5f64; n];
        autograd::kernels::parallel::sum_rows(&want_d, &mut want_sum);
        let (mut got_d, mut got_sum) = (d64.clone(), vec![0.5f64; n]);
        autograd::kernels::parallel::scale_sum_rows(&mut got_d, &g64, &mut got_sum);
        assert!(got_d == want_d && got_sum == want_sum, "f64 {rows}x{n}: differs from the two passes");
    }
}
