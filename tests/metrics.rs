//! The real binary against the real kernel: own network namespaces, veth pairs and traffic
//! (198.18.0.0/15 only); every exported figure is compared with the namespace's own procfs or
//! netlink value read right after the scrape, with no traffic in between.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use netsleuth::model::snake_case;

fn start_all() -> Exporter {
    let p = write_config(EVERY_PROBE_EVERY_FIELD);
    Exporter::start(&[&format!("--config.file={}", p.display())])
}

/// Sends `n` datagrams from `ns` to `to` (an address of `dst`) and waits until `dst` has
/// received them all (its `Ip InReceives`), so that nothing is in flight when figures are
/// compared.
fn send_udp(ns: &Netns, dst: &Netns, to: String, n: usize) {
    let received = || -> u64 {
        proc_pairs(&dst.cat("/proc/self/net/snmp"))["Ip_InReceives"]
            .parse()
            .unwrap()
    };
    let before = received();
    ns.within(move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        for i in 0..n {
            s.send_to(format!("packet {i}").as_bytes(), &to).unwrap();
        }
    });
    wait_for("the datagrams received", Duration::from_secs(5), || {
        (received() >= before + n as u64).then_some(())
    });
}

const NETDEV_COLUMNS: [&str; 16] = [
    "receive_bytes",
    "receive_packets",
    "receive_errs",
    "receive_drop",
    "receive_fifo",
    "receive_frame",
    "receive_compressed",
    "receive_multicast",
    "transmit_bytes",
    "transmit_packets",
    "transmit_errs",
    "transmit_drop",
    "transmit_fifo",
    "transmit_colls",
    "transmit_carrier",
    "transmit_compressed",
];

#[test]
fn netdev_equals_procfs_per_device() {
    if !privileged("netdev_equals_procfs_per_device") {
        return;
    }
    let pair = Pair::new();
    send_udp(&pair.a, &pair.b, format!("{}:9", pair.ip_b), 7);
    let e = start_all();
    let s = e.scrape();
    for (ns, dev) in [(&pair.a, &pair.dev_a), (&pair.b, &pair.dev_b)] {
        let procfs = proc_net_dev(&ns.cat("/proc/self/net/dev"));
        let inode = ns.inode().to_string();
        for (d, cols) in &procfs {
            for (i, col) in NETDEV_COLUMNS.iter().enumerate() {
                let m = format!("netsleuth_netdev_{col}_total");
                let got = s.one(&m, &[("netns", &inode), ("device", d)]);
                assert_eq!(got.value, cols[i].to_string(), "{m} {d} in {}", ns.name);
                assert_eq!(got.labels["kind"], "named");
                assert_eq!(got.labels["name"], ns.name);
                // Not a pod: the empty pod labels are not written.
                assert_eq!(got.labels.get("k8s_pod"), None);
                assert_eq!(got.labels.get("k8s_namespace"), None);
            }
        }
        // The traffic is really there: 7 datagrams left a and arrived at b.
        assert!(procfs[dev.as_str()][1] >= 7 || procfs[dev.as_str()][9] >= 7);
    }
}

fn is_gauge(group: &str, field: &str) -> bool {
    matches!(
        (group, field),
        (
            "Tcp",
            "RtoAlgorithm" | "RtoMin" | "RtoMax" | "MaxConn" | "CurrEstab"
        ) | ("Ip", "Forwarding" | "DefaultTTL")
    )
}

fn expect_name(key: &str) -> String {
    let (g, f) = key.split_once('_').unwrap();
    let suffix = if is_gauge(g, f) { "" } else { "_total" };
    format!(
        "netsleuth_{}_{}{suffix}",
        g.to_ascii_lowercase(),
        snake_case(f)
    )
}

