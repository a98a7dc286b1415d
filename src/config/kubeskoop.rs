//! KubeSkoop's configuration keys, read the way KubeSkoop users write them.
//!
//! KubeSkoop loaded its config through viper and mapstructure for most of its history, both of
//! which match keys case-insensitively; its own Helm chart still renders `debugmode:` in lower
//! case. So every key KubeSkoop ever had is matched here without regard to case, in both of its
//! schemas: the current one (`debugMode`, `port`, `address`, `enableController`,
//! `controllerAddr`, `metrics`, `event`) and the one before September 2023 (`metric_config`,
//! `event_config`, with `loki_address`/`loki_enable`), plus `enable_controller` (renamed in
//! April 2024). netsleuth's own sections (`inventory`, `collection`, `bpf`) keep one spelling.
//! A key that matches nothing is an error naming it and the closest known key; a KubeSkoop key
//! of the wrong type is an error naming the key.

use serde_norway::{Mapping, Value};

use super::{ConfigError, RawEvent, RawMetrics};

/// The top-level keys KubeSkoop has had, in their documented spelling.
pub const TOP_KEYS: &[&str] = &[
    "debugMode",
    "port",
    "address",
    "enableController",
    "enable_controller",
    "controllerAddr",
    "metrics",
    "event",
    "metric_config",
    "event_config",
];

/// netsleuth's own top-level sections (case-sensitive; typed in `RawConfig`).
pub const OWN_TOP_KEYS: &[&str] = &["inventory", "collection", "bpf"];

const METRICS_KEYS: &[&str] = &["probes", "additionalLabels"];
const EVENT_KEYS: &[&str] = &["probes", "sinks"];
const METRIC_CONFIG_KEYS: &[&str] = &["interval", "port", "probes", "verbose", "expose_labels"];
const EVENT_CONFIG_KEYS: &[&str] = &["port", "infotolog", "loki_address", "loki_enable", "probes"];

/// What KubeSkoop's keys say, in netsleuth's terms.
#[derive(Debug, Default)]
pub struct KubeSkoopKeys {
    pub debug_mode: Option<bool>,
    /// The listen address: `address`, else `:port`, else `:metric_config.port`.
    pub listen_address: Option<String>,
    pub metrics: RawMetrics,
    pub event: Option<RawEvent>,
}

/// A key once logged as accepted but unused is not logged again (reloads, `probes`).
static LOGGED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Logs, once per process, that `key` is accepted and what netsleuth does with it.
pub fn log_once(key: &str, what: &str) {
    let mut l = LOGGED.lock().unwrap_or_else(|e| e.into_inner());
    if l.iter().any(|k| k == key) {
        return;
    }
    l.push(key.to_string());
    log::info!("config: {key}: {what}");
}

/// Levenshtein distance over ASCII-lowercased bytes.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<u8> = a.bytes().map(|c| c.to_ascii_lowercase()).collect();
    let b: Vec<u8> = b.bytes().map(|c| c.to_ascii_lowercase()).collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The known name closest to `got`, if it is close enough to be a likely typo (at most a third
/// of its letters differ, or it is a case variant of a case-sensitive name).
pub fn closest<'a>(got: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let best = known
        .into_iter()
        .map(|k| (distance(got, k), k))
        .min_by_key(|(d, _)| *d)?;
    let limit = (got.len().max(best.1.len()) / 3).max(1);
    (best.0 <= limit).then_some(best.1)
}

/// ` (did you mean `x`?)` or ` (known: a, b, ...)`.
pub fn suggestion(got: &str, known: &[&str]) -> String {
    match closest(got, known.iter().copied()) {
        Some(k) => format!(" (did you mean `{k}`?)"),
        None => format!(" (known: {})", known.join(", ")),
    }
}

