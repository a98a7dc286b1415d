//! The `conntrack` event probe against the real kernel: connections through a router
//! namespace that NATs (MASQUERADE, iptables and ip6tables) between a client and a server
//! namespace, exact events per connection compared with what `conntrack -E` (conntrack-tools,
//! the kernel's own ctnetlink client) reports for the same flows; an FTP-helper expectation;
//! a flood that overflows a deliberately small receive buffer (lost events equal to the drops
//! the kernel counted for the socket in `/proc/net/netlink` and to what the exporter logs); the
//! rate limit; a listener closed with its namespace.
//!
//! Exact counts for one TCP connection (client writes, shuts its side down; the server reads to
//! EOF, waits 300 ms, longer than the longest delayed ACK (200 ms), and closes): one
//! `ConntrackNew` (SYN_SENT), six `ConntrackUpdate`s (SYN_RECV, ESTABLISHED, FIN_WAIT,
//! CLOSE_WAIT, LAST_ACK, TIME_WAIT: one per conntrack state change; data packets change no
//! state), one `ConntrackDestroy` (TIME_WAIT) when the entry expires (the router's TIME_WAIT
//! timeout is set to 1 s; the kernel's conntrack GC reaps it within a minute). The server's
//! wait matters: closing at once lets the ACK of the client's FIN ride on the server's FIN,
//! which skips CLOSE_WAIT (five updates). A UDP request and its reply: New, one Update (reply
//! seen), Destroy.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value as J;

/// Client — router (NAT) — server, each a named namespace.
struct Nat {
    c: Netns,
    r: Netns,
    s: Netns,
    c_ip: IpAddr,
    /// The router's address towards the server: the source MASQUERADE gives the flows.
    r_out_ip: IpAddr,
    s_ip: IpAddr,
}

impl Nat {
    fn new(v6: bool) -> Nat {
        let (c, r, s) = (Netns::new("ctc"), Netns::new("ctr"), Netns::new("cts"));
        if v6 {
            for ns in [&c, &r, &s] {
                ns.sysctl("net.ipv6.conf.all.disable_ipv6", "0");
                ns.sysctl("net.ipv6.conf.default.disable_ipv6", "0");
                ns.sysctl("net.ipv6.conf.default.accept_dad", "0");
            }
        }
        let (a, b, d, e) = (unique("cta"), unique("ctb"), unique("ctd"), unique("cte"));
        run(
            "ip",
            &[
                "link", "add", &a, "netns", &c.name, "type", "veth", "peer", "name", &b, "netns",
                &r.name,
            ],
        );
        run(
            "ip",
            &[
                "link", "add", &d, "netns", &r.name, "type", "veth", "peer", "name", &e, "netns",
                &s.name,
            ],
        );
        let (c_ip, r_in, r_out, s_ip, plen, fam, tables) = if v6 {
            (
                "2001:2:0:250::2",
                "2001:2:0:250::1",
                "2001:2:0:251::1",
                "2001:2:0:251::2",
                "64",
                "-6",
                "ip6tables",
            )
        } else {
            (
                "198.18.250.2",
                "198.18.250.1",
                "198.18.251.1",
                "198.18.251.2",
                "24",
                "-4",
                "iptables",
            )
        };
        let addr = |ns: &Netns, ip: &str, dev: &str| {
            let cidr = format!("{ip}/{plen}");
            let mut args = vec![fam, "addr", "add", &cidr, "dev", dev];
            if v6 {
                args.push("nodad");
            }
            ns.exec("ip", &args);
            ns.exec("ip", &["link", "set", dev, "up"]);
        };
        addr(&c, c_ip, &a);
        addr(&r, r_in, &b);
        addr(&r, r_out, &d);
        addr(&s, s_ip, &e);
        c.exec("ip", &[fam, "route", "add", "default", "via", r_in]);
        if v6 {
            r.sysctl("net.ipv6.conf.all.forwarding", "1");
        } else {
            r.sysctl("net.ipv4.ip_forward", "1");
        }
        r.exec(
            tables,
            &[
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-o",
                &d,
                "-j",
                "MASQUERADE",
            ],
        );
        // Short timeouts, so that every flow's entry expires and is destroyed during the test.
        for (k, v) in [
            ("net.netfilter.nf_conntrack_tcp_timeout_time_wait", "1"),
            ("net.netfilter.nf_conntrack_udp_timeout", "1"),
            ("net.netfilter.nf_conntrack_udp_timeout_stream", "1"),
        ] {
            r.sysctl(k, v);
        }
        Nat {
            c,
            r,
            s,
            c_ip: c_ip.parse().unwrap(),
            r_out_ip: r_out.parse().unwrap(),
            s_ip: s_ip.parse().unwrap(),
        }
    }
}

