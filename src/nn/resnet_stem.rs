//! The ResNet stem of the ViT-CNN hybrid (the paper's section 3.1, "Hybrid Architecture"): "the
//! input sequence can be formed from feature maps of a CNN ... the patch embedding projection E
//! is applied to patches extracted from a CNN feature map".
//!
//! ```text
//!     x [B, C, H, W]
//!     h = maxpool_3x3/2(relu(GN_32(StdConv_7x7/2(x))))      [B, width, H/4, W/4]   (the root)
//!     h = stage_n(... stage_1(h))                          [B, 4 width 2^(n-1), H/2^(n+1), ...]
//!     StdConv(x) = conv(x, (W - mean(W)) / sqrt(var(W) + eps))   mean, var per output channel
//! ```
//!
//! The root is BiT's ResNet-v2 root (`conv_root`, `gn_root` in the official code). Alone it is
//! the whole backbone of R+ViT-Ti/16 (`resnet.num_layers = ()`, timm's `vit_tiny_r_s16_p8`);
//! R26+ViT-S/32 adds four stages of (2, 2, 2, 2) bottleneck blocks and R50+ViT-B/16 three of
//! (3, 4, 9) ([`super::bottleneck`]): stage `i` has `4 width 2^i` output channels and halves the
//! map, except the first. The patch embedding then cuts the map into patches of `patch_size`
//! feature pixels (1 for the staged hybrids).
//!
//! Padding is TensorFlow's SAME (the odd pixel at the bottom and right), as both use; max-pool
//! pads with zeros, which after the ReLU is the same as padding with `-inf`. Weight
//! standardisation is group norm with one group per output channel on the weight viewed as
//! `[1, O, C kh kw]` (no affine), so its gradient is group norm's.
//!
//! Parameter names are timm's: the bare root of R+ViT-Ti is an `nn.Sequential` there
//! (`{name}.conv.weight`, `{name}.norm.*`); with stages it is a `ResNetV2`
//! (`{name}.stem.conv.weight`, `{name}.stem.norm.*`, `{name}.stages.{i}.blocks.{j}.*`).

use autograd::ops::conv2d::{same_padding, Padding};
use autograd::{Float, Graph, Rng, Tensor, Var};

use super::bottleneck::Bottleneck;
use super::group_norm::GroupNorm;
use super::module::{Ctx, Module};
use super::params::{ParamId, ParamStore, ParamVars};

/// Weight standardisation's epsilon (timm's `StdConv2dSame` in its hybrids).
pub const STD_CONV_EPS: f64 = 1e-8;
/// At most this many stages: ResNet-v2's four widths (256 ... 2048 for BiT's root of 64).
pub const MAX_STAGES: usize = 4;

/// The hybrid's CNN: its width (output channels of the root convolution; 64 in BiT) and the
/// number of bottleneck blocks of each stage (none for R+ViT-Ti's bare root).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResNetStemConfig {
    /// Output channels of the root convolution.
    pub width: usize,
    /// Blocks per stage, first stage first; empty for the root alone.
    pub layers: Vec<usize>,
}

impl ResNetStemConfig {
    /// BiT's root alone, 64 channels: R+ViT-Ti/16's backbone.
    pub fn bit() -> Self {
        ResNetStemConfig { width: 64, layers: Vec::new() }
    }

    /// The root and (2, 2, 2, 2) blocks: R26 of R26+ViT-S/32 (timm's `vit_small_r26_s32_224`),
    /// a 1/32 feature map of 2048 channels.
    pub fn r26() -> Self {
        ResNetStemConfig { width: 64, layers: vec![2, 2, 2, 2] }
    }

    /// The root and (3, 4, 9) blocks: the paper's R50 of R50+ViT-B/16 (timm's
    /// `vit_base_r50_s16_224`; ResNet-50's (3, 4, 6, 3) with its fourth stage folded into the
    /// third, so the map is 1/16), 1024 channels.
    pub fn r50() -> Self {
        ResNetStemConfig { width: 64, layers: vec![3, 4, 9] }
    }

    /// The hybrid a model name asks for, and the rest of the name (the ViT variant): `r-` (or
    /// `r+`) the bare root, `r26-` R26, `r50-` the paper's R50 (so `r-ti`, `r26-s`, `r50-b` are
    /// R+ViT-Ti, R26+ViT-S, R50+ViT-B); `None` when the name has no such prefix.
    pub fn from_model_name(name: &str) -> Option<(ResNetStemConfig, &str)> {
        let (resnet, variant) = name.split_once(['-', '+'])?;
        let config = match resnet.to_ascii_lowercase().as_str() {
            "r" => Self::bit(),
            "r26" => Self::r26(),
            "r50" => Self::r50(),
            _ => return None,
        };
        Some((config, variant))
    }

    /// Stage `i`'s `(mid, out)` channels and stride: `out = 4 width 2^i`, `mid` a quarter of it
    /// rounded as timm's `make_divisible(out / 4)` (to a multiple of 8, at least 8), stride 1
    /// for the first stage and 2 after.
    pub fn stage(&self, i: usize) -> (usize, usize, usize) {
        let out = (4 * self.width) << i;
        (make_divisible(out / 4), out, if i == 0 { 1 } else { 2 })
    }

