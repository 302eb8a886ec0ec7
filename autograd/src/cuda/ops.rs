//! The CUDA arm of the device seam: the primitives the ops are written in (elementwise maps
//! under broadcasting, sums over axes, expansion, products, row kernels), on tensors that live
//! on a GPU. Each function here is called from one place in `crate::ops` (or `crate::tensor`),
//! beside the CPU code it replaces, when its inputs are on a GPU; the math stays in the op's
//! file. Inputs must all be on one GPU: a mix of devices is a programming error and panics
//! naming the op and the devices (nothing is copied behind the caller's back).

use std::sync::Arc;

use super::blas::Batch;
use super::gpu::{DeviceBuffer, Gpu};
use super::kernels::{BinaryOp, UnaryOp};
use super::prims::attention::{self, Heads};
use super::prims::linear::{self, View};
use super::prims::pool::{self, Pool};
use super::prims::resnet::{self, Conv, Groups};
use super::prims::{elementwise as ew, optim, reduce, rows};
use crate::dtype::Float;
use crate::graph::BackwardCtx;
use crate::kernels::rows::AdamW;
use crate::kernels::Layout;
use crate::ops::gelu::GeluKind;
use crate::tensor::{numel, Tensor};

/// The one GPU all of `xs` are on; panics naming `op` if any is elsewhere.
pub fn same_gpu<T: Float>(op: &str, xs: &[&Tensor<T>]) -> Arc<Gpu> {
    let devices: Vec<String> = xs.iter().map(|x| x.device().to_string()).collect();
    let first = xs[0].cuda().map(|b| b.gpu().clone());
    match first {
        Some(g) if xs.iter().all(|x| x.cuda().is_some_and(|b| Arc::ptr_eq(b.gpu(), &g))) => g,
        _ => panic!("{op}: the operands are on different devices ({}); move them with Tensor::to", devices.join(", ")),
    }
}

/// The device buffer of a tensor known to be on a GPU.
pub fn buf<T: Float>(x: &Tensor<T>) -> &DeviceBuffer<T> {
    x.cuda().unwrap_or_else(|| panic!("a CUDA op received a tensor on {}", x.device()))
}

/// `a += b`, in place on the device (`a`'s buffer made unique first, as on the CPU).
pub fn add_assign<T: Float>(a: &mut Tensor<T>, b: &Tensor<T>) {
    same_gpu("add_assign", &[&*a, b]);
    ew::add_assign(a.cuda_mut().expect("checked to be on the GPU"), buf(b));
}

/// The sum of every element, accumulated in double and read back.
pub fn sum_all<T: Float>(x: &DeviceBuffer<T>) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    reduce::sum_mid(&ew::cast::<T, f64>(x), 1, x.len(), 1, 1.0).to_vec()[0]
}

/// `f(a, b)` under broadcasting.
pub fn binary<T: Float>(name: &str, op: BinaryOp, a: &Tensor<T>, b: &Tensor<T>, p: f64) -> Tensor<T> {
    same_gpu(name, &[a, b]);
    let (y, shape) = ew::broadcast(op, buf(a), a.shape(), buf(b), b.shape(), p);
    Tensor::from_cuda(y, &shape)
}

/// `f(x; p)` elementwise.
pub fn unary<T: Float>(op: UnaryOp, x: &Tensor<T>, p: f64) -> Tensor<T> {
    Tensor::from_cuda(ew::unary(buf(x), op, p), x.shape())
}

/// `x` broadcast to `shape`, materialised.
pub fn expand<T: Float>(x: &Tensor<T>, shape: &[usize]) -> Tensor<T> {
    Tensor::from_cuda(ew::expand(buf(x), x.shape(), shape), shape)
}

/// The sums of `x` over the masked axes, times `scale`, row-major over the kept axes: one pass
/// over `[outer, r, inner]` when the reduced axes are adjacent (as the CPU does), else the
/// general kernel.
pub fn sum_over<T: Float>(x: &Tensor<T>, mask: &[bool], shape_out: &[usize], scale: f64) -> Tensor<T> {
    let y = match crate::ops::reduce::outer_reduced_inner(x.shape(), mask) {
        Some((outer, r, inner)) => reduce::sum_mid(buf(x), outer, r, inner, scale),
        None => reduce::sum_general(buf(x), x.shape(), mask, scale),
    };
    debug_assert_eq!(y.len(), numel(shape_out));
    Tensor::from_cuda(y, shape_out)
}

