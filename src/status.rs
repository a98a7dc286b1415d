//! What runs: every probe (enabled, running, the attach method of each attach point, why not)
//! and every event sink (state, queued, sent, dropped), as `netsleuth probes` prints it and
//! `GET /status` serves it (JSON, like KubeSkoop's `/status`).

use std::sync::{Arc, RwLock};

use serde_json::{json, Value};

use crate::collectors;
use crate::probes::{BpfProbeConfig, ProbeKind, ProbeSet, RunningProbe};

/// One probe as `netsleuth probes` prints it and `/status` serves it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeRow {
    pub name: String,
    /// `collector` (procfs/netlink), `ebpf`, or `not_implemented` (a KubeSkoop name accepted
    /// without anything to run).
    pub source: &'static str,
    /// `yes`/`no`; eBPF probes: `metrics`, `events`, `yes` (both) or `no`.
    pub enabled: &'static str,
    /// Whether it can run here; `None` for an eBPF probe `/status` did not try (not enabled).
    pub available: Option<bool>,
    /// Enabled and available (eBPF: attached now).
    pub running: bool,
    /// The description, or why it cannot run.
    pub details: String,
    /// eBPF probes that run: the method that attached each attach point.
    pub attach: Vec<String>,
    /// eBPF probes that run: each optional group's methods, or why it is unavailable.
    pub optional: Vec<(String, Result<Vec<String>, String>)>,
    /// The default `fields` regex of a collector.
    pub default_fields: Option<&'static str>,
}

/// The procfs/netlink collectors, `enabled` those configured.
pub fn collector_rows(enabled: &[String]) -> Vec<ProbeRow> {
    collectors::registry()
        .into_iter()
        .map(|spec| {
            let on = enabled.iter().any(|e| e == spec.name);
            let (available, details) = match (spec.available)() {
                Ok(()) => (true, spec.description.to_string()),
                Err(e) => (false, e),
            };
            ProbeRow {
                name: spec.name.to_string(),
                source: "collector",
                enabled: if on { "yes" } else { "no" },
                available: Some(available),
                running: on && available,
                details,
                attach: Vec::new(),
                optional: Vec::new(),
                default_fields: spec.default_fields,
            }
        })
        .collect()
}

/// The `enabled` column of an eBPF probe.
pub fn bpf_enabled(c: Option<&BpfProbeConfig>) -> &'static str {
    match c {
        Some(c) if c.metrics && c.events => "yes",
        Some(c) if c.metrics => "metrics",
        Some(_) => "events",
        None => "no",
    }
}

/// `[attach: m1, m2] [group: m | unavailable: why]`: how a probe attached.
pub fn attach_summary(p: &RunningProbe) -> String {
    let mut s = format!("[attach: {}]", p.methods.join(", "));
    for (what, r) in &p.optional {
        match r {
            Ok(m) => s.push_str(&format!(" [{what}: {}]", m.join(", "))),
            Err(e) => s.push_str(&format!(" [{what}: unavailable: {e}]")),
        }
    }
    s
}

/// An eBPF probe's row from its outcome: attached (`Ok`), or why it cannot run.
pub fn bpf_row(
    kind: ProbeKind,
    cfg: Option<&BpfProbeConfig>,
    outcome: Option<Result<&RunningProbe, &str>>,
) -> ProbeRow {
    let mut row = ProbeRow {
        name: kind.name().to_string(),
        source: "ebpf",
        enabled: bpf_enabled(cfg),
        available: None,
        running: false,
        details: kind.description().to_string(),
        attach: Vec::new(),
        optional: Vec::new(),
        default_fields: None,
    };
    match outcome {
        Some(Ok(p)) => {
            row.available = Some(true);
            row.running = cfg.is_some();
            row.details = format!("{} {}", kind.description(), attach_summary(p));
            row.attach = p.methods.iter().map(|m| m.to_string()).collect();
            row.optional = p
                .optional
                .iter()
                .map(|(w, r)| {
                    (
                        w.to_string(),
                        r.as_ref()
                            .map(|m| m.iter().map(|m| m.to_string()).collect())
                            .map_err(|e| e.clone()),
                    )
                })
                .collect();
        }
        Some(Err(e)) => {
            row.available = Some(false);
            row.details = e.to_string();
        }
        None => {}
    }
    row
}

/// KubeSkoop names accepted without anything to run: the not-yet-built probes (always
/// listed) and any other configured name (KubeSkoop's retired `info`, event probes not built).
pub fn deferred_rows(deferred: &[String]) -> Vec<ProbeRow> {
    let row = |name: &str, enabled: &'static str, why: &str| ProbeRow {
        name: name.to_string(),
        source: "not_implemented",
        enabled,
        available: Some(false),
        running: false,
        details: why.to_string(),
        attach: Vec::new(),
        optional: Vec::new(),
        default_fields: None,
    };
    const NOT_BUILT: &str = "KubeSkoop probe not implemented in this build yet";
    let mut out = Vec::new();
    for name in collectors::NOT_YET_AVAILABLE {
        let on = deferred
            .iter()
            .any(|d| d == name || d == &format!("event:{name}"));
        out.push(row(name, if on { "yes" } else { "no" }, NOT_BUILT));
    }
    for d in deferred {
        let name = d.strip_prefix("event:").unwrap_or(d);
        if collectors::NOT_YET_AVAILABLE.contains(&name) {
            continue;
        }
        let why = crate::config::RETIRED_PROBES
            .iter()
            .find(|(r, _)| *r == name)
            .map_or(NOT_BUILT, |(_, w)| w);
        let on = if d.starts_with("event:") {
            "events"
        } else {
            "metrics"
        };
        out.push(row(name, on, why));
    }
    out
}

