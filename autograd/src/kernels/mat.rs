//! The strided matrix view every GEMM call takes: a pointer and a [`Layout`].
//!
//! Element `(p, i, j)` of a view (product `p` of a batch, row `i`, column `j`) lives at
//! `ptr + p * bs + i * rs + j * cs`. Strides may be any sign and size, which is how backward
//! passes `A^T` without a copy (a row-major `[k, m]` matrix read with `(rs, cs) = (1, m)` *is*
//! its transpose, [`Layout::t`]) and how attention reads one head's `N x Dh` block straight out
//! of the fused `[B, N, 3D]` projection (row stride `3D`, offset `h * Dh`).
//!
//! [`MatRef`] and [`MatMut`] borrow a slice and check, when built, that every element they
//! address lies inside it (and, for [`MatMut`], that no two elements share an address), so a GEMM
//! on them is safe to call. Parallel code whose tasks write disjoint parts of one buffer builds
//! its views with the `unsafe` `from_raw` constructors instead and argues the disjointness there.

use std::marker::PhantomData;

use super::send_ptr::SendPtr;

/// The geometry of a (batch of) strided matrices inside a buffer: which element is `(0, 0)`,
/// the shape, and the strides, all in elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Buffer index of element `(0, 0)` of product 0.
    pub offset: usize,
    /// Rows of each matrix.
    pub rows: usize,
    /// Columns of each matrix.
    pub cols: usize,
    /// Distance between consecutive rows.
    pub rs: isize,
    /// Distance between consecutive columns.
    pub cs: isize,
    /// Number of matrices (1 for a plain matrix).
    pub batch: usize,
    /// Distance between consecutive matrices of the batch (0 shares one matrix).
    pub bs: isize,
}

impl Layout {
    /// A contiguous row-major `rows x cols` matrix at the start of the buffer.
    pub fn row_major(rows: usize, cols: usize) -> Layout {
        Layout::strided(rows, cols, cols as isize, 1)
    }

    /// A `rows x cols` matrix with the given row and column strides, at the start of the buffer.
    pub fn strided(rows: usize, cols: usize, rs: isize, cs: isize) -> Layout {
        Layout { offset: 0, rows, cols, rs, cs, batch: 1, bs: (rows * cols) as isize }
    }

    /// The same layout with element `(0, 0)` at buffer index `offset`.
    pub fn at(self, offset: usize) -> Layout {
        Layout { offset, ..self }
    }

    /// The transpose: rows and columns swapped, through the strides (no copy).
    pub fn t(self) -> Layout {
        Layout { rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs, ..self }
    }

    /// `batch` matrices of this layout, `bs` elements apart (0: one matrix shared by all).
    pub fn batched(self, batch: usize, bs: isize) -> Layout {
        Layout { batch, bs, ..self }
    }

    /// Matrix `p` of the batch, as a single matrix.
    pub fn nth(self, p: usize) -> Layout {
        let offset = (self.offset as isize + p as isize * self.bs) as usize;
        Layout { offset, batch: 1, ..self }
    }

    /// Whether the layout addresses no element.
    pub fn is_empty(&self) -> bool {
        self.rows == 0 || self.cols == 0 || self.batch == 0
    }

    /// The (extent, stride) of each axis.
    fn axes(&self) -> [(usize, isize); 3] {
        [(self.batch, self.bs), (self.rows, self.rs), (self.cols, self.cs)]
    }

    /// The smallest and largest buffer index addressed, or `None` if empty.
    fn span(&self) -> Option<(isize, isize)> {
        if self.is_empty() {
            return None;
        }
        let (mut lo, mut hi) = (self.offset as isize, self.offset as isize);
        for (extent, stride) in self.axes() {
            let reach = (extent as isize - 1) * stride;
            if reach < 0 {
                lo += reach;
            } else {
                hi += reach;
            }
        }
        Some((lo, hi))
    }

    /// Whether every index lies in a buffer of `len` elements; panics naming `what` otherwise.
    fn check_inside(&self, len: usize, what: &str) {
        if let Some((lo, hi)) = self.span() {
            assert!(
                lo >= 0 && (hi as usize) < len,
                "{what}: {self:?} addresses [{lo}, {hi}] outside a buffer of {len}"
            );
        }
    }

