//! Patchify: images `[B, C, H, W]` to patch vectors `[B, N, C*P*P]`, the reshape half of the
//! paper's patch embedding (eq. 1's `x_p^i`; the product with `E` is the other half).
//!
//! ```text
//!     Gh = H / P,   Gw = W / P,   N = Gh Gw
//!     y[b, gy Gw + gx, (c P + py) P + px] = x[b, c, gy P + py, gx P + px]
//!     dx[b, c, gy P + py, gx P + px]      = g[b, gy Gw + gx, (c P + py) P + px]
//! ```
//!
//! Patches are in row-major grid order and each vector is ordered `(c, py, px)`: the layout of a
//! PyTorch `Conv2d(C, D, kernel_size=P, stride=P)` weight `[D, C, P, P]` flattened to
//! `[D, C*P*P]`. The stride-`P` convolution is therefore `patchify(x) @ W^T + b`, and timm's
//! `patch_embed.proj.weight` loads with a plain reshape. Patches do not overlap, so backward is
//! the inverse copy, with nothing to accumulate.

use crate::dtype::Float;
use crate::graph::{BackwardCtx, Graph, Op, Var};
use crate::kernels::parallel::for_each_row;
use crate::tensor::Tensor;

/// The geometry of one patchify: image sizes and patch size.
#[derive(Clone, Copy, Debug)]
struct Grid {
    b: usize,
    c: usize,
    h: usize,
    w: usize,
    p: usize,
}

impl Grid {
    fn of(shape: &[usize], p: usize) -> Grid {
        let &[b, c, h, w] = shape else { panic!("patchify: images must be [B, C, H, W], got shape {shape:?}") };
        assert!(p > 0, "patchify: patch size must be > 0");
        assert!(
            h % p == 0 && w % p == 0,
            "patchify: image size {h}x{w} (shape {shape:?}) is not divisible by the patch size {p}"
        );
        Grid { b, c, h, w, p }
    }
    fn gh(&self) -> usize {
        self.h / self.p
    }
    fn gw(&self) -> usize {
        self.w / self.p
    }
    /// Length of one patch vector, `C*P*P`.
    fn patch_len(&self) -> usize {
        self.c * self.p * self.p
    }
    fn out_shape(&self) -> [usize; 3] {
        [self.b, self.gh() * self.gw(), self.patch_len()]
    }
}

/// `y = patchify(x)`. Work is split by patch row `(b, gy)`: each such row of patches is one
/// contiguous `[Gw, C*P*P]` block of `y`, read from `C * P` image row segments.
fn patchify<T: Float>(x: &[T], d: Grid) -> Vec<T> {
    let (p, gh, gw, len) = (d.p, d.gh(), d.gw(), d.patch_len());
    let mut y = crate::pool::zeros(x.len());
    for_each_row(&mut y, gw * len, |r, out| {
        let (b, gy) = (r / gh, r % gh);
        for gx in 0..gw {
            for c in 0..d.c {
                for py in 0..p {
                    let src = ((b * d.c + c) * d.h + gy * p + py) * d.w + gx * p;
                    let dst = gx * len + (c * p + py) * p;
                    out[dst..dst + p].copy_from_slice(&x[src..src + p]);
                }
            }
        }
    });
    y
}

/// The inverse of [`patchify`]. Work is split by `(b, c, gy)`: the `P` image rows of one channel
/// under one patch row, a contiguous `[P, W]` band of the image.
fn unpatchify<T: Float>(g: &[T], d: Grid) -> Vec<T> {
    let (p, gh, gw, len) = (d.p, d.gh(), d.gw(), d.patch_len());
    let mut x = crate::pool::zeros(g.len());
    for_each_row(&mut x, p * d.w, |r, band| {
        let (b, c, gy) = (r / (gh * d.c), (r / gh) % d.c, r % gh);
        for py in 0..p {
            for gx in 0..gw {
                let src = (b * gh * gw + gy * gw + gx) * len + (c * p + py) * p;
                let dst = py * d.w + gx * p;
                band[dst..dst + p].copy_from_slice(&g[src..src + p]);
            }
        }
    });
    x
}

/// `y = patchify(x)`;  `dx = unpatchify(g)`.
struct Patchify {
    grid: Grid,
}

impl<T: Float> Op<T> for Patchify {
    fn name(&self) -> String {
        format!("patchify(P={})", self.grid.p)
    }

    fn backward(&self, c: &BackwardCtx<'_, T>) -> Vec<Option<Tensor<T>>> {
        #[cfg(feature = "cuda")]
        if c.grad.is_cuda() {
            let d = self.grid;
            return vec![Some(crate::cuda::ops::unpatchify(c.grad, (d.b, d.c, d.h, d.w), d.p, c.inputs[0].shape()))];
        }
        let dx = unpatchify(c.grad.data(), self.grid);
        vec![Some(Tensor::from_vec(dx, c.inputs[0].shape()))]
    }
}

impl<T: Float> Graph<T> {
    /// Cuts `images` `[B, C, H, W]` into non-overlapping `patch x patch` patches:
    /// `[B, (H/P)(W/P), C*P*P]`, patches in row-major grid order, each ordered `(c, py, px)`.
    pub fn patchify(&mut self, images: Var, patch: usize) -> Var {
        let grid = Grid::of(self.shape(images), patch);
        let x = self.value(images);
        let y = on_device!([x],
            cuda: crate::cuda::ops::patchify(x, (grid.b, grid.c, grid.h, grid.w), grid.p, &grid.out_shape()),
            cpu: Tensor::from_vec(patchify(x.data(), grid), &grid.out_shape()));
        self.push(y, Patchify { grid }, &[images])
    }
}
