//! The design card's crates beside ours, on the same input, in one run:
//!
//! - **Rendering**: the host's real page (scraped from the release binary, in the protobuf
//!   exposition so every sample comes back typed) replicated for N namespaces (default 500;
//!   each copy gets its own `netns` and `name`), rendered to text 0.0.4 by our model (sinks,
//!   page, streamed reader) and by the `prometheus` crate (the `MetricFamily` list an exporter's
//!   `Collector::collect` returns, then `TextEncoder`). Time per page (median) and the peak
//!   RSS rendering added, each renderer in a process of its own (this bench re-executed).
//! - **Parsing**: the host's `/proc/net/dev`, `/proc/net/snmp` and `/proc/net/snmp6`, read once,
//!   parsed N times by our parsers and by `procfs-core` (`FromBufRead`, what `procfs` uses for
//!   the same files). Time per namespace (median of rounds).
//!
//! Run: `cargo bench --bench crates` (`NETSLEUTH_BENCH_NETNS=500`, `NETSLEUTH_BENCH_ROUNDS=7`).
//! No root needed (as root the host page has more collectors).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netsleuth::model::protobuf::{decode_families, MetricFamily, TYPE_COUNTER, TYPE_GAUGE};
use netsleuth::model::{render_labels, Families, HistogramValue, MetricKind, Page, PageReader};
use netsleuth::model::{Sink, Value};

const ENTITY: [&str; 6] = [
    "netns",
    "kind",
    "k8s_namespace",
    "k8s_pod",
    "name",
    "k8s_node",
];

/// One series of the sample page: family index, entity labels, own labels, value.
struct Series {
    fam: usize,
    entity: Vec<(String, String)>,
    own: Vec<(String, String)>,
    value: SeriesValue,
}

enum SeriesValue {
    Scalar(f64),
    Hist(HistogramValue),
}

fn scrape_protobuf(addr: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.0\r\nHost: x\r\nAccept: application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited\r\n\r\n"
    )
    .unwrap();
    let mut b = Vec::new();
    s.read_to_end(&mut b).unwrap();
    // HTTP/1.0: the streamed body ends with the connection, never chunked.
    let split = b.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    b[split + 4..].to_vec()
}

/// The host page in the protobuf exposition, from the release binary.
fn scrape_host_page() -> Vec<u8> {
    let bin = env!("CARGO_BIN_EXE_netsleuth");
    let mut child = Command::new(bin)
        .args(["--web.listen-address=127.0.0.1:19207", "--log.level=error"])
        .stderr(Stdio::null())
        .spawn()
        .expect("start the release binary");
    let addr = "127.0.0.1:19207";
    let t = Instant::now();
    let body = loop {
        std::thread::sleep(Duration::from_millis(200));
        if TcpStream::connect(addr).is_ok() {
            break scrape_protobuf(addr);
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "exporter did not start"
        );
    };
    let _ = child.kill();
    let _ = child.wait();
    body
}

/// The page as families and per-namespace series (node-level series kept once).
fn sample_page(body: &[u8]) -> (Vec<MetricFamily>, Vec<Series>) {
    let fams = decode_families(body).expect("protobuf page");
    let mut series = Vec::new();
    for (fi, f) in fams.iter().enumerate() {
        for m in &f.metric {
            let (mut entity, mut own) = (Vec::new(), Vec::new());
            for l in &m.label {
                let pair = (l.name.clone(), l.value.clone());
                if ENTITY.contains(&l.name.as_str()) {
                    entity.push(pair);
                } else {
                    own.push(pair);
                }
            }
            let value = if let Some(h) = &m.histogram {
                SeriesValue::Hist(HistogramValue {
                    buckets: h
                        .bucket
                        .iter()
                        .map(|b| (b.upper_bound, b.cumulative_count))
                        .collect(),
                    sum: h.sample_sum,
                    count: h.sample_count,
                })
            } else if let Some(c) = &m.counter {
                SeriesValue::Scalar(c.value)
            } else {
                SeriesValue::Scalar(m.gauge.as_ref().map_or(0.0, |g| g.value))
            };
            series.push(Series {
                fam: fi,
                entity,
                own,
                value,
            });
        }
    }
    (fams, series)
}

/// The namespace copies: every series with a `netns` label once per namespace (its `netns`
/// and `name` rewritten), node-level series once.
fn replicate(series: &[Series], n: usize) -> Vec<Vec<&Series>> {
    let per_ns: Vec<&Series> = series
        .iter()
        .filter(|s| s.entity.iter().any(|(k, _)| k == "netns"))
        .collect();
    let node: Vec<&Series> = series.iter().filter(|s| s.entity.is_empty()).collect();
    let mut out = vec![node];
    out.extend((0..n).map(|_| per_ns.clone()));
    out
}

fn entity_of(s: &Series, ns: usize) -> Vec<(String, String)> {
    s.entity
        .iter()
        .map(|(k, v)| match k.as_str() {
            "netns" if ns > 0 => (k.clone(), (4026532000 + ns).to_string()),
            "name" if ns > 0 => (k.clone(), format!("bench-ns-{ns}")),
            _ => (k.clone(), v.clone()),
        })
        .collect()
}