/// Run `f` on a new thread inside namespace `ns` (returns at once).
fn spawn_in<T: Send + 'static>(
    ns: &Netns,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{}", ns.name);
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
}

/// An exporter running only the conntrack event probe (`entry` is its `event.probes` entry),
/// with a file sink; returns it and the events file.
fn start_exporter(entry: &str) -> (Exporter, PathBuf) {
    let dir = std::env::temp_dir().join(unique("ctev"));
    std::fs::create_dir_all(&dir).unwrap();
    let events = dir.join("events.json");
    let cfg = write_config(&format!(
        "metrics:\n  probes: []\nevent:\n  probes:\n  - {entry}\n  sinks:\n  - name: file\n    args: {{path: {}}}\n",
        events.display()
    ));
    let e = Exporter::start(&[
        &format!("--config.file={}", cfg.display()),
        "--log.level=info",
    ]);
    (e, events)
}

/// Socket inodes among a process's fds.
fn socket_inodes(pid: i32) -> HashSet<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|d| std::fs::read_link(d.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            l.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// A `/proc/net/netlink` row: (groups of the first word, drops, inode).
#[derive(Debug, Clone, PartialEq)]
struct NlSock {
    groups: String,
    drops: u64,
    inode: u64,
}

/// `NETLINK_NETFILTER` sockets of namespace `ns` as the kernel lists them.
fn netfilter_sockets(ns: &Netns) -> Vec<NlSock> {
    // sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode
    ns.cat("/proc/net/netlink")
        .lines()
        .skip(1)
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() >= 10 && w[1] == "12").then(|| NlSock {
                groups: w[3].to_string(),
                drops: w[8].parse().unwrap(),
                inode: w[9].parse().unwrap(),
            })
        })
        .collect()
}

/// The exporter's ctnetlink listener in `ns`, once it exists: subscribed to the five event
/// groups (NEW, UPDATE, DESTROY, EXP_NEW, EXP_DESTROY: bits 0-3 and 5 = 0x2f).
fn listener(ns: &Netns, pid: i32) -> Option<NlSock> {
    let mine = socket_inodes(pid);
    let v: Vec<NlSock> = netfilter_sockets(ns)
        .into_iter()
        .filter(|s| mine.contains(&s.inode))
        .collect();
    assert!(v.len() <= 1, "more than one listener in {}: {v:?}", ns.name);
    let s = v.into_iter().next()?;
    assert_eq!(s.groups, "0000002f", "{s:?}");
    Some(s)
}

fn wait_listener(ns: &Netns, pid: i32) -> NlSock {
    wait_for(
        &format!("the exporter's listener in {}", ns.name),
        Duration::from_secs(15),
        || listener(ns, pid),
    )
}

/// `conntrack -E` in a namespace, its output kept in a file; SIGTERM (it then flushes) on
/// [`ConntrackE::stop`] or drop.
struct ConntrackE {
    child: Child,
    out: PathBuf,
}

impl ConntrackE {
    /// `what`: `[]` for conntrack events, `["expect"]` for expectations. Returns once its
    /// own socket (found through its fds: `ip netns exec` execs it in place) is subscribed to
    /// some group. Any subscribed socket that is not the exporter's would do only if the
    /// exporter never opened one after a snapshot of its fds: a listener it reopened passed
    /// for conntrack's, the traffic ran before conntrack subscribed, and its capture was
    /// empty.
    fn start(ns: &Netns, what: &[&str]) -> ConntrackE {
        let out = std::env::temp_dir().join(unique("ctE"));
        let f = std::fs::File::create(&out).unwrap();
        let mut args = vec!["netns", "exec", &ns.name, "conntrack", "-E"];
        args.extend_from_slice(what);
        let child = Command::new("ip")
            .args(&args)
            .stdout(f)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        wait_for("conntrack -E subscribed", Duration::from_secs(10), || {
            let theirs = socket_inodes(pid);
            netfilter_sockets(ns)
                .iter()
                .any(|s| s.groups != "00000000" && theirs.contains(&s.inode))
                .then_some(())
        });
        ConntrackE { child, out }
    }

