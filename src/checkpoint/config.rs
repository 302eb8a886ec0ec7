//! The model config in a checkpoint: JSON in the header's metadata, or inferred from the shapes.
//!
//! The JSON is a file format, so it is spelled out here field by field (enums as lowercase
//! strings: `"classifier": "token"`, `"gelu": "erf"`, `"init": "timm"`) rather than derived from
//! [`ViTConfig`]'s in-memory layout; unknown fields are rejected, so a file from a newer version
//! fails loudly instead of silently dropping a setting.

use std::collections::BTreeMap;

use autograd::ops::gelu::GeluKind;
use serde::{Deserialize, Serialize};

use super::resize::square_side;
use super::safetensors::Checkpoint;
use super::timm_config::{TimmConfig, TIMM_CONFIG_FILE};
use crate::error::{Error, Result};
use crate::nn::config::MAX_RESNET_WIDTH;
use crate::nn::resnet_stem::MAX_STAGES;
use crate::nn::{Classifier, Init, ResNetStemConfig, ViTConfig};

/// The metadata key under which [`config_metadata`] stores the model config as JSON.
pub const CONFIG_KEY: &str = "vit.config";

/// [`ViTConfig`] as it is written to a checkpoint.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigJson {
    image_size: usize,
    patch_size: usize,
    in_chans: usize,
    num_classes: usize,
    dim: usize,
    depth: usize,
    heads: usize,
    mlp_dim: usize,
    qkv_bias: bool,
    representation_size: Option<usize>,
    classifier: String,
    dropout: f64,
    attn_dropout: f64,
    drop_path: f64,
    gelu: String,
    ln_eps: f64,
    init: String,
    /// Whether there is a class token, written only where it differs from the classifier's
    /// default (a GAP model with one), so files from before it read the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    class_token: Option<bool>,
    /// LayerNorm after pooling (timm's `fc_norm`); absent for false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    fc_norm: bool,
    /// The hybrid's ResNet stem width; absent for a plain ViT (and in files from before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resnet_width: Option<usize>,
    /// The hybrid's blocks per bottleneck stage; absent for none (the bare root).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    resnet_layers: Vec<usize>,
}

/// The config as a JSON string.
pub fn config_to_json(config: &ViTConfig) -> String {
    // Destructured without `..`, so a new field is a compile error here until it is stored.
    let ViTConfig {
        image_size,
        patch_size,
        in_chans,
        num_classes,
        dim,
        depth,
        heads,
        mlp_dim,
        qkv_bias,
        representation_size,
        classifier,
        class_token,
        fc_norm,
        dropout,
        attn_dropout,
        drop_path,
        gelu,
        ln_eps,
        init,
        resnet,
    } = config.clone();
    let json = ConfigJson {
        image_size,
        patch_size,
        in_chans,
        num_classes,
        dim,
        depth,
        heads,
        mlp_dim,
        qkv_bias,
        representation_size,
        classifier: match classifier {
            Classifier::Token => "token",
            Classifier::Gap => "gap",
        }
        .into(),
        class_token: (class_token != (classifier == Classifier::Token)).then_some(class_token),
        fc_norm,
        dropout,
        attn_dropout,
        drop_path,
        gelu: match gelu {
            GeluKind::Erf => "erf",
            GeluKind::Tanh => "tanh",
        }
        .into(),
        ln_eps,
        init: match init {
            Init::Timm => "timm",
            Init::Jax => "jax",
        }
        .into(),
        resnet_width: resnet.as_ref().map(|r| r.width),
        resnet_layers: resnet.map(|r| r.layers).unwrap_or_default(),
    };
    serde_json::to_string(&json).expect("a config of numbers and strings always serialises")
}

