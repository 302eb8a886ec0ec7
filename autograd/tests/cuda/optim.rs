//! Optimizer steps and global-norm clipping on the device against the CPU formulas.

use std::sync::Arc;

use autograd::cuda::prims::optim;
use autograd::cuda::Gpu;
use autograd::kernels::rows::{AdamW, Rows};
use autograd::Tensor;
use proptest::prelude::*;

use crate::harness::{close, prop, Tests};
use crate::util::{random, up};

pub const TESTS: Tests = &[
    ("optim::adamw_matches_the_cpu_kernel", adamw),
    ("optim::sgd_with_momentum", sgd),
    ("optim::global_norm_and_clipping", clipping),
];

fn adamw(gpu: &Arc<Gpu>) -> Result<(), String> {
    let case = (1usize..5000, 1u32..50, any::<bool>(), any::<u64>());
    prop(case, |(n, t, decay, seed)| {
        let p = random::<f32>(&[n], seed, -1.0, 1.0);
        let g = random::<f32>(&[n], seed ^ 1, -1.0, 1.0);
        let m = random::<f32>(&[n], seed ^ 2, -0.1, 0.1);
        let v = random::<f32>(&[n], seed ^ 3, 0.0, 0.01);
        let h = AdamW::at_step(t as u64, 1e-3, (0.9, 0.999), 1e-8, if decay { 0.05 } else { 0.0 });
        let (pd, gd, md, vd) = (up(gpu, &p), up(gpu, &g), up(gpu, &m), up(gpu, &v));
        optim::adamw(&pd, &gd, &md, &vd, &h);
        let (mut pc, mut mc, mut vc) = (p.clone(), m.clone(), v.clone());
        Rows::active().adamw(pc.data_mut(), g.data(), (mc.data_mut(), vc.data_mut()), &h);
        // The same f32 arithmetic, fused multiply-adds included: within an ulp or two.
        close("adamw p", &pd.to_vec(), pc.data(), 1e-6)?;
        close("adamw m", &md.to_vec(), mc.data(), 1e-6)?;
        close("adamw v", &vd.to_vec(), vc.data(), 1e-6)
    })
}

fn sgd(gpu: &Arc<Gpu>) -> Result<(), String> {
    let case = (1usize..5000, any::<bool>(), any::<bool>(), any::<u64>());
    prop(case, |(n, first, nesterov, seed)| {
        let p = random::<f32>(&[n], seed, -1.0, 1.0);
        let g = random::<f32>(&[n], seed ^ 1, -1.0, 1.0);
        let b = random::<f32>(&[n], seed ^ 2, -1.0, 1.0);
        let (lr, mu, wd) = (0.1f32, 0.9f32, 1e-4f32);
        let (pd, gd, bd) = (up(gpu, &p), up(gpu, &g), up(gpu, &b));
        optim::sgd(&pd, &gd, &bd, lr, mu, wd, first, nesterov);
        // torch.optim.SGD, as src/optim/sgd.rs computes it.
        let (mut pc, mut bc) = (p.data().to_vec(), b.data().to_vec());
        for i in 0..n {
            let d = g.data()[i] + wd * pc[i];
            bc[i] = if first { d } else { mu * bc[i] + d };
            pc[i] -= lr * if nesterov { d + mu * bc[i] } else { bc[i] };
        }
        close("sgd p", &pd.to_vec(), &pc, 1e-6)?;
        close("sgd momentum", &bd.to_vec(), &bc, 1e-6)
    })
}

fn clipping(gpu: &Arc<Gpu>) -> Result<(), String> {
    let sizes = prop::collection::vec(0usize..20_000, 1..6);
    prop((sizes, 0.01..100.0f64, any::<u64>()), |(sizes, max_norm, seed)| {
        let grads: Vec<Tensor<f32>> =
            sizes.iter().enumerate().map(|(i, &n)| random(&[n], seed ^ i as u64, -1.0, 1.0)).collect();
        let devs: Vec<_> = grads.iter().map(|t| up(gpu, t)).collect();
        let refs: Vec<_> = devs.iter().collect();
        let sumsq = optim::sum_of_squares(gpu, &refs);
        let want: f64 = grads.iter().flat_map(|g| g.data().iter()).map(|&x| x as f64 * x as f64).sum();
        close("sum of squares", &sumsq.to_vec(), &[want], 1e-12)?;
        optim::clip(&refs, &sumsq, max_norm);
        let norm = want.sqrt();
        let s = if norm > max_norm { (max_norm / (norm + 1e-6)) as f32 } else { 1.0 };
        for (g, d) in grads.iter().zip(&devs) {
            let scaled: Vec<f32> = g.data().iter().map(|&x| x * s).collect();
            close("clipped gradient", &d.to_vec(), &scaled, 0.0)?;
        }
        Ok(())
    })
}
