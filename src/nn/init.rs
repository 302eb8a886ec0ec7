//! Initialisation schemes.
//!
//! A ViT trained from scratch is sensitive to its initial scale: the residual stream adds twelve
//! blocks' outputs, so Linear weights start small (std 0.02) and biases at zero. Two schemes are
//! offered, both seeded:
//!
//! - [`Init::Timm`] (default) is timm's `init_weights_vit_timm`: trunc-normal(0.02) Linear weights
//!   (bounds ±2, absolute, as timm's `trunc_normal_`), zero biases, trunc-normal(0.02)
//!   `pos_embed`, normal(1e-6) `cls_token`; the patch-embedding convolution keeps PyTorch's
//!   default `U(±1/sqrt(fan_in))`.
//! - [`Init::Jax`] follows the paper's Flax code: Xavier-uniform Linear weights, normal(1e-6) MLP
//!   biases, LeCun-normal patch embedding, zero `cls_token`, and a zero-initialised head (so the
//!   first logits are all zero and fine-tuning starts from the pretrained features unchanged).

use autograd::{Float, Rng, Tensor};

/// Which initialisation scheme a model is built with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Init {
    /// timm's `init_weights_vit_timm` (see the module notes).
    #[default]
    Timm,
    /// The paper's Flax code (see the module notes).
    Jax,
}

impl Init {
    /// A Linear layer's `(weight [out, in], bias [out])`.
    pub fn linear<T: Float>(self, fan_in: usize, fan_out: usize, rng: &mut Rng) -> (Tensor<T>, Tensor<T>) {
        let w = match self {
            Init::Timm => Tensor::trunc_normal(&[fan_out, fan_in], 0.0, 0.02, -2.0, 2.0, rng),
            Init::Jax => {
                let a = (6.0 / (fan_in + fan_out) as f64).sqrt();
                Tensor::uniform(&[fan_out, fan_in], -a, a, rng)
            }
        };
        (w, Tensor::zeros(&[fan_out]))
    }

    /// An MLP layer's bias: tiny noise in the Flax code, zero in timm.
    pub fn mlp_bias<T: Float>(self, n: usize, rng: &mut Rng) -> Tensor<T> {
        match self {
            Init::Timm => Tensor::zeros(&[n]),
            Init::Jax => Tensor::randn(&[n], 0.0, 1e-6, rng),
        }
    }

    /// The patch embedding's `(weight [D, C, P, P], bias [D])`.
    pub fn patch_embed<T: Float>(
        self,
        dim: usize,
        chans: usize,
        patch: usize,
        rng: &mut Rng,
    ) -> (Tensor<T>, Tensor<T>) {
        let fan_in = chans * patch * patch;
        let shape = [dim, chans, patch, patch];
        match self {
            Init::Timm => {
                let a = 1.0 / (fan_in as f64).sqrt();
                (Tensor::uniform(&shape, -a, a, rng), Tensor::uniform(&[dim], -a, a, rng))
            }
            Init::Jax => {
                let std = (1.0 / fan_in as f64).sqrt();
                (Tensor::trunc_normal(&shape, 0.0, std, -2.0 * std, 2.0 * std, rng), Tensor::zeros(&[dim]))
            }
        }
    }

    /// The classifier head's `(weight [classes, D], bias [classes])`.
    pub fn head<T: Float>(self, dim: usize, classes: usize, rng: &mut Rng) -> (Tensor<T>, Tensor<T>) {
        match self {
            Init::Timm => self.linear(dim, classes, rng),
            Init::Jax => (Tensor::zeros(&[classes, dim]), Tensor::zeros(&[classes])),
        }
    }

    /// `pos_embed [1, tokens, D]`.
    pub fn pos_embed<T: Float>(self, tokens: usize, dim: usize, rng: &mut Rng) -> Tensor<T> {
        Tensor::trunc_normal(&[1, tokens, dim], 0.0, 0.02, -2.0, 2.0, rng)
    }

    /// `cls_token [1, 1, D]`.
    pub fn cls_token<T: Float>(self, dim: usize, rng: &mut Rng) -> Tensor<T> {
        match self {
            Init::Timm => Tensor::randn(&[1, 1, dim], 0.0, 1e-6, rng),
            Init::Jax => Tensor::zeros(&[1, 1, dim]),
        }
    }
}
