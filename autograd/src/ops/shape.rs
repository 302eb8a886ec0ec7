//! Ops that move elements without changing them: reshape, permute/transpose, narrow, concat,
//! index_select, broadcast_to.
//!
//! Each backward routes the upstream gradient back to where its elements came from: the inverse
//! move for a bijection (reshape, permute), a scatter into zeros for a selection (narrow, concat),
//! and a scatter-*add* where one input element feeds several outputs (repeated indices,
//! broadcasting).
//!
//! Most ops here see the input as `[outer, n, inner]` around the axis they act on: `outer` is the
//! product of the axes before it and `inner` of those after, so that every move is a copy of
//! contiguous `inner`-element rows.

use super::broadcast::{broadcast_shape, broadcast_strides, for_each_broadcast, reduce_to};
use crate::dtype::Float;
use crate::graph::{BackwardCtx, Graph, Op, Var};
use crate::tensor::{numel, strides, Tensor};

/// `(outer, n, inner)`: the products of the axes before `axis`, `axis` itself, and those after.
pub(crate) fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (numel(&shape[..axis]), shape[axis], numel(&shape[axis + 1..]))
}

/// `x` broadcast (NumPy rules) to `shape`, which the caller has checked it broadcasts to.
pub(crate) fn expand<T: Float>(x: &Tensor<T>, shape: &[usize]) -> Tensor<T> {
    if x.shape() == shape {
        return x.clone();
    }
    #[cfg(feature = "cuda")]
    if x.is_cuda() {
        return crate::cuda::ops::expand(x, shape);
    }
    let src = broadcast_strides(x.shape(), shape);
    let (xd, mut data) = (x.data(), Vec::with_capacity(numel(shape)));
    // for_each_broadcast visits the output in row-major order, so pushing fills it in place.
    for_each_broadcast(shape, &src, &vec![0; shape.len()], |_, i, _| data.push(xd[i]));
    Tensor::from_vec(data, shape)
}

/// `x` with its axes reordered: output axis `k` is input axis `perm[k]`.
fn permuted<T: Float>(x: &Tensor<T>, perm: &[usize]) -> Tensor<T> {
    let shape = x.shape();
    let out: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    // Axes of size 1 occupy no memory: if the others keep their order, the layout is unchanged.
    let moved: Vec<usize> = perm.iter().copied().filter(|&p| shape[p] != 1).collect();
    if moved.windows(2).all(|w| w[0] < w[1]) {
        return x.reshape(&out);
    }
    #[cfg(feature = "cuda")]
    if x.is_cuda() {
        return crate::cuda::ops::permute(x, perm);
    }
    let s = strides(shape);
    let src: Vec<usize> = perm.iter().map(|&p| s[p]).collect();
    let (xd, mut data) = (x.data(), Vec::with_capacity(x.numel()));
    for_each_broadcast(&out, &src, &vec![0; out.len()], |_, i, _| data.push(xd[i]));
    Tensor::from_vec(data, &out)
}

/// Elements `start..start + len` of `axis`.
fn narrowed<T: Float>(x: &Tensor<T>, axis: usize, start: usize, len: usize) -> Tensor<T> {
    let (outer, n, inner) = split_at_axis(x.shape(), axis);
    #[cfg(feature = "cuda")]
    if x.is_cuda() {
        return crate::cuda::ops::narrow(x, axis, start, len);
    }
    let mut shape = x.shape().to_vec();
    shape[axis] = len;
    let mut data = Vec::with_capacity(outer * len * inner);
    for o in 0..outer {
        let base = (o * n + start) * inner;
        data.extend_from_slice(&x.data()[base..base + len * inner]);
    }
    Tensor::from_vec(data, &shape)
}

/// `y = x` under another shape (same row-major elements);  `dx = g` under `x`'s shape.
struct Reshape;
impl<T: Float> Op<T> for Reshape {
    fn name(&self) -> String {
        "reshape".into()
    }
    fn backward(&self, c: &BackwardCtx<'_, T>) -> Vec<Option<Tensor<T>>> {
        vec![Some(c.grad.reshape(c.inputs[0].shape()))]
    }
}

/// `y[i_0, .., i_r] = x[j]` with `j[perm[k]] = i_k`;  `dx` = `g` permuted by the inverse
/// permutation.
struct Permute {
    perm: Vec<usize>,
}
impl<T: Float> Op<T> for Permute {
    fn name(&self) -> String {
        format!("permute({:?})", self.perm)
    }
    fn backward(&self, c: &BackwardCtx<'_, T>) -> Vec<Option<Tensor<T>>> {
        let mut inverse = vec![0; self.perm.len()];
        for (k, &p) in self.perm.iter().enumerate() {
            inverse[p] = k;
        }
        vec![Some(permuted(c.grad, &inverse))]
    }
}

