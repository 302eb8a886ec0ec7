//! Inverted dropout: every output is 0 or x / (1 - p), backward applies the same mask,
//! gradients match finite differences under a fixed seed, eval mode and p = 0 are the identity,
//! and the kept fraction and the mean come out as the probabilities say.

use crate::common::*;
use autograd::{Graph, Rng, Tensor};
use proptest::prelude::*;

/// Runs dropout in training mode on `x` with `seed`; returns (y, dL/dx) for the upstream `seed_grad`.
fn run(x: &Tensor<f64>, p: f64, seed: u64, seed_grad: &Tensor<f64>) -> (Tensor<f64>, Tensor<f64>) {
    let mut g = Graph::<f64>::new();
    let xv = g.param(x);
    let y = g.dropout(xv, p, &mut Rng::seed(seed));
    g.backward_with(y, seed_grad.clone());
    (g.value(y).clone(), g.grad(xv).unwrap().clone())
}

/// Tensors with no zero element, so the mask can be read back off the output.
fn nonzero(s: Vec<usize>) -> impl Strategy<Value = Tensor<f64>> {
    tensor_in(s, 0.5, 2.0)
        .prop_map(|t| Tensor::from_fn(t.shape(), |i| if i % 2 == 0 { t.data()[i] } else { -t.data()[i] }))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn forward_and_backward_match_the_elementwise_definition(
        x in shape(0, 3, 7).prop_flat_map(nonzero), p in prop_oneof![Just(0.1), Just(0.5), 0.01..0.99], seed in any::<u64>()
    ) {
        let gr = x.map(|v| v * 3.0 + 1.0);
        let (y, dx) = run(&x, p, seed, &gr);
        let s = 1.0 / (1.0 - p);
        for i in 0..x.numel() {
            // Reference: element i was either dropped (y = 0, dx = 0) or kept (y = s x, dx = s g).
            let (xi, yi, gi, dxi) = (x.data()[i], y.data()[i], gr.data()[i], dx.data()[i]);
            let kept = yi != 0.0;
            let (want_y, want_dx) = if kept { (s * xi, s * gi) } else { (0.0, 0.0) };
            prop_assert!((yi - want_y).abs() <= 1e-15 * want_y.abs(), "element {i}: y {yi}, want {want_y}");
            prop_assert!((dxi - want_dx).abs() <= 1e-15 * want_dx.abs(), "element {i}: dx {dxi}, want {want_dx}");
        }
        // The same seed gives the same mask.
        let again = run(&x, p, seed, &gr).0;
        prop_assert_eq!(again.data(), y.data());
    }

    #[test]
    fn gradients_match_finite_differences(x in shape(0, 3, 7).prop_flat_map(tensor), p in prop_oneof![Just(0.1), Just(0.5)], k in any::<u64>()) {
        // A fresh generator with the same seed in every evaluation: the mask never changes.
        assert_gradcheck(|g, v| g.dropout(v[0], p, &mut Rng::seed(k)), &[x]);
    }
}

#[test]
fn eval_mode_and_zero_p_are_the_identity_and_record_nothing() {
    let x = Tensor::<f32>::from_fn(&[3, 4], |i| i as f32 - 5.0);
    let mut rng = Rng::seed(1);
    let before = rng.clone();
    let mut g = Graph::<f32>::new();
    let xv = g.param(&x);
    assert_eq!(g.dropout(xv, 0.0, &mut rng), xv);
    g.set_training(false);
    assert_eq!(g.dropout(xv, 0.5, &mut rng), xv);
    assert_eq!(g.len(), 1, "no node was added");
    assert_eq!(rng, before, "the identity draws nothing");
    let mut inference = Graph::<f32>::inference();
    let xi = inference.input(x.clone());
    assert_eq!(inference.dropout(xi, 0.9, &mut rng), xi);
}

#[test]
fn training_keeps_about_1_minus_p_and_preserves_the_mean() {
    // 200k elements, well above the parallel grain. The kept fraction has standard deviation
    // sqrt(p (1-p) / n) <= 0.0012, so 0.006 is five of them.
    let n = 200_000;
    for p in [0.1, 0.5, 0.9] {
        let mut g = Graph::<f32>::new();
        let x = g.param(&Tensor::full(&[4, n / 4], 2.0));
        let y = g.dropout(x, p, &mut Rng::seed(42));
        let kept = g.value(y).data().iter().filter(|&&v| v != 0.0).count() as f64 / n as f64;
        assert!((kept - (1.0 - p)).abs() < 0.006, "p {p}: kept {kept}");
        let mean = g.value(y).sum_all() / n as f64;
        assert!((mean - 2.0).abs() < 2.0 * 0.006 / (1.0 - p), "p {p}: mean {mean}");
    }
}

#[test]
fn the_mask_depends_on_the_seed_only_not_on_the_thread_count() {
    let x = Tensor::<f32>::ones(&[300, 333]);
    let mask_with = |threads: usize, seed: u64| -> Vec<f32> {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut g = Graph::<f32>::new();
            let xv = g.input(x.clone());
            let y = g.dropout(xv, 0.3, &mut Rng::seed(seed));
            g.value(y).data().to_vec()
        })
    };
    let one = mask_with(1, 7);
    assert_eq!(one, mask_with(4, 7));
    assert_ne!(one, mask_with(1, 8), "another seed, another mask");
}

#[test]
fn successive_calls_draw_new_masks_and_advance_the_generator_once() {
    let x = Tensor::<f32>::ones(&[1, 64]);
    let mut rng = Rng::seed(3);
    let mut g = Graph::<f32>::new();
    let xv = g.input(x);
    let a = g.dropout(xv, 0.5, &mut rng);
    let b = g.dropout(xv, 0.5, &mut rng);
    assert_ne!(g.value(a).data(), g.value(b).data());
    let mut twice = Rng::seed(3);
    rand::RngCore::next_u64(&mut twice);
    rand::RngCore::next_u64(&mut twice);
    assert_eq!(rng, twice, "one draw per call");
}

#[test]
#[should_panic(expected = "dropout: p must be in [0, 1), got 1")]
fn p_of_one_panics_naming_the_op() {
    let mut g = Graph::<f32>::new();
    let x = g.input(Tensor::zeros(&[2]));
    g.dropout(x, 1.0, &mut Rng::seed(0));
}