/// Parses and validates a config written by [`config_to_json`].
pub fn config_from_json(json: &str) -> Result<ViTConfig> {
    let c: ConfigJson = serde_json::from_str(json).map_err(|e| Error::Config(format!("model config JSON: {e}")))?;
    let pick = |field: &str, value: &str, options: &[&str]| -> Result<usize> {
        options.iter().position(|o| *o == value).ok_or_else(|| {
            Error::Config(format!("model config JSON: {field} {value:?} is not one of {}", options.join(", ")))
        })
    };
    let classifier = [Classifier::Token, Classifier::Gap][pick("classifier", &c.classifier, &["token", "gap"])?];
    let gelu = [GeluKind::Erf, GeluKind::Tanh][pick("gelu", &c.gelu, &["erf", "tanh"])?];
    let init = [Init::Timm, Init::Jax][pick("init", &c.init, &["timm", "jax"])?];
    let config = ViTConfig {
        image_size: c.image_size,
        patch_size: c.patch_size,
        in_chans: c.in_chans,
        num_classes: c.num_classes,
        dim: c.dim,
        depth: c.depth,
        heads: c.heads,
        mlp_dim: c.mlp_dim,
        qkv_bias: c.qkv_bias,
        representation_size: c.representation_size,
        classifier,
        class_token: c.class_token.unwrap_or(classifier == Classifier::Token),
        fc_norm: c.fc_norm,
        dropout: c.dropout,
        attn_dropout: c.attn_dropout,
        drop_path: c.drop_path,
        gelu,
        ln_eps: c.ln_eps,
        init,
        resnet: match (c.resnet_width, c.resnet_layers.is_empty()) {
            (Some(width), _) => Some(ResNetStemConfig { width, layers: c.resnet_layers }),
            (None, true) => None,
            (None, false) => return Err(Error::Config("model config JSON: resnet_layers without resnet_width".into())),
        },
    };
    config.validate()?;
    Ok(config)
}

/// Metadata holding the config under [`CONFIG_KEY`]; add the caller's own keys to it.
pub fn config_metadata(config: &ViTConfig) -> BTreeMap<String, String> {
    BTreeMap::from([(CONFIG_KEY.to_string(), config_to_json(config))])
}

impl Checkpoint {
    /// The model config stored under [`CONFIG_KEY`], if any; an error if it does not parse or
    /// does not validate.
    pub fn config(&self) -> Result<Option<ViTConfig>> {
        match self.meta(CONFIG_KEY) {
            None => Ok(None),
            Some(json) => {
                config_from_json(json).map(Some).map_err(|e| self.error(format!("metadata {CONFIG_KEY:?}: {e}")))
            }
        }
    }
}

