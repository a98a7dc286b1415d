//! The running set's metrics: each probe's maps through its descriptor, then what every probe
//! has (`netsleuth_probe_up`, attach info, full maps, lost and suppressed events, program run
//! time, reaped entries, events read).
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use super::hist::per_cpu_sum;
use super::plan::Alternative;
use super::registry::CollectCtx;
use super::set::ProbeSet;
use super::totals::SUPPRESSED_HELP;
use super::LOST_HELP;
use crate::collectors::{CollectError, MapCollector};
use crate::model::{Families, MetricKind, Sink, Value};

impl MapCollector for ProbeSet {
    fn name(&self) -> &'static str {
        "ebpf"
    }

    fn collect(
        &self,
        labels: &dyn Fn(u64) -> String,
        out: &mut Families,
    ) -> Result<(), CollectError> {
        let mut errors = Vec::new();
        self.reap_dead_namespaces(Instant::now());
        self.emit_probe_state(out, &mut errors);
        let mut prefixes: HashMap<u64, String> = HashMap::new();
        let mut prefix = |inode: u64| {
            prefixes
                .entry(inode)
                .or_insert_with(|| labels(inode))
                .clone()
        };
        for p in self.live() {
            if !p.cfg.metrics {
                continue;
            }
            let mut cx = CollectCtx {
                prefix: &mut prefix,
                out,
                kallsyms: self.kallsyms(),
                inventory: self.inventory(),
            };
            let r = p.cfg.kind.probe().collect(p, &mut cx);
            if let Err(e) = r {
                errors.push(format!("{}: {e}", p.cfg.kind.name()));
            }
            if let Ok(n) = per_cpu_sum(&p.loaded, "counts_full") {
                out.sink("").emit(
                    "netsleuth_bpf_map_full_total",
                    "Counter updates dropped because the probe's bounded kernel map was full.",
                    MetricKind::Counter,
                    &[("probe", p.cfg.kind.name())],
                    Value::U64(n),
                );
            }
        }
        for p in self.live() {
            if p.cfg.events {
                if let Ok(n) = p.lost() {
                    self.state()
                        .with(|c| c.lost_now.insert(p.cfg.kind.name(), n));
                }
            }
        }
        let mut suppressed: BTreeMap<&str, u64> = BTreeMap::new();
        let mut runs: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for p in self.live() {
            if p.cfg.events {
                match p.suppressed() {
                    Ok(m) => {
                        for (t, n) in m {
                            *suppressed.entry(t).or_default() += n;
                        }
                    }
                    Err(e) => errors.push(format!("{}: suppressed events: {e}", p.cfg.kind.name())),
                }
            }
            for (label, r) in p.run_stats() {
                match r {
                    Ok((ns, cnt)) => {
                        let v = runs.entry(label).or_default();
                        v.0 += ns;
                        v.1 += cnt;
                    }
                    Err(e) => errors.push(format!("{label}: run stats: {e}")),
                }
            }
        }
        let mut s = out.sink("");
        self.state().with(|c| {
            for (t, n) in &c.suppressed_base {
                *suppressed.entry(t).or_default() += n;
            }
            for (label, (ns, cnt)) in &c.run_base {
                let v = runs.entry(label.clone()).or_default();
                v.0 += ns;
                v.1 += cnt;
            }
            for (p, n) in &c.reaped {
                s.emit(
                    "netsleuth_bpf_map_entries_reaped_total",
                    "Kernel-map entries deleted because their network namespace vanished (past the inventory's grace period).",
                    MetricKind::Counter,
                    &[("probe", p)],
                    Value::U64(*n),
                );
            }
            for (t, n) in &suppressed {
                s.emit(
                    "netsleuth_events_suppressed_total",
                    SUPPRESSED_HELP,
                    MetricKind::Counter,
                    &[("type", t)],
                    Value::U64(*n),
                );
            }
            for (label, (ns, _)) in &runs {
                s.emit(
                    "netsleuth_bpf_program_run_seconds_total",
                    "Time the kernel spent running the probe's BPF program (bpf_stats run_time_ns; counts only while run-time stats are on).",
                    MetricKind::Counter,
                    &[("program", label)],
                    Value::F64(*ns as f64 / 1e9),
                );
            }
            for (label, (_, cnt)) in &runs {
                s.emit(
                    "netsleuth_bpf_program_runs_total",
                    "Times the kernel ran the probe's BPF program (bpf_stats run_cnt; counts only while run-time stats are on).",
                    MetricKind::Counter,
                    &[("program", label)],
                    Value::U64(*cnt),
                );
            }
            for (t, n) in &c.by_type {
                s.emit(
                    "netsleuth_events_total",
                    "Events read from the kernel, by type.",
                    MetricKind::Counter,
                    &[("type", t)],
                    Value::U64(*n),
                );
            }
            let mut lost: BTreeMap<&str, u64> = c.lost_base.clone();
            for (p, n) in &c.lost_now {
                *lost.entry(p).or_default() += n;
            }
            for (p, n) in lost {
                s.emit(
                    "netsleuth_events_lost_total",
                    LOST_HELP,
                    MetricKind::Counter,
                    &[("probe", p)],
                    Value::U64(n),
                );
            }
        });
        if errors.is_empty() {
            Ok(())
        } else {
            Err(CollectError::Failed(errors.join("; ")))
        }
    }
}

