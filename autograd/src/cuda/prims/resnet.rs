//! The hybrid's ResNet on the device (resnet.cu): convolution as im2col + strided-batched GEMMs
//! over the whole batch, and group normalisation. The math is `ops/conv2d.rs`' and
//! `ops/group_norm.rs`'.
//!
//! ```text
//!     cols [F, B, P]   F = C kh kw (receptive field), P = Ho Wo; image b's columns cols_b are
//!                      the F x P matrix at offset b P with row stride B P
//!     y_b  = W cols_b                          B products, W shared (batch stride 0)
//!     dcols_b = W^T g_b,  dx = col2im(dcols)   B products into the same interleaved layout
//!     dW   = g' cols^T                         one product, K = B P, g' = g as [O, B, P]
//! ```

use super::linear::{gemm, View};
use super::{elementwise_grid, int, name, ptr, rows_grid};
use crate::cuda::blas::Batch;
use crate::cuda::driver::Arg;
use crate::cuda::gpu::DeviceBuffer;
use crate::dtype::Float;

/// A convolution's geometry: `b` images `[c, h, w]`, `o` filters of `kh x kw`, moved by
/// `stride` over the image padded by `top` rows above and `left` columns left, `ho x wo` out.
#[derive(Clone, Copy, Debug)]
pub struct Conv {
    /// Images.
    pub b: usize,
    /// Input channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels (filters).
    pub o: usize,
    /// Window height.
    pub kh: usize,
    /// Window width.
    pub kw: usize,
    /// Step between windows.
    pub stride: usize,
    /// Padding above.
    pub top: usize,
    /// Padding left.
    pub left: usize,
    /// Output height.
    pub ho: usize,
    /// Output width.
    pub wo: usize,
}

impl Conv {
    fn field(&self) -> usize {
        self.c * self.kh * self.kw
    }

    fn plane(&self) -> usize {
        self.ho * self.wo
    }

    fn args<T: Copy>(&self, src: &DeviceBuffer<T>, dst: &DeviceBuffer<T>) -> [Arg; 13] {
        [
            ptr(src),
            ptr(dst),
            int(self.b),
            int(self.c),
            int(self.h),
            int(self.w),
            int(self.kh),
            int(self.kw),
            int(self.stride),
            int(self.top),
            int(self.left),
            int(self.ho),
            int(self.wo),
        ]
    }

    /// Image b's columns in `cols` `[F, B, P]`: an F x P view at offset 0 (the batch stride
    /// moves it by P).
    fn cols_view(&self) -> View {
        View { offset: 0, rows: self.field(), cols: self.plane(), rs: (self.b * self.plane()) as i64, cs: 1 }
    }
}

/// `cols` `[F, B, P]` from `x` `[B, C, H, W]`.
fn im2col<T: Float>(x: &DeviceBuffer<T>, d: &Conv) -> DeviceBuffer<T> {
    let gpu = x.gpu();
    let n = d.field() * d.b * d.plane();
    let cols = gpu.alloc::<T>(n);
    if n > 0 {
        // SAFETY: x holds b*c*h*w elements, cols field*b*plane; every read index is checked
        // against the image bounds.
        unsafe { gpu.launch(&name::<T>("im2col"), elementwise_grid(n), &d.args(x, &cols)) };
    }
    cols
}

/// `y` `[B, O, Ho, Wo]` = the convolution of `x` `[B, C, H, W]` with `w` `[O, C, kh, kw]`.
pub fn conv_forward<T: Float>(x: &DeviceBuffer<T>, w: &DeviceBuffer<T>, d: &Conv) -> DeviceBuffer<T> {
    let gpu = x.gpu();
    let (f, p) = (d.field(), d.plane());
    if d.b * d.o * p == 0 || f == 0 {
        return super::elementwise::fill(gpu, d.b * d.o * p, T::ZERO);
    }
    let cols = im2col(x, d);
    let y = gpu.alloc::<T>(d.b * d.o * p);
    let batch = Batch { count: d.b, a: 0, b: p as i64, c: (d.o * p) as i64 };
    // SAFETY: for every image b < B: W is o x f at 0; cols_b f x p at b p with row stride B p
    // ends at (f - 1) B p + b p + p <= f B p; y_b o x p at b o p. y is a fresh buffer.
    unsafe {
        gemm(1.0, (w, View::row_major(d.o, f)), (&cols, d.cols_view()), 0.0, (&y, View::row_major(d.o, p)), batch)
    };
    y
}

