//! Model configuration: the paper's variants and validation.

use autograd::ops::gelu::GeluKind;

use super::init::Init;
use super::resnet_stem::{ResNetStemConfig, MAX_STAGES};
use crate::error::{Error, Result};

/// How the image representation is read off the encoder's output (eq. 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Classifier {
    /// The class token `z_L^0` (a learned token prepended to the patches).
    Token,
    /// Global average pooling over the patch tokens (timm's `global_pool='avg'`); a class
    /// token, when the model has one ([`ViTConfig::class_token`]), is left out of the mean.
    Gap,
}

/// Everything that fixes a ViT's shape and regularisation.
#[derive(Clone, Debug, PartialEq)]
pub struct ViTConfig {
    /// Side `H = W` of the (square) input images, in pixels.
    pub image_size: usize,
    /// Side `P` of the square patches; must divide `image_size`.
    pub patch_size: usize,
    /// Channels `C` of the input (1 for Fashion-MNIST, 3 for RGB).
    pub in_chans: usize,
    /// Output classes of the head.
    pub num_classes: usize,
    /// Width `D`.
    pub dim: usize,
    /// Number of blocks `L`.
    pub depth: usize,
    /// Attention heads `H` per block; must divide `dim`.
    pub heads: usize,
    /// Hidden width of the MLP (the paper uses `4 D`).
    pub mlp_dim: usize,
    /// Bias in the fused qkv projection (timm: yes; the Flax code: yes).
    pub qkv_bias: bool,
    /// Width of the tanh "pre-logits" layer of the pre-training head, if any.
    pub representation_size: Option<usize>,
    /// How `y` is read off the encoder: the class token or the mean of the patch tokens.
    pub classifier: Classifier,
    /// Whether a learned class token is prepended to the patches (timm's `class_token`).
    /// [`Classifier::Token`] needs it; a GAP model may keep it (timm's `global_pool='avg'` models
    /// with a class token, such as MAE's) or not (the paper's GAP model).
    pub class_token: bool,
    /// Where the final LayerNorm sits: after pooling (timm's `fc_norm`, its default with
    /// `global_pool='avg'`: `y = LN(mean_i z_L^i)`; with the class token, `LN(z_L^0)`) instead
    /// of before it (eq. 4's `norm`: `y = mean_i LN(z_L)^i`, or `LN(z_L)^0`).
    pub fc_norm: bool,
    /// Dropout after every dense layer but qkv, and after adding `pos_embed`.
    pub dropout: f64,
    /// Dropout on the attention probabilities.
    pub attn_dropout: f64,
    /// Stochastic depth: the drop-path rate of the last block (linearly from 0 at the first).
    pub drop_path: f64,
    /// The GELU form of the MLP: exact (erf, timm's) or the tanh approximation (the Flax code's).
    pub gelu: GeluKind,
    /// The `eps` of every LayerNorm (1e-6 in ViT, not PyTorch's default 1e-5).
    pub ln_eps: f64,
    /// The initialisation scheme.
    pub init: Init,
    /// The ViT-CNN hybrid (section 3.1): a ResNet stem whose feature map is cut into patches of
    /// `patch_size` feature pixels. `None`: patches of the image itself.
    pub resnet: Option<ResNetStemConfig>,
}

/// The widest ResNet root accepted (BiT's widest, R152x4, has 256).
pub const MAX_RESNET_WIDTH: usize = 4096;
/// The most bottleneck blocks in one stage (ResNet-152's third stage has 36).
pub const MAX_STAGE_BLOCKS: usize = 256;

/// The paper's named sizes (Table 1) plus ViT-Ti from DeiT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// ViT-Ti (DeiT): D = 192, 12 blocks, 3 heads.
    Tiny,
    /// ViT-S (DeiT, timm): D = 384, 12 blocks, 6 heads.
    Small,
    /// ViT-B: D = 768, 12 blocks, 12 heads.
    Base,
    /// ViT-L: D = 1024, 24 blocks, 16 heads.
    Large,
    /// ViT-H: D = 1280, 32 blocks, 16 heads.
    Huge,
}

impl Variant {
    /// `(dim, depth, heads)`.
    pub fn dims(self) -> (usize, usize, usize) {
        match self {
            Variant::Tiny => (192, 12, 3),
            Variant::Small => (384, 12, 6),
            Variant::Base => (768, 12, 12),
            Variant::Large => (1024, 24, 16),
            Variant::Huge => (1280, 32, 16),
        }
    }

