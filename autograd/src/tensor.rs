//! Tensors: a shape and contiguous row-major storage on a device.
//!
//! A tensor is a value, not a graph node: ops on the tape ([`crate::Graph`]) consume and produce
//! tensors, parameters are tensors that outlive the tape. Storage is reference-counted, so
//! handing a parameter to the tape or cloning a tensor copies no data; writing to a shared
//! buffer copies it first (`Arc::make_mut`).
//!
//! Storage is the seam between the ops and the device: a CPU buffer, or (with the `cuda`
//! feature) a CUDA device buffer. An op looks at where its inputs live and runs that device's
//! primitives; [`Tensor::to`] moves a tensor between devices. The host-side accessors
//! ([`Tensor::data`] and friends) are for CPU tensors: on a GPU tensor they panic with a message
//! naming the device, since reading device memory element by element would hide a copy.

use std::fmt;
use std::sync::Arc;

use rand_distr::{Distribution, Normal, Uniform};

use crate::dtype::{DType, Float};
use crate::kernels::parallel::{for_each_row, GRAIN};
use crate::rng::Rng;

pub use crate::device::Device;
use crate::device::DeviceError;

/// The buffer behind a tensor: the one seam between the ops and the memory they run on.
#[derive(Clone, Debug)]
enum Storage<T: Float> {
    Cpu(Arc<Buffer<T>>),
    #[cfg(feature = "cuda")]
    Cuda(Arc<crate::cuda::DeviceBuffer<T>>),
}

/// A CPU buffer that returns its memory to the [`crate::pool`] when the last tensor using it
/// is dropped, so the next step's ops reuse it instead of faulting in fresh pages.
#[derive(Debug)]
struct Buffer<T: Float>(Vec<T>);

impl<T: Float> Drop for Buffer<T> {
    fn drop(&mut self) {
        crate::pool::give(std::mem::take(&mut self.0));
    }
}

impl<T: Float> Clone for Buffer<T> {
    fn clone(&self) -> Self {
        let mut v = crate::pool::take(self.0.len());
        v.copy_from_slice(&self.0);
        Buffer(v)
    }
}

/// An n-dimensional array of `f32` (training) or `f64` (gradient checks), row-major, contiguous.
#[derive(Clone)]
pub struct Tensor<T: Float = f32> {
    shape: Vec<usize>,
    storage: Storage<T>,
}

/// The panic of a host accessor on a GPU tensor.
#[cfg(feature = "cuda")]
fn not_on_host<T: Float>(what: &str, shape: &[usize], b: &crate::cuda::DeviceBuffer<T>) -> ! {
    panic!(
        "Tensor::{what}: this tensor of shape {shape:?} is on {}, not on the host; copy it with .to(Device::Cpu) \
         (or run an op that has a CUDA path)",
        Device::Cuda(b.gpu().ordinal())
    )
}

/// Number of elements of a shape (1 for a scalar `[]`).
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Row-major strides of a contiguous shape.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

impl<T: Float> Tensor<T> {
    /// Wraps `data` as a tensor of `shape`. Panics if the lengths disagree.
    pub fn from_vec(data: Vec<T>, shape: &[usize]) -> Self {
        assert_eq!(data.len(), numel(shape), "Tensor::from_vec: {} elements cannot have shape {:?}", data.len(), shape);
        Tensor { shape: shape.to_vec(), storage: Storage::Cpu(Arc::new(Buffer(data))) }
    }

    /// A tensor from `f64` values, converted to `T` (convenient in tests).
    pub fn from_f64s(data: &[f64], shape: &[usize]) -> Self {
        Self::from_vec(data.iter().map(|&x| T::from_f64(x)).collect(), shape)
    }

    /// A 0-dimensional tensor (shape `[]`) holding `x`: what a loss is.
    pub fn scalar(x: T) -> Self {
        Self::from_vec(vec![x], &[])
    }

    /// A tensor of `shape` with every element `value` (its buffer comes from the pool).
    pub fn full(shape: &[usize], value: T) -> Self {
        let mut v = crate::pool::take(numel(shape));
        v.fill(value);
        Self::from_vec(v, shape)
    }

    /// A tensor of `shape` filled with 0 (gradient accumulators, biases).
    pub fn zeros(shape: &[usize]) -> Self {
        Self::full(shape, T::ZERO)
    }

    /// A tensor of `shape` filled with 1 (LayerNorm's initial gain).
    pub fn ones(shape: &[usize]) -> Self {
        Self::full(shape, T::ONE)
    }

