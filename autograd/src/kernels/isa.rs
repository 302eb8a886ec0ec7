//! Which instruction set the kernels run on, chosen once at run time.
//!
//! One binary serves every x86-64 machine: the best of AVX-512F, AVX2+FMA and the portable
//! fallback is detected with `is_x86_feature_detected!` (no `-C target-cpu=native` needed). On
//! aarch64 the kernels are written with NEON intrinsics (NEON is part of the aarch64 baseline,
//! so it is always there); every other target runs the portable kernels.
//!
//! The choice can be forced, process-wide, with the environment variable `AUTOGRAD_ISA`
//! (`avx512`, `avx2`, `neon`, `portable`; read once, ignored if that ISA is not available), and
//! per call through the `*_with(isa, ..)` entry points, which is how the tests cover every path.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};

/// An instruction set a kernel can be compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// x86-64 AVX-512F: 16-lane vectors, 32 vector registers.
    Avx512,
    /// x86-64 AVX2 with FMA: 8-lane vectors, 16 vector registers.
    Avx2Fma,
    /// aarch64 Advanced SIMD (NEON): 4-lane vectors, 32 vector registers, FMA.
    Neon,
    /// `wide`'s portable 8-lane vectors: SSE2 on x86-64, NEON on aarch64, scalar elsewhere.
    Portable,
}

impl Isa {
    /// Every ISA, best first.
    pub const ALL: [Isa; 4] = [Isa::Avx512, Isa::Avx2Fma, Isa::Neon, Isa::Portable];

    /// Whether this machine can run kernels compiled for `self`.
    pub fn available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx512 | Isa::Avx2Fma => false,
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[cfg(not(target_arch = "aarch64"))]
            Isa::Neon => false,
            Isa::Portable => true,
        }
    }

    /// The ISAs this machine can run, best first.
    pub fn all_available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.available()).collect()
    }

    /// The best ISA this machine supports.
    pub fn detect() -> Isa {
        Isa::ALL.into_iter().find(|i| i.available()).unwrap_or(Isa::Portable)
    }

    /// The ISA the kernels use: `AUTOGRAD_ISA` if set and available, else [`Isa::detect`].
    /// Worked out on first use and cached (one relaxed atomic load afterwards).
    #[inline]
    pub fn active() -> Isa {
        static ACTIVE: AtomicU8 = AtomicU8::new(0);
        match ACTIVE.load(Ordering::Relaxed) {
            1 => Isa::Avx512,
            2 => Isa::Avx2Fma,
            3 => Isa::Neon,
            4 => Isa::Portable,
            _ => {
                let isa = std::env::var("AUTOGRAD_ISA")
                    .ok()
                    .and_then(|s| s.parse::<Isa>().ok())
                    .filter(|i| i.available())
                    .unwrap_or_else(Isa::detect);
                let code = match isa {
                    Isa::Avx512 => 1,
                    Isa::Avx2Fma => 2,
                    Isa::Neon => 3,
                    Isa::Portable => 4,
                };
                ACTIVE.store(code, Ordering::Relaxed);
                isa
            }
        }
    }

    /// A short lower-case name: `avx512`, `avx2`, `neon`, `portable`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2Fma => "avx2",
            Isa::Neon => "neon",
            Isa::Portable => "portable",
        }
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Isa {
    type Err = String;
    fn from_str(s: &str) -> Result<Isa, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "avx512" | "avx512f" | "avx-512" => Ok(Isa::Avx512),
            "avx2" | "avx2fma" | "avx2+fma" | "fma" => Ok(Isa::Avx2Fma),
            "neon" | "asimd" => Ok(Isa::Neon),
            "portable" | "fallback" | "generic" => Ok(Isa::Portable),
            other => Err(format!("unknown ISA {other:?}: expected avx512, avx2, neon or portable")),
        }
    }
}
