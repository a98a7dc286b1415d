//! The record every probe writes to its ring buffer (`struct ns_event`, read through the
//! offsets of [`super::layout::ns_event`]) and its typed views: what the reused fields mean
//! for each probe (a latency in `location`, an ifindex or `cpu << 8 | vector` in `reason`...).
#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::plan::RunningProbe;
use crate::bpf::kallsyms::Kallsyms;
use crate::events::{Event, EventEntity, FieldValue};

/// The record every probe writes (`struct ns_event` in `bpf-asm/include/netprobes.h`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEvent {
    pub ts: u64,
    pub location: u64,
    pub netns: u32,
    pub reason: u32,
    pub stack_id: i32,
    pub family: u16,
    pub l4proto: u8,
    pub kind: u8,
    pub state: u8,
    pub sport: u16,
    pub dport: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

pub const RAW_EVENT_LEN: usize = 72;

impl RawEvent {
    pub fn parse(b: &[u8]) -> Option<RawEvent> {
        use super::layout::ns_event as f;
        if b.len() < RAW_EVENT_LEN {
            return None;
        }
        Some(RawEvent {
            ts: f::TS.u64(b)?,
            location: f::LOCATION.u64(b)?,
            netns: f::NETNS.u32(b)?,
            reason: f::REASON.u32(b)?,
            stack_id: f::STACK_ID.u32(b)? as i32,
            family: f::FAMILY.u16(b)?,
            l4proto: f::L4PROTO.u8(b)?,
            kind: f::TYPE.u8(b)?,
            state: f::STATE.u8(b)?,
            sport: f::SPORT.u16(b)?,
            dport: f::DPORT.u16(b)?,
            saddr: f::SADDR.bytes(b)?.try_into().ok()?,
            daddr: f::DADDR.bytes(b)?.try_into().ok()?,
        })
    }

    /// packetloss: the drop.
    pub fn drop(&self) -> DropView {
        DropView {
            reason: self.reason,
            location: self.location,
        }
    }

    /// Latency probes: the latency (carried in `location`).
    pub fn latency(&self) -> Latency {
        Latency(self.location)
    }

    /// netiftxlat: the latency and the device (its ifindex in `reason`).
    pub fn tx(&self) -> TxView {
        TxView {
            latency: self.latency(),
            ifindex: self.reason,
        }
    }

    /// softirq: the latency, the CPU and the vector (`reason` = `cpu << 8 | vector`).
    pub fn softirq(&self) -> SoftirqView {
        SoftirqView {
            latency: self.latency(),
            cpu: self.reason >> 8,
            vector: (self.reason & 0xff) as u8,
        }
    }

    /// biolatency: the request (dev_t in `reason`, the operation in `l4proto`, the issuing
    /// task's comm in `saddr`, its pid and the request's bytes in `daddr`).
    pub fn bio(&self) -> BioView {
        let at = |o: usize| u32::from_ne_bytes(self.daddr[o..o + 4].try_into().unwrap_or([0; 4]));
        BioView {
            latency: self.latency(),
            dev: self.reason,
            op: self.l4proto,
            pid: at(0),
            bytes: at(4),
            comm: super::hist::c_str(&self.saddr),
        }
    }

    fn addr(&self, a: &[u8; 16]) -> Option<IpAddr> {
        match self.family {
            2 => Some(IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))),
            10 => Some(IpAddr::V6(Ipv6Addr::from(*a))),
            _ => None,
        }
    }

    /// `protocol, saddr, sport, daddr, dport` (KubeSkoop's tuple), when the packet was IP.
    pub fn tuple_fields(&self, ev: &mut Event) {
        let (Some(s), Some(d)) = (self.addr(&self.saddr), self.addr(&self.daddr)) else {
            return;
        };
        ev.fields.push((
            "protocol",
            FieldValue::Str(protocol_name(self.family, self.l4proto)),
        ));
        ev.fields.push(("saddr", FieldValue::Addr(s)));
        ev.fields
            .push(("sport", FieldValue::UInt(self.sport.into())));
        ev.fields.push(("daddr", FieldValue::Addr(d)));
        ev.fields
            .push(("dport", FieldValue::UInt(self.dport.into())));
    }
}

