//! What backward keeps: the tape's memory policy, in one place.
//!
//! Reverse mode reads values from forward at each op's backward: its inputs (a Linear's `x`
//! for `dW = g^T x`), sometimes its output (softmax's `y`), and small state the op saved itself
//! (layer norm's per-row mean and `1/sqrt(var + eps)`, a dropout mask). Whatever the tape still
//! holds when forward ends stays in memory until backward reaches it: for a transformer that is
//! most of a training step's peak. One rule decides what is held.
//!
//! **Each op states its policy** through one hook, [`Op::saves`]: whether its output must stay
//! on the tape ([`OutputPolicy::Keep`], the default) or can be rebuilt from its inputs and the
//! state it saved ([`OutputPolicy::Recompute`], which [`Op::recompute`] then does), and how many
//! bytes of state it holds.
//!
//! **A model marks stretches of forward as segments** ([`Graph::segment`]: for a ViT, the
//! embedding and then one segment per block). When a segment ends, forward is done with every
//! value made inside it except the one it returns, and with the input it consumed. Each of
//! those is dropped
//! - on a tape that records nothing (inference: no backward will read it), always;
//! - on a recording tape, if its op's policy is `Recompute`.
//!
//! Leaves (data, parameters) are the caller's and never dropped, nor is a value the caller
//! [`keep`](Graph::keep)s to read after forward.
//!
//! **Backward gets a dropped value back** by recomputing it (recursively, if its inputs were
//! dropped too) when an op needs it as an input; an op may rebuild it from its saved state alone
//! (a fused Linear+GELU keeps its pre-activation and recomputes only the GELU). An op's own output reaches its backward as an `Option`
//! ([`BackwardCtx::output`]): `None` when it was dropped, which only a `Recompute` op allows,
//! and such an op's backward does not read it.
//!
//! **What is kept is listed**, per segment, by [`Graph::memory`]: every value made in the
//! segment with its bytes and whether the tape holds it for backward or will recompute it, plus
//! the ops' saved state. A ViT prints it with `VisionTransformer::memory_report`; its test
//! checks the listing against the tensors the tape holds and the sizes a reader derives by hand.
//!
//! **Freed buffers are cached, never more than were in use** ([`crate::pool`]). When the tape
//! drops a value, or a tensor dies, its buffer goes to the buffer pool, which hands it to the
//! next op asking for that length (the next step's same op, typically), so a training step
//! stops faulting in fresh pages. The pool's one rule bounds it: for each length it keeps at
//! most as many free buffers as were ever in use at once, so what it retains is at most the
//! working set the program has already had live (one step's tape and gradients; one evaluation
//! batch), whatever the number of steps, shapes or threads, and a buffer of a length nobody
//! takes is not kept. The peak resident memory of training is then the parameters, the
//! optimizer state, one step's tape, the data and a fixed margin; [`crate::pool::stats`] gives
//! what the pool holds and its bound.
//!
//! [`Op::saves`]: crate::Op::saves
//! [`Op::recompute`]: crate::Op::recompute
//! [`BackwardCtx::output`]: crate::BackwardCtx::output

use std::fmt;
use std::ops::Range;

use crate::dtype::Float;
use crate::graph::{Graph, Var};
use crate::tensor::Tensor;

/// Whether an op's output must stay on the tape for backward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputPolicy {
    /// Kept until backward: the op cannot rebuild it cheaply, or its backward reads it.
    Keep,
    /// Dropped when forward is done with it; rebuilt by [`crate::Op::recompute`] when a backward
    /// needs it. The op's own backward must not read its output.
    Recompute,
}

/// What an op keeps for its backward: the answer of [`crate::Op::saves`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Saves {
    /// Whether the output stays on the tape.
    pub output: OutputPolicy,
    /// Bytes of the op's own saved state (statistics, masks, probabilities), held until the
    /// tape is dropped.
    pub state_bytes: usize,
}

impl Saves {
    /// The default: the output is kept, the op holds no state.
    pub const KEEP: Saves = Saves { output: OutputPolicy::Keep, state_bytes: 0 };

    /// The output is kept; the op holds `state_bytes` of state.
    pub fn keep(state_bytes: usize) -> Saves {
        Saves { output: OutputPolicy::Keep, state_bytes }
    }

    /// The output is recomputed; the op holds `state_bytes` of state.
    pub fn recompute(state_bytes: usize) -> Saves {
        Saves { output: OutputPolicy::Recompute, state_bytes }
    }
}

/// What [`crate::Op::recompute`] rebuilds: the op's dropped output.
pub struct Recomputed<T: Float> {
    /// The op's output, as forward made it.
    pub output: Tensor<T>,
}

/// How the tape treats one value once its segment has ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    /// On the tape until backward (or the tape's end).
    Kept,
    /// Dropped; backward recomputes it where an op needs it.
    Recomputed,
    /// Dropped for good (a tape that records nothing).
    Freed,
}

