//! Attribution: which pod or container a network namespace belongs to, read from the container
//! runtimes' state on disk (read-only; no runtime socket needed). One module per runtime; each
//! source turns its state files into [`Record`]s (a runtime object, its init pid and what it
//! is); the inventory resolves each record's pid to a netns inode and picks the best record
//! per namespace ([`Record::rank`]).
//!
//! Every parser takes bytes and returns `Option`: garbage, truncated or half-written state
//! files are skipped, never a panic.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub mod bbolt;
pub mod containerd;
pub mod crio;
pub mod docker;
pub mod podman;
pub mod template;

/// What a runtime object is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RecordKind {
    /// A Kubernetes pod sandbox (pause / infra container): names the pod's netns.
    PodSandbox,
    /// An application container of a Kubernetes pod.
    PodContainer,
    /// A plain container (Docker, Podman, containerd without CRI), or a Podman pod's infra.
    Container,
}

/// One runtime object found on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// `containerd`, `crio`, `docker`, `podman`.
    pub runtime: &'static str,
    /// The runtime's id for the object (container or sandbox id).
    pub id: String,
    pub kind: RecordKind,
    pub k8s_namespace: String,
    pub k8s_pod: String,
    /// Container name, or the pod name for a sandbox.
    pub name: String,
    /// Init pid (pause for a sandbox), if the object is running.
    pub pid: Option<i32>,
    /// The sandbox / pod this container belongs to (its id), if any.
    pub sandbox_id: Option<String>,
    /// A Podman pod's name (pod members and infra).
    pub podman_pod: Option<String>,
    /// The pod's labels (a pod's sandbox and, copied from it, its containers), or a plain
    /// container's own labels, as the runtime stores them; empty where it stores none.
    pub labels: BTreeMap<String, String>,
}

impl Record {
    /// A record of `runtime`'s object `id` with no names, pid, sandbox or labels yet.
    pub fn new(runtime: &'static str, id: &str, kind: RecordKind) -> Record {
        Record {
            runtime,
            id: id.to_string(),
            kind,
            k8s_namespace: String::new(),
            k8s_pod: String::new(),
            name: String::new(),
            pid: None,
            sandbox_id: None,
            podman_pod: None,
            labels: Default::default(),
        }
    }

    /// Which record names a namespace when several share it: the pod's sandbox first, then a
    /// pod's container, then a named container, then an id-only one (containerd without CRI).
    pub fn rank(&self) -> u8 {
        match self.kind {
            RecordKind::PodSandbox => 4,
            RecordKind::PodContainer => 3,
            RecordKind::Container if self.podman_pod.is_some() => 2,
            RecordKind::Container if self.name != self.id => 1,
            RecordKind::Container => 0,
        }
    }

    /// Whether the namespace should be labelled as a pod.
    pub fn is_pod(&self) -> bool {
        matches!(self.kind, RecordKind::PodSandbox | RecordKind::PodContainer)
            || self.podman_pod.is_some()
    }

    /// The labels this record gives a namespace (or a process group): kind, k8s_namespace,
    /// k8s_pod, name.
    pub fn labels(&self) -> (&'static str, &str, &str, &str) {
        match (self.kind, &self.podman_pod) {
            (RecordKind::PodSandbox | RecordKind::PodContainer, _) => {
                ("pod", &self.k8s_namespace, &self.k8s_pod, &self.k8s_pod)
            }
            (RecordKind::Container, Some(p)) => ("pod", "", p, p),
            (RecordKind::Container, None) => ("container", "", "", &self.name),
        }
    }

    /// The group a record's processes belong to (a pod's containers share it).
    pub fn group_key(&self) -> String {
        match (self.kind, &self.podman_pod) {
            (RecordKind::PodSandbox | RecordKind::PodContainer, _) => {
                format!("pod/{}/{}", self.k8s_namespace, self.k8s_pod)
            }
            (RecordKind::Container, Some(p)) => format!("podman-pod/{p}"),
            (RecordKind::Container, None) => format!("{}/{}", self.runtime, self.id),
        }
    }
}

/// A source of records: one container runtime's state on disk.
pub trait Source: Send + Sync {
    fn name(&self) -> &'static str;
    /// Whether the runtime has state on this node (any of its roots exists).
    fn present(&self) -> bool;
    /// Every object currently on disk. Missing or unreadable files are skipped.
    fn scan(&self, cache: &FileCache) -> Vec<Record>;
    /// Folders whose changes mean a container started or stopped (watched with inotify).
    fn watch_dirs(&self) -> Vec<PathBuf>;
}

