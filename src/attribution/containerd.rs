//! containerd (Kubernetes CRI and plain): runtime v2 task bundles,
//! `<state>/io.containerd.runtime.v2.task/<namespace>/<id>/{config.json,init.pid}`.
//!
//! A CRI sandbox's OCI spec carries `io.kubernetes.cri.container-type=sandbox` and
//! `io.kubernetes.cri.sandbox-{name,namespace,uid}`; a pod's container has
//! `container-type=container`, `container-name` and the same `sandbox-*`. Tasks without those
//! annotations (Docker's `moby` namespace, `ctr run`) are plain containers named by their id.

use std::path::PathBuf;

use super::{annotations, read_pid, subdirs, FileCache, Record, RecordKind, Source};

const TASKS: &str = "io.containerd.runtime.v2.task";

pub struct Containerd {
    roots: Vec<PathBuf>,
}

impl Containerd {
    pub fn new(roots: Vec<PathBuf>) -> Containerd {
        Containerd { roots }
    }
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
        runtime: "containerd",
        id: id.to_string(),
        kind,
        k8s_namespace,
        k8s_pod,
        name,
        pid: None,
        sandbox_id,
        podman_pod: None,
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
                    out.push(r);
                }
            }
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
