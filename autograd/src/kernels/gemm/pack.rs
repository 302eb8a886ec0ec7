//! Packing: copying blocks of A and B into the contiguous, aligned layouts the microkernel reads.
//!
//! * B block (`kc x nc`) -> panels of `NR` columns; panel `p` holds `B[k, p*NR + jj]` at
//!   `p*kc*NR + k*NR + jj`, zero-padded past `nc`. Row-major B (`csb == 1`) is a row copy; a
//!   transposed B (`rsb == 1`, e.g. `W^T` of a PyTorch-layout weight) is a blocked transpose.
//! * A micro-panel (`MR x kc`), in one of two layouts chosen from A's strides so that
//!   packing is a copy whenever A is row- or column-major:
//!   - rows (`csa == 1`): `A[i, k]` at `i*KCP + k`;
//!   - k-major (otherwise): `A[i, k]` at `k*MR + i`.
//!
//!   An ISA whose kernel reads A by vector lanes (NEON) takes the k-major layout always, and a
//!   row-major A is then transposed while packing.
//!
//!   A whole block of micro-panels (`MC x kc`, sized for L2) is packed at once, reading A in its
//!   own contiguous direction so the hardware prefetchers see long streams.
//!
//!   Rows `mr..MR` are zero, so the kernel may compute them and the store drops them.

use crate::kernels::simd::Simd;

/// Copies `n` floats from `src` to `dst` with vector loads and stores.
#[inline(always)]
pub(super) unsafe fn copy<S: Simd>(src: *const f32, dst: *mut f32, n: usize) {
    let mut i = 0;
    while i + S::LANES <= n {
        S::store(dst.add(i), S::load(src.add(i)));
        i += S::LANES;
    }
    if i < n {
        S::store_partial(dst.add(i), n - i, S::load_partial(src.add(i), n - i));
    }
}

/// Writes `n` zeros at `dst`.
#[inline(always)]
pub(super) unsafe fn zero<S: Simd>(dst: *mut f32, n: usize) {
    let z = S::zero();
    let mut i = 0;
    while i + S::LANES <= n {
        S::store(dst.add(i), z);
        i += S::LANES;
    }
    if i < n {
        S::store_partial(dst.add(i), n - i, z);
    }
}

/// Packs `B[0..kc, 0..nc]` (strides `rsb`, `csb`) into `NR`-wide panels at `dst`. A last
/// panel of at most `dot_edge` columns is packed column-major instead (`j * kc + k`), for the
/// dot-product edge kernel.
#[inline(always)]
#[allow(non_snake_case)]
pub(super) unsafe fn pack_b<S: Simd>(
    NR: usize,
    (kc, nc): (usize, usize),
    (b, rsb, csb): (*const f32, isize, isize),
    dst: *mut f32,
    dot_edge: usize,
) {
    let panels = nc.div_ceil(NR);
    for p in 0..panels {
        let j0 = p * NR;
        let w = NR.min(nc - j0);
        let d = dst.add(p * kc * NR);
        if w <= dot_edge {
            for jj in 0..w {
                let s = b.offset((j0 + jj) as isize * csb);
                if rsb == 1 {
                    copy::<S>(s, d.add(jj * kc), kc);
                } else {
                    for k in 0..kc {
                        *d.add(jj * kc + k) = *s.offset(k as isize * rsb);
                    }
                }
            }
        } else if csb == 1 {
            for k in 0..kc {
                let s = b.offset(k as isize * rsb).add(j0);
                if w == NR {
                    let mut v = 0;
                    while v < NR {
                        S::store(d.add(k * NR + v), S::load(s.add(v)));
                        v += S::LANES;
                    }
                } else {
                    copy::<S>(s, d.add(k * NR), w);
                    zero::<S>(d.add(k * NR + w), NR - w);
                }
            }
        } else if rsb == 1 {
            // Column j of B is contiguous in k: transpose LANES x LANES tiles in registers, and
            // the ragged edges element by element.
            let l = S::LANES;
            let (wf, kf) = (w / l * l, kc / l * l);
            for jj in (0..wf).step_by(l) {
                let s = b.offset((j0 + jj) as isize * csb);
                for k in (0..kf).step_by(l) {
                    S::transpose(s.add(k), csb, d.add(k * NR + jj), NR);
                }
                for k in kf..kc {
                    for c in 0..l {
                        *d.add(k * NR + jj + c) = *s.offset(c as isize * csb + k as isize);
                    }
                }
            }
            for jj in wf..w {
                let s = b.offset((j0 + jj) as isize * csb);
                for k in 0..kc {
                    *d.add(k * NR + jj) = *s.add(k);
                }
            }
            if w < NR {
                for k in 0..kc {
                    zero::<S>(d.add(k * NR + w), NR - w);
                }
            }
        } else {
            for k in 0..kc {
                for jj in 0..w {
                    *d.add(k * NR + jj) = *b.offset(k as isize * rsb + (j0 + jj) as isize * csb);
                }
                if w < NR {
                    zero::<S>(d.add(k * NR + w), NR - w);
                }
            }
        }
    }
}

