//! rtnetlink queries the flow probe and the inventory need: links (name, kind, the namespace
//! id of a veth's peer), default-route devices, the namespace id of a namespace fd
//! (`RTM_GETNSID`), every address of the calling thread's namespace (`RTM_GETADDR`), and a
//! socket subscribed to link and route notifications.
//!
//! The parsers take one message's payload (what [`crate::collectors::netlink::walk`] hands
//! out) and never panic on malformed input: an error names the message type.
#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_packet_core::ParseableParametrized;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use netlink_packet_route::nsid::{NsidAttribute, NsidMessage};
use netlink_packet_route::route::{RouteAttribute, RouteHeader, RouteMessage, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::collectors::netlink::{DumpSocket, NlError};

const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const RTM_NEWNSID: u16 = 88;

/// `RTMGRP_LINK`, `RTMGRP_IPV4_ROUTE`, `RTMGRP_IPV6_ROUTE` (bind groups).
pub const GROUPS_LINK_ROUTE: u32 = 0x1 | 0x40 | 0x400;

/// A network device as `RTM_NEWLINK` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `IFLA_INFO_KIND` (`veth`, `bridge`...), empty for devices without one (physical NICs).
    pub kind: String,
    /// `IFLA_LINK_NETNSID`: the namespace id (in ours) of the peer of a veth/macvlan/... whose
    /// other end lives in another namespace.
    pub link_netnsid: Option<i32>,
}

fn parse(ty: u16, payload: &[u8]) -> Result<RouteNetlinkMessage, String> {
    RouteNetlinkMessage::parse_with_param(payload, ty).map_err(|e| format!("{e}"))
}

/// One `RTM_NEWLINK` payload → [`Link`]; `Ok(None)` for other message types.
pub fn parse_link(ty: u16, payload: &[u8]) -> Result<Option<Link>, String> {
    if ty != RTM_NEWLINK {
        return Ok(None);
    }
    let RouteNetlinkMessage::NewLink(m) = parse(ty, payload)? else {
        return Ok(None);
    };
    let mut l = Link {
        index: m.header.index,
        name: String::new(),
        kind: String::new(),
        link_netnsid: None,
    };
    for a in m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n,
            LinkAttribute::LinkNetNsId(id) => l.link_netnsid = Some(id),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        l.kind = match k {
                            InfoKind::Veth => "veth".into(),
                            other => other.to_string(),
                        };
                    }
                }
            }
            _ => {}
        }
    }
    if l.name.is_empty() {
        return Err(format!(
            "RTM_NEWLINK for ifindex {} has no IFLA_IFNAME",
            l.index
        ));
    }
    Ok(Some(l))
}

/// Every link of the socket's namespace.
pub fn dump_links(sock: &mut DumpSocket) -> Result<Vec<Link>, NlError> {
    let mut out = Vec::new();
    sock.dump(
        RouteNetlinkMessage::GetLink(LinkMessage::default()),
        &mut |ty, p| {
            if let Some(l) = parse_link(ty, p)? {
                out.push(l);
            }
            Ok(())
        },
    )?;
    Ok(out)
}

