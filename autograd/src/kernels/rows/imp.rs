//! The row kernels' bodies, generic over [`Simd`]; `mod.rs` instantiates them per ISA and
//! splits the rows over threads. Every function works on raw pointers to `rows x n` row-major
//! blocks; tails shorter than a vector use masked (or buffered) loads and stores.

use super::math::{gelu_tanh_gate, gelu_tanh_grad, normal_cdf, normal_cdf_and_pdf};
use super::{AdamW, GeluKind};
use crate::kernels::simd::{Simd, Unrolled};

/// Applies `f` to `n` elements in vector steps: `f(i, lanes)` handles elements `i..i + lanes`.
#[inline(always)]
unsafe fn each<S: Simd>(n: usize, mut f: impl FnMut(usize, usize)) {
    let mut i = 0;
    while i + S::LANES <= n {
        f(i, S::LANES);
        i += S::LANES;
    }
    if i < n {
        f(i, n - i);
    }
}

#[inline(always)]
unsafe fn load<S: Simd>(p: *const f32, lanes: usize) -> S::V {
    if lanes == S::LANES {
        S::load(p)
    } else {
        S::load_partial(p, lanes)
    }
}

#[inline(always)]
unsafe fn store<S: Simd>(p: *mut f32, lanes: usize, v: S::V) {
    if lanes == S::LANES {
        S::store(p, v)
    } else {
        S::store_partial(p, lanes, v)
    }
}

/// `sum_i x_i` (two vector accumulators, scalar tail).
#[inline(always)]
unsafe fn sum<S: Simd>(x: *const f32, n: usize) -> f32 {
    let (mut a0, mut a1) = (S::zero(), S::zero());
    let mut i = 0;
    while i + 2 * S::LANES <= n {
        a0 = S::add(a0, S::load(x.add(i)));
        a1 = S::add(a1, S::load(x.add(i + S::LANES)));
        i += 2 * S::LANES;
    }
    if i + S::LANES <= n {
        a0 = S::add(a0, S::load(x.add(i)));
        i += S::LANES;
    }
    let mut s = S::hsum(S::add(a0, a1));
    for j in i..n {
        s += *x.add(j);
    }
    s
}

/// `sum_i x_i y_i`.
#[inline(always)]
unsafe fn dot<S: Simd>(x: *const f32, y: *const f32, n: usize) -> f32 {
    let (mut a0, mut a1) = (S::zero(), S::zero());
    let mut i = 0;
    while i + 2 * S::LANES <= n {
        a0 = S::fma(S::load(x.add(i)), S::load(y.add(i)), a0);
        a1 = S::fma(S::load(x.add(i + S::LANES)), S::load(y.add(i + S::LANES)), a1);
        i += 2 * S::LANES;
    }
    if i + S::LANES <= n {
        a0 = S::fma(S::load(x.add(i)), S::load(y.add(i)), a0);
        i += S::LANES;
    }
    let mut s = S::hsum(S::add(a0, a1));
    for j in i..n {
        s += *x.add(j) * *y.add(j);
    }
    s
}

/// `max_i x_i`.
#[inline(always)]
unsafe fn max<S: Simd>(x: *const f32, n: usize) -> f32 {
    let mut m = f32::NEG_INFINITY;
    let mut i = 0;
    if n >= S::LANES {
        let mut a = S::load(x);
        i = S::LANES;
        while i + S::LANES <= n {
            a = S::max(a, S::load(x.add(i)));
            i += S::LANES;
        }
        m = S::hmax(a);
    }
    for j in i..n {
        m = m.max(*x.add(j));
    }
    m
}

/// Softmax of each row: `y = exp(x - max x) / sum exp(x - max x)`.
#[inline(always)]
pub(super) unsafe fn softmax_forward<S: Simd>(x: *const f32, y: *mut f32, rows: usize, n: usize) {
    for r in 0..rows {
        let (x, y) = (x.add(r * n), y.add(r * n));
        let mx = S::splat(max::<S>(x, n));
        let mut acc = S::zero();
        let mut tail = 0.0f32;
        each::<S>(
            n,
            #[inline(always)]
            |i, l| {
                let e = super::math::exp::<S>(S::sub(load::<S>(x.add(i), l), mx));
                store::<S>(y.add(i), l, e);
                if l == S::LANES {
                    acc = S::add(acc, e);
                } else {
                    for j in 0..l {
                        tail += *y.add(i + j);
                    }
                }
            },
        );
        let inv = S::splat(1.0 / (S::hsum(acc) + tail));
        each::<S>(
            n,
            #[inline(always)]
            |i, l| store::<S>(y.add(i), l, S::mul(load::<S>(y.add(i), l), inv)),
        );
    }
}