    /// Channels of the feature map: the root's width, or the last stage's output.
    pub fn out_chans(&self) -> usize {
        match self.layers.len() {
            0 => self.width,
            n => self.stage(n - 1).1,
        }
    }

    /// How many image pixels one feature pixel spans: 4 after the root, doubled by every stage
    /// after the first.
    pub fn reduction(&self) -> usize {
        4 << self.layers.len().saturating_sub(1)
    }

    /// Side of the feature map for a `size x size` image: SAME stride 2 twice in the root,
    /// `ceil(ceil(s/2)/2)`, then a SAME stride 2 per stage after the first.
    pub fn feature_size(&self, size: usize) -> usize {
        let root = size.div_ceil(2).div_ceil(2);
        (1..self.layers.len()).fold(root, |s, _| s.div_ceil(2))
    }

    /// Parameters: the root convolution (no bias) and its group norm, then every block.
    pub fn num_params(&self, in_chans: usize) -> usize {
        let root = self.width * in_chans * 7 * 7 + 2 * self.width;
        let mut chans = self.width;
        let mut blocks = 0;
        for (i, &depth) in self.layers.iter().enumerate().filter(|(_, d)| **d > 0) {
            let (mid, out, _) = self.stage(i);
            let rest = Bottleneck::num_params((out, mid, out), false);
            blocks += Bottleneck::num_params((chans, mid, out), true) + (depth - 1) * rest;
            chans = out;
        }
        root + blocks
    }
}

/// timm's `make_divisible(v, 8)`: `v` to the nearest multiple of 8 (halves up), at least 8, and
/// not below 90% of `v`.
fn make_divisible(v: usize) -> usize {
    let rounded = ((v + 4) / 8 * 8).max(8);
    if 10 * rounded < 9 * v {
        rounded + 8
    } else {
        rounded
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
        // The standardisation's unit scale and zero shift, where the weight is (host or device).
        let dev = g.value(w).device();
        let (one, zero) = (g.input(Tensor::full_on(&[o], T::ONE, dev)), g.input(Tensor::full_on(&[o], T::ZERO, dev)));
        let w_hat = g.group_norm(flat, o, one, zero, self.eps);
        let w_hat = g.reshape(w_hat, &shape);
        let pad = same(g.shape(x), self.kernel, self.stride);
        g.conv2d(x, w_hat, self.stride, pad)
    }
}

/// The hybrid's CNN, the root and its stages; see the module docs.
#[derive(Clone, Debug)]
pub struct ResNetStem {
    /// The root convolution, 7x7 stride 2.
    pub conv: StdConv,
    /// The root's group norm, then ReLU and the 3x3/2 max-pool.
    pub norm: GroupNorm,
    /// The bottleneck stages, each a list of blocks.
    pub stages: Vec<Vec<Bottleneck>>,
    /// The stem's width and stages.
    pub config: ResNetStemConfig,
}

impl ResNetStem {
    /// Registers the stem's parameters under `name` with timm's names (see the module docs):
    /// the root, then stage by stage, block by block.
    pub fn new<T: Float>(
        store: &mut ParamStore<T>,
        name: &str,
        in_chans: usize,
        config: ResNetStemConfig,
        rng: &mut Rng,
    ) -> Self {
        let w = config.width;
        let root = if config.layers.is_empty() { name.to_string() } else { format!("{name}.stem") };
        let conv = StdConv::new(store, &format!("{root}.conv"), (in_chans, w), 7, 2, rng);
        let norm = GroupNorm::new(store, &format!("{root}.norm"), w);
        let mut chans = w;
        let mut stages = Vec::with_capacity(config.layers.len());
        for (i, &depth) in config.layers.iter().enumerate() {
            let (mid, out, stride) = config.stage(i);
            let blocks = (0..depth)
                .map(|j| {
                    let (block_in, block_stride) = if j == 0 { (chans, stride) } else { (out, 1) };
                    let block_name = format!("{name}.stages.{i}.blocks.{j}");
                    Bottleneck::new(store, &block_name, (block_in, mid, out), block_stride, j == 0, rng)
                })
                .collect();
            stages.push(blocks);
            chans = out;
        }
        ResNetStem { conv, norm, stages, config }
    }
}

impl Module for ResNetStem {
    /// `images` `[B, C, H, W]` -> the feature map `[B, out_chans, H', W']`, `H'` as
    /// [`ResNetStemConfig::feature_size`]. One path in both settings of [`Ctx::fused`] (there is
    /// no fused form of the stem).
    fn forward<T: Float>(&self, g: &mut Graph<T>, p: &ParamVars, images: Var, cx: &mut Ctx<'_>) -> Var {
        let x = self.conv.forward(g, p, images, cx);
        let x = self.norm.forward(g, p, x, cx);
        let x = g.relu(x);
        let pad = same(g.shape(x), 3, 2);
        let mut x = g.max_pool2d(x, 3, 2, pad);
        for block in self.stages.iter().flatten() {
            x = block.forward(g, p, x, cx);
        }
        x
    }
}
