//! Abnormal kernel events (drops, resets, retransmits, slow sockets...): the model, its two
//! renderings (KubeSkoop's log line and a JSON line with the same data), the `stderr` and
//! `file` sinks, and a bounded pipeline that never blocks the kernel readers: when a sink is
//! slow, events are dropped and counted.
//!
//! Parts: `event` (the model and its renderings), `sink` (the sink trait, counters, drop
//! reasons, `stderr`, `SinkConfig`), `file`, `loki`, `stream` (`/events` clients); here the
//! pipeline: a bounded queue and a thread per sink, reconfiguration, status, metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};

mod event;
pub mod file;
pub mod loki;
pub mod loki_proto;
mod sink;
pub mod stream;

pub use event::{EntityCache, Event, EventEntity, FieldValue, JsonParts};
pub use sink::{DropReason, EventSink, SinkConfig, SinkCounters, StderrSink};

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
    /// Events every sink is done with, handed back for `publish` to reuse ([`Spare`]).
    spare: Spare,
}

/// Events the sinks are done with, kept for `publish` to put the next event in. A sink thread
/// that freed them itself would free, one by one, memory the publishing thread allocated: with
/// glibc both then take the same arena's lock for every event, and the file sink spent half
/// its time asleep on that lock. The publisher instead replaces the old event in place (its
/// fields are freed on the thread that allocated them) and the event's own allocation lives
/// on. Bounded: beyond `SPARE` events, a sink frees them as before.
#[derive(Clone)]
struct Spare {
    tx: Sender<Arc<Event>>,
    rx: Receiver<Arc<Event>>,
}

/// Events kept for reuse: about 1 MiB at most (an event with a dozen fields and their strings
/// is under 1 KiB), held until `publish` reuses them.
const SPARE: usize = 1024;

impl Spare {
    fn new() -> Spare {
        let (tx, rx) = bounded(SPARE);
        Spare { tx, rx }
    }

    /// `ev` in a reused allocation if one is spare.
    fn wrap(&self, ev: Event) -> Arc<Event> {
        if let Ok(mut old) = self.rx.try_recv() {
            if let Some(slot) = Arc::get_mut(&mut old) {
                drop(std::mem::replace(slot, ev));
                return old;
            }
        }
        Arc::new(ev)
    }

    /// A sink is done with `ev`: kept for reuse when nobody else holds it.
    fn give_back(&self, ev: Arc<Event>) {
        if Arc::strong_count(&ev) == 1 {
            let _ = self.tx.try_send(ev);
        }
    }
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

/// How long a sink thread that emptied its queue waits before looking again (the most it
/// adds to an event's delivery). The queue holds thousands of events, far more than arrive in
/// this time at any rate a sink keeps up with.
const GATHER: std::time::Duration = std::time::Duration::from_millis(1);

/// A burst of at least this many events is not followed by a GATHER sleep.
const BIG_BURST: usize = 1024;

fn spawn_sink(
    mut sink: Box<dyn EventSink>,
    c: Arc<SinkCounters>,
    queue: usize,
    spare: Spare,
) -> std::io::Result<(Sender<Arc<Event>>, std::thread::JoinHandle<()>)> {
    let (tx, rx): (Sender<Arc<Event>>, Receiver<Arc<Event>>) = bounded(queue.max(1));
    let h = std::thread::Builder::new()
        .name(format!("sink-{}", c.name))
        .spawn(move || {
            loop {
                match rx.recv_timeout(sink.wait()) {
                    Ok(ev) => {
                        sink.write(&ev, &c);
                        spare.give_back(ev);
                        // Take a burst, then let the sink push out (bounded so a sink with a
                        // time policy still gets its turn under a steady stream).
                        let mut caught_up = false;
                        let mut taken = 1;
                        for _ in 0..8192 {
                            match rx.try_recv() {
                                Ok(ev) => {
                                    sink.write(&ev, &c);
                                    spare.give_back(ev);
                                    taken += 1;
                                }
                                Err(_) => {
                                    caught_up = true;
                                    break;
                                }
                            }
                        }
                        sink.flush(&c);
                        if caught_up && taken < BIG_BURST {
                            // Let the next events gather instead of being woken for each: a
                            // sink parked on an empty queue costs the publisher a futex wake
                            // and itself a context switch and a write per event, which held
                            // the file sink to a ninth of what it does in bursts. After a big
                            // burst more events are coming fast: sleeping then left the file
                            // sink idle a fifth of the time while they queued. Waiting on the
                            // queue instead wakes it with the next event, and the small burst
                            // that follows ends in a GATHER again.
                            std::thread::sleep(GATHER);
                        }
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
                match spawn_sink(sink, c.clone(), queue, p.spare.clone()) {
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
            spare: Spare::new(),
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
            match spawn_sink(sink, c.clone(), self.queue, self.spare.clone()) {
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
        let ev = self.spare.wrap(ev);
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
    use super::event::tests::sample;
    use super::*;
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
    /// Events the sinks are done with are reused by `publish`: the next event lands in the
    /// same allocation once every sink (here two) has let go of the last one, each sink sees
    /// each event's own data, and nothing of the old event survives in the new one.
    #[test]
    fn sinks_hand_finished_events_back_for_reuse() {
        type Seen = Arc<Mutex<Vec<(usize, u64, usize)>>>;
        struct Record(&'static str, Seen);
        impl EventSink for Record {
            fn name(&self) -> &str {
                self.0
            }
            fn write(&mut self, ev: &Event, c: &SinkCounters) {
                let seq = match ev.field("seq") {
                    Some(FieldValue::UInt(v)) => *v,
                    _ => u64::MAX,
                };
                let at = ev as *const Event as usize;
                self.1.lock().unwrap().push((at, seq, ev.fields.len()));
                if self.0 == "b" {
                    // The second to finish, by far: both sinks checking at once whether they
                    // hold the last reference would both see two, and neither hand it back.
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                c.sent.fetch_add(1, Ordering::Relaxed);
            }
        }
        let (a, b): (Seen, Seen) = Default::default();
        let p = Pipeline::start(
            vec![
                Box::new(Record("a", a.clone())),
                Box::new(Record("b", b.clone())),
            ],
            16,
        );
        let wait_for = |n: u64| {
            let t = std::time::Instant::now();
            while p.stats.sink("a").unwrap().sent() < n || p.stats.sink("b").unwrap().sent() < n {
                assert!(
                    t.elapsed() < std::time::Duration::from_secs(10),
                    "sinks stuck"
                );
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            // The second sink to finish hands the event back right after its write.
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        p.publish(sample().with("seq", FieldValue::UInt(0)));
        wait_for(1);
        assert_eq!(p.spare.rx.len(), 1, "the finished event is kept for reuse");
        p.publish(
            Event::new("PACKETLOSS", EventEntity::unknown(9)).with("seq", FieldValue::UInt(1)),
        );
        wait_for(2);
        p.close();
        for seen in [a, b] {
            let seen = seen.lock().unwrap();
            assert_eq!(seen.len(), 2);
            assert_eq!(
                seen[0].0, seen[1].0,
                "the second event reused the first's allocation"
            );
            assert_eq!((seen[0].1, seen[0].2), (0, 7));
            assert_eq!(
                (seen[1].1, seen[1].2),
                (1, 1),
                "only the new event's fields"
            );
        }
    }
}
