//! `softirq`: per CPU and softirq type, the scheduling delay (`irq:softirq_raise` →
//! `irq:softirq_entry`: how long raised work waited, e.g. behind other softirqs or in
//! ksoftirqd) and the run time (`irq:softirq_entry` → `irq:softirq_exit`). Node-level: one
//! softirq run serves every namespace, so there are no entity labels.
//!
//! Timestamps and histograms live in per-CPU arrays indexed by softirq vector (nothing keyed,
//! nothing grows). Types are `softirq-types` (default `[net_rx, net_tx]`).
//!
//! Metrics: `netsleuth_softirq_sched_seconds{cpu, type}` and
//! `netsleuth_softirq_exec_seconds{cpu, type}`. Events `SOFTIRQ_SCHED_SLOW` and
//! `SOFTIRQ_EXCUTE_SLOW` (KubeSkoop's names, its spelling kept) at or above `threshold`
//! (default 100ms) with `latency` (seconds), `cpu` and `softirq`.
#![forbid(unsafe_code)]

use std::sync::Arc;

use super::registry::{EbpfProbe, Setup};
use super::{
    Alternative, DecodeCtx, Log2Hist, ProbeKind, RawEvent, RunningProbe, DEFAULT_THRESHOLD_NS,
};
use crate::events::{Event, EventEntity, FieldValue};
use crate::model::Families;

pub const SCHED: &str = "SOFTIRQ_SCHED_SLOW";
/// KubeSkoop's name, spelling included.
pub const EXEC: &str = "SOFTIRQ_EXCUTE_SLOW";

/// irq:softirq_raise, else __raise_softirq_irqoff; irq:softirq_entry/exit, else the entry and
/// return of net_tx_action and net_rx_action (the network vectors only).
pub const PLAN: &[&[Alternative]] = &[
    &[
        ("tp_btf", &["raise_btf"]),
        ("raw_tp", &["raise_raw"]),
        ("fentry", &["raise_fentry"]),
        ("kprobe", &["raise_kprobe"]),
    ],
    &[
        ("tp_btf", &["entry_btf"]),
        ("raw_tp", &["entry_raw"]),
        ("fentry", &["entry_tx_fentry", "entry_rx_fentry"]),
        ("kprobe", &["entry_tx_kprobe", "entry_rx_kprobe"]),
    ],
    &[
        ("tp_btf", &["exit_btf"]),
        ("raw_tp", &["exit_raw"]),
        ("fexit", &["exit_tx_fexit", "exit_rx_fexit"]),
        ("kretprobe", &["exit_tx_kretprobe", "exit_rx_kretprobe"]),
    ],
];

/// Softirq vector names, by vector number (include/linux/interrupt.h, as in
/// /proc/softirqs, lower case).
pub const NAMES: [&str; 10] = [
    "hi", "timer", "net_tx", "net_rx", "block", "irq_poll", "tasklet", "sched", "hrtimer", "rcu",
];

pub const DEFAULT_TYPES: &[&str] = &["net_rx", "net_tx"];

/// The vector bitmap for a `softirq-types` list.
pub fn mask(types: &[String]) -> Result<u32, String> {
    let mut m = 0u32;
    for t in types {
        let i = NAMES
            .iter()
            .position(|n| n.eq_ignore_ascii_case(t.trim()))
            .ok_or_else(|| {
                format!(
                    "arg `softirq-types`: unknown softirq `{t}` (known: {})",
                    NAMES.join(", ")
                )
            })?;
        m |= 1 << i;
    }
    Ok(m)
}

pub fn collect(p: &RunningProbe, out: &mut Families) -> Result<(), String> {
    let m = p.loaded.map("lat").map_err(|e| e.to_string())?;
    let want = mask(&p.cfg.softirq_types)?;
    let mut s = out.sink("");
    for (stage, name, help) in [
        (
            0u32,
            "netsleuth_softirq_sched_seconds",
            "Time from raising a softirq to its start on the CPU (irq:softirq_raise to softirq_entry).",
        ),
        (
            1,
            "netsleuth_softirq_exec_seconds",
            "Time a softirq ran on the CPU (irq:softirq_entry to softirq_exit).",
        ),
    ] {
        for (vec, ty) in NAMES.iter().enumerate() {
            if want & (1 << vec) == 0 {
                continue;
            }
            let idx = stage * NAMES.len() as u32 + vec as u32;
            let per_cpu = m
                .lookup_percpu(&idx.to_ne_bytes())
                .map_err(|e| format!("read map lat: {e}"))?
                .unwrap_or_default();
            for (cpu, v) in per_cpu.iter().enumerate() {
                let mut h = Log2Hist::default();
                h.add_raw(v);
                if h.count() == 0 {
                    continue;
                }
                let c = cpu.to_string();
                s.emit_histogram(name, help, &[("cpu", &c), ("type", ty)], &h.to_prometheus());
            }
        }
    }
    Ok(())
}

pub fn decode(_ctx: &DecodeCtx<'_>, r: &RawEvent, entity: Arc<EventEntity>) -> Option<Event> {
    let kind = if r.kind == 2 { EXEC } else { SCHED };
    let mut ev = Event::new(kind, entity);
    let s = r.softirq();
    ev.fields.push(s.latency.field());
    ev.fields.push(("cpu", FieldValue::UInt(u64::from(s.cpu))));
    let vec = usize::from(s.vector);
    ev.fields.push((
        "softirq",
        FieldValue::Str(NAMES.get(vec).copied().unwrap_or("unknown").into()),
    ));
    Some(ev)
}

/// The `softirq` probe's descriptor.
pub static PROBE: EbpfProbe = EbpfProbe {
    kind: ProbeKind::Softirq,
    name: "softirq",
    description: "softirq scheduling delay and run time per CPU (irq:softirq_raise/entry/exit)",
    plan: PLAN,
    event_types: &[(1, SCHED), (2, EXEC)],
    default_threshold_ns: Some(DEFAULT_THRESHOLD_NS),
    take_args: Some(|cfg, a| {
        if let Some(v) = a.take_str_list("softirq-types")? {
            mask(&v)?;
            cfg.softirq_types = v;
        }
        Ok(())
    }),
    setup: Some(|cfg, _| {
        let m = mask(&cfg.softirq_types)?;
        Ok(Setup {
            globals: vec![("types_mask".to_string(), m.to_ne_bytes().to_vec())],
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
    fn types_mask() {
        assert_eq!(mask(&["net_rx".into(), "NET_TX".into()]), Ok(0b1100));
        assert!(mask(&["bogus".into()]).unwrap_err().contains("net_rx"));
    }
}
