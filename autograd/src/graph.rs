//! The tape: the ops of one step, recorded in creation order, and reverse-mode backward over them.
//!
//! A [`Graph`] owns every value computed in a step. Values are addressed by [`Var`], a small
//! `Copy` handle (an index into the tape), so user code passes handles around freely and the
//! graph stays a plain `Vec` that is `Send`, printable and dropped in one go.
//!
//! Because nodes are stored in creation order, the order is already topological: every node's
//! inputs come before it. Backward therefore just walks the tape from the end, hands each node's
//! output gradient to its op's [`Op::backward`], and adds the returned input gradients into the
//! inputs' slots. A value used twice receives the sum of both contributions — the multivariate
//! chain rule.
//!
//! Parameters outlive the tape: a step does `let w = g.param(&weight)` (no copy: storage is
//! shared), builds the loss, calls [`Graph::backward`], and reads `g.grad(w)`.
//!
//! What the tape holds from forward to backward, and what it recomputes instead, is decided in
//! one place: [`crate::memory`].

use std::fmt;

use crate::dtype::Float;
use crate::memory::{Recomputed, Saves, Segment};
use crate::tensor::Tensor;

/// A handle to a value on the tape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Var(pub(crate) u32);

impl Var {
    /// The position of this value on its tape.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// What backward hands an op: the values it was built from, the value it produced, and the
/// gradient of the loss with respect to that value.
pub struct BackwardCtx<'a, T: Float> {
    /// The op's input values, in the order they were recorded (recomputed if they were dropped).
    pub inputs: &'a [&'a Tensor<T>],
    /// The op's output value: always there for an op whose policy is [`OutputPolicy::Keep`](crate::memory::OutputPolicy::Keep);
    /// `None` for a [`OutputPolicy::Recompute`](crate::memory::OutputPolicy::Recompute) op whose output was dropped (see
    /// [`crate::memory`]).
    pub output: Option<&'a Tensor<T>>,
    /// dL/d(output), same shape as the output.
    pub grad: &'a Tensor<T>,
    /// Which inputs want a gradient; an op may return `None` for the others and skip the work.
    pub needs_grad: &'a [bool],
}

impl<T: Float> BackwardCtx<'_, T> {
    /// The output, for an op whose backward reads it (and whose policy therefore keeps it).
    pub fn kept_output(&self) -> &Tensor<T> {
        self.output.expect("an op whose backward reads its output must keep it (OutputPolicy::Keep)")
    }
}

/// A differentiable operation: the recorded half of an op. The forward half is a method on
/// [`Graph`] that computes the value and records the op with [`Graph::push`].
///
/// An op keeps whatever its backward needs beyond inputs and output (a saved mean and rstd, a
/// dropout mask, an axis) in its own fields, and says what it keeps through [`Op::saves`].
pub trait Op<T: Float>: Send + Sync {
    /// A short name for printing the tape, e.g. `"matmul"` or `"sum(axes=[1])"`.
    fn name(&self) -> String;