/// Softmax backward per row: `dx = y * (dy - sum_j dy_j y_j)`.
#[inline(always)]
pub(super) unsafe fn softmax_backward<S: Simd>(y: *const f32, dy: *const f32, dx: *mut f32, rows: usize, n: usize) {
    for r in 0..rows {
        let (y, dy, dx) = (y.add(r * n), dy.add(r * n), dx.add(r * n));
        let s = S::splat(dot::<S>(y, dy, n));
        each::<S>(
            n,
            #[inline(always)]
            |i, l| {
                let yv = load::<S>(y.add(i), l);
                store::<S>(dx.add(i), l, S::mul(yv, S::sub(load::<S>(dy.add(i), l), s)));
            },
        );
    }
}

/// Layer norm per row: `y = (x - mean) * rstd * w + b`, writing `mean` and
/// `rstd = 1 / sqrt(var + eps)` (two-pass variance).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn layer_norm_forward<S: Simd>(
    x: *const f32,
    w: *const f32,
    b: *const f32,
    eps: f32,
    y: *mut f32,
    mean: *mut f32,
    rstd: *mut f32,
    rows: usize,
    n: usize,
) {
    let inv_n = 1.0 / n as f32;
    for r in 0..rows {
        let (x, y) = (x.add(r * n), y.add(r * n));
        let mu = sum::<S>(x, n) * inv_n;
        let muv = S::splat(mu);
        let mut acc = S::zero();
        let mut tail = 0.0f32;
        each::<S>(
            n,
            #[inline(always)]
            |i, l| {
                if l == S::LANES {
                    let d = S::sub(S::load(x.add(i)), muv);
                    acc = S::fma(d, d, acc);
                } else {
                    for j in 0..l {
                        let d = *x.add(i + j) - mu;
                        tail += d * d;
                    }
                }
            },
        );
        let rs = 1.0 / ((S::hsum(acc) + tail) * inv_n + eps).sqrt();
        *mean.add(r) = mu;
        *rstd.add(r) = rs;
        normalize_row::<S>(x, (w, b), (mu, rs), y, n);
    }
}

/// One row of `y = (x - mean) * rstd * w + b` from its statistics: the forward's second pass,
/// and the whole of [`layer_norm_apply`], so that a recomputed output is the forward's bit for bit.
#[inline(always)]
unsafe fn normalize_row<S: Simd>(
    x: *const f32,
    (w, b): (*const f32, *const f32),
    (mu, rs): (f32, f32),
    y: *mut f32,
    n: usize,
) {
    let (muv, rsv) = (S::splat(mu), S::splat(rs));
    each::<S>(
        n,
        #[inline(always)]
        |i, l| {
            let xhat = S::mul(S::sub(load::<S>(x.add(i), l), muv), rsv);
            store::<S>(y.add(i), l, S::fma(xhat, load::<S>(w.add(i), l), load::<S>(b.add(i), l)));
        },
    );
}

/// Layer norm's output from saved statistics (the recompute in backward): per row,
/// `y = (x - mean) * rstd * w + b`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn layer_norm_apply<S: Simd>(
    x: *const f32,
    w: *const f32,
    b: *const f32,
    mean: *const f32,
    rstd: *const f32,
    y: *mut f32,
    rows: usize,
    n: usize,
) {
    for r in 0..rows {
        normalize_row::<S>(x.add(r * n), (w, b), (*mean.add(r), *rstd.add(r)), y.add(r * n), n);
    }
}

