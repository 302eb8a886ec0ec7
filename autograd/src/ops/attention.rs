//! Multi-head scaled dot-product attention, fused: scores, softmax, dropout and the value
//! product per head, straight from the fused qkv projection to the concatenated heads.
//!
//! For each batch entry `b` and head `h`, with `q, k, v` the head's `N x Dh` slices of
//! `qkv: [B, N, 3D]` (laid out `[q | k | v]`, each head-major) and `s = 1/sqrt(Dh)`:
//!
//! ```text
//!     S = s q k^T                      N x N
//!     P = softmax(S)                   row-wise
//!     Pd = P * mask / (1 - p)          attention dropout (Pd = P when off)
//!     O = Pd v                         N x Dh, written at columns h*Dh.. of out: [B, N, D]
//!
//!     dPd = dO v^T          dv = Pd^T dO
//!     dP  = dPd * mask / (1 - p)
//!     dS  = P * (dP - rowsum(dP * P))                 (softmax backward)
//!     dq  = s dS k          dk = s dS^T q
//! ```
//!
//! Every head slice is read and written in place through GEMM strides (row stride `3D` in
//! `qkv`, `D` in `out`), so no permute, narrow or concat copies are made, and the `N x N`
//! scores of one head stay in cache from the product through the softmax to the value product.
//! Heads are independent and run in parallel.
//!
//! Nothing `N x N` is kept for backward: it recomputes each head's `P` from `q` and `k` (one
//! small product and a softmax, in cache) where it needs it, and regenerates the dropout mask
//! from a per-head seed. The probabilities are kept only when asked for
//! ([`Graph::attention_with_probs`], for attention maps).

use rayon::prelude::*;

use crate::dtype::Float;
use crate::graph::{BackwardCtx, Graph, Op, Var};
use crate::kernels::{as_f32, as_f32_mut, rows};
use rand::RngCore;

use crate::rng::Rng;
use crate::tensor::Tensor;

/// A raw pointer that may cross threads: each parallel task writes a disjoint set of elements.
#[derive(Clone, Copy)]
struct SharedMut<T>(*mut T);
unsafe impl<T> Send for SharedMut<T> {}
unsafe impl<T> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// Through a method, so closures capture the whole (`Sync`) wrapper, not the bare pointer.
    fn get(self) -> *mut T {
        self.0
    }
}

/// `C = alpha * A B + beta * C` on raw strided operands (see [`Float::gemm`]).
#[allow(clippy::too_many_arguments)]
unsafe fn gemm<T: Float>(
    m: usize,
    k: usize,
    n: usize,
    alpha: T,
    a: (*const T, usize, usize),
    b: (*const T, usize, usize),
    c: (*mut T, usize, usize),
) {
    T::gemm(
        m,
        k,
        n,
        alpha,
        a.0,
        a.1 as isize,
        a.2 as isize,
        b.0,
        b.1 as isize,
        b.2 as isize,
        T::ZERO,
        c.0,
        c.1 as isize,
        c.2 as isize,
    )
}

#[derive(Clone, Copy, Debug)]
struct Dims {
    b: usize,
    n: usize,
    heads: usize,
    dh: usize,
}

impl Dims {
    fn d(&self) -> usize {
        self.heads * self.dh
    }
    /// Offset of head `h`'s q block for batch entry `b` in qkv (k is `+D`, v is `+2D`).
    fn q_off(&self, b: usize, h: usize) -> usize {
        b * self.n * 3 * self.d() + h * self.dh
    }
    /// Offset of head `h`'s output block for batch entry `b` in out.
    fn o_off(&self, b: usize, h: usize) -> usize {
        b * self.n * self.d() + h * self.dh
    }
}

/// Row-wise `p = softmax(s)` for `N`-wide rows (f32: the SIMD kernel).
fn softmax_rows<T: Float>(s: &[T], p: &mut [T], n: usize) {
    if let (Some(s32), Some(p32)) = (as_f32(s), as_f32_mut(p)) {
        return rows::softmax_forward(s32, p32, n);
    }
    for (row, out) in s.chunks_exact(n).zip(p.chunks_exact_mut(n)) {
        let m = row.iter().fold(row[0], |a, &b| a.max(b));
        let mut sum = T::ZERO;
        for (o, &v) in out.iter_mut().zip(row) {
            *o = (v - m).exp();
            sum += *o;
        }
        let inv = T::ONE / sum;
        for o in out.iter_mut() {
            *o *= inv;
        }
    }
}

