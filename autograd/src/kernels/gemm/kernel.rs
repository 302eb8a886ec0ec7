//! The register-blocked microkernel, written once over [`Simd`] and instantiated per ISA.
//!
//! One call computes an `MR x NR` tile of C (`NR = NV` vectors) from a packed A micro-panel and a
//! packed B micro-panel:
//!
//! ```text
//!     for k in 0..kc:                      b_v = B~[k, v*L .. (v+1)*L]   (NV aligned loads)
//!         for i in 0..MR:                  a   = splat(A~[i, k])         (one broadcast)
//!             acc[i][v] += a * b_v         (MR * NV independent FMAs per k)
//!     C[i, j] = alpha * acc[i, j] + beta * C[i, j]     (only i < mr, j < nr; C not read if beta == 0)
//! ```
//!
//! The accumulators stay in registers for the whole `kc` loop: `MR * NV` of them (28 of the 32
//! zmm registers for AVX-512 at 14 x 32), which also hides the FMA latency. The A micro-panel is
//! laid out either row by row (`KMAJOR = false`: `A~[i, k]` at `i * KCP + k`, a plain copy of a
//! row-major A) or column by column (`KMAJOR = true`: `A~[i, k]` at `k * MR + i`, a plain copy of a
//! column-major A, i.e. a transposed operand); both are compile-time offsets from one pointer,
//! so every broadcast folds into its FMA as a memory operand.
//!
//! The strided variant (`STRIDED = true`) reads the distances between A's rows and B's depths
//! from the tile instead (`Tile::rsa`, `Tile::rsb`), so it can run on an operand that was not
//! packed at all: the direct path of small products (see `loops.rs`), where copying a 65 x 64
//! head into panels costs a fifth of the product.

use crate::kernels::simd::Simd;

/// Everything one microkernel call needs. `a` and `b` point at packed micro-panels (or, for the
/// strided kernels, at an operand itself); `c` at the tile's top-left element of the real C,
/// with its strides.
pub(crate) struct Tile {
    pub kc: usize,
    pub a: *const f32,
    pub b: *const f32,
    /// Strided kernels only: floats from one row of a rows-layout A to the next (`KCP` when A
    /// is packed), and from one depth of B to the next (`NR` when B is packed).
    pub rsa: usize,
    pub rsb: usize,
    pub c: *mut f32,
    pub rsc: isize,
    pub csc: isize,
    /// Rows of the tile that exist in C (`<= MR`).
    pub mr: usize,
    /// Columns of the tile that exist in C (`<= NV * LANES`).
    pub nr: usize,
    pub alpha: f32,
    pub beta: f32,
    /// Lines to prefetch into L2 during the k loop, one every `kc / pf_n` steps (the next
    /// blocks' operands, see `prefetch.rs`); `pf_n` addresses at `pf`.
    pub pf: *const *const f32,
    pub pf_n: usize,
}

/// A monomorphised microkernel.
pub(crate) type KernelFn = unsafe fn(&Tile);

/// The microkernel body. `NR` is the packed B panel's row stride (the ISA's full panel width, even
/// when `NV` vectors cover fewer columns), `KCP` the row stride of a row-layout A micro-panel;
/// with `STRIDED` the two strides are the tile's `rsb` and `rsa` instead, and B is loaded
/// unaligned. With `PF` the tile's prefetch lines (`Tile::pf`) are issued spread over the k loop
/// (the ISA's `PF_IN_KERNEL`); without, the loops issue them and `pf_n` is 0.
///
/// # Safety
/// `t` must describe valid packed panels of `t.kc` steps and a C tile of `t.mr x t.nr`
/// addressable elements; the CPU must support `S`'s ISA.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
pub(crate) unsafe fn kernel<
    S: Simd,
    const MR: usize,
    const NV: usize,
    const KMAJOR: bool,
    const NR: usize,
    const KCP: usize,
    const STRIDED: bool,
    const PF: bool,
