//! `metrics.ipvs`: a real IPVS virtual service in a throw-away namespace, made through the
//! IPVS generic netlink family (no `ipvsadm` needed), real traffic through it, and the `ipvs`
//! probe's figures compared exactly with what was sent.
//!
//! The namespace's `lo` carries the virtual address 198.18.6.1, the real server 198.18.6.2
//! and the client 198.18.6.3. A UDP service 198.18.6.1:5353 (round robin) has one NAT
//! destination 198.18.6.2:7777. The client sends `N` datagrams of `PAYLOAD` bytes from one
//! socket; the server answers each with as many bytes; the client must see every answer come
//! from the virtual address (IPVS undid the NAT). IPVS handles a local client at LOCAL_OUT and
//! counts the IP packet length: one connection, `N` packets and `N × (20 + 8 + PAYLOAD)` bytes
//! each way, in the namespace totals, the service and the destination. IPVS publishes its
//! per-CPU counters to procfs and netlink from its rate estimator, every 2 seconds, so the
//! check waits until they show the traffic before comparing.
//!
//! With `NETSLEUTH_SELFTEST_CAPTURE=<dir>` the check also writes what the kernel showed at the
//! end (`ip_vs`, `ip_vs_stats`, `ip_vs_stats_percpu`, the generic netlink service and
//! destination dumps) to `<dir>/<kernel release>/`: the kernel-matrix guests produce the unit
//! tests' fixtures this way.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use super::netns::{self, TestNs};
use super::{exp, measure, Check, Status};
use crate::collectors::ipvs::IpvsNl;

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 6, 1);
const RS: Ipv4Addr = Ipv4Addr::new(198, 18, 6, 2);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 6, 3);
const VPORT: u16 = 5353;
const RPORT: u16 = 7777;
const N: u64 = 5;
const PAYLOAD: usize = 100;
/// IPv4 (20) + UDP (8) headers.
const WIRE: u64 = 28 + PAYLOAD as u64;

const TOTALS: [&str; 5] = [
    "netsleuth_ipvs_connections_total",
    "netsleuth_ipvs_incoming_packets_total",
    "netsleuth_ipvs_outgoing_packets_total",
    "netsleuth_ipvs_incoming_bytes_total",
    "netsleuth_ipvs_outgoing_bytes_total",
];
const SERVICE: [&str; 5] = [
    "netsleuth_ipvs_service_connections_total",
    "netsleuth_ipvs_service_incoming_packets_total",
    "netsleuth_ipvs_service_outgoing_packets_total",
    "netsleuth_ipvs_service_incoming_bytes_total",
    "netsleuth_ipvs_service_outgoing_bytes_total",
];
const BACKEND: [&str; 5] = [
    "netsleuth_ipvs_backend_connections_total",
    "netsleuth_ipvs_backend_incoming_packets_total",
    "netsleuth_ipvs_backend_outgoing_packets_total",
    "netsleuth_ipvs_backend_incoming_bytes_total",
    "netsleuth_ipvs_backend_outgoing_bytes_total",
];
const SVC: &[(&str, &str)] = &[
    ("local_address", "198.18.6.1"),
    ("local_port", "5353"),
    ("proto", "UDP"),
];
const DST: &[(&str, &str)] = &[
    ("local_address", "198.18.6.1"),
    ("local_port", "5353"),
    ("proto", "UDP"),
    ("remote_address", "198.18.6.2"),
    ("remote_port", "7777"),
];

pub fn checks(out: &mut Vec<Check>) {
    out.push(match check() {
        Ok(d) => Check::new("metrics.ipvs", Status::Pass, "", d),
        Err((s, d)) => Check::new("metrics.ipvs", s, "", d),
    });
}

fn fail(d: impl Into<String>) -> (Status, String) {
    (Status::Fail, d.into())
}