    /// Returns dL/d(input) for each input, in order (`None` where not needed). Each returned
    /// tensor must have its input's shape.
    fn backward(&self, ctx: &BackwardCtx<'_, T>) -> Vec<Option<Tensor<T>>>;

    /// The memory policy's one hook (see [`crate::memory`]): whether the output stays on the
    /// tape for backward or is rebuilt by [`Op::recompute`], and the bytes of saved state.
    fn saves(&self) -> Saves {
        Saves::KEEP
    }

    /// The output again, from the inputs and the saved state, for an op whose policy is
    /// [`OutputPolicy::Recompute`](crate::memory::OutputPolicy::Recompute) (cheap ops: layer norm, a fused Linear+GELU). `None` for the
    /// others.
    fn recompute(&self, _inputs: &[&Tensor<T>]) -> Option<Recomputed<T>> {
        None
    }
}

struct Node<T: Float> {
    /// `None` for leaves (inputs, parameters, constants and everything built in no-grad mode).
    op: Option<Box<dyn Op<T>>>,
    inputs: Vec<Var>,
    /// `None` once the memory policy dropped it: backward recomputes it when it needs it.
    value: Option<Tensor<T>>,
    shape: Vec<usize>,
    /// Data or a parameter the caller handed in: the tape never drops it.
    leaf: bool,
    /// The caller reads it after forward ([`Graph::keep`]): the tape never drops it.
    kept_for_caller: bool,
    requires_grad: bool,
    /// Whether this node's gradient is kept after backward (leaves that asked for one).
    keep_grad: bool,
    /// The norm of dL/d(value), filled in by backward for printing.
    grad_norm: Option<f64>,
}

/// The tape of one step. See the module documentation.
pub struct Graph<T: Float = f32> {
    nodes: Vec<Node<T>>,
    grads: Vec<Option<Tensor<T>>>,
    grad_enabled: bool,
    training: bool,
    record_grad_norms: bool,
    pub(crate) segments: Vec<Segment>,
}

impl<T: Float> Default for Graph<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Float> Graph<T> {
    /// An empty tape that records ops (training mode: dropout active).
    pub fn new() -> Self {
        Graph {
            nodes: Vec::new(),
            grads: Vec::new(),
            grad_enabled: true,
            training: true,
            record_grad_norms: true,
            segments: Vec::new(),
        }
    }

    /// An empty tape in inference mode: nothing is recorded for backward and dropout is the
    /// identity. Values are still addressed by `Var`.
    pub fn inference() -> Self {
        Graph { grad_enabled: false, training: false, ..Self::new() }
    }

    /// Turns recording on or off from now on (`torch.no_grad()`); returns the previous setting.
    pub fn set_grad_enabled(&mut self, enabled: bool) -> bool {
        std::mem::replace(&mut self.grad_enabled, enabled)
    }

    /// Whether new ops are recorded for backward (see [`Graph::set_grad_enabled`]).
    pub fn grad_enabled(&self) -> bool {
        self.grad_enabled
    }

    /// Training mode makes dropout and stochastic depth active; eval mode makes them identities.
    pub fn set_training(&mut self, training: bool) {
        self.training = training;
    }

    /// Whether dropout and stochastic depth are active (see [`Graph::set_training`]).
    pub fn is_training(&self) -> bool {
        self.training
    }

    /// Whether backward records each node's gradient norm for [`Graph::print_tape`] (on by
    /// default; a training loop turns it off to save one pass over every gradient).
    pub fn set_record_grad_norms(&mut self, on: bool) {
        self.record_grad_norms = on;
    }

    /// The number of values on the tape (leaves and op results).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether nothing has been recorded yet.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn leaf(&mut self, value: Tensor<T>, requires_grad: bool) -> Var {
        let requires_grad = requires_grad && self.grad_enabled;
        self.nodes.push(Node {
            op: None,
            inputs: Vec::new(),
            shape: value.shape().to_vec(),
            value: Some(value),
            leaf: true,
            kept_for_caller: false,
            requires_grad,
            keep_grad: requires_grad,
            grad_norm: None,
        });
        Var((self.nodes.len() - 1) as u32)
    }

    /// A value that needs no gradient (data, labels as floats, constants).
    pub fn input(&mut self, value: Tensor<T>) -> Var {
        self.leaf(value, false)
    }

    /// A leaf whose gradient backward computes and keeps: a parameter or a checked input.
    /// Takes a reference and shares the storage, so nothing is copied.
    pub fn param(&mut self, value: &Tensor<T>) -> Var {
        self.leaf(value.clone(), true)
    }

    /// Whether an op on `inputs` would be recorded by [`Graph::push`]: recording is on and some
    /// input requires a gradient. An op may skip keeping state for backward when it is not.
    pub fn records(&self, inputs: &[Var]) -> bool {
        self.grad_enabled && inputs.iter().any(|v| self.nodes[v.index()].requires_grad)
    }

