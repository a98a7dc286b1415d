//! `packetloss`: `skb:kfree_skb` with the kernel's drop reason.
//!
//! Reason names come from the running kernel's BTF (`enum skb_drop_reason`, prefix
//! `SKB_DROP_REASON_` stripped), never from a table of ours. On kernels without drop reasons
//! the kernel map is keyed by the freeing location instead and the `reason` label is its symbol
//! (`nf_hook_slow+0x...` style, without the offset for the metric). Counts live in the bounded
//! hash `drops` (4096 (netns, reason, protocol) keys; updates beyond are counted in
//! `netsleuth_bpf_map_full_total{probe="packetloss"}`).
//!
//! Metric: `netsleuth_packetloss_total{<entity>, reason, protocol}`. Event `PACKETLOSS` with
//! `protocol saddr sport daddr dport` (when IP), `reason`, `location` and the stack
//! (`enableStack: true`).
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::registry::{EbpfProbe, Setup};
use super::{
    sum_u64_map, Alternative, BpfProbeConfig, DecodeCtx, ProbeKind, RawEvent, RunningProbe,
};
use crate::bpf::btf::Kind;
use crate::bpf::kallsyms::Kallsyms;
use crate::bpf::target_btf::{self, BtfSources};
use crate::events::{Event, EventEntity, FieldValue};
use crate::model::{Families, MetricKind, Sink, Value};

pub const EVENT: &str = "PACKETLOSS";

/// skb:kfree_skb; else the function it sits in: sk_skb_reason_drop (6.11+), kfree_skb_reason
/// (5.17+), kfree_skb (no reasons: kprobe only, fentry cannot see the drop location).
pub const PLAN: &[&[Alternative]] = &[super::plan::skb_free_point!("kfree_skb", "drop", drops)];

/// Reasons that are normal frees, excluded unless `excludeReasons` says otherwise:
/// `NOT_SPECIFIED` is what plain `kfree_skb()` reports (neighbour queue purges, IPv6 MLD/ND
/// housekeeping, socket teardown), `CONSUMED` is a successful free, and `QUEUE_PURGE` is a
/// closing socket emptying its queues (e.g. the peer's FIN still queued: every HTTP connection
/// a scrape closes makes one). Real drops such as `NO_SOCKET` (closed port) and
/// `NETFILTER_DROP` are counted.
pub const DEFAULT_EXCLUDE: &[&str] = &["NOT_SPECIFIED", "CONSUMED", "QUEUE_PURGE"];

/// Drop reason value → name from a BTF (empty when the kernel has no drop reasons).
pub fn reason_names(btf: &crate::bpf::btf::Btf) -> BTreeMap<u64, String> {
    let mut out = BTreeMap::new();
    let Some(id) = btf.find_by_name_kind("skb_drop_reason", Kind::Enum) else {
        return out;
    };
    if let Ok(t) = btf.type_by_id(id) {
        for v in t.enum_values() {
            if let Ok(n) = btf.name(v.name_off) {
                out.insert(
                    v.value,
                    n.trim_start_matches("SKB_DROP_REASON_").to_string(),
                );
            }
        }
    }
    out
}

/// `.rodata` for the object: the excluded-reason bitmap and whether reasons exist.
#[allow(clippy::type_complexity)]
pub fn globals(
    cfg: &BpfProbeConfig,
    btf: &BtfSources,
) -> Result<(Vec<(String, Vec<u8>)>, BTreeMap<u64, String>), String> {
    let kbtf = target_btf::kernel_btf(btf).map_err(|e| e.to_string())?;
    let names = reason_names(&kbtf);
    let mut mask = [0u64; 4];
    for want in &cfg.exclude_reasons {
        match names.iter().find(|(_, n)| *n == want) {
            Some((v, _)) if *v < 256 => mask[(*v >> 6) as usize] |= 1 << (*v & 63),
            Some(_) => {
                log::warn!("packetloss: excludeReasons: {want} is a subsystem reason; not excluded")
            }
            // Names absent on this kernel are fine (CONSUMED is recent).
            None => log::debug!(
                "packetloss: excludeReasons: {want} is not a drop reason on this kernel"
            ),
        }
    }
    let bytes: Vec<u8> = mask.iter().flat_map(|m| m.to_ne_bytes()).collect();
    Ok((
        vec![
            ("exclude_mask".into(), bytes),
            ("have_reasons".into(), vec![u8::from(!names.is_empty())]),
        ],
        names,
    ))
}

