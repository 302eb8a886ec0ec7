//! Group normalisation (Wu & He, 2018): the normalisation of the hybrid's ResNet, which the
//! paper's BiT backbones use in place of batch norm (it does not depend on the batch).
//!
//! ```text
//! forward, per image b and group k of the G groups (C/G channels x S pixels, n = C S / G):
//!     mean = sum x / n,   var = sum (x - mean)^2 / n,   rstd = 1 / sqrt(var + eps)
//!     xhat = (x - mean) rstd,   y[b, c, s] = xhat[b, c, s] w_c + b_c
//! backward, with dxhat = g w_c:
//!     dx   = rstd (dxhat - mean_group(dxhat) - xhat mean_group(dxhat xhat))
//!     dw_c = sum_{b, s} g xhat,   db_c = sum_{b, s} g
//! ```
//!
//! Layer norm over one group's `n` values, in other words, with the affine part per channel.
//! The input is `[B, C, ...]` with any number of trailing (spatial) axes.

use rayon::prelude::*;

use crate::dtype::Float;
use crate::graph::{BackwardCtx, Graph, Op, Var};
use crate::memory::Saves;
use crate::tensor::Tensor;

/// The geometry: `b` images of `c` channels of `s` values each, in `groups` groups.
#[derive(Clone, Copy, Debug)]
struct Groups {
    b: usize,
    c: usize,
    s: usize,
    groups: usize,
}

impl Groups {
    /// Channels per group.
    fn cpg(&self) -> usize {
        self.c / self.groups
    }
    /// Values per group, `C S / G`.
    fn n(&self) -> usize {
        self.cpg() * self.s
    }
}

impl Groups {
    /// The geometry for the device kernels.
    #[cfg(feature = "cuda")]
    fn device(&self) -> crate::cuda::prims::resnet::Groups {
        crate::cuda::prims::resnet::Groups { b: self.b, c: self.c, s: self.s, groups: self.groups }
    }
}

/// Lanes of partial sums in [`lane_sums`]: independent accumulators that the compiler keeps in
/// vector registers, so a sum is not one long chain of dependent additions.
const LANES: usize = 16;

/// `[sum_i f(a_i, b_i)[0], ..., sum_i f(a_i, b_i)[K-1]]` over equally long `a` and `b`, in f64,
/// accumulated in [`LANES`] interleaved partial sums added at the end (a fixed order: the same
/// bits on every thread).
#[inline(always)]
fn lane_sums<T: Copy, const K: usize>(a: &[T], b: &[T], f: impl Fn(T, T) -> [f64; K]) -> [f64; K] {
    assert_eq!(a.len(), b.len());
    let mut acc = [[0.0f64; LANES]; K];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (ca, cb) in ca.zip(cb) {
        for lane in 0..LANES {
            let v = f(ca[lane], cb[lane]);
            for k in 0..K {
                acc[k][lane] += v[k];
            }
        }
    }
    let mut out = acc.map(|lanes| lanes.iter().sum::<f64>());
    for (&a, &b) in ra.iter().zip(rb) {
        let v = f(a, b);
        for k in 0..K {
            out[k] += v[k];
        }
    }
    out
}

/// `y = group_norm(x) * w + b`; see the module docs. Keeps each group's mean and rstd
/// (`[B groups]`, on the device of `x`).
struct GroupNorm<T: Float> {
    geo: Groups,
    mean: Tensor<T>,
    rstd: Tensor<T>,
}

impl<T: Float> Op<T> for GroupNorm<T> {
    fn name(&self) -> String {
        format!("group_norm(groups={})", self.geo.groups)
    }

    fn saves(&self) -> Saves {
        Saves::keep((self.mean.numel() + self.rstd.numel()) * std::mem::size_of::<T>())
    }

