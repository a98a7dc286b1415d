//! What the eBPF probes cost the traffic they watch (root): TCP and UDP throughput between two
//! namespaces this benchmark creates (a veth pair, 198.18.254.0/24), first with no exporter,
//! then with the real binary running every eBPF probe in `metrics.probes` (no events), in
//! alternating rounds. Prints Gbit/s (TCP, one stream of 128 KiB writes) and received packets/s
//! (UDP, 64-byte datagrams by default), the with/without ratio (target >= 97 %), and each
//! program's kernel run time from `netsleuth_bpf_program_run_seconds_total`, taken in a third
//! pass per round with `bpf.programStats: true` (the kernel's run-time stats cost every program
//! two clock reads, so they are off by default and out of the ratio).
//!
//! A fourth pass per round attaches, instead of the exporter, one program that does nothing
//! (`tests/fixtures/bpf/floor.bpf.o`, tp_btf) on each tracepoint the probes' programs were
//! attached to in the stats pass, as many per tracepoint as the probes use: the floor, what the
//! kernel charges for running any BPF program there, which no probe body can go below. It is
//! the floor of the programs the probes attach before chaining (each chained program keeps its
//! series, counted in the first program of its chain): where several probes hook one
//! tracepoint the exporter attaches one program there that tail-calls the others
//! (`src/probes/chain.rs`), so the probes can run below this floor; the ratio to the floor is
//! printed too (target: 64-byte UDP >= 90 %). A fifth pass runs the probes with
//! `bpf.chainPrograms: false` (every program on its own link): what chaining saves, in the same
//! run. Beside the ratios of the medians, each round's own ratios are printed (their median and
//! range): a round's passes are seconds apart, and the machine's speed drifts between rounds.
//!
//! The exporter runs in namespace A, which plays the node: B is its pod, and A's end of the
//! veth is the host side of the pod's veth, the device the `flow` probe attaches to by default
//! (at its ingress and egress, tcx or cls_bpf as the kernel allows). Everything the benchmark
//! sends crosses that device. flow's floor is two empty tc programs
//! (`tests/fixtures/bpf/floor_tc.bpf.o`, returning what flow returns) attached to the same
//! device's ingress and egress with the method flow used.
//!
//! Run: `cargo bench --bench throughput` (as root). `NETSLEUTH_BENCH_SECONDS=5` (per
//! measurement), `NETSLEUTH_BENCH_ROUNDS=3`, `NETSLEUTH_BENCH_UDP_BYTES=64` (datagram size) and
//! `NETSLEUTH_BENCH_PROBES=softirq,packetloss` (a subset, to find what costs) change the run.
//! `NETSLEUTH_BENCH_PROBES=flow cargo bench --bench throughput`: flow alone against none
//! (targets: TCP >= 97 %, 64-byte UDP >= 95 %), its floor beside it.
//! Needs a quiet machine for meaningful figures.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_netsleuth");
const IP_A: &str = "198.18.254.1";
const IP_B: &str = "198.18.254.2";

/// Every eBPF probe (virtcmdlatency says why it cannot run where it cannot).
const PROBES: &str =
    "packetloss,tcpreset,tcpretrans,netiftxlat,softirq,socketlatency,kernellatency,virtcmdlatency,biolatency,flow";

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces and a veth pair between them; deleted on drop.
struct Net {
    a: String,
    b: String,
    /// A's end of the pair (the host side of pod B's veth).
    dev_a: String,
}

