//! Finite-difference gradient checking, in the spirit of `torch.autograd.gradcheck`.
//!
//! For a function `f` of several tensors, the analytic gradient from backward is compared with
//! central differences for *every* element of every input:
//!
//! ```text
//!     numeric_ij = < r, f(x_i + eps e_j) - f(x_i - eps e_j) > / (2 eps)
//! ```
//!
//! where `r` is a fixed random tensor of `f`'s output shape. Projecting onto `r` turns any
//! output into the scalar `s = <r, f>` whose gradient is `J^T r`, so one backward checks every
//! column of the Jacobian against a random combination of its rows; an error in any output's
//! gradient shows up unless it is exactly orthogonal to `r`, which a random `r` makes a
//! probability-zero event.
//!
//! The difference of the two outputs is taken before the dot product with `r`: outputs that the
//! perturbed element does not touch cancel exactly, so only the touched ones contribute
//! rounding noise. In f64 with `eps = 1e-6` the truncation error is `O(eps^2) ~ 1e-12` and the
//! rounding error about `1e-16 |y| / eps ~ 1e-10 |y|` over the touched outputs `y`, so
//! tolerances of `1e-6` relative or `1e-8` absolute leave room only for a correct gradient.

use std::fmt;

use crate::graph::{Graph, Var};
use crate::rng::Rng;
use crate::tensor::Tensor;

/// Step and tolerances. An element passes if `|analytic - numeric| <= atol` or
/// `|analytic - numeric| <= rtol * max(|analytic|, |numeric|)`.
#[derive(Clone, Debug)]
pub struct GradcheckOptions {
    /// The finite-difference step h of `(f(x + h) - f(x - h)) / 2h`: small enough that the
    /// O(h^2) truncation error is negligible, large enough that f64 rounding (~1e-16 / h) is too.
    pub eps: f64,
    /// Relative tolerance, against the larger of the two gradients' magnitudes.
    pub rtol: f64,
    /// Absolute tolerance, for elements whose gradient is (near) zero.
    pub atol: f64,
    /// Seed of the projection `r`.
    pub seed: u64,
}

impl Default for GradcheckOptions {
    fn default() -> Self {
        GradcheckOptions { eps: 1e-6, rtol: 1e-6, atol: 1e-8, seed: 0x5eed }
    }
}

/// The worst element of a failed check.
#[derive(Clone, Debug)]
pub struct GradcheckError {
    /// Which input (position in the `inputs` slice).
    pub input: usize,
    /// The input's shape.
    pub shape: Vec<usize>,
    /// Multi-index of the worst element.
    pub index: Vec<usize>,
    /// The op's hand-written backward gradient at that element.
    pub analytic: f64,
    /// The central finite difference at that element.
    pub numeric: f64,
    /// How many elements of this input failed.
    pub failures: usize,
}

impl fmt::Display for GradcheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gradcheck failed for input {} (shape {:?}): {} element(s) out of tolerance; worst at index {:?}: analytic {:.10e}, numeric {:.10e}, |diff| {:.3e}",
            self.input,
            self.shape,
            self.failures,
            self.index,
            self.analytic,
            self.numeric,
            (self.analytic - self.numeric).abs()
        )
    }
}

impl std::error::Error for GradcheckError {}

/// What a passing check measured.
#[derive(Clone, Debug, Default)]
pub struct GradcheckReport {
    /// Number of input elements checked.
    pub checked: usize,
    /// The largest `|analytic - numeric|` over the checked elements.
    pub max_abs_err: f64,
    /// The largest `|analytic - numeric| / max(|analytic|, |numeric|)` over the checked elements.
    pub max_rel_err: f64,
}

fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for (i, &d) in shape.iter().enumerate().rev() {
        idx[i] = flat % d;
        flat /= d;
    }
    idx
}

/// Checks the gradients of `f` at `inputs`. `f` receives a fresh tape and one `Var` per input
/// (each a parameter) and returns the output; it must be deterministic (seed any dropout
/// inside it). Returns the first input whose worst element is out of tolerance.
pub fn gradcheck<F>(f: F, inputs: &[Tensor<f64>], opts: &GradcheckOptions) -> Result<GradcheckReport, GradcheckError>
where
    F: Fn(&mut Graph<f64>, &[Var]) -> Var,
{
    // Analytic: one backward seeded with r.
    let mut g = Graph::new();
    let vars: Vec<Var> = inputs.iter().map(|x| g.param(x)).collect();
    let out = f(&mut g, &vars);
    let out_shape = g.shape(out).to_vec();
    let r = Tensor::<f64>::randn(&out_shape, 0.0, 1.0, &mut Rng::seed(opts.seed));
    g.backward_with(out, r.clone());
    let analytic: Vec<Tensor<f64>> =
        vars.iter().zip(inputs).map(|(&v, x)| g.grad(v).cloned().unwrap_or_else(|| Tensor::zeros(x.shape()))).collect();
    drop(g);

    let eval = |xs: &[Tensor<f64>]| -> Tensor<f64> {
        let mut g = Graph::inference();
        g.set_training(true);
        let vars: Vec<Var> = xs.iter().map(|x| g.input(x.clone())).collect();
        let out = f(&mut g, &vars);
        let y = g.value(out).clone();
        assert_eq!(y.shape(), &out_shape[..], "gradcheck: f changed its output shape");
        y
    };
    // <r, y+ - y-> with the difference taken first: outputs that one input element does not
    // touch cancel exactly, so only the affected outputs contribute rounding noise.
    let projected_difference = |plus: &Tensor<f64>, minus: &Tensor<f64>| -> f64 {
        plus.data().iter().zip(minus.data()).zip(r.data()).map(|((p, m), r)| r * (p - m)).sum()
    };

    let mut report = GradcheckReport::default();
    let mut xs: Vec<Tensor<f64>> = inputs.to_vec();
    for i in 0..inputs.len() {
        let mut worst: Option<(usize, f64, f64, f64)> = None; // (flat, analytic, numeric, excess)
        let mut failures = 0;
        for j in 0..inputs[i].numel() {
            let x0 = inputs[i].data()[j];
            xs[i].data_mut()[j] = x0 + opts.eps;
            let plus = eval(&xs);
            xs[i].data_mut()[j] = x0 - opts.eps;
            let minus = eval(&xs);
            xs[i].data_mut()[j] = x0;
            let numeric = projected_difference(&plus, &minus) / (2.0 * opts.eps);
            let a = analytic[i].data()[j];
            let err = (a - numeric).abs();
            let scale = a.abs().max(numeric.abs());
            report.checked += 1;
            report.max_abs_err = report.max_abs_err.max(err);
            if scale > 0.0 {
                report.max_rel_err = report.max_rel_err.max(err / scale);
            }
            let ok = err <= opts.atol || err <= opts.rtol * scale;
            if !ok || !err.is_finite() {
                failures += 1;
                // How far past the looser of the two tolerances this element is.
                let excess = err / opts.atol.max(opts.rtol * scale);
                if worst.is_none_or(|w| excess > w.3 || excess.is_nan()) {
                    worst = Some((j, a, numeric, excess));
                }
            }
        }
        if let Some((j, a, n, _)) = worst {
            return Err(GradcheckError {
                input: i,
                shape: inputs[i].shape().to_vec(),
                index: unravel(j, inputs[i].shape()),
                analytic: a,
                numeric: n,
                failures,
            });
        }
    }
    Ok(report)
}
