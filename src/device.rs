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
//! A data-parallel run (`mpirun`) sums its gradients on the GPUs with NCCL ([`crate::dist`]).

use autograd::{Device, DeviceRequest};

use crate::{Error, Result};

/// The device to run on, with the choice (and why) written to stderr unless it is the default.
///
/// Under a launcher (`mpirun`), `auto` and `cuda` take the process's own GPU: local rank r (the
/// r-th process on its machine) takes GPU r mod N, one process per GPU.
pub fn select(request: DeviceRequest, tf32: bool) -> Result<Device> {
    let local_rank = crate::dist::launcher_local_rank().unwrap_or(0);
    let (device, why) = request.resolve_for(local_rank).map_err(|e| Error::Device(e.to_string()))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_only_limits_are_errors_that_say_what_to_do() {
        assert!(on_cpu_only("analyze", Device::Cpu).is_ok());
        let e = on_cpu_only("analyze", Device::Cuda(1)).unwrap_err().to_string();
        assert!(e.contains("analyze") && e.contains("--device cpu"), "{e}");
    }
}