    /// A variant from its short or long name (`ti`/`tiny`, `s`, `b`, `l`, `h`, any case).
    pub fn parse(s: &str) -> Result<Variant> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "ti" | "tiny" => Variant::Tiny,
            "s" | "small" => Variant::Small,
            "b" | "base" => Variant::Base,
            "l" | "large" => Variant::Large,
            "h" | "huge" => Variant::Huge,
            _ => return Err(Error::Config(format!("unknown model variant {s:?}: expected one of ti, s, b, l, h"))),
        })
    }
}

impl ViTConfig {
    /// A named variant at the given patch size and image size, 3 channels, 1000 classes, no
    /// dropout, GELU in the exact erf form (timm's, so timm checkpoints reproduce their logits).
    pub fn variant(v: Variant, patch_size: usize, image_size: usize) -> Self {
        let (dim, depth, heads) = v.dims();
        ViTConfig {
            image_size,
            patch_size,
            in_chans: 3,
            num_classes: 1000,
            dim,
            depth,
            heads,
            mlp_dim: 4 * dim,
            qkv_bias: true,
            representation_size: None,
            classifier: Classifier::Token,
            class_token: true,
            fc_norm: false,
            dropout: 0.0,
            attn_dropout: 0.0,
            drop_path: 0.0,
            gelu: GeluKind::Erf,
            ln_eps: 1e-6,
            init: Init::Timm,
            resnet: None,
        }
    }

    /// The hybrid of a named variant: the ResNet `resnet` under the ViT, patches of `patch_size`
    /// pixels of its feature map. The official hybrids (their `models_test.py` names; timm's):
    ///
    /// - R+ViT-Ti/16 (`vit_tiny_r_s16_p8_224`): `hybrid(Variant::Tiny, ResNetStemConfig::bit(), 8, 224)`
    /// - R26+ViT-S/32 (`vit_small_r26_s32_224`): `hybrid(Variant::Small, ResNetStemConfig::r26(), 1, 224)`
    /// - R50+ViT-B/16 (`vit_base_r50_s16_224`): `hybrid(Variant::Base, ResNetStemConfig::r50(), 1, 224)`
    pub fn hybrid(v: Variant, resnet: ResNetStemConfig, patch_size: usize, image_size: usize) -> Self {
        ViTConfig { resnet: Some(resnet), ..Self::variant(v, patch_size, image_size) }
    }

    /// [`Variant::Tiny`] (see [`ViTConfig::variant`]).
    pub fn tiny(patch_size: usize, image_size: usize) -> Self {
        Self::variant(Variant::Tiny, patch_size, image_size)
    }
    /// [`Variant::Small`] (see [`ViTConfig::variant`]).
    pub fn small(patch_size: usize, image_size: usize) -> Self {
        Self::variant(Variant::Small, patch_size, image_size)
    }
    /// [`Variant::Base`] (see [`ViTConfig::variant`]).
    pub fn base(patch_size: usize, image_size: usize) -> Self {
        Self::variant(Variant::Base, patch_size, image_size)
    }
    /// [`Variant::Large`] (see [`ViTConfig::variant`]).
    pub fn large(patch_size: usize, image_size: usize) -> Self {
        Self::variant(Variant::Large, patch_size, image_size)
    }
    /// [`Variant::Huge`] (see [`ViTConfig::variant`]).
    pub fn huge(patch_size: usize, image_size: usize) -> Self {
        Self::variant(Variant::Huge, patch_size, image_size)
    }

    /// Side of what the patches are cut from: the image, or the hybrid's feature map.
    pub fn feature_size(&self) -> usize {
        self.resnet.as_ref().map_or(self.image_size, |r| r.feature_size(self.image_size))
    }

    /// Channels of what the patches are cut from.
    pub fn patch_chans(&self) -> usize {
        self.resnet.as_ref().map_or(self.in_chans, |r| r.out_chans())
    }

    /// Image pixels per patch side: `P`, or `P` times the hybrid's reduction (4 for the bare
    /// root, 16 or 32 with stages): what the analysis figures measure distances and draw
    /// patches in.
    pub fn patch_pixels(&self) -> usize {
        self.patch_size * self.resnet.as_ref().map_or(1, |r| r.reduction())
    }

