//! eBPF probes: one module per probe (its object, attach plan, map reader and event decoder),
//! plus what they share here: configuration, the attach-plan machinery, the running set (one
//! [`MapCollector`] for the engine) and the one event reader thread (epoll over every probe's
//! ring buffer → decode → entity at the event's time → [`Pipeline::publish`]).
//!
//! Metrics never depend on events: a probe in `metrics.probes` counts in its kernel map; one in
//! `event.probes` also writes records to its ring buffer (`emit_events`, set before load).
//! Dropping a [`ProbeSet`] stops the reader and detaches every program.
#![forbid(unsafe_code)]

pub mod biolatency;
pub mod flow;
pub mod kernellatency;
pub mod netiftxlat;
pub mod packetloss;
pub mod socketlatency;
pub mod softirq;
pub mod stack;
pub mod tcpreset;
pub mod tcpretrans;
pub mod virtcmdlatency;
// Not eBPF: ctnetlink multicast listeners, events only (`event.probes: [conntrack]`).
pub mod conntrack_events;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::bpf::attach::Link;
use crate::bpf::kallsyms::Kallsyms;
use crate::bpf::target_btf::BtfSources;
use crate::bpf::{self, LoadOptions, Loaded};
use crate::collectors::{CollectError, MapCollector, ProbeArgs};
use crate::events::{Event, EventEntity, FieldValue, Pipeline};
use crate::inventory::Inventory;
use crate::model::{Families, MetricKind, Sink, Value};

/// The eBPF probes this build runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProbeKind {
    PacketLoss,
    TcpReset,
    TcpRetrans,
    NetifTxLat,
    Softirq,
    SocketLatency,
    KernelLatency,
    VirtCmdLatency,
    BioLatency,
    Flow,
}

/// One way to attach an attach point: the method (`tp_btf`, `raw_tp`, `fentry`/`fexit`,
/// `kprobe`/`kretprobe`) and the programs of the object that, all attached, make it (a
/// fallback may need several kernel functions for what one tracepoint sees).
pub type Alternative = (&'static str, &'static [&'static str]);

/// Optional attach points: a named group of points the probe uses where all of them attach,
/// and reports unavailable (with every alternative's reason) elsewhere; the probe runs without.
pub type OptionalGroup = (&'static str, &'static [&'static [Alternative]]);

/// The attach methods by preference, as `attachMethods` names them: tracepoints (BTF-typed,
/// then raw), then the BPF trampoline (fentry/fexit), then kprobes (kprobe/kretprobe); for the
/// per-device `flow` probe tcx links, then cls_bpf filters (`tc`).
pub const METHODS: [&str; 6] = ["tp_btf", "raw_tp", "fentry", "kprobe", "tcx", "tc"];

/// The `attachMethods` name of an alternative's method (fexit is a fentry-family method,
/// kretprobe a kprobe one).
pub fn method_family(m: &str) -> &str {
    match m {
        "fexit" => "fentry",
        "kretprobe" => "kprobe",
        m => m,
    }
}

impl ProbeKind {
    pub const ALL: [ProbeKind; 10] = [
        ProbeKind::PacketLoss,
        ProbeKind::TcpReset,
        ProbeKind::TcpRetrans,
        ProbeKind::NetifTxLat,
        ProbeKind::Softirq,
        ProbeKind::SocketLatency,
        ProbeKind::KernelLatency,
        ProbeKind::VirtCmdLatency,
        ProbeKind::BioLatency,
        ProbeKind::Flow,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ProbeKind::PacketLoss => "packetloss",
            ProbeKind::TcpReset => "tcpreset",
            ProbeKind::TcpRetrans => "tcpretrans",
            ProbeKind::NetifTxLat => "netiftxlat",
            ProbeKind::Softirq => "softirq",
            ProbeKind::SocketLatency => "socketlatency",
            ProbeKind::KernelLatency => "kernellatency",
            ProbeKind::VirtCmdLatency => "virtcmdlatency",
            ProbeKind::BioLatency => "biolatency",
            ProbeKind::Flow => "flow",
        }
    }

    pub fn from_name(n: &str) -> Option<ProbeKind> {
        Self::ALL.into_iter().find(|k| k.name() == n)
    }

    pub fn description(self) -> &'static str {
        match self {
            ProbeKind::PacketLoss => "dropped packets by kernel drop reason (skb:kfree_skb)",
            ProbeKind::TcpReset => {
                "TCP resets sent and received, by type (tcp:tcp_send_reset, tcp:tcp_receive_reset)"
            }
            ProbeKind::TcpRetrans => {
                "TCP retransmitted segments (tcp:tcp_retransmit_skb, tcp:tcp_retransmit_synack)"
            }
            ProbeKind::NetifTxLat => {
                "transmit latency in the qdisc and the driver (net:net_dev_queue/start_xmit/xmit)"
            }
            ProbeKind::Softirq => {
                "softirq scheduling delay and run time per CPU (irq:softirq_raise/entry/exit)"
            }
            ProbeKind::SocketLatency => {
                "socket read delay (sock:sk_data_ready to sock_recv_length) and TCP send delay (sock:sock_send_length to net:net_dev_start_xmit)"
            }
            ProbeKind::KernelLatency => {
                "received packets' time in the stack: to a TCP socket (net:netif_receive_skb to tcp:tcp_probe) or forwarded (to net:net_dev_queue)"
            }
            ProbeKind::VirtCmdLatency => {
                "virtio-net control command latency (virtnet_send_command; fentry/fexit or kprobes only)"
            }
            ProbeKind::BioLatency => {
                "block I/O request latency per device and operation (block:block_rq_issue to block_rq_complete)"
            }
            ProbeKind::Flow => {
                "bytes and packets per pod, direction and remote side (tc programs on pod veths and uplinks: tcx links, else cls_bpf)"
            }
        }
    }

    /// Attach plan: for each attach point, the alternatives in order of preference
    /// (tp_btf → raw_tp → fentry → kprobe; the first the running kernel accepts is used).
    pub fn plan(self) -> &'static [&'static [Alternative]] {
        match self {
            ProbeKind::PacketLoss => packetloss::PLAN,
            ProbeKind::TcpReset => tcpreset::PLAN,
            ProbeKind::TcpRetrans => tcpretrans::PLAN,
            ProbeKind::NetifTxLat => netiftxlat::PLAN,
            ProbeKind::Softirq => softirq::PLAN,
            ProbeKind::SocketLatency => socketlatency::PLAN,
            ProbeKind::KernelLatency => kernellatency::PLAN,
            ProbeKind::VirtCmdLatency => virtcmdlatency::PLAN,
            ProbeKind::BioLatency => biolatency::PLAN,
            ProbeKind::Flow => flow::PLAN,
        }
    }

    /// Optional attach point groups (used where available).
    pub fn optional(self) -> &'static [OptionalGroup] {
        match self {
            ProbeKind::KernelLatency => kernellatency::OPTIONAL,
            _ => &[],
        }
    }
}

/// An eBPF probe as configured (from `metrics.probes` and/or `event.probes`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BpfProbeConfig {
    pub kind: ProbeKind,
    /// Listed in `metrics.probes`.
    pub metrics: bool,
    /// Listed in `event.probes`: also emit events.
    pub events: bool,
    /// `enableStack` (KubeSkoop's arg): kernel stack on each event.
    pub enable_stack: bool,
    /// packetloss `excludeReasons`: drop reasons (enum names without `SKB_DROP_REASON_`) that
    /// are normal frees, neither counted nor reported.
    pub exclude_reasons: Vec<String>,
    /// Latency probes' `threshold` (`100ms` style): events only at or above it.
    pub threshold_ns: u64,
    /// softirq `softirq-types`: the softirq vectors measured (`net_rx`, `net_tx`, ...).
    pub softirq_types: Vec<String>,
    /// `rateLimit`: events per second per event type, enforced in the kernel (token bucket,
    /// `bpf-asm/include/ratelimit.h`); 0: unlimited.
    pub rate_limit: u64,
    /// `burst`: how many events of one type may come at once (bucket depth).
    pub burst: u64,
    /// `attachMethods`: only these methods of the attach plan ([`METHODS`]) are tried
    /// (troubleshooting, and tests of the fallbacks); `None`: all.
    pub attach_methods: Option<Vec<String>>,
    /// flow: its own args (`enablePortInLabel`, `interfaceName`, `maxSeries`...).
    pub flow: flow::FlowArgs,
}

