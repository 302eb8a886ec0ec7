//! The bottleneck block of the hybrid's ResNet stages (BiT's ResNet-v2 as the ViT hybrids use
//! it: timm's non-pre-activation `Bottleneck` in `resnetv2.py`, the official `ResidualUnit`).
//!
//! ```text
//!     shortcut = GN(StdConv_1x1/s(x))  on the first block of a stage (`downsample`), else x
//!     h = relu(GN(StdConv_1x1(x)))                  mid channels      (conv1, norm1)
//!     h = relu(GN(StdConv_3x3/s(h)))                mid channels      (conv2, norm2)
//!     h = GN(StdConv_1x1(h))                        out channels      (conv3, norm3)
//!     y = relu(h + shortcut)
//! ```
//!
//! Every convolution is weight-standardised and bias-free, every norm group norm; the stride
//! `s` (2 on the first block of every stage but the first) sits on the 3x3 convolution and on
//! the projection, both with TensorFlow's SAME padding as timm's `StdConv2dSame`.

use autograd::{Float, Graph, Rng, Var};

use super::group_norm::GroupNorm;
use super::module::{Ctx, Module};
use super::params::{ParamStore, ParamVars};
use super::resnet_stem::StdConv;

/// The shortcut's projection (timm's `DownsampleConv`): a strided 1x1 standardised convolution
/// to the block's output width, then group norm without activation.
#[derive(Clone, Debug)]
pub struct Downsample {
    /// `{name}.conv`, 1x1 stride `s`.
    pub conv: StdConv,
    /// `{name}.norm`.
    pub norm: GroupNorm,
}

/// One bottleneck block; see the module docs. Parameter names are timm's: `{name}.conv1.weight`,
/// `{name}.norm1.{weight,bias}`, ... `{name}.norm3.*`, `{name}.downsample.conv.weight`,
/// `{name}.downsample.norm.*`.
#[derive(Clone, Debug)]
pub struct Bottleneck {
    /// The projection of the shortcut, on the first block of a stage.
    pub downsample: Option<Downsample>,
    /// 1x1 to the middle width.
    pub conv1: StdConv,
    /// After `conv1`, then ReLU.
    pub norm1: GroupNorm,
    /// 3x3, stride `s`.
    pub conv2: StdConv,
    /// After `conv2`, then ReLU.
    pub norm2: GroupNorm,
    /// 1x1 to the output width.
    pub conv3: StdConv,
    /// After `conv3`, no activation before the sum.
    pub norm3: GroupNorm,
}

impl Bottleneck {
    /// Registers the block's parameters under `name`: `in_chans -> mid -> mid -> out` channels,
    /// stride `stride`, with the shortcut projection when `downsample` (timm gives one to the
    /// first block of each stage).
    pub fn new<T: Float>(
        store: &mut ParamStore<T>,
        name: &str,
        (in_chans, mid, out): (usize, usize, usize),
        stride: usize,
        downsample: bool,
        rng: &mut Rng,
    ) -> Self {
        // Registered in timm's order (its `__init__`), so a state dict lists them alike.
        let downsample = downsample.then(|| Downsample {
            conv: StdConv::new(store, &format!("{name}.downsample.conv"), (in_chans, out), 1, stride, rng),
            norm: GroupNorm::new(store, &format!("{name}.downsample.norm"), out),
        });
        let conv1 = StdConv::new(store, &format!("{name}.conv1"), (in_chans, mid), 1, 1, rng);
        let norm1 = GroupNorm::new(store, &format!("{name}.norm1"), mid);
        let conv2 = StdConv::new(store, &format!("{name}.conv2"), (mid, mid), 3, stride, rng);
        let norm2 = GroupNorm::new(store, &format!("{name}.norm2"), mid);
        let conv3 = StdConv::new(store, &format!("{name}.conv3"), (mid, out), 1, 1, rng);
        let norm3 = GroupNorm::new(store, &format!("{name}.norm3"), out);
        Bottleneck { downsample, conv1, norm1, conv2, norm2, conv3, norm3 }
    }

    /// Parameters of a block `in_chans -> mid -> out`: three bias-free convolutions and their
    /// norms, plus the projection and its norm when `downsample`.
    pub fn num_params((in_chans, mid, out): (usize, usize, usize), downsample: bool) -> usize {
        let convs = in_chans * mid + mid * mid * 9 + mid * out;
        let norms = 2 * (mid + mid + out);
        let projection = if downsample { in_chans * out + 2 * out } else { 0 };
        convs + norms + projection
    }
}

impl Module for Bottleneck {
    /// `x` `[B, in, H, W]` -> `[B, out, ceil(H/s), ceil(W/s)]`. One path (no fused form).
    fn forward<T: Float>(&self, g: &mut Graph<T>, p: &ParamVars, x: Var, cx: &mut Ctx<'_>) -> Var {
        let shortcut = match &self.downsample {
            Some(d) => {
                let s = d.conv.forward(g, p, x, cx);
                d.norm.forward(g, p, s, cx)
            }
            None => x,
        };
        let h = self.conv1.forward(g, p, x, cx);
        let h = self.norm1.forward(g, p, h, cx);
        let h = g.relu(h);
        let h = self.conv2.forward(g, p, h, cx);
        let h = self.norm2.forward(g, p, h, cx);
        let h = g.relu(h);
        let h = self.conv3.forward(g, p, h, cx);
        let h = self.norm3.forward(g, p, h, cx);
        let y = g.add(h, shortcut);
        g.relu(y)
    }
}
