//! Soak (root): the release exporter runs for a long time under churn, and its resources are
//! sampled to see whether anything grows.
//!
//! - Every `NETSLEUTH_SOAK_CHURN_SECONDS` (10): the previous batch of namespaces is deleted and
//!   `NETSLEUTH_SOAK_NETNS` (100) new ones are made, each with a veth to the host (so `flow`
//!   attaches and forgets host-side devices) and events made in it: a UDP datagram to a closed
//!   port (a `PACKETLOSS` drop) and a TCP connect to one (a `TCPRESET_NOSOCK`), on its own
//!   loopback.
//! - A scrape a second; a `SIGHUP` reload every `NETSLEUTH_SOAK_RELOAD_SECONDS` (60).
//! - Events go to the file sink (rotating at 8 MiB) and to a local Loki stand-in.
//! - Sampled every 30 s: RSS, open fds, threads, and the entries of the exporter's BPF hash
//!   maps (counted with `bpftool map dump`, checking only).
//!
//! Prints the samples, the values at start (first sample), after 5 minutes, in the middle and
//! at the end, the RSS slope after the first 5 minutes (least squares, MiB/hour) and the target:
//! RSS at the end within 10 % of the 5-minute value, fds and threads flat.
//!
//! Run: `cargo bench --bench soak` (30 minutes; `NETSLEUTH_SOAK_MINUTES=10` for less).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env_u64(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn sh(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One scrape; its body.
fn scrape(addr: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    if !buf.starts_with(b"HTTP/1.1 200") && !buf.starts_with(b"HTTP/1.0 200") {
        return None;
    }
    let body = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    Some(String::from_utf8_lossy(&buf[body..]).into_owned())
}

/// Sum of a family's samples on a page.
fn sum_of(page: &str, name: &str) -> u64 {
    page.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// What the scraper thread saw: scrapes, failures, events read, events the sinks delivered.
#[derive(Default)]
struct Seen {
    scrapes: AtomicU64,
    failed: AtomicU64,
    events: AtomicU64,
    sent: AtomicU64,
}

/// Events in a namespace: a datagram to a closed UDP port, a connect to a closed TCP port.
fn make_events(name: &str) {
    let path = format!("/run/netns/{name}");
    std::thread::spawn(move || {
        let Ok(fd) = std::fs::File::open(&path) else {
            return;
        };
        if nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).is_err() {
            return;
        }
        // Commands started from this thread run in its namespace.
        sh("ip", &["link", "set", "lo", "up"]);
        sh("ip", &["link", "set", "eth0", "up"]);
        if let Ok(u) = std::net::UdpSocket::bind("127.0.0.1:0") {
            let _ = u.send_to(b"soak", "127.0.0.1:9");
        }
        let _ =
            TcpStream::connect_timeout(&"127.0.0.1:9".parse().unwrap(), Duration::from_millis(200));
    })
    .join()
    .ok();
}

/// Entries of the process's BPF hash maps (types hash, percpu hash, LRU, LRU percpu).
fn bpf_hash_entries(pid: u32) -> u64 {
    let mut ids = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return 0;
    };
    for e in dir.flatten() {
        let info = std::fs::read_to_string(e.path()).unwrap_or_default();
        let field = |k: &str| -> Option<u64> {
            info.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.trim().parse().ok())
        };
        if let (Some(t), Some(id)) = (field("map_type:"), field("map_id:")) {
            if [1, 5, 9, 10].contains(&t) && !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    ids.iter()
        .map(|id| {
            let out = Command::new("bpftool")
                .args(["-j", "map", "dump", "id", &id.to_string()])
                .output();
            out.ok()
                .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
                .and_then(|v| v.as_array().map(|a| a.len() as u64))
                .unwrap_or(0)
        })
        .sum()
}

struct Sample {
    t: f64,
    rss_kib: u64,
    fds: u64,
    threads: u64,
    map_entries: u64,
}

fn sample(pid: u32, t0: Instant) -> Sample {
    Sample {
        t: t0.elapsed().as_secs_f64(),
        rss_kib: common::proc_status(pid, "VmRSS:"),
        fds: std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64),
        threads: common::proc_status(pid, "Threads:"),
        map_entries: bpf_hash_entries(pid),
    }
}

