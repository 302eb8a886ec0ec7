//! How a call is spread over threads: one product cut into tasks ([`product`], the grid chosen
//! by [`super::split::plan`]), or a batch of small products run one per thread ([`batch`]).
//!
//! Thread counts come from rayon (`rayon::current_num_threads()`), so `RAYON_NUM_THREADS` or an
//! enclosing `ThreadPool::install` sets them.

use rayon::prelude::*;

use super::buffers::{give_partial, take_partial, with_buffers};
use super::dispatch::{self, GemmArch};
use super::mr::choose_mr;
use super::split::{plan, Split, MIN_TASK_FLOPS};
use super::{Gemm, Operand};
use crate::kernels::parallel::for_row_blocks;
use crate::kernels::send_ptr::SendPtr;
use crate::kernels::Isa;

/// One product on up to `threads` threads. With a K split, the partial products of K slices
/// `1..` go to row-major `m x n` buffers and are added into C at the end, where the epilogue
/// then runs on each finished row.
///
/// # Safety
/// `g` (and `next`) must describe valid operands; the CPU must support `G`'s ISA.
pub(super) unsafe fn product<G: GemmArch>(g: &Gemm, threads: usize, next: Option<&Gemm>) {
    let split = if threads > 1 { plan::<G>(g, threads) } else { Split::ONE };
    if split.tasks() == 1 {
        with_buffers(|bufs| G::block(g, bufs, next));
        return;
    }
    let (m, n) = (g.m, g.n);
    let mr = choose_mr::<G>(m);
    let (mp, np) = (m.div_ceil(mr), n.div_ceil(G::NR));
    let mut partial = take_partial((split.tk - 1) * m * n);
    let partial_ptr = SendPtr::new(partial.as_mut_ptr());
    let range = |parts: usize, units: usize, unit: usize, total: usize, i: usize| {
        ((units * i / parts * unit).min(total), (units * (i + 1) / parts * unit).min(total))
    };
    (0..split.tasks()).into_par_iter().for_each(|t| {
        let (im, rest) = (t % split.tm, t / split.tm);
        let (jn, pk) = (rest % split.tn, rest / split.tn);
        let (r0, r1) = range(split.tm, mp, mr, m, im);
        let (c0, c1) = range(split.tn, np, G::NR, n, jn);
        let (k0, k1) = range(split.tk, g.k, 1, g.k, pk);
        if r0 == r1 || c0 == c1 || k0 == k1 {
            return;
        }
        // K slice 0 writes C itself (with beta); the others their own partial buffers.
        let (c, beta) = if pk == 0 {
            (Operand { p: SendPtr::new(g.c.at(r0, c0)), ..g.c }, g.beta)
        } else {
            let p = partial_ptr.at((pk - 1) * m * n + r0 * n + c0);
            (Operand { p: SendPtr::new(p), rs: n as isize, cs: 1 }, 0.0)
        };
        let sub = Gemm {
            // With a K split no slice sees its final C: the epilogue runs after the sum below.
            epilogue: if split.tk > 1 { None } else { g.epilogue },
            origin: (g.origin.0 + r0, g.origin.1 + c0),
            m: r1 - r0,
            n: c1 - c0,
            k: k1 - k0,
            a: Operand { p: SendPtr::new(g.a.at(r0, k0)), ..g.a },
            b: Operand { p: SendPtr::new(g.b.at(k0, c0)), ..g.b },
            c,
            beta,
            ..*g
        };
        // SAFETY: tasks write disjoint (row, column) ranges of C or of their own partial
        // buffer, and only read A and B.
        with_buffers(|bufs| unsafe { G::block(&sub, bufs, None) });
    });
    if split.tk > 1 {
        let parts = &partial;
        // SAFETY: each block of rows of C is updated by one task.
        for_row_blocks(m, n * (split.tk - 1), 1, |rows| unsafe {
            for i in rows {
                for p in 0..split.tk - 1 {
                    let src = &parts[p * m * n + i * n..p * m * n + (i + 1) * n];
                    for (j, &x) in src.iter().enumerate() {
                        *g.c.at(i, j) += x;
                    }
                }
                g.finish_rows(i..i + 1);
            }
        });
    }
    give_partial(partial);
}

/// `batch` products of one shape, product `p` at the operand offsets `p * strides`. Parallel
/// over the batch when each product is small (attention's `B*H` products of `N x Dh x N`):
/// each product on one thread, the next product's first blocks prefetched during the last
/// ones; otherwise one threaded product after another.
///
/// # Safety
/// Every product's operands must be valid, and the C's of distinct products disjoint.
pub(super) unsafe fn batch(isa: Isa, batch: usize, g: &Gemm, strides: (isize, isize, isize)) {
    // Product `p`, telling it about `p + 1` when the same thread runs that next.
    let one = |p: usize, last: usize, threads: usize| {
        let gp = g.nth(p, strides);
        let next = (p + 1 < last).then(|| g.nth(p + 1, strides));
        // SAFETY: the caller vouches for every product's operands.
        unsafe { dispatch::product(isa, &gp, threads, next.as_ref()) };
    };
    let threads = rayon::current_num_threads();
    let flops = 2 * g.m * g.n * g.k.max(1);
    if threads > 1 && batch > 1 && flops < MIN_TASK_FLOPS * threads {
        // Enough products per task to amortise the fork.
        let per_task = (MIN_TASK_FLOPS / 4 / flops).clamp(1, batch.div_ceil(threads));
        (0..batch.div_ceil(per_task)).into_par_iter().for_each(|ch| {
            let last = ((ch + 1) * per_task).min(batch);
            for p in ch * per_task..last {
                one(p, last, 1);
            }
        });
    } else {
        for p in 0..batch {
            one(p, batch, threads);
        }
    }
}