/// `y = x[.., start..start + len, ..]` along `axis`;  `dx` = zeros with `g` written into that
/// slice.
struct Narrow {
    axis: usize,
    start: usize,
}
impl<T: Float> Op<T> for Narrow {
    fn name(&self) -> String {
        format!("narrow(axis={}, start={})", self.axis, self.start)
    }
    fn backward(&self, c: &BackwardCtx<'_, T>) -> Vec<Option<Tensor<T>>> {
        #[cfg(feature = "cuda")]
        if c.grad.is_cuda() {
            return vec![Some(crate::cuda::ops::unnarrow(c.grad, c.inputs[0].shape(), self.axis, self.start))];
        }
        let (outer, n, inner) = split_at_axis(c.inputs[0].shape(), self.axis);
        let rows = c.grad.dim(self.axis) * inner;
        let mut dx = crate::pool::zeros(outer * n * inner);
        for o in 0..outer {
            let base = (o * n + self.start) * inner;
            dx[base..base + rows].copy_from_slice(&c.grad.data()[o * rows..(o + 1) * rows]);
        }
        vec![Some(Tensor::from_vec(dx, c.inputs[0].shape()))]
    }
}

/// `y = [x_0 | x_1 | ..]` joined along `axis`;  `dx_i` = the slice of `g` that `x_i` filled.
struct Concat {
    axis: usize,
}
impl<T: Float> Op<T> for Concat {
    fn name(&self) -> String {
        format!("concat(axis={})", self.axis)
    }
    fn backward(&self, c: &BackwardCtx<'_, T>) -> Vec<Option<Tensor<T>>> {
        let mut start = 0;
        c.inputs
            .iter()
            .zip(c.needs_grad)
            .map(|(x, &need)| {
                let len = x.dim(self.axis);
                start += len;
                need.then(|| narrowed(c.grad, self.axis, start - len, len))
            })
            .collect()
    }
}

/// `y[.., k, ..] = x[.., indices[k], ..]` along `axis`;  `dx[.., j, ..] = sum_{k: indices[k] = j}
/// g[.., k, ..]` (a repeated index receives the sum of its copies' gradients).
struct IndexSelect {
    axis: usize,
    indices: Vec<usize>,
}
impl<T: Float> Op<T> for IndexSelect {
    fn name(&self) -> String {
        format!("index_select(axis={}, {} indices)", self.axis, self.indices.len())
    }
    fn backward(&self, c: &BackwardCtx<'_, T>) -> Vec<Option<Tensor<T>>> {
        #[cfg(feature = "cuda")]
        if c.grad.is_cuda() {
            return vec![Some(crate::cuda::ops::index_add(c.grad, c.inputs[0].shape(), self.axis, &self.indices))];
        }
        let (outer, n, inner) = split_at_axis(c.inputs[0].shape(), self.axis);
        let mut dx = crate::pool::zeros(outer * n * inner);
        let g = c.grad.data();
        for o in 0..outer {
            for (k, &j) in self.indices.iter().enumerate() {
                let src = &g[(o * self.indices.len() + k) * inner..][..inner];
                let dst = &mut dx[(o * n + j) * inner..][..inner];
                for (d, &s) in dst.iter_mut().zip(src) {
                    *d += s;
                }
            }
        }
        vec![Some(Tensor::from_vec(dx, c.inputs[0].shape()))]
    }
}

/// `y = x` stretched along its size-1 (and missing leading) axes;  `dx = g` summed over those
/// axes ([`reduce_to`]).
struct BroadcastTo;
impl<T: Float> Op<T> for BroadcastTo {
    fn name(&self) -> String {
        "broadcast_to".into()
    }
    fn backward(&self, c: &BackwardCtx<'_, T>) -> Vec<Option<Tensor<T>>> {
        vec![Some(reduce_to(c.grad, c.inputs[0].shape()))]
    }
}

impl<T: Float> Graph<T> {
    /// The same row-major elements under `shape` (no copy). Panics if the element counts differ.
    pub fn reshape(&mut self, x: Var, shape: &[usize]) -> Var {
        let from = self.shape(x);
        assert_eq!(numel(from), numel(shape), "reshape: cannot view shape {from:?} as {shape:?}");
        let y = self.value(x).reshape(shape);
        self.push(y, Reshape, &[x])
    }

    /// Reorders the axes: output axis `k` is input axis `perm[k]` (`x.permute(perm)` in
    /// PyTorch). The result is laid out contiguously, so this copies unless only size-1 axes
    /// move.
    pub fn permute(&mut self, x: Var, perm: &[usize]) -> Var {
        let shape = self.shape(x);
        let mut sorted = perm.to_vec();
        sorted.sort_unstable();
        assert!(
            sorted.iter().copied().eq(0..shape.len()),
            "permute: {perm:?} is not a permutation of the axes of shape {shape:?}"
        );
        let y = permuted(self.value(x), perm);
        self.push(y, Permute { perm: perm.to_vec() }, &[x])
    }

