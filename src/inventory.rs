//! Inventory of network namespaces: every netns on the node, from `/proc/*/ns/net`, the named
//! bind mounts in `/run/netns` and `/var/run/netns`, and the host's, each with its entity
//! labels.
//!
//! Identity: nsfs inode numbers are reused within minutes, so an inode alone never carries
//! labels from one scan to the next. An entity is kept across scans only while its anchor
//! process (the lowest pid seen in it, with its start time) is still alive in it — a living
//! process pins its namespace, so the inode cannot have been recycled. Otherwise it is rebuilt
//! from scratch, with a fresh netns cookie (`SO_NETNS_COOKIE`, never reused) that collection
//! checks again after entering the namespace.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::model::render_labels;
use crate::sys;

/// What a network namespace belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntityKind {
    Host,
    Named,
    Process,
}

impl EntityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Host => "host",
            EntityKind::Named => "named",
            EntityKind::Process => "process",
        }
    }

    pub const ALL: [EntityKind; 3] = [EntityKind::Host, EntityKind::Named, EntityKind::Process];
}

/// One network namespace and its labels.
#[derive(Debug)]
pub struct Entity {
    pub inode: u64,
    /// Netns cookie, where the kernel has `SO_NETNS_COOKIE` and we may enter namespaces.
    pub cookie: Option<u64>,
    pub kind: EntityKind,
    pub name: String,
    pub k8s_namespace: String,
    pub k8s_pod: String,
    /// Thread-group ids in this namespace, sorted.
    pub pids: Vec<i32>,
    /// Bind mount of a named namespace.
    pub mount: Option<PathBuf>,
    /// Lowest pid and its start time (clock ticks since boot).
    anchor: Option<(i32, u64)>,
    /// Rendered entity labels, prefixed to every sample of this namespace.
    pub labels: String,
}

impl Entity {
    fn new(
        inode: u64,
        cookie: Option<u64>,
        kind: EntityKind,
        name: String,
        pids: Vec<i32>,
        mount: Option<PathBuf>,
        anchor: Option<(i32, u64)>,
    ) -> Entity {
        let inode_s = inode.to_string();
        let labels = render_labels(&[
            ("netns", &inode_s),
            ("kind", kind.as_str()),
            ("k8s_namespace", ""),
            ("k8s_pod", ""),
            ("name", &name),
        ]);
        Entity {
            inode,
            cookie,
            kind,
            name,
            k8s_namespace: String::new(),
            k8s_pod: String::new(),
            pids,
            mount,
            anchor,
            labels,
        }
    }

    /// Paths that lead to this namespace: `/proc/<pid>/ns/net` for each pid, then the mount.
    pub fn ns_paths<'a>(&'a self, proc_root: &'a Path) -> impl Iterator<Item = PathBuf> + 'a {
        self.pids
            .iter()
            .map(move |p| proc_root.join(p.to_string()).join("ns/net"))
            .chain(self.mount.iter().cloned())
    }
}

/// One scan's result.
#[derive(Debug)]
pub struct Snapshot {
    pub entities: Vec<Arc<Entity>>,
    pub taken: Instant,
    pub host_inode: u64,
}

impl Snapshot {
    pub fn count_by_kind(&self) -> BTreeMap<EntityKind, usize> {
        let mut m: BTreeMap<EntityKind, usize> = EntityKind::ALL.iter().map(|k| (*k, 0)).collect();
        for e in &self.entities {
            *m.entry(e.kind).or_default() += 1;
        }
        m
    }

    pub fn by_inode(&self, inode: u64) -> Option<&Arc<Entity>> {
        self.entities.iter().find(|e| e.inode == inode)
    }
}

/// The namespace inventory, rescanned on demand.
pub struct Inventory {
    proc_root: PathBuf,
    netns_dirs: Vec<PathBuf>,
    /// Whether this process may `setns` (CAP_SYS_ADMIN); decided once at start.
    can_enter: bool,
    current: Mutex<Arc<Snapshot>>,
    /// Serialises scans; a scrape waiting for a fresh snapshot shares the running scan.
    scan_lock: Mutex<()>,
    /// Inodes whose cookie did not match at collection: rebuilt from scratch at the next scan.
    distrusted: Mutex<HashSet<u64>>,
}

