//! containerd (Kubernetes CRI and plain): runtime v2 task bundles,
//! `<state>/io.containerd.runtime.v2.task/<namespace>/<id>/{config.json,init.pid}`.
//!
//! A CRI sandbox's OCI spec carries `io.kubernetes.cri.container-type=sandbox` and
//! `io.kubernetes.cri.sandbox-{name,namespace,uid}`; a pod's container has
//! `container-type=container`, `container-name` and the same `sandbox-*`. Tasks without those
//! annotations (Docker's `moby` namespace, `ctr run`) are plain containers named by their id.
//!
//! Labels are not in the task bundle: the CRI plugin keeps each sandbox's `PodSandboxConfig`
//! (labels included) in containerd's metadata store, `<root>/io.containerd.metadata.v1.bolt/
//! meta.db`, as the container extension `io.cri-containerd.sandbox.metadata` of bucket
//! `v1/<namespace>/containers/<id>` (a protobuf `Any` wrapping JSON
//! `{"Metadata":{"Config":{"labels":{..}}}}`); a plain container's labels are that bucket's
//! `labels`. The store is read with [`super::bbolt`] (read-only, unlocked, consistent), only
//! when it changed or a new sandbox appeared. `<root>` (containerd's `--root`) is where each
//! task's `work` link points (`<root>/io.containerd.runtime.v2.task/<ns>/<id>`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::bbolt;
use super::{annotations, read_pid, subdirs, FileCache, LabelStore, Record, RecordKind, Source};

const TASKS: &str = "io.containerd.runtime.v2.task";
/// The metadata store, relative to containerd's root.
pub const META_DB: &str = "io.containerd.metadata.v1.bolt/meta.db";
const SANDBOX_EXT: &[u8] = b"io.cri-containerd.sandbox.metadata";

pub struct Containerd {
    roots: Vec<PathBuf>,
    /// Per metadata store: what was read from it, keyed by (namespace, id).
    meta: Mutex<HashMap<PathBuf, LabelStore<(String, String)>>>,
}

impl Containerd {
    pub fn new(roots: Vec<PathBuf>) -> Containerd {
        Containerd {
            roots,
            meta: Mutex::new(HashMap::new()),
        }
    }

    /// Fill in the labels of `recs` (all of one state root) from its metadata store.
    fn add_labels(&self, state: &Path, recs: &mut [(String, Record)], root: Option<PathBuf>) {
        let Some(root) = root.or_else(|| default_root(state)) else {
            return;
        };
        let db = root.join(META_DB);
        let mut all = self.meta.lock().unwrap_or_else(|e| e.into_inner());
        let cache = all.entry(db.clone()).or_default();
        let wanted: Vec<(String, String, bool)> = recs
            .iter()
            .filter(|(_, r)| r.kind != RecordKind::PodContainer)
            .map(|(ns, r)| (ns.clone(), r.id.clone(), r.kind == RecordKind::PodSandbox))
            .collect();
        let keys: Vec<(String, String)> = wanted
            .iter()
            .map(|(ns, id, _)| (ns.clone(), id.clone()))
            .collect();
        cache.refresh(
            &db,
            &keys,
            "containerd metadata store",
            "pod labels",
            || read_labels(&db, &wanted),
        );
        for (ns, r) in recs.iter_mut() {
            if let Some(l) = cache.get(&(ns.clone(), r.id.clone())) {
                r.labels.clone_from(l);
            }
        }
    }
}

/// containerd's root for a state folder, when no task names it: the packaged defaults.
fn default_root(state: &Path) -> Option<PathBuf> {
    match state.to_str()? {
        "/run/containerd" => Some("/var/lib/containerd".into()),
        "/run/k3s/containerd" => Some("/var/lib/rancher/k3s/agent/containerd".into()),
        _ => None,
    }
}

/// containerd's root from a task's `work` link (`<root>/io.containerd.runtime.v2.task/<ns>/<id>`).
pub fn root_of_work_link(link: &Path) -> Option<PathBuf> {
    let ns_dir = link.parent()?;
    let tasks = ns_dir.parent()?;
    (tasks.file_name()? == TASKS).then(|| tasks.parent().map(Path::to_path_buf))?
}