/// `grad` summed down to `shape` (the adjoint of broadcasting `shape` to `grad`'s shape).
pub fn reduce_to<T: Float>(grad: &Tensor<T>, shape: &[usize]) -> Tensor<T> {
    let out = grad.shape();
    let pad = out.len() - shape.len();
    let mask: Vec<bool> = (0..out.len()).map(|i| i < pad || (shape[i - pad] == 1 && out[i] != 1)).collect();
    sum_over(grad, &mask, shape, 1.0)
}

/// `C = op(A) op(B) + beta C` on strided (batched) layouts, as the CPU GEMM takes them: one
/// cuBLAS (strided-batched) call. A batch of 1 against a batched `C` is a shared matrix.
pub fn gemm<T: Float>(a: (&Tensor<T>, Layout), b: (&Tensor<T>, Layout), beta: f64, c: (&mut Tensor<T>, Layout)) {
    same_gpu("matmul", &[a.0, b.0, &*c.0]);
    let count = c.1.batch;
    let stride = |l: &Layout| if l.batch == 1 { 0 } else { l.bs as i64 };
    let batch = Batch { count, a: stride(&a.1), b: stride(&b.1), c: stride(&c.1) };
    let view = |l: Layout| View { offset: l.offset, rows: l.rows, cols: l.cols, rs: l.rs as i64, cs: l.cs as i64 };
    let cb = c.0.cuda_mut().expect("checked to be on the GPU");
    // SAFETY: the layouts come from the op's shapes and address elements inside each tensor
    // (as the CPU GEMM's bounds checks require of the same layouts); `c` is a fresh or
    // unique buffer, distinct from the operands.
    unsafe { linear::gemm(1.0, (buf(a.0), view(a.1)), (buf(b.0), view(b.1)), beta, (&*cb, view(c.1)), batch) }
}

/// Softmax (or log-softmax) over the last axis.
pub fn softmax<T: Float>(x: &Tensor<T>, log: bool) -> Tensor<T> {
    let d = x.shape().last().copied().unwrap_or(1);
    Tensor::from_cuda(rows::softmax(buf(x), d, log), x.shape())
}

/// The gradient of softmax (or log-softmax) from its output `y`.
pub fn softmax_backward<T: Float>(y: &Tensor<T>, g: &Tensor<T>, log: bool) -> Tensor<T> {
    same_gpu("softmax backward", &[y, g]);
    let d = y.shape().last().copied().unwrap_or(1);
    Tensor::from_cuda(rows::softmax_backward(buf(y), buf(g), d, log), y.shape())
}

/// Layer norm over the last axis: `(y, mean, rstd)`.
pub fn layer_norm<T: Float>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    b: &Tensor<T>,
    eps: f64,
) -> (Tensor<T>, Tensor<T>, Tensor<T>) {
    same_gpu("layer_norm", &[x, w, b]);
    let d = w.numel();
    let rows = x.numel().checked_div(d).unwrap_or(0);
    let (y, mean, rstd) = rows::layer_norm_forward(buf(x), buf(w), buf(b), d, eps);
    (Tensor::from_cuda(y, x.shape()), Tensor::from_cuda(mean, &[rows]), Tensor::from_cuda(rstd, &[rows]))
}

/// Layer norm's output again from `[x, w, b]` and the saved statistics.
pub fn layer_norm_apply<T: Float>(inputs: &[&Tensor<T>], mean: &Tensor<T>, rstd: &Tensor<T>) -> Tensor<T> {
    let (x, w, b) = (inputs[0], inputs[1], inputs[2]);
    same_gpu("layer_norm recompute", &[x, w, b, mean, rstd]);
    Tensor::from_cuda(rows::layer_norm_apply(buf(x), buf(w), buf(b), buf(mean), buf(rstd), w.numel()), x.shape())
}

