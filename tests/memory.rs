//! The per-block listing of what a training step keeps for backward (`VisionTransformer::
//! memory_report`) against the tape itself and against the sizes a reader derives by hand.

use autograd::memory::Held;
use autograd::{Graph, Rng, Tensor};
use vit::nn::{Ctx, Module, ViTConfig, VisionTransformer};

fn config() -> ViTConfig {
    let mut c = ViTConfig::tiny(4, 8); // 4 patches + the class token: N = 5
    (c.num_classes, c.dim, c.depth, c.heads, c.mlp_dim, c.in_chans) = (3, 8, 2, 2, 16, 1);
    c
}

#[test]
fn a_fused_block_keeps_qkv_heads_and_two_residual_streams_and_recomputes_the_rest() {
    let c = config();
    let (model, store) = VisionTransformer::init::<f32>(&c, 0).unwrap();
    let (b, n, d) = (3, c.num_tokens(), c.dim);
    let report = model.memory_report(&store, b, true);
    println!("{report}");
    assert_eq!(report.segments.len(), 1 + c.depth, "the embedding, then one segment per block");
    for s in &report.segments[1..] {
        let ops: Vec<(&str, Held)> = s.entries.iter().map(|e| (e.op.split('(').next().unwrap(), e.held)).collect();
        assert_eq!(
            ops,
            [
                ("layer_norm", Held::Recomputed),
                ("linear", Held::Kept), // qkv: [B, N, 3D]
                ("attention", Held::Kept),
                ("linear", Held::Kept), // z' = z + proj(..)
                ("layer_norm", Held::Recomputed),
                ("linear_gelu", Held::Recomputed),
                ("linear", Held::Kept), // z + fc2(..)
            ],
            "{s}"
        );
        // qkv 3D, the heads D, z' D and the block's output D per token, plus each layer norm's
        // mean and rstd per token and fc1's pre-activation (mlp_dim per token); f32.
        let h = c.mlp_dim;
        assert_eq!(s.kept_bytes(), 4 * b * n * (3 * d + d + d + d) + 2 * 4 * 2 * b * n + 4 * b * n * h, "{s}");
    }
}

#[test]
fn the_listing_is_what_the_tape_holds() {
    let c = config();
    let (model, store) = VisionTransformer::init::<f32>(&c, 0).unwrap();
    for fused in [true, false] {
        let mut g = Graph::new();
        let p = store.bind(&mut g);
        let x = g.input(Tensor::zeros(&[2, 1, 8, 8]));
        let mut rng = Rng::seed(0);
        let mut cx = if fused { Ctx::new(&mut rng) } else { Ctx::plain(&mut rng) };
        model.forward(&mut g, &p, x, &mut cx);
        let memory = g.memory();
        let listed: usize = memory.iter().map(|s| s.kept_bytes()).sum();
        for s in &memory {
            for e in &s.entries {
                assert_eq!(g.holds(e.var), e.held == Held::Kept, "{} {:?}", e.op, e.held);
                // A reshape is a view of its input's buffer, which the input already counts.
                if g.holds(e.var) && !e.op.starts_with("reshape") {
                    assert_eq!(e.value_bytes, g.value(e.var).numel() * 4, "{}", e.op);
                }
            }
        }
        // Beyond the segments the tape holds eq. 4's values: LN(z_L) [B, N, D] and its two
        // statistics per token, the class token [B, 1, D] (its reshape to [B, D] is a view), the logits.
        let (bn, d) = (2 * c.num_tokens(), c.dim);
        let rest = 4 * (bn * d + 2 * bn + 2 * d + 2 * c.num_classes);
        assert_eq!(listed + rest, g.held_bytes(), "fused {fused}");
    }
}

#[test]
fn the_plain_path_keeps_more() {
    let c = config();
    let (model, store) = VisionTransformer::init::<f32>(&c, 0).unwrap();
    let fused = model.memory_report(&store, 4, true);
    let plain = model.memory_report(&store, 4, false);
    println!("{plain}");
    assert!(plain.total_bytes > fused.total_bytes, "plain {} vs fused {}", plain.total_bytes, fused.total_bytes);
}