    /// Whether distinct `(p, i, j)` address distinct elements: sorted by stride, each axis must
    /// step past everything the shorter-strided axes reach.
    pub fn is_injective(&self) -> bool {
        let mut axes: Vec<(usize, usize)> = self
            .axes()
            .into_iter()
            .filter(|&(extent, _)| extent > 1)
            .map(|(extent, stride)| (extent, stride.unsigned_abs()))
            .collect();
        axes.sort_by_key(|&(_, stride)| stride);
        let mut reach = 0usize;
        for (extent, stride) in axes {
            if stride <= reach {
                return false;
            }
            reach += (extent - 1) * stride;
        }
        true
    }
}

/// A read-only strided view of a matrix (or a batch of them); see the module documentation.
pub struct MatRef<'a, T> {
    /// Element `(0, 0)` of product 0.
    ptr: SendPtr<T>,
    layout: Layout,
    _data: PhantomData<&'a [T]>,
}

impl<T> Clone for MatRef<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for MatRef<'_, T> {}

impl<'a, T> MatRef<'a, T> {
    /// A view of `data` with `layout`; panics if it addresses anything outside `data`.
    pub fn new(data: &'a [T], layout: Layout) -> Self {
        layout.check_inside(data.len(), "MatRef");
        // The offset is inside `data` (checked above, or the view is empty and never read).
        MatRef { ptr: SendPtr::from_const(data.as_ptr().wrapping_add(layout.offset)), layout, _data: PhantomData }
    }

    /// A contiguous row-major `rows x cols` view of the start of `data`.
    pub fn row_major(data: &'a [T], rows: usize, cols: usize) -> Self {
        Self::new(data, Layout::row_major(rows, cols))
    }

    /// A view from a raw pointer to element `(0, 0)` (`layout.offset` is added to it).
    ///
    /// # Safety
    /// Every element the layout addresses must be valid for reads for `'a`, and not written
    /// while the view is in use.
    pub unsafe fn from_raw(ptr: *const T, layout: Layout) -> Self {
        MatRef { ptr: SendPtr::from_const(ptr.wrapping_add(layout.offset)), layout, _data: PhantomData }
    }

    /// The transposed view (no copy).
    pub fn t(self) -> Self {
        MatRef { layout: self.layout.t(), ..self }
    }

    /// The geometry (its `offset` is already applied to [`MatRef::as_ptr`]).
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Pointer to element `(0, 0)` of product 0.
    pub fn as_ptr(&self) -> *const T {
        self.ptr.get()
    }

    /// Rows of each matrix.
    pub fn rows(&self) -> usize {
        self.layout.rows
    }

    /// Columns of each matrix.
    pub fn cols(&self) -> usize {
        self.layout.cols
    }

    /// Asks the CPU to start loading every cache line of this (row-contiguous, single) matrix
    /// into L1, without waiting for any: for an operand that will be read soon and is probably
    /// not in cache, such as one head's slices of attention's wide `qkv` rows, whose short runs
    /// (256 bytes every 2304) the hardware prefetchers do not follow. A hint only: it changes no
    /// value, and does nothing for other layouts or on other architectures.
    pub fn prefetch(&self) {
        #[cfg(target_arch = "x86_64")]
        self.prefetch_lines();
    }

    #[cfg(target_arch = "x86_64")]
    fn prefetch_lines(&self) {
        let l = self.layout;
        if l.cs != 1 || l.batch != 1 || l.cols == 0 {
            return;
        }
        let bytes = l.cols * std::mem::size_of::<T>();
        for i in 0..l.rows {
            let row = self.ptr.get().wrapping_offset(i as isize * l.rs) as *const i8;
            // Every 64-byte line the row touches: one address per line, the last byte for the last.
            let mut off = 0;
            while off < bytes + 63 {
                // SAFETY: a prefetch is a hint; it never faults and loads nothing into the
                // program (the addresses are inside the view anyway).
                unsafe {
                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                        row.wrapping_add(off.min(bytes - 1)),
                    )
                };
                off += 64;
            }
        }
    }

    /// The same memory seen as another element type of the same size (for the f32 fast path
    /// of code generic over the element type).
    ///
    /// # Safety
    /// `U` must be `T` under another name.
    pub(crate) unsafe fn cast<U>(self) -> MatRef<'a, U> {
        MatRef { ptr: SendPtr::new(self.ptr.get().cast()), layout: self.layout, _data: PhantomData }
    }
}