    /// Elements from `f(i)` for the flat row-major index `i`.
    pub fn from_fn(shape: &[usize], mut f: impl FnMut(usize) -> T) -> Self {
        let mut v = crate::pool::take(numel(shape));
        for (i, x) in v.iter_mut().enumerate() {
            *x = f(i);
        }
        Self::from_vec(v, shape)
    }

    /// Normal samples `N(mean, std^2)` from the seeded `rng`.
    pub fn randn(shape: &[usize], mean: f64, std: f64, rng: &mut Rng) -> Self {
        let d = Normal::new(mean, std).expect("Tensor::randn: std must be finite and >= 0");
        Self::from_fn(shape, |_| T::from_f64(d.sample(rng)))
    }

    /// Normal samples `N(mean, std^2)` redrawn until they fall in `[lo, hi]` (timm's
    /// `trunc_normal_`; note that, as in timm, the bounds are absolute, not in units of std).
    pub fn trunc_normal(shape: &[usize], mean: f64, std: f64, lo: f64, hi: f64, rng: &mut Rng) -> Self {
        assert!(lo < hi, "Tensor::trunc_normal: empty interval [{lo}, {hi}]");
        let d = Normal::new(mean, std).expect("Tensor::trunc_normal: std must be finite and >= 0");
        Self::from_fn(shape, |_| loop {
            let x = d.sample(rng);
            if (lo..=hi).contains(&x) {
                break T::from_f64(x);
            }
        })
    }

    /// Uniform samples in `[lo, hi)`.
    pub fn uniform(shape: &[usize], lo: f64, hi: f64, rng: &mut Rng) -> Self {
        let d = Uniform::new(lo, hi).expect("Tensor::uniform: need lo < hi");
        Self::from_fn(shape, |_| T::from_f64(d.sample(rng)))
    }

    /// The size of each axis, outermost first (`[]` for a scalar).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The number of axes (0 for a scalar).
    pub fn ndim(&self) -> usize {
        self.shape.len()
    }

    /// Size of axis `axis`.
    pub fn dim(&self, axis: usize) -> usize {
        self.shape[axis]
    }

    /// The number of elements, the product of the shape.
    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    /// The element type as a runtime value (`T::DTYPE`).
    pub fn dtype(&self) -> DType {
        T::DTYPE
    }

    /// Where the elements live.
    pub fn device(&self) -> Device {
        match &self.storage {
            Storage::Cpu(_) => Device::Cpu,
            #[cfg(feature = "cuda")]
            Storage::Cuda(b) => Device::Cuda(b.gpu().ordinal()),
        }
    }

    /// Whether the elements are on a CUDA device.
    pub fn is_cuda(&self) -> bool {
        self.device().is_cuda()
    }

    /// The elements, row-major. Panics on a GPU tensor (see the module documentation).
    pub fn data(&self) -> &[T] {
        match &self.storage {
            Storage::Cpu(v) => &v.0,
            #[cfg(feature = "cuda")]
            Storage::Cuda(b) => not_on_host("data", &self.shape, b),
        }
    }

    /// Mutable elements; copies the buffer first if another tensor shares it.
    pub fn data_mut(&mut self) -> &mut [T] {
        match &mut self.storage {
            Storage::Cpu(v) => Arc::make_mut(v).0.as_mut_slice(),
            #[cfg(feature = "cuda")]
            Storage::Cuda(b) => not_on_host("data_mut", &self.shape, b),
        }
    }

    /// The elements as an owned vector (no copy when this tensor is the only owner of a CPU
    /// buffer; a download from a GPU).
    pub fn into_vec(self) -> Vec<T> {
        match self.storage {
            Storage::Cpu(v) => match Arc::try_unwrap(v) {
                Ok(mut buf) => std::mem::take(&mut buf.0),
                Err(shared) => shared.0.clone(),
            },
            #[cfg(feature = "cuda")]
            Storage::Cuda(b) => b.to_vec(),
        }
    }

    /// This tensor on `device`: itself (no copy) if it is there already, else a copy. Fails if
    /// the device cannot be opened (no GPU, no driver, a build without the `cuda` feature).
    pub fn to(&self, device: Device) -> Result<Tensor<T>, DeviceError> {
        if device == self.device() {
            return Ok(self.clone());
        }
        match device {
            Device::Cpu => Ok(Tensor::from_vec(self.clone().into_vec(), &self.shape)),
            #[cfg(feature = "cuda")]
            Device::Cuda(n) => {
                let gpu = crate::cuda::device(n).map_err(|e| DeviceError(format!("{device}: {e}")))?;
                let host = self.to(Device::Cpu)?;
                Ok(Tensor::from_cuda(gpu.upload(host.data()), &self.shape))
            }
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(_) => Err(DeviceError(format!("{device}: {}", crate::device::NO_CUDA))),
        }
    }

