//! Abnormal kernel events (drops, resets, retransmits, slow sockets...): the model, its two
//! renderings (KubeSkoop's log line and a JSON line with the same data), the `stderr` and
//! `file` sinks, and a bounded pipeline that never blocks the kernel readers: when a sink is
//! slow, events are dropped and counted.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};

pub mod file;
pub mod loki;
pub mod loki_proto;
pub mod stream;

use crate::inventory::{Entity, EntityKind};

/// A typed field value.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldValue {
    Str(String),
    Int(i64),
    UInt(u64),
    Addr(IpAddr),
    /// Seconds (latencies).
    Seconds(f64),
}

impl std::fmt::Display for FieldValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FieldValue::Str(s) => f.write_str(s),
            FieldValue::Int(v) => write!(f, "{v}"),
            FieldValue::UInt(v) => write!(f, "{v}"),
            FieldValue::Addr(a) => write!(f, "{a}"),
            FieldValue::Seconds(v) => write!(f, "{v}"),
        }
    }
}

/// Who an event happened to: the namespace's entity labels.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventEntity {
    pub netns: u64,
    pub kind: String,
    pub k8s_namespace: String,
    pub k8s_pod: String,
    pub name: String,
    /// The entity's extra labels (`k8s_node`, `metrics.additionalLabels` with `${labels:KEY}`
    /// expanded from its pod's labels): the same names and values as its metrics have.
    pub labels: Vec<(String, String)>,
}

impl EventEntity {
    pub fn from_entity(e: &Entity) -> EventEntity {
        EventEntity {
            netns: e.inode,
            kind: e.kind.as_str().to_string(),
            k8s_namespace: e.k8s_namespace.clone(),
            k8s_pod: e.k8s_pod.clone(),
            name: e.name.clone(),
            labels: e.extra_labels.clone(),
        }
    }

    /// A namespace the inventory does not know: labelled by its inode, never dropped.
    pub fn unknown(netns: u64) -> EventEntity {
        EventEntity {
            netns,
            kind: "unknown".into(),
            ..Default::default()
        }
    }

    pub fn is_host(&self) -> bool {
        self.kind == EntityKind::Host.as_str()
    }
}

/// One event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub time: SystemTime,
    /// `PACKETLOSS`, `TCPRESET_NOSOCK`, ... (KubeSkoop's names).
    pub kind: String,
    pub entity: EventEntity,
    /// Ordered fields: protocol, saddr, sport, daddr, dport, then probe-specific ones.
    pub fields: Vec<(&'static str, FieldValue)>,
    /// Kernel stack, innermost first, as `sym+0xoff [module]`, from the kernel function that
    /// acted (the probe's own frames cut: [`crate::probes::stack`]).
    pub stack: Vec<String>,
}

impl Event {
    pub fn new(kind: impl Into<String>, entity: EventEntity) -> Event {
        Event {
            time: SystemTime::now(),
            kind: kind.into(),
            entity,
            fields: Vec::new(),
            stack: Vec::new(),
        }
    }

    pub fn with(mut self, key: &'static str, v: FieldValue) -> Event {
        self.fields.push((key, v));
        self
    }

