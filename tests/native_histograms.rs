//! The protobuf exposition and native histograms: the real exporter with the real
//! socketlatency probe, read delays made in a namespace pair, the protobuf page checked against
//! the text page of the same moment, and two real Prometheus servers — one ingesting native
//! histograms (`--enable-feature=native-histograms`), one the classic buckets — agreeing on the
//! read latency's p99 within a bucket.

mod common;
use common::*;

use netsleuth::model::protobuf::{decode_families, MetricFamily, TYPE_HISTOGRAM};
use std::process::{Command, Stdio};
use std::time::Duration;

const PROTO_ACCEPT: &str = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
const READ: &str = "netsleuth_socketlatency_read_seconds";

fn start() -> Exporter {
    let cfg = write_config("metrics:\n  probes: [socketlatency, netdev, ip, udp]\n");
    let e = Exporter::start(&[&format!("--config.file={}", cfg.display())]);
    wait_for("socketlatency attached", Duration::from_secs(10), || {
        let s = e.scrape();
        (s.find("netsleuth_bpf_map_full_total", &[]).len() == 1).then_some(())
    });
    e
}

/// One datagram per delay from `a` to `b`, each read by `b` that long after it arrived: the
/// read latencies the probe observes in b's namespace.
fn delayed_reads(p: &Pair, port: u16, delays_ms: &[u64]) {
    let (tx, rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let dst = format!("{}:{port}", p.ip_b);
    let delays = delays_ms.to_vec();
    let n = delays.len();
    std::thread::scope(|s| {
        s.spawn(|| {
            p.b.within(move || {
                let sock = std::net::UdpSocket::bind(("0.0.0.0", port)).unwrap();
                tx.send(()).unwrap();
                let mut buf = [0u8; 64];
                for d in delays {
                    go_rx.recv().unwrap();
                    std::thread::sleep(Duration::from_millis(d));
                    sock.recv_from(&mut buf).unwrap();
                    tx.send(()).unwrap();
                }
            })
        });
        rx.recv().unwrap();
        let s =
            p.a.within(|| std::net::UdpSocket::bind("0.0.0.0:0").unwrap());
        for _ in 0..n {
            s.send_to(b"late", &dst).unwrap();
            go_tx.send(()).unwrap();
            rx.recv().unwrap();
        }
    });
}

fn protobuf_scrape(e: &Exporter, gzip: bool) -> (Vec<(String, String)>, Vec<MetricFamily>) {
    let mut h = vec![("Accept", PROTO_ACCEPT)];
    if gzip {
        h.push(("Accept-Encoding", "gzip"));
    }
    let (code, headers, body) = e.get("/metrics", &h);
    assert_eq!(code, 200);
    let body = if gzip {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut out)
            .expect("gzip body");
        out
    } else {
        body
    };
    let fams = decode_families(&body).expect("a delimited MetricFamily stream");
    (headers, fams)
}

