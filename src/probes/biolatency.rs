//! `biolatency`: block I/O request latency, from `block:block_rq_issue` (the driver is handed
//! the request) to `block:block_rq_complete` (the request is done); fallbacks on the functions
//! those sit in (`blk_mq_start_request`, `blk_update_request`).
//!
//! The completion runs in irq context, so the issuing task's pid, comm and network namespace
//! are taken in the kernel at issue time and kept with the timestamp in a bounded hash keyed
//! by the request pointer (16384 in flight; a full map is counted in
//! `netsleuth_bpf_map_full_total{probe="biolatency"}` and that request is not measured). The
//! issuing task is the one that dispatched the request: the submitting process for direct
//! dispatch (no I/O scheduler, or a plug flushed by the submitter), a kworker when the queue is
//! run asynchronously (its namespace is the host's).
//!
//! Metric: `netsleuth_biolatency_seconds{device, operation}` (node level: a device serves every
//! namespace; bounded hash: 1024 (device, operation) keys). Event `BIOLAT_10MS` (KubeSkoop's
//! name) at or above `threshold` (default 10ms) with `device` (the kernel's name, e.g.
//! `loop0`, `vda`), `dev` (`major:minor`), `operation` (`read`, `write`, `flush`, `discard`,
//! ...: the kernel's `REQ_OP_*` names), `bytes`, `latency` (seconds), `pid` and `comm` of the
//! issuing task, attributed to the issuing task's namespace (its pod).
#![forbid(unsafe_code)]

use std::sync::Arc;

use std::collections::BTreeMap;

use super::registry::{EbpfProbe, Setup};
use super::{read_hist_map, Alternative, DecodeCtx, ProbeKind, RawEvent, RunningProbe};
use crate::bpf::btf::{Btf, Kind};
use crate::events::{Event, EventEntity, FieldValue};
use crate::model::Families;

pub const EVENT: &str = "BIOLAT_10MS";

/// KubeSkoop's 10 ms (the event's name says it).
pub const DEFAULT_THRESHOLD_NS: u64 = 10_000_000;

/// block:block_rq_issue, else blk_mq_start_request; block:block_rq_complete, else
/// blk_update_request. Older kernels' block_rq_issue had a request_queue argument first (the
/// kernel matrix's Debian 5.10 already has the one-argument form): those programs come first,
/// and kernels with one argument refuse them (tp_btf at load, raw_tp at attach).
pub const PLAN: &[&[Alternative]] = &[
    &[
        ("tp_btf", &["issue_q_btf"]),
        ("tp_btf", &["issue_btf"]),
        ("raw_tp", &["issue_q_raw"]),
        ("raw_tp", &["issue_raw"]),
        ("fentry", &["issue_fentry"]),
        ("kprobe", &["issue_kprobe"]),
    ],
    &[
        ("tp_btf", &["complete_btf"]),
        ("raw_tp", &["complete_raw"]),
        ("fentry", &["complete_fentry"]),
        ("kprobe", &["complete_kprobe"]),
    ],
];

/// `REQ_OP_*` values of 6.x (include/linux/blk_types.h), used where the kernel's BTF has no
/// `enum req_op` (6.0+) or `enum req_opf` (before): only the values stable since 5.10.
const FALLBACK_OPS: &[(u64, &str)] = &[
    (0, "read"),
    (1, "write"),
    (2, "flush"),
    (3, "discard"),
    (5, "secure_erase"),
    (9, "write_zeroes"),
];

/// REQ_OP value → lower-case name (`REQ_OP_WRITE_ZEROES` → `write_zeroes`), from the kernel's
/// BTF (the zoned operations' values changed between 5.10 and 6.x).
pub fn op_names(btf: &Btf) -> BTreeMap<u64, String> {
    let mut out = BTreeMap::new();
    for name in ["req_op", "req_opf"] {
        let Some(id) = btf.find_by_name_kind(name, Kind::Enum) else {
            continue;
        };
        if let Ok(t) = btf.type_by_id(id) {
            for v in t.enum_values() {
                if let Ok(n) = btf.name(v.name_off) {
                    if let Some(op) = n.strip_prefix("REQ_OP_") {
                        if op != "LAST" {
                            out.insert(v.value, op.to_ascii_lowercase());
                        }
                    }
                }
            }
        }
        if !out.is_empty() {
            return out;
        }
    }
    FALLBACK_OPS
        .iter()
        .map(|(v, n)| (*v, n.to_string()))
        .collect()
}

