//! The ops through the device seam: the same tape built on the CPU and on a CUDA device (its
//! values placed there with `Tensor::to`), forward values and every input's gradient compared,
//! in f32 and f64; and f64 gradient checks of the GPU ops against central differences (the
//! inputs moved to the device inside the checked function, the output moved back).

use std::sync::Arc;

use autograd::cuda::Gpu;
use autograd::ops::gelu::GeluKind;
use autograd::{gradcheck, Device, Float, GradcheckOptions, Graph, Tensor, Var};
use proptest::prelude::*;

use crate::both;
use crate::harness::{close, prop, prop_cases, tol, Tests};
use crate::util::{cpu_grads, random, shape};

pub const TESTS: Tests = &[
    ("ops::elementwise_with_broadcasting", elementwise),
    ("ops::unary_and_scalar_ops", unary),
    ("ops::sums_and_means_over_axes", sums),
    ("ops::matmul_plain_transposed_batched_shared", matmul),
    ("ops::softmax_log_softmax_gelu_layer_norm", rows),
    ("ops::moves_permute_narrow_concat_index_select", moves),
    ("ops::fused_linear_residual_gelu", fused_linear),
    ("ops::fused_attention", fused_attention),
    ("ops::patchify_dropout_cross_entropy", data_ops),
    ("ops::a_small_network_backward_from_a_scalar_loss", network),
    ("ops::gradcheck_f64_on_the_device", gradchecks),
];

type F<T> = dyn Fn(&mut Graph<T>, &[Var]) -> Var;
type OpFn<T> = fn(&mut Graph<T>, &[Var]) -> Var;

fn device(gpu: &Arc<Gpu>) -> Device {
    Device::Cuda(gpu.ordinal())
}

/// `f` on the CPU and on `gpu`: the outputs and the gradients of `<seed, f>` agree within `tl`,
/// and everything the GPU tape produced stayed on the GPU.
pub fn same_on_both<T: Float>(
    gpu: &Arc<Gpu>,
    what: &str,
    inputs: &[Tensor<T>],
    f: &F<T>,
    tl: f64,
) -> Result<(), String> {
    let dev = device(gpu);
    let shape = {
        let mut g = Graph::<T>::inference();
        let vars: Vec<Var> = inputs.iter().map(|x| g.input(x.clone())).collect();
        let y = f(&mut g, &vars);
        g.shape(y).to_vec()
    };
    let seed = random::<T>(&shape, 0xfeed, -1.0, 1.0);
    let (want, want_grads) = cpu_grads(inputs, &seed, f);

    let mut g = Graph::<T>::new();
    let on_gpu: Vec<Tensor<T>> = inputs.iter().map(|x| x.to(dev).expect("upload")).collect();
    let vars: Vec<Var> = on_gpu.iter().map(|x| g.param(x)).collect();
    let y = f(&mut g, &vars);
    if g.value(y).device() != dev {
        return Err(format!("{what}: the output is on {}, not {dev}", g.value(y).device()));
    }
    close(what, &g.value(y).to(Device::Cpu).unwrap().into_vec(), want.data(), tl)?;
    g.backward_with(y, seed.to(dev).unwrap());
    for (i, (&v, want)) in vars.iter().zip(&want_grads).enumerate() {
        let got = g.grad(v).cloned().unwrap_or_else(|| Tensor::zeros(inputs[i].shape()).to(dev).unwrap());
        if got.device() != dev {
            return Err(format!("{what}: gradient {i} is on {}, not {dev}", got.device()));
        }
        close(&format!("{what}: gradient {i}"), &got.to(Device::Cpu).unwrap().into_vec(), want.data(), tl)?;
    }
    Ok(())
}

/// A shape `b` broadcasts against: a suffix of `a` with some axes set to 1.
fn broadcast_partner(a: &[usize], keep: usize, ones: u8) -> Vec<usize> {
    let tail = &a[a.len() - keep.min(a.len())..];
    tail.iter().enumerate().map(|(i, &d)| if ones >> i & 1 == 1 { 1 } else { d }).collect()
}

