//! Scrape benchmark (root): creates 10, 100 and 500 network namespaces, each with a veth pair
//! (like a pod's eth0) and an address in 198.19.0.0/16, runs the release exporter with the
//! default probes and reports scrape p50/p99, CPU time per scrape, per-namespace cost against
//! the raw read() time of the same procfs files, RSS, and node_exporter's scrape time for the
//! host namespace alone.
//!
//! Run: `cargo bench --bench scrape` (sizes and scrape count via NETSLEUTH_BENCH_SIZES=10,100,500
//! and NETSLEUTH_BENCH_SCRAPES=30; NETSLEUTH_BENCH_CONFIG=path runs a config file instead of the
//! default probe set; NETSLEUTH_BENCH_PROCESSES=1 puts a sleeping process in every namespace, as a
//! pod has, instead of leaving them named namespaces with no process).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

fn sh(cmd: &str) {
    let st = Command::new("sh").arg("-c").arg(cmd).status().unwrap();
    assert!(st.success(), "{cmd}");
}

/// GET over HTTP/1.1 as Prometheus does (so a streamed page arrives chunked); returns the body
/// (de-chunked, still gzip-compressed if `gzip`).
fn get_with(addr: &str, path: &str, gzip: bool) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    let enc = if gzip {
        "Accept-Encoding: gzip\r\n"
    } else {
        ""
    };
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{enc}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut b = Vec::new();
    s.read_to_end(&mut b).unwrap();
    let split = b.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&b[..split]).to_ascii_lowercase();
    let mut body = &b[split + 4..];
    if !head.contains("transfer-encoding: chunked") {
        return body.to_vec();
    }
    let mut out = Vec::new();
    loop {
        let eol = body.windows(2).position(|w| w == b"\r\n").unwrap();
        let n =
            usize::from_str_radix(std::str::from_utf8(&body[..eol]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&body[eol + 2..eol + 2 + n]);
        body = &body[eol + 4 + n..];
    }
}

fn get(addr: &str, path: &str) -> Vec<u8> {
    get_with(addr, path, false)
}

/// A timed scrape: read the whole response and throw it away (a scraper's own parsing is not
/// the exporter's cost, and on 2 cores it would compete with it). Returns the bytes received.
fn scrape_discard(addr: &str, gzip: bool) -> usize {
    scrape_discard_with(
        addr,
        if gzip {
            "Accept-Encoding: gzip\r\n"
        } else {
            ""
        },
    )
}

/// Accept header of a Prometheus with native histograms enabled.
const PROTOBUF_ACCEPT: &str = "Accept: application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,text/plain;version=0.0.4;q=0.5\r\n";