/// The value of a protobuf `Any` (field 2), skipping its type URL (field 1).
pub fn any_value(mut b: &[u8]) -> Option<&[u8]> {
    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&x, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(x & 0x7f) << (7 * i);
            if x & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    while !b.is_empty() {
        let tag = varint(&mut b)?;
        match tag & 7 {
            0 => {
                varint(&mut b)?;
            }
            2 => {
                let n = usize::try_from(varint(&mut b)?).ok()?;
                let v = b.get(..n)?;
                b = &b[n..];
                if tag >> 3 == 2 {
                    return Some(v);
                }
            }
            _ => return None,
        }
    }
    None
}

/// The pod labels in a sandbox metadata extension (`Any` of JSON sandbox metadata).
pub fn sandbox_labels(ext: &[u8]) -> Option<BTreeMap<String, String>> {
    let v: serde_json::Value = serde_json::from_slice(any_value(ext)?).ok()?;
    let cfg = v.get("Metadata")?.get("Config")?;
    Some(super::string_map(cfg.get("labels")))
}

/// Labels by (namespace, object id), as [`read_labels`] returns them.
pub type LabelsByObject = HashMap<(String, String), BTreeMap<String, String>>;

/// Labels of the given (namespace, id, is sandbox) objects from the metadata store at `db`:
/// a sandbox's from its CRI extension (else its container labels less containerd's own
/// `io.cri-containerd.*`), a plain container's from its labels bucket. Objects not in the
/// store are left out.
pub fn read_labels(
    db: &Path,
    wanted: &[(String, String, bool)],
) -> Result<LabelsByObject, bbolt::Error> {
    bbolt::view(db, |tx| {
        let mut out = HashMap::new();
        let namespaces: HashSet<&str> = wanted.iter().map(|(ns, _, _)| ns.as_str()).collect();
        for ns in namespaces {
            let Some(ctrs) = tx.path(&[b"v1", ns.as_bytes(), b"containers"])? else {
                continue;
            };
            for (_, id, sandbox) in wanted.iter().filter(|w| w.0 == ns) {
                let Some(c) = tx.bucket(&ctrs, id.as_bytes())? else {
                    continue;
                };
                if *sandbox {
                    if let Some(ext) = tx.bucket(&c, b"extensions")? {
                        if let Some(bbolt::Entry::Value(v)) = tx.get(&ext, SANDBOX_EXT)? {
                            if let Some(l) = sandbox_labels(&v) {
                                out.insert((ns.to_string(), id.clone()), l);
                                continue;
                            }
                        }
                    }
                }
                let mut l = BTreeMap::new();
                if let Some(lb) = tx.bucket(&c, b"labels")? {
                    tx.for_each(&lb, &mut |k, e| {
                        if let bbolt::Entry::Value(v) = e {
                            if let (Ok(k), Ok(v)) = (std::str::from_utf8(k), String::from_utf8(v)) {
                                if !(*sandbox && k.starts_with("io.cri-containerd.")) {
                                    l.insert(k.to_string(), v);
                                }
                            }
                        }
                        Ok(())
                    })?;
                }
                out.insert((ns.to_string(), id.clone()), l);
            }
        }
        Ok(out)
    })
}

/// Parse a task's `config.json` (OCI spec) into a record (pid not set). `id` is the task id.
pub fn parse_task_spec(data: &[u8], id: &str) -> Option<Record> {
    let spec: serde_json::Value = serde_json::from_slice(data).ok()?;
    if !spec.is_object() {
        return None;
    }
    let a = annotations(&spec);
    let get = |k: &str| a.get(k).cloned().unwrap_or_default();
    let kind = match a
        .get("io.kubernetes.cri.container-type")
        .map(String::as_str)
    {
        Some("sandbox") => RecordKind::PodSandbox,
        Some("container") => RecordKind::PodContainer,
        _ => RecordKind::Container,
    };
    let (k8s_namespace, k8s_pod, name, sandbox_id) = match kind {
        RecordKind::PodSandbox => {
            let pod = get("io.kubernetes.cri.sandbox-name");
            (
                get("io.kubernetes.cri.sandbox-namespace"),
                pod.clone(),
                pod,
                None,
            )
        }
        RecordKind::PodContainer => (
            get("io.kubernetes.cri.sandbox-namespace"),
            get("io.kubernetes.cri.sandbox-name"),
            get("io.kubernetes.cri.container-name"),
            a.get("io.kubernetes.cri.sandbox-id").cloned(),
        ),
        RecordKind::Container => (String::new(), String::new(), id.to_string(), None),
    };
    if kind != RecordKind::Container && k8s_pod.is_empty() {
        return None;
    }
    Some(Record {
        k8s_namespace,
        k8s_pod,
        name,
        sandbox_id,
        ..Record::new("containerd", id, kind)
    })
}

