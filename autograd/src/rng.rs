//! A small, seedable, serialisable random number generator.
//!
//! Training must resume bit-exactly from a checkpoint, so the RNG's whole state has to be
//! readable and restorable: xoshiro256++ is four `u64`s, fast, and statistically sound for
//! initialisation, dropout masks and augmentation. It implements `rand::RngCore`, so every
//! `rand_distr` distribution works with it.

use rand::{RngCore, SeedableRng};

/// xoshiro256++ (Blackman & Vigna), seeded through SplitMix64.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator whose whole stream is determined by `seed`.
    pub fn seed(seed: u64) -> Self {
        let mut sm = seed;
        let mut next = || {
            sm = sm.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = sm;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng { s: [next(), next(), next(), next()] }
    }

    /// The full state, to store in a checkpoint.
    pub fn state(&self) -> [u64; 4] {
        self.s
    }

    /// Restores a state read from [`Rng::state`]. An all-zero state is the one fixed point of
    /// xoshiro and is replaced by a seeded one.
    pub fn from_state(s: [u64; 4]) -> Self {
        if s == [0; 4] {
            return Rng::seed(0);
        }
        Rng { s }
    }

    /// An independent generator derived from this one's stream (for per-worker streams).
    pub fn fork(&mut self) -> Rng {
        Rng::seed(self.next_u64())
    }

    /// A uniform sample in `[0, 1)` with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform integer in `0..n` (`n > 0`), by Lemire's multiply-shift.
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "Rng::below(0)");
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
}

impl RngCore for Rng {
    #[inline]
    fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    #[inline]
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

impl SeedableRng for Rng {
    type Seed = [u8; 32];
    fn from_seed(seed: [u8; 32]) -> Self {
        let mut s = [0u64; 4];
        for (i, w) in s.iter_mut().enumerate() {
            *w = u64::from_le_bytes(seed[i * 8..i * 8 + 8].try_into().unwrap());
        }
        Rng::from_state(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trip_continues_the_stream() {
        let mut a = Rng::seed(7);
        a.next_u64();
        let mut b = Rng::from_state(a.state());
        for _ in 0..10 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    #[test]
    fn uniform_and_below_stay_in_range_and_spread() {
        let mut r = Rng::seed(1);
        let mut counts = [0usize; 5];
        for _ in 0..5000 {
            let u = r.uniform();
            assert!((0.0..1.0).contains(&u));
            counts[r.below(5)] += 1;
        }
        for c in counts {
            assert!((850..1150).contains(&c), "{counts:?}");
        }
    }
}
