//! SIMD row kernels for the hot non-GEMM ops: softmax, layer norm, GELU, bias add (and its
//! gradient, a sum over rows) and the AdamW update. Pure functions on `f32` slices; the autograd
//! ops call them for `f32` tensors.
//!
//! Each kernel is written once over the `Simd` vector abstraction (`kernels/simd.rs`)
//! (`imp.rs`, with the transcendental functions and their measured accuracy in `math.rs`) and
//! instantiated for AVX-512F, AVX2+FMA and the portable `wide` vectors; [`Rows`] picks one
//! (by default [`Isa::active`]). Work is split over rayon threads by whole rows (or, for the
//! element-wise kernels, by chunks of elements), never below [`MIN_GRAIN`] elements per task, so
//! small tensors stay on the calling thread.
//!
//! The math of each kernel is in its doc comment; shapes are `rows x n`, row-major, with `n`
//! passed explicitly and `rows = x.len() / n`.

mod imp;
pub(crate) mod math;

use rayon::prelude::*;

use crate::kernels::Isa;

/// A task below this many elements (times the kernel's relative cost) stays on one thread.
pub const MIN_GRAIN: usize = 32 * 1024;

/// The two GELU forms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gelu {
    /// `x Phi(x) = 0.5 x (1 + erf(x / sqrt 2))`: PyTorch's default, timm's.
    Erf,
    /// `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`: the Flax ViT code's.
    Tanh,
}

/// The hyper-parameters of one AdamW step. `bias_correction1 = 1 - beta1^t` and
/// `bias_correction2 = 1 - beta2^t` for step `t` (1-based).
#[derive(Clone, Copy, Debug)]
pub struct AdamW {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub bias_correction1: f32,
    pub bias_correction2: f32,
}

/// The row kernels on one ISA. `Rows::active()` is what the ops use; tests build one per ISA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rows {
    isa: Isa,
}

/// For each kernel of `imp`, a dispatcher `on::name(isa, args..)` that calls the kernel
/// instantiated inside a `#[target_feature]` function of that ISA, so that the generic body,
/// its (always-inlined) closures and the vector intrinsics are all compiled for the ISA.
macro_rules! dispatchers {
    ($( $name:ident ( $($arg:ident : $ty:ty),* ); )*) => {
        mod on {
            #[allow(unused_imports)]
            use super::{imp, AdamW, Gelu};
            use crate::kernels::Isa;
            $(
                /// # Safety
                /// `isa` must be available; the pointers must cover the kernel's rows.
                #[allow(clippy::too_many_arguments)]
                pub(super) unsafe fn $name(isa: Isa, $($arg: $ty),*) {
                    #[cfg(target_arch = "x86_64")]
                    #[target_feature(enable = "avx512f")]
                    #[allow(clippy::too_many_arguments)]
                    unsafe fn avx512($($arg: $ty),*) {
                        imp::$name::<crate::kernels::simd::Avx512>($($arg),*)
                    }
                    #[cfg(target_arch = "x86_64")]
                    #[target_feature(enable = "avx2,fma")]
                    #[allow(clippy::too_many_arguments)]
                    unsafe fn avx2($($arg: $ty),*) {
                        imp::$name::<crate::kernels::simd::Avx2>($($arg),*)
                    }
                    match isa {
                        #[cfg(target_arch = "x86_64")]
                        Isa::Avx512 => avx512($($arg),*),
                        #[cfg(target_arch = "x86_64")]
                        Isa::Avx2Fma => avx2($($arg),*),
                        _ => imp::$name::<crate::kernels::simd::Portable>($($arg),*),
                    }
                }
            )*
        }
    };
}

