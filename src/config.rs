//! Configuration: YAML in KubeSkoop's shape (`metrics.probes` as names or `{name, args}`), so a
//! KubeSkoop exporter config loads unchanged, extended with our own keys. Unknown keys are
//! rejected with their name; bad values name the key.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::collectors::{self, Collector, ProbeArgs};

mod kubeskoop;
use kubeskoop::KubeSkoopKeys;

/// The config file as written: our own sections typed (their keys spelled one way, unknown
/// ones refused by serde), everything else collected in `other` and read by
/// [`KubeSkoopKeys::read`], which matches KubeSkoop's keys case-insensitively as its viper/
/// mapstructure loading did.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConfig {
    #[serde(default)]
    inventory: RawInventory,
    #[serde(default)]
    collection: RawCollection,
    #[serde(default)]
    bpf: RawBpf,
    /// Every other top-level key: KubeSkoop's (any case) or unknown.
    #[serde(flatten)]
    other: serde_norway::Mapping,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawBpf {
    /// Kernel BTF to use where `/sys/kernel/btf/vmlinux` is absent (raw BTF or an ELF with
    /// `.BTF`); `vendor-btf/` files embedded by kernel release come after it.
    btf_path: Option<String>,
    /// Switch the kernel's per-program run-time stats on (BPF_ENABLE_STATS) for
    /// `netsleuth_bpf_program_run_seconds_total`; node-wide, so off by default.
    #[serde(default)]
    program_stats: bool,
}

#[derive(Debug, Default)]
struct RawMetrics {
    /// `None` = key absent (default probe set); `Some(vec![])` = explicitly no probes.
    probes: Option<Vec<serde_norway::Value>>,
    additional_labels: Vec<String>,
}

#[derive(Debug, Default)]
struct RawEvent {
    probes: Vec<serde_norway::Value>,
    sinks: Vec<serde_norway::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawInventory {
    /// Background rescan period, e.g. `10s`.
    refresh_interval: Option<String>,
    /// A scrape rescans namespaces when the last scan is older than this, e.g. `500ms`.
    max_staleness: Option<String>,
    /// Folders holding named-netns bind mounts.
    netns_dirs: Option<Vec<String>>,
    /// Where each container runtime keeps its state (defaults include k3s/rke2).
    state_roots: Option<RawStateRoots>,
    /// Add a `k8s_node` label to every namespace's series.
    add_node_label: Option<bool>,
    /// The node's name for `k8s_node` (default: env NODE_NAME, else the hostname).
    node_name: Option<String>,
    /// Read runtime state to attribute namespaces to pods and containers (default true).
    attribution: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawStateRoots {
    /// containerd state folders (`--state`, holding `io.containerd.runtime.v2.task`).
    containerd: Option<Vec<String>>,
    /// CRI-O run roots (`--runroot`).
    crio: Option<Vec<String>>,
    /// Docker data roots (`--data-root`).
    docker: Option<Vec<String>>,
    /// Podman `{graphRoot, runRoot}` pairs.
    podman: Option<Vec<RawPodmanRoot>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPodmanRoot {
    graph_root: String,
    run_root: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawCollection {
    /// Worker threads collecting namespaces in parallel.
    workers: Option<usize>,
    /// Upper bound for one scrape's collection, e.g. `8s` (a scraper's own timeout header
    /// lowers it).
    timeout: Option<String>,
}

/// A metric probe as configured.
pub struct ProbeConfig {
    pub name: String,
    pub collector: Box<dyn Collector>,
}

impl std::fmt::Debug for ProbeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProbeConfig")
            .field("name", &self.name)
            .finish()
    }
}

/// The validated configuration.
#[derive(Debug)]
pub struct Config {
    pub probes: Vec<ProbeConfig>,
    /// Probes named in the config that this build cannot run yet (eBPF probes): kept so
    /// `netsleuth probes` and the log can say so.
    pub deferred_probes: Vec<String>,
    /// Listen address from the file (KubeSkoop's `address`/`port`), used unless the flag is given.
    pub listen_address: Option<String>,
    pub debug: bool,
    pub refresh_interval: Duration,
    pub max_staleness: Duration,
    pub netns_dirs: Vec<String>,
    /// Runtime state roots; `None` when attribution is switched off.
    pub state_roots: Option<crate::attribution::StateRoots>,
    /// Labels added to every namespace's series: `k8s_node` (if asked for), then
    /// `metrics.additionalLabels` (values may hold `${labels:KEY}`, see
    /// [`crate::attribution::template`]).
    pub extra_labels: Vec<(String, String)>,
    pub workers: usize,
    pub timeout: Duration,
    /// `event.sinks`, in order.
    pub event_sinks: Vec<crate::events::SinkConfig>,
    /// Where the BPF loader looks for kernel BTF (`bpf.btfPath`).
    pub btf: crate::bpf::target_btf::BtfSources,
    /// `bpf.programStats`: switch the kernel's BPF run-time stats on.
    pub bpf_program_stats: bool,
    /// eBPF probes named in `metrics.probes` and/or `event.probes`, merged per probe.
    pub bpf_probes: Vec<crate::probes::BpfProbeConfig>,
    /// The `conntrack` event probe (`event.probes`), if listed.
    pub conntrack_events: Option<crate::probes::conntrack_events::ConntrackEventsConfig>,
}

/// The entry for eBPF probe `kind` in `list`, created if absent.
fn bpf_entry(
    list: &mut Vec<crate::probes::BpfProbeConfig>,
    kind: crate::probes::ProbeKind,
) -> &mut crate::probes::BpfProbeConfig {
    if let Some(i) = list.iter().position(|p| p.kind == kind) {
        return &mut list[i];
    }
    list.push(crate::probes::BpfProbeConfig::new(kind));
    list.last_mut().expect("just pushed")
}

/// Config errors name the key or probe at fault.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// Parse a duration like `500ms`, `10s`, `2m`, `1h` ([`crate::units::WHOLE`]); the error
/// names `key`.
pub fn parse_duration(key: &str, s: &str) -> Result<Duration, ConfigError> {
    crate::units::parse_duration(s, &crate::units::WHOLE)
        .map_err(|e| ConfigError(format!("{key}: {e}")))
}

impl Config {
    /// The configuration without a file: the default probe set.
    pub fn default_config() -> Config {
        Self::from_raw(RawConfig::default()).expect("the built-in default configuration is valid")
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("config file {}: {e}", path.display())))?;
        Self::parse(&text)
            .map_err(|e| ConfigError(format!("config file {}: {}", path.display(), e.0)))
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        if text.len() > 1 << 20 {
            return err("larger than 1 MiB");
        }
        let raw: RawConfig = if text.trim().is_empty() {
            RawConfig::default()
        } else {
            serde_norway::from_str(text)
                .map_err(|e| ConfigError(kubeskoop::explain_serde(e.to_string())))?
        };
        Self::from_raw(raw)
    }

