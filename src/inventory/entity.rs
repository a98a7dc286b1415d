//! What the inventory knows about a namespace: its [`Entity`] (kind, names, pids, labels) and
//! one scan's [`Snapshot`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::attribution::Record;
use crate::model::render_labels;

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

    pub(super) fn from_str(s: &str) -> EntityKind {
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
    pub(super) anchor: Option<(i32, u64)>,
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
    pub(crate) fn new(
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
    pub(super) fn attribute(&mut self, r: &Record) {
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
    pub(super) fn render(&mut self, extra: &[(String, String)]) {
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
        // Empty values are left out: Prometheus does not tell an empty label from an absent
        // one (`k8s_pod=""` matches both), and on a node of named namespaces the empty
        // `k8s_namespace=""` and `k8s_pod=""` were a quarter of the page.
        l.retain(|(_, v)| !v.is_empty());
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

impl Entity {
    /// A copy (entities are shared immutably; the scan adjusts a fresh copy).
    pub(super) fn clone_shallow(e: &Entity) -> Entity {
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
