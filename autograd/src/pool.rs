//! A buffer pool: tensor buffers freed in one training step are handed out again in the next.
//!
//! A step allocates hundreds of large buffers (activations, gradients) and frees them all when
//! its tape is dropped. Left to the system allocator, every large buffer is a fresh `mmap` whose
//! pages the kernel zero-fills on first touch, and every free is a `munmap`: measured on a
//! ViT-Tiny step, page-fault handling took a quarter of the time. Since a step's shapes repeat
//! exactly from one step to the next, keeping freed buffers by length and reusing them removes
//! that cost almost entirely.
//!
//! Buffers below [`MIN_POOLED`] elements go back to the allocator (which handles small blocks
//! well), and the pool keeps at most [`MAX_RETAINED_BYTES`] per element type, so it can never hold
//! more than a bounded amount of memory that nobody uses.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::dtype::{is, Float};

/// Buffers shorter than this are not pooled.
pub const MIN_POOLED: usize = 1 << 12;
/// Upper bound on the bytes one element type's pool retains.
pub const MAX_RETAINED_BYTES: usize = 1 << 30;

/// Free buffers of one element type, by length.
struct Pool<T> {
    free: Mutex<BTreeMap<usize, Vec<Vec<T>>>>,
    retained: AtomicUsize,
}

impl<T> Pool<T> {
    const fn new() -> Self {
        Pool { free: Mutex::new(BTreeMap::new()), retained: AtomicUsize::new(0) }
    }
}

static POOL_F32: Pool<f32> = Pool::new();
static POOL_F64: Pool<f64> = Pool::new();

/// The pool of element type `T`.
fn pool<T: Float>() -> &'static Pool<T> {
    let p: *const () = if is::<T, f32>() {
        (&POOL_F32 as *const Pool<f32>).cast()
    } else if is::<T, f64>() {
        (&POOL_F64 as *const Pool<f64>).cast()
    } else {
        panic!("pool: no buffer pool for element type {:?}", T::DTYPE)
    };
    // SAFETY: `p` is the static pool whose element type is `T` (checked by TypeId above).
    unsafe { &*p.cast::<Pool<T>>() }
}

fn bytes<T>(n: usize) -> usize {
    n * std::mem::size_of::<T>()
}

/// A buffer of `n` elements whose contents are unspecified (stale values of an earlier tensor,
/// or zeros): for ops that overwrite every element.
pub fn take<T: Float>(n: usize) -> Vec<T> {
    if n >= MIN_POOLED {
        let pool = pool::<T>();
        let reused = pool.free.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&n).and_then(Vec::pop);
        if let Some(v) = reused {
            pool.retained.fetch_sub(bytes::<T>(n), Ordering::Relaxed);
            return v;
        }
    }
    vec![T::ZERO; n]
}

/// A buffer of `n` zeros.
pub fn zeros<T: Float>(n: usize) -> Vec<T> {
    let mut v = take(n);
    v.fill(T::ZERO);
    v
}

/// Returns a buffer to the pool (or to the allocator if it is small or the pool is full).
pub fn give<T: Float>(v: Vec<T>) {
    let n = v.len();
    if n < MIN_POOLED || v.capacity() != n {
        return;
    }
    let pool = pool::<T>();
    if pool.retained.fetch_add(bytes::<T>(n), Ordering::Relaxed) + bytes::<T>(n) > MAX_RETAINED_BYTES {
        pool.retained.fetch_sub(bytes::<T>(n), Ordering::Relaxed);
        return;
    }
    pool.free.lock().unwrap_or_else(|e| e.into_inner()).entry(n).or_default().push(v);
}

/// Bytes held by the pool of element type `T`.
pub fn retained_bytes<T: Float>() -> usize {
    pool::<T>().retained.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_freed_buffer_is_reused_and_small_ones_are_not_kept() {
        // f64 here: other tests in this binary use f32 tensors concurrently.
        let n = MIN_POOLED + 17;
        let v = take::<f64>(n);
        let p = v.as_ptr();
        give(v);
        assert!(retained_bytes::<f64>() >= n * 8);
        let w = take::<f64>(n);
        assert_eq!(w.as_ptr(), p, "the same allocation comes back");
        assert_eq!(zeros::<f64>(n).iter().sum::<f64>(), 0.0);
        give(vec![1.0f64; 10]);
        assert!(!pool::<f64>().free.lock().unwrap().contains_key(&10));
    }
}
