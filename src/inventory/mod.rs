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
//!
//! Attribution ([`crate::attribution`]) names each namespace after the pod or container whose
//! init process lives in it, rebuilt from the runtimes' state at every scan: labels come only
//! from a record whose pid is in the namespace *now*, so a recycled inode never keeps a dead
//! pod's labels. Pods and containers sharing the host namespace (hostNetwork) keep the host's
//! series, but their processes form *process groups* with their own labels, for the
//! per-process probes (io, fd). Entities that vanished are remembered for
//! [`GRACE`] so late eBPF events still find their labels ([`Inventory::labels_for`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::attribution::Attributor;
use crate::collectors::NetnsHandles;
use crate::sys;

mod entity;
mod observe;
mod reconcile;
mod watch;

pub use entity::{Entity, EntityKind, Snapshot};
use observe::probe_can_enter;
pub use observe::{
    enter, enter_and_run, open_entity_netns, parse_ns_link, start_time, with_netns, EnterError,
};
pub use watch::spawn_watcher;

/// How long a vanished namespace's labels stay available to [`Inventory::labels_for`].
pub const GRACE: Duration = Duration::from_secs(30);

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
    attributor: Attributor,
    /// Labels appended to every entity (k8s_node, metrics.additionalLabels; values may hold
    /// `${labels:KEY}`, expanded per entity).
    extra_labels: Vec<(String, String)>,
    /// Entities that vanished (or were replaced) and when, newest last; kept for [`GRACE`].
    dead: Mutex<VecDeque<(Arc<Entity>, Instant)>>,
    /// Whether scans read every namespace's addresses (for peer names of flows and events).
    learn_addresses: std::sync::atomic::AtomicBool,
    /// What collection keeps open per namespace inode (netlink sockets, procfs files), so
    /// that scrapes need not enter namespaces or open files; closed by the scan that no
    /// longer finds the namespace.
    handles: Mutex<HashMap<u64, Arc<NetnsHandles>>>,
    /// At most this many namespaces keep handles: a budget of file descriptors under
    /// `RLIMIT_NOFILE`, so kept handles never starve the endpoint or the probes of fds.
    max_kept: usize,
}

/// File descriptors left for everything but kept handles (listeners, connections, BPF maps
/// and links, sinks, reads in flight).
const FDS_RESERVED: u64 = 512;
/// Kept handles per namespace at most: rtnetlink and sock_diag, and the procfs files the
/// probes read (dev, snmp, snmp6, netstat, sockstat, sockstat6, stat/nf_conntrack,
/// softnet_stat, ip_vs, ip_vs_stats).
const FDS_PER_NETNS: u64 = 12;

/// How the inventory attributes namespaces.
pub struct Options {
    pub netns_dirs: Vec<String>,
    pub attributor: Attributor,
    pub extra_labels: Vec<(String, String)>,
}

impl Inventory {
    /// An inventory without runtime attribution.
    pub fn new(proc_root: impl Into<PathBuf>, netns_dirs: &[String]) -> Inventory {
        Self::with_options(
            proc_root,
            Options {
                netns_dirs: netns_dirs.to_vec(),
                attributor: Attributor::none(),
                extra_labels: Vec::new(),
            },
        )
    }

