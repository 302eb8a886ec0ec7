//! relu: forward against max(x, 0), the gradient against finite differences (inputs kept away
//! from the kink at 0), and a released output's recomputation.

use crate::common::*;
use autograd::{Graph, Tensor};
use proptest::prelude::*;

/// Values in [-2, 2] with |x| >= 0.01, so no finite difference straddles the kink.
fn away_from_zero(s: Vec<usize>) -> impl Strategy<Value = Tensor<f64>> {
    tensor(s).prop_map(|t| t.map(|v| if v.abs() < 0.01 { v + 0.02 } else { v }))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn forward_matches_reference(x in shape(0, 4, 6).prop_flat_map(tensor)) {
        let got = forward(|g, v| g.relu(v[0]), std::slice::from_ref(&x));
        assert_close(&got, &x.map(|v| v.max(0.0)), 0.0);
    }

    #[test]
    fn gradient_matches_finite_differences(x in shape(1, 4, 6).prop_flat_map(away_from_zero)) {
        assert_gradcheck(|g, v| { let y = g.relu(v[0]); g.mul(y, y) }, &[x]);
    }
}

#[test]
fn the_gradient_at_zero_is_zero_and_a_dropped_output_is_rebuilt() {
    let x = Tensor::from_f64s(&[-1.0, 0.0, 2.0], &[3]);
    let mut g = Graph::<f64>::new();
    let xv = g.param(&x);
    let z = g.segment("relu", xv, |g| {
        let y = g.relu(xv);
        g.mul(y, y) // backward of mul reads y
    });
    let y = g.memory()[0].entries[0].var;
    assert!(!g.holds(y), "the relu output is dropped when its segment ends");
    let l = g.sum_all(z);
    g.backward(l);
    assert_eq!(g.grad(xv).unwrap().data(), &[0.0, 0.0, 4.0]);
}
