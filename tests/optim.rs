//! Optimizers against steps computed by hand, schedule values, clipping.

use autograd::Tensor;
use vit::nn::ParamStore;
use vit::optim::{clip_grad_norm, AdamW, Decay, LrSchedule, Optimizer, Sgd};

fn store(decay: bool) -> ParamStore<f32> {
    let mut s = ParamStore::new();
    s.add("w", Tensor::from_f64s(&[1.0, -2.0], &[2]), decay);
    s
}

#[test]
fn adamw_first_two_steps_by_hand() {
    let mut p = store(true);
    let mut opt = AdamW::new(&p, 0.9, 0.999, 1e-8, 0.1);
    let g = [Tensor::from_f64s(&[0.5, -1.0], &[2])];
    opt.step(&mut p, &g, 0.01);
    // Step 1: m = 0.1 g, v = 0.001 g^2, mhat = g, vhat = g^2, update = g/|g| = sign(g).
    // w = w (1 - 0.01*0.1) - 0.01 * sign(g)
    let w1 = [1.0 * (1.0 - 0.001) - 0.01, -2.0 * (1.0 - 0.001) + 0.01];
    for (a, b) in p.iter().next().unwrap().value.data().iter().zip(w1) {
        assert!((*a as f64 - b).abs() < 1e-6, "{a} vs {b}");
    }
    // Step 2 with gradient g2: m = 0.9 m + 0.1 g2, v = 0.999 v + 0.001 g2^2.
    let g2 = [Tensor::from_f64s(&[1.0, 0.0], &[2])];
    opt.step(&mut p, &g2, 0.01);
    let (g1v, g2v) = ([0.5, -1.0], [1.0, 0.0]);
    for i in 0..2 {
        let m = 0.9 * 0.1 * g1v[i] + 0.1 * g2v[i];
        let v = 0.999 * 0.001 * g1v[i] * g1v[i] + 0.001 * g2v[i] * g2v[i];
        let (mhat, vhat) = (m / (1.0 - 0.81), v / (1.0 - 0.999f64.powi(2)));
        let want = w1[i] * (1.0 - 0.001) - 0.01 * mhat / (vhat.sqrt() + 1e-8);
        let got = p.iter().next().unwrap().value.data()[i] as f64;
        assert!((got - want).abs() < 1e-6, "element {i}: {got} vs {want}");
    }
}

#[test]
fn adamw_skips_decay_where_it_is_off() {
    let mut p = store(false);
    let mut opt = AdamW::new(&p, 0.9, 0.999, 1e-8, 0.5);
    opt.step(&mut p, &[Tensor::zeros(&[2])], 0.1);
    assert_eq!(p.iter().next().unwrap().value.data(), &[1.0, -2.0]);
    let mut p = store(true);
    let mut opt = AdamW::new(&p, 0.9, 0.999, 1e-8, 0.5);
    opt.step(&mut p, &[Tensor::zeros(&[2])], 0.1);
    assert_eq!(p.iter().next().unwrap().value.data(), &[0.95, -1.9]);
}

#[test]
fn sgd_momentum_by_hand() {
    let mut p = store(true);
    let mut opt = Sgd::new(&p, 0.9, 0.01, false);
    let g = [Tensor::from_f64s(&[1.0, 1.0], &[2])];
    opt.step(&mut p, &g, 0.1);
    // d = g + 0.01 w = [1.01, 0.98]; b = d; w -= 0.1 b.
    let w1 = [1.0 - 0.101, -2.0 - 0.098];
    opt.step(&mut p, &g, 0.1);
    // d2 = 1 + 0.01 w1; b = 0.9 b + d2; w -= 0.1 b.
    let d1 = [1.01, 0.98];
    for i in 0..2 {
        let b = 0.9 * d1[i] + (1.0 + 0.01 * w1[i]);
        let want = w1[i] - 0.1 * b;
        let got = p.iter().next().unwrap().value.data()[i] as f64;
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }
}

#[test]
fn optimizer_state_round_trips() {
    let mut p = store(true);
    let mut a = AdamW::new(&p, 0.9, 0.999, 1e-8, 0.1);
    a.step(&mut p, &[Tensor::from_f64s(&[0.3, 0.7], &[2])], 0.01);
    let (tensors, step) = a.state(&p);
    let mut b = AdamW::new(&p, 0.9, 0.999, 1e-8, 0.1);
    b.load_state(&p, step, &mut |n| tensors.iter().find(|(k, _)| k == n).map(|(_, t)| t.clone())).unwrap();
    let (mut p1, mut p2) = (p.clone(), p.clone());
    let g = [Tensor::from_f64s(&[-0.2, 0.4], &[2])];
    a.step(&mut p1, &g, 0.01);
    b.step(&mut p2, &g, 0.01);
    assert_eq!(p1.iter().next().unwrap().value.data(), p2.iter().next().unwrap().value.data());
    let err = b.load_state(&p, 1, &mut |_| None).unwrap_err().to_string();
    assert!(err.contains("optim.exp_avg.w"), "{err}");
}

