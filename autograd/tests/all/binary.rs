//! add, sub, mul, div (broadcasting) and their scalar forms: forward against a plain loop,
//! gradients against finite differences.

use crate::common::*;
use autograd::ops::broadcast::broadcast_shape;
use autograd::{Graph, Tensor, Var};
use proptest::prelude::*;

/// Plain reference: index the broadcast output, and map each index back into `a` and `b`.
fn reference(a: &Tensor<f64>, b: &Tensor<f64>, f: fn(f64, f64) -> f64) -> Tensor<f64> {
    let out = broadcast_shape(a.shape(), b.shape()).unwrap();
    let r = out.len();
    let src = |t: &Tensor<f64>, idx: &[usize]| -> f64 {
        let pad = r - t.ndim();
        let i: Vec<usize> = (0..t.ndim()).map(|k| if t.dim(k) == 1 { 0 } else { idx[k + pad] }).collect();
        t.at(&i)
    };
    let mut y = Tensor::zeros(&out);
    let mut idx = vec![0; r];
    for _ in 0..y.numel() {
        let v = f(src(a, &idx), src(b, &idx));
        y.set(&idx, v);
        for k in (0..r).rev() {
            idx[k] += 1;
            if idx[k] < out[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    y
}

/// Two shapes that broadcast: `b` is `a` with some axes set to 1 and some leading axes dropped,
/// and the pair is randomly swapped so both sides get stretched.
fn broadcast_pair() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    (shape(0, 4, 5), any::<u64>()).prop_map(|(a, bits)| {
        let drop = (bits % (a.len() as u64 + 1)) as usize;
        let b: Vec<usize> =
            a[drop..].iter().enumerate().map(|(i, &d)| if bits >> (8 + i) & 1 == 1 { 1 } else { d }).collect();
        if bits >> 40 & 1 == 1 {
            (b, a)
        } else {
            (a, b)
        }
    })
}

fn pair_of_tensors(b_lo: f64) -> impl Strategy<Value = (Tensor<f64>, Tensor<f64>)> {
    broadcast_pair().prop_flat_map(move |(sa, sb)| {
        let sign = prop_oneof![Just(1.0), Just(-1.0)];
        (tensor(sa), tensor_in(sb, b_lo, 2.0), sign).prop_map(|(a, b, s)| (a, b.map(|x| x * s)))
    })
}

type BinOp = fn(&mut Graph<f64>, Var, Var) -> Var;
type Reference = fn(f64, f64) -> f64;
const OPS: [(&str, BinOp, Reference); 4] = [
    ("add", |g, a, b| g.add(a, b), |a, b| a + b),
    ("sub", |g, a, b| g.sub(a, b), |a, b| a - b),
    ("mul", |g, a, b| g.mul(a, b), |a, b| a * b),
    ("div", |g, a, b| g.div(a, b), |a, b| a / b),
];

proptest! {
    #![proptest_config(config())]

    #[test]
    fn forward_matches_reference((a, b) in pair_of_tensors(0.5)) {
        for (name, op, f) in OPS {
            let got = forward(|g, v| op(g, v[0], v[1]), &[a.clone(), b.clone()]);
            let want = reference(&a, &b, f);
            prop_assert!(got.allclose(&want, 1e-15, 0.0), "{name}: {got:?} vs {want:?}");
        }
    }

    #[test]
    fn gradients_match_finite_differences((a, b) in pair_of_tensors(0.5)) {
        for (_, op, _) in OPS {
            assert_gradcheck(|g, v| op(g, v[0], v[1]), &[a.clone(), b.clone()]);
        }
    }

    #[test]
    fn scalar_ops(x in shape(0, 3, 6).prop_flat_map(tensor), s in 0.5f64..3.0) {
        let y = forward(|g, v| { let t = g.add_scalar(v[0], s); let t = g.mul_scalar(t, s); g.div_scalar(t, 2.0) }, std::slice::from_ref(&x));
        prop_assert!(y.allclose(&x.map(|v| (v + s) * s / 2.0), 1e-14, 0.0));
        assert_gradcheck(|g, v| { let t = g.sub_scalar(v[0], s); let t = g.mul(t, t); g.mul_scalar(t, s) }, &[x]);
    }
}

#[test]
fn a_value_used_twice_accumulates_its_gradient() {
    let mut g = Graph::<f64>::new();
    let x = g.param(&Tensor::from_f64s(&[3.0], &[1]));
    let y = g.mul(x, x); // x^2
    let z = g.add(y, x); // x^2 + x
    g.backward(z);
    assert_eq!(g.grad(x).unwrap().data(), &[7.0]); // 2x + 1
}

#[test]
#[should_panic(expected = "do not broadcast")]
fn incompatible_shapes_name_the_op() {
    let mut g = Graph::<f32>::new();
    let a = g.input(Tensor::zeros(&[2, 3]));
    let b = g.input(Tensor::zeros(&[4]));
    g.add(a, b);
}
