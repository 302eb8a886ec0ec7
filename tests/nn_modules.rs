//! Every ViT module: forward against a plain reference where one is short to write, and an f64
//! gradcheck of all its parameters and its input on proptest-drawn small dimensions.

use autograd::ops::gelu::GeluKind;
use autograd::{gradcheck, GradcheckOptions, Graph, Rng, Tensor, Var};
use proptest::prelude::*;
use vit::nn::{
    Attention, Block, Bottleneck, Classifier, Ctx, Init, LayerNorm, Linear, Mlp, Module, ParamStore, ParamVars,
    PatchEmbed, ResNetStem, ResNetStemConfig, ViTConfig, VisionTransformer,
};

mod common;

fn config() -> ProptestConfig {
    let cases = common::cases(64);
    // A fixed seed (overridable with PROPTEST_RNG_SEED) makes every run, CI's included, draw the
    // same cases, so a failure reproduces; raise PROPTEST_CASES to explore further.
    let seed = std::env::var("PROPTEST_RNG_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_1234);
    ProptestConfig { rng_seed: proptest::test_runner::RngSeed::Fixed(seed), ..ProptestConfig::with_cases(cases) }
}

/// Randomises every parameter (so e.g. LayerNorm's unit weights and zero biases are not a
/// special point) and returns the store's tensors followed by `extra` inputs.
fn randomised(store: &mut ParamStore<f64>, seed: u64) -> Vec<Tensor<f64>> {
    let mut rng = Rng::seed(seed);
    for p in store.iter_mut() {
        p.value = Tensor::randn(p.value.shape(), 0.0, 0.5, &mut rng);
    }
    store.iter().map(|p| p.value.clone()).collect()
}

/// Gradchecks `module.forward` over all parameters and the input, on the fused path and on the
/// plain one. Randomness comes from a freshly seeded `Rng::seed(rng_seed)` on every evaluation,
/// so dropout masks are the same in each.
fn check_module(mut store: ParamStore<f64>, input: Tensor<f64>, seed: u64, module: &impl Module, rng_seed: u64) {
    check_with(&mut store, input, seed, |g, p, x, fused| {
        let mut rng = Rng::seed(rng_seed);
        let mut cx = if fused { Ctx::new(&mut rng) } else { Ctx::plain(&mut rng) };
        module.forward(g, p, x, &mut cx)
    });
}

/// [`check_module`] for any forward: `forward(g, params, input, fused)`.
fn check_with(
    store: &mut ParamStore<f64>,
    input: Tensor<f64>,
    seed: u64,
    forward: impl Fn(&mut Graph<f64>, &ParamVars, Var, bool) -> Var,
) {
    let mut inputs = randomised(store, seed);
    let n = inputs.len();
    inputs.push(input);
    for fused in [true, false] {
        let r = gradcheck(
            |g, v| forward(g, &ParamVars::from_vars(v[..n].to_vec()), v[n], fused),
            &inputs,
            &GradcheckOptions::default(),
        );
        if let Err(e) = r {
            let name = if e.input < n { store.iter().nth(e.input).unwrap().name.clone() } else { "the input".into() };
            panic!("{} path, {name}: {e}", if fused { "fused" } else { "plain" });
        }
    }
}

fn input(shape: &[usize], seed: u64) -> Tensor<f64> {
    Tensor::randn(shape, 0.0, 1.0, &mut Rng::seed(seed ^ 0xabc))
}

fn gelu_kind() -> impl Strategy<Value = GeluKind> {
    prop_oneof![Just(GeluKind::Erf), Just(GeluKind::Tanh)]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn linear(b in 1usize..4, n in 1usize..4, i in 1usize..6, o in 1usize..6, bias: bool, seed: u64) {
        let mut store = ParamStore::new();
        let l = Linear::new(&mut store, "fc", i, o, bias, Init::Timm, &mut Rng::seed(seed));
        check_module(store, input(&[b, n, i], seed), seed, &l, 1);
    }

    #[test]
    fn layer_norm(rows in 1usize..5, d in 1usize..8, seed: u64) {
        let mut store = ParamStore::new();
        let ln = LayerNorm::new(&mut store, "norm", d, 1e-6);
        check_module(store, input(&[rows, d], seed), seed, &ln, 1);
    }

    #[test]
    fn attention(b in 1usize..3, n in 1usize..5, heads in 1usize..3, dh in 1usize..4, qkv_bias: bool, seed: u64) {
        let mut store = ParamStore::new();
        let a = Attention::new(&mut store, "attn", heads * dh, heads, qkv_bias, 0.0, 0.0, Init::Timm, &mut Rng::seed(seed));
        check_module(store, input(&[b, n, heads * dh], seed), seed, &a, 1);
    }

    #[test]
    fn mlp(b in 1usize..3, n in 1usize..4, d in 1usize..5, hidden in 1usize..7, kind in gelu_kind(), seed: u64) {
        let mut store = ParamStore::new();
        let m = Mlp::new(&mut store, "mlp", d, hidden, kind, 0.0, Init::Timm, &mut Rng::seed(seed));
        check_module(store, input(&[b, n, d], seed), seed, &m, 1);
    }

    #[test]
    fn block_with_dropout_and_drop_path(b in 1usize..3, n in 1usize..4, heads in 1usize..3, dh in 1usize..4, seed: u64) {
        // Layer norm over 2 features is nearly degenerate (its output is +-1 per pair), which
        // leaves central differences too noisy for 1e-6; width 3 and up is well conditioned.
        prop_assume!(heads * dh >= 3);
        let c = ViTConfig { dim: heads * dh, heads, mlp_dim: 5, dropout: 0.2, attn_dropout: 0.3, ..ViTConfig::tiny(1, 1) };
        let mut store = ParamStore::new();
        let blk = Block::new(&mut store, "blocks.0", &c, 0.25, &mut Rng::seed(seed));
        check_module(store, input(&[b, n, c.dim], seed), seed, &blk, seed);
    }

    #[test]
    fn block_with_fused_stochastic_depth(b in 1usize..4, n in 1usize..4, heads in 1usize..3, dh in 1usize..4, seed: u64) {
        // No dropout: each branch's last Linear, drop-path scale and residual sum are one op.
        prop_assume!(heads * dh >= 3);
        let c = ViTConfig { dim: heads * dh, heads, mlp_dim: 5, ..ViTConfig::tiny(1, 1) };
        let mut store = ParamStore::new();
        let blk = Block::new(&mut store, "blocks.0", &c, 0.4, &mut Rng::seed(seed));
        check_module(store, input(&[b, n, c.dim], seed), seed, &blk, seed);
    }

    #[test]
    fn patch_embed(b in 1usize..3, chans in 1usize..3, patch in 1usize..3, grid in 1usize..3, d in 1usize..4, seed: u64) {
        let mut store = ParamStore::new();
        let pe = PatchEmbed::new(&mut store, "patch_embed", chans, patch, d, Init::Timm, &mut Rng::seed(seed));
        let side = patch * grid;
        check_module(store, input(&[b, chans, side, side], seed), seed, &pe, 1);
    }

    /// The hybrid's root: standardised 7x7/2 convolution, group norm, ReLU, 3x3/2 max-pool, all
    /// with SAME padding, on odd and even sides.
    #[test]
    fn resnet_stem(b in 1usize..3, chans in 1usize..3, width in 1usize..5, side in 3usize..10, seed: u64) {
        let mut store = ParamStore::new();
        let cfg = ResNetStemConfig { width, layers: vec![] };
        let stem = ResNetStem::new(&mut store, "backbone", chans, cfg, &mut Rng::seed(seed));
        check_module(store, input(&[b, chans, side, side], seed), seed, &stem, 1);
    }

    /// A bottleneck block of the hybrid's stages: 1x1, 3x3 (stride 1 or 2), 1x1 standardised
    /// convolutions with group norm and ReLU, the shortcut projected (1x1, same stride) or not,
    /// on odd and even sides.
    #[test]
    fn bottleneck(
        b in 1usize..3,
        (inp, mid, out) in (1usize..4, 1usize..4, 1usize..5),
        stride in 1usize..3,
        project: bool,
        side in 3usize..7,
        seed: u64,
    ) {
        // Without a projection the shortcut must already have the output's shape.
        let (inp, project) = if stride == 2 || inp != out { (inp, true) } else { (inp, project) };
        let mut store = ParamStore::new();
        let block = Bottleneck::new(&mut store, "blocks.0", (inp, mid, out), stride, project, &mut Rng::seed(seed));
        prop_assert_eq!(store.num_elements(), Bottleneck::num_params((inp, mid, out), project));
        check_module(store, input(&[b, inp, side, side], seed), seed, &block, 1);
    }
}

fn tiny_config(classifier: Classifier, representation_size: Option<usize>) -> ViTConfig {
    ViTConfig {
        image_size: 4,
        patch_size: 2,
        in_chans: 2,
        num_classes: 3,
        dim: 4,
        depth: 2,
        heads: 2,
        mlp_dim: 6,
        representation_size,
        classifier,
        ..ViTConfig::tiny(2, 4)
    }
}

#[test]
fn whole_tiny_vit_gradchecks_end_to_end() {
    // Token pooling; the paper's GAP (no class token, norm before the mean); timm's
    // `global_pool='avg'` (fc_norm after the mean), with a class token left out of it and without.
    let layouts = [
        (Classifier::Token, true, false, None),
        (Classifier::Gap, false, false, Some(5)),
        (Classifier::Gap, true, true, None),
        (Classifier::Gap, false, true, Some(5)),
    ];
    for (classifier, class_token, fc_norm, rep) in layouts {
        for train in [false, true] {
            let mut c = ViTConfig { class_token, fc_norm, ..tiny_config(classifier, rep) };
            if train {
                (c.dropout, c.attn_dropout, c.drop_path) = (0.1, 0.1, 0.2);
            }
            let mut store = ParamStore::new();
            let model = VisionTransformer::new(&c, &mut store, &mut Rng::seed(3)).unwrap();
            check_with(&mut store, input(&[2, 2, 4, 4], 9), 4, |g, p, x, fused| {
                g.set_training(train);
                let mut rng = Rng::seed(5);
                let mut cx = if fused { Ctx::new(&mut rng) } else { Ctx::plain(&mut rng) };
                model.forward(g, p, x, &mut cx)
            });
        }
    }
}

#[test]
fn whole_tiny_hybrid_gradchecks_end_to_end() {
    // 8 px -> the root's 2x2 feature map of width 2 -> four patches of one feature pixel; and
    // 12 px -> the root's 3x3 map, a one-block stage, a strided one-block stage (widths 8, 16,
    // middle widths rounded up to 8 as timm's) -> a 2x2 map of 16 channels.
    for (side, layers) in [(8, vec![]), (12, vec![1, 1])] {
        let c = ViTConfig {
            image_size: side,
            patch_size: 1,
            resnet: Some(ResNetStemConfig { width: 2, layers }),
            ..tiny_config(Classifier::Token, None)
        };
        assert_eq!(c.grid(), 2);
        let mut store = ParamStore::new();
        let model = VisionTransformer::new(&c, &mut store, &mut Rng::seed(3)).unwrap();
        assert_eq!(store.iter().map(|p| p.value.numel()).sum::<usize>(), c.num_params());
        check_module(store, input(&[2, 2, side, side], 9), 4, &model, 5);
    }
}

#[test]
fn every_parameter_receives_a_nonzero_gradient() {
    let mut c = tiny_config(Classifier::Token, Some(5));
    c.init = Init::Timm;
    let (model, mut store) = VisionTransformer::init::<f32>(&c, 0).unwrap();
    randomised_f32(&mut store);
    let mut g = Graph::new();
    let p = store.bind(&mut g);
    let x = g.input(Tensor::randn(&[3, 2, 4, 4], 0.0, 1.0, &mut Rng::seed(1)));
    let logits = model.forward(&mut g, &p, x, &mut Ctx::new(&mut Rng::seed(2)));
    let loss = g.cross_entropy(logits, &[0, 1, 2], 0.1);
    g.backward(loss);
    for (param, grad) in store.iter().zip(p.take_grads(&mut g)) {
        assert!(grad.norm() > 0.0, "{} received a zero gradient", param.name);
        assert!(grad.data().iter().all(|v| v.is_finite()), "{}", param.name);
    }
}

fn randomised_f32(store: &mut ParamStore<f32>) {
    let mut rng = Rng::seed(11);
    for p in store.iter_mut() {
        p.value = Tensor::randn(p.value.shape(), 0.0, 0.5, &mut rng);
    }
}

/// Plain multi-head attention by loops, for `x: [B, N, D]`.
fn attention_reference(
    x: &Tensor<f64>,
    wqkv: &Tensor<f64>,
    bqkv: &Tensor<f64>,
    wp: &Tensor<f64>,
    bp: &Tensor<f64>,
    heads: usize,
) -> (Tensor<f64>, Tensor<f64>) {
    let (b, n, d) = (x.dim(0), x.dim(1), x.dim(2));
    let dh = d / heads;
    let qkv = Tensor::<f64>::from_fn(&[b, n, 3 * d], |f| {
        let (bn, j) = (f / (3 * d), f % (3 * d));
        bqkv.data()[j] + (0..d).map(|i| x.data()[bn * d + i] * wqkv.at(&[j, i])).sum::<f64>()
    });
    let mut attn = Tensor::<f64>::zeros(&[b, heads, n, n]);
    let mut heads_out = Tensor::<f64>::zeros(&[b, n, d]);
    for bi in 0..b {
        for h in 0..heads {
            for i in 0..n {
                let s: Vec<f64> = (0..n)
                    .map(|j| {
                        (0..dh).map(|e| qkv.at(&[bi, i, h * dh + e]) * qkv.at(&[bi, j, d + h * dh + e])).sum::<f64>()
                            / (dh as f64).sqrt()
                    })
                    .collect();
                let mx = s.iter().cloned().fold(f64::MIN, f64::max);
                let z: f64 = s.iter().map(|v| (v - mx).exp()).sum();
                for (j, sj) in s.iter().enumerate() {
                    attn.set(&[bi, h, i, j], (sj - mx).exp() / z);
                }
                for e in 0..dh {
                    let v: f64 = (0..n).map(|j| attn.at(&[bi, h, i, j]) * qkv.at(&[bi, j, 2 * d + h * dh + e])).sum();
                    heads_out.set(&[bi, i, h * dh + e], v);
                }
            }
        }
    }
    let y = Tensor::from_fn(&[b, n, d], |f| {
        let (bn, j) = (f / d, f % d);
        bp.data()[j] + (0..d).map(|i| heads_out.data()[bn * d + i] * wp.at(&[j, i])).sum::<f64>()
    });
    (y, attn)
}

#[test]
fn attention_forward_matches_loops() {
    for (b, n, heads, dh) in [(1, 1, 1, 1), (2, 5, 3, 2), (1, 7, 2, 4)] {
        let d = heads * dh;
        let mut store = ParamStore::<f64>::new();
        let a = Attention::new(&mut store, "attn", d, heads, true, 0.0, 0.0, Init::Timm, &mut Rng::seed(0));
        let params = randomised(&mut store, 7);
        let x = input(&[b, n, d], 3);
        let mut g = Graph::inference();
        let p = store.bind(&mut g);
        let xv = g.input(x.clone());
        let (y, attn) = attention_reference(&x, &params[0], &params[1], &params[2], &params[3], heads);
        for fused in [true, false] {
            let mut rng = Rng::seed(0);
            let cx = if fused { Ctx::new(&mut rng) } else { Ctx::plain(&mut rng) };
            let mut cx = cx.with_attention();
            let out = a.forward(&mut g, &p, xv, &mut cx);
            let maps = cx.attention.unwrap();
            assert!(
                g.value(out).allclose(&y, 1e-12, 1e-12),
                "output differs for {:?}, fused {fused}",
                (b, n, heads, dh)
            );
            assert!(g.value(maps[0]).allclose(&attn, 1e-12, 1e-12), "attention differs, fused {fused}");
        }
    }
}

#[test]
fn patch_embed_is_the_strided_convolution() {
    // Direct convolution with kernel = stride = P, as the paper's eq. 1 is usually implemented.
    let (b, c, p, grid, d) = (2, 3, 2, 3, 4);
    let side = p * grid;
    let mut store = ParamStore::<f64>::new();
    let pe = PatchEmbed::new(&mut store, "patch_embed", c, p, d, Init::Timm, &mut Rng::seed(0));
    let params = randomised(&mut store, 1);
    let (w, bias) = (&params[0], &params[1]);
    let x = input(&[b, c, side, side], 2);
    let mut g = Graph::inference();
    let pv = store.bind(&mut g);
    let xv = g.input(x.clone());
    let y = pe.forward(&mut g, &pv, xv, &mut Ctx::new(&mut Rng::seed(0)));
    let y = g.value(y);
    assert_eq!(y.shape(), &[b, grid * grid, d]);
    for bi in 0..b {
        for gy in 0..grid {
            for gx in 0..grid {
                for o in 0..d {
                    let mut acc = bias.at(&[o]);
                    for ci in 0..c {
                        for ky in 0..p {
                            for kx in 0..p {
                                acc += w.at(&[o, ci, ky, kx]) * x.at(&[bi, ci, gy * p + ky, gx * p + kx]);
                            }
                        }
                    }
                    let got = y.at(&[bi, gy * grid + gx, o]);
                    assert!((got - acc).abs() < 1e-12, "{got} vs {acc}");
                }
            }
        }
    }
}

#[test]
fn eval_mode_is_deterministic_and_ignores_dropout() {
    let mut c = tiny_config(Classifier::Token, None);
    (c.dropout, c.attn_dropout, c.drop_path) = (0.5, 0.5, 0.5);
    let (model, store) = VisionTransformer::init::<f32>(&c, 0).unwrap();
    let x = Tensor::randn(&[2, 2, 4, 4], 0.0, 1.0, &mut Rng::seed(1));
    let run = |seed: u64, train: bool| {
        let mut g = if train { Graph::new() } else { Graph::inference() };
        let p = store.bind(&mut g);
        let xv = g.input(x.clone());
        let logits = model.forward(&mut g, &p, xv, &mut Ctx::new(&mut Rng::seed(seed)));
        g.value(logits).clone()
    };
    assert_eq!(run(1, false).data(), run(2, false).data());
    assert_ne!(run(1, true).data(), run(2, true).data());
}

#[test]
fn forward_returns_every_blocks_attention() {
    let c = tiny_config(Classifier::Token, None);
    let (model, store) = VisionTransformer::init::<f32>(&c, 0).unwrap();
    let mut g = Graph::inference();
    let p = store.bind(&mut g);
    let x = g.input(Tensor::randn(&[2, 2, 4, 4], 0.0, 1.0, &mut Rng::seed(1)));
    let out = model.forward_with_attention(&mut g, &p, x, &mut Rng::seed(0));
    assert_eq!(out.attn.len(), c.depth);
    for a in out.attn {
        let t = g.value(a);
        assert_eq!(t.shape(), &[2, 2, 5, 5]);
        for row in t.data().chunks(5) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
    }
}