    /// Records an op's result. This is how every op (ours and a user's) joins the tape: compute
    /// the value, then `push` it with the op and its inputs. If no input requires a gradient, or
    /// recording is off, the op is dropped and the value stored as a constant.
    pub fn push(&mut self, value: Tensor<T>, op: impl Op<T> + 'static, inputs: &[Var]) -> Var {
        if !self.records(inputs) {
            return self.push_unrecorded(value);
        }
        self.push_node(value, Some(Box::new(op)), inputs.to_vec())
    }

    /// An op's result that the tape does not record (as [`Graph::push`] stores it when
    /// [`Graph::records`] is false), for an op that computed it differently off the tape.
    pub(crate) fn push_unrecorded(&mut self, value: Tensor<T>) -> Var {
        self.push_node(value, None, Vec::new())
    }

    fn push_node(&mut self, value: Tensor<T>, op: Option<Box<dyn Op<T>>>, inputs: Vec<Var>) -> Var {
        let requires_grad = op.is_some();
        let shape = value.shape().to_vec();
        self.nodes.push(Node {
            op,
            inputs,
            value: Some(value),
            shape,
            leaf: false,
            kept_for_caller: false,
            requires_grad,
            keep_grad: false,
            grad_norm: None,
        });
        Var((self.nodes.len() - 1) as u32)
    }

    /// The value of `v`. Panics if the memory policy dropped it (see [`crate::memory`]; a caller
    /// that reads a value after its segment [`keep`](Graph::keep)s it).
    pub fn value(&self, v: Var) -> &Tensor<T> {
        self.nodes[v.index()]
            .value
            .as_ref()
            .unwrap_or_else(|| panic!("the value of %{} was dropped by the memory policy", v.0))
    }

    /// Asks the tape to hold `v` whatever the memory policy says: the caller reads it after
    /// forward (an attention map for a figure, say).
    pub fn keep(&mut self, v: Var) {
        self.nodes[v.index()].kept_for_caller = true;
    }

    pub(crate) fn is_leaf(&self, i: usize) -> bool {
        self.nodes[i].leaf
    }

    pub(crate) fn is_kept_for_caller(&self, i: usize) -> bool {
        self.nodes[i].kept_for_caller
    }

    pub(crate) fn has_value(&self, i: usize) -> bool {
        self.nodes[i].value.is_some()
    }

    pub(crate) fn held_value(&self, i: usize) -> Option<&Tensor<T>> {
        self.nodes[i].value.as_ref()
    }

    pub(crate) fn input_indices(&self, i: usize) -> Vec<usize> {
        self.nodes[i].inputs.iter().map(|x| x.index()).collect()
    }

    pub(crate) fn drop_value(&mut self, i: usize) {
        self.nodes[i].value = None;
    }

    /// The policy of the op that made node `i`; `None` for a value recorded without an op.
    pub(crate) fn saves(&self, i: usize) -> Option<Saves> {
        self.nodes[i].op.as_ref().map(|op| op.saves())
    }

    pub(crate) fn op_name(&self, i: usize) -> String {
        match &self.nodes[i].op {
            Some(op) => op.name(),
            None if self.nodes[i].requires_grad => "param".to_string(),
            None => "const".to_string(),
        }
    }

    /// Node `idx`'s value, recomputed (recursively) if the memory policy dropped it.
    fn materialize(&self, idx: usize) -> Tensor<T> {
        let node = &self.nodes[idx];
        if let Some(v) = &node.value {
            return v.clone();
        }
        let op = node.op.as_ref().unwrap_or_else(|| panic!("the value of %{idx} was dropped and backward needs it"));
        let inputs: Vec<Tensor<T>> = node.inputs.iter().map(|x| self.materialize(x.index())).collect();
        let refs: Vec<&Tensor<T>> = inputs.iter().collect();
        op.recompute(&refs).unwrap_or_else(|| panic!("op {} cannot recompute its dropped output", op.name())).output
    }

