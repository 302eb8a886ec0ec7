//! Elementwise maps, broadcasting, element moves and casts on the device against the CPU ops.

use std::sync::Arc;

use autograd::cuda::kernels::{BinaryOp, UnaryOp};
use autograd::cuda::prims::elementwise as ew;
use autograd::cuda::Gpu;
use autograd::{Float, Graph, Tensor, Var};
use proptest::prelude::*;

use crate::both;
use crate::harness::{close, prop, tol, Tests};
use crate::util::{cpu_forward, cpu_grads, random, shape, up};

pub const TESTS: Tests = &[
    ("elementwise::unary_ops_match_the_cpu", unary_ops),
    ("elementwise::binary_ops_and_their_backward_forms", binary_ops),
    ("elementwise::broadcasting_matches_the_cpu", broadcasting),
    ("elementwise::moves_match_the_cpu_shape_ops", moves),
    ("elementwise::index_select_and_its_adjoint", index_select),
    ("elementwise::patchify_and_its_inverse", patchify),
    ("elementwise::casts_round_trip", casts),
];

type CpuUnary<T> = fn(&mut Graph<T>, Var) -> Var;

fn unary_case<T: Float>(gpu: &Arc<Gpu>, shape: &[usize], seed: u64) -> Result<(), String> {
    // Positive inputs so that log, sqrt and a fractional power are defined.
    let x = random::<T>(shape, seed, 0.1, 3.0);
    let ops: [(&str, UnaryOp, f64, CpuUnary<T>); 8] = [
        ("neg", UnaryOp::Neg, 0.0, |g, x| g.neg(x)),
        ("exp", UnaryOp::Exp, 0.0, |g, x| g.exp(x)),
        ("log", UnaryOp::Log, 0.0, |g, x| g.log(x)),
        ("sqrt", UnaryOp::Sqrt, 0.0, |g, x| g.sqrt(x)),
        ("tanh", UnaryOp::Tanh, 0.0, |g, x| g.tanh(x)),
        ("powf", UnaryOp::Pow, 1.7, |g, x| g.powf(x, 1.7)),
        ("add_scalar", UnaryOp::AddScalar, -0.25, |g, x| g.add_scalar(x, -0.25)),
        ("mul_scalar", UnaryOp::MulScalar, 3.5, |g, x| g.mul_scalar(x, 3.5)),
    ];
    let xd = up(gpu, &x);
    for (name, op, p, cpu) in ops {
        let want = cpu_forward(std::slice::from_ref(&x), |g, v| cpu(g, v[0]));
        close(name, &ew::unary(&xd, op, p).to_vec(), want.data(), tol::<T>())?;
    }
    Ok(())
}

fn unary_ops(gpu: &Arc<Gpu>) -> Result<(), String> {
    prop((shape(1, 4, 9), any::<u64>()), |(s, seed)| both!(unary_case(gpu, &s, seed)))
}

fn binary_case<T: Float>(gpu: &Arc<Gpu>, n: usize, seed: u64) -> Result<(), String> {
    let a = random::<T>(&[n], seed, -2.0, 2.0);
    let b = random::<T>(&[n], seed ^ 1, 0.5, 2.0);
    let (ad, bd) = (up(gpu, &a), up(gpu, &b));
    let p = T::from_f64(1.5);
    let want = |f: &dyn Fn(T, T) -> T| -> Vec<T> { a.data().iter().zip(b.data()).map(|(&x, &y)| f(x, y)).collect() };
    let half = T::from_f64(0.5);
    let cases: [(BinaryOp, Vec<T>); 8] = [
        (BinaryOp::Add, want(&|x, y| x + y)),
        (BinaryOp::Sub, want(&|x, y| x - y)),
        (BinaryOp::Mul, want(&|x, y| x * y)),
        (BinaryOp::Div, want(&|x, y| x / y)),
        (BinaryOp::NegDiv, want(&|x, y| -x / y)),
        (BinaryOp::SqrtBack, want(&|x, y| half * x / y)),
        (BinaryOp::TanhBack, want(&|x, y| x * (T::ONE - y * y))),
        (BinaryOp::PowBack, want(&|x, y| x * p * y.powf(p - T::ONE))),
    ];
    for (op, want) in cases {
        close(&format!("{op:?}"), &ew::binary(op, &ad, &bd, 1.5).to_vec(), &want, tol::<T>())?;
    }
    // In place: a += b.
    ew::add_assign(&ad, &bd);
    close("add_assign", &ad.to_vec(), &want(&|x, y| x + y), tol::<T>())
}

