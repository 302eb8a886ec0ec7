//! `Graph::backward_hooked`: every parameter's gradient is handed over once, as soon as it is
//! final, and equals what plain backward computes.

use autograd::{Graph, Rng, Tensor, Var};

/// A three-layer chain `loss = sum(tanh(tanh(x W1) W2) W3)` with `W1` also read again at the
/// end (`+ sum(W1)`), so its gradient has two contributions, the later one recorded last.
fn build(g: &mut Graph<f64>, ws: &[Tensor<f64>], x: &Tensor<f64>) -> (Vec<Var>, Var) {
    let p: Vec<Var> = ws.iter().map(|w| g.param(w)).collect();
    let x = g.input(x.clone());
    let h = g.matmul(x, p[0]);
    let h = g.tanh(h);
    let h = g.matmul(h, p[1]);
    let h = g.tanh(h);
    let h = g.matmul(h, p[2]);
    let a = g.sum_all(h);
    let b = g.sum_all(p[0]);
    (p, g.add(a, b))
}

#[test]
fn hooked_gradients_are_final_and_arrive_output_layer_first() {
    let mut rng = Rng::seed(3);
    let ws: Vec<Tensor<f64>> = [[4, 5], [5, 6], [6, 2]].iter().map(|s| Tensor::randn(s, 0.0, 1.0, &mut rng)).collect();
    let x = Tensor::randn(&[3, 4], 0.0, 1.0, &mut rng);

    let mut plain = Graph::new();
    let (p, loss) = build(&mut plain, &ws, &x);
    plain.backward(loss);
    let want: Vec<Vec<f64>> = p.iter().map(|&v| plain.grad(v).unwrap().data().to_vec()).collect();

    let mut g = Graph::new();
    let (p, loss) = build(&mut g, &ws, &x);
    let mut got: Vec<(Var, Vec<f64>)> = Vec::new();
    g.backward_hooked(loss, Tensor::ones(&[]), &mut |v, grad| got.push((v, grad.data().to_vec())));
    let order: Vec<Var> = got.iter().map(|(v, _)| *v).collect();
    // W3 is first read last, so it is final first; W1 (read first, and again at the end) last.
    assert_eq!(order, vec![p[2], p[1], p[0]]);
    for (i, (_, grad)) in got.iter().rev().enumerate() {
        assert_eq!(grad, &want[i], "gradient of W{}", i + 1);
    }
    // Handed over, so no longer on the tape.
    assert!(p.iter().all(|&v| g.grad(v).is_none()));
}
