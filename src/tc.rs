//! cls_bpf direct-action filters on a clsact qdisc through rtnetlink: the flow probe's attach
//! method for kernels without tcx links (before 6.6).
//!
//! - The clsact qdisc: created if the device has none (`RTM_NEWQDISC`, `NLM_F_EXCL`); an
//!   existing clsact is reused and never deleted. One we created is deleted again when our
//!   last filter goes and no other filter was added to it meanwhile.
//! - Our filters: kind `bpf`, protocol all, priority [`PRIO`], handle [`HANDLE`], named
//!   `netsleuth_flow:<pid>` (`TCA_BPF_NAME`; `tc filter show` prints it), direct action. They
//!   are deleted by exact (parent, priority, protocol, handle) when dropped; filters of
//!   anyone else are never touched.
//! - Unlike tcx links, filters outlive a killed process: before attaching to a device, filters
//!   named `netsleuth_flow:<pid>` of a pid that no longer runs (a crashed exporter) are
//!   deleted.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use netlink_packet_core::{NetlinkSerializable, NlasIterator, NLM_F_REQUEST};

use crate::collectors::netlink::{walk, DumpSocket, NlError};

const RTM_NEWQDISC: u16 = 36;
const RTM_DELQDISC: u16 = 37;
const RTM_GETQDISC: u16 = 38;
const RTM_NEWTFILTER: u16 = 44;
const RTM_DELTFILTER: u16 = 45;
const RTM_GETTFILTER: u16 = 46;

const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;

const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_BPF_FD: u16 = 6;
const TCA_BPF_NAME: u16 = 7;
const TCA_BPF_FLAGS: u16 = 8;
const TCA_BPF_FLAG_ACT_DIRECT: u32 = 1;
const NLA_F_NESTED: u16 = 0x8000;

/// `TC_H_CLSACT` (= `TC_H_INGRESS`), its handle `ffff:`, and the two hook parents.
const TC_H_CLSACT: u32 = 0xffff_fff1;
const CLSACT_HANDLE: u32 = 0xffff_0000;
const PARENT_INGRESS: u32 = 0xffff_fff2;
const PARENT_EGRESS: u32 = 0xffff_fff3;

/// Our filters' priority and handle.
pub const PRIO: u16 = 7;
pub const HANDLE: u32 = 0x4e53;
/// `ETH_P_ALL`, in network byte order as `tcm_info` wants it.
const PROTO_ALL_BE: u16 = 0x0003u16.to_be();

/// The name prefix of our filters (`TCA_BPF_NAME`), then the pid.
pub const NAME_PREFIX: &str = "netsleuth_flow:";

/// One rtnetlink message: a type and its payload (tcmsg + attributes), serialised as is.
#[derive(Debug)]
struct Raw {
    ty: u16,
    payload: Vec<u8>,
}

impl NetlinkSerializable for Raw {
    fn message_type(&self) -> u16 {
        self.ty
    }
    fn buffer_len(&self) -> usize {
        self.payload.len()
    }
    fn serialize(&self, buffer: &mut [u8]) {
        buffer[..self.payload.len()].copy_from_slice(&self.payload);
    }
}

fn tcmsg(ifindex: u32, handle: u32, parent: u32, info: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(64);
    b.extend_from_slice(&[0u8, 0, 0, 0]); // family, pads
    b.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    b.extend_from_slice(&handle.to_ne_bytes());
    b.extend_from_slice(&parent.to_ne_bytes());
    b.extend_from_slice(&info.to_ne_bytes());
    b
}

fn attr(b: &mut Vec<u8>, ty: u16, value: &[u8]) {
    let len = 4 + value.len();
    b.extend_from_slice(&(len as u16).to_ne_bytes());
    b.extend_from_slice(&ty.to_ne_bytes());
    b.extend_from_slice(value);
    while b.len() % 4 != 0 {
        b.push(0);
    }
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// Sends `msg` with `NLM_F_REQUEST | NLM_F_ACK | flags` and waits for the kernel's answer;
/// `Err(Errno)` when it refused.
fn request(ty: u16, payload: Vec<u8>, flags: u16) -> Result<(), NlError> {
    let io = |what| {
        move |e: std::io::Error| NlError::Io {
            what,
            errno: e.raw_os_error().unwrap_or(libc::EIO),
        }
    };
    let sock = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE)
        .map_err(io("socket(AF_NETLINK)"))?;
    let tv = nix::sys::time::TimeVal::new(2, 0);
    nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::ReceiveTimeout, &tv).map_err(
        |e| NlError::Io {
            what: "setsockopt(SO_RCVTIMEO)",
            errno: e as i32,
        },
    )?;
    let len = 16 + payload.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK | flags).to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes()); // seq
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    m.extend_from_slice(&payload);
    sock.send(&m, 0).map_err(io("send"))?;
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        buf.clear();
        sock.recv(&mut buf, 0).map_err(|e| match e.raw_os_error() {
            Some(libc::EAGAIN) => NlError::Timeout,
            o => NlError::Io {
                what: "recv",
                errno: o.unwrap_or(libc::EIO),
            },
        })?;
        // An ACK is an NLMSG_ERROR with code 0: walk returns Ok(false) for it, Err for a code.
        walk(&buf, Some(1), &mut |_, _| Ok(()))?;
        if buf.len() >= 20 && u16::from_ne_bytes([buf[4], buf[5]]) == 2 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(NlError::Timeout);
        }
    }
}