fn op_name(p: &RunningProbe, op: u32) -> String {
    match p.reasons.get(&u64::from(op)) {
        Some(n) => n.clone(),
        None => FALLBACK_OPS
            .iter()
            .find(|(v, _)| *v == u64::from(op))
            .map(|(_, n)| n.to_string())
            .unwrap_or_else(|| format!("op{op}")),
    }
}

/// The kernel's dev_t (`major << 20 | minor`) → (major, minor).
pub fn split_dev(dev: u32) -> (u32, u32) {
    (dev >> 20, dev & 0xf_ffff)
}

/// The block device's kernel name (`/sys/dev/block/M:m` links to `.../block/<name>`), or
/// `M:m` when the device is gone.
pub fn device_name(dev: u32) -> String {
    let (ma, mi) = split_dev(dev);
    let link = format!("/sys/dev/block/{ma}:{mi}");
    std::fs::read_link(&link)
        .ok()
        .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| format!("{ma}:{mi}"))
}

pub fn collect(p: &RunningProbe, out: &mut Families) -> Result<(), String> {
    let hists = read_hist_map(&p.loaded, "lat", |k| {
        use super::layout::bio_key as f;
        Some((f::DEV.u32(k)?, f::OP.u32(k)?))
    })?;
    let mut s = out.sink("");
    let mut names: BTreeMap<u32, String> = BTreeMap::new();
    for ((dev, op), h) in hists {
        let device = names.entry(dev).or_insert_with(|| device_name(dev)).clone();
        let operation = op_name(p, op);
        s.emit_histogram(
            "netsleuth_biolatency_seconds",
            "Block I/O request latency from issue to the driver to completion (block:block_rq_issue to block_rq_complete), per device and operation.",
            &[("device", &device), ("operation", &operation)],
            &h.to_prometheus(),
        );
    }
    Ok(())
}

pub fn decode(ctx: &DecodeCtx<'_>, r: &RawEvent, entity: Arc<EventEntity>) -> Option<Event> {
    let mut ev = Event::new(EVENT, entity);
    let b = r.bio();
    let (ma, mi) = split_dev(b.dev);
    ev.fields
        .push(("device", FieldValue::Str(device_name(b.dev).into())));
    ev.fields
        .push(("dev", FieldValue::Str(format!("{ma}:{mi}").into())));
    ev.fields.push((
        "operation",
        FieldValue::Str(op_name(ctx.probe, u32::from(b.op)).into()),
    ));
    ev.fields
        .push(("bytes", FieldValue::UInt(u64::from(b.bytes))));
    ev.fields.push(b.latency.field());
    ev.fields.push(("pid", FieldValue::UInt(u64::from(b.pid))));
    ev.fields.push(("comm", FieldValue::Str(b.comm.into())));
    Some(ev)
}

/// The `biolatency` probe's descriptor.
pub static PROBE: EbpfProbe = EbpfProbe {
    kind: ProbeKind::BioLatency,
    name: "biolatency",
    description: "block I/O request latency per device and operation (block:block_rq_issue to block_rq_complete)",
    plan: PLAN,
    event_types: &[(1, EVENT)],
    default_threshold_ns: Some(DEFAULT_THRESHOLD_NS),
    // Operation names (REQ_OP_*) from the kernel's BTF, kept where packetloss keeps its reasons.
    setup: Some(|_, btf| {
        Ok(Setup {
            names: crate::bpf::target_btf::kernel_btf(btf)
                .map(|k| op_names(&k))
                .unwrap_or_default(),
            ..Setup::default()
        })
    }),
    collect: |p, cx| collect(p, cx.out),
    decode: Some(decode),
    ..EbpfProbe::DEFAULT
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_split_matches_the_kernel_encoding() {
        assert_eq!(split_dev((7 << 20) | 3), (7, 3));
        assert_eq!(split_dev((259 << 20) | 0xf_ffff), (259, 0xf_ffff));
    }

    #[test]
    fn op_names_from_this_kernels_btf() {
        let Ok(data) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            return;
        };
        let btf = crate::bpf::target_btf::parse_btf_file(&data).unwrap();
        let ops = op_names(&btf);
        assert_eq!(ops.get(&0).map(String::as_str), Some("read"));
        assert_eq!(ops.get(&1).map(String::as_str), Some("write"));
        assert_eq!(ops.get(&2).map(String::as_str), Some("flush"));
        assert_eq!(ops.get(&3).map(String::as_str), Some("discard"));
        assert!(!ops.values().any(|n| n == "last"), "{ops:?}");
    }
}
