//! Kubernetes, proven without a cluster: the OCI image (`packaging/oci`) and the manifests in
//! `deploy/`.
//!
//! - The image: built twice gives the same bytes and digest, another SOURCE_DATE_EPOCH another
//!   digest; `podman image inspect` shows the non-root user, the OCI labels and a size within
//!   20 % of the static binary; its layer holds exactly the binary, the config and the licence.
//! - The manifests: `kubectl kustomize` renders the base, the KubeSkoop overlay and the
//!   Prometheus Operator objects; `kubernetes-validate --strict` (PyPI, in a venv the test
//!   makes) accepts every manifest for Kubernetes 1.28 to 1.33; the DaemonSet's security
//!   context, mounts, probes and resources are what docs/kubernetes.md says, its capabilities
//!   are the systemd unit's; both ConfigMaps' configs load.
//! - The DaemonSet's pod for real: its pod template, turned into a Pod, is run by
//!   `podman kube play` with the image, beside a CRI pod of the tests' containerd
//!   (`tests/runtimes`), a podman container and named namespaces; the kernel's view of the
//!   container process (uid, capability sets, no_new_privs, seccomp, pid and net namespaces,
//!   read-only mounts, mount propagation) is checked, then the scrape: every entity labelled,
//!   every collector and eBPF probe up, an induced drop counted exactly, liveness and readiness.
//! - Without CAP_SYS_ADMIN, and without the containerd mount, the exporter says what it lacks.
//! - Why uid 0: through the CRI of the tests' containerd (what a kubelet calls), a container
//!   with the DaemonSet's security context as uid 65534 has the capabilities only in its
//!   bounding set, as uid 0 in its effective set.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

use common::{
    assert_probes_attached, have, privileged, skip, unique, wait_for, Netns, Pair, Scrape,
    DEFAULT_COLLECTORS,
};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const UNIT: &str = include_str!("../systemd/netsleuth.service");
const RT: &str = "/var/tmp/netsleuth-rt";
const CTD_STATE: &str = "/run/netsleuth-containerd";
const CTD_SOCK: &str = "/run/netsleuth-containerd/containerd.sock";
const DROP_PORT: u16 = 47_411;
/// The Kubernetes minor versions the manifests must validate against.
const K8S_VERSIONS: &[&str] = &["1.28", "1.29", "1.30", "1.31", "1.32", "1.33"];
/// kubernetes-validate from PyPI, pinned (its schemas are bundled: it works offline).
const VALIDATOR: &str = "kubernetes-validate==1.37.0";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn image_ref() -> String {
    format!("localhost/netsleuth:{VERSION}")
}

/// Runs a command for at most `timeout`; Err with its output when it fails or hangs.
fn run_timeout(cmd: &mut Command, timeout: Duration) -> Result<String, String> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{what}: {e}"))?;
    let end = Instant::now() + timeout;
    while child.try_wait().map_err(|e| e.to_string())?.is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{what}: no answer within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "{what}: {}\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(stdout)
}

fn must(cmd: &mut Command, timeout: Duration) -> String {
    run_timeout(cmd, timeout).unwrap_or_else(|e| panic!("{e}"))
}

// ---------------------------------------------------------------------------------------------
// The image.

/// What the image was built from and what came out.
struct Image {
    /// The oci-archive in target/packages/.
    tar: PathBuf,
    digest: String,
    /// A copy of the release tarball it was built from (others' runs of packaging/build may
    /// replace the one in target/packages/ meanwhile, from a newer commit).
    tarball: PathBuf,
    epoch: String,
    revision: String,
}

fn git(args: &[&str]) -> String {
    must(
        Command::new("git").args(args).current_dir(root()),
        Duration::from_secs(10),
    )
    .trim()
    .to_string()
}

/// `packaging/oci` (packaging/build first), once per test process, with its inputs pinned.
fn image() -> &'static Image {
    static IMG: OnceLock<Image> = OnceLock::new();
    IMG.get_or_init(|| {
        let epoch = git(&["log", "-1", "--format=%ct"]);
        let revision = git(&["rev-parse", "HEAD"]);
        let t0 = Instant::now();
        must(
            Command::new(root().join("packaging/oci"))
                .current_dir(root())
                // cargo test runs under the shared build lock already (CONTRIBUTING.md).
                .env("NETSLEUTH_BUILD_NOLOCK", "1")
                .env("SOURCE_DATE_EPOCH", &epoch)
                .env("NETSLEUTH_REVISION", &revision),
            Duration::from_secs(900),
        );
        eprintln!(
            "packaging/oci (with packaging/build) took {:?}",
            t0.elapsed()
        );
        let tar = root().join(format!("target/packages/netsleuth-{VERSION}-oci.tar"));
        let digest = std::fs::read_to_string(tar.with_extension("tar.digest")).unwrap();
        let dir = std::env::temp_dir().join(unique("nsloci"));
        std::fs::create_dir_all(&dir).unwrap();
        let tarball = dir.join("release.tar.gz");
        std::fs::copy(
            root().join(format!(
                "target/packages/netsleuth-{VERSION}-x86_64-linux-musl.tar.gz"
            )),
            &tarball,
        )
        .unwrap();
        Image {
            tar,
            digest: digest.trim().to_string(),
            tarball,
            epoch,
            revision,
        }
    })
}

fn podman_conf() -> PathBuf {
    root().join("tests/runtimes/containers.conf")
}

fn podman_with(conf: &Path, args: &[&str]) -> Result<String, String> {
    run_timeout(
        Command::new("podman")
            .env("CONTAINERS_CONF", conf)
            .args(args),
        Duration::from_secs(120),
    )
    .map(|s| s.trim().to_string())
}

fn podman(args: &[&str]) -> Result<String, String> {
    podman_with(&podman_conf(), args)
}

/// The image loaded into podman (once per test process).
fn loaded_image() -> String {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        podman(&["load", "-q", "-i", image().tar.to_str().unwrap()]).unwrap();
    });
    image_ref()
}

