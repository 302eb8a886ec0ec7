//! A buffer pool: tensor buffers freed in one training step are handed out again in the next.
//!
//! A step allocates hundreds of large buffers (activations, gradients) and frees them all when
//! its tape is dropped. Left to the system allocator, every large buffer is a fresh `mmap` whose
//! pages the kernel zero-fills on first touch, and every free is a `munmap`: measured on a
//! ViT-Tiny step, page-fault handling took a quarter of the time. Since a step's shapes repeat
//! exactly from one step to the next, keeping freed buffers by length and reusing them removes
//! that cost almost entirely.
//!
//! **What the pool keeps is bounded by what was in use** (the one rule, also stated in
//! [`crate::memory`]): for each length, the pool holds at most as many free buffers as were ever
//! *in use at once* — taken with [`take`] and not yet given back. A buffer given back beyond that
//! count goes to the allocator. So the pool is a cache of the program's working set and never
//! larger than it: after a training step it holds the buffers that step used (one step's tape and
//! its gradients), after an evaluation pass those of one evaluation batch, and a buffer of a
//! length nobody takes (a batch the loader allocated itself, an odd last batch) is not kept
//! at all. [`Stats::bound`] is that limit in bytes, `sum over lengths of length x peak count`,
//! and [`Stats::retained`] never exceeds it. [`MAX_RETAINED_BYTES`] caps each element type's pool
//! on top of that, as a backstop.
//!
//! Buffers below [`MIN_POOLED`] elements go back to the allocator (which handles small blocks
//! well).

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::dtype::{is, Float};

/// Buffers shorter than this are not pooled.
pub const MIN_POOLED: usize = 1 << 12;
/// Upper bound on the bytes one element type's pool retains, whatever the working set.
pub const MAX_RETAINED_BYTES: usize = 1 << 30;

/// The buffers of one length.
struct Slot<T> {
    /// Free buffers, ready to be taken.
    free: Vec<Vec<T>>,
    /// Buffers taken and not given back yet (never below 0: a buffer the pool did not hand out
    /// may be given to it).
    in_use: usize,
    /// The most buffers of this length ever in use at once: how many `free` may hold.
    peak: usize,
}

/// What a pool holds, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes of the free buffers the pool holds now.
    pub retained: usize,
    /// Bytes of the buffers taken from the pool and not given back yet.
    pub in_use: usize,
    /// The most the pool may hold: for each length, its bytes times the most buffers of that
    /// length ever in use at once (capped at [`MAX_RETAINED_BYTES`]).
    pub bound: usize,
}

/// Free buffers of one element type, by length, under the rule of the module documentation.
pub struct BufferPool<T> {
    slots: Mutex<(BTreeMap<usize, Slot<T>>, usize)>,
}

impl<T: Float> BufferPool<T> {
    /// An empty pool.
    pub const fn new() -> Self {
        BufferPool { slots: Mutex::new((BTreeMap::new(), 0)) }
    }

    /// A buffer of `n` elements whose contents are unspecified (see [`take`]).
    pub fn take(&self, n: usize) -> Vec<T> {
        if n >= MIN_POOLED {
            let mut guard = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            let (slots, retained) = &mut *guard;
            let slot = slots.entry(n).or_insert_with(|| Slot { free: Vec::new(), in_use: 0, peak: 0 });
            slot.in_use += 1;
            slot.peak = slot.peak.max(slot.in_use);
            if let Some(v) = slot.free.pop() {
                *retained -= bytes::<T>(n);
                return v;
            }
        }
        vec![T::ZERO; n]
    }

    /// Returns a buffer: kept if fewer buffers of its length are free than were ever in use at
    /// once (and the cap allows), else freed.
    pub fn give(&self, v: Vec<T>) {
        let n = v.len();
        if n < MIN_POOLED || v.capacity() != n {
            return;
        }
        let mut guard = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let (slots, retained) = &mut *guard;
        let Some(slot) = slots.get_mut(&n) else { return };
        slot.in_use = slot.in_use.saturating_sub(1);
        if slot.free.len() < slot.peak && *retained + bytes::<T>(n) <= MAX_RETAINED_BYTES {
            *retained += bytes::<T>(n);
            slot.free.push(v);
        }
        // Otherwise `v` is dropped here, after the lock, and goes back to the allocator.
        drop(guard);
    }

    /// What the pool holds now, what is in use and the bound.
    pub fn stats(&self) -> Stats {
        let guard = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let (slots, retained) = &*guard;
        let sum = |f: fn(&Slot<T>) -> usize| slots.iter().map(|(&n, s)| bytes::<T>(n) * f(s)).sum::<usize>();
        Stats { retained: *retained, in_use: sum(|s| s.in_use), bound: sum(|s| s.peak).min(MAX_RETAINED_BYTES) }
    }

    /// How many free buffers of length `n` the pool holds (for tests of who takes from it).
    #[cfg(test)]
    pub(crate) fn free_of_len(&self, n: usize) -> usize {
        let guard = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        guard.0.get(&n).map_or(0, |s| s.free.len())
    }

    /// Frees every buffer the pool holds and forgets the peaks (the next working set is learnt
    /// afresh). Buffers in use stay counted.
    pub fn clear(&self) {
        let mut guard = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let (slots, retained) = &mut *guard;
        slots.retain(|_, s| {
            s.free.clear();
            s.peak = s.in_use;
            s.in_use > 0
        });
        *retained = 0;
    }
}

