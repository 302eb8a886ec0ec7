//! Row kernels on the device against the CPU ops: softmax, layer norm, GELU, cross-entropy,
//! dropout (forward and backward).

use std::sync::Arc;

use autograd::cuda::prims::rows;
use autograd::cuda::Gpu;
use autograd::ops::gelu::GeluKind;
use autograd::{Float, Rng, Tensor};
use proptest::prelude::*;
use rand::RngCore;

use crate::both;
use crate::harness::{close, prop, tol, Tests};
use crate::util::{cpu_grads, random, shape, up};

pub const TESTS: Tests = &[
    ("rows::softmax_and_log_softmax", softmax),
    ("rows::layer_norm_forward_recompute_backward", layer_norm),
    ("rows::gelu_both_forms", gelu),
    ("rows::cross_entropy_with_label_smoothing", cross_entropy),
    ("rows::dropout_draws_the_cpu_mask", dropout),
];

fn softmax_case<T: Float>(gpu: &Arc<Gpu>, s: &[usize], seed: u64) -> Result<(), String> {
    let x = random::<T>(s, seed, -5.0, 5.0);
    let g = random::<T>(s, seed ^ 1, -1.0, 1.0);
    let d = *s.last().unwrap();
    for log in [false, true] {
        let (want, grads) =
            cpu_grads(std::slice::from_ref(&x), &g, |t, v| if log { t.log_softmax(v[0]) } else { t.softmax(v[0]) });
        let y = rows::softmax(&up(gpu, &x), d, log);
        close(&format!("softmax(log={log}) of {s:?}"), &y.to_vec(), want.data(), tol::<T>())?;
        let dx = rows::softmax_backward(&y, &up(gpu, &g), d, log);
        close(&format!("softmax(log={log}) backward"), &dx.to_vec(), grads[0].data(), tol::<T>())?;
    }
    Ok(())
}

fn softmax(gpu: &Arc<Gpu>) -> Result<(), String> {
    // Rows from 1 to beyond a warp's width, so lanes hold 0, 1 or several elements.
    prop((shape(1, 3, 80), any::<u64>()), |(s, seed)| both!(softmax_case(gpu, &s, seed)))
}

fn layer_norm_case<T: Float>(gpu: &Arc<Gpu>, rows_n: usize, d: usize, seed: u64) -> Result<(), String> {
    let x = random::<T>(&[rows_n, d], seed, -3.0, 3.0).map(|v| v + T::from_f64(0.5));
    let w = random::<T>(&[d], seed ^ 1, 0.5, 1.5);
    let b = random::<T>(&[d], seed ^ 2, -0.5, 0.5);
    let g = random::<T>(&[rows_n, d], seed ^ 3, -1.0, 1.0);
    let eps = 1e-6;
    let (want, grads) = cpu_grads(&[x.clone(), w.clone(), b.clone()], &g, |t, v| t.layer_norm(v[0], v[1], v[2], eps));
    let (xd, wd, bd) = (up(gpu, &x), up(gpu, &w), up(gpu, &b));
    let (y, mean, rstd) = rows::layer_norm_forward(&xd, &wd, &bd, d, eps);
    let tl = tol::<T>() * 5.0;
    close("layer_norm", &y.to_vec(), want.data(), tl)?;
    close("layer_norm recomputed", &rows::layer_norm_apply(&xd, &wd, &bd, &mean, &rstd, d).to_vec(), want.data(), tl)?;
    let (dx, dw, db) = rows::layer_norm_backward(&xd, &wd, &mean, &rstd, &up(gpu, &g), d, [true, true, true]);
    close("layer_norm dx", &dx.unwrap().to_vec(), grads[0].data(), tl)?;
    close("layer_norm dw", &dw.unwrap().to_vec(), grads[1].data(), tl)?;
    close("layer_norm db", &db.unwrap().to_vec(), grads[2].data(), tl)
}

