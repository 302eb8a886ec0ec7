//! Opt-in accounting of f32 GEMM time, for benchmarks that split a step into "GEMM" and "the
//! rest". Instrumentation only: it never changes what a product computes.
//!
//! Off by default, when each product pays one relaxed atomic load. Once [`enable`]d, the f32
//! entry point ([`super::sgemm_with`]) records its calls, their
//! flops (`2 m n k` per product) and the wall time during which at least one product is running:
//! the union of the calls' intervals, so products running at once on several threads (attention
//! heads in parallel) count once and the figure compares directly with a step's wall time.
//! [`take`] reads the totals and resets them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

static ENABLED: AtomicBool = AtomicBool::new(false);
static STATE: Mutex<State> =
    Mutex::new(State { active: 0, since: None, totals: GemmTotals { nanos: 0, calls: 0, flops: 0 } });

struct State {
    /// Products running now.
    active: usize,
    /// When `active` last went from 0 to 1.
    since: Option<Instant>,
    totals: GemmTotals,
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
    std::mem::take(&mut state().totals)
}

/// One call's interval: opened on entry, closed when dropped.
pub(super) struct Span(bool);

impl Span {
    #[inline]
    pub(super) fn enter(flops: usize) -> Span {
        if !ENABLED.load(Ordering::Relaxed) {
            return Span(false);
        }
        let mut s = state();
        if s.active == 0 {
            s.since = Some(Instant::now());
        }
        s.active += 1;
        s.totals.calls += 1;
        s.totals.flops += flops as u64;
        Span(true)
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        if !self.0 {
            return;
        }
        let mut s = state();
        s.active -= 1;
        if s.active == 0 {
            if let Some(t0) = s.since.take() {
                s.totals.nanos += t0.elapsed().as_nanos() as u64;
            }
        }
    }
}
