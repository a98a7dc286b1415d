//! `virtcmdlatency`: how long virtio-net control commands take (`virtnet_send_command` in the
//! `virtio_net` module, `virtnet_send_command_reply` since 6.11: the guest waits for the host's answer). There is no tracepoint, so it
//! needs fentry/fexit (BTF of the module) or kprobe/kretprobe; on a kernel where neither works
//! (kprobes compiled out, fentry refused) the probe reports that it cannot run, in
//! `netsleuth probes` and the log, and the other probes run on.
//!
//! Metric: `netsleuth_virtcmdlatency_seconds` (node-level). Event `VIRTCMD_SLOW` at or above
//! `threshold` (default 100ms) with `latency`.
#![forbid(unsafe_code)]

use std::sync::Arc;

use super::registry::EbpfProbe;
use super::{
    Alternative, DecodeCtx, Log2Hist, ProbeKind, RawEvent, RunningProbe, DEFAULT_THRESHOLD_NS,
};
use crate::events::{Event, EventEntity};
use crate::model::Families;

pub const EVENT: &str = "VIRTCMD_SLOW";

/// `virtnet_send_command_reply` (6.11+, where `virtnet_send_command` is an inline wrapper), else
/// `virtnet_send_command`.
pub const PLAN: &[&[Alternative]] = &[
    &[
        ("fentry", &["entry_reply_fentry"]),
        ("fentry", &["entry_fentry"]),
        ("kprobe", &["entry_reply_kprobe"]),
        ("kprobe", &["entry_kprobe"]),
    ],
    &[
        ("fexit", &["exit_reply_fexit"]),
        ("fexit", &["exit_fexit"]),
        ("kretprobe", &["exit_reply_kretprobe"]),
        ("kretprobe", &["exit_kretprobe"]),
    ],
];

pub fn collect(p: &RunningProbe, out: &mut Families) -> Result<(), String> {
    let m = p.loaded.map("lat").map_err(|e| e.to_string())?;
    let mut h = Log2Hist::default();
    for cpu in m
        .lookup_percpu(&0u32.to_ne_bytes())
        .map_err(|e| format!("read map lat: {e}"))?
        .unwrap_or_default()
    {
        h.add_raw(&cpu);
    }
    out.sink("").emit_histogram(
        "netsleuth_virtcmdlatency_seconds",
        "Time virtio-net control commands took (virtnet_send_command).",
        &[],
        &h.to_prometheus(),
    );
    Ok(())
}

pub fn decode(_ctx: &DecodeCtx<'_>, r: &RawEvent, entity: Arc<EventEntity>) -> Option<Event> {
    let mut ev = Event::new(EVENT, entity);
    ev.fields.push(r.latency().field());
    Some(ev)
}

/// The `virtcmdlatency` probe's descriptor.
pub static PROBE: EbpfProbe = EbpfProbe {
    kind: ProbeKind::VirtCmdLatency,
    name: "virtcmdlatency",
    description:
        "virtio-net control command latency (virtnet_send_command; fentry/fexit or kprobes only)",
    plan: PLAN,
    event_types: &[(1, EVENT)],
    default_threshold_ns: Some(DEFAULT_THRESHOLD_NS),
    collect: |p, cx| collect(p, cx.out),
    decode: Some(decode),
    ..EbpfProbe::DEFAULT
};