    pub fn field(&self, key: &str) -> Option<&FieldValue> {
        self.fields.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// KubeSkoop's line: `type=TCPRESET_NOSOCK pod=web-0 namespace=default protocol=TCP
    /// saddr=198.18.0.2 sport=443 daddr=198.18.0.1 dport=33488`, then our own keys (`netns`,
    /// `kind`, `name`), the entity's extra labels (`app=web`: `metrics.additionalLabels`), the
    /// fields, and the stack as `stack=sym+0x1f/sym2+0x8`.
    pub fn log_line(&self) -> String {
        let mut s = String::with_capacity(160);
        let _ = write!(
            s,
            "type={} pod={} namespace={} netns={} kind={} name={}",
            self.kind,
            quote(&self.entity.k8s_pod),
            quote(&self.entity.k8s_namespace),
            self.entity.netns,
            self.entity.kind,
            quote(&self.entity.name)
        );
        for (k, v) in &self.entity.labels {
            let _ = write!(s, " {k}={}", quote(v));
        }
        for (k, v) in &self.fields {
            let _ = write!(s, " {k}={}", quote(&v.to_string()));
        }
        if !self.stack.is_empty() {
            let _ = write!(s, " stack={}", quote(&self.stack.join("/")));
        }
        s
    }

    /// [`Event::to_json`] written straight into `out` (same data; keys in the event's order,
    /// time first; no intermediate `Value`: the file sink's hot path).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let ns = self
            .time
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let st = |out: &mut Vec<u8>, v: &str| {
            let _ = serde_json::to_writer(&mut *out, v);
        };
        let _ = write!(out, "{{\"time\":\"{ns}\",\"type\":");
        st(out, &self.kind);
        let _ = write!(out, ",\"netns\":{},\"kind\":", self.entity.netns);
        st(out, &self.entity.kind);
        out.extend_from_slice(b",\"k8s_namespace\":");
        st(out, &self.entity.k8s_namespace);
        out.extend_from_slice(b",\"k8s_pod\":");
        st(out, &self.entity.k8s_pod);
        out.extend_from_slice(b",\"name\":");
        st(out, &self.entity.name);
        out.extend_from_slice(b",\"labels\":{");
        for (i, (k, v)) in self.entity.labels.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            st(out, k);
            out.push(b':');
            st(out, v);
        }
        out.extend_from_slice(b"},\"fields\":{");
        for (i, (k, v)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            st(out, k);
            out.push(b':');
            match v {
                FieldValue::Str(s) => st(out, s),
                FieldValue::Int(i) => {
                    let _ = write!(out, "{i}");
                }
                FieldValue::UInt(u) => {
                    let _ = write!(out, "{u}");
                }
                FieldValue::Addr(a) => {
                    let _ = write!(out, "\"{a}\"");
                }
                FieldValue::Seconds(f) => {
                    let _ = serde_json::to_writer(&mut *out, f);
                }
            }
        }
        out.extend_from_slice(b"},\"stack\":[");
        for (i, f) in self.stack.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            st(out, f);
        }
        out.extend_from_slice(b"]}");
    }

    /// The same data as one JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        let ns = self
            .time
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mut fields = serde_json::Map::new();
        for (k, v) in &self.fields {
            let jv = match v {
                FieldValue::Str(s) => serde_json::Value::from(s.as_str()),
                FieldValue::Int(i) => serde_json::Value::from(*i),
                FieldValue::UInt(u) => serde_json::Value::from(*u),
                FieldValue::Addr(a) => serde_json::Value::from(a.to_string()),
                FieldValue::Seconds(f) => serde_json::Value::from(*f),
            };
            fields.insert((*k).to_string(), jv);
        }
        let labels: serde_json::Map<String, serde_json::Value> = self
            .entity
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
            .collect();
        serde_json::json!({
            "time": ns.to_string(),
            "type": self.kind,
            "netns": self.entity.netns,
            "kind": self.entity.kind,
            "k8s_namespace": self.entity.k8s_namespace,
            "k8s_pod": self.entity.k8s_pod,
            "name": self.entity.name,
            "labels": labels,
            "fields": fields,
            "stack": self.stack,
        })
    }
}

/// Values with spaces or quotes are quoted (logfmt style); empty values stay empty.
fn quote(v: &str) -> String {
    if v.chars().any(|c| c.is_whitespace() || c == '"' || c == '=') {
        format!("{v:?}")
    } else {
        v.to_string()
    }
}

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

/// Counters of the pipeline as a whole.
#[derive(Default, Debug)]
pub struct PipelineStats {
    /// Events published by the readers.
    pub accepted: AtomicU64,
    /// Every sink's counters, in configuration order (removed sinks stay, so the counters
    /// never go back).
    pub sinks: Mutex<Vec<Arc<SinkCounters>>>,
}

