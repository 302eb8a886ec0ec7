//! The caching allocator: a repeated sequence of work allocates from the driver only the
//! first time.

use std::sync::Arc;

use autograd::cuda::prims::{linear as lin, rows};
use autograd::cuda::Gpu;

use crate::harness::Tests;
use crate::util::{random, up};

/// Run alone (the harness runs `exclusive::` tests one at a time, after the others), since the
/// allocator's counters are shared by every test on a device.
pub const TESTS: Tests = &[("exclusive::memory::steady_state_allocates_nothing_from_the_driver", steady_state)];

fn one_step(gpu: &Arc<Gpu>) {
    let x = up(gpu, &random::<f32>(&[300, 48], 1, -1.0, 1.0));
    let w = up(gpu, &random::<f32>(&[64, 48], 2, -1.0, 1.0));
    let b = up(gpu, &random::<f32>(&[64], 3, -1.0, 1.0));
    let y = lin::linear_forward(&x, &w, Some(&b), None, (300, 48, 64));
    let p = rows::softmax(&y, 64, false);
    let (dx, dw, db) = lin::linear_backward(&x, &w, &p, (300, 48, 64), [true, true, true]);
    drop((dx, dw, db));
}

fn steady_state(gpu: &Arc<Gpu>) -> Result<(), String> {
    one_step(gpu);
    let before = gpu.memory_stats();
    for _ in 0..3 {
        one_step(gpu);
    }
    let after = gpu.memory_stats();
    if after.driver_allocations != before.driver_allocations {
        return Err(format!(
            "steady-state steps allocated from the driver: {} allocations before, {} after",
            before.driver_allocations, after.driver_allocations
        ));
    }
    if after.in_use != before.in_use {
        return Err(format!("memory in use grew from {} to {} bytes", before.in_use, after.in_use));
    }
    if before.driver_allocations == 0 || after.peak_in_use == 0 {
        return Err(format!("the allocator counted nothing: {after:?}"));
    }
    Ok(())
}
