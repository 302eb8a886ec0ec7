//! gradcheck itself: it must pass a correct gradient, and catch and report a wrong one.

use crate::common::*;
use autograd::{gradcheck, BackwardCtx, GradcheckOptions, Graph, Op, Tensor, Var};
use proptest::prelude::*;

/// `y = x^2` with a deliberately broken backward that forgets the factor 2: `dx = g * x`.
struct BrokenSquare;
impl Op<f64> for BrokenSquare {
    fn name(&self) -> String {
        "broken_square".into()
    }
    fn backward(&self, c: &BackwardCtx<'_, f64>) -> Vec<Option<Tensor<f64>>> {
        let dx = Tensor::from_vec(
            c.grad.data().iter().zip(c.inputs[0].data()).map(|(g, x)| g * x).collect(),
            c.grad.shape(),
        );
        vec![Some(dx)]
    }
}

/// The same op with the right backward, `dx = 2 g x`, so the test below shows the checker
/// distinguishes the two rather than rejecting everything.
struct Square;
impl Op<f64> for Square {
    fn name(&self) -> String {
        "square".into()
    }
    fn backward(&self, c: &BackwardCtx<'_, f64>) -> Vec<Option<Tensor<f64>>> {
        let dx = Tensor::from_vec(
            c.grad.data().iter().zip(c.inputs[0].data()).map(|(g, x)| 2.0 * g * x).collect(),
            c.grad.shape(),
        );
        vec![Some(dx)]
    }
}

fn square(g: &mut Graph<f64>, x: Var, broken: bool) -> Var {
    let y = g.value(x).map(|v| v * v);
    if broken {
        g.push(y, BrokenSquare, &[x])
    } else {
        g.push(y, Square, &[x])
    }
}

#[test]
fn a_wrong_gradient_fails_with_a_report() {
    let x = Tensor::from_f64s(&[0.5, -1.5, 2.0, 0.25, 1.0, -0.75], &[2, 3]);
    let w = Tensor::from_f64s(&[1.0, 2.0, 3.0], &[3]);
    let err = gradcheck(
        |g, v| {
            let y = square(g, v[1], true);
            g.mul(v[0], y)
        },
        &[w, x],
        &GradcheckOptions::default(),
    )
    .expect_err("a backward missing its factor 2 must fail");
    // The broken op sits on the second input; the first (w, through mul) is right.
    assert_eq!(err.input, 1);
    assert_eq!(err.shape, vec![2, 3]);
    assert_eq!(err.failures, 6, "every element of x is wrong by a factor 2");
    assert!((err.numeric - 2.0 * err.analytic).abs() < 1e-6 * err.numeric.abs(), "{err}");
    let report = err.to_string();
    assert!(report.contains("input 1") && report.contains("analytic") && report.contains("numeric"), "{report}");
    assert!(report.contains(&format!("{:?}", err.index)), "{report}");
}

#[test]
fn the_same_op_with_the_right_gradient_passes() {
    let x = Tensor::from_f64s(&[0.5, -1.5, 2.0, 0.25, 1.0, -0.75], &[2, 3]);
    let report = gradcheck(|g, v| square(g, v[0], false), &[x], &GradcheckOptions::default()).unwrap();
    assert_eq!(report.checked, 6);
    assert!(report.max_abs_err < 1e-8);
}

#[test]
fn an_input_that_does_not_reach_the_output_has_zero_gradient() {
    // b is unused: analytic None is read as zero, numeric is exactly zero.
    let a = Tensor::from_f64s(&[1.0, 2.0], &[2]);
    let b = Tensor::from_f64s(&[3.0], &[1]);
    gradcheck(|g, v| g.mul(v[0], v[0]), &[a, b], &GradcheckOptions::default()).unwrap();
}

proptest! {
    #![proptest_config(config())]

    /// On random inputs the broken op is always caught, the correct one always passes.
    #[test]
    fn catches_the_broken_square_on_random_inputs(x in shape(1, 3, 5).prop_flat_map(|s| tensor_in(s, 0.1, 2.0))) {
        prop_assert!(gradcheck(|g, v| square(g, v[0], true), std::slice::from_ref(&x), &GradcheckOptions::default()).is_err());
        prop_assert!(gradcheck(|g, v| square(g, v[0], false), &[x], &GradcheckOptions::default()).is_ok());
    }
}
