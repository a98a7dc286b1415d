//! CRI-O: container bundles in its run root (containers/storage),
//! `<runroot>/overlay-containers/<id>/userdata/{config.json,pidfile}`.
//!
//! The OCI spec's annotations name the pod: `io.kubernetes.cri-o.ContainerType`
//! (`sandbox`/`container`), `io.kubernetes.pod.{name,namespace,uid}`,
//! `io.kubernetes.container.name` (`POD` for the sandbox) and `io.kubernetes.cri-o.SandboxID`.
//! The sandbox's `io.kubernetes.cri-o.Labels` is the pod's labels, JSON-encoded.
//! Podman shares this storage: its specs say `io.container.manager=libpod` and are left to
//! the podman source.

use std::path::PathBuf;

use super::{annotations, read_pid, subdirs, FileCache, Record, RecordKind, Source};

pub struct Crio {
    roots: Vec<PathBuf>,
}

impl Crio {
    pub fn new(roots: Vec<PathBuf>) -> Crio {
        Crio { roots }
    }
}

/// Parse a CRI-O bundle's `config.json` into a record (pid not set); `None` for anything that
/// is not a CRI-O pod object (Podman's containers included).
pub fn parse_spec(data: &[u8], id: &str) -> Option<Record> {
    let spec: serde_json::Value = serde_json::from_slice(data).ok()?;
    let a = annotations(&spec);
    if a.get("io.container.manager").map(String::as_str) == Some("libpod") {
        return None;
    }
    let pod = a.get("io.kubernetes.pod.name")?.clone();
    let ns = a
        .get("io.kubernetes.pod.namespace")
        .cloned()
        .unwrap_or_default();
    if pod.is_empty() {
        return None;
    }
    let kind = match a
        .get("io.kubernetes.cri-o.ContainerType")
        .map(String::as_str)
    {
        Some("sandbox") => RecordKind::PodSandbox,
        Some("container") => RecordKind::PodContainer,
        _ => return None,
    };
    let name = match kind {
        RecordKind::PodSandbox => pod.clone(),
        _ => a
            .get("io.kubernetes.container.name")
            .cloned()
            .unwrap_or_default(),
    };
    // The sandbox's spec holds the pod's labels as a JSON string (a container's holds the
    // container's own, which are the kubelet's bookkeeping).
    let labels = match kind {
        RecordKind::PodSandbox => a
            .get("io.kubernetes.cri-o.Labels")
            .and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok())
            .map(|v| super::string_map(Some(&v)))
            .unwrap_or_default(),
        _ => Default::default(),
    };
    Some(Record {
        runtime: "crio",
        id: id.to_string(),
        kind,
        k8s_namespace: ns,
        k8s_pod: pod,
        name,
        pid: None,
        sandbox_id: a.get("io.kubernetes.cri-o.SandboxID").cloned(),
        podman_pod: None,
        labels,
    })
}

impl Source for Crio {
    fn name(&self) -> &'static str {
        "crio"
    }

    fn present(&self) -> bool {
        // The run root is shared with Podman; CRI-O proper also keeps /var/run/crio or
        // /var/lib/crio. Scanning the shared folder is cheap (cached), so presence is the folder.
        self.roots
            .iter()
            .any(|r| r.join("overlay-containers").is_dir())
    }

    fn scan(&self, cache: &FileCache) -> Vec<Record> {
        let mut out = Vec::new();
        for root in &self.roots {
            let base = root.join("overlay-containers");
            for id in subdirs(&base) {
                let ud = base.join(&id).join("userdata");
                let cfg = ud.join("config.json");
                if !cfg.exists() {
                    continue;
                }
                let Some(pid) = read_pid(&ud.join("pidfile")) else {
                    continue;
                };
                let Some(mut r) = cache.get(&cfg, |d| parse_spec(d, &id)) else {
                    continue;
                };
                r.pid = Some(pid);
                out.push(r);
            }
        }
        out
    }

    fn watch_dirs(&self) -> Vec<PathBuf> {
        self.roots
            .iter()
            .map(|r| r.join("overlay-containers"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_state_dir() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/runtimes/crio");
        let src = Crio::new(vec![root]);
        assert!(src.present());
        let cache = FileCache::default();
        let mut recs = src.scan(&cache);
        recs.sort_by(|a, b| a.id.cmp(&b.id));
        let got: Vec<_> = recs
            .iter()
            .map(|r| (r.id.as_str(), r.kind, r.labels(), r.name.as_str(), r.pid))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "1111aaaa",
                    RecordKind::PodSandbox,
                    ("pod", "shop", "cart-7d9f", "cart-7d9f"),
                    "cart-7d9f",
                    Some(4242)
                ),
                (
                    "2222bbbb",
                    RecordKind::PodContainer,
                    ("pod", "shop", "cart-7d9f", "cart-7d9f"),
                    "cart",
                    Some(4300)
                ),
            ]
        );
        // 3333cccc is Podman's (libpod), 4444dddd has garbage JSON, 5555eeee has no pidfile.
        assert_eq!(recs[1].sandbox_id.as_deref(), Some("1111aaaa"));
        // The pod's labels are the sandbox's; its container gets them from the sandbox (its
        // own `io.kubernetes.cri-o.Labels` are the kubelet's bookkeeping, not the pod's).
        assert_eq!(recs[0].labels["app"], "cart");
        assert_eq!(recs[0].labels["pod-template-hash"], "7d9f");
        assert_eq!(recs[0].labels.len(), 6);
        assert!(recs[1].labels.is_empty());
        super::super::share_pod_labels(&mut recs);
        assert_eq!(recs[1].labels, recs[0].labels);
    }

    #[test]
    fn garbage_never_panics() {
        for bad in [
            &b""[..],
            b"{",
            b"[1,2]",
            br#"{"annotations":{"io.kubernetes.pod.name":1}}"#,
            br#"{"annotations":{"io.kubernetes.pod.name":"p","io.kubernetes.cri-o.ContainerType":"weird"}}"#,
        ] {
            assert_eq!(parse_spec(bad, "x"), None);
        }
        // Labels that are not a JSON object of strings: none (or the strings only).
        for (labels, n) in [
            ("{", 0),
            ("[1]", 0),
            ("7", 0),
            (r#"{\"a\":1,\"b\":\"x\"}"#, 1),
        ] {
            let spec = format!(
                r#"{{"annotations":{{"io.kubernetes.pod.name":"p","io.kubernetes.cri-o.ContainerType":"sandbox","io.kubernetes.cri-o.Labels":"{labels}"}}}}"#
            );
            assert_eq!(
                parse_spec(spec.as_bytes(), "x").unwrap().labels.len(),
                n,
                "{labels}"
            );
        }
    }
}