impl<T: Float> Default for BufferPool<T> {
    fn default() -> Self {
        Self::new()
    }
}

static POOL_F32: BufferPool<f32> = BufferPool::new();
static POOL_F64: BufferPool<f64> = BufferPool::new();

/// The process-wide pool of element type `T`, which every tensor buffer goes through.
pub fn global<T: Float>() -> &'static BufferPool<T> {
    let p: *const () = if is::<T, f32>() {
        (&POOL_F32 as *const BufferPool<f32>).cast()
    } else if is::<T, f64>() {
        (&POOL_F64 as *const BufferPool<f64>).cast()
    } else {
        panic!("pool: no buffer pool for element type {:?}", T::DTYPE)
    };
    // SAFETY: `p` is the static pool whose element type is `T` (checked by TypeId above).
    unsafe { &*p.cast::<BufferPool<T>>() }
}

fn bytes<T>(n: usize) -> usize {
    n * std::mem::size_of::<T>()
}

/// A buffer of `n` elements whose contents are unspecified (stale values of an earlier tensor,
/// or zeros): for ops that overwrite every element.
pub fn take<T: Float>(n: usize) -> Vec<T> {
    global::<T>().take(n)
}

/// A buffer of `n` zeros.
pub fn zeros<T: Float>(n: usize) -> Vec<T> {
    let mut v = take(n);
    v.fill(T::ZERO);
    v
}

/// Returns a buffer to the pool (or to the allocator if it is small or the pool has enough of
/// its length).
pub fn give<T: Float>(v: Vec<T>) {
    global::<T>().give(v)
}

/// A scratch buffer of unspecified contents from the pool, given back when dropped: for the
/// per-head `N x N` blocks of attention, taken and dropped thousands of times a step. As fresh
/// `vec![0; n]`s each cost an allocation and a `memset` (the allocator hands back a reused
/// block, which it must zero).
pub struct Scratch<T: Float>(Vec<T>);

impl<T: Float> Scratch<T> {
    /// `n` elements; every one must be written before it is read.
    pub fn take(n: usize) -> Self {
        Scratch(take(n))
    }
}

impl<T: Float> std::ops::Deref for Scratch<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<T: Float> std::ops::DerefMut for Scratch<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.0
    }
}

impl<T: Float> Drop for Scratch<T> {
    fn drop(&mut self) {
        give(std::mem::take(&mut self.0));
    }
}

/// Bytes held by the pool of element type `T`.
pub fn retained_bytes<T: Float>() -> usize {
    global::<T>().stats().retained
}

/// What the process-wide pool of element type `T` holds, has in use, and may hold.
pub fn stats<T: Float>() -> Stats {
    global::<T>().stats()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_freed_buffer_is_reused_and_small_ones_are_not_kept() {
        let pool = BufferPool::<f32>::new();
        let n = MIN_POOLED + 17;
        let v = pool.take(n);
        let p = v.as_ptr();
        pool.give(v);
        assert_eq!(pool.stats().retained, n * 4);
        let w = pool.take(n);
        assert_eq!(w.as_ptr(), p, "the same allocation comes back");
        pool.give(vec![1.0f32; 10]);
        assert_eq!(pool.stats(), Stats { retained: 0, in_use: n * 4, bound: n * 4 });
    }

    #[test]
    fn a_scratch_buffer_goes_back_to_the_pool_when_dropped() {
        // The process-wide pool (other tests share it): a length nobody else uses.
        let n = MIN_POOLED + 4099;
        let before = global::<f32>().free_of_len(n);
        let p = Scratch::<f32>::take(n).as_ptr();
        assert_eq!(global::<f32>().free_of_len(n), before + 1, "the dropped scratch was not kept");
        assert_eq!(Scratch::<f32>::take(n).as_ptr(), p, "the same allocation comes back");
    }

    #[test]
    fn the_pool_keeps_no_more_of_a_length_than_was_in_use_at_once() {
        let pool = BufferPool::<f64>::new();
        let (n, m) = (MIN_POOLED, MIN_POOLED * 3);
        // A "step" that has three buffers of length n and one of m live at once.
        let step = |pool: &BufferPool<f64>| {
            let live: Vec<Vec<f64>> = vec![pool.take(n), pool.take(n), pool.take(n), pool.take(m)];
            live.into_iter().for_each(|v| pool.give(v));
        };
        step(&pool);
        let after_one = pool.stats();
        assert_eq!(after_one, Stats { retained: (3 * n + m) * 8, in_use: 0, bound: (3 * n + m) * 8 });
        // Buffers the pool never handed out (the loader's own batches): of a length nobody
        // takes, none is kept; of a pooled length, none beyond the peak.
        for _ in 0..10 {
            pool.give(vec![0.0f64; 2 * n]);
            pool.give(vec![0.0f64; n]);
            step(&pool);
        }
        assert_eq!(pool.stats(), after_one, "the pool grew past the working set");
        // Two steps' worth live at once raise the peak, and then the pool may hold that much.
        let a: Vec<Vec<f64>> = (0..6).map(|_| pool.take(n)).collect();
        a.into_iter().for_each(|v| pool.give(v));
        assert_eq!(pool.stats().retained, (6 * n + m) * 8);
        assert_eq!(pool.stats().bound, (6 * n + m) * 8);
        pool.clear();
        assert_eq!(pool.stats(), Stats::default());
    }
}