dispatchers! {
    softmax_forward(x: *const f32, y: *mut f32, rows: usize, n: usize);
    softmax_backward(y: *const f32, dy: *const f32, dx: *mut f32, rows: usize, n: usize);
    layer_norm_forward(x: *const f32, w: *const f32, b: *const f32, eps: f32, y: *mut f32, mean: *mut f32, rstd: *mut f32, rows: usize, n: usize);
    layer_norm_backward(x: *const f32, w: *const f32, mean: *const f32, rstd: *const f32, dy: *const f32, dx: *mut f32, dw: *mut f32, db: *mut f32, rows: usize, n: usize);
    gelu_forward(kind: Gelu, x: *const f32, y: *mut f32, n: usize);
    gelu_backward(kind: Gelu, x: *const f32, dy: *const f32, dx: *mut f32, n: usize);
    exp(x: *const f32, y: *mut f32, n: usize);
    bias_add(x: *mut f32, bias: *const f32, rows: usize, n: usize);
    sum_rows(x: *const f32, out: *mut f32, rows: usize, n: usize);
    adamw(p: *mut f32, g: *const f32, m: *mut f32, v: *mut f32, h: &AdamW, n: usize);
}

/// A raw pointer the tasks of one call may share: each task touches a disjoint range.
#[derive(Clone, Copy)]
struct Ptr(*mut f32);
unsafe impl Send for Ptr {}
unsafe impl Sync for Ptr {}
impl Ptr {
    fn at(self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
}

/// Calls `f(start, end)` over `rows` split into chunks of at least [`MIN_GRAIN`] weighted
/// elements (`n * cost` per row), in parallel when there is more than one chunk.
fn for_rows(rows: usize, n: usize, cost: usize, f: impl Fn(usize, usize) + Sync) {
    let chunks = chunk_count(rows, n, cost);
    if chunks <= 1 {
        if rows > 0 {
            f(0, rows);
        }
        return;
    }
    let per = rows.div_ceil(chunks);
    (0..rows.div_ceil(per)).into_par_iter().for_each(|c| f(c * per, ((c + 1) * per).min(rows)));
}

fn chunk_count(rows: usize, n: usize, cost: usize) -> usize {
    let work = rows * n * cost;
    (work / MIN_GRAIN).clamp(1, 4 * rayon::current_num_threads()).min(rows.max(1))
}

/// Element-wise kernels run as rows of 64 elements (a whole number of vectors) plus a tail.
fn for_elems(len: usize, cost: usize, f: impl Fn(usize, usize) + Sync) {
    const W: usize = 64;
    for_rows(len.div_ceil(W), W, cost, |r0, r1| f(r0 * W, (r1 * W).min(len)));
}

fn rows_of(name: &str, len: usize, n: usize) -> usize {
    assert!(n > 0 || len == 0, "{name}: row length must be positive");
    assert!(len.is_multiple_of(n.max(1)), "{name}: buffer of {len} elements is not a whole number of rows of {n}");
    len / n.max(1)
}

impl Rows {
    /// The kernels on `isa`; panics if this machine cannot run it.
    pub fn new(isa: Isa) -> Rows {
        assert!(isa.available(), "row kernels: ISA {isa} is not available on this machine");
        Rows { isa }
    }

    /// The kernels on [`Isa::active`].
    pub fn active() -> Rows {
        Rows { isa: Isa::active() }
    }

    pub fn isa(self) -> Isa {
        self.isa
    }

    /// Softmax over each row of `x` (`rows x n`) into `y`:
    /// `y_j = exp(x_j - max x) / sum_k exp(x_k - max x)`.
    pub fn softmax_forward(self, x: &[f32], y: &mut [f32], n: usize) {
        let rows = rows_of("softmax_forward", x.len(), n);
        assert_eq!(y.len(), x.len(), "softmax_forward: y and x differ in length");
        let (xp, yp) = (Ptr(x.as_ptr() as *mut f32), Ptr(y.as_mut_ptr()));
        for_rows(rows, n, 4, |r0, r1| unsafe {
            on::softmax_forward(self.isa, xp.at(r0 * n), yp.at(r0 * n), r1 - r0, n)
        });
    }