/// A filter or qdisc as a dump reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcObject {
    pub ifindex: u32,
    pub handle: u32,
    pub parent: u32,
    pub info: u32,
    pub kind: String,
    /// cls_bpf: `TCA_BPF_NAME`.
    pub bpf_name: String,
}

/// One `RTM_NEWQDISC`/`RTM_NEWTFILTER` payload.
pub fn parse_object(payload: &[u8]) -> Result<TcObject, String> {
    if payload.len() < 20 {
        return Err(format!("tcmsg of {} bytes (20 expected)", payload.len()));
    }
    let u = |o: usize| u32::from_ne_bytes(payload[o..o + 4].try_into().unwrap_or([0; 4]));
    let mut t = TcObject {
        ifindex: u(4),
        handle: u(8),
        parent: u(12),
        info: u(16),
        kind: String::new(),
        bpf_name: String::new(),
    };
    let s = |v: &[u8]| {
        let end = v.iter().position(|c| *c == 0).unwrap_or(v.len());
        String::from_utf8_lossy(&v[..end]).into_owned()
    };
    for nla in NlasIterator::new(&payload[20..]) {
        let nla = nla.map_err(|e| format!("attribute: {e}"))?;
        match nla.kind() & !NLA_F_NESTED {
            TCA_KIND => t.kind = s(nla.value()),
            TCA_OPTIONS => {
                for o in NlasIterator::new(nla.value()) {
                    let o = o.map_err(|e| format!("TCA_OPTIONS: {e}"))?;
                    if o.kind() & !NLA_F_NESTED == TCA_BPF_NAME {
                        t.bpf_name = s(o.value());
                    }
                }
            }
            _ => {}
        }
    }
    Ok(t)
}

fn dump(ty: u16, ifindex: u32, parent: u32) -> Result<Vec<TcObject>, NlError> {
    let mut sock = DumpSocket::open(netlink_sys::protocols::NETLINK_ROUTE)?;
    let mut out = Vec::new();
    sock.dump(
        Raw {
            ty,
            payload: tcmsg(ifindex, 0, parent, 0),
        },
        &mut |t, p| {
            if t == ty - 2 {
                let o = parse_object(p)?;
                // Qdisc dumps ignore the ifindex filter on some kernels: keep this device's.
                if o.ifindex == ifindex {
                    out.push(o);
                }
            }
            Ok(())
        },
    )?;
    Ok(out)
}

/// The filters at one clsact hook of a device.
pub fn filters(ifindex: u32, egress: bool) -> Result<Vec<TcObject>, NlError> {
    dump(
        RTM_GETTFILTER,
        ifindex,
        if egress {
            PARENT_EGRESS
        } else {
            PARENT_INGRESS
        },
    )
}