fn need(test: &str, tools: &[&str]) -> bool {
    if !privileged(test) {
        return false;
    }
    for t in tools {
        if !have(t) {
            return skip(test, &format!("{t} is not installed (tests/setup)"));
        }
    }
    true
}

#[test]
fn image_is_reproducible_non_root_labelled_and_small() {
    if !need(
        "kubernetes_image",
        &["podman", "python3", "dpkg-deb", "rpmbuild", "help2man"],
    ) {
        return;
    }
    let img = image();
    let (tar, digest) = (&img.tar, &img.digest);
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    // Built again from the same inputs (tarball, version, commit, SOURCE_DATE_EPOCH): the
    // same bytes.
    let dir = img.tarball.parent().unwrap();
    let build = |out: &Path, epoch: &str| {
        must(
            Command::new(root().join("packaging/oci"))
                .current_dir(root())
                .arg("--tarball")
                .arg(&img.tarball)
                .arg("--out")
                .arg(out)
                .env("SOURCE_DATE_EPOCH", epoch)
                .env("NETSLEUTH_REVISION", &img.revision),
            Duration::from_secs(120),
        );
        std::fs::read_to_string(out.with_extension("tar.digest"))
            .unwrap()
            .trim()
            .to_string()
    };
    let again = dir.join("again.tar");
    assert_eq!(
        &build(&again, &img.epoch),
        digest,
        "rebuilt: another digest"
    );
    assert!(
        std::fs::read(&again).unwrap() == std::fs::read(tar).unwrap(),
        "rebuilt: same digest but other bytes"
    );
    // Another input, another digest (the time stamps are really taken from the epoch).
    let other = dir.join("other.tar");
    assert_ne!(&build(&other, "1000000000"), digest);
    let _ = std::fs::remove_file(&again);
    let _ = std::fs::remove_file(&other);

    // The layout: one manifest, one gzip layer holding exactly three files, owned by root.
    let list = must(
        Command::new("tar").args(["-tvf", tar.to_str().unwrap()]),
        Duration::from_secs(10),
    );
    assert!(
        list.contains(" index.json") && list.contains(" oci-layout"),
        "{list}"
    );
    let manifest_blob = format!("blobs/sha256/{}", &digest[7..]);
    let manifest: Value = serde_json::from_str(&must(
        Command::new("tar").args(["-xOf", tar.to_str().unwrap(), &manifest_blob]),
        Duration::from_secs(10),
    ))
    .unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{manifest}");
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let layer_blob = format!(
        "blobs/sha256/{}",
        &layers[0]["digest"].as_str().unwrap()[7..]
    );
    let layer = must(
        Command::new("sh").arg("-c").arg(format!(
            "tar -xOf '{}' '{layer_blob}' | tar -tvzf -",
            tar.display()
        )),
        Duration::from_secs(30),
    );
    let files: Vec<&str> = layer
        .lines()
        .filter(|l| l.starts_with('-'))
        .map(|l| l.split_whitespace().last().unwrap())
        .collect();
    assert_eq!(
        files,
        [
            "etc/netsleuth/config.yaml",
            "usr/bin/netsleuth",
            "usr/share/doc/netsleuth/LICENSE"
        ],
        "{layer}"
    );
    assert!(
        layer.lines().all(|l| l.contains(" 0/0 ")),
        "not owned by 0/0:\n{layer}"
    );

    // Loaded into podman: its digest, user, labels and size.
    let name = loaded_image();
    let inspect: Value =
        serde_json::from_str(&podman(&["image", "inspect", &name]).unwrap()).unwrap();
    let i = &inspect[0];
    assert_eq!(i["Digest"], digest.as_str(), "podman's digest of the image");
    assert_eq!(i["Config"]["User"], "65534:65534", "non-root USER");
    assert_eq!(i["Config"]["Entrypoint"], json!(["/usr/bin/netsleuth"]));
    let labels = &i["Labels"];
    assert_eq!(labels["org.opencontainers.image.version"], VERSION);
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    assert!(labels["org.opencontainers.image.source"]
        .as_str()
        .unwrap()
        .starts_with("https://"));
    assert_eq!(
        labels["org.opencontainers.image.revision"],
        img.revision.as_str()
    );
    // The binary in the image is the release tarball's (stripped, static).
    let bin_size: f64 = must(
        Command::new("sh").arg("-c").arg(format!(
            "tar -xzOf '{}' netsleuth-{VERSION}-x86_64-linux-musl/netsleuth | wc -c",
            img.tarball.display()
        )),
        Duration::from_secs(30),
    )
    .trim()
    .parse()
    .unwrap();
    let size = i["Size"].as_f64().unwrap();
    eprintln!(
        "image {name}: {digest}, {size} bytes (binary {bin_size}), archive {} bytes",
        std::fs::metadata(tar).unwrap().len()
    );
    assert!(
        (size - bin_size).abs() <= 0.2 * bin_size,
        "image size {size} not within 20 % of the binary's {bin_size}"
    );
    // It runs: nothing else is needed in the image.
    let out = podman(&["run", "--rm", "--network", "none", &name, "--version"]).unwrap();
    assert_eq!(out, format!("netsleuth {VERSION}"));
    let who = podman(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "/usr/bin/netsleuth",
        &name,
        "probes",
    ]);
    // As uid 65534 with no capability the probes command still answers (eBPF unavailable).
    assert!(who.is_ok(), "{who:?}");
    // The tarball copy is used by this test only.
    let _ = std::fs::remove_dir_all(img.tarball.parent().unwrap());
}

// ---------------------------------------------------------------------------------------------
// The manifests.

/// Every YAML document of a text, as JSON values (nulls from empty documents left out).
fn yaml_docs(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("YAML: {e}\n{text}")))
        .filter(|v| !v.is_null())
        .collect()
}