/// Every field of snmp, snmp6 and netstat (with `fields: '.*'`) equals the kernel's figure.
#[test]
fn snmp_and_netstat_every_field_equals_procfs() {
    if !privileged("snmp_and_netstat_every_field_equals_procfs") {
        return;
    }
    let pair = Pair::new();
    send_udp(&pair.a, &pair.b, format!("{}:9", pair.ip_b), 5);
    // Some TCP as well: a refused connect gives a RST and AttemptFails.
    let to = format!("{}:7", pair.ip_b);
    pair.a.within(move || {
        let _ = TcpStream::connect_timeout(&to.parse().unwrap(), Duration::from_secs(2));
    });
    let e = start_all();
    let s = e.scrape();
    for ns in [&pair.a, &pair.b] {
        let inode = ns.inode().to_string();
        let mut want = proc_pairs(&ns.cat("/proc/self/net/snmp"));
        want.extend(proc_pairs(&ns.cat("/proc/self/net/netstat")));
        want.extend(proc_snmp6(&ns.cat("/proc/self/net/snmp6")));
        let mut checked = 0;
        for (key, val) in &want {
            let group = key.split_once('_').unwrap().0;
            if ![
                "Ip", "Icmp", "IcmpMsg", "Tcp", "Udp", "UdpLite", "TcpExt", "IpExt", "Ip6",
                "Icmp6", "Udp6", "UdpLite6",
            ]
            .contains(&group)
            {
                continue;
            }
            let name = expect_name(key);
            let got = s.one(&name, &[("netns", &inode)]);
            assert_eq!(&got.value, val, "{name} ({key}) in {}", ns.name);
            checked += 1;
        }
        assert!(checked > 250, "only {checked} fields compared");
        // The induced conditions are visible.
        let v = |k: &str| want[k].parse::<u64>().unwrap();
        if ns.name == pair.a.name {
            assert_eq!(v("Udp_OutDatagrams"), 5);
            assert_eq!(v("Tcp_AttemptFails"), 1);
        } else {
            assert_eq!(v("Udp_NoPorts"), 5);
            assert_eq!(v("Tcp_OutRsts"), 1);
        }
    }
}

/// The default field set is the curated one, not everything.
#[test]
fn default_fields_are_curated() {
    if !privileged("default_fields_are_curated") {
        return;
    }
    let ns = Netns::new("nsd");
    let e = Exporter::start(&[]);
    let s = e.scrape();
    let inode = ns.inode().to_string();
    let mine: Vec<&str> = s
        .of_netns(ns.inode())
        .iter()
        .map(|x| x.name.as_str())
        .collect();
    for m in [
        "netsleuth_tcp_active_opens_total",
        "netsleuth_tcp_curr_estab",
        "netsleuth_udp_rcvbuf_errors_total",
        "netsleuth_tcpext_listen_drops_total",
        "netsleuth_icmp_in_msgs_total",
        "netsleuth_ip_forwarding",
    ] {
        assert!(mine.contains(&m), "{m} missing for netns {inode}");
    }
    for m in [
        "netsleuth_tcpext_tcp_hp_hits_total",
        "netsleuth_udplite_in_datagrams_total",
        "netsleuth_icmpmsg_in_type3_total",
    ] {
        assert!(!mine.contains(&m), "{m} should not be in the default set");
    }
}

#[test]
fn sockstat_equals_procfs() {
    if !privileged("sockstat_equals_procfs") {
        return;
    }
    let ns = Netns::new("nss");
    ns.exec("ip", &["addr", "add", "198.18.250.1/32", "dev", "lo"]);
    // Hold a few sockets open inside the namespace for the scrape.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let path = format!("/run/netns/{}", ns.name);
    let holder = std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let l = TcpListener::bind("198.18.250.1:0").unwrap();
        let c1 = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let u1 = UdpSocket::bind("198.18.250.1:0").unwrap();
        let u2 = UdpSocket::bind("198.18.250.1:0").unwrap();
        ready_tx.send(()).unwrap();
        let _ = rx.recv();
        drop((l, c1, u1, u2));
    });
    ready_rx.recv().unwrap();
    let e = start_all();
    let s = e.scrape();
    let inode = ns.inode().to_string();
    let page = netsleuth::sys::page_size();
    let text = ns.cat("/proc/self/net/sockstat");
    for line in text.lines() {
        let (proto, rest) = line.split_once(':').unwrap();
        let proto = proto.to_ascii_lowercase();
        let toks: Vec<&str> = rest.split_whitespace().collect();
        for kv in toks.chunks(2) {
            let (k, v) = (kv[0], kv[1].parse::<u64>().unwrap());
            if proto == "sockets" {
                // `sockets: used` also counts every observer's short-lived netlink sockets in
                // the namespace (ours, and `ip netns exec`'s), freed asynchronously: not exact.
                continue;
            }
            if matches!(
                (proto.as_str(), k),
                ("tcp", "orphan" | "alloc" | "mem") | ("udp", "mem")
            ) {
                // Node-global figures: exported for the host namespace only.
                let name = if k == "mem" {
                    format!("netsleuth_sock_{proto}_mem_bytes")
                } else {
                    format!("netsleuth_sock_{proto}_{k}")
                };
                assert!(
                    s.find(&name, &[("netns", &inode)]).is_empty(),
                    "{name} exported per namespace"
                );
                assert_eq!(
                    s.find(&name, &[("kind", "host")]).len(),
                    1,
                    "{name} for the host"
                );
                continue;
            }
            let (name, val) = match (proto.as_str(), k) {
                (_, "mem") => (format!("netsleuth_sock_{proto}_mem_bytes"), v * page),
                ("frag", "memory") => ("netsleuth_sock_frag_memory_bytes".to_string(), v),
                _ => (format!("netsleuth_sock_{proto}_{k}"), v),
            };
            assert_eq!(
                s.one(&name, &[("netns", &inode)]).value,
                val.to_string(),
                "{name}"
            );
        }
    }
    assert_eq!(
        s.one("netsleuth_sock_tcp_inuse", &[("netns", &inode)])
            .value,
        "3"
    );
    assert_eq!(
        s.one("netsleuth_sock_udp_inuse", &[("netns", &inode)])
            .value,
        "2"
    );
    tx.send(()).unwrap();
    holder.join().unwrap();
}