/// Packs the `mc x kc` block of a row-contiguous A (`csa == 1`) into rows-layout micro-panels
/// of `mr` rows (`mr * KCP` floats each, the last one zero-padded).
#[inline(always)]
#[allow(non_snake_case)]
pub(super) unsafe fn pack_a_rows<S: Simd>(
    KCP: usize,
    (mc, mr, kc): (usize, usize, usize),
    (a, rsa): (*const f32, isize),
    dst: *mut f32,
) {
    for i in 0..mc {
        copy::<S>(a.offset(i as isize * rsa), dst.add(i / mr * mr * KCP + i % mr * KCP), kc);
    }
    for i in mc..mc.next_multiple_of(mr) {
        zero::<S>(dst.add(i / mr * mr * KCP + i % mr * KCP), kc);
    }
}

/// Packs the `mc x kc` block of A (any strides) into k-major micro-panels of `mr` rows, each
/// `panel` floats apart (`kc * mr` used, the last panel zero-padded), `panel` at least
/// `kc * mr + LANES`.
/// * A column-contiguous A (`rsa == 1`) is read one contiguous run of `mc` floats per depth.
/// * A row-contiguous A (`csa == 1`, only for ISAs that always pack k-major) is transposed in
///   `LANES x LANES` tiles in registers, the ragged rows and depths element by element.
#[inline(always)]
pub(super) unsafe fn pack_a_kmajor<S: Simd>(
    panel: usize,
    (mc, mr, kc): (usize, usize, usize),
    (a, rsa, csa): (*const f32, isize, isize),
    dst: *mut f32,
) {
    let panels = mc.div_ceil(mr);
    let l = S::LANES;
    if rsa == 1 {
        for k in 0..kc {
            let src = a.offset(k as isize * csa);
            for p in 0..panels {
                let rows = mr.min(mc - p * mr);
                let d = dst.add(p * panel + k * mr);
                if mr < l {
                    // A full-width store: the lanes past `mr` (zeros) spill into the next
                    // depth's slot, rewritten right after, or past the panel's end, into its
                    // padding.
                    S::store(d, S::load_partial(src.add(p * mr), rows));
                } else {
                    copy::<S>(src.add(p * mr), d, rows);
                    zero::<S>(d.add(rows), mr - rows);
                }
            }
        }
    } else if csa == 1 {
        let kf = kc / l * l;
        for p in 0..panels {
            let rows = mr.min(mc - p * mr);
            let (src, d) = (a.offset((p * mr) as isize * rsa), dst.add(p * panel));
            let rf = rows / l * l;
            for i in (0..rf).step_by(l) {
                let s = src.offset(i as isize * rsa);
                for k in (0..kf).step_by(l) {
                    S::transpose(s.add(k), rsa, d.add(k * mr + i), mr);
                }
                for k in kf..kc {
                    for r in 0..l {
                        *d.add(k * mr + i + r) = *s.offset(r as isize * rsa + k as isize);
                    }
                }
            }
            for k in 0..kc {
                for i in rf..mr {
                    *d.add(k * mr + i) = if i < rows { *src.offset(i as isize * rsa + k as isize) } else { 0.0 };
                }
            }
        }
    } else {
        for p in 0..panels {
            let rows = mr.min(mc - p * mr);
            let d = dst.add(p * panel);
            for k in 0..kc {
                for i in 0..mr {
                    *d.add(k * mr + i) =
                        if i < rows { *a.offset((p * mr + i) as isize * rsa + k as isize * csa) } else { 0.0 };
                }
            }
        }
    }
}
