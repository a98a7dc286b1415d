//! Least privilege for real: the packaged binary (from the .deb `packaging/build` makes) runs
//! as uid 65534 with exactly the capabilities `systemd/netsleuth.service` grants (parsed from
//! its `AmbientCapabilities=`, applied with `setpriv`), beside a named netns, a podman container
//! and induced traffic: every default procfs/netlink probe succeeds, the named netns and the
//! container have their series, and packetloss counts an induced drop exactly. Then each
//! capability is dropped in turn, and the failure must be named (a log line naming the
//! capability, the collector's success 0, `netsleuth_probe_up` 0, `netsleuth probes`' reason);
//! the exporter never crashes.
//!
//! The other packaging checks (systemd-analyze, lintian, rpmlint, the install tests) are
//! `packaging/test`.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::Duration;

use common::{
    assert_probes_attached, have, privileged, skip, unique, wait_for, Netns, Pair, Scrape,
    DEFAULT_COLLECTORS,
};

const UNIT: &str = include_str!("../systemd/netsleuth.service");
const NOBODY: &str = "65534";

/// `Key=` values of the unit's [Service] section (all lines of a repeated key, joined).
fn unit_values(key: &str) -> Vec<String> {
    UNIT.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .flat_map(|v| v.split_whitespace().map(str::to_string))
        .collect()
}

/// The unit's ambient capabilities, as setpriv spells them (`sys_admin`).
fn unit_caps() -> Vec<String> {
    let amb = unit_values("AmbientCapabilities");
    let bnd = unit_values("CapabilityBoundingSet");
    assert!(!amb.is_empty(), "the unit grants no AmbientCapabilities");
    assert_eq!(
        amb.iter().collect::<BTreeSet<_>>(),
        bnd.iter().collect::<BTreeSet<_>>(),
        "AmbientCapabilities and CapabilityBoundingSet differ"
    );
    amb.iter()
        .map(|c| {
            c.strip_prefix("CAP_")
                .unwrap_or_else(|| panic!("{c} is not CAP_*"))
                .to_ascii_lowercase()
        })
        .collect()
}

#[test]
fn unit_grants_the_measured_minimum() {
    let mut caps = unit_caps();
    caps.sort();
    assert_eq!(
        caps,
        [
            "bpf",
            "dac_read_search",
            "perfmon",
            "sys_admin",
            "sys_ptrace"
        ],
        "update packaging/README.md and the unit's comments with the new measurements"
    );
    // The unit runs as its own user, never root.
    assert_eq!(unit_values("User"), ["netsleuth"]);
    assert!(UNIT.contains("NoNewPrivileges=yes"));
}

/// The .deb's binary, extracted to a folder uid 65534 can reach; built by `packaging/build`
/// (once per test process; a current build is a no-op but the packaging).
fn packaged_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = Command::new(root.join("packaging/build"))
            // The caller (cargo test) may hold the shared build lock already.
            .env("NETSLEUTH_BUILD_NOLOCK", "1")
            .output()
            .expect("run packaging/build");
        assert!(
            out.status.success(),
            "packaging/build failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let version = env!("CARGO_PKG_VERSION");
        let deb = root.join(format!("target/packages/netsleuth_{version}_amd64.deb"));
        // One folder, replaced by each run (no leftovers pile up in /tmp).
        let dir = std::env::temp_dir().join("netsleuth-packaging-test-payload");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        common::run(
            "dpkg-deb",
            &["-x", deb.to_str().unwrap(), dir.to_str().unwrap()],
        );
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir.join("usr/bin/netsleuth")
    })
}

/// A config file uid 65534 can read.
fn config(yaml: &str) -> PathBuf {
    let p = common::write_config(yaml);
    use std::os::unix::fs::PermissionsExt;
    let dir = p.parent().unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    p
}

/// The packaged exporter as uid/gid 65534 with exactly `caps` (inheritable, ambient and
/// bounding), no supplementary groups, no new privileges: what the unit does.
struct Unprivileged {
    child: Child,
    addr: String,
    log: Vec<String>,
    rx: mpsc::Receiver<String>,
}

