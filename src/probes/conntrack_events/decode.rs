//! The pure ctnetlink event decoder: messages → [`CtEvent`] → [`Event`] (fuzzed).
#![forbid(unsafe_code)]

use super::*;

/// nfnetlink subsystems (`NFNL_SUBSYS_*`): the message type is `subsys << 8 | msg`.
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const NFNL_SUBSYS_CTNETLINK_EXP: u16 = 2;
/// `IPCTNL_MSG_CT_NEW` / `IPCTNL_MSG_EXP_NEW` and the `_DELETE`s.
const MSG_NEW: u16 = 0;
const MSG_DELETE: u16 = 2;
/// `NLM_F_CREATE`: set on a new conntrack's event, not on an update's.
const NLM_F_CREATE: u16 = 0x400;

/// Multicast groups (`enum nfnetlink_groups`): CONNTRACK_NEW, _UPDATE, _DESTROY, _EXP_NEW,
/// _EXP_DESTROY (`_EXP_UPDATE`, 5, is never sent by the kernel).
pub const GROUPS: [u32; 5] = [1, 2, 3, 4, 6];

// Conntrack attributes (`enum ctattr_type`).
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_STATUS: u16 = 3;
const CTA_PROTOINFO: u16 = 4;
const CTA_HELP: u16 = 5;
const CTA_TIMEOUT: u16 = 7;
const CTA_MARK: u16 = 8;
const CTA_ID: u16 = 12;
const CTA_ZONE: u16 = 18;
// Tuple (`enum ctattr_tuple`, `ctattr_ip`, `ctattr_l4proto`).
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_TUPLE_ZONE: u16 = 3;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_PROTO_ICMP_ID: u16 = 4;
const CTA_PROTO_ICMP_TYPE: u16 = 5;
const CTA_PROTO_ICMP_CODE: u16 = 6;
const CTA_PROTO_ICMPV6_ID: u16 = 7;
const CTA_PROTO_ICMPV6_TYPE: u16 = 8;
const CTA_PROTO_ICMPV6_CODE: u16 = 9;
// Protocol info (`ctattr_protoinfo`, `ctattr_protoinfo_tcp`), helper (`ctattr_help`).
const CTA_PROTOINFO_TCP: u16 = 1;
const CTA_PROTOINFO_TCP_STATE: u16 = 1;
const CTA_HELP_NAME: u16 = 1;
// Expectation attributes (`enum ctattr_expect`).
const CTA_EXPECT_MASTER: u16 = 1;
const CTA_EXPECT_TUPLE: u16 = 2;
const CTA_EXPECT_TIMEOUT: u16 = 4;
const CTA_EXPECT_ID: u16 = 5;
const CTA_EXPECT_HELP_NAME: u16 = 6;
const CTA_EXPECT_ZONE: u16 = 7;
const CTA_EXPECT_FLAGS: u16 = 8;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtKind {
    New,
    Update,
    Destroy,
    ExpNew,
    ExpDestroy,
}

impl CtKind {
    pub fn name(self) -> &'static str {
        EVENT_TYPES[self.index()]
    }

    pub(super) fn index(self) -> usize {
        match self {
            CtKind::New => 0,
            CtKind::Update => 1,
            CtKind::Destroy => 2,
            CtKind::ExpNew => 3,
            CtKind::ExpDestroy => 4,
        }
    }
}

/// One direction of a connection (`CTA_TUPLE_*`), as far as the message carries it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tuple {
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    /// IP protocol number.
    pub proto: Option<u8>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub icmp_id: Option<u16>,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    /// `CTA_TUPLE_ZONE` (a zone for this direction only).
    pub zone: Option<u16>,
}

