//! Abnormal kernel events (drops, resets, retransmits, slow sockets...): the model, its two
//! renderings (KubeSkoop's log line and a JSON line with the same data), the `stderr` and
//! `file` sinks, and a bounded pipeline that never blocks the kernel readers: when a sink is
//! slow, events are dropped and counted.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};

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
}

impl EventEntity {
    pub fn from_entity(e: &Entity) -> EventEntity {
        EventEntity {
            netns: e.inode,
            kind: e.kind.as_str().to_string(),
            k8s_namespace: e.k8s_namespace.clone(),
            k8s_pod: e.k8s_pod.clone(),
            name: e.name.clone(),
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
    /// Kernel stack, innermost first, as `sym+0xoff [module]`.
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
    /// `kind`, `name`) and the stack as `stack=sym+0x1f/sym2+0x8`.
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
        for (k, v) in &self.fields {
            let _ = write!(s, " {k}={}", quote(&v.to_string()));
        }
        if !self.stack.is_empty() {
            let _ = write!(s, " stack={}", quote(&self.stack.join("/")));
        }
        s
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
        serde_json::json!({
            "time": ns.to_string(),
            "type": self.kind,
            "netns": self.entity.netns,
            "kind": self.entity.kind,
            "k8s_namespace": self.entity.k8s_namespace,
            "k8s_pod": self.entity.k8s_pod,
            "name": self.entity.name,
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

/// Where events go.
pub trait EventSink: Send {
    fn name(&self) -> &str;
    fn write(&mut self, ev: &Event) -> std::io::Result<()>;
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The log line on standard error.
pub struct StderrSink;

impl EventSink for StderrSink {
    fn name(&self) -> &str {
        "stderr"
    }
    fn write(&mut self, ev: &Event) -> std::io::Result<()> {
        let mut e = std::io::stderr().lock();
        writeln!(e, "{}", ev.log_line())
    }
}

/// JSON lines appended to a file (rotation comes with the event-delivery work).
pub struct FileSink {
    path: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
}

impl FileSink {
    pub fn open(path: impl Into<PathBuf>) -> std::io::Result<FileSink> {
        let path = path.into();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        Ok(FileSink {
            path,
            out: std::io::BufWriter::with_capacity(64 * 1024, f),
        })
    }
}

impl EventSink for FileSink {
    fn name(&self) -> &str {
        "file"
    }
    fn write(&mut self, ev: &Event) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, &ev.to_json())?;
        self.out.write_all(b"\n")
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out
            .flush()
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))
    }
}

/// A sink as configured (`event.sinks`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinkConfig {
    Stderr,
    File { path: PathBuf },
}

impl SinkConfig {
    pub fn open(&self) -> std::io::Result<Box<dyn EventSink>> {
        Ok(match self {
            SinkConfig::Stderr => Box::new(StderrSink),
            SinkConfig::File { path } => Box::new(FileSink::open(path)?),
        })
    }
}

/// Counters of the pipeline.
#[derive(Default, Debug)]
pub struct PipelineStats {
    pub accepted: AtomicU64,
    /// Dropped because the sink's queue was full.
    pub dropped_queue_full: AtomicU64,
    pub sink_errors: AtomicU64,
    pub written: AtomicU64,
}

/// Events in, one bounded queue and thread per sink. `publish` never blocks.
pub struct Pipeline {
    queues: Vec<Sender<Arc<Event>>>,
    pub stats: Arc<PipelineStats>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Pipeline {
    pub fn start(sinks: Vec<Box<dyn EventSink>>, queue: usize) -> Pipeline {
        let stats = Arc::new(PipelineStats::default());
        let mut queues = Vec::new();
        let mut threads = Vec::new();
        for mut sink in sinks {
            let (tx, rx): (Sender<Arc<Event>>, Receiver<Arc<Event>>) = bounded(queue.max(1));
            let st = stats.clone();
            let name = format!("sink-{}", sink.name());
            let h = std::thread::Builder::new().name(name).spawn(move || {
                while let Ok(ev) = rx.recv() {
                    match sink.write(&ev) {
                        Ok(()) => st.written.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            log::warn!("event sink {}: {e}", sink.name());
                            st.sink_errors.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                    if rx.is_empty() {
                        let _ = sink.flush();
                    }
                }
                let _ = sink.flush();
            });
            match h {
                Ok(h) => {
                    queues.push(tx);
                    threads.push(h);
                }
                Err(e) => log::error!("cannot start an event sink thread: {e}"),
            }
        }
        Pipeline {
            queues,
            stats,
            threads,
        }
    }

    /// Hand an event to every sink; a full queue drops it for that sink and counts it.
    pub fn publish(&self, ev: Event) {
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        let ev = Arc::new(ev);
        for q in &self.queues {
            if let Err(TrySendError::Full(_)) = q.try_send(ev.clone()) {
                self.stats
                    .dropped_queue_full
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Stop accepting, write out what is queued, and wait for the sinks.
    pub fn close(self) {
        drop(self.queues);
        for t in self.threads {
            let _ = t.join();
        }
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
             protocol=TCP saddr=198.18.0.2 sport=443 daddr=2001:db8::1 dport=33488 state=CLOSE \
             stack=\"tcp_v4_send_reset+0x1f/tcp_v4_rcv+0x8a [kernel]\""
        );
    }

    #[test]
    fn json_line_same_data() {
        let j = sample().to_json();
        assert_eq!(j["time"], "1700000000123456789");
        assert_eq!(j["type"], "TCPRESET_NOSOCK");
        assert_eq!(j["k8s_pod"], "web-0");
        assert_eq!(j["fields"]["sport"], 443);
        assert_eq!(j["fields"]["daddr"], "2001:db8::1");
        assert_eq!(j["stack"][1], "tcp_v4_rcv+0x8a [kernel]");
    }

    #[test]
    fn file_sink_and_bounded_pipeline() {
        let dir = std::env::temp_dir().join(format!("netsleuth-events-{}", std::process::id()));
        let path = dir.join("sub/events.json");
        let p = Pipeline::start(
            vec![SinkConfig::File { path: path.clone() }.open().unwrap()],
            1024,
        );
        for i in 0..100u64 {
            p.publish(sample().with("seq", FieldValue::UInt(i)));
        }
        let stats = p.stats.clone();
        p.close();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            lines.len() as u64 + stats.dropped_queue_full.load(Ordering::Relaxed),
            100
        );
        assert_eq!(stats.written.load(Ordering::Relaxed), lines.len() as u64);
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
            fn write(&mut self, _: &Event) -> std::io::Result<()> {
                let _ = self.0.recv();
                Ok(())
            }
        }
        let (release, rx) = std::sync::mpsc::channel();
        let p = Pipeline::start(vec![Box::new(Stuck(rx))], 4);
        let t = std::time::Instant::now();
        for _ in 0..1000 {
            p.publish(sample());
        }
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        let dropped = p.stats.dropped_queue_full.load(Ordering::Relaxed);
        // At most the queue (4) plus the one being written got through.
        assert!((995..=996).contains(&dropped), "{dropped}");
        drop(release);
        p.close();
    }
}