fn main() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("the soak benchmark needs root (namespaces, eBPF)");
        return;
    }
    let minutes = env_u64("NETSLEUTH_SOAK_MINUTES", 30);
    let per_batch = env_u64("NETSLEUTH_SOAK_NETNS", 100) as usize;
    let churn = Duration::from_secs(env_u64("NETSLEUTH_SOAK_CHURN_SECONDS", 10));
    let reload = Duration::from_secs(env_u64("NETSLEUTH_SOAK_RELOAD_SECONDS", 60));
    let every = Duration::from_secs(30);
    let tag = std::process::id() % 10000;
    let dir = std::env::temp_dir().join(format!("netsleuth-soak-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    let (loki, pushes, _) = common::loki_server(Duration::ZERO);
    let cfg = dir.join("config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "metrics:\n  probes: [netdev, ip, icmp, tcp, udp, tcpext, ipext, sock, softnet, tcpsummary, conntrack, qdisc, packetloss, tcpreset, tcpretrans, flow, socketlatency]\n\
             event:\n  probes: [packetloss, tcpreset]\n  sinks:\n\
             \x20 - {{name: file, args: {{path: {}, maxSize: 8MiB, maxBackups: 2}}}}\n\
             \x20 - {{name: loki, args: {{url: 'http://{loki}/loki/api/v1/push', batchWait: 500ms}}}}\n",
            dir.join("events.json").display()
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_netsleuth");
    let addr = "127.0.0.1:19213";
    let mut child = Command::new(bin)
        .arg(format!("--web.listen-address={addr}"))
        .arg(format!("--config.file={}", cfg.display()))
        .arg("--log.level=warn")
        .stderr(Stdio::null())
        .spawn()
        .expect("start the release binary");
    let pid = child.id();
    let t0 = Instant::now();
    while scrape(addr).is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "exporter did not start"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "soak: {minutes} min, {per_batch} namespaces made and deleted every {} s, a scrape a second, SIGHUP every {} s",
        churn.as_secs(),
        reload.as_secs()
    );
    println!(
        "{:>8} {:>9} {:>6} {:>8} {:>12} {:>10} {:>9} {:>9} {:>10} {:>11}",
        "t_s",
        "rss_MiB",
        "fds",
        "threads",
        "map_entries",
        "netns_made",
        "scrapes",
        "events",
        "delivered",
        "loki_pushes"
    );
    // A scrape a second, on its own thread (the churn takes seconds of its own).
    let seen = Arc::new(Seen::default());
    let stop = Arc::new(AtomicBool::new(false));
    let scraper = {
        let (seen, stop) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match scrape(addr) {
                    Some(page) => {
                        seen.scrapes.fetch_add(1, Ordering::Relaxed);
                        seen.events
                            .store(sum_of(&page, "netsleuth_events_total"), Ordering::Relaxed);
                        seen.sent.store(
                            sum_of(&page, "netsleuth_event_sink_sent_total"),
                            Ordering::Relaxed,
                        );
                    }
                    None => {
                        seen.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_secs(1).saturating_sub(t.elapsed()));
            }
        })
    };
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs(minutes * 60);
    let (mut next_churn, mut next_reload, mut next_sample) = (t0, t0 + reload, t0);
    let mut batch: Vec<String> = Vec::new();
    let (mut made, mut gen) = (0usize, 0usize);
    let mut samples: Vec<Sample> = Vec::new();
    while Instant::now() < end {
        let now = Instant::now();
        if now >= next_churn {
            let del: Vec<String> = batch.iter().map(|n| format!("netns del {n}")).collect();
            common::ip_batch(&del);
            batch.clear();
            gen += 1;
            let mut add = Vec::new();
            for i in 0..per_batch {
                let name = format!("nsk{tag}g{}x{i}", gen % 2);
                add.push(format!("netns add {name}"));
                add.push(format!(
                    "link add nsk{tag}g{}v{i} type veth peer name eth0 netns {name}",
                    gen % 2
                ));
                add.push(format!("link set nsk{tag}g{}v{i} up", gen % 2));
                batch.push(name);
            }
            common::ip_batch(&add);
            for n in &batch {
                make_events(n);
            }
            made += per_batch;
            next_churn += churn;
        }
        if now >= next_reload {
            let _ = sh("kill", &["-HUP", &pid.to_string()]);
            next_reload += reload;
        }
        if now >= next_sample {
            let s = sample(pid, t0);
            println!(
                "{:>8.0} {:>9.1} {:>6} {:>8} {:>12} {:>10} {:>9} {:>9} {:>10} {:>11}",
                s.t,
                s.rss_kib as f64 / 1024.0,
                s.fds,
                s.threads,
                s.map_entries,
                made,
                seen.scrapes.load(Ordering::Relaxed),
                seen.events.load(Ordering::Relaxed),
                seen.sent.load(Ordering::Relaxed),
                pushes.load(Ordering::Relaxed)
            );
            samples.push(s);
            next_sample += every;
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!("the exporter exited: {st}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = scraper.join();
    let last = sample(pid, t0);
    let _ = child.kill();
    let _ = child.wait();
    let del: Vec<String> = batch.iter().map(|n| format!("netns del {n}")).collect();
    common::ip_batch(&del);
    let _ = std::fs::remove_dir_all(&dir);
    samples.push(last);

    let at = |secs: f64| -> &Sample {
        samples
            .iter()
            .min_by(|a, b| (a.t - secs).abs().partial_cmp(&(b.t - secs).abs()).unwrap())
            .unwrap()
    };
    let total = samples.last().unwrap().t;
    let five = at(300f64.min(total / 3.0));
    let show = |what: &str, s: &Sample| {
        println!(
            "{what:<14} t={:>5.0} s  RSS {:6.1} MiB  fds {:4}  threads {:3}  BPF hash entries {:6}",
            s.t,
            s.rss_kib as f64 / 1024.0,
            s.fds,
            s.threads,
            s.map_entries
        )
    };
    println!(
        "{made} namespaces made, {} scrapes ({} failed), {} events read, {} delivered by the sinks, {} Loki pushes",
        seen.scrapes.load(Ordering::Relaxed),
        seen.failed.load(Ordering::Relaxed),
        seen.events.load(Ordering::Relaxed),
        seen.sent.load(Ordering::Relaxed),
        pushes.load(Ordering::Relaxed)
    );
    show("start", &samples[0]);
    show("after warm-up", five);
    show("middle", at(total / 2.0));
    show("end", samples.last().unwrap());
    // RSS slope after the warm-up, least squares.
    let tail: Vec<&Sample> = samples.iter().filter(|s| s.t >= five.t).collect();
    let n = tail.len() as f64;
    let (mx, my) = (
        tail.iter().map(|s| s.t).sum::<f64>() / n,
        tail.iter().map(|s| s.rss_kib as f64).sum::<f64>() / n,
    );
    let cov: f64 = tail
        .iter()
        .map(|s| (s.t - mx) * (s.rss_kib as f64 - my))
        .sum();
    let var: f64 = tail.iter().map(|s| (s.t - mx).powi(2)).sum();
    let slope = if var > 0.0 { cov / var } else { 0.0 };
    let end_s = samples.last().unwrap();
    let growth = end_s.rss_kib as f64 / five.rss_kib as f64 - 1.0;
    let spread = |f: fn(&Sample) -> u64| {
        let v: Vec<u64> = tail.iter().map(|s| f(s)).collect();
        (*v.iter().min().unwrap(), *v.iter().max().unwrap())
    };
    let (fmin, fmax) = spread(|s| s.fds);
    let (tmin, tmax) = spread(|s| s.threads);
    println!(
        "RSS slope after warm-up {:+.2} MiB/hour; end vs warm-up {:+.1} % (target within 10 %); fds {fmin}-{fmax}, threads {tmin}-{tmax} after warm-up",
        slope * 3600.0 / 1024.0,
        growth * 100.0
    );
}
