//! Where a tensor's elements live, and how a program asks for a device.
//!
//! [`Device`] names a place (`cpu`, `cuda:N`); [`DeviceRequest`] is what a user asks for on the
//! command line (`auto`, `cpu`, `cuda`, `cuda:N`) and [`DeviceRequest::resolve`] turns it into
//! a device that is really there, or an error that says why not: a build without the `cuda`
//! feature, no driver library, no GPU. The `Cuda` variant exists in every build so that the
//! question can be asked (and answered with that error) by a CPU-only binary too.

use std::fmt;

/// Where a tensor's elements live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    /// Host memory, run on by the SIMD and GEMM kernels of [`crate::kernels`].
    Cpu,
    /// CUDA device `N` (ordinal), or the CUDA emulator at ordinal [`Device::EMULATOR`].
    Cuda(usize),
}

impl Device {
    /// The ordinal under which the CUDA emulator (a test device that runs the CUDA kernels on
    /// the CPU) is registered.
    pub const EMULATOR: usize = usize::MAX;

    /// Whether this is a CUDA device (a GPU or the emulator).
    pub fn is_cuda(self) -> bool {
        matches!(self, Device::Cuda(_))
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(Device::EMULATOR) => f.write_str("cuda:emulator"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Why a device cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceError(pub String);

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DeviceError {}

/// A device as a user asks for it: `auto` (a GPU when one is present, else the CPU), `cuda` (a
/// GPU), or one device by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceRequest {
    /// A GPU when one is usable, else the CPU.
    Auto,
    /// A GPU, or an error saying why none can be used: `cuda` without an index.
    Gpu,
    /// This device, or an error saying why it cannot be used.
    Exactly(Device),
}

impl std::str::FromStr for DeviceRequest {
    type Err = String;
    /// `auto`, `cpu`, `cuda` (a GPU), `cuda:N`, or `cuda:emulator` (the CUDA emulator: the GPU
    /// code path on the CPU, slowly, for checking it without a GPU), in any case.
    fn from_str(s: &str) -> Result<Self, String> {
        let l = s.trim().to_ascii_lowercase();
        match l.as_str() {
            "auto" => Ok(DeviceRequest::Auto),
            "cpu" => Ok(DeviceRequest::Exactly(Device::Cpu)),
            "cuda" | "gpu" => Ok(DeviceRequest::Gpu),
            "cuda:emulator" => Ok(DeviceRequest::Exactly(Device::Cuda(Device::EMULATOR))),
            _ => match l.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) if n != Device::EMULATOR => Ok(DeviceRequest::Exactly(Device::Cuda(n))),
                _ => Err(format!("unknown device {s:?}: expected auto, cpu, cuda or cuda:N (N = 0, 1, ...)")),
            },
        }
    }
}

impl DeviceRequest {
    /// The device to run on and a sentence for the user saying which one was chosen and why.
    /// `cuda[:N]` is an error, never a silent fall back to the CPU, when that device cannot be
    /// opened; `auto` falls back to the CPU and says why. `auto` and `cuda` take the first GPU.
    pub fn resolve(self) -> Result<(Device, String), DeviceError> {
        self.resolve_for(0)
    }

    /// As [`DeviceRequest::resolve`] for process `local_rank` of a job with one process per
    /// GPU: `auto` and `cuda` take GPU `local_rank mod count`, so that the processes a launcher
    /// starts on one machine spread over its GPUs; a named device is taken as named.
    pub fn resolve_for(self, local_rank: usize) -> Result<(Device, String), DeviceError> {
        let own = |count: usize| local_rank % count.max(1);
        match self {
            DeviceRequest::Exactly(Device::Cpu) => Ok((Device::Cpu, "device: cpu".into())),
            DeviceRequest::Exactly(Device::Cuda(n)) => {
                let name = open(n)?;
                Ok((Device::Cuda(n), format!("device: {} ({name})", Device::Cuda(n))))
            }
            DeviceRequest::Gpu => {
                let n = own(gpu_count().map_err(|e| DeviceError(format!("cuda: {e}")))?);
                DeviceRequest::Exactly(Device::Cuda(n)).resolve_for(local_rank)
            }
            DeviceRequest::Auto => match gpu_count() {
                Ok(0) => Ok((Device::Cpu, "device: cpu (auto: the CUDA driver reports no GPU)".into())),
                Ok(count) => {
                    let n = own(count);
                    match open(n) {
                        Ok(name) => {
                            Ok((Device::Cuda(n), format!("device: cuda:{n} ({name}) (auto: a GPU is present)")))
                        }
                        Err(e) => Ok((Device::Cpu, format!("device: cpu (auto: cuda:{n} cannot be used: {e})"))),
                    }
                }
                Err(e) => Ok((Device::Cpu, format!("device: cpu (auto: {e})"))),
            },
        }
    }
}

