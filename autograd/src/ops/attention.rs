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
//! Each head's slices are short runs inside long rows (256 bytes every 2304 for ViT-Ti), which
//! the hardware prefetchers do not follow, so a head starts fetching the operands of its later
//! products (v; in backward dO and v) while its first product and softmax run, and the next
//! head's q and k once its own are consumed.
//!
//! Nothing `N x N` is kept for backward: it recomputes each head's `P` from `q` and `k` (one
//! small product and a softmax, in cache) where it needs it, and regenerates the dropout mask
//! from a per-head seed. The probabilities are kept only when asked for
//! ([`Graph::attention_with_probs`], for attention maps).

use rand::RngCore;
use rayon::prelude::*;

use super::softmax::{softmax_rows, softmax_rows_backward};
use crate::dtype::Float;
use crate::graph::{BackwardCtx, Graph, Op, Var};
use crate::kernels::gemm::gemm;
use crate::kernels::send_ptr::SendPtr;
use crate::kernels::{Layout, MatMut, MatRef};
use crate::memory::Saves;
use crate::pool::Scratch;
use crate::rng::Rng;
use crate::tensor::Tensor;

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
    /// Head `bh`'s `q` (`part` 0), `k` (1) or `v` (2): `N x Dh` inside `[B, N, 3D]`.
    fn qkv(&self, bh: usize, part: usize) -> Layout {
        let qo = self.q_off(bh / self.heads, bh % self.heads);
        Layout::strided(self.n, self.dh, 3 * self.d() as isize, 1).at(qo + part * self.d())
    }
    /// Head `bh`'s block of the output `[B, N, D]`: `N x Dh`.
    fn out(&self, bh: usize) -> Layout {
        let oo = self.o_off(bh / self.heads, bh % self.heads);
        Layout::strided(self.n, self.dh, self.d() as isize, 1).at(oo)
    }
    /// One head's `N x N` scores or probabilities.
    fn square(&self) -> Layout {
        Layout::row_major(self.n, self.n)
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
    let (q, k) = (MatRef::new(x, d.qkv(bh, 0)), MatRef::new(x, d.qkv(bh, 1)));
    gemm(scale, q, k.t(), T::ZERO, MatMut::new(scores, d.square()));
    softmax_rows(scores, p, d.n);
}