impl Unprivileged {
    // The child is killed and waited for in Drop.
    #[allow(clippy::zombie_processes)]
    fn start(caps: &[String], cfg: &Path) -> Unprivileged {
        let set = caps_arg(caps);
        let mut child = Command::new("setpriv")
            .args([
                &format!("--reuid={NOBODY}"),
                &format!("--regid={NOBODY}"),
                "--clear-groups",
                "--no-new-privs",
                &format!("--inh-caps={set}"),
                &format!("--ambient-caps={set}"),
                &format!("--bounding-set={set}"),
                "--",
            ])
            .arg(packaged_binary())
            .arg("serve")
            .arg(format!("--config.file={}", cfg.display()))
            .arg("--web.listen-address=127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("setpriv");
        let (addr, log, rx) = common::await_address(
            &mut child,
            Duration::from_secs(30),
            &format!("netsleuth (caps {set})"),
        );
        Unprivileged {
            child,
            addr,
            log,
            rx,
        }
    }

    fn scrape(&mut self) -> Scrape {
        let (code, _, body) = common::http_get(&self.addr, "/metrics", &[]);
        assert_eq!(code, 200);
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "netsleuth exited; log:\n{}",
            self.log()
        );
        Scrape::parse(&String::from_utf8_lossy(&body))
    }