/// softnet is node-global: exported once per CPU, without namespace labels.
#[test]
fn softnet_once_per_node() {
    if !privileged("softnet_once_per_node") {
        return;
    }
    let _ns = Netns::new("nsn");
    let before = std::fs::read_to_string("/proc/net/softnet_stat").unwrap();
    let e = start_all();
    let s = e.scrape();
    let after = std::fs::read_to_string("/proc/net/softnet_stat").unwrap();
    let samples = s.find("netsleuth_softnet_processed_total", &[]);
    assert_eq!(samples.len(), before.lines().count());
    for (i, (b, a)) in before.lines().zip(after.lines()).enumerate() {
        let cols_b: Vec<&str> = b.split_whitespace().collect();
        let cols_a: Vec<&str> = a.split_whitespace().collect();
        let cpu = if cols_b.len() >= 13 {
            u64::from_str_radix(cols_b[12], 16).unwrap()
        } else {
            i as u64
        };
        let got: u64 = s
            .one(
                "netsleuth_softnet_processed_total",
                &[("cpu", &cpu.to_string())],
            )
            .value
            .parse()
            .unwrap();
        let lo = u64::from_str_radix(cols_b[0], 16).unwrap();
        let hi = u64::from_str_radix(cols_a[0], 16).unwrap();
        assert!(lo <= got && got <= hi, "cpu {cpu}: {lo} <= {got} <= {hi}");
        let dropped = s.one(
            "netsleuth_softnet_dropped_total",
            &[("cpu", &cpu.to_string())],
        );
        assert!(!dropped.labels.contains_key("netns"));
    }
}

/// Processes in a namespace: their fds, sockets and I/O sums.
#[test]
fn io_and_fd_over_the_namespace_processes() {
    if !privileged("io_and_fd_over_the_namespace_processes") {
        return;
    }
    let ns = Netns::new("nsp");
    ns.exec("ip", &["addr", "add", "198.18.251.1/32", "dev", "lo"]);
    let script = "import socket,time\nss=[socket.socket() for _ in range(3)]\nfor s in ss: s.bind(('198.18.251.1',0))\nu=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nprint('ready',flush=True)\ntime.sleep(600)\n";
    let mut kids = Vec::new();
    for _ in 0..2 {
        let mut c = Holder::spawn(
            Command::new("ip")
                .args(["netns", "exec", &ns.name, "python3", "-c", script])
                .stdout(Stdio::piped()),
        );
        let out = c.0.stdout.take().unwrap();
        read_line_until("the holder's ready", out, Duration::from_secs(20), |l| {
            (l == "ready").then_some(())
        });
        kids.push(c);
    }
    let e = start_all();
    let s = e.scrape();
    let inode = ns.inode().to_string();
    let (mut fds, mut socks) = (0u64, 0u64);
    let mut io: BTreeMap<&str, u64> = BTreeMap::new();
    for k in &kids {
        for ent in std::fs::read_dir(format!("/proc/{}/fd", k.pid())).unwrap() {
            fds += 1;
            if std::fs::read_link(ent.unwrap().path())
                .unwrap()
                .to_string_lossy()
                .starts_with("socket:")
            {
                socks += 1;
            }
        }
        let text = std::fs::read_to_string(format!("/proc/{}/io", k.pid())).unwrap();
        for l in text.lines() {
            let (key, v) = l.split_once(": ").unwrap();
            for want in ["syscr", "syscw", "read_bytes", "write_bytes"] {
                if key == want {
                    *io.entry(want).or_default() += v.parse::<u64>().unwrap();
                }
            }
        }
    }
    assert_eq!(socks, 8);
    assert_eq!(
        s.one("netsleuth_fd_open_fds", &[("netns", &inode)]).value,
        fds.to_string()
    );
    assert_eq!(
        s.one("netsleuth_fd_open_sockets", &[("netns", &inode)])
            .value,
        "8"
    );
    for (m, k) in [
        ("netsleuth_io_read_syscalls_total", "syscr"),
        ("netsleuth_io_write_syscalls_total", "syscw"),
        ("netsleuth_io_read_bytes_total", "read_bytes"),
        ("netsleuth_io_write_bytes_total", "write_bytes"),
    ] {
        assert_eq!(
            s.one(m, &[("netns", &inode)]).value,
            io[k].to_string(),
            "{m}"
        );
    }
    drop(kids);
}