impl Net {
    fn new() -> Net {
        let id = std::process::id();
        let (a, b) = (format!("nsbtpa{id}"), format!("nsbtpb{id}"));
        run("ip", &["netns", "add", &a]);
        run("ip", &["netns", "add", &b]);
        let (va, vb) = (format!("vtpa{id}"), format!("vtpb{id}"));
        let net = Net {
            a,
            b,
            dev_a: va.clone(),
        };
        run(
            "ip",
            &[
                "link", "add", &va, "netns", &net.a, "type", "veth", "peer", "name", &vb, "netns",
                &net.b,
            ],
        );
        for (ns, dev, ip) in [(&net.a, &va, IP_A), (&net.b, &vb, IP_B)] {
            let exec = |args: &[&str]| {
                let mut v = vec!["netns", "exec", ns.as_str()];
                v.extend_from_slice(args);
                run("ip", &v);
            };
            exec(&["ip", "link", "set", "lo", "up"]);
            exec(&["ip", "addr", "add", &format!("{ip}/24"), "dev", dev]);
            exec(&["ip", "link", "set", dev, "up"]);
        }
        net
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for n in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// Runs `f` on a new thread inside namespace `ns`, pinned to `cpu` (modulo the CPUs there
/// are): the sender and the receiver each keep a CPU, so rounds compare like with like instead
/// of the scheduler's placement of the two.
fn within<T: Send + 'static>(
    ns: &str,
    cpu: usize,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut set = nix::sched::CpuSet::new();
        if set.set(cpu % cpus).is_ok() {
            let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
        }
        f()
    })
}

/// Where the receiving and the sending thread run.
const RECV_CPU: usize = 1;
const SEND_CPU: usize = 0;

/// One TCP stream a → b for `d`: Gbit/s received.
fn tcp(net: &Net, d: Duration) -> f64 {
    let (tx, rx) = std::sync::mpsc::channel();
    let recv = within(&net.b, RECV_CPU, move || {
        let l = TcpListener::bind((IP_B, 0)).unwrap();
        tx.send(l.local_addr().unwrap().port()).unwrap();
        let (mut c, _) = l.accept().unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        let t = Instant::now();
        let mut n = 0u64;
        loop {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k as u64,
            }
        }
        n as f64 * 8.0 / t.elapsed().as_secs_f64() / 1e9
    });
    let port = rx.recv().unwrap();
    within(&net.a, SEND_CPU, move || {
        let mut c = TcpStream::connect((IP_B, port)).unwrap();
        let buf = vec![0x5au8; 128 * 1024];
        let t = Instant::now();
        while t.elapsed() < d {
            c.write_all(&buf).unwrap();
        }
    })
    .join()
    .unwrap();
    recv.join().unwrap()
}

