//! Inverted dropout (Srivastava et al., 2014): in training each element is kept with
//! probability `1 - p` and scaled by `1 / (1 - p)`, so every activation keeps its expected value
//! and evaluation needs no rescaling.
//!
//! ```text
//!     m_i ~ Bernoulli(1 - p),    s = 1 / (1 - p)
//!     y_i = m_i s x_i,           dx_i = m_i s g_i
//! ```
//!
//! The mask is saved, one byte per element: it cannot be recovered from `x` and `y` wherever
//! `x_i = 0`. In eval mode, or with `p = 0`, dropout is the identity and returns `x` itself.
//!
//! The mask is drawn from independent streams, one per fixed `CHUNK`-element piece, each seeded
//! from a single draw of the caller's generator. The pieces can then be filled in parallel, and
//! the mask depends on the caller's seed alone, not on the number of threads; a call advances
//! the caller's generator by exactly one draw, whatever the tensor's size.

use rand::RngCore;

use crate::dtype::Float;
use crate::graph::{BackwardCtx, Graph, Op, Var};
use crate::kernels::parallel::for_each_row;
use crate::memory::Saves;
use crate::rng::Rng;
use crate::tensor::Tensor;

/// Elements per independent random stream.
const CHUNK: usize = 4096;

/// `y = m * s * x`; `dx = m * s * g`.
struct Dropout<T> {
    /// Which elements were kept (empty when the mask lives on a GPU, in `keep_gpu`).
    keep: Vec<bool>,
    #[cfg(feature = "cuda")]
    keep_gpu: Option<crate::cuda::DeviceBuffer<u8>>,
    /// `1 / (1 - p)`.
    scale: T,
    p: f64,
}

/// The factor an element is multiplied by: `s` if kept, else 0. Multiplying (rather than
/// writing 0) lets a NaN in a dropped element still surface, as it does in PyTorch.
#[inline]
fn factor<T: Float>(keep: bool, scale: T) -> T {
    if keep {
        scale
    } else {
        T::ZERO
    }
}

impl<T: Float> Op<T> for Dropout<T> {
    fn name(&self) -> String {
        format!("dropout(p={})", self.p)
    }

    /// The mask, one byte per element.
    fn saves(&self) -> Saves {
        #[cfg(feature = "cuda")]
        if let Some(keep) = &self.keep_gpu {
            return Saves::keep(keep.len() * std::mem::size_of::<u8>());
        }
        Saves::keep(self.keep.len() * std::mem::size_of::<bool>())
    }

    fn backward(&self, c: &BackwardCtx<'_, T>) -> Vec<Option<Tensor<T>>> {
        #[cfg(feature = "cuda")]
        if let Some(keep) = &self.keep_gpu {
            return vec![Some(crate::cuda::ops::dropout_backward(c.grad, keep, self.p))];
        }
        let g = c.grad.data();
        let mut dx = crate::pool::take(g.len());
        for_each_row(&mut dx, CHUNK, |k, dx| {
            let at = k * CHUNK;
            for ((dx, &g), &keep) in dx.iter_mut().zip(&g[at..]).zip(&self.keep[at..]) {
                *dx = g * factor(keep, self.scale);
            }
        });
        vec![Some(Tensor::from_vec(dx, c.grad.shape()))]
    }
}

impl<T: Float> Graph<T> {
    /// Inverted dropout with drop probability `p` in `[0, 1)`, drawing the mask from `rng`. The
    /// identity (returning `x`, adding no node) in eval mode or when `p == 0`.
    pub fn dropout(&mut self, x: Var, p: f64, rng: &mut Rng) -> Var {
        assert!((0.0..1.0).contains(&p), "dropout: p must be in [0, 1), got {p}");
        if !self.is_training() || p == 0.0 {
            return x;
        }
        let seed = rng.next_u64();
        let scale = T::from_f64(1.0 / (1.0 - p));
        let xv = self.value(x);
        #[cfg(feature = "cuda")]
        if xv.is_cuda() {
            // The same streams as below, drawn on the device (dropout.cu).
            let (y, keep) = crate::cuda::ops::dropout(xv, p, seed);
            return self.push(y, Dropout { keep: Vec::new(), keep_gpu: Some(keep), scale, p }, &[x]);
        }
        let xd = xv.data();
        let mut keep = vec![false; xd.len()];
        for_each_row(&mut keep, CHUNK, |k, keep| {
            // Seeding through SplitMix64 decorrelates the streams of neighbouring pieces.
            let mut stream = Rng::seed(seed.wrapping_add(k as u64));
            keep.iter_mut().for_each(|keep| *keep = stream.uniform() >= p);
        });
        let mut y = crate::pool::take(xd.len());
        for_each_row(&mut y, CHUNK, |k, y| {
            let at = k * CHUNK;
            for ((y, &x), &keep) in y.iter_mut().zip(&xd[at..]).zip(&keep[at..]) {
                *y = x * factor(keep, scale);
            }
        });
        let y = Tensor::from_vec(y, xv.shape());
        let op = Dropout {
            keep,
            #[cfg(feature = "cuda")]
            keep_gpu: None,
            scale,
            p,
        };
        self.push(y, op, &[x])
    }
}
