//! `probe.flow.count`: exact flow figures on this kernel. Two throw-away namespaces A and B
//! joined by a veth pair (A's `nsfa`, ifindex 20, 198.18.7.1/24; B's `nsfb`, ifindex 21,
//! 198.18.7.2/24; no IPv6, so only what the check sends is IP traffic), the real `flow` probe
//! attached to both devices (each device's local entity: its own namespace), `N` UDP datagrams
//! of `PAYLOAD` bytes from A to a socket bound in B. The probe's own metrics must then say,
//! with ports on (`enablePortInLabel`) and `clusterCIDRs: [198.18.0.0/15]`:
//! - A egress UDP to 198.18.7.2, `local_port` = the sender's port, `peer_port` = the
//!   receiver's: exactly `N` packets and `N × (PAYLOAD + 28)` bytes (IPv4 and UDP headers);
//! - B ingress UDP from 198.18.7.1 with the ports the other way round: the same;
//! - A ingress and B egress UDP: nothing.
//!
//! The outcome names the attach method: `pass:tcx` / `pass:tc` for the whole plan
//! (`probe.flow.count`), and `probe.flow.count.tc` forces cls_bpf filters on clsact (the
//! fallback) everywhere.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use super::netns::{self, TestNs};
use super::{Check, Status};
use crate::bpf::target_btf::BtfSources;
use crate::model::Families;
use crate::probes::flow::{self, Cidr, DevInfo};
use crate::probes::{self, BpfProbeConfig, ProbeKind, RunningProbe};

const ADDR_A: Ipv4Addr = Ipv4Addr::new(198, 18, 7, 1);
const ADDR_B: Ipv4Addr = Ipv4Addr::new(198, 18, 7, 2);
const IF_A: u32 = 20;
const IF_B: u32 = 21;
const N: u64 = 7;
const PAYLOAD: usize = 200;
/// IPv4 (20) + UDP (8) headers.
const WIRE: u64 = 28 + PAYLOAD as u64;

pub fn checks(out: &mut Vec<Check>) {
    for methods in [None, Some("tc")] {
        let name = match methods {
            Some(m) => format!("probe.flow.count.{m}"),
            None => "probe.flow.count".to_string(),
        };
        out.push(match check(methods) {
            Ok((how, d)) => Check::new(&name, Status::Pass, how, d),
            Err(d) => Check::new(&name, Status::Fail, "", d),
        });
    }
}

fn check(methods: Option<&str>) -> Result<(&'static str, String), String> {
    let mut cfg = BpfProbeConfig::new(ProbeKind::Flow);
    cfg.metrics = true;
    cfg.attach_methods = methods.map(|m| vec![m.to_string()]);
    cfg.flow.enable_ports = true;
    cfg.flow.cluster_cidrs = vec![Cidr::parse("198.18.0.0/15")?];
    let p = probes::start_probe(&cfg, &BtfSources::default())?;
    let method = p
        .flow
        .as_ref()
        .map(|s| s.method)
        .ok_or("the flow probe has no device state")?;
    let a = TestNs::new().map_err(|e| format!("creating namespace A: {e}"))?;
    let b = TestNs::new().map_err(|e| format!("creating namespace B: {e}"))?;
    let io = |what: &'static str| move |e: std::io::Error| format!("{what}: {e}");
    b.run(|| {
        netns::disable_ipv6();
        netns::lo_up()
    })
    .map_err(io("namespace B"))?
    .map_err(io("B: lo up"))?;
    a.run(|| -> Result<(), String> {
        netns::disable_ipv6();
        netns::veth_pair("nsfa", IF_A, "nsfb", IF_B, Some(b.fd()))
            .map_err(|e| format!("veth pair (is the veth module there?): {e}"))?;
        netns::addr_add(IF_A, ADDR_A, 24).map_err(io("A: address"))?;
        netns::link_up(IF_A).map_err(io("A: link up"))
    })
    .map_err(io("namespace A"))??;
    b.run(|| -> Result<(), String> {
        netns::addr_add(IF_B, ADDR_B, 24).map_err(io("B: address"))?;
        netns::link_up(IF_B).map_err(io("B: link up"))
    })
    .map_err(io("namespace B"))??;
    // Each device counts for its own namespace, directions as is (no flip: these are the
    // entities' own devices, not the host sides of pods' veths).
    for (ns, ifindex) in [(&a, IF_A), (&b, IF_B)] {
        flow::set_device(
            &p,
            ifindex,
            DevInfo {
                netns: ns.inode as u32,
                flags: 0,
            },
        )?;
    }
    // Attached (and detached again: a tc attachment deletes its filters by ifindex in the
    // namespace of the thread that drops it) inside each namespace.
    let result = a
        .run(|| -> Result<String, String> {
            let _la = flow::attach_device(&p, method, IF_A).map_err(|e| format!("A: {e}"))?;
            b.run(|| -> Result<String, String> {
                let _lb = flow::attach_device(&p, method, IF_B).map_err(|e| format!("B: {e}"))?;
                traffic(&a, &b).and_then(|ports| compare(&p, &a, &b, ports))
            })
            .map_err(io("namespace B"))?
        })
        .map_err(io("namespace A"))?;
    p.detach();
    result.map(|d| (method, format!("attached via {method}; {d}")))
}