/// `kubectl`: the one on PATH, else Debian's kubernetes-client unpacked under target/
/// (`apt-get download`, not installed: a `kubectl` package of another origin may own
/// /usr/bin/kubectl). Its kubectl 1.20 embeds kustomize v2.0.3, which the manifests support.
fn kubectl() -> PathBuf {
    static K: OnceLock<PathBuf> = OnceLock::new();
    K.get_or_init(|| {
        if have("kubectl") {
            return PathBuf::from("kubectl");
        }
        let dir = root().join("target/kubernetes-client");
        let bin = dir.join("usr/bin/kubectl");
        if !bin.exists() {
            std::fs::create_dir_all(&dir).unwrap();
            let download = || {
                run_timeout(
                    Command::new("apt-get")
                        .args(["download", "kubernetes-client"])
                        .current_dir(&dir),
                    Duration::from_secs(300),
                )
            };
            if download().is_err() {
                // A fresh machine may have no package lists yet.
                must(
                    Command::new("apt-get").args(["update", "-qq"]),
                    Duration::from_secs(300),
                );
                download().unwrap_or_else(|e| panic!("{e}"));
            }
            must(
                Command::new("sh")
                    .arg("-c")
                    .arg("dpkg-deb -x kubernetes-client_*.deb . && rm kubernetes-client_*.deb")
                    .current_dir(&dir),
                Duration::from_secs(60),
            );
        }
        bin
    })
    .clone()
}

fn kustomize(dir: &str) -> String {
    must(
        Command::new(kubectl())
            .args(["kustomize", dir])
            .current_dir(root()),
        Duration::from_secs(60),
    )
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let v: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(v.len(), 1, "one {kind} expected");
    v[0]
}

/// The unit's capabilities, as Kubernetes spells them (`SYS_ADMIN`).
fn unit_caps() -> BTreeSet<String> {
    UNIT.lines()
        .filter_map(|l| l.strip_prefix("AmbientCapabilities="))
        .flat_map(|v| v.split_whitespace())
        .map(|c| c.strip_prefix("CAP_").unwrap().to_string())
        .collect()
}

/// kubernetes-validate in a venv under target/ (made once, kept between runs).
fn validator() -> PathBuf {
    let venv = root().join("target/kubernetes-validate-venv");
    let bin = venv.join("bin/kubernetes-validate");
    let ok = venv.join("ok");
    if std::fs::read_to_string(&ok).ok().as_deref() != Some(VALIDATOR) {
        let _ = std::fs::remove_dir_all(&venv);
        must(
            Command::new("python3").args(["-m", "venv", venv.to_str().unwrap()]),
            Duration::from_secs(120),
        );
        must(
            Command::new(venv.join("bin/pip")).args(["install", "-q", VALIDATOR]),
            Duration::from_secs(300),
        );
        std::fs::write(&ok, VALIDATOR).unwrap();
    }
    bin
}

/// Every manifest file (plain and kustomization) under deploy/.
fn manifest_files() -> Vec<PathBuf> {
    let mut v = Vec::new();
    let mut dirs = vec![root().join("deploy")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml") {
                v.push(p);
            }
        }
    }
    v.sort();
    v
}

