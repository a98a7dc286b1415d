//! `metrics.probes` and `event.probes`: each entry a bare name or `{name, args}`, KubeSkoop's
//! old probe names, the probes it retired, and suggestions for unknown names.

use super::{err, kubeskoop, ConfigError, ProbeConfig};
use crate::collectors::{self, ProbeArgs};
use crate::probes::conntrack_events::ConntrackEventsConfig;
use crate::probes::BpfProbeConfig;

/// What `metrics.probes` configures.
#[derive(Debug, Default)]
pub(super) struct MetricProbes {
    pub probes: Vec<ProbeConfig>,
    /// Names accepted with nothing to run (not built yet, or retired by KubeSkoop).
    pub deferred: Vec<String>,
    /// eBPF probes, `metrics` set.
    pub bpf: Vec<BpfProbeConfig>,
}

/// `metrics.probes`; `None` (the key absent) is the default probe set.
pub(super) fn metric_probes(
    list: &Option<Vec<serde_norway::Value>>,
) -> Result<MetricProbes, ConfigError> {
    let mut probes = Vec::new();
    let mut deferred = Vec::new();
    let mut bpf_probes: Vec<BpfProbeConfig> = Vec::new();
    match list {
        None => {
            for spec in collectors::registry()
                .into_iter()
                .filter(|s| s.default_enabled)
            {
                let mut args = ProbeArgs::new(spec.name);
                let c = (spec.build)(&mut args).map_err(ConfigError)?;
                probes.push(ProbeConfig {
                    name: spec.name.to_string(),
                    collector: c,
                });
            }
        }
        Some(list) => {
            let mut seen: Vec<(String, serde_norway::Value)> = Vec::new();
            for (i, entry) in list.iter().enumerate() {
                let (name, args) = probe_entry(&format!("metrics.probes[{i}]"), entry)?;
                let name = canonical_probe(&format!("metrics.probes[{i}]"), name);
                if seen.iter().any(|(n, a)| *n == name && *a == args) {
                    // KubeSkoop collapsed repeated entries (its own skoopbundle.yaml of
                    // September 2023 lists packetloss twice); the same args twice mean
                    // nothing else.
                    log::warn!(
                        "metrics.probes[{i}]: probe `{name}` is listed again with the same \
                         args; the repetition is ignored"
                    );
                    continue;
                }
                seen.push((name.clone(), args.clone()));
                if probes.iter().any(|p: &ProbeConfig| p.name == name)
                    || bpf_probes
                        .iter()
                        .any(|p| p.metrics && p.kind.name() == name)
                {
                    return err(format!(
                        "metrics.probes[{i}]: probe `{name}` is listed twice"
                    ));
                }
                if let Some(kind) = crate::probes::ProbeKind::from_name(&name) {
                    let at = format!("metrics.probes[{i}]");
                    let mut a = ProbeArgs::from_yaml(&name, &args)
                        .map_err(|e| ConfigError(format!("{at}: {e}")))?;
                    let b = bpf_entry(&mut bpf_probes, kind);
                    b.metrics = true;
                    b.take_args(&mut a)
                        .and_then(|()| a.finish())
                        .map_err(|e| ConfigError(format!("{at}: {e}")))?;
                    continue;
                }
                match collectors::find(&name) {
                    Some(spec) => {
                        let mut a = ProbeArgs::from_yaml(&name, &args)
                            .map_err(|e| ConfigError(format!("metrics.probes[{i}]: {e}")))?;
                        let c = (spec.build)(&mut a)
                            .map_err(|e| ConfigError(format!("metrics.probes[{i}]: {e}")))?;
                        a.finish()
                            .map_err(|e| ConfigError(format!("metrics.probes[{i}]: {e}")))?;
                        probes.push(ProbeConfig { name, collector: c });
                    }
                    None if collectors::NOT_YET_AVAILABLE.contains(&name.as_str())
                        || RETIRED_PROBES.iter().any(|(r, _)| *r == name) =>
                    {
                        deferred.push(name)
                    }
                    None => {
                        let known = known_metric_probes();
                        return err(format!(
                            "metrics.probes[{i}]: unknown probe `{name}`{}",
                            probe_suggestion(&name, &known)
                        ));
                    }
                }
            }
        }
    }
    Ok(MetricProbes {
        probes,
        deferred,
        bpf: bpf_probes,
    })
}

/// `event.probes`: eBPF probes get `events` set in `bpf_probes` (merged with their
/// `metrics.probes` entry), names accepted without anything to run go to `deferred` as
/// `event:<name>`; returns the conntrack event probe's config if it is listed.
pub(super) fn event_probes(
    list: &[serde_norway::Value],
    bpf_probes: &mut Vec<BpfProbeConfig>,
    deferred: &mut Vec<String>,
) -> Result<Option<ConntrackEventsConfig>, ConfigError> {
    let mut conntrack_events = None;
    for (i, entry) in list.iter().enumerate() {
        let at = format!("event.probes[{i}]");
        let (name, args) = probe_entry(&at, entry)?;
        let name = canonical_probe(&at, name);
        if name == crate::probes::conntrack_events::NAME {
            if conntrack_events.is_some() {
                return err(format!("{at}: probe `{name}` is listed twice"));
            }
            let mut c = ConntrackEventsConfig::default();
            ProbeArgs::from_yaml(&name, &args)
                .and_then(|mut a| c.take_args(&mut a).and_then(|()| a.finish()))
                .map_err(|e| ConfigError(format!("{at}: {e}")))?;
            conntrack_events = Some(c);
            continue;
        }
        if let Some(kind) = crate::probes::ProbeKind::from_name(&name) {
            let mut a = ProbeArgs::from_yaml(&name, &args)
                .map_err(|e| ConfigError(format!("{at}: {e}")))?;
            let b = bpf_entry(bpf_probes, kind);
            if b.events {
                return err(format!("{at}: probe `{name}` is listed twice"));
            }
            b.events = true;
            b.take_args(&mut a)
                .and_then(|()| a.finish())
                .map_err(|e| ConfigError(format!("{at}: {e}")))?;
            continue;
        }
        if !collectors::NOT_YET_AVAILABLE.contains(&name.as_str()) && name != "biolatency" {
            let known: Vec<&str> = crate::probes::ProbeKind::ALL
                .iter()
                .map(|k| k.name())
                .collect();
            return err(format!(
                "event.probes[{i}]: unknown event probe `{name}`{}",
                probe_suggestion(&name, &known)
            ));
        }
        deferred.push(format!("event:{name}"));
    }
    Ok(conntrack_events)
}