/// A writable strided view of a matrix (or a batch of them) whose elements are all distinct.
pub struct MatMut<'a, T> {
    /// Element `(0, 0)` of product 0.
    ptr: SendPtr<T>,
    layout: Layout,
    _data: PhantomData<&'a mut [T]>,
}

impl<'a, T> MatMut<'a, T> {
    /// A view of `data` with `layout`; panics if it addresses anything outside `data` or
    /// addresses an element twice.
    pub fn new(data: &'a mut [T], layout: Layout) -> Self {
        layout.check_inside(data.len(), "MatMut");
        assert!(layout.is_injective(), "MatMut: {layout:?} addresses some element twice");
        MatMut { ptr: SendPtr::new(data.as_mut_ptr().wrapping_add(layout.offset)), layout, _data: PhantomData }
    }

    /// A contiguous row-major `rows x cols` view of the start of `data`.
    pub fn row_major(data: &'a mut [T], rows: usize, cols: usize) -> Self {
        Self::new(data, Layout::row_major(rows, cols))
    }

    /// A view from a raw pointer to element `(0, 0)` (`layout.offset` is added to it).
    ///
    /// # Safety
    /// Every element the layout addresses must be valid for reads and writes for `'a`, no other
    /// view or reference may access them meanwhile, and distinct `(p, i, j)` must address
    /// distinct elements.
    pub unsafe fn from_raw(ptr: *mut T, layout: Layout) -> Self {
        MatMut { ptr: SendPtr::new(ptr.wrapping_add(layout.offset)), layout, _data: PhantomData }
    }

    /// A shorter-lived view of the same elements.
    pub fn rb(&mut self) -> MatMut<'_, T> {
        MatMut { ptr: self.ptr, layout: self.layout, _data: PhantomData }
    }

    /// The geometry (its `offset` is already applied to [`MatMut::as_mut_ptr`]).
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Pointer to element `(0, 0)` of product 0.
    pub fn as_mut_ptr(&mut self) -> *mut T {
        self.ptr.get()
    }

    /// Rows of each matrix.
    pub fn rows(&self) -> usize {
        self.layout.rows
    }

    /// Columns of each matrix.
    pub fn cols(&self) -> usize {
        self.layout.cols
    }

    /// As [`MatRef::cast`].
    ///
    /// # Safety
    /// `U` must be `T` under another name.
    pub(crate) unsafe fn cast<U>(self) -> MatMut<'a, U> {
        MatMut { ptr: SendPtr::new(self.ptr.get().cast()), layout: self.layout, _data: PhantomData }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_and_overlap_are_checked() {
        let buf = [0.0f32; 12];
        // A transposed 4 x 3 view of a row-major 3 x 4 matrix.
        let t = MatRef::row_major(&buf, 3, 4).t();
        assert_eq!((t.rows(), t.cols(), t.layout().rs, t.layout().cs), (4, 3, 1, 4));
        // Rows stored bottom-up: a negative row stride from the last row.
        let up = Layout::strided(3, 4, -4, 1).at(8);
        let _ = MatRef::new(&buf, up);
        assert!(std::panic::catch_unwind(|| MatRef::new(&buf, Layout::strided(3, 4, -4, 1))).is_err());
        assert!(std::panic::catch_unwind(|| MatRef::new(&buf, Layout::row_major(3, 5))).is_err());
        assert!(Layout::row_major(3, 4).is_injective());
        assert!(Layout::row_major(3, 4).t().is_injective());
        assert!(!Layout::strided(3, 4, 2, 1).is_injective(), "rows overlap");
        assert!(!Layout::row_major(3, 4).batched(2, 0).is_injective(), "a shared output");
        assert!(Layout::strided(2, 3, 9, 1).batched(3, 3).is_injective(), "interleaved heads");
    }
}