/// A value as the user wrote it, short, for error messages.
pub fn show(v: &Value) -> String {
    let s = match v {
        Value::String(s) => format!("\"{s}\""),
        Value::Sequence(_) => "a list".to_string(),
        Value::Mapping(_) => "a mapping".to_string(),
        other => serde_norway::to_string(other)
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "?".to_string()),
    };
    if s.len() > 60 {
        format!(
            "{}...",
            &s[..s.char_indices().nth(57).map_or(s.len(), |(i, _)| i)]
        )
    } else {
        s
    }
}

fn type_err<T>(key: &str, want: &str, v: &Value) -> Result<T, ConfigError> {
    Err(ConfigError(format!(
        "{key}: must be {want}, not {}",
        show(v)
    )))
}

fn bool_of(key: &str, v: &Value) -> Result<Option<bool>, ConfigError> {
    match v {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(*b)),
        _ => type_err(key, "true or false", v),
    }
}

fn str_of(key: &str, v: &Value) -> Result<Option<String>, ConfigError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        _ => type_err(key, "a string", v),
    }
}

fn port_of(key: &str, v: &Value) -> Result<Option<u16>, ConfigError> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => match n.as_u64().and_then(|n| u16::try_from(n).ok()) {
            Some(p) => Ok(Some(p)),
            None => type_err(key, "a port number (0..65535)", v),
        },
        // viper decoded quoted numbers too.
        Value::String(s) => match s.trim().parse::<u16>() {
            Ok(p) => Ok(Some(p)),
            Err(_) => type_err(key, "a port number (0..65535)", v),
        },
        _ => type_err(key, "a port number (0..65535)", v),
    }
}

fn int_of(key: &str, v: &Value) -> Result<Option<u64>, ConfigError> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) if n.as_u64().is_some() => Ok(n.as_u64()),
        _ => type_err(key, "a whole number", v),
    }
}

fn list_of(key: &str, v: &Value) -> Result<Option<Vec<Value>>, ConfigError> {
    match v {
        Value::Null => Ok(None),
        Value::Sequence(s) => Ok(Some(s.clone())),
        _ => type_err(key, "a list", v),
    }
}

fn mapping_of<'v>(key: &str, v: &'v Value) -> Result<Option<&'v Mapping>, ConfigError> {
    match v {
        Value::Null => Ok(None),
        Value::Mapping(m) => Ok(Some(m)),
        _ => type_err(key, "a mapping", v),
    }
}