/// Parse `net:[4026531840]`.
pub fn parse_ns_link(link: &[u8]) -> Option<u64> {
    let inner = link.strip_prefix(b"net:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(inner).ok()?.parse().ok()
}

fn ns_inode_of(proc_root: &Path, pid: &str) -> Option<u64> {
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

fn comm(proc_root: &Path, pid: i32) -> String {
    std::fs::read_to_string(proc_root.join(pid.to_string()).join("comm"))
        .map(|s| s.trim_end_matches('\n').to_string())
        .unwrap_or_default()
}

impl Inventory {
    pub fn new(proc_root: impl Into<PathBuf>, netns_dirs: &[String]) -> Inventory {
        let proc_root = proc_root.into();
        let can_enter = probe_can_enter();
        if !can_enter {
            log::warn!(
                "cannot enter network namespaces (setns needs CAP_SYS_ADMIN): netlink probes will cover only \
                 the exporter's own namespace, and named namespaces without processes are not read"
            );
        }
        let inv = Inventory {
            proc_root,
            netns_dirs: netns_dirs.iter().map(PathBuf::from).collect(),
            can_enter,
            current: Mutex::new(Arc::new(Snapshot {
                entities: Vec::new(),
                taken: Instant::now(),
                host_inode: 0,
            })),
            scan_lock: Mutex::new(()),
            distrusted: Mutex::new(HashSet::new()),
        };
        inv.refresh();
        inv
    }

    pub fn can_enter(&self) -> bool {
        self.can_enter
    }

    pub fn proc_root(&self) -> &Path {
        &self.proc_root
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The current snapshot if it is younger than `max_age`, else a new scan.
    pub fn fresh(&self, max_age: std::time::Duration) -> Arc<Snapshot> {
        let snap = self.snapshot();
        if snap.taken.elapsed() <= max_age {
            return snap;
        }
        let started = Instant::now();
        let _g = self.scan_lock.lock().unwrap_or_else(|e| e.into_inner());
        // Someone else may have scanned while we waited.
        let snap = self.snapshot();
        if snap.taken >= started {
            return snap;
        }
        self.scan_locked(&snap)
    }

    /// Rescan now.
    pub fn refresh(&self) -> Arc<Snapshot> {
        let _g = self.scan_lock.lock().unwrap_or_else(|e| e.into_inner());
        let prev = self.snapshot();
        self.scan_locked(&prev)
    }

    /// Collection found a different namespace behind this inode (its cookie changed): forget
    /// what we know about it, so the next scan labels it afresh.
    pub fn distrust(&self, inode: u64) {
        self.distrusted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(inode);
    }

    fn scan_locked(&self, prev: &Snapshot) -> Arc<Snapshot> {
        let taken = Instant::now();
        let distrusted =
            std::mem::take(&mut *self.distrusted.lock().unwrap_or_else(|e| e.into_inner()));
        let proc_root = &self.proc_root;

        // 1. Processes by namespace.
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

        // 2. Named namespaces: nsfs bind mounts (a plain file left behind by a failed
        //    `ip netns add` is not on nsfs and is ignored).
        let nsfs_dev = std::fs::metadata(proc_root.join("self/ns/net"))
            .map(|m| m.dev())
            .ok();
        let mut named: BTreeMap<u64, (String, PathBuf)> = BTreeMap::new();
        let mut seen_dirs = Vec::new();
        for dir in &self.netns_dirs {
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

        // 3. The host namespace: pid 1's, else our own.
        let host_inode = ns_inode_of(proc_root, "1")
            .or_else(|| ns_inode_of(proc_root, "self"))
            .unwrap_or(0);

        // 4. Entities, reusing previous ones only when their anchor proves identity.
        let prev_by_inode: HashMap<u64, &Arc<Entity>> =
            prev.entities.iter().map(|e| (e.inode, e)).collect();
        let mut inodes: Vec<u64> = by_inode.keys().chain(named.keys()).copied().collect();
        if host_inode != 0 {
            inodes.push(host_inode);
        }
        inodes.sort_unstable();
        inodes.dedup();

        let mut entities = Vec::with_capacity(inodes.len());
        for ino in inodes {
            let pids = by_inode.remove(&ino).unwrap_or_default();
            let kind = if ino == host_inode {
                EntityKind::Host
            } else if named.contains_key(&ino) {
                EntityKind::Named
            } else {
                EntityKind::Process
            };
            let mount = named.get(&ino).map(|(_, p)| p.clone());
            let anchor = pids
                .first()
                .and_then(|&p| start_time(proc_root, p).map(|st| (p, st)));

            if let Some(old) = prev_by_inode
                .get(&ino)
                .filter(|_| !distrusted.contains(&ino))
            {
                let same = old.kind == kind
                    && old.mount == mount
                    && match (old.anchor, anchor) {
                        (Some(a), Some(b)) => a == b,
                        // No process: a named netns is pinned by its mount. Were it deleted and
                        // re-created on a recycled inode between scans, the cookie check at
                        // collection catches it and distrusts the inode.
                        (None, None) => kind == EntityKind::Named,
                        _ => false,
                    };
                if same {
                    let mut e =
                        Entity::new(ino, old.cookie, kind, old.name.clone(), pids, mount, anchor);
                    e.k8s_namespace.clone_from(&old.k8s_namespace);
                    e.k8s_pod.clone_from(&old.k8s_pod);
                    entities.push(Arc::new(e));
                    continue;
                }
            }
            let name = match kind {
                EntityKind::Host => String::new(),
                EntityKind::Named => named[&ino].0.clone(),
                EntityKind::Process => pids
                    .first()
                    .map(|&p| comm(proc_root, p))
                    .unwrap_or_default(),
            };
            let mut e = Entity::new(ino, None, kind, name, pids, mount, anchor);
            e.cookie = self.cookie_of(&e);
            entities.push(Arc::new(e));
        }

        let snap = Arc::new(Snapshot {
            entities,
            taken,
            host_inode,
        });
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = snap.clone();
        snap
    }

    /// Enter the entity's namespace briefly to read its cookie.
    fn cookie_of(&self, e: &Entity) -> Option<u64> {
        if !self.can_enter {
            return None;
        }
        with_netns(e, &self.proc_root, sys::current_netns_cookie)
            .ok()
            .flatten()
    }
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

/// Run `f` on this thread inside the entity's namespace, then return to the thread's own.
/// Fails if the namespace is gone or cannot be entered.
pub fn with_netns<T>(e: &Entity, proc_root: &Path, f: impl FnOnce() -> T) -> std::io::Result<T> {
    use std::os::fd::AsFd;
    let (home, home_ino) = sys::thread_netns()?;
    if home_ino == e.inode {
        return Ok(f());
    }
    let target = open_entity_netns(e, proc_root).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, "network namespace vanished")
    })?;
    sys::enter_netns(target.as_fd())?;
    let r = f();
    if let Err(err) = sys::enter_netns(home.as_fd()) {
        // A thread stuck in a foreign namespace would mislabel everything it does next.
        log::error!("cannot return to own network namespace: {err}; aborting");
        std::process::abort();
    }
    Ok(r)
}

/// Whether setns works here: try entering our own namespace (a no-op that still needs
/// CAP_SYS_ADMIN).
fn probe_can_enter() -> bool {
    use std::os::fd::AsFd;
    match sys::thread_netns() {
        Ok((fd, _)) => sys::enter_netns(fd.as_fd()).is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ns_link_parse() {
        assert_eq!(parse_ns_link(b"net:[4026531840]"), Some(4026531840));
        assert_eq!(parse_ns_link(b"net:[]"), None);
        assert_eq!(parse_ns_link(b"mnt:[1]"), None);
        assert_eq!(parse_ns_link(b"net:[12"), None);
    }

    #[test]
    fn start_time_of_self_with_odd_comm() {
        let st = start_time(Path::new("/proc"), std::process::id() as i32);
        assert!(st.is_some());
    }

    #[test]
    fn own_namespace_is_found() {
        let inv = Inventory::new("/proc", &["/run/netns".to_string()]);
        let snap = inv.snapshot();
        let me = ns_inode_of(Path::new("/proc"), "self").unwrap();
        let e = snap.by_inode(me).expect("own netns in inventory");
        assert!(e.pids.contains(&(std::process::id() as i32)));
        assert_eq!(
            snap.entities
                .iter()
                .filter(|e| e.kind == EntityKind::Host)
                .count(),
            1
        );
    }
}
