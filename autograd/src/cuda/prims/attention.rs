//! Multi-head attention from the fused qkv projection (ops/attention.rs), as cuBLAS batched
//! products over the batch (one call per head and product) and the softmax and dropout kernels.
//!
//! `qkv: [B, N, 3D]` holds `[q | k | v]`, each head-major: head h's q is the `N x Dh` block at
//! column `h Dh` with row stride `3D`, k is `D` further, v `2D`. The scores and probabilities
//! `[B, H, N, N]` live in one buffer for all heads (the CPU walks heads one at a time to stay in
//! cache; a GPU wants the whole batch in flight). Backward recomputes P from q and k unless the
//! forward kept it, and regenerates the dropout scales from the seed.

use super::linear::{gemm, View};
use super::rows::{softmax_backward_into, softmax_into};
use super::{elementwise_grid, int, name, ptr};
use crate::cuda::blas::Batch;
use crate::cuda::driver::Arg;
use crate::cuda::gpu::DeviceBuffer;
use crate::dtype::Float;

/// The geometry of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct Heads {
    /// Batch size `B`.
    pub b: usize,
    /// Tokens `N`.
    pub n: usize,
    /// Heads `H`.
    pub heads: usize,
    /// Head width `Dh`.
    pub dh: usize,
}

impl Heads {
    fn d(&self) -> usize {
        self.heads * self.dh
    }

    /// Head h's q (`which = 0`), k (1) or v (2): `N x Dh`, batch stride `N 3D`.
    fn qkv(&self, which: usize, h: usize) -> View {
        let d = self.d();
        View { offset: which * d + h * self.dh, rows: self.n, cols: self.dh, rs: (3 * d) as i64, cs: 1 }
    }

    /// Head h's block of the output (or its gradient) `[B, N, D]`: `N x Dh`, batch stride `N D`.
    fn out(&self, h: usize) -> View {
        View { offset: h * self.dh, rows: self.n, cols: self.dh, rs: self.d() as i64, cs: 1 }
    }

    /// Head h's `N x N` scores in `[B, H, N, N]`, batch stride `H N N`.
    fn scores(&self, h: usize) -> View {
        View { offset: h * self.n * self.n, rows: self.n, cols: self.n, rs: self.n as i64, cs: 1 }
    }

    /// Batch strides for (A, B, C) given which operand lives in which buffer.
    fn batch(&self, a: usize, b: usize, c: usize) -> Batch {
        Batch { count: self.b, a: a as i64, b: b as i64, c: c as i64 }
    }

    fn stride_qkv(&self) -> usize {
        self.n * 3 * self.d()
    }
    fn stride_out(&self) -> usize {
        self.n * self.d()
    }
    fn stride_scores(&self) -> usize {
        self.heads * self.n * self.n
    }
}

/// `P = softmax(scale q k^T)` for every (b, h): `[B, H, N, N]`.
fn probabilities<T: Float>(qkv: &DeviceBuffer<T>, d: &Heads, scale: f64) -> DeviceBuffer<T> {
    let p = qkv.gpu().alloc::<T>(d.b * d.heads * d.n * d.n);
    for h in 0..d.heads {
        // S_h = scale q_h k_h^T   (N x Dh @ Dh x N)
        // SAFETY: the views stay inside qkv [B, N, 3D] and p [B, H, N, N]; distinct buffers.
        unsafe {
            gemm(
                scale,
                (qkv, d.qkv(0, h)),
                (qkv, d.qkv(1, h).t()),
                0.0,
                (&p, d.scores(h)),
                d.batch(d.stride_qkv(), d.stride_qkv(), d.stride_scores()),
            )
        };
    }
    softmax_into(&p, &p, d.n, false);
    p
}

/// Multiplies every head's N x N block by its dropout scales (regenerated from `seed`).
fn apply_dropout<T: Float>(v: &DeviceBuffer<T>, d: &Heads, p: f64, seed: u64) {
    let heads_total = d.b * d.heads;
    let args = [ptr(v), int(heads_total), int(d.n * d.n), Arg::U64(seed), Arg::F64(p)];
    // SAFETY: v holds heads_total N x N blocks.
    unsafe { v.gpu().launch(&name::<T>("attention_dropout"), elementwise_grid(heads_total), &args) };
}

