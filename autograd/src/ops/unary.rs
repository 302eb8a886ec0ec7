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

/// `f(a, b)` elementwise over two tensors of one shape (an upstream gradient and a saved
/// value): the CUDA kernel `$op` with parameter `$p`, or `$f` on the CPU.
macro_rules! zip_map {
    ($op:ident, $p:expr, $a:expr, $b:expr, $f:expr) => {{
        let (a, b): (&Tensor<_>, &Tensor<_>) = ($a, $b);
        debug_assert_eq!(a.shape(), b.shape());
        on_device!([a, b],
            cuda: crate::cuda::ops::binary(stringify!($op), crate::cuda::kernels::BinaryOp::$op, a, b, $p),
            cpu: a.zip_map(b, $f))
    }};
}

/// `f(x)` elementwise: the CUDA kernel `$op` with parameter `$p`, or `$f` on the CPU.
macro_rules! map1 {
    ($op:ident, $p:expr, $x:expr, $f:expr) => {{
        let x: &Tensor<_> = $x;
        on_device!([x], cuda: crate::cuda::ops::unary(crate::cuda::kernels::UnaryOp::$op, x, $p), cpu: x.map($f))
    }};
}

/// `s x` elementwise (on the tensor's device).
pub(crate) fn scaled<T: Float>(x: &Tensor<T>, s: T) -> Tensor<T> {
    map1!(MulScalar, s.to_f64(), x, |v| v * s)
}

/// `y = -x`;  `dx = -g`.
struct Neg;
impl<T: Float> Op<T> for Neg {
    fn name(&self) -> String {
        "neg".into()
    }
    fn backward(&self, c: &BackwardCtx<'_, T>) -> Vec<Option<Tensor<T>>> {
        vec![Some(map1!(Neg, 0.0, c.grad, |g| -g))]
    }
}

/// `y = e^x`;  `dx = g * y`.
struct Exp;
impl<T: Float> Op<T> for Exp {
    fn name(&self) -> String {
        "exp".into()
    }
    fn backward(&self, c: &BackwardCtx<'_, T>) -> Vec<Option<Tensor<T>>> {
        vec![Some(zip_map!(Mul, 0.0, c.grad, c.kept_output(), |g, y| g * y))]
    }
}

/// `y = ln x`;  `dx = g / x`.
struct Log;
impl<T: Float> Op<T> for Log {
    fn name(&self) -> String {
        "log".into()
    }
    fn backward(&self, c: &BackwardCtx<'_, T>) -> Vec<Option<Tensor<T>>> {
        vec![Some(zip_map!(Div, 0.0, c.grad, c.inputs[0], |g, x| g / x))]
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
        vec![Some(zip_map!(SqrtBack, 0.0, c.grad, c.kept_output(), |g, y| half * g / y))]
    }
}

/// `y = tanh(x)`;  `dx = g * (1 - y^2)`.
struct Tanh;
impl<T: Float> Op<T> for Tanh {
    fn name(&self) -> String {
        "tanh".into()
    }
    fn backward(&self, c: &BackwardCtx<'_, T>) -> Vec<Option<Tensor<T>>> {
        vec![Some(zip_map!(TanhBack, 0.0, c.grad, c.kept_output(), |g, y| g * (T::ONE - y * y)))]
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
            return vec![Some(Tensor::full_on(c.grad.shape(), T::ZERO, c.grad.device()))];
        }
        // x^(p-1) rather than p * y / x: the latter is 0/0 at x = 0 even where the derivative
        // exists (p >= 1).
        let pm1 = p - T::ONE;
        vec![Some(zip_map!(PowBack, p.to_f64(), c.grad, c.inputs[0], |g: T, x: T| g * p * x.powf(pm1)))]
    }
}

impl<T: Float> Graph<T> {
    /// `-x`.
    pub fn neg(&mut self, x: Var) -> Var {
        let y = map1!(Neg, 0.0, self.value(x), |v| -v);
        self.push(y, Neg, &[x])
    }

    /// `e^x` elementwise (f32: the SIMD kernel, relative error below 3e-7).
    pub fn exp(&mut self, x: Var) -> Var {
        let xv = self.value(x);
        #[cfg(feature = "cuda")]
        if xv.is_cuda() {
            let y = crate::cuda::ops::unary(crate::cuda::kernels::UnaryOp::Exp, xv, 0.0);
            return self.push(y, Exp, &[x]);
        }
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
        let y = map1!(Log, 0.0, self.value(x), |v| v.ln());
        self.push(y, Log, &[x])
    }

    /// Square root elementwise.
    pub fn sqrt(&mut self, x: Var) -> Var {
        let y = map1!(Sqrt, 0.0, self.value(x), |v| v.sqrt());
        self.push(y, Sqrt, &[x])
    }

    /// Hyperbolic tangent elementwise (ViT's pre-logits activation).
    pub fn tanh(&mut self, x: Var) -> Var {
        let y = map1!(Tanh, 0.0, self.value(x), |v| v.tanh());
        self.push(y, Tanh, &[x])
    }

    /// `x^p` elementwise for a scalar exponent `p` (negative bases need an integral `p`).
    /// Panics if `p` is not finite.
    pub fn powf(&mut self, x: Var, p: f64) -> Var {
        assert!(p.is_finite(), "powf: the exponent must be finite, got {p} (input shape {:?})", self.shape(x));
        let pt = T::from_f64(p);
        let y = map1!(Pow, p, self.value(x), |v| v.powf(pt));
        self.push(y, Powf(pt), &[x])
    }
}
