//! Max-pooling on the device (pool.cu): the window geometry of `ops/max_pool.rs`.

use super::{elementwise_grid, int, name, ptr};
use crate::cuda::gpu::DeviceBuffer;
use crate::dtype::Float;

/// A pooling geometry: `planes` (`B C`) images of `h x w`, an output of `ho x wo`, a `kh x kw`
/// window moved by `stride` over the image padded by `top` rows above and `left` columns left.
#[derive(Clone, Copy, Debug)]
pub struct Pool {
    /// Images times channels.
    pub planes: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output height.
    pub ho: usize,
    /// Output width.
    pub wo: usize,
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
}

/// The maxima `[planes, ho, wo]` and each one's index within its plane.
pub fn max_pool_forward<T: Float>(x: &DeviceBuffer<T>, d: &Pool) -> (DeviceBuffer<T>, DeviceBuffer<i64>) {
    let n = d.planes * d.ho * d.wo;
    let gpu = x.gpu();
    let (y, arg) = (gpu.alloc::<T>(n), gpu.alloc::<i64>(n));
    if n > 0 {
        let args = [
            ptr(x),
            ptr(&y),
            ptr(&arg),
            int(d.planes),
            int(d.h),
            int(d.w),
            int(d.ho),
            int(d.wo),
            int(d.kh),
            int(d.kw),
            int(d.stride),
            int(d.top),
            int(d.left),
        ];
        // SAFETY: x holds planes*h*w elements, y and arg planes*ho*wo; every window has a pixel.
        unsafe { gpu.launch(&name::<T>("max_pool_forward"), elementwise_grid(n), &args) };
    }
    (y, arg)
}

/// `dx` `[planes, h, w]`: each output's gradient added to its winner.
pub fn max_pool_backward<T: Float>(g: &DeviceBuffer<T>, arg: &DeviceBuffer<i64>, d: &Pool) -> DeviceBuffer<T> {
    let gpu = g.gpu();
    let dx = gpu.zeros::<T>(d.planes * d.h * d.w);
    let out = d.ho * d.wo;
    if d.planes * out > 0 {
        let args = [ptr(g), ptr(arg), ptr(&dx), int(d.planes), int(d.h * d.w), int(out)];
        // SAFETY: g and arg hold planes*out elements, each index is below h*w; dx planes*h*w.
        unsafe { gpu.launch(&name::<T>("max_pool_backward"), elementwise_grid(d.planes), &args) };
    }
    dx
}