fn layer_norm(gpu: &Arc<Gpu>) -> Result<(), String> {
    // More than 256 rows: several partials for dw and db, summed by the second pass.
    prop((1usize..700, 1usize..70, any::<u64>()), |(r, d, seed)| both!(layer_norm_case(gpu, r, d, seed)))
}

fn gelu_case<T: Float>(gpu: &Arc<Gpu>, s: &[usize], seed: u64) -> Result<(), String> {
    let x = random::<T>(s, seed, -5.0, 5.0);
    let g = random::<T>(s, seed ^ 1, -1.0, 1.0);
    for kind in [GeluKind::Erf, GeluKind::Tanh] {
        let (want, grads) = cpu_grads(std::slice::from_ref(&x), &g, |t, v| t.gelu(v[0], kind));
        let xd = up(gpu, &x);
        close(&format!("gelu {kind:?}"), &rows::gelu_forward(&xd, kind).to_vec(), want.data(), tol::<T>())?;
        close(
            &format!("gelu {kind:?} backward"),
            &rows::gelu_backward(&xd, &up(gpu, &g), kind).to_vec(),
            grads[0].data(),
            tol::<T>(),
        )?;
    }
    Ok(())
}

fn gelu(gpu: &Arc<Gpu>) -> Result<(), String> {
    prop((shape(1, 3, 40), any::<u64>()), |(s, seed)| both!(gelu_case(gpu, &s, seed)))
}

fn ce_case<T: Float>(gpu: &Arc<Gpu>, b: usize, c: usize, smoothing: f64, seed: u64) -> Result<(), String> {
    let x = random::<T>(&[b, c], seed, -4.0, 4.0);
    let mut rng = Rng::seed(seed ^ 11);
    let labels: Vec<usize> = (0..b).map(|_| rng.below(c)).collect();
    let g = Tensor::<T>::scalar(T::from_f64(1.7));
    let (want, grads) = cpu_grads(std::slice::from_ref(&x), &g, |t, v| t.cross_entropy(v[0], &labels, smoothing));
    let ld = gpu.upload(&labels.iter().map(|&l| l as i64).collect::<Vec<_>>());
    let (loss, probs) = rows::cross_entropy_forward(&up(gpu, &x), &ld, c, smoothing);
    close("cross_entropy loss", &loss.to_vec(), want.data(), tol::<T>())?;
    let dx = rows::cross_entropy_backward(&probs, &ld, &up(gpu, &g), c, smoothing);
    close("cross_entropy backward", &dx.to_vec(), grads[0].data(), tol::<T>())
}

fn cross_entropy(gpu: &Arc<Gpu>) -> Result<(), String> {
    let smoothing = prop_oneof![Just(0.0), Just(0.1), 0.0..1.0];
    prop((1usize..40, 1usize..70, smoothing, any::<u64>()), |(b, c, s, seed)| both!(ce_case(gpu, b, c, s, seed)))
}

fn dropout_case<T: Float>(gpu: &Arc<Gpu>, n: usize, p: f64, seed: u64) -> Result<(), String> {
    let x = random::<T>(&[n], seed, -1.0, 1.0);
    let g = random::<T>(&[n], seed ^ 1, -1.0, 1.0);
    let (want, grads) = cpu_grads(std::slice::from_ref(&x), &g, |t, v| t.dropout(v[0], p, &mut Rng::seed(seed)));
    // The op draws one u64 from the caller's generator as its seed.
    let op_seed = Rng::seed(seed).next_u64();
    let (y, keep) = rows::dropout_forward(&up(gpu, &x), p, op_seed);
    close("dropout", &y.to_vec(), want.data(), 0.0)?;
    close("dropout backward", &rows::dropout_backward(&up(gpu, &g), &keep, p).to_vec(), grads[0].data(), 0.0)
}

fn dropout(gpu: &Arc<Gpu>) -> Result<(), String> {
    // Several 4096-element pieces (one random stream each).
    prop((1usize..13_000, 0.0..0.9, any::<u64>()), |(n, p, seed)| both!(dropout_case(gpu, n, p, seed)))
}