    /// Stop it; its lines.
    fn stop(mut self) -> Vec<String> {
        self.term();
        std::fs::read_to_string(&self.out)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn term(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

impl Drop for ConntrackE {
    fn drop(&mut self) {
        self.term();
        let _ = std::fs::remove_file(&self.out);
    }
}

/// One `conntrack -E` line: (`NEW`/`UPDATE`/`DESTROY`, protocol, TCP state, first `sport=`,
/// first `dport=`).
fn parse_conntrack_e(l: &str) -> Option<(String, String, Option<String>, u16, u16)> {
    let w: Vec<&str> = l.split_whitespace().collect();
    let kind = w.first()?.trim_matches(['[', ']']).to_string();
    let proto = w.get(1)?.to_string();
    let state = w
        .iter()
        .skip(2)
        .take_while(|t| !t.contains('='))
        .find(|t| t.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .map(|s| s.to_string());
    let field = |k: &str| -> Option<u16> {
        w.iter()
            .find_map(|t| t.strip_prefix(k))
            .and_then(|v| v.parse().ok())
    };
    Some((kind, proto, state, field("sport=")?, field("dport=")?))
}

/// The events of namespace `netns` in the file sink's output, in order.
fn file_events(path: &Path, netns: u64) -> Vec<J> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<J>(l).ok())
        .filter(|v| v["netns"] == netns)
        .collect()
}

fn uint(v: &J, k: &str) -> u64 {
    v["fields"][k]
        .as_u64()
        .unwrap_or_else(|| panic!("no {k}: {v}"))
}

fn text(v: &J, k: &str) -> String {
    v["fields"][k].as_str().unwrap_or("").to_string()
}

/// Short names: ConntrackNew → NEW.
fn short(kind: &str) -> &'static str {
    match kind {
        "ConntrackNew" => "NEW",
        "ConntrackUpdate" => "UPDATE",
        "ConntrackDestroy" => "DESTROY",
        "ConntrackExpNew" => "EXPNEW",
        "ConntrackExpDestroy" => "EXPDESTROY",
        k => panic!("unexpected event type {k}"),
    }
}

const TCP_PORT: u16 = 8080;
const UDP_PORT: u16 = 9000;

fn nat_flows(test: &str, v6: bool) {
    let tables = if v6 { "ip6tables" } else { "iptables" };
    if !privileged_with(test, &["ip", tables, "conntrack"]) {
        return;
    }
    let t = Nat::new(v6);
    let (exp, events) = start_exporter("conntrack");
    let l = wait_listener(&t.r, exp.pid());
    let ce = ConntrackE::start(&t.r, &[]);
    let r_ino = t.r.inode();

    // N TCP connections, one after the other.
    const N: usize = 5;
    let s_ip = t.s_ip;
    let (tx, rx) = std::sync::mpsc::channel();
    let server = spawn_in(&t.s, move || {
        let l = TcpListener::bind((s_ip, TCP_PORT)).unwrap();
        tx.send(()).unwrap();
        for _ in 0..N {
            let (mut c, _) = l.accept().unwrap();
            let mut b = [0u8; 64];
            while c.read(&mut b).unwrap() > 0 {}
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    rx.recv().unwrap();
    let tcp_ports: Vec<u16> = t.c.within(move || {
        (0..N)
            .map(|_| {
                let mut s = TcpStream::connect((s_ip, TCP_PORT)).unwrap();
                let port = s.local_addr().unwrap().port();
                s.write_all(b"hello").unwrap();
                std::thread::sleep(Duration::from_millis(50));
                s.shutdown(std::net::Shutdown::Write).unwrap();
                let mut b = [0u8; 8];
                while matches!(s.read(&mut b), Ok(n) if n > 0) {}
                port
            })
            .collect()
    });
    server.join().unwrap();

    // M UDP flows: a request and its reply each.
    const M: usize = 3;
    let (tx, rx) = std::sync::mpsc::channel();
    let userver = spawn_in(&t.s, move || {
        let u = UdpSocket::bind((s_ip, UDP_PORT)).unwrap();
        tx.send(()).unwrap();
        let mut b = [0u8; 16];
        for _ in 0..M {
            let (n, from) = u.recv_from(&mut b).unwrap();
            u.send_to(&b[..n], from).unwrap();
        }
    });
    rx.recv().unwrap();
    let udp_ports: Vec<u16> = t.c.within(move || {
        (0..M)
            .map(|_| {
                let any: IpAddr = if s_ip.is_ipv6() {
                    "::".parse().unwrap()
                } else {
                    "0.0.0.0".parse().unwrap()
                };
                let u = UdpSocket::bind((any, 0)).unwrap();
                u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                u.send_to(b"ping", (s_ip, UDP_PORT)).unwrap();
                let mut b = [0u8; 16];
                u.recv_from(&mut b).unwrap();
                u.local_addr().unwrap().port()
            })
            .collect()
    });
    userver.join().unwrap();

    // Every entry expires and the kernel's GC destroys it.
    let ours = |v: &J| {
        let (p, sport, dport) = (
            text(v, "protocol"),
            uint(v, "sport") as u16,
            uint(v, "dport"),
        );
        (p == "TCP" && dport == u64::from(TCP_PORT) && tcp_ports.contains(&sport))
            || (p == "UDP" && dport == u64::from(UDP_PORT) && udp_ports.contains(&sport))
    };
    let all = wait_for(
        "every flow's ConntrackDestroy",
        Duration::from_secs(180),
        || {
            let evs: Vec<J> = file_events(&events, r_ino)
                .into_iter()
                .filter(|v| v["fields"]["sport"].is_u64() && ours(v))
                .collect();
            let destroyed = evs
                .iter()
                .filter(|v| v["type"] == "ConntrackDestroy")
                .count();
            (destroyed == N + M).then_some(evs)
        },
    );
    // conntrack -E got the same destroys by now (one kernel broadcast for both sockets).
    std::thread::sleep(Duration::from_millis(300));
    let reference = ce.stop();

    let mut per_flow: BTreeMap<(String, u16), Vec<(String, String)>> = BTreeMap::new();
    for v in &all {
        let key = (text(v, "protocol"), uint(v, "sport") as u16);
        per_flow.entry(key).or_default().push((
            short(v["type"].as_str().unwrap()).to_string(),
            text(v, "state"),
        ));
        // Attributed to the router's namespace entity.
        assert_eq!(v["name"], t.r.name.as_str(), "{v}");
        assert_eq!(v["kind"], "named", "{v}");
        // Both tuples, the reply one translated by MASQUERADE.
        let sport = uint(v, "sport");
        assert_eq!(text(v, "saddr"), t.c_ip.to_string(), "{v}");
        assert_eq!(text(v, "daddr"), t.s_ip.to_string(), "{v}");
        assert_eq!(text(v, "reply_saddr"), t.s_ip.to_string(), "{v}");
        assert_eq!(text(v, "reply_daddr"), t.r_out_ip.to_string(), "{v}");
        assert_eq!(uint(v, "reply_sport"), uint(v, "dport"), "{v}");
        assert_eq!(uint(v, "reply_dport"), sport, "{v}");
        assert_eq!((uint(v, "mark"), uint(v, "zone")), (0, 0), "{v}");
        let status = text(v, "status");
        assert!(
            status.contains("SRC_NAT") && status.contains("CONFIRMED"),
            "{v}"
        );
        let replied = if v["type"] == "ConntrackNew" {
            "false"
        } else {
            "true"
        };
        assert_eq!(text(v, "replied"), replied, "{v}");
    }
    let tcp_want: Vec<(String, String)> = [
        ("NEW", "SYN_SENT"),
        ("UPDATE", "SYN_RECV"),
        ("UPDATE", "ESTABLISHED"),
        ("UPDATE", "FIN_WAIT"),
        ("UPDATE", "CLOSE_WAIT"),
        ("UPDATE", "LAST_ACK"),
        ("UPDATE", "TIME_WAIT"),
        ("DESTROY", "TIME_WAIT"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    let udp_want: Vec<(String, String)> = ["NEW", "UPDATE", "DESTROY"]
        .iter()
        .map(|a| (a.to_string(), String::new()))
        .collect();
    for p in &tcp_ports {
        assert_eq!(per_flow[&("TCP".to_string(), *p)], tcp_want, "TCP port {p}");
    }
    for p in &udp_ports {
        assert_eq!(per_flow[&("UDP".to_string(), *p)], udp_want, "UDP port {p}");
    }
    assert_eq!(per_flow.len(), N + M);
    let count = |k: &str| all.iter().filter(|v| v["type"] == k).count();
    assert_eq!(
        (
            count("ConntrackNew"),
            count("ConntrackUpdate"),
            count("ConntrackDestroy")
        ),
        (N + M, 6 * N + M, N + M)
    );

    // The same flows as conntrack -E saw them, event for event.
    let mut theirs: BTreeMap<(String, u16), Vec<(String, String)>> = BTreeMap::new();
    for line in &reference {
        let Some((kind, proto, state, sport, dport)) = parse_conntrack_e(line) else {
            continue;
        };
        let proto = proto.to_ascii_uppercase();
        let ours = (proto == "TCP" && dport == TCP_PORT && tcp_ports.contains(&sport))
            || (proto == "UDP" && dport == UDP_PORT && udp_ports.contains(&sport));
        if ours {
            theirs
                .entry((proto, sport))
                .or_default()
                .push((kind, state.unwrap_or_default()));
        }
    }
    assert_eq!(per_flow, theirs, "conntrack -E:\n{}", reference.join("\n"));

    // Nothing lost, the same socket all along (entered once, kept).
    let now = listener(&t.r, exp.pid()).expect("listener still there");
    assert_eq!((now.inode, now.drops), (l.inode, 0));
    let sc = exp.scrape();
    assert_eq!(
        sc.sum("netsleuth_events_lost_total", &[("probe", "conntrack")]),
        Some(0.0)
    );
    // Published (all namespaces) ≥ what this test made; the listeners gauge counts the router.
    let published = sc
        .sum("netsleuth_events_total", &[("type", "ConntrackUpdate")])
        .unwrap();
    assert!(published >= (6 * N + M) as f64, "{published}");
    assert!(sc.sum("netsleuth_conntrack_event_listeners", &[]).unwrap() >= 3.0);
}

#[test]
fn tcp_and_udp_through_nat_ipv4() {
    nat_flows("tcp_and_udp_through_nat_ipv4", false);
}

#[test]
fn tcp_and_udp_through_nat_ipv6() {
    nat_flows("tcp_and_udp_through_nat_ipv6", true);
}

/// The FTP helper (`CT --helper ftp` in the router's raw table) sees a `227 Entering Passive
/// Mode` reply and expects the data connection: one `ConntrackExpNew`; the data connection
/// arrives and consumes it: one `ConntrackExpDestroy`; its conntrack is `EXPECTED`.
#[test]
fn ftp_expectation_new_and_destroy() {
    let test = "ftp_expectation_new_and_destroy";
    if !privileged_with(test, &["ip", "iptables", "conntrack"]) {
        return;
    }
    let t = Nat::new(false);
    let helper = Command::new("ip")
        .args([
            "netns",
            "exec",
            &t.r.name,
            "iptables",
            "-t",
            "raw",
            "-A",
            "PREROUTING",
            "-p",
            "tcp",
            "--dport",
            "21",
            "-j",
            "CT",
            "--helper",
            "ftp",
        ])
        .output()
        .unwrap();
    if !helper.status.success() {
        skip(
            test,
            &format!(
                "this kernel has no FTP conntrack helper (nf_conntrack_ftp): {}",
                String::from_utf8_lossy(&helper.stderr).trim()
            ),
        );
        return;
    }
    let (exp, events) = start_exporter("conntrack");
    wait_listener(&t.r, exp.pid());
    let ce = ConntrackE::start(&t.r, &["expect"]);
    let r_ino = t.r.inode();
    let s_ip = t.s_ip;
    let (tx, rx) = std::sync::mpsc::channel();
    let server = spawn_in(&t.s, move || {
        let ctl = TcpListener::bind((s_ip, 21)).unwrap();
        let data = TcpListener::bind((s_ip, 50000)).unwrap();
        tx.send(()).unwrap();
        let (mut c, _) = ctl.accept().unwrap();
        c.write_all(b"220 ready\r\n").unwrap();
        let mut b = [0u8; 64];
        let _ = c.read(&mut b).unwrap();
        // 50000 = 195 * 256 + 80.
        c.write_all(b"227 Entering Passive Mode (198,18,251,2,195,80).\r\n")
            .unwrap();
        let (mut d, _) = data.accept().unwrap();
        let _ = d.read(&mut b).unwrap();
    });
    rx.recv().unwrap();
    let (ctl_port, data_port) = t.c.within(move || {
        let mut s = TcpStream::connect((s_ip, 21)).unwrap();
        let mut b = [0u8; 128];
        let _ = s.read(&mut b).unwrap();
        s.write_all(b"PASV\r\n").unwrap();
        let n = s.read(&mut b).unwrap();
        assert!(b[..n].starts_with(b"227"), "{:?}", &b[..n]);
        let mut d = TcpStream::connect((s_ip, 50000)).unwrap();
        d.write_all(b"x").unwrap();
        (
            s.local_addr().unwrap().port(),
            d.local_addr().unwrap().port(),
        )
    });
    server.join().unwrap();
    // The kernel reports the expectation's destruction when the data connection's conntrack is
    // created, and that conntrack's NEW only when it is confirmed, later: wait for both.
    let evs = wait_for(
        "ConntrackExpDestroy and the data connection's ConntrackNew",
        Duration::from_secs(20),
        || {
            let evs = file_events(&events, r_ino);
            let destroyed = evs.iter().any(|v| v["type"] == "ConntrackExpDestroy");
            let data = evs.iter().any(|v| {
                v["type"] == "ConntrackNew" && v["fields"]["sport"] == u64::from(data_port)
            });
            (destroyed && data).then_some(evs)
        },
    );
    std::thread::sleep(Duration::from_millis(300));
    let reference = ce.stop();
    let exp_evs: Vec<&J> = evs
        .iter()
        .filter(|v| v["type"].as_str().unwrap().starts_with("ConntrackExp"))
        .collect();
    assert_eq!(exp_evs.len(), 2, "{exp_evs:?}");
    assert_eq!(exp_evs[0]["type"], "ConntrackExpNew");
    assert_eq!(exp_evs[1]["type"], "ConntrackExpDestroy");
    for v in &exp_evs {
        // The expected tuple: client to the server's data port; the master: the control
        // connection; the helper that made it.
        assert_eq!(text(v, "protocol"), "TCP", "{v}");
        assert_eq!(text(v, "saddr"), t.c_ip.to_string(), "{v}");
        assert_eq!(text(v, "daddr"), s_ip.to_string(), "{v}");
        assert_eq!(uint(v, "dport"), 50000, "{v}");
        assert_eq!(text(v, "master_saddr"), t.c_ip.to_string(), "{v}");
        assert_eq!(uint(v, "master_sport"), u64::from(ctl_port), "{v}");
        assert_eq!(uint(v, "master_dport"), 21, "{v}");
        assert_eq!(text(v, "helper"), "ftp", "{v}");
        assert_eq!(v["name"], t.r.name.as_str());
    }
    // conntrack -E expect saw exactly these two.
    let kinds: Vec<String> = reference
        .iter()
        .filter(|l| l.contains("dport=50000"))
        .map(|l| {
            l.split_whitespace()
                .next()
                .unwrap()
                .trim_matches(['[', ']'])
                .to_string()
        })
        .collect();
    assert_eq!(kinds, ["NEW", "DESTROY"], "{reference:?}");
    // The data connection's conntrack is the expected one.
    let data_new: Vec<&J> = evs
        .iter()
        .filter(|v| {
            v["type"] == "ConntrackNew"
                && v["fields"]["sport"] == u64::from(data_port)
                && v["fields"]["dport"] == 50000
        })
        .collect();
    assert_eq!(data_new.len(), 1, "{evs:?}");
    assert!(
        text(data_new[0], "status").contains("EXPECTED"),
        "{}",
        data_new[0]
    );
    // The control connection carries the helper's name.
    let ctl_new = evs
        .iter()
        .find(|v| v["type"] == "ConntrackNew" && v["fields"]["sport"] == u64::from(ctl_port))
        .unwrap();
    assert_eq!(text(ctl_new, "helper"), "ftp");
}

/// Lines the exporter logged so far (kept in `seen`).
fn drain_log(e: &Exporter, seen: &mut Vec<String>) {
    let rx = e.log.lock().unwrap();
    while let Ok(l) = rx.try_recv() {
        seen.push(l);
    }
}

/// Events the exporter logged as lost: per namespace inode, summed.
fn logged_losses(lines: &[String]) -> BTreeMap<u64, u64> {
    let mut m = BTreeMap::new();
    for l in lines {
        let Some(rest) = l.split("conntrack events: netns ").nth(1) else {
            continue;
        };
        let Some((_, after)) = l.split_once("receive buffer full, ") else {
            continue;
        };
        let ino: u64 = rest.split_whitespace().next().unwrap().parse().unwrap();
        let n: u64 = after.split_whitespace().next().unwrap().parse().unwrap();
        *m.entry(ino).or_default() += n;
    }
    m
}

/// A namespace whose own loopback traffic is tracked (a `conntrack` match in OUTPUT makes the
/// kernel hook conntrack there), with UDP receivers on 127.0.0.1:9000 and :9001 so that no
/// ICMP errors come back.
fn tracked_namespace(prefix: &str) -> (Netns, Vec<UdpSocket>) {
    let f = Netns::new(prefix);
    f.exec(
        "iptables",
        &[
            "-A",
            "OUTPUT",
            "-m",
            "conntrack",
            "--ctstate",
            "NEW",
            "-j",
            "ACCEPT",
        ],
    );
    let socks = f.within(|| {
        [9000, 9001]
            .map(|p| UdpSocket::bind(("127.0.0.1", p)).unwrap())
            .into()
    });
    (f, socks)
}

/// `n` UDP flows (a datagram from a fresh socket each) to 127.0.0.1:`port` in `f`: `n` new
/// conntracks, one ConntrackNew each. The sockets stay open until all have sent, so no source
/// port is reused (a reused port would be the same flow, no new conntrack); a later batch goes
/// to the other port, since the earlier flows' conntracks are still there.
fn udp_flows(f: &Netns, n: usize, port: u16) {
    f.within(move || {
        let held: Vec<UdpSocket> = (0..n)
            .map(|_| {
                let u = UdpSocket::bind("127.0.0.1:0").unwrap();
                u.send_to(b"x", ("127.0.0.1", port)).unwrap();
                u
            })
            .collect();
        drop(held);
    });
}

/// ConntrackNew events of `netns` to 127.0.0.1:9000 and :9001.
fn new_events(path: &Path, netns: u64) -> usize {
    file_events(path, netns)
        .iter()
        .filter(|v| {
            v["type"] == "ConntrackNew"
                && (v["fields"]["dport"] == 9000 || v["fields"]["dport"] == 9001)
        })
        .count()
}

/// A receive buffer of 4 KiB (the kernel makes it 8 KiB: a handful of events) and the
/// exporter stopped (SIGSTOP) while 300 flows start: the kernel drops what does not fit and
/// counts it for the socket; the exporter counts exactly those drops as lost, logs them, keeps
/// running, and the events after it are delivered.
#[test]
fn flood_overflows_small_receive_buffer() {
    let test = "flood_overflows_small_receive_buffer";
    if !privileged_with(test, &["ip", "iptables"]) {
        return;
    }
    let (f, _rx) = tracked_namespace("ctf");
    let (exp, events) = start_exporter("{name: conntrack, args: {rcvbuf: 4096}}");
    let l = wait_listener(&f, exp.pid());
    let ino = f.inode();
    let pid = nix::unistd::Pid::from_raw(exp.pid());
    const K: usize = 300;
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    udp_flows(&f, K, 9000);
    let drops = listener(&f, exp.pid()).unwrap().drops;
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert!(drops > 0 && drops < K as u64, "kernel drops: {drops}");
    // What fit was read, what did not is lost: K in all.
    let end = Instant::now() + Duration::from_secs(10);
    while new_events(&events, ino) as u64 != K as u64 - drops {
        if Instant::now() > end {
            drain_log(&exp, &mut Vec::new());
            panic!(
                "{} events read, {drops} dropped (kernel: {:?}), {K} sent",
                new_events(&events, ino),
                listener(&f, exp.pid())
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut log = Vec::new();
    wait_for("the losses logged", Duration::from_secs(10), || {
        drain_log(&exp, &mut log);
        (logged_losses(&log).get(&ino) == Some(&drops)).then_some(())
    });
    // The metric is what the exporter logged (every namespace: they all had small buffers).
    wait_for("lost metric = logged", Duration::from_secs(10), || {
        drain_log(&exp, &mut log);
        let before: u64 = logged_losses(&log).values().sum();
        let m = exp
            .scrape()
            .sum("netsleuth_events_lost_total", &[("probe", "conntrack")])
            .unwrap() as u64;
        drain_log(&exp, &mut log);
        let after: u64 = logged_losses(&log).values().sum();
        (before == m && m == after).then_some(())
    });
    // Still running, same socket, and later events arrive.
    udp_flows(&f, 5, 9001);
    wait_for("later events", Duration::from_secs(10), || {
        (new_events(&events, ino) as u64 == K as u64 - drops + 5).then_some(())
    });
    let now = listener(&f, exp.pid()).unwrap();
    assert_eq!((now.inode, now.drops), (l.inode, drops));
    drain_log(&exp, &mut log);
    assert!(
        !log.iter().any(|l| l.contains("panicked")),
        "{}",
        log.join("\n")
    );
}

/// `rateLimit: 1, burst: 5`: of 40 flows started at once in a namespace, 5 are reported
/// (the bucket holds 5); 2.5 s later the bucket has refilled 2 tokens: of 3 more flows, 2 are
/// reported. Buckets are per namespace, so other namespaces' traffic does not change this.
#[test]
fn rate_limit_per_namespace() {
    let test = "rate_limit_per_namespace";
    if !privileged_with(test, &["ip", "iptables"]) {
        return;
    }
    let (f, _rx) = tracked_namespace("ctl");
    let (exp, events) = start_exporter("{name: conntrack, args: {rateLimit: 1, burst: 5}}");
    wait_listener(&f, exp.pid());
    let ino = f.inode();
    let suppressed = |e: &Exporter| {
        e.scrape()
            .sum(
                "netsleuth_events_suppressed_total",
                &[("type", "ConntrackNew")],
            )
            .unwrap()
    };
    let before = suppressed(&exp);
    let t0 = Instant::now();
    udp_flows(&f, 40, 9000);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(new_events(&events, ino), 5);
    // The other 35 were counted as suppressed (others' suppressed events may add to it).
    wait_for("35 suppressed", Duration::from_secs(5), || {
        (suppressed(&exp) - before >= 35.0).then_some(())
    });
    std::thread::sleep(Duration::from_millis(2500).saturating_sub(t0.elapsed()));
    udp_flows(&f, 3, 9001);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(new_events(&events, ino), 7);
}

/// The listener lives as long as its namespace is in the inventory: `ip netns del` (the
/// namespace's last reference but our socket) closes it, which lets the namespace go.
#[test]
fn listener_closed_when_namespace_goes() {
    let test = "listener_closed_when_namespace_goes";
    if !privileged_with(test, &["ip"]) {
        return;
    }
    let (exp, _events) = start_exporter("conntrack");
    let n = Netns::new("ctg");
    let l = wait_listener(&n, exp.pid());
    // Kept: the same socket seconds later (several inventory rounds).
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(listener(&n, exp.pid()).unwrap().inode, l.inode);
    drop(n);
    wait_for("the listener closed", Duration::from_secs(20), || {
        (!socket_inodes(exp.pid()).contains(&l.inode)).then_some(())
    });
}

/// `netsleuth probes` lists the event probe; bad args are config errors naming them.
#[test]
fn probes_row_and_bad_args() {
    let cfg = write_config("event:\n  probes: [conntrack]\n");
    let out = Command::new(BIN)
        .args([&format!("--config.file={}", cfg.display()), "probes"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let row = text
        .lines()
        .find(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.first() == Some(&"conntrack") && w.get(1) == Some(&"events")
        })
        .unwrap_or_else(|| panic!("no conntrack events row:\n{text}"));
    let avail = row.split_whitespace().nth(2).unwrap();
    assert!(
        avail == "yes" || row.split_whitespace().count() > 3,
        "{row}"
    );
    for (yaml, word) in [
        (
            "event:\n  probes: [{name: conntrack, args: {rcvbuf: 0}}]\n",
            "rcvbuf",
        ),
        (
            "event:\n  probes: [{name: conntrack, args: {threshold: 1s}}]\n",
            "threshold",
        ),
        ("event:\n  probes: [conntrack, conntrack]\n", "twice"),
    ] {
        let cfg = write_config(yaml);
        let out = Command::new(BIN)
            .args([&format!("--config.file={}", cfg.display()), "probes"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{yaml}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("event.probes[") && err.contains(word),
            "{yaml}: {err}"
        );
    }
}
