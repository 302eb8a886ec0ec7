//! Which device a command runs on: `--device auto|cpu|cuda[:N]` and `--tf32`.
//!
//! The request is resolved by `autograd` (which knows whether this build has the GPU path and
//! whether the machine has a GPU); this module reports the choice and applies `--tf32`. Asking
//! for a GPU that cannot be used is an error naming the reason, never a silent CPU run.
//!
//! The model itself runs on the CPU only for now: autograd's device seam carries every op of a
//! ViT's forward and backward to a GPU (elementwise ops, sums, matrix products, softmax, layer
//! norm, GELU, the fused Linear and attention, patchify, dropout, cross-entropy), but this
//! crate does not yet put its parameters, optimizer state and batches there. So a usable GPU is
//! reported and then refused with that reason (exit code 1), rather than run a step on a
//! device that holds none of the model.

use autograd::{Device, DeviceRequest};

use crate::{Error, Result};

/// The device to run on, with the choice (and why) written to stderr unless it is the default.
pub fn select(request: DeviceRequest, tf32: bool) -> Result<Device> {
    let (device, why) = request.resolve().map_err(|e| Error::Device(e.to_string()))?;
    // The default (the CPU, asked for by name) goes without saying.
    if request != DeviceRequest::Exactly(Device::Cpu) {
        eprintln!("{why}");
    }
    match device {
        Device::Cpu if tf32 => {
            Err(Error::Device("--tf32 is a mode of CUDA GPUs' tensor cores; this run is on the cpu".into()))
        }
        Device::Cpu => Ok(Device::Cpu),
        Device::Cuda(_) => {
            #[cfg(feature = "cuda")]
            if let Device::Cuda(n) = device {
                if let Ok(gpu) = autograd::cuda::device(n) {
                    gpu.set_tf32(tf32);
                }
            }
            Err(Error::Device(format!(
                "{device} is usable, but the ViT's training and inference do not run on a GPU yet (autograd's \
                 ops do; the model's parameters, optimizer state and batches are not put there so far); use \
                 --device cpu"
            )))
        }
    }
}
