//! Few-shot linear evaluation: our Cholesky and ridge solve against a Gauss-Jordan reference and
//! the optimality condition on random problems (both the primal and the dual branch), the shot
//! sampler, the probe on features with a known answer, and the evaluator end to end on a small
//! model.

use autograd::Rng;
use proptest::prelude::*;
use vit::data::{Dataset, ImageShape};
use vit::fewshot::ridge::{cholesky, cholesky_solve, ridge};
use vit::fewshot::{evaluate, sample_shots, FewShotConfig, LinearProbe};
use vit::nn::{ViTConfig, VisionTransformer};

mod common;

/// Solves `A X = B` by Gauss-Jordan elimination with partial pivoting (the reference).
fn gauss_solve(a: &[f64], n: usize, b: &[f64], k: usize) -> Vec<f64> {
    let w = n + k;
    let mut m: Vec<f64> = (0..n)
        .flat_map(|i| a[i * n..(i + 1) * n].iter().chain(&b[i * k..(i + 1) * k]).copied().collect::<Vec<_>>())
        .collect();
    for col in 0..n {
        let piv = (col..n).max_by(|&i, &j| m[i * w + col].abs().total_cmp(&m[j * w + col].abs())).unwrap();
        for j in 0..w {
            m.swap(col * w + j, piv * w + j);
        }
        let p = m[col * w + col];
        for j in 0..w {
            m[col * w + j] /= p;
        }
        for i in (0..n).filter(|&i| i != col) {
            let f = m[i * w + col];
            for j in 0..w {
                m[i * w + j] -= f * m[col * w + j];
            }
        }
    }
    (0..n).flat_map(|i| m[i * w + n..(i + 1) * w].to_vec()).collect()
}

/// `a^T b` for row-major `a` `[n, p]`, `b` `[n, q]`, in plain loops.
fn at_b(a: &[f64], b: &[f64], n: usize, p: usize, q: usize) -> Vec<f64> {
    let mut c = vec![0.0; p * q];
    for r in 0..n {
        for i in 0..p {
            for j in 0..q {
                c[i * q + j] += a[r * p + i] * b[r * q + j];
            }
        }
    }
    c
}

fn randn(n: usize, rng: &mut Rng) -> Vec<f64> {
    autograd::Tensor::<f64>::randn(&[n], 0.0, 1.0, rng).into_vec()
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(common::cases(64)))]

    #[test]
    fn cholesky_solve_matches_gauss_jordan(n in 1..=24usize, k in 1..=5usize, seed in 0..1000u64) {
        let mut rng = Rng::seed(seed);
        let m = randn(n * n, &mut rng);
        // A = M^T M + I: symmetric positive definite.
        let mut a = at_b(&m, &m, n, n, n);
        (0..n).for_each(|i| a[i * n + i] += 1.0);
        let b = randn(n * k, &mut rng);
        let l = cholesky(&a, n).unwrap();
        // L L^T reproduces A.
        let mut llt = vec![0.0; n * n];
        for i in 0..n { for j in 0..n { llt[i * n + j] = (0..n).map(|p| l[i * n + p] * l[j * n + p]).sum(); } }
        prop_assert!(max_diff(&llt, &a) < 1e-9 * (1.0 + a.iter().fold(0.0f64, |x, v| x.max(v.abs()))));
        let got = cholesky_solve(&l, n, &b, k);
        let want = gauss_solve(&a, n, &b, k);
        prop_assert!(max_diff(&got, &want) < 1e-8, "max diff {}", max_diff(&got, &want));
    }

    /// Both branches (N >= D: the D x D system; N < D: the N x N one) against the reference solve
    /// of the normal equations, and the optimality condition X^T (X W - T) + lambda W = 0.
    #[test]
    fn ridge_matches_the_normal_equations(n in 1..=30usize, d in 1..=30usize, k in 1..=4usize,
                                          lambda in prop_oneof![Just(1e-2), Just(1.0), Just(1024.0)], seed in 0..1000u64) {
        let mut rng = Rng::seed(seed);
        let x = randn(n * d, &mut rng);
        let t = randn(n * k, &mut rng);
        let w = ridge(&x, n, d, &t, k, lambda).unwrap();
        let mut a = at_b(&x, &x, n, d, d);
        (0..d).for_each(|i| a[i * d + i] += lambda);
        let want = gauss_solve(&a, d, &at_b(&x, &t, n, d, k), k);
        let scale = 1.0 + want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        prop_assert!(max_diff(&w, &want) < 1e-7 * scale, "n {n} d {d}: max diff {}", max_diff(&w, &want));
        // Gradient of |XW - T|^2 + lambda |W|^2, halved.
        let mut r = vec![0.0; n * k];
        for i in 0..n { for c in 0..k { r[i * k + c] = (0..d).map(|j| x[i * d + j] * w[j * k + c]).sum::<f64>() - t[i * k + c]; } }
        let grad: Vec<f64> = at_b(&x, &r, n, d, k).iter().zip(&w).map(|(g, w)| g + lambda * w).collect();
        prop_assert!(grad.iter().all(|g| g.abs() < 1e-7 * scale * (1.0 + lambda)), "gradient {grad:?}");
    }
}

#[test]
fn a_matrix_that_is_not_positive_definite_is_an_error_naming_the_pivot() {
    let a = [1.0, 2.0, 2.0, 1.0]; // eigenvalues 3 and -1
    let e = cholesky(&a, 2).unwrap_err().to_string();
    assert!(e.contains("not positive definite (pivot 1"), "{e}");
    let e = ridge(&[1.0; 4], 2, 2, &[1.0; 2], 1, 0.0).unwrap_err().to_string();
    assert!(e.contains("--l2 must be a finite number > 0"), "{e}");
}