/// Attention forward: the heads' outputs `[B, N, D]` and, when `keep`, the probabilities
/// `[B, H, N, N]` (before dropout). `dropout` is `(p, seed)` when active.
pub fn attention_forward<T: Float>(
    qkv: &DeviceBuffer<T>,
    d: Heads,
    scale: f64,
    dropout: Option<(f64, u64)>,
    keep: bool,
) -> (DeviceBuffer<T>, Option<DeviceBuffer<T>>) {
    let gpu = qkv.gpu();
    let out = gpu.alloc::<T>(d.b * d.n * d.d());
    if d.b * d.n * d.d() == 0 {
        return (out, keep.then(|| gpu.alloc::<T>(0)));
    }
    let p = probabilities(qkv, &d, scale);
    let kept = keep.then(|| p.duplicate());
    if let Some((rate, seed)) = dropout {
        apply_dropout(&p, &d, rate, seed);
    }
    for h in 0..d.heads {
        // O_h = Pd_h v_h   (N x N @ N x Dh), into columns h Dh.. of out.
        // SAFETY: views inside p, qkv and out; out is distinct from both.
        unsafe {
            gemm(
                1.0,
                (&p, d.scores(h)),
                (qkv, d.qkv(2, h)),
                0.0,
                (&out, d.out(h)),
                d.batch(d.stride_scores(), d.stride_qkv(), d.stride_out()),
            )
        };
    }
    (out, kept)
}

/// Attention backward: `dqkv` from `g = dL/dout` `[B, N, D]`; `probs` is the forward's kept
/// probabilities, if any (otherwise they are recomputed).
pub fn attention_backward<T: Float>(
    qkv: &DeviceBuffer<T>,
    g: &DeviceBuffer<T>,
    d: Heads,
    scale: f64,
    dropout: Option<(f64, u64)>,
    probs: Option<&DeviceBuffer<T>>,
) -> DeviceBuffer<T> {
    let gpu = qkv.gpu();
    let dqkv = gpu.alloc::<T>(qkv.len());
    if d.n == 0 || qkv.is_empty() {
        return super::elementwise::fill(gpu, qkv.len(), T::ZERO);
    }
    let recomputed;
    let p: &DeviceBuffer<T> = match probs {
        Some(p) => p,
        None => {
            recomputed = probabilities(qkv, &d, scale);
            &recomputed
        }
    };
    // Pd: P with dropout applied (what the value product used).
    let dropped = dropout.map(|(rate, seed)| {
        let pd = p.duplicate();
        apply_dropout(&pd, &d, rate, seed);
        pd
    });
    let pd = dropped.as_ref().unwrap_or(p);
    let dp = gpu.alloc::<T>(p.len());
    let (sq, so, ss) = (d.stride_qkv(), d.stride_out(), d.stride_scores());
    for h in 0..d.heads {
        // SAFETY: for all the products: views inside their buffers (shapes above); each output buffer
        // (dp, dqkv) is distinct from its operands.
        unsafe {
            // dPd = dO v^T   (N x Dh @ Dh x N)
            gemm(1.0, (g, d.out(h)), (qkv, d.qkv(2, h).t()), 0.0, (&dp, d.scores(h)), d.batch(so, sq, ss));
            // dv = Pd^T dO   (N x N @ N x Dh)
            gemm(1.0, (pd, d.scores(h).t()), (g, d.out(h)), 0.0, (&dqkv, d.qkv(2, h)), d.batch(ss, so, sq));
        }
    }
    if let Some((rate, seed)) = dropout {
        // dP = dPd * mask / (1 - p): the same scales again.
        apply_dropout(&dp, &d, rate, seed);
    }
    // dS = P (dP - rowsum(dP P)), in place.
    softmax_backward_into(p, &dp, &dp, d.n, false);
    for h in 0..d.heads {
        // SAFETY: as above.
        unsafe {
            // dq = scale dS k    (N x N @ N x Dh)
            gemm(scale, (&dp, d.scores(h)), (qkv, d.qkv(1, h)), 0.0, (&dqkv, d.qkv(0, h)), d.batch(ss, sq, sq));
            // dk = scale dS^T q  (N x N @ N x Dh)
            gemm(scale, (&dp, d.scores(h).t()), (qkv, d.qkv(0, h)), 0.0, (&dqkv, d.qkv(1, h)), d.batch(ss, sq, sq));
        }
    }
    dqkv
}
