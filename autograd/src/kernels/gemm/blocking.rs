//! The cache blocking of a product: how deep a depth block is and how many bytes the packed B and
//! A blocks may take, derived at run time from the running core's cache sizes ([`CacheSizes`]),
//! by one rule for every ISA.
//!
//! The loops (`loops.rs`) keep one A micro-panel (`MR x kc`) in L1 while the B micro-panels of
//! the packed B block stream past it from L2, and reuse that B block for every A block of the
//! product. So:
//!
//! * `kc`: the A micro-panel takes at most half of L1 (the other half holds the B panels in
//!   flight and the C tile), and at most the ISA's `KC_MAX`: a longer k loop amortises the C
//!   tile's loads and stores no further, and `KC_MAX` sizes the row stride of a rows-layout A
//!   panel. On every current core L1 is large enough that `KC_MAX` decides (256 for AVX2's
//!   6-row panels, 384 for AVX-512's 14 rows, 512 for NEON's 8); the L1 rule matters on small
//!   cores.
//! * The packed B block takes half of L2 and the A block a quarter, so both stay there with room
//!   for C and the operands being packed (within 16 KiB..2 MiB and 8 KiB..1 MiB: past that, a
//!   big shared L2 no longer delivers one core's share at L2 speed). A Zen 3 core (512 KiB L2)
//!   gets 256 + 128 KiB, a Zen 4/5 core (1 MiB) 512 + 256 KiB.
//!
//! When the OS reports nothing, the platform's typical sizes stand in ([`defaults`]).

use crate::kernels::caches::CacheSizes;

/// The cache blocking of one ISA on one machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CacheBlocking {
    /// The largest depth block.
    pub(crate) kc: usize,
    /// Budget for one packed B block (`kc x nc` floats), sized for L2.
    pub(crate) b_block_bytes: usize,
    /// Budget for one packed A block (whole micro-panels), sized for L2 next to the B block.
    pub(crate) a_block_bytes: usize,
}

/// What a core of this platform typically has, for caches the OS does not report: Apple
/// M-series performance cores (128 KiB L1D, a quarter of a 12 MiB cluster L2), other aarch64
/// (Neoverse N1/V1: 64 KiB, 1 MiB), x86-64 (32 KiB, 512 KiB: Zen 2/3 and older Intel cores;
/// newer ones have more, which only costs them a little speed).
pub(crate) fn defaults() -> CacheSizes {
    if cfg!(all(target_arch = "aarch64", target_os = "macos")) {
        CacheSizes { l1d: Some(128 << 10), l2: Some(3 << 20) }
    } else if cfg!(target_arch = "aarch64") {
        CacheSizes { l1d: Some(64 << 10), l2: Some(1 << 20) }
    } else {
        CacheSizes { l1d: Some(32 << 10), l2: Some(512 << 10) }
    }
}

impl CacheBlocking {
    /// The blocking for a kernel of `mr`-row A micro-panels and depth blocks of at most `kc_max`
    /// on a core with these caches (see the module docs for the rule).
    pub(crate) fn for_caches(caches: CacheSizes, mr: usize, kc_max: usize) -> CacheBlocking {
        let d = defaults();
        let l1d = caches.l1d.or(d.l1d).unwrap_or(32 << 10);
        let l2 = caches.l2.or(d.l2).unwrap_or(512 << 10);
        let kc = (l1d / 2 / (4 * mr) / 16 * 16).clamp(32, kc_max.max(32));
        CacheBlocking {
            kc,
            b_block_bytes: (l2 / 2).clamp(16 << 10, 2 << 20),
            a_block_bytes: (l2 / 4).clamp(8 << 10, 1 << 20),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caches(l1d: usize, l2: usize) -> CacheSizes {
        CacheSizes { l1d: Some(l1d), l2: Some(l2) }
    }

    #[test]
    fn blocking_from_reported_caches() {
        // AVX2 (6-row panels, KC_MAX 256) on Zen 3: 32 KiB L1D, 512 KiB L2.
        let zen3 = CacheBlocking::for_caches(caches(32 << 10, 512 << 10), 6, 256);
        assert_eq!(zen3, CacheBlocking { kc: 256, b_block_bytes: 256 << 10, a_block_bytes: 128 << 10 });
        // AVX-512 (14 rows, KC_MAX 384) on Zen 5: 48 KiB L1D, 1 MiB L2: the constants it was tuned with.
        let zen5 = CacheBlocking::for_caches(caches(48 << 10, 1 << 20), 14, 384);
        assert_eq!(zen5, CacheBlocking { kc: 384, b_block_bytes: 512 << 10, a_block_bytes: 256 << 10 });
        // NEON (8 rows, KC_MAX 512) on an Apple M1 performance core: a quarter of 12 MiB.
        let m1 = CacheBlocking::for_caches(caches(128 << 10, 3 << 20), 8, 512);
        assert_eq!(m1, CacheBlocking { kc: 512, b_block_bytes: 3 << 19, a_block_bytes: 3 << 18 });
        // A small core: L1 limits kc, L2 the blocks; a huge report is clamped.
        let small = CacheBlocking::for_caches(caches(16 << 10, 128 << 10), 14, 384);
        assert_eq!(small, CacheBlocking { kc: 144, b_block_bytes: 64 << 10, a_block_bytes: 32 << 10 });
        let tiny = CacheBlocking::for_caches(caches(1 << 10, 8 << 10), 6, 256);
        assert_eq!(tiny, CacheBlocking { kc: 32, b_block_bytes: 16 << 10, a_block_bytes: 8 << 10 });
        let huge = CacheBlocking::for_caches(caches(1 << 20, 64 << 20), 6, 256);
        assert_eq!(huge, CacheBlocking { kc: 256, b_block_bytes: 2 << 20, a_block_bytes: 1 << 20 });
    }

    #[test]
    fn unreported_caches_take_the_platform_defaults() {
        let none = CacheBlocking::for_caches(CacheSizes { l1d: None, l2: None }, 6, 256);
        assert_eq!(none, CacheBlocking::for_caches(defaults(), 6, 256));
        assert!(none.kc >= 32 && none.b_block_bytes >= 16 << 10 && none.a_block_bytes >= 8 << 10);
        // One size reported, the other defaulted.
        let l2_only = CacheBlocking::for_caches(CacheSizes { l1d: None, l2: Some(2 << 20) }, 6, 256);
        assert_eq!(l2_only.b_block_bytes, 1 << 20);
    }
}
