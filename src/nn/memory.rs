//! What a ViT training step keeps for backward, block by block (llm.c's `ActivationTensors`,
//! read off the tape instead of written by hand).

use autograd::memory::{human, SegmentMemory};
use autograd::{Graph, Rng, Tensor};

use super::module::{Ctx, Module};
use super::params::ParamStore;
use super::vit::VisionTransformer;

/// The tape's memory at the end of a training step's forward (loss included), per segment (the
/// embedding, then each block), for a batch of `batch` images on the fused or the plain path.
pub struct MemoryReport {
    /// The embedding's and each block's listing.
    pub segments: Vec<SegmentMemory>,
    /// Everything the tape holds then beyond its leaves (images, parameters): the segments and
    /// the rest (final norm, head, loss).
    pub total_bytes: usize,
    /// The batch the step ran on.
    pub batch: usize,
    /// Whether the fused path ran (else the plain one).
    pub fused: bool,
}

impl VisionTransformer {
    /// Runs one training-mode forward and cross-entropy on zero images and lists what the tape
    /// keeps for backward and what backward will recompute (`autograd::memory`).
    pub fn memory_report(&self, params: &ParamStore<f32>, batch: usize, fused: bool) -> MemoryReport {
        let c = &self.config;
        let mut g = Graph::new();
        let p = params.bind(&mut g);
        let x = g.input(Tensor::zeros(&[batch, c.in_chans, c.image_size, c.image_size]));
        let mut rng = Rng::seed(0);
        let mut cx = if fused { Ctx::new(&mut rng) } else { Ctx::plain(&mut rng) };
        let logits = self.forward(&mut g, &p, x, &mut cx);
        g.cross_entropy(logits, &vec![0; batch], 0.0);
        MemoryReport { segments: g.memory(), total_bytes: g.held_bytes(), batch, fused }
    }
}

impl std::fmt::Display for MemoryReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = if self.fused { "fused" } else { "plain" };
        writeln!(f, "kept for backward, batch {}, {path} path: {} in all", self.batch, human(self.total_bytes))?;
        for s in &self.segments {
            write!(f, "{s}")?;
        }
        Ok(())
    }
}
