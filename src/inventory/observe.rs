//! Reading the node: processes by namespace, named namespaces (nsfs bind mounts), the host's
//! namespace, `/proc/<pid>` fields, and entering a namespace.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::Entity;
use crate::sys;

/// Parse `net:[4026531840]`.
pub fn parse_ns_link(link: &[u8]) -> Option<u64> {
    let inner = link.strip_prefix(b"net:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(inner).ok()?.parse().ok()
}

pub(super) fn ns_inode_of(proc_root: &Path, pid: &str) -> Option<u64> {
    let link = std::fs::read_link(proc_root.join(pid).join("ns/net")).ok()?;
    parse_ns_link(link.as_os_str().as_encoded_bytes())
}

/// Start time (field 22 of `/proc/<pid>/stat`), in clock ticks since boot.
pub fn start_time(proc_root: &Path, pid: i32) -> Option<u64> {
    let stat = std::fs::read(proc_root.join(pid.to_string()).join("stat")).ok()?;
    // The command may contain spaces and parentheses: fields start after the last ')'.
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    // After ')': field 3 (state) is the first; start time is field 22.
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

pub(super) fn comm(proc_root: &Path, pid: i32) -> String {
    std::fs::read_to_string(proc_root.join(pid.to_string()).join("comm"))
        .map(|s| s.trim_end_matches('\n').to_string())
        .unwrap_or_default()
}

/// Parent pid (field 4 of `/proc/<pid>/stat`).
fn parent_pid(proc_root: &Path, pid: i32) -> Option<i32> {
    let stat = std::fs::read(proc_root.join(pid.to_string()).join("stat")).ok()?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    rest.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// Open the first path that still leads to the entity's namespace (same inode).
pub fn open_entity_netns(e: &Entity, proc_root: &Path) -> Option<std::os::fd::OwnedFd> {
    for path in e.ns_paths(proc_root) {
        if let Ok((fd, ino)) = sys::open_netns(&path) {
            if ino == e.inode {
                return Some(fd);
            }
        }
    }
    None
}

/// Why a namespace could not be entered: callers treat a vanished namespace (nothing to
/// report) apart from a refusal (a missing capability to name).
#[derive(Debug)]
pub enum EnterError {
    /// No path leads to it any more: its processes exited and its mount, if any, is gone.
    Gone,
    /// `setns` refused (EPERM): entering needs CAP_SYS_ADMIN.
    NotPermitted(std::io::Error),
    /// Anything else (our own namespace unreadable, `setns` failing otherwise).
    Io(std::io::Error),
}

impl std::fmt::Display for EnterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnterError::Gone => f.write_str("network namespace vanished"),
            EnterError::NotPermitted(e) | EnterError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for EnterError {}

/// The I/O error [`with_netns`] has always returned: `NotFound` for a vanished namespace, the
/// `setns` or open error otherwise.
impl From<EnterError> for std::io::Error {
    fn from(e: EnterError) -> std::io::Error {
        match e {
            EnterError::Gone => {
                std::io::Error::new(std::io::ErrorKind::NotFound, "network namespace vanished")
            }
            EnterError::NotPermitted(e) | EnterError::Io(e) => e,
        }
    }
}

/// Run `f` on this thread inside the entity's namespace, then return to the thread's own.
/// Fails if the namespace is gone or cannot be entered (see [`enter_and_run`] for the kind).
pub fn with_netns<T>(e: &Entity, proc_root: &Path, f: impl FnOnce() -> T) -> std::io::Result<T> {
    enter_and_run(e, proc_root, f).map_err(std::io::Error::from)
}

/// [`with_netns`], saying why the namespace could not be entered.
pub fn enter_and_run<T>(
    e: &Entity,
    proc_root: &Path,
    f: impl FnOnce() -> T,
) -> Result<T, EnterError> {
    use std::os::fd::AsFd;
    let (home, home_ino) = sys::thread_netns().map_err(EnterError::Io)?;
    if home_ino == e.inode {
        return Ok(f());
    }
    enter(e, proc_root)?;
    let r = f();
    if let Err(err) = sys::enter_netns(home.as_fd()) {
        // A thread stuck in a foreign namespace would mislabel everything it does next.
        log::error!("cannot return to own network namespace: {err}; aborting");
        std::process::abort();
    }
    Ok(r)
}

/// Move the calling thread into the entity's namespace (the caller returns it home).
pub fn enter(e: &Entity, proc_root: &Path) -> Result<(), EnterError> {
    use std::os::fd::AsFd;
    let target = open_entity_netns(e, proc_root).ok_or(EnterError::Gone)?;
    sys::enter_netns(target.as_fd()).map_err(|err| {
        if err.raw_os_error() == Some(libc::EPERM) {
            EnterError::NotPermitted(err)
        } else {
            EnterError::Io(err)
        }
    })
}

/// Whether setns works here: try entering our own namespace (a no-op that still needs
/// CAP_SYS_ADMIN).
pub(super) fn probe_can_enter() -> bool {
    use std::os::fd::AsFd;
    match sys::thread_netns() {
        Ok((fd, _)) => sys::enter_netns(fd.as_fd()).is_ok(),
        Err(_) => false,
    }
}

/// Thread-group ids by the inode of their network namespace, each list sorted.
pub(super) fn processes_by_netns(proc_root: &Path) -> HashMap<u64, Vec<i32>> {
    let mut by_inode: HashMap<u64, Vec<i32>> = HashMap::new();
    if let Ok(rd) = std::fs::read_dir(proc_root) {
        for ent in rd.flatten() {
            let name = ent.file_name();
            let Some(s) = name.to_str() else { continue };
            let Ok(pid) = s.parse::<i32>() else { continue };
            if let Some(ino) = ns_inode_of(proc_root, s) {
                by_inode.entry(ino).or_default().push(pid);
            }
        }
    }
    for pids in by_inode.values_mut() {
        pids.sort_unstable();
    }
    by_inode
}

/// The anchor of each namespace with processes: its lowest pid and that pid's start time.
pub(super) fn anchors(
    proc_root: &Path,
    procs: &HashMap<u64, Vec<i32>>,
) -> HashMap<u64, (i32, u64)> {
    procs
        .iter()
        .filter_map(|(&ino, pids)| {
            let &p = pids.first()?;
            Some((ino, (p, start_time(proc_root, p)?)))
        })
        .collect()
}

/// Named namespaces: nsfs bind mounts in `dirs` (a plain file left behind by a failed
/// `ip netns add` is not on nsfs and is ignored), by inode, with their name and path; the first
/// name (in folder order, then name order) of an inode mounted twice.
pub(super) fn named_namespaces(
    proc_root: &Path,
    dirs: &[PathBuf],
) -> BTreeMap<u64, (String, PathBuf)> {
    let nsfs_dev = std::fs::metadata(proc_root.join("self/ns/net"))
        .map(|m| m.dev())
        .ok();
    let mut named: BTreeMap<u64, (String, PathBuf)> = BTreeMap::new();
    let mut seen_dirs = Vec::new();
    for dir in dirs {
        let Ok(canon) = std::fs::canonicalize(dir) else {
            continue;
        };
        if seen_dirs.contains(&canon) {
            continue;
        }
        seen_dirs.push(canon.clone());
        let Ok(rd) = std::fs::read_dir(&canon) else {
            continue;
        };
        let mut files: Vec<(String, PathBuf)> = rd
            .flatten()
            .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
            .collect();
        files.sort();
        for (name, path) in files {
            let Ok(md) = std::fs::metadata(&path) else {
                continue;
            };
            if Some(md.dev()) != nsfs_dev {
                continue;
            }
            named.entry(md.ino()).or_insert((name, path));
        }
    }
    named
}

/// The host namespace: pid 1's, else our own (0 if neither can be read).
pub(super) fn host_inode(proc_root: &Path) -> u64 {
    ns_inode_of(proc_root, "1")
        .or_else(|| ns_inode_of(proc_root, "self"))
        .unwrap_or(0)
}

/// The parent of each of `pids` (those whose `stat` could be read).
pub(super) fn parents(proc_root: &Path, pids: &[i32]) -> HashMap<i32, i32> {
    pids.iter()
        .filter_map(|&p| Some((p, parent_pid(proc_root, p)?)))
        .collect()
}