fn reason_label(p: &RunningProbe, reason: u64, location: u64, ks: Option<&Kallsyms>) -> String {
    if p.reasons.is_empty() {
        // No drop reasons on this kernel: the function that freed the packet.
        return match ks {
            Some(k) => {
                let s = k.symbolize(location);
                s.split('+').next().unwrap_or(&s).to_string()
            }
            None => format!("{location:#x}"),
        };
    }
    p.reasons
        .get(&reason)
        .cloned()
        .unwrap_or_else(|| format!("{reason}"))
}

pub fn collect(
    p: &RunningProbe,
    prefix: &mut dyn FnMut(u64) -> String,
    out: &mut Families,
    ks: &Mutex<Option<Kallsyms>>,
) -> Result<(), String> {
    if p.reasons.is_empty() {
        let mut g = ks.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_none() {
            *g = Kallsyms::load().ok();
        }
    }
    let g = ks.lock().unwrap_or_else(|e| e.into_inner());
    let sums = sum_u64_map(&p.loaded, "drops", |k| {
        use super::layout::drop_key as f;
        let netns = f::NETNS.u32(k)?;
        let reason = f::REASON.u32(k)?;
        let loc = f::LOCATION.u64(k)?;
        let l4 = f::L4PROTO.u8(k)?;
        let fam = f::FAMILY.u8(k)?;
        Some((
            u64::from(netns),
            reason_label(p, reason.into(), loc, g.as_ref()),
            super::protocol_name(fam.into(), l4),
        ))
    })?;
    for ((inode, reason, proto), n) in sums {
        let pre = prefix(inode);
        out.sink(&pre).emit(
            "netsleuth_packetloss_total",
            "Packets the kernel dropped (skb:kfree_skb), by drop reason and protocol; normal frees excluded (excludeReasons).",
            MetricKind::Counter,
            &[("reason", &reason), ("protocol", &proto)],
            Value::U64(n),
        );
    }
    Ok(())
}

pub fn decode(ctx: &DecodeCtx<'_>, r: &RawEvent, entity: Arc<EventEntity>) -> Option<Event> {
    let mut ev = Event::new(EVENT, entity);
    r.tuple_fields(&mut ev);
    let d = r.drop();
    let reason = reason_label(ctx.probe, d.reason.into(), d.location, ctx.kallsyms);
    ev.fields.push(("reason", FieldValue::Str(reason.into())));
    let loc = match ctx.kallsyms {
        Some(k) => k.symbolize(d.location),
        None => format!("{:#x}", d.location),
    };
    ev.fields.push(("location", FieldValue::Str(loc.into())));
    Some(ev)
}

/// The `packetloss` probe's descriptor.
pub static PROBE: EbpfProbe = EbpfProbe {
    kind: ProbeKind::PacketLoss,
    name: "packetloss",
    description: "dropped packets by kernel drop reason (skb:kfree_skb)",
    plan: PLAN,
    netns_maps: &["drops"],
    event_types: &[(0, EVENT)],
    symbolizes: true,
    take_args: Some(|cfg, a| {
        if let Some(v) = a.take_str_list("excludeReasons")? {
            cfg.exclude_reasons = v
                .into_iter()
                .map(|s| s.trim_start_matches("SKB_DROP_REASON_").to_string())
                .collect();
        }
        Ok(())
    }),
    setup: Some(|cfg, btf| {
        let (globals, names) = globals(cfg, btf)?;
        Ok(Setup {
            globals,
            names,
            ..Setup::default()
        })
    }),
    collect: |p, cx| collect(p, cx.prefix, cx.out, cx.kallsyms),
    decode: Some(decode),
    ..EbpfProbe::DEFAULT
};
