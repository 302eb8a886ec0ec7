//! Global-norm gradient clipping.

use autograd::Tensor;
use rayon::prelude::*;

/// Scales all gradients together so their joint Euclidean norm is at most `max_norm`:
///
/// ```text
///     n = sqrt(sum over all tensors and elements of g^2)
///     g <- g * max_norm / (n + 1e-6)      if n > max_norm
/// ```
///
/// Returns `n` (before clipping), which the training loop also uses to detect a non-finite
/// gradient. Scaling all tensors by one factor keeps the update's direction.
pub fn clip_grad_norm(grads: &mut [Tensor<f32>], max_norm: f64) -> f64 {
    #[cfg(feature = "cuda")]
    if grads.first().is_some_and(|g| g.is_cuda()) {
        // The same sum and scale on the device; only the norm comes back.
        return autograd::cuda::ops::clip_grad_norm(grads, max_norm);
    }
    let sq: f64 = grads.par_iter().map(|g| g.data().iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>()).sum();
    let norm = sq.sqrt();
    if norm.is_finite() && norm > max_norm {
        let s = (max_norm / (norm + 1e-6)) as f32;
        grads.par_iter_mut().for_each(|g| g.data_mut().iter_mut().for_each(|x| *x *= s));
    }
    norm
}