>(
    t: &Tile,
) {
    prefetch_c::<S, MR>(t);
    let (rsa, rsb) = if STRIDED { (t.rsa, t.rsb) } else { (KCP, NR) };
    let mut acc = [[S::zero(); NV]; MR];
    let mut a = t.a;
    let mut b = t.b;
    // The k loop in pieces of `every` steps, each started by one prefetch.
    let every = if PF { t.kc.checked_div(t.pf_n).unwrap_or(t.kc).max(1) } else { t.kc.max(1) };
    let mut pf = 0;
    let mut left = t.kc;
    while left > 0 {
        if PF && pf < t.pf_n {
            S::prefetch_l2(*t.pf.add(pf));
            pf += 1;
        }
        let steps = every.min(left);
        for _ in 0..steps {
            let mut bv = [S::zero(); NV];
            for v in 0..NV {
                bv[v] = if STRIDED { S::load(b.add(v * S::LANES)) } else { S::load_aligned(b.add(v * S::LANES)) };
            }
            for i in 0..MR {
                let ai = S::splat(*a.add(if KMAJOR { i } else { i * rsa }));
                for v in 0..NV {
                    acc[i][v] = S::fma(ai, bv[v], acc[i][v]);
                }
            }
            a = a.add(if KMAJOR { MR } else { 1 });
            b = b.add(rsb);
        }
        left -= steps;
    }
    while PF && pf < t.pf_n {
        S::prefetch_l2(*t.pf.add(pf));
        pf += 1;
    }
    store_tile::<S, MR, NV>(&acc, t);
}

/// Starts fetching the C tile: it is needed only after the k loop, and a row-major C is often
/// not in cache when several depth blocks pass over it.
#[inline(always)]
pub(crate) unsafe fn prefetch_c<S: Simd, const MR: usize>(t: &Tile) {
    for i in 0..MR {
        if i < t.mr {
            let row = t.c.offset(i as isize * t.rsc);
            S::prefetch(row);
            if t.csc == 1 && t.nr > 16 {
                S::prefetch(row.add(t.nr - 1));
            }
        }
    }
}

/// `C = alpha * acc + beta * C` on the tile's existing `mr x nr` elements; C is not read when
/// `beta == 0`.
///
/// Only the full-tile, unit-column-stride case touches `acc` directly, in loops with compile-time
/// trip counts and tiny bodies that unroll completely, so `acc` stays in registers through the
/// k loop (a dynamically indexed `acc` is kept in memory and costs a store per FMA). Edge tiles
/// and other C layouts first spill `acc` to a stack tile, then store from there.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
pub(crate) unsafe fn store_tile<S: Simd, const MR: usize, const NV: usize>(acc: &[[S::V; NV]; MR], t: &Tile) {
    let alpha = S::splat(t.alpha);
    if t.csc == 1 && t.mr == MR && t.nr == NV * S::LANES {
        if t.beta == 0.0 {
            for i in 0..MR {
                let row = t.c.offset(i as isize * t.rsc);
                for v in 0..NV {
                    S::store(row.add(v * S::LANES), S::mul(acc[i][v], alpha));
                }
            }
        } else {
            let beta = S::splat(t.beta);
            for i in 0..MR {
                let row = t.c.offset(i as isize * t.rsc);
                for v in 0..NV {
                    let p = row.add(v * S::LANES);
                    S::store(p, S::fma(beta, S::load(p), S::mul(acc[i][v], alpha)));
                }
            }
        }
        return;
    }
    let mut tile = [[0.0f32; 32]; MR];
    debug_assert!(NV * S::LANES <= 32);
    for i in 0..MR {
        for v in 0..NV {
            S::store(tile[i].as_mut_ptr().add(v * S::LANES), S::mul(acc[i][v], alpha));
        }
    }
    store_edge(&tile[..t.mr.min(MR)], t);
}

/// Stores a spilled `mr x nr` tile (already scaled by alpha) into C with any strides.
#[inline(never)]
unsafe fn store_edge(tile: &[[f32; 32]], t: &Tile) {
    for (i, row) in tile.iter().enumerate() {
        for (j, &x) in row.iter().enumerate().take(t.nr) {
            let p = t.c.offset(i as isize * t.rsc + j as isize * t.csc);
            *p = if t.beta == 0.0 { x } else { x + t.beta * *p };
        }
    }
}

/// The narrowest B edges (at most [`DOT_NR`] columns left over, like the 65th column of
/// attention's `Q K^T`) as dot products along k instead of `MR x LANES` outer products, which
/// would spend a whole vector per column: `C[i, j] = alpha sum_k A~[i, k] Bc[j, k] (+ beta C)`,
/// with A in the rows layout (`A~[i, k]` at `i * KCP + k`) and the edge of B packed
/// column-major (`Bc[j, k]` at `j * kc + k`). Two columns at a time: `2 MR` vector accumulators,
/// each reduced once at the end. With `STRIDED`, A's rows are `t.rsa` apart (an unpacked A).
///
/// # Safety
/// As for [`kernel`], with `t.b` pointing at a column-major edge panel of `t.nr` columns.
#[inline(always)]
pub(crate) unsafe fn dot_kernel<S: Simd, const MR: usize, const KCP: usize, const STRIDED: bool>(t: &Tile) {
    let rsa = if STRIDED { t.rsa } else { KCP };
    let mut j = 0;
    while j + 2 <= t.nr {
        dot_columns::<S, MR, true>(t, rsa, j);
        j += 2;
    }
    if j < t.nr {
        dot_columns::<S, MR, false>(t, rsa, j);
    }
}

