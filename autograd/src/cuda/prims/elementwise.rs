//! Elementwise maps, broadcasting, and every move of elements (one strided-copy kernel).

use std::sync::Arc;

use super::{contiguous_strides, dims, elementwise_grid, int, name, ptr, scalar};
use crate::cuda::driver::Arg;
use crate::cuda::gpu::{DeviceBuffer, Gpu};
use crate::cuda::kernels::{BinaryOp, UnaryOp};
use crate::dtype::Float;
use crate::ops::broadcast::{broadcast_shape, broadcast_strides};
use crate::tensor::numel;

/// A buffer of `len` copies of `v`.
pub fn fill<T: Float>(gpu: &Arc<Gpu>, len: usize, v: T) -> DeviceBuffer<T> {
    let y = gpu.alloc::<T>(len);
    if len > 0 {
        // SAFETY: y holds len elements.
        unsafe { gpu.launch(&name::<T>("fill"), elementwise_grid(len), &[ptr(&y), scalar::<T>(v.to_f64()), int(len)]) };
    }
    y
}

/// `y = f(x; p)`.
pub fn unary<T: Float>(x: &DeviceBuffer<T>, op: UnaryOp, p: f64) -> DeviceBuffer<T> {
    let y = x.gpu().alloc::<T>(x.len());
    unary_into(x, &y, op, p);
    y
}

/// `y = f(x; p)` into an existing buffer of the same length (which may be `x` itself).
pub fn unary_into<T: Float>(x: &DeviceBuffer<T>, y: &DeviceBuffer<T>, op: UnaryOp, p: f64) {
    assert_eq!(x.len(), y.len(), "unary: lengths differ");
    if x.is_empty() {
        return;
    }
    let args = [Arg::I32(op as i32), ptr(x), ptr(y), scalar::<T>(p), int(x.len())];
    // SAFETY: x and y hold len elements each.
    unsafe { x.gpu().launch(&name::<T>("unary"), elementwise_grid(x.len()), &args) };
}

/// `y = f(a, b; p)` for buffers of one length.
pub fn binary<T: Float>(op: BinaryOp, a: &DeviceBuffer<T>, b: &DeviceBuffer<T>, p: f64) -> DeviceBuffer<T> {
    let y = a.gpu().alloc::<T>(a.len());
    binary_into(op, a, b, &y, p);
    y
}

/// `y = f(a, b; p)` into `y`, which may be `a` or `b`.
pub fn binary_into<T: Float>(op: BinaryOp, a: &DeviceBuffer<T>, b: &DeviceBuffer<T>, y: &DeviceBuffer<T>, p: f64) {
    assert!(
        a.len() == b.len() && a.len() == y.len(),
        "binary {op:?}: lengths {} {} {} differ",
        a.len(),
        b.len(),
        y.len()
    );
    if a.is_empty() {
        return;
    }
    let args = [Arg::I32(op as i32), ptr(a), ptr(b), ptr(y), scalar::<T>(p), int(a.len())];
    // SAFETY: all three hold len elements.
    unsafe { a.gpu().launch(&name::<T>("binary"), elementwise_grid(a.len()), &args) };
}

/// `a += b` (how gradients accumulate).
pub fn add_assign<T: Float>(a: &DeviceBuffer<T>, b: &DeviceBuffer<T>) {
    binary_into(BinaryOp::Add, a, b, a, 0.0);
}

/// `f(a, b; p)` under NumPy broadcasting: the result and its shape. Panics naming `op` if the
/// shapes do not broadcast.
pub fn broadcast<T: Float>(
    op: BinaryOp,
    a: &DeviceBuffer<T>,
    a_shape: &[usize],
    b: &DeviceBuffer<T>,
    b_shape: &[usize],
    p: f64,
) -> (DeviceBuffer<T>, Vec<usize>) {
    if a_shape == b_shape {
        return (binary(op, a, b, p), a_shape.to_vec());
    }
    let out = broadcast_shape(a_shape, b_shape)
        .unwrap_or_else(|| panic!("{op:?}: shapes {a_shape:?} and {b_shape:?} do not broadcast"));
    let n = numel(&out);
    let y = a.gpu().alloc::<T>(n);
    if n > 0 {
        let sa: Vec<isize> = broadcast_strides(a_shape, &out).into_iter().map(|s| s as isize).collect();
        let sb: Vec<isize> = broadcast_strides(b_shape, &out).into_iter().map(|s| s as isize).collect();
        let (shape, st, rank) = dims(&out, &[&sa, &sb]);
        let args =
            [Arg::I32(op as i32), ptr(a), ptr(b), ptr(&y), scalar::<T>(p), shape, st[0], st[1], Arg::I32(rank), int(n)];
        // SAFETY: a and b are read at offsets inside their shapes (broadcast strides); y holds n.
        unsafe { a.gpu().launch(&name::<T>("broadcast"), elementwise_grid(n), &args) };
    }
    (y, out)
}

