//! Elementwise arithmetic with broadcasting: add, sub, mul, div, and their scalar forms.
//!
//! For `y = a (op) b` broadcast to a common shape, each input's gradient is computed at the
//! broadcast shape and then summed back to the input's own shape ([`reduce_to`]).

use super::broadcast::{broadcast_map, reduce_to};
use super::unary::scaled;
use crate::dtype::Float;
use crate::graph::{BackwardCtx, Graph, Op, Var};
use crate::tensor::Tensor;

/// `f(a, b)` under broadcasting: the CUDA kernel `$op`, or `f` on the CPU.
macro_rules! map2 {
    ($name:expr, $op:ident, $a:expr, $b:expr, $f:expr) => {{
        let (a, b) = ($a, $b);
        on_device!([a, b],
            cuda: crate::cuda::ops::binary($name, crate::cuda::kernels::BinaryOp::$op, a, b, 0.0),
            cpu: broadcast_map(a, b, $name, $f))
    }};
}

/// `y = a + b`;  `da = g`,  `db = g` (each summed over its broadcast axes).
struct Add;
impl<T: Float> Op<T> for Add {
    fn name(&self) -> String {
        "add".into()
    }
    fn backward(&self, c: &BackwardCtx<'_, T>) -> Vec<Option<Tensor<T>>> {
        let grad_for = |i: usize| c.needs_grad[i].then(|| reduce_to(c.grad, c.inputs[i].shape()));
        vec![grad_for(0), grad_for(1)]
    }
}

/// `y = a - b`;  `da = g`,  `db = -g`.
struct Sub;
impl<T: Float> Op<T> for Sub {
    fn name(&self) -> String {
        "sub".into()
    }
    fn backward(&self, c: &BackwardCtx<'_, T>) -> Vec<Option<Tensor<T>>> {
        let da = c.needs_grad[0].then(|| reduce_to(c.grad, c.inputs[0].shape()));
        let db = c.needs_grad[1].then(|| reduce_to(&scaled(c.grad, -T::ONE), c.inputs[1].shape()));
        vec![da, db]
    }
}

/// `y = a * b`;  `da = g * b`,  `db = g * a`.
struct Mul;
impl<T: Float> Op<T> for Mul {
    fn name(&self) -> String {
        "mul".into()
    }
    fn backward(&self, c: &BackwardCtx<'_, T>) -> Vec<Option<Tensor<T>>> {
        let (a, b) = (c.inputs[0], c.inputs[1]);
        let da = c.needs_grad[0].then(|| reduce_to(&map2!("mul backward", Mul, c.grad, b, |g, b| g * b), a.shape()));
        let db = c.needs_grad[1].then(|| reduce_to(&map2!("mul backward", Mul, c.grad, a, |g, a| g * a), b.shape()));
        vec![da, db]
    }
}

/// `y = a / b`;  `da = g / b`,  `db = -g * a / b^2 = -g * y / b`.
struct Div;
impl<T: Float> Op<T> for Div {
    fn name(&self) -> String {
        "div".into()
    }
    fn backward(&self, c: &BackwardCtx<'_, T>) -> Vec<Option<Tensor<T>>> {
        let (a, b) = (c.inputs[0], c.inputs[1]);
        let da = c.needs_grad[0].then(|| reduce_to(&map2!("div backward", Div, c.grad, b, |g, b| g / b), a.shape()));
        let db = c.needs_grad[1].then(|| {
            let gy = map2!("div backward", Mul, c.grad, c.kept_output(), |g, y| g * y);
            reduce_to(&map2!("div backward", NegDiv, &gy, b, |gy, b| -gy / b), b.shape())
        });
        vec![da, db]
    }
}

/// `y = x + s` for a constant `s`;  `dx = g`.
struct AddScalar<T>(T);
impl<T: Float> Op<T> for AddScalar<T> {
    fn name(&self) -> String {
        format!("add_scalar({})", self.0)
    }
    fn backward(&self, c: &BackwardCtx<'_, T>) -> Vec<Option<Tensor<T>>> {
        vec![Some(c.grad.clone())]
    }
}

/// `y = x * s` for a constant `s`;  `dx = s * g`.
struct MulScalar<T>(T);
impl<T: Float> Op<T> for MulScalar<T> {
    fn name(&self) -> String {
        format!("mul_scalar({})", self.0)
    }
    fn backward(&self, c: &BackwardCtx<'_, T>) -> Vec<Option<Tensor<T>>> {
        vec![Some(scaled(c.grad, self.0))]
    }
}

impl<T: Float> Graph<T> {
    /// `a + b` with broadcasting.
    pub fn add(&mut self, a: Var, b: Var) -> Var {
        let y = map2!("add", Add, self.value(a), self.value(b), |x, y| x + y);
        self.push(y, Add, &[a, b])
    }

    /// `a - b` with broadcasting.
    pub fn sub(&mut self, a: Var, b: Var) -> Var {
        let y = map2!("sub", Sub, self.value(a), self.value(b), |x, y| x - y);
        self.push(y, Sub, &[a, b])
    }

    /// `a * b` (elementwise) with broadcasting.
    pub fn mul(&mut self, a: Var, b: Var) -> Var {
        let y = map2!("mul", Mul, self.value(a), self.value(b), |x, y| x * y);
        self.push(y, Mul, &[a, b])
    }

    /// `a / b` (elementwise) with broadcasting.
    pub fn div(&mut self, a: Var, b: Var) -> Var {
        let y = map2!("div", Div, self.value(a), self.value(b), |x, y| x / y);
        self.push(y, Div, &[a, b])
    }

    /// `x + s`.
    pub fn add_scalar(&mut self, x: Var, s: f64) -> Var {
        let xv = self.value(x);
        let y = on_device!([xv],
            cuda: crate::cuda::ops::unary(crate::cuda::kernels::UnaryOp::AddScalar, xv, s),
            cpu: { let s = T::from_f64(s); xv.map(|v| v + s) });
        self.push(y, AddScalar(T::from_f64(s)), &[x])
    }

    /// `x * s`.
    pub fn mul_scalar(&mut self, x: Var, s: f64) -> Var {
        let s = T::from_f64(s);
        let y = scaled(self.value(x), s);
        self.push(y, MulScalar(s), &[x])
    }

    /// `x - s`.
    pub fn sub_scalar(&mut self, x: Var, s: f64) -> Var {
        self.add_scalar(x, -s)
    }

    /// `x / s`.
    pub fn div_scalar(&mut self, x: Var, s: f64) -> Var {
        self.mul_scalar(x, 1.0 / s)
    }
}