/// Opens CUDA device `n` and describes it.
#[cfg(feature = "cuda")]
fn open(n: usize) -> Result<String, DeviceError> {
    crate::cuda::device(n).map(|g| g.describe()).map_err(|e| DeviceError(format!("cuda:{n}: {e}")))
}

#[cfg(not(feature = "cuda"))]
fn open(n: usize) -> Result<String, DeviceError> {
    Err(DeviceError(format!("cuda:{n}: {NO_CUDA}")))
}

/// How many GPUs the machine has.
#[cfg(feature = "cuda")]
fn gpu_count() -> Result<usize, DeviceError> {
    crate::cuda::device_count().map_err(|e| DeviceError(e.to_string()))
}

#[cfg(not(feature = "cuda"))]
fn gpu_count() -> Result<usize, DeviceError> {
    Err(DeviceError(NO_CUDA.into()))
}

/// What a build without the GPU path says when asked for a GPU.
#[cfg(not(feature = "cuda"))]
pub(crate) const NO_CUDA: &str =
    "this binary was built without the GPU path; rebuild it with `cargo build --release --features cuda`";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_bad_names_are_errors() {
        assert_eq!("auto".parse(), Ok(DeviceRequest::Auto));
        assert_eq!("CPU".parse(), Ok(DeviceRequest::Exactly(Device::Cpu)));
        assert_eq!("cuda".parse(), Ok(DeviceRequest::Gpu));
        assert_eq!("Cuda:Emulator".parse(), Ok(DeviceRequest::Exactly(Device::Cuda(Device::EMULATOR))));
        assert_eq!("cuda:3".parse(), Ok(DeviceRequest::Exactly(Device::Cuda(3))));
        for bad in ["", "cuda:", "cuda:-1", "cuda:x", "tpu", "cuda:18446744073709551615"] {
            let e = bad.parse::<DeviceRequest>().unwrap_err();
            assert!(e.contains("expected auto, cpu, cuda or cuda:N"), "{bad:?}: {e}");
        }
        assert_eq!(Device::Cuda(2).to_string(), "cuda:2");
        assert_eq!(Device::Cuda(Device::EMULATOR).to_string(), "cuda:emulator");
    }

    #[test]
    fn cpu_and_auto_always_resolve() {
        assert_eq!(DeviceRequest::Exactly(Device::Cpu).resolve().unwrap().0, Device::Cpu);
        let (d, why) = DeviceRequest::Auto.resolve().unwrap();
        assert!(why.starts_with(&format!("device: {d}")), "{why}");
    }

    /// Without the feature, asking for a GPU is an error that says how to get one.
    #[cfg(not(feature = "cuda"))]
    #[test]
    fn a_cpu_only_build_refuses_cuda_clearly() {
        let e = DeviceRequest::Exactly(Device::Cuda(0)).resolve().unwrap_err();
        assert!(e.0.contains("--features cuda"), "{e}");
        let e = DeviceRequest::Gpu.resolve_for(3).unwrap_err();
        assert!(e.0.contains("--features cuda"), "{e}");
        let (d, why) = DeviceRequest::Auto.resolve().unwrap();
        assert_eq!(d, Device::Cpu);
        assert!(why.contains("without the GPU path"), "{why}");
    }
}