    /// A tensor of `shape` over a device buffer of as many elements.
    #[cfg(feature = "cuda")]
    pub fn from_cuda(buf: crate::cuda::DeviceBuffer<T>, shape: &[usize]) -> Self {
        assert_eq!(buf.len(), numel(shape), "Tensor::from_cuda: {} elements cannot have shape {:?}", buf.len(), shape);
        Tensor { shape: shape.to_vec(), storage: Storage::Cuda(Arc::new(buf)) }
    }

    /// The device buffer of a GPU tensor.
    #[cfg(feature = "cuda")]
    pub fn cuda(&self) -> Option<&crate::cuda::DeviceBuffer<T>> {
        match &self.storage {
            Storage::Cuda(b) => Some(b),
            Storage::Cpu(_) => None,
        }
    }

    /// The device buffer of a GPU tensor for writing in place (an optimizer step, a gradient
    /// sum); copied first if another tensor shares it, as `data_mut` does.
    #[cfg(feature = "cuda")]
    pub fn cuda_mut(&mut self) -> Option<&mut crate::cuda::DeviceBuffer<T>> {
        match &mut self.storage {
            Storage::Cuda(b) => {
                if Arc::get_mut(b).is_none() {
                    *b = Arc::new(b.duplicate());
                }
                Arc::get_mut(b)
            }
            Storage::Cpu(_) => None,
        }
    }

    /// A tensor of `shape` filled with `value` on `device` (the seed of backward, for one).
    pub fn full_on(shape: &[usize], value: T, device: Device) -> Self {
        match device {
            #[cfg(feature = "cuda")]
            Device::Cuda(n) => {
                let gpu = crate::cuda::device(n).unwrap_or_else(|e| panic!("{device}: {e}"));
                Tensor::from_cuda(crate::cuda::prims::elementwise::fill(&gpu, numel(shape), value), shape)
            }
            _ => Tensor::full(shape, value),
        }
    }

    /// The same elements under another shape with as many elements (no copy).
    pub fn reshape(&self, shape: &[usize]) -> Self {
        assert_eq!(numel(shape), self.numel(), "Tensor::reshape: cannot view {:?} as {:?}", self.shape, shape);
        Tensor { shape: shape.to_vec(), storage: self.storage.clone() }
    }

    /// Whether `self` and `other` are views of one buffer (a reshape of the other, a clone).
    pub fn shares_storage(&self, other: &Tensor<T>) -> bool {
        match (&self.storage, &other.storage) {
            (Storage::Cpu(a), Storage::Cpu(b)) => Arc::ptr_eq(a, b),
            #[cfg(feature = "cuda")]
            (Storage::Cuda(a), Storage::Cuda(b)) => Arc::ptr_eq(a, b),
            #[cfg(feature = "cuda")]
            _ => false,
        }
    }

    /// Flat index of a multi-index; panics naming the tensor's shape if out of range.
    pub fn offset(&self, index: &[usize]) -> usize {
        assert_eq!(index.len(), self.ndim(), "index {:?} has the wrong rank for shape {:?}", index, self.shape);
        let mut off = 0;
        for (&i, &d) in index.iter().zip(&self.shape) {
            assert!(i < d, "index {:?} out of range for shape {:?}", index, self.shape);
            off = off * d + i;
        }
        off
    }

    /// The element at a multi-index.
    pub fn at(&self, index: &[usize]) -> T {
        self.data()[self.offset(index)]
    }

    /// Sets the element at a multi-index.
    pub fn set(&mut self, index: &[usize], value: T) {
        let off = self.offset(index);
        self.data_mut()[off] = value;
    }

    /// The value of a one-element tensor.
    pub fn item(&self) -> T {
        assert_eq!(self.numel(), 1, "Tensor::item on a tensor of shape {:?}", self.shape);
        self.data()[0]
    }

    /// Elementwise map into a new tensor of the same shape (its buffer from the pool; large
    /// tensors in parallel, in blocks of [`GRAIN`] elements).
    pub fn map(&self, f: impl Fn(T) -> T + Sync) -> Self {
        let mut v = crate::pool::take(self.numel());
        // "Rows" of GRAIN elements: one block on this thread when small, else one per task.
        for_each_row(&mut v, GRAIN, |r, y| {
            for (y, &x) in y.iter_mut().zip(&self.data()[r * GRAIN..]) {
                *y = f(x);
            }
        });
        Tensor::from_vec(v, &self.shape)
    }