#[test]
fn warmup_then_cosine_and_linear() {
    let s = LrSchedule { base_lr: 1.0, min_lr: 0.0, warmup_steps: 4, total_steps: 14, decay: Decay::Cosine };
    assert_eq!(s.lr(0), 0.25);
    assert_eq!(s.lr(3), 1.0);
    assert!((s.lr(4) - 1.0).abs() < 1e-12);
    assert!((s.lr(9) - 0.5).abs() < 1e-12); // halfway through the decay
    assert!(s.lr(14).abs() < 1e-12);
    assert!(s.lr(100).abs() < 1e-12);
    let l = LrSchedule { decay: Decay::Linear, min_lr: 0.1, ..s.clone() };
    assert!((l.lr(9) - 0.55).abs() < 1e-12);
    assert!((l.lr(6) - (0.1 + 0.9 * 0.8)).abs() < 1e-12);
}

#[test]
fn clipping_scales_to_the_max_norm_only_when_above_it() {
    let mut g = vec![Tensor::from_f64s(&[3.0], &[1]), Tensor::from_f64s(&[4.0], &[1])];
    let n = clip_grad_norm(&mut g, 1.0);
    assert!((n - 5.0).abs() < 1e-6);
    assert!((g[0].data()[0] - 0.6).abs() < 1e-5 && (g[1].data()[0] - 0.8).abs() < 1e-5);
    let mut g = vec![Tensor::from_f64s(&[0.3], &[1])];
    clip_grad_norm(&mut g, 1.0);
    assert_eq!(g[0].data(), &[0.3f32]);
    let mut g = vec![Tensor::from_f64s(&[f64::NAN], &[1])];
    assert!(clip_grad_norm(&mut g, 1.0).is_nan());
}

/// AdamW against an f64 reference with the exact hyper-parameters, over several steps, tight
/// enough to see how `1 - beta2` is formed: from an f32-rounded `beta2 = 0.999` it is 1.3e-5 too
/// small, which makes `v` 1.3e-5 and every update about 6.4e-6 (relative) off. The weights are
/// reset to zero before each step (the moments carry on), so each step's result is one update,
/// which f32 holds to a few ulps (3e-7 measured; the old `1 - beta` in f32 is 7e-6 off).
#[test]
fn adamw_matches_an_f64_reference() {
    let n = 64;
    let mut s = ParamStore::new();
    let id = s.add("w", Tensor::zeros(&[n]), true);
    let (b1, b2, eps, wd, lr) = (0.9f64, 0.999f64, 1e-8f64, 0.05f64, 1e-3f64);
    let mut opt = AdamW::new(&s, b1, b2, eps, wd);
    let (mut m, mut v) = (vec![0.0f64; n], vec![0.0f64; n]);
    // One sign per coordinate, so that `m` never cancels and one update is a few roundings.
    let grad =
        |t: usize, i: usize| if i.is_multiple_of(2) { 1.0 } else { -1.0 } * (0.05 + ((i * 37 + t * 11) % 23) as f64 / 23.0);
    let rel = |got: f32, want: f64| (got as f64 - want).abs() / want.abs();
    for t in 1..=6 {
        let g: Vec<f64> = (0..n).map(|i| grad(t, i)).collect();
        s.get_mut(id).value = Tensor::zeros(&[n]);
        opt.step(&mut s, &[Tensor::from_f64s(&g, &[n])], lr);
        let (bc1, bc2) = (1.0 - b1.powi(t as i32), 1.0 - b2.powi(t as i32));
        let (state, _) = opt.state(&s);
        let got_v = state.iter().find(|(k, _)| k == "optim.exp_avg_sq.w").unwrap().1.data().to_vec();
        let got_w = s.get(id).value.data().to_vec();
        for i in 0..n {
            // The gradient as the optimizer saw it (rounded to f32); decay of 0 is 0.
            let gi = g[i] as f32 as f64;
            m[i] = b1 * m[i] + (1.0 - b1) * gi;
            v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
            let w = -lr * (m[i] / bc1) / ((v[i] / bc2).sqrt() + eps);
            assert!(
                rel(got_v[i], v[i]) < 1e-6,
                "step {t}: v[{i}] = {} vs {} (relative {:.2e})",
                got_v[i],
                v[i],
                rel(got_v[i], v[i])
            );
            assert!(
                rel(got_w[i], w) < 1e-6,
                "step {t}: update[{i}] = {} vs {w} (relative {:.2e})",
                got_w[i],
                rel(got_w[i], w)
            );
        }
    }
}