    /// The shape of `v`'s value (known even after the value itself was released).
    pub fn shape(&self, v: Var) -> &[usize] {
        &self.nodes[v.index()].shape
    }

    /// Whether backward computes a gradient for `v`: it is a parameter, or depends on one
    /// through recorded ops.
    pub fn requires_grad(&self, v: Var) -> bool {
        self.nodes[v.index()].requires_grad
    }

    /// Asks backward to keep the gradient of an intermediate value too (for inspection).
    pub fn retain_grad(&mut self, v: Var) {
        self.nodes[v.index()].keep_grad = true;
    }

    /// dL/dv after [`Graph::backward`]; `None` if `v` does not influence the loss, needs no
    /// gradient, or is an intermediate whose gradient was not retained.
    pub fn grad(&self, v: Var) -> Option<&Tensor<T>> {
        self.grads.get(v.index()).and_then(|g| g.as_ref())
    }

    /// Moves a gradient out of the tape (no copy).
    pub fn take_grad(&mut self, v: Var) -> Option<Tensor<T>> {
        self.grads.get_mut(v.index()).and_then(|g| g.take())
    }

    /// Backward from a scalar loss: seeds dL/dL = 1.
    pub fn backward(&mut self, loss: Var) {
        let shape = self.shape(loss).to_vec();
        assert_eq!(
            shape.iter().product::<usize>(),
            1,
            "backward: the loss must have one element, found shape {shape:?} (use backward_with for a non-scalar seed)"
        );
        let device = self.nodes[loss.index()].value.as_ref().map_or(crate::Device::Cpu, |v| v.device());
        self.backward_with(loss, Tensor::full_on(&shape, T::ONE, device));
    }

    /// Backward from `v` seeded with the gradient `seed` (same shape as `v`): computes the
    /// vector-Jacobian product `seed^T dv/dx` for every leaf `x`.
    pub fn backward_with(&mut self, v: Var, seed: Tensor<T>) {
        self.backward_impl(v, seed, None);
    }

    /// [`Graph::backward_with`] that hands each kept leaf gradient (a parameter's) to `ready` as
    /// soon as it is final, while backward goes on with the ops below it. This is what lets data
    /// parallel training start averaging a layer's gradients across processes during the
    /// backward of the layers before it.
    ///
    /// A leaf's gradient is final once the walk has passed its *first* consumer (the
    /// lowest-indexed op reading it): every contribution comes from an op recorded after the
    /// leaf was first read. The gradients handed to `ready` are moved out of the tape
    /// ([`Graph::grad`] is then `None` for them); leaves that receive no gradient are never
    /// handed over.
    pub fn backward_hooked(&mut self, v: Var, seed: Tensor<T>, ready: &mut dyn FnMut(Var, Tensor<T>)) {
        self.backward_impl(v, seed, Some(ready));
    }

