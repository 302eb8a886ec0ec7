//! The crate's integration tests, as one test binary: every op's forward against a plain
//! reference and its gradient against finite differences (`autograd::gradcheck`, f64, on
//! proptest-drawn shapes), the GEMM against a naive product on every ISA the machine runs, the
//! row kernels' accuracy, and the tape's hooks. One module per file, named after what it checks.
//!
//! One binary rather than one per file: each integration test file is a crate of its own,
//! compiled and linked against `autograd` and proptest separately, and twenty-odd links cost
//! more than the tests themselves in CI (which builds them for x86-64 and for aarch64). Run one
//! file's tests with `cargo test --release -p vit-autograd --test all gemm::`.

mod common;

mod attention;
mod backward_hook;
mod binary;
mod conv2d;
mod dropout;
mod gelu;
mod gemm;
mod gradcheck;
mod group_norm;
mod layer_norm;
mod linear;
mod loss;
mod matmul;
mod max_pool;
mod patchify;
mod reduce;
mod relu;
mod row_kernels;
mod shape;
mod softmax;
mod unary;
