//! Which device a command runs on: `--device auto|cpu|cuda[:N]` and `--tf32`.
//!
//! The request is resolved by `autograd` (which knows whether this build has the GPU path and
//! whether the machine has a GPU); this module reports the choice and applies `--tf32`. Asking
//! for a GPU that cannot be used is an error naming the reason, never a silent CPU run.
//!
//! On a GPU, `train`, `eval` and `predict` put the model's parameters (and in training the
//! optimizer's moments) there once, upload each batch, and read back what they report: the
//! loss, the gradient norm, the logits. Every op of the ViT's forward and backward has a CUDA
//! path in `autograd`; the optimizers' updates and the clipping run as device kernels.
//! Checkpoints are written from host copies, so a file is the same whatever device wrote it.

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
        Device::Cuda(n) => {
            #[cfg(feature = "cuda")]
            autograd::cuda::device(n).map_err(|e| Error::Device(format!("{device}: {e}")))?.set_tf32(tf32);
            #[cfg(not(feature = "cuda"))]
            let _ = (n, tf32); // resolve() cannot give a GPU to a build without the feature.
            Ok(device)
        }
    }
}

/// An error for a command that runs on the CPU only, if `device` is not the CPU.
pub fn on_cpu_only(command: &str, device: Device) -> Result<()> {
    match device {
        Device::Cpu => Ok(()),
        _ => Err(Error::Device(format!(
            "{command} runs on the cpu only (it reads every layer's attention on the host); \
             pass --device cpu"
        ))),
    }
}

/// An error when a data-parallel run of `world` processes asks for a GPU: the gradient reducer
/// sums host buffers, so data-parallel training runs on the CPU only so far.
pub fn check_world(device: Device, world: usize) -> Result<()> {
    if device.is_cuda() && world > 1 {
        return Err(Error::Device(format!(
            "{device}: data-parallel training ({world} processes) runs on the cpu only so far (the gradient reducer \
             sums host buffers); pass --device cpu"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_only_limits_are_errors_that_say_what_to_do() {
        assert!(check_world(Device::Cpu, 4).is_ok());
        assert!(check_world(Device::Cuda(0), 1).is_ok());
        let e = check_world(Device::Cuda(0), 2).unwrap_err().to_string();
        assert!(e.contains("cuda:0") && e.contains("2 processes") && e.contains("--device cpu"), "{e}");
        assert!(on_cpu_only("analyze", Device::Cpu).is_ok());
        let e = on_cpu_only("analyze", Device::Cuda(1)).unwrap_err().to_string();
        assert!(e.contains("analyze") && e.contains("--device cpu"), "{e}");
    }
}