/// Where each runtime keeps its state (all configurable; see `inventory.stateRoots`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateRoots {
    /// containerd state dirs (holding `io.containerd.runtime.v2.task/<ns>/<id>`).
    pub containerd: Vec<PathBuf>,
    /// CRI-O run roots (holding `overlay-containers/<id>/userdata`).
    pub crio: Vec<PathBuf>,
    /// Docker data roots (holding `containers/<id>/config.v2.json`).
    pub docker: Vec<PathBuf>,
    /// Podman (graph root, run root) pairs.
    pub podman: Vec<(PathBuf, PathBuf)>,
}

impl Default for StateRoots {
    fn default() -> Self {
        StateRoots {
            containerd: vec![
                "/run/containerd".into(),
                // k3s and rke2 run their own containerd here.
                "/run/k3s/containerd".into(),
            ],
            crio: vec!["/run/containers/storage".into()],
            docker: vec!["/var/lib/docker".into()],
            podman: vec![(
                "/var/lib/containers/storage".into(),
                "/run/containers/storage".into(),
            )],
        }
    }
}

/// All sources of a node.
pub struct Attributor {
    sources: Vec<Box<dyn Source>>,
    cache: FileCache,
}

impl Attributor {
    pub fn new(roots: &StateRoots) -> Attributor {
        let sources: Vec<Box<dyn Source>> = vec![
            Box::new(containerd::Containerd::new(roots.containerd.clone())),
            Box::new(crio::Crio::new(roots.crio.clone())),
            Box::new(docker::Docker::new(roots.docker.clone())),
            Box::new(podman::Podman::new(roots.podman.clone())),
        ];
        Attributor {
            sources,
            cache: FileCache::default(),
        }
    }

    /// No sources (tests, or attribution switched off).
    pub fn none() -> Attributor {
        Attributor {
            sources: Vec::new(),
            cache: FileCache::default(),
        }
    }

    /// Log which sources are present on this node.
    pub fn log_presence(&self) {
        for s in &self.sources {
            if s.present() {
                log::info!("attribution source {}: present", s.name());
            } else {
                log::debug!("attribution source {}: not present on this node", s.name());
            }
        }
    }

    pub fn present(&self) -> Vec<&'static str> {
        self.sources
            .iter()
            .filter(|s| s.present())
            .map(|s| s.name())
            .collect()
    }

    /// Every record of every present source.
    pub fn scan(&self) -> Vec<Record> {
        let mut out = Vec::new();
        for s in &self.sources {
            if s.present() {
                out.extend(s.scan(&self.cache));
            }
        }
        self.cache.sweep();
        share_pod_labels(&mut out);
        out
    }

    pub fn watch_dirs(&self) -> Vec<PathBuf> {
        self.sources.iter().flat_map(|s| s.watch_dirs()).collect()
    }
}

