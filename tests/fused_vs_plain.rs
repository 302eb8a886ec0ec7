//! The model as built (fused ops: Linear with bias epilogue, attention from qkv to heads, Linear
//! with residual) against the same math composed op by op from plain ops, on the same
//! parameters: a training step must give the same loss and the same gradient for every
//! parameter, in f32.

use autograd::ops::gelu::GeluKind;
use autograd::{Graph, Rng, Tensor, Var};
use vit::nn::{Classifier, Ctx, Module, ParamVars, ViTConfig, VisionTransformer};

/// `x W^T + b` from `matmul_t` and a broadcasting `add`.
fn linear(g: &mut Graph<f32>, p: &ParamVars, store: &vit::nn::ParamStore, name: &str, x: Var) -> Var {
    let w = p.get(store.id(&format!("{name}.weight")).unwrap());
    let y = g.matmul_t(x, w);
    match store.id(&format!("{name}.bias")) {
        Some(b) => g.add(y, p.get(b)),
        None => y,
    }
}

fn layer_norm(g: &mut Graph<f32>, p: &ParamVars, store: &vit::nn::ParamStore, name: &str, x: Var) -> Var {
    let w = p.get(store.id(&format!("{name}.weight")).unwrap());
    let b = p.get(store.id(&format!("{name}.bias")).unwrap());
    g.layer_norm(x, w, b, 1e-6)
}

/// The plain, op-by-op ViT forward (token classifier, no dropout).
fn plain_forward(g: &mut Graph<f32>, p: &ParamVars, store: &vit::nn::ParamStore, c: &ViTConfig, images: Var) -> Var {
    let b = g.shape(images)[0];
    let (d, h) = (c.dim, c.heads);
    let dh = d / h;
    let patches = g.patchify(images, c.patch_size);
    let w = p.get(store.id("patch_embed.proj.weight").unwrap());
    let w = g.reshape(w, &[d, c.in_chans * c.patch_size * c.patch_size]);
    let x = g.matmul_t(patches, w);
    let x = g.add(x, p.get(store.id("patch_embed.proj.bias").unwrap()));
    let cls = g.broadcast_to(p.get(store.id("cls_token").unwrap()), &[b, 1, d]);
    let z = g.concat(&[cls, x], 1);
    let mut z = g.add(z, p.get(store.id("pos_embed").unwrap()));
    let n = c.num_tokens();
    for i in 0..c.depth {
        let pre = format!("blocks.{i}");
        let hdn = layer_norm(g, p, store, &format!("{pre}.norm1"), z);
        let qkv = linear(g, p, store, &format!("{pre}.attn.qkv"), hdn);
        let t = g.reshape(qkv, &[b, n, 3, h, dh]);
        let t = g.permute(t, &[2, 0, 3, 1, 4]);
        let mut part = |k| {
            let x = g.narrow(t, 0, k, 1);
            g.reshape(x, &[b, h, n, dh])
        };
        let (q, k, v) = (part(0), part(1), part(2));
        let s = g.matmul_t(q, k);
        let s = g.mul_scalar(s, 1.0 / (dh as f64).sqrt());
        let a = g.softmax(s);
        let o = g.matmul(a, v);
        let o = g.permute(o, &[0, 2, 1, 3]);
        let o = g.reshape(o, &[b, n, d]);
        let o = linear(g, p, store, &format!("{pre}.attn.proj"), o);
        z = g.add(z, o);
        let hdn = layer_norm(g, p, store, &format!("{pre}.norm2"), z);
        let m = linear(g, p, store, &format!("{pre}.mlp.fc1"), hdn);
        let m = g.gelu(m, GeluKind::Erf);
        let m = linear(g, p, store, &format!("{pre}.mlp.fc2"), m);
        z = g.add(z, m);
    }
    let z = layer_norm(g, p, store, "norm", z);
    let y = g.narrow(z, 1, 0, 1);
    let y = g.reshape(y, &[b, d]);
    linear(g, p, store, "head", y)
}