fn elementwise_case<T: Float>(
    gpu: &Arc<Gpu>,
    s: &[usize],
    keep: usize,
    ones: u8,
    swap: bool,
    seed: u64,
) -> Result<(), String> {
    let bs = broadcast_partner(s, keep, ones);
    let a = random::<T>(s, seed, -2.0, 2.0);
    let b = random::<T>(&bs, seed ^ 1, 0.5, 2.0);
    let inputs = if swap { [b, a] } else { [a, b] };
    let ops: [(&str, OpFn<T>); 4] = [
        ("add", |g, v| g.add(v[0], v[1])),
        ("sub", |g, v| g.sub(v[0], v[1])),
        ("mul", |g, v| g.mul(v[0], v[1])),
        ("div", |g, v| g.div(v[0], v[1])),
    ];
    for (name, f) in &ops {
        same_on_both(gpu, &format!("{name} {:?} {:?}", inputs[0].shape(), inputs[1].shape()), &inputs, f, tol::<T>())?;
    }
    Ok(())
}

fn elementwise(gpu: &Arc<Gpu>) -> Result<(), String> {
    let case = (shape(1, 4, 9), 0usize..5, any::<u8>(), any::<bool>(), any::<u64>());
    prop(case, |(s, keep, ones, swap, seed)| both!(elementwise_case(gpu, &s, keep, ones, swap, seed)))
}

fn unary_case<T: Float>(gpu: &Arc<Gpu>, s: &[usize], seed: u64) -> Result<(), String> {
    // Positive inputs, so that log, sqrt and a fractional power are defined.
    let x = [random::<T>(s, seed, 0.2, 3.0)];
    let ops: [(&str, OpFn<T>); 10] = [
        ("neg", |g, v| g.neg(v[0])),
        ("exp", |g, v| g.exp(v[0])),
        ("log", |g, v| g.log(v[0])),
        ("sqrt", |g, v| g.sqrt(v[0])),
        ("tanh", |g, v| g.tanh(v[0])),
        ("powf(1.7)", |g, v| g.powf(v[0], 1.7)),
        ("powf(0)", |g, v| g.powf(v[0], 0.0)),
        ("add_scalar", |g, v| g.add_scalar(v[0], -0.25)),
        ("mul_scalar", |g, v| g.mul_scalar(v[0], 3.5)),
        ("div_scalar", |g, v| g.div_scalar(v[0], 4.0)),
    ];
    for (name, f) in &ops {
        same_on_both(gpu, &format!("{name} {s:?}"), &x, f, tol::<T>())?;
    }
    Ok(())
}

fn unary(gpu: &Arc<Gpu>) -> Result<(), String> {
    prop((shape(1, 4, 9), any::<u64>()), |(s, seed)| both!(unary_case(gpu, &s, seed)))
}

fn sums_case<T: Float>(gpu: &Arc<Gpu>, s: &[usize], mask: u8, keepdim: bool, seed: u64) -> Result<(), String> {
    let x = [random::<T>(s, seed, -1.0, 1.0)];
    let axes: Vec<usize> = (0..s.len()).filter(|i| mask >> i & 1 == 1).collect();
    let (a1, a2) = (axes.clone(), axes.clone());
    same_on_both(gpu, &format!("sum {s:?} over {axes:?}"), &x, &move |g, v| g.sum(v[0], &a1, keepdim), tol::<T>())?;
    same_on_both(gpu, &format!("mean {s:?} over {axes:?}"), &x, &move |g, v| g.mean(v[0], &a2, keepdim), tol::<T>())?;
    same_on_both(gpu, &format!("mean_all {s:?}"), &x, &|g, v| g.mean_all(v[0]), tol::<T>())
}

fn sums(gpu: &Arc<Gpu>) -> Result<(), String> {
    let case = (shape(1, 4, 12), any::<u8>(), any::<bool>(), any::<u64>());
    prop(case, |(s, mask, keepdim, seed)| both!(sums_case(gpu, &s, mask, keepdim, seed)))
}

