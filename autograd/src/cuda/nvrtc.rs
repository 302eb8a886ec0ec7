//! NVRTC: CUDA C++ source to PTX at run time, loaded from `libnvrtc` on demand.
//!
//! The same function serves the GPU (which compiles each kernel family for its own compute
//! capability the first time the family is used) and CI's check that every kernel source
//! compiles without an error or a warning for sm_80 and sm_90 (`examples/nvrtc_check.rs`).

use std::ffi::{CStr, CString};
use std::sync::OnceLock;

use cudarc::nvrtc::{result, sys};

use super::driver::{CudaError, Result};

/// Whether `libnvrtc` can be loaded (it is looked up on the library path: `LD_LIBRARY_PATH`,
/// the system's, or a CUDA installation's).
pub fn available() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    // SAFETY: only tries to dlopen the library by its candidate names.
    *PRESENT.get_or_init(|| unsafe { sys::is_culib_present() })
}

/// The NVRTC version `(major, minor)`.
pub fn version() -> Result<(i32, i32)> {
    if !available() {
        return Err(CudaError(MISSING.into()));
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is present; the pointers are valid for writes.
    unsafe { sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| CudaError(format!("nvrtcVersion: {e:?}")))?;
    Ok((major, minor))
}

const MISSING: &str = "NVRTC (libnvrtc.so) not found: install the CUDA toolkit or the `nvidia-cuda-nvrtc` \
                       wheel and put its lib directory on LD_LIBRARY_PATH";

/// A compiled kernel family: NUL-terminated PTX and the compiler's log (warnings; empty for a
/// clean compile).
pub struct Compiled {
    /// The PTX text, NUL-terminated as `cuModuleLoadData` wants it.
    pub ptx: Vec<u8>,
    /// NVRTC's program log.
    pub log: String,
}

/// Compiles `source` for the virtual architecture `compute_XY` (`arch = (X, Y)`).
/// A compile error is an `Err` carrying NVRTC's log.
pub fn compile(name: &str, source: &str, arch: (u32, u32)) -> Result<Compiled> {
    if !available() {
        return Err(CudaError(MISSING.into()));
    }
    let src = CString::new(source).map_err(|_| CudaError(format!("{name}: the source holds a NUL byte")))?;
    let cname = CString::new(name).map_err(|_| CudaError(format!("{name}: bad program name")))?;
    let prog = result::create_program(&src, Some(&cname))
        .map_err(|e| CudaError(format!("{name}: nvrtcCreateProgram: {e:?}")))?;
    let options =
        [format!("--gpu-architecture=compute_{}{}", arch.0, arch.1), "--std=c++17".into(), "-lineinfo".into()];
    // SAFETY: `prog` was just created and is destroyed once, below.
    let out = unsafe {
        let compiled = result::compile_program(prog, &options);
        let log =
            result::get_program_log(prog).map(|l| CStr::from_ptr(l.as_ptr()).to_string_lossy().trim().to_string());
        let ptx = compiled.and_then(|()| result::get_ptx(prog));
        let _ = result::destroy_program(prog);
        match (ptx, log) {
            (Ok(ptx), Ok(log)) => Ok(Compiled { ptx: ptx.into_iter().map(|c| c as u8).collect(), log }),
            (Err(e), Ok(log)) => {
                Err(CudaError(format!("{name}: NVRTC failed ({e:?}) for compute_{}{}:\n{log}", arch.0, arch.1)))
            }
            (_, Err(e)) => Err(CudaError(format!("{name}: nvrtcGetProgramLog: {e:?}"))),
        }
    };
    out
}

/// The names of the `.entry` points (kernels) a PTX module defines.
pub fn ptx_entries(ptx: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(ptx);
    text.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let rest = l.strip_prefix(".visible .entry ").or_else(|| l.strip_prefix(".entry "))?;
            Some(rest.split(|c: char| c == '(' || c.is_whitespace()).next()?.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_read_from_ptx_text() {
        let ptx = b".version 8.0\n.visible .entry fill_f32(\n\t.param .u64 a\n)\n.visible .entry add_f64 (\n";
        assert_eq!(ptx_entries(ptx), vec!["fill_f32", "add_f64"]);
    }
}