/// Layer norm's `(dx, dw, db)`, each only where needed.
pub fn layer_norm_backward<T: Float>(
    c: &BackwardCtx<'_, T>,
    mean: &Tensor<T>,
    rstd: &Tensor<T>,
) -> Vec<Option<Tensor<T>>> {
    let (x, w) = (c.inputs[0], c.inputs[1]);
    same_gpu("layer_norm backward", &[x, w, c.grad, mean, rstd]);
    let d = w.numel();
    let needs = [c.needs_grad[0], c.needs_grad[1], c.needs_grad[2]];
    let (dx, dw, db) = rows::layer_norm_backward(buf(x), buf(w), buf(mean), buf(rstd), buf(c.grad), d, needs);
    vec![
        dx.map(|t| Tensor::from_cuda(t, x.shape())),
        dw.map(|t| Tensor::from_cuda(t, &[d])),
        db.map(|t| Tensor::from_cuda(t, &[d])),
    ]
}

/// GELU elementwise, in the chosen form.
pub fn gelu<T: Float>(kind: GeluKind, x: &Tensor<T>) -> Tensor<T> {
    Tensor::from_cuda(rows::gelu_forward(buf(x), kind), x.shape())
}

/// `g * gelu'(x)`.
pub fn gelu_backward<T: Float>(kind: GeluKind, x: &Tensor<T>, g: &Tensor<T>) -> Tensor<T> {
    same_gpu("gelu backward", &[x, g]);
    Tensor::from_cuda(rows::gelu_backward(buf(x), buf(g), kind), x.shape())
}

/// `x` with its axes reordered (output axis `k` is input axis `perm[k]`).
pub fn permute<T: Float>(x: &Tensor<T>, perm: &[usize]) -> Tensor<T> {
    let out: Vec<usize> = perm.iter().map(|&p| x.shape()[p]).collect();
    Tensor::from_cuda(ew::permute(buf(x), x.shape(), perm), &out)
}

/// Elements `start..start + len` of `axis`.
pub fn narrow<T: Float>(x: &Tensor<T>, axis: usize, start: usize, len: usize) -> Tensor<T> {
    let mut shape = x.shape().to_vec();
    shape[axis] = len;
    Tensor::from_cuda(ew::narrow(buf(x), x.shape(), axis, start, len), &shape)
}

/// Zeros of `shape` with `g` written at `start` along `axis` (narrow's adjoint).
pub fn unnarrow<T: Float>(g: &Tensor<T>, shape: &[usize], axis: usize, start: usize) -> Tensor<T> {
    Tensor::from_cuda(ew::unnarrow(buf(g), shape, axis, start), shape)
}

/// `xs` joined along `axis` (shapes checked by the caller).
pub fn concat<T: Float>(xs: &[&Tensor<T>], axis: usize) -> Tensor<T> {
    same_gpu("concat", xs);
    let parts: Vec<(&DeviceBuffer<T>, &[usize])> = xs.iter().map(|x| (buf(x), x.shape())).collect();
    let (y, shape) = ew::concat(&parts, axis);
    Tensor::from_cuda(y, &shape)
}

/// The indices as a device buffer (checked in range by the caller).
fn indices_on(gpu: &Arc<Gpu>, indices: &[usize]) -> DeviceBuffer<i64> {
    gpu.upload(&indices.iter().map(|&j| j as i64).collect::<Vec<_>>())
}

/// Entries `indices` of `axis`.
pub fn index_select<T: Float>(x: &Tensor<T>, axis: usize, indices: &[usize]) -> Tensor<T> {
    let mut shape = x.shape().to_vec();
    shape[axis] = indices.len();
    let idx = indices_on(buf(x).gpu(), indices);
    Tensor::from_cuda(ew::index_select(buf(x), x.shape(), axis, &idx), &shape)
}

/// index_select's adjoint into a tensor of `shape`: each entry sums its copies' gradients.
pub fn index_add<T: Float>(g: &Tensor<T>, shape: &[usize], axis: usize, indices: &[usize]) -> Tensor<T> {
    let idx = indices_on(buf(g).gpu(), indices);
    Tensor::from_cuda(ew::index_add(buf(g), shape, axis, &idx), shape)
}

