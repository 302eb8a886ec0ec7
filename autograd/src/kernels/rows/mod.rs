//! SIMD row kernels for the hot non-GEMM ops: softmax, layer norm, GELU, `exp`, bias add (and
//! its gradient, a sum over rows) and the AdamW update. Pure functions on `f32` slices; the
//! autograd ops call them for `f32` tensors.
//!
//! Each kernel is written once over the `Simd` vector abstraction (`kernels/simd.rs`)
//! (`imp.rs`, with the transcendental functions and their measured accuracy in `math.rs`) and
//! instantiated for AVX-512F and AVX2+FMA (x86-64), NEON (aarch64) and the portable `wide`
//! vectors (everywhere); [`Rows`] picks one (by default [`Isa::active`]). Work is split over
//! rayon threads by the one row driver ([`crate::kernels::parallel`]): whole rows (or, for the
//! element-wise kernels, runs of 64 elements) in blocks that depend on the width only, so small
//! tensors stay on the calling thread and the reductions (layer norm's parameter gradients,
//! [`Rows::sum_rows`]) give the same bits on any number of threads.
//!
//! The math of each kernel is in its doc comment; shapes are `rows x n`, row-major, with `n`
//! passed explicitly and `rows = x.len() / n`.

mod imp;
pub(crate) mod math;

use std::ops::Range;

use crate::kernels::parallel::{for_row_blocks, reduce_row_blocks};
use crate::kernels::send_ptr::SendPtr;
use crate::kernels::Isa;

/// A task below this many elements (times the kernel's relative cost) stays on one thread.
pub const MIN_GRAIN: usize = 32 * 1024;

/// Which GELU formula to use. The two differ by up to about 5e-4, enough to move a pretrained
/// model's logits, so a checkpoint must run with the form it was trained with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GeluKind {
    /// `x Phi(x) = 0.5 x (1 + erf(x / sqrt 2))`: timm's and PyTorch's default, so timm
    /// checkpoints reproduce their logits with it.
    #[default]
    Erf,
    /// `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`: the official Flax ViT code's form.
    Tanh,
}

/// Parses the names configs and the command line use, in any case: `"erf"` (also `"exact"`, and
/// `"none"` as in PyTorch's `approximate="none"`) or `"tanh"`.
impl std::str::FromStr for GeluKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "erf" | "exact" | "none" => Ok(GeluKind::Erf),
            "tanh" => Ok(GeluKind::Tanh),
            _ => Err(format!("gelu: unknown kind {s:?}, expected \"erf\" or \"tanh\"")),
        }
    }
}

/// The hyper-parameters of one AdamW step, as the kernel uses them (f32), each worked out in
/// f64 from the exact settings by [`AdamW::at_step`]: `1 - beta` in particular, since forming it
/// in f32 from an f32-rounded `beta2 = 0.999` is off by 6.8e-6 relative (every update too large).
#[derive(Clone, Copy, Debug)]
pub struct AdamW {
    /// Learning rate.
    pub lr: f32,
    /// First-moment decay `b1`.
    pub beta1: f32,
    /// Second-moment decay `b2`.
    pub beta2: f32,
    /// `1 - b1`.
    pub one_minus_beta1: f32,
    /// `1 - b2`.
    pub one_minus_beta2: f32,
    /// Added to `sqrt(v_hat)`.
    pub eps: f32,
    /// Decoupled weight decay (0 for parameters that are not decayed).
    pub weight_decay: f32,
    /// `1 - b1^t` for step `t` (1-based).
    pub bias_correction1: f32,
    /// `1 - b2^t`.
    pub bias_correction2: f32,
}

