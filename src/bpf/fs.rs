//! tracefs and bpffs: found where mounted, mounted when missing (they are not
//! mounted at boot on every system).
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nix::mount::{mount, MsFlags};

use super::error::{KError, KResult};

/// Default tracefs mount point.
pub const TRACEFS: &str = "/sys/kernel/tracing";
/// Legacy tracefs location under debugfs.
pub const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";
/// Default bpffs mount point.
pub const BPFFS: &str = "/sys/fs/bpf";

/// Filesystem type mounted exactly at `path`, per /proc/self/mounts.
pub fn fs_type_at(path: &Path) -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().rev().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, at, ty) = (f.next()?, f.next()?, f.next()?);
        (Path::new(at) == path).then(|| ty.to_string())
    })
}

fn ensure_mounted(path: &str, fstype: &str, source: &str) -> KResult<PathBuf> {
    let p = Path::new(path);
    if fs_type_at(p).as_deref() == Some(fstype) {
        return Ok(p.to_path_buf());
    }
    if !p.is_dir() {
        return Err(KError::NotFound {
            what: "mount point",
            name: path.into(),
        });
    }
    mount(
        Some(source),
        p,
        Some(fstype),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| KError::io(format!("mount -t {fstype} {path}"), e.into()))?;
    Ok(p.to_path_buf())
}

static TRACEFS_PATH: OnceLock<PathBuf> = OnceLock::new();

/// The tracefs root: `/sys/kernel/tracing` (mounted if needed), else the
/// debugfs location if that one is populated.
pub fn tracefs() -> KResult<&'static Path> {
    if let Some(p) = TRACEFS_PATH.get() {
        return Ok(p);
    }
    let p = match ensure_mounted(TRACEFS, "tracefs", "nodev") {
        Ok(p) => p,
        Err(e) => {
            let d = Path::new(DEBUGFS_TRACING);
            if d.join("events").is_dir() {
                d.to_path_buf()
            } else {
                return Err(e);
            }
        }
    };
    Ok(TRACEFS_PATH.get_or_init(|| p))
}

/// The bpffs root (mounted if needed). Only needed for pinning.
pub fn bpffs() -> KResult<PathBuf> {
    ensure_mounted(BPFFS, "bpf", "bpf")
}

/// The id of tracepoint `cat:name` from `<tracefs>/events/<cat>/<name>/id`.
pub fn tracepoint_id(category: &str, name: &str) -> KResult<u64> {
    if category.contains(['/', '.']) || name.contains(['/', '.']) {
        return Err(KError::NotFound {
            what: "tracepoint",
            name: format!("{category}:{name}"),
        });
    }
    let path = tracefs()?
        .join("events")
        .join(category)
        .join(name)
        .join("id");
    match std::fs::read_to_string(&path) {
        Ok(s) => s.trim().parse().map_err(|_| KError::Io {
            what: path.display().to_string(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not a number"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(KError::NotFound {
            what: "tracepoint",
            name: format!("{category}:{name}"),
        }),
        Err(e) => Err(KError::io(path.display().to_string(), e)),
    }
}

/// Number of possible CPUs, from `/sys/devices/system/cpu/possible` ("0-3,5").
pub fn possible_cpus() -> KResult<usize> {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .map_err(|e| KError::io("/sys/devices/system/cpu/possible", e))?;
    Ok(cpu_list(&s).last().map_or(1, |c| c + 1))
}

/// Online CPUs, from `/sys/devices/system/cpu/online`.
pub fn online_cpus() -> KResult<Vec<usize>> {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .map_err(|e| KError::io("/sys/devices/system/cpu/online", e))?;
    Ok(cpu_list(&s))
}

/// Parses a kernel CPU list ("0-3,5,7-8").
pub fn cpu_list(s: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                    out.extend(a..=b.min(a + 65536));
                }
            }
            None => out.extend(part.parse::<usize>().ok()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(cpu_list("0-1\n"), [0, 1]);
        assert_eq!(cpu_list("0-3,5,7-8"), [0, 1, 2, 3, 5, 7, 8]);
        assert_eq!(cpu_list("0"), [0]);
        assert!(cpu_list("").is_empty());
    }

    #[test]
    fn path_like_tracepoint_names_are_refused() {
        assert!(matches!(
            tracepoint_id("..", "x"),
            Err(KError::NotFound { .. })
        ));
    }
}