fn check() -> Result<String, (Status, String)> {
    if !std::path::Path::new("/proc/net/ip_vs_stats").exists() {
        return Err((
            Status::Unsupported,
            "no /proc/net/ip_vs_stats: the ip_vs module is not loaded".into(),
        ));
    }
    let ns = TestNs::new().map_err(|e| fail(format!("creating a namespace: {e}")))?;
    let inode = ns.inode;
    ns.run(|| -> Result<String, (Status, String)> {
        netns::disable_ipv6();
        netns::lo_up().map_err(|e| fail(format!("lo up: {e}")))?;
        for a in [VIP, RS, CLIENT] {
            netns::lo_addr(a, 32).map_err(|e| fail(format!("address {a} on lo: {e}")))?;
        }
        let mut nl = match IpvsNl::open() {
            Ok(Some(nl)) => nl,
            Ok(None) => {
                return Err((
                    Status::Unsupported,
                    "the kernel has no IPVS generic netlink family".into(),
                ))
            }
            Err(e) => return Err(fail(format!("generic netlink: {e}"))),
        };
        nl.add_service(libc::IPPROTO_UDP as u8, VIP, VPORT, "rr")
            .map_err(|e| fail(format!("IPVS_CMD_NEW_SERVICE udp {VIP}:{VPORT} rr: {e}")))?;
        nl.add_dest(libc::IPPROTO_UDP as u8, VIP, VPORT, RS, RPORT, 1)
            .map_err(|e| fail(format!("IPVS_CMD_NEW_DEST {RS}:{RPORT} masq: {e}")))?;
        let mut expects = Vec::new();
        for (names, labels) in [(TOTALS, &[][..]), (SERVICE, SVC), (BACKEND, DST)] {
            let [conns, inpkts, outpkts, inbytes, outbytes] = names;
            expects.push(exp(conns, labels, 1));
            expects.push(exp(inpkts, labels, N));
            expects.push(exp(outpkts, labels, N));
            expects.push(exp(inbytes, labels, N * WIRE));
            expects.push(exp(outbytes, labels, N * WIRE));
        }
        expects.push(exp("netsleuth_ipvs_backend_weight", DST, 0));
        let r = measure(&["ipvs"], inode, traffic, &expects).map_err(fail);
        capture();
        r
    })
    .map_err(|e| fail(format!("entering the namespace: {e}")))?
}

/// `N` request/answer pairs through the virtual service.
fn traffic() -> Result<String, String> {
    let server = UdpSocket::bind(SocketAddrV4::new(RS, RPORT)).map_err(|e| format!("bind: {e}"))?;
    let client = UdpSocket::bind(SocketAddrV4::new(CLIENT, 0)).map_err(|e| format!("bind: {e}"))?;
    for s in [&server, &client] {
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
    }
    let mut buf = [0u8; 2048];
    for i in 0..N {
        client
            .send_to(&[b'q'; PAYLOAD], SocketAddrV4::new(VIP, VPORT))
            .map_err(|e| format!("send_to {VIP}:{VPORT}: {e}"))?;
        let (n, from) = server
            .recv_from(&mut buf)
            .map_err(|e| format!("datagram {i} at the real server: {e}"))?;
        if n != PAYLOAD {
            return Err(format!("the real server got {n} bytes, not {PAYLOAD}"));
        }
        server
            .send_to(&[b'a'; PAYLOAD], from)
            .map_err(|e| format!("answer {i}: {e}"))?;
        let (n, from) = client
            .recv_from(&mut buf)
            .map_err(|e| format!("answer {i} at the client: {e}"))?;
        if from != std::net::SocketAddr::V4(SocketAddrV4::new(VIP, VPORT)) || n != PAYLOAD {
            return Err(format!(
                "answer {i}: {n} bytes from {from}, expected {PAYLOAD} from {VIP}:{VPORT}"
            ));
        }
    }
    // IPVS publishes its per-CPU counters into the figures procfs and netlink show from its
    // rate estimator, every 2 seconds: wait until the totals, the service and the destination
    // all show the traffic (or 15 s, slow emulated guests included), then compare exactly.
    let t0 = std::time::Instant::now();
    let seen = |c: &crate::collectors::ipvs::Counters| c.inpkts >= N && c.outpkts >= N;
    loop {
        let totals = std::fs::read("/proc/thread-self/net/ip_vs_stats")
            .ok()
            .and_then(|d| crate::collectors::ipvs::parse_stats(&d).ok());
        let nl = crate::collectors::ipvs::netlink_snapshot().unwrap_or_default();
        let all = totals.as_ref().is_some_and(seen)
            && !nl.is_empty()
            && nl.iter().all(|(s, d)| {
                seen(&s.counters) && !d.is_empty() && d.iter().all(|d| seen(&d.counters))
            });
        if all {
            break;
        }
        if t0.elapsed() > Duration::from_secs(15) {
            return Err("IPVS counters did not show the traffic within 15 s".into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(format!(
        "udp {VIP}:{VPORT} -> {RS}:{RPORT} (masq): {N} requests and answers of {PAYLOAD} bytes, \
         published by the IPVS estimator after {} ms",
        t0.elapsed().as_millis()
    ))
}

/// Writes the kernel's view to `$NETSLEUTH_SELFTEST_CAPTURE/<release>/` (fixtures).
fn capture() {
    let Some(dir) = std::env::var_os("NETSLEUTH_SELFTEST_CAPTURE") else {
        return;
    };
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let dir = std::path::Path::new(&dir).join(release.trim()).join("ipvs");
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    for f in ["ip_vs", "ip_vs_stats", "ip_vs_stats_percpu"] {
        if let Ok(d) = std::fs::read(format!("/proc/thread-self/net/{f}")) {
            let _ = std::fs::write(dir.join(f), d);
        }
    }
    if let Ok(Some(mut nl)) = IpvsNl::open() {
        if let Ok((svc, dst)) = nl.raw_dumps() {
            let _ = std::fs::write(dir.join("genl_services.bin"), svc);
            let _ = std::fs::write(dir.join("genl_dests.bin"), dst);
        }
    }
}