impl AdamW {
    /// Step `t` (1-based) of AdamW with these settings, every derived value computed in f64 and
    /// rounded once.
    pub fn at_step(t: u64, lr: f64, (beta1, beta2): (f64, f64), eps: f64, weight_decay: f64) -> AdamW {
        let t = i32::try_from(t).unwrap_or(i32::MAX);
        AdamW {
            lr: lr as f32,
            beta1: beta1 as f32,
            beta2: beta2 as f32,
            one_minus_beta1: (1.0 - beta1) as f32,
            one_minus_beta2: (1.0 - beta2) as f32,
            eps: eps as f32,
            weight_decay: weight_decay as f32,
            bias_correction1: (1.0 - beta1.powi(t)) as f32,
            bias_correction2: (1.0 - beta2.powi(t)) as f32,
        }
    }
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
            use super::{imp, AdamW, GeluKind};
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
                    #[cfg(target_arch = "aarch64")]
                    #[target_feature(enable = "neon")]
                    #[allow(clippy::too_many_arguments)]
                    unsafe fn neon($($arg: $ty),*) {
                        imp::$name::<crate::kernels::simd::Neon>($($arg),*)
                    }
                    match isa {
                        #[cfg(target_arch = "x86_64")]
                        Isa::Avx512 => avx512($($arg),*),
                        #[cfg(target_arch = "x86_64")]
                        Isa::Avx2Fma => avx2($($arg),*),
                        #[cfg(target_arch = "aarch64")]
                        Isa::Neon => neon($($arg),*),
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
    layer_norm_apply(x: *const f32, w: *const f32, b: *const f32, mean: *const f32, rstd: *const f32, y: *mut f32, rows: usize, n: usize);
    layer_norm_backward(x: *const f32, w: *const f32, mean: *const f32, rstd: *const f32, dy: *const f32, dx: *mut f32, dw: *mut f32, db: *mut f32, rows: usize, n: usize);
    gelu_forward(kind: GeluKind, x: *const f32, y: *mut f32, n: usize);
    gelu_backward(kind: GeluKind, x: *const f32, dy: *const f32, dx: *mut f32, n: usize);
    gelu_forward_grad(kind: GeluKind, x: *const f32, y: *mut f32, d: *mut f32, n: usize);
    exp(x: *const f32, y: *mut f32, n: usize);
    bias_add(x: *mut f32, bias: *const f32, rows: usize, n: usize);
    add_rows(x: *const f32, out: *mut f32, rows: usize, n: usize);
    scale_add_rows(d: *mut f32, g: *const f32, out: *mut f32, rows: usize, n: usize);
    adamw(p: *mut f32, g: *const f32, m: *mut f32, v: *mut f32, h: &AdamW, n: usize);
}

/// Elements per "row" of the element-wise kernels: a whole number of vectors on every ISA.
const RUN: usize = 64;

/// Calls `f(elements)` over `0..len` in runs of [`RUN`] elements, blocked as rows are.
fn for_elems(len: usize, cost: usize, f: impl Fn(Range<usize>) + Sync + Send) {
    for_row_blocks(len.div_ceil(RUN), RUN, cost, |r| f(r.start * RUN..(r.end * RUN).min(len)));
}

/// The number of `n`-element rows of a buffer of `len`; panics naming `name` if it is not whole.
fn rows_of(name: &str, len: usize, n: usize) -> usize {
    assert!(n > 0 || len == 0, "{name}: row length must be positive");
    assert!(len.is_multiple_of(n.max(1)), "{name}: buffer of {len} elements is not a whole number of rows of {n}");
    len / n.max(1)
}

/// Read-only buffers as shared pointers for the tasks (they only read through them).
fn shared(x: &[f32]) -> SendPtr<f32> {
    SendPtr::from_const(x.as_ptr())
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

    /// The ISA these kernels run on.
    pub fn isa(self) -> Isa {
        self.isa
    }

    /// Softmax over each row of `x` (`rows x n`) into `y`:
    /// `y_j = exp(x_j - max x) / sum_k exp(x_k - max x)`.
    pub fn softmax_forward(self, x: &[f32], y: &mut [f32], n: usize) {
        let rows = rows_of("softmax_forward", x.len(), n);
        assert_eq!(y.len(), x.len(), "softmax_forward: y and x differ in length");
        let (xp, yp) = (shared(x), SendPtr::new(y.as_mut_ptr()));
        // SAFETY: the ISA is available (checked by `Rows::new`); each task reads and writes
        // its own rows r of `rows x n` buffers.
        for_row_blocks(rows, n, 4, |r| unsafe {
            on::softmax_forward(self.isa, xp.at(r.start * n), yp.at(r.start * n), r.len(), n)
        });
    }

    /// Softmax backward from the forward output `y`: `dx_j = y_j (dy_j - sum_k dy_k y_k)`.
    pub fn softmax_backward(self, y: &[f32], dy: &[f32], dx: &mut [f32], n: usize) {
        let rows = rows_of("softmax_backward", y.len(), n);
        assert!(dy.len() == y.len() && dx.len() == y.len(), "softmax_backward: y, dy, dx differ in length");
        let (yp, dyp, dxp) = (shared(y), shared(dy), SendPtr::new(dx.as_mut_ptr()));
        // SAFETY: as in `softmax_forward`: disjoint rows per task.
        for_row_blocks(rows, n, 1, |r| unsafe {
            let at = r.start * n;
            on::softmax_backward(self.isa, yp.at(at), dyp.at(at), dxp.at(at), r.len(), n)
        });
    }

    /// Layer norm over each row of `x` (`rows x n`):
    /// `mean = sum x / n`, `var = sum (x - mean)^2 / n`, `rstd = 1 / sqrt(var + eps)`,
    /// `y = (x - mean) rstd w + b`; writes `y`, and `mean`, `rstd` (one per row) for backward.
    pub fn layer_norm_forward(
        self,
        x: &[f32],
        (w, b): (&[f32], &[f32]),
        eps: f32,
        y: &mut [f32],
        (mean, rstd): (&mut [f32], &mut [f32]),
    ) {
        let n = w.len();
        let rows = rows_of("layer_norm_forward", x.len(), n);
        assert!(b.len() == n && y.len() == x.len(), "layer_norm_forward: shapes of b or y do not match");
        assert!(mean.len() == rows && rstd.len() == rows, "layer_norm_forward: mean and rstd need one entry per row");
        let (xp, wp, bp) = (shared(x), shared(w), shared(b));
        let (yp, mp, rp) =
            (SendPtr::new(y.as_mut_ptr()), SendPtr::new(mean.as_mut_ptr()), SendPtr::new(rstd.as_mut_ptr()));
        // SAFETY: each task reads its rows of x and writes its rows of y, mean and rstd.
        for_row_blocks(rows, n, 2, |r| unsafe {
            let (at, rr) = (r.start * n, r.start);
            on::layer_norm_forward(
                self.isa,
                xp.at(at),
                wp.get(),
                bp.get(),
                eps,
                yp.at(at),
                mp.at(rr),
                rp.at(rr),
                r.len(),
                n,
            )
        });
    }

    /// Layer norm's output from the statistics [`Rows::layer_norm_forward`] saved:
    /// `y = (x - mean) rstd w + b`, bit for bit the forward's `y` (a recompute in backward).
    pub fn layer_norm_apply(self, x: &[f32], (w, b): (&[f32], &[f32]), (mean, rstd): (&[f32], &[f32]), y: &mut [f32]) {
        let n = w.len();
        let rows = rows_of("layer_norm_apply", x.len(), n);
        assert!(b.len() == n && y.len() == x.len(), "layer_norm_apply: shapes of b or y do not match");
        assert!(mean.len() == rows && rstd.len() == rows, "layer_norm_apply: mean and rstd need one entry per row");
        let (xp, wp, bp, mp, rp) = (shared(x), shared(w), shared(b), shared(mean), shared(rstd));
        let yp = SendPtr::new(y.as_mut_ptr());
        // SAFETY: each task reads its rows of x, mean and rstd and writes its rows of y.
        for_row_blocks(rows, n, 1, |r| unsafe {
            let at = r.start * n;
            on::layer_norm_apply(
                self.isa,
                xp.at(at),
                wp.get(),
                bp.get(),
                mp.at(r.start),
                rp.at(r.start),
                yp.at(at),
                r.len(),
                n,
            )
        });
    }

    /// Layer norm backward. With `xhat = (x - mean) rstd` and `g = dy w`:
    /// `dx = rstd (g - mean_j(g) - xhat mean_j(g xhat))` (written), and the parameter gradients
    /// summed over rows are *accumulated*: `dw += sum_rows dy xhat`, `db += sum_rows dy`, by the
    /// deterministic blocked reduction.
    pub fn layer_norm_backward(
        self,
        x: &[f32],
        w: &[f32],
        (mean, rstd): (&[f32], &[f32]),
        dy: &[f32],
        dx: &mut [f32],
        (dw, db): (&mut [f32], &mut [f32]),
    ) {
        let n = w.len();
        let rows = rows_of("layer_norm_backward", x.len(), n);
        assert!(dy.len() == x.len() && dx.len() == x.len(), "layer_norm_backward: dy and dx must match x");
        assert!(mean.len() == rows && rstd.len() == rows, "layer_norm_backward: mean and rstd need one entry per row");
        assert!(dw.len() == n && db.len() == n, "layer_norm_backward: dw and db must match w");
        let (xp, wp, mp, rp, dyp) = (shared(x), shared(w), shared(mean), shared(rstd), shared(dy));
        let dxp = SendPtr::new(dx.as_mut_ptr());
        // Each block sums its rows' parameter gradients into its own [dw | db] partial.
        let mut acc = vec![0.0f32; 2 * n];
        reduce_row_blocks(rows, n, 3, &mut acc, |r, partial| {
            let (pw, pb) = partial.split_at_mut(n);
            let (at, rr) = (r.start * n, r.start);
            // SAFETY: the task reads its rows of x, dy, mean, rstd, writes its rows of dx, and
            // its own partial.
            unsafe {
                on::layer_norm_backward(
                    self.isa,
                    xp.at(at),
                    wp.get(),
                    mp.at(rr),
                    rp.at(rr),
                    dyp.at(at),
                    dxp.at(at),
                    pw.as_mut_ptr(),
                    pb.as_mut_ptr(),
                    r.len(),
                    n,
                )
            }
        });
        for (j, (dwj, dbj)) in dw.iter_mut().zip(db.iter_mut()).enumerate() {
            *dwj += acc[j];
            *dbj += acc[n + j];
        }
    }

    /// GELU forward, element-wise: `y = x Phi(x)` (erf form) or
    /// `y = 0.5 x (1 + tanh(u)) = x sigmoid(2u)`, `u = sqrt(2/pi) (x + 0.044715 x^3)` (tanh form).
    pub fn gelu_forward(self, kind: GeluKind, x: &[f32], y: &mut [f32]) {
        assert_eq!(y.len(), x.len(), "gelu_forward: y and x differ in length");
        let (xp, yp) = (shared(x), SendPtr::new(y.as_mut_ptr()));
        // SAFETY: each task reads and writes its own run of elements.
        for_elems(x.len(), 8, |e| unsafe { on::gelu_forward(self.isa, kind, xp.at(e.start), yp.at(e.start), e.len()) });
    }

    /// [`Rows::gelu_forward`] overwriting its input, `x <- gelu(x)`: for a pre-activation that
    /// nothing keeps (inference), so the product's output is written once instead of twice.
    pub fn gelu_in_place(self, kind: GeluKind, x: &mut [f32]) {
        let xp = SendPtr::new(x.as_mut_ptr());
        // SAFETY: each task reads and then writes its own run of elements; the kernel reads
        // every element before it stores that element, and no other.
        for_elems(x.len(), 8, |e| unsafe { on::gelu_forward(self.isa, kind, xp.at(e.start), xp.at(e.start), e.len()) });
    }

    /// GELU backward, element-wise: `dx = dy gelu'(x)` with `gelu'(x) = Phi(x) + x phi(x)` (erf
    /// form) or `s + 2 x s (1 - s) u'(x)`, `s = sigmoid(2u)` (tanh form).
    pub fn gelu_backward(self, kind: GeluKind, x: &[f32], dy: &[f32], dx: &mut [f32]) {
        assert!(dy.len() == x.len() && dx.len() == x.len(), "gelu_backward: x, dy, dx differ in length");
        let (xp, dyp, dxp) = (shared(x), shared(dy), SendPtr::new(dx.as_mut_ptr()));
        // SAFETY: each task reads and writes its own run of elements.
        for_elems(x.len(), 10, |e| unsafe {
            on::gelu_backward(self.isa, kind, xp.at(e.start), dyp.at(e.start), dxp.at(e.start), e.len())
        });
    }

    /// GELU and its derivative together, element-wise: `y = gelu(x)` exactly as
    /// [`Rows::gelu_forward`] makes it and `d = gelu'(x)` (what [`Rows::gelu_backward`]
    /// multiplies `dy` by, to within the last bit), for one pass where both are needed.
    pub fn gelu_forward_grad(self, kind: GeluKind, x: &[f32], y: &mut [f32], d: &mut [f32]) {
        assert!(y.len() == x.len() && d.len() == x.len(), "gelu_forward_grad: x, y, d differ in length");
        let (xp, yp, dp) = (shared(x), SendPtr::new(y.as_mut_ptr()), SendPtr::new(d.as_mut_ptr()));
        // SAFETY: each task reads and writes its own run of elements.
        for_elems(x.len(), 10, |e| unsafe {
            on::gelu_forward_grad(self.isa, kind, xp.at(e.start), yp.at(e.start), dp.at(e.start), e.len())
        });
    }

    /// `y = e^x` element-wise, with the vectorised `exp` the softmax and GELU kernels use
    /// (relative error below 3e-7 on `[-87.3, 88.3]`; 0 below, `exp(88.3)` above).
    pub fn exp(self, x: &[f32], y: &mut [f32]) {
        assert_eq!(y.len(), x.len(), "exp: y and x differ in length");
        let (xp, yp) = (shared(x), SendPtr::new(y.as_mut_ptr()));
        // SAFETY: each task reads and writes its own run of elements.
        for_elems(x.len(), 4, |e| unsafe { on::exp(self.isa, xp.at(e.start), yp.at(e.start), e.len()) });
    }

    /// Adds `bias` (length `n`) to every row of `x` (`rows x n`), in place.
    pub fn bias_add(self, x: &mut [f32], bias: &[f32]) {
        let n = bias.len();
        let rows = rows_of("bias_add", x.len(), n);
        let (xp, bp) = (SendPtr::new(x.as_mut_ptr()), shared(bias));
        // SAFETY: each task updates its own rows of x and reads the whole bias.
        for_row_blocks(rows, n, 1, |r| unsafe { on::bias_add(self.isa, xp.at(r.start * n), bp.get(), r.len(), n) });
    }

    /// `out_j += sum_r x_rj` over the rows of `x` (`rows x n`, `n = out.len()`), on the calling
    /// thread, row after row.
    pub fn add_rows(self, x: &[f32], out: &mut [f32]) {
        let n = out.len();
        let rows = rows_of("add_rows", x.len(), n);
        // SAFETY: x holds rows x n elements, out n.
        unsafe { on::add_rows(self.isa, x.as_ptr(), out.as_mut_ptr(), rows, n) }
    }

    /// Accumulates the column sums of `x` (`rows x n`) into `out` (length `n`):
    /// `out_j += sum_r x_rj`, the gradient of a bias broadcast over rows. Parallel over fixed
    /// blocks of rows whose partial sums are added in block order: the same bits on any number
    /// of threads.
    pub fn sum_rows(self, x: &[f32], out: &mut [f32]) {
        let n = out.len();
        let rows = rows_of("sum_rows", x.len(), n);
        reduce_row_blocks(rows, n, 1, out, |r, partial| self.add_rows(&x[r.start * n..r.end * n], partial));
    }

    /// `d *= g` element-wise (both `rows x n`, `n = out.len()`) and `out_j += sum_r d[r, j]` of
    /// the scaled `d`, in one pass: the same bits as the multiply followed by
    /// [`Rows::sum_rows`] (the same blocks, the same order of additions).
    pub fn scale_sum_rows(self, d: &mut [f32], g: &[f32], out: &mut [f32]) {
        let n = out.len();
        let rows = rows_of("scale_sum_rows", d.len(), n);
        assert_eq!(g.len(), d.len(), "scale_sum_rows: d and g differ in length");
        let (dp, gp) = (SendPtr::new(d.as_mut_ptr()), shared(g));
        // SAFETY: each block scales its own rows of d, reads the same rows of g, and sums into
        // its own partial (n long).
        reduce_row_blocks(rows, n, 1, out, |r, partial| unsafe {
            on::scale_add_rows(self.isa, dp.at(r.start * n), gp.at(r.start * n), partial.as_mut_ptr(), r.len(), n)
        });
    }

    /// One AdamW step, element-wise over `param`, with `grad`, and the moment buffers `m`, `v`
    /// updated in place (PyTorch's `AdamW`, decoupled weight decay):
    /// `p = p (1 - lr wd)`, `m = b1 m + (1 - b1) g`, `v = b2 v + (1 - b2) g^2`,
    /// `p = p - (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps)`.
    pub fn adamw(self, param: &mut [f32], grad: &[f32], (m, v): (&mut [f32], &mut [f32]), h: &AdamW) {
        let len = param.len();
        assert!(grad.len() == len && m.len() == len && v.len() == len, "adamw: param, grad, m, v differ in length");
        let (pp, gp) = (SendPtr::new(param.as_mut_ptr()), shared(grad));
        let (mp, vp) = (SendPtr::new(m.as_mut_ptr()), SendPtr::new(v.as_mut_ptr()));
        // SAFETY: each task updates its own run of elements of param, m and v.
        for_elems(len, 3, |e| unsafe {
            let i = e.start;
            on::adamw(self.isa, pp.at(i), gp.at(i), mp.at(i), vp.at(i), h, e.len())
        });
    }
}