/// One decoded ctnetlink event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CtEvent {
    pub kind: CtKind,
    /// `nfgenmsg.nfgen_family`: 2 (IPv4) or 10 (IPv6).
    pub family: u8,
    /// Conntrack: the original direction. Expectation: the tuple expected.
    pub orig: Tuple,
    /// Conntrack: the reply direction (after NAT: the translated addresses).
    pub reply: Tuple,
    /// Expectation: the master connection's original tuple.
    pub master: Option<Tuple>,
    /// `CTA_STATUS` (`IPS_*` bits).
    pub status: Option<u32>,
    /// `CTA_PROTOINFO_TCP_STATE` (`enum tcp_conntrack`), when the kernel sent it (new
    /// conntracks, state changes, destroys).
    pub tcp_state: Option<u8>,
    pub mark: Option<u32>,
    /// `CTA_ZONE` / `CTA_EXPECT_ZONE` (absent: the default zone 0).
    pub zone: Option<u16>,
    /// `CTA_ID` / `CTA_EXPECT_ID`.
    pub id: Option<u32>,
    /// Seconds left (`CTA_TIMEOUT` / `CTA_EXPECT_TIMEOUT`).
    pub timeout: Option<u32>,
    /// The helper (`CTA_HELP_NAME` / `CTA_EXPECT_HELP_NAME`), e.g. `ftp`.
    pub helper: Option<String>,
    /// `CTA_EXPECT_FLAGS`.
    pub exp_flags: Option<u32>,
}

fn be16(v: &[u8], what: &str) -> Result<u16, String> {
    v.try_into()
        .map(u16::from_be_bytes)
        .map_err(|_| format!("{what}: {} bytes, want 2", v.len()))
}

fn be32(v: &[u8], what: &str) -> Result<u32, String> {
    v.try_into()
        .map(u32::from_be_bytes)
        .map_err(|_| format!("{what}: {} bytes, want 4", v.len()))
}

fn u8_of(v: &[u8], what: &str) -> Result<u8, String> {
    match v {
        [b] => Ok(*b),
        _ => Err(format!("{what}: {} bytes, want 1", v.len())),
    }
}

fn ipv4(v: &[u8], what: &str) -> Result<IpAddr, String> {
    let b: [u8; 4] = v
        .try_into()
        .map_err(|_| format!("{what}: {} bytes, want 4", v.len()))?;
    Ok(IpAddr::V4(Ipv4Addr::from(b)))
}

fn ipv6(v: &[u8], what: &str) -> Result<IpAddr, String> {
    let b: [u8; 16] = v
        .try_into()
        .map_err(|_| format!("{what}: {} bytes, want 16", v.len()))?;
    Ok(IpAddr::V6(Ipv6Addr::from(b)))
}