/// One value of a segment, as [`Graph::memory`] lists it.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The value's handle.
    pub var: Var,
    /// The op that made it (`"const"` for a value recorded without one).
    pub op: String,
    /// The value's shape.
    pub shape: Vec<usize>,
    /// Kept, to be recomputed, or freed.
    pub held: Held,
    /// Bytes of the value itself (`0` unless [`Held::Kept`]).
    pub value_bytes: usize,
    /// Bytes of the op's saved state.
    pub state_bytes: usize,
}

/// A named stretch of the tape made by [`Graph::segment`].
#[derive(Clone, Debug)]
pub struct Segment {
    /// The label given to [`Graph::segment`], e.g. `blocks.3`.
    pub name: String,
    /// The nodes made inside it.
    pub nodes: Range<usize>,
}

/// The listing of one segment: what it keeps for backward and what is recomputed.
#[derive(Clone, Debug)]
pub struct SegmentMemory {
    /// The segment's label.
    pub name: String,
    /// Every value made in the segment, in tape order.
    pub entries: Vec<Entry>,
}

impl SegmentMemory {
    /// Bytes the segment holds from forward to backward: kept values and saved state.
    pub fn kept_bytes(&self) -> usize {
        self.entries.iter().map(|e| e.value_bytes + e.state_bytes).sum()
    }
}

impl fmt::Display for SegmentMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: {} kept for backward", self.name, human(self.kept_bytes()))?;
        for e in &self.entries {
            let what = match e.held {
                Held::Kept => format!("kept       {:>10}", human(e.value_bytes)),
                Held::Recomputed => format!("recomputed {:>10}", ""),
                Held::Freed => format!("freed      {:>10}", ""),
            };
            let state = if e.state_bytes > 0 { format!("  + state {}", human(e.state_bytes)) } else { String::new() };
            writeln!(f, "  %{:<5} {what}  {:<44} {:?}{state}", e.var.index(), e.op, e.shape)?;
        }
        Ok(())
    }
}

/// `1536` -> `"1.5 KiB"`.
pub fn human(bytes: usize) -> String {
    const UNITS: [&str; 3] = ["KiB", "MiB", "GiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

impl<T: Float> Graph<T> {
    /// Runs `f`, one stretch of forward that consumes `input` and returns the value the rest of
    /// forward reads, then applies the memory policy (see the module documentation) to what
    /// forward is now done with. `name` labels the stretch in [`Graph::memory`].
    pub fn segment(&mut self, name: &str, input: Var, f: impl FnOnce(&mut Self) -> Var) -> Var {
        let start = self.len();
        let out = f(self);
        let made = start..self.len();
        for i in made.clone().chain((input.index() < start).then_some(input.index())) {
            if i != out.index() && self.droppable(i) {
                self.drop_value(i);
            }
        }
        self.segments.push(Segment { name: name.to_string(), nodes: made });
        out
    }

    /// Whether the tape holds `v`'s value now (it may have been dropped by the policy).
    pub fn holds(&self, v: Var) -> bool {
        self.has_value(v.index())
    }

    /// The segments recorded so far, in order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// What each segment holds for backward and what is recomputed, entry by entry.
    pub fn memory(&self) -> Vec<SegmentMemory> {
        self.segments
            .iter()
            .map(|s| SegmentMemory { name: s.name.clone(), entries: s.nodes.clone().map(|i| self.entry(i)).collect() })
            .collect()
    }

    /// Bytes of every computed value the tape holds now plus every op's saved state (leaves are
    /// the caller's and not counted): over a whole tape, what the listing of [`Graph::memory`]
    /// adds up to, counted from the nodes directly.
    pub fn held_bytes(&self) -> usize {
        (0..self.len())
            .filter(|&i| !self.is_leaf(i))
            .map(|i| self.value_bytes(i) + self.saves(i).map_or(0, |s| s.state_bytes))
            .sum()
    }

    fn entry(&self, i: usize) -> Entry {
        let held = match (self.has_value(i), self.saves(i)) {
            (true, _) => Held::Kept,
            (false, Some(s)) if s.output == OutputPolicy::Recompute => Held::Recomputed,
            (false, _) => Held::Freed,
        };
        Entry {
            var: Var(i as u32),
            op: self.op_name(i),
            shape: self.shape(Var(i as u32)).to_vec(),
            held,
            value_bytes: self.value_bytes(i),
            state_bytes: self.saves(i).map_or(0, |s| s.state_bytes),
        }
    }

    /// Whether the policy lets the tape drop value `i` once forward is done with it.
    fn droppable(&self, i: usize) -> bool {
        if self.is_leaf(i) || self.is_kept_for_caller(i) {
            return false;
        }
        if !self.grad_enabled() {
            return true;
        }
        self.saves(i).is_some_and(|s| s.output == OutputPolicy::Recompute)
    }

    /// Bytes node `i`'s value adds: `0` when dropped, or when it is a view of an input's buffer
    /// (a reshape), which that input already counts.
    fn value_bytes(&self, i: usize) -> usize {
        let Some(v) = self.held_value(i) else { return 0 };
        if self.input_indices(i).iter().any(|&x| self.held_value(x).is_some_and(|x| x.shares_storage(v))) {
            return 0;
        }
        v.numel() * std::mem::size_of::<T>()
    }
}
