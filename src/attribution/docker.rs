//! Docker, and Kubernetes on cri-dockerd / dockershim: `<data-root>/containers/<id>/config.v2.json`
//! (`Name` "/web", `State.Running`, `State.Pid`, `Config.Labels`).
//!
//! cri-dockerd labels its containers `io.kubernetes.docker.type` (`podsandbox`/`container`),
//! `io.kubernetes.pod.{name,namespace,uid}`, `io.kubernetes.container.name` and
//! `io.kubernetes.sandbox.id`; without them it is a plain Docker container. The sandbox
//! container's labels are the pod's labels (plus its annotations as `annotation.<key>`); a
//! plain container's are its own (`docker run --label`).

use std::path::PathBuf;

use super::{str_of, subdirs, FileCache, Record, RecordKind, Source};

pub struct Docker {
    roots: Vec<PathBuf>,
}

impl Docker {
    pub fn new(roots: Vec<PathBuf>) -> Docker {
        Docker { roots }
    }
}

/// Parse `config.v2.json` into a record with its pid; `None` unless the container is running.
pub fn parse_config_v2(data: &[u8]) -> Option<Record> {
    let c: serde_json::Value = serde_json::from_slice(data).ok()?;
    let id = str_of(&c, "ID")?.to_string();
    let state = c.get("State")?;
    if state.get("Running")?.as_bool() != Some(true) {
        return None;
    }
    let pid = i32::try_from(state.get("Pid")?.as_i64()?).ok()?;
    if pid <= 0 {
        return None;
    }
    let labels = c.get("Config").and_then(|x| x.get("Labels"));
    let label = |k: &str| {
        labels
            .and_then(|l| l.get(k))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let cname = str_of(&c, "Name")
        .unwrap_or("")
        .trim_start_matches('/')
        .to_string();
    let pod = label("io.kubernetes.pod.name").filter(|p| !p.is_empty());
    let (kind, k8s_namespace, k8s_pod, name, sandbox_id) =
        match (pod, label("io.kubernetes.docker.type").as_deref()) {
            (Some(pod), Some("podsandbox")) => (
                RecordKind::PodSandbox,
                label("io.kubernetes.pod.namespace").unwrap_or_default(),
                pod.clone(),
                pod,
                None,
            ),
            (Some(pod), _) => (
                RecordKind::PodContainer,
                label("io.kubernetes.pod.namespace").unwrap_or_default(),
                pod,
                label("io.kubernetes.container.name").unwrap_or(cname),
                label("io.kubernetes.sandbox.id"),
            ),
            (None, _) => (
                RecordKind::Container,
                String::new(),
                String::new(),
                if cname.is_empty() { id.clone() } else { cname },
                None,
            ),
        };
    // A plain container's labels are its own; cri-dockerd gives the sandbox container the
    // pod's labels (and its annotations, prefixed `annotation.`, which are not labels).
    let labels = match kind {
        RecordKind::Container => super::string_map(labels),
        RecordKind::PodSandbox => {
            let mut m = super::string_map(labels);
            m.retain(|k, _| !k.starts_with("annotation."));
            m
        }
        RecordKind::PodContainer => Default::default(),
    };
    Some(Record {
        runtime: "docker",
        id,
        kind,
        k8s_namespace,
        k8s_pod,
        name,
        pid: Some(pid),
        sandbox_id,
        podman_pod: None,
        labels,
    })
}

impl Source for Docker {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn present(&self) -> bool {
        self.roots.iter().any(|r| r.join("containers").is_dir())
    }

    fn scan(&self, cache: &FileCache) -> Vec<Record> {
        let mut out = Vec::new();
        for root in &self.roots {
            let base = root.join("containers");
            for id in subdirs(&base) {
                if let Some(r) = cache.get(&base.join(&id).join("config.v2.json"), parse_config_v2)
                {
                    out.push(r);
                }
            }
        }
        out
    }

    fn watch_dirs(&self) -> Vec<PathBuf> {
        self.roots.iter().map(|r| r.join("containers")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_cri_dockerd() {
        let plain = br#"{"ID":"abc","Name":"/web","State":{"Running":true,"Pid":321},"Config":{"Labels":{}}}"#;
        let r = parse_config_v2(plain).unwrap();
        assert_eq!(
            (r.labels(), r.pid),
            (("container", "", "", "web"), Some(321))
        );
        let sandbox = br#"{"ID":"s1","Name":"/k8s_POD_api-0_prod_u1_0","State":{"Running":true,"Pid":10},"Config":{"Labels":{"io.kubernetes.docker.type":"podsandbox","io.kubernetes.pod.name":"api-0","io.kubernetes.pod.namespace":"prod","io.kubernetes.pod.uid":"u1"}}}"#;
        let r = parse_config_v2(sandbox).unwrap();
        assert_eq!(
            (r.kind, r.labels()),
            (RecordKind::PodSandbox, ("pod", "prod", "api-0", "api-0"))
        );
        let ctr = br#"{"ID":"c1","Name":"/k8s_api_api-0_prod_u1_0","State":{"Running":true,"Pid":11},"Config":{"Labels":{"io.kubernetes.docker.type":"container","io.kubernetes.container.name":"api","io.kubernetes.pod.name":"api-0","io.kubernetes.pod.namespace":"prod","io.kubernetes.sandbox.id":"s1"}}}"#;
        let r = parse_config_v2(ctr).unwrap();
        assert_eq!((r.kind, r.name.as_str()), (RecordKind::PodContainer, "api"));
        assert_eq!(r.sandbox_id.as_deref(), Some("s1"));
        assert!(
            r.labels.is_empty(),
            "a pod container's labels come from its sandbox"
        );
        let sandbox = br#"{"ID":"s1","Name":"/k8s_POD_api-0_prod_u1_0","State":{"Running":true,"Pid":10},"Config":{"Labels":{"app":"api","annotation.kubernetes.io/config.seen":"x","io.kubernetes.docker.type":"podsandbox","io.kubernetes.pod.name":"api-0","io.kubernetes.pod.namespace":"prod","n":5}}}"#;
        let r = parse_config_v2(sandbox).unwrap();
        assert_eq!(r.labels["app"], "api");
        assert!(!r
            .labels
            .contains_key("annotation.kubernetes.io/config.seen"));
        assert!(!r.labels.contains_key("n"));
        assert_eq!(r.labels.len(), 4);
        let plain = br#"{"ID":"abc","Name":"/web","State":{"Running":true,"Pid":321},"Config":{"Labels":{"team":"blue"}}}"#;
        assert_eq!(parse_config_v2(plain).unwrap().labels["team"], "blue");
    }

    #[test]
    fn stopped_or_garbage_is_none() {
        for bad in [
            &br#"{"ID":"abc","Name":"/web","State":{"Running":false,"Pid":0}}"#[..],
            br#"{"ID":"abc","State":{"Running":true,"Pid":-5}}"#,
            br#"{"ID":"abc","State":{"Running":true,"Pid":99999999999}}"#,
            br#"{"ID":7,"State":{"Running":true,"Pid":5}}"#,
            br#"{"ID":"a","State":"x"}"#,
            b"",
            b"{\"ID\":\"a\",\"State\":{\"Running\":tr",
            b"\x00\x01",
        ] {
            assert_eq!(parse_config_v2(bad), None);
        }
    }
}
