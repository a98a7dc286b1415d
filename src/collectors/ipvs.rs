//! The `ipvs` probe: IP Virtual Server statistics, per network namespace that has IPVS state
//! (kube-proxy in IPVS mode keeps it in the host namespace).
//!
//! Three sources, each for what only it has:
//!
//! - `/proc/net/ip_vs_stats`: the namespace's totals (connections scheduled, packets and bytes
//!   in and out), printed in **hexadecimal**; columns are found by their two-line header
//!   (`Total Conns`, `Incoming Packets`, ...), so a swapped column cannot be exported under the
//!   wrong name (KubeSkoop's exporter filled `incomingpackets` with the incoming bytes). The
//!   per-second rate estimates below them are left out (rates are Prometheus' job), and so is
//!   `ip_vs_stats_percpu`, which splits the same counters by CPU.
//! - `/proc/net/ip_vs`: every virtual service and its destinations with weight and active /
//!   inactive connection counts (node_exporter's `ipvs_backend_*`). It has no packet or byte
//!   counters per service or destination.
//! - Generic netlink, family `IPVS` (`IPVS_CMD_GET_SERVICE` / `IPVS_CMD_GET_DEST` dumps, the
//!   `*_ATTR_STATS64` nests): connections, packets and bytes per service and per destination.
//!   Needs the namespace entered; on by default, `netlink: false` turns it off (then the probe
//!   never enters namespaces).
//!
//! IPVS sums its per-CPU counters into what procfs and netlink show from its rate estimator,
//! every 2 seconds: the figures lag the traffic by up to that much.
//!
//! Where IPVS is not loaded the files are absent: the probe reports "not available" once and
//! exports nothing. A namespace with no virtual service and all-zero totals (every pod's, once
//! the module is loaded) exports nothing either.

use std::net::{Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{parse_string, NlasIterator};

use super::netlink::{put_attr, DumpSocket, NlError, RawRequest};
use super::{CollectError, Collector, NetnsCtx, ProbeArgs, ProbeSpec};
use crate::model::{MetricKind, Sink, Value};

/// The five counters IPVS keeps per namespace, service and destination.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub conns: u64,
    pub inpkts: u64,
    pub outpkts: u64,
    pub inbytes: u64,
    pub outbytes: u64,
}

impl Counters {
    fn is_zero(&self) -> bool {
        *self == Counters::default()
    }

    /// (metric suffix, value, help), in one place so no value can land under another's name.
    fn fields(&self) -> [(&'static str, u64, &'static str); 5] {
        [
            ("connections_total", self.conns, "Connections scheduled"),
            (
                "incoming_packets_total",
                self.inpkts,
                "Packets received from clients",
            ),
            (
                "outgoing_packets_total",
                self.outpkts,
                "Packets sent back to clients",
            ),
            (
                "incoming_bytes_total",
                self.inbytes,
                "Bytes received from clients",
            ),
            (
                "outgoing_bytes_total",
                self.outbytes,
                "Bytes sent back to clients",
            ),
        ]
    }
}

fn hex(tok: &str) -> Option<u64> {
    u64::from_str_radix(tok, 16).ok()
}

/// Parse `/proc/net/ip_vs_stats`: the first value line under the two header lines; each
/// column is identified by its header words (`Total`+`Conns`, `Incoming`+`Packets`, ...).
pub fn parse_stats(data: &[u8]) -> Result<Counters, String> {
    let text = std::str::from_utf8(data).map_err(|_| "not UTF-8".to_string())?;
    let mut lines = text.lines();
    let (Some(h1), Some(h2), Some(vals)) = (lines.next(), lines.next(), lines.next()) else {
        return Err("fewer than three lines".into());
    };
    let h1: Vec<&str> = h1.split_whitespace().collect();
    let h2: Vec<&str> = h2.split_whitespace().collect();
    let vals: Vec<&str> = vals.split_whitespace().collect();
    if h1.len() != h2.len() || h1.len() != vals.len() || h1.is_empty() {
        return Err(format!(
            "header of {} and {} words over {} values",
            h1.len(),
            h2.len(),
            vals.len()
        ));
    }
    let mut c = Counters::default();
    let mut seen = 0u8;
    for ((a, b), v) in h1.iter().zip(&h2).zip(&vals) {
        let v = hex(v).ok_or_else(|| format!("`{v}` is not a hexadecimal number"))?;
        let (slot, bit) = match (*a, *b) {
            ("Total", "Conns") => (&mut c.conns, 1),
            ("Incoming", "Packets") => (&mut c.inpkts, 2),
            ("Outgoing", "Packets") => (&mut c.outpkts, 4),
            ("Incoming", "Bytes") => (&mut c.inbytes, 8),
            ("Outgoing", "Bytes") => (&mut c.outbytes, 16),
            _ => continue,
        };
        *slot = v;
        seen |= bit;
    }
    if seen != 31 {
        return Err("header lacks one of Total Conns, Incoming/Outgoing Packets/Bytes".into());
    }
    Ok(c)
}

/// A virtual service: by protocol, address and port, or by firewall mark.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServiceKey {
    /// `TCP`, `UDP`, `SCTP`; `FWM` for a firewall-mark service.
    pub proto: String,
    pub address: String,
    pub port: u16,
    pub fwmark: u32,
}

impl ServiceKey {
    fn labels(&self) -> [(&'static str, String); 4] {
        [
            ("local_address", self.address.clone()),
            ("local_port", self.port.to_string()),
            (
                "local_mark",
                if self.fwmark == 0 {
                    String::new()
                } else {
                    self.fwmark.to_string()
                },
            ),
            ("proto", self.proto.clone()),
        ]
    }
}

/// A destination (real server) of a service as `/proc/net/ip_vs` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub address: String,
    pub port: u16,
    /// `Masq`, `Local`, `Route`, `Tunnel`, `Bypass`.
    pub forward: String,
    pub weight: i64,
    pub active: i64,
    pub inactive: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub key: ServiceKey,
    pub scheduler: String,
    pub backends: Vec<Backend>,
}