/// The output devices of a default route (`RTM_NEWROUTE` of the main table with prefix length
/// 0, unicast), including every nexthop of a multipath route.
pub fn parse_default_route(ty: u16, payload: &[u8], out: &mut Vec<u32>) -> Result<(), String> {
    if ty != RTM_NEWROUTE {
        return Ok(());
    }
    let RouteNetlinkMessage::NewRoute(m) = parse(ty, payload)? else {
        return Ok(());
    };
    if m.header.destination_prefix_length != 0 || m.header.kind != RouteType::Unicast {
        return Ok(());
    }
    let mut table = u32::from(m.header.table);
    for a in &m.attributes {
        if let RouteAttribute::Table(t) = a {
            table = *t;
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return Ok(());
    }
    for a in &m.attributes {
        match a {
            RouteAttribute::Oif(i) => out.push(*i),
            RouteAttribute::MultiPath(hops) => out.extend(hops.iter().map(|h| h.interface_index)),
            _ => {}
        }
    }
    Ok(())
}

/// The devices of the IPv4 and IPv6 default routes (sorted, unique).
pub fn default_route_devices(sock: &mut DumpSocket) -> Result<Vec<u32>, NlError> {
    let mut out = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut m = RouteMessage::default();
        m.header.address_family = family;
        sock.dump(RouteNetlinkMessage::GetRoute(m), &mut |ty, p| {
            parse_default_route(ty, p, &mut out)
        })?;
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// The id our namespace gives the namespace of `fd` (`RTM_GETNSID`, `ip netns identify`
/// the other way round); `None` when it has none (-1: no veth or the like joins them).
pub fn nsid_of(sock: &mut DumpSocket, fd: &impl AsRawFd) -> Result<Option<i32>, NlError> {
    let mut m = NsidMessage::default();
    m.attributes.push(NsidAttribute::Fd(fd.as_raw_fd() as u32));
    let mut id = None;
    sock.get(RouteNetlinkMessage::GetNsId(m), &mut |ty, p| {
        if ty != RTM_NEWNSID {
            return Ok(());
        }
        if let RouteNetlinkMessage::NewNsId(m) = parse(ty, p)? {
            for a in m.attributes {
                if let NsidAttribute::Id(i) = a {
                    id = (i >= 0).then_some(i);
                }
            }
        }
        Ok(())
    })?;
    Ok(id)
}

/// One `RTM_NEWADDR` payload → its address (`IFA_ADDRESS`, else `IFA_LOCAL`).
pub fn parse_address(ty: u16, payload: &[u8]) -> Result<Option<IpAddr>, String> {
    if ty != RTM_NEWADDR {
        return Ok(None);
    }
    let RouteNetlinkMessage::NewAddress(m) = parse(ty, payload)? else {
        return Ok(None);
    };
    let mut addr = None;
    for a in m.attributes {
        match a {
            // IFA_LOCAL is the interface's own address on point-to-point links.
            AddressAttribute::Local(ip) => addr = Some(ip),
            AddressAttribute::Address(ip) if addr.is_none() => addr = Some(ip),
            _ => {}
        }
    }
    Ok(addr)
}

/// Every address of the calling thread's namespace (IPv4 and IPv6), loopback addresses
/// excluded (every namespace has them).
pub fn own_addresses() -> Result<Vec<IpAddr>, NlError> {
    let mut sock = DumpSocket::open(netlink_sys::protocols::NETLINK_ROUTE)?;
    let mut out = Vec::new();
    sock.dump(
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        &mut |ty, p| {
            if let Some(a) = parse_address(ty, p)? {
                if !a.is_loopback() {
                    out.push(a);
                }
            }
            Ok(())
        },
    )?;
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// A socket that receives link and route notifications of the calling thread's namespace.
pub struct Monitor {
    sock: netlink_sys::Socket,
    buf: Vec<u8>,
}

impl Monitor {
    /// Subscribes to `groups` ([`GROUPS_LINK_ROUTE`]); `recv` waits at most `timeout`.
    pub fn open(groups: u32, timeout: Duration) -> Result<Monitor, NlError> {
        let io = |what| {
            move |e: std::io::Error| NlError::Io {
                what,
                errno: e.raw_os_error().unwrap_or(libc::EIO),
            }
        };
        let mut sock = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE)
            .map_err(io("socket(AF_NETLINK)"))?;
        sock.bind(&netlink_sys::SocketAddr::new(0, groups))
            .map_err(io("bind(RTMGRP_LINK)"))?;
        let tv = nix::sys::time::TimeVal::new(timeout.as_secs() as _, timeout.subsec_micros() as _);
        nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::ReceiveTimeout, &tv)
            .map_err(|e| NlError::Io {
                what: "setsockopt(SO_RCVTIMEO)",
                errno: e as i32,
            })?;
        Ok(Monitor {
            sock,
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    /// Waits for the next notification datagram: `Ok(true)` when one came (its content does
    /// not matter to us: the caller re-reads the state), `Ok(false)` on timeout. An overrun
    /// (`ENOBUFS`: notifications were lost) is reported as a notification, so the caller
    /// re-reads everything.
    pub fn wait(&mut self) -> Result<bool, NlError> {
        self.buf.clear();
        match self.sock.recv(&mut self.buf, 0) {
            Ok(_) => Ok(true),
            Err(e) => match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(false),
                Some(libc::ENOBUFS) => Ok(true),
                other => Err(NlError::Io {
                    what: "recv",
                    errno: other.unwrap_or(libc::EIO),
                }),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for b in [&[][..], &[1, 2, 3], &[0xff; 40]] {
            let _ = parse_link(RTM_NEWLINK, b);
            let _ = parse_address(RTM_NEWADDR, b);
            let mut v = Vec::new();
            let _ = parse_default_route(RTM_NEWROUTE, b, &mut v);
        }
        assert!(parse_link(RTM_NEWLINK, &[1, 2, 3]).is_err());
        assert_eq!(parse_link(99, &[1, 2, 3]), Ok(None));
    }
}
