//! The pure step of a scan: the previous entities and what the node shows now (namespaces,
//! their processes and anchors, named mounts, attribution) → this scan's entities, with the
//! namespaces that are new identities and the old entities whose identity ended.
//!
//! Nothing here reads the kernel: a process's command and a namespace's cookie come through
//! [`Node`], so the rules (keep an entity only while its anchor proves identity) are tested
//! without one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use super::{Entity, EntityKind};
use crate::attribution::Record;

/// What one scan observed.
pub(super) struct Observed<'r> {
    /// Thread-group ids by namespace inode, sorted.
    pub procs: HashMap<u64, Vec<i32>>,
    /// Lowest pid and its start time, for namespaces with processes (where it could be read).
    pub anchors: HashMap<u64, (i32, u64)>,
    /// Named namespaces by inode: name and bind mount.
    pub named: BTreeMap<u64, (String, PathBuf)>,
    pub host_inode: u64,
    /// The record that names each (non-host) namespace.
    pub attributed: HashMap<u64, &'r Record>,
}

/// What the reconcile step may ask of the node, lazily (only for the entities that need it).
pub(super) trait Node {
    /// A process's command (`/proc/<pid>/comm`), empty if unreadable.
    fn comm(&self, pid: i32) -> String;
    /// The cookie of a namespace seen for the first time (entering it), if available.
    fn cookie(&self, e: &Entity) -> Option<u64>;
}

/// One scan's entities.
pub(super) struct Reconciled {
    /// Sorted by inode.
    pub entities: Vec<Arc<Entity>>,
    /// Inodes whose entity is a new identity (a new namespace, or a recycled or changed one).
    pub added: Vec<u64>,
    /// Previous entities whose identity ended (gone, or replaced by a new one), in their order.
    pub removed: Vec<Arc<Entity>>,
}

/// Each runtime record's init pid → its namespace (`netns_of`); the best record names the
/// namespace. Records in the host namespace are returned apart (they become process groups).
pub(super) fn pick_records(
    records: &[Record],
    host_inode: u64,
    netns_of: impl Fn(i32) -> Option<u64>,
) -> (HashMap<u64, &Record>, Vec<&Record>) {
    let mut best: HashMap<u64, &Record> = HashMap::new();
    let mut host_records: Vec<&Record> = Vec::new();
    for r in records {
        let Some(pid) = r.pid else { continue };
        let Some(ino) = netns_of(pid) else {
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
    (best, host_records)
}

/// This scan's entities, reusing a previous one only when its anchor proves identity (and the
/// inode is not `distrusted`); labels rendered with `extra_labels`.
pub(super) fn reconcile(
    prev: &[Arc<Entity>],
    mut seen: Observed<'_>,
    distrusted: &HashSet<u64>,
    extra_labels: &[(String, String)],
    node: &dyn Node,
) -> Reconciled {
    let prev_by_inode: HashMap<u64, &Arc<Entity>> = prev.iter().map(|e| (e.inode, e)).collect();
    let host_inode = seen.host_inode;
    let mut inodes: Vec<u64> = seen
        .procs
        .keys()
        .chain(seen.named.keys())
        .copied()
        .collect();
    if host_inode != 0 {
        inodes.push(host_inode);
    }
    inodes.sort_unstable();
    inodes.dedup();

    let mut entities = Vec::with_capacity(inodes.len());
    let mut added = Vec::new();
    for ino in inodes {
        let pids = seen.procs.remove(&ino).unwrap_or_default();
        let attributed = seen.attributed.get(&ino).copied();
        let kind = if ino == host_inode {
            EntityKind::Host
        } else if let Some(r) = attributed {
            EntityKind::from_str(r.labels().0)
        } else if seen.named.contains_key(&ino) {
            EntityKind::Named
        } else {
            EntityKind::Process
        };
        let mount = seen.named.get(&ino).map(|(_, p)| p.clone());
        let anchor = seen.anchors.get(&ino).copied();

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
                        .map(|(p, _)| node.comm(p))
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
                e.render(extra_labels);
                entities.push(Arc::new(e));
                continue;
            }
        }
        let name = match kind {
            EntityKind::Named => seen.named[&ino].0.clone(),
            EntityKind::Process => pids.first().map(|&p| node.comm(p)).unwrap_or_default(),
            _ => String::new(),
        };
        let mut e = Entity::new(ino, None, kind, name, pids, mount, anchor);
        if let Some(r) = attributed {
            e.attribute(r);
        }
        e.cookie = node.cookie(&e);
        e.render(extra_labels);
        entities.push(Arc::new(e));
        added.push(ino);
    }
    let removed = ended(prev, &entities);
    Reconciled {
        entities,
        added,
        removed,
    }
}