    pub fn with_options(proc_root: impl Into<PathBuf>, opts: Options) -> Inventory {
        let proc_root = proc_root.into();
        let netns_dirs = &opts.netns_dirs;
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
                groups: Vec::new(),
                taken: Instant::now(),
                host_inode: 0,
                scan_duration: Duration::ZERO,
                addresses: HashMap::new(),
            })),
            scan_lock: Mutex::new(()),
            distrusted: Mutex::new(HashSet::new()),
            attributor: opts.attributor,
            extra_labels: opts.extra_labels,
            dead: Mutex::new(VecDeque::new()),
            learn_addresses: std::sync::atomic::AtomicBool::new(false),
            handles: Mutex::new(HashMap::new()),
            max_kept: (sys::nofile_limit().saturating_sub(FDS_RESERVED) / FDS_PER_NETNS) as usize,
        };
        inv.attributor.log_presence();
        inv.refresh();
        inv
    }

    /// From now on every scan also reads each namespace's addresses (`RTM_GETADDR`, entering
    /// it), so that flows and events can name a peer on this node ([`Snapshot::peer`]); rescans
    /// at once the first time.
    pub fn learn_addresses(&self) {
        use std::sync::atomic::Ordering;
        if !self.learn_addresses.swap(true, Ordering::SeqCst) {
            self.refresh();
        }
    }

    /// address → namespace inode over `entities` (see [`Snapshot::addresses`]).
    fn addresses_of(&self, entities: &[Arc<Entity>]) -> HashMap<std::net::IpAddr, Option<u64>> {
        let mut out: HashMap<std::net::IpAddr, Option<u64>> = HashMap::new();
        let own = sys::thread_netns().map(|(_, i)| i).ok();
        for e in entities {
            if e.group || (!self.can_enter && Some(e.inode) != own) {
                continue;
            }
            let addrs = match enter_and_run(e, &self.proc_root, crate::rtnl::own_addresses) {
                Ok(Ok(a)) => a,
                Ok(Err(err)) => {
                    log::debug!("netns {}: RTM_GETADDR: {err}", e.inode);
                    continue;
                }
                // Gone since this scan saw it: no addresses, nothing to say.
                Err(EnterError::Gone) => continue,
                Err(err) => {
                    log::debug!("netns {}: cannot enter for its addresses: {err}", e.inode);
                    continue;
                }
            };
            for a in addrs {
                out.entry(a)
                    .and_modify(|v| {
                        if *v != Some(e.inode) {
                            *v = None;
                        }
                    })
                    .or_insert(Some(e.inode));
            }
        }
        out
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

    /// One scan: observe the node, reconcile with `prev` (the pure step, [`reconcile`]), group
    /// the host-network pods' processes, remember what ended, publish the snapshot.
    fn scan_locked(&self, prev: &Snapshot) -> Arc<Snapshot> {
        let taken = Instant::now();
        let distrusted =
            std::mem::take(&mut *self.distrusted.lock().unwrap_or_else(|e| e.into_inner()));
        let proc_root = &self.proc_root;

        // 1.-3. Processes by namespace, named namespaces, the host namespace.
        let procs = observe::processes_by_netns(proc_root);
        let anchors = observe::anchors(proc_root, &procs);
        let named = observe::named_namespaces(proc_root, &self.netns_dirs);
        let host_inode = observe::host_inode(proc_root);

        // 4. Attribution: each runtime record's init pid → its namespace; the best record
        //    names the namespace. Records in the host namespace become process groups.
        let records = self.attributor.scan();
        let (attributed, host_records) = reconcile::pick_records(&records, host_inode, |pid| {
            observe::ns_inode_of(proc_root, &pid.to_string())
        });

        // 5. Entities, reusing previous ones only when their anchor proves identity.
        let seen = reconcile::Observed {
            procs,
            anchors,
            named,
            host_inode,
            attributed,
        };
        let reconcile::Reconciled {
            mut entities,
            added,
            removed,
        } = reconcile::reconcile(&prev.entities, seen, &distrusted, &self.extra_labels, self);
        if !added.is_empty() || !removed.is_empty() {
            log::debug!(
                "inventory: {} new namespace identities, {} ended",
                added.len(),
                removed.len()
            );
        }

        // 6. Host-network pods and containers: their processes (the records' init pids and
        //    every descendant in the host namespace) as groups, taken out of the host's own
        //    per-process figures.
        let mut groups = Vec::new();
        if !host_records.is_empty() {
            if let Some(host) = entities.iter_mut().find(|e| e.inode == host_inode) {
                let ppid = observe::parents(&self.proc_root, &host.pids);
                groups = reconcile::host_groups(
                    host_inode,
                    &host.pids,
                    &ppid,
                    &host_records,
                    &prev.groups,
                    &self.extra_labels,
                );
                let grouped: HashSet<i32> =
                    groups.iter().flat_map(|g| g.pids.iter().copied()).collect();
                let mut h = Entity::clone_shallow(host);
                h.proc_pids.retain(|p| !grouped.contains(p));
                *host = Arc::new(h);
            }
        }

        let ended_groups = reconcile::ended(&prev.groups, &groups);
        self.bury(removed.into_iter().chain(ended_groups), taken);
        let addresses = if self
            .learn_addresses
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            self.addresses_of(&entities)
        } else {
            HashMap::new()
        };
        let snap = Arc::new(Snapshot {
            entities,
            groups,
            taken,
            host_inode,
            scan_duration: taken.elapsed(),
            addresses,
        });
        // Close what is kept for namespaces that are gone: a kept handle holds its namespace
        // alive.
        {
            let live: HashSet<u64> = snap.entities.iter().map(|e| e.inode).collect();
            self.handles
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|ino, _| live.contains(ino));
        }
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = snap.clone();
        snap
    }

    /// What is kept open for `e`'s namespace: only what was opened in the namespace `e` is
    /// (same inode and, where the kernel has cookies, same cookie).
    pub fn kept_handles(&self, e: &Entity) -> Option<Arc<NetnsHandles>> {
        let kept = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        let h = kept.get(&e.inode)?;
        match (h.cookie, e.cookie) {
            (Some(a), Some(b)) if a != b => None,
            _ => Some(h.clone()),
        }
    }

    /// Keep `handles` for namespace `inode` (replacing what was kept for it). `false` when
    /// the file-descriptor budget is spent: the caller uses them for one collection only.
    pub fn keep_handles(&self, inode: u64, handles: Arc<NetnsHandles>) -> bool {
        let mut kept = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() >= self.max_kept && !kept.contains_key(&inode) {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                log::warn!(
                    "sockets and files are kept open for at most {} namespaces (RLIMIT_NOFILE {}): \
                     scrapes open them anew, entering namespaces, beyond that; raise LimitNOFILE to avoid it",
                    self.max_kept,
                    sys::nofile_limit()
                )
            });
            return false;
        }
        kept.insert(inode, handles);
        true
    }

    /// Close what is kept for namespace `inode` (collection found it gone or replaced).
    pub fn forget_handles(&self, inode: u64) {
        self.handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&inode);
    }

    /// Close everything kept (a configuration reload: the probes may read other files).
    pub fn forget_all_handles(&self) {
        self.handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Netlink sockets and procfs files kept open, over all namespaces.
    pub fn kept_counts(&self) -> (usize, usize) {
        let kept = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        kept.values()
            .map(|h| h.counts())
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    }

    /// Remember entities that are gone from this scan (or were replaced by another identity)
    /// for [`GRACE`]; forget older ones.
    fn bury(&self, ended: impl Iterator<Item = Arc<Entity>>, at: Instant) {
        let mut dead = self.dead.lock().unwrap_or_else(|e| e.into_inner());
        dead.extend(ended.map(|e| (e, at)));
        while dead
            .front()
            .is_some_and(|(_, t)| at.duration_since(*t) > GRACE)
        {
            dead.pop_front();
        }
    }

    /// The labels of the namespace `inode` as it was at `at` (e.g. when an eBPF event
    /// happened): see [`Inventory::entity_at`].
    pub fn labels_for(&self, inode: u64, at: Instant) -> Option<String> {
        self.entity_at(inode, at).map(|e| e.labels.clone())
    }

    /// The entity of the namespace `inode` as it was at `at`: the one alive then, even if it
    /// vanished since (for [`GRACE`]); else the current one (an event may precede the first scan
    /// that saw a new namespace). `None` if the inode is unknown.
    pub fn entity_at(&self, inode: u64, at: Instant) -> Option<Arc<Entity>> {
        self.entity_at_in(&self.snapshot(), inode, at)
    }

    /// [`Inventory::entity_at`] with the current entities from `snap` (a reader takes one
    /// snapshot for a batch of events instead of one per event).
    pub fn entity_at_in(&self, snap: &Snapshot, inode: u64, at: Instant) -> Option<Arc<Entity>> {
        let cur = snap.by_inode(inode);
        if let Some(e) = cur.filter(|e| e.first_seen <= at) {
            return Some(e.clone());
        }
        let dead = self.dead.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        for (e, died) in dead.iter().rev() {
            if e.inode == inode
                && !e.group
                && e.first_seen <= at
                && at <= *died
                && now.duration_since(*died) <= GRACE
            {
                return Some(e.clone());
            }
        }
        cur.cloned()
    }

    /// Attribution sources present on this node.
    pub fn attribution_sources(&self) -> Vec<&'static str> {
        self.attributor.present()
    }

    /// Folders to watch for container starts and stops.
    pub fn watch_dirs(&self) -> Vec<PathBuf> {
        let mut v = self.attributor.watch_dirs();
        v.extend(self.netns_dirs.iter().cloned());
        v
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

impl reconcile::Node for Inventory {
    fn comm(&self, pid: i32) -> String {
        observe::comm(&self.proc_root, pid)
    }

    fn cookie(&self, e: &Entity) -> Option<u64> {
        self.cookie_of(e)
    }
}

#[cfg(test)]
mod tests {
    use super::observe::ns_inode_of;
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
