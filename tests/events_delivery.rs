//! Event delivery: Loki push against a Loki-compatible server written in the tests (schema,
//! headers, ordering, JSON and protobuf+snappy, retries on 429/5xx, none on 400, a dead Loki
//! with a bounded backlog, TLS with a test CA and client certificates, keep-alive), live
//! `/events` clients (filters, SSE, a stalled client cut off), sink reload without loss, and
//! the exporter's `/metrics` accounting. No privileges needed.

mod common;
mod loki_server;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use loki_server::{Options, Pki, TestLoki};
use netsleuth::events::file::FileConfig;
use netsleuth::events::loki::{LokiClient, LokiConfig, LokiFormat};
use netsleuth::events::{DropReason, Event, EventEntity, FieldValue, Pipeline, SinkConfig};

fn ev(kind: &str, ns: &str, seq: u64) -> Event {
    let mut e = EventEntity::unknown(4026531840);
    e.k8s_namespace = ns.into();
    e.k8s_pod = format!("pod-{}", seq % 7);
    e.kind = "pod".into();
    Event::new(kind.to_string(), e)
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

/// 3000 events of 3 types × 3 namespaces through a Loki sink of `cfg` into `loki`, checked as
/// Loki would: path, headers, labels, timestamps, lines, structured metadata when asked for,
/// every event exactly once and each stream in time order.
fn push_and_check(loki: &TestLoki, mut cfg: LokiConfig, content_type: &str) {
    cfg.tenant = Some("team-a".into());
    cfg.basic_auth = Some(("user".into(), "pass".into()));
    let with_meta = cfg.structured_metadata;
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
        assert_eq!(p.header("content-type"), Some(content_type));
        assert_eq!(p.header("x-scope-orgid"), Some("team-a"));
        assert_eq!(p.header("authorization"), Some("Basic dXNlcjpwYXNz"));
        assert_eq!(p.header("content-encoding"), None);
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
                assert!(
                    line.starts_with(&format!("type={} ", labels["type"].as_str().unwrap())),
                    "{line}"
                );
                assert!(line.contains(" pod=pod-"), "pod is in the line: {line}");
                assert!(line.contains(" saddr=10.0.0.1"), "{line}");
                let seq: u64 = line
                    .split(' ')
                    .find_map(|kv| kv.strip_prefix("seq="))
                    .unwrap()
                    .parse()
                    .unwrap();
                if with_meta {
                    assert_eq!(
                        v[2],
                        serde_json::json!({
                            "k8s_pod": format!("pod-{}", seq % 7),
                            "netns": "4026531840",
                            "entity_kind": "pod",
                        }),
                        "{line}"
                    );
                } else {
                    assert_eq!(v.as_array().unwrap().len(), 2, "no metadata: {v}");
                }
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
fn loki_push_schema_headers_and_order() {
    let loki = TestLoki::start(vec![]);
    push_and_check(&loki, fast_loki(loki.url()), "application/json");
}

/// `format: protobuf`: the same content as JSON, as a snappy-compressed `logproto.PushRequest`
/// (decoded by the test Loki with its own message structs); structured metadata in both.
#[test]
fn loki_protobuf_snappy_and_structured_metadata() {
    for (format, meta, ctype) in [
        (LokiFormat::Protobuf, false, "application/x-protobuf"),
        (LokiFormat::Protobuf, true, "application/x-protobuf"),
        (LokiFormat::Json, true, "application/json"),
    ] {
        let loki = TestLoki::start(vec![]);
        let mut cfg = fast_loki(loki.url());
        cfg.format = format;
        cfg.structured_metadata = meta;
        push_and_check(&loki, cfg, ctype);
    }
}

/// Pushes reuse one kept-alive connection; when the server closes it (announced or not), the
/// next push reconnects, and nothing is counted as failed.
#[test]
fn loki_keep_alive_reuses_one_connection() {
    let rounds = |loki: &TestLoki| {
        let p = Pipeline::from_config(&[SinkConfig::Loki(Box::new(fast_loki(loki.url())))], 1024);
        let c = p.stats.sink("loki").unwrap();
        for r in 0..10u64 {
            for i in 0..10 {
                p.publish(ev("PACKETLOSS", "default", r * 10 + i));
            }
            // Each round is pushed on its own (batchWait 50 ms) before the next one starts.
            wait_for("round delivered", Duration::from_secs(10), || {
                (c.sent() == (r + 1) * 10).then_some(())
            });
            std::thread::sleep(Duration::from_millis(20));
        }
        p.close();
        assert_eq!(c.sent(), 100);
        assert_eq!(c.failed.load(Ordering::Relaxed), 0);
        assert_eq!(c.retried.load(Ordering::Relaxed), 0);
        assert_eq!(loki.lines().len(), 100);
        let reqs = loki.requests.load(Ordering::SeqCst);
        assert!(reqs >= 10, "one push per round at least: {reqs}");
        (reqs, loki.connections.load(Ordering::SeqCst))
    };
    let (reqs, conns) = rounds(&TestLoki::start(vec![]));
    assert_eq!(conns, 1, "{reqs} pushes over one connection");

    // The server closes after every 3rd request without saying so (an idle timeout), or says
    // `Connection: close` on every response.
    for (max, announce) in [(3, false), (1, true)] {
        let loki = TestLoki::with(Options {
            max_per_conn: Some(max),
            announce_close: announce,
            ..Default::default()
        });
        let (reqs, conns) = rounds(&loki);
        assert_eq!(
            conns,
            reqs.div_ceil(max),
            "{reqs} pushes, {max} per connection"
        );
    }

    // Over TLS too (the handshake is paid once).
    let pki = Pki::new(&std::env::temp_dir().join(unique("nsl-ka-pki")));
    let loki = TestLoki::with(Options {
        tls: Some(pki.server_config(false)),
        ..Default::default()
    });
    let rounds_tls = {
        let mut cfg = fast_loki(loki.url());
        cfg.ca_file = Some(pki.ca_file.clone());
        let p = Pipeline::from_config(&[SinkConfig::Loki(Box::new(cfg))], 1024);
        let c = p.stats.sink("loki").unwrap();
        for r in 0..5u64 {
            for i in 0..10 {
                p.publish(ev("PACKETLOSS", "default", r * 10 + i));
            }
            wait_for("round delivered", Duration::from_secs(10), || {
                (c.sent() == (r + 1) * 10).then_some(())
            });
        }
        p.close();
        c.sent()
    };
    assert_eq!(rounds_tls, 50);
    assert!(loki.requests.load(Ordering::SeqCst) >= 5);
    assert_eq!(loki.connections.load(Ordering::SeqCst), 1);
}

/// `https://` with the test CA in `caFile` delivers; without it (the bundled public roots) the
/// push fails with a certificate error, is counted failed/retried and nothing arrives;
/// `insecureSkipVerify` delivers anyway; a Loki that requires a client certificate takes
/// `certFile`/`keyFile` and refuses a client without one.
#[test]
fn loki_tls_with_custom_ca_and_client_certificate() {
    let pki = Pki::new(&std::env::temp_dir().join(unique("nsl-pki")));
    let loki = TestLoki::with(Options {
        tls: Some(pki.server_config(false)),
        ..Default::default()
    });
    assert!(loki.url().starts_with("https://127.0.0.1:"));
    let deliver = |cfg: LokiConfig, n: u64| {
        let p = Pipeline::from_config(&[SinkConfig::Loki(Box::new(cfg))], 1024);
        for i in 0..n {
            p.publish(ev("PACKETLOSS", "default", i));
        }
        let c = p.stats.sink("loki").unwrap();
        wait_for("delivery over TLS", Duration::from_secs(10), || {
            (c.sent() == n).then_some(())
        });
        p.close();
        assert_eq!(c.failed.load(Ordering::Relaxed), 0);
    };

    let mut with_ca = fast_loki(loki.url());
    with_ca.ca_file = Some(pki.ca_file.clone());
    deliver(with_ca.clone(), 100);
    assert_eq!(loki.lines().len(), 100);
    // By name too (the certificate has localhost and 127.0.0.1).
    let mut by_name = with_ca.clone();
    by_name.url = loki.url().replace("127.0.0.1", "localhost");
    deliver(by_name, 10);
    assert_eq!(loki.lines().len(), 110);

    // Without the CA: a certificate error, named as such.
    let no_ca = fast_loki(loki.url());
    let client = LokiClient::new(&no_ca).unwrap();
    let err = client.post(b"{\"streams\":[]}").unwrap_err();
    assert!(
        err.starts_with("TLS: invalid peer certificate") && err.contains("UnknownIssuer"),
        "{err}"
    );
    let p = Pipeline::from_config(&[SinkConfig::Loki(Box::new(no_ca))], 1024);
    for i in 0..10 {
        p.publish(ev("PACKETLOSS", "default", i));
    }
    let c = p.stats.sink("loki").unwrap();
    wait_for("retries", Duration::from_secs(10), || {
        (c.retried.load(Ordering::Relaxed) >= 2).then_some(())
    });
    p.close();
    assert_eq!(c.sent(), 0);
    // Every failed attempt but the last one at shutdown was scheduled for a retry.
    assert_eq!(
        c.failed.load(Ordering::Relaxed),
        c.retried.load(Ordering::Relaxed) + 1
    );
    assert_eq!(c.dropped(DropReason::Shutdown), 10);
    assert_eq!(c.dropped(DropReason::Rejected), 0);
    assert_eq!(loki.lines().len(), 110, "nothing arrived without the CA");

    // A CA that did not sign Loki's certificate is no better.
    let other = Pki::new(&std::env::temp_dir().join(unique("nsl-pki-other")));
    let mut wrong_ca = fast_loki(loki.url());
    wrong_ca.ca_file = Some(other.ca_file.clone());
    let err = LokiClient::new(&wrong_ca)
        .unwrap()
        .post(b"{\"streams\":[]}")
        .unwrap_err();
    assert!(err.contains("invalid peer certificate"), "{err}");

    // The CA file is replaced (a rotated Secret) under an unchanged config: after a failed push
    // the sink reads it again and delivers.
    let rotating = pki.dir.join("rotating-ca.pem");
    std::fs::copy(&other.ca_file, &rotating).unwrap();
    let mut cfg = fast_loki(loki.url());
    cfg.ca_file = Some(rotating.clone());
    let p = Pipeline::from_config(&[SinkConfig::Loki(Box::new(cfg))], 1024);
    for i in 0..10 {
        p.publish(ev("PACKETLOSS", "default", i));
    }
    let c = p.stats.sink("loki").unwrap();
    wait_for("a failed push", Duration::from_secs(10), || {
        (c.retried.load(Ordering::Relaxed) >= 1).then_some(())
    });
    assert_eq!(c.sent(), 0);
    let tmp = pki.dir.join("rotating-ca.pem.new");
    std::fs::copy(&pki.ca_file, &tmp).unwrap();
    std::fs::rename(&tmp, &rotating).unwrap();
    wait_for("delivery with the new CA", Duration::from_secs(10), || {
        (c.sent() == 10).then_some(())
    });
    p.close();
    assert_eq!(c.dropped_total(), 0);
    assert_eq!(loki.lines().len(), 120);

    // insecureSkipVerify: no check at all (dangerous, but it must work when asked for).
    let mut insecure = fast_loki(loki.url());
    insecure.insecure_skip_verify = true;
    deliver(insecure, 10);
    assert_eq!(loki.lines().len(), 130);

    // Mutual TLS.
    let mtls = TestLoki::with(Options {
        tls: Some(pki.server_config(true)),
        ..Default::default()
    });
    let mut with_cert = fast_loki(mtls.url());
    with_cert.ca_file = Some(pki.ca_file.clone());
    with_cert.cert_file = Some(pki.client_cert_file.clone());
    with_cert.key_file = Some(pki.client_key_file.clone());
    deliver(with_cert, 20);
    assert_eq!(mtls.lines().len(), 20);
    let mut no_cert = fast_loki(mtls.url());
    no_cert.ca_file = Some(pki.ca_file.clone());
    let err = LokiClient::new(&no_cert)
        .unwrap()
        .post(b"{\"streams\":[]}")
        .unwrap_err();
    // TLS 1.3: the server checks the client's (missing) certificate after the client's side of
    // the handshake is done, so the client sees its alert or the closed connection.
    assert!(
        err.starts_with("TLS: ") || err.starts_with("connection: "),
        "{err}"
    );
    assert_eq!(mtls.lines().len(), 20);
    let _ = other;
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
    // A port whose connections are reset: every push fails until Loki "comes back" on the same
    // socket (no other process can take the port meanwhile).
    let held = common::HeldPort::new();
    let port = held.port;
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
    let loki = TestLoki::on(held.listen(), Options::default());
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
    let listeners = netsleuth::server::bind(&[vec!["127.0.0.1:0".parse().unwrap()]]).unwrap();
    let inv = Arc::new(netsleuth::inventory::Inventory::new("/proc", &[]));
    let engine = netsleuth::engine::Engine::new(netsleuth::config::Config::default_config(), inv);
    let p = Arc::new(Pipeline::empty(1024));
    engine.add_self_metrics(p.clone());
    let app = Arc::new(netsleuth::http::App {
        engine,
        events: Some(p.clone()),
        status: Default::default(),
        history: Default::default(),
    });
    let server = netsleuth::server::start(
        listeners,
        app,
        Arc::new(netsleuth::web_config::Watched::plain()),
        netsleuth::server::Limits::default(),
    )
    .unwrap();
    let addr = server.addrs[0].to_string();

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
    let stack: std::sync::Arc<[String]> = (0..40)
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
        (
            "{name: loki, args: {url: 'https://l', caFile: /nonexistent/ca.pem}}",
            "caFile `/nonexistent/ca.pem`",
        ),
        (
            "{name: loki, args: {url: 'http://l', caFile: /etc/hostname}}",
            "need an https:// URL",
        ),
        (
            "{name: loki, args: {url: 'https://l', certFile: /etc/hostname}}",
            "keyFile",
        ),
        (
            "{name: loki, args: {url: 'http://l', format: xml}}",
            "json or protobuf",
        ),
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
