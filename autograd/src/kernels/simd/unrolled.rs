//! [`Unrolled`]: `K` vectors of an ISA as one wider [`Simd`] vector.
//!
//! A long chain of dependent operations per vector (GELU's `erfc`: a division, a degree-9
//! polynomial and two `exp`s) can run at the chain's latency rather than at the core's
//! throughput, when the out-of-order scheduler holds too few of the loop's iterations to overlap
//! them. Written over `Unrolled<S, K>`, each step of the math is issued for `K` independent
//! vectors one after another, so the chains interleave in the instruction stream itself. The
//! math is unchanged lane for lane: the results are bit for bit those of `S`. (GELU forward on
//! Zen 3: up to about 12% faster at `K = 4`; see BENCHMARKS.md.)

use std::marker::PhantomData;

use super::Simd;

/// `K` vectors of `S`, operated on together.
#[derive(Clone, Copy)]
pub(crate) struct Unrolled<S, const K: usize>(PhantomData<S>);

/// `[f(0), .., f(K - 1)]`. Not `std::array::from_fn`: that one is only `#[inline]`, and where
/// the compiler outlines it, the intrinsics inside the closure land in a function without the
/// ISA's target features and become calls (measured: GELU's epilogue 24% slower on AVX-512).
#[inline(always)]
fn each<V: Copy, const K: usize>(mut f: impl FnMut(usize) -> V) -> [V; K] {
    const { assert!(K > 0, "Unrolled needs at least one vector") };
    let mut out = [f(0); K];
    for (i, o) in out.iter_mut().enumerate().skip(1) {
        *o = f(i);
    }
    out
}

impl<S: Simd, const K: usize> Simd for Unrolled<S, K> {
    type V = [S::V; K];
    const LANES: usize = K * S::LANES;

    #[inline(always)]
    unsafe fn zero() -> Self::V {
        [S::zero(); K]
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self::V {
        [S::splat(x); K]
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self::V {
        each(|i| S::load(p.add(i * S::LANES)))
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self::V) {
        for (i, v) in v.into_iter().enumerate() {
            S::store(p.add(i * S::LANES), v)
        }
    }
    /// The first `n` floats: whole vectors, then one partial vector, then zeros.
    #[inline(always)]
    unsafe fn load_partial(p: *const f32, n: usize) -> Self::V {
        each(|i| {
            let start = i * S::LANES;
            match n.saturating_sub(start) {
                0 => S::zero(),
                m if m >= S::LANES => S::load(p.add(start)),
                m => S::load_partial(p.add(start), m),
            }
        })
    }
    #[inline(always)]
    unsafe fn store_partial(p: *mut f32, n: usize, v: Self::V) {
        for (i, v) in v.into_iter().enumerate() {
            let start = i * S::LANES;
            match n.saturating_sub(start) {
                0 => {}
                m if m >= S::LANES => S::store(p.add(start), v),
                m => S::store_partial(p.add(start), m, v),
            }
        }
    }
    #[inline(always)]
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V {
        each(|i| S::add(a[i], b[i]))
    }
    #[inline(always)]
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V {
        each(|i| S::sub(a[i], b[i]))
    }
    #[inline(always)]
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V {
        each(|i| S::mul(a[i], b[i]))
    }
    #[inline(always)]
    unsafe fn div(a: Self::V, b: Self::V) -> Self::V {
        each(|i| S::div(a[i], b[i]))
    }
    #[inline(always)]
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        each(|i| S::fma(a[i], b[i], c[i]))
    }
    #[inline(always)]
    unsafe fn fnma(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        each(|i| S::fnma(a[i], b[i], c[i]))
    }
    #[inline(always)]
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V {
        each(|i| S::max(a[i], b[i]))
    }
    #[inline(always)]
    unsafe fn min(a: Self::V, b: Self::V) -> Self::V {
        each(|i| S::min(a[i], b[i]))
    }
    #[inline(always)]
    unsafe fn sqrt(a: Self::V) -> Self::V {
        each(|i| S::sqrt(a[i]))
    }
    #[inline(always)]
    unsafe fn abs(a: Self::V) -> Self::V {
        each(|i| S::abs(a[i]))
    }
    #[inline(always)]
    unsafe fn round(a: Self::V) -> Self::V {
        each(|i| S::round(a[i]))
    }
    #[inline(always)]
    unsafe fn pow2i(n: Self::V) -> Self::V {
        each(|i| S::pow2i(n[i]))
    }
    #[inline(always)]
    unsafe fn select_neg(x: Self::V, a: Self::V, b: Self::V) -> Self::V {
        each(|i| S::select_neg(x[i], a[i], b[i]))
    }
    #[inline(always)]
    unsafe fn hsum(a: Self::V) -> f32 {
        a.into_iter().map(|v| S::hsum(v)).sum()
    }
    #[inline(always)]
    unsafe fn hmax(a: Self::V) -> f32 {
        a.into_iter().map(|v| S::hmax(v)).fold(f32::NEG_INFINITY, f32::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::rows::math::{exp, normal_cdf};
    use crate::kernels::simd::Portable;

    /// Partial loads and stores of every length touch exactly the first `n` floats, and the math
    /// on `Unrolled` gives the bits of the math on its base vector, lane for lane.
    #[test]
    fn unrolled_math_is_the_base_math_lane_for_lane() {
        type U = Unrolled<Portable, 4>;
        let lanes = <Portable as Simd>::LANES;
        let x: Vec<f32> = (0..U::LANES).map(|i| i as f32 * 0.37 - 5.0).collect();
        for n in 0..=U::LANES {
            let mut out = vec![-1.0f32; U::LANES + 1];
            // SAFETY: x and out hold at least LANES floats; partial accesses touch the first n.
            unsafe {
                let v = if n == U::LANES { U::load(x.as_ptr()) } else { U::load_partial(x.as_ptr(), n) };
                let y = U::add(exp::<U>(v), normal_cdf::<U>(v));
                if n == U::LANES {
                    U::store(out.as_mut_ptr(), y)
                } else {
                    U::store_partial(out.as_mut_ptr(), n, y)
                }
                for (i, &got) in out.iter().enumerate() {
                    if i >= n {
                        assert_eq!(got, -1.0, "n = {n}: element {i} past the end was written");
                        continue;
                    }
                    let mut one = [0.0f32; 16];
                    let base = Portable::load_partial(x.as_ptr().add(i / lanes * lanes), lanes);
                    Portable::store(
                        one.as_mut_ptr(),
                        Portable::add(exp::<Portable>(base), normal_cdf::<Portable>(base)),
                    );
                    assert_eq!(got.to_bits(), one[i % lanes].to_bits(), "n = {n}: lane {i}");
                }
            }
        }
    }
}
