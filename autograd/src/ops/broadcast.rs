//! NumPy-style broadcasting: shapes are aligned at their trailing axes, and an axis of size 1
//! (or a missing leading axis) stretches to match the other operand.
//!
//! The backward of any broadcasting op must undo the stretch: an input that was repeated along
//! an axis receives the *sum* of the gradients of all its copies ([`reduce_to`]).

use crate::dtype::Float;
use crate::tensor::{numel, strides, Tensor};

/// The broadcast shape of `a` and `b`, or `None` if some axis pair is neither equal nor 1.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let da = if i + a.len() >= r { a[i + a.len() - r] } else { 1 };
        let db = if i + b.len() >= r { b[i + b.len() - r] } else { 1 };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// Strides with which an array of `shape` is read when broadcast to `out` (0 on stretched axes).
pub fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let s = strides(shape);
    let pad = out.len() - shape.len();
    (0..out.len()).map(|i| if i < pad || shape[i - pad] == 1 { 0 } else { s[i - pad] }).collect()
}

/// Calls `f(out_flat, a_flat, b_flat)` for every element of the broadcast shape `out`, in
/// row-major order, with the offsets at which each operand is read.
pub fn for_each_broadcast(out: &[usize], sa: &[usize], sb: &[usize], mut f: impl FnMut(usize, usize, usize)) {
    let n = numel(out);
    if n == 0 {
        return;
    }
    let r = out.len();
    if r == 0 {
        f(0, 0, 0);
        return;
    }
    let inner = out[r - 1];
    let (ia, ib) = (sa[r - 1], sb[r - 1]);
    let mut idx = vec![0usize; r];
    let (mut oa, mut ob) = (0usize, 0usize);
    let mut o = 0;
    loop {
        for j in 0..inner {
            f(o + j, oa + j * ia, ob + j * ib);
        }
        o += inner;
        // Advance the outer multi-index (all axes but the last), odometer style.
        let mut ax = r - 1;
        loop {
            if ax == 0 {
                return;
            }
            ax -= 1;
            idx[ax] += 1;
            oa += sa[ax];
            ob += sb[ax];
            if idx[ax] < out[ax] {
                break;
            }
            oa -= sa[ax] * out[ax];
            ob -= sb[ax] * out[ax];
            idx[ax] = 0;
        }
    }
}

/// `f(a, b)` elementwise under broadcasting.
pub fn broadcast_map<T: Float>(a: &Tensor<T>, b: &Tensor<T>, op: &str, f: impl Fn(T, T) -> T) -> Tensor<T> {
    if a.shape() == b.shape() {
        let mut data = crate::pool::take(a.numel());
        for ((o, &x), &y) in data.iter_mut().zip(a.data()).zip(b.data()) {
            *o = f(x, y);
        }
        return Tensor::from_vec(data, a.shape());
    }
    let out = broadcast_shape(a.shape(), b.shape())
        .unwrap_or_else(|| panic!("{op}: shapes {:?} and {:?} do not broadcast", a.shape(), b.shape()));
    let (sa, sb) = (broadcast_strides(a.shape(), &out), broadcast_strides(b.shape(), &out));
    let (ad, bd) = (a.data(), b.data());
    let mut data = crate::pool::zeros(numel(&out));
    for_each_broadcast(&out, &sa, &sb, |o, i, j| data[o] = f(ad[i], bd[j]));
    Tensor::from_vec(data, &out)
}

/// Sums `grad` (of a broadcast shape) down to `shape`: the adjoint of broadcasting.
pub fn reduce_to<T: Float>(grad: &Tensor<T>, shape: &[usize]) -> Tensor<T> {
    if grad.shape() == shape {
        return grad.clone();
    }
    #[cfg(feature = "cuda")]
    if grad.is_cuda() {
        return crate::cuda::ops::reduce_to(grad, shape);
    }
    let out = grad.shape();
    // Stretched leading axes only (a bias, `pos_embed` over the batch): the column sums of
    // `grad` seen as rows of `numel(shape)`.
    let kept = &shape[shape.iter().take_while(|&&d| d == 1).count()..];
    if out.len() >= kept.len() && out.ends_with(kept) && numel(shape) > 0 {
        let mut acc = crate::pool::zeros(numel(shape));
        crate::kernels::parallel::sum_rows(grad.data(), &mut acc);
        return Tensor::from_vec(acc, shape);
    }
    let s = broadcast_strides(shape, out);
    let zero = vec![0; out.len()];
    let mut acc = crate::pool::zeros(numel(shape));
    let gd = grad.data();
    for_each_broadcast(out, &s, &zero, |o, i, _| acc[i] += gd[o]);
    Tensor::from_vec(acc, shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_broadcast_like_numpy() {
        assert_eq!(broadcast_shape(&[2, 1, 3], &[4, 1]), Some(vec![2, 4, 3]));
        assert_eq!(broadcast_shape(&[], &[5]), Some(vec![5]));
        assert_eq!(broadcast_shape(&[2, 3], &[3, 2]), None);
    }

    #[test]
    fn reduce_to_sums_over_stretched_axes() {
        let g = Tensor::<f64>::from_fn(&[2, 3], |i| i as f64);
        assert_eq!(reduce_to(&g, &[3]).data(), &[3.0, 5.0, 7.0]);
        assert_eq!(reduce_to(&g, &[2, 1]).data(), &[3.0, 12.0]);
        assert_eq!(reduce_to(&g, &[]).data(), &[15.0]);
    }
}
