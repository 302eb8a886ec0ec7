//! Build a small computation, print its tape, run backward, and gradcheck it.
//!
//! ```sh
//! cargo run --release --example tape
//! ```

use autograd::ops::gelu::GeluKind;
use autograd::{gradcheck, GradcheckOptions, Graph, Rng, Tensor, Var};

/// A one-hidden-layer network on a batch of 4 inputs of width 3, with 2 classes:
/// `loss = CE(GELU(LN(x W1^T + b1)) W2^T + b2, labels)`.
fn net(g: &mut Graph<f64>, v: &[Var]) -> Var {
    let (x, w1, b1, ln_w, ln_b, w2, b2) = (v[0], v[1], v[2], v[3], v[4], v[5], v[6]);
    let h = g.matmul_t(x, w1);
    let h = g.add(h, b1);
    let h = g.layer_norm(h, ln_w, ln_b, 1e-6);
    let h = g.gelu(h, GeluKind::Erf);
    let logits = g.matmul_t(h, w2);
    let logits = g.add(logits, b2);
    g.cross_entropy(logits, &[0, 1, 1, 0], 0.0)
}

fn main() {
    let mut rng = Rng::seed(0);
    let inputs = vec![
        Tensor::<f64>::randn(&[4, 3], 0.0, 1.0, &mut rng), // x
        Tensor::randn(&[5, 3], 0.0, 0.5, &mut rng),        // W1 [out, in]
        Tensor::zeros(&[5]),                               // b1
        Tensor::ones(&[5]),                                // LayerNorm weight
        Tensor::zeros(&[5]),                               // LayerNorm bias
        Tensor::randn(&[2, 5], 0.0, 0.5, &mut rng),        // W2
        Tensor::zeros(&[2]),                               // b2
    ];

    let mut g = Graph::new();
    let vars: Vec<Var> = inputs.iter().map(|t| g.param(t)).collect();
    let loss = net(&mut g, &vars);
    println!("The tape after forward (one line per value: op, inputs, output shape):\n");
    print!("{g}");
    println!("\nloss = {:.6}", g.value(loss).item());

    g.backward(loss);
    println!("\nAfter backward, with each node's gradient norm:\n");
    print!("{g}");
    println!("\ndL/dW2 =\n{}", g.grad(vars[5]).unwrap());

    match gradcheck(net, &inputs, &GradcheckOptions::default()) {
        Ok(r) => println!(
            "\ngradcheck: all {} input elements agree with central differences (max abs err {:.2e}, max rel err {:.2e})",
            r.checked, r.max_abs_err, r.max_rel_err
        ),
        Err(e) => {
            eprintln!("\n{e}");
            std::process::exit(1);
        }
    }
}