/// Layer norm backward per row, with `xhat = (x - mean) rstd` and `g = dy * w`:
/// `dx = rstd (g - mean(g) - xhat mean(g xhat))`; `dw += dy xhat`, `db += dy` (summed over rows
/// into the given accumulators).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn layer_norm_backward<S: Simd>(
    x: *const f32,
    w: *const f32,
    mean: *const f32,
    rstd: *const f32,
    dy: *const f32,
    dx: *mut f32,
    dw: *mut f32,
    db: *mut f32,
    rows: usize,
    n: usize,
) {
    let inv_n = 1.0 / n as f32;
    for r in 0..rows {
        let (x, dy, dx) = (x.add(r * n), dy.add(r * n), dx.add(r * n));
        let (mu, rs) = (S::splat(*mean.add(r)), S::splat(*rstd.add(r)));
        // Pass 1: mean(g) and mean(g xhat). Padded lanes load zeros and add nothing.
        let (mut a1, mut a2) = (S::zero(), S::zero());
        each::<S>(
            n,
            #[inline(always)]
            |i, l| {
                let xv = load::<S>(x.add(i), l);
                let xhat = S::mul(S::sub(xv, mu), rs);
                let g = S::mul(load::<S>(dy.add(i), l), load::<S>(w.add(i), l));
                a1 = S::add(a1, g);
                a2 = S::fma(g, xhat, a2);
            },
        );
        let c1 = S::splat(S::hsum(a1) * inv_n);
        let c2 = S::splat(S::hsum(a2) * inv_n);
        // Pass 2: dx, and the parameter gradients.
        each::<S>(
            n,
            #[inline(always)]
            |i, l| {
                let xhat = S::mul(S::sub(load::<S>(x.add(i), l), mu), rs);
                let dyv = load::<S>(dy.add(i), l);
                let g = S::mul(dyv, load::<S>(w.add(i), l));
                let d = S::fnma(xhat, c2, S::sub(g, c1));
                store::<S>(dx.add(i), l, S::mul(d, rs));
                store::<S>(dw.add(i), l, S::fma(dyv, xhat, load::<S>(dw.add(i), l)));
                store::<S>(db.add(i), l, S::add(dyv, load::<S>(db.add(i), l)));
            },
        );
    }
}

/// Vectors per step of the GELU forward kernel.
const GELU_UNROLL: usize = 4;

/// GELU forward on `n` elements: `y = x Phi(x)` (erf form) or `x sigmoid(2u)` (tanh form).
#[inline(always)]
pub(super) unsafe fn gelu_forward<S: Simd>(kind: GeluKind, x: *const f32, y: *mut f32, n: usize) {
    // Independent chains interleaved per step (see `Unrolled`): the same bits; on Zen 3 up to
    // about 12% faster than one vector a step (BENCHMARKS.md).
    gelu_forward_on::<Unrolled<S, GELU_UNROLL>>(kind, x, y, n)
}

#[inline(always)]
unsafe fn gelu_forward_on<S: Simd>(kind: GeluKind, x: *const f32, y: *mut f32, n: usize) {
    match kind {
        GeluKind::Erf => each::<S>(
            n,
            #[inline(always)]
            |i, l| {
                let xv = load::<S>(x.add(i), l);
                store::<S>(y.add(i), l, S::mul(xv, normal_cdf::<S>(xv)));
            },
        ),
        GeluKind::Tanh => each::<S>(
            n,
            #[inline(always)]
            |i, l| {
                let xv = load::<S>(x.add(i), l);
                store::<S>(y.add(i), l, S::mul(xv, gelu_tanh_gate::<S>(xv).0));
            },
        ),
    }
}

/// GELU backward on `n` elements: `dx = dy gelu'(x)`, with `gelu'(x) = Phi(x) + x phi(x)` (erf)
/// or `s + x s (1 - s) 2 u'(x)`, `s = sigmoid(2u)` (tanh).
///
/// One vector a step: unrolled like the forward, it was no faster on Zen 3 in any measurement.
#[inline(always)]
pub(super) unsafe fn gelu_backward<S: Simd>(kind: GeluKind, x: *const f32, dy: *const f32, dx: *mut f32, n: usize) {
    match kind {
        GeluKind::Erf => each::<S>(
            n,
            #[inline(always)]
            |i, l| {
                let xv = load::<S>(x.add(i), l);
                let (cdf, pdf) = normal_cdf_and_pdf::<S>(xv);
                let d = S::fma(xv, pdf, cdf);
                store::<S>(dx.add(i), l, S::mul(load::<S>(dy.add(i), l), d));
            },
        ),
        GeluKind::Tanh => each::<S>(
            n,
            #[inline(always)]
            |i, l| {
                let xv = load::<S>(x.add(i), l);
                let d = gelu_tanh_grad::<S>(xv).1;
                store::<S>(dx.add(i), l, S::mul(load::<S>(dy.add(i), l), d));
            },
        ),
    }
}

/// GELU and its derivative in one pass on `n` elements: `y = gelu(x)`, bit for bit
/// [`gelu_forward`]'s, and `d = gelu'(x)`, what [`gelu_backward`] multiplies `dy` by (the same
/// `Phi` and `phi`, from the one `exp` they share).
#[inline(always)]
pub(super) unsafe fn gelu_forward_grad<S: Simd>(kind: GeluKind, x: *const f32, y: *mut f32, d: *mut f32, n: usize) {
    gelu_forward_grad_on::<Unrolled<S, GELU_GRAD_UNROLL>>(kind, x, y, d, n)
}

/// Vectors per step of [`gelu_forward_grad`].
const GELU_GRAD_UNROLL: usize = 2;

