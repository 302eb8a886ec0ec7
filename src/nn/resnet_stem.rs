//! The ResNet stem of the ViT-CNN hybrid (the paper's section 3.1, "Hybrid Architecture"): "the
//! input sequence can be formed from feature maps of a CNN ... the patch embedding projection E
//! is applied to patches extracted from a CNN feature map".
//!
//! ```text
//!     x [B, C, H, W]
//!     h = maxpool_3x3/2(relu(GN_32(StdConv_7x7/2(x))))      [B, width, H/4, W/4]   (SAME padding)
//!     StdConv(x) = conv(x, (W - mean(W)) / sqrt(var(W) + eps))   mean, var per output channel
//! ```
//!
//! This is the root of BiT's ResNet-v2 (`conv_root`, `gn_root` in the official code), which is
//! the whole backbone of R+ViT-Ti/16 (`resnet.num_layers = ()`) and timm's `vit_tiny_r_s16_p8`:
//! the patch embedding then cuts the `H/4 x W/4` map into patches of `patch_size` feature pixels.
//! Padding is TensorFlow's SAME (the odd pixel at the bottom and right), as both use; max-pool
//! pads with zeros, which after the ReLU is the same as padding with `-inf`. Weight
//! standardisation is group norm with one group per output channel on the weight viewed as
//! `[1, O, C kh kw]` (no affine), so its gradient is group norm's.

use autograd::ops::conv2d::{same_padding, Padding};
use autograd::{Float, Graph, Rng, Tensor, Var};

use super::module::{Ctx, Module};
use super::params::{ParamId, ParamStore, ParamVars};

/// Group norm's number of groups in BiT's ResNet-v2.
pub const GN_GROUPS: usize = 32;
/// Group norm's epsilon (Flax's and PyTorch's default).
pub const GN_EPS: f64 = 1e-5;
/// Weight standardisation's epsilon (timm's `StdConv2dSame` in its hybrids).
pub const STD_CONV_EPS: f64 = 1e-8;

/// The hybrid's CNN: its width (output channels of the root convolution; 64 in BiT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResNetStemConfig {
    /// Output channels of the root convolution, the feature map's `C`.
    pub width: usize,
}

impl ResNetStemConfig {
    /// BiT's root: 64 channels.
    pub fn bit() -> Self {
        ResNetStemConfig { width: 64 }
    }

    /// Side of the feature map for a `size x size` image: SAME stride 2 twice, `ceil(ceil(s/2)/2)`.
    pub fn feature_size(&self, size: usize) -> usize {
        size.div_ceil(2).div_ceil(2)
    }

    /// Parameters: the convolution (no bias) and group norm's scale and shift.
    pub fn num_params(&self, in_chans: usize) -> usize {
        self.width * in_chans * 7 * 7 + 2 * self.width
    }

    /// Groups of the group norm: BiT's 32, or fewer when the width is not a multiple of 32.
    pub fn groups(&self) -> usize {
        (1..=GN_GROUPS.min(self.width)).rev().find(|g| self.width.is_multiple_of(*g)).unwrap_or(1)
    }
}

/// TensorFlow's SAME padding of a `k x k`, stride-`s` window over `[B, C, H, W]`.
fn same(shape: &[usize], k: usize, s: usize) -> Padding {
    let ((top, bottom), (left, right)) = (same_padding(shape[2], k, s), same_padding(shape[3], k, s));
    Padding { top, bottom, left, right }
}

/// A weight-standardised convolution without bias, SAME padding.
#[derive(Clone, Debug)]
pub struct StdConv {
    /// The raw weight `[O, C, k, k]`, standardised in forward.
    pub weight: ParamId,
    /// `O`.
    pub out_chans: usize,
    /// The window side `k`.
    pub kernel: usize,
    /// The stride `s`.
    pub stride: usize,
    /// Added to each output channel's weight variance.
    pub eps: f64,
}

impl StdConv {
    /// `{name}.weight` `[O, C, k, k]`, He-normal over the fan-out as timm's ResNetV2 (the scale
    /// is standardised away in forward; it matters only for the optimizer's step sizes).
    pub fn new<T: Float>(
        store: &mut ParamStore<T>,
        name: &str,
        (in_chans, out_chans): (usize, usize),
        kernel: usize,
        stride: usize,
        rng: &mut Rng,
    ) -> Self {
        let std = (2.0 / (out_chans * kernel * kernel) as f64).sqrt();
        let w = Tensor::randn(&[out_chans, in_chans, kernel, kernel], 0.0, std, rng);
        let weight = store.add(format!("{name}.weight"), w, true);
        StdConv { weight, out_chans, kernel, stride, eps: STD_CONV_EPS }
    }
}

impl Module for StdConv {
    /// `x` `[B, C, H, W]` -> `[B, O, ceil(H/s), ceil(W/s)]`. One path: no fused form exists.
    fn forward<T: Float>(&self, g: &mut Graph<T>, p: &ParamVars, x: Var, _: &mut Ctx<'_>) -> Var {
        let w = p.get(self.weight);
        let shape = g.shape(w).to_vec();
        let o = self.out_chans;
        let flat = g.reshape(w, &[1, o, shape[1..].iter().product()]);
        let (one, zero) = (g.input(Tensor::ones(&[o])), g.input(Tensor::zeros(&[o])));
        let w_hat = g.group_norm(flat, o, one, zero, self.eps);
        let w_hat = g.reshape(w_hat, &shape);
        let pad = same(g.shape(x), self.kernel, self.stride);
        g.conv2d(x, w_hat, self.stride, pad)
    }
}

/// The root of BiT's ResNet-v2; see the module docs. Parameter names are timm's
/// (`patch_embed.backbone.stem.conv.weight`, `...stem.norm.{weight,bias}`).
#[derive(Clone, Debug)]
pub struct ResNetStem {
    /// The root convolution, 7x7 stride 2.
    pub conv: StdConv,
    /// Group norm's per-channel gain.
    pub norm_weight: ParamId,
    /// Group norm's per-channel shift.
    pub norm_bias: ParamId,
    /// The stem's width.
    pub config: ResNetStemConfig,
}

impl ResNetStem {
    /// Registers `{name}.stem.conv.weight` and `{name}.stem.norm.{weight,bias}` (timm's names).
    pub fn new<T: Float>(
        store: &mut ParamStore<T>,
        name: &str,
        in_chans: usize,
        config: ResNetStemConfig,
        rng: &mut Rng,
    ) -> Self {
        let w = config.width;
        let conv = StdConv::new(store, &format!("{name}.stem.conv"), (in_chans, w), 7, 2, rng);
        let norm_weight = store.add(format!("{name}.stem.norm.weight"), Tensor::ones(&[w]), false);
        let norm_bias = store.add(format!("{name}.stem.norm.bias"), Tensor::zeros(&[w]), false);
        ResNetStem { conv, norm_weight, norm_bias, config }
    }
}

impl Module for ResNetStem {
    /// `images` `[B, C, H, W]` -> the feature map `[B, width, H', W']`, `H' = ceil(ceil(H/2)/2)`.
    /// One path in both settings of [`Ctx::fused`] (there is no fused form of the stem).
    fn forward<T: Float>(&self, g: &mut Graph<T>, p: &ParamVars, images: Var, cx: &mut Ctx<'_>) -> Var {
        let x = self.conv.forward(g, p, images, cx);
        let x = g.group_norm(x, self.config.groups(), p.get(self.norm_weight), p.get(self.norm_bias), GN_EPS);
        let x = g.relu(x);
        let pad = same(g.shape(x), 3, 2);
        g.max_pool2d(x, 3, 2, pad)
    }
}
