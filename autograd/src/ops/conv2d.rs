//! 2D convolution (no bias), as im2col + one GEMM per image: the ResNet stem and bottleneck
//! convolutions of the ViT-CNN hybrid (paper section 3.1, "Hybrid Architecture").
//!
//! ```text
//!     x [B, C, H, W],  w [O, C, kh, kw],  stride s,  zero padding (top, bottom, left, right)
//!     Ho = (H + top + bottom - kh) / s + 1,   Wo = (W + left + right - kw) / s + 1
//!
//!     cols_b[(c, ky, kx), (oy, ox)] = x[b, c, oy s + ky - top, ox s + kx - left]   (0 outside)
//!     y_b  = W cols_b                       W viewed as [O, C kh kw],  y_b: [O, Ho Wo]
//!
//!     dW   = sum_b g_b cols_b^T
//!     dx_b = col2im(W^T g_b)                every column entry added back to the pixel it read
//! ```
//!
//! `cols_b` is the image unrolled so that each output pixel's receptive field is one column;
//! with it a convolution *is* a matrix product, and both gradients are the two other products
//! of the same three matrices. The columns are not kept from forward to backward: backward
//! unrolls `x` again (a copy, far cheaper than the products), so the tape holds only `x`.
//!
//! Padding is given per side because TensorFlow's "SAME" padding, which the official hybrid
//! (and timm's `StdConv2dSame`) uses, puts the odd pixel at the bottom and right: see
//! [`same_padding`].

use rayon::prelude::*;

use crate::dtype::Float;
use crate::graph::{BackwardCtx, Graph, Op, Var};
use crate::kernels::gemm::gemm;
use crate::kernels::{MatMut, MatRef};
use crate::tensor::Tensor;

/// Zero padding on each side of an image, in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Padding {
    /// Rows of zeros above the image.
    pub top: usize,
    /// Rows of zeros below it (SAME padding puts the odd row here).
    pub bottom: usize,
    /// Columns of zeros left of the image.
    pub left: usize,
    /// Columns of zeros right of it (SAME padding puts the odd column here).
    pub right: usize,
}

impl Padding {
    /// The same padding `p` on all four sides (PyTorch's `padding=p`).
    pub fn uniform(p: usize) -> Padding {
        Padding { top: p, bottom: p, left: p, right: p }
    }

    /// TensorFlow's "SAME" padding for a `size x size` input, a `kernel x kernel` window and
    /// stride `stride` (see [`same_padding`]).
    pub fn same(size: usize, kernel: usize, stride: usize) -> Padding {
        let (lo, hi) = same_padding(size, kernel, stride);
        Padding { top: lo, bottom: hi, left: lo, right: hi }
    }
}

/// TensorFlow's "SAME" padding of one axis: the output has `ceil(size / stride)` pixels, and the
/// total padding that takes, `max((ceil(size/s) - 1) s + k - size, 0)`, is split with the odd
/// pixel after (bottom/right). Returns `(before, after)`.
pub fn same_padding(size: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let out = size.div_ceil(stride.max(1));
    let total = ((out.max(1) - 1) * stride + kernel).saturating_sub(size);
    (total / 2, total - total / 2)
}

/// One window geometry, shared by convolution and pooling: input `[B, C, H, W]`, a `kh x kw`
/// window moved by `stride`, `pad` on each side.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Window {
    pub b: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: Padding,
    pub ho: usize,
    pub wo: usize,
}

impl Window {
    /// Checks the geometry; panics naming `op` and the shapes if it does not fit.
    pub fn of(op: &str, x: &[usize], kh: usize, kw: usize, stride: usize, pad: Padding) -> Window {
        let &[b, c, h, w] = x else { panic!("{op}: input must be [B, C, H, W], got shape {x:?}") };
        assert!(kh > 0 && kw > 0, "{op}: the window must be at least 1x1, got {kh}x{kw}");
        assert!(stride > 0, "{op}: stride must be > 0");
        let (hp, wp) = (h + pad.top + pad.bottom, w + pad.left + pad.right);
        assert!(
            hp >= kh && wp >= kw,
            "{op}: the padded input {hp}x{wp} (shape {x:?}, padding {pad:?}) is smaller than the {kh}x{kw} window"
        );
        Window { b, c, h, w, kh, kw, stride, pad, ho: (hp - kh) / stride + 1, wo: (wp - kw) / stride + 1 }
    }

