//! Podman (rootful): names in `<graphroot>/overlay-containers/containers.json`, OCI specs in
//! `<graphroot>/overlay-containers/<id>/userdata/config.json` (annotation
//! `io.container.manager=libpod`), init pids in `<runroot>/overlay-containers/<id>/userdata/pidfile`.
//!
//! Pods: every member's (and the infra's) cgroupsPath holds the pod id
//! (`/libpod_parent/<pod id>/libpod-<id>` with cgroupfs, `machine-libpod_pod_<pod id>.slice`
//! with systemd). The pod's name is only in libpod's BoltDB (`libpod/bolt_state.db`), whose
//! pod config is a JSON value stored inline (`{"id":"<pod id>","name":"<name>",...`): we find
//! it by that prefix. If it cannot be found the pod is named by the first 12 hex of its id,
//! as Podman's own infra container name does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{annotations, read_bounded, read_pid, subdirs, FileCache, Record, RecordKind, Source};

pub struct Podman {
    /// (graph root, run root)
    roots: Vec<(PathBuf, PathBuf)>,
}

impl Podman {
    pub fn new(roots: Vec<(PathBuf, PathBuf)>) -> Podman {
        Podman { roots }
    }
}

/// `containers.json` → id → first name.
pub fn parse_containers_json(data: &[u8]) -> HashMap<String, String> {
    let Ok(serde_json::Value::Array(v)) = serde_json::from_slice::<serde_json::Value>(data) else {
        return HashMap::new();
    };
    v.iter()
        .filter_map(|c| {
            let id = c.get("id")?.as_str()?;
            let name = c.get("names")?.as_array()?.first()?.as_str()?;
            Some((id.to_string(), name.to_string()))
        })
        .collect()
}

/// The pod id in a libpod cgroups path, if the container is in a pod.
pub fn pod_id_of_cgroup(path: &str) -> Option<&str> {
    let is_id = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    if let Some(i) = path.find("libpod_pod_") {
        let rest = &path[i + "libpod_pod_".len()..];
        let id = rest.split(['.', '/']).next()?;
        return is_id(id).then_some(id);
    }
    let mut parts = path.split('/').filter(|s| !s.is_empty());
    let first = parts.next()?;
    let second = parts.next()?;
    (first == "libpod_parent" && is_id(second) && parts.next().is_some()).then_some(second)
}

/// Parse a libpod container spec: `(is libpod, pod id)`.
pub fn parse_spec(data: &[u8]) -> Option<(bool, Option<String>)> {
    let spec: serde_json::Value = serde_json::from_slice(data).ok()?;
    let a = annotations(&spec);
    let libpod = a.get("io.container.manager").map(String::as_str) == Some("libpod");
    let cg = spec
        .get("linux")
        .and_then(|l| l.get("cgroupsPath"))
        .and_then(|c| c.as_str())
        .unwrap_or("");
    Some((libpod, pod_id_of_cgroup(cg).map(str::to_string)))
}

/// Find `{"id":"<pod id>","name":"<name>"` in libpod's database bytes.
pub fn pod_name_in_db(db: &[u8], pod_id: &str) -> Option<String> {
    let needle = format!("{{\"id\":\"{pod_id}\",\"name\":\"");
    let at = db
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())?
        + needle.len();
    let end = db[at..].iter().take(256).position(|&b| b == b'"')?;
    let name = std::str::from_utf8(&db[at..at + end]).ok()?;
    (!name.is_empty() && !name.contains('\\')).then(|| name.to_string())
}

fn spec_record(data: &[u8], id: &str) -> Option<Record> {
    let (libpod, pod) = parse_spec(data)?;
    if !libpod {
        return None;
    }
    Some(Record {
        runtime: "podman",
        id: id.to_string(),
        kind: RecordKind::Container,
        k8s_namespace: String::new(),
        k8s_pod: String::new(),
        name: String::new(),
        pid: None,
        // The pod id, resolved to a name in `scan`.
        sandbox_id: pod,
        podman_pod: None,
        labels: Default::default(),
    })
}