#[allow(clippy::too_many_arguments)]
fn matmul_case<T: Float>(
    gpu: &Arc<Gpu>,
    (batch, m, k, n): (usize, usize, usize, usize),
    trans_a: bool,
    trans_b: bool,
    shared_b: bool,
    seed: u64,
) -> Result<(), String> {
    let mut sa = if batch > 1 { vec![batch] } else { vec![] };
    sa.extend(if trans_a { [k, m] } else { [m, k] });
    let mut sb = if batch > 1 && !shared_b { vec![batch] } else { vec![] };
    sb.extend(if trans_b { [n, k] } else { [k, n] });
    let inputs = [random::<T>(&sa, seed, -1.0, 1.0), random::<T>(&sb, seed ^ 1, -1.0, 1.0)];
    let f = move |g: &mut Graph<T>, v: &[Var]| g.matmul_ex(v[0], v[1], trans_a, trans_b);
    same_on_both(gpu, &format!("matmul {sa:?} @ {sb:?} (A^T {trans_a}, B^T {trans_b})"), &inputs, &f, tol::<T>() * 5.0)
}

fn matmul(gpu: &Arc<Gpu>) -> Result<(), String> {
    let dims = (1usize..4, 1usize..20, 1usize..20, 1usize..20);
    let case = (dims, any::<bool>(), any::<bool>(), any::<bool>(), any::<u64>());
    prop(case, |(d, ta, tb, shared, seed)| both!(matmul_case(gpu, d, ta, tb, shared, seed)))
}

fn rows_case<T: Float>(gpu: &Arc<Gpu>, rows: usize, d: usize, seed: u64) -> Result<(), String> {
    let x = random::<T>(&[rows, d], seed, -3.0, 3.0);
    let one = [x.clone()];
    let tl = tol::<T>() * 5.0;
    same_on_both(gpu, &format!("softmax [{rows}, {d}]"), &one, &|g, v| g.softmax(v[0]), tl)?;
    same_on_both(gpu, &format!("log_softmax [{rows}, {d}]"), &one, &|g, v| g.log_softmax(v[0]), tl)?;
    for kind in [GeluKind::Erf, GeluKind::Tanh] {
        same_on_both(gpu, &format!("gelu {kind:?} [{rows}, {d}]"), &one, &move |g, v| g.gelu(v[0], kind), tl)?;
    }
    let w = random::<T>(&[d], seed ^ 1, 0.5, 1.5);
    let b = random::<T>(&[d], seed ^ 2, -0.5, 0.5);
    let ln = [x, w, b];
    same_on_both(gpu, &format!("layer_norm [{rows}, {d}]"), &ln, &|g, v| g.layer_norm(v[0], v[1], v[2], 1e-6), tl)?;
    // Dropped at the segment's end and recomputed in backward (read by the mul's backward).
    let dropped = |g: &mut Graph<T>, v: &[Var]| {
        let mut y = None;
        let z = g.segment("ln", v[0], |g| {
            let ln = g.layer_norm(v[0], v[1], v[2], 1e-6);
            y = Some(ln);
            g.mul(ln, ln)
        });
        assert!(!g.holds(y.unwrap()), "the segment keeps layer norm's output");
        z
    };
    same_on_both(gpu, &format!("layer_norm dropped [{rows}, {d}]"), &ln, &dropped, tl)
}

fn rows(gpu: &Arc<Gpu>) -> Result<(), String> {
    prop((1usize..20, 1usize..80, any::<u64>()), |(r, d, seed)| both!(rows_case(gpu, r, d, seed)))
}

fn moves_case<T: Float>(gpu: &Arc<Gpu>, s: &[usize], rot: usize, cut: (usize, usize), seed: u64) -> Result<(), String> {
    let x = random::<T>(s, seed, -1.0, 1.0);
    let r = s.len();
    let perm: Vec<usize> = (0..r).map(|i| (i + rot) % r).collect();
    let axis = rot % r;
    let n = s[axis];
    let (start, len) = (cut.0 % n, 1 + cut.1 % (n - cut.0 % n));
    let indices: Vec<usize> = (0..2 * n + 1).map(|i| (i * 7 + cut.0) % n).collect();
    let one = [x.clone()];
    let tl = tol::<T>();
    let p2 = perm.clone();
    same_on_both(gpu, &format!("permute {s:?} by {perm:?}"), &one, &move |g, v| g.permute(v[0], &p2), tl)?;
    same_on_both(
        gpu,
        &format!("narrow {s:?} axis {axis} {start}+{len}"),
        &one,
        &move |g, v| g.narrow(v[0], axis, start, len),
        tl,
    )?;
    same_on_both(
        gpu,
        &format!("index_select {s:?} axis {axis}"),
        &one,
        &move |g, v| g.index_select(v[0], axis, &indices),
        tl,
    )?;
    let mut s2 = s.to_vec();
    s2[axis] = 1 + cut.1 % 3;
    let two = [x, random::<T>(&s2, seed ^ 1, -1.0, 1.0)];
    same_on_both(
        gpu,
        &format!("concat {s:?} {s2:?} axis {axis}"),
        &two,
        &move |g, v| g.concat(&[v[0], v[1], v[0]], axis),
        tl,
    )
}

