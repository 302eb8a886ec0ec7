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
//!
//! On a GPU the buckets are device buffers: a gradient is copied into its bucket on the device,
//! and the engine sums the bucket where it is (NCCL, on a stream of its own, while the device
//! goes on with backward) or through host memory (MPI without NCCL). Either way the gradients
//! never leave the device for the training thread.

use std::time::{Duration, Instant};

use autograd::{Device, Tensor};

use super::comm::{Comm, Pending};
use crate::error::{Error, Result};

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

/// A bucket's packed gradients, where the parameters live.
enum Packed {
    Host(Vec<f32>),
    #[cfg(feature = "cuda")]
    Device(autograd::cuda::DeviceBuffer<f32>),
}

impl Packed {
    fn len(&self) -> usize {
        match self {
            Packed::Host(v) => v.len(),
            #[cfg(feature = "cuda")]
            Packed::Device(b) => b.len(),
        }
    }

    /// Copies `grad` in at `offset`.
    fn put(&mut self, offset: usize, grad: &Tensor<f32>) {
        match self {
            Packed::Host(v) => v[offset..offset + grad.numel()].copy_from_slice(grad.data()),
            #[cfg(feature = "cuda")]
            Packed::Device(b) => {
                let g = grad.cuda().expect("a GPU run's gradients are on the GPU");
                b.copy_range_from(offset, g, 0, g.len());
            }
        }
    }

    /// Copies the summed values at `offset` back into `grad`.
    fn take(&self, offset: usize, grad: &mut Tensor<f32>) {
        let n = grad.numel();
        match self {
            Packed::Host(v) => grad.data_mut().copy_from_slice(&v[offset..offset + n]),
            #[cfg(feature = "cuda")]
            Packed::Device(b) => {
                grad.cuda_mut().expect("a GPU run's gradients are on the GPU").copy_range_from(0, b, offset, n)
            }
        }
    }

    /// `self <- sum over ranks of self`, on the engine's thread.
    fn all_reduce(&mut self, engine: &mut dyn super::Collective) -> Result<()> {
        match self {
            Packed::Host(v) => engine.all_reduce_sum_f32(v),
            #[cfg(feature = "cuda")]
            Packed::Device(b) => engine.all_reduce_sum_device(b),
        }
    }
}

struct Bucket {
    /// Parameter indices (store order), in the order they are packed.
    params: Vec<usize>,
    len: usize,
    /// The packed gradients; `None` while the bucket is with the engine.
    buf: Option<Packed>,
    missing: usize,
    pending: Option<Pending<(Packed, Duration)>>,
}

/// Sums gradients across the ranks of a [`Comm`], bucket by bucket (see the module docs).
pub struct GradReducer {
    buckets: Vec<Bucket>,
    /// For each parameter: its bucket and offset in it.
    slot: Vec<(usize, usize)>,
    /// The gradients handed over this step (kept to receive the sums: no allocation per step).
    grads: Vec<Option<Tensor<f32>>>,
    shapes: Vec<Vec<usize>>,
    device: Device,
    /// The next bucket to launch.
    next: usize,
    overlap: bool,
    started: Option<Instant>,
}

impl GradReducer {
    /// A reducer for parameters of these shapes (store order) on `device`. Without `overlap`,
    /// buckets are launched only once backward is done (to measure what the overlap hides).
    pub fn new(shapes: Vec<Vec<usize>>, overlap: bool, device: Device) -> Result<Self> {
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
            b.buf = Some(match device {
                Device::Cpu => Packed::Host(vec![0.0; b.len]),
                #[cfg(feature = "cuda")]
                Device::Cuda(n) => Packed::Device(
                    autograd::cuda::device(n).map_err(|e| Error::Device(format!("{device}: {e}")))?.zeros(b.len),
                ),
                #[cfg(not(feature = "cuda"))]
                Device::Cuda(_) => {
                    return Err(Error::Device(format!("{device}: this vit was built without the GPU path")))
                }
            });
        }
        let grads = (0..shapes.len()).map(|_| None).collect();
        Ok(GradReducer { buckets, slot, grads, shapes, device, next: 0, overlap, started: None })
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
        buf.put(offset, &grad);
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
            buf.all_reduce(c).map(|()| (buf, t.elapsed()))
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
                let zero = Tensor::full_on(&self.shapes[i], 0.0, self.device);
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
            self.buckets[b].buf = Some(buf);
        }
        // A device engine's sums may still be queued on the device: order the copies out after
        // them (the host does not wait).
        #[cfg(feature = "cuda")]
        if self.device.is_cuda() {
            comm.run("ordering the device after the gradient sums", |c| c.join_device())?;
        }
        for bucket in &self.buckets {
            let buf = bucket.buf.as_ref().expect("every bucket is back");
            let mut offset = 0;
            for &i in &bucket.params {
                let g = self.grads[i].as_mut().expect("a launched bucket's gradients are in");
                buf.take(offset, g);
                offset += g.numel();
            }
            debug_assert_eq!(offset, buf.len());
        }
        stats.exposed = waiting.elapsed();
        let grads = self.grads.iter_mut().map(|g| g.take().expect("every gradient is in")).collect();
        Ok((grads, stats))
    }
}