    fn backward_impl(&mut self, v: Var, seed: Tensor<T>, mut ready: Option<&mut dyn FnMut(Var, Tensor<T>)>) {
        assert_eq!(seed.shape(), self.shape(v), "backward_with: seed shape differs from the value's");
        let n = v.index() + 1;
        // For each op, the kept leaves it is the first consumer of (only when they are handed
        // over as they become final).
        let mut final_after: Vec<Vec<u32>> = (0..n).map(|_| Vec::new()).collect();
        if ready.is_some() {
            let mut first_use: Vec<Option<usize>> = vec![None; n];
            for (j, node) in self.nodes[..n].iter().enumerate() {
                for x in &node.inputs {
                    first_use[x.index()].get_or_insert(j);
                }
            }
            for (leaf, first) in first_use.into_iter().enumerate() {
                let node = &self.nodes[leaf];
                if let (Some(j), None, true) = (first, &node.op, node.keep_grad) {
                    final_after[j].push(leaf as u32);
                }
            }
        }
        let mut grads: Vec<Option<Tensor<T>>> = (0..self.nodes.len()).map(|_| None).collect();
        if self.nodes[v.index()].requires_grad {
            grads[v.index()] = Some(seed);
        }
        for i in (0..n).rev() {
            let Some(grad) = grads[i].take() else {
                self.hand_over(&final_after[i], &mut grads, &mut ready);
                continue;
            };
            let node = &self.nodes[i];
            let mut node_grad_norm = self.record_grad_norms.then(|| grad.norm());
            if let Some(op) = &node.op {
                // Shared handles (no copies); dropped values are recomputed for this op only.
                let owned: Vec<Tensor<T>> = node.inputs.iter().map(|x| self.materialize(x.index())).collect();
                let inputs: Vec<&Tensor<T>> = owned.iter().collect();
                let needs_grad: Vec<bool> = node.inputs.iter().map(|x| self.nodes[x.index()].requires_grad).collect();
                let ctx =
                    BackwardCtx { inputs: &inputs, output: node.value.as_ref(), grad: &grad, needs_grad: &needs_grad };
                let input_grads = op.backward(&ctx);
                assert_eq!(
                    input_grads.len(),
                    node.inputs.len(),
                    "op {}: backward returned {} gradients for {} inputs",
                    op.name(),
                    input_grads.len(),
                    node.inputs.len()
                );
                for ((x, gx), &need) in node.inputs.iter().zip(input_grads).zip(&needs_grad) {
                    let Some(gx) = gx else { continue };
                    if !need {
                        continue;
                    }
                    let xs = &self.nodes[x.index()].shape;
                    assert_eq!(
                        gx.shape(),
                        &xs[..],
                        "op {}: gradient of shape {:?} for an input of shape {:?}",
                        op.name(),
                        gx.shape(),
                        xs
                    );
                    match &mut grads[x.index()] {
                        Some(acc) => acc.add_assign(&gx),
                        slot @ None => *slot = Some(gx),
                    }
                }
            }
            if node.keep_grad {
                grads[i] = Some(grad);
            } else if node.op.is_none() && !node.requires_grad {
                node_grad_norm = None;
            }
            self.nodes[i].grad_norm = node_grad_norm;
            self.hand_over(&final_after[i], &mut grads, &mut ready);
        }
        self.grads = grads;
    }

    /// Moves the final gradients of `leaves` out to `ready` (noting their norms for printing).
    fn hand_over(
        &mut self,
        leaves: &[u32],
        grads: &mut [Option<Tensor<T>>],
        ready: &mut Option<&mut dyn FnMut(Var, Tensor<T>)>,
    ) {
        let Some(ready) = ready else { return };
        for &leaf in leaves {
            if let Some(g) = grads[leaf as usize].take() {
                if self.record_grad_norms {
                    self.nodes[leaf as usize].grad_norm = Some(g.norm());
                }
                ready(Var(leaf), g);
            }
        }
    }

    /// The tape as text: one line per node with its op, input handles and shapes, output shape,
    /// and (after backward) the norm of its gradient.
    pub fn print_tape(&self) -> String {
        let mut s = String::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let name = self.op_name(i);
            let ins: Vec<String> =
                node.inputs.iter().map(|x| format!("%{} {:?}", x.0, self.nodes[x.index()].shape)).collect();
            let grad = match node.grad_norm {
                Some(g) => format!("  |grad| = {g:.6e}"),
                None => String::new(),
            };
            s.push_str(&format!("%{i:<4} {name:<24} ({}) -> {:?}{grad}\n", ins.join(", "), node.shape));
        }
        s
    }
}

impl<T: Float> fmt::Display for Graph<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.print_tape())
    }
}