/// For every multi-index `c` of `shape`: `y[oy + c . sy] = x[ox + c . sx]` (element offsets).
///
/// # Safety
/// Every offset reached lies inside its buffer, and no two indices write one element of `y`.
pub unsafe fn copy_strided<T: Float>(
    x: &DeviceBuffer<T>,
    shape: &[usize],
    sx: &[isize],
    ox: usize,
    y: &DeviceBuffer<T>,
    sy: &[isize],
    oy: usize,
) {
    let n = numel(shape);
    if n == 0 {
        return;
    }
    let (d, st, rank) = dims(shape, &[sx, sy]);
    let args = [ptr(x), ptr(y), d, st[0], int(ox), st[1], int(oy), Arg::I32(rank), int(n)];
    x.gpu().launch(&name::<T>("copy_strided"), elementwise_grid(n), &args);
}

/// `x` of `shape` with its axes reordered (output axis `k` is input axis `perm[k]`).
pub fn permute<T: Float>(x: &DeviceBuffer<T>, shape: &[usize], perm: &[usize]) -> DeviceBuffer<T> {
    let out: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let s = contiguous_strides(shape);
    let sx: Vec<isize> = perm.iter().map(|&p| s[p]).collect();
    let y = x.gpu().alloc::<T>(x.len());
    // SAFETY: a permutation visits every element of x once and writes y contiguously.
    unsafe { copy_strided(x, &out, &sx, 0, &y, &contiguous_strides(&out), 0) };
    y
}

/// `(outer, n, inner)` around `axis`.
fn split(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (numel(&shape[..axis]), shape[axis], numel(&shape[axis + 1..]))
}

/// Elements `start..start + len` of `axis`.
pub fn narrow<T: Float>(
    x: &DeviceBuffer<T>,
    shape: &[usize],
    axis: usize,
    start: usize,
    len: usize,
) -> DeviceBuffer<T> {
    let (outer, n, inner) = split(shape, axis);
    assert!(start + len <= n, "narrow: {start}..{} out of axis {axis} of {shape:?}", start + len);
    let y = x.gpu().alloc::<T>(outer * len * inner);
    let view = [outer, len, inner];
    // SAFETY: the view [outer, len, inner] at offset start*inner stays inside x; y is contiguous.
    unsafe {
        copy_strided(
            x,
            &view,
            &[(n * inner) as isize, inner as isize, 1],
            start * inner,
            &y,
            &contiguous_strides(&view),
            0,
        )
    };
    y
}

/// The adjoint of [`narrow`]: zeros of `shape` with `g` written into the slice.
pub fn unnarrow<T: Float>(g: &DeviceBuffer<T>, shape: &[usize], axis: usize, start: usize) -> DeviceBuffer<T> {
    let (outer, n, inner) = split(shape, axis);
    let len = g.len() / (outer * inner).max(1);
    let dx = fill(g.gpu(), numel(shape), T::ZERO);
    let view = [outer, len, inner];
    // SAFETY: as in narrow, with the roles of source and destination exchanged.
    unsafe {
        copy_strided(
            g,
            &view,
            &contiguous_strides(&view),
            0,
            &dx,
            &[(n * inner) as isize, inner as isize, 1],
            start * inner,
        )
    };
    dx
}

/// The inputs joined along `axis` (shapes equal elsewhere).
pub fn concat<T: Float>(xs: &[(&DeviceBuffer<T>, &[usize])], axis: usize) -> (DeviceBuffer<T>, Vec<usize>) {
    let mut shape = xs[0].1.to_vec();
    shape[axis] = xs.iter().map(|(_, s)| s[axis]).sum();
    let (outer, total, inner) = split(&shape, axis);
    let y = xs[0].0.gpu().alloc::<T>(numel(&shape));
    let mut start = 0;
    for (x, s) in xs {
        let len = s[axis];
        let view = [outer, len, inner];
        // SAFETY: x is [outer, len, inner]; its slice of y lies at start*inner within rows of
        // total*inner elements.
        unsafe {
            copy_strided(
                x,
                &view,
                &contiguous_strides(&view),
                0,
                &y,
                &[(total * inner) as isize, inner as isize, 1],
                start * inner,
            )
        };
        start += len;
    }
    (y, shape)
}

