//! The MR chooser: how tall the microkernel's tile is for a product of `m` rows.

use std::sync::atomic::{AtomicU64, Ordering};

use super::dispatch::GemmArch;

/// Picks `MR` for `m` rows: fewest wasted rows, counting that fewer than 4 rows cannot hide the
/// FMA latency and that every row panel costs a little extra (it re-reads the B panels). So 65
/// rows run as 5 x 13 and 192 as 16 x 12 on AVX-512.
pub(crate) fn choose_mr<G: GemmArch>(m: usize) -> usize {
    // The search divides 14 times; remember the last answer (products come in runs of one
    // shape), keyed by `m` and `MR_MAX`: `m << 16 | MR_MAX << 8 | MR`.
    static LAST: AtomicU64 = AtomicU64::new(0);
    let key = (m as u64) << 16 | (G::MR_MAX as u64) << 8;
    let last = LAST.load(Ordering::Relaxed);
    if last & !0xff == key && m < 1 << 40 {
        return (last & 0xff) as usize;
    }
    let mr = (1..=G::MR_MAX)
        .min_by_key(|&mr| {
            let panels = m.div_ceil(mr);
            (panels * (mr.max(4) * 4 + 4), usize::MAX - mr)
        })
        .unwrap_or(G::MR_MAX);
    LAST.store(key | mr as u64, Ordering::Relaxed);
    mr
}
