//! The `conntrack` event probe (`event.probes: [conntrack]`, KubeSkoop's name): conntrack
//! entries and expectations created, updated and destroyed, from ctnetlink's multicast groups.
//!
//! Not an eBPF probe: the kernel announces these itself. One netlink socket per network
//! namespace listens to `NFNLGRP_CONNTRACK_NEW/UPDATE/DESTROY` and
//! `NFNLGRP_CONNTRACK_EXP_NEW/DESTROY` (a netlink socket hears only the namespace it was
//! created in, so it is created by entering the namespace once, then kept; it is closed when
//! the namespace leaves the inventory). One thread (`conntrack-events`) polls every socket with
//! epoll, decodes the messages ([`parse_message`], pure and fuzzed), attributes them to the
//! namespace's entity and publishes [`Event`]s of the types [`NEW`], [`UPDATE`], [`DESTROY`],
//! [`EXP_NEW`], [`EXP_DESTROY`] into the same pipeline as the eBPF events.
//!
//! Bounded: a listener's receive buffer is `rcvbuf` bytes; when the kernel finds it full it
//! drops the message, counts it in the socket's `sk_drops` and reports `ENOBUFS` on the next
//! `recv`. Those drops are read back with `SO_MEMINFO` (exact, one per lost event) into
//! `netsleuth_events_lost_total{probe="conntrack"}` and logged; the listener keeps running.
//! Events over `rateLimit`/`burst` (the eBPF probes' token bucket, here in the reader, and per
//! namespace: one pod's connection churn cannot silence another's events) are counted in
//! `netsleuth_events_suppressed_total{type}`.
//!
//! The socket keeps its namespace alive (a socket holds a reference to its netns), so an inode
//! cannot be reused while we listen there; closing the listener when the inventory no longer
//! lists the namespace lets it go. Events of the namespace's own teardown are not heard.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netlink_packet_core::NlasIterator;
use netlink_sys::{Socket, SocketAddr};

use crate::collectors::netlink::{walk_with_flags, NlError};
use crate::collectors::ProbeArgs;
use crate::events::{Event, EventEntity, FieldValue, Pipeline};
use crate::inventory::{Entity, Inventory};
use crate::model::{MetricKind, Sink, Value};

/// The probe's name in `event.probes`.
pub const NAME: &str = "conntrack";

/// Event types (KubeSkoop's names).
pub const NEW: &str = "ConntrackNew";
pub const UPDATE: &str = "ConntrackUpdate";
pub const DESTROY: &str = "ConntrackDestroy";
pub const EXP_NEW: &str = "ConntrackExpNew";
pub const EXP_DESTROY: &str = "ConntrackExpDestroy";

/// Every event type of this probe.
pub const EVENT_TYPES: [&str; 5] = [NEW, UPDATE, DESTROY, EXP_NEW, EXP_DESTROY];

/// Default `rcvbuf`: each listener's receive buffer (the kernel doubles it for bookkeeping). A
/// ctnetlink event costs about 1 KiB of it, so about 2000 events may wait for the reader.
pub const DEFAULT_RCVBUF: u64 = 1 << 20;
/// Largest `rcvbuf`.
pub const MAX_RCVBUF: u64 = 1 << 30;

mod decode;
mod listen;

pub use decode::*;
use listen::{open_socket, reader_loop};

// ---- configuration ----------------------------------------------------------------------------

/// The probe as configured in `event.probes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConntrackEventsConfig {
    /// `rateLimit`: events per second per event type; 0: unlimited.
    pub rate_limit: u64,
    /// `burst`: bucket depth.
    pub burst: u64,
    /// `rcvbuf`: each listener socket's receive buffer, bytes (`SO_RCVBUFFORCE`).
    pub rcvbuf: u64,
}

impl Default for ConntrackEventsConfig {
    fn default() -> Self {
        ConntrackEventsConfig {
            rate_limit: super::DEFAULT_RATE_LIMIT,
            burst: super::DEFAULT_BURST,
            rcvbuf: DEFAULT_RCVBUF,
        }
    }
}

impl ConntrackEventsConfig {
    /// Consume `rateLimit`, `burst` (as the eBPF probes take them) and `rcvbuf`.
    pub fn take_args(&mut self, a: &mut ProbeArgs) -> Result<(), String> {
        super::config::take_rate_limit(a, &mut self.rate_limit, &mut self.burst)?;
        if let Some(s) = a.take_scalar("rcvbuf")? {
            let n =
                crate::events::file::parse_size(&s).map_err(|e| format!("arg `rcvbuf`: {e}"))?;
            if n == 0 || n > MAX_RCVBUF {
                return Err(format!(
                    "arg `rcvbuf`: {n} bytes is out of range (1 to {MAX_RCVBUF})"
                ));
            }
            self.rcvbuf = n;
        }
        Ok(())
    }
}