/// Default `rateLimit`: events per second per event type.
pub const DEFAULT_RATE_LIMIT: u64 = 10_000;
/// Default `burst`.
pub const DEFAULT_BURST: u64 = 20_000;
/// Largest `rateLimit` (one token per nanosecond).
pub const MAX_RATE_LIMIT: u64 = 1_000_000_000;
/// Largest `burst`.
pub const MAX_BURST: u64 = 1_000_000_000;

/// The kernel token bucket's parameters (`rl_interval_ns`, `rl_depth_ns`) for `rate` events/s
/// and `burst`; (0, 0) when unlimited.
pub fn rate_limit_globals(rate: u64, burst: u64) -> Result<(u64, u64), String> {
    if rate == 0 {
        return Ok((0, 0));
    }
    if rate > MAX_RATE_LIMIT {
        return Err(format!(
            "arg `rateLimit`: {rate} events/s is above the most the kernel bucket can pace ({MAX_RATE_LIMIT}); use 0 for no limit"
        ));
    }
    if burst == 0 || burst > MAX_BURST {
        return Err(format!(
            "arg `burst`: {burst} must be between 1 and {MAX_BURST} when `rateLimit` is set"
        ));
    }
    let interval = 1_000_000_000 / rate;
    Ok((interval, interval * burst))
}

impl BpfProbeConfig {
    pub fn new(kind: ProbeKind) -> Self {
        BpfProbeConfig {
            kind,
            metrics: false,
            events: false,
            enable_stack: false,
            exclude_reasons: packetloss::DEFAULT_EXCLUDE
                .iter()
                .map(|s| s.to_string())
                .collect(),
            threshold_ns: match kind {
                ProbeKind::BioLatency => biolatency::DEFAULT_THRESHOLD_NS,
                _ => DEFAULT_THRESHOLD_NS,
            },
            softirq_types: softirq::DEFAULT_TYPES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            rate_limit: DEFAULT_RATE_LIMIT,
            burst: DEFAULT_BURST,
            attach_methods: None,
            flow: flow::FlowArgs::default(),
        }
    }

    /// A latency probe (histograms, `threshold`).
    pub fn is_latency(&self) -> bool {
        matches!(
            self.kind,
            ProbeKind::NetifTxLat
                | ProbeKind::Softirq
                | ProbeKind::SocketLatency
                | ProbeKind::KernelLatency
                | ProbeKind::VirtCmdLatency
                | ProbeKind::BioLatency
        )
    }

    /// Consume this probe's args (from either list; later ones override).
    pub fn take_args(&mut self, a: &mut ProbeArgs) -> Result<(), String> {
        if let Some(b) = a.take_bool("enableStack")? {
            self.enable_stack = b;
        }
        let count = |a: &mut ProbeArgs, key: &str| -> Result<Option<u64>, String> {
            match a.take_scalar(key)? {
                None => Ok(None),
                Some(v) => v.trim().parse::<u64>().map(Some).map_err(|_| {
                    format!("arg `{key}`: `{v}` is not a whole number of events (0 or more)")
                }),
            }
        };
        if let Some(r) = count(a, "rateLimit")? {
            self.rate_limit = r;
        }
        if let Some(b) = count(a, "burst")? {
            self.burst = b;
        }
        rate_limit_globals(self.rate_limit, self.burst)?;
        if let Some(v) = a.take_str_list("attachMethods")? {
            self.attach_methods = Some(parse_attach_methods(&v)?);
        }
        if self.is_latency() {
            if let Some(t) = a.take_str("threshold")? {
                self.threshold_ns = parse_duration_ns(&t).ok_or_else(|| {
                    format!("arg `threshold`: `{t}` is not a duration like 100ms")
                })?;
            }
        }
        if self.kind == ProbeKind::Softirq {
            if let Some(v) = a.take_str_list("softirq-types")? {
                softirq::mask(&v)?;
                self.softirq_types = v;
            }
        }
        if self.kind == ProbeKind::Flow {
            self.flow.take(a)?;
        }
        if self.kind == ProbeKind::PacketLoss {
            if let Some(v) = a.take_str_list("excludeReasons")? {
                self.exclude_reasons = v
                    .into_iter()
                    .map(|s| s.trim_start_matches("SKB_DROP_REASON_").to_string())
                    .collect();
            }
        }
        Ok(())
    }
}

/// `attachMethods` → family names ([`METHODS`]); unknown names are refused.
pub fn parse_attach_methods(v: &[String]) -> Result<Vec<String>, String> {
    v.iter()
        .map(|m| {
            let f = method_family(m.trim());
            METHODS
                .iter()
                .find(|k| **k == f)
                .map(|k| k.to_string())
                .ok_or_else(|| {
                    format!(
                        "arg `attachMethods`: unknown method `{m}` (known: {})",
                        METHODS.join(", ")
                    )
                })
        })
        .collect()
}

/// Latency probes' default event threshold: 100 ms.
pub const DEFAULT_THRESHOLD_NS: u64 = 100_000_000;

/// `100ms`, `1.5s`, `250us`, `800ns`, `2m` → nanoseconds.
pub fn parse_duration_ns(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mul = match unit.trim() {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        _ => return None,
    };
    let v = n * mul;
    (0.0..1.8e19).contains(&v).then_some(v as u64)
}

/// Per-process event counters (kept across reloads: Prometheus counters must not go back).
#[derive(Default)]
struct EventCounters {
    by_type: BTreeMap<&'static str, u64>,
    /// Ring buffer records lost, per probe: sum over probe sets (`base`) + current.
    lost_base: BTreeMap<&'static str, u64>,
    lost_now: BTreeMap<&'static str, u64>,
    /// Events the kernel rate limit suppressed, per type, of probes no longer running.
    suppressed_base: BTreeMap<&'static str, u64>,
    /// (`run_time_ns`, `run_cnt`) of programs no longer running, per `program` label.
    run_base: BTreeMap<String, (u64, u64)>,
    /// Kernel-map entries deleted because their namespace vanished, per probe.
    reaped: BTreeMap<&'static str, u64>,
}

static COUNTERS: Mutex<Option<EventCounters>> = Mutex::new(None);

fn with_counters<T>(f: impl FnOnce(&mut EventCounters) -> T) -> T {
    let mut g = COUNTERS.lock().unwrap_or_else(|e| e.into_inner());
    f(g.get_or_insert_with(EventCounters::default))
}

/// A loaded and attached probe.
pub struct RunningProbe {
    pub cfg: BpfProbeConfig,
    pub loaded: Loaded,
    /// How each attach point got attached (`tp_btf`, `raw_tp`...).
    pub methods: Vec<&'static str>,
    /// The alternative used for each attach point.
    pub attached: Vec<Alternative>,
    /// Each optional group: the methods used, or why it is unavailable here.
    pub optional: Vec<(&'static str, Result<Vec<&'static str>, String>)>,
    links: Mutex<Vec<Link>>,
    /// packetloss: drop reason value → name, from the kernel's BTF.
    pub reasons: Arc<BTreeMap<u64, String>>,
    /// The attached programs (of every attach point and attached optional group).
    pub programs: Vec<&'static str>,
    /// Detached for good and its counters moved into the totals of past probes.
    retired: AtomicBool,
    /// flow: the devices it is attached to (per-device links, kept across reloads with the
    /// probe).
    pub flow: Option<Arc<flow::State>>,
}

impl RunningProbe {
    /// Detach now (also happens on drop).
    pub fn detach(&self) {
        self.links.lock().unwrap_or_else(|e| e.into_inner()).clear();
        if let Some(f) = &self.flow {
            f.detach(&self.loaded);
        }
    }

    /// The `program` label of one of its programs: `probe/program`.
    pub fn program_label(&self, prog: &str) -> String {
        format!("{}/{prog}", self.cfg.kind.name())
    }

    /// (`run_time_ns`, `run_cnt`) per attached program, from the kernel's run-time stats.
    pub fn run_stats(&self) -> Vec<(String, bpf::KResult<(u64, u64)>)> {
        self.programs
            .iter()
            .map(|name| {
                let r = self
                    .loaded
                    .program(name)
                    .and_then(|p| bpf::prog::run_stats(p.as_fd()));
                (self.program_label(name), r)
            })
            .collect()
    }

