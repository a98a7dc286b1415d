//! The latency probes end to end (root): the real binary with a latency probe in
//! `metrics.probes` and `event.probes` and a `file` sink, latency induced in our own namespaces
//! (198.18.0.0/15), histogram counts compared with the kernel's own figures.
mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::{events_of, scrape_sum, wait_for, write_config, Exporter, Pair};

/// Tests share kernel-global tracepoints: one at a time.
static LOCK: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn tmp_events() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(common::unique("nsllat"));
    std::fs::create_dir_all(&d).unwrap();
    d.join("events.jsonl")
}

/// The exporter with `probe` (YAML entry) as metrics and events; events to a JSON-lines file.
fn start(probe: &str, events: &std::path::Path) -> Exporter {
    let cfg = write_config(&format!(
        r#"
metrics:
  probes: [{probe}]
event:
  probes: [{probe}]
  sinks: [{{name: file, args: {{path: {}}}}}]
"#,
        events.display()
    ));
    let e = Exporter::start(&[&format!("--config.file={}", cfg.display())]);
    wait_for("eBPF probe attached", Duration::from_secs(10), || {
        let s = e.scrape();
        (s.find("netsleuth_bpf_map_full_total", &[]).len() == 1).then_some(())
    });
    e
}

fn value(e: &Exporter, name: &str, want: &[(&str, &str)]) -> f64 {
    scrape_sum(e, name, want)
}

/// `Sent <bytes> bytes <pkts> pkt` and the backlog packets of the root qdisc.
fn tc_sent_backlog(p: &Pair) -> (u64, u64) {
    let out = p.a.exec("tc", &["-s", "qdisc", "show", "dev", &p.dev_a]);
    let words: Vec<&str> = out.split_whitespace().collect();
    let after = |w: &str, off: usize| -> u64 {
        let i = words.iter().position(|x| *x == w).unwrap();
        words[i + off].trim_end_matches('p').parse().unwrap()
    };
    // "Sent 1234 bytes 5 pkt ..." / "backlog 0b 0p requeues 0"
    (after("Sent", 3), after("backlog", 2))
}

#[test]
fn tbf_qdisc_delay_shows_in_netiftxlat_histogram_with_exact_count() {
    if !common::privileged_with("netiftxlat_tbf", &["tc"]) {
        return;
    }
    let _g = lock();
    let evp = tmp_events();
    let e = start("netiftxlat", &evp);
    let p = Pair::new();
    // ARP resolved before the qdisc slows things down.
    let dst = format!("{}:9", p.ip_b);
    let d = dst.clone();
    p.a.within(move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        s.send_to(b"arp", &d).unwrap();
    });
    p.wait_neighbour_resolved();
    // 1 Mbit/s: a 1000-byte datagram every ~8.5 ms; 40 of them queue for up to ~330 ms.
    p.a.exec(
        "tc",
        &[
            "qdisc", "add", "dev", &p.dev_a, "root", "tbf", "rate", "1mbit", "burst", "1600",
            "latency", "2s",
        ],
    );
    let (sent0, _) = tc_sent_backlog(&p);
    let a = p.a.inode().to_string();
    let labels = [("netns", a.as_str()), ("device", p.dev_a.as_str())];
    let count0 = value(&e, "netsleuth_netiftxlat_qdisc_seconds_count", &labels);
    p.a.within(move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..40 {
            s.send_to(&[0u8; 1000], &dst).unwrap();
        }
    });
    let sent = wait_for("tbf drained", Duration::from_secs(10), || {
        let (sent, backlog) = tc_sent_backlog(&p);
        (backlog == 0 && sent >= sent0 + 40).then_some(sent)
    });
    let delta = (sent - sent0) as f64;
    let got = wait_for("histogram caught up", Duration::from_secs(5), || {
        let c = value(&e, "netsleuth_netiftxlat_qdisc_seconds_count", &labels) - count0;
        (c >= delta).then_some(c)
    });
    assert_eq!(got, delta, "one qdisc observation per packet tc sent");
    let sc = e.scrape();
    let inf = sc.one(
        "netsleuth_netiftxlat_qdisc_seconds_bucket",
        &[labels[0], labels[1], ("le", "+Inf")],
    );
    let count = sc.one("netsleuth_netiftxlat_qdisc_seconds_count", &labels);
    assert_eq!(inf.value, count.value, "+Inf bucket = count");
    // Some packets waited longer than 2^27 ns (~134 ms) in the tbf.
    let le134 = sc.one(
        "netsleuth_netiftxlat_qdisc_seconds_bucket",
        &[labels[0], labels[1], ("le", "0.134217728")],
    );
    let slow = count.value.parse::<f64>().unwrap() - le134.value.parse::<f64>().unwrap();
    assert!(slow >= 1.0, "observations above 134 ms: {slow}");
    let sum: f64 = sc
        .one("netsleuth_netiftxlat_qdisc_seconds_sum", &labels)
        .value
        .parse()
        .unwrap();
    assert!(sum > 1.0, "40 packets queued ~0..330 ms: sum {sum}");
    // The driver stage saw them too (veth xmit is fast).
    assert!(value(&e, "netsleuth_netiftxlat_device_seconds_count", &labels) >= delta);
    // Events at or above the 100 ms default threshold, in a's namespace, on its device: as
    // many as observations of 100 ms or more, which the log2 histogram places between its
    // 2^26 ns (~67 ms) and 2^27 ns (~134 ms) bounds.
    let le67 = sc.one(
        "netsleuth_netiftxlat_qdisc_seconds_bucket",
        &[labels[0], labels[1], ("le", "0.067108864")],
    );
    let above67 = count.value.parse::<f64>().unwrap() - le67.value.parse::<f64>().unwrap();
    let evs = wait_for("NETIFTXLAT_QDISC events", Duration::from_secs(5), || {
        let v = events_of(&evp, "NETIFTXLAT_QDISC", p.a.inode());
        (v.len() as f64 >= slow).then_some(v)
    });
    for ev in &evs {
        let lat = ev["fields"]["latency"].as_f64().unwrap();
        assert!(lat >= 0.1, "event below threshold: {ev}");
        assert_eq!(ev["fields"]["protocol"], "UDP");
        assert_eq!(ev["fields"]["daddr"], p.ip_b.as_str());
    }
    assert!(
        (evs.len() as f64) <= above67,
        "events only at or above the threshold: {} events, {slow} observations above 134 ms, {above67} above 67 ms",
        evs.len()
    );
}

