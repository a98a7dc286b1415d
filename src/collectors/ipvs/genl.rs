//! Generic netlink, family IPVS (include/uapi/linux/ip_vs.h): the service and destination
//! dumps with their 64-bit counters, and the requests the self-test uses to set up a service.

use std::net::{Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{parse_string, NlasIterator};

use super::{Counters, ServiceKey};
use crate::collectors::netlink::{put_attr, DumpSocket, NlError, RawRequest};

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
    crate::collectors::netlink::walk(services, None, &mut |_, p| {
        s.push(parse_service_msg(p)?);
        Ok(())
    })?;
    let af = s.first().map_or(libc::AF_INET as u16, |x| x.af);
    let mut d = Vec::new();
    crate::collectors::netlink::walk(dests, None, &mut |_, p| {
        d.push(parse_dest_msg(p, af)?);
        Ok(())
    })?;
    Ok((s, d))
}

/// The attributes naming an IPv4 virtual service (family, protocol, address, port).
fn service_ident(protocol: u8, addr: Ipv4Addr, port: u16) -> Vec<u8> {
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
    svc
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
        frame(
            &mut svc,
            crate::collectors::netlink::NLMSG_DONE,
            &0i32.to_ne_bytes(),
        );
        for s in &services {
            let mut payload = genl_header(IPVS_CMD_GET_DEST);
            put_attr(&mut payload, IPVS_CMD_ATTR_SERVICE, &s.ident);
            let req = self.req(payload);
            self.sock.dump(req, &mut |ty, p| {
                frame(&mut dst, ty, p);
                Ok(())
            })?;
        }
        frame(
            &mut dst,
            crate::collectors::netlink::NLMSG_DONE,
            &0i32.to_ne_bytes(),
        );
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
        let mut svc = service_ident(protocol, addr, port);
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
        let svc = service_ident(protocol, vip, vport);
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A hand-built `IPVS_CMD_NEW_SERVICE` message as the kernel sends it: both stats nests.
    pub(in crate::collectors::ipvs) fn service_msg(
        stats64: Option<[u64; 5]>,
        stats: Option<[u64; 5]>,
    ) -> Vec<u8> {
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
}
