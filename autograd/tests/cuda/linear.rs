//! Products on the device against the CPU: batched GEMM with transposes (cuBLAS's
//! column-major mapping), and the fused Linear ops forward and backward.

use std::sync::Arc;

use autograd::cuda::blas::Batch;
use autograd::cuda::prims::linear::{self as lin, Residual, View};
use autograd::cuda::Gpu;
use autograd::ops::gelu::GeluKind;
use autograd::{Float, Rng};
use proptest::prelude::*;

use crate::both;
use crate::harness::{close, prop, tol, Tests};
use crate::util::{cpu_forward, cpu_grads, random, up};

pub const TESTS: Tests = &[
    ("linear::batched_gemm_with_transposes", matmul),
    ("linear::linear_with_and_without_bias", linear),
    ("linear::linear_residual_with_stochastic_depth_scale", residual),
    ("linear::linear_gelu_cached_and_recomputed", linear_gelu),
];

fn dims() -> impl Strategy<Value = usize> {
    prop_oneof![Just(1usize), Just(2), Just(3), 1usize..40]
}

#[allow(clippy::too_many_arguments)]
fn matmul_case<T: Float>(
    gpu: &Arc<Gpu>,
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    ta: bool,
    tb: bool,
    seed: u64,
) -> Result<(), String> {
    // Stored shapes: A is [batch, m, k] or [batch, k, m] when transposed; likewise B.
    let sa = if ta { [batch, k, m] } else { [batch, m, k] };
    let sb = if tb { [batch, n, k] } else { [batch, k, n] };
    let a = random::<T>(&sa, seed, -1.0, 1.0);
    let b = random::<T>(&sb, seed ^ 1, -1.0, 1.0);
    let want = cpu_forward(&[a.clone(), b.clone()], |g, v| g.matmul_ex(v[0], v[1], ta, tb));
    let va = if ta { View::row_major(k, m).t() } else { View::row_major(m, k) };
    let vb = if tb { View::row_major(n, k).t() } else { View::row_major(k, n) };
    let c = gpu.alloc::<T>(batch * m * n);
    let bt = Batch { count: batch, a: (m * k) as i64, b: (k * n) as i64, c: (m * n) as i64 };
    let (ad, bd) = (up(gpu, &a), up(gpu, &b));
    // SAFETY: every view lies inside its [batch, ...] buffer.
    unsafe { lin::gemm(1.0, (&ad, va), (&bd, vb), 0.0, (&c, View::row_major(m, n)), bt) };
    close(&format!("{batch}x({m}x{k} @ {k}x{n}), ta={ta} tb={tb}"), &c.to_vec(), want.data(), tol::<T>())?;
    // beta = 1 accumulates: C += A B.
    // SAFETY: as above.
    unsafe { lin::gemm(2.0, (&ad, va), (&bd, vb), 1.0, (&c, View::row_major(m, n)), bt) };
    let triple: Vec<T> = want.data().iter().map(|&v| v * T::from_f64(3.0)).collect();
    close("beta = 1", &c.to_vec(), &triple, tol::<T>())
}

fn matmul(gpu: &Arc<Gpu>) -> Result<(), String> {
    let case = (1usize..4, dims(), dims(), dims(), any::<bool>(), any::<bool>(), any::<u64>());
    prop(case, |(batch, m, k, n, ta, tb, seed)| both!(matmul_case(gpu, batch, m, k, n, ta, tb, seed)))
}

fn linear_case<T: Float>(
    gpu: &Arc<Gpu>,
    (b, s, k, n): (usize, usize, usize, usize),
    bias: bool,
    seed: u64,
) -> Result<(), String> {
    let x = random::<T>(&[b, s, k], seed, -1.0, 1.0);
    let w = random::<T>(&[n, k], seed ^ 1, -1.0, 1.0);
    let bb = random::<T>(&[n], seed ^ 2, -1.0, 1.0);
    let g = random::<T>(&[b, s, n], seed ^ 3, -1.0, 1.0);
    let inputs = if bias { vec![x.clone(), w.clone(), bb.clone()] } else { vec![x.clone(), w.clone()] };
    let (want, grads) = cpu_grads(&inputs, &g, |t, v| t.linear(v[0], v[1], v.get(2).copied()));
    let (xd, wd, bd) = (up(gpu, &x), up(gpu, &w), up(gpu, &bb));
    let dims = (b * s, k, n);
    let y = lin::linear_forward(&xd, &wd, bias.then_some(&bd), None, dims);
    close("linear", &y.to_vec(), want.data(), tol::<T>())?;
    let (dx, dw, db) = lin::linear_backward(&xd, &wd, &up(gpu, &g), dims, [true, true, bias]);
    close("linear dx", &dx.unwrap().to_vec(), grads[0].data(), tol::<T>())?;
    close("linear dW", &dw.unwrap().to_vec(), grads[1].data(), tol::<T>())?;
    if bias {
        close("linear db", &db.unwrap().to_vec(), grads[2].data(), tol::<T>())?;
    }
    Ok(())
}

