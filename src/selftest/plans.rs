//! The real probes' attach plans on this kernel: each eBPF probe of `netsleuth` loaded and
//! attached through its whole plan (`probe.<name>`: the method chosen per attach point, joined
//! with `+`), then restricted to its fentry alternatives (`probe.<name>.fentry`) and to its
//! kprobe ones (`probe.<name>.kprobe`), so the fallbacks are loaded, verified and attached for
//! real wherever the kernel allows them. A probe that cannot attach is `unsupported` only when
//! the kernel verifiably lacks what one of its attach points needs, for every alternative of
//! that point: the method family (the loader's own probe: selftest.bpf.o's getppid fentry or
//! kprobe program refused with a typed `Unsupported`) or the attach target (a function absent
//! from `/proc/kallsyms`, a tracepoint absent from tracefs). Any other failure is our loader's
//! and the check is `fail` (the reason lists every alternative).
//!
//! Functional checks, each through the whole plan and through its fentry and its kprobe
//! fallbacks alone (`.fentry`, `.kprobe` suffixes), in a namespace of our own with exactly
//! known effects, read back from the probe's own metrics:
//! - `probe.packetloss.drop`: UDP to a closed port (`__udp4_lib_rcv` frees each datagram with
//!   `kfree_skb`): by drop reason `NO_SOCKET` where the kernel has reasons (`pass:reason`), else
//!   by the symbolized freeing function (`pass:location`, 5.10).
//! - `probe.tcpreset.count`: a connect to a closed port: one NOSOCK RST sent, one RECEIVE.
//! - `probe.netiftxlat.count`: datagrams through lo: each timed once in both stages.
//! - `probe.socketlatency.read`: data read 30 ms after it arrived: one read delay >= 30 ms.
//! - `probe.kernellatency.tx`: the optional tx side (fentry/kprobes only) times the client's
//!   segments of a TCP exchange; `unsupported` where it is unavailable.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::time::Duration;

use super::netns::{self, TestNs};
use super::{Check, Status, A_ADDR, CLOSED_PORT, N, PAYLOAD};
use crate::bpf::kallsyms::Kallsyms;
use crate::bpf::target_btf::BtfSources;
use crate::bpf::{self, KError, LoadOptions};
use crate::model::Families;
use crate::probes::{self, Alternative, BpfProbeConfig, ProbeKind, RunningProbe};

/// What this kernel verifiably offers, from the loader's own probes.
struct Offers {
    /// Per method family (`fentry`, `kprobe`): `Err(why)` when the loader's getppid program of
    /// that family (selftest.bpf.o) is refused with a typed `Unsupported` at load or attach.
    families: Vec<(&'static str, Result<(), String>)>,
    /// Function names in `/proc/kallsyms` (module suffixes stripped).
    functions: HashSet<String>,
    /// The tracefs events folder, when there is one.
    events: Option<std::path::PathBuf>,
    /// No source gives kernel BTF (`KError::MissingBtf`, reported once by `btf.source`).
    no_btf: bool,
}

impl Offers {
    fn probe() -> Offers {
        let mut families = Vec::new();
        let obj = bpf::embedded::object("selftest");
        for (family, prog) in [("fentry", "fentry_getppid"), ("kprobe", "kprobe_getppid")] {
            let r = match obj {
                None => Ok(()),
                Some(obj) => {
                    let opts = LoadOptions {
                        programs: Some(vec![prog.to_string()]),
                        ..Default::default()
                    };
                    match bpf::load(obj, &opts) {
                        Ok(l) => match l.attach(prog) {
                            Err(e) if e.is_unsupported() => Err(e.to_string()),
                            _ => Ok(()),
                        },
                        Err(e) if e.is_unsupported() || matches!(e, KError::MissingBtf { .. }) => {
                            Err(e.to_string())
                        }
                        Err(_) => Ok(()),
                    }
                }
            };
            families.push((family, r));
        }
        let functions = std::fs::read_to_string("/proc/kallsyms")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                let (_, ty, name) = (it.next()?, it.next()?, it.next()?);
                matches!(ty, "t" | "T").then(|| name.to_string())
            })
            .collect();
        let events = bpf::fs::tracefs()
            .ok()
            .map(|t| t.join("events"))
            .filter(|e| e.is_dir());
        let no_btf = matches!(
            bpf::target_btf::target(&BtfSources::default()),
            Err(KError::MissingBtf { .. })
        );
        Offers {
            families,
            functions,
            events,
            no_btf,
        }
    }

    /// Why the kernel cannot run program `prog` of `obj` (its section says family and
    /// target), or `None` when nothing says it cannot (a failure there is the loader's).
    fn lacks(&self, sections: &[(String, String)], prog: &str) -> Option<String> {
        let section = &sections.iter().find(|(n, _)| n == prog)?.1;
        let (kind, target) = section.split_once('/')?;
        let family = probes::method_family(kind);
        if let Some((_, Err(why))) = self.families.iter().find(|(f, _)| *f == family) {
            return Some(format!("{family}: {why}"));
        }
        match family {
            "fentry" | "kprobe" if !self.functions.contains(target) => Some(format!(
                "{target} is not a kernel function here (/proc/kallsyms)"
            )),
            "tp_btf" | "raw_tp" => {
                let ev = self.events.as_ref()?;
                let found = std::fs::read_dir(ev)
                    .ok()?
                    .flatten()
                    .any(|c| c.path().join(target).is_dir());
                (!found).then(|| format!("no tracepoint {target} in {}", ev.display()))
            }
            _ => None,
        }
    }
}

