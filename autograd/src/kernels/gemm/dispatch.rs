//! ISA dispatch: what each instruction set provides ([`GemmArch`]), the macro that builds one
//! from a [`Simd`] type and its blocking, and the one `match` from an [`Isa`] to it.
//!
//! Adding an ISA takes: a variant of [`Isa`] with its run-time detection (`kernels/isa.rs`), a
//! [`Simd`] implementation (`kernels/simd.rs`), a file like `avx2.rs` holding one [`gemm_arch!`]
//! invocation, and one arm in [`on_arch!`] below. An ISA with a microkernel of its own shape
//! (NEON's FMAs by vector lane, `neon.rs`) implements [`GemmArch`] by hand in its file instead.

use super::blocking::CacheBlocking;
use super::buffers::Buffers;
use super::kernel::KernelFn;
use super::Gemm;
use crate::kernels::simd::Simd;
#[allow(unused_imports)]
use crate::kernels::Isa;

/// One ISA's blocking parameters and kernels.
pub(crate) trait GemmArch {
    /// The vector type the kernels and the packing are written in.
    type S: Simd;
    /// Tile width (columns of C per microkernel call); B panels are this wide.
    const NR: usize;
    /// The tallest tile; the kernel exists for every `MR` in `1..=MR_MAX`.
    const MR_MAX: usize;
    /// Whether A is packed k-major whatever its strides (the kernel reads A by vector lanes),
    /// instead of in the layout that makes packing a copy.
    const A_KMAJOR_ALWAYS: bool = false;
    /// The deepest depth block the kernel is built for (the cache sizes may call for less).
    const KC_MAX: usize;
    /// Row stride of a rows-layout A micro-panel (`KC_MAX` plus one cache line, so rows spread
    /// over cache sets).
    const KCP: usize;
    /// Depth and block sizes for product `g` (from the caches it was issued for).
    fn cache_blocking(g: &Gemm) -> CacheBlocking {
        CacheBlocking::for_caches(g.caches, Self::MR_MAX, Self::KC_MAX)
    }
    /// Whether the kernels come in strided variants (`Tile::rsa`, `Tile::rsb`), which read a
    /// row-contiguous A in place, and B too on the direct path of small products.
    const DIRECT: bool = false;
    /// Whether the microkernel issues the prefetch schedule's lines during its k loop
    /// (`Tile::pf`); otherwise they are issued at once before each tile.
    const PF_IN_KERNEL: bool = false;
    /// The microkernel for `mr` rows, `nv` vectors, A layout, strided or not.
    fn kernel(mr: usize, nv: usize, kmajor: bool, strided: bool) -> KernelFn;
    /// The dot-product kernel for the narrowest B edges, rows-layout A, if the ISA has one.
    fn dot_kernel(mr: usize, strided: bool) -> Option<KernelFn>;
    /// [`super::loops::block`] compiled for this ISA: a `#[target_feature]` function into
    /// which the generic loops, the packing and the vector intrinsics are all inlined.
    ///
    /// # Safety
    /// The CPU must support the ISA; `g` must describe valid operands.
    unsafe fn block(g: &Gemm, bufs: &mut Buffers, next: Option<&Gemm>);
}