/// `N` datagrams from A to a socket in B, all received; (A's port, B's port).
fn traffic(a: &TestNs, b: &TestNs) -> Result<(u16, u16), String> {
    let rx = b
        .run(|| UdpSocket::bind(SocketAddrV4::new(ADDR_B, 0)))
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("B: bind: {e}"))?;
    let to = rx.local_addr().map_err(|e| e.to_string())?;
    let sport = a
        .run(|| -> std::io::Result<u16> {
            let s = UdpSocket::bind(SocketAddrV4::new(ADDR_A, 0))?;
            for _ in 0..N {
                s.send_to(&[5u8; PAYLOAD], to)?;
            }
            Ok(s.local_addr()?.port())
        })
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("A: send: {e}"))?;
    rx.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 2048];
    for i in 0..N {
        match rx.recv(&mut buf) {
            Ok(n) if n == PAYLOAD => {}
            Ok(n) => return Err(format!("datagram {i}: {n} bytes, sent {PAYLOAD}")),
            Err(e) => return Err(format!("datagram {i} of {N} not received in B: {e}")),
        }
    }
    Ok((sport, to.port()))
}

/// The probe's figures against what was sent.
fn compare(
    p: &RunningProbe,
    a: &TestNs,
    b: &TestNs,
    (pa, pb): (u16, u16),
) -> Result<String, String> {
    let mut fams = Families::new();
    let mut prefix = |i: u64| format!("netns=\"{i}\"");
    flow::collect(p, &mut prefix, &mut fams, &|_| None)
        .map_err(|e| format!("reading the probe's maps: {e}"))?;
    let mut text = String::new();
    fams.render(&mut text);
    let (ia, ib) = (a.inode.to_string(), b.inode.to_string());
    let (pa, pb) = (pa.to_string(), pb.to_string());
    let (sa, sb) = (ADDR_A.to_string(), ADDR_B.to_string());
    let a_egress = udp_labels(&ia, "egress", Some((&pa, &pb, &sb)));
    let b_ingress = udp_labels(&ib, "ingress", Some((&pb, &pa, &sa)));
    let a_ingress = udp_labels(&ia, "ingress", None);
    let b_egress = udp_labels(&ib, "egress", None);
    let wants: [Want; 8] = [
        ("A egress packets", &a_egress, N),
        ("A egress bytes", &a_egress, N * WIRE),
        ("B ingress packets", &b_ingress, N),
        ("B ingress bytes", &b_ingress, N * WIRE),
        ("A ingress packets", &a_ingress, 0),
        ("A ingress bytes", &a_ingress, 0),
        ("B egress packets", &b_egress, 0),
        ("B egress bytes", &b_egress, 0),
    ];
    let mut got = Vec::new();
    let mut bad = Vec::new();
    for (what, labels, want) in wants {
        let metric = if what.ends_with("packets") {
            "netsleuth_flow_packets_total"
        } else {
            "netsleuth_flow_bytes_total"
        };
        let v = sum(&text, metric, labels);
        if v == want {
            got.push(format!("{what} {v}"));
        } else {
            bad.push(format!("{what} {v} (expected {want})"));
        }
    }
    let sent = format!("{N} datagrams of {PAYLOAD} bytes from A:{pa} to B:{pb}");
    if bad.is_empty() {
        Ok(format!("{sent}; {}", got.join(", ")))
    } else {
        let flows: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("netsleuth_flow_"))
            .collect();
        Err(format!(
            "{}; {sent}; the probe's flow samples: {}",
            bad.join(", "),
            flows.join(" | ")
        ))
    }
}

/// The labels of one namespace's UDP flow series in `direction`; with `(local port, peer port,
/// peer address)` for the series of the check's own datagrams.
fn udp_labels<'a>(
    netns: &'a str,
    direction: &'a str,
    ports: Option<(&'a str, &'a str, &'a str)>,
) -> Vec<(&'a str, &'a str)> {
    let mut l = vec![
        ("netns", netns),
        ("direction", direction),
        ("protocol", "UDP"),
    ];
    if let Some((local, peer, peer_address)) = ports {
        l.extend([
            ("local_port", local),
            ("peer_port", peer),
            ("peer_address", peer_address),
        ]);
    }
    l
}

/// What a check expects: a name, the labels of the samples summed, the exact sum.
type Want<'a> = (&'a str, &'a [(&'a str, &'a str)], u64);

/// The sum of the samples of `metric` whose labels include every pair.
fn sum(text: &str, metric: &str, labels: &[(&str, &str)]) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}
