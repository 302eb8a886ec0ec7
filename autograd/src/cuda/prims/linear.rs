//! Products: the fused Linear ops (bias, residual and stochastic-depth scale, GELU epilogues)
//! and general strided (batched) matrix products.

use super::reduce::sum_mid;
use super::rows::gelu_code;
use super::{elementwise_grid, int, name, opt_ptr, ptr};
use crate::cuda::blas::{self, Batch, Mat};
use crate::cuda::driver::GemmType;
use crate::cuda::gpu::DeviceBuffer;
use crate::dtype::{DType, Float};
use crate::ops::gelu::GeluKind;

pub(crate) fn gemm_type<T: Float>() -> GemmType {
    match T::DTYPE {
        DType::F32 => GemmType::F32,
        DType::F64 => GemmType::F64,
    }
}

/// A view into a buffer: element offset `offset`, then `(rows, cols, rs, cs)` in elements.
#[derive(Clone, Copy, Debug)]
pub struct View {
    /// Element `(0, 0)`'s index in the buffer.
    pub offset: usize,
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Row stride, in elements.
    pub rs: i64,
    /// Column stride, in elements.
    pub cs: i64,
}

impl View {
    /// A contiguous row-major matrix at the start of its buffer.
    pub fn row_major(rows: usize, cols: usize) -> View {
        View { offset: 0, rows, cols, rs: cols as i64, cs: 1 }
    }

    /// The transpose (the same memory).
    pub fn t(self) -> View {
        View { rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs, ..self }
    }

    fn on<T: Copy>(self, b: &DeviceBuffer<T>) -> Mat {
        Mat { ptr: b.at(self.offset), rows: self.rows, cols: self.cols, rs: self.rs, cs: self.cs }
    }
}

/// `C_i = alpha A_i B_i + beta C_i` for `batch.count` products of views (batch strides in
/// elements). With `k = 0` and `beta = 0`, C is set to zero.
///
/// # Safety
/// Every view, at every batch index, lies inside its buffer; C overlaps neither A nor B.
pub unsafe fn gemm<T: Float>(
    alpha: f64,
    a: (&DeviceBuffer<T>, View),
    b: (&DeviceBuffer<T>, View),
    beta: f64,
    c: (&DeviceBuffer<T>, View),
    batch: Batch,
) {
    let p = blas::Product { ty: gemm_type::<T>(), alpha, a: a.1.on(a.0), b: b.1.on(b.0), beta, c: c.1.on(c.0), batch };
    blas::gemm(c.0.gpu(), &p);
}

/// `y = x W^T` for `x: [rows, k]`, `W: [n, k]` into a fresh `[rows, n]` buffer.
fn product<T: Float>(x: &DeviceBuffer<T>, w: &DeviceBuffer<T>, rows: usize, k: usize, n: usize) -> DeviceBuffer<T> {
    let gpu = x.gpu();
    if k == 0 {
        return super::elementwise::fill(gpu, rows * n, T::ZERO);
    }
    let y = gpu.alloc::<T>(rows * n);
    // SAFETY: x is rows*k, w n*k, y rows*n, distinct buffers.
    unsafe {
        gemm(
            1.0,
            (x, View::row_major(rows, k)),
            (w, View::row_major(n, k).t()),
            0.0,
            (&y, View::row_major(rows, n)),
            Batch::ONE,
        )
    };
    y
}

/// The residual part of a fused Linear: `y = r + s_i (x W^T + b)`, `s_i = scale[row /
/// rows_per_sample]` (or 1).
pub struct Residual<'a, T> {
    /// The residual stream `r`, `[rows, n]`.
    pub r: &'a DeviceBuffer<T>,
    /// Per-sample scale `s` (stochastic depth's kept/dropped factor), or none for 1.
    pub scale: Option<&'a DeviceBuffer<T>>,
    /// Rows of one sample (its tokens): row `i` uses `scale[i / rows_per_sample]`.
    pub rows_per_sample: usize,
}

/// `y = x W^T + b`, or with a residual `y = r + s (x W^T + b)`, for `x: [rows, k]`, `W: [n, k]`.
pub fn linear_forward<T: Float>(
    x: &DeviceBuffer<T>,
    w: &DeviceBuffer<T>,
    b: Option<&DeviceBuffer<T>>,
    residual: Option<Residual<'_, T>>,
    (rows, k, n): (usize, usize, usize),
) -> DeviceBuffer<T> {
    let gpu = x.gpu();
    let y = product(x, w, rows, k, n);
    if y.is_empty() {
        return y;
    }
    match residual {
        Some(res) => {
            let args = [
                ptr(&y),
                opt_ptr(b),
                ptr(res.r),
                opt_ptr(res.scale),
                int(rows),
                int(n),
                int(res.rows_per_sample.max(1)),
            ];
            // SAFETY: y and r are rows*n; b is n; scale has one entry per sample.
            unsafe { gpu.launch(&name::<T>("residual_epilogue"), elementwise_grid(y.len()), &args) };
        }
        None => {
            if let Some(b) = b {
                // SAFETY: y is rows*n and b n.
                unsafe {
                    gpu.launch(&name::<T>("bias_add"), elementwise_grid(y.len()), &[ptr(&y), ptr(b), int(rows), int(n)])
                };
            }
        }
    }
    y
}