/// `size`-byte UDP datagrams a → b for `d`: datagrams/s received.
fn udp(net: &Net, d: Duration, size: usize) -> f64 {
    let (tx, rx) = std::sync::mpsc::channel();
    let done = Arc::new(AtomicBool::new(false));
    let dn = done.clone();
    let recv = within(&net.b, RECV_CPU, move || {
        let s = UdpSocket::bind((IP_B, 0)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        tx.send(s.local_addr().unwrap().port()).unwrap();
        let mut buf = vec![0u8; 65536];
        let mut n = 0u64;
        let mut first: Option<Instant> = None;
        let mut last = Instant::now();
        while !dn.load(Ordering::Relaxed) {
            if s.recv(&mut buf).is_ok() {
                n += 1;
                last = Instant::now();
                first.get_or_insert(last);
            }
        }
        match first {
            Some(f) if last > f => n as f64 / (last - f).as_secs_f64(),
            _ => 0.0,
        }
    });
    let port = rx.recv().unwrap();
    within(&net.a, SEND_CPU, move || {
        let s = UdpSocket::bind((IP_A, 0)).unwrap();
        s.connect((IP_B, port)).unwrap();
        let buf = vec![0x5au8; size];
        let t = Instant::now();
        while t.elapsed() < d {
            let _ = s.send(&buf);
        }
    })
    .join()
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    done.store(true, Ordering::Relaxed);
    recv.join().unwrap()
}

/// The exporter with every eBPF probe, in namespace A on a free loopback port; killed on drop.
struct Exporter {
    child: Child,
    addr: String,
    ns: String,
}

impl Exporter {
    fn start(net: &Net, cfg: &std::path::Path) -> Exporter {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &net.a, BIN])
            .arg("--web.listen-address=127.0.0.1:0")
            .arg(format!("--config.file={}", cfg.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start netsleuth");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("netsleuth exited before listening")
                .unwrap();
            eprintln!("  exporter: {line}");
            if let Some(i) = line.find("listening on ") {
                break line[i + 13..]
                    .split(|c: char| c == ';' || c.is_whitespace())
                    .next()
                    .unwrap()
                    .to_string();
            }
        };
        // Keep draining its log.
        std::thread::spawn(move || for _ in lines {});
        let e = Exporter {
            child,
            addr,
            ns: net.a.clone(),
        };
        // flow attaches from its device thread: wait for it (and for its method).
        if e.flow_method().is_some() {
            let t = Instant::now();
            while !e.metrics().contains("netsleuth_flow_devices 1") {
                assert!(
                    t.elapsed() < Duration::from_secs(10),
                    "flow did not attach to {} within 10 s",
                    net.dev_a
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        e
    }

    /// The exposition text (fetched from inside its namespace).
    fn metrics(&self) -> String {
        let (addr, ns) = (self.addr.clone(), self.ns.clone());
        std::thread::spawn(move || {
            let fd = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
            nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let mut c = TcpStream::connect(&addr).unwrap();
            write!(c, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
            let mut body = String::new();
            c.read_to_string(&mut body).unwrap();
            body
        })
        .join()
        .unwrap()
    }

    /// The method the flow probe attached with (`tcx`, `tc`), if it runs.
    fn flow_method(&self) -> Option<String> {
        let body = self.metrics();
        let l = body.lines().find(|l| {
            l.starts_with("netsleuth_probe_attach_info{") && l.contains("probe=\"flow\"")
        })?;
        let m = l.split("method=\"").nth(1)?.split('"').next()?;
        Some(m.to_string())
    }

    /// program → (run seconds, runs).
    fn program_stats(&self) -> BTreeMap<String, (f64, u64)> {
        let body = self.metrics();
        let mut out: BTreeMap<String, (f64, u64)> = BTreeMap::new();
        for l in body.lines() {
            for (metric, secs) in [
                ("netsleuth_bpf_program_run_seconds_total{program=\"", true),
                ("netsleuth_bpf_program_runs_total{program=\"", false),
            ] {
                let Some(rest) = l.strip_prefix(metric) else {
                    continue;
                };
                let Some((prog, v)) = rest.split_once("\"} ") else {
                    continue;
                };
                let e = out.entry(prog.to_string()).or_default();
                if secs {
                    e.0 = v.trim().parse().unwrap_or(0.0);
                } else {
                    e.1 = v.trim().parse().unwrap_or(0);
                }
            }
        }
        out
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Empty programs standing in for the probes' programs: for each tracepoint, as many as the
/// probes attached there; for flow, two empty tc programs on A's device.
struct Floor {
    loaded: netsleuth::bpf::Loaded,
    programs: Vec<String>,
    /// flow's stand-in: the empty tc programs, A's namespace and device, flow's method.
    tc: Option<(netsleuth::bpf::Loaded, String, String, String)>,
}

/// What the floor attached; detached on drop (cls_bpf filters from inside A's namespace,
/// where their ifindex is).
struct FloorLinks {
    _links: Vec<netsleuth::bpf::attach::Link>,
    tc: Option<(String, netsleuth::tc::Attachment)>,
}

impl Drop for FloorLinks {
    fn drop(&mut self) {
        if let Some((ns, a)) = self.tc.take() {
            std::thread::spawn(move || {
                let fd = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
                nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                drop(a);
            })
            .join()
            .unwrap();
        }
    }
}

const FLOOR_OBJECT: &[u8] = include_bytes!("../tests/fixtures/bpf/floor.bpf.o");
const FLOOR_TC_OBJECT: &[u8] = include_bytes!("../tests/fixtures/bpf/floor_tc.bpf.o");
/// Empty programs per tracepoint in the fixture.
const FLOOR_COPIES: usize = 4;

impl Floor {
    /// From the probes' attached programs (`object/program`, as in
    /// `netsleuth_bpf_program_runs_total`): prints what stands in for what.
    fn new<'a>(
        attached: impl Iterator<Item = &'a String>,
        net: &Net,
        flow_method: Option<String>,
    ) -> Floor {
        use netsleuth::bpf::object::{Object, ProgramKind};
        let mut per_tp: BTreeMap<String, usize> = BTreeMap::new();
        let mut tc_programs = 0;
        for id in attached {
            let (obj, prog) = id.split_once('/').unwrap_or((id, ""));
            let kind = netsleuth::bpf::embedded::object(obj)
                .and_then(|b| Object::parse(b).ok())
                .and_then(|o| o.programs.into_iter().find(|p| p.name == prog))
                .map(|p| p.kind);
            match kind {
                Some(ProgramKind::TpBtf { name })
                | Some(ProgramKind::RawTracepoint { name })
                | Some(ProgramKind::Tracepoint { name, .. }) => {
                    *per_tp.entry(name).or_default() += 1
                }
                Some(ProgramKind::SchedCls) => tc_programs += 1,
                other => println!("floor: no stand-in for {id} ({other:?})"),
            }
        }
        let mut programs = vec![];
        for (tp, n) in &per_tp {
            if *n > FLOOR_COPIES {
                println!("floor: {n} programs on {tp}, the fixture has {FLOOR_COPIES}");
            }
            programs.extend((1..=(*n).min(FLOOR_COPIES)).map(|k| format!("{tp}_{k}")));
        }
        let opts = netsleuth::bpf::LoadOptions {
            programs: Some(programs.clone()),
            ..Default::default()
        };
        let loaded = netsleuth::bpf::load(FLOOR_OBJECT, &opts).expect("load floor.bpf.o");
        println!(
            "floor: {} empty programs on {} tracepoints ({})",
            programs.len(),
            per_tp.len(),
            per_tp
                .iter()
                .map(|(t, n)| format!("{t} x{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let tc = match (tc_programs, flow_method) {
            (0, _) => None,
            (_, None) => {
                println!("floor: flow's programs ran but its attach method is unknown");
                None
            }
            (_, Some(m)) => {
                let l = netsleuth::bpf::load(FLOOR_TC_OBJECT, &Default::default())
                    .expect("load floor_tc.bpf.o");
                println!(
                    "floor: 2 empty tc programs on {} ingress and egress ({m}, as flow)",
                    net.dev_a
                );
                Some((l, net.a.clone(), net.dev_a.clone(), m))
            }
        };
        Floor {
            loaded,
            programs,
            tc,
        }
    }

    fn attach(&self) -> FloorLinks {
        let mut links: Vec<netsleuth::bpf::attach::Link> = self
            .programs
            .iter()
            .map(|p| {
                self.loaded
                    .attach(p)
                    .unwrap_or_else(|e| panic!("attach {p}: {e}"))
            })
            .collect();
        let mut tc = None;
        if let Some((l, ns, dev, method)) = &self.tc {
            // In A's namespace: the ifindex is A's device, the rtnetlink socket A's.
            let (tcx, att) = std::thread::scope(|s| {
                s.spawn(|| {
                    use std::os::fd::{AsFd, AsRawFd};
                    let fd = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
                    nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                    let ifindex = ifindex_in(ns, dev);
                    let ing = l.program("floor_tc_ingress").unwrap();
                    let eg = l.program("floor_tc_egress").unwrap();
                    if method == "tcx" {
                        let a = netsleuth::bpf::attach::attach_tcx(ing, ifindex, false);
                        let b = netsleuth::bpf::attach::attach_tcx(eg, ifindex, true);
                        (vec![a.unwrap(), b.unwrap()], None)
                    } else {
                        let raw = |p: &netsleuth::bpf::prog::Program| p.as_fd().as_raw_fd() as u32;
                        let a = netsleuth::tc::attach(ifindex, raw(ing), raw(eg)).unwrap();
                        (vec![], Some(a))
                    }
                })
                .join()
                .unwrap()
            });
            links.extend(tcx);
            tc = att.map(|a| (ns.clone(), a));
        }
        FloorLinks { _links: links, tc }
    }
}

/// The ifindex of device `dev` in namespace `ns` (`ip -n NS -o link show dev DEV`: `N: ...`).
fn ifindex_in(ns: &str, dev: &str) -> u32 {
    let out = Command::new("ip")
        .args(["-n", ns, "-o", "link", "show", "dev", dev])
        .output()
        .expect("ip link show");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split(':')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ifindex for {dev} in {ns}: {text}"))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn env_u64(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP throughput benchmark: needs root (namespaces, BPF)");
        return;
    }
    let secs = env_u64("NETSLEUTH_BENCH_SECONDS", 5);
    let rounds = env_u64("NETSLEUTH_BENCH_ROUNDS", 3).max(1);
    let d = Duration::from_secs(secs);
    let net = Net::new();
    let dir = std::env::temp_dir().join(format!("nsl-bench-tp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("config.yaml");
    let cfg_stats = dir.join("config-stats.yaml");
    let cfg_apart = dir.join("config-apart.yaml");
    let udp_bytes = env_u64("NETSLEUTH_BENCH_UDP_BYTES", 64).clamp(1, 65507) as usize;
    let probes = std::env::var("NETSLEUTH_BENCH_PROBES").unwrap_or_else(|_| PROBES.into());
    std::fs::write(&cfg, format!("metrics:\n  probes: [{probes}]\n")).unwrap();
    // The per-program figures need the kernel's run-time stats, which cost every program two
    // clock reads per run: measured in a third pass, not in the with/without ratio.
    std::fs::write(
        &cfg_stats,
        format!("bpf:\n  programStats: true\nmetrics:\n  probes: [{probes}]\n"),
    )
    .unwrap();
    // The same probes, each program on its own link (no tail-call chains on the tracepoints
    // several probes hook): what chaining saves, in the same run.
    std::fs::write(
        &cfg_apart,
        format!("bpf:\n  chainPrograms: false\nmetrics:\n  probes: [{probes}]\n"),
    )
    .unwrap();
    println!("eBPF probes: {probes}");

    // Warm up (neighbour resolution, page cache).
    tcp(&net, Duration::from_millis(300));
    udp(&net, Duration::from_millis(300), udp_bytes);

    let (mut tcp_off, mut tcp_on, mut udp_off, mut udp_on) = (vec![], vec![], vec![], vec![]);
    let (mut tcp_stats, mut udp_stats) = (vec![], vec![]);
    let (mut tcp_apart, mut udp_apart) = (vec![], vec![]);
    let mut run_time: BTreeMap<String, (f64, u64)> = BTreeMap::new();
    let mut probed = Duration::ZERO;
    let (mut tcp_floor, mut udp_floor) = (vec![], vec![]);
    let mut floor: Option<Floor> = None;
    let mut flow_method: Option<String> = None;
    for r in 0..rounds {
        let t = tcp(&net, d);
        let u = udp(&net, d, udp_bytes);
        println!("round {r}: no probes:  TCP {t:7.2} Gbit/s  UDP {u:10.0} pkt/s");
        tcp_off.push(t);
        udp_off.push(u);

        let e = Exporter::start(&net, &cfg);
        std::thread::sleep(Duration::from_millis(500));
        let t = tcp(&net, d);
        let u = udp(&net, d, udp_bytes);
        println!("round {r}: all probes: TCP {t:7.2} Gbit/s  UDP {u:10.0} pkt/s");
        tcp_on.push(t);
        udp_on.push(u);
        drop(e);

        let e = Exporter::start(&net, &cfg_apart);
        std::thread::sleep(Duration::from_millis(500));
        let t = tcp(&net, d);
        let u = udp(&net, d, udp_bytes);
        println!("round {r}: all probes, unchained: TCP {t:7.2} Gbit/s  UDP {u:10.0} pkt/s");
        tcp_apart.push(t);
        udp_apart.push(u);
        drop(e);

        let e = Exporter::start(&net, &cfg_stats);
        std::thread::sleep(Duration::from_millis(500));
        let before = e.program_stats();
        let t0 = Instant::now();
        let t = tcp(&net, d);
        let u = udp(&net, d, udp_bytes);
        probed += t0.elapsed();
        let after = e.program_stats();
        if flow_method.is_none() {
            flow_method = e.flow_method();
        }
        for (p, (s, n)) in &after {
            let (s0, n0) = before.get(p).copied().unwrap_or_default();
            let x = run_time.entry(p.clone()).or_default();
            x.0 += s - s0;
            x.1 += n - n0;
        }
        println!(
            "round {r}: all probes, run-time stats on: TCP {t:7.2} Gbit/s  UDP {u:10.0} pkt/s"
        );
        tcp_stats.push(t);
        udp_stats.push(u);
        drop(e);

        let f = floor.get_or_insert_with(|| Floor::new(run_time.keys(), &net, flow_method.clone()));
        let links = f.attach();
        let t = tcp(&net, d);
        let u = udp(&net, d, udp_bytes);
        drop(links);
        println!("round {r}: floor (empty programs): TCP {t:7.2} Gbit/s  UDP {u:10.0} pkt/s");
        tcp_floor.push(t);
        udp_floor.push(u);
    }
    // Each round's own ratios, the median and range over the rounds: a round's passes are
    // seconds apart, the rounds a minute, and the machine's speed drifts more between rounds
    // than within one (computed before the medians below sort the figures).
    let paired = |a: &[f64], b: &[f64]| {
        let mut v: Vec<f64> = a.iter().zip(b).map(|(x, y)| 100.0 * x / y).collect();
        let (lo, hi) = v
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), x| (l.min(*x), h.max(*x)));
        format!("{:.1} % ({lo:.1}-{hi:.1} %)", median(&mut v))
    };
    let per_round = [
        ("TCP with/without", paired(&tcp_on, &tcp_off)),
        ("UDP with/without", paired(&udp_on, &udp_off)),
        ("TCP with/floor", paired(&tcp_on, &tcp_floor)),
        ("UDP with/floor", paired(&udp_on, &udp_floor)),
        ("UDP unchained/floor", paired(&udp_apart, &udp_floor)),
    ];
    let (t0, t1) = (median(&mut tcp_off), median(&mut tcp_on));
    let (u0, u1) = (median(&mut udp_off), median(&mut udp_on));
    println!();
    println!(
        "medians over {rounds} rounds of {secs} s (veth between two namespaces; flow on {}: {}):",
        net.dev_a,
        flow_method.as_deref().unwrap_or("not running")
    );
    println!(
        "TCP: {t0:.2} Gbit/s without probes, {t1:.2} with: {:.1} % (target >= 97 %)",
        100.0 * t1 / t0
    );
    println!(
        "UDP ({udp_bytes}-byte datagrams): {u0:.0} pkt/s without probes, {u1:.0} with: {:.1} % (target >= {} %)",
        100.0 * u1 / u0,
        if probes.trim() == "flow" { 95 } else { 97 }
    );
    let (tf, uf) = (median(&mut tcp_floor), median(&mut udp_floor));
    println!(
        "floor, empty programs in the probes' places: TCP {:.1} %, UDP {:.1} %",
        100.0 * tf / t0,
        100.0 * uf / u0
    );
    println!(
        "all probes / floor (target: UDP >= 90 %): TCP {:.1} %, UDP {:.1} %",
        100.0 * t1 / tf,
        100.0 * u1 / uf
    );
    let (ta, ua) = (median(&mut tcp_apart), median(&mut udp_apart));
    println!(
        "all probes unchained (bpf.chainPrograms: false): TCP {:.1} %, UDP {:.1} % (/ floor: TCP {:.1} %, UDP {:.1} %)",
        100.0 * ta / t0,
        100.0 * ua / u0,
        100.0 * ta / tf,
        100.0 * ua / uf
    );
    let (t2, u2) = (median(&mut tcp_stats), median(&mut udp_stats));
    println!(
        "with bpf.programStats on as well: TCP {:.1} %, UDP {:.1} %",
        100.0 * t2 / t0,
        100.0 * u2 / u0
    );
    println!("each round's own ratio, median (range):");
    for (what, r) in &per_round {
        println!("  {what:<20} {r}");
    }
    println!();
    println!(
        "kernel run time per program (bpf.programStats on; {:.1} s of traffic):",
        probed.as_secs_f64()
    );
    println!(
        "{:<40} {:>10} {:>12} {:>9} {:>8}",
        "program", "seconds", "runs", "ns/run", "% of 1 CPU"
    );
    let mut total = 0.0;
    for (p, (s, n)) in &run_time {
        total += s;
        println!(
            "{p:<40} {s:>10.4} {n:>12} {:>9.0} {:>8.2}",
            if *n > 0 { s * 1e9 / *n as f64 } else { 0.0 },
            100.0 * s / probed.as_secs_f64()
        );
    }
    println!(
        "{:<40} {total:>10.4} {:>12} {:>9} {:>8.2}",
        "total",
        "",
        "",
        100.0 * total / probed.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
