//! The real probes' attach plans on this kernel: each eBPF probe of `netsleuth` loaded and
//! attached through its whole plan (`probe.<name>`: the method chosen per attach point, joined
//! with `+`), then restricted to its fentry alternatives (`probe.<name>.fentry`) and to its
//! kprobe ones (`probe.<name>.kprobe`), so the fallbacks are loaded, verified and attached for
//! real wherever the kernel allows them. A probe that cannot attach is `unsupported` (the
//! reason lists every alternative).
//!
//! `probe.packetloss.drop` (and `.drop.kprobe`, through the kprobe fallback) makes real drops
//! (UDP to a closed port in a namespace of our own: `__udp4_lib_rcv` frees each datagram with
//! `kfree_skb`) and reads them back from the probe's metric: by drop reason (`NO_SOCKET`) where
//! the kernel has reasons, else by the symbolized freeing function (`pass:location`).

use std::net::{SocketAddrV4, UdpSocket};

use super::netns::{self, TestNs};
use super::{Check, Status, A_ADDR, CLOSED_PORT, N, PAYLOAD};
use crate::bpf::kallsyms::Kallsyms;
use crate::bpf::target_btf::BtfSources;
use crate::probes::{self, BpfProbeConfig, ProbeKind};

/// Loads and attaches `kind` with only `methods` (all when `None`); detaches at once.
fn plan_check(kind: ProbeKind, methods: Option<&str>) -> Check {
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
            Check::new(
                &name,
                Status::Pass,
                &p.methods.join("+"),
                format!("attached: {}", points.join(", ")),
            )
        }
        Err(e) => Check::new(&name, Status::Unsupported, "", e),
    }
}

/// Drops N datagrams (UDP to a closed port) in a fresh namespace with packetloss attached
/// through `methods`, and finds them in the probe's metric for that namespace.
fn drop_check(methods: Option<&str>) -> Check {
    let name = match methods {
        Some(m) => format!("probe.packetloss.drop.{m}"),
        None => "probe.packetloss.drop".to_string(),
    };
    let fail = |d: String| Check::new(&name, Status::Fail, "", d);
    let mut cfg = BpfProbeConfig::new(ProbeKind::PacketLoss);
    cfg.metrics = true;
    cfg.attach_methods = methods.map(|m| vec![m.to_string()]);
    let p = match probes::start_probe(&cfg, &BtfSources::default()) {
        Ok(p) => p,
        Err(e) => return Check::new(&name, Status::Unsupported, "", e),
    };
    let ns = match TestNs::new() {
        Ok(n) => n,
        Err(e) => return fail(format!("creating a network namespace: {e}")),
    };
    let sent = ns.run(|| -> Result<(), String> {
        netns::disable_ipv6();
        netns::lo_up().map_err(|e| format!("lo up: {e}"))?;
        netns::lo_addr(A_ADDR, 32).map_err(|e| format!("lo address: {e}"))?;
        let s = UdpSocket::bind(SocketAddrV4::new(A_ADDR, 0)).map_err(|e| format!("bind: {e}"))?;
        for _ in 0..N {
            s.send_to(&[0u8; PAYLOAD], SocketAddrV4::new(A_ADDR, CLOSED_PORT))
                .map_err(|e| format!("send_to: {e}"))?;
        }
        Ok(())
    });
    match sent {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return fail(e),
        Err(e) => return fail(e.to_string()),
    }
    // Softirq delivery on lo is synchronous with the send; the map is complete now.
    let ks = std::sync::Mutex::new(Kallsyms::load().ok());
    let mut fams = crate::model::Families::new();
    let inode = ns.inode;
    let mut prefix = |i: u64| format!("netns=\"{i}\"");
    if let Err(e) = probes::packetloss::collect(&p, &mut prefix, &mut fams, &ks) {
        return fail(format!("reading the drops map: {e}"));
    }
    p.detach();
    let mut text = String::new();
    fams.render(&mut text);
    let mine = format!("netns=\"{inode}\"");
    let samples: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("netsleuth_packetloss_total{") && l.contains(&mine))
        .collect();
    let (how, want) = if p.reasons.is_empty() {
        ("location", "reason=\"__udp4_lib_rcv\"")
    } else {
        ("reason", "reason=\"NO_SOCKET\"")
    };
    let got: f64 = samples
        .iter()
        .filter(|l| l.contains(want) && l.contains("protocol=\"UDP\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let detail = format!(
        "{N} datagrams to a closed port, attached via {}; samples of the namespace: {}",
        p.methods.join("+"),
        samples.join(" | ")
    );
    if got == N as f64 {
        Check::new(&name, Status::Pass, how, detail)
    } else {
        fail(format!(
            "expected {N} drops with {want}, protocol=\"UDP\", got {got}; {detail}"
        ))
    }
}

pub fn checks(out: &mut Vec<Check>) {
    for kind in ProbeKind::ALL {
        out.push(plan_check(kind, None));
        if kind != ProbeKind::VirtCmdLatency {
            out.push(plan_check(kind, Some("fentry")));
            out.push(plan_check(kind, Some("kprobe")));
        }
    }
    out.push(drop_check(None));
    out.push(drop_check(Some("kprobe")));
}
