//! `tcpreset`: TCP resets, from `tcp:tcp_send_reset` and `tcp:tcp_receive_reset`.
//!
//! Types (decided in the kernel from the tracepoint's arguments):
//! - `TCPRESET_NOSOCK`: RST sent because the segment matched no socket (closed port); the
//!   namespace is the one whose device received the segment (it sends the RST) and the tuple
//!   is the RST's: `saddr/sport` = the closed side.
//! - `TCPRESET_PROCESS`: RST sent in answer to a segment on an existing socket.
//! - `TCPRESET_ACTIVE`: RST sent by the local side aborting a connection (no segment).
//! - `TCPRESET_RECEIVE`: RST received on a socket.
//!
//! Metric: `netsleuth_tcpreset_total{<entity>, type}` with type `NOSOCK`, `PROCESS`,
//! `ACTIVE`, `RECEIVE` (bounded hash: 4096 (netns, type) keys).
#![forbid(unsafe_code)]

use std::sync::Arc;

use super::registry::EbpfProbe;
use super::{sum_u64_map, tcp_state, Alternative, DecodeCtx, ProbeKind, RawEvent, RunningProbe};
use crate::events::{Event, EventEntity, FieldValue};
use crate::model::{Families, MetricKind, Sink, Value};

pub const NOSOCK: &str = "TCPRESET_NOSOCK";
pub const PROCESS: &str = "TCPRESET_PROCESS";
pub const ACTIVE: &str = "TCPRESET_ACTIVE";
pub const RECEIVE: &str = "TCPRESET_RECEIVE";

/// tcp:tcp_send_reset, else tcp_v4_send_reset + tcp_v6_send_reset + tcp_send_active_reset;
/// tcp:tcp_receive_reset, else tcp_reset.
///
/// Before 6.10 (no `reason` argument) tcp_send_reset fires only for resets sent with a socket:
/// the no-socket (NOSOCK) ones, e.g. for a closed port, are missing (seen on Debian 5.10 and
/// 6.1 by the kernel matrix). There the function fallbacks, which see every reset, come first,
/// and that tracepoint is only the last resort (NOSOCK then stays 0).
pub const PLAN: &[&[Alternative]] = &[
    &[
        ("tp_btf", &["send_reset_btf"]),
        ("raw_tp", &["send_reset_raw"]),
        (
            "fentry",
            &[
                "send_reset_v4_fentry",
                "send_reset_v6_fentry",
                "send_active_reset_fentry",
            ],
        ),
        (
            "kprobe",
            &[
                "send_reset_v4_kprobe",
                "send_reset_v6_kprobe",
                "send_active_reset_kprobe",
            ],
        ),
        // Before 6.10, without fentry or kprobes: incomplete (no NOSOCK).
        ("tp_btf", &["send_reset_noreason_btf"]),
        ("raw_tp", &["send_reset_noreason_raw"]),
    ],
    &[
        ("tp_btf", &["receive_reset_btf"]),
        ("raw_tp", &["receive_reset_raw"]),
        ("fentry", &["receive_reset_fentry"]),
        ("kprobe", &["receive_reset_kprobe"]),
    ],
];

/// Kernel type number → (event type, metric label).
pub fn type_of(t: u8) -> Option<(&'static str, &'static str)> {
    Some(match t {
        1 => (NOSOCK, "NOSOCK"),
        2 => (PROCESS, "PROCESS"),
        3 => (ACTIVE, "ACTIVE"),
        4 => (RECEIVE, "RECEIVE"),
        _ => return None,
    })
}

pub fn collect(
    p: &RunningProbe,
    prefix: &mut dyn FnMut(u64) -> String,
    out: &mut Families,
) -> Result<(), String> {
    let sums = sum_u64_map(&p.loaded, "resets", |k| {
        use super::layout::rst_key as f;
        let (netns, t) = (f::NETNS.u32(k)?, f::TYPE.u32(k)?);
        Some((u64::from(netns), type_of(t as u8)?.1))
    })?;
    for ((inode, t), n) in sums {
        let pre = prefix(inode);
        out.sink(&pre).emit(
            "netsleuth_tcpreset_total",
            "TCP resets by type: NOSOCK (sent, no socket matched), PROCESS (sent in answer to a segment on a socket), ACTIVE (sent aborting a connection), RECEIVE (received).",
            MetricKind::Counter,
            &[("type", t)],
            Value::U64(n),
        );
    }
    Ok(())
}

pub fn decode(_ctx: &DecodeCtx<'_>, r: &RawEvent, entity: Arc<EventEntity>) -> Option<Event> {
    let (kind, _) = type_of(r.kind)?;
    let mut ev = Event::new(kind, entity);
    r.tuple_fields(&mut ev);
    if r.state != 0 {
        ev.fields
            .push(("state", FieldValue::Str(tcp_state(r.state).into())));
    }
    Some(ev)
}

/// The `tcpreset` probe's descriptor.
pub static PROBE: EbpfProbe = EbpfProbe {
    kind: ProbeKind::TcpReset,
    name: "tcpreset",
    description:
        "TCP resets sent and received, by type (tcp:tcp_send_reset, tcp:tcp_receive_reset)",
    plan: PLAN,
    netns_maps: &["resets"],
    event_types: &[(1, NOSOCK), (2, PROCESS), (3, ACTIVE), (4, RECEIVE)],
    collect: |p, cx| collect(p, cx.prefix, cx.out),
    decode: Some(decode),
    ..EbpfProbe::DEFAULT
};
