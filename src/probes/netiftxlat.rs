//! `netiftxlat`: transmit latency at the device layer, per namespace and device.
//!
//! `net:net_dev_queue` (the skb enters `__dev_queue_xmit`) → `net:net_dev_start_xmit` (the
//! qdisc, or the direct path of a `noqueue` device, hands it to the driver) is the **qdisc**
//! stage; `net:net_dev_start_xmit` → `net:net_dev_xmit` (the driver's `ndo_start_xmit`
//! returned) is the **device** stage. The device stage, and the qdisc stage of a device whose
//! root qdisc is `noqueue` (veth, lo, bridges, vlans: `__dev_queue_xmit` calls the driver
//! directly), run synchronously on one CPU with bottom halves disabled, so their timestamps
//! live on a small per-CPU stack (a stacked device transmitting through its lower one nests a
//! frame; frames match by skb and device). Only packets on a real qdisc (also `mq`'s children),
//! which may leave it later on another CPU, are stamped in an LRU hash keyed by skb address
//! (16384 entries; deleted at `net_dev_start_xmit` or at `skb:kfree_skb`). Packets the qdisc
//! drops never reach the second tracepoint and are not observed; GSO segments split after the
//! qdisc are observed in the device stage only.
//!
//! Metrics (log2 buckets from ~1 µs, bounded hash of 4096 (netns, device), each holding both
//! stages' histograms, observed together at `net_dev_xmit` with one lookup):
//! `netsleuth_netiftxlat_qdisc_seconds{<entity>, device}` and
//! `netsleuth_netiftxlat_device_seconds{<entity>, device}`. Events `NETIFTXLAT_QDISC` and
//! `NETIFTXLAT_DEVICE` at or above `threshold` (default 100ms) with `latency` (seconds), `ifindex` and
//! (qdisc stage) the packet's tuple.
#![forbid(unsafe_code)]

use std::sync::Arc;

use super::registry::EbpfProbe;
use std::collections::BTreeMap;

use super::{
    c_str, Alternative, DecodeCtx, Log2Hist, ProbeKind, RawEvent, RunningProbe,
    DEFAULT_THRESHOLD_NS,
};
use crate::events::{Event, EventEntity, FieldValue};
use crate::model::Families;

pub const QDISC: &str = "NETIFTXLAT_QDISC";
pub const DEVICE: &str = "NETIFTXLAT_DEVICE";

/// net:net_dev_queue, else __dev_queue_xmit; net:net_dev_start_xmit, else dev_hard_start_xmit
/// (entry); net:net_dev_xmit, else dev_hard_start_xmit's return; skb:kfree_skb, else the drop
/// functions (see packetloss).
pub const PLAN: &[&[Alternative]] = &[
    &[
        ("tp_btf", &["queue_btf"]),
        ("raw_tp", &["queue_raw"]),
        ("fentry", &["queue_fentry"]),
        ("kprobe", &["queue_kprobe"]),
    ],
    &[
        ("tp_btf", &["start_btf"]),
        ("raw_tp", &["start_raw"]),
        ("fentry", &["start_fentry"]),
        ("kprobe", &["start_kprobe"]),
    ],
    &[
        ("tp_btf", &["xmit_btf"]),
        ("raw_tp", &["xmit_raw"]),
        ("fexit", &["xmit_fexit"]),
        ("kprobe", &["xmit_kprobe", "xmit_kretprobe"]),
    ],
    super::plan::skb_free_point!("drop"),
];

pub fn collect(
    p: &RunningProbe,
    prefix: &mut dyn FnMut(u64) -> String,
    out: &mut Families,
) -> Result<(), String> {
    // One entry per device: its qdisc and device stages' histograms side by side.
    let m = p.loaded.map("lat").map_err(|e| e.to_string())?;
    let mut hists: BTreeMap<(u64, u32, String), Log2Hist> = BTreeMap::new();
    for (k, v) in m.entries().map_err(|e| format!("read map lat: {e}"))? {
        use super::layout::{txlat_key as f, txlat_pair as pair};
        let (Some(netns), Some(dev)) = (f::NETNS.u32(&k), f::DEV.bytes(&k)) else {
            continue;
        };
        let dev = c_str(dev);
        for stage in 0..2u32 {
            let at = pair::STAGE.offset + stage as usize * pair::HIST;
            let Some(raw) = v.get(at..at + pair::HIST) else {
                continue;
            };
            let mut h = Log2Hist::default();
            h.add_raw(raw);
            // A stage no packet went through yet has no series (as before the pairing).
            if h.count() > 0 {
                hists
                    .entry((u64::from(netns), stage, dev.clone()))
                    .or_default()
                    .add(&h);
            }
        }
    }
    for ((inode, stage, dev), h) in hists {
        let pre = prefix(inode);
        let (name, help) = if stage == 0 {
            (
                "netsleuth_netiftxlat_qdisc_seconds",
                "Time packets spent between net_dev_queue and the driver (qdisc), per device.",
            )
        } else {
            (
                "netsleuth_netiftxlat_device_seconds",
                "Time the driver's transmit took (net_dev_start_xmit to net_dev_xmit), per device.",
            )
        };
        out.sink(&pre)
            .emit_histogram(name, help, &[("device", &dev)], &h.to_prometheus());
    }
    Ok(())
}

pub fn decode(_ctx: &DecodeCtx<'_>, r: &RawEvent, entity: Arc<EventEntity>) -> Option<Event> {
    let mut ev = super::event::stage_latency_event(r, entity, [QDISC, DEVICE]);
    ev.fields
        .push(("ifindex", FieldValue::UInt(u64::from(r.tx().ifindex))));
    Some(ev)
}

/// The `netiftxlat` probe's descriptor.
pub static PROBE: EbpfProbe = EbpfProbe {
    kind: ProbeKind::NetifTxLat,
    name: "netiftxlat",
    description: "transmit latency in the qdisc and the driver (net:net_dev_queue/start_xmit/xmit)",
    plan: PLAN,
    netns_maps: &["lat"],
    event_types: &[(1, QDISC), (2, DEVICE)],
    default_threshold_ns: Some(DEFAULT_THRESHOLD_NS),
    collect: |p, cx| collect(p, cx.prefix, cx.out),
    decode: Some(decode),
    ..EbpfProbe::DEFAULT
};