#[test]
fn manifests_render_validate_and_hold_least_privilege() {
    if !need("kubernetes_manifests", &["python3", "apt-get", "dpkg-deb"]) {
        return;
    }
    let base = kustomize("deploy/kubernetes");
    let overlay = kustomize("deploy/overlays/kubeskoop");
    let monitors = kustomize("deploy/kubernetes/prometheus-operator");
    let dir = std::env::temp_dir().join(unique("nslk8sv"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("rendered-base.yaml"), &base).unwrap();
    std::fs::write(dir.join("rendered-kubeskoop.yaml"), &overlay).unwrap();

    // Schema validation, strict (unknown fields are errors), for every supported release. The
    // Kustomizations are not Kubernetes objects, and the Prometheus Operator's CRDs are not in
    // the validator's schemas: those are checked below instead.
    let mut k8s_files: Vec<PathBuf> = manifest_files()
        .into_iter()
        .filter(|p| {
            let docs = yaml_docs(&std::fs::read_to_string(p).unwrap());
            // (The overlay's config.yaml is KubeSkoop's, not a Kubernetes object.)
            !docs.is_empty()
                && docs.iter().all(|d| {
                    d["apiVersion"].as_str().is_some_and(|a| {
                        !a.starts_with("kustomize.config.k8s.io")
                            && !a.starts_with("monitoring.coreos.com")
                    })
                })
        })
        .collect();
    k8s_files.push(dir.join("rendered-base.yaml"));
    k8s_files.push(dir.join("rendered-kubeskoop.yaml"));
    assert!(k8s_files.len() >= 7, "manifests to validate: {k8s_files:?}");
    let validate = validator();
    for v in K8S_VERSIONS {
        let mut cmd = Command::new(&validate);
        cmd.args(["--strict", "--quiet", "-k", &format!("{v}.0")])
            .args(&k8s_files);
        let out = run_timeout(&mut cmd, Duration::from_secs(120));
        assert!(out.is_ok(), "Kubernetes {v}: {}", out.unwrap_err());
    }
    // The validator must refuse what is wrong (strict: an unknown field), or it proves nothing.
    let bad = base.replace(
        "readOnlyRootFilesystem: true",
        "readOnlyRootFilesystm: true",
    );
    std::fs::write(dir.join("bad.yaml"), bad).unwrap();
    let out = run_timeout(
        Command::new(&validate)
            .args(["--strict", "--quiet", "-k", "1.33.0"])
            .arg(dir.join("bad.yaml")),
        Duration::from_secs(60),
    );
    assert!(
        out.as_ref()
            .is_err_and(|e| e.contains("readOnlyRootFilesystm")),
        "a misspelt field passed: {out:?}"
    );

    let docs = yaml_docs(&base);
    let kinds: BTreeSet<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ConfigMap",
            "DaemonSet",
            "Namespace",
            "Service",
            "ServiceAccount"
        ])
    );
    for d in &docs {
        if d["kind"] != "Namespace" {
            assert_eq!(d["metadata"]["namespace"], "netsleuth", "{d}");
        }
    }
    let ds = of_kind(&docs, "DaemonSet");
    assert_eq!(ds["spec"]["updateStrategy"]["type"], "RollingUpdate");
    assert!(!ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"].is_null());
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true);
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(pod["tolerations"], json!([{"operator": "Exists"}]));
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = &pod["containers"][0];
    assert_eq!(pod["containers"].as_array().unwrap().len(), 1);
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    let adds: BTreeSet<String> = sc["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        adds,
        unit_caps(),
        "the DaemonSet's capabilities are not the unit's measured set"
    );
    // Root in the container is needed for the capabilities to be effective (no ambient
    // capabilities in Kubernetes): docs/kubernetes.md.
    assert_eq!(sc["runAsUser"], 0);
    assert_eq!(sc["runAsNonRoot"], false);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/-/healthy");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/metrics");
    assert_eq!(c["resources"]["limits"]["memory"], "128Mi");
    assert!(!c["resources"]["requests"]["memory"].is_null());
    assert_eq!(
        c["env"],
        json!([{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}])
    );
    let port = &c["ports"][0];
    assert_eq!(
        (port["name"].as_str(), port["containerPort"].as_u64()),
        (Some("metrics"), Some(9102))
    );
    // Every mount read-only; every host path one of the documented ones; /run/netns follows
    // the host's new mounts.
    let volumes: BTreeMap<&str, &Value> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v))
        .collect();
    let mut host_paths = BTreeSet::new();
    for m in c["volumeMounts"].as_array().unwrap() {
        assert_eq!(m["readOnly"], true, "{m}");
        let v = volumes[m["name"].as_str().unwrap()];
        if let Some(p) = v["hostPath"]["path"].as_str() {
            assert_eq!(
                m["mountPath"].as_str(),
                Some(p),
                "mounted where the host has it"
            );
            host_paths.insert(p);
        }
    }
    assert_eq!(
        host_paths,
        BTreeSet::from([
            "/run/containerd",
            "/run/containers/storage",
            "/run/netns",
            "/sys/kernel/btf",
            "/sys/kernel/tracing",
            "/var/lib/containers/storage/overlay-containers",
            "/var/lib/docker/containers",
            "/var/lib/containerd/io.containerd.metadata.v1.bolt",
            "/var/lib/containers/storage/libpod",
        ])
    );
    let netns = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/run/netns")
        .unwrap();
    assert_eq!(netns["mountPropagation"], "HostToContainer");

    // The Service: headless, `metrics` on 9102, selecting the DaemonSet's pods.
    let svc = of_kind(&docs, "Service");
    let pod_labels = &ds["spec"]["template"]["metadata"]["labels"];
    assert_eq!(svc["spec"]["clusterIP"], "None");
    assert_eq!(&svc["spec"]["selector"], pod_labels);
    assert_eq!(
        svc["spec"]["ports"],
        json!([{"name": "metrics", "port": 9102, "targetPort": "metrics", "protocol": "TCP"}])
    );
    // The monitors select the same pods / Service and scrape the named port.
    let pm = yaml_docs(&monitors);
    let podmon = of_kind(&pm, "PodMonitor");
    assert_eq!(&podmon["spec"]["selector"]["matchLabels"], pod_labels);
    assert_eq!(podmon["spec"]["podMetricsEndpoints"][0]["port"], "metrics");
    let sm = yaml_docs(
        &std::fs::read_to_string(
            root().join("deploy/kubernetes/prometheus-operator/servicemonitor.yaml"),
        )
        .unwrap(),
    );
    let svcmon = of_kind(&sm, "ServiceMonitor");
    assert_eq!(
        &svcmon["spec"]["selector"]["matchLabels"],
        &svc["metadata"]["labels"]
    );
    assert_eq!(svcmon["spec"]["endpoints"][0]["port"], "metrics");

    // Both configs load (the base's, and KubeSkoop's config.yaml as the overlay ships it).
    let odocs = yaml_docs(&overlay);
    let ks_file =
        std::fs::read_to_string(root().join("deploy/overlays/kubeskoop/config.yaml")).unwrap();
    let ks_cm = of_kind(&odocs, "ConfigMap");
    assert_eq!(
        ks_cm["data"]["config.yaml"],
        ks_file.as_str(),
        "taken unchanged"
    );
    assert_eq!(
        ks_cm["metadata"]["name"],
        of_kind(&docs, "ConfigMap")["metadata"]["name"]
    );
    for (what, cfg) in [
        (
            "base",
            of_kind(&docs, "ConfigMap")["data"]["config.yaml"].clone(),
        ),
        ("kubeskoop", ks_cm["data"]["config.yaml"].clone()),
    ] {
        let p = dir.join(format!("{what}.yaml"));
        std::fs::write(&p, cfg.as_str().unwrap()).unwrap();
        let out = run_timeout(
            Command::new(common::BIN)
                .arg("probes")
                .arg(format!("--config.file={}", p.display())),
            Duration::from_secs(60),
        );
        assert!(out.is_ok(), "{what} config: {}", out.unwrap_err());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// The DaemonSet's pod, run by podman kube play.

/// What a test changes in the pod template (everything else is the DaemonSet's).
#[derive(Default)]
struct Variant {
    /// A capability taken out of `add`.
    remove_cap: Option<&'static str>,
    /// A volume (and its mount) taken out.
    remove_volume: Option<&'static str>,
}

/// A pod from the DaemonSet, played by podman, removed (with its ConfigMap volume) on drop.
struct KubePod {
    name: String,
    volume: String,
    addr: String,
    node: String,
    conf: PathBuf,
}

/// The pod template of the rendered DaemonSet as a Pod podman 4.3 can play, with what the
/// tests need. Changes, each because podman 4.3 cannot do what a kubelet does or because the
/// tests' runtimes live elsewhere:
/// - `ports` dropped: podman refuses port mappings with host networking (`hostNetwork` binds
///   the node's ports anyway, which is what a kubelet does with it).
/// - NODE_NAME a literal: podman has no `spec.nodeName` field reference.
/// - the listen port is a free one, not 9102 (other tests and services share this machine).
/// - the containerd state mount's host side is the tests' containerd (`/run/netsleuth-
///   containerd`), mounted at `/run/containerd` as the DaemonSet does: the config is unchanged.
/// - the ConfigMap (and the volume podman makes of it) gets a name of its own.
/// - hostPID: podman 4.3 ignores it; [`KubePod::play`] sets `pidns = "host"` in its
///   containers.conf instead, and the test checks the pid namespace is the host's.
fn pod_yaml(name: &str, cm: &str, port: u16, node: &str, v: &Variant) -> String {
    let docs = yaml_docs(&kustomize("deploy/kubernetes"));
    let mut config = of_kind(&docs, "ConfigMap").clone();
    config["metadata"]["name"] = json!(cm);
    let ds = of_kind(&docs, "DaemonSet");
    let mut spec = ds["spec"]["template"]["spec"].clone();
    let c = &mut spec["containers"][0];
    c.as_object_mut().unwrap().remove("ports");
    c["env"] = json!([{"name": "NODE_NAME", "value": node}]);
    let args: Vec<Value> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let a = a.as_str().unwrap();
            json!(if a.starts_with("--web.listen-address=") {
                format!("--web.listen-address=127.0.0.1:{port}")
            } else {
                a.to_string()
            })
        })
        .collect();
    c["args"] = json!(args);
    for p in ["livenessProbe", "readinessProbe"] {
        c[p]["httpGet"]["port"] = json!(port);
        c[p]["httpGet"]["host"] = json!("127.0.0.1");
    }
    if let Some(cap) = v.remove_cap {
        let adds = c["securityContext"]["capabilities"]["add"]
            .as_array_mut()
            .unwrap();
        let n = adds.len();
        adds.retain(|a| a != cap);
        assert_eq!(adds.len(), n - 1, "{cap} is not added");
    }
    if let Some(vol) = v.remove_volume {
        c["volumeMounts"]
            .as_array_mut()
            .unwrap()
            .retain(|m| m["name"] != vol);
    }
    let vols = spec["volumes"].as_array_mut().unwrap();
    if let Some(vol) = v.remove_volume {
        let n = vols.len();
        vols.retain(|m| m["name"] != vol);
        assert_eq!(vols.len(), n - 1, "no volume {vol}");
    }
    for vol in vols.iter_mut() {
        if vol["hostPath"]["path"] == "/run/containerd" {
            vol["hostPath"]["path"] = json!(CTD_STATE);
        }
        if !vol["configMap"].is_null() {
            vol["configMap"]["name"] = json!(cm);
        }
    }
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": ds["spec"]["template"]["metadata"]["labels"]},
        "spec": spec,
    });
    format!(
        "{}---\n{}",
        serde_norway::to_string(&config).unwrap(),
        serde_norway::to_string(&pod).unwrap()
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl KubePod {
    fn play(v: &Variant) -> KubePod {
        let image = loaded_image();
        assert_eq!(image, image_ref());
        let name = unique("nslk8s");
        let volume = format!("{name}-config");
        let port = free_port();
        let node = format!("node-{name}");
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        // The tests' containers.conf with the host's pid namespace (podman 4.3 ignores hostPID).
        let base = std::fs::read_to_string(podman_conf()).unwrap();
        assert!(base.contains("[containers]\n"));
        let conf = dir.join("containers.conf");
        std::fs::write(
            &conf,
            base.replace("[containers]\n", "[containers]\npidns = \"host\"\n"),
        )
        .unwrap();
        let yaml = dir.join("pod.yaml");
        std::fs::write(&yaml, pod_yaml(&name, &volume, port, &node, v)).unwrap();
        let pod = KubePod {
            name,
            volume,
            addr: format!("127.0.0.1:{port}"),
            node,
            conf,
        };
        podman_with(&pod.conf, &["kube", "play", yaml.to_str().unwrap()])
            .unwrap_or_else(|e| panic!("podman kube play: {e}"));
        pod
    }

    fn container(&self) -> String {
        format!("{}-netsleuth", self.name)
    }

    fn pid(&self) -> u32 {
        podman(&["inspect", "-f", "{{.State.Pid}}", &self.container()])
            .unwrap()
            .parse()
            .unwrap()
    }

    fn log(&self) -> String {
        let out = Command::new("podman")
            .env("CONTAINERS_CONF", &self.conf)
            .args(["logs", &self.container()])
            .output()
            .unwrap();
        // netsleuth logs to stderr; podman's own complaints (no systemd for healthcheck
        // timers) are not the exporter's.
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .chain(String::from_utf8_lossy(&out.stdout).lines())
            .filter(|l| !l.starts_with("time="))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn running(&self) -> bool {
        podman(&["inspect", "-f", "{{.State.Running}}", &self.container()]).as_deref() == Ok("true")
    }

    /// Waits for the readiness probe's answer (/metrics 200), checking liveness too.
    fn wait_ready(&self) -> Duration {
        let t0 = Instant::now();
        wait_for(
            "the pod's /metrics (readiness)",
            Duration::from_secs(60),
            || {
                assert!(
                    self.running(),
                    "the pod's container exited:\n{}",
                    self.log()
                );
                common::try_http_get(&self.addr, "/metrics", &[])
                    .ok()
                    .filter(|r| r.0 == 200)
            },
        );
        let (code, _, body) = common::http_get(&self.addr, "/-/healthy", &[]);
        assert_eq!(
            (code, body.as_slice()),
            (200, b"OK\n".as_slice()),
            "liveness"
        );
        t0.elapsed()
    }

    fn scrape(&self) -> Scrape {
        let (code, _, body) = common::http_get(&self.addr, "/metrics", &[]);
        assert_eq!(code, 200);
        Scrape::parse(&String::from_utf8_lossy(&body))
    }
}

impl Drop for KubePod {
    fn drop(&mut self) {
        let _ = podman_with(&self.conf, &["pod", "rm", "-f", "-t", "0", &self.name]);
        let _ = podman_with(&self.conf, &["volume", "rm", "-f", &self.volume]);
        if let Some(d) = self.conf.parent() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// A CRI pod sandbox with a `sleep` container on the tests' containerd, removed on drop.
struct CriPod {
    id: String,
    name: String,
    ns: String,
}

impl CriPod {
    fn run(name: &str, ns: &str) -> CriPod {
        let id = must(
            Command::new(format!("{RT}/venv/bin/python"))
                .arg(root().join("tests/runtimes/cri_client.py"))
                .args([CTD_SOCK, "run", name, ns, &format!("uid-{name}")])
                .args(["--container", "app", "localhost/busybox:test"])
                .env("NETSLEUTH_CRI_STUBS", RT),
            Duration::from_secs(60),
        );
        CriPod {
            id: id.trim().to_string(),
            name: name.to_string(),
            ns: ns.to_string(),
        }
    }

    fn netns(&self) -> u64 {
        let pid = std::fs::read_to_string(format!(
            "{CTD_STATE}/io.containerd.runtime.v2.task/k8s.io/{}/init.pid",
            self.id
        ))
        .unwrap();
        netns_of(pid.trim().parse().unwrap())
    }
}

impl Drop for CriPod {
    fn drop(&mut self) {
        let r = run_timeout(
            Command::new(format!("{RT}/venv/bin/python"))
                .arg(root().join("tests/runtimes/cri_client.py"))
                .args([CTD_SOCK, "rm", &self.id])
                .env("NETSLEUTH_CRI_STUBS", RT),
            Duration::from_secs(60),
        );
        if let Err(e) = r {
            eprintln!("removing CRI pod {}: {e}", self.id);
        }
    }
}

/// A podman container with a network namespace of its own, removed on drop.
struct PodmanContainer {
    name: String,
}

impl PodmanContainer {
    fn run() -> PodmanContainer {
        let name = unique("nslk8c");
        podman(&[
            "run",
            "-d",
            "--network",
            "none",
            "--name",
            &name,
            "localhost/bbtest:1",
            "/pause",
        ])
        .unwrap();
        PodmanContainer { name }
    }

    fn netns(&self) -> u64 {
        let pid = podman(&["inspect", "-f", "{{.State.Pid}}", &self.name]).unwrap();
        netns_of(pid.parse().unwrap())
    }
}

impl Drop for PodmanContainer {
    fn drop(&mut self) {
        let _ = podman(&["rm", "-f", "-t", "0", &self.name]);
    }
}

fn netns_of(pid: u32) -> u64 {
    ns_of(pid, "net")
}

fn ns_of(pid: u32, kind: &str) -> u64 {
    let l = std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap();
    // `net:[4026531840]`
    let l = l.to_str().unwrap();
    l.strip_prefix(&format!("{kind}:["))
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("namespace link {l}"))
}

/// Root, podman, kubectl, the tests' runtimes (containerd with CRI, podman's test image).
fn pod_ready(test: &str) -> bool {
    if !need(
        test,
        &[
            "podman", "python3", "iptables", "dpkg-deb", "rpmbuild", "help2man",
        ],
    ) {
        return false;
    }
    if !Path::new(CTD_SOCK).exists() || !Path::new(RT).join("venv/ok").exists() {
        return skip(
            test,
            "the tests' containerd is not running (run tests/runtimes/up.sh)",
        );
    }
    if podman(&["image", "exists", "localhost/bbtest:1"]).is_err() {
        return skip(
            test,
            "podman image localhost/bbtest:1 missing (tests/runtimes/up.sh)",
        );
    }
    true
}

/// The pod tests count drops on the node and bind host ports: one at a time.
fn lock() -> std::sync::MutexGuard<'static, ()> {
    static L: std::sync::Mutex<()> = std::sync::Mutex::new(());
    L.lock().unwrap_or_else(|e| e.into_inner())
}

/// `/proc/<pid>/status` fields.
fn status(pid: u32) -> BTreeMap<String, String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// The capability mask of names like `SYS_ADMIN`.
fn cap_mask(names: &BTreeSet<String>) -> u64 {
    names
        .iter()
        .map(|n| {
            let bit = match n.as_str() {
                "DAC_READ_SEARCH" => 2,
                "SYS_PTRACE" => 19,
                "SYS_ADMIN" => 21,
                "PERFMON" => 38,
                "BPF" => 39,
                other => panic!("capability {other}: add its number here"),
            };
            1u64 << bit
        })
        .fold(0, |a, b| a | b)
}

fn hex(s: &str) -> u64 {
    u64::from_str_radix(s, 16).unwrap()
}

/// Mount point → (per-mount options, optional fields) of a process's mount namespace.
fn mounts(pid: u32) -> BTreeMap<String, (String, String)> {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .unwrap()
        .lines()
        .map(|l| {
            let (pre, _) = l.split_once(" - ").unwrap();
            let f: Vec<&str> = pre.split(' ').collect();
            (f[4].to_string(), (f[5].to_string(), f[6..].join(" ")))
        })
        .collect()
}

/// The entity labels of a namespace (from its one `netsleuth_sock_sockets_used` series).
fn entity(s: &Scrape, netns: u64) -> Option<BTreeMap<String, String>> {
    s.find(
        "netsleuth_sock_sockets_used",
        &[("netns", &netns.to_string())],
    )
    .first()
    .map(|x| {
        let mut l = x.labels.clone();
        // An empty label is not written; read as Prometheus does, absent is empty.
        for k in ["k8s_namespace", "k8s_pod", "name"] {
            l.entry(k.to_string()).or_default();
        }
        l
    })
}

fn assert_entity(s: &Scrape, netns: u64, want: &[(&str, &str)], what: &str) {
    let got = entity(s, netns).unwrap_or_else(|| panic!("{what}: netns {netns} not exported"));
    for (k, v) in want {
        assert_eq!(
            got.get(*k).map(String::as_str),
            Some(*v),
            "{what}: label {k}: {got:?}"
        );
    }
}

#[test]
fn daemonset_pod_runs_least_privileged_and_sees_the_nodes_pods() {
    let test = "kubernetes_daemonset_pod";
    if !pod_ready(test) {
        return;
    }
    let _g = lock();
    let caps = unit_caps();
    let named = Netns::new("nslk8n");
    let container = PodmanContainer::run();
    let cri_name = unique("web");
    let cri = CriPod::run(&cri_name, "shop");
    let pair = Pair::dropping(DROP_PORT);
    let t0 = Instant::now();
    let pod = KubePod::play(&Variant::default());
    let ready = pod.wait_ready();
    eprintln!(
        "kube play to ready: {:?} (readiness answered after {ready:?})",
        t0.elapsed()
    );

    // The kernel's view of the container's process.
    let pid = pod.pid();
    let st = status(pid);
    assert_eq!(st["Uid"], "0\t0\t0\t0", "uid 0 in the container");
    let want = cap_mask(&caps);
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(
            hex(&st[set]),
            want,
            "{set}: exactly the DaemonSet's capabilities"
        );
    }
    assert_eq!(hex(&st["CapAmb"]), 0);
    assert_eq!(hex(&st["CapInh"]), 0);
    assert_eq!(st["NoNewPrivs"], "1", "allowPrivilegeEscalation: false");
    assert_eq!(st["Seccomp"], "2", "RuntimeDefault: a seccomp filter");
    let me = std::process::id();
    assert_eq!(ns_of(pid, "pid"), ns_of(me, "pid"), "hostPID");
    assert_eq!(ns_of(pid, "net"), ns_of(me, "net"), "hostNetwork");
    assert_ne!(ns_of(pid, "mnt"), ns_of(me, "mnt"));
    let m = mounts(pid);
    let ro = |p: &str| {
        let (opts, _) = m.get(p).unwrap_or_else(|| panic!("{p} not mounted: {m:?}"));
        assert!(
            opts.split(',').any(|o| o == "ro"),
            "{p} is not read-only: {opts}"
        );
    };
    ro("/");
    for p in [
        "/etc/netsleuth",
        "/run/containerd",
        "/run/containers/storage",
        "/var/lib/containers/storage/overlay-containers",
        "/var/lib/docker/containers",
        "/var/lib/containerd/io.containerd.metadata.v1.bolt",
        "/var/lib/containers/storage/libpod",
        "/run/netns",
        "/sys/kernel/btf",
        "/sys/kernel/tracing",
    ] {
        ro(p);
    }
    assert!(
        m["/run/netns"].1.contains("master:"),
        "/run/netns does not receive the host's mounts (HostToContainer): {:?}",
        m["/run/netns"]
    );

    // A named namespace made after the pod started: it reaches the container's /run/netns.
    let later = Netns::new("nslk8m");
    let s = wait_for("every entity in a scrape", Duration::from_secs(15), || {
        let s = pod.scrape();
        [cri.netns(), container.netns(), named.inode(), later.inode()]
            .iter()
            .all(|n| entity(&s, *n).is_some_and(|l| l["kind"] != "process"))
            .then_some(s)
    });
    let node = pod.node.as_str();
    assert_entity(
        &s,
        cri.netns(),
        &[
            ("kind", "pod"),
            ("k8s_namespace", &cri.ns),
            ("k8s_pod", &cri.name),
            ("name", &cri.name),
            ("k8s_node", node),
        ],
        "CRI pod",
    );
    assert_entity(
        &s,
        container.netns(),
        &[
            ("kind", "container"),
            ("name", &container.name),
            ("k8s_node", node),
        ],
        "podman container",
    );
    for (ns, what) in [(&named, "named netns"), (&later, "named netns made later")] {
        assert_entity(
            &s,
            ns.inode(),
            &[("kind", "named"), ("name", &ns.name)],
            what,
        );
    }
    assert_entity(
        &s,
        ns_of(me, "net"),
        &[("kind", "host"), ("name", "")],
        "host",
    );
    for c in DEFAULT_COLLECTORS.iter().chain(["ebpf"].iter()) {
        assert_eq!(
            s.sum("netsleuth_scrape_collector_success", &[("collector", c)]),
            Some(1.0),
            "collector {c}; log:\n{}",
            pod.log()
        );
    }
    assert_probes_attached(&s, &["packetloss", "tcpreset"]);

    // An induced drop, counted exactly by the eBPF probe in the pod.
    let b = pair.b.inode().to_string();
    let drops = || {
        pod.scrape()
            .sum(
                "netsleuth_packetloss_total",
                &[("netns", &b), ("reason", "NETFILTER_DROP")],
            )
            .unwrap_or(0.0)
    };
    let before = drops();
    pair.send_udp_to_b(DROP_PORT, 7);
    wait_for("7 drops counted", Duration::from_secs(10), || {
        (drops() >= before + 7.0).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(drops(), before + 7.0, "exactly the induced drops");

    let log = pod.log();
    assert!(
        !log.contains(" is missing") && !log.contains("ERROR"),
        "warned or failed with the DaemonSet's privileges:\n{log}"
    );
    assert!(pod.running());
    drop(later);
}

#[test]
fn a_missing_capability_or_mount_is_named() {
    let test = "kubernetes_missing_privileges";
    if !pod_ready(test) {
        return;
    }
    let _g = lock();
    let named = Netns::new("nslk8d");
    let cri_name = unique("api");
    let cri = CriPod::run(&cri_name, "shop");

    // Without CAP_SYS_ADMIN: no setns, and (RuntimeDefault seccomp) no bpf() either.
    {
        let pod = KubePod::play(&Variant {
            remove_cap: Some("SYS_ADMIN"),
            ..Default::default()
        });
        pod.wait_ready();
        let s = pod.scrape();
        let log = pod.log();
        assert!(log.contains("setns needs CAP_SYS_ADMIN"), "{log}");
        assert_eq!(
            s.sum(
                "netsleuth_scrape_collector_success",
                &[("collector", "netdev")]
            ),
            Some(0.0)
        );
        assert!(
            entity(&s, named.inode()).is_none(),
            "a named netns read without setns?"
        );
        // CAP_BPF and CAP_PERFMON are held, but the runtime's default seccomp profile lets
        // bpf() through only with CAP_SYS_ADMIN: the exporter says so instead of blaming a
        // capability it holds.
        for p in ["packetloss", "tcpreset"] {
            assert_eq!(
                s.sum("netsleuth_probe_up", &[("probe", p)]),
                Some(0.0),
                "{p}"
            );
            let line = log
                .lines()
                .find(|l| l.contains(&format!("eBPF probe {p} cannot run")))
                .unwrap_or_else(|| panic!("no error for {p}:\n{log}"));
            assert!(
                line.contains("holds the capabilities") && line.contains("seccomp"),
                "{line}"
            );
        }
        assert!(pod.running(), "the exporter must stay up");
    }
    // Without the containerd state mount: the CRI pod's namespace is still exported, but
    // unattributed; the log no longer lists containerd among the attribution sources.
    {
        let pod = KubePod::play(&Variant {
            remove_volume: Some("containerd"),
            ..Default::default()
        });
        pod.wait_ready();
        let s = pod.scrape();
        let log = pod.log();
        let e = entity(&s, cri.netns()).expect("the CRI pod's namespace is exported");
        // Unattributed: by its CNI netns file (`named`, `cni-...`) or by its processes.
        assert!(
            (e["kind"] == "named" && e["name"].starts_with("cni-")) || e["kind"] == "process",
            "attributed without containerd's state? {e:?}"
        );
        assert_eq!(e["k8s_pod"], "");
        assert!(
            !log.contains("attribution source containerd: present")
                && log.contains("attribution source podman: present"),
            "{log}"
        );
        assert!(pod.running());
    }
}

/// A container with the DaemonSet's security context, started through the CRI of the tests'
/// containerd (what a kubelet does), removed on drop.
struct CriCapsPod {
    sandbox: String,
    container: String,
    stubs: PathBuf,
}

impl CriCapsPod {
    fn script() -> PathBuf {
        root().join("tests/fixtures/kubernetes/cri_caps.py")
    }

    fn run(uid: u32, caps: &BTreeSet<String>, stubs: &Path) -> CriCapsPod {
        let caps: Vec<&str> = caps.iter().map(String::as_str).collect();
        let out = must(
            Command::new(format!("{RT}/venv/bin/python"))
                .arg(Self::script())
                .arg(CTD_SOCK)
                .arg(stubs)
                .args(["run", &unique("nslcaps"), &uid.to_string(), &caps.join(",")]),
            Duration::from_secs(60),
        );
        let (sandbox, container) = out.trim().split_once(' ').unwrap();
        CriCapsPod {
            sandbox: sandbox.to_string(),
            container: container.to_string(),
            stubs: stubs.to_path_buf(),
        }
    }

    fn pid(&self) -> u32 {
        std::fs::read_to_string(format!(
            "{CTD_STATE}/io.containerd.runtime.v2.task/k8s.io/{}/init.pid",
            self.container
        ))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
    }
}

impl Drop for CriCapsPod {
    fn drop(&mut self) {
        let r = run_timeout(
            Command::new(format!("{RT}/venv/bin/python"))
                .arg(Self::script())
                .arg(CTD_SOCK)
                .arg(&self.stubs)
                .args(["rm", &self.sandbox]),
            Duration::from_secs(60),
        );
        if let Err(e) = r {
            eprintln!("removing CRI sandbox {}: {e}", self.sandbox);
        }
    }
}

/// Why the DaemonSet runs as uid 0: through the CRI (containerd, as under a kubelet) the
/// added capabilities reach a uid-0 process's effective set, but a non-root one keeps them
/// only in its bounding set (no ambient capabilities in the CRI; execve() as a non-zero uid
/// clears permitted and effective). podman differs here (it sets ambient capabilities for a
/// non-root user), which is why this is checked on the CRI runtime.
#[test]
fn through_the_cri_only_uid_0_gets_the_added_capabilities() {
    let test = "kubernetes_cri_non_root";
    if !pod_ready(test) {
        return;
    }
    let dir = std::env::temp_dir().join(unique("nslcristubs"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        root().join("tests/fixtures/kubernetes/cri_caps.proto"),
        dir.join("cri_caps.proto"),
    )
    .unwrap();
    must(
        Command::new(format!("{RT}/venv/bin/python"))
            .args(["-m", "grpc_tools.protoc", "-I."])
            .args(["--python_out=.", "--grpc_python_out=.", "cri_caps.proto"])
            .current_dir(&dir),
        Duration::from_secs(60),
    );
    let caps = unit_caps();
    let want = cap_mask(&caps);
    let me = std::process::id();
    for (uid, eff) in [(65534, 0), (0, want)] {
        let c = CriCapsPod::run(uid, &caps, &dir);
        let st = status(c.pid());
        assert_eq!(st["Uid"], format!("{uid}\t{uid}\t{uid}\t{uid}"));
        assert_eq!(hex(&st["CapBnd"]), want, "uid {uid}: bounding set");
        assert_eq!(hex(&st["CapEff"]), eff, "uid {uid}: effective set");
        assert_eq!(hex(&st["CapPrm"]), eff, "uid {uid}: permitted set");
        assert_eq!(
            hex(&st["CapAmb"]),
            0,
            "uid {uid}: the CRI sets no ambient set"
        );
        assert_eq!(st["NoNewPrivs"], "1");
        assert_eq!(st["Seccomp"], "2", "runtime/default");
        assert_eq!(
            ns_of(c.pid(), "pid"),
            ns_of(me, "pid"),
            "host PID namespace"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