// ---- rate limit -------------------------------------------------------------------------------

/// The eBPF probes' token bucket (`ratelimit.h`), in the reader (one per namespace and event
/// type): `interval` ns per token, a
/// bucket `depth` ns deep (`burst` tokens). Generic cell rate: `tat` is when the bucket would
/// be full again.
#[derive(Clone, Copy, Debug, Default)]
pub struct Bucket {
    interval: u64,
    depth: u64,
    tat: u64,
}

impl Bucket {
    pub fn new(rate: u64, burst: u64) -> Bucket {
        let (interval, depth) = super::rate_limit_globals(rate, burst).unwrap_or((0, 0));
        Bucket {
            interval,
            depth,
            tat: 0,
        }
    }

    /// Whether an event at `now_ns` passes (and takes a token).
    pub fn admit(&mut self, now_ns: u64) -> bool {
        if self.interval == 0 {
            return true;
        }
        let tat = self.tat.max(now_ns);
        if tat - now_ns > self.depth - self.interval {
            return false;
        }
        self.tat = tat + self.interval;
        true
    }
}

// ---- counters ---------------------------------------------------------------------------------

/// Process-wide counters (kept across reloads: Prometheus counters never go back).
struct Stats {
    published: [AtomicU64; 5],
    suppressed: [AtomicU64; 5],
    lost: AtomicU64,
    listeners: AtomicU64,
    /// Set once the probe first ran: only then are its series on the page.
    started: AtomicBool,
}

static STATS: Stats = Stats {
    published: [const { AtomicU64::new(0) }; 5],
    suppressed: [const { AtomicU64::new(0) }; 5],
    lost: AtomicU64::new(0),
    listeners: AtomicU64::new(0),
    started: AtomicBool::new(false),
};

/// Events lost to full receive buffers so far (all listeners, all runs).
pub fn lost_total() -> u64 {
    STATS.lost.load(Ordering::Relaxed)
}

/// The probe's series, on the same families as the eBPF events'.
struct Emitter;

impl crate::selfmetrics::SelfMetrics for Emitter {
    fn emit(&self, s: &mut dyn Sink) {
        if !STATS.started.load(Ordering::Relaxed) {
            return;
        }
        for (i, t) in EVENT_TYPES.iter().enumerate() {
            s.emit(
                "netsleuth_events_total",
                "Events read from the kernel, by type.",
                MetricKind::Counter,
                &[("type", t)],
                Value::U64(STATS.published[i].load(Ordering::Relaxed)),
            );
        }
        s.emit(
            "netsleuth_events_lost_total",
            super::LOST_HELP,
            MetricKind::Counter,
            &[("probe", NAME)],
            Value::U64(STATS.lost.load(Ordering::Relaxed)),
        );
        for (i, t) in EVENT_TYPES.iter().enumerate() {
            s.emit(
                "netsleuth_events_suppressed_total",
                super::SUPPRESSED_HELP,
                MetricKind::Counter,
                &[("type", t)],
                Value::U64(STATS.suppressed[i].load(Ordering::Relaxed)),
            );
        }
        s.emit(
            "netsleuth_conntrack_event_listeners",
            "Network namespaces the conntrack event probe listens in (one ctnetlink socket each).",
            MetricKind::Gauge,
            &[],
            Value::U64(STATS.listeners.load(Ordering::Relaxed)),
        );
    }
}

// ---- the running probe ------------------------------------------------------------------------

