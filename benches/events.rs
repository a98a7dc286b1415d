//! Event pipeline benchmark (no privileges): events/s from `publish` to the file sink and to
//! a local Loki-compatible server, and the resident set while the input is ten times what a
//! (deliberately slow) Loki can take.
//!
//! The file sink's floor is measured in the same run: `write()` of the same lines, serialised
//! beforehand, to the same file system in the sink's chunks (target: the sink >= 50 % of it).
//! Events come from templates cloned per event, as a probe's reader makes them: the entity and
//! the stack shared, the fields copied.
//!
//! Run: `cargo bench --bench events` (event count via NETSLEUTH_BENCH_EVENTS=1000000, rounds of
//! floor and file sink via NETSLEUTH_BENCH_ROUNDS=3).

use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

mod common;
use common::loki_server;

use netsleuth::events::file::FileConfig;
use netsleuth::events::loki::{LokiConfig, LokiFormat};
use netsleuth::events::{
    Event, EventEntity, FieldValue, JsonParts, Pipeline, SinkConfig, SinkCounters,
};

fn ev(i: u64) -> Event {
    let mut e = EventEntity::unknown(4026532001);
    e.kind = "pod".into();
    e.k8s_namespace = ["default", "kube-system", "web"][(i % 3) as usize].into();
    e.k8s_pod = format!("web-{}", i % 50);
    e.name = e.k8s_pod.clone();
    let mut e = Event::new(["PACKETLOSS", "TCPRESET_NOSOCK"][(i % 2) as usize], e)
        .with("protocol", FieldValue::Str("TCP".into()))
        .with("saddr", FieldValue::Addr("10.244.1.7".parse().unwrap()))
        .with("sport", FieldValue::UInt(443))
        .with("daddr", FieldValue::Addr("10.244.2.9".parse().unwrap()))
        .with("dport", FieldValue::UInt(30000 + i % 30000));
    e.stack = vec![
        "kfree_skb_reason+0x1f".into(),
        "nf_hook_slow+0x8a".into(),
        "ip_local_deliver+0x6e".into(),
    ]
    .into();
    e
}

/// Events as a probe's reader makes them: a reference to the entity its namespace has (the
/// reader's `EntityCache`) and to the stack of its stack id, the fields from the record (no
/// text parsed), the time taken now. `ev` builds each of the 150 distinct entity/type
/// combinations once; `get` clones one and fills in the rest.
struct Source(Vec<Event>);

impl Source {
    fn new() -> Source {
        Source((0..150).map(ev).collect())
    }

