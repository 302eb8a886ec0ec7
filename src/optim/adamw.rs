//! AdamW: Adam with decoupled weight decay (Loshchilov & Hutter, 2019).

use autograd::kernels::rows::{self, Rows};
use autograd::{Device, Tensor};

use super::{load_buffers, move_buffers, zeros_like, Optimizer};
use crate::nn::ParamStore;

/// AdamW as PyTorch's `torch.optim.AdamW` computes it, for step `t = 1, 2, ...`:
///
/// ```text
///     p <- p - lr * wd * p                      (decoupled decay; skipped where weight_decay is off)
///     m <- b1 m + (1 - b1) g
///     v <- b2 v + (1 - b2) g^2
///     p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
/// ```
///
/// The decay is "decoupled" because it shrinks the weights directly instead of being added to
/// the gradient, where Adam's per-coordinate scaling would distort it.
#[derive(Clone, Debug)]
pub struct AdamW {
    /// `b1`, the decay rate of the first moment `m` (the running mean of the gradient).
    pub beta1: f64,
    /// `b2`, the decay rate of the second moment `v` (the running mean of its square).
    pub beta2: f64,
    /// Added to the denominator so that coordinates with `v ~ 0` take bounded steps.
    pub eps: f64,
    /// `wd`, the decoupled decay rate, applied to parameters whose `weight_decay` flag is set.
    pub weight_decay: f64,
    /// Number of steps taken (`t` above after the next step is `step + 1`).
    pub step: u64,
    m: Vec<Tensor<f32>>,
    v: Vec<Tensor<f32>>,
}

impl AdamW {
    /// Zero moments for every parameter of `params`.
    pub fn new(params: &ParamStore<f32>, beta1: f64, beta2: f64, eps: f64, weight_decay: f64) -> Self {
        AdamW { beta1, beta2, eps, weight_decay, step: 0, m: zeros_like(params), v: zeros_like(params) }
    }
}

impl Optimizer for AdamW {
    fn step(&mut self, params: &mut ParamStore<f32>, grads: &[Tensor<f32>], lr: f64) {
        assert_eq!(grads.len(), params.len(), "AdamW: {} gradients for {} parameters", grads.len(), params.len());
        self.step += 1;
        let betas = (self.beta1, self.beta2);
        // Every derived constant (1 - beta, the bias corrections) is formed in f64, then rounded.
        let decayed = rows::AdamW::at_step(self.step, lr, betas, self.eps, self.weight_decay);
        let not_decayed = rows::AdamW::at_step(self.step, lr, betas, self.eps, 0.0);
        for (((p, g), m), v) in params.iter_mut().zip(grads).zip(&mut self.m).zip(&mut self.v) {
            let h = if p.weight_decay { &decayed } else { &not_decayed };
            #[cfg(feature = "cuda")]
            if p.value.is_cuda() {
                // The same arithmetic in one kernel launch per tensor, on the device.
                autograd::cuda::ops::adamw(&mut p.value, g, (m, v), h);
                continue;
            }
            // One SIMD pass per tensor (parallel over chunks for the large ones).
            Rows::active().adamw(p.value.data_mut(), g.data(), (m.data_mut(), v.data_mut()), h);
        }
    }

    fn state(&self, params: &ParamStore<f32>) -> (Vec<(String, Tensor<f32>)>, u64) {
        let mut out = Vec::with_capacity(2 * params.len());
        for ((p, m), v) in params.iter().zip(&self.m).zip(&self.v) {
            out.push((format!("optim.exp_avg.{}", p.name), m.clone()));
            out.push((format!("optim.exp_avg_sq.{}", p.name), v.clone()));
        }
        (out, self.step)
    }

    fn to(&mut self, device: Device) -> crate::Result<()> {
        move_buffers(&mut self.m, device)?;
        move_buffers(&mut self.v, device)
    }

    fn load_state(
        &mut self,
        params: &ParamStore<f32>,
        step: u64,
        lookup: &mut dyn FnMut(&str) -> Option<Tensor<f32>>,
    ) -> crate::Result<()> {
        self.m = load_buffers("exp_avg", params, lookup)?;
        self.v = load_buffers("exp_avg_sq", params, lookup)?;
        self.step = step;
        Ok(())
    }
}
