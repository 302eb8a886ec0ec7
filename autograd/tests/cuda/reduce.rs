//! Reductions on the device against the CPU's `sum`, `mean`, `max` and `argmax`.

use std::sync::Arc;

use autograd::cuda::prims::reduce;
use autograd::cuda::Gpu;
use autograd::ops::reduce::argmax;
use autograd::Float;
use proptest::prelude::*;

use crate::both;
use crate::harness::{close, prop, tol, Tests};
use crate::util::{cpu_forward, random, shape, up};

pub const TESTS: Tests = &[
    ("reduce::sums_over_adjacent_axes", adjacent),
    ("reduce::long_sums_take_the_two_pass_path", long_sums),
    ("reduce::sums_over_any_axes", any_axes),
    ("reduce::max_and_argmax_along_an_axis", max_argmax),
];

fn split(s: &[usize], lo: usize, hi: usize) -> (usize, usize, usize) {
    (s[..lo].iter().product(), s[lo..hi].iter().product(), s[hi..].iter().product())
}

fn adjacent_case<T: Float>(gpu: &Arc<Gpu>, s: &[usize], lo: usize, hi: usize, seed: u64) -> Result<(), String> {
    let x = random::<T>(s, seed, -1.0, 1.0);
    let axes: Vec<usize> = (lo..hi).collect();
    let (outer, r, inner) = split(s, lo, hi);
    let want = cpu_forward(std::slice::from_ref(&x), |g, v| g.mean(v[0], &axes, false));
    let got = reduce::sum_mid(&up(gpu, &x), outer, r, inner, 1.0 / r as f64);
    close(&format!("mean over {axes:?} of {s:?}"), &got.to_vec(), want.data(), tol::<T>())
}

fn adjacent(gpu: &Arc<Gpu>) -> Result<(), String> {
    let case = shape(1, 4, 9).prop_flat_map(|s| {
        let r = s.len();
        (Just(s), 0..r).prop_flat_map(move |(s, lo)| (Just(s), Just(lo), lo + 1..=r))
    });
    prop((case, any::<u64>()), |((s, lo, hi), seed)| both!(adjacent_case(gpu, &s, lo, hi, seed)))
}

fn long_sums(gpu: &Arc<Gpu>) -> Result<(), String> {
    // Rows longer than one sum_rows chunk (8192) and columns longer than one sum_cols chunk
    // (1024), so the partials and the second pass are exercised, in both layouts.
    let cases: [(&[usize], usize, usize); 5] = [
        (&[1, 20_000], 1, 2),
        (&[3, 9_000], 1, 2),
        (&[2_500, 3], 0, 1),
        (&[1, 70_000, 1], 0, 3),
        (&[4, 1_100, 33], 1, 2),
    ];
    for (k, (s, lo, hi)) in cases.into_iter().enumerate() {
        both!(adjacent_case(gpu, s, lo, hi, k as u64))?;
    }
    Ok(())
}

fn any_axes_case<T: Float>(gpu: &Arc<Gpu>, s: &[usize], mask: &[bool], seed: u64) -> Result<(), String> {
    let x = random::<T>(s, seed, -1.0, 1.0);
    let axes: Vec<usize> = (0..s.len()).filter(|&k| mask[k]).collect();
    let want = cpu_forward(std::slice::from_ref(&x), |g, v| g.sum(v[0], &axes, true));
    let got = reduce::sum_general(&up(gpu, &x), s, mask, 1.0);
    close(&format!("sum over {axes:?} of {s:?}"), &got.to_vec(), want.data(), tol::<T>())
}

fn any_axes(gpu: &Arc<Gpu>) -> Result<(), String> {
    let case = shape(1, 5, 5).prop_flat_map(|s| {
        let r = s.len();
        (Just(s), prop::collection::vec(any::<bool>(), r))
    });
    prop((case, any::<u64>()), |((s, m), seed)| both!(any_axes_case(gpu, &s, &m, seed)))
}

fn max_case<T: Float>(gpu: &Arc<Gpu>, s: &[usize], axis: usize, seed: u64) -> Result<(), String> {
    // Few distinct values, so ties (first index wins) happen.
    let x = random::<T>(s, seed, -3.0, 3.0).map(|v| T::from_f64((v.to_f64() * 2.0).round()));
    let want = cpu_forward(std::slice::from_ref(&x), |g, v| g.max(v[0], axis, false));
    let want_idx: Vec<i64> = argmax(&x, axis).into_iter().map(|i| i as i64).collect();
    let (outer, n, inner) = split(s, axis, axis + 1);
    let (values, idx) = reduce::max_along(&up(gpu, &x), outer, n, inner, true);
    close("max", &values.unwrap().to_vec(), want.data(), 0.0)?;
    let got = idx.to_vec();
    if got != want_idx {
        return Err(format!("argmax along {axis} of {s:?}: {got:?}, want {want_idx:?}"));
    }
    Ok(())
}

fn max_argmax(gpu: &Arc<Gpu>) -> Result<(), String> {
    let case = shape(1, 4, 7).prop_flat_map(|s| {
        let r = s.len();
        (Just(s), 0..r)
    });
    prop((case, any::<u64>()), |((s, axis), seed)| both!(max_case(gpu, &s, axis, seed)))
}