    fn get(&self, i: u64) -> Event {
        let mut e = self.0[(i % 150) as usize].clone();
        e.time = std::time::SystemTime::now();
        if let Some(f) = e.fields.iter_mut().find(|f| f.0 == "dport") {
            f.1 = FieldValue::UInt(30000 + i % 30000);
        }
        e
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Publish `n` events as fast as the sink drains them (never more than `window` in flight, so
/// nothing is dropped) and return events/s from the first publish to the last delivery.
fn drive(p: &Pipeline, c: &SinkCounters, n: u64, window: u64) -> f64 {
    let src = Source::new();
    let t = Instant::now();
    for i in 0..n {
        while i - c.sent() - c.dropped_total() >= window {
            std::hint::spin_loop();
        }
        p.publish(src.get(i));
    }
    while c.sent() + c.dropped_total() < n {
        std::thread::sleep(Duration::from_micros(200));
    }
    assert_eq!(
        c.dropped_total(),
        0,
        "no drops while driving at the sink's pace"
    );
    n as f64 / t.elapsed().as_secs_f64()
}

/// `n` events' JSON lines as the sink writes them, and where each line ends.
fn serialised(n: u64) -> (Vec<u8>, Vec<usize>) {
    let src = Source::new();
    let mut lines = Vec::new();
    let mut ends = Vec::with_capacity(n as usize);
    for i in 0..n {
        src.get(i).write_json(&mut lines);
        lines.push(b'\n');
        ends.push(lines.len());
    }
    (lines, ends)
}

/// Writes whole lines in chunks of the sink's write buffer to `dir/name`, starting a new file
/// every 64 MiB like the sink's rotation.
struct ChunkWriter {
    path: std::path::PathBuf,
    f: std::fs::File,
    size: usize,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn new(dir: &std::path::Path, name: &str) -> ChunkWriter {
        let path = dir.join(name);
        let f = std::fs::File::create(&path).expect("create the floor's file");
        ChunkWriter {
            path,
            f,
            size: 0,
            buf: Vec::with_capacity(netsleuth::events::file::WRITE_BUF + 4096),
        }
    }

    fn line(&mut self, l: &[u8]) {
        self.buf.extend_from_slice(l);
        if self.buf.len() >= netsleuth::events::file::WRITE_BUF {
            self.write_out();
        }
    }

    fn write_out(&mut self) {
        if self.size + self.buf.len() > 64 << 20 {
            self.f = std::fs::File::create(&self.path).expect("recreate the floor's file");
            self.size = 0;
        }
        self.f.write_all(&self.buf).expect("write the floor's file");
        self.size += self.buf.len();
        self.buf.clear();
    }

    fn finish(mut self) {
        self.write_out();
        drop(self.f);
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Lines/s for `write()` of `n` pre-serialised event lines (the sink's own JSON) to a file in
/// `dir`, in chunks of the sink's write buffer, starting a new file every 64 MiB like the sink.
fn raw_write_rate(dir: &std::path::Path, n: u64) -> f64 {
    let (lines, ends) = serialised(n);
    let t = Instant::now();
    let mut w = ChunkWriter::new(dir, "raw.json");
    let mut start = 0;
    for &end in &ends {
        w.line(&lines[start..end]);
        start = end;
    }
    w.finish();
    n as f64 / t.elapsed().as_secs_f64()
}

/// The same, with each line handed from this thread to a writer thread through a bounded
/// queue of the pipeline's size: the hand-off between two CPUs that every event pays on its
/// way to a sink, with nothing made, serialised or freed.
fn handoff_write_rate(dir: &std::path::Path, n: u64) -> f64 {
    let (lines, ends) = serialised(n);
    let lines = std::sync::Arc::new(lines);
    let (tx, rx) = crossbeam_channel::bounded::<(usize, usize)>(16384);
    let t = Instant::now();
    let writer = {
        let (lines, dir) = (lines.clone(), dir.to_path_buf());
        std::thread::spawn(move || {
            let mut w = ChunkWriter::new(&dir, "handoff.json");
            for (start, end) in rx {
                w.line(&lines[start..end]);
            }
            w.finish();
        })
    };
    let mut start = 0;
    for &end in &ends {
        tx.send((start, end)).expect("writer thread");
        start = end;
    }
    drop(tx);
    writer.join().expect("writer thread");
    n as f64 / t.elapsed().as_secs_f64()
}

/// Write back every dirty page (sync(1)), so no phase pays for the previous one's writeback.
fn settle() {
    let _ = std::process::Command::new("sync").status();
}

fn main() {
    let n: u64 = std::env::var("NETSLEUTH_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("netsleuth-bench-events-{}", std::process::id()));
    let sample = serde_json::to_vec(&ev(1).to_json()).unwrap().len();
    println!(
        "event pipeline: {n} events, ~{sample} bytes each as JSON; RSS at start {} MiB",
        rss_kib() / 1024
    );

    // 1. File sink (rotation on, 64 MiB × 2 backups).
    let mut f = FileConfig::new(dir.join("events.json"));
    f.max_size = 64 << 20;
    f.max_backups = 2;
    // The floor: write() of the same lines, serialised beforehand, to the same file system in
    // the sink's chunks (WRITE_BUF), into a file rotated like the sink's (64 MiB): what the
    // kernel and the disk charge, with no formatting, queue or thread hand-off. Each round
    // measures the floor and then the sink, each from a file system with nothing pending (the
    // sink's last files still being written back halved the floor); the ratio is the median of
    // the rounds' (page-cache writes and the hand-off between the two CPUs here vary by half
    // from one second to the next).
    std::fs::create_dir_all(&dir).expect("bench directory");
    let rounds: usize = std::env::var("NETSLEUTH_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let mut runs = Vec::new();
    for _ in 0..rounds {
        settle();
        let raw = raw_write_rate(&dir, n);
        settle();
        let handoff = handoff_write_rate(&dir, n);
        let p = Pipeline::from_config(&[SinkConfig::File(f.clone())], 16384);
        let c = p.stats.sink("file").unwrap();
        settle();
        let rate = drive(&p, &c, n, 15_000);
        p.close();
        runs.push((rate, raw, handoff));
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let ratio = median(runs.iter().map(|r| r.0 / r.1).collect());
    let rate = median(runs.iter().map(|r| r.0).collect());
    let raw = median(runs.iter().map(|r| r.1).collect());
    println!(
        "file sink:  {:>10.0} events/s (target >= 200000); raw write() of the same pre-serialised lines {:>10.0} lines/s: {:.1} % of it (target >= 50 %; medians of {} rounds: {})",
        rate,
        raw,
        100.0 * ratio,
        runs.len(),
        runs.iter()
            .map(|(r, w, _)| format!("{:.0} k/{:.0} k = {:.1} %", r / 1e3, w / 1e3, 100.0 * r / w))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // The second floor: the same lines handed one by one to a writer thread (the pipeline's
    // hand-off between CPUs, nothing made or serialised).
    let handoff = median(runs.iter().map(|r| r.2).collect());
    println!(
        "  the same lines handed to a writer thread one by one: {:>10.0} lines/s ({:.1} % of the raw write; the sink reaches {:.1} % of it; rounds: {})",
        handoff,
        100.0 * median(runs.iter().map(|r| r.2 / r.1).collect()),
        100.0 * median(runs.iter().map(|r| r.0 / r.2).collect()),
        runs.iter()
            .map(|(_, w, h)| format!("{:.1} %", 100.0 * h / w))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // What one thread needs only to make those lines: clone the event as a reader does, write its
    // JSON line as the sink does (the shared entities' and stacks' JSON kept), drop it (no
    // queue, no file). The sink does this and the write() on one thread.
    let src = Source::new();
    let mut line = Vec::with_capacity(512);
    let mut parts = JsonParts::default();
    let t = Instant::now();
    let mut bytes = 0usize;
    for i in 0..n {
        let e = src.get(i);
        line.clear();
        parts.write(&e, &mut line);
        bytes += line.len();
    }
    let ser = n as f64 / t.elapsed().as_secs_f64();
    std::hint::black_box(bytes);
    println!(
        "  make + serialise + drop alone, one thread: {ser:>10.0} events/s ({:.1} % of the raw write rate; the sink reaches {:.1} % of it)",
        100.0 * ser / raw,
        100.0 * rate / ser
    );

    // 2. Loki sink to a local server (1 MiB batches of lines), JSON and protobuf+snappy.
    for format in [LokiFormat::Json, LokiFormat::Protobuf] {
        let (addr, reqs, conns) = loki_server(Duration::ZERO);
        let mut l = LokiConfig::new(format!("http://{addr}/loki/api/v1/push"));
        l.batch_wait = Duration::from_millis(100);
        l.format = format;
        let p = Pipeline::from_config(&[SinkConfig::Loki(Box::new(l))], 16384);
        let c = p.stats.sink("loki").unwrap();
        let rate = drive(&p, &c, n, 15_000);
        p.close();
        println!(
            "loki sink ({format:?}):  {:>10.0} events/s (target >= 50000), {} pushes over {} connection(s)",
            rate,
            reqs.load(Ordering::Relaxed),
            conns.load(Ordering::Relaxed)
        );
    }

    // 3. Overload: a Loki that takes 200 ms per 64 KiB push (about 1400 events/s), readers
    // publishing at 10x that, then as fast as they can, 5 s each: RSS must stay flat.
    for (label, rate) in [("10x", Some(14_000u64)), ("flood", None)] {
        let (addr, _, _) = loki_server(Duration::from_millis(200));
        let mut l = LokiConfig::new(format!("http://{addr}/loki/api/v1/push"));
        l.batch_size = 64 << 10;
        let p = Pipeline::from_config(&[SinkConfig::Loki(Box::new(l))], 16384);
        let c = p.stats.sink("loki").unwrap();
        let before = rss_kib();
        let mut peak = before;
        let t = Instant::now();
        let mut published = 0u64;
        let src = Source::new();
        while t.elapsed() < Duration::from_secs(5) {
            for _ in 0..1000 {
                p.publish(src.get(published));
                published += 1;
            }
            peak = peak.max(rss_kib());
            if let Some(r) = rate {
                let due = Duration::from_secs_f64(published as f64 / r as f64);
                if let Some(d) = due.checked_sub(t.elapsed()) {
                    std::thread::sleep(d);
                }
            }
        }
        let secs = t.elapsed().as_secs_f64();
        let sent = c.sent();
        println!(
            "overload {label:>5}: published {:.0}/s, delivered {:.0}/s ({:.0}x); RSS {} MiB before, peak {} MiB; backlog {}, queued <= 16384, dropped {} (queue full {}, backlog full {})",
            published as f64 / secs,
            sent as f64 / secs,
            published as f64 / (sent.max(1) as f64),
            before / 1024,
            peak / 1024,
            c.backlog.load(Ordering::Relaxed),
            c.dropped_total(),
            c.dropped(netsleuth::events::DropReason::QueueFull),
            c.dropped(netsleuth::events::DropReason::BacklogFull),
        );
        // Not waiting for the slow Loki to take the backlog.
        std::mem::forget(p);
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::process::exit(0);
}