    /// Swaps axes `a0` and `a1` (a [`Graph::permute`]).
    pub fn transpose(&mut self, x: Var, a0: usize, a1: usize) -> Var {
        let r = self.shape(x).len();
        assert!(a0 < r && a1 < r, "transpose: axes ({a0}, {a1}) out of range for shape {:?}", self.shape(x));
        let mut perm: Vec<usize> = (0..r).collect();
        perm.swap(a0, a1);
        self.permute(x, &perm)
    }

    /// Elements `start..start + len` along `axis` (`x.narrow(axis, start, len)` in PyTorch),
    /// copied into a new tensor.
    pub fn narrow(&mut self, x: Var, axis: usize, start: usize, len: usize) -> Var {
        let shape = self.shape(x);
        assert!(axis < shape.len(), "narrow: axis {axis} out of range for shape {shape:?}");
        assert!(
            start + len <= shape[axis],
            "narrow: range {start}..{} out of bounds for axis {axis} of shape {shape:?}",
            start + len
        );
        let y = narrowed(self.value(x), axis, start, len);
        self.push(y, Narrow { axis, start }, &[x])
    }

    /// Joins `xs` along `axis`; all must have the same shape except along `axis`.
    pub fn concat(&mut self, xs: &[Var], axis: usize) -> Var {
        assert!(!xs.is_empty(), "concat: needs at least one input");
        let shapes: Vec<&[usize]> = xs.iter().map(|&x| self.shape(x)).collect();
        let first = shapes[0];
        assert!(axis < first.len(), "concat: axis {axis} out of range for shapes {shapes:?}");
        let fits = |s: &[usize]| s.len() == first.len() && (0..s.len()).all(|k| k == axis || s[k] == first[k]);
        assert!(shapes.iter().all(|s| fits(s)), "concat: shapes {shapes:?} differ outside axis {axis}");

        #[cfg(feature = "cuda")]
        if self.value(xs[0]).is_cuda() {
            let values: Vec<&Tensor<T>> = xs.iter().map(|&x| self.value(x)).collect();
            let y = crate::cuda::ops::concat(&values, axis);
            return self.push(y, Concat { axis }, xs);
        }
        let mut shape = first.to_vec();
        shape[axis] = shapes.iter().map(|s| s[axis]).sum();
        let (outer, _, inner) = split_at_axis(&shape, axis);
        let mut data = Vec::with_capacity(numel(&shape));
        for o in 0..outer {
            for &x in xs {
                let rows = self.value(x).dim(axis) * inner;
                data.extend_from_slice(&self.value(x).data()[o * rows..(o + 1) * rows]);
            }
        }
        self.push(Tensor::from_vec(data, &shape), Concat { axis }, xs)
    }

    /// Gathers the entries `indices` along `axis`, in that order (an index may repeat): the
    /// output has `indices.len()` entries along `axis`.
    pub fn index_select(&mut self, x: Var, axis: usize, indices: &[usize]) -> Var {
        let shape = self.shape(x);
        assert!(axis < shape.len(), "index_select: axis {axis} out of range for shape {shape:?}");
        if let Some(&bad) = indices.iter().find(|&&j| j >= shape[axis]) {
            panic!("index_select: index {bad} out of range for axis {axis} of shape {shape:?}");
        }
        let (outer, n, inner) = split_at_axis(shape, axis);
        let mut out_shape = shape.to_vec();
        out_shape[axis] = indices.len();
        #[cfg(feature = "cuda")]
        if self.value(x).is_cuda() {
            let y = crate::cuda::ops::index_select(self.value(x), axis, indices);
            return self.push(y, IndexSelect { axis, indices: indices.to_vec() }, &[x]);
        }
        let xd = self.value(x).data();
        let mut data = Vec::with_capacity(numel(&out_shape));
        for o in 0..outer {
            for &j in indices {
                data.extend_from_slice(&xd[(o * n + j) * inner..][..inner]);
            }
        }
        let y = Tensor::from_vec(data, &out_shape);
        self.push(y, IndexSelect { axis, indices: indices.to_vec() }, &[x])
    }

    /// `x` broadcast to `shape` under NumPy rules (trailing axes aligned; size-1 and missing
    /// leading axes stretch), materialised.
    pub fn broadcast_to(&mut self, x: Var, shape: &[usize]) -> Var {
        let from = self.shape(x);
        assert!(
            broadcast_shape(from, shape).as_deref() == Some(shape),
            "broadcast_to: cannot broadcast shape {from:?} to {shape:?}"
        );
        let y = expand(self.value(x), shape);
        self.push(y, BroadcastTo, &[x])
    }
}