/// `g * s_sample` (the branch gradient of a scaled residual).
pub fn scale_samples<T: Float>(g: &DeviceBuffer<T>, scale: &DeviceBuffer<T>, per_sample: usize) -> DeviceBuffer<T> {
    let out = g.gpu().alloc::<T>(g.len());
    if !g.is_empty() {
        let args = [ptr(g), ptr(scale), ptr(&out), int(per_sample.max(1)), int(g.len())];
        // SAFETY: g and out hold len elements; scale one per sample.
        unsafe { g.gpu().launch(&name::<T>("scale_samples"), elementwise_grid(g.len()), &args) };
    }
    out
}

/// The gradients of `y = x W^T + b` from `g = dL/dy` `[rows, n]`: `(dx, dW, db)`, each only
/// if asked for.
#[allow(clippy::type_complexity)]
pub fn linear_backward<T: Float>(
    x: &DeviceBuffer<T>,
    w: &DeviceBuffer<T>,
    g: &DeviceBuffer<T>,
    (rows, k, n): (usize, usize, usize),
    needs: [bool; 3],
) -> (Option<DeviceBuffer<T>>, Option<DeviceBuffer<T>>, Option<DeviceBuffer<T>>) {
    let gpu = x.gpu();
    let some = rows > 0 && k > 0 && n > 0;
    let out = |len: usize| if some { gpu.alloc::<T>(len) } else { super::elementwise::fill(gpu, len, T::ZERO) };
    let dx = needs[0].then(|| {
        let dx = out(rows * k);
        if some {
            // dx = g W: (rows x n) @ (n x k).
            // SAFETY: g is rows*n, w n*k, dx rows*k.
            unsafe {
                gemm(
                    1.0,
                    (g, View::row_major(rows, n)),
                    (w, View::row_major(n, k)),
                    0.0,
                    (&dx, View::row_major(rows, k)),
                    Batch::ONE,
                )
            };
        }
        dx
    });
    let dw = needs[1].then(|| {
        let dw = out(n * k);
        if some {
            // dW = g^T x: (n x rows) @ (rows x k), every row of the batch summed inside the GEMM.
            // SAFETY: g is rows*n, x rows*k, dw n*k.
            unsafe {
                gemm(
                    1.0,
                    (g, View::row_major(rows, n).t()),
                    (x, View::row_major(rows, k)),
                    0.0,
                    (&dw, View::row_major(n, k)),
                    Batch::ONE,
                )
            };
        }
        dw
    });
    let db = needs[2].then(|| sum_mid(g, 1, rows, n, 1.0));
    (dx, dw, db)
}

/// `a = gelu(x W^T + b)`; also returns the pre-activation `h = x W^T + b` when `keep_h`.
pub fn linear_gelu_forward<T: Float>(
    x: &DeviceBuffer<T>,
    w: &DeviceBuffer<T>,
    b: &DeviceBuffer<T>,
    kind: GeluKind,
    (rows, k, n): (usize, usize, usize),
    keep_h: bool,
) -> (DeviceBuffer<T>, Option<DeviceBuffer<T>>) {
    let h = product(x, w, rows, k, n);
    let a = x.gpu().alloc::<T>(rows * n);
    if !h.is_empty() {
        let args = [gelu_code(kind), ptr(&h), ptr(b), ptr(&a), int(rows), int(n)];
        // SAFETY: h and a are rows*n, b n.
        unsafe { x.gpu().launch(&name::<T>("bias_gelu_forward"), elementwise_grid(h.len()), &args) };
    }
    (a, keep_h.then_some(h))
}

/// The gradients of `a = gelu(x W^T + b)`: `dh = g gelu'(h)` from `h` (the kept
/// pre-activation with its bias, or recomputed: one more product), then a Linear's gradients.
#[allow(clippy::type_complexity, clippy::too_many_arguments)]
pub fn linear_gelu_backward<T: Float>(
    x: &DeviceBuffer<T>,
    w: &DeviceBuffer<T>,
    b: &DeviceBuffer<T>,
    g: &DeviceBuffer<T>,
    h: Option<&DeviceBuffer<T>>,
    kind: GeluKind,
    dims: (usize, usize, usize),
    needs: [bool; 3],
) -> (Option<DeviceBuffer<T>>, Option<DeviceBuffer<T>>, Option<DeviceBuffer<T>>) {
    let (rows, k, n) = dims;
    // A kept h already holds the bias; a recomputed product does not.
    let recomputed;
    let (h, bias) = match h {
        Some(h) => (h, None),
        None => {
            recomputed = product(x, w, rows, k, n);
            (&recomputed, Some(b))
        }
    };
    let dh = x.gpu().alloc::<T>(rows * n);
    if !dh.is_empty() {
        let args = [gelu_code(kind), ptr(h), opt_ptr(bias), ptr(g), ptr(&dh), int(rows), int(n)];
        // SAFETY: h, g and dh are rows*n, b n.
        unsafe { x.gpu().launch(&name::<T>("bias_gelu_backward"), elementwise_grid(dh.len()), &args) };
    }
    linear_backward(x, w, &dh, dims, needs)
}
