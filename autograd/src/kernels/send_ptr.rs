//! The one raw pointer that may cross threads.
//!
//! Parallel kernels hand one buffer to several rayon tasks, each of which writes a disjoint part
//! of it (its rows, its heads, its tiles). Rust cannot see that the parts are disjoint, so the
//! tasks share a raw pointer instead of slices; this wrapper is what lets that pointer into a
//! `Sync` closure. Every dereference stays `unsafe` at its use, where the disjointness is argued.

/// A raw pointer that is `Send` and `Sync`. It grants no access by itself: reading or writing
/// through [`SendPtr::get`] is `unsafe` as for any raw pointer.
pub struct SendPtr<T>(*mut T);

impl<T> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SendPtr<T> {}

// SAFETY: a `SendPtr` is an address; moving or sharing it between threads is harmless. Every
// access through it is an `unsafe` raw-pointer operation whose caller guarantees that no two
// threads touch the same element unsynchronised (each use documents its disjoint partition).
unsafe impl<T> Send for SendPtr<T> {}
// SAFETY: as for `Send`.
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// Wraps a pointer to memory that tasks will write.
    pub fn new(p: *mut T) -> Self {
        SendPtr(p)
    }

    /// Wraps a pointer to memory that tasks will only read.
    pub fn from_const(p: *const T) -> Self {
        SendPtr(p as *mut T)
    }

    /// The pointer (through a method, so that closures capture the `Sync` wrapper, not the
    /// bare pointer field).
    #[inline(always)]
    pub fn get(self) -> *mut T {
        self.0
    }

    /// The pointer `i` elements further on (address arithmetic only; nothing is read).
    #[inline(always)]
    pub fn at(self, i: usize) -> *mut T {
        self.0.wrapping_add(i)
    }
}
