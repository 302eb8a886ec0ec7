//! Opt-in accounting of f32 GEMM time, for benchmarks that split a step into "GEMM" and "the
//! rest", and the GEMM time into its shapes. Instrumentation only: it never changes what a
//! product computes.
//!
//! Off by default, when each product pays one relaxed atomic load. Once [`enable`]d, the f32
//! entry point ([`super::sgemm_with`]) records its calls, their
//! flops (`2 m n k` per product) and the wall time during which at least one product is running:
//! the union of the calls' intervals, so products running at once on several threads (attention
//! heads in parallel) count once and the figure compares directly with a step's wall time.
//! [`take`] reads the totals and resets them.
//!
//! The same union is kept per [`GemmShape`] (the product's sizes and which operands are read
//! transposed), so a benchmark can say which products of a step run below the FMA peak and by
//! how much: [`take_by_shape`]. A product's time includes its epilogue (bias, GELU) when it has
//! one, as the step pays it there.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

static ENABLED: AtomicBool = AtomicBool::new(false);
static STATE: Mutex<State> = Mutex::new(State { all: Union::new(), shapes: Vec::new() });

struct State {
    /// Every product.
    all: Union,
    /// The products of each shape, in the order the shapes first ran.
    shapes: Vec<(GemmShape, Union)>,
}

/// The totals of a set of products, and the interval during which one of them is running.
struct Union {
    /// Products of the set running now.
    active: usize,
    /// When `active` last went from 0 to 1.
    since: Option<Instant>,
    totals: GemmTotals,
}

impl Union {
    const fn new() -> Union {
        Union { active: 0, since: None, totals: GemmTotals { nanos: 0, calls: 0, flops: 0 } }
    }

    fn open(&mut self, flops: u64) {
        if self.active == 0 {
            self.since = Some(Instant::now());
        }
        self.active += 1;
        self.totals.calls += 1;
        self.totals.flops += flops;
    }

    fn close(&mut self) {
        self.active -= 1;
        if self.active == 0 {
            if let Some(t0) = self.since.take() {
                self.totals.nanos += t0.elapsed().as_nanos() as u64;
            }
        }
    }
}

/// How an operand is read: row-major (`N`), transposed, i.e. column-major (`T`), or with
/// neither stride 1 (`S`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// Row-major: the column stride is 1.
    N,
    /// Transposed: the row stride is 1.
    T,
    /// Strided: neither stride is 1.
    S,
}

impl Access {
    fn of(rs: isize, cs: isize) -> Access {
        if cs == 1 {
            Access::N
        } else if rs == 1 {
            Access::T
        } else {
            Access::S
        }
    }
}

/// A product's shape as the accounting keys it: `batch` products of `m x k` by `k x n`, and how
/// A and B are read. Displayed as the GEMM benchmark writes its shapes: `8320x192x576:NT`,
/// `384*65x64x65:NT` for a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GemmShape {
    /// Products in the call (1 for one matrix).
    pub batch: usize,
    /// Rows of A and C.
    pub m: usize,
    /// The shared (depth) dimension.
    pub k: usize,
    /// Columns of B and C.
    pub n: usize,
    /// How A is read.
    pub a: Access,
    /// How B is read.
    pub b: Access,
}

impl std::fmt::Display for GemmShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.batch != 1 {
            write!(f, "{}*", self.batch)?;
        }
        write!(f, "{}x{}x{}:{:?}{:?}", self.m, self.k, self.n, self.a, self.b)
    }
}

impl GemmShape {
    /// The shape of a product of `batch` matrices with these strides.
    pub(super) fn new(
        batch: usize,
        (m, k, n): (usize, usize, usize),
        a: (isize, isize),
        b: (isize, isize),
    ) -> GemmShape {
        GemmShape { batch, m, k, n, a: Access::of(a.0, a.1), b: Access::of(b.0, b.1) }
    }
}

/// What the products did since the last [`take`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GemmTotals {
    /// Wall-clock nanoseconds with at least one product running.
    pub nanos: u64,
    /// Calls of `sgemm` (a batched call counts once).
    pub calls: u64,
    /// Floating-point operations, `2 m n k` per product.
    pub flops: u64,
}

fn state() -> MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Turns the accounting on or off (off by default).
pub fn enable(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// The totals since the last call (or since the program started), resetting them.
pub fn take() -> GemmTotals {
    std::mem::take(&mut state().all.totals)
}

/// The totals of each shape since the last call, in the order the shapes first ran, resetting
/// them. Independent of [`take`]: each reads and resets its own totals.
pub fn take_by_shape() -> Vec<(GemmShape, GemmTotals)> {
    let mut s = state();
    let out = s.shapes.iter_mut().map(|(k, u)| (*k, std::mem::take(&mut u.totals))).collect();
    // Shapes with a product in flight keep their entry, to close it.
    s.shapes.retain(|(_, u)| u.active > 0);
    out
}

/// One call's interval: opened on entry, closed when dropped.
pub(super) struct Span(Option<GemmShape>);

impl Span {
    #[inline]
    pub(super) fn enter(shape: impl FnOnce() -> GemmShape) -> Span {
        if !ENABLED.load(Ordering::Relaxed) {
            return Span(None);
        }
        let shape = shape();
        let flops = (shape.batch * 2 * shape.m * shape.n * shape.k) as u64;
        let mut s = state();
        s.all.open(flops);
        match s.shapes.iter_mut().find(|(k, _)| *k == shape) {
            Some((_, u)) => u.open(flops),
            None => {
                let mut u = Union::new();
                u.open(flops);
                s.shapes.push((shape, u));
            }
        }
        Span(Some(shape))
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        let Some(shape) = self.0 else { return };
        let mut s = state();
        s.all.close();
        if let Some((_, u)) = s.shapes.iter_mut().find(|(k, _)| *k == shape) {
            u.close();
        }
    }
}
