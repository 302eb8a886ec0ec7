//! [`GradReducer`]: gradients summed across ranks in buckets, while backward goes on.
//!
//! Backward finishes the parameters' gradients in about the reverse of their creation order
//! (the head's first, the patch embedding's last; see `Graph::backward_hooked`). The reducer
//! groups the parameters, in that order, into buckets of about [`BUCKET_BYTES`]. As a gradient
//! becomes final it is copied into its bucket; a bucket whose gradients are all in is handed to
//! the engine's thread to be summed across ranks at once, so the all-reduce of the last layers
//! runs during the backward of the first ones (PyTorch DDP's design). Buckets are launched
//! strictly in their order, so every rank issues the same all-reduces in the same order
//! whatever the order its gradients arrive in.
//!
//! The sum is elementwise, so bucketing changes no value: with two ranks each element is
//! `a + b` on both (IEEE addition commutes), bit for bit what one process accumulating the two
//! shards computes.

use std::time::{Duration, Instant};

use autograd::Tensor;

use super::comm::{Comm, Pending};
use crate::error::Result;

/// The size a bucket grows to before a new one starts. Small enough that ViT-Ti/4's 22 MB of
/// gradients make several buckets (some overlap), large enough that each all-reduce moves
/// megabytes rather than paying the latency per layer.
pub const BUCKET_BYTES: usize = 4 << 20;

/// Time spent on communication in one step.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReduceStats {
    /// Time the engine spent in the step's all-reduces.
    pub all_reduce: Duration,
    /// Time the training thread waited for them after its backward was done: the part of the
    /// all-reduce that backward did not hide.
    pub exposed: Duration,
    /// Bytes each rank contributed.
    pub bytes: usize,
}

struct Bucket {
    /// Parameter indices (store order), in the order they are packed.
    params: Vec<usize>,
    len: usize,
    /// The packed gradients; `None` while the bucket is with the engine.
    buf: Option<Vec<f32>>,
    missing: usize,
    pending: Option<Pending<(Vec<f32>, Duration)>>,
}

/// Sums gradients across the ranks of a [`Comm`], bucket by bucket (see the module docs).
pub struct GradReducer {
    buckets: Vec<Bucket>,
    /// For each parameter: its bucket and offset in it.
    slot: Vec<(usize, usize)>,
    /// The gradients handed over this step (kept to receive the sums: no allocation per step).
    grads: Vec<Option<Tensor<f32>>>,
    shapes: Vec<Vec<usize>>,
    /// The next bucket to launch.
    next: usize,
    overlap: bool,
    started: Option<Instant>,
}

impl GradReducer {
    /// A reducer for parameters of these shapes (store order). Without `overlap`, buckets are
    /// launched only once backward is done (to measure what the overlap hides).
    pub fn new(shapes: Vec<Vec<usize>>, overlap: bool) -> Self {
        let cap = BUCKET_BYTES / std::mem::size_of::<f32>();
        let mut buckets: Vec<Bucket> = Vec::new();
        let mut slot = vec![(0, 0); shapes.len()];
        // Reverse store order: about the order backward finishes them.
        for i in (0..shapes.len()).rev() {
            let n: usize = shapes[i].iter().product();
            let last = buckets.len().wrapping_sub(1);
            match buckets.last_mut() {
                Some(b) if b.len + n <= cap || b.len == 0 => {
                    slot[i] = (last, b.len);
                    b.params.push(i);
                    b.len += n;
                }
                _ => {
                    slot[i] = (buckets.len(), 0);
                    buckets.push(Bucket { params: vec![i], len: n, buf: None, missing: 0, pending: None });
                }
            }
        }
        for b in &mut buckets {
            b.buf = Some(vec![0.0; b.len]);
        }
        let grads = (0..shapes.len()).map(|_| None).collect();
        GradReducer { buckets, slot, grads, shapes, next: 0, overlap, started: None }
    }

