//! Attribution against real runtimes: CRI pod sandboxes on a containerd of our own (started by
//! `tests/runtimes/up.sh`, state in /run/netsleuth-containerd), Podman containers and pods, and
//! Docker containers when its daemon came up. The real binary runs with its state roots
//! pointed there; every test asserts the exact labels of what it created.
//!
//! Run `tests/runtimes/up.sh` first (`.ci/run` does, and `down.sh` afterwards); without it these
//! tests skip (and fail under NETSLEUTH_REQUIRE_PRIVILEGED=1).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
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
  probes: [netdev, io, fd]
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

/// A CRI client process (Python grpcio, `cri_client.py serve`): one command per line.
struct Cri {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
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
        Cri {
            child,
            stdin,
            stdout,
        }
    }

    fn call(&mut self, line: &str) -> String {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
        let mut out = String::new();
        self.stdout.read_line(&mut out).unwrap();
        let out = out.trim_end();
        match out.strip_prefix("ok ") {
            Some(v) => v.to_string(),
            None => panic!("CRI `{line}`: {out}"),
        }
    }

    /// Run a pod sandbox (optionally with a `sleep` container); returns its id.
    fn run(&mut self, name: &str, ns: &str, host_network: bool, container: Option<&str>) -> String {
        let mut l = format!("run {name} {ns} uid-{name}");
        if host_network {
            l.push_str(" --host-network");
        }
        if let Some(c) = container {
            l.push_str(&format!(" --container {c} localhost/busybox:test"));
        }
        self.call(&l)
    }

    fn rm(&mut self, id: &str) {
        self.call(&format!("rm {id}"));
    }
}