/// The qdiscs of a device.
pub fn qdiscs(ifindex: u32) -> Result<Vec<TcObject>, NlError> {
    dump(RTM_GETQDISC, ifindex, 0)
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Deletes filters named `netsleuth_flow:<pid>` on the device whose pid no longer runs;
/// returns how many.
pub fn remove_stale(ifindex: u32) -> usize {
    let mut n = 0;
    for egress in [false, true] {
        let Ok(fs) = filters(ifindex, egress) else {
            continue;
        };
        for f in fs {
            let Some(pid) = f
                .bpf_name
                .strip_prefix(NAME_PREFIX)
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if f.kind != "bpf" || pid_alive(pid) || f.handle == 0 {
                continue;
            }
            let mut p = tcmsg(ifindex, f.handle, f.parent, f.info);
            attr(&mut p, TCA_KIND, &cstr("bpf"));
            if request(RTM_DELTFILTER, p, 0).is_ok() {
                n += 1;
            }
        }
    }
    n
}

/// A clsact of ours or someone's on a device, and our two filters on it; dropping it deletes
/// our filters (and the clsact if we made it and nothing else was added to it).
#[derive(Debug)]
pub struct Attachment {
    ifindex: u32,
    created_clsact: bool,
    filters: Vec<u32>,
}

/// Ensures a clsact on `ifindex`; `Ok(true)` when we created it.
fn ensure_clsact(ifindex: u32) -> Result<bool, String> {
    let mut p = tcmsg(ifindex, CLSACT_HANDLE, TC_H_CLSACT, 0);
    attr(&mut p, TCA_KIND, &cstr("clsact"));
    match request(RTM_NEWQDISC, p, NLM_F_CREATE | NLM_F_EXCL) {
        Ok(()) => Ok(true),
        Err(NlError::Errno(libc::EEXIST)) => {
            let qs = qdiscs(ifindex).map_err(|e| format!("RTM_GETQDISC: {e}"))?;
            match qs.iter().find(|q| q.parent == TC_H_CLSACT) {
                Some(q) if q.kind == "clsact" => Ok(false),
                Some(q) => Err(format!(
                    "the device has a `{}` qdisc where clsact would go (egress filters need clsact)",
                    q.kind
                )),
                None => Err("RTM_NEWQDISC clsact: EEXIST, but no qdisc at ffff:fff1".into()),
            }
        }
        Err(e) => Err(format!("RTM_NEWQDISC clsact: {e}")),
    }
}

/// The tcmsg and kind of our cls_bpf filter at `parent` (priority, handle, every protocol).
fn our_filter(ifindex: u32, parent: u32) -> Vec<u8> {
    let info = (u32::from(PRIO) << 16) | u32::from(PROTO_ALL_BE);
    let mut p = tcmsg(ifindex, HANDLE, parent, info);
    attr(&mut p, TCA_KIND, &cstr("bpf"));
    p
}

fn add_filter(ifindex: u32, parent: u32, prog_fd: u32, name: &str) -> Result<(), NlError> {
    let mut p = our_filter(ifindex, parent);
    let mut o = Vec::new();
    attr(&mut o, TCA_BPF_FD, &prog_fd.to_ne_bytes());
    attr(&mut o, TCA_BPF_NAME, &cstr(name));
    attr(
        &mut o,
        TCA_BPF_FLAGS,
        &TCA_BPF_FLAG_ACT_DIRECT.to_ne_bytes(),
    );
    attr(&mut p, TCA_OPTIONS | NLA_F_NESTED, &o);
    request(RTM_NEWTFILTER, p, NLM_F_CREATE | NLM_F_EXCL)
}

fn del_filter(ifindex: u32, parent: u32) -> Result<(), NlError> {
    request(RTM_DELTFILTER, our_filter(ifindex, parent), 0)
}

/// Deletes the device's clsact if it holds no filter on either hook (best effort).
fn remove_clsact_if_empty(ifindex: u32) {
    let empty = [false, true]
        .iter()
        .all(|e| filters(ifindex, *e).is_ok_and(|f| f.is_empty()));
    if empty {
        let mut p = tcmsg(ifindex, CLSACT_HANDLE, TC_H_CLSACT, 0);
        attr(&mut p, TCA_KIND, &cstr("clsact"));
        let _ = request(RTM_DELQDISC, p, 0);
    }
}

/// Attaches the two programs (fds) as direct-action cls_bpf filters at the device's clsact
/// ingress and egress, after removing stale filters of ours.
pub fn attach(ifindex: u32, ingress_fd: u32, egress_fd: u32) -> Result<Attachment, String> {
    let stale = remove_stale(ifindex);
    if stale > 0 {
        log::info!(
            "flow: removed {stale} stale cls_bpf filter(s) of a previous run on ifindex {ifindex}"
        );
        // The clsact a crashed run left behind, empty now: ours again (an empty clsact does
        // nothing for anyone).
        remove_clsact_if_empty(ifindex);
    }
    let created_clsact = ensure_clsact(ifindex)?;
    let mut a = Attachment {
        ifindex,
        created_clsact,
        filters: Vec::new(),
    };
    let name = format!("{NAME_PREFIX}{}", std::process::id());
    for (parent, fd) in [(PARENT_INGRESS, ingress_fd), (PARENT_EGRESS, egress_fd)] {
        add_filter(ifindex, parent, fd, &name)
            .map_err(|e| format!("RTM_NEWTFILTER bpf at {parent:#x}: {e}"))?;
        a.filters.push(parent);
    }
    Ok(a)
}

impl Drop for Attachment {
    fn drop(&mut self) {
        for parent in self.filters.drain(..) {
            if let Err(e) = del_filter(self.ifindex, parent) {
                // The device is gone (its filters with it), or someone removed ours.
                log::debug!("flow: deleting our filter on ifindex {}: {e}", self.ifindex);
            }
        }
        if self.created_clsact {
            remove_clsact_if_empty(self.ifindex);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_parse_and_garbage_is_an_error() {
        let mut p = tcmsg(5, HANDLE, PARENT_EGRESS, 0x0007_0300);
        attr(&mut p, TCA_KIND, &cstr("bpf"));
        let mut o = Vec::new();
        attr(&mut o, TCA_BPF_NAME, &cstr("netsleuth_flow:42"));
        attr(&mut p, TCA_OPTIONS | NLA_F_NESTED, &o);
        let t = parse_object(&p).unwrap();
        assert_eq!(
            (
                t.ifindex,
                t.handle,
                t.parent,
                t.kind.as_str(),
                t.bpf_name.as_str()
            ),
            (5, HANDLE, PARENT_EGRESS, "bpf", "netsleuth_flow:42")
        );
        assert!(parse_object(&[1, 2, 3]).is_err());
        let mut bad = tcmsg(1, 0, 0, 0);
        bad.extend_from_slice(&[200, 0, 1, 0]);
        assert!(parse_object(&bad).is_err());
    }
}