/// The entries of `m` under their canonical names from `known`, matched case-insensitively.
/// `at` is the path of `m` (`""` for the top level); `also` are names accepted elsewhere at this
/// level, offered as suggestions only.
fn keyed<'v>(
    at: &str,
    m: &'v Mapping,
    known: &[&'static str],
    also: &[&'static str],
) -> Result<Vec<(&'static str, &'v Value)>, ConfigError> {
    let prefix = if at.is_empty() {
        String::new()
    } else {
        format!("{at}: ")
    };
    let mut out: Vec<(&'static str, &str, &Value)> = Vec::new();
    for (k, v) in m {
        let Some(k) = k.as_str() else {
            return Err(ConfigError(format!(
                "{prefix}keys must be strings, not {}",
                show(k)
            )));
        };
        let Some(canon) = known.iter().find(|c| c.eq_ignore_ascii_case(k)) else {
            let mut all: Vec<&str> = known.to_vec();
            all.extend_from_slice(also);
            return Err(ConfigError(format!(
                "{prefix}unknown key `{k}`{}",
                suggestion(k, &all)
            )));
        };
        if let Some((_, first, _)) = out.iter().find(|(c, _, _)| c == canon) {
            return Err(ConfigError(format!(
                "{prefix}`{first}` and `{k}` are the same key (KubeSkoop's keys are matched \
                 without regard to case): give it once"
            )));
        }
        out.push((canon, k, v));
    }
    Ok(out.into_iter().map(|(c, _, v)| (c, v)).collect())
}

fn path(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_string()
    } else {
        format!("{at}.{key}")
    }
}

impl KubeSkoopKeys {
    /// Reads every top-level key that is not one of netsleuth's own sections.
    pub fn read(other: &Mapping) -> Result<KubeSkoopKeys, ConfigError> {
        let mut ks = KubeSkoopKeys::default();
        let (mut address, mut port, mut old_port) = (None, None, None);
        let (mut metrics, mut metric_config) = (None, None);
        let (mut event, mut event_config) = (None, None);
        for (key, v) in keyed("", other, TOP_KEYS, OWN_TOP_KEYS)? {
            match key {
                "debugMode" => {
                    ks.debug_mode = bool_of(key, v)?;
                    if ks.debug_mode.is_some() {
                        log_once(
                            key,
                            "KubeSkoop's debug switch is accepted and ignored; \
                             use --log.level=debug for debug logs",
                        );
                    }
                }
                "port" => port = port_of(key, v)?,
                "address" => address = str_of(key, v)?,
                "enableController" | "enable_controller" => {
                    if bool_of(key, v)?.is_some() {
                        log_once(
                            key,
                            "accepted and ignored: netsleuth has no KubeSkoop controller \
                             (no IP cache, capture or diagnosis tasks)",
                        );
                    }
                }
                "controllerAddr" => {
                    if str_of(key, v)?.is_some() {
                        log_once(key, "accepted and ignored: netsleuth has no controller");
                    }
                }
                "metrics" => metrics = mapping_of(key, v)?,
                "metric_config" => metric_config = mapping_of(key, v)?,
                "event" => event = Some(mapping_of(key, v)?),
                _ => event_config = Some(mapping_of(key, v)?),
            }
        }
        if let Some(m) = metrics {
            for (key, v) in keyed("metrics", m, METRICS_KEYS, &[])? {
                let at = path("metrics", key);
                if key == "probes" {
                    ks.metrics.probes = list_of(&at, v)?;
                    if ks.metrics.probes.is_none() {
                        // `probes:` left empty by a template: no probes, as in KubeSkoop.
                        ks.metrics.probes = Some(Vec::new());
                    }
                } else {
                    for (i, l) in list_of(&at, v)?.unwrap_or_default().iter().enumerate() {
                        match l {
                            Value::String(s) => ks.metrics.additional_labels.push(s.clone()),
                            other => return type_err(&format!("{at}[{i}]"), "a string", other),
                        }
                    }
                }
            }
        }
        if let Some(m) = metric_config {
            if metrics.is_some() {
                return Err(ConfigError(
                    "metric_config: KubeSkoop's older schema; give `metrics` or `metric_config`, \
                     not both"
                        .into(),
                ));
            }
            for (key, v) in keyed("metric_config", m, METRIC_CONFIG_KEYS, &[])? {
                let at = path("metric_config", key);
                match key {
                    "port" => old_port = port_of(&at, v)?,
                    "probes" => ks.metrics.probes = Some(list_of(&at, v)?.unwrap_or_default()),
                    "interval" => {
                        if int_of(&at, v)?.is_some() {
                            log_once(
                                &at,
                                "accepted and ignored: netsleuth reads every figure at scrape \
                                 time, there is no cache to refresh",
                            );
                        }
                    }
                    "verbose" => {
                        if bool_of(&at, v)?.is_some() {
                            log_once(&at, "accepted and ignored: the label set is fixed");
                        }
                    }
                    _ => {
                        if list_of(&at, v)?.is_some_and(|l| !l.is_empty()) {
                            log_once(
                                &at,
                                "accepted and ignored: use metrics.additionalLabels for \
                                 static labels",
                            );
                        }
                    }
                }
            }
        }
        if let Some(m) = event {
            let mut ev = RawEvent::default();
            for (key, v) in keyed("event", m.unwrap_or(&Mapping::new()), EVENT_KEYS, &[])? {
                let at = path("event", key);
                let list = list_of(&at, v)?.unwrap_or_default();
                if key == "probes" {
                    ev.probes = list;
                } else {
                    ev.sinks = list;
                }
            }
            ks.event = Some(ev);
        }
        if let Some(m) = event_config {
            if event.is_some() {
                return Err(ConfigError(
                    "event_config: KubeSkoop's older schema; give `event` or `event_config`, \
                     not both"
                        .into(),
                ));
            }
            let mut ev = RawEvent::default();
            let (mut loki_address, mut loki_enable, mut info_to_log) = (None, None, None);
            for (key, v) in keyed(
                "event_config",
                m.unwrap_or(&Mapping::new()),
                EVENT_CONFIG_KEYS,
                &[],
            )? {
                let at = path("event_config", key);
                match key {
                    "probes" => ev.probes = list_of(&at, v)?.unwrap_or_default(),
                    "loki_address" => loki_address = str_of(&at, v)?,
                    "loki_enable" => loki_enable = bool_of(&at, v)?,
                    "infotolog" => info_to_log = bool_of(&at, v)?,
                    _ => {
                        if int_of(&at, v)?.is_some() {
                            log_once(
                                &at,
                                "accepted and ignored: KubeSkoop's gRPC event server is gone; \
                                 events stream from GET /events on the metrics listener",
                            );
                        }
                    }
                }
            }
            // KubeSkoop pushed to Loki when both were set, and logged each event with
            // `infotolog`: the `loki` (with KubeSkoop's `addr`) and `stderr` sinks.
            if info_to_log == Some(true) {
                ev.sinks.push(sink("stderr", None));
            }
            match (loki_enable, loki_address.filter(|a| !a.is_empty())) {
                (Some(true), Some(addr)) => ev.sinks.push(sink("loki", Some(addr))),
                (Some(true), None) => {
                    return Err(ConfigError(
                        "event_config.loki_enable: true needs event_config.loki_address".into(),
                    ))
                }
                _ => {}
            }
            ks.event = Some(ev);
        }
        ks.listen_address = match (address.filter(|a| !a.is_empty()), port.or(old_port)) {
            (Some(a), _) => Some(a.trim_start_matches("tcp://").to_string()),
            (None, Some(p)) => Some(format!(":{p}")),
            _ => None,
        };
        Ok(ks)
    }
}

/// An `event.sinks` entry `{name, args: {addr}}`.
fn sink(name: &str, addr: Option<String>) -> Value {
    let mut m = Mapping::new();
    m.insert("name".into(), name.into());
    if let Some(a) = addr {
        let mut args = Mapping::new();
        args.insert("addr".into(), a.into());
        m.insert("args".into(), Value::Mapping(args));
    }
    Value::Mapping(m)
}

/// Adds ` (did you mean `x`?)` to serde's "unknown field `a`, expected one of `b`, `c`" so
/// typos in netsleuth's own sections get the same help as the rest.
pub fn explain_serde(msg: String) -> String {
    let Some(start) = msg.find("unknown field `") else {
        return msg;
    };
    let rest = &msg[start + "unknown field `".len()..];
    let Some(end) = rest.find('`') else {
        return msg;
    };
    let got = &rest[..end];
    let known: Vec<&str> = rest[end + 1..].split('`').skip(1).step_by(2).collect();
    match closest(got, known.iter().copied()) {
        Some(k) => format!("{msg} (did you mean `{k}`?)"),
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_names() {
        assert_eq!(closest("metrix", TOP_KEYS.iter().copied()), Some("metrics"));
        assert_eq!(closest("evnt", TOP_KEYS.iter().copied()), Some("event"));
        assert_eq!(
            closest("Inventory", OWN_TOP_KEYS.iter().copied()),
            Some("inventory")
        );
        assert_eq!(closest("zzzzzzzz", TOP_KEYS.iter().copied()), None);
        assert_eq!(distance("kitten", "sitting"), 3);
    }

    #[test]
    fn serde_unknown_field_gets_a_suggestion() {
        assert_eq!(
            explain_serde(
                "inventory: unknown field `refreshIntervall`, expected one of `refreshInterval`, \
                 `maxStaleness` at line 2 column 3"
                    .into()
            ),
            "inventory: unknown field `refreshIntervall`, expected one of `refreshInterval`, \
             `maxStaleness` at line 2 column 3 (did you mean `refreshInterval`?)"
        );
        assert_eq!(explain_serde("other".into()), "other");
    }
}