    /// Output pixels per channel, `Ho Wo`.
    pub fn out_plane(&self) -> usize {
        self.ho * self.wo
    }

    /// The input pixel `(iy, ix)` that window position `(oy, ox)` reads at offset `(ky, kx)`,
    /// or `None` in the padding.
    #[inline]
    pub fn source(&self, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<(usize, usize)> {
        let iy = (oy * self.stride + ky).checked_sub(self.pad.top)?;
        let ix = (ox * self.stride + kx).checked_sub(self.pad.left)?;
        (iy < self.h && ix < self.w).then_some((iy, ix))
    }

    /// The offsets `ky` of output row `oy` whose [`Window::source`] is inside the image, as one
    /// range: the window's taps with the padding clipped off.
    pub fn row_taps(&self, oy: usize) -> std::ops::Range<usize> {
        taps(oy * self.stride, self.pad.top, self.kh, self.h)
    }

    /// [`Window::row_taps`] along a row: the offsets `kx` of output column `ox` inside the image.
    pub fn col_taps(&self, ox: usize) -> std::ops::Range<usize> {
        taps(ox * self.stride, self.pad.left, self.kw, self.w)
    }

    /// Length of one unrolled receptive field, `C kh kw`.
    fn field(&self) -> usize {
        self.c * self.kh * self.kw
    }
}

/// The offsets `k` in `0..kernel` whose source `start + k - pad` lies in `0..size`.
fn taps(start: usize, pad: usize, kernel: usize, size: usize) -> std::ops::Range<usize> {
    pad.saturating_sub(start)..kernel.min((size + pad).saturating_sub(start))
}

/// Unrolls one image `x_b` `[C, H, W]` into `cols` `[C kh kw, Ho Wo]` (see the module docs).
fn im2col<T: Float>(x: &[T], d: &Window, cols: &mut [T]) {
    let plane = d.out_plane();
    for c in 0..d.c {
        for ky in 0..d.kh {
            for kx in 0..d.kw {
                let row = &mut cols[((c * d.kh + ky) * d.kw + kx) * plane..][..plane];
                for oy in 0..d.ho {
                    for ox in 0..d.wo {
                        row[oy * d.wo + ox] = match d.source(oy, ox, ky, kx) {
                            Some((iy, ix)) => x[(c * d.h + iy) * d.w + ix],
                            None => T::ZERO,
                        };
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds every column entry into the pixel it was read from.
fn col2im<T: Float>(cols: &[T], d: &Window, x: &mut [T]) {
    let plane = d.out_plane();
    x.fill(T::ZERO);
    for c in 0..d.c {
        for ky in 0..d.kh {
            for kx in 0..d.kw {
                let row = &cols[((c * d.kh + ky) * d.kw + kx) * plane..][..plane];
                for oy in 0..d.ho {
                    for ox in 0..d.wo {
                        if let Some((iy, ix)) = d.source(oy, ox, ky, kx) {
                            x[(c * d.h + iy) * d.w + ix] += row[oy * d.wo + ox];
                        }
                    }
                }
            }
        }
    }
}

/// Images per partial weight gradient: a fixed function of the batch, so dW sums in the same
/// order on any number of threads.
fn images_per_partial(b: usize) -> usize {
    b.div_ceil(8).max(1)
}

/// `y = conv2d(x, w)`; see the module docs.
struct Conv2d {
    win: Window,
    out_chans: usize,
}

impl Conv2d {
    fn forward<T: Float>(&self, x: &[T], w: &[T]) -> Vec<T> {
        let d = &self.win;
        let (o, plane, field) = (self.out_chans, d.out_plane(), d.field());
        let mut y = crate::pool::take(d.b * o * plane);
        if y.is_empty() {
            return y;
        }
        y.par_chunks_mut(o * plane).enumerate().for_each(|(b, y)| {
            let mut cols = vec![T::ZERO; field * plane];
            im2col(&x[b * d.c * d.h * d.w..][..d.c * d.h * d.w], d, &mut cols);
            gemm(
                T::ONE,
                MatRef::row_major(w, o, field),
                MatRef::row_major(&cols, field, plane),
                T::ZERO,
                MatMut::row_major(y, o, plane),
            );
        });
        y
    }
}

#[cfg(feature = "cuda")]
impl Conv2d {
    /// The geometry for the device kernels.
    fn device(&self) -> crate::cuda::prims::resnet::Conv {
        let d = &self.win;
        crate::cuda::prims::resnet::Conv {
            b: d.b,
            c: d.c,
            h: d.h,
            w: d.w,
            o: self.out_chans,
            kh: d.kh,
            kw: d.kw,
            stride: d.stride,
            top: d.pad.top,
            left: d.pad.left,
            ho: d.ho,
            wo: d.wo,
        }
    }
}

impl<T: Float> Op<T> for Conv2d {
    fn name(&self) -> String {
        let d = &self.win;
        format!("conv2d({}x{}, stride {}, pad {:?})", d.kh, d.kw, d.stride, d.pad)
    }

    fn backward(&self, c: &BackwardCtx<'_, T>) -> Vec<Option<Tensor<T>>> {
        #[cfg(feature = "cuda")]
        if c.grad.is_cuda() {
            return crate::cuda::ops::conv2d_backward(c, &self.device());
        }
        let d = &self.win;
        let (o, plane, field, image) = (self.out_chans, d.out_plane(), d.field(), d.c * d.h * d.w);
        let (x, w, g) = (c.inputs[0].data(), c.inputs[1].data(), c.grad.data());
        let dx = c.needs_grad[0].then(|| {
            let mut dx = crate::pool::take(x.len());
            if !dx.is_empty() {
                dx.par_chunks_mut(image).enumerate().for_each(|(b, dx)| {
                    let mut dcols = vec![T::ZERO; field * plane];
                    let gb = MatRef::row_major(&g[b * o * plane..][..o * plane], o, plane);
                    let dc = MatMut::row_major(&mut dcols, field, plane);
                    gemm(T::ONE, MatRef::row_major(w, o, field).t(), gb, T::ZERO, dc);
                    col2im(&dcols, d, dx);
                });
            }
            Tensor::from_vec(dx, c.inputs[0].shape())
        });
        let dw = c.needs_grad[1].then(|| {
            let per = images_per_partial(d.b);
            let partials: Vec<Vec<T>> = (0..d.b.div_ceil(per))
                .into_par_iter()
                .map(|p| {
                    let mut dw = vec![T::ZERO; o * field];
                    let mut cols = vec![T::ZERO; field * plane];
                    for b in p * per..((p + 1) * per).min(d.b) {
                        im2col(&x[b * image..][..image], d, &mut cols);
                        let gb = MatRef::row_major(&g[b * o * plane..][..o * plane], o, plane);
                        let colst = MatRef::row_major(&cols, field, plane).t();
                        gemm(T::ONE, gb, colst, T::ONE, MatMut::row_major(&mut dw, o, field));
                    }
                    dw
                })
                .collect();
            let mut dw = vec![T::ZERO; o * field];
            for part in partials {
                dw.iter_mut().zip(part).for_each(|(a, b)| *a += b);
            }
            Tensor::from_vec(dw, c.inputs[1].shape())
        });
        vec![dx, dw]
    }
}

impl<T: Float> Graph<T> {
    /// Convolution of `x` `[B, C, H, W]` with `weight` `[O, C, kh, kw]` (PyTorch's layout), no
    /// bias, moving by `stride` over `x` zero-padded by `pad`: `[B, O, Ho, Wo]`.
    pub fn conv2d(&mut self, x: Var, weight: Var, stride: usize, pad: Padding) -> Var {
        let ws = self.shape(weight).to_vec();
        let &[o, wc, kh, kw] = &ws[..] else { panic!("conv2d: weight must be [O, C, kh, kw], got shape {ws:?}") };
        let win = Window::of("conv2d", self.shape(x), kh, kw, stride, pad);
        assert_eq!(wc, win.c, "conv2d: weight {ws:?} takes {wc} channels, input {:?} has {}", self.shape(x), win.c);
        let op = Conv2d { win, out_chans: o };
        #[cfg(feature = "cuda")]
        if self.value(x).is_cuda() {
            let y = crate::cuda::ops::conv2d(self.value(x), self.value(weight), &op.device());
            return self.push(y, op, &[x, weight]);
        }
        let y = op.forward(self.value(x).data(), self.value(weight).data());
        self.push(Tensor::from_vec(y, &[win.b, o, win.ho, win.wo]), op, &[x, weight])
    }
}
