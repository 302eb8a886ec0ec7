//! SGD with momentum, the paper's fine-tuning optimizer.

use autograd::{Device, Tensor};

use super::{load_buffers, move_buffers, zeros_like, Optimizer};
use crate::nn::ParamStore;

/// SGD with (optionally Nesterov) momentum and L2 weight decay, as `torch.optim.SGD`:
///
/// ```text
///     d <- g + wd * p                                   (weight decay as an L2 term)
///     b <- d                    on the first step,      b <- mu * b + d   after
///     p <- p - lr * b           (or p - lr * (d + mu * b) with Nesterov)
/// ```
#[derive(Clone, Debug)]
pub struct Sgd {
    /// `mu`, the momentum coefficient (0: plain SGD).
    pub momentum: f64,
    /// `wd`, the L2 coefficient, applied to parameters whose `weight_decay` flag is set.
    pub weight_decay: f64,
    /// Nesterov's variant: step along the look-ahead `d + mu * b` instead of `b`.
    pub nesterov: bool,
    /// Number of steps taken (0 means the next step initialises the buffers `b`).
    pub step: u64,
    buf: Vec<Tensor<f32>>,
}

impl Sgd {
    /// Zero momentum buffers for every parameter of `params`.
    pub fn new(params: &ParamStore<f32>, momentum: f64, weight_decay: f64, nesterov: bool) -> Self {
        Sgd { momentum, weight_decay, nesterov, step: 0, buf: zeros_like(params) }
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, params: &mut ParamStore<f32>, grads: &[Tensor<f32>], lr: f64) {
        assert_eq!(grads.len(), params.len(), "Sgd: {} gradients for {} parameters", grads.len(), params.len());
        let first = self.step == 0;
        self.step += 1;
        let (lr, mu) = (lr as f32, self.momentum as f32);
        for ((p, g), b) in params.iter_mut().zip(grads).zip(&mut self.buf) {
            let wd = if p.weight_decay { self.weight_decay as f32 } else { 0.0 };
            #[cfg(feature = "cuda")]
            if p.value.is_cuda() {
                // The loop below, one thread per element, on the device.
                autograd::cuda::ops::sgd(&mut p.value, g, b, (lr, mu, wd), first, self.nesterov);
                continue;
            }
            let (pv, bv) = (p.value.data_mut(), b.data_mut());
            for i in 0..pv.len() {
                let d = g.data()[i] + wd * pv[i];
                bv[i] = if first { d } else { mu * bv[i] + d };
                let update = if self.nesterov { d + mu * bv[i] } else { bv[i] };
                pv[i] -= lr * update;
            }
        }
    }

    fn state(&self, params: &ParamStore<f32>) -> (Vec<(String, Tensor<f32>)>, u64) {
        let out = params
            .iter()
            .zip(&self.buf)
            .map(|(p, b)| (format!("optim.momentum_buffer.{}", p.name), b.clone()))
            .collect();
        (out, self.step)
    }

    fn to(&mut self, device: Device) -> crate::Result<()> {
        move_buffers(&mut self.buf, device)
    }

    fn load_state(
        &mut self,
        params: &ParamStore<f32>,
        step: u64,
        lookup: &mut dyn FnMut(&str) -> Option<Tensor<f32>>,
    ) -> crate::Result<()> {
        self.buf = load_buffers("momentum_buffer", params, lookup)?;
        self.step = step;
        Ok(())
    }
}
