//! The caching device allocator: freed blocks are kept by size class and handed out again, so a
//! training step, whose buffers repeat exactly from one step to the next, allocates nothing
//! from the driver once the first step has run (the CPU's [`crate::pool`] does the same for
//! host buffers).
//!
//! `cuMemAlloc`/`cuMemFree` are slow (the free synchronises the device), so a framework that
//! calls them per tensor spends its time there; PyTorch's caching allocator exists for the same
//! reason. Sizes are rounded up to a class (512 B steps up to 1 MiB, then steps of 1/16 of the
//! next power of two, so at most ~6% is lost to rounding) and only blocks of the same class are
//! reused. When the driver reports that memory is exhausted, every cached block is returned to
//! it and the allocation retried once.

use std::collections::HashMap;
use std::sync::Mutex;

use super::driver::{DevicePtr, Driver, Result};

/// Counters of the allocator; [`MemoryStats::driver_allocations`] is what a test watches to
/// see that a steady-state step allocates nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Calls to the driver's allocation function so far.
    pub driver_allocations: u64,
    /// Blocks returned to the driver so far (only under memory pressure or on [`trim`]).
    pub driver_frees: u64,
    /// Bytes in blocks handed out and not yet given back.
    pub in_use: usize,
    /// Bytes obtained from the driver and not returned: in use plus cached.
    pub reserved: usize,
    /// The largest `in_use` seen.
    pub peak_in_use: usize,
    /// The largest `reserved` seen: the device memory the process needed.
    pub peak_reserved: usize,
}

/// The block size class of a request of `bytes`.
pub fn size_class(bytes: usize) -> usize {
    const SMALL: usize = 1 << 20;
    if bytes <= SMALL {
        return bytes.max(1).div_ceil(512) * 512;
    }
    let step = bytes.next_power_of_two() / 16;
    bytes.div_ceil(step) * step
}

#[derive(Default)]
struct State {
    free: HashMap<usize, Vec<DevicePtr>>,
    stats: MemoryStats,
}

/// See the module documentation.
#[derive(Default)]
pub struct CachingAllocator {
    state: Mutex<State>,
}

impl CachingAllocator {
    /// A block of at least `bytes` and its class (to give back with it).
    pub fn take(&self, driver: &dyn Driver, bytes: usize) -> Result<(DevicePtr, usize)> {
        let class = size_class(bytes);
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let ptr = match s.free.get_mut(&class).and_then(Vec::pop) {
            Some(p) => p,
            None => {
                let p = match driver.malloc(class) {
                    Ok(p) => p,
                    Err(_) => {
                        // Memory is exhausted, perhaps only by blocks cached for other sizes:
                        // return them all and try once more.
                        Self::release(&mut s, driver);
                        driver.malloc(class)?
                    }
                };
                s.stats.driver_allocations += 1;
                s.stats.reserved += class;
                s.stats.peak_reserved = s.stats.peak_reserved.max(s.stats.reserved);
                p
            }
        };
        s.stats.in_use += class;
        s.stats.peak_in_use = s.stats.peak_in_use.max(s.stats.in_use);
        Ok((ptr, class))
    }

    /// Gives a block back for reuse.
    pub fn give(&self, ptr: DevicePtr, class: usize) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.stats.in_use -= class;
        s.free.entry(class).or_default().push(ptr);
    }

    fn release(s: &mut State, driver: &dyn Driver) {
        for (class, ptrs) in s.free.drain() {
            for p in ptrs {
                // SAFETY: cached blocks are not in use; the driver waits for queued work.
                unsafe { driver.free(p) };
                s.stats.driver_frees += 1;
                s.stats.reserved -= class;
            }
        }
    }

    /// Returns every cached block to the driver.
    pub fn trim(&self, driver: &dyn Driver) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Self::release(&mut s, driver);
    }

    /// A snapshot of the counters: bytes in use and reserved, their peaks, and driver calls.
    pub fn stats(&self) -> MemoryStats {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).stats
    }

    /// Starts the peak counters again from the current figures (a benchmark measures one phase).
    pub fn reset_peaks(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.stats.peak_in_use = s.stats.in_use;
        s.stats.peak_reserved = s.stats.reserved;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_round_up_by_little() {
        assert_eq!(size_class(0), 512);
        assert_eq!(size_class(1), 512);
        assert_eq!(size_class(513), 1024);
        assert_eq!(size_class(1 << 20), 1 << 20);
        let b = (1 << 20) + 1;
        let c = size_class(b);
        assert!(c >= b && c - b <= (2 << 20) / 16, "{b} -> {c}");
        for bytes in [3_000_000usize, 25_165_824, 100_000_007] {
            let c = size_class(bytes);
            assert!(c >= bytes && (c - bytes) as f64 <= 0.0625 * bytes as f64 + 1.0, "{bytes} -> {c}");
            assert_eq!(size_class(c), c, "a class is its own class");
        }
    }
}
