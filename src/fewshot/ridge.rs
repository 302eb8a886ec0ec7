//! Closed-form ridge regression, the linear solve of the few-shot evaluator.
//!
//! ```text
//!     minimise  |X W - T|^2 + lambda |W|^2       X: [N, D] features, T: [N, K] targets
//!
//!     N >= D:  W = (X^T X + lambda I_D)^-1 X^T T          (a D x D system)
//!     N <  D:  W = X^T (X X^T + lambda I_N)^-1 T          (an N x N system, the same W)
//! ```
//!
//! The two forms are equal (push-through identity: `(X^T X + l I)^-1 X^T = X^T (X X^T + l I)^-1`),
//! so the evaluator solves the smaller system: with 10 classes at 1 shot that is a 10 x 10 one
//! whatever the width of the features. `X^T X + lambda I` is symmetric positive definite for
//! `lambda > 0`, so the solve is a Cholesky factorisation `A = L L^T` and two triangular solves.
//! Everything is f64; the products go through autograd's GEMM.

use autograd::{Graph, Tensor};

use crate::error::{Error, Result};

/// `L` with `A = L L^T` for a symmetric positive-definite `n x n` `a` (row-major; only its lower
/// triangle is read). An error names the pivot when `a` is not positive definite.
pub fn cholesky(a: &[f64], n: usize) -> Result<Vec<f64>> {
    assert_eq!(a.len(), n * n, "cholesky: a is not {n} x {n}");
    let mut l = vec![0.0; n * n];
    for j in 0..n {
        // l_jj = sqrt(a_jj - sum_k<j l_jk^2);  l_ij = (a_ij - sum_k<j l_ik l_jk) / l_jj.
        let d = a[j * n + j] - l[j * n..j * n + j].iter().map(|v| v * v).sum::<f64>();
        if !(d > 0.0 && d.is_finite()) {
            return Err(Error::Train(format!(
                "cholesky: the {n} x {n} matrix is not positive definite (pivot {j} is {d:e})"
            )));
        }
        let ljj = d.sqrt();
        l[j * n + j] = ljj;
        for i in j + 1..n {
            let dot: f64 = l[i * n..i * n + j].iter().zip(&l[j * n..j * n + j]).map(|(a, b)| a * b).sum();
            l[i * n + j] = (a[i * n + j] - dot) / ljj;
        }
    }
    Ok(l)
}

/// Solves `L L^T X = B` for `X` (`b`: `n x k`, row-major) given the Cholesky factor `l`.
pub fn cholesky_solve(l: &[f64], n: usize, b: &[f64], k: usize) -> Vec<f64> {
    assert_eq!(b.len(), n * k, "cholesky_solve: b is not {n} x {k}");
    let mut x = b.to_vec();
    // Forward: L Y = B, row by row.
    for i in 0..n {
        for p in 0..i {
            let lip = l[i * n + p];
            for c in 0..k {
                x[i * k + c] -= lip * x[p * k + c];
            }
        }
        for c in 0..k {
            x[i * k + c] /= l[i * n + i];
        }
    }
    // Backward: L^T X = Y, from the last row up (L^T[i, p] = L[p, i]).
    for i in (0..n).rev() {
        for p in i + 1..n {
            let lpi = l[p * n + i];
            for c in 0..k {
                x[i * k + c] -= lpi * x[p * k + c];
            }
        }
        for c in 0..k {
            x[i * k + c] /= l[i * n + i];
        }
    }
    x
}

/// A row-major matrix: its values, rows and columns.
type Mat<'a> = (&'a [f64], usize, usize);

/// `op(a) op(b)` (`op` transposes when asked), through autograd's GEMM.
fn product(a: Mat<'_>, ta: bool, b: Mat<'_>, tb: bool) -> Vec<f64> {
    let mut g = Graph::<f64>::inference();
    let a = g.input(Tensor::from_vec(a.0.to_vec(), &[a.1, a.2]));
    let b = g.input(Tensor::from_vec(b.0.to_vec(), &[b.1, b.2]));
    let c = g.matmul_ex(a, b, ta, tb);
    g.value(c).data().to_vec()
}

/// The ridge solution `W` `[D, K]` of `X W ~ T` for `x` `[N, D]` and `t` `[N, K]`, through the
/// smaller of the two systems (see the module docs). `lambda` must be positive.
pub fn ridge(x: &[f64], n: usize, d: usize, t: &[f64], k: usize, lambda: f64) -> Result<Vec<f64>> {
    assert!(x.len() == n * d && t.len() == n * k, "ridge: x is not {n} x {d} or t not {n} x {k}");
    if !(lambda > 0.0 && lambda.is_finite()) {
        return Err(Error::Config(format!("--l2 must be a finite number > 0, got {lambda}")));
    }
    let add_ridge = |mut a: Vec<f64>, m: usize| {
        for i in 0..m {
            a[i * m + i] += lambda;
        }
        a
    };
    if n >= d {
        let a = add_ridge(product((x, n, d), true, (x, n, d), false), d); // X^T X + l I
        let b = product((x, n, d), true, (t, n, k), false); // X^T T
        Ok(cholesky_solve(&cholesky(&a, d)?, d, &b, k))
    } else {
        let a = add_ridge(product((x, n, d), false, (x, n, d), true), n); // X X^T + l I
        let z = cholesky_solve(&cholesky(&a, n)?, n, t, k);
        Ok(product((x, n, d), true, (&z, n, k), false)) // X^T Z
    }
}