/// The per-sample scale of a residual branch on the device.
fn scale_on<T: Float>(gpu: &Arc<Gpu>, scale: Option<&[T]>) -> Option<DeviceBuffer<T>> {
    scale.map(|s| gpu.upload(s))
}

/// A fused Linear from `[x, w, b?, r?]`: `x W^T + b`, or `r + s (x W^T + b)` with the
/// per-sample scale `s` (copied to the device: one value per sample).
pub fn linear<T: Float>(
    inputs: &[&Tensor<T>],
    shape: &[usize],
    dims: (usize, usize, usize),
    bias: bool,
    scale: Option<&[T]>,
) -> Tensor<T> {
    let gpu = same_gpu("linear", inputs);
    let (x, w) = (buf(inputs[0]), buf(inputs[1]));
    let b = bias.then(|| buf(inputs[2]));
    let r = inputs.get(2 + bias as usize).map(|r| buf(r));
    let s = scale_on(&gpu, scale);
    let rows_per_sample = if shape.len() >= 2 { dims.0 / shape[0].max(1) } else { dims.0 };
    let residual = r.map(|r| linear::Residual { r, scale: s.as_ref(), rows_per_sample });
    Tensor::from_cuda(linear::linear_forward(x, w, b, residual, dims), shape)
}

/// The fused Linear's gradients, in its inputs' order: `dx, dW, (db), (dr = g)`.
pub fn linear_backward<T: Float>(
    c: &BackwardCtx<'_, T>,
    dims: (usize, usize, usize),
    bias: bool,
    residual: bool,
    scale: Option<&[T]>,
) -> Vec<Option<Tensor<T>>> {
    let gpu = same_gpu("linear backward", &[c.inputs[0], c.inputs[1], c.grad]);
    let (x, w) = (c.inputs[0], c.inputs[1]);
    let s = scale_on(&gpu, scale);
    let per_sample = dims.0 / x.shape()[0].max(1) * dims.2;
    let scaled = s.map(|s| linear::scale_samples(buf(c.grad), &s, per_sample));
    let g = scaled.as_ref().unwrap_or(buf(c.grad));
    let needs = [c.needs_grad[0], c.needs_grad[1], bias && c.needs_grad[2]];
    let (dx, dw, db) = linear::linear_backward(buf(x), buf(w), g, dims, needs);
    let mut out = vec![dx.map(|t| Tensor::from_cuda(t, x.shape())), dw.map(|t| Tensor::from_cuda(t, w.shape()))];
    if bias {
        out.push(db.map(|t| Tensor::from_cuda(t, &[dims.2])));
    }
    if residual {
        out.push(c.needs_grad[out.len()].then(|| c.grad.clone()));
    }
    out
}

/// `gelu(x W^T + b)` from `[x, w, b]`.
pub fn linear_gelu<T: Float>(
    inputs: &[&Tensor<T>],
    kind: GeluKind,
    dims: (usize, usize, usize),
    keep_h: bool,
) -> (Tensor<T>, Option<Tensor<T>>) {
    same_gpu("linear_gelu", inputs);
    let (a, h) = linear::linear_gelu_forward(buf(inputs[0]), buf(inputs[1]), buf(inputs[2]), kind, dims, keep_h);
    let mut shape = inputs[0].shape().to_vec();
    *shape.last_mut().expect("rank >= 1") = dims.2;
    let h = h.map(|h| Tensor::from_cuda(h, &shape));
    (Tensor::from_cuda(a, &shape), h)
}