#[test]
fn protobuf_page_equals_the_text_page_with_native_buckets() {
    if !privileged("protobuf_page_equals_the_text_page_with_native_buckets") {
        return;
    }
    let e = start();
    let p = Pair::new();
    let b = p.b.inode().to_string();
    let port: u16 = 31000 + (std::process::id() % 20000) as u16;
    delayed_reads(&p, port, &[3, 12, 40, 40, 90]);
    wait_for("5 reads observed", Duration::from_secs(5), || {
        (scrape_sum(&e, &format!("{READ}_count"), &[("netns", &b)]) >= 5.0).then_some(())
    });
    // Nothing moves in b now: the two formats of back-to-back scrapes must agree exactly.
    let text = e.scrape();
    let (headers, fams) = protobuf_scrape(&e, false);
    let ct = headers
        .iter()
        .find(|(k, _)| k == "content-type")
        .map(|(_, v)| v.as_str());
    assert_eq!(
        ct,
        Some("application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited")
    );
    // The same families with the same types.
    let mut text_fams: Vec<(&str, &str)> = text
        .types
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    text_fams.sort();
    let type_name = |t: i32| match t {
        0 => "counter",
        1 => "gauge",
        4 => "histogram",
        _ => "other",
    };
    let mut pb_fams: Vec<(&str, &str)> = fams
        .iter()
        .map(|f| (f.name.as_str(), type_name(f.r#type)))
        .collect();
    pb_fams.sort();
    assert_eq!(pb_fams, text_fams);
    // b's namespace: every counter and gauge equal to the text page's.
    let b_text: Vec<_> = text.of_netns(p.b.inode());
    let mut compared = 0;
    for f in &fams {
        for m in &f.metric {
            if !m.label.iter().any(|l| l.name == "netns" && l.value == b) {
                continue;
            }
            let labels: Vec<(&str, &str)> = m
                .label
                .iter()
                .map(|l| (l.name.as_str(), l.value.as_str()))
                .collect();
            let v = match (&m.counter, &m.gauge) {
                (Some(c), _) => c.value,
                (_, Some(g)) => g.value,
                _ => continue,
            };
            let s = b_text
                .iter()
                .find(|s| {
                    s.name == f.name
                        && s.labels.len() == labels.len()
                        && labels
                            .iter()
                            .all(|(k, x)| s.labels.get(*k).map(|y| y.as_str()) == Some(*x))
                })
                .unwrap_or_else(|| panic!("{} {labels:?} not on the text page", f.name));
            assert_eq!(s.value.parse::<f64>().unwrap(), v, "{} {labels:?}", f.name);
            compared += 1;
        }
    }
    assert!(compared >= 10, "only {compared} series of b compared");
    // b's read histogram: classic buckets as on the text page, native buckets holding the same
    // observations, the 3 slowest (40, 40, 90 ms) in the buckets of slots 25 and 26.
    let fam = fams
        .iter()
        .find(|f| f.name == READ)
        .expect("read histogram");
    assert_eq!(fam.r#type, TYPE_HISTOGRAM);
    let m = fam
        .metric
        .iter()
        .find(|m| m.label.iter().any(|l| l.name == "netns" && l.value == b))
        .expect("b's read histogram");
    let h = m.histogram.as_ref().unwrap();
    let count = text
        .sum(&format!("{READ}_count"), &[("netns", &b)])
        .unwrap();
    assert_eq!(h.sample_count as f64, count);
    assert_eq!(
        h.sample_sum,
        text.sum(&format!("{READ}_sum"), &[("netns", &b)]).unwrap()
    );
    for bk in &h.bucket {
        let le = text
            .find(&format!("{READ}_bucket"), &[("netns", &b)])
            .into_iter()
            .find(|s| s.labels["le"].parse::<f64>().unwrap() == bk.upper_bound)
            .unwrap_or_else(|| panic!("le {} not on the text page", bk.upper_bound))
            .value
            .parse::<f64>()
            .unwrap();
        assert_eq!(bk.cumulative_count as f64, le);
    }
    assert_eq!(h.schema, 0);
    assert!(h.zero_threshold > 0.0);
    assert_eq!(h.positive_span.len(), 1, "{h:?}");
    let mut c = 0i64;
    let mut counts = Vec::new();
    for d in &h.positive_delta {
        c += d;
        counts.push(c);
    }
    assert_eq!(counts.iter().sum::<i64>() as u64, h.sample_count);
    // Bucket k holds slot k + 29: 40 ms (slot 25: 33.5-67.1 ms) at -4, 90 ms (slot 26) at -3.
    let at = |k: i32| -> i64 {
        let off = k - h.positive_span[0].offset;
        counts.get(off as usize).copied().unwrap_or(0)
    };
    assert!(
        at(-4) >= 2 && at(-3) >= 1,
        "native counts {counts:?} from {}",
        h.positive_span[0].offset
    );
    // gzip'd, the same message.
    let (headers, gz) = protobuf_scrape(&e, true);
    assert!(headers
        .iter()
        .any(|(k, v)| k == "content-encoding" && v == "gzip"));
    let gz_read = gz.iter().find(|f| f.name == READ).unwrap();
    assert!(gz_read.metric.iter().any(|x| x == m));
    // A scraper that does not ask for protobuf still gets text.
    let (_, headers, _) = e.get("/metrics", &[("Accept", "text/plain;version=0.0.4")]);
    assert!(headers
        .iter()
        .any(|(k, v)| k == "content-type" && v.starts_with("text/plain")));
}

struct Prom {
    _proc: Holder,
    api: String,
    dir: std::path::PathBuf,
}

impl Prom {
    fn start(target: &str, native: bool) -> Prom {
        let dir = std::env::temp_dir().join(unique("nslnh"));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n- job_name: netsleuth\n  static_configs:\n  - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let mut cmd = Command::new("prometheus");
        cmd.arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg("--web.listen-address=127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if native {
            cmd.arg("--enable-feature=native-histograms");
        }
        let proc = Holder::spawn(&mut cmd);
        let port = listening_port(proc.pid(), Duration::from_secs(60));
        Prom {
            _proc: proc,
            api: format!("127.0.0.1:{port}"),
            dir,
        }
    }

    fn query(&self, q: &str) -> Vec<serde_json::Value> {
        let enc: String = q
            .bytes()
            .map(|c| {
                if c.is_ascii_alphanumeric() || b"_-.".contains(&c) {
                    (c as char).to_string()
                } else {
                    format!("%{c:02X}")
                }
            })
            .collect();
        let (_, _, body) = http_get(&self.api, &format!("/api/v1/query?query={enc}"), &[]);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["status"], "success", "{q}: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    fn scalar(&self, q: &str) -> Option<f64> {
        let r = self.query(q);
        r.first()?["value"][1].as_str()?.parse().ok()
    }

    fn wait_up(&self) {
        wait_for("prometheus target up", Duration::from_secs(60), || {
            let (code, _, body) = try_http_get(&self.api, "/api/v1/targets", &[]).ok()?;
            let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
            let t = v["data"]["activeTargets"].as_array()?.first()?.clone();
            (code == 200 && t["health"] == "up").then_some(())
        });
    }
}

impl Drop for Prom {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn real_prometheus_native_quantile_matches_classic_within_a_bucket() {
    if !privileged_with(
        "real_prometheus_native_quantile_matches_classic_within_a_bucket",
        &["prometheus"],
    ) {
        return;
    }
    let e = start();
    let p = Pair::new();
    let b = p.b.inode().to_string();
    let native = Prom::start(&e.addr, true);
    let classic = Prom::start(&e.addr, false);
    native.wait_up();
    classic.wait_up();
    let port: u16 = 32000 + (std::process::id() % 20000) as u16;
    // The series appears with the first reads; the second round is what rate() sees.
    let delays = [2, 5, 9, 20, 20, 45, 45, 45, 70, 110];
    delayed_reads(&p, port, &delays);
    std::thread::sleep(Duration::from_secs(3));
    delayed_reads(&p, port + 1, &delays);
    let count = format!("{READ}_count{{netns=\"{b}\"}}");
    let native_count = format!("histogram_count({READ}{{netns=\"{b}\"}})");
    for (prom, q) in [(&native, &native_count), (&classic, &count)] {
        wait_for("both rounds scraped", Duration::from_secs(20), || {
            (prom.scalar(q)? >= 2.0 * delays.len() as f64).then_some(())
        });
    }
    std::thread::sleep(Duration::from_secs(2));
    // The native server stored a native histogram and no classic buckets; the classic one the
    // reverse.
    let raw = native.query(&format!("{READ}{{netns=\"{b}\"}}"));
    assert_eq!(raw.len(), 1, "{raw:?}");
    assert!(raw[0].get("histogram").is_some(), "not native: {raw:?}");
    assert!(native
        .query(&format!("{READ}_bucket{{netns=\"{b}\"}}"))
        .is_empty());
    assert!(classic
        .query(&format!("{READ}{{netns=\"{b}\"}}"))
        .is_empty());
    for q in [0.5, 0.9, 0.99] {
        let qn = native
            .scalar(&format!(
                "histogram_quantile({q}, sum(rate({READ}{{netns=\"{b}\"}}[1m])))"
            ))
            .expect("native quantile");
        let qc = classic
            .scalar(&format!(
                "histogram_quantile({q}, sum by (le) (rate({READ}_bucket{{netns=\"{b}\"}}[1m])))"
            ))
            .expect("classic quantile");
        eprintln!("p{}: native {qn:.6} s, classic {qc:.6} s", q * 100.0);
        // Within a bucket: both estimates lie in the same power-of-two range, or next to it.
        let ratio = qn / qc;
        assert!(
            (0.5..=2.0).contains(&ratio),
            "p{}: native {qn} s vs classic {qc} s",
            q * 100.0
        );
    }
    // Counts and sums are exact in both.
    let n_native = native.scalar(&native_count).unwrap();
    let n_classic = classic.scalar(&count).unwrap();
    assert_eq!(n_native, n_classic);
    let s_native = native
        .scalar(&format!("histogram_sum({READ}{{netns=\"{b}\"}})"))
        .unwrap();
    let s_classic = classic
        .scalar(&format!("{READ}_sum{{netns=\"{b}\"}}"))
        .unwrap();
    assert!((s_native - s_classic).abs() <= 1e-9 * s_classic.max(1.0));
}