    /// `f(a, b)` elementwise over this tensor and `other`, of the same shape, into a new tensor
    /// (pooled and parallel as [`Tensor::map`]): what a backward pass's `g * f'(x)` is.
    pub fn zip_map(&self, other: &Tensor<T>, f: impl Fn(T, T) -> T + Sync) -> Self {
        assert_eq!(self.shape, other.shape, "Tensor::zip_map: shapes {:?} and {:?} differ", self.shape, other.shape);
        let mut v = crate::pool::take(self.numel());
        let (a, b) = (self.data(), other.data());
        for_each_row(&mut v, GRAIN, |r, y| {
            for ((y, &a), &b) in y.iter_mut().zip(&a[r * GRAIN..]).zip(&b[r * GRAIN..]) {
                *y = f(a, b);
            }
        });
        Tensor::from_vec(v, &self.shape)
    }

    /// Converts to another element type (on the tensor's device).
    pub fn cast<U: Float>(&self) -> Tensor<U> {
        #[cfg(feature = "cuda")]
        if let Some(b) = self.cuda() {
            return Tensor::from_cuda(crate::cuda::prims::elementwise::cast::<T, U>(b), &self.shape);
        }
        Tensor::from_vec(self.data().iter().map(|&x| U::from_f64(x.to_f64())).collect(), &self.shape)
    }

    /// The elements as `f64`s (convenient in tests).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        self.data().iter().map(|x| x.to_f64()).collect()
    }

    /// Euclidean norm of all elements, accumulated in f64 (on a GPU, read back as one scalar).
    pub fn norm(&self) -> f64 {
        #[cfg(feature = "cuda")]
        if let Some(b) = self.cuda() {
            return crate::cuda::prims::optim::sum_of_squares(b.gpu(), &[b]).to_vec()[0].sqrt();
        }
        self.data().iter().map(|x| x.to_f64() * x.to_f64()).sum::<f64>().sqrt()
    }

    /// Sum of all elements, accumulated in f64 (on a GPU, read back as one scalar).
    pub fn sum_all(&self) -> f64 {
        #[cfg(feature = "cuda")]
        if let Some(b) = self.cuda() {
            return crate::cuda::ops::sum_all(b);
        }
        self.data().iter().map(|x| x.to_f64()).sum()
    }

    /// `self += other` elementwise (shapes must match): how gradients accumulate.
    pub fn add_assign(&mut self, other: &Tensor<T>) {
        use rayon::prelude::*;
        assert_eq!(self.shape, other.shape, "Tensor::add_assign: shapes differ");
        #[cfg(feature = "cuda")]
        if self.is_cuda() || other.is_cuda() {
            return crate::cuda::ops::add_assign(self, other);
        }
        // Large sums (a residual stream's two gradients) in parallel chunks.
        const CHUNK: usize = 1 << 15;
        self.data_mut().par_chunks_mut(CHUNK).zip(other.data().par_chunks(CHUNK)).for_each(|(a, b)| {
            for (a, &b) in a.iter_mut().zip(b) {
                *a += b;
            }
        });
    }

    /// Largest absolute elementwise difference (shapes must match).
    pub fn max_abs_diff(&self, other: &Tensor<T>) -> f64 {
        assert_eq!(self.shape, other.shape, "Tensor::max_abs_diff: shapes differ");
        self.data().iter().zip(other.data()).map(|(a, b)| (a.to_f64() - b.to_f64()).abs()).fold(0.0, f64::max)
    }

    /// `|a - b| <= atol + rtol * |b|` for every element, with equal shapes.
    pub fn allclose(&self, other: &Tensor<T>, rtol: f64, atol: f64) -> bool {
        self.shape == other.shape
            && self.data().iter().zip(other.data()).all(|(a, b)| {
                let (a, b) = (a.to_f64(), b.to_f64());
                (a - b).abs() <= atol + rtol * b.abs()
            })
    }
}

impl<T: Float> fmt::Debug for Tensor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor<{:?}>{:?}", T::DTYPE, self.shape)?;
        if self.numel() <= 64 {
            write!(f, " {self}")?;
        }
        Ok(())
    }
}