/// Starts fetching the q and k of head `bh + 1` (the first product of the next head, most often
/// on this same thread).
fn prefetch_next<T: Float>(x: &[T], d: &Dims, bh: usize) {
    if bh + 1 < d.b * d.heads {
        MatRef::new(x, d.qkv(bh + 1, 0)).prefetch();
        MatRef::new(x, d.qkv(bh + 1, 1)).prefetch();
    }
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

    /// Nothing `N x N` unless the probabilities were asked for.
    fn saves(&self) -> Saves {
        Saves::keep(self.probs.as_ref().map_or(0, |p| p.numel() * std::mem::size_of::<T>()))
    }

    fn backward(&self, c: &BackwardCtx<'_, T>) -> Vec<Option<Tensor<T>>> {
        let d = self.dims;
        let n = d.n;
        #[cfg(feature = "cuda")]
        if c.grad.is_cuda() {
            let heads = crate::cuda::prims::attention::Heads { b: d.b, n, heads: d.heads, dh: d.dh };
            let dx =
                crate::cuda::ops::attention_backward(c, heads, self.scale.to_f64(), self.dropout, self.probs.as_ref());
            return vec![Some(dx)];
        }
        let qkv = c.inputs[0].data();
        let go = c.grad.data();
        // Every (b, h) block of dq, dk and dv is written by a GEMM (beta = 0) when N > 0.
        let mut dqkv = if n > 0 { crate::pool::take::<T>(qkv.len()) } else { crate::pool::zeros::<T>(qkv.len()) };
        let out = SendPtr::new(dqkv.as_mut_ptr());
        // Head `bh`'s `part` block of dqkv (0: dq, 1: dk, 2: dv).
        let dqkv_block = |bh: usize, part: usize| {
            // SAFETY: the block lies inside dqkv (same layout as qkv), and every (head, part)
            // block is written by exactly one task: the blocks are disjoint column ranges.
            unsafe { MatMut::from_raw(out.get(), d.qkv(bh, part)) }
        };
        if n > 0 {
            (0..d.b * d.heads).into_par_iter().for_each(|bh| {
                // dO and v are read after P is recomputed: start fetching them now.
                MatRef::new(go, d.out(bh)).prefetch();
                MatRef::new(qkv, d.qkv(bh, 2)).prefetch();
                // This head's P (saved or recomputed), its dropped version Pd, and dP.
                let mut p_buf: Option<Scratch<T>> = None;
                let p: &[T] = match &self.probs {
                    Some(pr) => &pr.data()[bh * n * n..(bh + 1) * n * n],
                    None => {
                        let p_buf = p_buf.insert(Scratch::take(n * n));
                        let mut scores = Scratch::take(n * n);
                        head_probs(qkv, &d, bh, self.scale, &mut scores, p_buf);
                        prefetch_next(qkv, &d, bh);
                        p_buf
                    }
                };
                let mask: Option<Scratch<T>> = self.dropout.map(|(pdrop, seed)| {
                    let mut m = Scratch::take(n * n);
                    head_mask(seed, bh, pdrop, &mut m);
                    m
                });
                let mut pd: Option<Scratch<T>> = None;
                let pd_ref: &[T] = match &mask {
                    Some(m) => {
                        let pd = pd.insert(Scratch::take(n * n));
                        for ((o, &a), &s) in pd.iter_mut().zip(p).zip(m.iter()) {
                            *o = a * s;
                        }
                        pd
                    }
                    None => p,
                };
                let (q, k, v) =
                    (MatRef::new(qkv, d.qkv(bh, 0)), MatRef::new(qkv, d.qkv(bh, 1)), MatRef::new(qkv, d.qkv(bh, 2)));
                let dout = MatRef::new(go, d.out(bh));
                let mut dp = Scratch::take(n * n);
                // dPd = dO v^T  (N x Dh @ Dh x N);  dv = Pd^T dO  (N x N @ N x Dh)
                gemm(T::ONE, dout, v.t(), T::ZERO, MatMut::new(&mut dp, d.square()));
                gemm(T::ONE, MatRef::new(pd_ref, d.square()).t(), dout, T::ZERO, dqkv_block(bh, 2));
                if let Some(m) = &mask {
                    for (g, &s) in dp.iter_mut().zip(m.iter()) {
                        *g *= s;
                    }
                }
                // dS = P * (dP - rowsum(dP * P)): the softmax backward.
                let mut ds = Scratch::take(n * n);
                softmax_rows_backward(p, &dp, &mut ds, n);
                let ds = MatRef::new(&ds, d.square());
                // dq = s dS k ; dk = s dS^T q
                gemm(self.scale, ds, k, T::ZERO, dqkv_block(bh, 0));
                gemm(self.scale, ds.t(), q, T::ZERO, dqkv_block(bh, 1));
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
        #[cfg(feature = "cuda")]
        if self.value(qkv).is_cuda() {
            let heads_geo = crate::cuda::prims::attention::Heads { b: d.b, n, heads, dh };
            let (y, probs) = crate::cuda::ops::attention(self.value(qkv), heads_geo, scale.to_f64(), drop, keep);
            let op = Attention { dims: d, scale, probs: probs.clone(), dropout: drop };
            let y = self.push(y, op, &[qkv]);
            let p = probs.map(|p| self.input(p));
            return (y, p);
        }
        let x = self.value(qkv).data();
        let mut probs = keep.then(|| crate::pool::take::<T>(d.b * heads * n * n));
        // Every head's output block is written by its value product (beta = 0) when N > 0.
        let mut out = if n > 0 { crate::pool::take::<T>(d.b * n * dd) } else { crate::pool::zeros::<T>(d.b * n * dd) };
        let o = SendPtr::new(out.as_mut_ptr());
        let pr = probs.as_mut().map(|v| SendPtr::new(v.as_mut_ptr()));
        if n > 0 {
            (0..d.b * heads).into_par_iter().for_each(|bh| {
                // v is read after the scores and the softmax: start fetching it now.
                MatRef::new(x, d.qkv(bh, 2)).prefetch();
                let (mut scores, mut p) = (Scratch::take(n * n), Scratch::take(n * n));
                head_probs(x, &d, bh, scale, &mut scores, &mut p);
                prefetch_next(x, &d, bh);
                if let Some(pr) = pr {
                    // SAFETY: head bh owns elements bh*N*N..(bh+1)*N*N of the probabilities.
                    unsafe { std::ptr::copy_nonoverlapping(p.as_ptr(), pr.at(bh * n * n), n * n) };
                }
                if let Some((pdrop, seed)) = drop {
                    let mut m = Scratch::take(n * n);
                    head_mask(seed, bh, pdrop, &mut m);
                    for (a, &s) in p.iter_mut().zip(m.iter()) {
                        *a *= s;
                    }
                }
                // SAFETY: head bh's N x Dh block of out lies inside it, and tasks write
                // disjoint column blocks.
                let o_bh = unsafe { MatMut::from_raw(o.get(), d.out(bh)) };
                gemm(T::ONE, MatRef::new(&p, d.square()), MatRef::new(x, d.qkv(bh, 2)), T::ZERO, o_bh);
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