#[test]
fn traffic_fills_softirq_histograms_and_more_traffic_adds_more() {
    if !common::privileged("softirq_traffic") {
        return;
    }
    let _g = lock();
    let evp = tmp_events();
    let e = start(
        "{name: softirq, args: {softirq-types: [net_rx, net_tx], threshold: 1us}}",
        &evp,
    );
    let p = Pair::new();
    let blast = |n: usize| {
        let dst = format!("{}:9", p.ip_b);
        p.a.within(move || {
            let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            for _ in 0..n {
                let _ = s.send_to(&[0u8; 200], &dst);
            }
        });
    };
    let rx = |e: &Exporter| {
        (
            value(
                e,
                "netsleuth_softirq_exec_seconds_count",
                &[("type", "net_rx")],
            ),
            value(
                e,
                "netsleuth_softirq_sched_seconds_count",
                &[("type", "net_rx")],
            ),
        )
    };
    blast(200);
    let (exec0, sched0) = wait_for("net_rx softirqs observed", Duration::from_secs(5), || {
        let v = rx(&e);
        (v.0 > 0.0 && v.1 > 0.0).then_some(v)
    });
    let sc = e.scrape();
    assert_eq!(sc.types["netsleuth_softirq_exec_seconds"], "histogram");
    for s in sc.find("netsleuth_softirq_exec_seconds_count", &[]) {
        assert!(s.labels.contains_key("cpu"), "{s:?}");
        assert!(!s.labels.contains_key("netns"), "node-level: {s:?}");
        assert!(["net_rx", "net_tx"].contains(&s.labels["type"].as_str()));
    }
    blast(5000);
    let (exec1, sched1) = wait_for(
        "more softirqs with more load",
        Duration::from_secs(5),
        || {
            let v = rx(&e);
            (v.0 > exec0 + 10.0 && v.1 > sched0).then_some(v)
        },
    );
    assert!(exec1 > exec0 && sched1 > sched0);
    // Events above the 1 µs threshold: node-level, with the CPU and the softirq's name.
    let evs = wait_for("SOFTIRQ_EXCUTE_SLOW events", Duration::from_secs(5), || {
        let v = events_of(&evp, "SOFTIRQ_EXCUTE_SLOW", 0);
        (!v.is_empty()).then_some(v)
    });
    assert!(evs
        .iter()
        .all(|v| v["fields"]["latency"].as_f64().unwrap() >= 1e-6));
    assert!(evs
        .iter()
        .all(|v| ["net_rx", "net_tx"].contains(&v["fields"]["softirq"].as_str().unwrap())));
    assert!(evs.iter().all(|v| v["fields"]["cpu"].as_u64().is_some()));
    // Only the configured types.
    assert!(e
        .scrape()
        .find("netsleuth_softirq_exec_seconds_count", &[("type", "timer")])
        .is_empty());
}

