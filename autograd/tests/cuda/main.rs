//! The GPU tests (see `harness.rs`): every device primitive on each CUDA device, and on the
//! CUDA emulator, against the CPU.

mod harness;
mod util;

mod attention;
mod elementwise;
mod linear;
mod memory;
mod ops;
mod ops_hybrid;
mod optim;
mod reduce;
mod rows;

fn main() -> std::process::ExitCode {
    harness::run(&[
        elementwise::TESTS,
        reduce::TESTS,
        rows::TESTS,
        linear::TESTS,
        attention::TESTS,
        optim::TESTS,
        ops::TESTS,
        ops_hybrid::TESTS,
        memory::TESTS,
    ])
}
