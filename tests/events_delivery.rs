//! Event delivery: Loki push against a Loki-compatible server written here (schema, headers,
//! ordering, retries on 429/5xx, none on 400, a dead Loki with a bounded backlog), live
//! `/events` clients (filters, SSE, a stalled client cut off), sink reload without loss, and
//! the exporter's `/metrics` accounting. No privileges needed.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use netsleuth::events::file::FileConfig;
use netsleuth::events::loki::LokiConfig;
use netsleuth::events::{DropReason, Event, EventEntity, FieldValue, Pipeline, SinkConfig};

/// One request the test Loki received.
#[derive(Debug, Clone)]
struct Push {
    path: String,
    headers: Vec<(String, String)>,
    body: serde_json::Value,
}

/// A Loki-compatible push endpoint: answers each request with the next status of `script`
/// (then 204 for ever), records the request.
struct TestLoki {
    addr: String,
    pushes: Arc<Mutex<Vec<Push>>>,
    requests: Arc<AtomicUsize>,
}

impl TestLoki {
    fn start(script: Vec<u16>) -> TestLoki {
        Self::on(TcpListener::bind("127.0.0.1:0").unwrap(), script)
    }

    fn on(l: TcpListener, script: Vec<u16>) -> TestLoki {
        let addr = l.local_addr().unwrap().to_string();
        let pushes = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(AtomicUsize::new(0));
        let (p, r) = (pushes.clone(), requests.clone());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut c) = conn else { continue };
                let i = r.fetch_add(1, Ordering::SeqCst);
                let status = script.get(i).copied().unwrap_or(204);
                let Some(push) = read_request(&mut c) else {
                    continue;
                };
                if (200..300).contains(&status) && status != 260 {
                    p.lock().unwrap().push(push);
                }
                let reason = match status {
                    204 => "No Content",
                    429 => "Too Many Requests",
                    260 => "Blocked",
                    400 => "Bad Request",
                    _ => "Error",
                };
                let body = if status >= 400 {
                    "entry out of order\n"
                } else {
                    ""
                };
                let _ = write!(
                    c,
                    "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        TestLoki {
            addr,
            pushes,
            requests,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/loki/api/v1/push", self.addr)
    }

    /// (seq, labels, ts) of every line received, in arrival order.
    fn lines(&self) -> Vec<(u64, serde_json::Value, u128)> {
        let mut out = Vec::new();
        for p in self.pushes.lock().unwrap().iter() {
            for s in p.body["streams"].as_array().unwrap() {
                for v in s["values"].as_array().unwrap() {
                    let line = v[1].as_str().unwrap();
                    let seq = line
                        .split(' ')
                        .find_map(|kv| kv.strip_prefix("seq="))
                        .unwrap()
                        .parse()
                        .unwrap();
                    out.push((
                        seq,
                        s["stream"].clone(),
                        v[0].as_str().unwrap().parse().unwrap(),
                    ));
                }
            }
        }
        out
    }
}

fn read_request(c: &mut TcpStream) -> Option<Push> {
    c.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut r = BufReader::new(c.try_clone().ok()?);
    let mut first = String::new();
    r.read_line(&mut first).ok()?;
    let path = first.split_whitespace().nth(1)?.to_string();
    assert!(first.starts_with("POST "), "{first}");
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        r.read_line(&mut l).ok()?;
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")?
        .1
        .parse()
        .ok()?;
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Push {
        path,
        headers,
        body: serde_json::from_slice(&body).expect("push body is JSON"),
    })
}

fn ev(kind: &str, ns: &str, seq: u64) -> Event {
    let mut e = EventEntity::unknown(4026531840);
    e.k8s_namespace = ns.into();
    e.k8s_pod = format!("pod-{}", seq % 7);
    e.kind = "pod".into();
    Event::new(kind, e)
        .with("protocol", FieldValue::Str("TCP".into()))
        .with("saddr", FieldValue::Addr("10.0.0.1".parse().unwrap()))
        .with("sport", FieldValue::UInt(40000 + seq % 1000))
        .with("seq", FieldValue::UInt(seq))
}

fn fast_loki(url: String) -> LokiConfig {
    let mut l = LokiConfig::new(url);
    l.batch_wait = Duration::from_millis(50);
    l.batch_size = 64 * 1024;
    l.min_backoff = Duration::from_millis(20);
    l.max_backoff = Duration::from_millis(200);
    l.timeout = Duration::from_secs(2);
    l.node = "node-a".into();
    l
}