    fn backward(&self, c: &BackwardCtx<'_, T>) -> Vec<Option<Tensor<T>>> {
        #[cfg(feature = "cuda")]
        if c.grad.is_cuda() {
            return crate::cuda::ops::group_norm_backward(c, &self.mean, &self.rstd, &self.geo.device());
        }
        let Groups { b, c: ch, s, groups } = self.geo;
        let (means, rstds) = (self.mean.data(), self.rstd.data());
        let (cpg, n) = (self.geo.cpg(), self.geo.n());
        let (x, w, g) = (c.inputs[0].data(), c.inputs[1].data(), c.grad.data());
        let mut dx = crate::pool::zeros(x.len());
        // Per image: that image's share of dw (first C slots) and db (next C), summed over the
        // images in image order afterwards, so the result does not depend on the thread count.
        let mut partial = vec![0.0f64; b * 2 * ch];
        if n > 0 {
            dx.par_chunks_mut(ch * s).zip(partial.par_chunks_mut(2 * ch)).enumerate().for_each(|(bi, (dx, acc))| {
                let (dw, db) = acc.split_at_mut(ch);
                for k in 0..groups {
                    let r = bi * groups + k;
                    let (mean, rstd) = (means[r], rstds[r]);
                    // Per channel of the group, over its `s` contiguous values: sum g and sum
                    // g xhat, which are db_c and dw_c, and (times w_c) the group's sums of dxhat
                    // and dxhat xhat.
                    let (mut sum_dxhat, mut sum_dxhat_xhat) = (0.0f64, 0.0f64);
                    for cc in k * cpg..(k + 1) * cpg {
                        let at = bi * ch * s + cc * s;
                        let (x, g) = (&x[at..at + s], &g[at..at + s]);
                        let [sg, sgx] = lane_sums(g, x, |g, x| [g.to_f64(), (g * ((x - mean) * rstd)).to_f64()]);
                        let wc = w[cc].to_f64();
                        (db[cc], dw[cc]) = (db[cc] + sg, dw[cc] + sgx);
                        (sum_dxhat, sum_dxhat_xhat) = (sum_dxhat + wc * sg, sum_dxhat_xhat + wc * sgx);
                    }
                    let m1 = T::from_f64(sum_dxhat / n as f64);
                    let m2 = T::from_f64(sum_dxhat_xhat / n as f64);
                    for cc in k * cpg..(k + 1) * cpg {
                        let at = bi * ch * s + cc * s;
                        let (x, g, wc) = (&x[at..at + s], &g[at..at + s], w[cc]);
                        for ((dx, &x), &g) in dx[cc * s..(cc + 1) * s].iter_mut().zip(x).zip(g) {
                            *dx = rstd * (g * wc - m1 - (x - mean) * rstd * m2);
                        }
                    }
                }
            });
        }
        let total = |offset: usize| -> Tensor<T> {
            let v = (0..ch).map(|j| T::from_f64((0..b).map(|bi| partial[bi * 2 * ch + offset + j]).sum())).collect();
            Tensor::from_vec(v, &[ch])
        };
        vec![
            c.needs_grad[0].then(|| Tensor::from_vec(dx, c.inputs[0].shape())),
            c.needs_grad[1].then(|| total(0)),
            c.needs_grad[2].then(|| total(ch)),
        ]
    }
}

impl<T: Float> Graph<T> {
    /// Group normalisation of `x` `[B, C, ...]` in `groups` groups of channels, then per
    /// channel `* weight + bias` (both `[C]`). timm's ResNetV2 uses 32 groups and `eps = 1e-5`.
    pub fn group_norm(&mut self, x: Var, groups: usize, weight: Var, bias: Var, eps: f64) -> Var {
        let shape = self.shape(x).to_vec();
        assert!(shape.len() >= 2, "group_norm: input must be [B, C, ...], got shape {shape:?}");
        let (b, ch) = (shape[0], shape[1]);
        assert!(
            groups > 0 && ch % groups == 0,
            "group_norm: {ch} channels (shape {shape:?}) do not split into {groups} groups"
        );
        for (name, v) in [("weight", weight), ("bias", bias)] {
            assert_eq!(
                self.shape(v),
                &[ch],
                "group_norm: {name} must have shape [{ch}] to match input {shape:?}, got {:?}",
                self.shape(v)
            );
        }
        assert!(eps >= 0.0, "group_norm: eps must be >= 0, got {eps}");
        let geo = Groups { b, c: ch, s: shape[2..].iter().product(), groups };
        #[cfg(feature = "cuda")]
        if self.value(x).is_cuda() {
            let (xv, wv, bv) = (self.value(x), self.value(weight), self.value(bias));
            let (y, mean, rstd) = crate::cuda::ops::group_norm(xv, wv, bv, &geo.device(), eps);
            return self.push(y, GroupNorm { geo, mean, rstd }, &[x, weight, bias]);
        }
        let n = geo.n();
        let (xd, w, bd) = (self.value(x).data(), self.value(weight).data(), self.value(bias).data());
        let mut y = crate::pool::zeros(xd.len());
        let mut mean = vec![T::ZERO; b * groups];
        let mut rstd = vec![T::ZERO; b * groups];
        if n > 0 {
            y.par_chunks_mut(n).zip(mean.par_iter_mut().zip(rstd.par_iter_mut())).enumerate().for_each(
                |(r, (y, (mean, rstd)))| {
                    let x = &xd[r * n..(r + 1) * n];
                    // Two passes in f64, as layer norm: mean, then the spread around it.
                    let [sum] = lane_sums(x, x, |x, _| [x.to_f64()]);
                    let m = sum / n as f64;
                    let [sq] = lane_sums(x, x, |x, _| [(x.to_f64() - m).powi(2)]);
                    *mean = T::from_f64(m);
                    *rstd = T::from_f64(1.0 / (sq / n as f64 + eps).sqrt());
                    // Then channel by channel, each a contiguous run of `s` values with its own
                    // scale `rstd w_c`.
                    let first = (r % groups) * geo.cpg();
                    for (j, (y, x)) in y.chunks_exact_mut(geo.s).zip(x.chunks_exact(geo.s)).enumerate() {
                        let (scale, shift) = (*rstd * w[first + j], bd[first + j]);
                        for (y, &x) in y.iter_mut().zip(x) {
                            *y = (x - *mean) * scale + shift;
                        }
                    }
                },
            );
        }
        let (mean, rstd) = (Tensor::from_vec(mean, &[b * groups]), Tensor::from_vec(rstd, &[b * groups]));
        self.push(Tensor::from_vec(y, &shape), GroupNorm { geo, mean, rstd }, &[x, weight, bias])
    }
}
