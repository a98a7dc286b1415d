//! What the eBPF probes count across probe sets (a reload replaces the set, Prometheus
//! counters must not go back) and the kernel's BPF run-time stats switch: a [`ProbeState`]
//! the exporter creates once and hands to every [`ProbeSet`](super::ProbeSet) it starts.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::bpf;

/// Help of `netsleuth_events_lost_total` (eBPF probes and the conntrack event probe).
pub const LOST_HELP: &str = "Events lost before netsleuth could read them: the probe's ring buffer was full (eBPF probes) or its netlink socket's receive buffer overflowed (conntrack).";
/// Help of `netsleuth_events_suppressed_total`.
pub const SUPPRESSED_HELP: &str = "Events not emitted because their type exceeded the probe's rateLimit (a token bucket per type: in the kernel for eBPF probes, per namespace in the reader for conntrack); the metrics still count them.";

/// Event counters kept across probe sets.
#[derive(Default)]
pub(super) struct Totals {
    pub by_type: BTreeMap<&'static str, u64>,
    /// Ring buffer records lost, per probe: sum over probe sets (`base`) + current.
    pub lost_base: BTreeMap<&'static str, u64>,
    pub lost_now: BTreeMap<&'static str, u64>,
    /// Events the kernel rate limit suppressed, per type, of probes no longer running.
    pub suppressed_base: BTreeMap<&'static str, u64>,
    /// (`run_time_ns`, `run_cnt`) of programs no longer running, per `program` label.
    pub run_base: BTreeMap<String, (u64, u64)>,
    /// Kernel-map entries deleted because their namespace vanished, per probe.
    pub reaped: BTreeMap<&'static str, u64>,
}

/// The probes' state that outlives a probe set: totals and the run-time stats switch.
#[derive(Default)]
pub struct ProbeState {
    totals: Mutex<Totals>,
    /// The kernel's run-time stats for the probes' programs: switched on (with
    /// `bpf.programStats: true`) when the first probe starts, and kept on while the exporter
    /// runs and the setting stays.
    run_stats: Mutex<Option<bpf::prog::RunStats>>,
    /// `bpf.programStats`, set from the config before probes start.
    want_run_stats: AtomicBool,
    /// `bpf.chainPrograms` off (the default is on), set from the config before probes start.
    no_chains: AtomicBool,
}

impl ProbeState {
    pub(super) fn with<T>(&self, f: impl FnOnce(&mut Totals) -> T) -> T {
        f(&mut self.totals.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Whether the exporter switches the kernel's BPF run-time stats on (`bpf.programStats`).
    /// They are node-wide: every BPF program on the node (the CNI's datapath too) then pays two
    /// clock reads per run, so they are off unless asked for.
    pub fn set_program_stats(&self, on: bool) {
        self.want_run_stats.store(on, Ordering::Relaxed);
    }

    /// Whether probes hooking one tracepoint run as one attached program (`bpf.chainPrograms`,
    /// on by default; see [`super::chain`]).
    pub fn set_chain_programs(&self, on: bool) {
        self.no_chains.store(!on, Ordering::Relaxed);
    }

    pub(super) fn chain_programs(&self) -> bool {
        !self.no_chains.load(Ordering::Relaxed)
    }

    /// No probe runs any more: switch the stats off if we switched them on.
    pub fn release_run_stats(&self) {
        *self.run_stats.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Whether the kernel counts the programs' run time (after the first probe started).
    pub fn run_stats_on(&self) -> bool {
        self.run_stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|s| s.on())
    }

    pub(super) fn ensure_run_stats(&self) {
        let want = self.want_run_stats.load(Ordering::Relaxed);
        let mut g = self.run_stats.lock().unwrap_or_else(|e| e.into_inner());
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
}