/// A pod's containers carry their sandbox's labels (the runtimes store pod labels with the
/// sandbox only; a container's own labels are the kubelet's bookkeeping).
fn share_pod_labels(recs: &mut [Record]) {
    let by_sandbox: HashMap<(&'static str, String), BTreeMap<String, String>> = recs
        .iter()
        .filter(|r| r.kind == RecordKind::PodSandbox)
        .map(|r| ((r.runtime, r.id.clone()), r.labels.clone()))
        .collect();
    for r in recs.iter_mut() {
        if r.kind != RecordKind::PodContainer {
            continue;
        }
        if let Some(l) = r
            .sandbox_id
            .clone()
            .and_then(|s| by_sandbox.get(&(r.runtime, s)))
        {
            r.labels.clone_from(l);
        }
    }
}

/// Labels from a JSON object of strings (others skipped); empty if it is not an object.
pub(crate) fn string_map(v: Option<&serde_json::Value>) -> BTreeMap<String, String> {
    v.and_then(|v| v.as_object())
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Labels read from one runtime label store (a bbolt file), by object key: re-read only when
/// the file changed (inode, size, mtime) or an object is new to it; a failed read is logged
/// once until its message changes, and the labels read before are kept meanwhile.
pub(crate) struct LabelStore<K> {
    stamp: Option<(u64, u64, i64, i64)>,
    labels: HashMap<K, BTreeMap<String, String>>,
    last_error: Option<String>,
}

impl<K> Default for LabelStore<K> {
    fn default() -> Self {
        LabelStore {
            stamp: None,
            labels: HashMap::new(),
            last_error: None,
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone> LabelStore<K> {
    /// Bring the labels of `wanted` up to date from `db` with `read`; objects the store does
    /// not have get no labels (and are not looked for again). `what` names the store in the
    /// log (`libpod database`), `lost` what is missing when it cannot be read.
    pub(crate) fn refresh<E: std::fmt::Display>(
        &mut self,
        db: &Path,
        wanted: &[K],
        what: &str,
        lost: &str,
        read: impl FnOnce() -> Result<HashMap<K, BTreeMap<String, String>>, E>,
    ) {
        let stamp = std::fs::metadata(db)
            .ok()
            .map(|m| (m.ino(), m.size(), m.mtime(), m.mtime_nsec()));
        let missing = wanted.iter().any(|k| !self.labels.contains_key(k));
        if stamp.is_none() || (stamp == self.stamp && !missing) {
            return;
        }
        match read() {
            Ok(mut m) => {
                for k in wanted {
                    m.entry(k.clone()).or_default();
                }
                self.labels = m;
                self.stamp = stamp;
                self.last_error = None;
            }
            Err(e) => {
                let msg = format!("{}: {e}", db.display());
                if self.last_error.as_ref() != Some(&msg) {
                    log::warn!("{what} {msg}: {lost} not read");
                    self.last_error = Some(msg);
                }
            }
        }
    }

    pub(crate) fn get(&self, k: &K) -> Option<&BTreeMap<String, String>> {
        self.labels.get(k)
    }
}

/// Parsed state files, re-parsed only when the file changed (inode, size, mtime): a rescan
/// of 500 pods reads their small pid files but not their 20 KiB OCI specs.
#[derive(Default)]
pub struct FileCache {
    map: Mutex<HashMap<PathBuf, CacheEntry>>,
}

struct CacheEntry {
    stamp: (u64, u64, i64, i64),
    value: Option<Record>,
    used: bool,
}

impl FileCache {
    /// Parse `path` with `f` into a record, cached while the file is unchanged. `None` if the
    /// file is missing or `f` rejects it.
    pub fn get(&self, path: &Path, f: impl FnOnce(&[u8]) -> Option<Record>) -> Option<Record> {
        let md = std::fs::metadata(path).ok()?;
        let stamp = (md.ino(), md.size(), md.mtime(), md.mtime_nsec());
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = map.get_mut(path) {
            if e.stamp == stamp {
                e.used = true;
                return e.value.clone();
            }
        }
        // Bounded read: runtime state files are small; a huge file is not one of them.
        let data = read_bounded(path, 4 << 20)?;
        let value = f(&data);
        map.insert(
            path.to_path_buf(),
            CacheEntry {
                stamp,
                value: value.clone(),
                used: true,
            },
        );
        value
    }

    /// Drop entries not used since the last sweep (their containers are gone).
    fn sweep(&self) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, e| std::mem::take(&mut e.used));
    }

    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub(crate) fn read_bounded(path: &Path, max: u64) -> Option<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path).ok()?;
    let mut data = Vec::new();
    f.take(max + 1).read_to_end(&mut data).ok()?;
    if data.len() as u64 > max {
        return None;
    }
    Some(data)
}

/// A pid file: decimal, optional whitespace; a positive pid.
pub fn parse_pid(data: &[u8]) -> Option<i32> {
    let s = std::str::from_utf8(data).ok()?.trim();
    let p: i32 = s.parse().ok()?;
    (p > 0).then_some(p)
}

pub(crate) fn read_pid(path: &Path) -> Option<i32> {
    parse_pid(&read_bounded(path, 64)?)
}

/// Sub-directories of `dir` (names), sorted; empty if `dir` is missing.
pub(crate) fn subdirs(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    v.sort();
    v
}

/// A string field of a JSON object.
pub(crate) fn str_of<'a>(v: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    v.get(key)?.as_str()
}

/// The OCI spec's annotations, as a map (missing or malformed → empty).
pub(crate) fn annotations(spec: &serde_json::Value) -> HashMap<String, String> {
    spec.get("annotations")
        .and_then(|a| a.as_object())
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_files() {
        assert_eq!(parse_pid(b"1234\n"), Some(1234));
        assert_eq!(parse_pid(b" 7 "), Some(7));
        assert_eq!(parse_pid(b"0"), None);
        assert_eq!(parse_pid(b"-3"), None);
        assert_eq!(parse_pid(b""), None);
        assert_eq!(parse_pid(b"\xff\xfe"), None);
        assert_eq!(parse_pid(b"99999999999999"), None);
    }

    #[test]
    fn rank_prefers_sandbox() {
        let mut r = Record {
            name: "a".into(),
            ..Record::new("containerd", "a", RecordKind::Container)
        };
        assert_eq!(r.rank(), 0);
        r.name = "web".into();
        assert_eq!(r.rank(), 1);
        assert_eq!(r.labels(), ("container", "", "", "web"));
        r.kind = RecordKind::PodSandbox;
        r.k8s_namespace = "ns".into();
        r.k8s_pod = "p".into();
        assert_eq!(r.rank(), 4);
        assert_eq!(r.labels(), ("pod", "ns", "p", "p"));
    }
}