/// sock_diag in the namespace: states, queues, listen backlogs, exact.
#[test]
fn tcpsummary_equals_induced_sockets() {
    if !privileged("tcpsummary_equals_induced_sockets") {
        return;
    }
    let pair = Pair::new();
    // b listens with backlog 5 and never accepts; a opens 3 connections and sends 100 bytes on
    // each, which sit in b's receive queues.
    let script = format!(
        "import socket,time\nl=socket.socket()\nl.bind(('{}',7100))\nl.listen(5)\nprint('ready',flush=True)\ntime.sleep(600)\n",
        pair.ip_b
    );
    let mut server = Holder::spawn(
        Command::new("ip")
            .args(["netns", "exec", &pair.b.name, "python3", "-c", &script])
            .stdout(Stdio::piped()),
    );
    let out = server.0.stdout.take().unwrap();
    read_line_until("the listener's ready", out, Duration::from_secs(20), |l| {
        (l == "ready").then_some(())
    });
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let path = format!("/run/netns/{}", pair.a.name);
    let to = format!("{}:7100", pair.ip_b);
    let client = std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let mut conns = Vec::new();
        for _ in 0..3 {
            let mut c = TcpStream::connect(&to).unwrap();
            c.write_all(&[7u8; 100]).unwrap();
            conns.push(c);
        }
        ready_tx.send(()).unwrap();
        let _ = rx.recv();
    });
    ready_rx.recv().unwrap();
    // The 300 bytes are in b's receive queues (`/proc/net/tcp`: rx_queue in hex, of the
    // ESTABLISHED sockets, state 01; a listener's rx_queue is its accept backlog).
    wait_for("300 bytes queued at b", Duration::from_secs(5), || {
        let tcp = pair.b.cat("/proc/self/net/tcp");
        let queued: u64 = tcp
            .lines()
            .skip(1)
            .filter(|l| l.split_whitespace().nth(3) == Some("01"))
            .filter_map(|l| l.split_whitespace().nth(4)?.split_once(':'))
            .map(|(_, rx)| u64::from_str_radix(rx, 16).unwrap())
            .sum();
        (queued == 300).then_some(())
    });
    let e = start_all();
    let s = e.scrape();
    let ib = pair.b.inode().to_string();
    let ia = pair.a.inode().to_string();
    let st = |inode: &str, state: &str| {
        s.one(
            "netsleuth_tcpsummary_sockets",
            &[("netns", inode), ("state", state)],
        )
        .value
        .clone()
    };
    assert_eq!(st(&ib, "listen"), "1");
    assert_eq!(st(&ib, "established"), "3");
    assert_eq!(st(&ia, "established"), "3");
    assert_eq!(st(&ia, "listen"), "0");
    // An idle namespace (no TCP socket at all) is not dumped, and still reports zeros.
    let idle = Netns::new("nsi");
    let s = e.scrape();
    let ii = idle.inode().to_string();
    assert_eq!(
        s.find("netsleuth_tcpsummary_sockets", &[("netns", &ii)])
            .len(),
        11
    );
    assert!(s
        .find("netsleuth_tcpsummary_sockets", &[("netns", &ii)])
        .iter()
        .all(|x| x.value == "0"));
    let s = e.scrape();
    assert_eq!(
        s.find("netsleuth_tcpsummary_sockets", &[("netns", &ib)])
            .len(),
        11,
        "every state but close, always present"
    );
    assert_eq!(
        s.one("netsleuth_tcpsummary_rx_queue_bytes", &[("netns", &ib)])
            .value,
        "300"
    );
    assert_eq!(
        s.one("netsleuth_tcpsummary_tx_queue_bytes", &[("netns", &ia)])
            .value,
        "0"
    );
    let l = [
        ("netns", ib.as_str()),
        ("port", "7100"),
        ("address", pair.ip_b.as_str()),
        ("family", "ipv4"),
    ];
    assert_eq!(s.one("netsleuth_tcpsummary_listen_backlog", &l).value, "3");
    assert_eq!(
        s.one("netsleuth_tcpsummary_listen_backlog_max", &l).value,
        "5"
    );
    tx.send(()).unwrap();
    client.join().unwrap();
    drop(server);
}