#[test]
fn slow_reader_gives_readslow_event_and_histogram_observation() {
    if !common::privileged("socketlatency_slow_reader") {
        return;
    }
    let _g = lock();
    let evp = tmp_events();
    let e = start("socketlatency", &evp);
    let p = Pair::new();
    let b_ino = p.b.inode();
    let b = b_ino.to_string();
    let before = |e: &Exporter| {
        let sc = e.scrape();
        let get = |n: &str, w: &[(&str, &str)]| -> f64 {
            sc.find(n, w)
                .iter()
                .map(|s| s.value.parse::<f64>().unwrap())
                .sum()
        };
        let c = get(
            "netsleuth_socketlatency_read_seconds_count",
            &[("netns", &b)],
        );
        let le = get(
            "netsleuth_socketlatency_read_seconds_bucket",
            &[("netns", &b), ("le", "0.268435456")],
        );
        c - le
    };
    let slow0 = before(&e);
    let port: u16 = 30000 + (std::process::id() % 20000) as u16;
    let (tx, rx) = std::sync::mpsc::channel();
    let dst = format!("{}:{port}", p.ip_b);
    std::thread::scope(|s| {
        s.spawn(|| {
            p.b.within(move || {
                let sock = std::net::UdpSocket::bind(("0.0.0.0", port)).unwrap();
                tx.send(()).unwrap();
                // Data arrives now; the application reads it 300 ms later.
                std::thread::sleep(Duration::from_millis(300));
                let mut buf = [0u8; 64];
                sock.recv_from(&mut buf).unwrap().0
            })
        });
        rx.recv().unwrap();
        p.a.within(move || {
            let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            s.send_to(b"hello", &dst).unwrap();
        });
    });
    let evs = wait_for("SOCKETLAT_READSLOW", Duration::from_secs(5), || {
        let v = events_of(&evp, "SOCKETLAT_READSLOW", b_ino);
        (!v.is_empty()).then_some(v)
    });
    assert_eq!(evs.len(), 1, "{evs:?}");
    let f = &evs[0]["fields"];
    let lat = f["latency"].as_f64().unwrap();
    assert!((0.25..2.0).contains(&lat), "latency {lat}");
    assert_eq!(f["protocol"], "UDP");
    assert_eq!(f["sport"], port, "local side first");
    assert_eq!(evs[0]["name"], p.b.name.as_str());
    // One observation above 2^28 ns (~268 ms) in b's read histogram.
    let slow = wait_for("read histogram", Duration::from_secs(5), || {
        let v = before(&e) - slow0;
        (v >= 1.0).then_some(v)
    });
    assert_eq!(slow, 1.0);
    assert!(events_of(&evp, "SOCKETLAT_READSLOW", p.a.inode()).is_empty());
}

#[test]
fn tcp_writes_held_by_a_full_window_give_sendslow() {
    if !common::privileged("socketlatency_full_window") {
        return;
    }
    let _g = lock();
    let evp = tmp_events();
    let e = start("socketlatency", &evp);
    let p = Pair::new();
    let a_ino = p.a.inode();
    let a = a_ino.to_string();
    // The window closes long before a's send buffer fills, so writes return with data the
    // stack may not send yet; b reads nothing for 400 ms.
    let port: u16 = 30000 + (std::process::id() % 20000) as u16 + 1;
    p.full_window_write(port, 400, 600);
    let evs = wait_for("SOCKETLAT_SENDSLOW", Duration::from_secs(5), || {
        let v = events_of(&evp, "SOCKETLAT_SENDSLOW", a_ino);
        (!v.is_empty()).then_some(v)
    });
    for ev in &evs {
        assert!(ev["fields"]["latency"].as_f64().unwrap() >= 0.1, "{ev}");
        assert_eq!(ev["fields"]["protocol"], "TCP");
        assert_eq!(ev["fields"]["dport"], port);
    }
    assert!(
        value(
            &e,
            "netsleuth_socketlatency_send_seconds_count",
            &[("netns", &a)]
        ) >= 1.0
    );
}