impl PipelineStats {
    fn counters(&self, name: &str) -> Arc<SinkCounters> {
        let mut v = self.sinks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = v.iter().find(|c| c.name == name) {
            return c.clone();
        }
        let c = Arc::new(SinkCounters::new(name));
        v.push(c.clone());
        c
    }

    pub fn sink(&self, name: &str) -> Option<Arc<SinkCounters>> {
        let v = self.sinks.lock().unwrap_or_else(|e| e.into_inner());
        v.iter().find(|c| c.name == name).cloned()
    }

    /// `netsleuth_events_*` and `netsleuth_event_sink_*`.
    pub fn emit(&self, s: &mut dyn crate::model::Sink) {
        use crate::model::{MetricKind, Value};
        s.emit(
            "netsleuth_events_published_total",
            "Events the kernel readers handed to the event pipeline.",
            MetricKind::Counter,
            &[],
            Value::U64(self.accepted.load(Ordering::Relaxed)),
        );
        let v = self.sinks.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for c in &v {
            for d in DropReason::ALL {
                // Live clients only drop as slow clients; sinks never do.
                if (c.name == "stream") != (d == DropReason::SlowClient) {
                    continue;
                }
                let (stage, reason) = d.labels();
                s.emit(
                    "netsleuth_events_dropped_total",
                    "Events not delivered to a sink, by pipeline stage and reason.",
                    MetricKind::Counter,
                    &[("stage", stage), ("reason", reason), ("sink", &c.name)],
                    Value::U64(c.dropped(d)),
                );
            }
        }
        let per_sink: [PerSink; 4] = [
            (
                "netsleuth_event_sink_sent_total",
                "Events delivered by the sink.",
                MetricKind::Counter,
                |c| c.sent.load(Ordering::Relaxed),
            ),
            (
                "netsleuth_event_sink_failed_total",
                "Failed writes or push requests of the sink.",
                MetricKind::Counter,
                |c| c.failed.load(Ordering::Relaxed),
            ),
            (
                "netsleuth_event_sink_retried_total",
                "Push requests the sink retried (429, 5xx, connection errors).",
                MetricKind::Counter,
                |c| c.retried.load(Ordering::Relaxed),
            ),
            (
                "netsleuth_event_sink_backlog",
                "Events held by the sink and not yet delivered.",
                MetricKind::Gauge,
                |c| c.backlog.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, kind, get) in per_sink {
            for c in &v {
                s.emit(name, help, kind, &[("sink", &c.name)], Value::U64(get(c)));
            }
        }
    }
}

/// A per-sink metric: name, help, kind, and its value.
type PerSink = (
    &'static str,
    &'static str,
    crate::model::MetricKind,
    fn(&SinkCounters) -> u64,
);

struct Slot {
    cfg: SinkConfig,
    tx: Sender<Arc<Event>>,
    counters: Arc<SinkCounters>,
    thread: std::thread::JoinHandle<()>,
}

/// Events in, one bounded queue and thread per sink, plus the live `/events` clients.
/// `publish` never blocks: a full queue drops the event for that sink and counts it.
pub struct Pipeline {
    slots: RwLock<Vec<Slot>>,
    /// Threads of sinks removed by a reload, still writing out their queue.
    retired: Mutex<Vec<std::thread::JoinHandle<()>>>,
    pub stats: Arc<PipelineStats>,
    pub streams: stream::Hub,
    queue: usize,
    /// Sinks of the last configuration that could not start: name, kind, why.
    failed: Mutex<Vec<(String, &'static str, String)>>,
}

/// One sink as `/status` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkStatus {
    pub name: String,
    pub kind: &'static str,
    /// `running`, `stopped` (its thread ended) or `failed` (it could not start: `error`).
    pub state: &'static str,
    pub error: Option<String>,
    /// Events in its queue, not yet taken by the sink thread.
    pub queued: usize,
    pub sent: u64,
    pub failed: u64,
    pub retried: u64,
    pub backlog: u64,
    /// Dropped events by `stage/reason`.
    pub dropped: Vec<(String, u64)>,
}

/// Sink names: the kind, with `-2`, `-3`... for a second sink of the same kind.
fn sink_names(cfgs: &[SinkConfig]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in cfgs {
        let k = c.kind();
        let n = out
            .iter()
            .filter(|x| x.as_str() == k || x.starts_with(&format!("{k}-")))
            .count();
        out.push(if n == 0 {
            k.to_string()
        } else {
            format!("{k}-{}", n + 1)
        });
    }
    out
}

fn spawn_sink(
    mut sink: Box<dyn EventSink>,
    c: Arc<SinkCounters>,
    queue: usize,
) -> std::io::Result<(Sender<Arc<Event>>, std::thread::JoinHandle<()>)> {
    let (tx, rx): (Sender<Arc<Event>>, Receiver<Arc<Event>>) = bounded(queue.max(1));
    let h = std::thread::Builder::new()
        .name(format!("sink-{}", c.name))
        .spawn(move || {
            loop {
                match rx.recv_timeout(sink.wait()) {
                    Ok(ev) => {
                        sink.write(&ev, &c);
                        // Take a burst, then let the sink push out (bounded so a sink with a
                        // time policy still gets its turn under a steady stream).
                        for _ in 0..8192 {
                            match rx.try_recv() {
                                Ok(ev) => sink.write(&ev, &c),
                                Err(_) => break,
                            }
                        }
                        sink.flush(&c);
                    }
                    Err(RecvTimeoutError::Timeout) => sink.flush(&c),
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            sink.close(&c);
        })?;
    Ok((tx, h))
}

impl Pipeline {
    /// A pipeline over already opened sinks (named after `EventSink::name`).
    pub fn start(sinks: Vec<Box<dyn EventSink>>, queue: usize) -> Pipeline {
        let p = Pipeline::empty(queue);
        {
            let mut slots = p.slots.write().unwrap_or_else(|e| e.into_inner());
            for sink in sinks {
                let c = p.stats.counters(sink.name());
                match spawn_sink(sink, c.clone(), queue) {
                    Ok((tx, thread)) => slots.push(Slot {
                        cfg: SinkConfig::Stderr,
                        tx,
                        counters: c,
                        thread,
                    }),
                    Err(e) => log::error!("cannot start an event sink thread: {e}"),
                }
            }
        }
        p
    }

    pub fn empty(queue: usize) -> Pipeline {
        let stats = Arc::new(PipelineStats::default());
        Pipeline {
            slots: RwLock::new(Vec::new()),
            retired: Mutex::new(Vec::new()),
            streams: stream::Hub::new(stats.counters("stream")),
            stats,
            queue,
            failed: Mutex::new(Vec::new()),
        }
    }

    /// A pipeline with the configured sinks.
    pub fn from_config(cfgs: &[SinkConfig], queue: usize) -> Pipeline {
        let p = Pipeline::empty(queue);
        p.reconfigure(cfgs);
        p
    }

    /// Make the running sinks match `cfgs`: unchanged sinks keep running with their queue,
    /// removed or changed ones are closed after writing out what they hold (in the
    /// background), new ones start. Returns the sink names now running.
    pub fn reconfigure(&self, cfgs: &[SinkConfig]) -> Vec<String> {
        let names = sink_names(cfgs);
        let mut slots = self.slots.write().unwrap_or_else(|e| e.into_inner());
        let mut old: Vec<Slot> = std::mem::take(&mut *slots);
        let mut failed = Vec::new();
        for (cfg, name) in cfgs.iter().zip(&names) {
            if let Some(i) = old
                .iter()
                .position(|s| &s.cfg == cfg && &s.counters.name == name)
            {
                slots.push(old.swap_remove(i));
                continue;
            }
            let sink = match cfg.open() {
                Ok(s) => s,
                Err(e) => {
                    log::error!("event sink {name}: {e}");
                    failed.push((name.clone(), cfg.kind(), e.to_string()));
                    continue;
                }
            };
            let c = self.stats.counters(name);
            match spawn_sink(sink, c.clone(), self.queue) {
                Ok((tx, thread)) => slots.push(Slot {
                    cfg: cfg.clone(),
                    tx,
                    counters: c,
                    thread,
                }),
                Err(e) => {
                    log::error!("cannot start event sink {name}: {e}");
                    failed.push((name.clone(), cfg.kind(), format!("no thread: {e}")));
                }
            }
        }
        *self.failed.lock().unwrap_or_else(|e| e.into_inner()) = failed;
        // Retired sinks drain their queue and close on their own thread; `close` waits.
        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        retired.retain(|t| !t.is_finished());
        for s in old {
            log::info!(
                "event sink {} removed or changed; closing it",
                s.counters.name
            );
            drop(s.tx);
            retired.push(s.thread);
        }
        slots.iter().map(|s| s.counters.name.clone()).collect()
    }

    /// Every configured sink: the running ones (in configuration order) with their counters,
    /// then those that could not start.
    pub fn sink_status(&self) -> Vec<SinkStatus> {
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        let dropped = |c: &SinkCounters| {
            DropReason::ALL
                .iter()
                .filter(|d| **d != DropReason::SlowClient)
                .map(|d| {
                    let (stage, reason) = d.labels();
                    (format!("{stage}/{reason}"), c.dropped(*d))
                })
                .collect()
        };
        let mut out: Vec<SinkStatus> = slots
            .iter()
            .map(|s| {
                let c = &s.counters;
                SinkStatus {
                    name: c.name.clone(),
                    kind: s.cfg.kind(),
                    state: if s.thread.is_finished() {
                        "stopped"
                    } else {
                        "running"
                    },
                    error: None,
                    queued: s.tx.len(),
                    sent: c.sent.load(Ordering::Relaxed),
                    failed: c.failed.load(Ordering::Relaxed),
                    retried: c.retried.load(Ordering::Relaxed),
                    backlog: c.backlog.load(Ordering::Relaxed),
                    dropped: dropped(c),
                }
            })
            .collect();
        drop(slots);
        for (name, kind, e) in self.failed.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let c = self.stats.sink(name);
            out.push(SinkStatus {
                name: name.clone(),
                kind,
                state: "failed",
                error: Some(e.clone()),
                queued: 0,
                sent: c.as_ref().map_or(0, |c| c.sent.load(Ordering::Relaxed)),
                failed: c.as_ref().map_or(0, |c| c.failed.load(Ordering::Relaxed)),
                retried: c.as_ref().map_or(0, |c| c.retried.load(Ordering::Relaxed)),
                backlog: 0,
                dropped: c.as_deref().map(dropped).unwrap_or_default(),
            });
        }
        out
    }

    /// Hand an event to every sink and live client; never blocks.
    pub fn publish(&self, ev: Event) {
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        let ev = Arc::new(ev);
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        for s in slots.iter() {
            match s.tx.try_send(ev.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => s.counters.drop_events(DropReason::QueueFull, 1),
                Err(TrySendError::Disconnected(_)) => {
                    s.counters.drop_events(DropReason::Shutdown, 1)
                }
            }
        }
        drop(slots);
        self.streams.publish(&ev);
    }

    /// Stop the sinks: each writes out what is queued (Loki: one last try, bounded in time)
    /// and counts the rest; waits for them. Publishing afterwards reaches live clients only.
    pub fn close(&self) {
        let slots = std::mem::take(&mut *self.slots.write().unwrap_or_else(|e| e.into_inner()));
        let mut threads =
            std::mem::take(&mut *self.retired.lock().unwrap_or_else(|e| e.into_inner()));
        for s in slots {
            drop(s.tx);
            threads.push(s.thread);
        }
        for t in threads {
            let _ = t.join();
        }
    }
}

impl crate::selfmetrics::SelfMetrics for Pipeline {
    fn emit(&self, s: &mut dyn crate::model::Sink) {
        self.stats.emit(s);
        self.streams.emit(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        let mut e = Event::new(
            "TCPRESET_NOSOCK",
            EventEntity {
                netns: 4026532001,
                kind: "pod".into(),
                k8s_namespace: "default".into(),
                k8s_pod: "web-0".into(),
                name: "web-0".into(),
                labels: vec![
                    ("app".into(), "web".into()),
                    ("team".into(), "t shop".into()),
                ],
            },
        )
        .with("protocol", FieldValue::Str("TCP".into()))
        .with("saddr", FieldValue::Addr("198.18.0.2".parse().unwrap()))
        .with("sport", FieldValue::UInt(443))
        .with("daddr", FieldValue::Addr("2001:db8::1".parse().unwrap()))
        .with("dport", FieldValue::UInt(33488))
        .with("state", FieldValue::Str("CLOSE".into()));
        e.time = UNIX_EPOCH + std::time::Duration::from_nanos(1_700_000_000_123_456_789);
        e.stack = vec![
            "tcp_v4_send_reset+0x1f".into(),
            "tcp_v4_rcv+0x8a [kernel]".into(),
        ];
        e
    }

    #[test]
    fn log_line_like_kubeskoop() {
        assert_eq!(
            sample().log_line(),
            "type=TCPRESET_NOSOCK pod=web-0 namespace=default netns=4026532001 kind=pod name=web-0 \
             app=web team=\"t shop\" protocol=TCP saddr=198.18.0.2 sport=443 daddr=2001:db8::1 dport=33488 state=CLOSE \
             stack=\"tcp_v4_send_reset+0x1f/tcp_v4_rcv+0x8a [kernel]\""
        );
    }

    #[test]
    fn write_json_equals_to_json() {
        let mut e = sample().with("rtt", FieldValue::Seconds(0.25));
        e.entity.name = "we\"ird name\n".into();
        let mut out = Vec::new();
        e.write_json(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v, e.to_json());
        // Keys in the event's own order (time first, fields as the probe gave them).
        assert!(out.starts_with(b"{\"time\":\"1700000000123456789\",\"type\":"));
    }

    #[test]
    fn json_line_same_data() {
        let j = sample().to_json();
        assert_eq!(j["time"], "1700000000123456789");
        assert_eq!(j["type"], "TCPRESET_NOSOCK");
        assert_eq!(j["k8s_pod"], "web-0");
        assert_eq!(
            j["labels"],
            serde_json::json!({"app": "web", "team": "t shop"})
        );
        assert_eq!(j["fields"]["sport"], 443);
        assert_eq!(j["fields"]["daddr"], "2001:db8::1");
        assert_eq!(j["stack"][1], "tcp_v4_rcv+0x8a [kernel]");
    }

    #[test]
    fn file_sink_and_bounded_pipeline() {
        let dir = std::env::temp_dir().join(format!("netsleuth-events-{}", std::process::id()));
        let path = dir.join("sub/events.json");
        let p = Pipeline::from_config(&[SinkConfig::File(file::FileConfig::new(&path))], 1024);
        for i in 0..100u64 {
            p.publish(sample().with("seq", FieldValue::UInt(i)));
        }
        let stats = p.stats.sink("file").unwrap();
        p.close();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len() as u64 + stats.dropped_total(), 100);
        assert_eq!(stats.sent(), lines.len() as u64);
        assert_eq!(lines[0]["fields"]["seq"], 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A sink that never finishes a write must not block publish: the overflow is counted.
    #[test]
    fn slow_sink_never_blocks_publish() {
        struct Stuck(std::sync::mpsc::Receiver<()>);
        impl EventSink for Stuck {
            fn name(&self) -> &str {
                "stuck"
            }
            fn write(&mut self, _: &Event, c: &SinkCounters) {
                let _ = self.0.recv();
                c.sent.fetch_add(1, Ordering::Relaxed);
            }
        }
        let (release, rx) = std::sync::mpsc::channel();
        let p = Pipeline::start(vec![Box::new(Stuck(rx))], 4);
        let t = std::time::Instant::now();
        for _ in 0..1000 {
            p.publish(sample());
        }
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        let dropped = p
            .stats
            .sink("stuck")
            .unwrap()
            .dropped(DropReason::QueueFull);
        // At most the queue (4) plus the one being written got through.
        assert!((995..=996).contains(&dropped), "{dropped}");
        drop(release);
        p.close();
    }
}