fn moves(gpu: &Arc<Gpu>) -> Result<(), String> {
    let case = (shape(1, 4, 7), 0usize..4, (0usize..16, 0usize..16), any::<u64>());
    prop(case, |(s, rot, cut, seed)| both!(moves_case(gpu, &s, rot, cut, seed)))
}

fn fused_linear_case<T: Float>(
    gpu: &Arc<Gpu>,
    (b, t, k, n): (usize, usize, usize, usize),
    seed: u64,
) -> Result<(), String> {
    let x = random::<T>(&[b, t, k], seed, -1.0, 1.0);
    let w = random::<T>(&[n, k], seed ^ 1, -0.5, 0.5);
    let bias = random::<T>(&[n], seed ^ 2, -0.5, 0.5);
    let r = random::<T>(&[b, t, n], seed ^ 3, -1.0, 1.0);
    // Stochastic depth's mask: 0 or 1/(1-p) per sample.
    let scale: Vec<T> = (0..b).map(|i| T::from_f64(if (seed >> i) & 1 == 1 { 0.0 } else { 1.25 })).collect();
    let tl = tol::<T>() * 5.0;
    let what = format!("[{b}, {t}, {k}] -> {n}");
    let xw = [x.clone(), w.clone()];
    same_on_both(gpu, &format!("linear (no bias) {what}"), &xw, &|g, v| g.linear(v[0], v[1], None), tl)?;
    let xwb = [x.clone(), w.clone(), bias.clone()];
    same_on_both(gpu, &format!("linear {what}"), &xwb, &|g, v| g.linear(v[0], v[1], Some(v[2])), tl)?;
    for kind in [GeluKind::Erf, GeluKind::Tanh] {
        same_on_both(
            gpu,
            &format!("linear_gelu {kind:?} {what}"),
            &xwb,
            &move |g, v| g.linear_gelu(v[0], v[1], v[2], kind),
            tl,
        )?;
    }
    // Dropped at the segment's end and recomputed for the mul's backward from the
    // pre-activation the op kept, which its own backward reads too.
    let dropped = |g: &mut Graph<T>, v: &[Var]| {
        let mut a = None;
        let y = g.segment("mlp", v[0], |g| {
            let h = g.linear_gelu(v[0], v[1], v[2], GeluKind::Erf);
            a = Some(h);
            g.mul(h, h)
        });
        assert!(!g.holds(a.unwrap()), "the segment keeps linear_gelu's output");
        y
    };
    same_on_both(gpu, &format!("linear_gelu dropped {what}"), &xwb, &dropped, tl)?;
    let xwbr = [x, w, bias, r];
    same_on_both(
        gpu,
        &format!("linear_residual {what}"),
        &xwbr,
        &|g, v| g.linear_residual(v[0], v[1], Some(v[2]), v[3], None),
        tl,
    )?;
    let scaled =
        move |g: &mut Graph<T>, v: &[Var]| g.linear_residual(v[0], v[1], Some(v[2]), v[3], Some(scale.clone()));
    same_on_both(gpu, &format!("linear_residual with per-sample scale {what}"), &xwbr, &scaled, tl)
}

fn fused_linear(gpu: &Arc<Gpu>) -> Result<(), String> {
    let dims = (1usize..5, 1usize..9, 1usize..24, 1usize..24);
    prop((dims, any::<u64>()), |(d, seed)| both!(fused_linear_case(gpu, d, seed)))
}