    /// Patches per side.
    pub fn grid(&self) -> usize {
        self.feature_size() / self.patch_size
    }

    /// Number of patches `N_p = (H/P)^2`.
    pub fn num_patches(&self) -> usize {
        self.grid() * self.grid()
    }

    /// Tokens the encoder sees: the patches plus the class token if there is one.
    pub fn num_tokens(&self) -> usize {
        self.num_patches() + self.num_prefix_tokens()
    }

    /// Tokens before the patches: 1 (the class token) or 0.
    pub fn num_prefix_tokens(&self) -> usize {
        usize::from(self.class_token)
    }

    /// `D / heads`.
    pub fn head_dim(&self) -> usize {
        self.dim / self.heads
    }

    /// Checks that the shapes fit together; every error names the offending values.
    pub fn validate(&self) -> Result<()> {
        let nonzero = [
            ("image_size", self.image_size),
            ("patch_size", self.patch_size),
            ("in_chans", self.in_chans),
            ("num_classes", self.num_classes),
            ("dim", self.dim),
            ("depth", self.depth),
            ("heads", self.heads),
            ("mlp_dim", self.mlp_dim),
        ];
        for (name, v) in nonzero {
            if v == 0 {
                return Err(Error::Config(format!("{name} must be positive, got 0")));
            }
        }
        if let Some(r) = &self.resnet {
            if r.width == 0 || r.width > MAX_RESNET_WIDTH {
                return Err(Error::Config(format!(
                    "the hybrid's ResNet width must be in 1..={MAX_RESNET_WIDTH}, got {}",
                    r.width
                )));
            }
            if r.layers.len() > MAX_STAGES || r.layers.iter().any(|&d| d == 0 || d > MAX_STAGE_BLOCKS) {
                return Err(Error::Config(format!(
                    "the hybrid's ResNet stages {:?}: at most {MAX_STAGES} stages of 1..={MAX_STAGE_BLOCKS} blocks",
                    r.layers
                )));
            }
        }
        if !self.feature_size().is_multiple_of(self.patch_size) {
            let what = match self.resnet {
                None => format!("image size {}", self.image_size),
                Some(_) => {
                    format!("the ResNet's {0}x{0} feature map (image {1})", self.feature_size(), self.image_size)
                }
            };
            return Err(Error::Config(format!("{what} is not divisible by patch size {}", self.patch_size)));
        }
        if self.classifier == Classifier::Token && !self.class_token {
            return Err(Error::Config("token pooling needs the class token (class_token: true)".into()));
        }
        if !self.dim.is_multiple_of(self.heads) {
            return Err(Error::Config(format!("dim {} is not divisible by heads {}", self.dim, self.heads)));
        }
        if self.representation_size == Some(0) {
            return Err(Error::Config("representation_size must be positive when set".into()));
        }
        for (name, p) in [("dropout", self.dropout), ("attn_dropout", self.attn_dropout), ("drop_path", self.drop_path)]
        {
            if !(0.0..1.0).contains(&p) {
                return Err(Error::Config(format!("{name} must be in [0, 1), got {p}")));
            }
        }
        if self.ln_eps.is_nan() || self.ln_eps <= 0.0 {
            return Err(Error::Config(format!("ln_eps must be positive, got {}", self.ln_eps)));
        }
        Ok(())
    }

    /// The number of parameters, counted from the shapes alone (no allocation), term by term
    /// as the model registers them.
    pub fn num_params(&self) -> usize {
        let d = self.dim;
        let stem = self.resnet.as_ref().map_or(0, |r| r.num_params(self.in_chans));
        let patch = stem + d * self.patch_chans() * self.patch_size * self.patch_size + d;
        let tokens = self.num_prefix_tokens() * d + self.num_tokens() * d;
        let linear = |i: usize, o: usize, b: bool| i * o + if b { o } else { 0 };
        let block = 2 * d // norm1
            + linear(d, 3 * d, self.qkv_bias)
            + linear(d, d, true)
            + 2 * d // norm2
            + linear(d, self.mlp_dim, true)
            + linear(self.mlp_dim, d, true);
        let head_in = self.representation_size.unwrap_or(d);
        let pre_logits = self.representation_size.map_or(0, |r| linear(d, r, true));
        patch + tokens + self.depth * block + 2 * d + pre_logits + linear(head_in, self.num_classes, true)
    }
}