/// `linear_gelu`'s `(dx, dW, db)`, from the pre-activation `h` the op kept from forward: the
/// same rule as the CPU path.
pub fn linear_gelu_backward<T: Float>(
    c: &BackwardCtx<'_, T>,
    h: &Tensor<T>,
    kind: GeluKind,
    dims: (usize, usize, usize),
) -> Vec<Option<Tensor<T>>> {
    let (x, w, b) = (c.inputs[0], c.inputs[1], c.inputs[2]);
    same_gpu("linear_gelu backward", &[x, w, b, c.grad, h]);
    let needs = [c.needs_grad[0], c.needs_grad[1], c.needs_grad[2]];
    let h = Some(buf(h));
    let (dx, dw, db) = linear::linear_gelu_backward(buf(x), buf(w), buf(b), buf(c.grad), h, kind, dims, needs);
    vec![
        dx.map(|t| Tensor::from_cuda(t, x.shape())),
        dw.map(|t| Tensor::from_cuda(t, w.shape())),
        db.map(|t| Tensor::from_cuda(t, b.shape())),
    ]
}

/// Multi-head attention from `qkv: [B, N, 3D]`: the output `[B, N, D]` and, if asked for, the
/// probabilities `[B, H, N, N]` (before dropout).
pub fn attention<T: Float>(
    qkv: &Tensor<T>,
    d: Heads,
    scale: f64,
    dropout: Option<(f64, u64)>,
    keep: bool,
) -> (Tensor<T>, Option<Tensor<T>>) {
    let (y, p) = attention::attention_forward(buf(qkv), d, scale, dropout, keep);
    let y = Tensor::from_cuda(y, &[d.b, d.n, d.heads * d.dh]);
    (y, p.map(|p| Tensor::from_cuda(p, &[d.b, d.heads, d.n, d.n])))
}

/// Attention's `dqkv`, from the kept probabilities or with them recomputed.
pub fn attention_backward<T: Float>(
    c: &BackwardCtx<'_, T>,
    d: Heads,
    scale: f64,
    dropout: Option<(f64, u64)>,
    probs: Option<&Tensor<T>>,
) -> Tensor<T> {
    same_gpu("attention backward", &[c.inputs[0], c.grad]);
    let dx = attention::attention_backward(buf(c.inputs[0]), buf(c.grad), d, scale, dropout, probs.map(buf));
    Tensor::from_cuda(dx, c.inputs[0].shape())
}

/// Images `[B, C, H, W]` cut into patches `out` = `[B, (H/P)(W/P), C P P]`.
pub fn patchify<T: Float>(x: &Tensor<T>, bchw: (usize, usize, usize, usize), p: usize, out: &[usize]) -> Tensor<T> {
    Tensor::from_cuda(ew::patchify(buf(x), bchw, p), out)
}

/// patchify's inverse, into images of `shape`.
pub fn unpatchify<T: Float>(g: &Tensor<T>, bchw: (usize, usize, usize, usize), p: usize, shape: &[usize]) -> Tensor<T> {
    Tensor::from_cuda(ew::unpatchify(buf(g), bchw, p), shape)
}

/// Inverted dropout drawn from `seed` with the CPU's streams: `(y, keep mask)`.
pub fn dropout<T: Float>(x: &Tensor<T>, p: f64, seed: u64) -> (Tensor<T>, DeviceBuffer<u8>) {
    let (y, keep) = rows::dropout_forward(buf(x), p, seed);
    (Tensor::from_cuda(y, x.shape()), keep)
}

/// `g * keep / (1 - p)`.
pub fn dropout_backward<T: Float>(g: &Tensor<T>, keep: &DeviceBuffer<u8>, p: f64) -> Tensor<T> {
    Tensor::from_cuda(rows::dropout_backward(buf(g), keep, p), g.shape())
}

/// Mean cross-entropy of `logits: [B, C]` (labels checked by the caller): the loss (a
/// shape-`[]` tensor on the device), `softmax(logits)` and the labels on the device.
pub fn cross_entropy<T: Float>(
    logits: &Tensor<T>,
    labels: &[usize],
    smoothing: f64,
) -> (Tensor<T>, Tensor<T>, DeviceBuffer<i64>) {
    let x = buf(logits);
    let idx = indices_on(x.gpu(), labels);
    let (loss, probs) = rows::cross_entropy_forward(x, &idx, logits.shape()[1], smoothing);
    (Tensor::from_cuda(loss, &[]), Tensor::from_cuda(probs, logits.shape()), idx)
}