/// Pretty printing, NumPy style: nested brackets, rows on their own lines; tensors of more than
/// 1000 elements print their shape and a few leading values.
impl<T: Float> fmt::Display for Tensor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_cuda() {
            let host = self.to(Device::Cpu).map_err(|_| fmt::Error)?;
            return write!(f, "{host} (on {})", self.device());
        }
        const MAX: usize = 1000;
        let data = self.data();
        if self.numel() > MAX {
            let head: Vec<String> = data.iter().take(6).map(|x| format!("{:.4}", x.to_f64())).collect();
            return write!(f, "tensor(shape={:?}, [{}, ...])", self.shape, head.join(", "));
        }
        if self.ndim() == 0 {
            return write!(f, "{:.4}", data[0].to_f64());
        }
        fn rec<T: Float>(f: &mut fmt::Formatter<'_>, shape: &[usize], data: &[T], depth: usize) -> fmt::Result {
            write!(f, "[")?;
            if shape.len() == 1 {
                for (i, x) in data.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{:>8.4}", x.to_f64())?;
                }
            } else {
                let inner = numel(&shape[1..]);
                for i in 0..shape[0] {
                    if i > 0 {
                        write!(f, ",\n{}", " ".repeat(depth + 1))?;
                    }
                    rec(f, &shape[1..], &data[i * inner..(i + 1) * inner], depth + 1)?;
                }
            }
            write!(f, "]")
        }
        rec(f, &self.shape, data, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexing_is_row_major() {
        let t = Tensor::<f32>::from_fn(&[2, 3, 4], |i| i as f32);
        assert_eq!(t.at(&[1, 2, 3]), 23.0);
        assert_eq!(t.at(&[0, 1, 0]), 4.0);
        assert_eq!(strides(&[2, 3, 4]), vec![12, 4, 1]);
    }

    #[test]
    fn writes_do_not_leak_into_clones() {
        let a = Tensor::<f64>::zeros(&[3]);
        let mut b = a.clone();
        b.set(&[1], 5.0);
        assert_eq!(a.at(&[1]), 0.0);
        assert_eq!(b.at(&[1]), 5.0);
    }

    #[test]
    fn trunc_normal_respects_bounds_and_seed() {
        let mut r1 = Rng::seed(3);
        let mut r2 = Rng::seed(3);
        let a = Tensor::<f32>::trunc_normal(&[1000], 0.0, 1.0, -0.5, 0.5, &mut r1);
        let b = Tensor::<f32>::trunc_normal(&[1000], 0.0, 1.0, -0.5, 0.5, &mut r2);
        assert!(a.data().iter().all(|x| (-0.5..=0.5).contains(x)));
        assert_eq!(a.data(), b.data());
        assert!(a.data().iter().any(|&x| x != a.data()[0]));
    }

    #[test]
    fn map_and_zip_map_take_their_buffers_from_the_pool_and_split_without_changing_a_value() {
        // A length no other test uses, above the parallel grain: this slot of the global pool
        // is this test's alone, and the blocks run in parallel.
        let n = 3 * GRAIN + 17;
        let pool = crate::pool::global::<f32>();
        let a = Tensor::<f32>::from_fn(&[n], |i| (i % 97) as f32 - 48.0);
        let b = a.map(|v| v * 0.5);
        assert!(b.data().iter().zip(a.data()).all(|(&y, &x)| y == x * 0.5));
        drop(b);
        assert_eq!(pool.free_of_len(n), 1, "the mapped tensor's buffer went back to the pool");
        let c = a.zip_map(&a, |x, g| if x > 0.0 { g * x } else { 0.0 });
        assert_eq!(pool.free_of_len(n), 0, "zip_map took the freed buffer instead of allocating");
        for (i, (&y, &x)) in c.data().iter().zip(a.data()).enumerate() {
            assert_eq!(y, if x > 0.0 { x * x } else { 0.0 }, "element {i}");
        }
        // Below the grain: one block on this thread, the same values.
        let s = Tensor::<f64>::from_fn(&[5], |i| i as f64 - 2.0);
        assert_eq!(s.zip_map(&s, |x, y| x * y).data(), &[4.0, 1.0, 0.0, 1.0, 4.0]);
    }

    #[test]
    #[should_panic(expected = "shapes")]
    fn zip_map_of_two_shapes_is_refused() {
        let a = Tensor::<f32>::zeros(&[2, 3]);
        let _ = a.zip_map(&Tensor::zeros(&[3, 2]), |x, y| x + y);
    }

    #[test]
    fn display_nests_brackets() {
        let t = Tensor::<f32>::from_fn(&[2, 2], |i| i as f32);
        assert_eq!(format!("{t}"), "[[  0.0000,   1.0000],\n [  2.0000,   3.0000]]");
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn out_of_range_index_panics_with_shape() {
        Tensor::<f32>::zeros(&[2, 2]).at(&[2, 0]);
    }
}
