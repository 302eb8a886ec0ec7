//! Times the pieces of ViT-Ti/4's fc1 at batch 128 on one thread (rows = 128 x 65 tokens): the
//! GELU kernels alone on its 8320 x 768 output, and the op as a bare product, with its bias and
//! with bias and GELU (`linear_gelu`), best of 15 each; and the fused op's backward side, GELU with
//! its derivative in one pass and the multiply by it. The figures in BENCHMARKS.md's "epilogues and the
//! unrolled GELU" section; run it from two builds in turn to compare them.
//!
//!     AUTOGRAD_ISA=avx2 cargo run --release -p vit-autograd --example fc1_timing

use std::time::Instant;

use autograd::kernels::rows::{GeluKind, Rows};
use autograd::{Graph, Rng, Tensor};

/// The best of 15 runs of `f`, in milliseconds.
fn best_ms(mut f: impl FnMut()) -> f64 {
    (0..15)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let (batch, tokens, d, hidden) = (128, 65, 192, 768);
    let n = batch * tokens * hidden;
    let mut rng = Rng::seed(1);
    let x = Tensor::<f32>::randn(&[batch, tokens, d], 0.0, 1.0, &mut rng);
    let w1 = Tensor::<f32>::randn(&[hidden, d], 0.0, 0.05, &mut rng);
    let b1 = Tensor::<f32>::randn(&[hidden], 0.0, 0.05, &mut rng);
    let h: Vec<f32> = (0..n).map(|i| ((i * 7919) % 20011) as f32 / 20011.0 * 8.0 - 4.0).collect();
    let (mut out, dy) = (vec![0.0f32; n], vec![1.0f32; n]);
    let rows = Rows::active();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("a one-thread pool");
    pool.install(|| {
        let fwd = best_ms(|| rows.gelu_forward(GeluKind::Erf, &h, &mut out));
        let bwd = best_ms(|| rows.gelu_backward(GeluKind::Erf, &h, &dy, &mut out));
        let per = |ms: f64| ms * 1e6 / n as f64;
        println!("{}: GELU (erf) on {n} elements: forward {fwd:.2} ms ({:.2} ns each), backward {bwd:.2} ms ({:.2} ns each)", rows.isa(), per(fwd), per(bwd));
        // The fused op's backward side: the recompute of gelu(h) with gelu'(h) beside it, then
        // the multiply by the saved derivative (against forward + backward, above).
        let mut dg = vec![0.0f32; n];
        let both = best_ms(|| rows.gelu_forward_grad(GeluKind::Erf, &h, &mut out, &mut dg));
        let scale = best_ms(|| {
            for (d, &g) in dg.iter_mut().zip(&dy) {
                *d *= g;
            }
        });
        println!(
            "{}: GELU and GELU' in one pass {both:.2} ms ({:.2} ns each); the multiply by the saved GELU' {scale:.2} ms ({:.2} ns each)",
            rows.isa(),
            per(both),
            per(scale)
        );
        // Each op on a fresh tape; only the op itself is timed.
        let op = |f: &dyn Fn(&mut Graph<f32>, [autograd::Var; 3])| {
            (0..15)
                .map(|_| {
                    let mut g = Graph::<f32>::new();
                    let v = [g.param(&x), g.param(&w1), g.param(&b1)];
                    let t = Instant::now();
                    f(&mut g, v);
                    t.elapsed().as_secs_f64() * 1e3
                })
                .fold(f64::INFINITY, f64::min)
        };
        let fc1 = op(&|g, v| {
            g.linear(v[0], v[1], None);
        });
        let fc1_bias = op(&|g, v| {
            g.linear(v[0], v[1], Some(v[2]));
        });
        let fc1_gelu = op(&|g, v| {
            g.linear_gelu(v[0], v[1], v[2], GeluKind::Erf);
        });
        println!("fc1 {batch}x{tokens}x{d} -> {hidden}: product {fc1:.2} ms, + bias {fc1_bias:.2} ms, + bias + GELU {fc1_gelu:.2} ms");
    });
}
