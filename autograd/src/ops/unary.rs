//! Elementwise functions of one tensor: neg, exp, log, sqrt, tanh, and powers with a scalar
//! exponent.
//!
//! Each backward is `dx = g * f'(x)`, written in terms of the output `y` where that saves
//! recomputing `f` (exp, sqrt, tanh).

use crate::dtype::Float;
use crate::graph::{BackwardCtx, Graph, Op, Var};
use crate::kernels::rows::Rows;
use crate::kernels::{as_f32, as_f32_mut};
use crate::tensor::Tensor;

/// `f(a, b)` elementwise over two tensors of one shape (an upstream gradient and a saved value).
fn zip_map<T: Float>(a: &Tensor<T>, b: &Tensor<T>, f: impl Fn(T, T) -> T) -> Tensor<T> {
    debug_assert_eq!(a.shape(), b.shape());
    Tensor::from_vec(a.data().iter().zip(b.data()).map(|(&a, &b)| f(a, b)).collect(), a.shape())
}

/// `y = -x`;  `dx = -g`.
struct Neg;
impl<T: Float> Op<T> for Neg {
    fn name(&self) -> String {
        "neg".into()
    }
    fn backward(&self, c: &BackwardCtx<'_, T>) -> Vec<Option<Tensor<T>>> {
        vec![Some(c.grad.map(|g| -g))]
    }
}

/// `y = e^x`;  `dx = g * y`.
struct Exp;
impl<T: Float> Op<T> for Exp {
    fn name(&self) -> String {
        "exp".into()
    }
    fn backward(&self, c: &BackwardCtx<'_, T>) -> Vec<Option<Tensor<T>>> {
        vec![Some(zip_map(c.grad, c.kept_output(), |g, y| g * y))]
    }
}

/// `y = ln x`;  `dx = g / x`.
struct Log;
impl<T: Float> Op<T> for Log {
    fn name(&self) -> String {
        "log".into()
    }
    fn backward(&self, c: &BackwardCtx<'_, T>) -> Vec<Option<Tensor<T>>> {
        vec![Some(zip_map(c.grad, c.inputs[0], |g, x| g / x))]
    }
}

/// `y = sqrt(x)`;  `dx = g / (2 y)`.
struct Sqrt;
impl<T: Float> Op<T> for Sqrt {
    fn name(&self) -> String {
        "sqrt".into()
    }
    fn backward(&self, c: &BackwardCtx<'_, T>) -> Vec<Option<Tensor<T>>> {
        let half = T::from_f64(0.5);
        vec![Some(zip_map(c.grad, c.kept_output(), |g, y| half * g / y))]
    }
}

/// `y = tanh(x)`;  `dx = g * (1 - y^2)`.
struct Tanh;
impl<T: Float> Op<T> for Tanh {
    fn name(&self) -> String {
        "tanh".into()
    }
    fn backward(&self, c: &BackwardCtx<'_, T>) -> Vec<Option<Tensor<T>>> {
        vec![Some(zip_map(c.grad, c.kept_output(), |g, y| g * (T::ONE - y * y)))]
    }
}

/// `y = x^p` for a constant `p`;  `dx = g * p * x^(p-1)`.
struct Powf<T>(T);
impl<T: Float> Op<T> for Powf<T> {
    fn name(&self) -> String {
        format!("powf({})", self.0)
    }
    fn backward(&self, c: &BackwardCtx<'_, T>) -> Vec<Option<Tensor<T>>> {
        let p = self.0;
        if p == T::ZERO {
            // y = 1 everywhere; the formula below would give 0 * inf at x = 0.
            return vec![Some(Tensor::zeros(c.grad.shape()))];
        }
        // x^(p-1) rather than p * y / x: the latter is 0/0 at x = 0 even where the derivative
        // exists (p >= 1).
        let pm1 = p - T::ONE;
        vec![Some(zip_map(c.grad, c.inputs[0], |g, x| g * p * x.powf(pm1)))]
    }
}

impl<T: Float> Graph<T> {
    /// `-x`.
    pub fn neg(&mut self, x: Var) -> Var {
        let y = self.value(x).map(|v| -v);
        self.push(y, Neg, &[x])
    }

    /// `e^x` elementwise (f32: the SIMD kernel, relative error below 3e-7).
    pub fn exp(&mut self, x: Var) -> Var {
        let xv = self.value(x);
        let y = match as_f32(xv.data()) {
            Some(x32) => {
                let mut y = crate::pool::take::<T>(x32.len());
                Rows::active().exp(x32, as_f32_mut(&mut y).expect("T is f32"));
                Tensor::from_vec(y, xv.shape())
            }
            None => xv.map(|v| v.exp()),
        };
        self.push(y, Exp, &[x])
    }

    /// Natural logarithm elementwise (`-inf` at 0, NaN below, as in IEEE arithmetic).
    pub fn log(&mut self, x: Var) -> Var {
        let y = self.value(x).map(|v| v.ln());
        self.push(y, Log, &[x])
    }

    /// Square root elementwise.
    pub fn sqrt(&mut self, x: Var) -> Var {
        let y = self.value(x).map(|v| v.sqrt());
        self.push(y, Sqrt, &[x])
    }

    /// Hyperbolic tangent elementwise (ViT's pre-logits activation).
    pub fn tanh(&mut self, x: Var) -> Var {
        let y = self.value(x).map(|v| v.tanh());
        self.push(y, Tanh, &[x])
    }

    /// `x^p` elementwise for a scalar exponent `p` (negative bases need an integral `p`).
    /// Panics if `p` is not finite.
    pub fn powf(&mut self, x: Var, p: f64) -> Var {
        assert!(p.is_finite(), "powf: the exponent must be finite, got {p} (input shape {:?})", self.shape(x));
        let p = T::from_f64(p);
        let y = self.value(x).map(|v| v.powf(p));
        self.push(y, Powf(p), &[x])
    }
}
