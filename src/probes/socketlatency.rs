//! `socketlatency`: how long data waits at IPv4/IPv6 sockets, per namespace of the socket.
//!
//! - **read**: `sock:sk_data_ready` (the kernel tells the socket data arrived) →
//!   `sock:sock_recv_length` (the application's `recvmsg` returned data, `MSG_PEEK` excluded).
//!   The first announcement since the last read is kept, so a slow reader's wait is measured
//!   from the oldest unread data: in a direct-mapped array (16384 slots by a hash of the socket
//!   address), else, while another socket holds that slot, in an LRU hash keyed by socket
//!   (16384 entries) that is searched only while it may hold entries.
//! - **send** (TCP): `sock:sock_send_length` returning with data the stack could not send yet
//!   (`write_seq != snd_nxt`: congestion or receive window, Nagle, pacing) → the
//!   `net:net_dev_start_xmit` of the segment carrying that write's last byte (the packet's TCP
//!   sequence number plus payload reaches the `write_seq` seen at the write's end). Writes sent
//!   within the call (every UDP write, most TCP ones) waited for nothing and are not observed;
//!   while one write is pending, later ones on that socket are not sampled. Packets are matched
//!   against pending writes only while there are any (a count kept beside the map). `sendmsg` has no
//!   tracepoint at its start other than syscalls, which would attribute by task, not socket.
//!
//! Metrics: `netsleuth_socketlatency_read_seconds{<entity>}` and
//! `netsleuth_socketlatency_send_seconds{<entity>}` (bounded hash: 1024 namespaces).
//! Events `SOCKETLAT_READSLOW` / `SOCKETLAT_SENDSLOW` at or above `threshold` (default 100ms)
//! with `latency` (seconds) and the socket's tuple (local side first).
#![forbid(unsafe_code)]

use std::sync::Arc;

use super::registry::EbpfProbe;
use super::{Alternative, DecodeCtx, ProbeKind, RawEvent, RunningProbe, DEFAULT_THRESHOLD_NS};
use crate::events::{Event, EventEntity};
use crate::model::Families;

pub const READSLOW: &str = "SOCKETLAT_READSLOW";
pub const SENDSLOW: &str = "SOCKETLAT_SENDSLOW";

/// sock:sk_data_ready, else sock_def_readable; sock:sock_recv_length, else the return of
/// inet_recvmsg + inet6_recvmsg; sock:sock_send_length, else tcp_sendmsg's return (these three
/// tracepoints are 6.6+: before, the fallbacks make the probe); net:net_dev_start_xmit, else
/// dev_hard_start_xmit.
pub const PLAN: &[&[Alternative]] = &[
    &[
        ("tp_btf", &["ready_btf"]),
        ("raw_tp", &["ready_raw"]),
        ("fentry", &["ready_fentry"]),
        ("kprobe", &["ready_kprobe"]),
    ],
    &[
        ("tp_btf", &["recv_btf"]),
        ("raw_tp", &["recv_raw"]),
        ("fexit", &["recv_fexit", "recv6_fexit"]),
        (
            "kprobe",
            &[
                "recv_kprobe",
                "recv_kretprobe",
                "recv6_kprobe",
                "recv6_kretprobe",
            ],
        ),
    ],
    &[
        ("tp_btf", &["send_btf"]),
        ("raw_tp", &["send_raw"]),
        ("fexit", &["send_fexit"]),
        ("kprobe", &["send_kprobe", "send_kretprobe"]),
    ],
    &[
        ("tp_btf", &["xmit_btf"]),
        ("raw_tp", &["xmit_raw"]),
        ("fentry", &["xmit_fentry"]),
        ("kprobe", &["xmit_kprobe"]),
    ],
];

pub fn collect(
    p: &RunningProbe,
    prefix: &mut dyn FnMut(u64) -> String,
    out: &mut Families,
) -> Result<(), String> {
    super::collect_stage_histograms(
        p,
        prefix,
        out,
        [
            ("netsleuth_socketlatency_read_seconds", "Time data waited at a socket for the application to read it (sock:sk_data_ready to sock_recv_length)."),
            ("netsleuth_socketlatency_send_seconds", "Time data a TCP write left unsent waited for transmission (sock:sock_send_length to net:net_dev_start_xmit)."),
        ],
    )
}

pub fn decode(_ctx: &DecodeCtx<'_>, r: &RawEvent, entity: Arc<EventEntity>) -> Option<Event> {
    Some(super::event::stage_latency_event(
        r,
        entity,
        [READSLOW, SENDSLOW],
    ))
}

/// The `socketlatency` probe's descriptor.
pub static PROBE: EbpfProbe = EbpfProbe {
    kind: ProbeKind::SocketLatency,
    name: "socketlatency",
    description: "socket read delay (sock:sk_data_ready to sock_recv_length) and TCP send delay (sock:sock_send_length to net:net_dev_start_xmit)",
    plan: PLAN,
    netns_maps: &["lat"],
    event_types: &[(1, READSLOW), (2, SENDSLOW)],
    default_threshold_ns: Some(DEFAULT_THRESHOLD_NS),
    collect: |p, cx| collect(p, cx.prefix, cx.out),
    decode: Some(decode),
    ..EbpfProbe::DEFAULT
};