#[inline(always)]
unsafe fn gelu_forward_grad_on<S: Simd>(kind: GeluKind, x: *const f32, y: *mut f32, d: *mut f32, n: usize) {
    match kind {
        GeluKind::Erf => each::<S>(
            n,
            #[inline(always)]
            |i, l| {
                let xv = load::<S>(x.add(i), l);
                let (cdf, pdf) = normal_cdf_and_pdf::<S>(xv);
                store::<S>(y.add(i), l, S::mul(xv, cdf));
                store::<S>(d.add(i), l, S::fma(xv, pdf, cdf));
            },
        ),
        GeluKind::Tanh => each::<S>(
            n,
            #[inline(always)]
            |i, l| {
                let xv = load::<S>(x.add(i), l);
                let (s, dv) = gelu_tanh_grad::<S>(xv);
                store::<S>(y.add(i), l, S::mul(xv, s));
                store::<S>(d.add(i), l, dv);
            },
        ),
    }
}

/// `y = e^x` on `n` elements.
#[inline(always)]
pub(super) unsafe fn exp<S: Simd>(x: *const f32, y: *mut f32, n: usize) {
    each::<S>(
        n,
        #[inline(always)]
        |i, l| store::<S>(y.add(i), l, super::math::exp::<S>(load::<S>(x.add(i), l))),
    );
}

/// `x[r, :] += bias` for each row.
#[inline(always)]
pub(super) unsafe fn bias_add<S: Simd>(x: *mut f32, bias: *const f32, rows: usize, n: usize) {
    for r in 0..rows {
        let x = x.add(r * n);
        each::<S>(
            n,
            #[inline(always)]
            |i, l| store::<S>(x.add(i), l, S::add(load::<S>(x.add(i), l), load::<S>(bias.add(i), l))),
        );
    }
}

/// `out[j] += sum_r x[r, j]`, row after row (the gradient of a broadcast bias).
#[inline(always)]
pub(super) unsafe fn add_rows<S: Simd>(x: *const f32, out: *mut f32, rows: usize, n: usize) {
    for r in 0..rows {
        let x = x.add(r * n);
        each::<S>(
            n,
            #[inline(always)]
            |i, l| store::<S>(out.add(i), l, S::add(load::<S>(out.add(i), l), load::<S>(x.add(i), l))),
        );
    }
}

/// Per row `d *= g`, then `out += d`: a gradient scaled by a saved factor and its column sum
/// (the bias gradient) in one pass, with [`add_rows`]'s additions in its order.
#[inline(always)]
pub(super) unsafe fn scale_add_rows<S: Simd>(d: *mut f32, g: *const f32, out: *mut f32, rows: usize, n: usize) {
    for r in 0..rows {
        let (d, g) = (d.add(r * n), g.add(r * n));
        each::<S>(
            n,
            #[inline(always)]
            |i, l| {
                let v = S::mul(load::<S>(g.add(i), l), load::<S>(d.add(i), l));
                store::<S>(d.add(i), l, v);
                store::<S>(out.add(i), l, S::add(load::<S>(out.add(i), l), v));
            },
        );
    }
}

/// One AdamW step on `n` parameters (PyTorch's `torch.optim.AdamW`):
/// `p *= 1 - lr wd; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;`
/// `p -= (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps)`.
#[inline(always)]
pub(super) unsafe fn adamw<S: Simd>(p: *mut f32, g: *const f32, m: *mut f32, v: *mut f32, h: &AdamW, n: usize) {
    let decay = S::splat(1.0 - h.lr * h.weight_decay);
    let (b1, b2) = (S::splat(h.beta1), S::splat(h.beta2));
    let (c1, c2) = (S::splat(h.one_minus_beta1), S::splat(h.one_minus_beta2));
    let step = S::splat(h.lr / h.bias_correction1);
    let inv_sqrt_bc2 = S::splat(1.0 / h.bias_correction2.sqrt());
    let eps = S::splat(h.eps);
    each::<S>(
        n,
        #[inline(always)]
        |i, l| {
            let gv = load::<S>(g.add(i), l);
            let mv = S::fma(b1, load::<S>(m.add(i), l), S::mul(c1, gv));
            let vv = S::fma(b2, load::<S>(v.add(i), l), S::mul(c2, S::mul(gv, gv)));
            let denom = S::fma(S::sqrt(vv), inv_sqrt_bc2, eps);
            let pv = S::mul(load::<S>(p.add(i), l), decay);
            store::<S>(p.add(i), l, S::fnma(step, S::div(mv, denom), pv));
            store::<S>(m.add(i), l, mv);
            store::<S>(v.add(i), l, vv);
        },
    );
}