/// rtnetlink qdisc stats in the namespace equal `tc -s` right after.
#[test]
fn qdisc_equals_tc() {
    if !privileged("qdisc_equals_tc") {
        return;
    }
    let pair = Pair::new();
    pair.a.exec(
        "tc",
        &[
            "qdisc",
            "add",
            "dev",
            &pair.dev_a,
            "root",
            "handle",
            "1:",
            "tbf",
            "rate",
            "1mbit",
            "burst",
            "32kbit",
            "latency",
            "400ms",
        ],
    );
    send_udp(&pair.a, &pair.b, format!("{}:9", pair.ip_b), 9);
    let e = start_all();
    let s = e.scrape();
    let tc: serde_json::Value = serde_json::from_str(
        &pair
            .a
            .exec("tc", &["-s", "-j", "qdisc", "show", "dev", &pair.dev_a]),
    )
    .unwrap();
    let q = tc
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["kind"] == "tbf")
        .expect("tbf in tc output");
    let ia = pair.a.inode().to_string();
    let l = [
        ("netns", ia.as_str()),
        ("device", pair.dev_a.as_str()),
        ("qdisc_kind", "tbf"),
        ("handle", "1:"),
        ("parent", "root"),
    ];
    for (m, k) in [
        ("netsleuth_qdisc_bytes_total", "bytes"),
        ("netsleuth_qdisc_packets_total", "packets"),
        ("netsleuth_qdisc_drops_total", "drops"),
        ("netsleuth_qdisc_overlimits_total", "overlimits"),
        ("netsleuth_qdisc_requeues_total", "requeues"),
        ("netsleuth_qdisc_qlen", "qlen"),
        ("netsleuth_qdisc_backlog_bytes", "backlog"),
    ] {
        assert_eq!(s.one(m, &l).value, q[k].to_string(), "{m}");
    }
    assert!(q["packets"].as_u64().unwrap() >= 9);
    // With `kindsExclude: ''` the stats-less `noqueue` of lo is there...
    assert_eq!(
        s.one(
            "netsleuth_qdisc_packets_total",
            &[("netns", &ia), ("device", "lo")]
        )
        .labels["qdisc_kind"],
        "noqueue"
    );
    // ...and by default it is left out.
    let p = write_config("metrics:\n  probes: [qdisc]\n");
    let e = Exporter::start(&[&format!("--config.file={}", p.display())]);
    let s = e.scrape();
    assert!(s
        .find(
            "netsleuth_qdisc_packets_total",
            &[("netns", &ia), ("qdisc_kind", "noqueue")]
        )
        .is_empty());
    assert_eq!(
        s.find(
            "netsleuth_qdisc_packets_total",
            &[("netns", &ia), ("qdisc_kind", "tbf")]
        )
        .len(),
        1
    );
}

