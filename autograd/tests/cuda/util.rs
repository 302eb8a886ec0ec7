//! Helpers for the GPU tests: inputs, CPU references through the tape, uploads.

use std::sync::Arc;

use autograd::cuda::{DeviceBuffer, Gpu};
use autograd::{Float, Graph, Rng, Tensor, Var};
use proptest::prelude::*;

/// Uniform values in `[lo, hi)` of `shape`, from `seed`.
pub fn random<T: Float>(shape: &[usize], seed: u64, lo: f64, hi: f64) -> Tensor<T> {
    Tensor::uniform(shape, lo, hi, &mut Rng::seed(seed))
}

/// A dimension size: the edge sizes 1, 2 and primes often, else anything up to `max`.
pub fn dim(max: usize) -> impl Strategy<Value = usize> {
    prop_oneof![Just(1usize), Just(2), Just(3), Just(7), 1..=max]
}

/// A shape of rank `lo..=hi`.
pub fn shape(lo: usize, hi: usize, max: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(dim(max), lo..=hi)
}

pub fn up<T: Float>(gpu: &Arc<Gpu>, t: &Tensor<T>) -> DeviceBuffer<T> {
    gpu.upload(t.data())
}

/// The CPU forward of `f` at `inputs`.
pub fn cpu_forward<T: Float>(inputs: &[Tensor<T>], f: impl Fn(&mut Graph<T>, &[Var]) -> Var) -> Tensor<T> {
    let mut g = Graph::<T>::new();
    let vars: Vec<Var> = inputs.iter().map(|x| g.input(x.clone())).collect();
    let y = f(&mut g, &vars);
    g.value(y).clone()
}

/// The CPU forward of `f` and the gradients of `<seed, f>` for every input.
pub fn cpu_grads<T: Float>(
    inputs: &[Tensor<T>],
    seed: &Tensor<T>,
    f: impl Fn(&mut Graph<T>, &[Var]) -> Var,
) -> (Tensor<T>, Vec<Tensor<T>>) {
    let mut g = Graph::<T>::new();
    let vars: Vec<Var> = inputs.iter().map(|x| g.param(x)).collect();
    let y = f(&mut g, &vars);
    let out = g.value(y).clone();
    g.backward_with(y, seed.clone());
    let grads =
        vars.iter().zip(inputs).map(|(&v, x)| g.grad(v).cloned().unwrap_or_else(|| Tensor::zeros(x.shape()))).collect();
    (out, grads)
}

/// Runs a generic check in f32 and in f64.
#[macro_export]
macro_rules! both {
    ($f:ident ( $($a:expr),* )) => {{
        $f::<f32>($($a),*)?;
        $f::<f64>($($a),*)
    }};
}