struct Running {
    cfg: ConntrackEventsConfig,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

static RUNNING: Mutex<Option<Running>> = Mutex::new(None);
static REGISTERED: AtomicBool = AtomicBool::new(false);

/// Run the probe as configured (`None`: not configured): started on the first call, kept as is
/// when the configuration did not change (a reload), restarted when it did, stopped when it
/// is gone. Its series are added to `engine`'s self-metrics once.
pub fn apply(
    cfg: Option<&ConntrackEventsConfig>,
    inventory: &Arc<Inventory>,
    pipeline: &Option<Arc<Pipeline>>,
    engine: &dyn crate::selfmetrics::Registry,
) {
    let mut g = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    if let (Some(r), Some(c)) = (g.as_ref(), cfg) {
        if &r.cfg == c && !r.thread.is_finished() {
            log::info!("conntrack event probe: configuration unchanged, kept running");
            return;
        }
    }
    if let Some(r) = g.take() {
        stop_running(r);
    }
    let Some(cfg) = cfg else {
        return;
    };
    if !REGISTERED.swap(true, Ordering::SeqCst) {
        engine.add_self_metrics(Arc::new(Emitter));
    }
    STATS.started.store(true, Ordering::Relaxed);
    let stop = Arc::new(AtomicBool::new(false));
    let (st, inv, pl, c) = (
        stop.clone(),
        inventory.clone(),
        pipeline.clone(),
        cfg.clone(),
    );
    match std::thread::Builder::new()
        .name("conntrack-events".into())
        .spawn(move || reader_loop(c, st, inv, pl))
    {
        Ok(thread) => {
            log::info!(
                "conntrack event probe started (rcvbuf {} bytes, rateLimit {}, burst {})",
                cfg.rcvbuf,
                cfg.rate_limit,
                cfg.burst
            );
            *g = Some(Running {
                cfg: cfg.clone(),
                stop,
                thread,
            });
        }
        Err(e) => log::error!("conntrack event probe: cannot start its thread: {e}"),
    }
}

/// Stop the probe (exit): every listener is closed.
pub fn stop() {
    if let Some(r) = RUNNING.lock().unwrap_or_else(|e| e.into_inner()).take() {
        stop_running(r);
    }
}

fn stop_running(r: Running) {
    r.stop.store(true, Ordering::Relaxed);
    let _ = r.thread.join();
}

/// Where `nf_conntrack` is loaded (built in or as a module), every namespace has conntrack.
/// Without it we do not listen: binding ctnetlink's groups would make the kernel load it.
fn conntrack_loaded() -> bool {
    std::path::Path::new("/proc/sys/net/netfilter/nf_conntrack_max").exists()
}

/// For `netsleuth probes`: whether a listener can be opened here, or why not.
pub fn check() -> Result<String, String> {
    if !conntrack_loaded() {
        return Err(
            "nf_conntrack is not loaded (no /proc/sys/net/netfilter/nf_conntrack_max)".into(),
        );
    }
    open_socket(4096).map(|_| {
        "conntrack and expectation events (ctnetlink multicast), one listener per namespace"
            .to_string()
    })
}

/// The probe's row in `netsleuth probes` (`events` when listed under `event.probes`).
pub fn status_row(enabled: bool) -> crate::status::ProbeRow {
    let (available, details) = match check() {
        Ok(how) => (true, how),
        Err(e) => (false, e),
    };
    crate::status::ProbeRow {
        name: NAME.to_string(),
        source: "events",
        enabled: if enabled { "events" } else { "no" },
        available: Some(available),
        running: enabled && available,
        details,
        attach: Vec::new(),
        optional: Vec::new(),
        default_fields: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_admits_burst_then_rate() {
        let mut b = Bucket::new(10, 3); // 100 ms a token, 3 at once
        let t0 = 5_000_000_000;
        assert!(b.admit(t0) && b.admit(t0) && b.admit(t0));
        assert!(!b.admit(t0));
        assert!(!b.admit(t0 + 99_000_000));
        assert!(b.admit(t0 + 100_000_000));
        assert!(!b.admit(t0 + 100_000_000));
        // Idle long enough: a full burst again, never more.
        let t1 = t0 + 10_000_000_000;
        assert_eq!((0..10).filter(|_| b.admit(t1)).count(), 3);
        let mut free = Bucket::new(0, 0);
        assert!((0..100_000).all(|_| free.admit(1)));
    }

    fn args(yaml: &str) -> Result<ConntrackEventsConfig, String> {
        let v: serde_norway::Value = serde_norway::from_str(yaml).unwrap();
        let mut a = ProbeArgs::from_yaml(NAME, &v)?;
        let mut c = ConntrackEventsConfig::default();
        c.take_args(&mut a)?;
        a.finish()?;
        Ok(c)
    }

    #[test]
    fn config_args() {
        let d = ConntrackEventsConfig::default();
        assert_eq!((d.rate_limit, d.burst, d.rcvbuf), (10_000, 20_000, 1 << 20));
        let c = args("{rateLimit: 5, burst: 7, rcvbuf: 64KiB}").unwrap();
        assert_eq!((c.rate_limit, c.burst, c.rcvbuf), (5, 7, 65536));
        assert_eq!(args("{rcvbuf: 4096}").unwrap().rcvbuf, 4096);
        for (bad, word) in [
            ("{rcvbuf: 0}", "rcvbuf"),
            ("{rcvbuf: lots}", "rcvbuf"),
            ("{rcvbuf: 2GiB}", "rcvbuf"),
            ("{rateLimit: -1}", "rateLimit"),
            ("{rateLimit: 10, burst: 0}", "burst"),
            ("{enableStack: true}", "enableStack"),
        ] {
            let e = args(bad).unwrap_err();
            assert!(e.contains(word), "{bad}: {e}");
        }
    }
}
