//! `kernellatency`: how long a received packet spends in the kernel, per namespace of the
//! receiving device. Starts at `net:netif_receive_skb` (the stack takes the skb from the driver,
//! GRO or a veth peer) and ends at
//! - **rx**: `tcp:tcp_probe`, the segment reaching an established TCP socket (the same skb
//!   object; UDP has no per-skb delivery tracepoint, so only TCP is observed), or
//! - **forward**: `net:net_dev_queue` on a device of the same namespace (routed or bridged
//!   traffic, e.g. the host between two pods; a veth crossing starts a new receive).
//!
//! In-flight timestamps live in a direct-mapped array (16384 slots indexed by a hash of the skb
//! address, each holding the skb it belongs to: array loads and stores instead of LRU-hash
//! updates for every received and every freed packet) and are cleared when the skb is freed
//! (`skb:consume_skb`, `skb:kfree_skb`), so a reused address never inherits an old timestamp.
//! Two packets in flight in the same slot: the later one is timed, the earlier one not.
//! - **tx** (optional: only where fentry or kprobes work, reported unavailable elsewhere, the
//!   probe then runs without it): a TCP segment from the socket handing it to IP
//!   (`ip_queue_xmit`/`inet6_csk_xmit`, no tracepoint there) to `net:net_dev_queue`, per namespace of
//!   the socket; metrics only. The device part is `netiftxlat`'s.
//!
//! Metrics: `netsleuth_kernellatency_rx_seconds{<entity>}`,
//! `netsleuth_kernellatency_forward_seconds{<entity>}` and (tx)
//! `netsleuth_kernellatency_tx_seconds{<entity>}`. Events `KERNELLAT_RX` /
//! `KERNELLAT_FORWARD` at or above `threshold` (default 100ms) with `latency` and the tuple.
#![forbid(unsafe_code)]

use std::sync::Arc;

use super::registry::EbpfProbe;
use super::{
    Alternative, DecodeCtx, OptionalGroup, ProbeKind, RawEvent, RunningProbe, DEFAULT_THRESHOLD_NS,
};
use crate::events::{Event, EventEntity};
use crate::model::Families;

pub const RX: &str = "KERNELLAT_RX";
pub const FORWARD: &str = "KERNELLAT_FORWARD";

/// net:netif_receive_skb, else ip_rcv_core + ip6_rcv_core; tcp:tcp_probe, else
/// tcp_rcv_established; net:net_dev_queue, else __dev_queue_xmit; skb:consume_skb, else
/// consume_skb; skb:kfree_skb, else the drop functions (see packetloss).
pub const PLAN: &[&[Alternative]] = &[
    &[
        ("tp_btf", &["receive_btf"]),
        ("raw_tp", &["receive_raw"]),
        ("fentry", &["receive_fentry", "receive6_fentry"]),
        ("kprobe", &["receive_kprobe", "receive6_kprobe"]),
    ],
    &[
        ("tp_btf", &["tcp_btf"]),
        ("raw_tp", &["tcp_raw"]),
        ("fentry", &["tcp_fentry"]),
        ("kprobe", &["tcp_kprobe"]),
    ],
    &[
        ("tp_btf", &["queue_btf"]),
        ("raw_tp", &["queue_raw"]),
        ("fentry", &["queue_fentry"]),
        ("kprobe", &["queue_kprobe"]),
    ],
    &[
        ("tp_btf", &["consume_btf"]),
        ("raw_tp", &["consume_raw"]),
        ("fentry", &["consume_fentry"]),
        ("kprobe", &["consume_kprobe"]),
    ],
    super::plan::skb_free_point!("kfree"),
];

/// The optional tx side: ip_queue_xmit + inet6_csk_xmit (fentry, else kprobe) to net:net_dev_queue
/// (else __dev_queue_xmit).
pub const OPTIONAL: &[OptionalGroup] = &[(
    "tx",
    &[
        &[
            ("fentry", &["tx_start_fentry", "tx_start6_fentry"]),
            ("kprobe", &["tx_start_kprobe", "tx_start6_kprobe"]),
        ],
        &[
            ("tp_btf", &["tx_end_btf"]),
            ("raw_tp", &["tx_end_raw"]),
            ("fentry", &["tx_end_fentry"]),
            ("kprobe", &["tx_end_kprobe"]),
        ],
    ],
)];

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
            ("netsleuth_kernellatency_rx_seconds", "Time a received TCP segment spent in the stack (net:netif_receive_skb to tcp:tcp_probe)."),
            ("netsleuth_kernellatency_forward_seconds", "Time a forwarded packet spent in the namespace's stack (net:netif_receive_skb to net:net_dev_queue)."),
        ],
    )?;
    // The optional tx side (its map stays empty where it is not attached).
    let tx = super::read_hist_map(&p.loaded, "lat_tx", |k| {
        Some(u64::from(super::layout::netns_key::NETNS.u32(k)?))
    })?;
    for (inode, h) in tx {
        out.sink(&prefix(inode)).emit_histogram(
            "netsleuth_kernellatency_tx_seconds",
            "Time a TCP segment spent in the stack from the socket to the device layer (ip_queue_xmit/inet6_csk_xmit to net:net_dev_queue; where fentry or kprobes work).",
            &[],
            &h.to_prometheus(),
        );
    }
    Ok(())
}

pub fn decode(_ctx: &DecodeCtx<'_>, r: &RawEvent, entity: Arc<EventEntity>) -> Option<Event> {
    Some(super::event::stage_latency_event(r, entity, [RX, FORWARD]))
}

/// The `kernellatency` probe's descriptor.
pub static PROBE: EbpfProbe = EbpfProbe {
    kind: ProbeKind::KernelLatency,
    name: "kernellatency",
    description: "received packets' time in the stack: to a TCP socket (net:netif_receive_skb to tcp:tcp_probe) or forwarded (to net:net_dev_queue)",
    plan: PLAN,
    optional: OPTIONAL,
    netns_maps: &["lat", "lat_tx"],
    event_types: &[(1, RX), (2, FORWARD)],
    default_threshold_ns: Some(DEFAULT_THRESHOLD_NS),
    collect: |p, cx| collect(p, cx.prefix, cx.out),
    decode: Some(decode),
    ..EbpfProbe::DEFAULT
};
