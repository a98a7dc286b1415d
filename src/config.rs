//! Configuration: YAML in KubeSkoop's shape (`metrics.probes` as names or `{name, args}`), so a
//! KubeSkoop exporter config loads unchanged, extended with our own keys. Unknown keys are
//! rejected with their name; bad values name the key.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::collectors::{self, Collector, ProbeArgs};

/// The config file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    // KubeSkoop keys, accepted so its configs load unchanged.
    debug_mode: Option<bool>,
    address: Option<String>,
    port: Option<u16>,
    enable_controller: Option<bool>,
    controller_addr: Option<String>,
    #[serde(default)]
    metrics: RawMetrics,
    event: Option<RawEvent>,
    // Our own keys.
    #[serde(default)]
    inventory: RawInventory,
    #[serde(default)]
    collection: RawCollection,
    #[serde(default)]
    bpf: RawBpf,
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawMetrics {
    /// `None` = key absent (default probe set); `Some(vec![])` = explicitly no probes.
    probes: Option<Vec<serde_norway::Value>>,
    #[serde(default)]
    additional_labels: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawEvent {
    #[serde(default)]
    probes: Vec<serde_norway::Value>,
    #[serde(default)]
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
    /// Static labels added to every namespace's series: `k8s_node` (if asked for), then
    /// `metrics.additionalLabels`.
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

/// Parse a duration like `500ms`, `10s`, `2m`, `1h` (Prometheus style).
pub fn parse_duration(key: &str, s: &str) -> Result<Duration, ConfigError> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = match num.parse() {
        Ok(n) => n,
        Err(_) => {
            return err(format!(
                "{key}: `{s}` is not a duration (like 500ms, 10s, 2m)"
            ))
        }
    };
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return err(format!("{key}: `{s}` has no valid unit (ms, s, m, h)")),
    };
    Ok(d)
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
            serde_norway::from_str(text).map_err(|e| ConfigError(e.to_string()))?
        };
        Self::from_raw(raw)
    }

    fn from_raw(raw: RawConfig) -> Result<Config, ConfigError> {
        let mut probes = Vec::new();
        let mut deferred = Vec::new();
        let mut bpf_probes: Vec<crate::probes::BpfProbeConfig> = Vec::new();
        match &raw.metrics.probes {
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
                for (i, entry) in list.iter().enumerate() {
                    let (name, args) = probe_entry(&format!("metrics.probes[{i}]"), entry)?;
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
                        None if collectors::NOT_YET_AVAILABLE.contains(&name.as_str()) => {
                            deferred.push(name)
                        }
                        None => {
                            let known: Vec<&str> =
                                collectors::registry().iter().map(|s| s.name).collect();
                            return err(format!(
                                "metrics.probes[{i}]: unknown probe `{name}` (known: {})",
                                known.join(", ")
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
        if let Some(ev) = &raw.event {
            for (i, entry) in ev.probes.iter().enumerate() {
                let at = format!("event.probes[{i}]");
                let (name, args) = probe_entry(&at, entry)?;
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
                    return err(format!("event.probes[{i}]: unknown event probe `{name}`"));
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
        for (i, l) in raw.metrics.additional_labels.iter().enumerate() {
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
            if v.contains("${") {
                // KubeSkoop's `${labels:app}`: pod labels are not in the runtimes' state
                // files, only behind the CRI API.
                log::warn!(
                    "{at}: `{l}` takes its value from pod labels, which needs the CRI API feature \
                     (not in this build); label `{k}` skipped"
                );
                continue;
            }
            extra_labels.push((k.to_string(), v.to_string()));
        }
        let listen_address = match (&raw.address, raw.port) {
            (Some(a), _) if !a.is_empty() => Some(a.trim_start_matches("tcp://").to_string()),
            (_, Some(p)) => Some(format!(":{p}")),
            _ => None,
        };
        let _ = (&raw.enable_controller, &raw.controller_addr);
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
            debug: raw.debug_mode.unwrap_or(false),
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

/// A probe/sink list entry: a bare name or `{name, args}`.
fn probe_entry(
    at: &str,
    v: &serde_norway::Value,
) -> Result<(String, serde_norway::Value), ConfigError> {
    use serde_norway::Value;
    match v {
        Value::String(s) => Ok((s.clone(), Value::Null)),
        Value::Mapping(m) => {
            let mut name = None;
            let mut args = Value::Null;
            for (k, v) in m {
                match k.as_str() {
                    Some("name") => match v {
                        Value::String(s) => name = Some(s.clone()),
                        _ => return err(format!("{at}.name: must be a string")),
                    },
                    Some("args") => args = v.clone(),
                    Some(other) => {
                        return err(format!("{at}: unknown key `{other}` (expected name, args)"))
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
    fn additional_labels_static_applied_dynamic_skipped() {
        let c = Config::parse(
            "metrics:\n  additionalLabels: [\"cluster=dev\", \"app=${labels:app}\"]\ninventory:\n  addNodeLabel: true\n  nodeName: n1\n",
        )
        .unwrap();
        assert_eq!(
            c.extra_labels,
            vec![
                ("k8s_node".to_string(), "n1".to_string()),
                ("cluster".to_string(), "dev".to_string())
            ]
        );
        for bad in [
            "[\"nolabel\"]",
            "[\"1x=a\"]",
            "[\"k8s_pod=x\"]",
            "[\"__a=b\"]",
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
