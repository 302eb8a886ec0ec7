//! Cross-entropy of logits against integer labels, fused with log-softmax, with label smoothing
//! as in PyTorch (`F.cross_entropy(..., label_smoothing=eps)`).
//!
//! ```text
//! forward, for logits x [B, C], labels l_b and smoothing eps:
//!     logp_bj = (x_bj - m_b) - ln sum_k exp(x_bk - m_b)        m_b = max_k x_bk
//!     t_bj    = (1 - eps) [j = l_b] + eps / C                   the smoothed target
//!     loss_b  = -sum_j t_bj logp_bj = -(1 - eps) logp_b,l_b - (eps / C) sum_j logp_bj
//!     L       = sum_b loss_b / B
//! backward (g = dL_out/dL, a scalar):
//!     dx_bj   = g (p_bj - t_bj) / B,         p = softmax(x)
//! ```
//!
//! Fused because the composed gradient (through log-softmax, the gather and the mean) collapses
//! to that one subtraction, and the only thing it needs is `p`, which the op saves.

use rayon::prelude::*;

use crate::dtype::Float;
use crate::graph::{BackwardCtx, Graph, Op, Var};
use crate::kernels::parallel::{for_each_row, rows_per_task};
use crate::memory::Saves;
use crate::tensor::Tensor;

/// `L = mean_b cross_entropy(x_b, l_b)`; see the module documentation.
struct CrossEntropy<T: Float> {
    /// softmax(x), `[B, C]` row-major (empty when it lives on a GPU, in `gpu`).
    probs: Vec<T>,
    /// softmax(x) and the labels on the device, for a GPU backward.
    #[cfg(feature = "cuda")]
    gpu: Option<(Tensor<T>, crate::cuda::DeviceBuffer<i64>)>,
    labels: Vec<usize>,
    smoothing: f64,
}

impl<T: Float> Op<T> for CrossEntropy<T> {
    fn name(&self) -> String {
        format!("cross_entropy(smoothing={})", self.smoothing)
    }

    fn saves(&self) -> Saves {
        #[cfg(feature = "cuda")]
        if let Some((probs, labels)) = &self.gpu {
            return Saves::keep(probs.numel() * std::mem::size_of::<T>() + labels.len() * std::mem::size_of::<i64>());
        }
        Saves::keep(self.probs.len() * std::mem::size_of::<T>() + self.labels.len() * std::mem::size_of::<usize>())
    }

    fn backward(&self, c: &BackwardCtx<'_, T>) -> Vec<Option<Tensor<T>>> {
        let shape = c.inputs[0].shape();
        let (b, classes) = (shape[0], shape[1]);
        #[cfg(feature = "cuda")]
        if let Some((probs, labels)) = &self.gpu {
            return vec![Some(crate::cuda::ops::cross_entropy_backward(probs, labels, c.grad, self.smoothing))];
        }
        let scale = c.grad.item() / T::from_usize(b);
        let off_target = T::from_f64(self.smoothing / classes as f64);
        let on_target = T::from_f64(1.0 - self.smoothing);
        let mut dx = crate::pool::zeros(b * classes);
        for_each_row(&mut dx, classes, |r, dx| {
            let p = &self.probs[r * classes..(r + 1) * classes];
            for (dx, &p) in dx.iter_mut().zip(p) {
                *dx = (p - off_target) * scale;
            }
            dx[self.labels[r]] -= on_target * scale;
        });
        vec![Some(Tensor::from_vec(dx, shape))]
    }
}

impl<T: Float> Graph<T> {
    /// Mean cross-entropy of `logits` `[B, C]` against `labels` (one class index per row), as a
    /// shape-`[]` scalar. `label_smoothing` in `[0, 1]` mixes the one-hot target with the
    /// uniform distribution: `target = (1 - eps) onehot + eps / C`.
    pub fn cross_entropy(&mut self, logits: Var, labels: &[usize], label_smoothing: f64) -> Var {
        let shape = self.shape(logits).to_vec();
        assert_eq!(shape.len(), 2, "cross_entropy: logits must be [B, C], got shape {shape:?}");
        let (b, classes) = (shape[0], shape[1]);
        assert_eq!(labels.len(), b, "cross_entropy: {} labels for logits of shape {shape:?}", labels.len());
        assert!(b > 0, "cross_entropy: empty batch (logits of shape {shape:?}): the mean over no rows is undefined");
        if let Some((row, &l)) = labels.iter().enumerate().find(|&(_, &l)| l >= classes) {
            panic!("cross_entropy: label {l} at row {row} is out of range for logits of shape {shape:?}");
        }
        assert!(
            (0.0..=1.0).contains(&label_smoothing),
            "cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}"
        );
        let eps = label_smoothing;
        #[cfg(feature = "cuda")]
        if self.value(logits).is_cuda() {
            let (loss, probs, labels_gpu) = crate::cuda::ops::cross_entropy(self.value(logits), labels, eps);
            let op =
                CrossEntropy { probs: Vec::new(), gpu: Some((probs, labels_gpu)), labels: Vec::new(), smoothing: eps };
            return self.push(loss, op, &[logits]);
        }
        let x = self.value(logits).data();
        let mut probs = crate::pool::zeros(b * classes);
        let mut losses = vec![0.0f64; b];
        probs
            .par_chunks_mut(classes)
            .zip(losses.par_iter_mut())
            .with_min_len(rows_per_task(classes, 1))
            .enumerate()
            .for_each(|(r, (p, loss))| {
                let x = &x[r * classes..(r + 1) * classes];
                let m = x.iter().fold(x[0], |m, &v| m.max(v));
                // p first holds exp(x - m); the loss is then formed from logp = (x - m) - ln(sum),
                // which stays finite where p itself underflows to 0.
                let mut sum = 0.0f64;
                for (p, &x) in p.iter_mut().zip(x) {
                    *p = (x - m).exp();
                    sum += p.to_f64();
                }
                let log_sum = sum.ln();
                let inv_sum = T::from_f64(1.0 / sum);
                let mut sum_logp = 0.0f64;
                for (p, &x) in p.iter_mut().zip(x) {
                    *p *= inv_sum;
                    sum_logp += (x - m).to_f64() - log_sum;
                }
                let logp_label = (x[labels[r]] - m).to_f64() - log_sum;
                // Without smoothing the uniform term is skipped, not multiplied by 0: a logit of
                // -inf (a masked class) makes sum_logp -inf, and 0 * -inf is NaN.
                let uniform_term = if eps > 0.0 { eps / classes as f64 * sum_logp } else { 0.0 };
                *loss = -(1.0 - eps) * logp_label - uniform_term;
            });
        // Summed in row order, so the loss is the same on any number of threads.
        let mean = losses.iter().sum::<f64>() / b as f64;
        let op = CrossEntropy {
            probs,
            #[cfg(feature = "cuda")]
            gpu: None,
            labels: labels.to_vec(),
            smoothing: eps,
        };
        self.push(Tensor::scalar(T::from_f64(mean)), op, &[logits])
    }
}
