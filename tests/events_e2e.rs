//! Real eBPF events end to end (root): the real binary with the packetloss and tcpreset probes
//! in `event.probes`, two Loki sinks (plain HTTP + JSON, and HTTPS with a test CA + protobuf +
//! structured metadata) pointing at the test Loki, and a live `/events` client. Exactly N
//! netfilter drops and M connects to a closed port are caused between two namespaces of ours
//! (198.18.0.0/15); the same N + M events, with the right tuple, netns attribution and labels,
//! must reach both Lokis and the stream.
mod common;
mod loki_server;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{scrape_sum, unique, wait_for, write_config, Exporter, Pair};
use loki_server::{Options, Pki, TestLoki};

const DROPS: usize = 10;
const RESETS: usize = 3;

/// Reads the `/events` NDJSON stream on a thread; every parsed event is kept.
fn stream_client(addr: &str, query: &str) -> Arc<Mutex<Vec<serde_json::Value>>> {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /events{query} HTTP/1.1\r\nHost: x\r\nAccept: application/x-ndjson\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        let mut in_body = false;
        for l in r.lines() {
            let Ok(l) = l else { break };
            if !in_body {
                in_body = l.trim().is_empty();
                continue;
            }
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&l) {
                g.lock().unwrap().push(v);
            }
        }
    });
    got
}