/// The convolution's `(dx, dw)` from `x`, `w` and the output gradient `g`, each if asked for.
pub fn conv_backward<T: Float>(
    x: &DeviceBuffer<T>,
    w: &DeviceBuffer<T>,
    g: &DeviceBuffer<T>,
    d: &Conv,
    needs: [bool; 2],
) -> (Option<DeviceBuffer<T>>, Option<DeviceBuffer<T>>) {
    let gpu = x.gpu();
    let (f, p) = (d.field(), d.plane());
    let empty = d.b * p == 0 || f == 0 || d.o == 0;
    let dx = needs[0].then(|| {
        let dx = gpu.alloc::<T>(d.b * d.c * d.h * d.w);
        if dx.is_empty() {
            return dx;
        }
        if empty {
            return super::elementwise::fill(gpu, dx.len(), T::ZERO);
        }
        let dcols = gpu.alloc::<T>(f * d.b * p);
        let batch = Batch { count: d.b, a: 0, b: (d.o * p) as i64, c: p as i64 };
        // SAFETY: W^T is f x o at 0, g_b o x p at b o p, dcols_b f x p at b p with row stride
        // B p (as cols in forward); dcols is fresh and distinct from W and g.
        unsafe {
            gemm(
                1.0,
                (w, View::row_major(d.o, f).t()),
                (g, View::row_major(d.o, p)),
                0.0,
                (&dcols, d.cols_view()),
                batch,
            )
        };
        // SAFETY: dcols holds f*b*p elements, dx b*c*h*w; every gathered index is a window
        // position inside the output.
        unsafe { gpu.launch(&name::<T>("col2im"), elementwise_grid(dx.len()), &d.args(&dcols, &dx)) };
        dx
    });
    let dw = needs[1].then(|| {
        if empty {
            return super::elementwise::fill(gpu, d.o * f, T::ZERO);
        }
        let cols = im2col(x, d);
        // g [B, O, P] as [O, B P]: each filter's gradients over the whole batch in one row.
        let gt = super::elementwise::permute(g, &[d.b, d.o, p], &[1, 0, 2]);
        let dw = gpu.alloc::<T>(d.o * f);
        let bp = d.b * p;
        // SAFETY: g' is o x B p, cols^T B p x f (cols f x B p row-major), dw o x f, fresh.
        unsafe {
            gemm(
                1.0,
                (&gt, View::row_major(d.o, bp)),
                (&cols, View::row_major(f, bp).t()),
                0.0,
                (&dw, View::row_major(d.o, f)),
                Batch::ONE,
            )
        };
        dw
    });
    (dx, dw)
}

/// A group norm's geometry: `b` images of `c` channels of `s` values, in `groups` groups.
#[derive(Clone, Copy, Debug)]
pub struct Groups {
    /// Images.
    pub b: usize,
    /// Channels.
    pub c: usize,
    /// Values per channel (the spatial size).
    pub s: usize,
    /// Groups of channels (dividing `c`).
    pub groups: usize,
}

impl Groups {
    fn rows(&self) -> usize {
        self.b * self.groups
    }

    fn cpg(&self) -> usize {
        self.c / self.groups
    }

    fn n(&self) -> usize {
        self.cpg() * self.s
    }
}

/// Group norm's `(y, mean, rstd)`: the output and each (image, group)'s statistics.
pub fn group_norm_forward<T: Float>(
    x: &DeviceBuffer<T>,
    w: &DeviceBuffer<T>,
    b: &DeviceBuffer<T>,
    d: &Groups,
    eps: f64,
) -> (DeviceBuffer<T>, DeviceBuffer<T>, DeviceBuffer<T>) {
    let gpu = x.gpu();
    let (rows, n) = (d.rows(), d.n());
    if n == 0 || rows == 0 {
        let zeros = || super::elementwise::fill(gpu, rows, T::ZERO);
        return (gpu.alloc::<T>(x.len()), zeros(), zeros());
    }
    let (y, mean, rstd) = (gpu.alloc::<T>(x.len()), gpu.alloc::<T>(rows), gpu.alloc::<T>(rows));
    let args = [
        ptr(x),
        ptr(w),
        ptr(b),
        ptr(&y),
        ptr(&mean),
        ptr(&rstd),
        int(rows),
        int(n),
        int(d.groups),
        int(d.cpg()),
        int(d.s),
        Arg::F64(eps),
    ];
    // SAFETY: x and y hold rows*n elements, w and b c, mean and rstd rows; every channel index
    // (row mod groups) cpg + j / s is below c.
    unsafe { gpu.launch(&name::<T>("group_norm_forward"), rows_grid(rows), &args) };
    (y, mean, rstd)
}

/// Group norm's gradients `(dx, dw, db)`, each if asked for.
#[allow(clippy::type_complexity)]
pub fn group_norm_backward<T: Float>(
    x: &DeviceBuffer<T>,
    w: &DeviceBuffer<T>,
    mean: &DeviceBuffer<T>,
    rstd: &DeviceBuffer<T>,
    g: &DeviceBuffer<T>,
    d: &Groups,
    needs: [bool; 3],
) -> (Option<DeviceBuffer<T>>, Option<DeviceBuffer<T>>, Option<DeviceBuffer<T>>) {
    let gpu = x.gpu();
    let (rows, n) = (d.rows(), d.n());
    let dx = needs[0].then(|| {
        let dx = gpu.alloc::<T>(x.len());
        if n > 0 && rows > 0 {
            let args = [
                ptr(x),
                ptr(w),
                ptr(mean),
                ptr(rstd),
                ptr(g),
                ptr(&dx),
                int(rows),
                int(n),
                int(d.groups),
                int(d.cpg()),
                int(d.s),
            ];
            // SAFETY: x, g, dx hold rows*n elements, w c, mean and rstd rows.
            unsafe { gpu.launch(&name::<T>("group_norm_dx"), rows_grid(rows), &args) };
        }
        dx
    });
    let (dw, db) = if needs[1] || needs[2] {
        let (dw, db) = (gpu.alloc::<T>(d.c), gpu.alloc::<T>(d.c));
        if d.c > 0 {
            let args =
                [ptr(x), ptr(mean), ptr(rstd), ptr(g), ptr(&dw), ptr(&db), int(d.b), int(d.c), int(d.s), int(d.groups)];
            // SAFETY: x and g hold b*c*s elements, mean and rstd b*groups, dw and db c.
            unsafe { gpu.launch(&name::<T>("group_norm_dwdb"), elementwise_grid(d.c), &args) };
        }
        (needs[1].then_some(dw), needs[2].then_some(db))
    } else {
        (None, None)
    };
    (dx, dw, db)
}