impl Drop for Cri {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The netns inode of a containerd task's init process.
fn task_netns(id: &str) -> u64 {
    let pid = std::fs::read_to_string(format!(
        "{CTD_STATE}/io.containerd.runtime.v2.task/k8s.io/{id}/init.pid"
    ))
    .unwrap();
    netns_of_pid(pid.trim().parse().unwrap())
}

fn netns_of_pid(pid: i32) -> u64 {
    let l = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    netsleuth::inventory::parse_ns_link(l.as_os_str().as_encoded_bytes()).unwrap()
}

fn own_netns() -> u64 {
    netns_of_pid(std::process::id() as i32)
}

/// Entity labels of every namespace in a scrape, by netns inode (from netdev `lo` series).
fn entities(s: &Scrape) -> BTreeMap<String, BTreeMap<String, String>> {
    s.find("netsleuth_netdev_receive_bytes_total", &[("device", "lo")])
        .into_iter()
        .map(|x| {
            let mut l = x.labels.clone();
            l.remove("device");
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
        assert_eq!(&got[k], v, "{what}: label {k} of netns {inode}: {got:?}");
    }
}

#[test]
fn containerd_pods_are_labelled_within_two_seconds_and_vanish() {
    if !runtimes_ready("containerd_pods_are_labelled_within_two_seconds_and_vanish") {
        return;
    }
    let cfg = config("1h");
    let e = Exporter::start(&[&format!("--config.file={}", cfg.display())]);
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
    let e = Exporter::start(&[&format!("--config.file={}", cfg.display())]);
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

fn podman(args: &[&str]) -> String {
    let out = Command::new("podman")
        .args(args)
        .env("CONTAINERS_CONF", here().join("containers.conf"))
        .output()
        .expect("podman");
    assert!(
        out.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn podman_pid(name: &str) -> i32 {
    podman(&["inspect", "-f", "{{.State.Pid}}", name])
        .parse()
        .unwrap()
}

#[test]
fn podman_containers_and_pods_are_labelled() {
    if !privileged("podman_containers_and_pods_are_labelled") {
        return;
    }
    if !have("podman") {
        skip(
            "podman_containers_and_pods_are_labelled",
            "podman is not installed",
        );
        return;
    }
    let cfg = config("0s");
    let e = Exporter::start(&[&format!("--config.file={}", cfg.display())]);
    let c = unique("nslc");
    let p = unique("nslp");
    let member = format!("{p}-app");
    podman(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        &c,
        "localhost/bbtest:1",
        "/pause",
    ]);
    podman(&["pod", "create", "--network", "none", "--name", &p]);
    podman(&[
        "run",
        "-d",
        "--pod",
        &p,
        "--name",
        &member,
        "localhost/bbtest:1",
        "/pause",
    ]);
    let (ic, ip) = (
        netns_of_pid(podman_pid(&c)),
        netns_of_pid(podman_pid(&member)),
    );
    let s = e.scrape();
    assert_entity(&s, ic, &labels("container", "", "", &c), "podman container");
    assert_entity(&s, ip, &labels("pod", "", &p, &p), "podman pod");
    podman(&["rm", "-f", "-t", "0", &c]);
    podman(&["pod", "rm", "-f", "-t", "0", &p]);
    let s = e.scrape();
    let ents = entities(&s);
    assert!(ents.values().all(|l| l["name"] != c && l["k8s_pod"] != p));
}

#[test]
fn docker_containers_are_labelled() {
    if !privileged("docker_containers_are_labelled") {
        return;
    }
    let up = Command::new("/usr/bin/docker")
        .args(["-H", DOCKER_SOCK, "info"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !up {
        // Docker is optional: its daemon may not start on every machine.
        eprintln!("SKIP docker_containers_are_labelled: dockerd of the tests is not running");
        return;
    }
    let docker = |args: &[&str]| {
        let mut a = vec!["-H", DOCKER_SOCK];
        a.extend_from_slice(args);
        run("/usr/bin/docker", &a).trim().to_string()
    };
    let cfg = config("0s");
    let e = Exporter::start(&[&format!("--config.file={}", cfg.display())]);
    let name = unique("nsld");
    docker(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        &name,
        "localhost/bb:docker",
        "/pause",
    ]);
    let pid: i32 = docker(&["inspect", "-f", "{{.State.Pid}}", &name])
        .parse()
        .unwrap();
    let ino = netns_of_pid(pid);
    let s = e.scrape();
    assert_entity(
        &s,
        ino,
        &labels("container", "", "", &name),
        "docker container",
    );
    docker(&["rm", "-f", &name]);
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
    if !runtimes_ready("churn_of_pods_and_containers") {
        return;
    }
    let rounds: usize = std::env::var("NETSLEUTH_CHURN_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let per_round = 10;
    let podman_ok = have("podman");
    let cfg = config("0s");
    let e = Exporter::start(&[&format!("--config.file={}", cfg.display())]);
    let mut cri = Cri::new();
    let t0 = Instant::now();
    let mut baseline = None;
    let mut created = 0;
    for round in 0..rounds {
        // Create a batch of pods (every other one with a container) and one podman container.
        let mut live: Vec<(String, String, u64)> = Vec::new();
        for i in 0..per_round {
            let name = format!("churn{round}x{i}x{}", std::process::id() % 10000);
            let sid = cri.run(&name, "churn", false, (i % 2 == 0).then_some("app"));
            live.push((name, sid.clone(), task_netns(&sid)));
            created += 1;
        }
        let pc = unique("nslchurn");
        if podman_ok {
            podman(&[
                "run",
                "-d",
                "--network",
                "none",
                "--name",
                &pc,
                "localhost/bbtest:1",
                "/pause",
            ]);
            created += 1;
        }
        let s = e.scrape();
        let ents = entities(&s);
        let want: BTreeSet<&str> = live.iter().map(|(n, _, _)| n.as_str()).collect();
        let got: BTreeSet<&str> = ents
            .values()
            .filter(|l| l["k8s_namespace"] == "churn")
            .map(|l| l["k8s_pod"].as_str())
            .collect();
        assert_eq!(got, want, "round {round}: pods exported");
        for (name, _, ino) in &live {
            assert_entity(&s, *ino, &labels("pod", "churn", name, name), "churn pod");
        }
        if podman_ok {
            let ino = netns_of_pid(podman_pid(&pc));
            assert_entity(
                &s,
                ino,
                &labels("container", "", "", &pc),
                "churn container",
            );
        }
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
            assert_entity(
                &s,
                *ino,
                &labels("pod", "churn", name, name),
                "remaining pod",
            );
        }
        for (_, sid, _) in rest {
            cri.rm(sid);
        }
        if podman_ok {
            podman(&["rm", "-f", "-t", "0", &pc]);
        }
        let s = e.scrape();
        let ents = entities(&s);
        assert!(
            ents.values()
                .all(|l| l["k8s_namespace"] != "churn" && l["name"] != pc),
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