fn linear(gpu: &Arc<Gpu>) -> Result<(), String> {
    let geo = (1usize..4, 1usize..9, dims(), dims());
    prop((geo, any::<bool>(), any::<u64>()), |(geo, bias, seed)| both!(linear_case(gpu, geo, bias, seed)))
}

fn residual_case<T: Float>(
    gpu: &Arc<Gpu>,
    (b, s, k, n): (usize, usize, usize, usize),
    p_drop: f64,
    seed: u64,
) -> Result<(), String> {
    let x = random::<T>(&[b, s, k], seed, -1.0, 1.0);
    let w = random::<T>(&[n, k], seed ^ 1, -1.0, 1.0);
    let bb = random::<T>(&[n], seed ^ 2, -1.0, 1.0);
    let r = random::<T>(&[b, s, n], seed ^ 3, -1.0, 1.0);
    let g = random::<T>(&[b, s, n], seed ^ 4, -1.0, 1.0);
    let mut rng = Rng::seed(seed ^ 5);
    let scale: Vec<T> = (0..b)
        .map(|_| if rng.uniform() < 1.0 - p_drop { T::from_f64(1.0 / (1.0 - p_drop)) } else { T::ZERO })
        .collect();
    let (want, grads) = cpu_grads(&[x.clone(), w.clone(), bb.clone(), r.clone()], &g, |t, v| {
        t.linear_residual(v[0], v[1], Some(v[2]), v[3], Some(scale.clone()))
    });
    let (xd, wd, bd, rd, sd) = (up(gpu, &x), up(gpu, &w), up(gpu, &bb), up(gpu, &r), gpu.upload(&scale));
    let dims = (b * s, k, n);
    let y =
        lin::linear_forward(&xd, &wd, Some(&bd), Some(Residual { r: &rd, scale: Some(&sd), rows_per_sample: s }), dims);
    close("linear_residual", &y.to_vec(), want.data(), tol::<T>())?;
    let gd = up(gpu, &g);
    let gs = lin::scale_samples(&gd, &sd, s * n);
    let (dx, dw, db) = lin::linear_backward(&xd, &wd, &gs, dims, [true, true, true]);
    close("linear_residual dx", &dx.unwrap().to_vec(), grads[0].data(), tol::<T>())?;
    close("linear_residual dW", &dw.unwrap().to_vec(), grads[1].data(), tol::<T>())?;
    close("linear_residual db", &db.unwrap().to_vec(), grads[2].data(), tol::<T>())?;
    // dr = g, the same values.
    close("linear_residual dr", g.data(), grads[3].data(), 0.0)
}

fn residual(gpu: &Arc<Gpu>) -> Result<(), String> {
    let geo = (1usize..5, 1usize..7, dims(), dims());
    prop((geo, 0.0..0.6, any::<u64>()), |(geo, p, seed)| both!(residual_case(gpu, geo, p, seed)))
}

fn linear_gelu_case<T: Float>(
    gpu: &Arc<Gpu>,
    (rows, k, n): (usize, usize, usize),
    kind: GeluKind,
    seed: u64,
) -> Result<(), String> {
    let x = random::<T>(&[rows, k], seed, -1.0, 1.0);
    let w = random::<T>(&[n, k], seed ^ 1, -1.0, 1.0);
    let bb = random::<T>(&[n], seed ^ 2, -1.0, 1.0);
    let g = random::<T>(&[rows, n], seed ^ 3, -1.0, 1.0);
    let (want, grads) =
        cpu_grads(&[x.clone(), w.clone(), bb.clone()], &g, |t, v| t.linear_gelu(v[0], v[1], v[2], kind));
    let (xd, wd, bd, gd) = (up(gpu, &x), up(gpu, &w), up(gpu, &bb), up(gpu, &g));
    let dims = (rows, k, n);
    for keep_h in [false, true] {
        let (a, h) = lin::linear_gelu_forward(&xd, &wd, &bd, kind, dims, keep_h);
        close("linear_gelu", &a.to_vec(), want.data(), tol::<T>())?;
        let (dx, dw, db) = lin::linear_gelu_backward(&xd, &wd, &bd, &gd, h.as_ref(), kind, dims, [true, true, true]);
        let how = if keep_h { "cached" } else { "recomputed" };
        close(&format!("linear_gelu dx ({how} h)"), &dx.unwrap().to_vec(), grads[0].data(), tol::<T>())?;
        close(&format!("linear_gelu dW ({how} h)"), &dw.unwrap().to_vec(), grads[1].data(), tol::<T>())?;
        close(&format!("linear_gelu db ({how} h)"), &db.unwrap().to_vec(), grads[2].data(), tol::<T>())?;
    }
    Ok(())
}

fn linear_gelu(gpu: &Arc<Gpu>) -> Result<(), String> {
    let kind = prop_oneof![Just(GeluKind::Erf), Just(GeluKind::Tanh)];
    prop(((1usize..60, dims(), dims()), kind, any::<u64>()), |(geo, kind, seed)| {
        both!(linear_gelu_case(gpu, geo, kind, seed))
    })
}