/// A config read off a checkpoint's tensor shapes, for files that carry none (e.g. a timm state
/// dict): width, channels and patch size from `patch_embed.proj.weight`, depth from the
/// `blocks.{i}` present, MLP width, qkv bias, class token, image size from `pos_embed`'s square
/// patch grid, pre-logits width and classes from the head; for a hybrid, the ResNet's root width
/// and the image channels from its root convolution and the blocks of each stage from the
/// `patch_embed.backbone.stages.{i}.blocks.{j}` present.
///
/// What the shapes cannot tell (the pooling of a model with both `cls_token` and `fc_norm.*`, the
/// number of heads) is read from timm's `config.json` beside the file when there is one
/// ([`TimmConfig`]). The number of heads is otherwise `heads` (which wins over the config), or
/// that of the standard variant of the width (192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16).
/// GELU is timm's exact form, LayerNorm eps 1e-6, no dropout. A `module.` prefix on every name
/// is ignored.
pub fn infer_config(ckpt: &Checkpoint, heads: Option<usize>) -> Result<ViTConfig> {
    let shape = |name: &str| -> Option<Vec<usize>> {
        ckpt.shape(name).or_else(|| ckpt.shape(&format!("module.{name}"))).map(<[usize]>::to_vec)
    };
    let need = |name: &str, ndim: usize| -> Result<Vec<usize>> {
        match shape(name) {
            Some(s) if s.len() == ndim => Ok(s),
            Some(s) => Err(ckpt.error(format!("{name}: expected {ndim} dimensions, found shape {s:?}"))),
            None => Err(ckpt.error(format!("{name}: missing, cannot infer the model config"))),
        }
    };
    let pe = need("patch_embed.proj.weight", 4)?;
    let (dim, patch_chans, patch_size) = (pe[0], pe[1], pe[2]);
    // A hybrid (timm's `HybridEmbed`): the bare ResNet root (`backbone.conv`; ours before the
    // stages existed called it `backbone.stem.conv`) or a ResNetV2 (`backbone.stem.conv` and
    // `backbone.stages.{i}.blocks.{j}`); the image channels are the root's.
    let stem = shape("patch_embed.backbone.conv.weight").or_else(|| shape("patch_embed.backbone.stem.conv.weight"));
    let blocks = |i: usize| {
        (0..)
            .take_while(|j| shape(&format!("patch_embed.backbone.stages.{i}.blocks.{j}.conv1.weight")).is_some())
            .count()
    };
    let layers: Vec<usize> = (0..).map(blocks).take_while(|n| *n > 0).collect();
    let (in_chans, resnet) = match &stem {
        None => (patch_chans, None),
        Some(s) if s.len() == 4 => {
            if layers.len() > MAX_STAGES {
                return Err(ckpt.error(format!("{} ResNet stages, more than ResNet-v2's {MAX_STAGES}", layers.len())));
            }
            let r = ResNetStemConfig { width: s[0], layers };
            // An out-of-range width is left to `validate`, below.
            if r.width <= MAX_RESNET_WIDTH && r.out_chans() != patch_chans {
                return Err(ckpt.error(format!(
                    "the ResNet of root {s:?} and stages {:?} does not feed patch_embed.proj.weight {pe:?}",
                    r.layers
                )));
            }
            (s[1], Some(r))
        }
        Some(s) => return Err(ckpt.error(format!("the ResNet root convolution: expected 4 dimensions, found {s:?}"))),
    };
    let scale = resnet.as_ref().map_or(1, |r| r.reduction());
    if pe[3] != patch_size {
        return Err(ckpt.error(format!("patch_embed.proj.weight: non-square patch {pe:?}")));
    }
    let depth = (0..).take_while(|i| shape(&format!("blocks.{i}.norm1.weight")).is_some()).count();
    let mlp_dim = need("blocks.0.mlp.fc1.weight", 2)?[0];
    let qkv_bias = shape("blocks.0.attn.qkv.bias").is_some();
    // timm's layouts: `fc_norm.*` is there exactly when the final norm follows the pooling,
    // which timm does by default for `global_pool='avg'`; a class token is kept or not
    // independently. The shapes cannot tell `global_pool='avg'` with a class token from
    // `global_pool='token', fc_norm=True` (the same tensors): timm's `config.json`, when it is
    // beside the file, says which; without it, `fc_norm` means avg pooling (timm's default) and
    // no `fc_norm` with a class token means token pooling.
    let timm = TimmConfig::beside(ckpt)?.unwrap_or_default();
    let class_token = shape("cls_token").is_some();
    let fc_norm = shape("fc_norm.weight").is_some();
    if let Some(said) = timm.fc_norm.filter(|said| *said != fc_norm) {
        return Err(ckpt.error(format!(
            "{TIMM_CONFIG_FILE} says fc_norm={said}, but the file {} fc_norm.weight",
            if fc_norm { "has" } else { "has no" }
        )));
    }
    let classifier = match timm.pooling {
        Some(Classifier::Token) if !class_token => {
            return Err(
                ckpt.error(format!("{TIMM_CONFIG_FILE} says global_pool='token', but the file has no cls_token"))
            )
        }
        Some(pooling) => pooling,
        None if class_token && !fc_norm => Classifier::Token,
        None => Classifier::Gap,
    };
    let prefix = usize::from(class_token);
    let tokens = need("pos_embed", 3)?[1];
    let patches = tokens.saturating_sub(prefix);
    let grid = square_side(patches).ok_or_else(|| {
        ckpt.error(format!(
            "pos_embed: {tokens} tokens ({prefix} class token(s) + {patches}) is not a square patch grid"
        ))
    })?;
    let representation_size = shape("pre_logits.fc.weight").map(|s| s[0]);
    let num_classes = need("head.weight", 2)?[0];
    let heads = match heads.or(timm.num_heads) {
        Some(h) => h,
        None => match dim {
            192 => 3,
            384 => 6,
            768 => 12,
            1024 | 1280 => 16,
            _ => return Err(ckpt.error(format!("cannot infer the number of heads for width {dim}: give it"))),
        },
    };
    let config = ViTConfig {
        image_size: grid * patch_size * scale,
        patch_size,
        in_chans,
        num_classes,
        dim,
        depth,
        heads,
        mlp_dim,
        qkv_bias,
        representation_size,
        classifier,
        class_token,
        fc_norm,
        resnet,
        ..ViTConfig::tiny(patch_size, grid * patch_size * scale)
    };
    config.validate()?;
    Ok(config)
}