    /// Events suppressed by the kernel rate limit, per event type.
    pub fn suppressed(&self) -> bpf::KResult<BTreeMap<&'static str, u64>> {
        let m = self.loaded.map("events_suppressed")?;
        let mut out = BTreeMap::new();
        for t in 0..RL_TYPES {
            let Some(name) = event_type_of(self.cfg.kind, t as u8) else {
                continue;
            };
            let n: u64 = m
                .lookup_percpu(&t.to_ne_bytes())?
                .unwrap_or_default()
                .iter()
                .map(|v| u64::from_ne_bytes(v[..8].try_into().unwrap_or([0; 8])))
                .sum();
            *out.entry(name).or_default() += n;
        }
        Ok(out)
    }

    /// Detach and fold its counters into the totals kept across probe sets (once).
    fn retire(&self) {
        if self.retired.swap(true, Ordering::SeqCst) {
            return;
        }
        // Final figures first, then detach: nothing runs after the links are gone.
        self.detach();
        let lost = if self.cfg.events {
            lost_of(self).ok()
        } else {
            None
        };
        let suppressed = self.suppressed().unwrap_or_default();
        let runs = self.run_stats();
        with_counters(|c| {
            let name = self.cfg.kind.name();
            if let Some(n) = lost {
                *c.lost_base.entry(name).or_default() += n;
            }
            c.lost_now.remove(name);
            for (t, n) in suppressed {
                *c.suppressed_base.entry(t).or_default() += n;
            }
            for (label, r) in runs {
                if let Ok((ns, cnt)) = r {
                    let b = c.run_base.entry(label).or_default();
                    b.0 += ns;
                    b.1 += cnt;
                }
            }
        });
    }
}

/// Help of `netsleuth_events_lost_total` (eBPF probes and the conntrack event probe).
pub const LOST_HELP: &str = "Events lost before netsleuth could read them: the probe's ring buffer was full (eBPF probes) or its netlink socket's receive buffer overflowed (conntrack).";
/// Help of `netsleuth_events_suppressed_total`.
pub const SUPPRESSED_HELP: &str = "Events not emitted because their type exceeded the probe's rateLimit (a token bucket per type: in the kernel for eBPF probes, per namespace in the reader for conntrack); the metrics still count them.";

/// Event types with their own kernel token bucket (`RL_TYPES` in `ratelimit.h`).
pub const RL_TYPES: u32 = 8;

/// The event type name of a probe's record subtype (`ns_event.type`).
pub fn event_type_of(kind: ProbeKind, t: u8) -> Option<&'static str> {
    let two = |a: &'static str, b: &'static str| match t {
        1 => Some(a),
        2 => Some(b),
        _ => None,
    };
    match kind {
        ProbeKind::PacketLoss => (t == 0).then_some(packetloss::EVENT),
        ProbeKind::TcpReset => tcpreset::type_of(t).map(|(k, _)| k),
        ProbeKind::TcpRetrans => two(tcpretrans::EVENT, tcpretrans::EVENT),
        ProbeKind::NetifTxLat => two(netiftxlat::QDISC, netiftxlat::DEVICE),
        ProbeKind::Softirq => two(softirq::SCHED, softirq::EXEC),
        ProbeKind::SocketLatency => two(socketlatency::READSLOW, socketlatency::SENDSLOW),
        ProbeKind::KernelLatency => two(kernellatency::RX, kernellatency::FORWARD),
        ProbeKind::VirtCmdLatency => (t == 1).then_some(virtcmdlatency::EVENT),
        ProbeKind::BioLatency => (t == 1).then_some(biolatency::EVENT),
        ProbeKind::Flow => None,
    }
}

/// The kernel's run-time stats for the probes' programs: switched on (with `bpf.programStats:
/// true`) when the first probe starts, and kept on while the exporter runs and the setting
/// stays.
static RUN_STATS: Mutex<Option<bpf::prog::RunStats>> = Mutex::new(None);

/// `bpf.programStats`, set from the config before probes start.
static WANT_RUN_STATS: AtomicBool = AtomicBool::new(false);

/// Whether the exporter switches the kernel's BPF run-time stats on (`bpf.programStats`).
/// They are node-wide: every BPF program on the node (the CNI's datapath too) then pays two
/// clock reads per run, so they are off unless asked for.
pub fn set_program_stats(on: bool) {
    WANT_RUN_STATS.store(on, Ordering::Relaxed);
}

