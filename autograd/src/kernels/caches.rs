//! The data-cache sizes a GEMM's blocking is derived from, as the operating system reports them.
//!
//! * Linux: `/sys/devices/system/cpu/cpu0/cache/index*/{level,type,size,shared_cpu_list}`; a cache
//!   shared by several CPUs (the L2 of an Apple cluster, of some Cortex cores) counts only its
//!   share per CPU.
//! * macOS: `sysctlbyname("hw.perflevel0.l1dcachesize" / "l2cachesize" / "cpusperl2")` (the
//!   performance cores), falling back to `hw.l1dcachesize` / `hw.l2cachesize`.
//!
//! Anything the OS does not tell is `None`; the caller picks its defaults.

/// Per-core data-cache capacities in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheSizes {
    /// Level-1 data cache.
    pub l1d: Option<usize>,
    /// This core's share of the level-2 cache.
    pub l2: Option<usize>,
}

impl CacheSizes {
    /// What this machine's OS reports, read once per process (the GEMM blocking is derived from
    /// it on every call).
    pub fn this_machine() -> CacheSizes {
        static DETECTED: std::sync::OnceLock<CacheSizes> = std::sync::OnceLock::new();
        *DETECTED.get_or_init(CacheSizes::detect)
    }

    /// What this machine's OS reports (read on every call; see [`CacheSizes::this_machine`]).
    pub fn detect() -> CacheSizes {
        #[cfg(target_os = "linux")]
        {
            sysfs()
        }
        #[cfg(target_os = "macos")]
        {
            sysctl()
        }
        #[cfg(not(any(target_os = "linux", target_os = "macos")))]
        {
            CacheSizes { l1d: None, l2: None }
        }
    }
}

/// `"48K"`, `"1024K"`, `"12M"`, `"65536"` (sysfs' spellings) in bytes; `None` for anything else
/// or zero.
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (digits, unit) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 1 << 10),
        b'M' | b'm' => (&s[..s.len() - 1], 1 << 20),
        b'G' | b'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    digits.parse::<usize>().ok()?.checked_mul(unit).filter(|&b| b > 0)
}

/// How many CPUs a sysfs CPU list names: `"0"`, `"0-3"`, `"0-3,8-11"`, `"0,4"`.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) fn count_cpus(list: &str) -> Option<usize> {
    let mut n = 0usize;
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        n += match part.split_once('-') {
            Some((a, b)) => b.trim().parse::<usize>().ok()?.checked_sub(a.trim().parse::<usize>().ok()?)? + 1,
            None => part.trim().parse::<usize>().map(|_| 1).ok()?,
        };
    }
    (n > 0).then_some(n)
}

#[cfg(target_os = "linux")]
fn sysfs() -> CacheSizes {
    let mut out = CacheSizes { l1d: None, l2: None };
    let Ok(dir) = std::fs::read_dir("/sys/devices/system/cpu/cpu0/cache") else { return out };
    for entry in dir.flatten() {
        let read = |f: &str| std::fs::read_to_string(entry.path().join(f)).ok();
        let (Some(level), Some(kind), Some(size)) = (read("level"), read("type"), read("size")) else { continue };
        let Some(bytes) = parse_size(&size) else { continue };
        let sharers = read("shared_cpu_list").as_deref().and_then(count_cpus).unwrap_or(1);
        match (level.trim(), kind.trim()) {
            ("1", "Data" | "Unified") => out.l1d = Some(bytes),
            ("2", "Data" | "Unified") => out.l2 = Some(bytes / sharers),
            _ => {}
        }
    }
    out
}

#[cfg(target_os = "macos")]
fn sysctl() -> CacheSizes {
    use std::ffi::{c_char, c_int, c_void, CStr};
    extern "C" {
        fn sysctlbyname(
            name: *const c_char,
            oldp: *mut c_void,
            oldlenp: *mut usize,
            newp: *mut c_void,
            newlen: usize,
        ) -> c_int;
    }
    let get = |name: &CStr| -> Option<usize> {
        let mut v: u64 = 0;
        let mut len = std::mem::size_of::<u64>();
        // SAFETY: `name` is NUL-terminated; `v` has room for `len` bytes, which sysctl updates
        // to what it wrote (4 or 8 bytes; the little-endian u64 holds either); nothing is set.
        let rc = unsafe { sysctlbyname(name.as_ptr(), (&mut v as *mut u64).cast(), &mut len, std::ptr::null_mut(), 0) };
        (rc == 0 && v > 0).then_some(v as usize)
    };
    let l1d = get(c"hw.perflevel0.l1dcachesize").or_else(|| get(c"hw.l1dcachesize"));
    let l2 = match get(c"hw.perflevel0.l2cachesize") {
        Some(l2) => Some(l2 / get(c"hw.perflevel0.cpusperl2").unwrap_or(1).max(1)),
        None => get(c"hw.l2cachesize"),
    };
    CacheSizes { l1d, l2 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_sysfs_spellings() {
        assert_eq!(parse_size("48K\n"), Some(48 << 10));
        assert_eq!(parse_size("1024K"), Some(1 << 20));
        assert_eq!(parse_size("12M"), Some(12 << 20));
        assert_eq!(parse_size("65536"), Some(65536));
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("0K"), None);
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("99999999999999999999G"), None);
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(count_cpus("0\n"), Some(1));
        assert_eq!(count_cpus("0-3"), Some(4));
        assert_eq!(count_cpus("0-3,8-11"), Some(8));
        assert_eq!(count_cpus("0,4"), Some(2));
        assert_eq!(count_cpus("3-1"), None);
        assert_eq!(count_cpus(""), None);
        assert_eq!(count_cpus("x"), None);
    }

    #[test]
    fn detection_reports_plausible_sizes_or_nothing() {
        let c = CacheSizes::detect();
        eprintln!("caches reported by the OS: {c:?}");
        for size in [c.l1d, c.l2].into_iter().flatten() {
            assert!((1 << 10..=1 << 30).contains(&size), "implausible cache size {size}");
        }
    }
}