/// The entry for eBPF probe `kind` in `list`, created if absent.
fn bpf_entry(
    list: &mut Vec<BpfProbeConfig>,
    kind: crate::probes::ProbeKind,
) -> &mut BpfProbeConfig {
    if let Some(i) = list.iter().position(|p| p.kind == kind) {
        return &mut list[i];
    }
    list.push(BpfProbeConfig::new(kind));
    list.last_mut().expect("just pushed")
}

/// Names KubeSkoop used for probes it later renamed, with ours (from its git history and
/// documentation); a config using the old name loads as if it had the new one.
pub const PROBE_ALIASES: &[(&str, &str)] = &[
    // Until September 2023 (and in the exporter's probe documentation and chart 0.3.0).
    ("net_softirq", "softirq"),
    // September 2023 to March 2024.
    ("netsoftirq", "softirq"),
    // The event probe's name until September 2023, and the probe documentation's.
    ("netiftxlatency", "netiftxlat"),
    // deploy/README.md's probe table.
    ("netif_txlatency", "netiftxlat"),
    // September 2023 to January 2024.
    ("virtcmdLatency", "virtcmdlatency"),
];

/// KubeSkoop probes that KubeSkoop itself removed: accepted like the not-yet-built ones
/// (warned, nothing runs), because configs of that time (its docs example) still name them.
pub const RETIRED_PROBES: &[(&str, &str)] = &[(
    "info",
    "KubeSkoop's pod and node IP info series (removed from KubeSkoop in February 2024)",
)];

/// The probe's current name; an old KubeSkoop name is logged once and replaced.
fn canonical_probe(at: &str, name: String) -> String {
    match PROBE_ALIASES.iter().find(|(old, _)| *old == name) {
        Some((old, new)) => {
            kubeskoop::log_once(
                &format!("probe {old}"),
                &format!("`{old}` (at {at}) is KubeSkoop's old name of the `{new}` probe; loaded as `{new}`"),
            );
            new.to_string()
        }
        None => name,
    }
}

/// Every metric probe name: the procfs/netlink registry, then every eBPF probe.
pub fn known_metric_probes() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = collectors::registry().iter().map(|s| s.name).collect();
    v.extend(crate::probes::ProbeKind::ALL.iter().map(|k| k.name()));
    v
}

/// ` (known: ...; did you mean `x`?)`: the whole list, and the closest name (old names too).
fn probe_suggestion(name: &str, known: &[&str]) -> String {
    let mut s = format!(" (known: {}", known.join(", "));
    let candidates = known
        .iter()
        .copied()
        .chain(PROBE_ALIASES.iter().map(|(old, _)| *old));
    if let Some(c) = kubeskoop::closest(name, candidates) {
        let c = PROBE_ALIASES
            .iter()
            .find(|(old, _)| *old == c)
            .map_or(c, |(_, new)| new);
        s.push_str(&format!("; did you mean `{c}`?"));
    }
    s.push(')');
    s
}

/// A probe/sink list entry: a bare name or `{name, args}`.
pub(super) fn probe_entry(
    at: &str,
    v: &serde_norway::Value,
) -> Result<(String, serde_norway::Value), ConfigError> {
    use serde_norway::Value;
    match v {
        Value::String(s) if s.starts_with("map[") && s.ends_with(']') => err(format!(
            "{at}: `{s}` is how Go prints a mapping (a Helm template wrote `- {{{{ . }}}}` for a \
             `{{name: ...}}` entry); write the entry as `- name: ...`"
        )),
        Value::String(s) => Ok((s.clone(), Value::Null)),
        Value::Mapping(m) => {
            let mut name = None;
            let mut args = Value::Null;
            for (k, v) in m {
                // KubeSkoop's mapstructure matched these case-insensitively too.
                match k.as_str().map(|k| (k, k.to_ascii_lowercase())) {
                    Some((_, l)) if l == "name" => match v {
                        Value::String(s) => name = Some(s.clone()),
                        other => {
                            return err(format!(
                                "{at}.name: must be a string, not {}",
                                kubeskoop::show(other)
                            ))
                        }
                    },
                    Some((_, l)) if l == "args" => args = v.clone(),
                    Some((other, _)) => {
                        return err(format!(
                            "{at}: unknown key `{other}` (expected name, args{})",
                            kubeskoop::closest(other, ["name", "args"])
                                .map(|c| format!("; did you mean `{c}`?"))
                                .unwrap_or_default()
                        ))
                    }
                    None => return err(format!("{at}: keys must be strings")),
                }
            }
            match name {
                Some(n) => Ok((n, args)),
                None => err(format!("{at}: missing `name`")),
            }
        }
        _ => err(format!(
            "{at}: must be a probe name or a mapping with `name` and `args`"
        )),
    }
}
