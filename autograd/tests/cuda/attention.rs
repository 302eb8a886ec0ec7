//! Fused multi-head attention on the device against the CPU op: outputs, kept probabilities,
//! and the gradient with the probabilities recomputed or kept, with and without dropout.

use std::sync::Arc;

use autograd::cuda::prims::attention::{attention_backward, attention_forward, Heads};
use autograd::cuda::Gpu;
use autograd::{Float, Graph, Rng};
use proptest::prelude::*;
use rand::RngCore;

use crate::both;
use crate::harness::{close, prop, tol, Tests};
use crate::util::{random, up};

pub const TESTS: Tests = &[("attention::forward_probabilities_and_backward", attention)];

fn attention_case<T: Float>(
    gpu: &Arc<Gpu>,
    (b, n, heads, dh): (usize, usize, usize, usize),
    p: f64,
    seed: u64,
) -> Result<(), String> {
    let d = heads * dh;
    let qkv = random::<T>(&[b, n, 3 * d], seed, -1.5, 1.5);
    let g = random::<T>(&[b, n, d], seed ^ 1, -1.0, 1.0);
    // CPU: the op with its probabilities kept, training mode (dropout active when p > 0).
    let mut t = Graph::<T>::new();
    let x = t.param(&qkv);
    let (y, probs) = t.attention_with_probs(x, heads, p, &mut Rng::seed(seed ^ 2));
    let (want_y, want_p) = (t.value(y).clone(), t.value(probs).clone());
    t.backward_with(y, g.clone());
    let want_dx = t.grad(x).unwrap().clone();
    // GPU: the same seed, drawn as the op draws it.
    let dropout = (p > 0.0).then(|| (p, Rng::seed(seed ^ 2).next_u64()));
    let geo = Heads { b, n, heads, dh };
    let scale = 1.0 / (dh as f64).sqrt();
    let (qd, gd) = (up(gpu, &qkv), up(gpu, &g));
    let (out, kept) = attention_forward(&qd, geo, scale, dropout, true);
    close("attention", &out.to_vec(), want_y.data(), tol::<T>())?;
    let kept = kept.unwrap();
    close("attention probabilities", &kept.to_vec(), want_p.data(), tol::<T>())?;
    let (out2, none) = attention_forward(&qd, geo, scale, dropout, false);
    if none.is_some() {
        return Err("probabilities returned although not asked for".into());
    }
    close("attention (probabilities not kept)", &out2.to_vec(), want_y.data(), tol::<T>())?;
    let dx = attention_backward(&qd, &gd, geo, scale, dropout, None);
    close("attention backward (recomputed P)", &dx.to_vec(), want_dx.data(), tol::<T>())?;
    let dx = attention_backward(&qd, &gd, geo, scale, dropout, Some(&kept));
    close("attention backward (kept P)", &dx.to_vec(), want_dx.data(), tol::<T>())
}

fn attention(gpu: &Arc<Gpu>) -> Result<(), String> {
    let geo = (1usize..4, 1usize..20, 1usize..4, 1usize..9);
    let p = prop_oneof![Just(0.0), 0.05..0.5];
    prop((geo, p, any::<u64>()), |(geo, p, seed)| both!(attention_case(gpu, geo, p, seed)))
}