fn binary_ops(gpu: &Arc<Gpu>) -> Result<(), String> {
    prop((1usize..3000, any::<u64>()), |(n, seed)| both!(binary_case(gpu, n, seed)))
}

/// Two shapes that broadcast: `out` with some axes of each operand set to 1 or dropped.
fn broadcast_shapes() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    shape(1, 5, 5).prop_flat_map(|out| {
        let r = out.len();
        (Just(out), prop::collection::vec(any::<bool>(), r), prop::collection::vec(any::<bool>(), r), 0..=r).prop_map(
            |(out, ones_a, ones_b, drop)| {
                let a: Vec<usize> = out.iter().zip(&ones_a).map(|(&d, &o)| if o { 1 } else { d }).collect();
                let b: Vec<usize> = out.iter().zip(&ones_b).map(|(&d, &o)| if o { 1 } else { d }).skip(drop).collect();
                (a, b)
            },
        )
    })
}

type CpuBinary<T> = fn(&mut Graph<T>, Var, Var) -> Var;

fn broadcast_case<T: Float>(gpu: &Arc<Gpu>, sa: &[usize], sb: &[usize], seed: u64) -> Result<(), String> {
    let a = random::<T>(sa, seed, -2.0, 2.0);
    let b = random::<T>(sb, seed ^ 7, 0.5, 2.0);
    let (ad, bd) = (up(gpu, &a), up(gpu, &b));
    let ops: [(BinaryOp, CpuBinary<T>); 4] = [
        (BinaryOp::Add, |g, a, b| g.add(a, b)),
        (BinaryOp::Sub, |g, a, b| g.sub(a, b)),
        (BinaryOp::Mul, |g, a, b| g.mul(a, b)),
        (BinaryOp::Div, |g, a, b| g.div(a, b)),
    ];
    for (op, cpu) in ops {
        let want = cpu_forward(&[a.clone(), b.clone()], |g, v| cpu(g, v[0], v[1]));
        let (got, out) = ew::broadcast(op, &ad, sa, &bd, sb, 0.0);
        if out != want.shape() {
            return Err(format!("{op:?}: shape {out:?}, want {:?}", want.shape()));
        }
        close(&format!("{op:?} {sa:?} {sb:?}"), &got.to_vec(), want.data(), tol::<T>())?;
    }
    Ok(())
}

fn broadcasting(gpu: &Arc<Gpu>) -> Result<(), String> {
    prop((broadcast_shapes(), any::<u64>()), |((a, b), seed)| both!(broadcast_case(gpu, &a, &b, seed)))
}

fn moves_case<T: Float>(gpu: &Arc<Gpu>, s: &[usize], seed: u64) -> Result<(), String> {
    let x = random::<T>(s, seed, -1.0, 1.0);
    let xd = up(gpu, &x);
    let r = s.len();
    // Permute: reversed axes (and, for rank >= 3, a rotation).
    let perms: Vec<Vec<usize>> = vec![(0..r).rev().collect(), (1..r).chain(0..1).collect()];
    for perm in perms {
        let want = cpu_forward(std::slice::from_ref(&x), |g, v| g.permute(v[0], &perm));
        close(&format!("permute {perm:?} of {s:?}"), &ew::permute(&xd, s, &perm).to_vec(), want.data(), 0.0)?;
    }
    // Narrow the last axis to its second half, and its adjoint.
    let axis = r - 1;
    let (start, len) = (s[axis] / 2, s[axis] - s[axis] / 2);
    let gshape: Vec<usize> = s.iter().enumerate().map(|(k, &d)| if k == axis { len } else { d }).collect();
    let gseed = random::<T>(&gshape, seed ^ 3, -1.0, 1.0);
    let (want, grads) = cpu_grads(std::slice::from_ref(&x), &gseed, |g, v| g.narrow(v[0], axis, start, len));
    close("narrow", &ew::narrow(&xd, s, axis, start, len).to_vec(), want.data(), 0.0)?;
    close("narrow backward", &ew::unnarrow(&up(gpu, &gseed), s, axis, start).to_vec(), grads[0].data(), 0.0)?;
    // Concat x with itself along axis 0.
    let want = cpu_forward(&[x.clone(), x.clone()], |g, v| g.concat(&[v[0], v[1]], 0));
    let (got, shape) = ew::concat(&[(&xd, s), (&xd, s)], 0);
    if shape != want.shape() {
        return Err(format!("concat: shape {shape:?}, want {:?}", want.shape()));
    }
    close("concat", &got.to_vec(), want.data(), 0.0)?;
    // Broadcast a leading batch axis of 3.
    let mut big = vec![3];
    big.extend_from_slice(s);
    let want = cpu_forward(std::slice::from_ref(&x), |g, v| g.broadcast_to(v[0], &big));
    close("broadcast_to", &ew::expand(&xd, s, &big).to_vec(), want.data(), 0.0)
}