fn fused_attention_case<T: Float>(
    gpu: &Arc<Gpu>,
    (b, n, heads, dh): (usize, usize, usize, usize),
    p: f64,
    seed: u64,
) -> Result<(), String> {
    let qkv = [random::<T>(&[b, n, 3 * heads * dh], seed, -1.5, 1.5)];
    let what = format!("attention B {b} N {n} heads {heads} Dh {dh} dropout {p:.2}");
    // One seed for both devices: the op draws the dropout seed from it, and the GPU kernels
    // regenerate the CPU's mask from that seed.
    let f = move |g: &mut Graph<T>, v: &[Var]| g.attention(v[0], heads, p, &mut autograd::Rng::seed(seed));
    same_on_both(gpu, &what, &qkv, &f, tol::<T>() * 5.0)?;
    let with_probs = move |g: &mut Graph<T>, v: &[Var]| {
        let (y, probs) = g.attention_with_probs(v[0], heads, p, &mut autograd::Rng::seed(seed));
        let s = g.sum(probs, &[1], false);
        let s = g.reshape(s, &[b, n * n]);
        let y = g.reshape(y, &[b, n * heads * dh]);
        g.concat(&[y, s], 1)
    };
    same_on_both(gpu, &format!("{what}, probabilities kept"), &qkv, &with_probs, tol::<T>() * 5.0)
}

fn fused_attention(gpu: &Arc<Gpu>) -> Result<(), String> {
    let geo = (1usize..4, 1usize..17, 1usize..4, 1usize..9);
    let p = prop_oneof![Just(0.0), 0.05..0.5];
    prop((geo, p, any::<u64>()), |(geo, p, seed)| both!(fused_attention_case(gpu, geo, p, seed)))
}

fn data_ops_case<T: Float>(
    gpu: &Arc<Gpu>,
    (b, c, grid, p): (usize, usize, usize, usize),
    rate: f64,
    seed: u64,
) -> Result<(), String> {
    let (h, w) = (grid * p, (grid + 1) * p);
    let images = [random::<T>(&[b, c, h, w], seed, -1.0, 1.0)];
    let tl = tol::<T>() * 5.0;
    same_on_both(gpu, &format!("patchify [{b}, {c}, {h}, {w}] P {p}"), &images, &move |g, v| g.patchify(v[0], p), tl)?;
    let drop = move |g: &mut Graph<T>, v: &[Var]| g.dropout(v[0], rate, &mut autograd::Rng::seed(seed));
    same_on_both(gpu, &format!("dropout {rate:.2} of [{b}, {c}, {h}, {w}]"), &images, &drop, tl)?;
    let classes = c * 3;
    let logits = [random::<T>(&[b, classes], seed ^ 1, -3.0, 3.0)];
    let labels: Vec<usize> = (0..b).map(|i| (seed as usize).wrapping_add(i * 7) % classes).collect();
    for smoothing in [0.0, 0.1] {
        let l = labels.clone();
        let ce = move |g: &mut Graph<T>, v: &[Var]| g.cross_entropy(v[0], &l, smoothing);
        same_on_both(gpu, &format!("cross_entropy [{b}, {classes}] smoothing {smoothing}"), &logits, &ce, tl)?;
    }
    Ok(())
}

fn data_ops(gpu: &Arc<Gpu>) -> Result<(), String> {
    let geo = (1usize..4, 1usize..4, 1usize..4, 1usize..5);
    let rate = prop_oneof![Just(0.0), 0.05..0.6];
    prop((geo, rate, any::<u64>()), |(geo, rate, seed)| both!(data_ops_case(gpu, geo, rate, seed)))
}