fn kind_of(t: i32) -> MetricKind {
    match t {
        TYPE_COUNTER => MetricKind::Counter,
        TYPE_GAUGE => MetricKind::Gauge,
        _ => MetricKind::Histogram,
    }
}

/// Ours: per namespace a `Families` fed through its sink, then the page read as a scraper would.
fn render_ours(fams: &[MetricFamily], pages: &[Vec<&Series>]) -> usize {
    let mut parts = Vec::with_capacity(pages.len());
    for (ns, list) in pages.iter().enumerate() {
        let mut f = Families::new();
        // The engine renders a namespace's entity labels once into the sink's prefix.
        let prefix = list.first().map_or(String::new(), |s| {
            let e = entity_of(s, ns);
            let r: Vec<(&str, &str)> = e.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            render_labels(&r)
        });
        for s in list {
            let fam = &fams[s.fam];
            let own: Vec<(&str, &str)> = s
                .own
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let mut sink = f.sink(if s.entity.is_empty() { "" } else { &prefix });
            match &s.value {
                SeriesValue::Scalar(v) => sink.emit(
                    &fam.name,
                    &fam.help,
                    kind_of(fam.r#type),
                    &own,
                    if v.fract() == 0.0 && *v >= 0.0 && *v < 1.8e19 {
                        Value::U64(*v as u64)
                    } else {
                        Value::F64(*v)
                    },
                ),
                SeriesValue::Hist(h) => sink.emit_histogram(&fam.name, &fam.help, &own, h),
            }
        }
        parts.push(f);
    }
    let page = Arc::new(Page::new(parts));
    let mut r = PageReader::new(page);
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0;
    loop {
        match r.read(&mut buf).unwrap() {
            0 => return n,
            k => n += k,
        }
    }
}

/// The `prometheus` crate: the families a `Collector::collect` returns, then `TextEncoder`.
fn render_crate(fams: &[MetricFamily], pages: &[Vec<&Series>]) -> usize {
    use prometheus::proto;
    let mut out: Vec<proto::MetricFamily> = fams
        .iter()
        .map(|f| {
            let mut m = proto::MetricFamily::default();
            m.set_name(f.name.clone());
            m.set_help(f.help.clone());
            m.set_field_type(match f.r#type {
                TYPE_COUNTER => proto::MetricType::COUNTER,
                TYPE_GAUGE => proto::MetricType::GAUGE,
                _ => proto::MetricType::HISTOGRAM,
            });
            m
        })
        .collect();
    for (ns, list) in pages.iter().enumerate() {
        for s in list {
            let mut labels: Vec<proto::LabelPair> = Vec::new();
            for (k, v) in entity_of(s, ns).into_iter().chain(s.own.iter().cloned()) {
                let mut l = proto::LabelPair::default();
                l.set_name(k);
                l.set_value(v);
                labels.push(l);
            }
            let mut m = proto::Metric::default();
            m.set_label(labels);
            match &s.value {
                SeriesValue::Scalar(v) => {
                    if fams[s.fam].r#type == TYPE_COUNTER {
                        let mut c = proto::Counter::default();
                        c.set_value(*v);
                        m.set_counter(c);
                    } else {
                        let mut g = proto::Gauge::default();
                        g.set_value(*v);
                        m.set_gauge(g);
                    }
                }
                SeriesValue::Hist(h) => {
                    let mut ph = proto::Histogram::default();
                    ph.set_sample_count(h.count);
                    ph.set_sample_sum(h.sum);
                    ph.set_bucket(
                        h.buckets
                            .iter()
                            .map(|(le, n)| {
                                let mut b = proto::Bucket::default();
                                b.set_upper_bound(*le);
                                b.set_cumulative_count(*n);
                                b
                            })
                            .collect(),
                    );
                    m.set_histogram(ph);
                }
            }
            out[s.fam].mut_metric().push(m);
        }
    }
    out.retain(|f| !f.get_metric().is_empty());
    let mut text = String::new();
    prometheus::TextEncoder::new()
        .encode_utf8(&out, &mut text)
        .unwrap();
    text.len()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn status_kib(field: &str) -> usize {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix(" kB")?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// In a child: render `rounds` times with one renderer, print `ms peak_kib bytes`.
fn child(which: &str, page: &str, n: usize, rounds: usize) {
    let body = std::fs::read(page).unwrap();
    let (fams, series) = sample_page(&body);
    let pages = replicate(&series, n);
    let before = status_kib("VmRSS:");
    let mut times = Vec::new();
    let mut len = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        len = if which == "ours" {
            render_ours(&fams, &pages)
        } else {
            render_crate(&fams, &pages)
        };
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let peak = status_kib("VmHWM:").saturating_sub(before);
    println!("{:.3} {peak} {len}", median(&mut times));
}

fn main() {
    let n: usize = std::env::var("NETSLEUTH_BENCH_NETNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500);
    let rounds: usize = std::env::var("NETSLEUTH_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    if let (Ok(which), Ok(page)) = (
        std::env::var("NETSLEUTH_BENCH_CRATES_CHILD"),
        std::env::var("NETSLEUTH_BENCH_CRATES_PAGE"),
    ) {
        return child(&which, &page, n, rounds);
    }

    let body = scrape_host_page();
    let page_file =
        std::env::temp_dir().join(format!("netsleuth-crates-{}.pb", std::process::id()));
    std::fs::write(&page_file, &body).unwrap();
    let (fams, series) = sample_page(&body);
    let pages = replicate(&series, n);
    let total: usize = pages.iter().map(|p| p.len()).sum();
    let hist_series: usize = pages
        .iter()
        .flatten()
        .filter(|s| matches!(s.value, SeriesValue::Hist(_)))
        .count();
    println!(
        "rendering: the host page ({} families, {} series) replicated for {n} namespaces: {total} series ({hist_series} histograms), {rounds} rounds",
        fams.len(),
        series.len()
    );
    let run = |which: &str| -> (f64, usize, usize) {
        let out = Command::new(std::env::current_exe().unwrap())
            .env("NETSLEUTH_BENCH_CRATES_CHILD", which)
            .env("NETSLEUTH_BENCH_CRATES_PAGE", &page_file)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let v: Vec<&str> = text.split_whitespace().collect();
        assert!(
            v.len() == 3,
            "child {which}: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            v[0].parse().unwrap(),
            v[1].parse().unwrap(),
            v[2].parse().unwrap(),
        )
    };
    let (mo, peak_ours, len_ours) = run("ours");
    let (mc, peak_crate, len_crate) = run("crate");
    let _ = std::fs::remove_file(&page_file);
    println!(
        "  netsleuth model:  {mo:8.1} ms/page  peak RSS added {:7.1} MiB  {:6} KiB text",
        peak_ours as f64 / 1024.0,
        len_ours / 1024
    );
    println!(
        "  prometheus crate: {mc:8.1} ms/page  peak RSS added {:7.1} MiB  {:6} KiB text",
        peak_crate as f64 / 1024.0,
        len_crate / 1024
    );
    println!(
        "  ratio crate/ours: time {:.2}x, peak RSS added {:.2}x",
        mc / mo,
        peak_crate as f64 / peak_ours.max(1) as f64
    );

    // Parsing the same bytes.
    use procfs_core::FromBufRead;
    let files: Vec<(&str, Vec<u8>)> = ["/proc/net/dev", "/proc/net/snmp", "/proc/net/snmp6"]
        .into_iter()
        .filter_map(|p| Some((p, std::fs::read(p).ok()?)))
        .collect();
    println!(
        "parsing: {n} namespaces' worth of the host's files, {rounds} rounds (µs per namespace)"
    );
    for (path, bytes) in &files {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        let mut fields = (0usize, 0usize);
        for _ in 0..rounds {
            let t = Instant::now();
            for _ in 0..n {
                fields.0 = match *path {
                    "/proc/net/dev" => netsleuth::collectors::netdev::parse_netdev(bytes)
                        .map(|d| std::hint::black_box(d).devices.len())
                        .unwrap_or(0),
                    "/proc/net/snmp" => netsleuth::collectors::snmp::parse_snmp(bytes)
                        .map(|v| std::hint::black_box(v).len())
                        .unwrap_or(0),
                    _ => netsleuth::collectors::snmp::parse_snmp6(bytes)
                        .map(|v| std::hint::black_box(v).len())
                        .unwrap_or(0),
                };
            }
            ours.push(t.elapsed().as_secs_f64() * 1e6 / n as f64);
            let t = Instant::now();
            for _ in 0..n {
                fields.1 = match *path {
                    "/proc/net/dev" => {
                        procfs_core::net::InterfaceDeviceStatus::from_buf_read(&bytes[..])
                            .map(|d| std::hint::black_box(d).0.len())
                            .unwrap_or(0)
                    }
                    "/proc/net/snmp" => procfs_core::net::Snmp::from_buf_read(&bytes[..])
                        .map(|v| {
                            std::hint::black_box(v);
                            1
                        })
                        .unwrap_or(0),
                    _ => procfs_core::net::Snmp6::from_buf_read(&bytes[..])
                        .map(|v| {
                            std::hint::black_box(v);
                            1
                        })
                        .unwrap_or(0),
                };
            }
            theirs.push(t.elapsed().as_secs_f64() * 1e6 / n as f64);
        }
        let (o, c) = (median(&mut ours), median(&mut theirs));
        println!(
            "  {path:<16} ours {o:7.2} µs  procfs-core {c:7.2} µs  ratio {:.2}x{}",
            c / o,
            if fields.1 == 0 {
                "  (procfs-core failed to parse this kernel's file)"
            } else {
                ""
            }
        );
    }
}