/// No probe runs any more: switch the stats off if we switched them on.
pub fn release_run_stats() {
    *RUN_STATS.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

fn ensure_run_stats() {
    let want = WANT_RUN_STATS.load(Ordering::Relaxed);
    let mut g = RUN_STATS.lock().unwrap_or_else(|e| e.into_inner());
    let ours = matches!(g.as_ref(), Some(bpf::prog::RunStats::Enabled(_)));
    if g.is_some() && ours == want {
        return;
    }
    // Dropping our BPF_ENABLE_STATS fd (when the setting went off) switches them off.
    *g = None;
    let s = if want {
        bpf::prog::RunStats::enable()
    } else {
        bpf::prog::RunStats::observe("bpf.programStats is off")
    };
    match &s {
        bpf::prog::RunStats::Enabled(_) => {
            log::info!("BPF run-time stats enabled (BPF_ENABLE_STATS) for netsleuth_bpf_program_run_seconds_total")
        }
        bpf::prog::RunStats::Sysctl(why) => log::info!(
            "BPF run-time stats: {why}; netsleuth_bpf_program_run_seconds_total counts"
        ),
        bpf::prog::RunStats::Off(why) if !want => log::info!(
            "BPF run-time stats: {why} (they cost every BPF program on the node); netsleuth_bpf_program_run_seconds_total and netsleuth_bpf_program_runs_total stay 0"
        ),
        bpf::prog::RunStats::Off(why) => log::warn!(
            "BPF run-time stats unavailable: {why}; netsleuth_bpf_program_run_seconds_total and netsleuth_bpf_program_runs_total stay 0"
        ),
    }
    *g = Some(s);
}

/// Whether the kernel counts the programs' run time (after the first probe started).
pub fn run_stats_on() -> bool {
    RUN_STATS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .is_some_and(|s| s.on())
}

/// Tries each alternative of an attach point in order (only the `only` methods, when given);
/// the error lists every alternative and why it failed.
pub fn attach_point(
    l: &Loaded,
    alts: &[Alternative],
    only: Option<&[String]>,
) -> Result<(Vec<Link>, Alternative), String> {
    let mut why = Vec::new();
    for (method, progs) in alts {
        if let Some(only) = only {
            if !only.iter().any(|m| m == method_family(method)) {
                continue;
            }
        }
        let mut links = Vec::new();
        let mut failed = None;
        for prog in progs.iter() {
            match l.attach(prog) {
                Ok(link) => links.push(link),
                Err(e) => {
                    failed = Some(format!("{method} {prog}: {e}"));
                    break;
                }
            }
        }
        match failed {
            None => return Ok((links, (*method, *progs))),
            Some(f) => why.push(f),
        }
    }
    if why.is_empty() {
        let m: Vec<&str> = alts.iter().map(|(m, _)| *m).collect();
        why.push(format!(
            "attachMethods excludes every method of this attach point ({})",
            m.join(", ")
        ));
    }
    Err(why.join("; "))
}

/// Loads and attaches one probe. `Err` says why it cannot run here.
pub fn start_probe(cfg: &BpfProbeConfig, btf: &BtfSources) -> Result<RunningProbe, String> {
    let kind = cfg.kind;
    let obj = bpf::embedded::object(kind.name())
        .ok_or_else(|| format!("{}: BPF object not embedded in this build", kind.name()))?;
    let mut globals = vec![
        ("emit_events".to_string(), vec![u8::from(cfg.events)]),
        (
            "enable_stack".to_string(),
            vec![u8::from(cfg.events && cfg.enable_stack)],
        ),
    ];
    let (rl_interval, rl_depth) = if cfg.events {
        rate_limit_globals(cfg.rate_limit, cfg.burst)?
    } else {
        (0, 0)
    };
    globals.push((
        "rl_interval_ns".to_string(),
        rl_interval.to_ne_bytes().to_vec(),
    ));
    globals.push(("rl_depth_ns".to_string(), rl_depth.to_ne_bytes().to_vec()));
    if cfg.is_latency() {
        globals.push((
            "threshold_ns".to_string(),
            cfg.threshold_ns.to_ne_bytes().to_vec(),
        ));
    }
    if kind == ProbeKind::Softirq {
        globals.push((
            "types_mask".to_string(),
            softirq::mask(&cfg.softirq_types)?.to_ne_bytes().to_vec(),
        ));
    }
    let mut max_entries = Vec::new();
    if kind == ProbeKind::Flow {
        // No events, no rate limit: only its own globals.
        let (g, m) = flow::globals(&cfg.flow);
        globals = g;
        max_entries = m;
    }
    let mut reasons = BTreeMap::new();
    if kind == ProbeKind::PacketLoss {
        let (g, r) = packetloss::globals(cfg, btf)?;
        globals.extend(g);
        reasons = r;
    }
    if kind == ProbeKind::BioLatency {
        // Operation names (REQ_OP_*) from the kernel's BTF, kept where packetloss keeps its reasons.
        reasons = bpf::target_btf::kernel_btf(btf)
            .map(|k| biolatency::op_names(&k))
            .unwrap_or_default();
    }
    let loaded = bpf::load(
        obj,
        &LoadOptions {
            btf: btf.clone(),
            globals,
            programs: cfg.attach_methods.as_ref().map(|only| {
                // Restricted plans load only the programs they may attach.
                kind.plan()
                    .iter()
                    .chain(kind.optional().iter().flat_map(|(_, p)| p.iter()))
                    .flat_map(|alts| alts.iter())
                    .filter(|(m, _)| only.iter().any(|o| o == method_family(m)))
                    .flat_map(|(_, progs)| progs.iter().map(|p| p.to_string()))
                    .collect()
            }),
            max_entries,
        },
    )
    .map_err(|e| format!("load: {e}"))?;
    if kind == ProbeKind::Flow {
        // Attached per device by the `flow-devices` thread (ProbeSet), not through the plan.
        let method = flow::choose_method(&loaded, cfg.attach_methods.as_deref())
            .map_err(|e| format!("no attach method works: {e}"))?;
        let alt = *flow::PLAN[0]
            .iter()
            .find(|a| a.0 == method)
            .ok_or_else(|| format!("no plan alternative {method}"))?;
        return Ok(RunningProbe {
            cfg: cfg.clone(),
            loaded,
            methods: vec![alt.0],
            attached: vec![alt],
            optional: Vec::new(),
            links: Mutex::new(Vec::new()),
            reasons: Arc::new(reasons),
            programs: alt.1.to_vec(),
            retired: AtomicBool::new(false),
            flow: Some(Arc::new(flow::State::new(method))),
        });
    }
    let mut links = Vec::new();
    let mut attached = Vec::new();
    for alts in kind.plan() {
        let (l, a) = attach_point(&loaded, alts, cfg.attach_methods.as_deref())
            .map_err(|e| format!("no attach method works: {e}"))?;
        links.extend(l);
        attached.push(a);
    }
    // The attached programs (run-time stats per program).
    let mut programs: Vec<&'static str> =
        attached.iter().flat_map(|a| a.1.iter().copied()).collect();
    let mut optional = Vec::new();
    for (what, points) in kind.optional() {
        let mut group = Vec::new();
        let mut ms = Vec::new();
        let mut progs = Vec::new();
        let r = points.iter().try_for_each(|alts| {
            let (l, a) = attach_point(&loaded, alts, cfg.attach_methods.as_deref())?;
            group.extend(l);
            ms.push(a.0);
            progs.extend(a.1.iter().copied());
            Ok::<(), String>(())
        });
        match r {
            Ok(()) => {
                links.extend(group);
                programs.extend(progs);
                optional.push((*what, Ok(ms)));
            }
            Err(e) => optional.push((*what, Err(e))),
        }
    }
    Ok(RunningProbe {
        cfg: cfg.clone(),
        loaded,
        methods: attached.iter().map(|(m, _)| *m).collect(),
        attached,
        optional,
        links: Mutex::new(links),
        reasons: Arc::new(reasons),
        programs,
        retired: AtomicBool::new(false),
        flow: None,
    })
}

/// For `netsleuth probes`: load, attach and detach at once; how it would attach here
/// (`[attach: <method per attach point>]`, then `[<optional group>: <methods> | unavailable:
/// <why>]`), or why it cannot run.
pub fn check(cfg: &BpfProbeConfig, btf: &BtfSources) -> Result<String, String> {
    let p = start_probe(cfg, btf)?;
    p.detach();
    Ok(crate::status::attach_summary(&p))
}

/// The running eBPF probes: one metrics collector for the engine, one event reader thread.
pub struct ProbeSet {
    probes: Vec<Arc<RunningProbe>>,
    inventory: Arc<Inventory>,
    /// Namespaces in the counting maps: listed by the inventory, or missing since when.
    netns_seen: Arc<NetnsSeen>,
    pub failed: Vec<(ProbeKind, String)>,
    btf: BtfSources,
    /// The event reader and the map reaper: their stop flags and threads.
    threads: Mutex<Vec<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>>,
    kallsyms: Arc<Mutex<Option<Kallsyms>>>,
}

impl ProbeSet {
    /// Starts every configured probe; a probe that cannot run is logged and listed in
    /// `failed`, the others run.
    pub fn start(
        cfgs: &[BpfProbeConfig],
        btf: &BtfSources,
        inventory: Arc<Inventory>,
        pipeline: Option<Arc<Pipeline>>,
    ) -> ProbeSet {
        Self::restart(None, cfgs, btf, inventory, pipeline)
    }

    /// Like [`ProbeSet::start`], taking over from `previous` (a config reload): a probe whose
    /// configuration did not change keeps running as it is (same programs and maps: no
    /// detach/attach gap, no counter reset, its queued events stay in its ring buffer); the
    /// previous set's other probes are detached before their replacements attach. The previous
    /// set's event reader stops here; dropping it afterwards detaches nothing that was kept.
    pub fn restart(
        previous: Option<&ProbeSet>,
        cfgs: &[BpfProbeConfig],
        btf: &BtfSources,
        inventory: Arc<Inventory>,
        pipeline: Option<Arc<Pipeline>>,
    ) -> ProbeSet {
        let mut keep: BTreeMap<ProbeKind, Arc<RunningProbe>> = BTreeMap::new();
        if let Some(prev) = previous {
            prev.stop_threads();
            for p in &prev.probes {
                if prev.btf == *btf && cfgs.contains(&p.cfg) {
                    keep.insert(p.cfg.kind, p.clone());
                } else {
                    p.retire();
                }
            }
        }
        // Flows and events with a tuple name their peer on this node by its address.
        if cfgs.iter().any(|c| c.kind == ProbeKind::Flow || c.events) {
            inventory.learn_addresses();
        }
        if !cfgs.is_empty() {
            if let Err(e) = bpf::fs::tracefs() {
                log::debug!("tracefs: {e}");
            }
            ensure_run_stats();
        }
        let mut probes = Vec::new();
        let mut failed = Vec::new();
        for c in cfgs {
            if let Some(p) = keep.remove(&c.kind) {
                log::info!(
                    "eBPF probe {}: configuration unchanged, kept running",
                    c.kind.name()
                );
                probes.push(p);
                continue;
            }
            match start_probe(c, btf) {
                Ok(p) => {
                    log::info!(
                        "eBPF probe {} attached via {} (metrics: {}, events: {})",
                        c.kind.name(),
                        p.methods.join(", "),
                        c.metrics,
                        c.events
                    );
                    for (what, r) in &p.optional {
                        if let Err(e) = r {
                            log::info!(
                                "eBPF probe {}: {what} unavailable here (runs without): {e}",
                                c.kind.name()
                            );
                        }
                    }
                    probes.push(Arc::new(p));
                }
                Err(e) => {
                    log::error!("eBPF probe {} cannot run: {e}", c.kind.name());
                    failed.push((c.kind, e));
                }
            }
        }
        let kallsyms = previous
            .map(|p| p.kallsyms.clone())
            .unwrap_or_else(|| Arc::new(Mutex::new(None)));
        let netns_seen = previous.map(|p| p.netns_seen.clone()).unwrap_or_default();
        let inv = inventory.clone();
        let mut threads = Vec::new();
        // Dead namespaces are reaped every few seconds too, not only on scrapes: a namespace
        // that comes and goes between two scrapes is still seen alive once.
        if probes.iter().any(|p| !netns_maps(p.cfg.kind).is_empty()) {
            let stop = Arc::new(AtomicBool::new(false));
            let st = stop.clone();
            let (ps, inv, seen) = (probes.clone(), inventory.clone(), netns_seen.clone());
            match std::thread::Builder::new()
                .name("bpf-reaper".into())
                .spawn(move || {
                    let mut next = Instant::now();
                    while !st.load(Ordering::Relaxed) {
                        if Instant::now() >= next {
                            reap_dead_namespaces(&ps, &inv, &seen, Instant::now());
                            next = Instant::now() + REAP_EVERY;
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }) {
                Ok(h) => threads.push((stop, h)),
                Err(e) => log::error!("cannot start the BPF map reaper: {e}"),
            }
        }
        if let Some(p) = probes.iter().find(|p| p.flow.is_some()) {
            let stop = Arc::new(AtomicBool::new(false));
            let (st, p, inv) = (stop.clone(), p.clone(), inventory.clone());
            match std::thread::Builder::new()
                .name("flow-devices".into())
                .spawn(move || flow::device_loop(p, inv, st))
            {
                Ok(h) => threads.push((stop, h)),
                Err(e) => log::error!("cannot start the flow probe's device thread: {e}"),
            }
        }
        let ev: Vec<Arc<RunningProbe>> = probes.iter().filter(|p| p.cfg.events).cloned().collect();
        if !ev.is_empty() {
            let stop = Arc::new(AtomicBool::new(false));
            let st = stop.clone();
            let ks = kallsyms.clone();
            let pipeline = pipeline.clone();
            match std::thread::Builder::new()
                .name("bpf-events".into())
                .spawn(move || reader_loop(ev, st, inventory, pipeline, ks))
            {
                Ok(h) => threads.push((stop, h)),
                Err(e) => log::error!("cannot start the BPF event reader: {e}"),
            }
        }
        ProbeSet {
            probes,
            inventory: inv,
            netns_seen,
            failed,
            btf: btf.clone(),
            threads: Mutex::new(threads),
            kallsyms,
        }
    }

    fn stop_threads(&self) {
        let ts = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for (stop, _) in &ts {
            stop.store(true, Ordering::Relaxed);
        }
        for (_, h) in ts {
            let _ = h.join();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.probes.is_empty()
    }

    /// See [`reap_dead_namespaces`].
    pub fn reap_dead_namespaces(&self, now: Instant) -> usize {
        reap_dead_namespaces(&self.probes, &self.inventory, &self.netns_seen, now)
    }

    /// The probes not retired: a reload may have retired some of this set's probes (their
    /// counters moved to the totals of past probes) while a scrape still uses this set.
    fn live(&self) -> impl Iterator<Item = &Arc<RunningProbe>> {
        self.probes
            .iter()
            .filter(|p| !p.retired.load(Ordering::SeqCst))
    }

    pub fn running(&self) -> impl Iterator<Item = &RunningProbe> {
        self.probes.iter().map(|p| p.as_ref())
    }
}

impl Drop for ProbeSet {
    fn drop(&mut self) {
        self.stop_threads();
        for p in &self.probes {
            // A probe a newer set took over is still referenced there: it keeps running.
            if Arc::strong_count(p) == 1 {
                p.retire();
            }
        }
    }
}

/// How often the reaper thread looks for dead namespaces in the maps.
const REAP_EVERY: Duration = Duration::from_secs(5);

/// What the reaper knows of a namespace in the counting maps: `None` while the inventory lists
/// it, then since when it has been missing.
pub type NetnsSeen = Mutex<HashMap<u64, Option<Instant>>>;

/// Deletes the counting maps' entries of namespaces that have been missing from the inventory
/// for longer than [`crate::inventory::GRACE`], so that dead pods do not fill the bounded maps.
/// Only namespaces the inventory once listed are deleted: an unknown namespace (labelled by
/// its inode) may well be alive. The grace period runs from the first call that finds the
/// namespace missing, so entries never go early. Returns the number of entries deleted.
pub fn reap_dead_namespaces(
    probes: &[Arc<RunningProbe>],
    inventory: &Inventory,
    seen: &NetnsSeen,
    now: Instant,
) -> usize {
    let snap = inventory.snapshot();
    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    let mut in_maps = std::collections::HashSet::new();
    let mut dead = std::collections::HashSet::new();
    let mut total = 0;
    for p in probes {
        let mut n = 0u64;
        for name in netns_maps(p.cfg.kind) {
            let Ok(m) = p.loaded.map(name) else { continue };
            let Ok(keys) = m.keys() else { continue };
            for k in keys {
                let Some(ino) = k
                    .get(..4)
                    .and_then(|b| b.try_into().ok())
                    .map(u32::from_ne_bytes)
                else {
                    continue;
                };
                let ino = u64::from(ino);
                in_maps.insert(ino);
                if snap.by_inode(ino).is_some() {
                    seen.insert(ino, None);
                    continue;
                }
                match seen.get(&ino).copied() {
                    // Never listed: unknown, kept.
                    None => {}
                    Some(None) => {
                        seen.insert(ino, Some(now));
                    }
                    Some(Some(since))
                        if now.saturating_duration_since(since) > crate::inventory::GRACE =>
                    {
                        if m.delete(&k).unwrap_or(false) {
                            n += 1;
                        }
                        dead.insert(ino);
                    }
                    Some(Some(_)) => {}
                }
            }
        }
        if n > 0 {
            with_counters(|c| *c.reaped.entry(p.cfg.kind.name()).or_default() += n);
            total += n as usize;
        }
    }
    // Bounded by what the maps hold: forget what is gone from them.
    seen.retain(|ino, _| in_maps.contains(ino) && !dead.contains(ino));
    total
}

/// The counting maps of a probe whose keys start with the namespace inode (u32).
fn netns_maps(kind: ProbeKind) -> &'static [&'static str] {
    match kind {
        ProbeKind::PacketLoss => &["drops"],
        ProbeKind::TcpReset => &["resets"],
        ProbeKind::TcpRetrans => &["retrans"],
        ProbeKind::NetifTxLat | ProbeKind::SocketLatency => &["lat"],
        ProbeKind::KernelLatency => &["lat", "lat_tx"],
        ProbeKind::Softirq | ProbeKind::VirtCmdLatency => &[],
        ProbeKind::BioLatency => &[],
        ProbeKind::Flow => &["flows"],
    }
}

fn lost_of(p: &RunningProbe) -> bpf::KResult<u64> {
    per_cpu_sum(&p.loaded, "events_lost")
}

/// Sum of key 0 of a per-CPU u64 array.
pub fn per_cpu_sum(l: &Loaded, map: &str) -> bpf::KResult<u64> {
    let m = l.map(map)?;
    Ok(m.lookup_percpu(&0u32.to_ne_bytes())?
        .unwrap_or_default()
        .iter()
        .map(|v| u64::from_ne_bytes(v[..8].try_into().unwrap_or([0; 8])))
        .sum())
}

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
            let r = match p.cfg.kind {
                ProbeKind::PacketLoss => {
                    let ks = self.kallsyms.clone();
                    packetloss::collect(p, &mut prefix, out, &ks)
                }
                ProbeKind::TcpReset => tcpreset::collect(p, &mut prefix, out),
                ProbeKind::TcpRetrans => tcpretrans::collect(p, &mut prefix, out),
                ProbeKind::NetifTxLat => netiftxlat::collect(p, &mut prefix, out),
                ProbeKind::Softirq => softirq::collect(p, out),
                ProbeKind::SocketLatency => socketlatency::collect(p, &mut prefix, out),
                ProbeKind::KernelLatency => kernellatency::collect(p, &mut prefix, out),
                ProbeKind::VirtCmdLatency => virtcmdlatency::collect(p, out),
                ProbeKind::BioLatency => biolatency::collect(p, out),
                ProbeKind::Flow => {
                    let snap = self.inventory.snapshot();
                    flow::collect(p, &mut prefix, out, &|a| snap.peer(a).cloned())
                }
            };
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
                if let Ok(n) = lost_of(p) {
                    with_counters(|c| c.lost_now.insert(p.cfg.kind.name(), n));
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
        with_counters(|c| {
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

/// Sums a hash map of `key → u64` by a label tuple derived from the key (several kernel keys
/// may share one series).
pub fn sum_u64_map<K: Ord>(
    l: &Loaded,
    map: &str,
    mut key: impl FnMut(&[u8]) -> Option<K>,
) -> Result<BTreeMap<K, u64>, String> {
    let m = l.map(map).map_err(|e| e.to_string())?;
    let mut out = BTreeMap::new();
    for (k, v) in m.entries().map_err(|e| format!("read map {map}: {e}"))? {
        let Some(k) = key(&k) else { continue };
        let n = u64::from_ne_bytes(v.get(..8).and_then(|b| b.try_into().ok()).unwrap_or([0; 8]));
        *out.entry(k).or_default() += n;
    }
    Ok(out)
}

// ---- latency histograms ---------------------------------------------------------------------

/// Slots of `struct hist` (`bpf-asm/include/latency.h`): slot i counts [2^i, 2^(i+1)) ns, the
/// last one everything above.
pub const HIST_SLOTS: usize = 36;
/// The first slot given its own bucket: `le` = 2^10 ns (~1 µs); the slots below fold into it.
const HIST_FIRST_BUCKET: usize = 9;

/// A log2 latency histogram summed over CPUs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Log2Hist {
    pub slots: [u64; HIST_SLOTS],
    pub sum_ns: u64,
}

impl Default for Log2Hist {
    fn default() -> Self {
        Log2Hist {
            slots: [0; HIST_SLOTS],
            sum_ns: 0,
        }
    }
}

impl Log2Hist {
    /// Adds one CPU's `struct hist` (slots, then sum).
    pub fn add_raw(&mut self, b: &[u8]) {
        let at = |i: usize| {
            b.get(i * 8..i * 8 + 8)
                .and_then(|x| x.try_into().ok())
                .map(u64::from_ne_bytes)
                .unwrap_or(0)
        };
        for (i, s) in self.slots.iter_mut().enumerate() {
            *s = s.wrapping_add(at(i));
        }
        self.sum_ns = self.sum_ns.wrapping_add(at(HIST_SLOTS));
    }

    pub fn add(&mut self, o: &Log2Hist) {
        for (a, b) in self.slots.iter_mut().zip(o.slots.iter()) {
            *a = a.wrapping_add(*b);
        }
        self.sum_ns = self.sum_ns.wrapping_add(o.sum_ns);
    }

    pub fn count(&self) -> u64 {
        self.slots.iter().fold(0u64, |a, b| a.wrapping_add(*b))
    }

    /// Prometheus buckets (seconds, cumulative): `le` = 2^(i+1) ns for slots
    /// [`HIST_FIRST_BUCKET`]..`HIST_SLOTS-1`; the last slot only in `+Inf`.
    pub fn to_prometheus(&self) -> crate::model::HistogramValue {
        let mut cum: u64 = self.slots[..HIST_FIRST_BUCKET]
            .iter()
            .fold(0, |a, b| a.wrapping_add(*b));
        let mut buckets = Vec::with_capacity(HIST_SLOTS - HIST_FIRST_BUCKET);
        for i in HIST_FIRST_BUCKET..HIST_SLOTS - 1 {
            cum = cum.wrapping_add(self.slots[i]);
            buckets.push(((1u64 << (i + 1)) as f64 / 1e9, cum));
        }
        crate::model::HistogramValue {
            buckets,
            sum: self.sum_ns as f64 / 1e9,
            count: self.count(),
        }
    }
}

/// Emit a `lat` map keyed by `struct lat_key { u32 netns; u32 stage; }` as one histogram family
/// per stage (`families[stage]` = name, help), each series under its namespace's labels.
pub fn collect_stage_histograms(
    p: &RunningProbe,
    prefix: &mut dyn FnMut(u64) -> String,
    out: &mut Families,
    families: [(&str, &str); 2],
) -> Result<(), String> {
    let hists = read_hist_map(&p.loaded, "lat", |k| {
        let netns = u32::from_ne_bytes(k.get(0..4)?.try_into().ok()?);
        let stage = u32::from_ne_bytes(k.get(4..8)?.try_into().ok()?);
        Some((u64::from(netns), stage))
    })?;
    for ((inode, stage), h) in hists {
        let (name, help) = families[usize::from(stage != 0)];
        out.sink(&prefix(inode))
            .emit_histogram(name, help, &[], &h.to_prometheus());
    }
    Ok(())
}

/// Reads a hash (or per-CPU hash) of `struct hist`, summing CPUs and keys that map to one label
/// tuple.
pub fn read_hist_map<K: Ord>(
    l: &Loaded,
    map: &str,
    mut key: impl FnMut(&[u8]) -> Option<K>,
) -> Result<BTreeMap<K, Log2Hist>, String> {
    let m = l.map(map).map_err(|e| e.to_string())?;
    let mut out: BTreeMap<K, Log2Hist> = BTreeMap::new();
    for (k, v) in m.entries().map_err(|e| format!("read map {map}: {e}"))? {
        let Some(k) = key(&k) else { continue };
        let h = out.entry(k).or_default();
        for cpu in m.split_percpu(&v) {
            h.add_raw(&cpu);
        }
    }
    Ok(out)
}

/// A NUL-terminated kernel string (device name) from a key.
pub fn c_str(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

// ---- events ---------------------------------------------------------------------------------

/// The record every probe writes (`struct ns_event` in `bpf-asm/include/netprobes.h`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEvent {
    pub ts: u64,
    pub location: u64,
    pub netns: u32,
    pub reason: u32,
    pub stack_id: i32,
    pub family: u16,
    pub l4proto: u8,
    pub kind: u8,
    pub state: u8,
    pub sport: u16,
    pub dport: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

pub const RAW_EVENT_LEN: usize = 72;

impl RawEvent {
    pub fn parse(b: &[u8]) -> Option<RawEvent> {
        if b.len() < RAW_EVENT_LEN {
            return None;
        }
        let u64_at = |o: usize| u64::from_ne_bytes(b[o..o + 8].try_into().unwrap());
        let u32_at = |o: usize| u32::from_ne_bytes(b[o..o + 4].try_into().unwrap());
        let u16_at = |o: usize| u16::from_ne_bytes(b[o..o + 2].try_into().unwrap());
        Some(RawEvent {
            ts: u64_at(0),
            location: u64_at(8),
            netns: u32_at(16),
            reason: u32_at(20),
            stack_id: u32_at(24) as i32,
            family: u16_at(28),
            l4proto: b[30],
            kind: b[31],
            state: b[32],
            sport: u16_at(34),
            dport: u16_at(36),
            saddr: b[40..56].try_into().unwrap(),
            daddr: b[56..72].try_into().unwrap(),
        })
    }

    fn addr(&self, a: &[u8; 16]) -> Option<IpAddr> {
        match self.family {
            2 => Some(IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))),
            10 => Some(IpAddr::V6(Ipv6Addr::from(*a))),
            _ => None,
        }
    }

    /// `protocol, saddr, sport, daddr, dport` (KubeSkoop's tuple), when the packet was IP.
    pub fn tuple_fields(&self, ev: &mut Event) {
        let (Some(s), Some(d)) = (self.addr(&self.saddr), self.addr(&self.daddr)) else {
            return;
        };
        ev.fields.push((
            "protocol",
            FieldValue::Str(protocol_name(self.family, self.l4proto)),
        ));
        ev.fields.push(("saddr", FieldValue::Addr(s)));
        ev.fields
            .push(("sport", FieldValue::UInt(self.sport.into())));
        ev.fields.push(("daddr", FieldValue::Addr(d)));
        ev.fields
            .push(("dport", FieldValue::UInt(self.dport.into())));
    }
}

/// Protocol label: `TCP`, `UDP`, `ICMP`, `ICMPv6`, `SCTP`, `IP/<n>` for other IP protocols,
/// `other` for non-IP packets.
pub fn protocol_name(family: u16, l4: u8) -> String {
    if family != 2 && family != 10 {
        return "other".into();
    }
    match l4 {
        6 => "TCP".into(),
        17 => "UDP".into(),
        1 => "ICMP".into(),
        58 => "ICMPv6".into(),
        132 => "SCTP".into(),
        n => format!("IP/{n}"),
    }
}

/// TCP state names (include/net/tcp_states.h).
pub fn tcp_state(s: u8) -> &'static str {
    match s {
        1 => "TCP_ESTABLISHED",
        2 => "TCP_SYN_SENT",
        3 => "TCP_SYN_RECV",
        4 => "TCP_FIN_WAIT1",
        5 => "TCP_FIN_WAIT2",
        6 => "TCP_TIME_WAIT",
        7 => "TCP_CLOSE",
        8 => "TCP_CLOSE_WAIT",
        9 => "TCP_LAST_ACK",
        10 => "TCP_LISTEN",
        11 => "TCP_CLOSING",
        12 => "TCP_NEW_SYN_RECV",
        13 => "TCP_BOUND_INACTIVE",
        _ => "TCP_UNKNOWN",
    }
}

/// What a decoder gets besides the record.
pub struct DecodeCtx<'a> {
    pub probe: &'a RunningProbe,
    pub kallsyms: Option<&'a Kallsyms>,
}

fn decode(ctx: &DecodeCtx<'_>, r: &RawEvent, entity: EventEntity) -> Option<Event> {
    match ctx.probe.cfg.kind {
        ProbeKind::PacketLoss => packetloss::decode(ctx, r, entity),
        ProbeKind::TcpReset => tcpreset::decode(ctx, r, entity),
        ProbeKind::TcpRetrans => tcpretrans::decode(ctx, r, entity),
        ProbeKind::NetifTxLat => netiftxlat::decode(ctx, r, entity),
        ProbeKind::Softirq => softirq::decode(ctx, r, entity),
        ProbeKind::SocketLatency => socketlatency::decode(ctx, r, entity),
        ProbeKind::KernelLatency => kernellatency::decode(ctx, r, entity),
        ProbeKind::VirtCmdLatency => virtcmdlatency::decode(ctx, r, entity),
        ProbeKind::BioLatency => biolatency::decode(ctx, r, entity),
        ProbeKind::Flow => None,
    }
}

/// `peer_kind`, `peer_namespace`, `peer_pod`, `peer_name` of an event with a tuple: the
/// namespace on this node that has the remote address, when the other address is the event's
/// own namespace's (a socket's or a packet's local end) and exactly one namespace has the remote
/// one; empty otherwise (forwarded packets, addresses off the node), never a guess.
pub fn add_peer_fields(ev: &mut Event, snap: &crate::inventory::Snapshot, own: u64) {
    let addr = |k: &str| match ev.field(k) {
        Some(FieldValue::Addr(a)) => Some(*a),
        _ => None,
    };
    let (s, d) = (addr("saddr"), addr("daddr"));
    let (Some(s), Some(d)) = (s, d) else { return };
    let mine = |a: IpAddr| snap.addresses.get(&a) == Some(&Some(own));
    let remote = if mine(s) {
        Some(d)
    } else if mine(d) {
        Some(s)
    } else {
        None
    };
    let peer = remote
        .and_then(|a| snap.peer(a))
        .filter(|e| e.inode != own)
        .cloned();
    let get = |f: fn(&crate::inventory::Entity) -> String| {
        FieldValue::Str(peer.as_deref().map(f).unwrap_or_default())
    };
    ev.fields
        .push(("peer_kind", get(|e| e.kind.as_str().to_string())));
    ev.fields
        .push(("peer_namespace", get(|e| e.k8s_namespace.clone())));
    ev.fields.push(("peer_pod", get(|e| e.k8s_pod.clone())));
    ev.fields.push(("peer_name", get(|e| e.name.clone())));
}

fn reader_loop(
    probes: Vec<Arc<RunningProbe>>,
    stop: Arc<AtomicBool>,
    inventory: Arc<Inventory>,
    pipeline: Option<Arc<Pipeline>>,
    kallsyms: Arc<Mutex<Option<Kallsyms>>>,
) {
    let epoll = match bpf::sys::Epoll::new() {
        Ok(e) => e,
        Err(e) => {
            log::error!("BPF event reader: epoll: {e}");
            return;
        }
    };
    let mut rings = Vec::new();
    for (i, p) in probes.iter().enumerate() {
        let r = p
            .loaded
            .ringbuf("events")
            .and_then(|rb| p.loaded.map("events").map(|m| (rb, m)))
            .and_then(|(rb, m)| {
                epoll
                    .add(m.as_fd(), i as u64)
                    .map_err(|e| bpf::KError::io("epoll_ctl", e))?;
                Ok(rb)
            });
        match r {
            Ok(rb) => rings.push((p.clone(), rb)),
            Err(e) => log::error!("eBPF probe {}: no events: {e}", p.cfg.kind.name()),
        }
    }
    if probes
        .iter()
        .any(|p| p.cfg.enable_stack || p.cfg.kind == ProbeKind::PacketLoss)
    {
        let mut g = kallsyms.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_none() {
            match Kallsyms::load() {
                Ok(k) => *g = Some(k),
                Err(e) => log::warn!("kallsyms: {e}; locations and stacks stay numeric"),
            }
        }
    }
    let mut ready = Vec::new();
    let mut raw = Vec::new();
    let mut last_refresh = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        ready.clear();
        if let Err(e) = epoll.wait(&mut ready, rings.len().max(1), 200) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                log::error!("BPF event reader: epoll_wait: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        if last_refresh.elapsed() > Duration::from_secs(60) {
            last_refresh = Instant::now();
            if let Some(k) = kallsyms.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                let _ = k.refresh();
            }
        }
        for (p, rb) in rings.iter_mut() {
            raw.clear();
            rb.consume(|rec| {
                if let Some(r) = RawEvent::parse(rec) {
                    raw.push(r);
                }
            });
            if raw.is_empty() {
                continue;
            }
            let mono_now = crate::sys::monotonic_ns();
            let (inst_now, sys_now) = (Instant::now(), SystemTime::now());
            let ks = kallsyms.lock().unwrap_or_else(|e| e.into_inner());
            let ctx = DecodeCtx {
                probe: p,
                kallsyms: ks.as_ref(),
            };
            let mut stacks: HashMap<i32, Vec<String>> = HashMap::new();
            for r in &raw {
                let ago = Duration::from_nanos(mono_now.saturating_sub(r.ts));
                let at = inst_now.checked_sub(ago).unwrap_or(inst_now);
                let entity = inventory
                    .entity_at(u64::from(r.netns), at)
                    .map(|e| EventEntity::from_entity(&e))
                    .unwrap_or_else(|| EventEntity::unknown(u64::from(r.netns)));
                let Some(mut ev) = decode(&ctx, r, entity) else {
                    continue;
                };
                add_peer_fields(&mut ev, &inventory.snapshot(), u64::from(r.netns));
                ev.time = sys_now.checked_sub(ago).unwrap_or(sys_now);
                if r.stack_id >= 0 {
                    ev.stack = stacks
                        .entry(r.stack_id)
                        .or_insert_with(|| read_stack(&p.loaded, r.stack_id, ctx.kallsyms))
                        .clone();
                }
                let kind: &'static str = event_type_static(&ev.kind);
                with_counters(|c| *c.by_type.entry(kind).or_default() += 1);
                if let Some(pl) = &pipeline {
                    pl.publish(ev);
                }
            }
            // Free the stack ids: the map never fills up for good.
            if let Ok(m) = p.loaded.map("stacks") {
                for id in stacks.keys() {
                    let _ = m.delete(&(*id as u32).to_ne_bytes());
                }
            }
        }
    }
}