    /// Everything it logged so far.
    fn log(&mut self) -> String {
        while let Ok(l) = self.rx.try_recv() {
            self.log.push(l);
        }
        self.log.join("\n")
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Unprivileged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn caps_arg(caps: &[String]) -> String {
    let mut s = String::from("-all");
    for c in caps {
        s.push_str(",+");
        s.push_str(c);
    }
    s
}

fn success(s: &Scrape, collector: &str) -> Option<f64> {
    s.sum(
        "netsleuth_scrape_collector_success",
        &[("collector", collector)],
    )
}

const DROP_PORT: u16 = 47_311;

/// The default probes plus packetloss and tcpreset.
fn yaml() -> String {
    let mut y = String::from("metrics:\n  probes:\n");
    for c in DEFAULT_COLLECTORS {
        if *c == "netdev" {
            // Every namespace's `lo`, which the named netns below has traffic on.
            y.push_str("  - {name: netdev, args: {loopback: all}}\n");
        } else {
            y.push_str(&format!("  - {c}\n"));
        }
    }
    y.push_str("  - packetloss\n  - tcpreset\ninventory:\n  maxStaleness: 0s\n");
    y
}

fn podman(args: &[&str]) -> Result<String, String> {
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/runtimes/containers.conf");
    let out = Command::new("podman")
        .env("CONTAINERS_CONF", conf)
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "podman {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A podman container (`--network none`: its own netns), removed on drop.
struct Container {
    name: String,
    netns: u64,
}

impl Container {
    fn start() -> Result<Container, String> {
        let name = unique("nslpkgc");
        podman(&[
            "run",
            "-d",
            "--network",
            "none",
            "--name",
            &name,
            "localhost/bbtest:1",
            "/pause",
        ])?;
        let mut c = Container { name, netns: 0 };
        let pid = podman(&["inspect", "-f", "{{.State.Pid}}", &c.name])?;
        use std::os::unix::fs::MetadataExt;
        c.netns = std::fs::metadata(format!("/proc/{pid}/ns/net"))
            .map_err(|e| e.to_string())?
            .ino();
        Ok(c)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&["rm", "-f", "-t", "0", &self.name]);
    }
}

/// What the tests need besides root: setpriv, podman with the test image, packaging tools.
fn ready(test: &str) -> bool {
    if !privileged(test) {
        return false;
    }
    for tool in [
        "setpriv", "podman", "dpkg-deb", "rpmbuild", "help2man", "iptables",
    ] {
        if !have(tool) {
            return skip(test, &format!("{tool} is not installed (tests/setup)"));
        }
    }
    if podman(&["image", "exists", "localhost/bbtest:1"]).is_err() {
        return skip(
            test,
            "podman image localhost/bbtest:1 missing (tests/runtimes/up.sh builds it)",
        );
    }
    true
}

/// One lock: the least-privilege runs count drops on the node and must not overlap.
fn lock() -> std::sync::MutexGuard<'static, ()> {
    static L: std::sync::Mutex<()> = std::sync::Mutex::new(());
    L.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn runs_with_exactly_the_units_capabilities() {
    if !ready("packaging_least_privilege") {
        return;
    }
    let _g = lock();
    let caps = unit_caps();
    let named = Netns::new("nslpkn");
    let container = Container::start().expect("podman container");
    let pair = Pair::dropping(DROP_PORT);
    let cfg = config(&yaml());
    let mut e = Unprivileged::start(&caps, &cfg);
    // Traffic in the named netns (loopback), so that its counters move.
    named.within(|| {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..4 {
            s.send_to(b"x", "127.0.0.1:9").unwrap();
        }
    });

    let s = wait_for("a scrape with eBPF up", Duration::from_secs(15), || {
        let s = e.scrape();
        (s.sum("netsleuth_probe_up", &[("probe", "packetloss")]) == Some(1.0)).then_some(s)
    });
    for c in DEFAULT_COLLECTORS.iter().chain(["ebpf"].iter()) {
        assert_eq!(
            success(&s, c),
            Some(1.0),
            "collector {c} failed with the unit's capabilities {caps:?}; log:\n{}",
            e.log()
        );
    }
    assert_probes_attached(&s, &["packetloss", "tcpreset"]);
    // Per-namespace series: the named netns (no process in it: read through setns) and the
    // container (found through its process, named from podman's state).
    let named_ino = named.inode().to_string();
    let lo = s.find(
        "netsleuth_netdev_receive_packets_total",
        &[("netns", &named_ino), ("device", "lo")],
    );
    assert_eq!(lo.len(), 1, "named netns {named_ino}: {lo:?}");
    assert!(lo[0].value.parse::<f64>().unwrap() >= 4.0, "{lo:?}");
    assert_eq!(lo[0].labels["kind"], "named");
    assert_eq!(lo[0].labels["name"], named.name);
    let c_ino = container.netns.to_string();
    let cs = s.find("netsleuth_tcp_curr_estab", &[("netns", &c_ino)]);
    assert_eq!(cs.len(), 1, "container netns {c_ino}: {cs:?}");
    assert_eq!(cs[0].labels["kind"], "container");
    assert_eq!(cs[0].labels["name"], container.name);
    let fd = s.find("netsleuth_fd_open_fds", &[("netns", &c_ino)]);
    assert!(
        fd.iter().any(|x| x.value.parse::<f64>().unwrap() >= 1.0),
        "container's /proc/<pid>/fd (a root process) unread: {fd:?}"
    );

    // An induced drop, counted exactly by the eBPF probe.
    let b_ino = pair.b.inode().to_string();
    let drops = |e: &mut Unprivileged| {
        e.scrape()
            .sum(
                "netsleuth_packetloss_total",
                &[("netns", &b_ino), ("reason", "NETFILTER_DROP")],
            )
            .unwrap_or(0.0)
    };
    let before = drops(&mut e);
    pair.send_udp_to_b(DROP_PORT, 7);
    wait_for("7 drops counted", Duration::from_secs(10), || {
        (drops(&mut e) >= before + 7.0).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(drops(&mut e), before + 7.0, "exactly the induced drops");
    assert!(e.alive());
    let log = e.log();
    assert!(
        !log.contains(" is missing"),
        "warned although every capability is there:\n{log}"
    );
}

/// `netsleuth probes` as uid 65534 with `caps`.
fn probes_output(caps: &[String], cfg: &Path) -> String {
    let set = caps_arg(caps);
    let out = Command::new("setpriv")
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            &format!("--inh-caps={set}"),
            &format!("--ambient-caps={set}"),
            &format!("--bounding-set={set}"),
            "--",
        ])
        .arg(packaged_binary())
        .arg("probes")
        .arg(format!("--config.file={}", cfg.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "netsleuth probes: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn each_missing_capability_is_named() {
    if !ready("packaging_capability_drop") {
        return;
    }
    let _g = lock();
    let all = unit_caps();
    let named = Netns::new("nslpkd");
    let container = Container::start().expect("podman container");
    let cfg = config(&yaml());
    let c_ino = container.netns.to_string();
    let named_ino = named.inode().to_string();
    let without = |drop: &[&str]| -> Vec<String> {
        all.iter()
            .filter(|c| !drop.contains(&c.as_str()))
            .cloned()
            .collect()
    };
    let mut checked = BTreeSet::new();

    // CAP_SYS_ADMIN: no setns. The named netns (no process) cannot be read: the probes fail.
    {
        let mut e = Unprivileged::start(&without(&["sys_admin"]), &cfg);
        let s = e.scrape();
        let log = e.log();
        assert!(log.contains("setns needs CAP_SYS_ADMIN"), "{log}");
        assert_eq!(
            success(&s, "netdev"),
            Some(0.0),
            "netdev success with no setns"
        );
        assert!(
            s.find(
                "netsleuth_netdev_receive_packets_total",
                &[("netns", &named_ino)]
            )
            .is_empty(),
            "the named netns was read without setns?"
        );
        // eBPF still runs: CAP_BPF and CAP_PERFMON are granted on their own.
        assert_eq!(
            s.sum("netsleuth_probe_up", &[("probe", "packetloss")]),
            Some(1.0),
            "{log}"
        );
        assert!(e.alive());
        checked.insert("sys_admin");
    }
    // CAP_SYS_PTRACE: other users' /proc/<pid>/ns/net: the container (root's) is not found.
    {
        let mut e = Unprivileged::start(&without(&["sys_ptrace"]), &cfg);
        let s = e.scrape();
        let log = e.log();
        assert!(log.contains("CAP_SYS_PTRACE is missing"), "{log}");
        assert!(
            s.of_netns(container.netns).is_empty(),
            "container found without CAP_SYS_PTRACE?"
        );
        assert!(e.alive());
        checked.insert("sys_ptrace");
    }
    // CAP_DAC_READ_SEARCH: /proc/<pid>/fd of root's processes, podman's state folder.
    {
        let mut e = Unprivileged::start(&without(&["dac_read_search"]), &cfg);
        let s = e.scrape();
        let log = e.log();
        assert!(log.contains("CAP_DAC_READ_SEARCH is missing"), "{log}");
        assert_eq!(
            success(&s, "fd"),
            Some(0.0),
            "fd success without DAC_READ_SEARCH"
        );
        assert_eq!(
            success(&s, "io"),
            Some(0.0),
            "io success without DAC_READ_SEARCH"
        );
        let cs = s.find("netsleuth_tcp_curr_estab", &[("netns", &c_ino)]);
        assert!(
            cs.iter().all(|x| x.labels["kind"] != "container"),
            "container named without reading podman's state: {cs:?}"
        );
        assert!(e.alive());
        checked.insert("dac_read_search");
    }
    // CAP_BPF and CAP_PERFMON: the kernel accepts CAP_SYS_ADMIN for either, so each matters
    // only without it; dropped together with it, the probes fail and say which one is missing.
    for (cap, name) in [("bpf", "CAP_BPF"), ("perfmon", "CAP_PERFMON")] {
        let mut e = Unprivileged::start(&without(&[cap]), &cfg);
        let s = e.scrape();
        assert_eq!(
            s.sum("netsleuth_probe_up", &[("probe", "packetloss")]),
            Some(1.0),
            "without {name} but with CAP_SYS_ADMIN: {}",
            e.log()
        );
        drop(e);
        let caps = without(&[cap, "sys_admin"]);
        let mut e = Unprivileged::start(&caps, &cfg);
        let s = e.scrape();
        let log = e.log();
        for p in ["packetloss", "tcpreset"] {
            assert_eq!(
                s.sum("netsleuth_probe_up", &[("probe", p)]),
                Some(0.0),
                "{p} up without {name}"
            );
            let line = log
                .lines()
                .find(|l| l.contains(&format!("eBPF probe {p} cannot run")))
                .unwrap_or_else(|| panic!("no error for {p}:\n{log}"));
            assert!(line.contains(&format!("lacks {name}")), "{line}");
        }
        assert!(log.contains(&format!("{name} is missing")), "{log}");
        assert_eq!(
            success(&s, "ebpf"),
            Some(0.0),
            "ebpf success with probes down"
        );
        let probes = probes_output(&caps, &cfg);
        let pl = probes
            .lines()
            .find(|l| l.starts_with("packetloss "))
            .unwrap();
        assert!(pl.contains(&format!("lacks {name}")), "{pl}");
        assert!(e.alive());
        checked.insert(cap);
    }
    assert_eq!(
        checked,
        all.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        "a capability of the unit is not checked here"
    );

    // None at all (a new user's first try): the cause is CAP_BPF, not RLIMIT_MEMLOCK.
    let mut e = Unprivileged::start(&[], &cfg);
    let s = e.scrape();
    let log = e.log();
    let line = log
        .lines()
        .find(|l| l.contains("eBPF probe packetloss cannot run"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("lacks CAP_BPF"), "{line}");
    assert!(line.contains("kernel.unprivileged_bpf_disabled="), "{line}");
    assert!(
        !line.contains("MEMLOCK") && !line.contains("ulimit"),
        "{line}"
    );
    assert_eq!(success(&s, "ebpf"), Some(0.0));
    assert_eq!(
        s.sum("netsleuth_probe_up", &[("probe", "packetloss")]),
        Some(0.0)
    );
    assert!(e.alive());
}
