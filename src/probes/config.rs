//! eBPF probe configuration: [`BpfProbeConfig`] and the args every eBPF probe takes
//! (`enableStack`, `rateLimit`, `burst`, `attachMethods`, `threshold` for latency probes); the
//! probe-specific ones are taken by the probe's descriptor ([`EbpfProbe::take_args`](super::EbpfProbe::take_args)).
#![forbid(unsafe_code)]

use super::{flow, method_family, packetloss, softirq, ProbeKind, METHODS};
use crate::collectors::ProbeArgs;

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
            threshold_ns: kind
                .probe()
                .default_threshold_ns()
                .unwrap_or(DEFAULT_THRESHOLD_NS),
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
        self.kind.probe().default_threshold_ns().is_some()
    }

    /// Consume this probe's args (from either list; later ones override).
    pub fn take_args(&mut self, a: &mut ProbeArgs) -> Result<(), String> {
        if let Some(b) = a.take_bool("enableStack")? {
            self.enable_stack = b;
        }
        take_rate_limit(a, &mut self.rate_limit, &mut self.burst)?;
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
        self.kind.probe().take_args(self, a)
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
    crate::units::parse_duration(s, &crate::units::FRACTIONAL)
        .ok()
        .map(|d| d.as_nanos() as u64)
}

/// `rateLimit` and `burst` (a whole number of events each), checked together: the eBPF
/// probes' and the conntrack event probe's.
pub fn take_rate_limit(a: &mut ProbeArgs, rate: &mut u64, burst: &mut u64) -> Result<(), String> {
    let count = |a: &mut ProbeArgs, key: &str| -> Result<Option<u64>, String> {
        match a.take_scalar(key)? {
            None => Ok(None),
            Some(v) => v.trim().parse::<u64>().map(Some).map_err(|_| {
                format!("arg `{key}`: `{v}` is not a whole number of events (0 or more)")
            }),
        }
    };
    if let Some(r) = count(a, "rateLimit")? {
        *rate = r;
    }
    if let Some(b) = count(a, "burst")? {
        *burst = b;
    }
    rate_limit_globals(*rate, *burst)?;
    Ok(())
}

#[cfg(test)]
mod tests {
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