fn moves(gpu: &Arc<Gpu>) -> Result<(), String> {
    prop((shape(1, 5, 6), any::<u64>()), |(s, seed)| both!(moves_case(gpu, &s, seed)))
}

fn index_case<T: Float>(gpu: &Arc<Gpu>, s: &[usize], idx: &[usize], seed: u64) -> Result<(), String> {
    let axis = s.len() / 2;
    let idx: Vec<usize> = idx.iter().map(|&i| i % s[axis]).collect();
    let x = random::<T>(s, seed, -1.0, 1.0);
    let mut gshape = s.to_vec();
    gshape[axis] = idx.len();
    let gseed = random::<T>(&gshape, seed ^ 5, -1.0, 1.0);
    let (want, grads) = cpu_grads(std::slice::from_ref(&x), &gseed, |g, v| g.index_select(v[0], axis, &idx));
    let id: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
    let idd = gpu.upload(&id);
    close("index_select", &ew::index_select(&up(gpu, &x), s, axis, &idd).to_vec(), want.data(), 0.0)?;
    close(
        "index_select backward",
        &ew::index_add(&up(gpu, &gseed), s, axis, &idd).to_vec(),
        grads[0].data(),
        tol::<T>(),
    )
}

fn index_select(gpu: &Arc<Gpu>) -> Result<(), String> {
    let idx = prop::collection::vec(0usize..100, 1..9);
    prop((shape(1, 4, 6), idx, any::<u64>()), |(s, i, seed)| both!(index_case(gpu, &s, &i, seed)))
}

fn patchify_case<T: Float>(
    gpu: &Arc<Gpu>,
    (b, c, gh, gw, p): (usize, usize, usize, usize, usize),
    seed: u64,
) -> Result<(), String> {
    let (h, w) = (gh * p, gw * p);
    let x = random::<T>(&[b, c, h, w], seed, -1.0, 1.0);
    let gseed = random::<T>(&[b, gh * gw, c * p * p], seed ^ 9, -1.0, 1.0);
    let (want, grads) = cpu_grads(std::slice::from_ref(&x), &gseed, |g, v| g.patchify(v[0], p));
    close("patchify", &ew::patchify(&up(gpu, &x), (b, c, h, w), p).to_vec(), want.data(), 0.0)?;
    close("unpatchify", &ew::unpatchify(&up(gpu, &gseed), (b, c, h, w), p).to_vec(), grads[0].data(), 0.0)
}

fn patchify(gpu: &Arc<Gpu>) -> Result<(), String> {
    let geo = (1usize..4, 1usize..4, 1usize..4, 1usize..4, 1usize..5);
    prop((geo, any::<u64>()), |(g, seed)| both!(patchify_case(gpu, g, seed)))
}

fn casts(gpu: &Arc<Gpu>) -> Result<(), String> {
    prop((1usize..5000, any::<u64>()), |(n, seed)| {
        let x = random::<f64>(&[n], seed, -1e3, 1e3);
        let xd = up(gpu, &x);
        let down = ew::cast::<f64, f32>(&xd);
        let want: Vec<f32> = x.data().iter().map(|&v| v as f32).collect();
        close("f64 -> f32", &down.to_vec(), &want, 0.0)?;
        let back = ew::cast::<f32, f64>(&down);
        let want: Vec<f64> = want.iter().map(|&v| v as f64).collect();
        close("f32 -> f64", &back.to_vec(), &want, 0.0)?;
        let t = Tensor::<f32>::from_vec(want.iter().map(|&v| v as f32).collect(), &[n]);
        close("f32 -> f32", &ew::cast::<f32, f32>(&up(gpu, &t)).to_vec(), t.data(), 0.0)
    })
}
