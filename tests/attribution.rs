//! Attribution against real runtimes: CRI pod sandboxes on a containerd of our own (started by
//! `tests/runtimes/up.sh`, state in /run/netsleuth-containerd), Podman containers and pods, and
//! Docker containers on a dockerd of our own. The real binary runs with its state roots
//! pointed there; every test asserts the exact labels of what it created. Every pod and
//! container is removed by a guard's Drop, so a failing test leaves none behind; every CRI
//! answer is awaited with a timeout.
//!
//! Run `tests/runtimes/up.sh` first (`.ci/run` and `tests/run` do, and `down.sh` afterwards);
//! without it these tests skip (and fail under NETSLEUTH_REQUIRE_PRIVILEGED=1).

mod common;
mod loki_server;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

const RT: &str = "/var/tmp/netsleuth-rt";
const CTD_STATE: &str = "/run/netsleuth-containerd";
const CTD_SOCK: &str = "/run/netsleuth-containerd/containerd.sock";
const DOCKER_ROOT: &str = "/var/lib/netsleuth-docker";
const DOCKER_SOCK: &str = "unix:///run/netsleuth-docker/docker.sock";

fn here() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/runtimes")
}

/// Config for the exporter: our runtimes' roots, no periodic rescan worth mentioning
/// (maxStaleness 1h: only inotify and the 10 s refresh can rescan), so freshness is the
/// watcher's.
fn config(max_staleness: &str) -> PathBuf {
    write_config(&format!(
        r#"
inventory:
  maxStaleness: {max_staleness}
  refreshInterval: 60s
  stateRoots:
    containerd: [{CTD_STATE}]
    docker: [{DOCKER_ROOT}]
metrics:
  probes: [{{name: netdev, args: {{loopback: all}}}}, io, fd]
"#
    ))
}

fn runtimes_ready(test: &str) -> bool {
    if !privileged(test) {
        return false;
    }
    if !Path::new(CTD_SOCK).exists() || !Path::new(RT).join("venv/ok").exists() {
        return skip(
            test,
            "containerd of the tests is not running (run tests/runtimes/up.sh)",
        );
    }
    true
}

/// How long one CRI call may take (a sandbox start with its container is well under 10 s).
const CRI_TIMEOUT: Duration = Duration::from_secs(60);

/// A CRI client process (Python grpcio, `cri_client.py serve`): one command per line, each
/// answer awaited for at most [`CRI_TIMEOUT`]. The sandboxes it ran and did not remove are
/// removed on drop.
struct Cri {
    child: Child,
    stdin: ChildStdin,
    answers: mpsc::Receiver<String>,
    live: Vec<String>,
}

impl Cri {
    fn new() -> Cri {
        let mut child = Command::new(format!("{RT}/venv/bin/python"))
            .arg(here().join("cri_client.py"))
            .arg(CTD_SOCK)
            .arg("serve")
            .env("NETSLEUTH_CRI_STUBS", RT)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start cri_client.py");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Cri {
            child,
            stdin,
            answers,
            live: Vec::new(),
        }
    }

    fn try_call(&mut self, line: &str) -> Result<String, String> {
        writeln!(self.stdin, "{line}").map_err(|e| format!("CRI `{line}`: write: {e}"))?;
        self.stdin.flush().map_err(|e| e.to_string())?;
        let out = self
            .answers
            .recv_timeout(CRI_TIMEOUT)
            .map_err(|e| format!("CRI `{line}`: no answer within {CRI_TIMEOUT:?} ({e})"))?;
        let out = out.trim_end();
        match out.strip_prefix("ok ") {
            Some(v) => Ok(v.to_string()),
            None => Err(format!("CRI `{line}`: {out}")),
        }
    }

    fn call(&mut self, line: &str) -> String {
        self.try_call(line).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Run a pod sandbox (optionally with a `sleep` container); returns its id.
    fn run(&mut self, name: &str, ns: &str, host_network: bool, container: Option<&str>) -> String {
        let mut opts = String::new();
        if host_network {
            opts.push_str(" --host-network");
        }
        if let Some(c) = container {
            opts.push_str(&format!(" --container {c} localhost/busybox:test"));
        }
        self.run_sandbox(name, ns, &opts)
    }

    /// `run NAME NS uid-NAME OPTS`: a pod sandbox removed on drop; returns its id.
    fn run_sandbox(&mut self, name: &str, ns: &str, opts: &str) -> String {
        let id = self.call(&format!("run {name} {ns} uid-{name}{opts}"));
        self.live.push(id.clone());
        id
    }

    /// Run a pod sandbox with exactly these labels (`KEY=VALUE`; none if empty).
    fn run_labelled(
        &mut self,
        name: &str,
        ns: &str,
        host_network: bool,
        labels: &[&str],
    ) -> String {
        let mut opts = String::new();
        if host_network {
            opts.push_str(" --host-network --container agent localhost/busybox:test");
        }
        if labels.is_empty() {
            opts.push_str(" --no-labels");
        }
        for kv in labels {
            opts.push_str(&format!(" --label {kv}"));
        }
        self.run_sandbox(name, ns, &opts)
    }

    fn rm(&mut self, id: &str) {
        self.call(&format!("rm {id}"));
        self.live.retain(|x| x != id);
    }
}