#[test]
fn tcp_segments_received_show_in_kernellatency_rx() {
    if !common::privileged("kernellatency_rx") {
        return;
    }
    let _g = lock();
    let evp = tmp_events();
    // Threshold 0: every observation is also an event.
    let e = start("{name: kernellatency, args: {threshold: 0ns}}", &evp);
    let p = Pair::new();
    let b_ino = p.b.inode();
    let b = b_ino.to_string();
    let port: u16 = 30000 + (std::process::id() % 20000) as u16 + 2;
    let (tx, rx) = std::sync::mpsc::channel();
    let dst = format!("{}:{port}", p.ip_b);
    let tcp = |ns: &common::Netns, f: &str| -> u64 {
        common::proc_pairs(&ns.cat("/proc/net/snmp"))[&format!("Tcp_{f}")]
            .parse()
            .unwrap()
    };
    let in0 = tcp(&p.b, "InSegs");
    std::thread::scope(|s| {
        s.spawn(|| {
            p.b.within(move || {
                use std::io::Read;
                let l = std::net::TcpListener::bind(("0.0.0.0", port)).unwrap();
                tx.send(()).unwrap();
                let (mut c, _) = l.accept().unwrap();
                let mut buf = vec![0u8; 1 << 16];
                while c.read(&mut buf).map(|n| n > 0).unwrap_or(false) {}
            })
        });
        rx.recv().unwrap();
        p.a.within(move || {
            use std::io::Write;
            let mut c = std::net::TcpStream::connect(&dst).unwrap();
            for _ in 0..20 {
                c.write_all(&[1u8; 1000]).unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
        });
    });
    // One observation per segment b's established socket received (tcp:tcp_probe fires in
    // tcp_rcv_established): every segment b's namespace took in (`Tcp InSegs`) but the three
    // it handled outside ESTABLISHED, the SYN, the handshake's ACK and the ACK of its own FIN
    // (LAST_ACK).
    let end = std::time::Instant::now() + Duration::from_secs(5);
    let n = loop {
        let v = value(
            &e,
            "netsleuth_kernellatency_rx_seconds_count",
            &[("netns", &b)],
        );
        let segs = tcp(&p.b, "InSegs") - in0;
        if segs >= 23 && v == (segs - 3) as f64 {
            break v;
        }
        assert!(
            std::time::Instant::now() < end,
            "rx observations {v} != b's InSegs {segs} - 3"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let sum = value(
        &e,
        "netsleuth_kernellatency_rx_seconds_sum",
        &[("netns", &b)],
    );
    assert!(sum > 0.0 && sum < n, "sum {sum}");
    let evs = events_of(&evp, "KERNELLAT_RX", b_ino);
    assert!(!evs.is_empty());
    assert!(evs
        .iter()
        .all(|v| v["fields"]["protocol"] == "TCP" && v["fields"]["daddr"] == p.ip_b.as_str()));
    assert!(evs.iter().any(|v| v["fields"]["dport"] == port));
    // Nothing was forwarded: every packet was local to a or b.
    assert_eq!(
        value(
            &e,
            "netsleuth_kernellatency_forward_seconds_count",
            &[("netns", &b)]
        ),
        0.0
    );
}

/// virtcmdlatency needs fentry or kprobes (no tracepoint) and virtio-net's control command
/// function: where the loader's probes say the kernel offers neither family, or the function is
/// absent, `netsleuth probes` and the log say why it cannot run and the probe beside it runs;
/// where both are there, it attaches and serves its series beside netiftxlat.
#[test]
fn virtcmdlatency_says_why_it_cannot_run_and_others_run() {
    if !common::privileged("virtcmdlatency_unavailable") {
        return;
    }
    let _g = lock();
    let o = common::offers();
    let target = common::kernel_function("virtnet_send_command_reply")
        || common::kernel_function("virtnet_send_command");
    let runs = target && (o.fentry() || o.kprobes());
    let out = std::process::Command::new(common::BIN)
        .arg("probes")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("virtcmdlatency "))
        .unwrap_or_else(|| panic!("no virtcmdlatency line in:\n{text}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    if runs {
        assert_eq!(cols[2], "yes", "{line}");
    } else {
        assert_eq!(cols[2], "no", "{line}");
        assert!(line.contains("no attach method works"), "{line}");
        assert!(line.contains("fentry "), "{line}");
        assert!(line.contains("kprobe "), "{line}");
        // The kernel's refusals, as the loader's probes got them (first clause).
        for r in [&o.fentry, &o.kprobes]
            .into_iter()
            .filter_map(|r| r.as_ref().err())
        {
            let why = r
                .split_once("unsupported on this kernel: ")
                .map_or(r.as_str(), |x| x.1);
            let first = why.split(": ").next().unwrap();
            assert!(line.contains(first), "{first:?} missing: {line}");
        }
    }
    // The log at startup, with netiftxlat beside it.
    let cfg = write_config("metrics:\n  probes: [virtcmdlatency, netiftxlat]\n");
    let mut child = common::Holder::spawn(
        std::process::Command::new(common::BIN)
            .arg("--web.listen-address=127.0.0.1:0")
            .arg(format!("--config.file={}", cfg.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped()),
    );
    let mut seen = Vec::new();
    let log = common::read_line_until(
        "the exporter's startup log",
        child.0.stderr.take().unwrap(),
        Duration::from_secs(20),
        move |l| {
            seen.push(l.to_string());
            l.contains("listening on ").then(|| seen.join("\n"))
        },
    );
    drop(child);
    if runs {
        assert!(
            log.contains("eBPF probe virtcmdlatency attached via"),
            "{log}"
        );
    } else {
        assert!(
            log.contains("eBPF probe virtcmdlatency cannot run: no attach method works"),
            "{log}"
        );
    }
    assert!(
        log.contains("eBPF probe netiftxlat attached via tp_btf"),
        "{log}"
    );
    // And served: netiftxlat's series are there, virtcmdlatency's exactly where it runs.
    let e = Exporter::start(&[&format!("--config.file={}", cfg.display())]);
    let sc = wait_for("netiftxlat running", Duration::from_secs(10), || {
        let s = e.scrape();
        (!s.find("netsleuth_bpf_map_full_total", &[("probe", "netiftxlat")])
            .is_empty())
        .then_some(s)
    });
    assert_eq!(
        sc.find(
            "netsleuth_bpf_map_full_total",
            &[("probe", "virtcmdlatency")]
        )
        .len(),
        usize::from(runs)
    );
    if !runs {
        assert!(!sc.types.contains_key("netsleuth_virtcmdlatency_seconds"));
    }
}

/// Every latency probe at once, with traffic so every family has series: promtool accepts the
/// histograms (cumulative buckets, `+Inf` = `_count`) without a complaint.
#[test]
fn promtool_accepts_the_latency_histograms() {
    if !common::privileged_with("latency_promtool", &["promtool"]) {
        return;
    }
    let _g = lock();
    let cfg = write_config(
        "metrics:\n  probes: [netiftxlat, softirq, socketlatency, kernellatency, virtcmdlatency]\n",
    );
    let e = Exporter::start(&[&format!("--config.file={}", cfg.display())]);
    let p = Pair::new();
    let port: u16 = 30000 + (std::process::id() % 20000) as u16 + 3;
    let (tx, rx) = std::sync::mpsc::channel();
    let dst = format!("{}:{port}", p.ip_b);
    std::thread::scope(|s| {
        s.spawn(|| {
            p.b.within(move || {
                use std::io::Read;
                let l = std::net::TcpListener::bind(("0.0.0.0", port)).unwrap();
                tx.send(()).unwrap();
                let (mut c, _) = l.accept().unwrap();
                let mut buf = vec![0u8; 1 << 16];
                while c.read(&mut buf).map(|n| n > 0).unwrap_or(false) {}
            })
        });
        rx.recv().unwrap();
        p.a.within(move || {
            use std::io::Write;
            let mut c = std::net::TcpStream::connect(&dst).unwrap();
            for _ in 0..50 {
                c.write_all(&[1u8; 4000]).unwrap();
            }
        });
    });
    let text = wait_for("every latency family", Duration::from_secs(10), || {
        let t = e.scrape_text();
        [
            "netsleuth_netiftxlat_qdisc_seconds",
            "netsleuth_netiftxlat_device_seconds",
            "netsleuth_softirq_sched_seconds",
            "netsleuth_softirq_exec_seconds",
            "netsleuth_socketlatency_read_seconds",
            "netsleuth_kernellatency_rx_seconds",
        ]
        .iter()
        .all(|f| t.contains(&format!("# TYPE {f} histogram")))
        .then_some(t)
    });
    let mut c = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    let out = c.wait_with_output().unwrap();
    let msg = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool failed:\n{msg}");
    assert!(msg.trim().is_empty(), "promtool complained:\n{msg}");
    // +Inf = _count for every series.
    let sc = common::Scrape::parse(&text);
    for c in sc
        .samples
        .iter()
        .filter(|s| s.name.starts_with("netsleuth_") && s.name.ends_with("_seconds_count"))
    {
        let fam = c.name.trim_end_matches("_count");
        let mut want: Vec<(&str, &str)> = c
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        want.push(("le", "+Inf"));
        let inf = sc.find(&format!("{fam}_bucket"), &want);
        assert_eq!(inf.len(), 1, "{c:?}");
        assert_eq!(inf[0].value, c.value, "{c:?}");
    }
}

#[test]
fn kill_9_leaves_no_latency_program_attached() {
    if !common::privileged("latency_kill_9") {
        return;
    }
    let _g = lock();
    use netsleuth::bpf::prog;
    let before: Vec<u32> = prog::loaded_programs()
        .unwrap()
        .into_iter()
        .map(|(i, _)| i)
        .collect();
    let cfg =
        write_config("metrics:\n  probes: [netiftxlat, softirq, socketlatency, kernellatency]\n");
    let e = Exporter::start(&[&format!("--config.file={}", cfg.display())]);
    wait_for("latency probes attached", Duration::from_secs(10), || {
        (e.scrape().find("netsleuth_bpf_map_full_total", &[]).len() == 4).then_some(())
    });
    let ours: Vec<(u32, String)> = prog::loaded_programs()
        .unwrap()
        .into_iter()
        .filter(|(i, _)| !before.contains(i))
        .collect();
    // 4 + 3 + 4 + 5 attach points.
    assert!(ours.len() >= 16, "attach points loaded: {ours:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(e.pid()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    drop(e);
    wait_for(
        "programs gone after kill -9",
        Duration::from_secs(5),
        || {
            let live = prog::loaded_programs().unwrap();
            (!live.iter().any(|p| ours.contains(p))).then_some(())
        },
    );
}

/// a → r → b with r routing: r's namespace sees every a→b packet forwarded.
#[test]
fn routed_packets_show_in_kernellatency_forward() {
    if !common::privileged("kernellatency_forward") {
        return;
    }
    let _g = lock();
    let e = start("kernellatency", &tmp_events());
    let net = common::Routed::new();
    let (a, r) = (&net.a, &net.r);
    let ri = r.inode().to_string();
    let fwd = || net.forwarded();
    let fwd0 = fwd();
    let before = value(
        &e,
        "netsleuth_kernellatency_forward_seconds_count",
        &[("netns", &ri)],
    );
    net.send(30);
    // The 30 datagrams, then b's ICMP port-unreachable answers (rate-limited) on the way back.
    wait_for(
        "forwarded packets observed in r",
        Duration::from_secs(5),
        || {
            let v = value(
                &e,
                "netsleuth_kernellatency_forward_seconds_count",
                &[("netns", &ri)],
            ) - before;
            (v >= 30.0).then_some(())
        },
    );
    // Exactly the datagrams r's namespace forwarded (`Ip ForwDatagrams`).
    let n = wait_for(
        "forward observations = r's ForwDatagrams",
        Duration::from_secs(5),
        || {
            let v = value(
                &e,
                "netsleuth_kernellatency_forward_seconds_count",
                &[("netns", &ri)],
            ) - before;
            (v == (fwd() - fwd0) as f64).then_some(v)
        },
    );
    assert!(n >= 30.0, "{n}");
    let ai = a.inode().to_string();
    assert_eq!(
        value(
            &e,
            "netsleuth_kernellatency_forward_seconds_count",
            &[("netns", &ai)]
        ),
        0.0,
        "a only sends"
    );
}
