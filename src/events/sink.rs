//! What every sink shares: the `EventSink` trait, its counters and drop reasons, the `stderr`
//! sink, and `SinkConfig` (a sink as configured).

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{file, loki, Event};

/// Why an event was not delivered: the `stage` and `reason` labels of
/// `netsleuth_events_dropped_total`. Every event a sink accepts ends up either sent or in
/// exactly one of these (or, for a while, in a sink's backlog).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The sink's queue was full (the sink is slower than the kernel readers).
    QueueFull,
    /// A write to the file or stderr failed.
    WriteError,
    /// The sink's backlog (Loki down or slow) reached its bound.
    BacklogFull,
    /// The server refused the batch with a 4xx other than 429: retrying would not help.
    Rejected,
    /// Retries with backoff ran out.
    RetriesExhausted,
    /// Still undelivered when the sink was closed (exit, or removed by a reload).
    Shutdown,
    /// A live `/events` client did not keep up and was cut off.
    SlowClient,
}

impl DropReason {
    pub const ALL: [DropReason; 7] = [
        DropReason::QueueFull,
        DropReason::WriteError,
        DropReason::BacklogFull,
        DropReason::Rejected,
        DropReason::RetriesExhausted,
        DropReason::Shutdown,
        DropReason::SlowClient,
    ];

    /// (`stage`, `reason`).
    pub fn labels(self) -> (&'static str, &'static str) {
        match self {
            DropReason::QueueFull => ("queue", "full"),
            DropReason::WriteError => ("sink", "write_error"),
            DropReason::BacklogFull => ("sink", "backlog_full"),
            DropReason::Rejected => ("sink", "rejected"),
            DropReason::RetriesExhausted => ("sink", "retries_exhausted"),
            DropReason::Shutdown => ("sink", "shutdown"),
            DropReason::SlowClient => ("stream", "slow_client"),
        }
    }
}

/// One sink's counters (kept across reloads while the sink's name stays configured).
#[derive(Debug, Default)]
pub struct SinkCounters {
    pub name: String,
    /// Events delivered (written, or accepted by Loki).
    pub sent: AtomicU64,
    /// Failed writes or push requests (each may cover many events).
    pub failed: AtomicU64,
    /// Push requests retried after a 429, a 5xx or a connection error.
    pub retried: AtomicU64,
    /// Events held by the sink, not yet delivered (Loki's batch and backlog).
    pub backlog: AtomicU64,
    drops: [AtomicU64; 7],
}

impl SinkCounters {
    pub fn new(name: impl Into<String>) -> SinkCounters {
        SinkCounters {
            name: name.into(),
            ..Default::default()
        }
    }

    pub fn drop_events(&self, why: DropReason, n: u64) {
        if n == 0 {
            return;
        }
        let i = DropReason::ALL.iter().position(|d| *d == why).unwrap_or(0);
        self.drops[i].fetch_add(n, Ordering::Relaxed);
        log::debug!("event sink {}: {n} events dropped ({why:?})", self.name);
    }

    pub fn dropped(&self, why: DropReason) -> u64 {
        let i = DropReason::ALL.iter().position(|d| *d == why).unwrap_or(0);
        self.drops[i].load(Ordering::Relaxed)
    }

    pub fn dropped_total(&self) -> u64 {
        self.drops.iter().map(|d| d.load(Ordering::Relaxed)).sum()
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

/// Where events go. A sink runs on its own thread and does its own accounting in `c`.
pub trait EventSink: Send {
    fn name(&self) -> &str;
    /// Take one event (write it, or buffer it).
    fn write(&mut self, ev: &Event, c: &SinkCounters);
    /// Called when the queue is empty and at least every [`EventSink::wait`]: push out what is
    /// buffered if the sink's policy says so.
    fn flush(&mut self, _c: &SinkCounters) {}
    /// How long the sink thread may sleep waiting for events before calling `flush` again.
    fn wait(&self) -> Duration {
        Duration::from_secs(1)
    }
    /// The queue is closed: deliver what is buffered (bounded in time), count the rest.
    fn close(&mut self, c: &SinkCounters) {
        self.flush(c)
    }
}

/// The log line on standard error.
pub struct StderrSink;

impl EventSink for StderrSink {
    fn name(&self) -> &str {
        "stderr"
    }
    fn write(&mut self, ev: &Event, c: &SinkCounters) {
        let mut e = std::io::stderr().lock();
        match writeln!(e, "{}", ev.log_line()) {
            Ok(()) => {
                c.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                c.failed.fetch_add(1, Ordering::Relaxed);
                c.drop_events(DropReason::WriteError, 1);
            }
        }
    }
}

/// A sink as configured (`event.sinks`).
#[derive(Clone, Debug, PartialEq)]
pub enum SinkConfig {
    Stderr,
    File(file::FileConfig),
    Loki(Box<loki::LokiConfig>),
}

impl SinkConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            SinkConfig::Stderr => "stderr",
            SinkConfig::File(_) => "file",
            SinkConfig::Loki(_) => "loki",
        }
    }

    pub fn open(&self) -> std::io::Result<Box<dyn EventSink>> {
        Ok(match self {
            SinkConfig::Stderr => Box::new(StderrSink),
            SinkConfig::File(f) => Box::new(file::FileSink::open(f.clone())?),
            SinkConfig::Loki(l) => Box::new(loki::LokiSink::new((**l).clone())),
        })
    }
}