    /// Softmax backward from the forward output `y`: `dx_j = y_j (dy_j - sum_k dy_k y_k)`.
    pub fn softmax_backward(self, y: &[f32], dy: &[f32], dx: &mut [f32], n: usize) {
        let rows = rows_of("softmax_backward", y.len(), n);
        assert!(dy.len() == y.len() && dx.len() == y.len(), "softmax_backward: y, dy, dx differ in length");
        let (yp, dyp, dxp) = (Ptr(y.as_ptr() as *mut f32), Ptr(dy.as_ptr() as *mut f32), Ptr(dx.as_mut_ptr()));
        for_rows(rows, n, 1, |r0, r1| unsafe {
            on::softmax_backward(self.isa, yp.at(r0 * n), dyp.at(r0 * n), dxp.at(r0 * n), r1 - r0, n)
        });
    }

    /// Layer norm over each row of `x` (`rows x n`):
    /// `mean = sum x / n`, `var = sum (x - mean)^2 / n`, `rstd = 1 / sqrt(var + eps)`,
    /// `y = (x - mean) rstd w + b`; writes `y`, and `mean`, `rstd` (one per row) for backward.
    #[allow(clippy::too_many_arguments)]
    pub fn layer_norm_forward(
        self,
        x: &[f32],
        w: &[f32],
        b: &[f32],
        eps: f32,
        y: &mut [f32],
        mean: &mut [f32],
        rstd: &mut [f32],
    ) {
        let n = w.len();
        let rows = rows_of("layer_norm_forward", x.len(), n);
        assert!(b.len() == n && y.len() == x.len(), "layer_norm_forward: shapes of b or y do not match");
        assert!(mean.len() == rows && rstd.len() == rows, "layer_norm_forward: mean and rstd need one entry per row");
        let (xp, wp, bp) = (Ptr(x.as_ptr() as *mut f32), Ptr(w.as_ptr() as *mut f32), Ptr(b.as_ptr() as *mut f32));
        let (yp, mp, rp) = (Ptr(y.as_mut_ptr()), Ptr(mean.as_mut_ptr()), Ptr(rstd.as_mut_ptr()));
        for_rows(rows, n, 2, |r0, r1| unsafe {
            on::layer_norm_forward(
                self.isa,
                xp.at(r0 * n),
                wp.at(0),
                bp.at(0),
                eps,
                yp.at(r0 * n),
                mp.at(r0),
                rp.at(r0),
                r1 - r0,
                n,
            )
        });
    }

    /// Layer norm backward. With `xhat = (x - mean) rstd` and `g = dy w`:
    /// `dx = rstd (g - mean_j(g) - xhat mean_j(g xhat))` (written), and the parameter gradients
    /// summed over rows are *accumulated*: `dw += sum_rows dy xhat`, `db += sum_rows dy`.
    #[allow(clippy::too_many_arguments)]
    pub fn layer_norm_backward(
        self,
        x: &[f32],
        w: &[f32],
        mean: &[f32],
        rstd: &[f32],
        dy: &[f32],
        dx: &mut [f32],
        dw: &mut [f32],
        db: &mut [f32],
    ) {
        let n = w.len();
        let rows = rows_of("layer_norm_backward", x.len(), n);
        assert!(dy.len() == x.len() && dx.len() == x.len(), "layer_norm_backward: dy and dx must match x");
        assert!(mean.len() == rows && rstd.len() == rows, "layer_norm_backward: mean and rstd need one entry per row");
        assert!(dw.len() == n && db.len() == n, "layer_norm_backward: dw and db must match w");
        let chunks = chunk_count(rows, n, 3);
        let p = |s: &[f32]| Ptr(s.as_ptr() as *mut f32);
        let (xp, wp, mp, rp, dyp, dxp) = (p(x), p(w), p(mean), p(rstd), p(dy), Ptr(dx.as_mut_ptr()));
        if chunks <= 1 {
            let (dwp, dbp) = (Ptr(dw.as_mut_ptr()), Ptr(db.as_mut_ptr()));
            unsafe {
                on::layer_norm_backward(
                    self.isa,
                    xp.at(0),
                    wp.at(0),
                    mp.at(0),
                    rp.at(0),
                    dyp.at(0),
                    dxp.at(0),
                    dwp.at(0),
                    dbp.at(0),
                    rows,
                    n,
                )
            };
            return;
        }
        // Each chunk sums its rows' parameter gradients into its own slice; then add them up.
        let per = rows.div_ceil(chunks);
        let chunks = rows.div_ceil(per);
        let mut partial = vec![0.0f32; chunks * 2 * n];
        let pp = Ptr(partial.as_mut_ptr());
        (0..chunks).into_par_iter().for_each(|c| {
            let (r0, r1) = (c * per, ((c + 1) * per).min(rows));
            let (pw, pb) = (pp.at(2 * c * n), pp.at(2 * c * n + n));
            unsafe {
                on::layer_norm_backward(
                    self.isa,
                    xp.at(r0 * n),
                    wp.at(0),
                    mp.at(r0),
                    rp.at(r0),
                    dyp.at(r0 * n),
                    dxp.at(r0 * n),
                    pw,
                    pb,
                    r1 - r0,
                    n,
                )
            }
        });
        for part in partial.chunks_exact(2 * n) {
            for j in 0..n {
                dw[j] += part[j];
                db[j] += part[n + j];
            }
        }
    }