/// A namespace with more devices carrying qdiscs than the exporter asks for one by one (16):
/// device names then come from a link dump; every device is named right either way.
#[test]
fn qdisc_names_many_devices() {
    if !privileged("qdisc_names_many_devices") {
        return;
    }
    let ns = Netns::new("nsqd");
    let mut want = std::collections::BTreeMap::new();
    for i in 0..20 {
        let dev = format!("qd{i}");
        let peer = format!("qp{i}");
        ns.exec(
            "ip",
            &["link", "add", &dev, "type", "veth", "peer", "name", &peer],
        );
        // A distinct queue limit per device, to tie each series to its device.
        let limit = (100 + i).to_string();
        ns.exec(
            "tc",
            &[
                "qdisc", "add", "dev", &dev, "root", "handle", "1:", "pfifo", "limit", &limit,
            ],
        );
        want.insert(dev, limit);
    }
    let p = write_config("metrics:\n  probes: [qdisc]\n");
    let e = Exporter::start(&[&format!("--config.file={}", p.display())]);
    let s = e.scrape();
    let ino = ns.inode().to_string();
    let got: std::collections::BTreeMap<String, String> = s
        .find(
            "netsleuth_qdisc_packets_total",
            &[("netns", &ino), ("qdisc_kind", "pfifo")],
        )
        .iter()
        .map(|x| (x.labels["device"].clone(), x.labels["handle"].clone()))
        .collect();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    assert!(got.values().all(|h| h == "1:"));
    // And the kernel agrees which device has which qdisc (limit is per device).
    let tc: serde_json::Value =
        serde_json::from_str(&ns.exec("tc", &["-j", "qdisc", "show"])).unwrap();
    for q in tc.as_array().unwrap() {
        if q["kind"] == "pfifo" {
            let dev = q["dev"].as_str().unwrap();
            assert_eq!(q["options"]["limit"].to_string(), want[dev], "{dev}");
        }
    }
}

/// conntrack per namespace: the entry count matches the namespace's own table. The test brings
/// conntrack into being itself: an `-m conntrack` rule in b's namespace loads the module where
/// it is one (a stock Debian kernel) and makes the namespace track its flows; only where the
/// kernel refuses that rule (no conntrack at all) does the collector's failure path run, and
/// then exactly.
#[test]
fn conntrack_per_namespace() {
    if !privileged_with("conntrack_per_namespace", &["iptables"]) {
        return;
    }
    let pair = Pair::new();
    let rule = Command::new("ip")
        .args([
            "netns",
            "exec",
            &pair.b.name,
            "iptables",
            "-A",
            "INPUT",
            "-m",
            "conntrack",
            "--ctstate",
            "NEW",
            "-j",
            "ACCEPT",
        ])
        .output()
        .unwrap();
    let stat_exists = std::path::Path::new("/proc/self/net/stat/nf_conntrack").exists();
    let e = start_all();
    if !rule.status.success() {
        // The kernel has no conntrack: the rule is refused and the table does not exist.
        assert!(
            !stat_exists,
            "conntrack exists but the rule failed: {}",
            String::from_utf8_lossy(&rule.stderr)
        );
        let s = e.scrape();
        assert_eq!(
            s.one(
                "netsleuth_scrape_collector_success",
                &[("collector", "conntrack")]
            )
            .value,
            "0"
        );
        assert!(s.find("netsleuth_conntrack_entries", &[]).is_empty());
        assert!(
            !s.find("netsleuth_netdev_receive_bytes_total", &[])
                .is_empty(),
            "other probes unharmed"
        );
        return;
    }
    assert!(stat_exists, "the conntrack rule loaded no conntrack table");
    send_udp(&pair.a, &pair.b, format!("{}:9", pair.ip_b), 1);
    for p in 9001..9004 {
        send_udp(&pair.a, &pair.b, format!("{}:{p}", pair.ip_b), 1);
    }
    let entries = || {
        let stat = pair.b.cat("/proc/self/net/stat/nf_conntrack");
        u64::from_str_radix(
            stat.lines()
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap(),
            16,
        )
        .unwrap()
    };
    // One entry per flow: the four destination ports.
    let n = wait_for("b tracks the four flows", Duration::from_secs(5), || {
        let n = entries();
        (n >= 4).then_some(n)
    });
    assert_eq!(n, 4);
    let s = e.scrape();
    let ib = pair.b.inode().to_string();
    assert_eq!(entries(), 4);
    assert_eq!(
        s.one("netsleuth_conntrack_entries", &[("netns", &ib)])
            .value,
        "4"
    );
    let max = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_max").unwrap();
    assert_eq!(
        s.one("netsleuth_conntrack_entries_limit", &[("netns", &ib)])
            .value,
        max.trim()
    );
}