impl Source for Containerd {
    fn name(&self) -> &'static str {
        "containerd"
    }

    fn present(&self) -> bool {
        self.roots.iter().any(|r| r.join(TASKS).is_dir())
    }

    fn scan(&self, cache: &FileCache) -> Vec<Record> {
        let mut out = Vec::new();
        for root in &self.roots {
            let tasks = root.join(TASKS);
            let mut recs: Vec<(String, Record)> = Vec::new();
            let mut ctd_root = None;
            for ns in subdirs(&tasks) {
                let nsdir = tasks.join(&ns);
                for id in subdirs(&nsdir) {
                    let dir = nsdir.join(&id);
                    let Some(pid) = read_pid(&dir.join("init.pid")) else {
                        continue;
                    };
                    let Some(mut r) =
                        cache.get(&dir.join("config.json"), |d| parse_task_spec(d, &id))
                    else {
                        continue;
                    };
                    r.pid = Some(pid);
                    if ctd_root.is_none() {
                        ctd_root = std::fs::read_link(dir.join("work"))
                            .ok()
                            .and_then(|l| root_of_work_link(&l));
                    }
                    recs.push((ns.clone(), r));
                }
            }
            if !recs.is_empty() {
                self.add_labels(root, &mut recs, ctd_root);
            }
            out.extend(recs.into_iter().map(|(_, r)| r));
        }
        out
    }

    fn watch_dirs(&self) -> Vec<PathBuf> {
        let mut v = Vec::new();
        for root in &self.roots {
            let tasks = root.join(TASKS);
            for ns in subdirs(&tasks) {
                v.push(tasks.join(ns));
            }
            v.push(tasks);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SANDBOX: &str = r#"{"ociVersion":"1.0.2","annotations":{"io.kubernetes.cri.container-type":"sandbox","io.kubernetes.cri.sandbox-id":"dde7","io.kubernetes.cri.sandbox-name":"web1","io.kubernetes.cri.sandbox-namespace":"team-a","io.kubernetes.cri.sandbox-uid":"uid-1"},"linux":{"namespaces":[{"type":"network","path":"/var/run/netns/cni-1"}]}}"#;
    const CONTAINER: &str = r#"{"annotations":{"io.kubernetes.cri.container-name":"app","io.kubernetes.cri.container-type":"container","io.kubernetes.cri.sandbox-id":"dde7","io.kubernetes.cri.sandbox-name":"web1","io.kubernetes.cri.sandbox-namespace":"team-a"}}"#;

    #[test]
    fn sandbox_and_container() {
        let s = parse_task_spec(SANDBOX.as_bytes(), "dde7").unwrap();
        assert_eq!(s.kind, RecordKind::PodSandbox);
        assert_eq!(s.labels(), ("pod", "team-a", "web1", "web1"));
        let c = parse_task_spec(CONTAINER.as_bytes(), "9a15").unwrap();
        assert_eq!(c.kind, RecordKind::PodContainer);
        assert_eq!(c.name, "app");
        assert_eq!(c.sandbox_id.as_deref(), Some("dde7"));
        assert_eq!(c.labels(), ("pod", "team-a", "web1", "web1"));
        assert_eq!(s.group_key(), c.group_key());
    }

    #[test]
    fn plain_task_is_a_container_named_by_id() {
        let r = parse_task_spec(br#"{"ociVersion":"1.0.2","process":{}}"#, "plain1").unwrap();
        assert_eq!(r.labels(), ("container", "", "", "plain1"));
    }

    #[test]
    fn garbage_never_panics() {
        for bad in [
            &b""[..],
            b"{",
            b"null",
            b"[]",
            b"\"x\"",
            br#"{"annotations":5}"#,
            br#"{"annotations":{"io.kubernetes.cri.container-type":7}}"#,
            br#"{"annotations":{"io.kubernetes.cri.container-type":"sandbox"}}"#,
            b"\xff\xfe\x00",
        ] {
            let r = parse_task_spec(bad, "x");
            if let Some(r) = r {
                assert_eq!(r.kind, RecordKind::Container);
            }
        }
        // A truncated real spec.
        for n in 0..SANDBOX.len() {
            let _ = parse_task_spec(&SANDBOX.as_bytes()[..n], "x");
        }
    }
}

#[cfg(test)]
mod label_tests {
    use super::*;

    const WEB: &str = "e07bbb1c5fc8c7ae111d1f3f98f79bb07f7701dea0f9da4c1d0edc8810fb23b6";
    const BARE: &str = "4e0926fa425110961ce894e637500bb315f723b323d3afb73e9e0d679e510b3f";

    fn fixture() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/runtimes/containerd/meta.db")
    }

    fn want() -> Vec<(String, String, bool)> {
        vec![
            ("k8s.io".into(), WEB.into(), true),
            ("k8s.io".into(), BARE.into(), true),
            ("default".into(), "plain1".into(), false),
            ("k8s.io".into(), "not-there".into(), true),
            ("nosuchns".into(), "x".into(), false),
        ]
    }

    fn m(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn labels_from_a_real_metadata_store() {
        let got = read_labels(&fixture(), &want()).unwrap();
        assert_eq!(
            got[&("k8s.io".to_string(), WEB.to_string())],
            m(&[
                ("app", "web"),
                ("app.kubernetes.io/name", "web-shop"),
                ("pod-template-hash", "5f7c"),
                ("tier", "frontend"),
            ])
        );
        assert_eq!(got[&("k8s.io".to_string(), BARE.to_string())], m(&[]));
        assert_eq!(
            got[&("default".to_string(), "plain1".to_string())],
            m(&[
                ("app", "plain"),
                ("io.containerd.image.config.stop-signal", "SIGTERM"),
                ("team", "blue"),
            ])
        );
        assert_eq!(got.len(), 3, "objects not in the store are left out");
    }

    #[test]
    fn work_link_names_the_root() {
        assert_eq!(
            root_of_work_link(Path::new(
                "/var/lib/containerd/io.containerd.runtime.v2.task/k8s.io/abc"
            )),
            Some(PathBuf::from("/var/lib/containerd"))
        );
        assert_eq!(root_of_work_link(Path::new("/x/y/abc")), None);
        assert_eq!(root_of_work_link(Path::new("abc")), None);
    }

    #[test]
    fn any_and_metadata_garbage() {
        // Field 1 type URL, field 2 value, as containerd writes them.
        let mut any = vec![0x0a, 3, b'a', b'b', b'c', 0x12];
        let json = br#"{"Metadata":{"Config":{"labels":{"a":"1","n":2}}}}"#;
        any.push(json.len() as u8);
        any.extend_from_slice(json);
        assert_eq!(sandbox_labels(&any), Some(m(&[("a", "1")])));
        for bad in [
            &b""[..],
            b"\x12",
            b"\x12\x05ab",
            b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
            b"\x0b",
            b"\x12\x02{}",
            b"\x12\x04null",
        ] {
            assert_eq!(sandbox_labels(bad), None, "{bad:?}");
        }
    }

    /// The real store, corrupted at random (page headers and element tables mostly) and
    /// truncated everywhere: an error or an answer, never a panic or a hang.
    #[test]
    fn corrupted_real_store_never_panics() {
        let good = std::fs::read(fixture()).unwrap();
        let dir = std::env::temp_dir().join(format!("nsl-ctd-meta-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("meta.db");
        let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let (mut ok, mut errs) = (0, 0);
        for _ in 0..2000 {
            let mut b = good.clone();
            for _ in 0..(1 + next() % 4) {
                let page = (next() as usize) % (b.len() / 4096);
                let i = if next() % 4 != 0 {
                    page * 4096 + (next() as usize) % 256
                } else {
                    (next() as usize) % b.len()
                };
                b[i] = next() as u8;
            }
            std::fs::write(&p, &b).unwrap();
            match read_labels(&p, &want()) {
                Ok(_) => ok += 1,
                Err(_) => errs += 1,
            }
        }
        assert!(ok > 0 && errs > 0, "ok {ok} errors {errs}");
        for n in (0..good.len()).step_by(1021) {
            std::fs::write(&p, &good[..n]).unwrap();
            let _ = read_labels(&p, &want());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