    /// GELU forward, element-wise: `y = x Phi(x)` (erf form) or
    /// `y = 0.5 x (1 + tanh(u)) = x sigmoid(2u)`, `u = sqrt(2/pi) (x + 0.044715 x^3)` (tanh form).
    pub fn gelu_forward(self, kind: Gelu, x: &[f32], y: &mut [f32]) {
        assert_eq!(y.len(), x.len(), "gelu_forward: y and x differ in length");
        let (xp, yp) = (Ptr(x.as_ptr() as *mut f32), Ptr(y.as_mut_ptr()));
        for_elems(x.len(), 8, |i0, i1| unsafe { on::gelu_forward(self.isa, kind, xp.at(i0), yp.at(i0), i1 - i0) });
    }

    /// GELU backward, element-wise: `dx = dy gelu'(x)` with `gelu'(x) = Phi(x) + x phi(x)` (erf
    /// form) or `s + 2 x s (1 - s) u'(x)`, `s = sigmoid(2u)` (tanh form).
    pub fn gelu_backward(self, kind: Gelu, x: &[f32], dy: &[f32], dx: &mut [f32]) {
        assert!(dy.len() == x.len() && dx.len() == x.len(), "gelu_backward: x, dy, dx differ in length");
        let (xp, dyp, dxp) = (Ptr(x.as_ptr() as *mut f32), Ptr(dy.as_ptr() as *mut f32), Ptr(dx.as_mut_ptr()));
        for_elems(x.len(), 10, |i0, i1| unsafe {
            on::gelu_backward(self.isa, kind, xp.at(i0), dyp.at(i0), dxp.at(i0), i1 - i0)
        });
    }

    /// `y = e^x` element-wise, with the vectorised `exp` the softmax and GELU kernels use
    /// (relative error below 3e-7 on `[-87.3, 88.3]`; 0 below, `exp(88.3)` above).
    pub fn exp(self, x: &[f32], y: &mut [f32]) {
        assert_eq!(y.len(), x.len(), "exp: y and x differ in length");
        let (xp, yp) = (Ptr(x.as_ptr() as *mut f32), Ptr(y.as_mut_ptr()));
        for_elems(x.len(), 4, |i0, i1| unsafe { on::exp(self.isa, xp.at(i0), yp.at(i0), i1 - i0) });
    }

    /// Adds `bias` (length `n`) to every row of `x` (`rows x n`), in place.
    pub fn bias_add(self, x: &mut [f32], bias: &[f32]) {
        let n = bias.len();
        let rows = rows_of("bias_add", x.len(), n);
        let (xp, bp) = (Ptr(x.as_mut_ptr()), Ptr(bias.as_ptr() as *mut f32));
        for_rows(rows, n, 1, |r0, r1| unsafe { on::bias_add(self.isa, xp.at(r0 * n), bp.at(0), r1 - r0, n) });
    }