/// `n` images per class of `classes` classes, 1 x 8 x 8, whose brightness is the class (plus
/// noise): a task any reasonable feature map separates.
fn brightness_dataset(classes: usize, n: usize, seed: u64) -> Dataset {
    let mut rng = Rng::seed(seed);
    let shape = ImageShape::new(1, 8, 8);
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for i in 0..classes * n {
        let c = i % classes;
        let base = 30.0 + 190.0 * c as f64 / (classes - 1).max(1) as f64;
        images.extend((0..shape.len()).map(|_| (base + 12.0 * (rng.uniform() - 0.5)).clamp(0.0, 255.0) as u8));
        labels.push(c as u8);
    }
    Dataset::new(images, labels, shape, (0..classes).map(|c| format!("c{c}")).collect()).unwrap()
}

#[test]
fn shots_are_distinct_per_class_reproducible_and_differ_by_seed() {
    let d = brightness_dataset(4, 9, 0);
    let a = sample_shots(&d, 5, 0).unwrap();
    assert_eq!(a.len(), 20);
    for c in 0..4 {
        let mine: Vec<usize> = a[c * 5..(c + 1) * 5].to_vec();
        assert!(mine.iter().all(|&i| d.label(i) == c), "class {c}: {mine:?}");
        let mut s = mine.clone();
        s.sort();
        s.dedup();
        assert_eq!(s.len(), 5, "class {c} drew a duplicate: {mine:?}");
    }
    assert_eq!(a, sample_shots(&d, 5, 0).unwrap());
    assert_ne!(a, sample_shots(&d, 5, 1).unwrap());
    let e = sample_shots(&d, 10, 0).unwrap_err().to_string();
    assert!(e.contains("class 0 (c0) has 9 training images, fewer than 10 shots"), "{e}");
}

#[test]
fn the_probe_separates_features_with_a_known_answer_and_not_noise() {
    let mut rng = Rng::seed(3);
    let (classes, f) = (5, 12);
    // Class c's features: a fixed random centre plus small noise.
    let centres: Vec<f64> = randn(classes * f, &mut rng);
    let sample = |n: usize, rng: &mut Rng, noise: f64| -> (Vec<f32>, Vec<usize>) {
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..n {
            let c = i % classes;
            x.extend((0..f).map(|j| (centres[c * f + j] + noise * randn(1, rng)[0]) as f32));
            y.push(c);
        }
        (x, y)
    };
    let (xtr, ytr) = sample(5 * classes, &mut rng, 0.1);
    let (xte, yte) = sample(200, &mut rng, 0.1);
    let probe = LinearProbe::fit(&xtr, &ytr, classes, 1.0).unwrap();
    assert_eq!(probe.accuracy(&xte, &yte), 1.0);
    // Labels unrelated to the features: about chance (1/5) on fresh data.
    let (xn, _) = sample(200, &mut rng, 0.1);
    let shuffled: Vec<usize> = (0..200).map(|_| rng.below(classes)).collect();
    let acc = LinearProbe::fit(&xtr, &ytr, classes, 1.0).unwrap().accuracy(&xn, &shuffled);
    assert!(acc < 0.4, "accuracy {acc} on random labels");
}

#[test]
fn evaluate_reports_every_shot_count_and_seed_and_beats_chance_on_an_easy_task() {
    let cfg = ViTConfig {
        image_size: 8,
        patch_size: 4,
        in_chans: 1,
        num_classes: 4,
        dim: 16,
        depth: 1,
        heads: 2,
        mlp_dim: 32,
        ..ViTConfig::tiny(4, 8)
    };
    let (model, params) = VisionTransformer::init::<f32>(&cfg, 0).unwrap();
    let (train, test) = (brightness_dataset(4, 30, 1), brightness_dataset(4, 25, 2));
    let fc = FewShotConfig { shots: vec![1, 5], seeds: 3, ..FewShotConfig::default() };
    let results = evaluate(&model, &params, &train, &test, &fc).unwrap();
    assert_eq!(results.iter().map(|r| (r.shots, r.accuracies.len())).collect::<Vec<_>>(), [(1, 3), (5, 3)]);
    for r in &results {
        eprintln!("{}-shot: {:.3} +- {:.3}", r.shots, r.mean(), r.std());
        // Even a random ViT's features order brightness: far above the 25% of chance.
        assert!(r.mean() > 0.6, "{}-shot accuracy {:?}", r.shots, r.accuracies);
    }
    let bad = FewShotConfig { shots: vec![0], ..fc.clone() };
    assert!(evaluate(&model, &params, &train, &test, &bad)
        .unwrap_err()
        .to_string()
        .contains("shot counts of at least 1"));
}

#[test]
fn to_shape_upsamples_and_repeats_grey_over_channels() {
    let d = brightness_dataset(3, 2, 4);
    let big = d.to_shape(ImageShape::new(3, 16, 16)).unwrap();
    assert_eq!((big.len(), big.shape()), (6, ImageShape::new(3, 16, 16)));
    assert_eq!(big.labels(), d.labels());
    // Every channel is the same upsampled grey plane; a constant-ish image keeps its mean.
    let img = big.image(0);
    assert_eq!(&img[..256], &img[256..512]);
    let mean = |v: &[u8]| v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
    assert!((mean(&img[..256]) - mean(d.image(0))).abs() < 2.0);
    assert_eq!(big.normalization().mean.len(), 3);
    let e = big.to_shape(ImageShape::new(1, 16, 16)).unwrap_err().to_string();
    assert!(e.contains("only grey images are repeated"), "{e}");
}