/// A two-layer MLP with layer norm and a softmax readout, reduced to a scalar: `backward`
/// seeds the loss's gradient on the loss's device.
fn network_case<T: Float>(gpu: &Arc<Gpu>, (b, d, h): (usize, usize, usize), seed: u64) -> Result<(), String> {
    let inputs = [
        random::<T>(&[b, d], seed, -1.0, 1.0),
        random::<T>(&[h, d], seed ^ 1, -0.5, 0.5),
        random::<T>(&[h], seed ^ 2, -0.1, 0.1),
        random::<T>(&[h], seed ^ 3, 0.5, 1.5),
        random::<T>(&[h], seed ^ 4, -0.5, 0.5),
    ];
    let net = |g: &mut Graph<T>, v: &[Var]| {
        let z = g.matmul_t(v[0], v[1]);
        let z = g.add(z, v[2]);
        let a = g.gelu(z, GeluKind::Erf);
        let n = g.layer_norm(a, v[3], v[4], 1e-6);
        let p = g.log_softmax(n);
        let m = g.mean_all(p);
        g.neg(m)
    };
    let dev = device(gpu);
    let (want, want_grads) = cpu_grads(&inputs, &Tensor::ones(&[]), net);
    let mut g = Graph::<T>::new();
    let on_gpu: Vec<Tensor<T>> = inputs.iter().map(|x| x.to(dev).unwrap()).collect();
    let vars: Vec<Var> = on_gpu.iter().map(|x| g.param(x)).collect();
    let loss = net(&mut g, &vars);
    let tl = tol::<T>() * 10.0;
    close("network loss", &[T::from_f64(g.value(loss).sum_all())], want.data(), tl)?;
    g.backward(loss);
    for (i, (&v, w)) in vars.iter().zip(&want_grads).enumerate() {
        let got = g.grad(v).ok_or(format!("network: no gradient for input {i}"))?;
        close(&format!("network gradient {i}"), &got.to(Device::Cpu).unwrap().into_vec(), w.data(), tl)?;
    }
    Ok(())
}

fn network(gpu: &Arc<Gpu>) -> Result<(), String> {
    // Layer norm over at least 4 features: over 2 it is so ill-conditioned (each xhat is +-1) that
    // f32 rounding differences between the devices grow past f32 tolerance.
    prop(((1usize..9, 1usize..24, 4usize..24), any::<u64>()), |(dims, seed)| both!(network_case(gpu, dims, seed)))
}

/// `f` run on the device, checked against central differences of itself.
pub fn gradcheck_on(gpu: &Arc<Gpu>, what: &str, inputs: &[Tensor<f64>], f: &F<f64>) -> Result<(), String> {
    let dev = device(gpu);
    let on_device = |g: &mut Graph<f64>, v: &[Var]| {
        let xs: Vec<Var> = v.iter().map(|&x| g.to(x, dev).expect("the device is open")).collect();
        let y = f(g, &xs);
        assert_eq!(g.value(y).device(), dev, "{what}: ran off the device");
        g.to(y, Device::Cpu).expect("to the host")
    };
    gradcheck(on_device, inputs, &GradcheckOptions::default()).map(|_| ()).map_err(|e| format!("{what}: {e}"))
}

fn gradchecks(gpu: &Arc<Gpu>) -> Result<(), String> {
    // Few, small cases: every element is perturbed twice and each evaluation runs the kernels.
    prop_cases(8, (1usize..4, 1usize..6, any::<u64>()), |(r, d, seed)| {
        let x = random::<f64>(&[r, d], seed, 0.2, 2.0);
        let b = random::<f64>(&[d], seed ^ 1, 0.5, 1.5);
        let w = random::<f64>(&[d, 3], seed ^ 2, -1.0, 1.0);
        let (xb, xw, xx) = ([x.clone(), b.clone()], [x.clone(), w], [x.clone()]);
        gradcheck_on(gpu, "div with broadcasting", &xb, &|g, v| g.div(v[0], v[1]))?;
        gradcheck_on(gpu, "matmul", &xw, &|g, v| g.matmul(v[0], v[1]))?;
        gradcheck_on(gpu, "powf", &xx, &|g, v| g.powf(v[0], 1.5))?;
        gradcheck_on(gpu, "sum over axis 0", &xx, &|g, v| g.sum(v[0], &[0], false))?;
        gradcheck_on(gpu, "softmax", &xx, &|g, v| g.softmax(v[0]))?;
        gradcheck_on(gpu, "log_softmax", &xx, &|g, v| g.log_softmax(v[0]))?;
        gradcheck_on(gpu, "gelu tanh", &xx, &|g, v| g.gelu(v[0], GeluKind::Tanh))?;
        let ln = [x, b.clone(), b];
        gradcheck_on(gpu, "layer_norm", &ln, &|g, v| g.layer_norm(v[0], v[1], v[2], 1e-6))
    })
}