/// `Some(why)` when the kernel verifiably lacks what one attach point of `points` needs for
/// every alternative that `methods` allows; `None` when each point has an alternative nothing
/// rules out (then a failure to attach is our loader's).
fn kernel_lacks(
    kind: ProbeKind,
    points: &[&[Alternative]],
    methods: Option<&str>,
    offers: &Offers,
) -> Option<String> {
    let obj = bpf::embedded::object(kind.name())?;
    let parsed = bpf::object::Object::parse(obj).ok()?;
    let sections: Vec<(String, String)> = parsed
        .programs
        .iter()
        .map(|p| (p.name.clone(), p.section_name.clone()))
        .collect();
    for alts in points {
        let allowed: Vec<&Alternative> = alts
            .iter()
            .filter(|(m, _)| methods.is_none_or(|only| probes::method_family(m) == only))
            .collect();
        if allowed.is_empty() {
            continue;
        }
        let why: Vec<String> = allowed
            .iter()
            .filter_map(|(m, progs)| {
                progs
                    .iter()
                    .find_map(|p| offers.lacks(&sections, p))
                    .map(|w| format!("{m} {}: {w}", progs.join("+")))
            })
            .collect();
        if why.len() == allowed.len() {
            return Some(why.join("; "));
        }
    }
    None
}

/// The status of a plan that did not attach: `Unsupported` with the kernel's lack, or `Fail`.
fn not_attached(
    kind: ProbeKind,
    points: &[&[Alternative]],
    methods: Option<&str>,
    error: &str,
    offers: &Offers,
) -> (Status, String) {
    // No kernel BTF anywhere and the probe's object has CO-RE relocations: the kernel cannot
    // run it, it is not the loader failing.
    if offers.no_btf && !probes::probes_needing_btf(&[kind]).is_empty() {
        return (
            Status::Unsupported,
            format!("{error} (no kernel BTF here: see btf.source)"),
        );
    }
    match kernel_lacks(kind, points, methods, offers) {
        Some(why) => (
            Status::Unsupported,
            format!("{error} (the kernel lacks it: {why})"),
        ),
        None => (
            Status::Fail,
            format!("{error} (the kernel offers every method and target of an attach point: the loader failed)"),
        ),
    }
}

/// Loads and attaches `kind` with only `methods` (all when `None`); detaches at once.
fn plan_check(kind: ProbeKind, methods: Option<&str>, offers: &Offers) -> Check {
    let name = match methods {
        Some(m) => format!("probe.{}.{m}", kind.name()),
        None => format!("probe.{}", kind.name()),
    };
    let mut cfg = BpfProbeConfig::new(kind);
    cfg.metrics = true;
    cfg.attach_methods = methods.map(|m| vec![m.to_string()]);
    match probes::start_probe(&cfg, &BtfSources::default()) {
        Ok(p) => {
            p.detach();
            let points: Vec<String> = p
                .attached
                .iter()
                .map(|(m, progs)| format!("{m} {}", progs.join("+")))
                .collect();
            let mut how = p.methods.join("+");
            let mut detail = format!("attached: {}", points.join(", "));
            for (what, r) in &p.optional {
                match r {
                    Ok(m) => {
                        how.push_str(&format!(",{what}={}", m.join("+")));
                        detail.push_str(&format!("; {what}: {}", m.join("+")));
                    }
                    Err(e) => {
                        how.push_str(&format!(",{what}=unavailable"));
                        detail.push_str(&format!("; {what} unavailable: {e}"));
                    }
                }
            }
            Check::new(&name, Status::Pass, &how, detail)
        }
        Err(e) => {
            let (status, detail) = not_attached(kind, kind.plan(), methods, &e.to_string(), offers);
            Check::new(&name, status, "", detail)
        }
    }
}