fn read_stack(l: &Loaded, id: i32, ks: Option<&Kallsyms>) -> Vec<String> {
    let Ok(m) = l.map("stacks") else {
        return Vec::new();
    };
    match (m.stack(id as u32), ks) {
        // Symbolized, the stack starts at the kernel function: the probe's frames are cut.
        (Ok(Some(ips)), Some(k)) => {
            stack::trim(ips.into_iter().map(|ip| k.symbolize(ip)).collect())
        }
        // Numeric, nothing tells the probe's frames apart: left whole.
        (Ok(Some(ips)), None) => ips.into_iter().map(|ip| format!("{ip:#x}")).collect(),
        _ => Vec::new(),
    }
}

/// Drains the probe's event ring and returns each event's kernel stack as symbolized (whole)
/// and as events carry it (the probe's leading frames cut). For the self-test's captures of
/// real stacks per kernel and attach method.
pub fn drain_event_stacks(p: &RunningProbe, ks: &Kallsyms) -> Vec<(Vec<String>, Vec<String>)> {
    let Ok(mut rb) = p.loaded.ringbuf("events") else {
        return Vec::new();
    };
    let mut ids = Vec::new();
    rb.consume(|rec| {
        if let Some(r) = RawEvent::parse(rec) {
            ids.push(r.stack_id);
        }
    });
    let Ok(m) = p.loaded.map("stacks") else {
        return Vec::new();
    };
    ids.into_iter()
        .filter(|id| *id >= 0)
        .filter_map(|id| m.stack(id as u32).ok().flatten())
        .map(|ips| {
            let whole: Vec<String> = ips.iter().map(|ip| ks.symbolize(*ip)).collect();
            (whole.clone(), stack::trim(whole))
        })
        .collect()
}

