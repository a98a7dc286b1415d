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

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::attribution::{Attributor, Record};
use crate::model::render_labels;
use crate::sys;

/// How long a vanished namespace's labels stay available to [`Inventory::labels_for`].
pub const GRACE: Duration = Duration::from_secs(30);

/// What a network namespace belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntityKind {
    Host,
    Pod,
    Container,
    Named,
    Process,
}

impl EntityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Host => "host",
            EntityKind::Pod => "pod",
            EntityKind::Container => "container",
            EntityKind::Named => "named",
            EntityKind::Process => "process",
        }
    }

    fn from_str(s: &str) -> EntityKind {
        match s {
            "pod" => EntityKind::Pod,
            _ => EntityKind::Container,
        }
    }

    pub const ALL: [EntityKind; 5] = [
        EntityKind::Host,
        EntityKind::Pod,
        EntityKind::Container,
        EntityKind::Named,
        EntityKind::Process,
    ];
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
    /// The pids the per-process probes (io, fd) sum over: `pids` less the processes of
    /// host-network pods/containers, which are reported as their own process groups.
    pub proc_pids: Vec<i32>,
    /// A process group (a host-network pod or container) rather than a namespace: only the
    /// per-process probes run for it.
    pub group: bool,
    /// The runtime object that names this entity (`containerd/<id>`), if attributed.
    pub runtime_id: Option<String>,
    /// When this entity (this identity) was first seen.
    pub first_seen: Instant,
    /// Bind mount of a named namespace.
    pub mount: Option<PathBuf>,
    /// Lowest pid and its start time (clock ticks since boot).
    anchor: Option<(i32, u64)>,
    /// Rendered entity labels, prefixed to every sample of this namespace.
    pub labels: String,
    /// The pod's (or container's) labels from its runtime, for `${labels:KEY}` in
    /// `metrics.additionalLabels`.
    pub pod_labels: BTreeMap<String, String>,
    /// The extra labels (`k8s_node`, `metrics.additionalLabels`) with their values for this
    /// entity, as its samples carry them: events attributed to it carry them too.
    pub extra_labels: Vec<(String, String)>,
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
        Entity {
            inode,
            cookie,
            kind,
            name,
            k8s_namespace: String::new(),
            k8s_pod: String::new(),
            proc_pids: pids.clone(),
            pids,
            group: false,
            runtime_id: None,
            first_seen: Instant::now(),
            mount,
            anchor,
            labels: String::new(),
            pod_labels: BTreeMap::new(),
            extra_labels: Vec::new(),
        }
    }

    /// Take kind and names from an attribution record.
    fn attribute(&mut self, r: &Record) {
        let (kind, ns, pod, name) = r.labels();
        self.kind = EntityKind::from_str(kind);
        self.k8s_namespace = ns.to_string();
        self.k8s_pod = pod.to_string();
        self.name = name.to_string();
        self.runtime_id = Some(format!("{}/{}", r.runtime, r.id));
        self.pod_labels.clone_from(&r.labels);
    }

    /// Render the label prefix: entity labels, then the extra labels (`${labels:KEY}` in
    /// their values taken from the pod's labels).
    fn render(&mut self, extra: &[(String, String)]) {
        let inode_s = self.inode.to_string();
        let values: Vec<_> = extra
            .iter()
            .map(|(_, v)| crate::attribution::template::expand(v, &self.pod_labels))
            .collect();
        let mut l: Vec<(&str, &str)> = vec![
            ("netns", &inode_s),
            ("kind", self.kind.as_str()),
            ("k8s_namespace", &self.k8s_namespace),
            ("k8s_pod", &self.k8s_pod),
            ("name", &self.name),
        ];
        l.extend(
            extra
                .iter()
                .zip(&values)
                .map(|((k, _), v)| (k.as_str(), v.as_ref())),
        );
        self.labels = render_labels(&l);
        self.extra_labels = extra
            .iter()
            .zip(&values)
            .map(|((k, _), v)| (k.clone(), v.to_string()))
            .collect();
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
    /// Process groups of host-network pods and containers (in the host namespace).
    pub groups: Vec<Arc<Entity>>,
    pub taken: Instant,
    pub host_inode: u64,
    /// How long the scan that made this snapshot took.
    pub scan_duration: Duration,
    /// Every address of every namespace (`RTM_GETADDR` in each; loopback addresses left
    /// out) → its namespace's inode, `None` when several namespaces have it (then no peer is
    /// named: never a wrong one). Empty unless [`Inventory::learn_addresses`] was called.
    pub addresses: HashMap<std::net::IpAddr, Option<u64>>,
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

    /// The namespace on this node that has address `a`, if exactly one has it.
    pub fn peer(&self, a: std::net::IpAddr) -> Option<&Arc<Entity>> {
        let ino = (*self.addresses.get(&a)?)?;
        self.by_inode(ino)
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
    attributor: Attributor,
    /// Labels appended to every entity (k8s_node, metrics.additionalLabels; values may hold
    /// `${labels:KEY}`, expanded per entity).
    extra_labels: Vec<(String, String)>,
    /// Entities that vanished (or were replaced) and when, newest last; kept for [`GRACE`].
    dead: Mutex<VecDeque<(Arc<Entity>, Instant)>>,
    /// Whether scans read every namespace's addresses (for peer names of flows and events).
    learn_addresses: std::sync::atomic::AtomicBool,
}

/// How the inventory attributes namespaces.
pub struct Options {
    pub netns_dirs: Vec<String>,
    pub attributor: Attributor,
    pub extra_labels: Vec<(String, String)>,
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
            let addrs = match with_netns(e, &self.proc_root, crate::rtnl::own_addresses) {
                Ok(Ok(a)) => a,
                Ok(Err(err)) => {
                    log::debug!("netns {}: RTM_GETADDR: {err}", e.inode);
                    continue;
                }
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

        // 4. Attribution: each runtime record's init pid → its namespace; the best record
        //    names the namespace. Records in the host namespace become process groups.
        let records = self.attributor.scan();
        let mut best: HashMap<u64, &Record> = HashMap::new();
        let mut host_records: Vec<&Record> = Vec::new();
        for r in &records {
            let Some(pid) = r.pid else { continue };
            let Some(ino) = ns_inode_of(proc_root, &pid.to_string()) else {
                continue;
            };
            if ino == host_inode {
                host_records.push(r);
                continue;
            }
            let slot = best.entry(ino).or_insert(r);
            if (r.rank(), std::cmp::Reverse(&r.id)) > (slot.rank(), std::cmp::Reverse(&slot.id)) {
                *slot = r;
            }
        }

        // 5. Entities, reusing previous ones only when their anchor proves identity.
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
            let attributed = best.get(&ino).copied();
            let kind = if ino == host_inode {
                EntityKind::Host
            } else if let Some(r) = attributed {
                EntityKind::from_str(r.labels().0)
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
                    && old.runtime_id == attributed.map(|r| format!("{}/{}", r.runtime, r.id))
                    && match (old.anchor, anchor) {
                        (Some(a), Some(b)) => a == b,
                        // No process: a named netns is pinned by its mount. Were it deleted and
                        // re-created on a recycled inode between scans, the cookie check at
                        // collection catches it and distrusts the inode.
                        (None, None) => kind == EntityKind::Named,
                        _ => false,
                    };
                if same {
                    // The first process may have exec'd since (unshare, then the program): its
                    // command is the name now. Named and attributed names do not change.
                    let name = match kind {
                        EntityKind::Process if attributed.is_none() => anchor
                            .map(|(p, _)| comm(proc_root, p))
                            .unwrap_or_else(|| old.name.clone()),
                        _ => old.name.clone(),
                    };
                    let mut e = Entity::new(ino, old.cookie, kind, name, pids, mount, anchor);
                    e.k8s_namespace.clone_from(&old.k8s_namespace);
                    e.k8s_pod.clone_from(&old.k8s_pod);
                    e.runtime_id.clone_from(&old.runtime_id);
                    e.pod_labels.clone_from(&old.pod_labels);
                    e.first_seen = old.first_seen;
                    if let Some(r) = attributed {
                        e.attribute(r);
                    }
                    e.render(&self.extra_labels);
                    entities.push(Arc::new(e));
                    continue;
                }
            }
            let name = match kind {
                EntityKind::Named => named[&ino].0.clone(),
                EntityKind::Process => pids
                    .first()
                    .map(|&p| comm(proc_root, p))
                    .unwrap_or_default(),
                _ => String::new(),
            };
            let mut e = Entity::new(ino, None, kind, name, pids, mount, anchor);
            if let Some(r) = attributed {
                e.attribute(r);
            }
            e.cookie = self.cookie_of(&e);
            e.render(&self.extra_labels);
            entities.push(Arc::new(e));
        }

        // 6. Host-network pods and containers: their processes (the records' init pids and
        //    every descendant in the host namespace) as groups, taken out of the host's own
        //    per-process figures.
        let mut groups = Vec::new();
        if !host_records.is_empty() {
            if let Some(host) = entities.iter_mut().find(|e| e.inode == host_inode) {
                groups = self.host_groups(host_inode, &host.pids, &host_records, prev);
                let grouped: HashSet<i32> =
                    groups.iter().flat_map(|g| g.pids.iter().copied()).collect();
                let mut h = Entity::clone_shallow(host);
                h.proc_pids.retain(|p| !grouped.contains(p));
                *host = Arc::new(h);
            }
        }

        self.bury(prev, &entities, &groups, taken);
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
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = snap.clone();
        snap
    }

    /// Process groups of the host-network records: one per pod (or container), holding the
    /// records' init pids and all their descendants among `host_pids`.
    fn host_groups(
        &self,
        host_inode: u64,
        host_pids: &[i32],
        recs: &[&Record],
        prev: &Snapshot,
    ) -> Vec<Arc<Entity>> {
        let ppid: HashMap<i32, i32> = host_pids
            .iter()
            .filter_map(|&p| Some((p, parent_pid(&self.proc_root, p)?)))
            .collect();
        // Group key → (the record naming it, its root pids).
        let mut by_key: BTreeMap<String, (&Record, Vec<i32>)> = BTreeMap::new();
        for r in recs {
            let Some(pid) = r.pid else { continue };
            let slot = by_key.entry(r.group_key()).or_insert((r, Vec::new()));
            if r.rank() > slot.0.rank() {
                slot.0 = r;
            }
            slot.1.push(pid);
        }
        let mut owner: HashMap<i32, usize> = HashMap::new();
        for (i, (_, roots)) in by_key.values().enumerate() {
            for &p in roots {
                owner.insert(p, i);
            }
        }
        let mut members: Vec<Vec<i32>> = vec![Vec::new(); by_key.len()];
        for &p in host_pids {
            // Walk up to a root pid (bounded: pid chains are short; loops impossible but cheap
            // to guard against).
            let mut cur = p;
            for _ in 0..64 {
                if let Some(&g) = owner.get(&cur) {
                    members[g].push(p);
                    break;
                }
                match ppid.get(&cur) {
                    Some(&pp) if pp > 0 && pp != cur => cur = pp,
                    _ => break,
                }
            }
        }
        let prev_groups: HashMap<&str, &Arc<Entity>> = prev
            .groups
            .iter()
            .filter_map(|g| Some((g.runtime_id.as_deref()?, g)))
            .collect();
        by_key
            .values()
            .zip(members)
            .filter(|(_, pids)| !pids.is_empty())
            .map(|((r, _), pids)| {
                let mut e = Entity::new(
                    host_inode,
                    None,
                    EntityKind::Container,
                    String::new(),
                    pids,
                    None,
                    None,
                );
                e.attribute(r);
                e.group = true;
                if let Some(old) = e.runtime_id.as_deref().and_then(|id| prev_groups.get(id)) {
                    e.first_seen = old.first_seen;
                }
                e.render(&self.extra_labels);
                Arc::new(e)
            })
            .collect()
    }

    /// Remember entities of `prev` that are gone from this scan (or were replaced by another
    /// identity) for [`GRACE`]; forget older ones.
    fn bury(&self, prev: &Snapshot, now: &[Arc<Entity>], groups: &[Arc<Entity>], at: Instant) {
        let alive: HashSet<*const Entity> = now.iter().chain(groups).map(Arc::as_ptr).collect();
        let same_identity: HashSet<(u64, Instant, bool)> = now
            .iter()
            .chain(groups)
            .map(|e| (e.inode, e.first_seen, e.group))
            .collect();
        let mut dead = self.dead.lock().unwrap_or_else(|e| e.into_inner());
        for e in prev.entities.iter().chain(&prev.groups) {
            if alive.contains(&Arc::as_ptr(e))
                || same_identity.contains(&(e.inode, e.first_seen, e.group))
            {
                continue;
            }
            dead.push_back((e.clone(), at));
        }
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
        let snap = self.snapshot();
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

impl Entity {
    /// A copy (entities are shared immutably; the scan adjusts a fresh copy).
    fn clone_shallow(e: &Entity) -> Entity {
        Entity {
            inode: e.inode,
            cookie: e.cookie,
            kind: e.kind,
            name: e.name.clone(),
            k8s_namespace: e.k8s_namespace.clone(),
            k8s_pod: e.k8s_pod.clone(),
            pids: e.pids.clone(),
            proc_pids: e.proc_pids.clone(),
            group: e.group,
            runtime_id: e.runtime_id.clone(),
            first_seen: e.first_seen,
            mount: e.mount.clone(),
            anchor: e.anchor,
            labels: e.labels.clone(),
            pod_labels: e.pod_labels.clone(),
            extra_labels: e.extra_labels.clone(),
        }
    }
}

/// Parent pid (field 4 of `/proc/<pid>/stat`).
fn parent_pid(proc_root: &Path, pid: i32) -> Option<i32> {
    let stat = std::fs::read(proc_root.join(pid.to_string()).join("stat")).ok()?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    rest.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// Watch the runtimes' state folders and the named-netns folders with inotify and rescan on
/// any change (then again a few times over the next 1.5 s: a runtime writes the pid file a
/// moment after creating the folder we see), so a new pod is attributed within about a
/// second of its sandbox starting. The periodic rescan stays as the fallback.
pub fn spawn_watcher(inv: Arc<Inventory>) {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    use std::os::fd::AsFd;
    let ino = match Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC) {
        Ok(i) => i,
        Err(e) => {
            log::warn!(
                "inotify unavailable ({e}): new pods are attributed at the periodic rescan only"
            );
            return;
        }
    };
    let flags = AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_ONLYDIR;
    fn add_all(inv: &Inventory, ino: &Inotify, flags: AddWatchFlags) {
        for d in inv.watch_dirs() {
            let _ = ino.add_watch(&d, flags);
        }
    }
    add_all(&inv, &ino, flags);
    let r = std::thread::Builder::new()
        .name("inventory-watch".into())
        .spawn(move || {
            // Follow-up rescans after a change, in ms from the change.
            const FOLLOW: [u64; 4] = [200, 500, 1000, 1500];
            let mut changed_at: Option<Instant> = None;
            let mut next_follow = 0usize;
            let mut last_rewatch = Instant::now();
            loop {
                let timeout = match changed_at {
                    Some(t) if next_follow < FOLLOW.len() => {
                        let due = t + Duration::from_millis(FOLLOW[next_follow]);
                        due.saturating_duration_since(Instant::now())
                    }
                    _ => Duration::from_secs(5),
                };
                let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
                let mut fds = [nix::poll::PollFd::new(
                    ino.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                let ready =
                    nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)).unwrap_or(0);
                if ready > 0 {
                    // Drain; the contents do not matter, only that something changed.
                    while let Ok(ev) = ino.read_events() {
                        if ev.is_empty() {
                            break;
                        }
                    }
                    // Let the runtime finish its burst of writes.
                    std::thread::sleep(Duration::from_millis(30));
                    while ino.read_events().is_ok_and(|e| !e.is_empty()) {}
                    inv.refresh();
                    add_all(&inv, &ino, flags);
                    changed_at = Some(Instant::now());
                    next_follow = 0;
                    continue;
                }
                if let Some(t) = changed_at {
                    if next_follow < FOLLOW.len()
                        && t.elapsed() >= Duration::from_millis(FOLLOW[next_follow])
                    {
                        inv.refresh();
                        next_follow += 1;
                        continue;
                    }
                }
                // Roots that appear later (first pod in a new containerd namespace).
                if last_rewatch.elapsed() >= Duration::from_secs(5) {
                    add_all(&inv, &ino, flags);
                    last_rewatch = Instant::now();
                }
            }
        });
    if let Err(e) = r {
        log::warn!("cannot start the inventory watcher: {e}");
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