    fn from_raw(raw: RawConfig) -> Result<Config, ConfigError> {
        let ks = KubeSkoopKeys::read(&raw.other)?;
        let mut probes = Vec::new();
        let mut deferred = Vec::new();
        let mut bpf_probes: Vec<crate::probes::BpfProbeConfig> = Vec::new();
        match &ks.metrics.probes {
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
        let mut btf = crate::bpf::target_btf::BtfSources::default();
        if let Some(p) = raw.bpf.btf_path.as_deref() {
            if !Path::new(p).is_file() {
                return err(format!("bpf.btfPath: `{p}` is not a readable file"));
            }
            btf.path = Some(p.into());
        }
        let mut event_sinks = Vec::new();
        let mut conntrack_events = None;
        if let Some(ev) = &ks.event {
            for (i, entry) in ev.probes.iter().enumerate() {
                let at = format!("event.probes[{i}]");
                let (name, args) = probe_entry(&at, entry)?;
                let name = canonical_probe(&at, name);
                if name == crate::probes::conntrack_events::NAME {
                    if conntrack_events.is_some() {
                        return err(format!("{at}: probe `{name}` is listed twice"));
                    }
                    let mut c = crate::probes::conntrack_events::ConntrackEventsConfig::default();
                    ProbeArgs::from_yaml(&name, &args)
                        .and_then(|mut a| c.take_args(&mut a).and_then(|()| a.finish()))
                        .map_err(|e| ConfigError(format!("{at}: {e}")))?;
                    conntrack_events = Some(c);
                    continue;
                }
                if let Some(kind) = crate::probes::ProbeKind::from_name(&name) {
                    let mut a = ProbeArgs::from_yaml(&name, &args)
                        .map_err(|e| ConfigError(format!("{at}: {e}")))?;
                    let b = bpf_entry(&mut bpf_probes, kind);
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
            for (i, entry) in ev.sinks.iter().enumerate() {
                let at = format!("event.sinks[{i}]");
                let (name, args) = probe_entry(&at, entry)?;
                let mut a = ProbeArgs::from_yaml(&format!("sink {name}"), &args)
                    .map_err(|e| ConfigError(format!("{at}: {e}")))?;
                if !["stderr", "file", "loki"].contains(&name.as_str()) {
                    return err(format!(
                        "{at}: unknown sink `{name}` (known: stderr, file, loki)"
                    ));
                }
                let mut sink =
                    sink_config(&name, &mut a).map_err(|e| ConfigError(format!("{at}: {e}")))?;
                // The Loki stream's `node` follows `inventory.nodeName` when that is set and
                // the sink names none, so the events' node and the series' k8s_node agree.
                if let crate::events::SinkConfig::Loki(l) = &mut sink {
                    let node_arg = args.as_mapping().is_some_and(|m| {
                        m.keys()
                            .any(|k| k.as_str().is_some_and(|k| k.eq_ignore_ascii_case("node")))
                    });
                    if let Some(n) = raw.inventory.node_name.as_ref().filter(|n| !n.is_empty()) {
                        if !node_arg {
                            l.node = n.clone();
                        }
                    }
                }
                event_sinks.push(sink);
                a.finish().map_err(|e| ConfigError(format!("{at}: {e}")))?;
            }
        }
        let mut extra_labels: Vec<(String, String)> = Vec::new();
        if raw.inventory.add_node_label.unwrap_or(false) {
            let node = raw
                .inventory
                .node_name
                .clone()
                .filter(|n| !n.is_empty())
                .or_else(|| std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty()))
                .or_else(|| {
                    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
                    Some(h.trim().to_string())
                })
                .unwrap_or_default();
            extra_labels.push(("k8s_node".to_string(), node));
        }
        for (i, l) in ks.metrics.additional_labels.iter().enumerate() {
            let at = format!("metrics.additionalLabels[{i}]");
            let Some((k, v)) = l.split_once('=') else {
                return err(format!("{at}: `{l}` is not `name=value`"));
            };
            let k = k.trim();
            if !valid_label_name(k) {
                return err(format!("{at}: `{k}` is not a valid label name"));
            }
            if RESERVED_LABELS.contains(&k) || extra_labels.iter().any(|(e, _)| e == k) {
                return err(format!("{at}: label `{k}` is already set by the exporter"));
            }
            // KubeSkoop's `${labels:app}`: expanded per namespace from its pod's labels.
            if let Err(e) = crate::attribution::template::check(v) {
                return err(format!("{at}: label `{k}`: {e}"));
            }
            extra_labels.push((k.to_string(), v.to_string()));
        }
        let listen_address = ks.listen_address.clone();
        let refresh_interval = match &raw.inventory.refresh_interval {
            Some(s) => parse_duration("inventory.refreshInterval", s)?,
            None => Duration::from_secs(10),
        };
        let max_staleness = match &raw.inventory.max_staleness {
            Some(s) => parse_duration("inventory.maxStaleness", s)?,
            None => Duration::ZERO,
        };
        let workers = raw.collection.workers.unwrap_or_else(default_workers);
        if workers == 0 || workers > 256 {
            return err(format!(
                "collection.workers: {workers} is out of range (1..=256)"
            ));
        }
        let timeout = match &raw.collection.timeout {
            Some(s) => parse_duration("collection.timeout", s)?,
            None => Duration::from_secs(8),
        };
        if timeout.is_zero() {
            return err("collection.timeout: must be positive");
        }
        let state_roots = if raw.inventory.attribution.unwrap_or(true) {
            let mut r = crate::attribution::StateRoots::default();
            if let Some(sr) = raw.inventory.state_roots {
                let paths = |v: Vec<String>| v.into_iter().map(Into::into).collect();
                if let Some(v) = sr.containerd {
                    r.containerd = paths(v);
                }
                if let Some(v) = sr.crio {
                    r.crio = paths(v);
                }
                if let Some(v) = sr.docker {
                    r.docker = paths(v);
                }
                if let Some(v) = sr.podman {
                    r.podman = v
                        .into_iter()
                        .map(|p| (p.graph_root.into(), p.run_root.into()))
                        .collect();
                }
            }
            Some(r)
        } else {
            None
        };
        Ok(Config {
            probes,
            state_roots,
            extra_labels,
            deferred_probes: deferred,
            listen_address,
            debug: ks.debug_mode.unwrap_or(false),
            refresh_interval,
            max_staleness,
            netns_dirs: raw
                .inventory
                .netns_dirs
                .unwrap_or_else(|| vec!["/run/netns".to_string(), "/var/run/netns".to_string()]),
            workers,
            timeout,
            event_sinks,
            btf,
            bpf_program_stats: raw.bpf.program_stats,
            bpf_probes,
            conntrack_events,
        })
    }
}

/// Entity labels every namespace series already has.
const RESERVED_LABELS: [&str; 6] = [
    "netns",
    "kind",
    "k8s_namespace",
    "k8s_pod",
    "name",
    "k8s_node",
];

fn valid_label_name(k: &str) -> bool {
    let mut b = k.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
        && !k.starts_with("__")
}

fn default_workers() -> usize {
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    // Collection is CPU work (procfs reads, netlink dumps, rendering), not waiting: one worker
    // per CPU; a stuck namespace only costs its scrape's deadline.
    n.clamp(2, 16)
}

/// One `event.sinks` entry's args: `stderr`; `file` (`path`, `maxSize`, `maxBackups`); `loki`
/// (`url` or KubeSkoop's `addr`, `tenant`, `username`/`password` or `bearerToken`, `job`,
/// `node`, `batchSize`, `batchWait`, `maxBacklog`, `minBackoff`, `maxBackoff`, `maxRetries`,
/// `timeout`, `caFile`, `certFile`/`keyFile`, `insecureSkipVerify`, `format` (json or
/// protobuf), `structuredMetadata`).
fn sink_config(
    name: &str,
    a: &mut crate::collectors::ProbeArgs,
) -> Result<crate::events::SinkConfig, String> {
    use crate::events::{file, loki, SinkConfig};
    let dur = |a: &mut crate::collectors::ProbeArgs, k: &str| -> Result<Option<Duration>, String> {
        match a.take_str(k)? {
            Some(s) => parse_duration(k, &s).map(Some).map_err(|e| e.0),
            None => Ok(None),
        }
    };
    let num = |a: &mut crate::collectors::ProbeArgs, k: &str| -> Result<Option<u64>, String> {
        match a.take_scalar(k)? {
            Some(s) => s
                .parse::<u64>()
                .map(Some)
                .map_err(|_| format!("`{k}` must be a whole number, not `{s}`")),
            None => Ok(None),
        }
    };
    let size = |a: &mut crate::collectors::ProbeArgs, k: &str| -> Result<Option<u64>, String> {
        match a.take_scalar(k)? {
            Some(s) => file::parse_size(&s)
                .map(Some)
                .map_err(|e| format!("`{k}`: {e}")),
            None => Ok(None),
        }
    };
    Ok(match name {
        "stderr" => SinkConfig::Stderr,
        "file" => {
            let path = a
                .take_str("path")?
                .filter(|p| !p.is_empty())
                .ok_or("sink `file` needs args.path")?;
            let mut f = file::FileConfig::new(path);
            if let Some(v) = size(a, "maxSize")? {
                f.max_size = v;
            }
            if let Some(v) = num(a, "maxBackups")? {
                f.max_backups = u32::try_from(v).map_err(|_| "`maxBackups` is too large")?;
            }
            SinkConfig::File(f)
        }
        _ => {
            let url = match (a.take_str("url")?, a.take_str("addr")?) {
                (Some(u), None) => u,
                (None, Some(addr)) => loki::LokiConfig::url_from_addr(&addr),
                (Some(_), Some(_)) => {
                    return Err("sink `loki`: give `url` or `addr`, not both".into())
                }
                (None, None) => {
                    return Err("sink `loki` needs args.url (or KubeSkoop's addr)".into())
                }
            };
            let mut l = loki::LokiConfig::new(url);
            l.tenant = a.take_str("tenant")?.filter(|t| !t.is_empty());
            match (a.take_str("username")?, a.take_str("password")?) {
                (Some(u), p) => l.basic_auth = Some((u, p.unwrap_or_default())),
                (None, Some(_)) => return Err("`password` without `username`".into()),
                (None, None) => {}
            }
            l.bearer_token = a.take_str("bearerToken")?;
            if l.basic_auth.is_some() && l.bearer_token.is_some() {
                return Err("give basic auth or `bearerToken`, not both".into());
            }
            if let Some(j) = a.take_str("job")? {
                l.job = j;
            }
            if let Some(n) = a.take_str("node")? {
                l.node = n;
            }
            if let Some(v) = size(a, "batchSize")? {
                l.batch_size = v as usize;
            }
            if let Some(v) = dur(a, "batchWait")? {
                l.batch_wait = v;
            }
            if let Some(v) = num(a, "maxBacklog")? {
                l.max_backlog = (v as usize).max(1);
            }
            if let Some(v) = dur(a, "minBackoff")? {
                l.min_backoff = v;
            }
            if let Some(v) = dur(a, "maxBackoff")? {
                l.max_backoff = v;
            }
            if l.min_backoff > l.max_backoff {
                return Err("`minBackoff` exceeds `maxBackoff`".into());
            }
            if let Some(v) = num(a, "maxRetries")? {
                l.max_retries = u32::try_from(v).map_err(|_| "`maxRetries` is too large")?;
            }
            if let Some(v) = dur(a, "timeout")? {
                l.timeout = v;
            }
            l.ca_file = a.take_str("caFile")?.map(Into::into);
            l.cert_file = a.take_str("certFile")?.map(Into::into);
            l.key_file = a.take_str("keyFile")?.map(Into::into);
            l.insecure_skip_verify = a.take_bool("insecureSkipVerify")?.unwrap_or(false);
            if l.insecure_skip_verify {
                log::warn!(
                    "sink `loki`: insecureSkipVerify: Loki's certificate is not checked; \
                     anyone on the path can read and forge the pushes"
                );
            }
            if let Some(f) = a.take_str("format")? {
                l.format = loki::LokiFormat::parse(&f)?;
            }
            l.structured_metadata = a.take_bool("structuredMetadata")?.unwrap_or(false);
            // The URL, headers and TLS files checked now: a bad one is a config error.
            loki::LokiClient::new(&l)?;
            SinkConfig::Loki(Box::new(l))
        }
    })
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
fn probe_entry(
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What a loaded config sets up, in one line per part, for exact comparison.
    fn summary(c: &Config) -> Vec<String> {
        let names = |v: Vec<String>| v.join(",");
        let bpf = |f: fn(&crate::probes::BpfProbeConfig) -> bool| {
            names(
                c.bpf_probes
                    .iter()
                    .filter(|p| f(p))
                    .map(|p| {
                        let mut n = p.kind.name().to_string();
                        if p.enable_stack {
                            n.push_str("+stack");
                        }
                        n
                    })
                    .collect(),
            )
        };
        let sinks = c
            .event_sinks
            .iter()
            .map(|s| match s {
                crate::events::SinkConfig::Loki(l) => format!("loki {}", l.url),
                other => other.kind().to_string(),
            })
            .collect();
        vec![
            format!("listen {:?}", c.listen_address),
            format!("debug {}", c.debug),
            format!(
                "procfs {}",
                names(c.probes.iter().map(|p| p.name.clone()).collect())
            ),
            format!("bpf-metrics {}", bpf(|p| p.metrics)),
            format!("bpf-events {}", bpf(|p| p.events)),
            format!("deferred {}", names(c.deferred_probes.clone())),
            format!("sinks {}", names(sinks)),
            format!("labels {:?}", c.extra_labels),
        ]
    }

    fn fixture(name: &str) -> Vec<String> {
        let path = format!(
            "{}/tests/fixtures/kubeskoop-configs/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        match Config::load(Path::new(&path)) {
            Ok(c) => summary(&c),
            Err(e) => vec![format!("error {e}")],
        }
    }

    /// Every KubeSkoop config in its repositories loads, and means what it meant there.
    #[test]
    fn kubeskoop_fixtures_configure_what_they_say() {
        let helm = [
            "listen Some(\":9102\")",
            "debug false",
            "procfs conntrack,qdisc,netdev,io,sock,tcpsummary,tcp,tcpext,udp",
            "bpf-metrics packetloss,flow,tcpretrans",
            "bpf-events packetloss,tcpretrans,tcpreset",
            "deferred ",
            "sinks stderr",
            "labels []",
        ];
        assert_eq!(fixture("helm-chart.yaml"), helm);
        // The website's chart: `debugmode:` rendered empty is no value.
        assert_eq!(fixture("website-chart-kubeskoop.yaml"), helm);
        // The commented example is one multi-line label whose value is filled from pod labels.
        let mut labelled = helm.map(String::from);
        labelled[7] = "labels [(\"application\", \"${labels:application} businessline=${labels:businessline} \
                       department=${labels:department} environment=environment\")]"
            .to_string();
        assert_eq!(fixture("helm-chart-additional-labels.yaml"), labelled);
        assert_eq!(
            fixture("helm-chart-0.3.0.yaml"),
            [format!(
                "error config file {}/tests/fixtures/kubeskoop-configs/helm-chart-0.3.0.yaml: \
                 unknown key `events` (did you mean `event`?)",
                env!("CARGO_MANIFEST_DIR")
            )]
        );
        assert_eq!(
            fixture("skoopbundle.yaml"),
            [
                "listen Some(\":9102\")",
                "debug true",
                "procfs conntrack,qdisc,netdev,io,sock,tcpsummary,tcp,tcpext,udp",
                "bpf-metrics socketlatency,packetloss,flow,tcpretrans",
                "bpf-events packetloss,tcpretrans,tcpreset",
                "deferred ",
                "sinks stderr,loki http://loki-service:3100/loki/api/v1/push",
                "labels []",
            ]
        );
        let docs = [
            "listen Some(\":9102\")",
            "debug true",
            "procfs netdev,io,sock,tcpsummary,tcp,tcpext,udp",
            "bpf-metrics socketlatency,packetloss,flow",
            "bpf-events packetloss,tcpreset",
            "deferred info",
            "sinks stderr,loki http://loki-service:3100/loki/api/v1/push",
            "labels []",
        ];
        assert_eq!(fixture("skoopbundle-2024-04-02.yaml"), docs);
        assert_eq!(fixture("website-docs-configuration.yaml"), docs);
        assert_eq!(
            fixture("skoopbundle-2023-09-25.yaml"),
            [
                "listen Some(\":9102\")",
                "debug true",
                "procfs netdev,io,sock,tcpsummary,tcp,tcpext,udp",
                "bpf-metrics socketlatency,packetloss",
                "bpf-events packetloss,tcpreset",
                "deferred ",
                "sinks stderr,loki http://loki-service:3100/loki/api/v1/push",
                "labels []",
            ]
        );
        let old = |softirq_at: usize| {
            let mut bpf = vec!["socketlatency", "packetloss", "virtcmdlatency"];
            bpf.insert(softirq_at, "softirq");
            [
                "listen Some(\":9102\")".to_string(),
                "debug true".to_string(),
                "procfs netdev,io,sock,tcpsummary,tcp,tcpext,udp".to_string(),
                format!("bpf-metrics {}", bpf.join(",")),
                "bpf-events packetloss,tcpreset".to_string(),
                "deferred ".to_string(),
                "sinks loki http://loki-service:3100/loki/api/v1/push".to_string(),
                "labels []".to_string(),
            ]
        };
        assert_eq!(fixture("skoopbundle-2023-08-09.yaml"), old(2));
        assert_eq!(fixture("vagrant-skoop-deploy.yaml"), old(2));
        assert_eq!(
            fixture("net-exporter-config.yaml"),
            [
                "listen Some(\":9102\")",
                "debug true",
                "procfs conntrack,qdisc,netdev,io,sock,tcpsummary,tcp,tcpext,udp",
                "bpf-metrics kernellatency,packetloss,flow,tcpretrans",
                "bpf-events kernellatency,packetloss,tcpretrans,biolatency,tcpreset",
                "deferred ",
                "sinks stderr",
                "labels []",
            ]
        );
        assert_eq!(
            fixture("website-docs-sidecar.yaml"),
            [
                "listen Some(\":9102\")",
                "debug true",
                "procfs netdev,io,sock,tcpsummary,tcp,tcpext,udp",
                "bpf-metrics ",
                "bpf-events ",
                "deferred ",
                "sinks ",
                "labels []",
            ]
        );
        assert_eq!(
            fixture("website-chart-kubeskoop-exporter.yaml"),
            [
                "listen Some(\":9102\")",
                "debug false",
                "procfs netdev,io,tcpext,tcpsummary,tcp,sock,softnet,udp",
                "bpf-metrics socketlatency,packetloss,softirq,virtcmdlatency,kernellatency",
                "bpf-events packetloss,tcpreset",
                "deferred ",
                "sinks loki http://loki-service.skoop.svc.cluster.local:3100/loki/api/v1/push",
                "labels []",
            ]
        );
    }

    fn parse_err(yaml: &str) -> String {
        match Config::parse(yaml) {
            Ok(_) => panic!("{yaml}: loaded"),
            Err(e) => e.0,
        }
    }

    #[test]
    fn kubeskoop_keys_any_case_own_keys_one_spelling() {
        let c = Config::parse(
            "DEBUGMODE: true\nPort: 9200\nEnableController: false\nControllerAddr: x\n\
             Metrics:\n  Probes: [{Name: netdev, Args: {Devices: eth0}}]\n  ADDITIONALLABELS: [a=b]\n\
             EVENT:\n  Sinks: [stderr]\n",
        )
        .unwrap();
        assert_eq!(c.listen_address.as_deref(), Some(":9200"));
        assert!(c.debug);
        assert_eq!(c.probes[0].name, "netdev");
        assert_eq!(c.extra_labels, vec![("a".to_string(), "b".to_string())]);
        assert_eq!(c.event_sinks.len(), 1);
        // `address` wins over `port`, which wins over the old metric_config.port.
        let c = Config::parse("address: tcp://127.0.0.1:9300\nport: 9200\n").unwrap();
        assert_eq!(c.listen_address.as_deref(), Some("127.0.0.1:9300"));
        for (yaml, msg) in [
            (
                "Inventory: {}\n",
                "unknown key `Inventory` (did you mean `inventory`?)",
            ),
            (
                "metrix: {}\n",
                "unknown key `metrix` (did you mean `metrics`?)",
            ),
            (
                "debugMode: true\ndebugmode: false\n",
                "`debugMode` and `debugmode` are the same key (KubeSkoop's keys are matched \
                 without regard to case): give it once",
            ),
            (
                "metrics:\n  probes: [netdev]\n  frobs: 1\n",
                "metrics: unknown key `frobs` (did you mean `probes`?)",
            ),
            (
                "debugmode: yes please\n",
                "debugMode: must be true or false, not \"yes please\"",
            ),
            (
                "port: 99999\n",
                "port: must be a port number (0..65535), not 99999",
            ),
            (
                "port: [1]\n",
                "port: must be a port number (0..65535), not a list",
            ),
            (
                "enableController: 1\n",
                "enableController: must be true or false, not 1",
            ),
            ("address: 9102\n", "address: must be a string, not 9102"),
            (
                "metrics: [netdev]\n",
                "metrics: must be a mapping, not a list",
            ),
            (
                "metrics:\n  probes: netdev\n",
                "metrics.probes: must be a list, not \"netdev\"",
            ),
            (
                "metrics:\n  additionalLabels: [{a: b}]\n",
                "metrics.additionalLabels[0]: must be a string, not a mapping",
            ),
            (
                "metric_config:\n  interval: 15s\n",
                "metric_config.interval: must be a whole number, not \"15s\"",
            ),
            (
                "event_config:\n  loki_enable: true\n",
                "event_config.loki_enable: true needs event_config.loki_address",
            ),
            (
                "metrics: {}\nmetric_config: {}\n",
                "metric_config: KubeSkoop's older schema; give `metrics` or `metric_config`, \
                 not both",
            ),
            (
                "zzzzzzzzzzzz: 1\n",
                "unknown key `zzzzzzzzzzzz` (known: debugMode, port, address, enableController, \
                 enable_controller, controllerAddr, metrics, event, metric_config, event_config, \
                 inventory, collection, bpf)",
            ),
        ] {
            assert_eq!(parse_err(yaml), msg, "{yaml}");
        }
        let e = parse_err("inventory:\n  refreshIntervall: 10s\n");
        assert!(
            e.starts_with("inventory: unknown field `refreshIntervall`"),
            "{e}"
        );
        assert!(e.ends_with("(did you mean `refreshInterval`?)"), "{e}");
    }

    #[test]
    fn probe_names_old_aliases_and_the_whole_known_list() {
        let c = Config::parse(
            "metrics:\n  probes: [net_softirq, netiftxlatency, virtcmdLatency]\n\
             event:\n  probes: [netsoftirq, netif_txlatency]\n",
        )
        .unwrap();
        let kinds: Vec<(&str, bool, bool)> = c
            .bpf_probes
            .iter()
            .map(|p| (p.kind.name(), p.metrics, p.events))
            .collect();
        assert_eq!(
            kinds,
            [
                ("softirq", true, true),
                ("netiftxlat", true, true),
                ("virtcmdlatency", true, false)
            ]
        );
        // Both names of one probe in one list are the same probe twice: collapsed when the
        // args agree, an error when they do not.
        let c = Config::parse("metrics:\n  probes: [softirq, net_softirq]\n").unwrap();
        assert_eq!(c.bpf_probes.len(), 1);
        assert_eq!(
            parse_err(
                "metrics:\n  probes: [softirq, {name: net_softirq, args: {threshold: 1ms}}]\n"
            ),
            "metrics.probes[1]: probe `softirq` is listed twice"
        );
        let known = known_metric_probes();
        for k in crate::probes::ProbeKind::ALL {
            assert!(known.contains(&k.name()), "{}", k.name());
        }
        for s in collectors::registry() {
            assert!(known.contains(&s.name), "{}", s.name);
        }
        assert_eq!(
            parse_err("metrics:\n  probes: [packetlos]\n"),
            format!(
                "metrics.probes[0]: unknown probe `packetlos` (known: {}; did you mean \
                 `packetloss`?)",
                known.join(", ")
            )
        );
        assert_eq!(
            parse_err("metrics:\n  probes: [net-softirq]\n"),
            format!(
                "metrics.probes[0]: unknown probe `net-softirq` (known: {}; did you mean \
                 `softirq`?)",
                known.join(", ")
            )
        );
        let ebpf: Vec<&str> = crate::probes::ProbeKind::ALL
            .iter()
            .map(|k| k.name())
            .collect();
        assert_eq!(
            parse_err("event:\n  probes: [tcpreste]\n"),
            format!(
                "event.probes[0]: unknown event probe `tcpreste` (known: {}; did you mean \
                 `tcpreset`?)",
                ebpf.join(", ")
            )
        );
        assert_eq!(
            parse_err("metrics:\n  probes: ['map[name:netdev]']\n"),
            "metrics.probes[0]: `map[name:netdev]` is how Go prints a mapping (a Helm template \
             wrote `- {{ . }}` for a `{name: ...}` entry); write the entry as `- name: ...`"
        );
        // A repeat with the same args is collapsed as KubeSkoop did; other args are an error.
        let c = Config::parse("metrics:\n  probes: [netdev, netdev]\n").unwrap();
        assert_eq!(c.probes.len(), 1);
        assert_eq!(
            parse_err("metrics:\n  probes: [netdev, {name: netdev, args: {devices: eth0}}]\n"),
            "metrics.probes[1]: probe `netdev` is listed twice"
        );
    }

    #[test]
    fn loki_node_follows_inventory_node_name() {
        let node = |extra: &str| {
            let c = Config::parse(&format!(
                "inventory:\n  nodeName: worker-7\nevent:\n  sinks:\n  - name: loki\n    args: {{url: http://127.0.0.1:1/loki/api/v1/push{extra}}}\n"
            ))
            .unwrap();
            match &c.event_sinks[0] {
                crate::events::SinkConfig::Loki(l) => l.node.clone(),
                _ => unreachable!(),
            }
        };
        assert_eq!(node(""), "worker-7");
        assert_eq!(node(", node: other"), "other");
    }

    #[test]
    fn additional_labels_static_and_pod_labels() {
        let c = Config::parse(
            "metrics:\n  additionalLabels: [\"cluster=dev\", \"app=${labels:app}\"]\ninventory:\n  addNodeLabel: true\n  nodeName: n1\n",
        )
        .unwrap();
        assert_eq!(
            c.extra_labels,
            vec![
                ("k8s_node".to_string(), "n1".to_string()),
                ("cluster".to_string(), "dev".to_string()),
                ("app".to_string(), "${labels:app}".to_string())
            ]
        );
        for bad in [
            "[\"nolabel\"]",
            "[\"1x=a\"]",
            "[\"k8s_pod=x\"]",
            "[\"__a=b\"]",
            "[\"app-name=${labels:app}\"]",
            "[\"app=${labels:app\"]",
            "[\"app=${env:HOME}\"]",
        ] {
            let e = Config::parse(&format!("metrics:\n  additionalLabels: {bad}\n")).unwrap_err();
            assert!(e.0.contains("metrics.additionalLabels[0]"), "{e}");
        }
    }

    #[test]
    fn state_roots() {
        let c = Config::parse(
            "inventory:\n  stateRoots:\n    containerd: [/x]\n    podman: [{graphRoot: /g, runRoot: /r}]\n",
        )
        .unwrap();
        let r = c.state_roots.unwrap();
        assert_eq!(r.containerd, vec![std::path::PathBuf::from("/x")]);
        assert_eq!(r.podman, vec![("/g".into(), "/r".into())]);
        assert_eq!(r.docker, vec![std::path::PathBuf::from("/var/lib/docker")]);
        assert!(Config::parse("inventory:\n  stateRoots: {cri: [/x]}\n").is_err());
        let off = Config::parse("inventory:\n  attribution: false\n").unwrap();
        assert!(off.state_roots.is_none());
    }
}
