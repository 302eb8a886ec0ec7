//! The ops: one family per file, each op's forward (a method on [`crate::Graph`]) beside its
//! backward (an [`crate::Op`] impl), with both formulas in the doc comment.
//!
//! Conventions: shapes in docs use `B` batch, `N` tokens, `D` width, `M x K @ K x N` for
//! products. `g` is the upstream gradient dL/dy. On a programming error (shapes that do not fit)
//! an op panics with a message naming the op and the shapes.

/// `cuda` when one of the tensors is on a CUDA device (in a build with the `cuda` feature),
/// else `cpu`: the one switch by which an op picks its device's primitive. A GPU op given a CPU
/// tensor (or the other way round) panics naming both devices. Defined before the op modules,
/// so it is in scope in every one of them.
macro_rules! on_device {
    ([$($x:expr),+], cuda: $gpu:expr, cpu: $cpu:expr $(,)?) => {{
        #[cfg(feature = "cuda")]
        let y = if false $(|| $x.is_cuda())+ { $gpu } else { $cpu };
        #[cfg(not(feature = "cuda"))]
        let y = $cpu;
        y
    }};
}

pub mod attention;
pub mod binary;
pub mod broadcast;
pub mod conv2d;
pub mod device;
pub mod dropout;
pub mod gelu;
pub mod group_norm;
pub mod layer_norm;
pub mod linear;
pub mod loss;
pub mod matmul;
pub mod max_pool;
pub mod patchify;
pub mod reduce;
pub mod relu;
pub mod shape;
pub mod softmax;
pub mod unary;

/// `(rows, width)` of a tensor seen as rows along its last axis; panics naming `op` on a scalar.
pub(crate) fn last_axis(shape: &[usize], op: &str) -> (usize, usize) {
    let Some((&d, lead)) = shape.split_last() else {
        panic!("{op}: needs a tensor of rank >= 1 (it works over the last axis), got shape {shape:?}")
    };
    (lead.iter().product(), d)
}
