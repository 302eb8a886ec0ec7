//! GELU, the Transformer MLP's nonlinearity (Hendrycks & Gimpel, 2016), in both forms ViT code
//! uses: the exact one (timm, PyTorch's `nn.GELU()`) and the tanh approximation (the official
//! Flax code, `approximate='tanh'`).
//!
//! ```text
//! Erf:   y  = x Phi(x) = 0.5 x (1 + erf(x / sqrt 2))
//!        dx = g (Phi(x) + x phi(x)),          phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
//! Tanh:  u  = k (x + a x^3),  t = tanh(u),    k = sqrt(2 / pi),  a = 0.044715
//!        y  = 0.5 x (1 + t)
//!        dx = g (0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 a x^2))
//! ```
//!
//! The backward recomputes `erf` or `tanh` from the input instead of saving them: one more
//! transcendental per element is cheaper than keeping a second activation-sized tensor alive.

use crate::dtype::Float;
use crate::graph::{BackwardCtx, Graph, Op, Var};
use crate::kernels::parallel::for_each_row;
use crate::kernels::rows::Rows;
use crate::kernels::{as_f32, as_f32_mut};
use crate::tensor::Tensor;

/// Which GELU formula to use (defined once, beside the SIMD kernels that compute both forms).
pub use crate::kernels::rows::GeluKind;

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;
const TANH_A: f64 = 0.044715;

/// GELU is elementwise, so the row driver gets the flat tensor cut into pieces of this size.
const CHUNK: usize = 4096;

/// `y = gelu(x)`; see the module documentation for both forms and their derivatives.
struct Gelu(GeluKind);

impl<T: Float> Op<T> for Gelu {
    fn name(&self) -> String {
        format!("gelu({:?})", self.0)
    }

    fn backward(&self, c: &BackwardCtx<'_, T>) -> Vec<Option<Tensor<T>>> {
        let (x, g) = (c.inputs[0], c.grad);
        let dx = on_device!([x, g],
        cuda: crate::cuda::ops::gelu_backward(self.0, x, g),
        cpu: {
            let mut dx = crate::pool::take(g.numel());
            gelu_backward(self.0, x.data(), g.data(), &mut dx);
            Tensor::from_vec(dx, x.shape())
        });
        vec![Some(dx)]
    }
}

/// `x <- gelu(x)`, for a pre-activation that nothing keeps (the fused Linear + GELU off the tape).
pub(crate) fn gelu_in_place<T: Float>(kind: GeluKind, x: &mut [T]) {
    if let Some(x32) = as_f32_mut(x) {
        return Rows::active().gelu_in_place(kind, x32);
    }
    for_each_row(x, CHUNK, |_, x| x.iter_mut().for_each(|v| *v = gelu_of(kind, *v)));
}

/// `gelu(x)` of one element, for the element types without a SIMD kernel (f64).
fn gelu_of<T: Float>(kind: GeluKind, x: T) -> T {
    let half = T::from_f64(0.5);
    match kind {
        GeluKind::Erf => half * x * (T::ONE + (x * T::from_f64(std::f64::consts::FRAC_1_SQRT_2)).erf()),
        GeluKind::Tanh => {
            let (k, a) = (T::from_f64(SQRT_2_OVER_PI), T::from_f64(TANH_A));
            half * x * (T::ONE + (k * (x + a * x * x * x)).tanh())
        }
    }
}

/// `y = gelu(x)` elementwise (f32: the SIMD kernel; otherwise over chunks in parallel), shared
/// by [`Graph::gelu`] and the fused Linear + GELU op.
pub(crate) fn gelu_forward<T: Float>(kind: GeluKind, xd: &[T], y: &mut [T]) {
    if let (Some(x32), Some(y32)) = (as_f32(xd), as_f32_mut(y)) {
        return Rows::active().gelu_forward(kind, x32, y32);
    }
    for_each_row(y, CHUNK, |r, y| {
        for (y, &x) in y.iter_mut().zip(&xd[r * CHUNK..]) {
            *y = gelu_of(kind, x);
        }
    });
}

