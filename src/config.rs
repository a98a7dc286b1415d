//! Configuration: YAML in KubeSkoop's shape (`metrics.probes` as names or `{name, args}`), so a
//! KubeSkoop exporter config loads unchanged, extended with our own keys. Unknown keys are
//! rejected with their name; bad values name the key.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::collectors::Collector;

mod kubeskoop;
mod probes;
mod sinks;
use kubeskoop::KubeSkoopKeys;
pub use probes::{known_metric_probes, PROBE_ALIASES, RETIRED_PROBES};

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawBpf {
    /// Kernel BTF to use where `/sys/kernel/btf/vmlinux` is absent (raw BTF or an ELF with
    /// `.BTF`): the running kernel's own, its type ids attach tp_btf/fentry programs; the
    /// minimal `vendor-btf/` blobs embedded by kernel release come after it (CO-RE only).
    btf_path: Option<String>,
    /// Switch the kernel's per-program run-time stats on (BPF_ENABLE_STATS) for
    /// `netsleuth_bpf_program_run_seconds_total`; node-wide, so off by default.
    #[serde(default)]
    program_stats: bool,
    /// Where several eBPF probes hook one tracepoint, attach one program there that tail-calls
    /// the others (`src/probes/chain.rs`); `false` attaches each probe's own.
    #[serde(default = "yes")]
    chain_programs: bool,
}

fn yes() -> bool {
    true
}

impl Default for RawBpf {
    fn default() -> RawBpf {
        RawBpf {
            btf_path: None,
            program_stats: false,
            chain_programs: true,
        }
    }
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
    /// `bpf.chainPrograms`: one program per tracepoint several probes hook.
    pub bpf_chain_programs: bool,
    /// eBPF probes named in `metrics.probes` and/or `event.probes`, merged per probe.
    pub bpf_probes: Vec<crate::probes::BpfProbeConfig>,
    /// The `conntrack` event probe (`event.probes`), if listed.
    pub conntrack_events: Option<crate::probes::conntrack_events::ConntrackEventsConfig>,
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
        let probes::MetricProbes {
            probes,
            mut deferred,
            bpf: mut bpf_probes,
        } = probes::metric_probes(&ks.metrics.probes)?;
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
            conntrack_events = probes::event_probes(&ev.probes, &mut bpf_probes, &mut deferred)?;
            event_sinks = sinks::event_sinks(&ev.sinks, raw.inventory.node_name.as_ref())?;
        }
        let mut extra_labels: Vec<(String, String)> = Vec::new();
        if raw.inventory.add_node_label.unwrap_or(false) {
            let node = raw
                .inventory
                .node_name
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(crate::events::loki::default_node);
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
            bpf_chain_programs: raw.bpf.chain_programs,
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

#[cfg(test)]
mod tests;
