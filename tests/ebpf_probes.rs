//! The eBPF probes end to end (root): the real binary with packetloss, tcpreset and tcpretrans
//! in `metrics.probes` and `event.probes` and a `file` sink, induced conditions in our own
//! namespaces (198.18.0.0/15), exact counts in metrics and events, attribution to the
//! namespace the kernel acted in, and nothing left attached after kill -9.
mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{events_of, scrape_sum, wait_for, write_config, Exporter, Pair};
use netsleuth::bpf::prog;

/// Tests share kernel-global tracepoints and the program list: one at a time.
static LOCK: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The exporter with the three probes as metrics and events; events to a JSON-lines file.
fn start(events: &std::path::Path) -> Exporter {
    let cfg = write_config(&format!(
        r#"
metrics:
  probes: [packetloss, tcpreset, tcpretrans]
event:
  probes:
  - {{name: packetloss, args: {{enableStack: true}}}}
  - {{name: tcpreset, args: {{enableStack: true}}}}
  - {{name: tcpretrans, args: {{enableStack: true}}}}
  sinks: [{{name: file, args: {{path: {}}}}}]
"#,
        events.display()
    ));
    let e = Exporter::start(&[&format!("--config.file={}", cfg.display())]);
    // Attached once the eBPF series show up.
    wait_for("eBPF probes attached", Duration::from_secs(10), || {
        let s = e.scrape();
        (s.find("netsleuth_bpf_map_full_total", &[]).len() == 3).then_some(())
    });
    e
}

/// The event's stack, which must start at a kernel function: no frame of the probe's own
/// machinery anywhere in it (no BPF program runs on these paths but ours) — no `[bpf]` JIT
/// image, no bare address, no raw-tracepoint or perf-tracepoint glue.
fn stack(v: &serde_json::Value) -> Vec<String> {
    let s: Vec<String> = v["stack"]
        .as_array()
        .unwrap_or_else(|| panic!("enableStack: a stack: {v}"))
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    assert!(s.len() >= 2, "{s:?}");
    for f in &s {
        assert!(
            !(f.ends_with("[bpf]")
                || f.starts_with("0x")
                || f.starts_with("bpf_prog_")
                || f.starts_with("bpf_trace_run")
                || f.starts_with("__bpf_trace_")
                || f.starts_with("__traceiter_")
                || f.starts_with("bpf_trampoline_")
                || f.starts_with("perf_trace_")
                || f.starts_with("trace_event_raw_event_")),
            "probe frame {f} in {s:?}"
        );
    }
    s
}

/// `sym` of `sym+0xoff`.
fn func(frame: &str) -> &str {
    frame.split('+').next().unwrap()
}

fn value(e: &Exporter, name: &str, want: &[(&str, &str)]) -> u64 {
    scrape_sum(e, name, want) as u64
}

fn tmp_events() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(common::unique("nslev"));
    std::fs::create_dir_all(&d).unwrap();
    d.join("events.jsonl")
}