impl Drop for Cri {
    fn drop(&mut self) {
        for id in std::mem::take(&mut self.live) {
            if let Err(e) = self.try_call(&format!("rm {id}")) {
                eprintln!("removing pod sandbox {id}: {e}");
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The exporter with the config file `cfg`.
fn start_with(cfg: &Path) -> Exporter {
    Exporter::start(&[&format!("--config.file={}", cfg.display())])
}

/// The init pid of a containerd task (a CRI pod's sandbox).
/// The netns inode of a containerd task's init process.
fn task_netns(id: &str) -> u64 {
    netns_of_pid(sandbox_pid(id))
}

/// Whether the tests' dockerd answers.
fn docker_up() -> bool {
    Command::new("/usr/bin/docker")
        .args(["-H", DOCKER_SOCK, "info"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `docker -H <the tests' dockerd> ARGS`, its output trimmed.
fn docker(args: &[&str]) -> String {
    let mut a = vec!["-H", DOCKER_SOCK];
    a.extend_from_slice(args);
    run("/usr/bin/docker", &a).trim().to_string()
}

/// Runs a `/pause` container `name` without a network, with these labels (`KEY=VALUE`);
/// returns its pid.
fn docker_pause(name: &str, labels: &[&str]) -> i32 {
    let mut args = vec!["run", "-d", "--network", "none"];
    for l in labels {
        args.extend(["--label", l]);
    }
    args.extend(["--name", name, "localhost/bb:docker", "/pause"]);
    docker(&args);
    docker(&["inspect", "-f", "{{.State.Pid}}", name])
        .parse()
        .unwrap()
}

/// A Docker container of the test, removed on drop.
struct DockerContainer(String);

impl Drop for DockerContainer {
    fn drop(&mut self) {
        let _ = Command::new("/usr/bin/docker")
            .args(["-H", DOCKER_SOCK, "rm", "-f", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn netns_of_pid(pid: i32) -> u64 {
    let l = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    netsleuth::inventory::parse_ns_link(l.as_os_str().as_encoded_bytes()).unwrap()
}

fn own_netns() -> u64 {
    netns_of_pid(std::process::id() as i32)
}

/// Entity labels of every namespace in a scrape, by netns inode (from netdev `lo` series:
/// every namespace has one, and the configs here export every namespace's, `loopback: all`).
fn entities(s: &Scrape) -> BTreeMap<String, BTreeMap<String, String>> {
    s.find("netsleuth_netdev_receive_bytes_total", &[("device", "lo")])
        .into_iter()
        .map(|x| {
            let mut l = x.labels.clone();
            l.remove("device");
            // An empty label is not written; read as Prometheus does, absent is empty.
            for k in ["k8s_namespace", "k8s_pod", "name"] {
                l.entry(k.to_string()).or_default();
            }
            (l["netns"].clone(), l)
        })
        .collect()
}

fn labels(kind: &str, ns: &str, pod: &str, name: &str) -> Vec<(String, String)> {
    vec![
        ("kind".into(), kind.into()),
        ("k8s_namespace".into(), ns.into()),
        ("k8s_pod".into(), pod.into()),
        ("name".into(), name.into()),
    ]
}

fn assert_entity(s: &Scrape, inode: u64, want: &[(String, String)], what: &str) {
    let ents = entities(s);
    let got = ents
        .get(&inode.to_string())
        .unwrap_or_else(|| panic!("{what}: netns {inode} not exported"));
    for (k, v) in want {
        // An empty additional label is not written either.
        assert_eq!(
            got.get(k).map_or("", String::as_str),
            v,
            "{what}: label {k} of netns {inode}: {got:?}"
        );
    }
}

#[test]
fn containerd_pods_are_labelled_within_two_seconds_and_vanish() {
    if !runtimes_ready("containerd_pods_are_labelled_within_two_seconds_and_vanish") {
        return;
    }
    let cfg = config("1h");
    let e = start_with(&cfg);
    let mut cri = Cri::new();
    let a = unique("web");
    let b = unique("db");
    let t0 = Instant::now();
    let sa = cri.run(&a, "team-a", false, Some("app"));
    let sb = cri.run(&b, "team-b", false, None);
    let (ia, ib) = (task_netns(&sa), task_netns(&sb));
    assert_ne!(ia, ib);
    // Only the watcher can rescan (maxStaleness 1h, refresh 60 s).
    wait_for("both pods attributed", Duration::from_secs(2), || {
        let ents = entities(&e.scrape());
        (ents.get(&ia.to_string()).is_some_and(|l| l["k8s_pod"] == a)
            && ents.get(&ib.to_string()).is_some_and(|l| l["k8s_pod"] == b))
        .then_some(())
    });
    eprintln!("attributed {:?} after creating two pods", t0.elapsed());
    let s = e.scrape();
    assert_entity(&s, ia, &labels("pod", "team-a", &a, &a), "pod a");
    assert_entity(&s, ib, &labels("pod", "team-b", &b, &b), "pod b");
    // Every series of the pod carries the labels (io/fd too).
    let io = s.one(
        "netsleuth_fd_open_fds",
        &[("netns", &ia.to_string()), ("k8s_pod", &a)],
    );
    assert!(io.value.parse::<u64>().unwrap() > 0);

    cri.rm(&sa);
    cri.rm(&sb);
    let s = e.scrape();
    assert!(
        s.samples
            .iter()
            .all(|x| x.labels.get("k8s_pod") != Some(&a) && x.labels.get("k8s_pod") != Some(&b)),
        "series of removed pods remain"
    );
}

#[test]
fn host_network_pod_keeps_host_series_but_owns_its_io_and_fd() {
    if !runtimes_ready("host_network_pod_keeps_host_series_but_owns_its_io_and_fd") {
        return;
    }
    let cfg = config("0s");
    let e = start_with(&cfg);
    let mut cri = Cri::new();
    let name = unique("hostnet");
    let sid = cri.run(&name, "infra", true, Some("agent"));
    let host = own_netns();
    assert_eq!(
        task_netns(&sid),
        host,
        "a hostNetwork sandbox is in the host netns"
    );
    let s = e.scrape();
    let h = host.to_string();
    // The host namespace's series stay the host's.
    assert_entity(&s, host, &labels("host", "", "", ""), "host netns");
    assert!(s
        .find("netsleuth_netdev_receive_bytes_total", &[("netns", &h)])
        .iter()
        .all(|x| x.labels["kind"] == "host"));
    // The pod's processes (pause + sleep) have their own io and fd series in the host netns.
    let want = [
        ("netns", h.as_str()),
        ("kind", "pod"),
        ("k8s_namespace", "infra"),
        ("k8s_pod", name.as_str()),
        ("name", name.as_str()),
    ];
    let fd = s.one("netsleuth_fd_open_fds", &want);
    assert!(fd.value.parse::<u64>().unwrap() >= 2, "{fd:?}");
    s.one("netsleuth_io_read_syscalls_total", &want);
    // And no netdev series of its own.
    assert!(s
        .find(
            "netsleuth_netdev_receive_bytes_total",
            &[("k8s_pod", &name)]
        )
        .is_empty());
    cri.rm(&sid);
    let s = e.scrape();
    assert!(s
        .find("netsleuth_fd_open_fds", &[("k8s_pod", &name)])
        .is_empty());
}

fn podman_pid(name: &str) -> i32 {
    podman(&["inspect", "-f", "{{.State.Pid}}", name])
        .parse()
        .unwrap()
}

#[test]
fn podman_containers_and_pods_are_labelled() {
    if !privileged_with("podman_containers_and_pods_are_labelled", &["podman"]) {
        return;
    }
    let cfg = config("0s");
    let e = start_with(&cfg);
    let c = unique("nslc");
    let p = unique("nslp");
    let member = format!("{p}-app");
    let mut objs = PodmanObjects::default();
    objs.run(&c, &["--network", "none"]);
    objs.pod(&p);
    objs.run(&member, &["--pod", &p]);
    let (ic, ip) = (
        netns_of_pid(podman_pid(&c)),
        netns_of_pid(podman_pid(&member)),
    );
    let s = e.scrape();
    assert_entity(&s, ic, &labels("container", "", "", &c), "podman container");
    assert_entity(&s, ip, &labels("pod", "", &p, &p), "podman pod");
    objs.rm(&c);
    objs.rm(&member);
    objs.rm_pod(&p);
    let s = e.scrape();
    let ents = entities(&s);
    assert!(ents.values().all(|l| l["name"] != c && l["k8s_pod"] != p));
}

#[test]
fn docker_containers_are_labelled() {
    if !privileged("docker_containers_are_labelled") {
        return;
    }
    if !docker_up() {
        skip(
            "docker_containers_are_labelled",
            &format!(
                "dockerd of the tests does not answer on {DOCKER_SOCK} (run tests/runtimes/up.sh)"
            ),
        );
        return;
    }
    let cfg = config("0s");
    let e = start_with(&cfg);
    let name = unique("nsld");
    let guard = DockerContainer(name.clone());
    let ino = netns_of_pid(docker_pause(&name, &[]));
    let s = e.scrape();
    assert_entity(
        &s,
        ino,
        &labels("container", "", "", &name),
        "docker container",
    );
    docker(&["rm", "-f", &name]);
    drop(guard);
    let s = e.scrape();
    assert!(entities(&s).values().all(|l| l["name"] != name));
}

fn exporter_fds_rss(pid: i32) -> (usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    (fds, rss)
}

/// Pods and containers come and go while we scrape: every scrape names only live objects,
/// each at its own namespace; removed ones are gone at the next scrape; the exporter does not
/// grow.
#[test]
fn churn_of_pods_and_containers() {
    if !runtimes_ready("churn_of_pods_and_containers")
        || !privileged_with("churn_of_pods_and_containers", &["podman"])
    {
        return;
    }
    let rounds: usize = std::env::var("NETSLEUTH_CHURN_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let per_round = 10;
    // A Kubernetes namespace of this run only: pods another (killed) run left behind cannot
    // change what this run counts.
    let kns = format!("churn{}", std::process::id());
    let mut objs = PodmanObjects::default();
    let cfg = config("0s");
    let e = start_with(&cfg);
    let mut cri = Cri::new();
    let t0 = Instant::now();
    let mut baseline = None;
    let mut created = 0;
    for round in 0..rounds {
        // Create a batch of pods (every other one with a container) and one podman container.
        let mut live: Vec<(String, String, u64)> = Vec::new();
        for i in 0..per_round {
            let name = format!("churn{round}x{i}x{}", std::process::id() % 10000);
            let sid = cri.run(&name, &kns, false, (i % 2 == 0).then_some("app"));
            live.push((name, sid.clone(), task_netns(&sid)));
            created += 1;
        }
        let pc = unique("nslchurn");
        objs.run(&pc, &["--network", "none"]);
        created += 1;
        let s = e.scrape();
        let ents = entities(&s);
        let want: BTreeSet<&str> = live.iter().map(|(n, _, _)| n.as_str()).collect();
        let got: BTreeSet<&str> = ents
            .values()
            .filter(|l| l["k8s_namespace"] == kns)
            .map(|l| l["k8s_pod"].as_str())
            .collect();
        assert_eq!(got, want, "round {round}: pods exported");
        for (name, _, ino) in &live {
            assert_entity(&s, *ino, &labels("pod", &kns, name, name), "churn pod");
        }
        let ino = netns_of_pid(podman_pid(&pc));
        assert_entity(
            &s,
            ino,
            &labels("container", "", "", &pc),
            "churn container",
        );
        // Remove half, scrape, then the rest: nothing stale at any point.
        let (first, rest) = live.split_at(per_round / 2);
        for (_, sid, _) in first {
            cri.rm(sid);
        }
        let s = e.scrape();
        let ents = entities(&s);
        for (name, _, _) in first {
            assert!(
                ents.values().all(|l| &l["k8s_pod"] != name),
                "round {round}: removed pod {name} still exported"
            );
        }
        for (name, _, ino) in rest {
            assert_entity(&s, *ino, &labels("pod", &kns, name, name), "remaining pod");
        }
        for (_, sid, _) in rest {
            cri.rm(sid);
        }
        objs.rm(&pc);
        let s = e.scrape();
        let ents = entities(&s);
        assert!(
            ents.values()
                .all(|l| l["k8s_namespace"] != kns && l["name"] != pc),
            "round {round}: stale series after removing everything"
        );
        if round == 1 {
            baseline = Some(exporter_fds_rss(e.pid()));
        }
    }
    let (fd0, rss0) = baseline.unwrap_or_else(|| exporter_fds_rss(e.pid()));
    let (fd1, rss1) = exporter_fds_rss(e.pid());
    eprintln!(
        "churn: {created} pods/containers in {rounds} rounds, {:?}; fds {fd0}->{fd1}, RSS {rss0}->{rss1} KiB",
        t0.elapsed()
    );
    assert!(fd1 <= fd0 + 4, "exporter fds grew: {fd0} -> {fd1}");
    assert!(
        rss1 <= rss0 + 8 * 1024,
        "exporter RSS grew: {rss0} -> {rss1} KiB"
    );
}

/// `additionalLabels` with `${labels:KEY}`: the exporter's series carry each pod's own label
/// values, read from containerd's metadata store (no CRI socket), and Docker containers'
/// labels from their config; a pod without the label gets an empty value, text around the
/// placeholder stays, the host namespace has empty values. A pod recreated with other labels
/// shows the new values at the next scan.
#[test]
fn pod_labels_fill_additional_labels() {
    if !runtimes_ready("pod_labels_fill_additional_labels") {
        return;
    }
    let cfg = write_config(&format!(
        r#"
inventory:
  maxStaleness: 0s
  stateRoots:
    containerd: [{CTD_STATE}]
    docker: [{DOCKER_ROOT}]
metrics:
  probes: [{{name: netdev, args: {{loopback: all}}}}, io, fd]
  additionalLabels:
    - app=${{labels:app}}
    - tier=t-${{labels:tier}}
    - part=${{labels:app.kubernetes.io/part-of}}
    - cluster=dev
"#
    ));
    let e = start_with(&cfg);
    let mut cri = Cri::new();
    let a = unique("lbla");
    let b = unique("lblb");
    let h = unique("lblh");
    let app_a = format!("shop-{a}");
    let sa = cri.run_labelled(
        &a,
        "team-l",
        false,
        &[
            &format!("app={app_a}"),
            "tier=front",
            "app.kubernetes.io/part-of=store",
        ],
    );
    let sb = cri.run_labelled(&b, "team-l", false, &[]);
    let sh = cri.run_labelled(&h, "team-l", true, &["app=agent", "tier=node"]);
    let (ia, ib) = (task_netns(&sa), task_netns(&sb));
    let host = own_netns();
    assert_eq!(task_netns(&sh), host);
    let s = e.scrape();
    let want = |app: &str, tier: &str, part: &str| {
        vec![
            ("app".to_string(), app.to_string()),
            ("tier".to_string(), tier.to_string()),
            ("part".to_string(), part.to_string()),
            ("cluster".to_string(), "dev".to_string()),
        ]
    };
    assert_entity(&s, ia, &labels("pod", "team-l", &a, &a), "pod a");
    assert_entity(&s, ia, &want(&app_a, "t-front", "store"), "pod a labels");
    assert_entity(&s, ib, &labels("pod", "team-l", &b, &b), "pod b");
    assert_entity(&s, ib, &want("", "t-", ""), "pod b (no labels)");
    assert_entity(&s, host, &want("", "t-", ""), "host netns");
    // Every series of the pod's namespace carries them (io and fd as well as netdev).
    let ia_s = ia.to_string();
    for name in [
        "netsleuth_netdev_receive_bytes_total",
        "netsleuth_fd_open_fds",
        "netsleuth_io_read_syscalls_total",
    ] {
        let got = s.find(name, &[("netns", &ia_s)]);
        assert!(!got.is_empty(), "{name} of pod a");
        for x in got {
            assert_eq!(x.labels["app"], app_a, "{name}: {x:?}");
            assert_eq!(x.labels["tier"], "t-front", "{name}: {x:?}");
        }
    }
    // The host-network pod's process group has its pod's labels; the host's own series not.
    let h_s = host.to_string();
    let fd = s.one("netsleuth_fd_open_fds", &[("netns", &h_s), ("k8s_pod", &h)]);
    assert_eq!(
        (fd.labels["app"].as_str(), fd.labels["tier"].as_str()),
        ("agent", "t-node"),
        "{fd:?}"
    );
    let hostfd = s.one(
        "netsleuth_fd_open_fds",
        &[("netns", &h_s), ("kind", "host")],
    );
    // Its empty `app` is not written (Prometheus reads an empty label as absent).
    assert_eq!(hostfd.labels.get("app"), None, "{hostfd:?}");

    // A Docker container's own labels.
    if docker_up() {
        let name = unique("nsldl");
        let _guard = DockerContainer(name.clone());
        let pid = docker_pause(
            &name,
            &["app=dockerised", "app.kubernetes.io/part-of=tools"],
        );
        let s = e.scrape();
        assert_entity(
            &s,
            netns_of_pid(pid),
            &want("dockerised", "t-", "tools"),
            "docker container labels",
        );
    } else if std::env::var_os("NETSLEUTH_REQUIRE_PRIVILEGED").is_some() {
        panic!("dockerd of the tests does not answer on {DOCKER_SOCK} (run tests/runtimes/up.sh)");
    }

    // Recreated with other labels (what a Deployment's new template does): new values.
    cri.rm(&sa);
    let sa2 = cri.run_labelled(&a, "team-l", false, &["app=shop-v2", "tier=back"]);
    let ia2 = task_netns(&sa2);
    let s = e.scrape();
    assert_entity(&s, ia2, &want("shop-v2", "t-back", ""), "pod a recreated");
    assert!(
        s.samples
            .iter()
            .all(|x| x.labels.get("app") != Some(&app_a)),
        "the old pod's label values remain"
    );
}

/// Events carry the `additionalLabels` of the pod they are attributed to, with the values
/// its metrics have: a real CRI pod with labels, one connect to a closed port on its own `lo`
/// (the pod's namespace sends one RST and receives it: one `TCPRESET_NOSOCK` and one
/// `TCPRESET_RECEIVE`), each event with `app`/`tier` in the JSON file sink's `labels`, in the
/// Loki line (logfmt) and its structured metadata, never in the Loki stream labels; and
/// `netsleuth_tcpreset_total` of the pod carries the same values.
#[test]
fn pod_labels_on_events() {
    if !runtimes_ready("pod_labels_on_events") {
        return;
    }
    let loki = loki_server::TestLoki::start(vec![]);
    let dir = std::env::temp_dir().join(unique("nsl-lblev"));
    std::fs::create_dir_all(&dir).unwrap();
    let evp = dir.join("events.jsonl");
    let cfg = write_config(&format!(
        r#"
inventory:
  maxStaleness: 0s
  stateRoots:
    containerd: [{CTD_STATE}]
metrics:
  probes: [{{name: netdev, args: {{loopback: all}}}}, tcpreset]
  additionalLabels:
    - app=${{labels:app}}
    - tier=t-${{labels:tier}}
event:
  probes: [tcpreset]
  sinks:
  - {{name: file, args: {{path: {}}}}}
  - {{name: loki, args: {{url: "{}", structuredMetadata: true, batchWait: 100ms}}}}
"#,
        evp.display(),
        loki.url()
    ));
    let e = start_with(&cfg);
    wait_for("eBPF probe attached", Duration::from_secs(10), || {
        let s = e.scrape();
        (!s.find("netsleuth_bpf_map_full_total", &[]).is_empty()).then_some(())
    });
    let mut cri = Cri::new();
    let a = unique("lbev");
    let app = format!("shop-{a}");
    let sa = cri.run_labelled(&a, "team-e", false, &[&format!("app={app}"), "tier=front"]);
    let pid = sandbox_pid(&sa);
    let ia = netns_of_pid(pid);
    // The pod is attributed (its lo series has its names) before the event is induced.
    let s = e.scrape();
    assert_entity(&s, ia, &labels("pod", "team-e", &a, &a), "pod");
    // One connect to a closed port inside the pod's namespace.
    let nsf = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
    let refused = std::thread::spawn(move || {
        nix::sched::setns(&nsf, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        run("ip", &["link", "set", "lo", "up"]);
        std::net::TcpStream::connect_timeout(
            &"127.0.0.1:7".parse().unwrap(),
            Duration::from_secs(3),
        )
        .unwrap_err()
        .kind()
    })
    .join()
    .unwrap();
    assert_eq!(refused, std::io::ErrorKind::ConnectionRefused);
    let want_types = ["TCPRESET_NOSOCK", "TCPRESET_RECEIVE"];
    let evs = wait_for(
        "both reset events in the file",
        Duration::from_secs(5),
        || {
            let v: Vec<serde_json::Value> = want_types
                .iter()
                .flat_map(|t| events_of(&evp, t, ia))
                .collect();
            (v.len() == 2).then_some(v)
        },
    );
    for v in &evs {
        assert_eq!(v["k8s_pod"], a.as_str(), "{v}");
        assert_eq!(v["k8s_namespace"], "team-e", "{v}");
        assert_eq!(
            v["labels"],
            serde_json::json!({"app": app, "tier": "t-front"}),
            "{v}"
        );
    }
    // The metric of the same pod: the same names and values.
    let ia_s = ia.to_string();
    let s = e.scrape();
    for t in ["NOSOCK", "RECEIVE"] {
        let m = s.one("netsleuth_tcpreset_total", &[("netns", &ia_s), ("type", t)]);
        assert_eq!(m.value, "1", "{m:?}");
        assert_eq!(m.labels["app"], app, "{m:?}");
        assert_eq!(m.labels["tier"], "t-front", "{m:?}");
    }
    // Loki: the line and its metadata carry them; the stream labels do not (bounded).
    let ours = wait_for("both events at Loki", Duration::from_secs(5), || {
        let v: Vec<_> = loki
            .entries()
            .into_iter()
            .filter(|(_, _, line, _)| line.contains(&format!(" netns={ia} ")))
            .collect();
        (v.len() == 2).then_some(v)
    });
    for (stream, _, line, md) in &ours {
        assert!(
            line.contains(&format!(
                " pod={a} namespace=team-e netns={ia} kind=pod name={a} app={app} tier=t-front "
            )),
            "{line}"
        );
        assert_eq!(md["app"], app.as_str(), "{md}");
        assert_eq!(md["tier"], "t-front", "{md}");
        assert_eq!(md["k8s_pod"], a.as_str(), "{md}");
        assert!(
            stream.get("app").is_none() && stream.get("tier").is_none(),
            "{stream}"
        );
    }
}

/// Podman keeps labels in libpod's BoltDB: a pod's members carry the pod's labels, a plain
/// container its own; exact values on the series, empty for a label the object lacks.
#[test]
fn podman_labels_fill_additional_labels() {
    if !privileged_with("podman_labels_fill_additional_labels", &["podman"]) {
        return;
    }
    let cfg = write_config(
        r#"
inventory:
  maxStaleness: 0s
metrics:
  probes: [{name: netdev, args: {loopback: all}}]
  additionalLabels: ["app=${labels:app}", "team=${labels:team}"]
"#,
    );
    let e = start_with(&cfg);
    let c = unique("nslpl");
    let p = unique("nslpp");
    let member = format!("{p}-app");
    let mut objs = PodmanObjects::default();
    objs.run(
        &c,
        &[
            "--network",
            "none",
            "--label",
            "app=pm-plain",
            "--label",
            "team=red",
        ],
    );
    objs.pods.push(p.clone());
    podman(&[
        "pod",
        "create",
        "--network",
        "none",
        "--label",
        "app=pm-pod",
        "--name",
        &p,
    ]);
    // The member's own label is not the pod's: the pod's wins for the pod's namespace.
    objs.run(&member, &["--pod", &p, "--label", "app=member-own"]);
    let (ic, ip) = (
        netns_of_pid(podman_pid(&c)),
        netns_of_pid(podman_pid(&member)),
    );
    let s = e.scrape();
    let want = |app: &str, team: &str| {
        vec![
            ("app".to_string(), app.to_string()),
            ("team".to_string(), team.to_string()),
        ]
    };
    assert_entity(&s, ic, &labels("container", "", "", &c), "podman container");
    assert_entity(&s, ic, &want("pm-plain", "red"), "podman container labels");
    assert_entity(&s, ip, &labels("pod", "", &p, &p), "podman pod");
    assert_entity(&s, ip, &want("pm-pod", ""), "podman pod labels");
}

/// The IPv4 address of `eth0` in the network namespace of pid `pid` (a CRI pod's, from CNI).
fn pod_ip(pid: i32) -> String {
    in_netns(format!("/proc/{pid}/ns/net"), || {
        let out = run("ip", &["-o", "-4", "addr", "show", "dev", "eth0"]);
        out.split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .and_then(|a| a.split('/').next())
            .unwrap_or_else(|| panic!("no IPv4 address on the pod's eth0: {out}"))
            .to_string()
    })
}

fn sandbox_pid(id: &str) -> i32 {
    std::fs::read_to_string(format!(
        "{CTD_STATE}/io.containerd.runtime.v2.task/k8s.io/{id}/init.pid"
    ))
    .unwrap()
    .trim()
    .parse()
    .unwrap()
}

/// A refused connect from one real CRI pod to another: the TCPRESET_NOSOCK event of the
/// refusing pod names the connecting pod as its peer (`peer_pod`, `peer_namespace`), from the
/// addresses the inventory read in every namespace.
#[test]
fn refused_connect_between_cri_pods_names_the_peer_pod() {
    let test = "refused_connect_between_cri_pods_names_the_peer_pod";
    if !runtimes_ready(test) {
        return;
    }
    let dir = std::env::temp_dir().join(unique("nslev"));
    std::fs::create_dir_all(&dir).unwrap();
    let evp = dir.join("events.jsonl");
    let cfg = write_config(&format!(
        r#"
inventory:
  maxStaleness: 0s
  stateRoots:
    containerd: [{CTD_STATE}]
metrics:
  probes: [{{name: netdev, args: {{loopback: all}}}}]
event:
  probes: [tcpreset]
  sinks: [{{name: file, args: {{path: {}}}}}]
"#,
        evp.display()
    ));
    let e = start_with(&cfg);
    let mut cri = Cri::new();
    let (web, db, ns) = (unique("web"), unique("db"), unique("shop"));
    let id_web = cri.run(&web, &ns, false, None);
    let id_db = cri.run(&db, &ns, false, None);
    let (pid_web, pid_db) = (sandbox_pid(&id_web), sandbox_pid(&id_db));
    let (ip_web, ip_db) = (pod_ip(pid_web), pod_ip(pid_db));
    let ino_db = netns_of_pid(pid_db);
    // Both pods are labelled (and their addresses known) before the connect.
    wait_for("both pods labelled", Duration::from_secs(10), || {
        let ents = entities(&e.scrape());
        (ents.values().any(|l| l["k8s_pod"] == web) && ents.values().any(|l| l["k8s_pod"] == db))
            .then_some(())
    });
    let to: std::net::SocketAddr = format!("{ip_db}:9").parse().unwrap();
    let refused = in_netns(format!("/proc/{pid_web}/ns/net"), move || {
        std::net::TcpStream::connect_timeout(&to, Duration::from_secs(5)).map(|_| ())
    });
    assert_eq!(
        refused.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionRefused)
    );
    let ev = wait_for("the NOSOCK reset event", Duration::from_secs(10), || {
        events_of(&evp, "TCPRESET_NOSOCK", ino_db)
            .into_iter()
            .next()
    });
    let f = &ev["fields"];
    assert_eq!(f["daddr"], ip_web.as_str(), "{ev}");
    assert_eq!(f["saddr"], ip_db.as_str(), "{ev}");
    assert_eq!(f["peer_pod"], web.as_str(), "{ev}");
    assert_eq!(f["peer_namespace"], ns.as_str(), "{ev}");
    assert_eq!(f["peer_kind"], "pod", "{ev}");
    eprintln!("{test}: {ev}");
    drop(cri);
    drop(e);
    let _ = std::fs::remove_dir_all(&dir);
}