/// Process groups of the host-network records: one per pod (or container), holding the
/// records' init pids and all their descendants among `host_pids` (`ppid`: their parents);
/// a group keeps its first sighting from `prev_groups`.
pub(super) fn host_groups(
    host_inode: u64,
    host_pids: &[i32],
    ppid: &HashMap<i32, i32>,
    recs: &[&Record],
    prev_groups: &[Arc<Entity>],
    extra_labels: &[(String, String)],
) -> Vec<Arc<Entity>> {
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
    let prev_groups: HashMap<&str, &Arc<Entity>> = prev_groups
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
            e.render(extra_labels);
            Arc::new(e)
        })
        .collect()
}

/// The entities of `prev` whose identity (inode, first seen, group or not) is not in `now`.
pub(super) fn ended(prev: &[Arc<Entity>], now: &[Arc<Entity>]) -> Vec<Arc<Entity>> {
    let alive: HashSet<*const Entity> = now.iter().map(Arc::as_ptr).collect();
    let same_identity: HashSet<(u64, Instant, bool)> = now
        .iter()
        .map(|e| (e.inode, e.first_seen, e.group))
        .collect();
    prev.iter()
        .filter(|e| {
            !alive.contains(&Arc::as_ptr(e))
                && !same_identity.contains(&(e.inode, e.first_seen, e.group))
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};

    use super::*;
    use crate::attribution::RecordKind;

    const HOST: u64 = 4026531840;

    /// A node whose processes' commands are set by the test; cookies are numbered in order.
    #[derive(Default)]
    struct FakeNode {
        comms: RefCell<HashMap<i32, String>>,
        cookies: Cell<u64>,
    }

    impl FakeNode {
        fn set_comm(&self, pid: i32, c: &str) {
            self.comms.borrow_mut().insert(pid, c.to_string());
        }
    }

    impl Node for FakeNode {
        fn comm(&self, pid: i32) -> String {
            self.comms.borrow().get(&pid).cloned().unwrap_or_default()
        }
        fn cookie(&self, _: &Entity) -> Option<u64> {
            self.cookies.set(self.cookies.get() + 1);
            Some(self.cookies.get())
        }
    }

    /// What the node shows: the host namespace with pid 1, and `(inode, [(pid, start time)])`,
    /// the lowest pid first.
    fn observed<'r>(namespaces: &[(u64, &[(i32, u64)])]) -> Observed<'r> {
        let mut o = Observed {
            procs: HashMap::new(),
            anchors: HashMap::new(),
            named: BTreeMap::new(),
            host_inode: HOST,
            attributed: HashMap::new(),
        };
        for &(ino, procs) in [(HOST, &[(1, 5)][..])].iter().chain(namespaces) {
            o.procs.insert(ino, procs.iter().map(|p| p.0).collect());
            if let Some(&a) = procs.first() {
                o.anchors.insert(ino, a);
            }
        }
        o
    }

    fn pod_record(id: &str, pod: &str, pid: i32) -> Record {
        Record {
            k8s_namespace: "default".into(),
            k8s_pod: pod.into(),
            name: pod.into(),
            pid: Some(pid),
            labels: [("app".to_string(), pod.to_string())].into(),
            ..Record::new("containerd", id, RecordKind::PodSandbox)
        }
    }

    fn run(prev: &[Arc<Entity>], seen: Observed<'_>, node: &FakeNode) -> Reconciled {
        reconcile(prev, seen, &HashSet::new(), &[], node)
    }

    fn by_inode(r: &Reconciled, ino: u64) -> &Arc<Entity> {
        r.entities.iter().find(|e| e.inode == ino).expect("entity")
    }

    fn inodes(v: &[Arc<Entity>]) -> Vec<u64> {
        v.iter().map(|e| e.inode).collect()
    }

    #[test]
    fn new_namespace_is_added_with_its_command_and_cookie() {
        let node = FakeNode::default();
        node.set_comm(100, "sleep");
        let r = run(&[], observed(&[(7, &[(100, 50)])]), &node);
        assert_eq!(inodes(&r.entities), [7, HOST]);
        assert_eq!(r.added, [7, HOST]);
        assert!(r.removed.is_empty());
        let e = by_inode(&r, 7);
        assert_eq!((e.kind, e.name.as_str()), (EntityKind::Process, "sleep"));
        assert_eq!(e.cookie, Some(1));
        assert_eq!(by_inode(&r, HOST).kind, EntityKind::Host);
        assert_eq!(
            e.labels, "netns=\"7\",kind=\"process\",name=\"sleep\"",
            "empty labels are not written"
        );
    }

    #[test]
    fn same_anchor_keeps_the_identity_and_gone_namespace_is_removed() {
        let node = FakeNode::default();
        let first = run(
            &[],
            observed(&[(7, &[(100, 50)]), (8, &[(200, 60)])]),
            &node,
        );
        // 7 keeps its anchor (another process joined), 8 is gone.
        let second = run(
            &first.entities,
            observed(&[(7, &[(100, 50), (101, 70)])]),
            &node,
        );
        assert_eq!(inodes(&second.entities), [7, HOST]);
        assert!(second.added.is_empty());
        assert_eq!(inodes(&second.removed), [8]);
        let (old, new) = (by_inode(&first, 7), by_inode(&second, 7));
        assert_eq!(new.first_seen, old.first_seen);
        assert_eq!(new.cookie, old.cookie, "a kept entity is not entered again");
        assert_eq!(new.pids, [100, 101]);
        assert_eq!(node.cookies.get(), 3, "entered only the first time");
    }

    #[test]
    fn recycled_inode_is_a_new_identity() {
        let node = FakeNode::default();
        let first = run(&[], observed(&[(7, &[(100, 50)])]), &node);
        // Same inode, same lowest pid, another start time: the pid and the inode were reused.
        let second = run(&first.entities, observed(&[(7, &[(100, 90)])]), &node);
        assert_eq!(second.added, [7]);
        assert_eq!(inodes(&second.removed), [7]);
        let (old, new) = (by_inode(&first, 7), by_inode(&second, 7));
        assert_ne!(new.first_seen, old.first_seen);
        assert_ne!(new.cookie, old.cookie);
    }

    #[test]
    fn anchor_pid_change_rebuilds() {
        let node = FakeNode::default();
        node.set_comm(100, "first");
        node.set_comm(101, "second");
        let first = run(&[], observed(&[(7, &[(100, 50), (101, 51)])]), &node);
        // The lowest pid exited; the namespace lives on in 101, but nothing proves it is the
        // same one.
        let second = run(&first.entities, observed(&[(7, &[(101, 51)])]), &node);
        assert!(second.added.contains(&7));
        assert_eq!(inodes(&second.removed), [7]);
        assert_eq!(by_inode(&second, 7).name, "second");
    }

    #[test]
    fn exec_renames_a_kept_process_namespace() {
        let node = FakeNode::default();
        node.set_comm(100, "unshare");
        let first = run(&[], observed(&[(7, &[(100, 50)])]), &node);
        node.set_comm(100, "nginx");
        let second = run(&first.entities, observed(&[(7, &[(100, 50)])]), &node);
        assert!(!second.added.contains(&7));
        let e = by_inode(&second, 7);
        assert_eq!(e.name, "nginx");
        assert_eq!(e.first_seen, by_inode(&first, 7).first_seen);
    }

    #[test]
    fn named_namespace_without_processes_is_kept_and_a_rename_rebuilds() {
        let node = FakeNode::default();
        let named = |name: &str| {
            let mut o = observed(&[]);
            o.named.insert(
                9,
                (name.to_string(), PathBuf::from("/run/netns").join(name)),
            );
            o
        };
        let first = run(&[], named("blue"), &node);
        let e = by_inode(&first, 9);
        assert_eq!((e.kind, e.name.as_str()), (EntityKind::Named, "blue"));
        assert_eq!(
            e.mount.as_deref(),
            Some(std::path::Path::new("/run/netns/blue"))
        );
        let second = run(&first.entities, named("blue"), &node);
        assert!(second.removed.is_empty());
        assert_eq!(by_inode(&second, 9).first_seen, e.first_seen);
        // Another mount (renamed): a new identity with the new name.
        let third = run(&second.entities, named("green"), &node);
        assert_eq!(inodes(&third.removed), [9]);
        assert_eq!(by_inode(&third, 9).name, "green");
    }

    #[test]
    fn a_process_namespace_without_anchor_is_never_kept() {
        let node = FakeNode::default();
        let first = run(&[], observed(&[(7, &[(100, 50)])]), &node);
        let mut o = observed(&[(7, &[(100, 50)])]);
        // The start time could not be read (the process is exiting).
        o.anchors.remove(&7);
        let second = run(&first.entities, o, &node);
        assert_eq!(inodes(&second.removed), [7]);
    }

    #[test]
    fn distrusted_inode_is_rebuilt() {
        let node = FakeNode::default();
        let first = run(&[], observed(&[(7, &[(100, 50)])]), &node);
        let distrusted: HashSet<u64> = [7].into();
        let second = reconcile(
            &first.entities,
            observed(&[(7, &[(100, 50)])]),
            &distrusted,
            &[],
            &node,
        );
        assert!(second.added.contains(&7));
        assert_eq!(inodes(&second.removed), [7]);
        assert_ne!(by_inode(&second, 7).cookie, by_inode(&first, 7).cookie);
    }

    #[test]
    fn attribution_names_the_namespace_and_a_new_record_rebuilds() {
        let node = FakeNode::default();
        let recs = [pod_record("sb1", "web", 100)];
        let (best, host) = pick_records(&recs, HOST, |_| Some(7));
        assert!(host.is_empty());
        let mut o = observed(&[(7, &[(100, 50)])]);
        o.attributed = best;
        let extra = [
            ("k8s_node".to_string(), "n1".to_string()),
            ("app".to_string(), "${labels:app}".to_string()),
        ];
        let first = reconcile(&[], o, &HashSet::new(), &extra, &node);
        let e = by_inode(&first, 7);
        assert_eq!(e.kind, EntityKind::Pod);
        assert_eq!(e.runtime_id.as_deref(), Some("containerd/sb1"));
        assert_eq!(
            e.labels,
            "netns=\"7\",kind=\"pod\",k8s_namespace=\"default\",k8s_pod=\"web\",name=\"web\",k8s_node=\"n1\",app=\"web\""
        );
        // Same record: kept. Another sandbox in the namespace (a restarted pod): rebuilt.
        let mut o = observed(&[(7, &[(100, 50)])]);
        o.attributed = pick_records(&recs, HOST, |_| Some(7)).0;
        let second = reconcile(&first.entities, o, &HashSet::new(), &extra, &node);
        assert!(second.removed.is_empty());
        let recs2 = [pod_record("sb2", "web", 100)];
        let mut o = observed(&[(7, &[(100, 50)])]);
        o.attributed = pick_records(&recs2, HOST, |_| Some(7)).0;
        let third = reconcile(&second.entities, o, &HashSet::new(), &extra, &node);
        assert_eq!(inodes(&third.removed), [7]);
        assert_eq!(
            by_inode(&third, 7).runtime_id.as_deref(),
            Some("containerd/sb2")
        );
        // The record gone, the process still there: an unattributed process namespace.
        let fourth = run(&third.entities, observed(&[(7, &[(100, 50)])]), &node);
        assert_eq!(inodes(&fourth.removed), [7]);
        assert_eq!(by_inode(&fourth, 7).kind, EntityKind::Process);
    }

    #[test]
    fn pick_records_prefers_the_sandbox_and_sets_host_records_apart() {
        let mut container = pod_record("c1", "web", 101);
        container.kind = RecordKind::PodContainer;
        let recs = [
            container,
            pod_record("sb1", "web", 100),
            pod_record("hostnet", "agent", 1),
            pod_record("dead", "gone", 999),
        ];
        let netns = |pid| match pid {
            100 | 101 => Some(7),
            1 => Some(HOST),
            _ => None,
        };
        let (best, host) = pick_records(&recs, HOST, netns);
        assert_eq!(best.len(), 1);
        assert_eq!(best[&7].id, "sb1");
        assert_eq!(
            host.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["hostnet"]
        );
    }

    #[test]
    fn host_network_pods_group_their_descendants_and_keep_their_first_sighting() {
        // pid 1 → 10 (the pod's sandbox) → 11 → 12; 10 → 13 (its container's init, also a
        // record); 1 → 20 (a plain host process); 30 (a record of another pod, no children).
        let ppid: HashMap<i32, i32> =
            [(10, 1), (11, 10), (12, 11), (13, 10), (20, 1), (30, 1)].into();
        let host_pids = [1, 10, 11, 12, 13, 20, 30];
        let mut container = pod_record("c1", "agent", 13);
        container.kind = RecordKind::PodContainer;
        let (sandbox, other, gone) = (
            pod_record("sb1", "agent", 10),
            pod_record("sb2", "logs", 30),
            pod_record("sb3", "dead", 99),
        );
        let recs = [&container, &sandbox, &other, &gone];
        let first = host_groups(HOST, &host_pids, &ppid, &recs, &[], &[]);
        let by_pod = |g: &[Arc<Entity>], pod: &str| -> Arc<Entity> {
            g.iter().find(|e| e.k8s_pod == pod).expect("group").clone()
        };
        assert_eq!(
            first.len(),
            2,
            "the record without a live pid makes no group"
        );
        let agent = by_pod(&first, "agent");
        assert!(agent.group);
        assert_eq!(agent.inode, HOST);
        assert_eq!(agent.pids, [10, 11, 12, 13]);
        assert_eq!(
            agent.runtime_id.as_deref(),
            Some("containerd/sb1"),
            "the sandbox names it"
        );
        assert_eq!(by_pod(&first, "logs").pids, [30]);
        // The next scan keeps the groups' first sighting; a new pod's group is new.
        let second = host_groups(HOST, &host_pids, &ppid, &recs, &first, &[]);
        assert_eq!(by_pod(&second, "agent").first_seen, agent.first_seen);
        assert!(ended(&first, &second).is_empty());
        let third = host_groups(HOST, &host_pids, &ppid, &recs[..2], &second, &[]);
        assert_eq!(
            ended(&second, &third)
                .iter()
                .map(|e| e.k8s_pod.as_str())
                .collect::<Vec<_>>(),
            ["logs"]
        );
    }
}