impl Source for Podman {
    fn name(&self) -> &'static str {
        "podman"
    }

    fn present(&self) -> bool {
        self.roots
            .iter()
            .any(|(g, _)| g.join("overlay-containers/containers.json").is_file())
    }

    fn scan(&self, cache: &FileCache) -> Vec<Record> {
        let mut out = Vec::new();
        for (graph, run) in &self.roots {
            let names = read_bounded(&graph.join("overlay-containers/containers.json"), 64 << 20)
                .map(|d| parse_containers_json(&d))
                .unwrap_or_default();
            let mut db: Option<Option<Vec<u8>>> = None;
            let mut pod_names: HashMap<String, String> = HashMap::new();
            let base = run.join("overlay-containers");
            for id in subdirs(&base) {
                let Some(pid) = read_pid(&base.join(&id).join("userdata/pidfile")) else {
                    continue;
                };
                let spec = graph
                    .join("overlay-containers")
                    .join(&id)
                    .join("userdata/config.json");
                let Some(mut r) = cache.get(&spec, |d| spec_record(d, &id)) else {
                    continue;
                };
                r.pid = Some(pid);
                r.name = names.get(&id).cloned().unwrap_or_else(|| id.clone());
                if let Some(pod_id) = r.sandbox_id.clone() {
                    let name = pod_names.entry(pod_id.clone()).or_insert_with(|| {
                        let db = db.get_or_insert_with(|| {
                            read_bounded(&graph.join("libpod/bolt_state.db"), 256 << 20)
                        });
                        db.as_deref()
                            .and_then(|d| pod_name_in_db(d, &pod_id))
                            .unwrap_or_else(|| pod_id[..12].to_string())
                    });
                    r.podman_pod = Some(name.clone());
                }
                out.push(r);
            }
        }
        out
    }

    fn watch_dirs(&self) -> Vec<PathBuf> {
        self.roots
            .iter()
            .flat_map(|(g, r)| [g.join("overlay-containers"), r.join("overlay-containers")])
            .collect()
    }
}

/// For tests: the containers.json path of a graph root.
pub fn containers_json(graph: &Path) -> PathBuf {
    graph.join("overlay-containers/containers.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = "6e383faf3ddd1d5f2a049d8d12ebf0bb4a51d6a4ff298f23b0615ca0206d9a28";

    #[test]
    fn cgroup_paths() {
        assert_eq!(
            pod_id_of_cgroup(&format!("/libpod_parent/{POD}/libpod-abc")),
            Some(POD)
        );
        assert_eq!(
            pod_id_of_cgroup(&format!("machine-libpod_pod_{POD}.slice:libpod:abc")),
            Some(POD)
        );
        assert_eq!(pod_id_of_cgroup("/libpod_parent/libpod-abc"), None);
        assert_eq!(pod_id_of_cgroup(""), None);
        assert_eq!(pod_id_of_cgroup("libpod_pod_xyz"), None);
    }

    #[test]
    fn names_and_db() {
        let j = br#"[{"id":"a1","names":["c1"]},{"id":"b2","names":[]},{"names":["x"]},7]"#;
        let m = parse_containers_json(j);
        assert_eq!(m.len(), 1);
        assert_eq!(m["a1"], "c1");
        assert!(parse_containers_json(b"{").is_empty());
        let db = format!(
            "\x00\x01junk config{{\"id\":\"{POD}\",\"name\":\"nslpod1\",\"labels\":{{}}}}\x00"
        );
        assert_eq!(
            pod_name_in_db(db.as_bytes(), POD).as_deref(),
            Some("nslpod1")
        );
        assert_eq!(pod_name_in_db(b"short", POD), None);
        let cut = format!("{{\"id\":\"{POD}\",\"name\":\"unterminated");
        assert_eq!(pod_name_in_db(cut.as_bytes(), POD), None);
    }

    #[test]
    fn garbage_specs() {
        for bad in [
            &b""[..],
            b"{",
            b"[]",
            br#"{"annotations":[]}"#,
            br#"{"linux":{"cgroupsPath":5}}"#,
        ] {
            if let Some((libpod, pod)) = parse_spec(bad) {
                assert!(!libpod && pod.is_none());
            }
        }
    }
}