/// `dx = g (p - t) / B`, with the loss's gradient `g` read on the device.
pub fn cross_entropy_backward<T: Float>(
    probs: &Tensor<T>,
    labels: &DeviceBuffer<i64>,
    g: &Tensor<T>,
    smoothing: f64,
) -> Tensor<T> {
    same_gpu("cross_entropy backward", &[probs, g]);
    let dx = rows::cross_entropy_backward(buf(probs), labels, buf(g), probs.shape()[1], smoothing);
    Tensor::from_cuda(dx, probs.shape())
}

/// One AdamW step on a GPU parameter `p` and its moments `(m, v)`, from the gradient `g`, with
/// the coefficients `h` the CPU kernel uses.
pub fn adamw(p: &mut Tensor<f32>, g: &Tensor<f32>, (m, v): (&mut Tensor<f32>, &mut Tensor<f32>), h: &AdamW) {
    same_gpu("adamw", &[&*p, g, &*m, &*v]);
    let (m, v) = (on_gpu(m), on_gpu(v));
    optim::adamw(on_gpu(p), buf(g), m, v, h);
}

/// One SGD-with-momentum step on a GPU parameter `p` and its buffer `b` (see the CPU loop in
/// the `vit` crate's `optim/sgd.rs`): `(lr, mu, wd)`, whether this is the first step, Nesterov.
pub fn sgd(
    p: &mut Tensor<f32>,
    g: &Tensor<f32>,
    b: &mut Tensor<f32>,
    (lr, mu, wd): (f32, f32, f32),
    first: bool,
    nesterov: bool,
) {
    same_gpu("sgd", &[&*p, g, &*b]);
    let b = on_gpu(b);
    optim::sgd(on_gpu(p), buf(g), b, lr, mu, wd, first, nesterov);
}

/// `sum over the tensors and their elements of x^2`, in f64 on the device, read back as one
/// scalar.
pub fn sum_of_squares<T: Float>(xs: &[&Tensor<T>]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let gpu = same_gpu("sum_of_squares", xs);
    let bufs: Vec<&DeviceBuffer<T>> = xs.iter().map(|x| buf(x)).collect();
    optim::sum_of_squares(&gpu, &bufs).to_vec()[0]
}

/// Global-norm clipping of GPU gradients: the norm `n` is summed on the device, every gradient
/// is scaled by `max_norm / (n + 1e-6)` there when `n > max_norm`, and `n` comes back as the one
/// scalar the step reports.
pub fn clip_grad_norm<T: Float>(grads: &mut [Tensor<T>], max_norm: f64) -> f64 {
    if grads.is_empty() {
        return 0.0;
    }
    let gpu = same_gpu("clip_grad_norm", &grads.iter().collect::<Vec<_>>());
    let bufs: Vec<&DeviceBuffer<T>> = grads.iter_mut().map(|g| &*on_gpu(g)).collect();
    let sumsq = optim::sum_of_squares(&gpu, &bufs);
    if max_norm.is_finite() {
        optim::clip(&bufs, &sumsq, max_norm);
    }
    sumsq.to_vec()[0].sqrt()
}

/// The buffer of a GPU tensor to write in place (copied first if shared, as `data_mut` does).
fn on_gpu<T: Float>(x: &mut Tensor<T>) -> &mut DeviceBuffer<T> {
    let shape = x.shape().to_vec();
    x.cuda_mut().unwrap_or_else(|| panic!("a CPU tensor {shape:?} among GPU tensors"))
}

/// The maxima of `x` along `axis`, shaped `shape` (the reduced axis removed or kept as 1); NaN
/// propagates, as in the CPU's `max_along`.
pub fn max<T: Float>(x: &Tensor<T>, axis: usize, shape: &[usize]) -> Tensor<T> {
    let (outer, n, inner) = around(x.shape(), axis);
    if outer * inner == 0 {
        return Tensor::full_on(shape, T::ZERO, x.device());
    }
    let (y, _) = reduce::max_along(buf(x), outer, n, inner, true);
    Tensor::from_cuda(y.expect("values were asked for"), shape)
}