    /// Accumulates the column sums of `x` (`rows x n`) into `out` (length `n`):
    /// `out_j += sum_r x_rj`, the gradient of a bias broadcast over rows.
    pub fn sum_rows(self, x: &[f32], out: &mut [f32]) {
        let n = out.len();
        let rows = rows_of("sum_rows", x.len(), n);
        let chunks = chunk_count(rows, n, 1);
        let xp = Ptr(x.as_ptr() as *mut f32);
        if chunks <= 1 {
            let op = Ptr(out.as_mut_ptr());
            unsafe { on::sum_rows(self.isa, xp.at(0), op.at(0), rows, n) };
            return;
        }
        let per = rows.div_ceil(chunks);
        let chunks = rows.div_ceil(per);
        let mut partial = vec![0.0f32; chunks * n];
        let pp = Ptr(partial.as_mut_ptr());
        (0..chunks).into_par_iter().for_each(|c| {
            let (r0, r1) = (c * per, ((c + 1) * per).min(rows));
            unsafe { on::sum_rows(self.isa, xp.at(r0 * n), pp.at(c * n), r1 - r0, n) }
        });
        let op = Ptr(out.as_mut_ptr());
        unsafe { on::sum_rows(self.isa, pp.at(0), op.at(0), chunks, n) };
    }

    /// One AdamW step, element-wise over `param`, with `grad`, and the moment buffers `m`, `v`
    /// updated in place (PyTorch's `AdamW`, decoupled weight decay):
    /// `p = p (1 - lr wd)`, `m = b1 m + (1 - b1) g`, `v = b2 v + (1 - b2) g^2`,
    /// `p = p - (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps)`.
    pub fn adamw(self, param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], h: &AdamW) {
        let len = param.len();
        assert!(grad.len() == len && m.len() == len && v.len() == len, "adamw: param, grad, m, v differ in length");
        let (pp, gp, mp, vp) =
            (Ptr(param.as_mut_ptr()), Ptr(grad.as_ptr() as *mut f32), Ptr(m.as_mut_ptr()), Ptr(v.as_mut_ptr()));
        for_elems(len, 3, |i0, i1| unsafe {
            on::adamw(self.isa, pp.at(i0), gp.at(i0), mp.at(i0), vp.at(i0), h, i1 - i0)
        });
    }
}

/// [`Rows::softmax_forward`] on the active ISA.
pub fn softmax_forward(x: &[f32], y: &mut [f32], n: usize) {
    Rows::active().softmax_forward(x, y, n)
}

/// [`Rows::softmax_backward`] on the active ISA.
pub fn softmax_backward(y: &[f32], dy: &[f32], dx: &mut [f32], n: usize) {
    Rows::active().softmax_backward(y, dy, dx, n)
}

/// [`Rows::layer_norm_forward`] on the active ISA.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_forward(
    x: &[f32],
    w: &[f32],
    b: &[f32],
    eps: f32,
    y: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
) {
    Rows::active().layer_norm_forward(x, w, b, eps, y, mean, rstd)
}

/// [`Rows::layer_norm_backward`] on the active ISA.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_backward(
    x: &[f32],
    w: &[f32],
    mean: &[f32],
    rstd: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    dw: &mut [f32],
    db: &mut [f32],
) {
    Rows::active().layer_norm_backward(x, w, mean, rstd, dy, dx, dw, db)
}

/// [`Rows::gelu_forward`] on the active ISA.
pub fn gelu_forward(kind: Gelu, x: &[f32], y: &mut [f32]) {
    Rows::active().gelu_forward(kind, x, y)
}

/// [`Rows::gelu_backward`] on the active ISA.
pub fn gelu_backward(kind: Gelu, x: &[f32], dy: &[f32], dx: &mut [f32]) {
    Rows::active().gelu_backward(kind, x, dy, dx)
}

/// [`Rows::bias_add`] on the active ISA.
pub fn bias_add(x: &mut [f32], bias: &[f32]) {
    Rows::active().bias_add(x, bias)
}

/// [`Rows::sum_rows`] on the active ISA.
pub fn sum_rows(x: &[f32], out: &mut [f32]) {
    Rows::active().sum_rows(x, out)
}

/// [`Rows::adamw`] on the active ISA.
pub fn adamw(param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], h: &AdamW) {
    Rows::active().adamw(param, grad, m, v, h)
}