/// One expected sample of a probe's metric in the test namespace: the sum of the lines of
/// `metric` whose labels contain every `labels` pair, exactly `value` (or at least, `min`).
struct Want {
    metric: &'static str,
    labels: &'static [&'static str],
    value: f64,
    min: bool,
}

const fn want(metric: &'static str, labels: &'static [&'static str], value: u64) -> Want {
    Want {
        metric,
        labels,
        value: value as f64,
        min: false,
    }
}

type Collect =
    fn(&RunningProbe, &mut dyn FnMut(u64) -> String, &mut Families) -> Result<(), String>;

/// Starts `kind` restricted to `methods`, runs `induce` in a fresh namespace (lo up, 198.18.0.1,
/// no IPv6), then reads the probe's metrics for that namespace and compares them with `wants`.
/// `how` is the outcome's suffix on success (the same for every method: the methods chosen are
/// in the `probe.*` rows).
#[allow(clippy::too_many_arguments)]
fn count_check(
    name: &str,
    kind: ProbeKind,
    methods: Option<&str>,
    induce: fn() -> Result<String, String>,
    optional: Option<&str>,
    collect: Collect,
    wants: &dyn Fn(&RunningProbe) -> (&'static str, Vec<Want>),
    offers: &Offers,
) -> Check {
    let name = match methods {
        Some(m) => format!("{name}.{m}"),
        None => name.to_string(),
    };
    let fail = |d: String| Check::new(&name, Status::Fail, "", d);
    let mut cfg = BpfProbeConfig::new(kind);
    cfg.metrics = true;
    cfg.attach_methods = methods.map(|m| vec![m.to_string()]);
    let p = match probes::start_probe(&cfg, &BtfSources::default()) {
        Ok(p) => p,
        Err(e) => {
            let (status, detail) = not_attached(kind, kind.plan(), methods, &e.to_string(), offers);
            return Check::new(&name, status, "", detail);
        }
    };
    if let Some(group) = optional {
        match p.optional.iter().find(|(w, _)| *w == group) {
            Some((_, Err(e))) => {
                let points = kind
                    .optional()
                    .iter()
                    .find(|(w, _)| *w == group)
                    .map_or(&[][..], |(_, pts)| pts);
                let (status, detail) =
                    not_attached(kind, points, methods, &format!("{group}: {e}"), offers);
                return Check::new(&name, status, "", detail);
            }
            Some((_, Ok(_))) => {}
            None => return fail(format!("no optional attach point group {group}")),
        }
    }
    let ns = match TestNs::new() {
        Ok(n) => n,
        Err(e) => return fail(format!("creating a network namespace: {e}")),
    };
    let note = match ns.run(|| -> Result<String, String> {
        netns::disable_ipv6();
        netns::lo_up().map_err(|e| format!("lo up: {e}"))?;
        netns::lo_addr(A_ADDR, 32).map_err(|e| format!("lo address: {e}"))?;
        induce()
    }) {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => return fail(e),
        Err(e) => return fail(e.to_string()),
    };
    let mut fams = Families::new();
    let mut prefix = |i: u64| format!("netns=\"{i}\"");
    if let Err(e) = collect(&p, &mut prefix, &mut fams) {
        return fail(format!("reading the probe's maps: {e}"));
    }
    p.detach();
    let mut text = String::new();
    fams.render(&mut text);
    let mine = format!("netns=\"{}\"", ns.inode);
    let (how, wants) = wants(&p);
    let mut got = Vec::new();
    let mut bad = Vec::new();
    for w in &wants {
        let v: f64 = text
            .lines()
            .filter(|l| l.starts_with(&format!("{}{{", w.metric)) && l.contains(&mine))
            .filter(|l| w.labels.iter().all(|x| l.contains(x)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .fold(0.0, |a, b| a + b);
        let what = format!("{}{{{}}} = {v}", w.metric, w.labels.join(","));
        if v == w.value || (w.min && v >= w.value) {
            got.push(what);
        } else {
            let op = if w.min { ">=" } else { "" };
            bad.push(format!("{what} (expected {op}{})", w.value));
        }
    }
    let detail = format!(
        "{note}; attached via {}; {}",
        p.methods.join("+"),
        got.join(", ")
    );
    if bad.is_empty() {
        Check::new(&name, Status::Pass, how, detail)
    } else {
        let all: Vec<&str> = text.lines().filter(|l| l.contains(&mine)).collect();
        fail(format!(
            "{}; {detail}; the namespace's samples: {}",
            bad.join(", "),
            all.join(" | ")
        ))
    }
}

/// UDP to a closed port: `__udp4_lib_rcv` frees each datagram with `kfree_skb` (NO_SOCKET).
fn udp_to_closed_port() -> Result<String, String> {
    let s = UdpSocket::bind(SocketAddrV4::new(A_ADDR, 0)).map_err(|e| format!("bind: {e}"))?;
    for _ in 0..N {
        s.send_to(&[0u8; PAYLOAD], SocketAddrV4::new(A_ADDR, CLOSED_PORT))
            .map_err(|e| format!("send_to: {e}"))?;
    }
    Ok(format!("{N} datagrams to a closed port"))
}

/// UDP to a bound socket, all received: each datagram passes lo's transmit path once.
fn udp_through_lo() -> Result<String, String> {
    let rx = UdpSocket::bind(SocketAddrV4::new(A_ADDR, 0)).map_err(|e| format!("bind: {e}"))?;
    let to = rx.local_addr().map_err(|e| e.to_string())?;
    let tx = UdpSocket::bind(SocketAddrV4::new(A_ADDR, 0)).map_err(|e| format!("bind: {e}"))?;
    rx.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 2048];
    for i in 0..N {
        tx.send_to(&[0u8; PAYLOAD], to)
            .map_err(|e| format!("send_to: {e}"))?;
        rx.recv(&mut buf)
            .map_err(|e| format!("datagram {i}: {e}"))?;
    }
    Ok(format!("{N} datagrams through lo"))
}

/// A TCP connect to a closed port: one RST sent without a socket, one received by the client.
fn tcp_to_closed_port() -> Result<String, String> {
    let to = SocketAddrV4::new(A_ADDR, CLOSED_PORT).into();
    match TcpStream::connect_timeout(&to, Duration::from_secs(5)) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Ok("connect to a closed port refused".into())
        }
        Err(e) => Err(format!("connect {to}: {e} (expected refused)")),
        Ok(_) => Err(format!("connect {to} succeeded (expected refused)")),
    }
}

/// Data that waits READ_WAIT at a TCP socket before the application reads it: one read delay
/// of at least READ_WAIT.
fn tcp_read_after_wait() -> Result<String, String> {
    let l = TcpListener::bind(SocketAddrV4::new(A_ADDR, 0)).map_err(|e| format!("listen: {e}"))?;
    let to = l.local_addr().map_err(|e| e.to_string())?;
    let mut c = TcpStream::connect(to).map_err(|e| format!("connect: {e}"))?;
    let (mut srv, _) = l.accept().map_err(|e| format!("accept: {e}"))?;
    c.write_all(&[7u8; PAYLOAD])
        .map_err(|e| format!("write: {e}"))?;
    std::thread::sleep(READ_WAIT);
    let mut buf = [0u8; PAYLOAD];
    srv.read_exact(&mut buf).map_err(|e| format!("read: {e}"))?;
    Ok(format!(
        "{PAYLOAD} bytes over TCP read after {} ms",
        READ_WAIT.as_millis()
    ))
}

const READ_WAIT: Duration = Duration::from_millis(30);

fn packetloss_collect(
    p: &RunningProbe,
    prefix: &mut dyn FnMut(u64) -> String,
    out: &mut Families,
) -> Result<(), String> {
    let ks = std::sync::Mutex::new(Kallsyms::load().ok());
    probes::packetloss::collect(p, prefix, out, &ks)
}

/// The functional checks of one plan restriction (`None`: the whole plan).
fn count_checks(out: &mut Vec<Check>, m: Option<&str>, offers: &Offers) {
    // Drops by reason where the kernel has reasons, else by the symbolized freeing function.
    out.push(count_check(
        "probe.packetloss.drop",
        ProbeKind::PacketLoss,
        m,
        udp_to_closed_port,
        None,
        packetloss_collect,
        &|p| {
            if p.reasons.is_empty() {
                (
                    "location",
                    vec![want(
                        "netsleuth_packetloss_total",
                        &["reason=\"__udp4_lib_rcv\"", "protocol=\"UDP\""],
                        N,
                    )],
                )
            } else {
                (
                    "reason",
                    vec![want(
                        "netsleuth_packetloss_total",
                        &["reason=\"NO_SOCKET\"", "protocol=\"UDP\""],
                        N,
                    )],
                )
            }
        },
        offers,
    ));
    out.push(count_check(
        "probe.tcpreset.count",
        ProbeKind::TcpReset,
        m,
        tcp_to_closed_port,
        None,
        probes::tcpreset::collect,
        &|_| {
            (
                "",
                vec![
                    want("netsleuth_tcpreset_total", &["type=\"NOSOCK\""], 1),
                    want("netsleuth_tcpreset_total", &["type=\"RECEIVE\""], 1),
                    want("netsleuth_tcpreset_total", &["type=\"PROCESS\""], 0),
                    want("netsleuth_tcpreset_total", &["type=\"ACTIVE\""], 0),
                ],
            )
        },
        offers,
    ));
    out.push(count_check(
        "probe.netiftxlat.count",
        ProbeKind::NetifTxLat,
        m,
        udp_through_lo,
        None,
        probes::netiftxlat::collect,
        &|_| {
            (
                "",
                vec![
                    want(
                        "netsleuth_netiftxlat_qdisc_seconds_count",
                        &["device=\"lo\""],
                        N,
                    ),
                    want(
                        "netsleuth_netiftxlat_device_seconds_count",
                        &["device=\"lo\""],
                        N,
                    ),
                ],
            )
        },
        offers,
    ));
    out.push(count_check(
        "probe.socketlatency.read",
        ProbeKind::SocketLatency,
        m,
        tcp_read_after_wait,
        None,
        probes::socketlatency::collect,
        &|_| {
            (
                "",
                vec![
                    want("netsleuth_socketlatency_read_seconds_count", &[], 1),
                    Want {
                        metric: "netsleuth_socketlatency_read_seconds_sum",
                        labels: &[],
                        value: READ_WAIT.as_secs_f64(),
                        min: true,
                    },
                ],
            )
        },
        offers,
    ));
    // The client's SYN, handshake ACK and data segment leave through ip_queue_xmit (the
    // server's SYN-ACK does not; ACKs and FINs vary with timing): at least 3 tx samples.
    out.push(count_check(
        "probe.kernellatency.tx",
        ProbeKind::KernelLatency,
        m,
        tcp_read_after_wait,
        Some("tx"),
        probes::kernellatency::collect,
        &|_| {
            (
                "",
                vec![Want {
                    metric: "netsleuth_kernellatency_tx_seconds_count",
                    labels: &[],
                    value: 3.0,
                    min: true,
                }],
            )
        },
        offers,
    ));
}

pub fn checks(out: &mut Vec<Check>) {
    let offers = Offers::probe();
    for kind in ProbeKind::ALL {
        out.push(plan_check(kind, None, &offers));
        if kind != ProbeKind::VirtCmdLatency && kind != ProbeKind::Flow {
            out.push(plan_check(kind, Some("fentry"), &offers));
            out.push(plan_check(kind, Some("kprobe"), &offers));
        }
    }
    for m in [None, Some("fentry"), Some("kprobe")] {
        count_checks(out, m, &offers);
    }
    if let Some(dir) = std::env::var_os("NETSLEUTH_SELFTEST_CAPTURE") {
        capture_stacks(Path::new(&dir));
    }
}

/// With `NETSLEUTH_SELFTEST_CAPTURE`: the real kernel stacks of packetloss and tcpreset events
/// through each attach method, whole and as events carry them, to
/// `<dir>/<release>/stacks/<probe>.<method>.txt` (the unit tests of the frame cutting came
/// from there). No check: a diagnostic capture.
fn capture_stacks(dir: &Path) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let dir = dir.join(release.trim()).join("stacks");
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    type Induce = fn() -> Result<String, String>;
    let cases: [(ProbeKind, Induce); 2] = [
        (ProbeKind::PacketLoss, udp_to_closed_port),
        (ProbeKind::TcpReset, tcp_to_closed_port),
    ];
    for (kind, induce) in cases {
        for m in ["all", "fentry", "kprobe"] {
            let mut cfg = BpfProbeConfig::new(kind);
            cfg.events = true;
            cfg.enable_stack = true;
            cfg.attach_methods = (m != "all").then(|| vec![m.to_string()]);
            let mut text = String::new();
            match probes::start_probe(&cfg, &BtfSources::default()) {
                Err(e) => text.push_str(&format!("not attached: {e}\n")),
                Ok(p) => {
                    // Read after the programs loaded, as the exporter's reader does.
                    let Ok(ks) = Kallsyms::load() else {
                        return;
                    };
                    text.push_str(&format!("methods: {:?}\n", p.methods));
                    let ran = TestNs::new().map_err(|e| e.to_string()).and_then(|ns| {
                        ns.run(|| -> Result<String, String> {
                            netns::disable_ipv6();
                            netns::lo_up().map_err(|e| format!("lo up: {e}"))?;
                            netns::lo_addr(A_ADDR, 32).map_err(|e| format!("lo address: {e}"))?;
                            induce()
                        })
                        .map_err(|e| e.to_string())?
                    });
                    if let Err(e) = ran {
                        text.push_str(&format!("induce: {e}\n"));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                    for (whole, cut) in probes::drain_event_stacks(&p, &ks) {
                        text.push_str(&format!(
                            "whole: {}\ncut:   {}\n",
                            whole.join(" | "),
                            cut.join(" | ")
                        ));
                    }
                    p.detach();
                }
            }
            let _ = std::fs::write(dir.join(format!("{}.{m}.txt", kind.name())), text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offers(fentry: bool, kprobe: bool, functions: &[&str]) -> Offers {
        let f = |ok: bool| {
            if ok {
                Ok(())
            } else {
                Err("refused".to_string())
            }
        };
        Offers {
            families: vec![("fentry", f(fentry)), ("kprobe", f(kprobe))],
            functions: functions.iter().map(|s| s.to_string()).collect(),
            events: None,
            no_btf: false,
        }
    }

    const VIRT_FUNCS: &[&str] = &["virtnet_send_command_reply", "virtnet_send_command"];

    #[test]
    fn a_plan_the_kernel_can_run_that_failed_is_a_loader_failure() {
        // Every family offered and the functions present: failing to attach is ours.
        let o = offers(true, true, VIRT_FUNCS);
        let k = ProbeKind::VirtCmdLatency;
        assert_eq!(kernel_lacks(k, k.plan(), None, &o), None);
        let (st, detail) = not_attached(k, k.plan(), None, "boom", &o);
        assert_eq!(st, Status::Fail, "{detail}");
        // Only kprobes offered: still a failure of ours when restricted to kprobes...
        let o = offers(false, true, VIRT_FUNCS);
        assert_eq!(
            not_attached(k, k.plan(), Some("kprobe"), "x", &o).0,
            Status::Fail
        );
        // ...but unsupported when restricted to the refused fentry.
        let (st, detail) = not_attached(k, k.plan(), Some("fentry"), "x", &o);
        assert_eq!(st, Status::Unsupported);
        assert!(detail.contains("fentry: refused"), "{detail}");
    }

    #[test]
    fn missing_families_or_targets_make_a_plan_unsupported() {
        let k = ProbeKind::VirtCmdLatency;
        // Neither family: unsupported, every alternative named.
        let (st, detail) = not_attached(k, k.plan(), None, "x", &offers(false, false, VIRT_FUNCS));
        assert_eq!(st, Status::Unsupported);
        for alt in [
            "entry_reply_fentry",
            "entry_fentry",
            "entry_reply_kprobe",
            "entry_kprobe",
        ] {
            assert!(detail.contains(alt), "{alt}: {detail}");
        }
        // Both families but no virtio_net: unsupported because the functions are absent.
        let (st, detail) = not_attached(k, k.plan(), None, "x", &offers(true, true, &[]));
        assert_eq!(st, Status::Unsupported);
        assert!(
            detail.contains("virtnet_send_command is not a kernel function"),
            "{detail}"
        );
        // One of the two functions present: that alternative could run, so a failure is ours.
        let o = offers(true, true, &["virtnet_send_command"]);
        assert_eq!(not_attached(k, k.plan(), None, "x", &o).0, Status::Fail);
    }
}