/// Columns `j` (and `j + 1` when `TWO`) of a [`dot_kernel`] tile.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn dot_columns<S: Simd, const MR: usize, const TWO: bool>(t: &Tile, rsa: usize, j: usize) {
    let (kc, l) = (t.kc, S::LANES);
    let (b0, b1) = (t.b.add(j * kc), t.b.add((j + TWO as usize) * kc));
    let mut acc0 = [S::zero(); MR];
    let mut acc1 = [S::zero(); MR];
    let mut k = 0;
    while k + l <= kc {
        let (v0, v1) = (S::load(b0.add(k)), S::load(b1.add(k)));
        for i in 0..MR {
            let a = S::load(t.a.add(i * rsa + k));
            acc0[i] = S::fma(a, v0, acc0[i]);
            if TWO {
                acc1[i] = S::fma(a, v1, acc1[i]);
            }
        }
        k += l;
    }
    if k < kc {
        let r = kc - k;
        let (v0, v1) = (S::load_partial(b0.add(k), r), S::load_partial(b1.add(k), r));
        for i in 0..MR {
            let a = S::load_partial(t.a.add(i * rsa + k), r);
            acc0[i] = S::fma(a, v0, acc0[i]);
            if TWO {
                acc1[i] = S::fma(a, v1, acc1[i]);
            }
        }
    }
    let mut sums = [[0.0f32; 2]; MR];
    for i in 0..MR {
        sums[i][0] = S::hsum(acc0[i]);
        if TWO {
            sums[i][1] = S::hsum(acc1[i]);
        }
    }
    for (i, s) in sums.iter().enumerate().take(t.mr) {
        for (jj, &x) in s.iter().enumerate().take(1 + TWO as usize) {
            let p = t.c.offset(i as isize * t.rsc + (j + jj) as isize * t.csc);
            *p = if t.beta == 0.0 { t.alpha * x } else { t.alpha * x + t.beta * *p };
        }
    }
}

/// The widest B edge that [`dot_kernel`] takes.
pub(crate) const DOT_NR: usize = 4;

/// A `match` from `(mr, strided)` to the monomorphised dot kernel `$k::<MR, STRIDED>`.
macro_rules! dot_table {
    ($k:ident, $mr:expr, $st:expr; $($m:literal)*) => {
        match ($mr, $st) {
            $(
                ($m, false) => $k::<$m, false> as $crate::kernels::gemm::kernel::KernelFn,
                ($m, true) => $k::<$m, true> as $crate::kernels::gemm::kernel::KernelFn,
            )*
            (mr, _) => panic!("sgemm: no dot kernel for mr = {mr}"),
        }
    };
}
pub(crate) use dot_table;

/// A `match` from `(mr, nv, kmajor, strided)` to the monomorphised kernel
/// `$k::<MR, NV, KMAJOR, STRIDED>`.
macro_rules! kernel_table {
    ($k:ident, $mr:expr, $nv:expr, $km:expr, $st:expr; $($m:literal)*) => {
        match ($mr, $nv, $km, $st) {
            $(
                ($m, 1, false, false) => $k::<$m, 1, false, false> as $crate::kernels::gemm::kernel::KernelFn,
                ($m, 1, false, true) => $k::<$m, 1, false, true> as $crate::kernels::gemm::kernel::KernelFn,
                ($m, 1, true, false) => $k::<$m, 1, true, false> as $crate::kernels::gemm::kernel::KernelFn,
                ($m, 1, true, true) => $k::<$m, 1, true, true> as $crate::kernels::gemm::kernel::KernelFn,
                ($m, 2, false, false) => $k::<$m, 2, false, false> as $crate::kernels::gemm::kernel::KernelFn,
                ($m, 2, false, true) => $k::<$m, 2, false, true> as $crate::kernels::gemm::kernel::KernelFn,
                ($m, 2, true, false) => $k::<$m, 2, true, false> as $crate::kernels::gemm::kernel::KernelFn,
                ($m, 2, true, true) => $k::<$m, 2, true, true> as $crate::kernels::gemm::kernel::KernelFn,
            )*
            (mr, nv, _, _) => panic!("sgemm: no microkernel for mr = {mr}, nv = {nv}"),
        }
    };
}
pub(crate) use kernel_table;