/// `dx = g * gelu'(x)` elementwise, over chunks in parallel. `dx` may hold anything on entry.
pub(crate) fn gelu_backward<T: Float>(kind: GeluKind, x: &[T], g: &[T], dx: &mut [T]) {
    if let (Some(x32), Some(g32), Some(dx32)) = (as_f32(x), as_f32(g), as_f32_mut(dx)) {
        return Rows::active().gelu_backward(kind, x32, g32, dx32);
    }
    let half = T::from_f64(0.5);
    match kind {
        GeluKind::Erf => {
            let inv_sqrt2 = T::from_f64(std::f64::consts::FRAC_1_SQRT_2);
            let inv_sqrt_2pi = T::from_f64(INV_SQRT_2PI);
            for_each_row(dx, CHUNK, |r, dx| {
                let at = r * CHUNK;
                for ((dx, &x), &g) in dx.iter_mut().zip(&x[at..]).zip(&g[at..]) {
                    let cdf = half * (T::ONE + (x * inv_sqrt2).erf());
                    let pdf = (-half * x * x).exp() * inv_sqrt_2pi;
                    *dx = g * (cdf + x * pdf);
                }
            });
        }
        GeluKind::Tanh => {
            let (k, a, a3) = (T::from_f64(SQRT_2_OVER_PI), T::from_f64(TANH_A), T::from_f64(3.0 * TANH_A));
            for_each_row(dx, CHUNK, |r, dx| {
                let at = r * CHUNK;
                for ((dx, &x), &g) in dx.iter_mut().zip(&x[at..]).zip(&g[at..]) {
                    let x2 = x * x;
                    let t = (k * (x + a * x2 * x)).tanh();
                    let du_dx = k * (T::ONE + a3 * x2);
                    *dx = g * (half * (T::ONE + t) + half * x * (T::ONE - t * t) * du_dx);
                }
            });
        }
    }
}

/// `y = gelu(x)` and `d = gelu'(x)` elementwise in one pass, for an op that needs both (the
/// fused Linear+GELU's recompute, whose backward then only multiplies by `d`). `y` equals
/// [`gelu_forward`]'s bit for bit; `d` equals the factor [`gelu_backward`] applies (to the last
/// bit in f32, exactly otherwise).
pub(crate) fn gelu_forward_grad<T: Float>(kind: GeluKind, x: &[T], y: &mut [T], d: &mut [T]) {
    if let (Some(x32), Some(y32), Some(d32)) = (as_f32(x), as_f32_mut(y), as_f32_mut(d)) {
        return Rows::active().gelu_forward_grad(kind, x32, y32, d32);
    }
    // Other element types (f64: the gradient checks): the two passes the f32 kernel fuses.
    gelu_forward(kind, x, y);
    gelu_backward(kind, x, &vec![T::ONE; x.len()], d);
}

/// `d = g * d` elementwise, over chunks in parallel: a gradient through a saved `gelu'(x)`.
pub(crate) fn scale_by<T: Float>(d: &mut [T], g: &[T]) {
    assert_eq!(d.len(), g.len(), "scale_by: d and g differ in length");
    for_each_row(d, CHUNK, |r, d| {
        for (d, &g) in d.iter_mut().zip(&g[r * CHUNK..]) {
            *d = g * *d;
        }
    });
}

impl<T: Float> Graph<T> {
    /// GELU, elementwise, in the chosen form.
    pub fn gelu(&mut self, x: Var, kind: GeluKind) -> Var {
        let xv = self.value(x);
        let y = on_device!([xv],
        cuda: crate::cuda::ops::gelu(kind, xv),
        cpu: {
            let mut y = crate::pool::take(xv.numel());
            gelu_forward(kind, xv.data(), &mut y);
            Tensor::from_vec(y, xv.shape())
        });
        self.push(y, Gelu(kind), &[x])
    }
}