/// Every event type this build emits (`netsleuth_events_total{type}` keys).
pub const EVENT_TYPES: &[&str] = &[
    packetloss::EVENT,
    tcpreset::NOSOCK,
    tcpreset::PROCESS,
    tcpreset::ACTIVE,
    tcpreset::RECEIVE,
    tcpretrans::EVENT,
    netiftxlat::QDISC,
    netiftxlat::DEVICE,
    softirq::SCHED,
    softirq::EXEC,
    socketlatency::READSLOW,
    socketlatency::SENDSLOW,
    kernellatency::RX,
    kernellatency::FORWARD,
    virtcmdlatency::EVENT,
    biolatency::EVENT,
    conntrack_events::NEW,
    conntrack_events::UPDATE,
    conntrack_events::DESTROY,
    conntrack_events::EXP_NEW,
    conntrack_events::EXP_DESTROY,
];

fn event_type_static(k: &str) -> &'static str {
    EVENT_TYPES
        .iter()
        .find(|t| **t == k)
        .copied()
        .unwrap_or("OTHER")
}

#[cfg(test)]
mod latency_tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ns("100ms"), Some(100_000_000));
        assert_eq!(parse_duration_ns("1.5s"), Some(1_500_000_000));
        assert_eq!(parse_duration_ns("250us"), Some(250_000));
        assert_eq!(parse_duration_ns("2m"), Some(120_000_000_000));
        assert_eq!(parse_duration_ns("100"), None);
        assert_eq!(parse_duration_ns("fast"), None);
    }

    #[test]
    fn log2_hist_is_cumulative_and_inf_equals_count() {
        let mut h = Log2Hist::default();
        h.slots[0] = 2; // < 2 ns: folded into the first bucket
        h.slots[20] = 3; // [1.05 ms, 2.1 ms)
        h.slots[HIST_SLOTS - 1] = 1; // >= 34 s: +Inf only
        h.sum_ns = 5_000_000;
        let p = h.to_prometheus();
        assert_eq!(p.count, 6);
        assert_eq!(p.buckets.first(), Some(&(1024e-9, 2)));
        assert!(p
            .buckets
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        let at = |le: f64| p.buckets.iter().find(|b| b.0 == le).unwrap().1;
        assert_eq!(at((1u64 << 20) as f64 / 1e9), 2);
        assert_eq!(at((1u64 << 21) as f64 / 1e9), 5);
        assert_eq!(p.buckets.last().unwrap().1, 5);
        assert_eq!(p.sum, 0.005);
    }

    fn args(kind: ProbeKind, yaml: &str) -> Result<BpfProbeConfig, String> {
        let v: serde_norway::Value = serde_norway::from_str(yaml).unwrap();
        let mut a = ProbeArgs::from_yaml(kind.name(), &v)?;
        let mut c = BpfProbeConfig::new(kind);
        c.take_args(&mut a)?;
        a.finish()?;
        Ok(c)
    }

    #[test]
    fn rate_limit_args() {
        let d = BpfProbeConfig::new(ProbeKind::TcpReset);
        assert_eq!((d.rate_limit, d.burst), (DEFAULT_RATE_LIMIT, DEFAULT_BURST));
        let c = args(ProbeKind::PacketLoss, "{rateLimit: 1000, burst: 2000}").unwrap();
        assert_eq!((c.rate_limit, c.burst), (1000, 2000));
        // 1 ms per token, a bucket 2 s deep.
        assert_eq!(
            rate_limit_globals(1000, 2000),
            Ok((1_000_000, 2_000_000_000))
        );
        assert_eq!(rate_limit_globals(3, 5), Ok((333_333_333, 1_666_666_665)));
        let c = args(ProbeKind::TcpRetrans, "{rateLimit: '0'}").unwrap();
        assert_eq!(c.rate_limit, 0);
        assert_eq!(
            rate_limit_globals(0, 0),
            Ok((0, 0)),
            "0: unlimited, burst unused"
        );
        for (bad, word) in [
            ("{rateLimit: -1}", "rateLimit"),
            ("{rateLimit: 1.5}", "rateLimit"),
            ("{rateLimit: fast}", "rateLimit"),
            ("{rateLimit: 2000000000}", "rateLimit"),
            ("{burst: 0}", "burst"),
            ("{rateLimit: 10, burst: 0}", "burst"),
            ("{burst: [1]}", "burst"),
        ] {
            let e = args(ProbeKind::PacketLoss, bad).unwrap_err();
            assert!(e.contains(word), "{bad}: {e}");
        }
    }

    #[test]
    fn every_event_subtype_has_a_name() {
        assert_eq!(event_type_of(ProbeKind::PacketLoss, 0), Some("PACKETLOSS"));
        assert_eq!(event_type_of(ProbeKind::PacketLoss, 1), None);
        assert_eq!(
            event_type_of(ProbeKind::TcpReset, 1),
            Some("TCPRESET_NOSOCK")
        );
        assert_eq!(
            event_type_of(ProbeKind::TcpReset, 4),
            Some("TCPRESET_RECEIVE")
        );
        assert_eq!(event_type_of(ProbeKind::Softirq, 2), Some(softirq::EXEC));
        for k in ProbeKind::ALL {
            for t in 0..RL_TYPES as u8 {
                if let Some(n) = event_type_of(k, t) {
                    assert!(EVENT_TYPES.contains(&n), "{n}");
                }
            }
        }
    }

    #[test]
    fn attach_methods_arg() {
        let c = args(
            ProbeKind::TcpReset,
            "{attachMethods: [kprobe, fexit, raw_tp]}",
        )
        .unwrap();
        assert_eq!(
            c.attach_methods.as_deref(),
            Some(&["kprobe".to_string(), "fentry".into(), "raw_tp".into()][..])
        );
        assert_eq!(
            BpfProbeConfig::new(ProbeKind::TcpReset).attach_methods,
            None
        );
        let e = args(ProbeKind::Softirq, "{attachMethods: [uprobe]}").unwrap_err();
        assert!(e.contains("attachMethods") && e.contains("uprobe"), "{e}");
    }

    /// Every plan: tracepoints first, then fentry, then kprobe (but for the incomplete pre-6.10
    /// tcp_send_reset, the last resort); every program exists in the embedded object.
    #[test]
    fn plans_are_ordered_and_name_real_programs() {
        let rank = |m: &str| METHODS.iter().position(|k| *k == method_family(m)).unwrap();
        let last_resort = ["send_reset_noreason_btf", "send_reset_noreason_raw"];
        for kind in ProbeKind::ALL {
            let obj = crate::bpf::embedded::object(kind.name()).unwrap();
            let parsed = crate::bpf::object::Object::parse(obj).unwrap();
            let optional = kind.optional().iter().flat_map(|(_, points)| points.iter());
            for alts in kind.plan().iter().chain(optional) {
                let ranks: Vec<usize> = alts
                    .iter()
                    .filter(|(_, p)| !last_resort.contains(&p[0]))
                    .map(|(m, _)| rank(m))
                    .collect();
                assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "{kind:?}: {alts:?}");
                for (_, progs) in alts.iter() {
                    for p in progs.iter() {
                        assert!(
                            parsed.programs.iter().any(|x| x.name == *p),
                            "{kind:?}: no program {p}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn latency_args() {
        let c = args(
            ProbeKind::NetifTxLat,
            "{threshold: 250ms, enableStack: true}",
        )
        .unwrap();
        assert_eq!(c.threshold_ns, 250_000_000);
        assert!(c.enable_stack);
        assert_eq!(
            BpfProbeConfig::new(ProbeKind::SocketLatency).threshold_ns,
            100_000_000
        );
        let e = args(ProbeKind::KernelLatency, "{threshold: 100}").unwrap_err();
        assert!(e.contains("threshold"), "{e}");
        let c = args(ProbeKind::Softirq, "{softirq-types: [net_rx, timer]}").unwrap();
        assert_eq!(c.softirq_types, ["net_rx", "timer"]);
        let e = args(ProbeKind::Softirq, "{softirq-types: [net_rxx]}").unwrap_err();
        assert!(e.contains("net_rxx"), "{e}");
        // biolatency: KubeSkoop's 10 ms by default (BIOLAT_10MS), configurable.
        assert_eq!(
            BpfProbeConfig::new(ProbeKind::BioLatency).threshold_ns,
            10_000_000
        );
        let c = args(ProbeKind::BioLatency, "{threshold: 0ms}").unwrap();
        assert_eq!(c.threshold_ns, 0);
        assert!(args(ProbeKind::BioLatency, "{softirq-types: [net_rx]}").is_err());
        // Probe-specific args are refused elsewhere.
        assert!(args(ProbeKind::PacketLoss, "{threshold: 1s}").is_err());
        assert!(args(ProbeKind::NetifTxLat, "{softirq-types: [net_rx]}").is_err());
    }
}