#[test]
fn netfilter_drop_gives_exact_packetloss_events_and_counter() {
    if !common::privileged_with("netfilter_drop", &["iptables"]) {
        return;
    }
    let _g = lock();
    let evp = tmp_events();
    let e = start(&evp);
    let p = Pair::dropping(9999);
    learned(&p);
    let b_ino = p.b.inode().to_string();
    let sport = p.send_udp_to_b(9999, 10);
    let want = [("netns", b_ino.as_str()), ("reason", "NETFILTER_DROP")];
    wait_for("10 drops counted", Duration::from_secs(5), || {
        (value(&e, "netsleuth_packetloss_total", &want) >= 10).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    let s = e.scrape();
    let m = s.one(
        "netsleuth_packetloss_total",
        &[
            ("netns", &b_ino),
            ("reason", "NETFILTER_DROP"),
            ("protocol", "UDP"),
        ],
    );
    assert_eq!(m.value, "10");
    assert_eq!(m.labels["name"], p.b.name, "attributed to b by name");
    assert_eq!(m.labels["kind"], "named");
    let b_ino_n: u64 = b_ino.parse().unwrap();
    let evs = wait_for("10 events", Duration::from_secs(5), || {
        let v: Vec<_> = events_of(&evp, "PACKETLOSS", b_ino_n)
            .into_iter()
            .filter(|v| v["fields"]["reason"] == "NETFILTER_DROP")
            .collect();
        (v.len() >= 10).then_some(v)
    });
    std::thread::sleep(Duration::from_millis(300));
    let evs_again: Vec<_> = events_of(&evp, "PACKETLOSS", b_ino_n)
        .into_iter()
        .filter(|v| v["fields"]["reason"] == "NETFILTER_DROP")
        .collect();
    assert_eq!(evs_again.len(), 10, "exactly N events");
    for v in &evs {
        assert_eq!(v["name"], p.b.name.as_str());
        let f = &v["fields"];
        assert_eq!(f["protocol"], "UDP");
        assert_eq!(f["saddr"], p.ip_a.as_str());
        assert_eq!(f["daddr"], p.ip_b.as_str());
        assert_eq!(f["dport"], 9999);
        assert_eq!(f["sport"], sport);
        // The sender is a namespace on this node: named as the peer.
        assert_eq!(f["peer_kind"], "named", "{f}");
        assert_eq!(f["peer_name"], p.a.name.as_str());
        assert_eq!(f["peer_pod"], "", "a named namespace is no pod");
        assert_eq!(f["peer_namespace"], "");
        // Symbolized netfilter call site: nf_hook_slow (x_tables) or nft_do_chain (nftables).
        let loc = f["location"].as_str().unwrap();
        assert!(
            (loc.starts_with("nf_") || loc.starts_with("nft_")) && loc.contains("+0x"),
            "{f}"
        );
        // The stack starts at the function that freed the packet, called from the location.
        let s = stack(v);
        assert!(
            ["sk_skb_reason_drop", "kfree_skb_reason", "kfree_skb"].contains(&func(&s[0])),
            "{s:?}"
        );
        assert_eq!(
            s[1], loc,
            "the drop function's caller is the location: {s:?}"
        );
    }
    assert!(value(&e, "netsleuth_events_total", &[("type", "PACKETLOSS")]) >= 10);
}

#[test]
fn closed_port_gives_nosock_reset_with_exact_tuple() {
    if !common::privileged_with("closed_port", &["curl"]) {
        return;
    }
    let _g = lock();
    let evp = tmp_events();
    let e = start(&evp);
    let p = Pair::new();
    learned(&p);
    let b_ino: u64 = p.b.inode();
    // A known source port: curl's --local-port.
    let sport: u16 = 40000 + (std::process::id() % 20000) as u16;
    let st = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &p.a.name,
            "curl",
            "-s",
            "--connect-timeout",
            "3",
        ])
        .args(["--local-port", &sport.to_string()])
        .arg(format!("http://{}:7777/", p.ip_b))
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(7), "curl: connection refused");
    let evs = wait_for("one TCPRESET_NOSOCK", Duration::from_secs(5), || {
        let v = events_of(&evp, "TCPRESET_NOSOCK", b_ino);
        (!v.is_empty()).then_some(v)
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(events_of(&evp, "TCPRESET_NOSOCK", b_ino).len(), 1);
    let f = &evs[0]["fields"];
    assert_eq!(
        evs[0]["name"],
        p.b.name.as_str(),
        "the namespace that sent the RST"
    );
    assert_eq!(f["protocol"], "TCP");
    assert_eq!(f["saddr"], p.ip_b.as_str(), "RST sender = the closed side");
    assert_eq!(f["sport"], 7777);
    assert_eq!(f["daddr"], p.ip_a.as_str());
    assert_eq!(f["dport"], sport);
    assert_eq!(
        f["peer_kind"], "named",
        "the refused side names the connecting one: {f}"
    );
    assert_eq!(f["peer_name"], p.a.name.as_str());
    assert_eq!(f["peer_pod"], "");
    // The stack starts at the function that sends the RST, called by the receive path.
    let s = stack(&evs[0]);
    assert_eq!(func(&s[0]), "tcp_v4_send_reset", "{s:?}");
    assert_eq!(func(&s[1]), "tcp_v4_rcv", "{s:?}");
    let b = b_ino.to_string();
    assert_eq!(
        value(
            &e,
            "netsleuth_tcpreset_total",
            &[("netns", &b), ("type", "NOSOCK")]
        ),
        1
    );
    // a received it.
    let a = p.a.inode().to_string();
    assert_eq!(
        value(
            &e,
            "netsleuth_tcpreset_total",
            &[("netns", &a), ("type", "RECEIVE")]
        ),
        1
    );
    let recv = events_of(&evp, "TCPRESET_RECEIVE", p.a.inode());
    assert_eq!(recv.len(), 1);
    assert_eq!(recv[0]["fields"]["sport"], sport);
    assert_eq!(recv[0]["fields"]["dport"], 7777);
    assert_eq!(recv[0]["fields"]["state"], "TCP_SYN_SENT");
    assert_eq!(recv[0]["fields"]["peer_name"], p.b.name.as_str());
    // The stack starts at tcp_reset, called from the SYN_SENT state machine.
    let s = stack(&recv[0]);
    assert_eq!(func(&s[0]), "tcp_reset", "{s:?}");
    assert_eq!(func(&s[1]), "tcp_rcv_state_process", "{s:?}");
}

/// Lets the inventory learn a new pair's addresses (it rescans 200 to 1500 ms after a
/// namespace appears) before the test induces events that should name the peer.
fn learned(_p: &Pair) {
    std::thread::sleep(Duration::from_millis(1700));
}

fn retrans_segs(snmp: &str) -> u64 {
    let mut lines = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let h: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let v: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let i = h.iter().position(|k| *k == "RetransSegs").unwrap();
    v[i].parse().unwrap()
}

#[test]
fn dropped_established_connection_gives_exact_retransmit_count() {
    if !common::privileged_with("retransmits", &["iptables"]) {
        return;
    }
    let _g = lock();
    let evp = tmp_events();
    let e = start(&evp);
    let p = Pair::new();
    learned(&p);
    let ip_b = p.ip_b.clone();
    let listener =
        p.b.within(move || TcpListener::bind(format!("{ip_b}:8888")).unwrap());
    let ip_b = p.ip_b.clone();
    let mut client =
        p.a.within(move || TcpStream::connect(format!("{ip_b}:8888")).unwrap());
    let (mut server, _) = listener.accept().unwrap();
    client.write_all(b"hello").unwrap();
    let mut buf = [0u8; 5];
    server.read_exact(&mut buf).unwrap();
    let before = retrans_segs(&p.a.cat("/proc/net/snmp"));
    // Drop everything a sends to b: the data below is retransmitted on each RTO.
    p.b.exec(
        "iptables",
        &["-A", "INPUT", "-p", "tcp", "--dport", "8888", "-j", "DROP"],
    );
    client.write_all(b"lost data").unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    // Let the next retransmit through: the connection recovers and retransmits stop.
    p.b.exec(
        "iptables",
        &["-D", "INPUT", "-p", "tcp", "--dport", "8888", "-j", "DROP"],
    );
    let mut got = [0u8; 9];
    server
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    server.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"lost data");
    std::thread::sleep(Duration::from_millis(500));
    let delta = retrans_segs(&p.a.cat("/proc/net/snmp")) - before;
    assert!(delta >= 3, "retransmitted {delta} times in 2.5 s");
    let a = p.a.inode().to_string();
    let t0 = Instant::now();
    while value(&e, "netsleuth_tcpretrans_total", &[("netns", &a)]) < delta
        && t0.elapsed() < Duration::from_secs(3)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        value(&e, "netsleuth_tcpretrans_total", &[("netns", &a)]),
        delta
    );
    let evs = events_of(&evp, "TCPRETRANS", p.a.inode());
    assert_eq!(evs.len() as u64, delta);
    for v in &evs {
        let f = &v["fields"];
        assert_eq!(f["saddr"], p.ip_a.as_str());
        assert_eq!(f["daddr"], p.ip_b.as_str());
        assert_eq!(f["dport"], 8888);
        assert_eq!(f["sport"], client.local_addr().unwrap().port());
        assert_eq!(f["state"], "TCP_ESTABLISHED");
        assert_eq!(f["peer_name"], p.b.name.as_str(), "{f}");
        assert_eq!(f["peer_pod"], "");
        let s = stack(v);
        assert!(s[0].starts_with("__tcp_retransmit_skb+0x"), "{s:?}");
    }
    // b retransmitted nothing.
    let b = p.b.inode().to_string();
    assert_eq!(value(&e, "netsleuth_tcpretrans_total", &[("netns", &b)]), 0);
}

#[test]
fn kill_9_leaves_no_program_attached() {
    if !common::privileged("kill_9") {
        return;
    }
    let _g = lock();
    let before: Vec<u32> = prog::loaded_programs()
        .unwrap()
        .into_iter()
        .map(|(i, _)| i)
        .collect();
    let evp = tmp_events();
    let e = start(&evp);
    let ours: Vec<(u32, String)> = prog::loaded_programs()
        .unwrap()
        .into_iter()
        .filter(|(i, _)| !before.contains(i))
        .collect();
    assert!(ours.len() >= 5, "five attach points loaded: {ours:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(e.pid()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    drop(e);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let live = prog::loaded_programs().unwrap();
        let left: Vec<_> = live.iter().filter(|p| ours.contains(p)).collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still loaded after kill -9: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