/// One head's dropout scales `mask / (1 - p)` (0 where dropped), regenerated identically in
/// forward and backward from the op's seed and the head's index.
fn head_mask<T: Float>(seed: u64, bh: usize, p: f64, out: &mut [T]) {
    let mut rng = Rng::seed(seed ^ (bh as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let keep = 1.0 - p;
    let s = T::from_f64(1.0 / keep);
    for v in out.iter_mut() {
        *v = if rng.uniform() < keep { s } else { T::ZERO };
    }
}

/// `P = softmax(s q k^T)` for head `(b, h)`: the scores go into `scores`, the probabilities
/// into `p` (both `N x N`).
fn head_probs<T: Float>(x: &[T], d: &Dims, bh: usize, scale: T, scores: &mut [T], p: &mut [T]) {
    let (n, dh, dd) = (d.n, d.dh, d.d());
    let qo = d.q_off(bh / d.heads, bh % d.heads);
    // SAFETY: q and k are N x Dh blocks of qkv with row stride 3D; scores is N x N.
    unsafe {
        let (q, k) = (x.as_ptr().add(qo), x.as_ptr().add(qo + dd));
        gemm(n, dh, n, scale, (q, 3 * dd, 1), (k, 1, 3 * dd), (scores.as_mut_ptr(), n, 1));
    }
    softmax_rows(scores, p, n);
}

/// The recorded half.
struct Attention<T: Float> {
    dims: Dims,
    scale: T,
    /// The probabilities, when the caller asked for them (otherwise recomputed per head).
    probs: Option<Tensor<T>>,
    /// `(p, seed)` of active attention dropout.
    dropout: Option<(f64, u64)>,
}

impl<T: Float> Op<T> for Attention<T> {
    fn name(&self) -> String {
        let d = self.dims;
        format!(
            "attention(heads={}, N={}, Dh={}{})",
            d.heads,
            d.n,
            d.dh,
            if self.dropout.is_some() { ", dropout" } else { "" }
        )
    }

    fn backward(&self, c: &BackwardCtx<'_, T>) -> Vec<Option<Tensor<T>>> {
        let d = self.dims;
        let (n, dh, dd) = (d.n, d.dh, d.d());
        let qkv = c.inputs[0].data();
        let go = c.grad.data();
        // Every (b, h) block of dq, dk and dv is written by a GEMM (beta = 0) when N > 0.
        let mut dqkv = if n > 0 { crate::pool::take::<T>(qkv.len()) } else { crate::pool::zeros::<T>(qkv.len()) };
        let out = SharedMut(dqkv.as_mut_ptr());
        if n > 0 {
            (0..d.b * d.heads).into_par_iter().for_each(|bh| {
                let (b, h) = (bh / d.heads, bh % d.heads);
                let (qo, oo) = (d.q_off(b, h), d.o_off(b, h));
                // This head's P (saved or recomputed), its dropped version Pd, and dP.
                let mut p_buf = Vec::new();
                let p: &[T] = match &self.probs {
                    Some(pr) => &pr.data()[bh * n * n..(bh + 1) * n * n],
                    None => {
                        p_buf = vec![T::ZERO; n * n];
                        let mut scores = vec![T::ZERO; n * n];
                        head_probs(qkv, &d, bh, self.scale, &mut scores, &mut p_buf);
                        &p_buf
                    }
                };
                let mask: Option<Vec<T>> = self.dropout.map(|(pdrop, seed)| {
                    let mut m = vec![T::ZERO; n * n];
                    head_mask(seed, bh, pdrop, &mut m);
                    m
                });
                let pd: Vec<T>;
                let pd_ref: &[T] = match &mask {
                    Some(m) => {
                        pd = p.iter().zip(m).map(|(&a, &s)| a * s).collect();
                        &pd
                    }
                    None => p,
                };
                let mut dp = vec![T::ZERO; n * n];
                // SAFETY: every pointer addresses the (b, h) blocks of buffers of the documented
                // shapes; tasks write disjoint (b, h) column blocks of dqkv.
                unsafe {
                    let v = qkv.as_ptr().add(qo + 2 * dd);
                    let dout = go.as_ptr().add(oo);
                    let dv = out.get().add(qo + 2 * dd);
                    // dPd = dO v^T  (N x Dh @ Dh x N)
                    gemm(n, dh, n, T::ONE, (dout, dd, 1), (v, 1, 3 * dd), (dp.as_mut_ptr(), n, 1));
                    // dv = Pd^T dO  (N x N @ N x Dh)
                    gemm(n, n, dh, T::ONE, (pd_ref.as_ptr(), 1, n), (dout, dd, 1), (dv, 3 * dd, 1));
                }
                if let Some(m) = &mask {
                    for (g, &s) in dp.iter_mut().zip(m) {
                        *g *= s;
                    }
                }
                // dS = P * (dP - rowsum(dP * P)), in place in dp.
                for (grow, prow) in dp.chunks_exact_mut(n).zip(p.chunks_exact(n)) {
                    let dot = grow.iter().zip(prow).fold(T::ZERO, |acc, (&g, &pp)| acc + g * pp);
                    for (g, &pp) in grow.iter_mut().zip(prow) {
                        *g = pp * (*g - dot);
                    }
                }
                // SAFETY: as above.
                unsafe {
                    let (q, k) = (qkv.as_ptr().add(qo), qkv.as_ptr().add(qo + dd));
                    let (dq, dk) = (out.get().add(qo), out.get().add(qo + dd));
                    // dq = s dS k ; dk = s dS^T q
                    gemm(n, n, dh, self.scale, (dp.as_ptr(), n, 1), (k, 3 * dd, 1), (dq, 3 * dd, 1));
                    gemm(n, n, dh, self.scale, (dp.as_ptr(), 1, n), (q, 3 * dd, 1), (dk, 3 * dd, 1));
                }
                drop(p_buf);
            });
        }
        vec![Some(Tensor::from_vec(dqkv, c.inputs[0].shape()))]
    }
}

impl<T: Float> Graph<T> {
    /// Multi-head self-attention from a fused projection `qkv: [B, N, 3D]` (`[q | k | v]`, each
    /// head-major) to the concatenated heads `[B, N, D]`; see the module documentation.
    /// Attention dropout with rate `dropout` applies in training mode, seeded from `rng`.
    pub fn attention(&mut self, qkv: Var, heads: usize, dropout: f64, rng: &mut Rng) -> Var {
        self.attention_ex(qkv, heads, dropout, rng, false).0
    }

    /// [`Graph::attention`] that also returns the attention probabilities `P: [B, heads, N, N]`
    /// (a constant on the tape, shared with the op, which then uses it instead of recomputing).
    pub fn attention_with_probs(&mut self, qkv: Var, heads: usize, dropout: f64, rng: &mut Rng) -> (Var, Var) {
        let (y, p) = self.attention_ex(qkv, heads, dropout, rng, true);
        (y, p.expect("probabilities were asked for"))
    }

    fn attention_ex(&mut self, qkv: Var, heads: usize, dropout: f64, rng: &mut Rng, keep: bool) -> (Var, Option<Var>) {
        let shape = self.shape(qkv).to_vec();
        assert!(
            shape.len() == 3 && heads > 0 && shape[2].is_multiple_of(3 * heads),
            "attention: qkv must be [B, N, 3*heads*Dh] with heads = {heads}, got {shape:?}"
        );
        assert!((0.0..1.0).contains(&dropout), "attention: dropout must be in [0, 1), got {dropout}");
        let d = Dims { b: shape[0], n: shape[1], heads, dh: shape[2] / (3 * heads) };
        let (n, dh, dd) = (d.n, d.dh, d.d());
        let scale = T::from_f64(1.0 / (dh as f64).sqrt());
        let drop = (dropout > 0.0 && self.is_training()).then(|| (dropout, rng.next_u64()));
        let x = self.value(qkv).data();
        let mut probs = keep.then(|| crate::pool::take::<T>(d.b * heads * n * n));
        // Every head's output block is written by its value product (beta = 0) when N > 0.
        let mut out = if n > 0 { crate::pool::take::<T>(d.b * n * dd) } else { crate::pool::zeros::<T>(d.b * n * dd) };
        let o = SharedMut(out.as_mut_ptr());
        let pr = probs.as_mut().map(|v| SharedMut(v.as_mut_ptr()));
        if n > 0 {
            (0..d.b * heads).into_par_iter().for_each(|bh| {
                let (b, h) = (bh / heads, bh % heads);
                let (qo, oo) = (d.q_off(b, h), d.o_off(b, h));
                let (mut scores, mut p) = (vec![T::ZERO; n * n], vec![T::ZERO; n * n]);
                head_probs(x, &d, bh, scale, &mut scores, &mut p);
                if let Some(pr) = pr {
                    // SAFETY: head bh owns elements bh*N*N..(bh+1)*N*N of the probabilities.
                    unsafe { std::ptr::copy_nonoverlapping(p.as_ptr(), pr.get().add(bh * n * n), n * n) };
                }
                if let Some((pdrop, seed)) = drop {
                    let mut m = vec![T::ZERO; n * n];
                    head_mask(seed, bh, pdrop, &mut m);
                    for (a, s) in p.iter_mut().zip(m) {
                        *a *= s;
                    }
                }
                // SAFETY: v is N x Dh with row stride 3D; tasks write disjoint column blocks of out.
                unsafe {
                    let v = x.as_ptr().add(qo + 2 * dd);
                    gemm(n, n, dh, T::ONE, (p.as_ptr(), n, 1), (v, 3 * dd, 1), (o.get().add(oo), dd, 1));
                }
            });
        }
        let probs = probs.map(|v| Tensor::from_vec(v, &[d.b, heads, n, n]));
        let y = Tensor::from_vec(out, &[d.b, n, dd]);
        let op = Attention { dims: d, scale, probs: probs.clone(), dropout: drop };
        let y = self.push(y, op, &[qkv]);
        let p = probs.map(|p| self.input(p));
        (y, p)
    }
}