impl ProbeSet {
    /// `netsleuth_probe_up{probe}` (1 running, 0 configured but not running) and
    /// `netsleuth_probe_attach_info{probe,attach_point,method}` for every attached point; a
    /// configured probe that is down is an error of the `ebpf` collector (its success 0) with the
    /// reason it could not start.
    fn emit_probe_state(&self, out: &mut Families, errors: &mut Vec<String>) {
        let mut s = out.sink("");
        const UP: &str = "Whether the configured eBPF probe is loaded and attached (1), or configured but not running (0; the log and `netsleuth probes` say why).";
        const ATTACH: &str = "How each attach point of a running eBPF probe is attached (the method the kernel accepted).";
        for p in self.live() {
            let kind = p.cfg.kind;
            s.emit(
                "netsleuth_probe_up",
                UP,
                MetricKind::Gauge,
                &[("probe", kind.name())],
                Value::U64(1),
            );
            let plan = kind.plan().iter().zip(&p.attached);
            let optional = kind
                .optional()
                .iter()
                .zip(&p.optional)
                .filter_map(|(g, r)| r.1.as_ref().ok().map(|ms| (g.1.iter(), ms.iter())));
            let mut points: Vec<(String, &str)> = plan
                .map(|(alts, a)| (attach_point_name(alts), a.0))
                .collect();
            for (alts, methods) in optional {
                points.extend(alts.zip(methods).map(|(a, m)| (attach_point_name(a), *m)));
            }
            for (point, method) in points {
                s.emit(
                    "netsleuth_probe_attach_info",
                    ATTACH,
                    MetricKind::Gauge,
                    &[
                        ("probe", kind.name()),
                        ("attach_point", &point),
                        ("method", method),
                    ],
                    Value::U64(1),
                );
            }
        }
        for (kind, why) in &self.failed {
            s.emit(
                "netsleuth_probe_up",
                UP,
                MetricKind::Gauge,
                &[("probe", kind.name())],
                Value::U64(0),
            );
            errors.push(format!("{}: not running: {why}", kind.name()));
        }
    }
}

/// An attach point's name for `netsleuth_probe_attach_info`: its first (preferred)
/// alternative's first program without the method suffix (`kfree_skb_btf` → `kfree_skb`).
pub fn attach_point_name(alts: &[Alternative]) -> String {
    let Some((_, progs)) = alts.first() else {
        return String::new();
    };
    let first = progs.first().copied().unwrap_or("");
    for suffix in ["_btf", "_raw", "_fentry", "_fexit", "_kprobe", "_kretprobe"] {
        if let Some(b) = first.strip_suffix(suffix) {
            return b.to_string();
        }
    }
    first.to_string()
}