/// `HHHHHHHH:PPPP` (IPv4, host order hex) or `[v6]:PPPP`.
fn addr_port(s: &str) -> Option<(String, u16)> {
    let (a, p) = s.rsplit_once(':')?;
    let port = u16::from_str_radix(p, 16).ok()?;
    let addr = if let Some(v6) = a.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
        v6.parse::<Ipv6Addr>().ok()?.to_string()
    } else {
        if a.len() != 8 {
            return None;
        }
        Ipv4Addr::from(u32::from_str_radix(a, 16).ok()?).to_string()
    };
    Some((addr, port))
}

/// Parse `/proc/net/ip_vs`: services and their destinations.
pub fn parse_services(data: &[u8]) -> Result<Vec<Service>, String> {
    let text = std::str::from_utf8(data).map_err(|_| "not UTF-8".to_string())?;
    let mut lines = text.lines();
    match lines.next() {
        Some(l) if l.starts_with("IP Virtual Server") => {}
        _ => return Err("does not start with `IP Virtual Server`".into()),
    }
    let mut out: Vec<Service> = Vec::new();
    for line in lines {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.first().copied() {
            None | Some("Prot") => continue,
            Some("->") if w.get(1) == Some(&"RemoteAddress:Port") => continue,
            Some("->") => {
                let svc = out
                    .last_mut()
                    .ok_or_else(|| format!("destination before any service: `{line}`"))?;
                let bad = || format!("malformed destination line `{}`", line.trim());
                if w.len() < 6 {
                    return Err(bad());
                }
                let (address, port) = addr_port(w[1]).ok_or_else(bad)?;
                let num = |s: &str| s.parse::<i64>().map_err(|_| bad());
                svc.backends.push(Backend {
                    address,
                    port,
                    forward: w[2].to_string(),
                    weight: num(w[3])?,
                    active: num(w[4])?,
                    inactive: num(w[5])?,
                });
            }
            Some(proto) => {
                let bad = || format!("malformed service line `{}`", line.trim());
                if w.len() < 3 {
                    return Err(bad());
                }
                let key = if proto == "FWM" {
                    ServiceKey {
                        proto: proto.into(),
                        address: String::new(),
                        port: 0,
                        fwmark: u32::from_str_radix(w[1], 16).map_err(|_| bad())?,
                    }
                } else {
                    let (address, port) = addr_port(w[1]).ok_or_else(bad)?;
                    ServiceKey {
                        proto: proto.into(),
                        address,
                        port,
                        fwmark: 0,
                    }
                };
                out.push(Service {
                    key,
                    scheduler: w[2].to_string(),
                    backends: Vec::new(),
                });
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Generic netlink, family IPVS (include/uapi/linux/ip_vs.h).

const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const IPVS_GENL_VERSION: u8 = 1;

pub const IPVS_CMD_NEW_SERVICE: u8 = 1;
pub const IPVS_CMD_DEL_SERVICE: u8 = 3;
const IPVS_CMD_GET_SERVICE: u8 = 4;
pub const IPVS_CMD_NEW_DEST: u8 = 5;
const IPVS_CMD_GET_DEST: u8 = 8;

const IPVS_CMD_ATTR_SERVICE: u16 = 1;
const IPVS_CMD_ATTR_DEST: u16 = 2;

const IPVS_SVC_ATTR_AF: u16 = 1;
const IPVS_SVC_ATTR_PROTOCOL: u16 = 2;
const IPVS_SVC_ATTR_ADDR: u16 = 3;
const IPVS_SVC_ATTR_PORT: u16 = 4;
const IPVS_SVC_ATTR_FWMARK: u16 = 5;
const IPVS_SVC_ATTR_SCHED_NAME: u16 = 6;
const IPVS_SVC_ATTR_FLAGS: u16 = 7;
const IPVS_SVC_ATTR_TIMEOUT: u16 = 8;
const IPVS_SVC_ATTR_NETMASK: u16 = 9;
const IPVS_SVC_ATTR_STATS: u16 = 10;
const IPVS_SVC_ATTR_STATS64: u16 = 12;

const IPVS_DEST_ATTR_ADDR: u16 = 1;
const IPVS_DEST_ATTR_PORT: u16 = 2;
const IPVS_DEST_ATTR_FWD_METHOD: u16 = 3;
const IPVS_DEST_ATTR_WEIGHT: u16 = 4;
const IPVS_DEST_ATTR_U_THRESH: u16 = 5;
const IPVS_DEST_ATTR_L_THRESH: u16 = 6;
const IPVS_DEST_ATTR_STATS: u16 = 10;
const IPVS_DEST_ATTR_ADDR_FAMILY: u16 = 11;
const IPVS_DEST_ATTR_STATS64: u16 = 12;

const IPVS_STATS_ATTR_CONNS: u16 = 1;
const IPVS_STATS_ATTR_INPKTS: u16 = 2;
const IPVS_STATS_ATTR_OUTPKTS: u16 = 3;
const IPVS_STATS_ATTR_INBYTES: u16 = 4;
const IPVS_STATS_ATTR_OUTBYTES: u16 = 5;

/// `IP_VS_CONN_F_MASQ`: NAT forwarding.
pub const IP_VS_CONN_F_MASQ: u32 = 0;

fn genl_header(cmd: u8) -> Vec<u8> {
    vec![cmd, IPVS_GENL_VERSION, 0, 0]
}

fn u16_of(v: &[u8]) -> Result<u16, String> {
    Ok(u16::from_ne_bytes(
        v.get(..2)
            .ok_or("u16 attribute too short")?
            .try_into()
            .expect("2"),
    ))
}

fn u32_of(v: &[u8]) -> Result<u32, String> {
    Ok(u32::from_ne_bytes(
        v.get(..4)
            .ok_or("u32 attribute too short")?
            .try_into()
            .expect("4"),
    ))
}

fn u64_of(v: &[u8]) -> Result<u64, String> {
    Ok(u64::from_ne_bytes(
        v.get(..8)
            .ok_or("u64 attribute too short")?
            .try_into()
            .expect("8"),
    ))
}

fn proto_name(p: u16) -> String {
    match p {
        6 => "TCP".into(),
        17 => "UDP".into(),
        132 => "SCTP".into(),
        other => other.to_string(),
    }
}

fn addr_of(af: u16, v: &[u8]) -> Result<String, String> {
    match af as i32 {
        libc::AF_INET => {
            let b: [u8; 4] = v
                .get(..4)
                .ok_or("short IPv4 address")?
                .try_into()
                .expect("4");
            Ok(Ipv4Addr::from(b).to_string())
        }
        libc::AF_INET6 => {
            let b: [u8; 16] = v
                .get(..16)
                .ok_or("short IPv6 address")?
                .try_into()
                .expect("16");
            Ok(Ipv6Addr::from(b).to_string())
        }
        _ => Err(format!("unknown address family {af}")),
    }
}

/// A stats nest. `wide`: `*_ATTR_STATS64` (every counter a u64); else the legacy
/// `*_ATTR_STATS` (conns and packets u32, bytes u64).
fn parse_counters(v: &[u8], wide: bool) -> Result<Counters, String> {
    let mut c = Counters::default();
    for nla in NlasIterator::new(v) {
        let nla = nla.map_err(|e| format!("stats: {e}"))?;
        let v = nla.value();
        let small = |v: &[u8]| -> Result<u64, String> {
            if wide {
                u64_of(v)
            } else {
                u32_of(v).map(u64::from)
            }
        };
        match nla.kind() {
            IPVS_STATS_ATTR_CONNS => c.conns = small(v)?,
            IPVS_STATS_ATTR_INPKTS => c.inpkts = small(v)?,
            IPVS_STATS_ATTR_OUTPKTS => c.outpkts = small(v)?,
            IPVS_STATS_ATTR_INBYTES => c.inbytes = u64_of(v)?,
            IPVS_STATS_ATTR_OUTBYTES => c.outbytes = u64_of(v)?,
            _ => {}
        }
    }
    Ok(c)
}

/// A service as the IPVS family reports it: its key, the raw attributes needed to ask for its
/// destinations, and its counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NlService {
    pub key: ServiceKey,
    pub af: u16,
    /// The `IPVS_CMD_ATTR_SERVICE` nest's identifying attributes, as sent back in
    /// `IPVS_CMD_GET_DEST`.
    ident: Vec<u8>,
    pub counters: Counters,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NlDest {
    pub address: String,
    pub port: u16,
    pub counters: Counters,
}

/// The payload (after the 4-byte genl header) of one `IPVS_CMD_NEW_SERVICE` dump message.
pub fn parse_service_msg(payload: &[u8]) -> Result<NlService, String> {
    let attrs = payload.get(4..).ok_or("shorter than the genl header")?;
    for nla in NlasIterator::new(attrs) {
        let nla = nla.map_err(|e| e.to_string())?;
        if nla.kind() != IPVS_CMD_ATTR_SERVICE {
            continue;
        }
        let (mut af, mut proto, mut addr, mut port, mut fwmark) = (0u16, 0u16, None, 0u16, 0u32);
        let (mut stats, mut stats64) = (None, None);
        let mut ident = Vec::new();
        for a in NlasIterator::new(nla.value()) {
            let a = a.map_err(|e| format!("service: {e}"))?;
            let v = a.value();
            match a.kind() {
                IPVS_SVC_ATTR_AF => af = u16_of(v)?,
                IPVS_SVC_ATTR_PROTOCOL => proto = u16_of(v)?,
                IPVS_SVC_ATTR_ADDR => addr = Some(v.to_vec()),
                IPVS_SVC_ATTR_PORT => {
                    port =
                        u16::from_be_bytes(v.get(..2).ok_or("short port")?.try_into().expect("2"))
                }
                IPVS_SVC_ATTR_FWMARK => fwmark = u32_of(v)?,
                IPVS_SVC_ATTR_STATS => stats = Some(parse_counters(v, false)?),
                IPVS_SVC_ATTR_STATS64 => stats64 = Some(parse_counters(v, true)?),
                _ => {}
            }
            if matches!(
                a.kind(),
                IPVS_SVC_ATTR_AF
                    | IPVS_SVC_ATTR_PROTOCOL
                    | IPVS_SVC_ATTR_ADDR
                    | IPVS_SVC_ATTR_PORT
                    | IPVS_SVC_ATTR_FWMARK
            ) {
                put_attr(&mut ident, a.kind(), v);
            }
        }
        let key = if fwmark != 0 {
            ServiceKey {
                proto: "FWM".into(),
                address: String::new(),
                port: 0,
                fwmark,
            }
        } else {
            let addr = addr.ok_or("service without IPVS_SVC_ATTR_ADDR")?;
            ServiceKey {
                proto: proto_name(proto),
                address: addr_of(af, &addr)?,
                port,
                fwmark: 0,
            }
        };
        let counters = stats64
            .or(stats)
            .ok_or("service without IPVS_SVC_ATTR_STATS64 or _STATS")?;
        return Ok(NlService {
            key,
            af,
            ident,
            counters,
        });
    }
    Err("no IPVS_CMD_ATTR_SERVICE".into())
}

/// The payload of one `IPVS_CMD_NEW_DEST` dump message; `svc_af` is the service's family
/// (kernels before 4.x do not send `IPVS_DEST_ATTR_ADDR_FAMILY`).
pub fn parse_dest_msg(payload: &[u8], svc_af: u16) -> Result<NlDest, String> {
    let attrs = payload.get(4..).ok_or("shorter than the genl header")?;
    for nla in NlasIterator::new(attrs) {
        let nla = nla.map_err(|e| e.to_string())?;
        if nla.kind() != IPVS_CMD_ATTR_DEST {
            continue;
        }
        let (mut af, mut addr, mut port) = (svc_af, None, 0u16);
        let (mut stats, mut stats64) = (None, None);
        for a in NlasIterator::new(nla.value()) {
            let a = a.map_err(|e| format!("destination: {e}"))?;
            let v = a.value();
            match a.kind() {
                IPVS_DEST_ATTR_ADDR => addr = Some(v.to_vec()),
                IPVS_DEST_ATTR_PORT => {
                    port =
                        u16::from_be_bytes(v.get(..2).ok_or("short port")?.try_into().expect("2"))
                }
                IPVS_DEST_ATTR_ADDR_FAMILY => af = u16_of(v)?,
                IPVS_DEST_ATTR_STATS => stats = Some(parse_counters(v, false)?),
                IPVS_DEST_ATTR_STATS64 => stats64 = Some(parse_counters(v, true)?),
                _ => {}
            }
        }
        let addr = addr.ok_or("destination without IPVS_DEST_ATTR_ADDR")?;
        return Ok(NlDest {
            address: addr_of(af, &addr)?,
            port,
            counters: stats64
                .or(stats)
                .ok_or("destination without IPVS_DEST_ATTR_STATS64 or _STATS")?,
        });
    }
    Err("no IPVS_CMD_ATTR_DEST".into())
}

/// Parse captured dumps (see [`IpvsNl::raw_dumps`]): the services, and the destinations of
/// all services in dump order. The address family of destinations without
/// `IPVS_DEST_ATTR_ADDR_FAMILY` is taken from the first service.
pub fn parse_dumps(
    services: &[u8],
    dests: &[u8],
) -> Result<(Vec<NlService>, Vec<NlDest>), NlError> {
    let mut s = Vec::new();
    super::netlink::walk(services, None, &mut |_, p| {
        s.push(parse_service_msg(p)?);
        Ok(())
    })?;
    let af = s.first().map_or(libc::AF_INET as u16, |x| x.af);
    let mut d = Vec::new();
    super::netlink::walk(dests, None, &mut |_, p| {
        d.push(parse_dest_msg(p, af)?);
        Ok(())
    })?;
    Ok((s, d))
}

/// A generic netlink socket talking to the IPVS family of the calling thread's namespace.
pub struct IpvsNl {
    sock: DumpSocket,
    family: u16,
}

impl IpvsNl {
    /// Open and resolve the family id. `Ok(None)`: the kernel has no IPVS family (module not
    /// loaded).
    pub fn open() -> Result<Option<IpvsNl>, NlError> {
        let mut sock = DumpSocket::open(netlink_sys::protocols::NETLINK_GENERIC)?;
        let mut req = vec![CTRL_CMD_GETFAMILY, 1, 0, 0];
        put_attr(&mut req, CTRL_ATTR_FAMILY_NAME, b"IPVS\0");
        let mut family = None;
        let r = sock.get(
            RawRequest {
                message_type: GENL_ID_CTRL,
                payload: req,
            },
            &mut |_, p| {
                for nla in NlasIterator::new(p.get(4..).unwrap_or(&[])) {
                    let nla = nla.map_err(|e| e.to_string())?;
                    if nla.kind() == CTRL_ATTR_FAMILY_ID {
                        family = Some(u16_of(nla.value())?);
                    }
                    if nla.kind() == CTRL_ATTR_FAMILY_NAME {
                        let n = parse_string(nla.value()).map_err(|e| e.to_string())?;
                        if n != "IPVS" {
                            return Err(format!("asked for IPVS, got family {n}"));
                        }
                    }
                }
                Ok(())
            },
        );
        match r {
            Err(NlError::Errno(e)) if e == libc::ENOENT => return Ok(None),
            Err(e) => return Err(e),
            Ok(()) => {}
        }
        match family {
            Some(family) => Ok(Some(IpvsNl { sock, family })),
            None => Err(NlError::Malformed(
                "CTRL_CMD_GETFAMILY reply without CTRL_ATTR_FAMILY_ID".into(),
            )),
        }
    }

    fn req(&self, payload: Vec<u8>) -> RawRequest {
        RawRequest {
            message_type: self.family,
            payload,
        }
    }

    pub fn services(&mut self) -> Result<Vec<NlService>, NlError> {
        let mut out = Vec::new();
        let req = self.req(genl_header(IPVS_CMD_GET_SERVICE));
        self.sock.dump(req, &mut |_, p| {
            out.push(parse_service_msg(p)?);
            Ok(())
        })?;
        Ok(out)
    }

    pub fn dests(&mut self, svc: &NlService) -> Result<Vec<NlDest>, NlError> {
        let mut payload = genl_header(IPVS_CMD_GET_DEST);
        put_attr(&mut payload, IPVS_CMD_ATTR_SERVICE, &svc.ident);
        let mut out = Vec::new();
        let af = svc.af;
        let req = self.req(payload);
        self.sock.dump(req, &mut |_, p| {
            out.push(parse_dest_msg(p, af)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// The service dump and every service's destination dump, each message re-framed with
    /// an `nlmsghdr` (type, `NLM_F_MULTI`, sequence 0) and the dumps ended by `NLMSG_DONE`:
    /// fixtures for [`parse_service_msg`] / [`parse_dest_msg`] (payloads byte-exact).
    pub fn raw_dumps(&mut self) -> Result<(Vec<u8>, Vec<u8>), NlError> {
        fn frame(out: &mut Vec<u8>, ty: u16, p: &[u8]) {
            out.extend_from_slice(&((16 + p.len()) as u32).to_ne_bytes());
            out.extend_from_slice(&ty.to_ne_bytes());
            out.extend_from_slice(&2u16.to_ne_bytes());
            out.extend_from_slice(&[0; 8]);
            out.extend_from_slice(p);
            while out.len() % 4 != 0 {
                out.push(0);
            }
        }
        let (mut svc, mut dst) = (Vec::new(), Vec::new());
        let req = self.req(genl_header(IPVS_CMD_GET_SERVICE));
        let mut services = Vec::new();
        self.sock.dump(req, &mut |ty, p| {
            frame(&mut svc, ty, p);
            services.push(parse_service_msg(p)?);
            Ok(())
        })?;
        frame(&mut svc, super::netlink::NLMSG_DONE, &0i32.to_ne_bytes());
        for s in &services {
            let mut payload = genl_header(IPVS_CMD_GET_DEST);
            put_attr(&mut payload, IPVS_CMD_ATTR_SERVICE, &s.ident);
            let req = self.req(payload);
            self.sock.dump(req, &mut |ty, p| {
                frame(&mut dst, ty, p);
                Ok(())
            })?;
        }
        frame(&mut dst, super::netlink::NLMSG_DONE, &0i32.to_ne_bytes());
        Ok((svc, dst))
    }

    /// `ipvsadm -A -t|-u ADDR:PORT -s SCHED`: a new IPv4 virtual service.
    pub fn add_service(
        &mut self,
        protocol: u8,
        addr: Ipv4Addr,
        port: u16,
        sched: &str,
    ) -> Result<(), NlError> {
        let mut svc = Vec::new();
        put_attr(
            &mut svc,
            IPVS_SVC_ATTR_AF,
            &(libc::AF_INET as u16).to_ne_bytes(),
        );
        put_attr(
            &mut svc,
            IPVS_SVC_ATTR_PROTOCOL,
            &u16::from(protocol).to_ne_bytes(),
        );
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&addr.octets());
        put_attr(&mut svc, IPVS_SVC_ATTR_ADDR, &a);
        put_attr(&mut svc, IPVS_SVC_ATTR_PORT, &port.to_be_bytes());
        let mut name = sched.as_bytes().to_vec();
        name.push(0);
        put_attr(&mut svc, IPVS_SVC_ATTR_SCHED_NAME, &name);
        put_attr(&mut svc, IPVS_SVC_ATTR_FLAGS, &[0u8; 8]);
        put_attr(&mut svc, IPVS_SVC_ATTR_TIMEOUT, &0u32.to_ne_bytes());
        put_attr(&mut svc, IPVS_SVC_ATTR_NETMASK, &u32::MAX.to_be_bytes());
        let mut payload = genl_header(IPVS_CMD_NEW_SERVICE);
        put_attr(&mut payload, IPVS_CMD_ATTR_SERVICE, &svc);
        let req = self.req(payload);
        self.sock.ack(req, 0)
    }

    /// `ipvsadm -a -t|-u VIP:VPORT -r ADDR:PORT -m -w WEIGHT`: a NAT destination.
    pub fn add_dest(
        &mut self,
        protocol: u8,
        vip: Ipv4Addr,
        vport: u16,
        addr: Ipv4Addr,
        port: u16,
        weight: u32,
    ) -> Result<(), NlError> {
        let mut svc = Vec::new();
        put_attr(
            &mut svc,
            IPVS_SVC_ATTR_AF,
            &(libc::AF_INET as u16).to_ne_bytes(),
        );
        put_attr(
            &mut svc,
            IPVS_SVC_ATTR_PROTOCOL,
            &u16::from(protocol).to_ne_bytes(),
        );
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&vip.octets());
        put_attr(&mut svc, IPVS_SVC_ATTR_ADDR, &a);
        put_attr(&mut svc, IPVS_SVC_ATTR_PORT, &vport.to_be_bytes());
        let mut dest = Vec::new();
        let mut d = [0u8; 16];
        d[..4].copy_from_slice(&addr.octets());
        put_attr(&mut dest, IPVS_DEST_ATTR_ADDR, &d);
        put_attr(&mut dest, IPVS_DEST_ATTR_PORT, &port.to_be_bytes());
        put_attr(
            &mut dest,
            IPVS_DEST_ATTR_FWD_METHOD,
            &IP_VS_CONN_F_MASQ.to_ne_bytes(),
        );
        put_attr(&mut dest, IPVS_DEST_ATTR_WEIGHT, &weight.to_ne_bytes());
        put_attr(&mut dest, IPVS_DEST_ATTR_U_THRESH, &0u32.to_ne_bytes());
        put_attr(&mut dest, IPVS_DEST_ATTR_L_THRESH, &0u32.to_ne_bytes());
        put_attr(
            &mut dest,
            IPVS_DEST_ATTR_ADDR_FAMILY,
            &(libc::AF_INET as u16).to_ne_bytes(),
        );
        let mut payload = genl_header(IPVS_CMD_NEW_DEST);
        put_attr(&mut payload, IPVS_CMD_ATTR_SERVICE, &svc);
        put_attr(&mut payload, IPVS_CMD_ATTR_DEST, &dest);
        let req = self.req(payload);
        self.sock.ack(req, 0)
    }
}

// ---------------------------------------------------------------------------------------------
// The collector.

/// Everything one namespace shows, gathered before emitting.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub totals: Counters,
    pub services: Vec<Service>,
    /// From netlink (empty when `netlink: false`).
    pub nl: Vec<(NlService, Vec<NlDest>)>,
}

fn emit_counters(
    out: &mut dyn Sink,
    prefix: &str,
    what: &str,
    c: &Counters,
    labels: &[(&str, &str)],
) {
    for (suffix, v, help) in c.fields() {
        out.emit(
            &format!("{prefix}{suffix}"),
            &format!("{help} by IPVS {what}."),
            MetricKind::Counter,
            labels,
            Value::U64(v),
        );
    }
}

/// Emit a namespace's IPVS figures (nothing when it has no service and zero totals).
pub fn emit(s: &Snapshot, out: &mut dyn Sink) {
    if s.services.is_empty() && s.nl.is_empty() && s.totals.is_zero() {
        return;
    }
    emit_counters(
        out,
        "netsleuth_ipvs_",
        "in this namespace (/proc/net/ip_vs_stats)",
        &s.totals,
        &[],
    );
    for svc in &s.services {
        let l = svc.key.labels();
        for b in &svc.backends {
            let port = b.port.to_string();
            let labels = [
                (l[0].0, l[0].1.as_str()),
                (l[1].0, l[1].1.as_str()),
                (l[2].0, l[2].1.as_str()),
                (l[3].0, l[3].1.as_str()),
                ("remote_address", b.address.as_str()),
                ("remote_port", port.as_str()),
            ];
            for (name, v, help) in [
                (
                    "netsleuth_ipvs_backend_connections_active",
                    b.active,
                    "Active connections",
                ),
                (
                    "netsleuth_ipvs_backend_connections_inactive",
                    b.inactive,
                    "Inactive connections",
                ),
                ("netsleuth_ipvs_backend_weight", b.weight, "Weight"),
            ] {
                out.emit(
                    name,
                    &format!("{help} of the IPVS destination (/proc/net/ip_vs)."),
                    MetricKind::Gauge,
                    &labels,
                    Value::I64(v),
                );
            }
        }
    }
    for (svc, dests) in &s.nl {
        let l = svc.key.labels();
        let labels = [
            (l[0].0, l[0].1.as_str()),
            (l[1].0, l[1].1.as_str()),
            (l[2].0, l[2].1.as_str()),
            (l[3].0, l[3].1.as_str()),
        ];
        emit_counters(
            out,
            "netsleuth_ipvs_service_",
            "for the virtual service (generic netlink IPVS)",
            &svc.counters,
            &labels,
        );
        for d in dests {
            let port = d.port.to_string();
            let labels = [
                labels[0],
                labels[1],
                labels[2],
                labels[3],
                ("remote_address", d.address.as_str()),
                ("remote_port", port.as_str()),
            ];
            emit_counters(
                out,
                "netsleuth_ipvs_backend_",
                "for the destination (generic netlink IPVS)",
                &d.counters,
                &labels,
            );
        }
    }
}

/// Read the namespace's netlink figures (the calling thread must be in it).
pub fn netlink_snapshot() -> Result<Vec<(NlService, Vec<NlDest>)>, NlError> {
    let Some(mut nl) = IpvsNl::open()? else {
        return Ok(Vec::new());
    };
    let services = nl.services()?;
    let mut out = Vec::with_capacity(services.len());
    for s in services {
        let d = nl.dests(&s)?;
        out.push((s, d));
    }
    Ok(out)
}

struct IpvsProbe {
    netlink: bool,
}

impl Collector for IpvsProbe {
    fn name(&self) -> &'static str {
        "ipvs"
    }

    fn needs_entered(&self) -> bool {
        self.netlink
    }

    fn collect(&self, ctx: &NetnsCtx, out: &mut dyn Sink) -> Result<(), CollectError> {
        let path = |f: &str| ctx.net_dir.join(f).display().to_string();
        let data = ctx.read_net("ip_vs_stats")?;
        let totals = parse_stats(&data)
            .map_err(|e| CollectError::Failed(format!("parsing {}: {e}", path("ip_vs_stats"))))?;
        let data = ctx.read_net("ip_vs")?;
        let services = parse_services(&data)
            .map_err(|e| CollectError::Failed(format!("parsing {}: {e}", path("ip_vs"))))?;
        let mut snap = Snapshot {
            totals,
            services,
            nl: Vec::new(),
        };
        // The engine enters the namespace for this probe; a directory of fixture files has
        // only the procfs part.
        let mut nl_err = None;
        if self.netlink && ctx.entered && !snap.services.is_empty() {
            match netlink_snapshot() {
                Ok(nl) => snap.nl = nl,
                Err(e) => nl_err = Some(e),
            }
        }
        emit(&snap, out);
        match nl_err {
            // The procfs figures are out; the error says what is missing.
            Some(e) => Err(CollectError::Failed(format!(
                "generic netlink IPVS dump: {e}"
            ))),
            None => Ok(()),
        }
    }
}

fn build(args: &mut ProbeArgs) -> Result<Box<dyn Collector>, String> {
    let netlink = args.take_bool("netlink")?.unwrap_or(true);
    std::mem::take(args).finish()?;
    Ok(Box::new(IpvsProbe { netlink }))
}

fn available() -> Result<(), String> {
    super::require_file("/proc/self/net/ip_vs_stats")
        .map_err(|e| format!("{e} (the ip_vs module is not loaded)"))
}

pub fn specs() -> Vec<ProbeSpec> {
    vec![ProbeSpec::new(
        "ipvs",
        "IPVS totals (/proc/net/ip_vs_stats), destinations (/proc/net/ip_vs) and per-service/destination counters (generic netlink IPVS) where IPVS has state; arg netlink",
        None,
        build,
        available,
    ).off_by_default()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_hex_and_by_header() {
        let d = b"   Total Incoming Outgoing         Incoming         Outgoing\n   Conns  Packets  Packets            Bytes            Bytes\n       1        A        B              500              FFF\n\n Conns/s   Pkts/s   Pkts/s          Bytes/s          Bytes/s\n       0        0        0                0                0\n";
        assert_eq!(
            parse_stats(d).unwrap(),
            Counters {
                conns: 1,
                inpkts: 10,
                outpkts: 11,
                inbytes: 0x500,
                outbytes: 0xfff
            }
        );
        // Columns follow the header, not their position.
        let d = b" Incoming Total\n Bytes Conns\n 10 2\n";
        let e = parse_stats(d).unwrap_err();
        assert!(e.contains("header lacks"), "{e}");
    }

    #[test]
    fn stats_garbage() {
        for d in [
            &b""[..],
            b"a\nb\n",
            b" Total\n Conns\n xyz\n",
            b" Total\n Conns\n 1 2\n",
            b"\xff\xfe\n\n\n",
        ] {
            assert!(parse_stats(d).is_err(), "{d:?}");
        }
    }

    const IP_VS: &[u8] = b"IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\nTCP  C6120501:0050 rr \n  -> C6120002:1F90      Masq    1      3          7         \n  -> C6120003:1F90      Masq    2      0          0         \nUDP  [2001:0002:0000:0000:0000:0000:0000:0001]:0035 wlc \nFWM  00000010 sh \n  -> C6120004:0000      Route   5      1          2         \n";

    #[test]
    fn services_and_backends() {
        let s = parse_services(IP_VS).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(
            s[0].key,
            ServiceKey {
                proto: "TCP".into(),
                address: "198.18.5.1".into(),
                port: 80,
                fwmark: 0
            }
        );
        assert_eq!(s[0].scheduler, "rr");
        assert_eq!(
            s[0].backends[0],
            Backend {
                address: "198.18.0.2".into(),
                port: 8080,
                forward: "Masq".into(),
                weight: 1,
                active: 3,
                inactive: 7
            }
        );
        assert_eq!(s[0].backends[1].weight, 2);
        assert_eq!(s[1].key.address, "2001:2::1");
        assert_eq!(s[1].key.port, 53);
        assert!(s[1].backends.is_empty());
        assert_eq!(s[2].key.fwmark, 16);
        assert_eq!(s[2].backends[0].forward, "Route");
    }

    #[test]
    fn services_garbage() {
        for d in [
            &b""[..],
            b"hello\n",
            b"IP Virtual Server\n  -> C6120002:1F90 Masq 1 0 0\n",
            b"IP Virtual Server\nTCP  C612:0050 rr\n",
            b"IP Virtual Server\nTCP  C6120501:0050 rr\n  -> C6120002:1F90 Masq x 0 0\n",
            b"IP Virtual Server\nTCP  C6120501:0050 rr\n  -> C6120002:1F90 Masq\n",
        ] {
            assert!(parse_services(d).is_err(), "{d:?}");
        }
        for cut in 0..IP_VS.len() {
            let _ = parse_services(&IP_VS[..cut]);
        }
    }

    /// A hand-built `IPVS_CMD_NEW_SERVICE` message as the kernel sends it: both stats nests.
    fn service_msg(stats64: Option<[u64; 5]>, stats: Option<[u64; 5]>) -> Vec<u8> {
        let mut svc = Vec::new();
        put_attr(&mut svc, IPVS_SVC_ATTR_AF, &2u16.to_ne_bytes());
        put_attr(&mut svc, IPVS_SVC_ATTR_PROTOCOL, &17u16.to_ne_bytes());
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[198, 18, 5, 1]);
        put_attr(&mut svc, IPVS_SVC_ATTR_ADDR, &a);
        put_attr(&mut svc, IPVS_SVC_ATTR_PORT, &5353u16.to_be_bytes());
        put_attr(&mut svc, IPVS_SVC_ATTR_SCHED_NAME, b"rr\0");
        if let Some(s) = stats {
            let mut n = Vec::new();
            for (i, v) in s.iter().enumerate() {
                let k = i as u16 + 1;
                if k <= 3 {
                    put_attr(&mut n, k, &(*v as u32).to_ne_bytes());
                } else {
                    put_attr(&mut n, k, &v.to_ne_bytes());
                }
            }
            put_attr(&mut n, 6, &9u32.to_ne_bytes()); // cps: not a counter
            put_attr(&mut svc, IPVS_SVC_ATTR_STATS, &n);
        }
        if let Some(s) = stats64 {
            let mut n = Vec::new();
            for (i, v) in s.iter().enumerate() {
                put_attr(&mut n, i as u16 + 1, &v.to_ne_bytes());
            }
            put_attr(&mut svc, IPVS_SVC_ATTR_STATS64, &n);
        }
        let mut p = genl_header(IPVS_CMD_NEW_SERVICE);
        put_attr(&mut p, IPVS_CMD_ATTR_SERVICE, &svc);
        p
    }

    #[test]
    fn netlink_service_counters_by_attribute() {
        let big = 1u64 << 40;
        let m = service_msg(Some([1, 5, 4, big, 640]), Some([1, 5, 4, big, 640]));
        let s = parse_service_msg(&m).unwrap();
        assert_eq!(s.key.address, "198.18.5.1");
        assert_eq!(s.key.port, 5353);
        assert_eq!(s.key.proto, "UDP");
        assert_eq!(
            s.counters,
            Counters {
                conns: 1,
                inpkts: 5,
                outpkts: 4,
                inbytes: big,
                outbytes: 640
            }
        );
        // STATS64 wins over the 32-bit legacy nest.
        let m = service_msg(Some([1, 1 << 33, 0, 0, 0]), Some([1, 7, 0, 0, 0]));
        assert_eq!(parse_service_msg(&m).unwrap().counters.inpkts, 1 << 33);
        let m = service_msg(None, Some([2, 7, 6, 5, 4]));
        assert_eq!(parse_service_msg(&m).unwrap().counters.inpkts, 7);
        let e = parse_service_msg(&service_msg(None, None)).unwrap_err();
        assert!(e.contains("without IPVS_SVC_ATTR_STATS64"), "{e}");
        for cut in 0..m.len() {
            let _ = parse_service_msg(&m[..cut]);
        }
        assert!(parse_service_msg(&[1, 1]).is_err());
    }

    #[test]
    fn rendering() {
        let services = parse_services(IP_VS).unwrap();
        let nl_svc = parse_service_msg(&service_msg(Some([1, 5, 4, 640, 600]), None)).unwrap();
        let snap = Snapshot {
            totals: Counters {
                conns: 1,
                inpkts: 5,
                outpkts: 4,
                inbytes: 640,
                outbytes: 600,
            },
            services,
            nl: vec![(
                nl_svc,
                vec![NlDest {
                    address: "198.18.0.1".into(),
                    port: 7777,
                    counters: Counters {
                        conns: 1,
                        inpkts: 5,
                        outpkts: 4,
                        inbytes: 640,
                        outbytes: 600,
                    },
                }],
            )],
        };
        let mut f = crate::model::Families::new();
        emit(&snap, &mut f.sink(""));
        let mut text = String::new();
        f.render(&mut text);
        crate::collectors::testutil::lint_rendering(&text);
        for want in [
            "netsleuth_ipvs_connections_total 1",
            "netsleuth_ipvs_incoming_packets_total 5",
            "netsleuth_ipvs_outgoing_packets_total 4",
            "netsleuth_ipvs_incoming_bytes_total 640",
            "netsleuth_ipvs_outgoing_bytes_total 600",
            "netsleuth_ipvs_backend_connections_active{local_address=\"198.18.5.1\",local_port=\"80\",local_mark=\"\",proto=\"TCP\",remote_address=\"198.18.0.2\",remote_port=\"8080\"} 3",
            "netsleuth_ipvs_backend_connections_inactive{local_address=\"198.18.5.1\",local_port=\"80\",local_mark=\"\",proto=\"TCP\",remote_address=\"198.18.0.2\",remote_port=\"8080\"} 7",
            "netsleuth_ipvs_backend_weight{local_address=\"\",local_port=\"0\",local_mark=\"16\",proto=\"FWM\",remote_address=\"198.18.0.4\",remote_port=\"0\"} 5",
            "netsleuth_ipvs_service_incoming_packets_total{local_address=\"198.18.5.1\",local_port=\"5353\",local_mark=\"\",proto=\"UDP\"} 5",
            "netsleuth_ipvs_service_incoming_bytes_total{local_address=\"198.18.5.1\",local_port=\"5353\",local_mark=\"\",proto=\"UDP\"} 640",
            "netsleuth_ipvs_backend_outgoing_packets_total{local_address=\"198.18.5.1\",local_port=\"5353\",local_mark=\"\",proto=\"UDP\",remote_address=\"198.18.0.1\",remote_port=\"7777\"} 4",
        ] {
            assert!(text.lines().any(|l| l == want), "{want} not in\n{text}");
        }
        // Nothing for a namespace without IPVS state.
        let mut f = crate::model::Families::new();
        emit(&Snapshot::default(), &mut f.sink(""));
        let mut text = String::new();
        f.render(&mut text);
        assert_eq!(text, "");
    }

    /// What the kernel-matrix guests showed at the end of `metrics.ipvs` (one UDP service
    /// 198.18.6.1:5353, one masq destination 198.18.6.2:7777, 5 requests and 5 answers of
    /// 128 bytes at the IP layer), captured with NETSLEUTH_SELFTEST_CAPTURE.
    #[test]
    fn captured_from_matrix_kernels() {
        let want = Counters {
            conns: 1,
            inpkts: 5,
            outpkts: 5,
            inbytes: 640,
            outbytes: 640,
        };
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        for k in ["5.10", "6.1", "6.12"] {
            let net = root.join(format!("procfs/ipvs-{k}/net"));
            let read = |p: std::path::PathBuf| {
                std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            };
            assert_eq!(
                parse_stats(&read(net.join("ip_vs_stats"))).unwrap(),
                want,
                "{k}"
            );
            let services = parse_services(&read(net.join("ip_vs"))).unwrap();
            assert_eq!(services.len(), 1, "{k}");
            assert_eq!(
                services[0].key,
                ServiceKey {
                    proto: "UDP".into(),
                    address: "198.18.6.1".into(),
                    port: 5353,
                    fwmark: 0
                }
            );
            assert_eq!(services[0].scheduler, "rr");
            let b = &services[0].backends;
            assert_eq!(b.len(), 1);
            assert_eq!((b[0].address.as_str(), b[0].port), ("198.18.6.2", 7777));
            assert_eq!((b[0].forward.as_str(), b[0].weight), ("Masq", 1));
            // UDP connections count as inactive until they expire.
            assert_eq!(b[0].active + b[0].inactive, 1, "{k}: {:?}", b[0]);
            let nl = root.join(format!("netlink/ipvs-{k}"));
            let (svcs, dests) = parse_dumps(
                &read(nl.join("genl_services.bin")),
                &read(nl.join("genl_dests.bin")),
            )
            .unwrap();
            assert_eq!(svcs.len(), 1);
            assert_eq!(svcs[0].key, services[0].key);
            assert_eq!(svcs[0].counters, want, "{k} service");
            assert_eq!(dests.len(), 1);
            assert_eq!(
                (dests[0].address.as_str(), dests[0].port),
                ("198.18.6.2", 7777)
            );
            assert_eq!(dests[0].counters, want, "{k} destination");
            // The probe over the captured files (procfs part: a directory is not entered).
            let ctx = NetnsCtx::new(7, net.clone(), std::path::Path::new("/proc"), false, &[]);
            let c = build_probe_default();
            let mut f = crate::model::Families::new();
            c.collect(&ctx, &mut f.sink("")).unwrap();
            let mut text = String::new();
            f.render(&mut text);
            assert!(
                text.contains("\nnetsleuth_ipvs_incoming_packets_total 5\n"),
                "{text}"
            );
            assert!(
                text.contains("\nnetsleuth_ipvs_incoming_bytes_total 640\n"),
                "{text}"
            );
            assert!(
                text.contains("\nnetsleuth_ipvs_connections_total 1\n"),
                "{text}"
            );
        }
    }

    fn build_probe_default() -> Box<dyn Collector> {
        (specs()[0].build)(&mut ProbeArgs::new("ipvs")).unwrap()
    }
}