/// Defines `pub(crate) struct Arch` implementing [`GemmArch`] for one ISA: its [`Simd`] type,
/// the `target_feature` its functions are compiled with (omitted for the portable kernel), its
/// tile width and deepest depth block, and the tile heights `1..=MR_MAX` to instantiate.
macro_rules! gemm_arch {
    (
        simd: $S:ty, $(feature: $feat:literal,)?
        nr: $nr:expr, kc_max: $kc:expr, pf_in_kernel: $pf:expr,
        mr: $($m:literal)*
    ) => {
        use $crate::kernels::gemm::buffers::Buffers;
        use $crate::kernels::gemm::dispatch::GemmArch;
        use $crate::kernels::gemm::kernel::{dot_kernel, dot_table, kernel, kernel_table, KernelFn, Tile};
        use $crate::kernels::gemm::Gemm;

        const NR: usize = $nr;
        const KC: usize = $kc;
        const KCP: usize = KC + 16;

        $(#[target_feature(enable = $feat)])?
        unsafe fn k<const MR: usize, const NV: usize, const KMAJOR: bool, const STRIDED: bool>(t: &Tile) {
            // SAFETY: forwarded contract (valid panels and C tile, the ISA is available).
            unsafe { kernel::<$S, MR, NV, KMAJOR, NR, KCP, STRIDED, $pf>(t) }
        }

        $(#[target_feature(enable = $feat)])?
        unsafe fn d<const MR: usize, const STRIDED: bool>(t: &Tile) {
            // SAFETY: as for `k`.
            unsafe { dot_kernel::<$S, MR, KCP, STRIDED>(t) }
        }

        /// The BLIS loops, packing included, compiled for this ISA.
        $(#[target_feature(enable = $feat)])?
        unsafe fn block(g: &Gemm, bufs: &mut Buffers, next: Option<&Gemm>) {
            // SAFETY: as for `GemmArch::block`.
            unsafe { $crate::kernels::gemm::loops::block::<Arch>(g, bufs, next) }
        }

        pub(crate) struct Arch;

        impl GemmArch for Arch {
            type S = $S;
            const NR: usize = NR;
            const MR_MAX: usize = [$($m),*].len();
            const KC_MAX: usize = KC;
            const KCP: usize = KCP;
            const DIRECT: bool = true;
            const PF_IN_KERNEL: bool = $pf;

            fn kernel(mr: usize, nv: usize, kmajor: bool, strided: bool) -> KernelFn {
                kernel_table!(k, mr, nv, kmajor, strided; $($m)*)
            }

            fn dot_kernel(mr: usize, strided: bool) -> Option<KernelFn> {
                Some(dot_table!(d, mr, strided; $($m)*))
            }

            unsafe fn block(g: &Gemm, bufs: &mut Buffers, next: Option<&Gemm>) {
                // SAFETY: the caller guarantees the ISA and the operands.
                unsafe { block(g, bufs, next) }
            }
        }
    };
}
pub(crate) use gemm_arch;

/// Evaluates `$body` with the type alias `$G` set to the [`GemmArch`] of `$isa`: the one list of
/// which ISA runs which kernels.
macro_rules! on_arch {
    ($isa:expr, $G:ident => $body:expr) => {
        match $isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                type $G = super::avx512::Arch;
                $body
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => {
                type $G = super::avx2::Arch;
                $body
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => {
                type $G = super::neon::Arch;
                $body
            }
            _ => {
                type $G = super::portable::Arch;
                $body
            }
        }
    };
}

/// One product on `isa`, cut over `threads` threads (see [`super::threads::product`]).
///
/// # Safety
/// `g` (and `next`) must describe valid operands.
pub(super) unsafe fn product(isa: Isa, g: &Gemm, threads: usize, next: Option<&Gemm>) {
    assert!(isa.available(), "sgemm: ISA {isa} is not available on this machine");
    // SAFETY: the ISA is available (asserted) and the caller vouches for the operands.
    on_arch!(isa, G => unsafe { super::threads::product::<G>(g, threads, next) })
}

/// The task grid `(tm, tn, tk)` that a product of this shape and layout is cut into on
/// `threads` threads (row-major operands unless transposed). For tests and benchmarks.
#[doc(hidden)]
pub fn split_for(
    isa: Isa,
    (m, k, n): (usize, usize, usize),
    a_t: bool,
    b_t: bool,
    threads: usize,
) -> (usize, usize, usize) {
    let g = Gemm::shape_only(m, k, n, a_t, b_t);
    let s = on_arch!(isa, G => super::split::plan::<G>(&g, threads));
    (s.tm, s.tn, s.tk)
}
