//! `tcpretrans`: retransmitted TCP segments, from `tcp:tcp_retransmit_skb` (successful ones,
//! by segment count, as the kernel counts `Tcp RetransSegs`) and `tcp:tcp_retransmit_synack`.
//! Arguments are read typed (tp_btf/raw_tp) and the tuple from the socket via CO-RE.
//!
//! Metric: `netsleuth_tcpretrans_total{<entity>}` (bounded hash: 1024 namespaces). Event
//! `TCPRETRANS` with tuple, `state`, `kind` (`data` or `synack`) and optional stack.
#![forbid(unsafe_code)]

use std::sync::Arc;

use super::registry::EbpfProbe;
use super::{sum_u64_map, tcp_state, Alternative, DecodeCtx, ProbeKind, RawEvent, RunningProbe};
use crate::events::{Event, EventEntity, FieldValue};
use crate::model::{Families, MetricKind, Sink, Value};

pub const EVENT: &str = "TCPRETRANS";

/// tcp:tcp_retransmit_skb, else __tcp_retransmit_skb's return; tcp:tcp_retransmit_synack, else
/// tcp_rtx_synack's return (both tracepoints fire on success only).
pub const PLAN: &[&[Alternative]] = &[
    &[
        ("tp_btf", &["retransmit_btf"]),
        // Before 6.13: no err argument.
        ("tp_btf", &["retransmit_noerr_btf"]),
        ("raw_tp", &["retransmit_raw"]),
        ("raw_tp", &["retransmit_noerr_raw"]),
        ("fexit", &["retransmit_fexit"]),
        ("kprobe", &["retransmit_kprobe", "retransmit_kretprobe"]),
    ],
    &[
        ("tp_btf", &["retransmit_synack_btf"]),
        ("raw_tp", &["retransmit_synack_raw"]),
        ("fexit", &["retransmit_synack_fexit"]),
        (
            "kprobe",
            &["retransmit_synack_kprobe", "retransmit_synack_kretprobe"],
        ),
    ],
];

pub fn collect(
    p: &RunningProbe,
    prefix: &mut dyn FnMut(u64) -> String,
    out: &mut Families,
) -> Result<(), String> {
    let sums = sum_u64_map(&p.loaded, "retrans", |k| {
        Some(u64::from(super::layout::netns_key::NETNS.u32(k)?))
    })?;
    for (inode, n) in sums {
        let pre = prefix(inode);
        out.sink(&pre).emit(
            "netsleuth_tcpretrans_total",
            "TCP segments retransmitted (as Tcp RetransSegs counts them), SYN-ACKs included.",
            MetricKind::Counter,
            &[],
            Value::U64(n),
        );
    }
    Ok(())
}

pub fn decode(_ctx: &DecodeCtx<'_>, r: &RawEvent, entity: Arc<EventEntity>) -> Option<Event> {
    let mut ev = Event::new(EVENT, entity);
    r.tuple_fields(&mut ev);
    ev.fields
        .push(("state", FieldValue::Str(tcp_state(r.state).into())));
    ev.fields.push((
        "kind",
        FieldValue::Str(if r.kind == 2 { "synack" } else { "data" }.into()),
    ));
    Some(ev)
}

/// The `tcpretrans` probe's descriptor.
pub static PROBE: EbpfProbe = EbpfProbe {
    kind: ProbeKind::TcpRetrans,
    name: "tcpretrans",
    description: "TCP retransmitted segments (tcp:tcp_retransmit_skb, tcp:tcp_retransmit_synack)",
    plan: PLAN,
    netns_maps: &["retrans"],
    event_types: &[(1, EVENT), (2, EVENT)],
    collect: |p, cx| collect(p, cx.prefix, cx.out),
    decode: Some(decode),
    ..EbpfProbe::DEFAULT
};