    /// The number of buckets.
    pub fn buckets(&self) -> usize {
        self.buckets.len()
    }

    /// Gradient bytes each rank sends per step.
    pub fn bytes(&self) -> usize {
        self.buckets.iter().map(|b| b.len).sum::<usize>() * std::mem::size_of::<f32>()
    }

    /// Readies the buckets for a step.
    pub fn begin(&mut self) {
        for b in &mut self.buckets {
            b.missing = b.params.len();
            debug_assert!(b.pending.is_none() && b.buf.is_some());
        }
        self.next = 0;
        self.started = None;
    }

    /// Parameter `i`'s final local gradient (to which `earlier`, the sum of this step's earlier
    /// micro-batches, is added first). Launches every bucket that is now complete and next in
    /// line.
    pub fn ready(&mut self, comm: &Comm, i: usize, mut grad: Tensor<f32>, earlier: Option<Tensor<f32>>) {
        if let Some(e) = earlier {
            let mut e = e;
            e.add_assign(&grad);
            grad = e;
        }
        let (b, offset) = self.slot[i];
        let bucket = &mut self.buckets[b];
        let buf = bucket.buf.as_mut().expect("a bucket is filled before it is launched");
        buf[offset..offset + grad.numel()].copy_from_slice(grad.data());
        bucket.missing -= 1;
        self.grads[i] = Some(grad);
        if self.overlap {
            self.launch_complete(comm);
        }
    }

    fn launch_complete(&mut self, comm: &Comm) {
        while self.next < self.buckets.len() && self.buckets[self.next].missing == 0 {
            self.launch(comm, self.next);
            self.next += 1;
        }
    }

    fn launch(&mut self, comm: &Comm, b: usize) {
        self.started.get_or_insert_with(Instant::now);
        let count = self.buckets.len();
        let bucket = &mut self.buckets[b];
        let mut buf = bucket.buf.take().expect("a bucket is launched once per step");
        let what = format!("summing gradient bucket {} of {count} ({} values)", b + 1, buf.len());
        bucket.pending = Some(comm.submit(what, move |c| {
            let t = Instant::now();
            c.all_reduce_sum_f32(&mut buf).map(|()| (buf, t.elapsed()))
        }));
    }

    /// The step's summed gradients in store order. Parameters whose gradient never arrived
    /// (they did not reach the loss) count as zero, `earlier` added; the remaining buckets are
    /// launched, in order, and every bucket is waited for.
    pub fn finish(
        &mut self,
        comm: &Comm,
        mut earlier: Vec<Option<Tensor<f32>>>,
    ) -> Result<(Vec<Tensor<f32>>, ReduceStats)> {
        for i in 0..self.shapes.len() {
            if self.grads[i].is_none() {
                let zero = Tensor::zeros(&self.shapes[i]);
                self.ready(comm, i, zero, earlier.get_mut(i).and_then(Option::take));
            }
        }
        self.launch_complete(comm);
        debug_assert_eq!(self.next, self.buckets.len());
        let waiting = Instant::now();
        let mut stats = ReduceStats { bytes: self.bytes(), ..Default::default() };
        for b in 0..self.buckets.len() {
            let pending = self.buckets[b].pending.take().expect("every bucket was launched");
            let (buf, took) = pending.wait(comm)?;
            stats.all_reduce += took;
            let bucket = &mut self.buckets[b];
            let mut offset = 0;
            for &i in &bucket.params {
                let g = self.grads[i].as_mut().expect("a launched bucket's gradients are in");
                let n = g.numel();
                g.data_mut().copy_from_slice(&buf[offset..offset + n]);
                offset += n;
            }
            bucket.buf = Some(buf);
        }
        stats.exposed = waiting.elapsed();
        let grads = self.grads.iter_mut().map(|g| g.take().expect("every gradient is in")).collect();
        Ok((grads, stats))
    }
}
