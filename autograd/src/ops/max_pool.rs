//! 2D max-pooling: the 3x3 / 2 pool at the end of the hybrid's ResNet stem.
//!
//! ```text
//!     y[b, c, oy, ox] = max over (ky, kx) of x[b, c, oy s + ky - top, ox s + kx - left]
//!                       (padding is -inf: it never wins)
//!     dx[b, c, iy, ix] = sum of g[b, c, oy, ox] over the windows whose maximum is (iy, ix)
//! ```
//!
//! The gradient of a max goes to the element that won (the first one on a tie, as PyTorch);
//! forward saves each output's winner, so backward is one scatter-add.

use rayon::prelude::*;

use super::conv2d::{Padding, Window};
use crate::dtype::Float;
use crate::graph::{BackwardCtx, Graph, Op, Var};
use crate::tensor::Tensor;

/// `y = max_pool2d(x)`; keeps, per output, the index of its winner within its `[H, W]` plane
/// (on the device, for a GPU input: `argmax` is then empty).
struct MaxPool2d {
    win: Window,
    argmax: Vec<u32>,
    #[cfg(feature = "cuda")]
    argmax_gpu: Option<crate::cuda::DeviceBuffer<i64>>,
}

#[cfg(feature = "cuda")]
impl Window {
    /// The geometry as the device's pooling kernels take it.
    fn pool(&self) -> crate::cuda::prims::pool::Pool {
        let (planes, h, w, ho, wo) = (self.b * self.c, self.h, self.w, self.ho, self.wo);
        let (kh, kw, stride, top, left) = (self.kh, self.kw, self.stride, self.pad.top, self.pad.left);
        crate::cuda::prims::pool::Pool { planes, h, w, ho, wo, kh, kw, stride, top, left }
    }
}

impl<T: Float> Op<T> for MaxPool2d {
    fn name(&self) -> String {
        let d = &self.win;
        format!("max_pool2d({}x{}, stride {}, pad {:?})", d.kh, d.kw, d.stride, d.pad)
    }

    fn backward(&self, c: &BackwardCtx<'_, T>) -> Vec<Option<Tensor<T>>> {
        let d = &self.win;
        #[cfg(feature = "cuda")]
        if let Some(arg) = &self.argmax_gpu {
            return vec![Some(crate::cuda::ops::max_pool2d_backward(c.grad, arg, &d.pool(), c.inputs[0].shape()))];
        }
        let (plane, out) = (d.h * d.w, d.out_plane());
        let g = c.grad.data();
        let mut dx = crate::pool::zeros(c.inputs[0].numel());
        if plane > 0 {
            dx.par_chunks_mut(plane).enumerate().for_each(|(p, dx)| {
                for (&i, &g) in self.argmax[p * out..(p + 1) * out].iter().zip(&g[p * out..(p + 1) * out]) {
                    dx[i as usize] += g;
                }
            });
        }
        vec![Some(Tensor::from_vec(dx, c.inputs[0].shape()))]
    }
}

impl<T: Float> Graph<T> {
    /// The maximum of each `kernel x kernel` window of `x` `[B, C, H, W]`, moved by `stride`
    /// over `x` padded by `pad` (each side less than `kernel`, so every window holds a pixel):
    /// `[B, C, Ho, Wo]`.
    pub fn max_pool2d(&mut self, x: Var, kernel: usize, stride: usize, pad: Padding) -> Var {
        let win = Window::of("max_pool2d", self.shape(x), kernel, kernel, stride, pad);
        assert!(
            pad.top.max(pad.bottom).max(pad.left).max(pad.right) < kernel,
            "max_pool2d: padding {pad:?} must be less than the kernel {kernel} on every side"
        );
        assert!(win.h * win.w <= u32::MAX as usize, "max_pool2d: a {}x{} plane is too large", win.h, win.w);
        let shape = [win.b, win.c, win.ho, win.wo];
        #[cfg(feature = "cuda")]
        if self.value(x).is_cuda() {
            let (y, arg) = crate::cuda::ops::max_pool2d(self.value(x), &win.pool(), &shape);
            return self.push(y, MaxPool2d { win, argmax: Vec::new(), argmax_gpu: Some(arg) }, &[x]);
        }
        let (plane, out) = (win.h * win.w, win.out_plane());
        let xd = self.value(x).data();
        let planes = win.b * win.c;
        let mut y = crate::pool::take(planes * out);
        let mut argmax = vec![0u32; planes * out];
        if out > 0 {
            y.par_chunks_mut(out).zip(argmax.par_chunks_mut(out)).enumerate().for_each(|(p, (y, am))| {
                let x = &xd[p * plane..(p + 1) * plane];
                // Each window's taps clipped to the image up front (padding never wins), then
                // scanned row by row; the first maximum wins a tie, as in PyTorch.
                for oy in 0..win.ho {
                    let rows = win.row_taps(oy);
                    for ox in 0..win.wo {
                        let cols = win.col_taps(ox);
                        let (iy, ix) =
                            (oy * win.stride + rows.start - win.pad.top, ox * win.stride + cols.start - win.pad.left);
                        let (h, w) = (rows.len(), cols.len());
                        debug_assert!(h > 0 && w > 0, "every window holds a pixel (padding < kernel)");
                        let mut at = iy * win.w + ix;
                        let mut best = x[at];
                        for r in iy..iy + h {
                            for (i, &v) in x[r * win.w + ix..][..w].iter().enumerate() {
                                // Selects, not a branch: which tap wins is data, and a branch
                                // on it is mispredicted about as often as not.
                                let wins = v > best;
                                best = if wins { v } else { best };
                                at = if wins { r * win.w + ix + i } else { at };
                            }
                        }
                        y[oy * win.wo + ox] = best;
                        am[oy * win.wo + ox] = at as u32;
                    }
                }
            });
        }
        let op = MaxPool2d {
            win,
            argmax,
            #[cfg(feature = "cuda")]
            argmax_gpu: None,
        };
        self.push(Tensor::from_vec(y, &shape), op, &[x])
    }
}
