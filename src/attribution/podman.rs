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
//!
//! Labels: the same database, read as what it is (a bbolt file, with [`super::bbolt`]): a
//! container's `ctr/<id>/config` and a pod's `pod/<id>/config` are JSON with a `labels`
//! object. A pod member (and the infra) gets its pod's labels, a plain container its own.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::bbolt;
use super::{
    annotations, read_bounded, read_pid, subdirs, FileCache, LabelStore, Record, RecordKind, Source,
};

pub struct Podman {
    /// (graph root, run root)
    roots: Vec<(PathBuf, PathBuf)>,
    /// Labels read from each libpod database, while it is unchanged.
    labels: Mutex<HashMap<PathBuf, LabelStore<String>>>,
}

impl Podman {
    pub fn new(roots: Vec<(PathBuf, PathBuf)>) -> Podman {
        Podman {
            roots,
            labels: Mutex::new(HashMap::new()),
        }
    }

    /// Labels for `recs` from libpod's database `db`: a pod member's are its pod's, a plain
    /// container's its own. Read when the file changed or an object is new to us.
    fn add_labels(&self, db: &Path, recs: &mut [Record]) {
        let wanted: Vec<(String, bool)> = recs
            .iter()
            .map(|r| match &r.sandbox_id {
                Some(pod) => (pod.clone(), true),
                None => (r.id.clone(), false),
            })
            .collect();
        let mut all = self.labels.lock().unwrap_or_else(|e| e.into_inner());
        let cache = all.entry(db.to_path_buf()).or_default();
        let keys: Vec<String> = wanted.iter().map(|(id, _)| id.clone()).collect();
        cache.refresh(db, &keys, "libpod database", "container labels", || {
            read_labels(db, &wanted)
        });
        for (r, (id, _)) in recs.iter_mut().zip(&wanted) {
            if let Some(l) = cache.get(id) {
                r.labels.clone_from(l);
            }
        }
    }
}

/// Labels of containers (`ctr/<id>/config`) and pods (`pod/<id>/config`, when the flag is
/// set) in libpod's BoltDB: the `labels` object of their JSON config. Absent ones are left out.
pub fn read_labels(
    db: &Path,
    wanted: &[(String, bool)],
) -> Result<HashMap<String, BTreeMap<String, String>>, bbolt::Error> {
    bbolt::view(db, |tx| {
        let mut out = HashMap::new();
        let ctrs = tx.path(&[b"ctr"])?;
        let pods = tx.path(&[b"pod"])?;
        for (id, pod) in wanted {
            let Some(top) = (if *pod { &pods } else { &ctrs }) else {
                continue;
            };
            let Some(b) = tx.bucket(top, id.as_bytes())? else {
                continue;
            };
            if let Some(bbolt::Entry::Value(cfg)) = tx.get(&b, b"config")? {
                let v: Option<serde_json::Value> = serde_json::from_slice(&cfg).ok();
                let labels = super::string_map(v.as_ref().and_then(|v| v.get("labels")));
                out.insert(id.clone(), labels);
            }
        }
        Ok(out)
    })
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
        // The pod id, resolved to a name in `scan`.
        sandbox_id: pod,
        ..Record::new("podman", id, RecordKind::Container)
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
            let mut recs = Vec::new();
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
                recs.push(r);
            }
            if !recs.is_empty() {
                self.add_labels(&graph.join("libpod/bolt_state.db"), &mut recs);
            }
            out.append(&mut recs);
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

    /// A real libpod database (podman 4.3.1; see tests/fixtures/runtimes/README.md).
    #[test]
    fn labels_from_a_real_libpod_database() {
        let db = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/runtimes/podman/bolt_state.db");
        let pod = "1e638b7071b9e9fac238f24249632ada156d6af6ca09a9a32dd89d57cb859bf7";
        let member = "0d2c7f10dadd181ebd4f727728dfe144d95c7aaccd69314060b61fdcd8a7dee6";
        let plain = "8080821edb3ce3a27abbd7fc9a17f9cadd8ff2c6bd13da475feea0f257cff104";
        let got = read_labels(
            &db,
            &[
                (pod.into(), true),
                (member.into(), false),
                (plain.into(), false),
                ("nope".into(), false),
                (plain.into(), true),
            ],
        )
        .unwrap();
        let m = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(got[pod], m(&[("app", "ppod"), ("tier", "pt")]));
        assert_eq!(got[member], m(&[("app", "inner")]));
        assert_eq!(got[plain], m(&[("app", "pc"), ("team", "red")]));
        assert_eq!(got.len(), 3);
        // Garbage in place of the database: an error, not a panic.
        let dir = std::env::temp_dir().join(format!("nsl-libpod-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("bolt_state.db");
        let good = std::fs::read(&db).unwrap();
        for cut in [0, 100, 4096, 8192, 20000] {
            std::fs::write(&bad, &good[..cut]).unwrap();
            assert!(
                read_labels(&bad, &[(plain.into(), false)]).is_err(),
                "cut {cut}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
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