/// [`scrape_discard`] with extra request header lines (each ending in CRLF).
fn scrape_discard_with(addr: &str, enc: &str) -> usize {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\n{enc}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0;
    loop {
        match s.read(&mut buf) {
            Ok(0) => return n,
            Ok(k) => n += k,
            Err(e) => panic!("reading the scrape: {e}"),
        }
    }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn proc_cpu_seconds(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = s[s.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn status_kib(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with(key))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

/// CPU time of this thread (so the raw-read baseline, like the exporter's CPU per scrape, does
/// not depend on what else the machine runs).
fn thread_cpu() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(|t| Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32))
        .unwrap_or_default()
}

/// A `/proc/meminfo` figure in KiB.
fn meminfo_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU time to open and read() the procfs files the default probes read, in every namespace,
/// from a thread inside each (what the exporter must at least spend); and, separately, the CPU
/// time of the one netlink dump the default probes make in such a namespace (the qdisc dump;
/// sock_diag is skipped where sockstat shows no TCP socket, as here), sent and received raw.
fn raw_read_seconds(names: &[String]) -> (f64, f64) {
    let names = names.to_vec();
    std::thread::spawn(move || {
        let files = [
            "dev",
            "snmp",
            "snmp6",
            "netstat",
            "sockstat",
            "sockstat6",
            "stat/nf_conntrack",
        ];
        let mut buf = vec![0u8; 1 << 16];
        let (mut total, mut nl) = (Duration::ZERO, Duration::ZERO);
        for n in &names {
            let fd = std::fs::File::open(format!("/run/netns/{n}")).unwrap();
            nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let t = thread_cpu();
            for f in files {
                if let Ok(mut file) = std::fs::File::open(format!("/proc/thread-self/net/{f}")) {
                    while file.read(&mut buf).unwrap_or(0) > 0 {}
                }
            }
            let t2 = thread_cpu();
            total += t2.saturating_sub(t);
            qdisc_dump_raw(&mut buf);
            nl += thread_cpu().saturating_sub(t2);
        }
        (total.as_secs_f64(), nl.as_secs_f64())
    })
    .join()
    .unwrap()
}

/// An RTM_GETQDISC dump on a fresh NETLINK_ROUTE socket, replies read until NLMSG_DONE and
/// not parsed.
fn qdisc_dump_raw(buf: &mut [u8]) {
    use nix::sys::socket::{
        recv, send, socket, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType,
    };
    let sock = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )
    .unwrap();
    // nlmsghdr (len 36, RTM_GETQDISC = 38, NLM_F_REQUEST|NLM_F_DUMP = 0x301, seq 1, pid 0)
    // + a zeroed struct tcmsg (20 bytes).
    let mut req = [0u8; 36];
    req[0..4].copy_from_slice(&36u32.to_ne_bytes());
    req[4..6].copy_from_slice(&38u16.to_ne_bytes());
    req[6..8].copy_from_slice(&0x301u16.to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    send(
        std::os::fd::AsRawFd::as_raw_fd(&sock),
        &req,
        MsgFlags::empty(),
    )
    .unwrap();
    loop {
        let n = recv(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            buf,
            MsgFlags::empty(),
        )
        .unwrap();
        let mut off = 0;
        while off + 16 <= n {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
            let ty = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap());
            if ty == 3 || ty == 2 || len < 16 {
                return; // NLMSG_DONE or NLMSG_ERROR
            }
            off += (len + 3) & !3;
        }
    }
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("the scrape benchmark needs root (it creates network namespaces)");
        return;
    }
    // `cargo bench` passes --bench; ignore arguments.
    let sizes: Vec<usize> = std::env::var("NETSLEUTH_BENCH_SIZES")
        .unwrap_or_else(|_| "10,100,500".into())
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let scrapes: usize = std::env::var("NETSLEUTH_BENCH_SCRAPES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    sh("cargo build --release --quiet --bin netsleuth");
    let bin = format!("{}/target/release/netsleuth", env!("CARGO_MANIFEST_DIR"));
    let tag = std::process::id() % 10000;

    println!(
        "{:>6} {:>10} {:>10} {:>12} {:>14} {:>14} {:>8} {:>9}",
        "netns",
        "p50_ms",
        "p99_ms",
        "cpu_ms/scr",
        "cost_us/netns",
        "read_us/netns",
        "ratio",
        "rss_MiB"
    );
    let mut made: Vec<String> = Vec::new();
    let with_processes = std::env::var("NETSLEUTH_BENCH_PROCESSES").is_ok_and(|v| v == "1");
    let mut sleepers: Vec<std::process::Child> = Vec::new();
    for &n in &sizes {
        let mut lines = Vec::new();
        let mut addrs = Vec::new();
        for i in made.len()..n {
            let name = format!("nslb{tag}x{i}");
            lines.push(format!("netns add {name}"));
            lines.push(format!(
                "link add nslb{tag}v{i} type veth peer name eth0 netns {name}"
            ));
            addrs.push(format!(
                "netns exec {name} ip addr add 198.19.{}.{}/32 dev eth0",
                i / 250,
                i % 250 + 1
            ));
            addrs.push(format!("netns exec {name} ip link set eth0 up"));
            addrs.push(format!("netns exec {name} ip link set lo up"));
            made.push(name);
        }
        assert!(common::ip_batch(&lines));
        for a in &addrs {
            sh(&format!("ip {a}"));
        }
        if with_processes {
            for name in &made[sleepers.len()..] {
                sleepers.push(
                    Command::new("ip")
                        .args(["netns", "exec", name, "sleep", "3600"])
                        .spawn()
                        .unwrap(),
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }

        let slab0 = meminfo_kib("Slab:");
        let mut cmd = Command::new(&bin);
        cmd.args(["--web.listen-address=127.0.0.1:19199", "--log.level=warn"]);
        if let Ok(cfg) = std::env::var("NETSLEUTH_BENCH_CONFIG") {
            cmd.arg(format!("--config.file={cfg}"));
        }
        let mut child = cmd.stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let addr = "127.0.0.1:19199";
        let _ = get(addr, "/metrics"); // warm-up
        let mut times = Vec::new();
        // Each scrape is followed by a raw read of the same files, so both are measured under
        // the same conditions (on a shared machine, whatever else runs hits both alike).
        let (mut cpu, mut raw_files, mut raw_nl) = (0.0, 0.0, 0.0);
        for _ in 0..scrapes {
            let cpu0 = proc_cpu_seconds(child.id());
            let t = Instant::now();
            scrape_discard(addr, false);
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            cpu += proc_cpu_seconds(child.id()) - cpu0;
            let (f, nl) = raw_read_seconds(&made);
            raw_files += f;
            raw_nl += nl;
        }
        let cpu = cpu / scrapes as f64;
        let mut gz_times = Vec::new();
        for _ in 0..scrapes.min(10) {
            let t = Instant::now();
            scrape_discard(addr, true);
            gz_times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        // The protobuf exposition with native histograms (what a Prometheus with
        // --enable-feature=native-histograms asks for): encoded from the same page.
        let mut pb_times = Vec::new();
        let mut pb_bytes = 0;
        for _ in 0..scrapes.min(10) {
            let t = Instant::now();
            pb_bytes = scrape_discard_with(addr, PROTOBUF_ACCEPT);
            pb_times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let page = String::from_utf8_lossy(&get(addr, "/metrics")).into_owned();
        let size = page.len();
        let per_collector: Vec<String> = page
            .lines()
            .filter_map(|l| {
                l.strip_prefix("netsleuth_scrape_collector_duration_seconds{collector=\"")
            })
            .filter_map(|l| {
                let (c, v) = l.split_once("\"} ")?;
                Some(format!("{c}={:.1}", v.trim().parse::<f64>().ok()? * 1000.0))
            })
            .collect();
        let series = page.lines().filter(|l| !l.starts_with('#')).count();
        let rss = status_kib(child.id(), "VmHWM:") as f64 / 1024.0;
        // Kernel memory the exporter holds (its kept sockets and files: seq_file buffers,
        // struct file, dentries), charged to its memory cgroup; the machine's other activity
        // moves this figure too.
        let slab = meminfo_kib("Slab:").saturating_sub(slab0) as f64 / 1024.0;
        let _ = child.kill();
        let _ = child.wait();
        let total_ns = made.len() + 1; // + host
        let raw = raw_files / scrapes as f64 / made.len() as f64;
        let raw_nl = raw_nl / scrapes as f64 / made.len() as f64;
        let cost = cpu / total_ns as f64;
        println!(
            "{:>6} {:>10.1} {:>10.1} {:>12.1} {:>14.1} {:>14.1} {:>8.2} {:>9.1}   (with the raw qdisc netlink dump, {:.1} us/netns: ratio {:.2}; kernel slab +{:.1} MiB; {} KiB/page, {} series, gzip p50 {:.1} ms, protobuf p50 {:.1} ms {} KiB; ms per collector over all netns: {})",
            n,
            pct(&mut times.clone(), 0.5),
            pct(&mut times, 0.99),
            cpu * 1000.0,
            cost * 1e6,
            raw * 1e6,
            cost / raw,
            rss,
            (raw + raw_nl) * 1e6,
            cost / (raw + raw_nl),
            slab,
            size / 1024,
            series,
            pct(&mut gz_times, 0.5),
            pct(&mut pb_times, 0.5),
            pb_bytes / 1024,
            per_collector.join(" ")
        );
    }
    for mut p in sleepers {
        let _ = p.kill();
        let _ = p.wait();
    }
    for name in &made {
        let _ = Command::new("ip").args(["netns", "del", name]).status();
    }

    // node_exporter, host namespace only, the comparable collectors.
    if Command::new("sh")
        .arg("-c")
        .arg("command -v prometheus-node-exporter")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        let mut ne = Command::new("prometheus-node-exporter")
            .args([
                "--web.listen-address=127.0.0.1:19198",
                "--collector.disable-defaults",
                "--collector.netdev",
                "--collector.netstat",
                "--collector.sockstat",
                "--collector.softnet",
            ])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let _ = get("127.0.0.1:19198", "/metrics");
        let mut times = Vec::new();
        for _ in 0..scrapes {
            let t = Instant::now();
            let _ = get("127.0.0.1:19198", "/metrics");
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let _ = ne.kill();
        let _ = ne.wait();
        let mut ours = Command::new(&bin)
            .args(["--web.listen-address=127.0.0.1:19199", "--log.level=warn"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let _ = get("127.0.0.1:19199", "/metrics");
        let mut t2 = Vec::new();
        for _ in 0..scrapes {
            let t = Instant::now();
            let _ = get("127.0.0.1:19199", "/metrics");
            t2.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let _ = ours.kill();
        let _ = ours.wait();
        println!(
            "node_exporter (netdev,netstat,sockstat,softnet; host only): p50 {:.2} ms; netsleuth (all default probes, every netns left on this host): p50 {:.2} ms",
            pct(&mut times, 0.5),
            pct(&mut t2, 0.5)
        );
    } else {
        println!("prometheus-node-exporter not installed: no comparison");
    }
}