/// `x` broadcast to `out` (the caller has checked it broadcasts).
pub fn expand<T: Float>(x: &DeviceBuffer<T>, shape: &[usize], out: &[usize]) -> DeviceBuffer<T> {
    let sx: Vec<isize> = broadcast_strides(shape, out).into_iter().map(|s| s as isize).collect();
    let y = x.gpu().alloc::<T>(numel(out));
    // SAFETY: broadcast strides stay inside x; y is written contiguously once per element.
    unsafe { copy_strided(x, out, &sx, 0, &y, &contiguous_strides(out), 0) };
    y
}

/// Entries `indices` of `axis` (each index checked by the caller to be in range).
pub fn index_select<T: Float>(
    x: &DeviceBuffer<T>,
    shape: &[usize],
    axis: usize,
    indices: &DeviceBuffer<i64>,
) -> DeviceBuffer<T> {
    let (outer, _, inner) = split(shape, axis);
    index_kernel("index_select", x, shape, axis, indices, outer * indices.len() * inner)
}

/// The adjoint of [`index_select`]: `dx[.., j, ..]` sums the gradients of every copy of `j`.
pub fn index_add<T: Float>(
    g: &DeviceBuffer<T>,
    shape: &[usize],
    axis: usize,
    indices: &DeviceBuffer<i64>,
) -> DeviceBuffer<T> {
    index_kernel("index_add", g, shape, axis, indices, numel(shape))
}

/// Launches `index_select` (`[outer, n, inner]` to `[outer, k, inner]`) or `index_add` (back),
/// both over their `len` outputs.
fn index_kernel<T: Float>(
    kernel: &str,
    src: &DeviceBuffer<T>,
    shape: &[usize],
    axis: usize,
    indices: &DeviceBuffer<i64>,
    len: usize,
) -> DeviceBuffer<T> {
    let (outer, n, inner) = split(shape, axis);
    let out = src.gpu().alloc::<T>(len);
    if len > 0 {
        let args = [ptr(src), ptr(indices), ptr(&out), int(outer), int(n), int(indices.len()), int(inner)];
        // SAFETY: indices are < n, so every access of the [outer, n, inner] side is in range;
        // the [outer, k, inner] side and `out` hold what the kernel touches.
        unsafe { src.gpu().launch(&name::<T>(kernel), elementwise_grid(len), &args) };
    }
    out
}

/// Element type conversion.
pub fn cast<T: Float, U: Float>(x: &DeviceBuffer<T>) -> DeviceBuffer<U> {
    let y = x.gpu().alloc::<U>(x.len());
    if x.is_empty() {
        return y;
    }
    if T::DTYPE == U::DTYPE {
        // SAFETY: same element type and length; distinct buffers.
        unsafe { x.gpu().driver().copy(y.ptr(), x.ptr(), x.bytes()) }.unwrap_or_else(|e| panic!("{e}"));
        return y;
    }
    let k = format!("cast_{}_{}", super::suffix::<T>(), super::suffix::<U>());
    // SAFETY: both hold len elements of their types.
    unsafe { x.gpu().launch(&k, elementwise_grid(x.len()), &[ptr(x), ptr(&y), int(x.len())]) };
    y
}

/// The 6-axis view of images `[B, C, H, W]` in which patchify is a permutation: the shape
/// `[B, Gh, Gw, C, P, P]` (the patch vectors' order) and the image's strides along it.
fn patch_view(b: usize, c: usize, h: usize, w: usize, p: usize) -> ([usize; 6], [isize; 6]) {
    let (gh, gw) = (h / p, w / p);
    let shape = [b, gh, gw, c, p, p];
    let strides = [(c * h * w) as isize, (p * w) as isize, p as isize, (h * w) as isize, w as isize, 1];
    (shape, strides)
}

/// `patchify(x)` for images `[B, C, H, W]`: `[B, Gh Gw, C P P]` (ops/patchify.rs).
pub fn patchify<T: Float>(
    x: &DeviceBuffer<T>,
    (b, c, h, w): (usize, usize, usize, usize),
    p: usize,
) -> DeviceBuffer<T> {
    let (shape, sx) = patch_view(b, c, h, w, p);
    let y = x.gpu().alloc::<T>(x.len());
    // SAFETY: a bijection between the image and the patch vectors (P divides H and W).
    unsafe { copy_strided(x, &shape, &sx, 0, &y, &contiguous_strides(&shape), 0) };
    y
}

/// The inverse: patch vectors back to images (patchify's backward).
pub fn unpatchify<T: Float>(
    g: &DeviceBuffer<T>,
    (b, c, h, w): (usize, usize, usize, usize),
    p: usize,
) -> DeviceBuffer<T> {
    let (shape, sx) = patch_view(b, c, h, w, p);
    let dx = g.gpu().alloc::<T>(g.len());
    // SAFETY: as in patchify.
    unsafe { copy_strided(g, &shape, &contiguous_strides(&shape), 0, &dx, &sx, 0) };
    dx
}