/// The event of a two-stage latency probe: its type by `ns_event.type` (2: the second stage's),
/// the packet's or socket's tuple, the latency.
pub fn stage_latency_event(
    r: &RawEvent,
    entity: std::sync::Arc<EventEntity>,
    types: [&'static str; 2],
) -> Event {
    let mut ev = Event::new(types[usize::from(r.kind == 2)], entity);
    r.tuple_fields(&mut ev);
    ev.fields.push(r.latency().field());
    ev
}

/// A latency in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Latency(pub u64);

impl Latency {
    /// The `latency` field of a latency event, in seconds.
    pub fn field(self) -> (&'static str, FieldValue) {
        ("latency", FieldValue::Seconds(self.0 as f64 / 1e9))
    }
}

/// [`RawEvent::drop`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropView {
    /// `enum skb_drop_reason` (0 on kernels without drop reasons).
    pub reason: u32,
    /// The freeing call site.
    pub location: u64,
}

/// [`RawEvent::tx`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxView {
    pub latency: Latency,
    pub ifindex: u32,
}

/// [`RawEvent::softirq`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftirqView {
    pub latency: Latency,
    pub cpu: u32,
    pub vector: u8,
}

/// [`RawEvent::bio`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BioView {
    pub latency: Latency,
    /// The kernel's dev_t (`major << 20 | minor`).
    pub dev: u32,
    /// `REQ_OP_*`.
    pub op: u8,
    pub pid: u32,
    pub bytes: u32,
    pub comm: String,
}

/// Protocol label: `TCP`, `UDP`, `ICMP`, `ICMPv6`, `SCTP`, `IP/<n>` for other IP protocols,
/// `other` for non-IP packets.
pub fn protocol_name(family: u16, l4: u8) -> std::borrow::Cow<'static, str> {
    if family != 2 && family != 10 {
        return "other".into();
    }
    match l4 {
        6 => "TCP".into(),
        17 => "UDP".into(),
        1 => "ICMP".into(),
        58 => "ICMPv6".into(),
        132 => "SCTP".into(),
        n => format!("IP/{n}").into(),
    }
}

/// TCP state names (include/net/tcp_states.h).
pub fn tcp_state(s: u8) -> &'static str {
    match s {
        1 => "TCP_ESTABLISHED",
        2 => "TCP_SYN_SENT",
        3 => "TCP_SYN_RECV",
        4 => "TCP_FIN_WAIT1",
        5 => "TCP_FIN_WAIT2",
        6 => "TCP_TIME_WAIT",
        7 => "TCP_CLOSE",
        8 => "TCP_CLOSE_WAIT",
        9 => "TCP_LAST_ACK",
        10 => "TCP_LISTEN",
        11 => "TCP_CLOSING",
        12 => "TCP_NEW_SYN_RECV",
        13 => "TCP_BOUND_INACTIVE",
        _ => "TCP_UNKNOWN",
    }
}

/// What a decoder gets besides the record.
pub struct DecodeCtx<'a> {
    pub probe: &'a RunningProbe,
    pub kallsyms: Option<&'a Kallsyms>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_name_the_reused_fields() {
        let mut b = [0u8; RAW_EVENT_LEN];
        b[8..16].copy_from_slice(&1_500_000u64.to_ne_bytes());
        b[20..24].copy_from_slice(&((3u32 << 8) | 7).to_ne_bytes());
        b[30] = 1;
        b[40..44].copy_from_slice(b"dd\0\0");
        b[56..60].copy_from_slice(&42u32.to_ne_bytes());
        b[60..64].copy_from_slice(&4096u32.to_ne_bytes());
        let r = RawEvent::parse(&b).unwrap();
        assert_eq!(r.latency(), Latency(1_500_000));
        assert_eq!(r.latency().field().1, FieldValue::Seconds(0.0015));
        assert_eq!((r.softirq().cpu, r.softirq().vector), (3, 7));
        assert_eq!(r.tx().ifindex, (3 << 8) | 7);
        assert_eq!(r.drop().location, 1_500_000);
        let bio = r.bio();
        assert_eq!((bio.op, bio.pid, bio.bytes), (1, 42, 4096));
        assert_eq!(bio.comm, "dd");
        assert_eq!(RawEvent::parse(&b[..RAW_EVENT_LEN - 1]), None);
    }
}