#[test]
fn loki_push_schema_headers_and_order() {
    let loki = TestLoki::start(vec![]);
    let mut cfg = fast_loki(loki.url());
    cfg.tenant = Some("team-a".into());
    cfg.basic_auth = Some(("user".into(), "pass".into()));
    let p = Pipeline::from_config(&[SinkConfig::Loki(Box::new(cfg))], 65536);
    let kinds = ["PACKETLOSS", "TCPRESET_NOSOCK", "TCPRETRANS"];
    let nss = ["default", "kube-system", ""];
    for i in 0..3000u64 {
        p.publish(ev(kinds[(i % 3) as usize], nss[(i / 3 % 3) as usize], i));
        if i % 500 == 0 {
            std::thread::sleep(Duration::from_millis(60));
        }
    }
    p.close();
    let c = p.stats.sink("loki").unwrap();
    assert_eq!(c.sent(), 3000);
    assert_eq!(c.dropped_total(), 0);
    let pushes = loki.pushes.lock().unwrap().clone();
    assert!(
        pushes.len() > 1,
        "batched by time and size: {}",
        pushes.len()
    );
    for p in &pushes {
        assert_eq!(p.path, "/loki/api/v1/push");
        let h = |k: &str| {
            p.headers
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(h("content-type"), Some("application/json"));
        assert_eq!(h("x-scope-orgid"), Some("team-a"));
        assert_eq!(h("authorization"), Some("Basic dXNlcjpwYXNz"));
        for s in p.body["streams"].as_array().unwrap() {
            let labels = s["stream"].as_object().unwrap();
            let mut keys: Vec<&str> = labels.keys().map(|k| k.as_str()).collect();
            keys.sort();
            let want: &[&str] = if labels.contains_key("k8s_namespace") {
                &["job", "k8s_namespace", "node", "type"]
            } else {
                &["job", "node", "type"]
            };
            assert_eq!(keys, want);
            assert_eq!(labels["job"], "netsleuth");
            assert_eq!(labels["node"], "node-a");
            for v in s["values"].as_array().unwrap() {
                let ts = v[0].as_str().expect("timestamp is a string");
                assert!(
                    ts.len() >= 19 && ts.bytes().all(|b| b.is_ascii_digit()),
                    "{ts}"
                );
                let line = v[1].as_str().unwrap();
                assert!(line.starts_with("type="), "{line}");
                assert!(line.contains(" pod=pod-"), "pod is in the line: {line}");
                assert!(line.contains(" saddr=10.0.0.1"), "{line}");
            }
        }
    }
    // Every event exactly once; within a stream, in time (and so publish) order.
    let lines = loki.lines();
    let mut seqs: Vec<u64> = lines.iter().map(|l| l.0).collect();
    seqs.sort();
    assert_eq!(seqs, (0..3000).collect::<Vec<_>>());
    let mut last: std::collections::HashMap<String, (u128, u64)> = Default::default();
    for (seq, labels, ts) in &lines {
        let k = labels.to_string();
        if let Some((pts, pseq)) = last.get(&k) {
            assert!(ts >= pts && seq > pseq, "stream {k}: {seq} after {pseq}");
        }
        last.insert(k, (*ts, *seq));
    }
    assert_eq!(last.len(), 9, "3 types × 3 namespaces (one unset)");
}

#[test]
fn loki_retries_429_and_5xx_not_400() {
    // 429, 500, 503, then success: one batch, delivered after 3 retries.
    let loki = TestLoki::start(vec![429, 500, 503]);
    let p = Pipeline::from_config(&[SinkConfig::Loki(Box::new(fast_loki(loki.url())))], 1024);
    for i in 0..100 {
        p.publish(ev("PACKETLOSS", "default", i));
    }
    let c = p.stats.sink("loki").unwrap();
    wait_for("delivery after retries", Duration::from_secs(10), || {
        (c.sent() == 100).then_some(())
    });
    assert_eq!(loki.requests.load(Ordering::SeqCst), 4);
    assert_eq!(c.retried.load(Ordering::Relaxed), 3);
    assert_eq!(c.failed.load(Ordering::Relaxed), 3);
    assert_eq!(loki.lines().len(), 100);
    p.close();

    // 400 (and 260, Loki's "ingestion blocked"): dropped and counted at once, never
    // retried; the next batch goes through.
    for code in [400, 260] {
        let loki = TestLoki::start(vec![code]);
        let p = Pipeline::from_config(&[SinkConfig::Loki(Box::new(fast_loki(loki.url())))], 1024);
        for i in 0..50 {
            p.publish(ev("PACKETLOSS", "default", i));
        }
        let c = p.stats.sink("loki").unwrap();
        wait_for("rejection", Duration::from_secs(10), || {
            (c.dropped(DropReason::Rejected) == 50).then_some(())
        });
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(loki.requests.load(Ordering::SeqCst), 1, "no retry on 400");
        assert_eq!(c.retried.load(Ordering::Relaxed), 0);
        for i in 50..60 {
            p.publish(ev("PACKETLOSS", "default", i));
        }
        p.close();
        assert_eq!(c.sent(), 10);
        assert_eq!(loki.lines().len(), 10);
    }
}

#[test]
fn dead_loki_bounded_backlog_nothing_lost_silently() {
    // A port with nothing listening: connection refused until Loki "comes back".
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cfg = fast_loki(format!("http://127.0.0.1:{port}/loki/api/v1/push"));
    cfg.max_backlog = 2000;
    cfg.max_retries = 0; // retry for ever: only the backlog bound drops.
    let p = Pipeline::from_config(&[SinkConfig::Loki(Box::new(cfg))], 4096);
    let c = p.stats.sink("loki").unwrap();
    let generated = 50_000u64;
    for i in 0..generated / 2 {
        p.publish(ev("PACKETLOSS", "default", i));
    }
    wait_for("backlog full", Duration::from_secs(10), || {
        (c.backlog.load(Ordering::Relaxed) == 2000).then_some(())
    });
    assert!(c.retried.load(Ordering::Relaxed) >= 1);
    assert!(c.backlog.load(Ordering::Relaxed) <= 2000);
    // Loki comes back.
    let loki = TestLoki::on(TcpListener::bind(("127.0.0.1", port)).unwrap(), vec![]);
    for i in generated / 2..generated {
        p.publish(ev("PACKETLOSS", "default", i));
        if i % 1000 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    p.close();
    let arrived = loki.lines().len() as u64;
    assert!(arrived >= 2000, "the backlog was delivered: {arrived}");
    assert_eq!(c.sent(), arrived);
    assert_eq!(c.backlog.load(Ordering::Relaxed), 0);
    assert_eq!(
        c.dropped_total(),
        generated - arrived,
        "undelivered = generated - arrived"
    );
    assert_eq!(c.dropped(DropReason::Rejected), 0);
}

#[test]
fn reload_adds_removes_and_keeps_queued_events() {
    let dir = std::env::temp_dir().join(unique("nsl-reload"));
    let a = FileConfig::new(dir.join("a.json"));
    let b = FileConfig::new(dir.join("b.json"));
    let p = Pipeline::from_config(&[SinkConfig::File(a.clone())], 65536);
    for i in 0..20_000 {
        p.publish(ev("PACKETLOSS", "", i));
    }
    // a → b: a writes out all it has queued; b takes what follows.
    assert_eq!(p.reconfigure(&[SinkConfig::File(b.clone())]), vec!["file"]);
    for i in 20_000..30_000 {
        p.publish(ev("PACKETLOSS", "", i));
    }
    // Unchanged config: the same sink keeps running (its file is not reopened).
    assert_eq!(
        p.reconfigure(&[SinkConfig::File(b.clone()), SinkConfig::Stderr]),
        vec!["file", "stderr"]
    );
    p.reconfigure(&[SinkConfig::File(b.clone())]);
    for i in 30_000..31_000 {
        p.publish(ev("PACKETLOSS", "", i));
    }
    // close waits for the retired sinks too.
    p.close();
    let count = |f: &FileConfig| std::fs::read_to_string(&f.path).unwrap().lines().count();
    let (na, nb) = (count(&a), count(&b));
    let c = p.stats.sink("file").unwrap();
    assert_eq!(c.dropped_total(), 0);
    assert_eq!((na, nb), (20_000, 11_000));
    assert_eq!(c.sent(), 31_000);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Read NDJSON/SSE from a raw connection until `n` events or the timeout.
fn read_events(r: &mut BufReader<TcpStream>, n: usize, sse: bool) -> Vec<serde_json::Value> {
    read_events_progress(r, n, sse, &AtomicUsize::new(0))
}

fn read_events_progress(
    r: &mut BufReader<TcpStream>,
    n: usize,
    sse: bool,
    progress: &AtomicUsize,
) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while out.len() < n && Instant::now() < deadline {
        let mut l = String::new();
        match r.read_line(&mut l) {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => continue,
        }
        let l = l.trim_end();
        let data = if sse {
            l.strip_prefix("data: ")
        } else {
            Some(l)
        };
        if let Some(d) = data.filter(|d| d.starts_with('{')) {
            // Parse a sample only (a debug-build JSON parser is slower than the stream).
            if out.len() < 200 || out.len() % 1000 == 0 {
                out.push(serde_json::from_str(d).unwrap());
            } else {
                out.push(serde_json::Value::Null);
            }
            progress.store(out.len(), Ordering::Relaxed);
        }
    }
    out
}

fn open_stream(addr: &str, query: &str, sse: bool) -> BufReader<TcpStream> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let accept = if sse { "text/event-stream" } else { "*/*" };
    write!(
        s,
        "GET /events{query} HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let mut status = String::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while status.is_empty() && Instant::now() < deadline {
        let _ = r.read_line(&mut status);
    }
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let mut ctype = String::new();
    loop {
        let mut l = String::new();
        let _ = r.read_line(&mut l);
        if l.trim().is_empty() {
            break;
        }
        if l.to_ascii_lowercase().starts_with("content-type:") {
            ctype = l[13..].trim().to_string();
        }
    }
    let want = if sse {
        "text/event-stream"
    } else {
        "application/x-ndjson"
    };
    assert_eq!(ctype, want);
    r
}

#[test]
fn live_events_stream_filters_sse_and_stalled_client() {
    let server = Arc::new(netsleuth::http::bind(&["127.0.0.1:0".parse().unwrap()]).unwrap());
    let addr = server.server_addr().to_ip().unwrap().to_string();
    let inv = Arc::new(netsleuth::inventory::Inventory::new("/proc", &[]));
    let engine = netsleuth::engine::Engine::new(netsleuth::config::Config::default_config(), inv);
    let p = Arc::new(Pipeline::empty(1024));
    engine.add_self_metrics(p.clone());
    let _h = netsleuth::http::serve_with_events(server, engine, 4, Some(p.clone()));

    let mut nd = open_stream(&addr, "?type=PACKETLOSS&k8s_namespace=kube-system", false);
    let mut sse = open_stream(&addr, "", true);
    // A client that never reads, with a tiny receive buffer: it stalls.
    let stalled = TcpStream::connect(&addr).unwrap();
    nix::sys::socket::setsockopt(&stalled, nix::sys::socket::sockopt::RcvBuf, &4096).unwrap();
    (&stalled)
        .write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    wait_for("three clients", Duration::from_secs(5), || {
        (p.streams.clients() == 3).then_some(())
    });

    let nd_reader = std::thread::spawn(move || read_events(&mut nd, 100, false));
    const N: u64 = 20_000;
    let progress = Arc::new(AtomicUsize::new(0));
    let pr = progress.clone();
    let sse_reader =
        std::thread::spawn(move || read_events_progress(&mut sse, N as usize, true, &pr));
    // 20000 events of 2 kinds × 2 namespaces with deep stacks (~2 KB each), paced so readers
    // keep up but the stalled one overflows its queue (4096) once its socket buffers are full.
    let stack: Vec<String> = (0..40)
        .map(|i| format!("some_kernel_function_{i}+0x1f [kernel]"))
        .collect();
    for i in 0..N {
        let kind = if i % 2 == 0 {
            "PACKETLOSS"
        } else {
            "TCPRETRANS"
        };
        let ns = if i % 4 < 2 { "kube-system" } else { "default" };
        let mut e = ev(kind, ns, i);
        e.stack = stack.clone();
        p.publish(e);
        // The reading client stays within 2000 events (its queue holds 4096) however slow this
        // debug build is; the stalled one does not read at all.
        let t = Instant::now();
        while i as usize > progress.load(Ordering::Relaxed) + 2000
            && t.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let nd_got = nd_reader.join().unwrap();
    let sse_got = sse_reader.join().unwrap();
    assert_eq!(nd_got.len(), 100);
    for e in &nd_got {
        assert_eq!(e["type"], "PACKETLOSS");
        assert_eq!(e["k8s_namespace"], "kube-system");
    }
    assert_eq!(
        sse_got.len(),
        N as usize,
        "the reading SSE client got everything"
    );
    let stream = p.stats.sink("stream").unwrap();
    assert_eq!(
        stream.dropped(DropReason::SlowClient),
        1,
        "the stalled client was cut off"
    );
    // /metrics keeps serving and shows it.
    let (code, _, body) = http_get(&addr, "/metrics", &[]);
    assert_eq!(code, 200);
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.contains(
            "netsleuth_events_dropped_total{reason=\"slow_client\",sink=\"stream\",stage=\"stream\"} 1"
        ) || text.contains(
            "netsleuth_events_dropped_total{stage=\"stream\",reason=\"slow_client\",sink=\"stream\"} 1"
        ),
        "{text}"
    );
    drop(stalled);
    // A bad filter is refused.
    let (code, _, _) = http_get(&addr, "/events?pod=x", &[]);
    assert_eq!(code, 400);
}

#[test]
fn exporter_serves_sink_metrics_and_events_route() {
    let dir = std::env::temp_dir().join(unique("nsl-exp"));
    let cfg = write_config(&format!(
        r#"
event:
  sinks:
  - {{name: file, args: {{path: {}/ev.json, maxSize: 1M, maxBackups: 2}}}}
  - {{name: loki, args: {{addr: "127.0.0.1:1", tenant: t1, batchWait: 100ms}}}}
"#,
        dir.display()
    ));
    let e = Exporter::start(&[&format!("--config.file={}", cfg.display())]);
    let s = e.scrape();
    for sink in ["file", "loki"] {
        for m in [
            "netsleuth_event_sink_sent_total",
            "netsleuth_event_sink_failed_total",
            "netsleuth_event_sink_retried_total",
            "netsleuth_event_sink_backlog",
        ] {
            assert_eq!(s.one(m, &[("sink", sink)]).value, "0", "{m}{{sink={sink}}}");
        }
        assert_eq!(
            s.one(
                "netsleuth_events_dropped_total",
                &[("sink", sink), ("stage", "queue"), ("reason", "full")]
            )
            .value,
            "0"
        );
    }
    let mut r = open_stream(&e.addr, "?type=PACKETLOSS", false);
    let _ = r.get_mut().shutdown(std::net::Shutdown::Both);
    // Bad configs are refused with a reason.
    for (yaml, want) in [
        ("{name: loki}", "needs args.url"),
        ("{name: loki, args: {url: 'https://l'}}", "TLS"),
        (
            "{name: file, args: {path: /tmp/x, maxSize: 10X}}",
            "maxSize",
        ),
        ("{name: loki, args: {url: 'http://l', bogus: 1}}", "bogus"),
    ] {
        let c = write_config(&format!("event:\n  sinks:\n  - {yaml}\n"));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_netsleuth"))
            .arg(format!("--config.file={}", c.display()))
            .arg("--web.listen-address=127.0.0.1:0")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{yaml}: {err}");
        assert!(err.contains(want), "{yaml}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sighup_adds_and_removes_sinks() {
    let dir = std::env::temp_dir().join(unique("nsl-hup"));
    let loki = TestLoki::start(vec![]);
    let cfg = write_config(&format!(
        "event:\n  sinks:\n  - {{name: file, args: {{path: {}/ev.json}}}}\n",
        dir.display()
    ));
    let e = Exporter::start(&[&format!("--config.file={}", cfg.display())]);
    let has = |sink: &str| {
        e.scrape()
            .find("netsleuth_event_sink_sent_total", &[("sink", sink)])
            .len()
            == 1
    };
    assert!(has("file") && !has("loki"));
    std::fs::write(
        &cfg,
        format!(
            "event:\n  sinks:\n  - {{name: file, args: {{path: {}/ev.json}}}}\n  - {{name: loki, args: {{url: '{}'}}}}\n",
            dir.display(),
            loki.url()
        ),
    )
    .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(e.pid()),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    wait_for("loki sink after SIGHUP", Duration::from_secs(10), || {
        has("loki").then_some(())
    });
    assert_eq!(
        e.scrape()
            .one("netsleuth_config_last_reload_successful", &[])
            .value,
        "1"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