/// What the running exporter was configured with and started; `/status` reads it.
#[derive(Default)]
pub struct StatusBoard {
    inner: RwLock<Option<Current>>,
}

struct Current {
    collectors: Vec<String>,
    deferred: Vec<String>,
    bpf_cfgs: Vec<BpfProbeConfig>,
    bpf: Option<Arc<ProbeSet>>,
    /// The conntrack event probe is listed under `event.probes`.
    conntrack_events: bool,
}

impl StatusBoard {
    /// The configuration now in force and the eBPF set started for it (at start and after
    /// each reload).
    pub fn set(&self, cfg: &crate::config::Config, bpf: Option<Arc<ProbeSet>>) {
        let cur = Current {
            collectors: cfg.probes.iter().map(|p| p.name.clone()).collect(),
            deferred: cfg.deferred_probes.clone(),
            bpf_cfgs: cfg.bpf_probes.clone(),
            bpf,
            conntrack_events: cfg.conntrack_events.is_some(),
        };
        *self.inner.write().unwrap_or_else(|e| e.into_inner()) = Some(cur);
    }

    /// The eBPF set now running (after it was started or replaced).
    pub fn set_bpf(&self, bpf: Option<Arc<ProbeSet>>) {
        if let Some(cur) = self
            .inner
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            cur.bpf = bpf;
        }
    }

    /// Every probe's row, in `netsleuth probes` order. eBPF probes not enabled are not loaded
    /// to find out whether they could run (`available: null`).
    pub fn probe_rows(&self) -> Vec<ProbeRow> {
        let g = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let empty = Current {
            collectors: Vec::new(),
            deferred: Vec::new(),
            bpf_cfgs: Vec::new(),
            bpf: None,
            conntrack_events: false,
        };
        let cur = g.as_ref().unwrap_or(&empty);
        let mut rows = collector_rows(&cur.collectors);
        for kind in ProbeKind::ALL {
            let cfg = cur.bpf_cfgs.iter().find(|p| p.kind == kind);
            let outcome = cur.bpf.as_ref().and_then(|set| {
                if let Some(p) = set.running().find(|p| p.cfg.kind == kind) {
                    return Some(Ok(p));
                }
                set.failed
                    .iter()
                    .find(|(k, _)| *k == kind)
                    .map(|(_, e)| Err(e.as_str()))
            });
            rows.push(bpf_row(
                kind,
                cfg,
                if cfg.is_some() { outcome } else { None },
            ));
        }
        rows.push(crate::probes::conntrack_events::status_row(
            cur.conntrack_events,
        ));
        rows.extend(deferred_rows(&cur.deferred));
        rows
    }

    /// The `/status` document.
    pub fn to_json(&self, pipeline: Option<&crate::events::Pipeline>) -> Value {
        let rows = self.probe_rows();
        let probes: Vec<Value> = rows.iter().map(row_json).collect();
        let sinks: Vec<Value> = pipeline
            .map(|p| p.sink_status().iter().map(sink_json).collect())
            .unwrap_or_default();
        // KubeSkoop's shape beside ours: probes in use by flavour with a state, and the names
        // this build has.
        let state = |r: &ProbeRow| if r.running { "Running" } else { "Failed" };
        let inuse = |flavour: &str| -> Vec<Value> {
            rows.iter()
                .filter(|r| match r.enabled {
                    // flow, ipvs and rdma are KubeSkoop metric probes.
                    "yes" if r.source == "not_implemented" => flavour == "metrics",
                    "yes" => true,
                    "metrics" => flavour == "metrics",
                    "events" => flavour == "event",
                    _ => false,
                })
                .filter(|r| r.source != "collector" || flavour == "metrics")
                .map(|r| json!({"name": r.name, "state": state(r)}))
                .collect()
        };
        let avail_metrics: Vec<&str> = rows
            .iter()
            .filter(|r| r.source != "not_implemented")
            .map(|r| r.name.as_str())
            .collect();
        let avail_events: Vec<&str> = rows
            .iter()
            .filter(|r| r.source == "ebpf")
            .map(|r| r.name.as_str())
            .collect();
        json!({
            "probes": probes,
            "sinks": sinks,
            "events_published": pipeline.map(|p| p.stats.accepted.load(std::sync::atomic::Ordering::Relaxed)),
            "inuse_probes": {"metrics": inuse("metrics"), "event": inuse("event")},
            "available_probes": {"metrics": avail_metrics, "event": avail_events},
        })
    }
}

fn row_json(r: &ProbeRow) -> Value {
    let mut v = json!({
        "name": r.name,
        "source": r.source,
        "enabled": r.enabled,
        "available": r.available,
        "running": r.running,
        "details": r.details,
    });
    if r.source == "ebpf" && r.available == Some(true) {
        v["attach"] = json!(r.attach);
        v["optional"] = Value::Array(
            r.optional
                .iter()
                .map(|(g, res)| match res {
                    Ok(m) => json!({"group": g, "attach": m}),
                    Err(e) => json!({"group": g, "error": e}),
                })
                .collect(),
        );
    }
    if r.available == Some(false) {
        v["error"] = json!(r.details);
    }
    v
}

fn sink_json(s: &crate::events::SinkStatus) -> Value {
    let dropped: serde_json::Map<String, Value> = s
        .dropped
        .iter()
        .map(|(k, n)| (k.to_string(), json!(n)))
        .collect();
    json!({
        "name": s.name,
        "type": s.kind,
        "state": s.state,
        "error": s.error,
        "queued": s.queued,
        "sent": s.sent,
        "failed": s.failed,
        "retried": s.retried,
        "backlog": s.backlog,
        "dropped": dropped,
    })
}
