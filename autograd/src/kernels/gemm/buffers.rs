//! The packing buffers: per thread, 64-byte aligned, grow-only, so that steady-state products
//! allocate nothing; and the partial products of a K-split call, kept between calls.

use std::cell::RefCell;

/// A 64-byte aligned, grow-only scratch buffer of floats.
#[derive(Default)]
pub(crate) struct Scratch(Vec<Align64>);

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Align64([f32; 16]);

impl Scratch {
    /// A pointer to at least `floats` aligned floats (contents unspecified).
    pub(crate) fn get(&mut self, floats: usize) -> *mut f32 {
        let blocks = floats.div_ceil(16);
        if self.0.len() < blocks {
            self.0 = vec![Align64([0.0; 16]); blocks];
        }
        self.0.as_mut_ptr() as *mut f32
    }
}

/// One thread's packing buffers: the packed A block and the packed B block.
#[derive(Default)]
pub(crate) struct Buffers {
    /// A micro-panels.
    pub(crate) a: Scratch,
    /// B panels.
    pub(crate) b: Scratch,
}

thread_local! {
    static BUFFERS: RefCell<Buffers> = RefCell::new(Buffers::default());
    /// The partial products of a K-split call, kept by the calling thread between calls.
    static PARTIAL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's packing buffers (fresh ones if they are somehow in use already).
pub(crate) fn with_buffers<R>(f: impl FnOnce(&mut Buffers) -> R) -> R {
    BUFFERS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut bufs) => f(&mut bufs),
        Err(_) => f(&mut Buffers::default()),
    })
}

/// This thread's buffer for K-split partial products, at least `len` floats (reused from call to
/// call: fresh zeroed pages would cost a page fault per 4 KiB); hand it back with
/// [`give_partial`].
pub(crate) fn take_partial(len: usize) -> Vec<f32> {
    let mut partial = PARTIAL.with(|p| std::mem::take(&mut *p.borrow_mut()));
    if partial.len() < len {
        partial = vec![0.0f32; len];
    }
    partial
}

/// Keeps `partial` for the next K-split call on this thread.
pub(crate) fn give_partial(partial: Vec<f32>) {
    PARTIAL.with(|p| *p.borrow_mut() = partial);
}
