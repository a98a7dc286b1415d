//! eBPF probes: one module per probe, each with its descriptor (an [`EbpfProbe`]: name,
//! description, object, attach plan, maps, args, collect, decode, event types) registered in
//! [`registry::REGISTRY`], plus what they share: configuration ([`config`]), the attach-plan
//! runner ([`plan`]), the running set and its reaper ([`set`]), the totals kept across probe
//! sets ([`totals`]), the set's metrics ([`collect`]), map and histogram helpers ([`hist`]), the
//! kernel↔user record and its typed views ([`event`]) and the one event reader thread
//! ([`reader`]: epoll over every probe's ring buffer → decode → entity at the event's time →
//! [`Pipeline::publish`](crate::events::Pipeline::publish)).
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

pub mod chain;
pub mod collect;
pub mod config;
pub mod event;
pub mod hist;
pub mod layout;
pub mod plan;
pub mod reader;
pub mod registry;
pub mod set;
pub mod totals;

pub use collect::attach_point_name;
pub use config::{
    parse_attach_methods, parse_duration_ns, rate_limit_globals, BpfProbeConfig, DEFAULT_BURST,
    DEFAULT_RATE_LIMIT, DEFAULT_THRESHOLD_NS, MAX_BURST, MAX_RATE_LIMIT,
};
pub use event::{protocol_name, tcp_state, DecodeCtx, RawEvent, RAW_EVENT_LEN};
pub use hist::{
    c_str, collect_stage_histograms, per_cpu_sum, read_hist_map, sum_u64_map, Log2Hist, HIST_SLOTS,
};
pub use plan::{
    attach_point, check, kernel_btf_summary, method_family, probes_needing_btf, start_probe,
    Alternative, OptionalGroup, RunningProbe, StartError, METHODS, RL_TYPES,
};
pub use reader::{add_peer_fields, drain_event_stacks};
pub use registry::{CollectCtx, EbpfProbe, Setup};
pub use set::{reap_dead_namespaces, NetnsSeen, ProbeSet};
pub use totals::{ProbeState, LOST_HELP, SUPPRESSED_HELP};

/// The eBPF probes this build runs: a handle on the probe's descriptor ([`ProbeKind::probe`]).
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

    /// The probe's descriptor.
    pub fn probe(self) -> &'static EbpfProbe {
        registry::REGISTRY[self as usize]
    }

    pub fn name(self) -> &'static str {
        self.probe().name()
    }

    pub fn from_name(n: &str) -> Option<ProbeKind> {
        Self::ALL.into_iter().find(|k| k.name() == n)
    }

    pub fn description(self) -> &'static str {
        self.probe().description()
    }

    /// Attach plan: for each attach point, the alternatives in order of preference
    /// (tp_btf → raw_tp → fentry → kprobe; the first the running kernel accepts is used).
    pub fn plan(self) -> &'static [&'static [Alternative]] {
        self.probe().plan()
    }

    /// Optional attach point groups (used where available).
    pub fn optional(self) -> &'static [OptionalGroup] {
        self.probe().optional()
    }
}

/// The event type name of a probe's record subtype (`ns_event.type`).
pub fn event_type_of(kind: ProbeKind, t: u8) -> Option<&'static str> {
    kind.probe()
        .event_types()
        .iter()
        .find(|(st, _)| *st == t)
        .map(|(_, n)| *n)
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

#[cfg(test)]
mod registry_tests {
    use super::*;

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
    fn the_registry_is_in_probe_kind_order() {
        for (i, k) in ProbeKind::ALL.iter().enumerate() {
            assert_eq!(registry::REGISTRY[i].kind(), *k);
            assert_eq!(ProbeKind::from_name(k.name()), Some(*k));
        }
    }
}
