//! Shared helpers for the op tests: proptest strategies for shapes and values, and a gradcheck
//! wrapper that fails the test with gradcheck's own report.
#![allow(dead_code)]

use autograd::{gradcheck, GradcheckOptions, Graph, Tensor, Var};
use proptest::prelude::*;

/// Cases per property: `default` (64 for most properties), raised by `PROPTEST_CASES`, never
/// lowered below it, except under emulation: the aarch64 cargo runner (`.cargo/config.toml`) sets
/// `VIT_EMULATOR`, every case then runs tens of times slower, and a quarter of the cases (never
/// fewer than 16) is what keeps `.ci/run` within its time.
pub fn cases(default: u32) -> u32 {
    let asked = std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(default).max(default);
    if std::env::var_os("VIT_EMULATOR").is_some() {
        (asked / 4).max(16)
    } else {
        asked
    }
}

/// The op tests' proptest configuration: [`cases`]`(64)`, a fixed seed.
pub fn config() -> ProptestConfig {
    let cases = cases(64);
    // A fixed seed (overridable with PROPTEST_RNG_SEED) makes every run, CI's included, draw the
    // same cases, so a failure reproduces; raise PROPTEST_CASES to explore further.
    let seed = std::env::var("PROPTEST_RNG_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_1234);
    ProptestConfig { rng_seed: proptest::test_runner::RngSeed::Fixed(seed), ..ProptestConfig::with_cases(cases) }
}

/// A dimension size: biased towards the edge sizes 1, 2 and small primes.
pub fn dim(max: usize) -> impl Strategy<Value = usize> {
    prop_oneof![Just(1usize), Just(2), Just(3), Just(5), Just(7), 1..=max]
}

/// A shape of rank `lo..=hi` with dims from [`dim`].
pub fn shape(lo: usize, hi: usize, max_dim: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(dim(max_dim), lo..=hi)
}

/// A tensor of the given shape with values in `[lo, hi]`.
pub fn tensor_in(shape: Vec<usize>, lo: f64, hi: f64) -> impl Strategy<Value = Tensor<f64>> {
    let n: usize = shape.iter().product();
    prop::collection::vec(lo..=hi, n).prop_map(move |v| Tensor::from_vec(v, &shape))
}

/// A tensor of the given shape with values in `[-2, 2]`.
pub fn tensor(shape: Vec<usize>) -> impl Strategy<Value = Tensor<f64>> {
    tensor_in(shape, -2.0, 2.0)
}

/// Asserts that `f`'s gradients at `inputs` match central differences (default tolerances:
/// relative 1e-6 or absolute 1e-8 per element).
pub fn assert_gradcheck(f: impl Fn(&mut Graph<f64>, &[Var]) -> Var, inputs: &[Tensor<f64>]) {
    if let Err(e) = gradcheck(f, inputs, &GradcheckOptions::default()) {
        panic!("{e}");
    }
}

/// Asserts two tensors have the same shape and agree elementwise within `tol` (absolute +
/// relative).
pub fn assert_close<T: autograd::Float>(got: &Tensor<T>, want: &Tensor<T>, tol: f64) {
    assert_eq!(got.shape(), want.shape(), "shapes differ");
    for (i, (a, b)) in got.data().iter().zip(want.data()).enumerate() {
        let (a, b) = (a.to_f64(), b.to_f64());
        assert!((a - b).abs() <= tol * (1.0 + b.abs()), "element {i}: got {a}, want {b} (tolerance {tol})");
    }
}

/// Runs `f` forward on a fresh inference tape and returns the output value.
pub fn forward(f: impl Fn(&mut Graph<f64>, &[Var]) -> Var, inputs: &[Tensor<f64>]) -> Tensor<f64> {
    let mut g = Graph::inference();
    let vars: Vec<Var> = inputs.iter().map(|x| g.input(x.clone())).collect();
    let y = f(&mut g, &vars);
    g.value(y).clone()
}

/// `f` run forward on one input (see [`forward`]).
pub fn forward1(f: impl Fn(&mut Graph<f64>, Var) -> Var, x: &Tensor<f64>) -> Tensor<f64> {
    forward(|g, v| f(g, v[0]), std::slice::from_ref(x))
}

/// [`assert_gradcheck`] of a function of one input.
pub fn gradcheck1(f: impl Fn(&mut Graph<f64>, Var) -> Var, x: &Tensor<f64>) {
    assert_gradcheck(|g, v| f(g, v[0]), std::slice::from_ref(x))
}

/// Every multi-index of `shape`, row-major.
pub fn indices(shape: &[usize]) -> Vec<Vec<usize>> {
    let mut all = vec![vec![]];
    for &d in shape {
        all = all.into_iter().flat_map(|idx| (0..d).map(move |i| [&idx[..], &[i]].concat())).collect();
    }
    all
}
