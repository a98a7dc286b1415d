//! `netsleuth selftest`: proves, on the node it runs on, that the exporter's probes see what
//! really happens. It creates its own network namespaces (addresses in 198.18.0.0/15 only),
//! induces conditions with exactly known effects (a connect to a closed port, UDP to a closed
//! port, a drop by iptables or a blackhole route, traffic through a tbf qdisc), runs the
//! exporter's own collectors in those namespaces and compares the counter deltas with what it
//! induced. The BPF part loads `selftest.bpf.o` through our loader and attaches every program
//! through its attach plan, reporting the method used, the fallbacks tried and whether
//! triggering was observed.
//!
//! Every check ends as `pass`, `fail` or `unsupported` (the kernel cannot do it here, with the
//! reason); the exit code is 0 only when nothing failed. `--json` prints one check per line
//! inside a JSON document, so `tests/kernel-matrix/run` can compare outcomes without a JSON
//! tool.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::collectors::{self, CollectError, NetnsCtx, ProbeArgs};
use crate::model::{MetricKind, Sink, Value};

pub mod bpf;
pub mod flow;
pub mod ipvs;
pub mod netns;
pub mod plans;
pub mod rdma;
use netns::TestNs;

/// Outcome of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Pass,
    Fail,
    /// The kernel (or this node) cannot do it; not a failure.
    Unsupported,
}

impl Status {
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Unsupported => "unsupported",
        }
    }
}

/// One line of the report.
#[derive(Clone, Debug)]
pub struct Check {
    /// `metrics.<what>` or `bpf.<program or plan>`.
    pub name: String,
    pub status: Status,
    /// The comparable outcome: the status plus, where it matters, how (e.g. `pass:perf_ioctl`,
    /// `pass:blackhole`). The kernel-matrix expectations pin this string per kernel.
    pub outcome: String,
    /// Human-readable detail: expected vs observed, errors, fallbacks tried.
    pub detail: String,
}

impl Check {
    fn new(name: &str, status: Status, how: &str, detail: impl Into<String>) -> Check {
        let outcome = if how.is_empty() {
            status.as_str().to_string()
        } else {
            format!("{}:{how}", status.as_str())
        };
        Check {
            name: name.to_string(),
            status,
            outcome,
            detail: detail.into(),
        }
    }
}

/// The whole report.
#[derive(Debug, Default)]
pub struct Report {
    pub kernel: String,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.status != Status::Fail)
    }

    pub fn render_text(&self) -> String {
        let mut s = format!("netsleuth selftest on kernel {}\n", self.kernel);
        for c in &self.checks {
            let _ = writeln!(s, "{:<32} {:<28} {}", c.name, c.outcome, c.detail);
        }
        let failed = self
            .checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .count();
        let unsupported = self
            .checks
            .iter()
            .filter(|c| c.status == Status::Unsupported)
            .count();
        let _ = writeln!(
            s,
            "{} checks: {} passed, {failed} failed, {unsupported} unsupported here",
            self.checks.len(),
            self.checks.len() - failed - unsupported
        );
        s
    }

    /// JSON, one check object per line.
    pub fn render_json(&self) -> String {
        let mut s = String::from("{\"kernel\":");
        json_str(&mut s, &self.kernel);
        let _ = writeln!(s, ",\"ok\":{},\"checks\":[", self.ok());
        for (i, c) in self.checks.iter().enumerate() {
            s.push_str("{\"check\":");
            json_str(&mut s, &c.name);
            s.push_str(",\"status\":");
            json_str(&mut s, c.status.as_str());
            s.push_str(",\"outcome\":");
            json_str(&mut s, &c.outcome);
            s.push_str(",\"detail\":");
            json_str(&mut s, &c.detail);
            s.push('}');
            if i + 1 < self.checks.len() {
                s.push(',');
            }
            s.push('\n');
        }
        s.push_str("]}\n");
        s
    }
}