#[test]
fn a_fused_step_equals_the_plain_step() {
    let mut c = ViTConfig::tiny(4, 16);
    (c.num_classes, c.dim, c.depth, c.heads, c.mlp_dim) = (10, 48, 3, 3, 96);
    let (model, store) = VisionTransformer::init::<f32>(&c, 0).unwrap();
    let images = Tensor::<f32>::randn(&[6, 3, 16, 16], 0.0, 1.0, &mut Rng::seed(1));
    let labels = [0, 3, 9, 1, 1, 5];

    let step = |fused: bool| {
        let mut g = Graph::new();
        let p = store.bind(&mut g);
        let x = g.input(images.clone());
        let logits = if fused {
            model.forward(&mut g, &p, x, &mut Ctx::new(&mut Rng::seed(0)))
        } else {
            plain_forward(&mut g, &p, &store, &c, x)
        };
        let loss = g.cross_entropy(logits, &labels, 0.1);
        g.backward(loss);
        let l = g.value(loss).item();
        (l, p.take_grads(&mut g))
    };
    let (loss_fused, grads_fused) = step(true);
    let (loss_plain, grads_plain) = step(false);
    assert!((loss_fused - loss_plain).abs() <= 1e-5 * loss_plain.abs(), "loss {loss_fused} vs {loss_plain}");
    for ((param, a), b) in store.iter().zip(&grads_fused).zip(&grads_plain) {
        let scale = b.data().iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
        let err = a.max_abs_diff(b) / scale as f64;
        assert!(err < 1e-4, "{}: gradients differ (max relative error {err:.2e})", param.name);
        assert!(a.norm() > 0.0, "{} got no gradient", param.name);
    }
}

/// The model's own two paths (`Ctx::fused`, the one switch) in f64, in training mode with
/// dropout and stochastic depth on (no attention dropout: the fused op draws its mask per head,
/// the plain path per element): the same masks, so the same loss and gradients. Also for
/// timm's GAP layouts (`global_pool='avg'` with `fc_norm`, with and without a class token).
#[test]
fn the_models_fused_and_plain_paths_agree_in_f64() {
    // With dropout the fused branch ends run as separate ops; without, the last Linear, the
    // stochastic-depth scale and the residual sum are one op.
    let layouts = [
        (0.1, Classifier::Token, true, false),
        (0.0, Classifier::Token, true, false),
        (0.1, Classifier::Gap, true, true),
        (0.0, Classifier::Gap, false, true),
    ];
    for (dropout, classifier, class_token, fc_norm) in layouts {
        let mut c = ViTConfig::tiny(4, 16);
        (c.num_classes, c.dim, c.depth, c.heads, c.mlp_dim) = (10, 24, 2, 3, 48);
        (c.dropout, c.drop_path) = (dropout, 0.3);
        (c.classifier, c.class_token, c.fc_norm) = (classifier, class_token, fc_norm);
        let (model, store) = VisionTransformer::init::<f64>(&c, 0).unwrap();
        let images = Tensor::<f64>::randn(&[4, 3, 16, 16], 0.0, 1.0, &mut Rng::seed(1));
        let step = |fused: bool| {
            let mut g = Graph::<f64>::new();
            let p = store.bind(&mut g);
            let x = g.input(images.clone());
            let mut rng = Rng::seed(7);
            let mut cx = if fused { Ctx::new(&mut rng) } else { Ctx::plain(&mut rng) };
            let logits = model.forward(&mut g, &p, x, &mut cx);
            let loss = g.cross_entropy(logits, &[0, 3, 9, 1], 0.1);
            g.backward(loss);
            (g.value(loss).item(), p.take_grads(&mut g))
        };
        let ((loss_fused, grads_fused), (loss_plain, grads_plain)) = (step(true), step(false));
        assert!((loss_fused - loss_plain).abs() <= 1e-14 * loss_plain.abs(), "loss {loss_fused} vs {loss_plain}");
        for ((param, a), b) in store.iter().zip(&grads_fused).zip(&grads_plain) {
            let scale = b.data().iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-300);
            let err = a.max_abs_diff(b) / scale;
            assert!(
                err < 1e-12,
                "dropout {dropout}, {classifier:?}, class token {class_token}, fc_norm {fc_norm}, {}: gradients differ \
                 (max relative error {err:.2e})",
                param.name
            );
        }
    }
}