/// A netns made by `unshare --net` is a process namespace named after its first process;
/// when the process exits its series disappear; a new namespace (even with a recycled inode)
/// never carries the old one's name.
#[test]
fn process_namespaces_and_churn() {
    if !privileged("process_namespaces_and_churn") {
        return;
    }
    let e = start_all();
    for round in 0..15 {
        let comm = if round % 2 == 0 { "sleep" } else { "cat" };
        let child = if comm == "sleep" {
            Holder::spawn(Command::new("unshare").args(["--net", "sleep", "600"]))
        } else {
            Holder::spawn(
                Command::new("unshare")
                    .args(["--net", "cat"])
                    .stdin(Stdio::piped()),
            )
        };
        let pid = child.pid();
        let inode = wait_for("unshare", Duration::from_secs(5), || {
            // comm first: once it is the exec'd program, unshare(CLONE_NEWNET) is done and the
            // link read next is the new namespace (the other order raced under load).
            let comm_now = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            let l = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
            let l = l.to_string_lossy().to_string();
            (comm_now.trim() == comm).then(|| {
                l.trim_start_matches("net:[")
                    .trim_end_matches(']')
                    .parse::<u64>()
                    .unwrap()
            })
        });
        let s = e.scrape();
        let got = s.one(
            "netsleuth_sock_sockets_used",
            &[("netns", &inode.to_string())],
        );
        assert_eq!(got.labels["kind"], "process", "round {round}");
        assert_eq!(got.labels["name"], comm, "round {round}: inode {inode}");
        drop(child);
        let s = e.scrape();
        assert!(s
            .find(
                "netsleuth_netdev_receive_bytes_total",
                &[("netns", &inode.to_string()), ("name", comm)]
            )
            .is_empty());
        assert!(
            s.one(
                "netsleuth_scrape_collector_success",
                &[("collector", "netdev")]
            )
            .value
                == "1"
        );
    }
}

/// Namespaces created and deleted while scrapes run: every scrape is whole and parseable,
/// deleted namespaces are gone from the next scrape.
#[test]
fn churn_while_scraping() {
    if !privileged("churn_while_scraping") {
        return;
    }
    let e = start_all();
    for _ in 0..10 {
        let batch: Vec<Netns> = (0..5).map(|_| Netns::new("nsc")).collect();
        let inodes: Vec<u64> = batch.iter().map(|n| n.inode()).collect();
        let names: Vec<String> = batch.iter().map(|n| n.name.clone()).collect();
        let s = e.scrape();
        for i in &inodes {
            assert!(!s.of_netns(*i).is_empty(), "new netns {i} missing");
        }
        let deleter = std::thread::spawn(move || drop(batch));
        let _ = e.scrape();
        deleter.join().unwrap();
        let s = e.scrape();
        for n in &names {
            assert!(
                s.samples.iter().all(|x| x.labels.get("name") != Some(n)),
                "deleted netns {n} still exported"
            );
        }
    }
}

/// Regression: a namespace's first process that execs another program (unshare, then the
/// program) is named after what it runs now, not what it ran when first seen.
#[test]
fn process_name_follows_exec() {
    if !privileged("process_name_follows_exec") {
        return;
    }
    let e = Exporter::start(&[]);
    let mut child = Holder::spawn(
        Command::new("unshare")
            .args(["--net", "sh", "-c", "read x; exec sleep 600"])
            .stdin(Stdio::piped()),
    );
    let pid = child.pid();
    let inode = wait_for("sh in its netns", Duration::from_secs(5), || {
        let c = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        let l = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
        (c.trim() == "sh").then(|| {
            l.to_string_lossy()
                .trim_start_matches("net:[")
                .trim_end_matches(']')
                .to_string()
        })
    });
    let s = e.scrape();
    assert_eq!(
        s.one("netsleuth_sock_sockets_used", &[("netns", &inode)])
            .labels["name"],
        "sh"
    );
    child.0.stdin.take().unwrap().write_all(b"go\n").unwrap();
    wait_for("exec", Duration::from_secs(5), || {
        let c = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (c.trim() == "sleep").then_some(())
    });
    let s = e.scrape();
    assert_eq!(
        s.one("netsleuth_sock_sockets_used", &[("netns", &inode)])
            .labels["name"],
        "sleep"
    );
    drop(child);
}