fn json_str(out: &mut String, v: &str) {
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Runs every check this node allows.
pub fn run() -> Report {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let mut report = Report {
        kernel,
        checks: Vec::new(),
    };
    if !nix::unistd::geteuid().is_root() {
        report.checks.push(Check::new(
            "selftest",
            Status::Fail,
            "",
            "must run as root (creates network namespaces, loads BPF)",
        ));
        return report;
    }
    report.checks.push(btf_source());
    metric_checks(&mut report.checks);
    ipvs::checks(&mut report.checks);
    rdma::checks(&mut report.checks);
    bpf::checks(&mut report.checks);
    plans::checks(&mut report.checks);
    flow::checks(&mut report.checks);
    report
}

/// `btf.source`: where the eBPF checks' kernel BTF comes from (`pass:sysfs`, `pass:path` for
/// `--btf-path`, `pass:vendor` for the embedded table), or, `unsupported`, the no-BTF message.
fn btf_source() -> Check {
    use crate::bpf::target_btf::{self, BtfSources};
    match target_btf::target(&BtfSources::default()) {
        Ok(t) => {
            let mut detail = format!("{} types from {}", t.btf.len() - 1, t.from);
            if let Some(why) = t.foreign_ids() {
                let _ = write!(detail, "; {why}");
            }
            Check::new("btf.source", Status::Pass, t.origin.as_str(), detail)
        }
        Err(crate::bpf::KError::MissingBtf { tried }) => Check::new(
            "btf.source",
            Status::Unsupported,
            "",
            target_btf::missing_btf_help(
                &tried,
                &crate::probes::probes_needing_btf(&crate::probes::ProbeKind::ALL),
            ),
        ),
        Err(e) => Check::new("btf.source", Status::Fail, "", e.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// Metric probes against induced conditions.

type Labels = Vec<(String, String)>;

/// Samples captured from a collector: (name, labels, value).
#[derive(Default)]
struct Capture(Vec<(String, Labels, f64)>);

impl Sink for Capture {
    fn emit(&mut self, name: &str, _: &str, _: MetricKind, labels: &[(&str, &str)], v: Value) {
        let v = match v {
            Value::U64(x) => x as f64,
            Value::I64(x) => x as f64,
            Value::F64(x) => x,
        };
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.0.push((name.to_string(), labels, v));
    }
}

impl Capture {
    /// Sum of the samples named `name` whose labels include every pair of `want`.
    fn get(&self, name: &str, want: &[(&str, &str)]) -> Option<f64> {
        let mut found = None;
        for (n, labels, v) in &self.0 {
            if n == name
                && want
                    .iter()
                    .all(|(k, w)| labels.iter().any(|(lk, lv)| lk == k && lv == w))
            {
                *found.get_or_insert(0.0) += v;
            }
        }
        found
    }
}

/// Runs the named collectors (every field selected) in the calling thread's namespace.
fn collect(probes: &[&str], inode: u64) -> Result<Capture, String> {
    let mut cap = Capture::default();
    let proc_root = Path::new("/proc");
    let ctx = NetnsCtx::new(
        inode,
        PathBuf::from("/proc/thread-self/net"),
        proc_root,
        true,
        &[],
    );
    for name in probes {
        let spec = collectors::find(name).ok_or_else(|| format!("no probe {name}"))?;
        // Every field, and for netdev every device: the checks count traffic on the test
        // namespaces' `lo`, which netdev leaves out of namespaces but the host's by default.
        let every = if *name == "netdev" {
            "{fields: '.*', loopback: all}"
        } else {
            "{fields: '.*'}"
        };
        let all: serde_norway::Value = serde_norway::from_str(every).expect("static YAML");
        let mut args = ProbeArgs::from_yaml(name, &all)?;
        let probe = match (spec.build)(&mut args) {
            Ok(p) => p,
            Err(_) => (spec.build)(&mut ProbeArgs::new(name))?,
        };
        match probe.collect(&ctx, &mut cap) {
            Ok(()) => {}
            Err(CollectError::NotAvailable(m)) => {
                return Err(format!("{name}: not available: {m}"))
            }
            Err(e) => return Err(format!("{name}: {e}")),
        }
    }
    Ok(cap)
}

const A_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// Blackholed network (where iptables is absent).
const HOLE_NET: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 0);
const HOLE_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const CLOSED_PORT: u16 = 9;
const DROP_PORT: u16 = 9999;
const N: u64 = 5;
const PAYLOAD: usize = 100;

/// One expected counter delta.
struct Expect {
    metric: &'static str,
    labels: &'static [(&'static str, &'static str)],
    delta: f64,
}

fn exp(metric: &'static str, labels: &'static [(&'static str, &'static str)], d: u64) -> Expect {
    Expect {
        metric,
        labels,
        delta: d as f64,
    }
}

/// Collects before and after `induce` (both in the current namespace) and compares deltas.
fn measure(
    probes: &[&str],
    inode: u64,
    induce: impl FnOnce() -> Result<String, String>,
    expects: &[Expect],
) -> Result<String, String> {
    let before = collect(probes, inode)?;
    let note = induce()?;
    let after = collect(probes, inode)?;
    let mut got = Vec::new();
    let mut bad = Vec::new();
    for e in expects {
        let b = before.get(e.metric, e.labels);
        let a = after.get(e.metric, e.labels);
        let label = if e.labels.is_empty() {
            e.metric.to_string()
        } else {
            let l: Vec<String> = e.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("{}{{{}}}", e.metric, l.join(","))
        };
        match (b, a) {
            (Some(b), Some(a)) if a - b == e.delta => got.push(format!("{label} +{}", a - b)),
            (Some(b), Some(a)) => bad.push(format!("{label} +{} (expected +{})", a - b, e.delta)),
            _ => bad.push(format!("{label} missing from the collector output")),
        }
    }
    let mut detail = got.join(", ");
    if !note.is_empty() {
        detail = format!("{note}; {detail}");
    }
    if bad.is_empty() {
        Ok(detail)
    } else {
        Err(format!("{}; ok: {detail}", bad.join(", ")))
    }
}

fn udp_burst(to: SocketAddrV4) -> Result<(), String> {
    let s = UdpSocket::bind(SocketAddrV4::new(A_ADDR, 0)).map_err(|e| format!("bind: {e}"))?;
    for _ in 0..N {
        s.send_to(&[0u8; PAYLOAD], to)
            .map_err(|e| format!("send_to {to}: {e}"))?;
    }
    Ok(())
}

fn has_iptables() -> bool {
    Command::new("iptables")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn metric_checks(out: &mut Vec<Check>) {
    let (a, b) = match (TestNs::new(), TestNs::new()) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            out.push(Check::new(
                "metrics.netns",
                Status::Fail,
                "",
                format!("creating network namespaces: {e}"),
            ));
            return;
        }
    };
    let inode_a = a.inode;
    let inode_b = b.inode;
    let setup = a.run(|| -> std::io::Result<()> {
        netns::disable_ipv6();
        netns::lo_up()?;
        netns::lo_addr(A_ADDR, 32)?;
        Ok(())
    });
    let setup_b = b.run(|| -> std::io::Result<()> {
        netns::disable_ipv6();
        netns::lo_up()
    });
    for (what, r) in [("a", setup), ("b", setup_b)] {
        if let Err(e) | Ok(Err(e)) = r {
            out.push(Check::new(
                "metrics.netns",
                Status::Fail,
                "",
                format!("setting up namespace {what}: {e}"),
            ));
            return;
        }
    }
    let b_before = b.run(|| collect(&["tcp", "udp", "netdev"], inode_b));
    let result = a
        .run(|| {
            let mut v = Vec::new();
            // 1. TCP connect to a closed port: the kernel answers the SYN with a RST.
            let r = measure(
                &["tcp"],
                inode_a,
                || {
                    let to = SocketAddrV4::new(A_ADDR, CLOSED_PORT).into();
                    match TcpStream::connect_timeout(&to, Duration::from_secs(5)) {
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                            Ok(String::new())
                        }
                        Err(e) => Err(format!("connect {to}: {e} (expected refused)")),
                        Ok(_) => Err(format!("connect {to} succeeded (expected refused)")),
                    }
                },
                &[
                    exp("netsleuth_tcp_active_opens_total", &[], 1),
                    exp("netsleuth_tcp_attempt_fails_total", &[], 1),
                    exp("netsleuth_tcp_out_rsts_total", &[], 1),
                ],
            );
            v.push(("metrics.tcp_rst_closed_port", "", r));
            // 2. UDP to a closed port.
            let r = measure(
                &["udp"],
                inode_a,
                || udp_burst(SocketAddrV4::new(A_ADDR, CLOSED_PORT)).map(|_| String::new()),
                &[
                    exp("netsleuth_udp_out_datagrams_total", &[], N),
                    exp("netsleuth_udp_no_ports_total", &[], N),
                    exp("netsleuth_udp_in_datagrams_total", &[], 0),
                ],
            );
            v.push(("metrics.udp_noports", "", r));
            // 3. A drop: iptables DROP on INPUT where iptables exists, else a blackhole route.
            if has_iptables() {
                let rule = [
                    "-w",
                    "-A",
                    "INPUT",
                    "-d",
                    "198.18.0.1",
                    "-p",
                    "udp",
                    "--dport",
                    "9999",
                    "-j",
                    "DROP",
                ];
                let r = match Command::new("iptables").args(rule).output() {
                    Ok(o) if o.status.success() => measure(
                        &["udp", "netdev"],
                        inode_a,
                        || {
                            udp_burst(SocketAddrV4::new(A_ADDR, DROP_PORT))
                                .map(|_| "iptables -A INPUT ... -j DROP".to_string())
                        },
                        &[
                            exp("netsleuth_udp_out_datagrams_total", &[], N),
                            exp(
                                "netsleuth_netdev_receive_packets_total",
                                &[("device", "lo")],
                                N,
                            ),
                            exp("netsleuth_udp_in_datagrams_total", &[], 0),
                            exp("netsleuth_udp_no_ports_total", &[], 0),
                        ],
                    ),
                    Ok(o) => Err(format!(
                        "iptables: {}",
                        String::from_utf8_lossy(&o.stderr).trim()
                    )),
                    Err(e) => Err(format!("iptables: {e}")),
                };
                v.push(("metrics.drop", "iptables", r));
            } else {
                let r = netns::blackhole_route(HOLE_NET, 24)
                    .map_err(|e| format!("adding blackhole route: {e}"))
                    .and_then(|_| {
                        measure(
                            &["udp", "netdev"],
                            inode_a,
                            || {
                                let s = UdpSocket::bind(SocketAddrV4::new(A_ADDR, 0))
                                    .map_err(|e| format!("bind: {e}"))?;
                                let mut refused = 0;
                                for _ in 0..N {
                                    let to = SocketAddrV4::new(HOLE_ADDR, DROP_PORT);
                                    if s.send_to(&[0u8; PAYLOAD], to).is_err() {
                                        refused += 1;
                                    }
                                }
                                if refused == N {
                                    Ok(format!("blackhole route: {N} sends refused"))
                                } else {
                                    Err(format!("blackhole route: {refused} of {N} sends refused"))
                                }
                            },
                            &[
                                exp("netsleuth_udp_out_datagrams_total", &[], 0),
                                exp(
                                    "netsleuth_netdev_transmit_packets_total",
                                    &[("device", "lo")],
                                    0,
                                ),
                            ],
                        )
                    });
                v.push(("metrics.drop", "blackhole", r));
            }
            // 4. A tbf qdisc on lo: every datagram to a bound socket passes it exactly once.
            let r = netns::lo_tbf(125_000, 32_768, 65_536)
                .map_err(|e| format!("adding tbf qdisc: {e}"))
                .and_then(|_| {
                    measure(
                        &["qdisc", "udp"],
                        inode_a,
                        || {
                            let rx = UdpSocket::bind(SocketAddrV4::new(A_ADDR, 0))
                                .map_err(|e| format!("bind: {e}"))?;
                            let to = match rx.local_addr() {
                                Ok(std::net::SocketAddr::V4(a)) => a,
                                _ => return Err("local_addr".into()),
                            };
                            udp_burst(to)?;
                            rx.set_read_timeout(Some(Duration::from_secs(5)))
                                .map_err(|e| e.to_string())?;
                            let mut buf = [0u8; 2048];
                            for i in 0..N {
                                rx.recv(&mut buf)
                                    .map_err(|e| format!("datagram {i} through tbf: {e}"))?;
                            }
                            Ok(String::new())
                        },
                        &[
                            exp(
                                "netsleuth_qdisc_packets_total",
                                &[("device", "lo"), ("qdisc_kind", "tbf")],
                                N,
                            ),
                            // Ethernet (14) + IPv4 (20) + UDP (8) headers on lo.
                            exp(
                                "netsleuth_qdisc_bytes_total",
                                &[("device", "lo"), ("qdisc_kind", "tbf")],
                                N * (42 + PAYLOAD as u64),
                            ),
                            exp("netsleuth_udp_in_datagrams_total", &[], N),
                        ],
                    )
                });
            v.push(("metrics.qdisc_tbf", "", r));
            v
        })
        .unwrap_or_else(|e| vec![("metrics.netns", "", Err(e.to_string()))]);
    for (name, how, r) in result {
        out.push(match r {
            Ok(d) => Check::new(name, Status::Pass, how, d),
            Err(d) => Check::new(name, Status::Fail, how, d),
        });
    }
    // 5. Isolation: the control namespace saw none of it.
    let b_after = b.run(|| collect(&["tcp", "udp", "netdev"], inode_b));
    out.push(match (b_before, b_after) {
        (Ok(Ok(x)), Ok(Ok(y))) => {
            let moved: Vec<String> =
                y.0.iter()
                    .filter(|(n, _, _)| n.ends_with("_total"))
                    .filter_map(|(n, l, v)| {
                        let want: Vec<(&str, &str)> =
                            l.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
                        let old = x.get(n, &want).unwrap_or(0.0);
                        (*v != old).then(|| format!("{n} +{}", v - old))
                    })
                    .collect();
            if moved.is_empty() {
                Check::new(
                    "metrics.netns_isolation",
                    Status::Pass,
                    "",
                    format!(
                        "control namespace {inode_b}: {} counters unchanged",
                        y.0.len()
                    ),
                )
            } else {
                Check::new(
                    "metrics.netns_isolation",
                    Status::Fail,
                    "",
                    format!("control namespace counters moved: {}", moved.join(", ")),
                )
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            Check::new("metrics.netns_isolation", Status::Fail, "", e.to_string())
        }
        (Ok(Err(e)), _) | (_, Ok(Err(e))) => {
            Check::new("metrics.netns_isolation", Status::Fail, "", e)
        }
    });
    // 6. The exporter's workers keep one `/proc/thread-self/net` open across the namespaces
    // they enter: a file opened under it after setns must be the entered namespace's.
    out.push(match net_dir_follows_setns(&a) {
        Ok(d) => Check::new("metrics.net_dir_follows_setns", Status::Pass, "", d),
        Err(d) => Check::new("metrics.net_dir_follows_setns", Status::Fail, "", d),
    });
}

/// Opens `/proc/thread-self/net` at home, enters `ns`, and compares `snmp` read through that
/// directory with `snmp` read by path inside `ns`; they must match, and differ from home's.
fn net_dir_follows_setns(ns: &TestNs) -> Result<String, String> {
    use std::io::Read;
    let read_in = |dir: &std::fs::File| -> Result<String, String> {
        let fd = nix::fcntl::openat(
            dir,
            "snmp",
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| format!("openat snmp: {e}"))?;
        let mut s = String::new();
        std::fs::File::from(fd)
            .read_to_string(&mut s)
            .map_err(|e| format!("reading snmp: {e}"))?;
        Ok(s)
    };
    std::thread::scope(|sc| {
        sc.spawn(|| {
            let dir = std::fs::File::open("/proc/thread-self/net")
                .map_err(|e| format!("/proc/thread-self/net: {e}"))?;
            let home = read_in(&dir)?;
            crate::sys::enter_netns(ns.fd()).map_err(|e| format!("setns: {e}"))?;
            let through = read_in(&dir)?;
            let by_path = std::fs::read_to_string("/proc/thread-self/net/snmp")
                .map_err(|e| format!("/proc/thread-self/net/snmp: {e}"))?;
            if through != by_path {
                return Err(
                    "snmp read through a directory opened before setns is not the entered namespace's"
                        .to_string(),
                );
            }
            if through == home {
                return Err("the test namespace's snmp equals the host's: cannot tell them apart".into());
            }
            Ok(format!("snmp through the kept directory is namespace {}'s", ns.inode))
        })
        .join()
        .map_err(|_| "thread panicked".to_string())?
    })
}