/// The first index of each maximum along `axis`, read back (row-major over the other axes).
pub fn argmax<T: Float>(x: &Tensor<T>, axis: usize) -> Vec<usize> {
    let (outer, n, inner) = around(x.shape(), axis);
    if outer * inner == 0 {
        return Vec::new();
    }
    let (_, idx) = reduce::max_along(buf(x), outer, n, inner, false);
    idx.to_vec().into_iter().map(|i| i as usize).collect()
}

/// `(outer, n, inner)`: `shape` seen as `[outer, n, inner]` around `axis`.
fn around(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (numel(&shape[..axis]), shape[axis], numel(&shape[axis + 1..]))
}

/// Max-pooling of `x` (geometry `d`, output `shape`): the maxima and their winners' indices.
pub fn max_pool2d<T: Float>(x: &Tensor<T>, d: &Pool, shape: &[usize]) -> (Tensor<T>, DeviceBuffer<i64>) {
    let (y, arg) = pool::max_pool_forward(buf(x), d);
    (Tensor::from_cuda(y, shape), arg)
}

/// Max-pooling's `dx` (shaped `shape`) from `g` and the winners forward kept.
pub fn max_pool2d_backward<T: Float>(g: &Tensor<T>, arg: &DeviceBuffer<i64>, d: &Pool, shape: &[usize]) -> Tensor<T> {
    Tensor::from_cuda(pool::max_pool_backward(buf(g), arg, d), shape)
}

/// Convolution's output `[B, O, Ho, Wo]` (ops/conv2d.rs).
pub fn conv2d<T: Float>(x: &Tensor<T>, w: &Tensor<T>, d: &Conv) -> Tensor<T> {
    same_gpu("conv2d", &[x, w]);
    Tensor::from_cuda(resnet::conv_forward(buf(x), buf(w), d), &[d.b, d.o, d.ho, d.wo])
}

/// Convolution's `(dx, dw)`, each only where needed.
pub fn conv2d_backward<T: Float>(c: &BackwardCtx<'_, T>, d: &Conv) -> Vec<Option<Tensor<T>>> {
    let (x, w) = (c.inputs[0], c.inputs[1]);
    same_gpu("conv2d backward", &[x, w, c.grad]);
    let (dx, dw) = resnet::conv_backward(buf(x), buf(w), buf(c.grad), d, [c.needs_grad[0], c.needs_grad[1]]);
    vec![dx.map(|t| Tensor::from_cuda(t, x.shape())), dw.map(|t| Tensor::from_cuda(t, w.shape()))]
}

/// Group norm's `(y, mean, rstd)` (ops/group_norm.rs); the statistics are `[B groups]`.
pub fn group_norm<T: Float>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    b: &Tensor<T>,
    d: &Groups,
    eps: f64,
) -> (Tensor<T>, Tensor<T>, Tensor<T>) {
    same_gpu("group_norm", &[x, w, b]);
    let (y, mean, rstd) = resnet::group_norm_forward(buf(x), buf(w), buf(b), d, eps);
    let rows = [d.b * d.groups];
    (Tensor::from_cuda(y, x.shape()), Tensor::from_cuda(mean, &rows), Tensor::from_cuda(rstd, &rows))
}

/// Group norm's `(dx, dw, db)`, each only where needed.
pub fn group_norm_backward<T: Float>(
    c: &BackwardCtx<'_, T>,
    mean: &Tensor<T>,
    rstd: &Tensor<T>,
    d: &Groups,
) -> Vec<Option<Tensor<T>>> {
    let (x, w) = (c.inputs[0], c.inputs[1]);
    same_gpu("group_norm backward", &[x, w, c.grad, mean, rstd]);
    let needs = [c.needs_grad[0], c.needs_grad[1], c.needs_grad[2]];
    let (dx, dw, db) = resnet::group_norm_backward(buf(x), buf(w), buf(mean), buf(rstd), buf(c.grad), d, needs);
    vec![
        dx.map(|t| Tensor::from_cuda(t, x.shape())),
        dw.map(|t| Tensor::from_cuda(t, &[d.c])),
        db.map(|t| Tensor::from_cuda(t, &[d.c])),
    ]
}