/// A NUL-terminated (or not) attribute string.
fn string(v: &[u8]) -> String {
    let end = v.iter().position(|c| *c == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

/// Calls `f(kind, value)` for each attribute in `b`; a malformed attribute is an error naming
/// `what`.
fn each_attr(
    b: &[u8],
    what: &str,
    mut f: impl FnMut(u16, &[u8]) -> Result<(), String>,
) -> Result<(), String> {
    for nla in NlasIterator::new(b) {
        let nla = nla.map_err(|e| format!("{what}: {e}"))?;
        f(nla.kind(), nla.value())?;
    }
    Ok(())
}

/// Parse a nested `CTA_TUPLE_*` (`what` names it in errors).
pub fn parse_tuple(b: &[u8], what: &str) -> Result<Tuple, String> {
    let mut t = Tuple::default();
    each_attr(b, what, |k, v| {
        match k {
            CTA_TUPLE_IP => each_attr(v, &format!("{what}.ip"), |k, v| {
                match k {
                    CTA_IP_V4_SRC => t.src = Some(ipv4(v, "CTA_IP_V4_SRC")?),
                    CTA_IP_V4_DST => t.dst = Some(ipv4(v, "CTA_IP_V4_DST")?),
                    CTA_IP_V6_SRC => t.src = Some(ipv6(v, "CTA_IP_V6_SRC")?),
                    CTA_IP_V6_DST => t.dst = Some(ipv6(v, "CTA_IP_V6_DST")?),
                    _ => {}
                }
                Ok(())
            })?,
            CTA_TUPLE_PROTO => each_attr(v, &format!("{what}.proto"), |k, v| {
                match k {
                    CTA_PROTO_NUM => t.proto = Some(u8_of(v, "CTA_PROTO_NUM")?),
                    CTA_PROTO_SRC_PORT => t.sport = Some(be16(v, "CTA_PROTO_SRC_PORT")?),
                    CTA_PROTO_DST_PORT => t.dport = Some(be16(v, "CTA_PROTO_DST_PORT")?),
                    CTA_PROTO_ICMP_ID | CTA_PROTO_ICMPV6_ID => {
                        t.icmp_id = Some(be16(v, "CTA_PROTO_ICMP_ID")?)
                    }
                    CTA_PROTO_ICMP_TYPE | CTA_PROTO_ICMPV6_TYPE => {
                        t.icmp_type = Some(u8_of(v, "CTA_PROTO_ICMP_TYPE")?)
                    }
                    CTA_PROTO_ICMP_CODE | CTA_PROTO_ICMPV6_CODE => {
                        t.icmp_code = Some(u8_of(v, "CTA_PROTO_ICMP_CODE")?)
                    }
                    _ => {}
                }
                Ok(())
            })?,
            CTA_TUPLE_ZONE => t.zone = Some(be16(v, "CTA_TUPLE_ZONE")?),
            _ => {}
        }
        Ok(())
    })?;
    Ok(t)
}

/// The event a netlink message announces: `Ok(None)` for a message that is not a conntrack or
/// expectation event (other nfnetlink traffic), `Err` naming the attribute for a malformed one.
/// `ty` and `flags` are the netlink header's, `payload` what follows it (`struct nfgenmsg`,
/// then the attributes).
pub fn parse_message(ty: u16, flags: u16, payload: &[u8]) -> Result<Option<CtEvent>, String> {
    let kind = match (ty >> 8, ty & 0xff) {
        (NFNL_SUBSYS_CTNETLINK, MSG_NEW) if flags & NLM_F_CREATE != 0 => CtKind::New,
        (NFNL_SUBSYS_CTNETLINK, MSG_NEW) => CtKind::Update,
        (NFNL_SUBSYS_CTNETLINK, MSG_DELETE) => CtKind::Destroy,
        (NFNL_SUBSYS_CTNETLINK_EXP, MSG_NEW) => CtKind::ExpNew,
        (NFNL_SUBSYS_CTNETLINK_EXP, MSG_DELETE) => CtKind::ExpDestroy,
        _ => return Ok(None),
    };
    let Some((&family, _)) = payload.split_first() else {
        return Err("no nfgenmsg header".into());
    };
    let attrs = payload
        .get(4..)
        .ok_or_else(|| format!("nfgenmsg: {} bytes, want 4", payload.len()))?;
    let mut ev = CtEvent {
        kind,
        family,
        orig: Tuple::default(),
        reply: Tuple::default(),
        master: None,
        status: None,
        tcp_state: None,
        mark: None,
        zone: None,
        id: None,
        timeout: None,
        helper: None,
        exp_flags: None,
    };
    let expectation = matches!(kind, CtKind::ExpNew | CtKind::ExpDestroy);
    each_attr(attrs, "message", |k, v| {
        if expectation {
            match k {
                CTA_EXPECT_MASTER => ev.master = Some(parse_tuple(v, "CTA_EXPECT_MASTER")?),
                CTA_EXPECT_TUPLE => ev.orig = parse_tuple(v, "CTA_EXPECT_TUPLE")?,
                CTA_EXPECT_TIMEOUT => ev.timeout = Some(be32(v, "CTA_EXPECT_TIMEOUT")?),
                CTA_EXPECT_ID => ev.id = Some(be32(v, "CTA_EXPECT_ID")?),
                CTA_EXPECT_HELP_NAME => ev.helper = Some(string(v)),
                CTA_EXPECT_ZONE => ev.zone = Some(be16(v, "CTA_EXPECT_ZONE")?),
                CTA_EXPECT_FLAGS => ev.exp_flags = Some(be32(v, "CTA_EXPECT_FLAGS")?),
                _ => {}
            }
            return Ok(());
        }
        match k {
            CTA_TUPLE_ORIG => ev.orig = parse_tuple(v, "CTA_TUPLE_ORIG")?,
            CTA_TUPLE_REPLY => ev.reply = parse_tuple(v, "CTA_TUPLE_REPLY")?,
            CTA_STATUS => ev.status = Some(be32(v, "CTA_STATUS")?),
            CTA_PROTOINFO => each_attr(v, "CTA_PROTOINFO", |k, v| {
                if k == CTA_PROTOINFO_TCP {
                    each_attr(v, "CTA_PROTOINFO_TCP", |k, v| {
                        if k == CTA_PROTOINFO_TCP_STATE {
                            ev.tcp_state = Some(u8_of(v, "CTA_PROTOINFO_TCP_STATE")?);
                        }
                        Ok(())
                    })?;
                }
                Ok(())
            })?,
            CTA_HELP => each_attr(v, "CTA_HELP", |k, v| {
                if k == CTA_HELP_NAME {
                    ev.helper = Some(string(v));
                }
                Ok(())
            })?,
            CTA_TIMEOUT => ev.timeout = Some(be32(v, "CTA_TIMEOUT")?),
            CTA_MARK => ev.mark = Some(be32(v, "CTA_MARK")?),
            CTA_ID => ev.id = Some(be32(v, "CTA_ID")?),
            CTA_ZONE => ev.zone = Some(be16(v, "CTA_ZONE")?),
            _ => {}
        }
        Ok(())
    })?;
    Ok(Some(ev))
}

/// The events in one received datagram, appended to `out`. Events before a malformed message
/// are kept; the error names the message's offset and the attribute.
pub fn parse_datagram(bytes: &[u8], out: &mut Vec<CtEvent>) -> Result<(), NlError> {
    walk_with_flags(bytes, None, &mut |ty, flags, p| {
        if let Some(ev) = parse_message(ty, flags, p)? {
            out.push(ev);
        }
        Ok(())
    })
    .map(|_| ())
}

/// conntrack's TCP state names (`enum tcp_conntrack`, as `conntrack -E` prints them).
pub fn tcp_state_name(s: u8) -> &'static str {
    match s {
        0 => "NONE",
        1 => "SYN_SENT",
        2 => "SYN_RECV",
        3 => "ESTABLISHED",
        4 => "FIN_WAIT",
        5 => "CLOSE_WAIT",
        6 => "LAST_ACK",
        7 => "TIME_WAIT",
        8 => "CLOSE",
        9 => "SYN_SENT2",
        _ => "UNKNOWN",
    }
}

/// `IPS_*` status bit names, lowest first.
const STATUS_BITS: [&str; 16] = [
    "EXPECTED",
    "SEEN_REPLY",
    "ASSURED",
    "CONFIRMED",
    "SRC_NAT",
    "DST_NAT",
    "SEQ_ADJUST",
    "SRC_NAT_DONE",
    "DST_NAT_DONE",
    "DYING",
    "FIXED_TIMEOUT",
    "TEMPLATE",
    "NAT_CLASH",
    "HELPER",
    "OFFLOAD",
    "HW_OFFLOAD",
];

/// `SEEN_REPLY|ASSURED|CONFIRMED` for a status word (unnamed bits as `BIT<n>`).
pub fn status_names(s: u32) -> String {
    let mut v: Vec<String> = Vec::new();
    for bit in 0..32 {
        if s & (1 << bit) != 0 {
            v.push(
                STATUS_BITS
                    .get(bit)
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| format!("BIT{bit}")),
            );
        }
    }
    v.join("|")
}