/// The logfmt line's value for `key` (values here have no spaces).
fn logfmt<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split(' ')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn ebpf_events_reach_loki_over_http_and_tls_and_the_live_stream() {
    if !common::privileged_with("ebpf_events_e2e", &["iptables", "curl"]) {
        return;
    }
    let plain = TestLoki::start(vec![]);
    let pki = Pki::new(&std::env::temp_dir().join(unique("nsl-e2e-pki")));
    let tls = TestLoki::with(Options {
        tls: Some(pki.server_config(false)),
        ..Default::default()
    });
    let cfg = write_config(&format!(
        r#"
metrics:
  probes: [packetloss, tcpreset]
event:
  probes: [packetloss, tcpreset]
  sinks:
  - {{name: loki, args: {{url: "{}", node: e2e-node, tenant: t1, batchWait: 100ms}}}}
  - name: loki
    args:
      url: "{}"
      caFile: {}
      format: protobuf
      structuredMetadata: true
      node: e2e-node
      batchWait: 100ms
"#,
        plain.url(),
        tls.url(),
        pki.ca_file.display()
    ));
    let e = Exporter::start(&[&format!("--config.file={}", cfg.display())]);
    wait_for("eBPF probes attached", Duration::from_secs(10), || {
        let s = e.scrape();
        (s.find("netsleuth_bpf_map_full_total", &[]).len() == 2).then_some(())
    });
    let stream = stream_client(&e.addr, "?type=PACKETLOSS,TCPRESET_NOSOCK");

    // N datagrams into a DROP rule.
    let p = Pair::dropping(9999);
    let b_ino = p.b.inode();
    let usport = p.send_udp_to_b(9999, DROPS);
    // M connects from known source ports to a closed port: b answers each SYN with a RST.
    let base: u16 = 40000 + (std::process::id() % 20000) as u16;
    let tsports: Vec<u16> = (0..RESETS as u16).map(|i| base + i).collect();
    for port in &tsports {
        // curl's --local-port gives a known source port; exit 7: connection refused.
        let st = std::process::Command::new("ip")
            .args(["netns", "exec", &p.a.name, "curl", "-s"])
            .args(["--connect-timeout", "3", "--local-port", &port.to_string()])
            .arg(format!("http://{}:7777/", p.ip_b))
            .status()
            .unwrap();
        assert_eq!(st.code(), Some(7), "curl: connection refused");
    }

    // Ours among whatever else the node does: namespace b, the drops to 9999 and the RSTs
    // from 7777.
    let ours_line = |line: &str| {
        logfmt(line, "netns") == Some(b_ino.to_string().as_str())
            && match logfmt(line, "type") {
                Some("PACKETLOSS") => logfmt(line, "dport") == Some("9999"),
                Some("TCPRESET_NOSOCK") => logfmt(line, "sport") == Some("7777"),
                _ => false,
            }
    };
    let ours = |l: &TestLoki| {
        l.entries()
            .into_iter()
            .filter(|(_, _, line, _)| ours_line(line))
            .collect::<Vec<_>>()
    };
    let ours_stream = || {
        stream
            .lock()
            .unwrap()
            .iter()
            .filter(|v| v["netns"] == b_ino)
            .filter(|v| match v["type"].as_str() {
                Some("PACKETLOSS") => v["fields"]["dport"] == 9999,
                Some("TCPRESET_NOSOCK") => v["fields"]["sport"] == 7777,
                _ => false,
            })
            .cloned()
            .collect::<Vec<_>>()
    };
    let want = DROPS + RESETS;
    let deadline = Duration::from_secs(15);
    wait_for("events at the plain Loki", deadline, || {
        (ours(&plain).len() >= want).then_some(())
    });
    wait_for("events at the TLS Loki", deadline, || {
        (ours(&tls).len() >= want).then_some(())
    });
    wait_for("events on /events", deadline, || {
        (ours_stream().len() >= want).then_some(())
    });
    // Nothing more follows (exactly N + M).
    std::thread::sleep(Duration::from_millis(500));

    for (loki, meta) in [(&plain, false), (&tls, true)] {
        let got = ours(loki);
        assert_eq!(got.len(), want, "{}: {got:?}", loki.url());
        let (mut drops, mut resets) = (0, Vec::new());
        for (labels, ts, line, md) in &got {
            let kind = logfmt(line, "type").unwrap();
            let mut want_labels = serde_json::json!({"job": "netsleuth", "node": "e2e-node"});
            want_labels["type"] = kind.into();
            assert_eq!(*labels, want_labels, "{line}");
            assert!(
                *ts > 1_700_000_000_000_000_000,
                "wall-clock nanoseconds: {ts}"
            );
            assert_eq!(logfmt(line, "name"), Some(p.b.name.as_str()), "{line}");
            assert_eq!(logfmt(line, "kind"), Some("named"), "{line}");
            match kind {
                "PACKETLOSS" => {
                    drops += 1;
                    assert_eq!(logfmt(line, "protocol"), Some("UDP"), "{line}");
                    assert_eq!(logfmt(line, "saddr"), Some(p.ip_a.as_str()), "{line}");
                    assert_eq!(logfmt(line, "sport"), Some(usport.to_string().as_str()));
                    assert_eq!(logfmt(line, "daddr"), Some(p.ip_b.as_str()), "{line}");
                    assert_eq!(logfmt(line, "reason"), Some("NETFILTER_DROP"), "{line}");
                }
                _ => {
                    assert_eq!(logfmt(line, "protocol"), Some("TCP"), "{line}");
                    assert_eq!(logfmt(line, "saddr"), Some(p.ip_b.as_str()), "{line}");
                    assert_eq!(logfmt(line, "daddr"), Some(p.ip_a.as_str()), "{line}");
                    resets.push(logfmt(line, "dport").unwrap().parse::<u16>().unwrap());
                }
            }
            if meta {
                assert_eq!(
                    *md,
                    serde_json::json!({
                        "netns": b_ino.to_string(),
                        "entity_kind": "named",
                        "entity_name": p.b.name,
                    }),
                    "{line}"
                );
            } else {
                assert!(md.is_null(), "{line}");
            }
        }
        resets.sort();
        assert_eq!((drops, resets), (DROPS, tsports.clone()));
    }
    let tenant = plain.pushes.lock().unwrap()[0]
        .header("x-scope-orgid")
        .map(String::from);
    assert_eq!(tenant.as_deref(), Some("t1"));
    for p in tls.pushes.lock().unwrap().iter() {
        assert_eq!(p.header("content-type"), Some("application/x-protobuf"));
    }

    let evs = ours_stream();
    assert_eq!(evs.len(), want, "{evs:?}");
    let mut resets = Vec::new();
    for v in &evs {
        assert_eq!(v["name"], p.b.name.as_str());
        assert_eq!(v["kind"], "named");
        let f = &v["fields"];
        if v["type"] == "PACKETLOSS" {
            assert_eq!(f["saddr"], p.ip_a.as_str());
            assert_eq!(f["sport"], usport);
            assert_eq!(f["daddr"], p.ip_b.as_str());
            assert_eq!(f["reason"], "NETFILTER_DROP");
        } else {
            assert_eq!(f["saddr"], p.ip_b.as_str());
            assert_eq!(f["daddr"], p.ip_a.as_str());
            resets.push(f["dport"].as_u64().unwrap() as u16);
        }
    }
    resets.sort();
    assert_eq!(resets, tsports);

    // The sinks' own accounting: nothing failed or dropped (other events of the node may have
    // been sent too, so at least N + M).
    for sink in ["loki", "loki-2"] {
        let sent = scrape_sum(&e, "netsleuth_event_sink_sent_total", &[("sink", sink)]);
        assert!(sent >= want as f64, "{sink}: sent {sent}");
        assert_eq!(
            scrape_sum(&e, "netsleuth_event_sink_failed_total", &[("sink", sink)]),
            0.0,
            "{sink}"
        );
        assert_eq!(
            scrape_sum(&e, "netsleuth_events_dropped_total", &[("sink", sink)]),
            0.0,
            "{sink}"
        );
    }
    // One kept-alive connection per Loki.
    assert_eq!(
        plain.connections.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert_eq!(tls.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
}