/// Push `prefix`-named fields of a tuple: `saddr`, `sport`, `daddr`, `dport` (or `icmp_id`,
/// `icmp_type`, `icmp_code`). `keys` are the static names for this prefix.
fn tuple_fields(ev: &mut Event, t: &Tuple, keys: &[&'static str; 7]) {
    if let Some(a) = t.src {
        ev.fields.push((keys[0], FieldValue::Addr(a)));
    }
    if let Some(p) = t.sport {
        ev.fields.push((keys[1], FieldValue::UInt(p.into())));
    }
    if let Some(a) = t.dst {
        ev.fields.push((keys[2], FieldValue::Addr(a)));
    }
    if let Some(p) = t.dport {
        ev.fields.push((keys[3], FieldValue::UInt(p.into())));
    }
    if let Some(v) = t.icmp_id {
        ev.fields.push((keys[4], FieldValue::UInt(v.into())));
    }
    if let Some(v) = t.icmp_type {
        ev.fields.push((keys[5], FieldValue::UInt(v.into())));
    }
    if let Some(v) = t.icmp_code {
        ev.fields.push((keys[6], FieldValue::UInt(v.into())));
    }
}

const ORIG_KEYS: [&str; 7] = [
    "saddr",
    "sport",
    "daddr",
    "dport",
    "icmp_id",
    "icmp_type",
    "icmp_code",
];
const REPLY_KEYS: [&str; 7] = [
    "reply_saddr",
    "reply_sport",
    "reply_daddr",
    "reply_dport",
    "reply_icmp_id",
    "reply_icmp_type",
    "reply_icmp_code",
];
const MASTER_KEYS: [&str; 7] = [
    "master_saddr",
    "master_sport",
    "master_daddr",
    "master_dport",
    "master_icmp_id",
    "master_icmp_type",
    "master_icmp_code",
];

/// The pipeline's event: `protocol`, the original tuple as `saddr sport daddr dport` (ICMP:
/// `icmp_id icmp_type icmp_code`), the reply tuple as `reply_*`, then `state` (TCP), `status`,
/// `replied`, `mark`, `zone`, `id`, `timeout`; expectations: the expected tuple, the master's
/// as `master_*`, `helper`, `zone`, `id`, `timeout`, `flags`.
pub fn to_event(c: &CtEvent, entity: impl Into<std::sync::Arc<EventEntity>>) -> Event {
    let mut ev = Event::new(c.kind.name(), entity);
    let proto = c.orig.proto.or(c.master.as_ref().and_then(|m| m.proto));
    if let Some(p) = proto {
        ev.fields.push((
            "protocol",
            FieldValue::Str(crate::probes::protocol_name(u16::from(c.family), p)),
        ));
    }
    tuple_fields(&mut ev, &c.orig, &ORIG_KEYS);
    tuple_fields(&mut ev, &c.reply, &REPLY_KEYS);
    if let Some(m) = &c.master {
        tuple_fields(&mut ev, m, &MASTER_KEYS);
    }
    if let Some(s) = c.tcp_state {
        ev.fields
            .push(("state", FieldValue::Str(tcp_state_name(s).into())));
    }
    if let Some(s) = c.status {
        ev.fields
            .push(("status", FieldValue::Str(status_names(s).into())));
        let replied = if s & 2 != 0 { "true" } else { "false" };
        ev.fields.push(("replied", FieldValue::Str(replied.into())));
    }
    if let Some(h) = &c.helper {
        ev.fields
            .push(("helper", FieldValue::Str(h.clone().into())));
    }
    let expectation = matches!(c.kind, CtKind::ExpNew | CtKind::ExpDestroy);
    if !expectation {
        ev.fields
            .push(("mark", FieldValue::UInt(c.mark.unwrap_or(0).into())));
    }
    ev.fields
        .push(("zone", FieldValue::UInt(c.zone.unwrap_or(0).into())));
    if let Some(v) = c.id {
        ev.fields.push(("id", FieldValue::UInt(v.into())));
    }
    if let Some(v) = c.timeout {
        ev.fields.push(("timeout", FieldValue::UInt(v.into())));
    }
    if let Some(v) = c.exp_flags {
        ev.fields.push(("flags", FieldValue::UInt(v.into())));
    }
    ev
}

#[cfg(test)]
mod tests;
