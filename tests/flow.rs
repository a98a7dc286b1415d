//! The `flow` probe end to end (root): a node namespace with a bridge (like a CNI bridge) and
//! pod-like namespaces behind veths on it; the real binary runs inside the node namespace (its
//! "host"), attaches to the host sides of the veths, and the test compares the exported
//! figures with what it sent and with what the pods' own kernel counters (`/proc/net/snmp`)
//! say. Addresses: 198.18.0.0/15 and 2001:2::/48 only.
mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{await_address, http_get, in_netns, privileged, run, unique, wait_for, write_config};
use common::{Netns, Scrape, BIN};
use netsleuth::bpf::prog;

static NET: AtomicUsize = AtomicUsize::new(0);

/// The kill -9 test compares the node's BPF programs and links before and after: the tests of
/// this file run one at a time.
static LOCK: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A node namespace with bridge `br0`; pods are attached to it.
struct Node {
    ns: Netns,
    /// Third octet of this node's 198.18.<net>.0/24 (and 2001:2:0:<net>::/64).
    net: usize,
    pods: usize,
    /// Pods get IPv6 (off: nothing but what the test sends leaves a pod).
    v6: bool,
}

struct Pod {
    ns: Netns,
    host_dev: String,
    ip4: String,
    ip6: String,
}

impl Node {
    fn new() -> Node {
        let ns = Netns::new("fnode");
        // No multicast snooping, ever: a snooping bridge joins the all-snoopers group
        // 224.0.0.106, and turning snooping off later leaves it with IGMP reports from
        // 0.0.0.0 that the bridge floods to every pod for a second or two, taking flow map
        // entries at random times (CI saw exactly that in flow_map_bound_and_max_series).
        ns.exec(
            "ip",
            &[
                "link",
                "add",
                "br0",
                "type",
                "bridge",
                "mcast_snooping",
                "0",
            ],
        );
        ns.exec("ip", &["link", "set", "br0", "up"]);
        let net = 10 + (std::process::id() as usize * 7 + NET.fetch_add(1, Ordering::Relaxed)) % 90;
        Node {
            ns,
            net,
            pods: 0,
            v6: true,
        }
    }

    /// A pod namespace with `eth0` (198.18.<net>.<n>/24, 2001:2:0:<net>::<n>/64), its host side
    /// on the bridge.
    fn pod(&mut self) -> Pod {
        self.pods += 1;
        let n = self.pods + 1;
        let ns = Netns::new("fpod");
        // IPv6 on for the pod's device (Netns keeps it off elsewhere); no DAD wait.
        if self.v6 {
            ns.sysctl("net.ipv6.conf.all.disable_ipv6", "0");
            ns.sysctl("net.ipv6.conf.default.disable_ipv6", "0");
        }
        let host_dev = unique("fh");
        // Every other pod's host side gets an ifindex above 4096: the probe keeps low ifindexes
        // in an array and the others in a hash, and both must count.
        let index = (n % 2 == 1).then(|| (5000 + n).to_string());
        let mut add = vec!["link", "add", &host_dev];
        if let Some(i) = &index {
            add.extend(["index", i.as_str()]);
        }
        add.extend([
            "netns",
            &self.ns.name,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &ns.name,
        ]);
        run("ip", &add);
        self.ns
            .exec("ip", &["link", "set", &host_dev, "master", "br0", "up"]);
        if let Some(i) = &index {
            let shown = self
                .ns
                .exec("ip", &["-o", "link", "show", "dev", &host_dev]);
            assert!(shown.starts_with(&format!("{i}:")), "{shown}");
        }
        let ip4 = format!("198.18.{}.{n}", self.net);
        let ip6 = format!("2001:2:0:{}::{n}", self.net);
        ns.exec("ip", &["addr", "add", &format!("{ip4}/24"), "dev", "eth0"]);
        if self.v6 {
            ns.exec(
                "ip",
                &["addr", "add", &format!("{ip6}/64"), "dev", "eth0", "nodad"],
            );
        }
        ns.exec("ip", &["link", "set", "eth0", "up"]);
        Pod {
            ns,
            host_dev,
            ip4,
            ip6,
        }
    }
}

/// The exporter running inside the node namespace; killed on drop.
struct NodeExporter {
    child: Child,
    addr: String,
    node: String,
}

impl NodeExporter {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn start(node: &Node, probe_args: &str) -> NodeExporter {
        let cfg = write_config(&format!(
            "metrics:\n  probes:\n  - {{name: flow, args: {probe_args}}}\n"
        ));
        let mut child = Command::new("ip")
            .args(["netns", "exec", &node.ns.name, BIN])
            .arg("--web.listen-address=127.0.0.1:0")
            .arg(format!("--config.file={}", cfg.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start netsleuth");
        let (addr, _, _rx) = await_address(&mut child, Duration::from_secs(20), "netsleuth");
        NodeExporter {
            child,
            addr,
            node: node.ns.name.clone(),
        }
    }

    fn scrape(&self) -> Scrape {
        let addr = self.addr.clone();
        let body = in_netns(format!("/run/netns/{}", self.node), move || {
            let (code, _, body) = http_get(&addr, "/metrics", &[]);
            assert_eq!(code, 200);
            body
        });
        Scrape::parse(&String::from_utf8(body).unwrap())
    }

    /// The summed flow counters (bytes, packets) with these labels.
    fn flow(&self, want: &[(&str, &str)]) -> (u64, u64) {
        let s = self.scrape();
        let b = s.sum("netsleuth_flow_bytes_total", want).unwrap_or(0.0);
        let p = s.sum("netsleuth_flow_packets_total", want).unwrap_or(0.0);
        (b as u64, p as u64)
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The TCP segments a namespace put on the wire (`OutSegs` + `RetransSegs`) and its
/// `RetransSegs`, from its own /proc/net/snmp. (InSegs of the receiver is not comparable: the
/// receiving veth may merge segments before TCP counts them.)
fn tcp_segs(ns: &Netns) -> (u64, u64) {
    let snmp = ns.cat("/proc/net/snmp");
    let lines: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Tcp:")).collect();
    let names: Vec<&str> = lines[0].split_whitespace().collect();
    let vals: Vec<&str> = lines[1].split_whitespace().collect();
    let get = |k: &str| -> u64 {
        vals[names.iter().position(|n| *n == k).unwrap()]
            .parse()
            .unwrap()
    };
    // OutSegs leaves retransmissions out; the wire (and flow) has them.
    (get("OutSegs") + get("RetransSegs"), get("RetransSegs"))
}

/// A TCP leg's flow figures against the wire: exactly `segs.0` packets; `want` bytes exactly
/// when nothing was retransmitted (`segs.1` = 0), else more (a retransmission's payload size
/// is not in any counter), said on stderr.
fn tcp_bytes_match(got: (u64, u64), want: u64, segs: (u64, u64), what: &str) {
    assert_eq!(got.1, segs.0, "{what}: packets");
    if segs.1 == 0 {
        assert_eq!(got.0, want, "{what}: bytes");
    } else {
        eprintln!(
            "{what}: {} retransmissions, bytes {} > {want}",
            segs.1, got.0
        );
        assert!(got.0 > want, "{what}: bytes {} with retransmissions", got.0);
    }
}

/// A TCP leg: a listener at `at` in the namespace at `to_ns`, a connection from the one at
/// `from_ns` that writes `bytes` bytes of `fill` and closes; the server must read them all.
fn tcp_leg(from_ns: String, to_ns: String, at: String, bytes: usize, fill: u8) {
    let l = in_netns(to_ns, move || TcpListener::bind(at).unwrap());
    let to = l.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut got = 0usize;
        let mut buf = vec![0u8; 65536];
        loop {
            match s.read(&mut buf).unwrap() {
                0 => break,
                n => got += n,
            }
        }
        got
    });
    in_netns(from_ns, move || {
        let mut s = TcpStream::connect(to).unwrap();
        s.write_all(&vec![fill; bytes]).unwrap();
    });
    assert_eq!(server.join().unwrap(), bytes);
}

/// Waits until the sending namespace's segments stop moving (the closing handshake is over)
/// and `counted()` (the flow probe's packets) equals them; returns [`tcp_segs`] then.
fn tcp_settled(ns: &Netns, counted: impl Fn() -> u64) -> (u64, u64) {
    wait_for("TCP close settled", Duration::from_secs(10), || {
        let s1 = tcp_segs(ns).0;
        std::thread::sleep(Duration::from_millis(300));
        let (s2, r) = tcp_segs(ns);
        (s1 == s2 && counted() == s2).then_some((s2, r))
    })
}

const UDP_N: usize = 37;
const UDP_SIZE: usize = 321;
const TCP_BYTES: usize = 3_000_000;

/// N UDP datagrams and M TCP bytes from pod A to pod B; exact packets and bytes for A's
/// egress and B's ingress, with ports when asked for.
fn udp_and_tcp(test: &str, v6: bool, ports: bool) {
    if !privileged(test) {
        return;
    }
    let _g = lock();
    let mut node = Node::new();
    let a = node.pod();
    let b = node.pod();
    let e = NodeExporter::start(
        &node,
        &format!("{{enablePortInLabel: {ports}, clusterCIDRs: ['198.18.0.0/15', '2001:2::/48']}}"),
    );
    wait_for(
        "flow attached to both pods' veths",
        Duration::from_secs(10),
        || {
            let s = e.scrape();
            (s.sum("netsleuth_flow_devices", &[]) == Some(2.0)).then_some(())
        },
    );
    let (ip_a, ip_b) = if v6 {
        (a.ip6.clone(), b.ip6.clone())
    } else {
        (a.ip4.clone(), b.ip4.clone())
    };
    let bind = |ip: &str| {
        if v6 {
            format!("[{ip}]:0")
        } else {
            format!("{ip}:0")
        }
    };
    // UDP: B listens (no ICMP errors), A sends N datagrams of UDP_SIZE bytes.
    let rx = b.ns.within({
        let at = bind(&ip_b);
        move || UdpSocket::bind(at).unwrap()
    });
    let dport = rx.local_addr().unwrap().port();
    let to = rx.local_addr().unwrap();
    let sport = a.ns.within({
        let at = bind(&ip_a);
        move || {
            let s = UdpSocket::bind(at).unwrap();
            for _ in 0..UDP_N {
                s.send_to(&[7u8; UDP_SIZE], to).unwrap();
            }
            s.local_addr().unwrap().port()
        }
    });
    let mut buf = [0u8; 2048];
    rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for _ in 0..UDP_N {
        assert_eq!(rx.recv(&mut buf).unwrap(), UDP_SIZE);
    }
    let ip_hdr = if v6 { 40 } else { 20 };
    let want_bytes = (UDP_N * (UDP_SIZE + 8 + ip_hdr)) as u64;
    let (ino_a, ino_b) = (a.ns.inode().to_string(), b.ns.inode().to_string());
    let (sp, dp) = (sport.to_string(), dport.to_string());
    // The peer is a namespace on this node: named, with its exact address.
    let mut a_eg = vec![
        ("netns", ino_a.as_str()),
        ("kind", "named"),
        ("name", a.ns.name.as_str()),
        ("direction", "egress"),
        ("protocol", "UDP"),
        ("peer_kind", "named"),
        ("peer_name", b.ns.name.as_str()),
        ("peer_k8s_pod", ""),
        ("peer_address", ip_b.as_str()),
    ];
    let mut b_in = vec![
        ("netns", ino_b.as_str()),
        ("direction", "ingress"),
        ("protocol", "UDP"),
        ("peer_kind", "named"),
        ("peer_name", a.ns.name.as_str()),
        ("peer_address", ip_a.as_str()),
    ];
    if ports {
        a_eg.extend([("local_port", sp.as_str()), ("peer_port", dp.as_str())]);
        b_in.extend([("local_port", dp.as_str()), ("peer_port", sp.as_str())]);
    }
    wait_for("UDP counted", Duration::from_secs(5), || {
        (e.flow(&a_eg).1 >= UDP_N as u64).then_some(())
    });
    assert_eq!(
        e.flow(&a_eg),
        (want_bytes, UDP_N as u64),
        "A egress UDP {a_eg:?}"
    );
    assert_eq!(
        e.flow(&b_in),
        (want_bytes, UDP_N as u64),
        "B ingress UDP {b_in:?}"
    );
    // Nothing the other way (B did not send UDP to A).
    let b_eg = [
        ("netns", ino_b.as_str()),
        ("direction", "egress"),
        ("protocol", "UDP"),
    ];
    assert_eq!(e.flow(&b_eg), (0, 0));
    // Without ports in the key, the series carries no port labels.
    let s = e.scrape();
    let any = s.find("netsleuth_flow_bytes_total", &a_eg);
    assert_eq!(any.len(), 1, "{any:?}");
    assert_eq!(any[0].labels.contains_key("local_port"), ports);

    // TCP: A sends TCP_BYTES to B, both close; A's namespace has no other TCP.
    tcp_leg(a.ns.path(), b.ns.path(), bind(&ip_b), TCP_BYTES, 1);
    let tcp_a = [
        ("netns", ino_a.as_str()),
        ("direction", "egress"),
        ("protocol", "TCP"),
        ("peer_address", ip_b.as_str()),
    ];
    let tcp_b = [
        ("netns", ino_b.as_str()),
        ("direction", "ingress"),
        ("protocol", "TCP"),
        ("peer_address", ip_a.as_str()),
    ];
    // Settled: the closing handshake is over when A's segment count stops moving.
    let segs = tcp_settled(&a.ns, || e.flow(&tcp_a).1);
    // Every segment carries the IP header and a 32-byte TCP header (timestamps); the SYN's is
    // 40 bytes (MSS, SACK-permitted, timestamps, window scale).
    let want = TCP_BYTES as u64 + segs.0 * (ip_hdr as u64 + 32) + 8;
    tcp_bytes_match(e.flow(&tcp_a), want, segs, "A egress TCP");
    tcp_bytes_match(e.flow(&tcp_b), want, segs, "B ingress TCP");
    drop(e);
    drop(node);
}

#[test]
fn flow_ipv4_udp_tcp_ports_off() {
    udp_and_tcp("flow_ipv4_udp_tcp_ports_off", false, false);
}

#[test]
fn flow_ipv4_udp_tcp_ports_on() {
    udp_and_tcp("flow_ipv4_udp_tcp_ports_on", false, true);
}

#[test]
fn flow_ipv6_udp_tcp_ports_off() {
    udp_and_tcp("flow_ipv6_udp_tcp_ports_off", true, false);
}

#[test]
fn flow_ipv6_udp_tcp_ports_on() {
    udp_and_tcp("flow_ipv6_udp_tcp_ports_on", true, true);
}

/// Sends `n` UDP datagrams of `size` bytes from `from` to `to` (listening there, so no ICMP
/// errors come back) and waits for them to arrive.
fn udp(from: &Pod, to: &Pod, n: usize, size: usize) {
    let rx = to.ns.within({
        let at = format!("{}:0", to.ip4);
        move || UdpSocket::bind(at).unwrap()
    });
    let dst = rx.local_addr().unwrap();
    let src = format!("{}:0", from.ip4);
    from.ns.within(move || {
        let s = UdpSocket::bind(src).unwrap();
        for _ in 0..n {
            s.send_to(&vec![3u8; size], dst).unwrap();
        }
    });
    rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = vec![0u8; size + 1];
    for _ in 0..n {
        assert_eq!(rx.recv(&mut buf).unwrap(), size);
    }
}

/// Our programs' BPF links as bpftool lists them (ids of links whose program is one of `progs`).
fn links_of(progs: &[u32]) -> Vec<u64> {
    let out = run("bpftool", &["link", "show", "-j"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|l| {
            l["prog_id"]
                .as_u64()
                .is_some_and(|p| progs.contains(&(p as u32)))
        })
        .map(|l| l["id"].as_u64().unwrap())
        .collect()
}

/// A pod created after the exporter started is attached and counted within the wait; a pod
/// that goes away is forgotten; kill -9 leaves no tcx link and no program of ours.
#[test]
fn flow_hotplug_vanish_and_kill_9() {
    let test = "flow_hotplug_vanish_and_kill_9";
    if !common::privileged_with(test, &["bpftool"]) {
        return;
    }
    let _g = lock();
    let before: Vec<u32> = prog::loaded_programs()
        .unwrap()
        .into_iter()
        .map(|(i, _)| i)
        .collect();
    let mut node = Node::new();
    let a = node.pod();
    let e = NodeExporter::start(&node, "{clusterCIDRs: ['198.18.0.0/15']}");
    let devices = |e: &NodeExporter, n: f64, what: &str, secs: u64| {
        wait_for(what, Duration::from_secs(secs), || {
            (e.scrape().sum("netsleuth_flow_devices", &[]) == Some(n)).then_some(())
        })
    };
    devices(&e, 1.0, "A's veth attached", 10);
    // A pod that appears now: its veth is attached within the wait (rtnetlink notification).
    let t0 = Instant::now();
    let b = node.pod();
    devices(&e, 2.0, "B's veth attached after start", 3);
    eprintln!("{test}: new pod attached after {:?}", t0.elapsed());
    udp(&a, &b, 11, 100);
    let (ino_a, ino_b) = (a.ns.inode().to_string(), b.ns.inode().to_string());
    let want = [
        ("netns", ino_b.as_str()),
        ("direction", "ingress"),
        ("protocol", "UDP"),
        ("peer_address", a.ip4.as_str()),
    ];
    wait_for("B counted", Duration::from_secs(5), || {
        (e.flow(&want) == (11 * 128, 11)).then_some(())
    });
    let want_a = [
        ("netns", ino_a.as_str()),
        ("direction", "egress"),
        ("protocol", "UDP"),
        ("peer_address", b.ip4.as_str()),
    ];
    assert_eq!(e.flow(&want_a), (11 * 128, 11));
    // B goes away: its veth vanishes with its namespace and is forgotten.
    let b_dev = b.host_dev.clone();
    drop(b);
    devices(&e, 1.0, "B's veth forgotten", 5);
    assert!(!node.ns.exec("ip", &["-o", "link"]).contains(&b_dev));

    let ours: Vec<u32> = prog::loaded_programs()
        .unwrap()
        .into_iter()
        .filter(|(i, n)| !before.contains(i) && n.starts_with("flow_"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(ours.len(), 2, "flow_ingress and flow_egress loaded");
    assert_eq!(links_of(&ours).len(), 2, "A's ingress and egress tcx links");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(e.pid()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    drop(e);
    wait_for(
        "programs and links gone after kill -9",
        Duration::from_secs(5),
        || {
            let live: Vec<u32> = prog::loaded_programs()
                .unwrap()
                .into_iter()
                .map(|(i, _)| i)
                .collect();
            (links_of(&ours).is_empty() && !ours.iter().any(|p| live.contains(p))).then_some(())
        },
    );
    drop(a);
    drop(node);
}

/// Sends one datagram from `from` to each of `to` (addresses of no namespace: a static
/// neighbour entry sends them onto the bridge, where nobody takes them).
fn udp_off_node(from: &Pod, to: &[String]) {
    for (i, ip) in to.iter().enumerate() {
        from.ns.exec(
            "ip",
            &[
                "neigh",
                "replace",
                ip,
                "lladdr",
                &format!("02:00:00:00:00:{:02x}", i + 1),
                "dev",
                "eth0",
                "nud",
                "permanent",
            ],
        );
    }
    let to: Vec<String> = to.iter().map(|ip| format!("{ip}:9")).collect();
    let src = format!("{}:0", from.ip4);
    from.ns.within(move || {
        // On CPU 0: the veth hands the datagrams to the host side, and the bridge to the
        // other ports, on the sender's CPU, so every one is counted in CPU 0's flow table.
        let mut cpu0 = nix::sched::CpuSet::new();
        cpu0.set(0).unwrap();
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpu0).unwrap();
        let s = UdpSocket::bind(src).unwrap();
        for d in &to {
            s.send_to(&[0u8; 10], d).unwrap();
        }
    });
}

/// Remote addresses of no namespace on this node: exact inside clusterCIDRs, else their /24
/// (or `other` with peerPrefixV4: 0); a peer on the node is named whatever clusterCIDRs says.
#[test]
fn flow_peer_address_aggregation() {
    let test = "flow_peer_address_aggregation";
    if !privileged(test) {
        return;
    }
    let _g = lock();
    for (args, want) in [
        ("{}", None),
        ("{clusterCIDRs: ['198.18.0.0/15']}", Some("exact")),
        ("{peerPrefixV4: 0}", Some("other")),
    ] {
        let mut node = Node::new();
        node.v6 = false;
        let a = node.pod();
        let b = node.pod();
        let e = NodeExporter::start(&node, args);
        wait_for("attached", Duration::from_secs(10), || {
            (e.scrape().sum("netsleuth_flow_devices", &[]) == Some(2.0)).then_some(())
        });
        let off: Vec<String> = (200..203)
            .map(|h| format!("198.18.{}.{h}", node.net))
            .collect();
        udp_off_node(&a, &off);
        udp(&a, &b, 2, 10);
        let ino_a = a.ns.inode().to_string();
        let eg = [
            ("netns", ino_a.as_str()),
            ("direction", "egress"),
            ("protocol", "UDP"),
        ];
        wait_for("counted", Duration::from_secs(5), || {
            (e.flow(&eg).1 == 5).then_some(())
        });
        let s = e.scrape();
        let mut got: Vec<(String, String)> = s
            .find("netsleuth_flow_packets_total", &eg)
            .iter()
            .map(|x| (x.labels["peer_address"].clone(), x.value.clone()))
            .collect();
        got.sort();
        let net24 = format!("198.18.{}.0/24", node.net);
        let mut expect: Vec<(String, String)> = match want {
            None => vec![(net24, "3".into())],
            Some("exact") => off.iter().map(|a| (a.clone(), "1".to_string())).collect(),
            _ => vec![("other".into(), "3".into())],
        };
        expect.push((b.ip4.clone(), "2".into()));
        expect.sort();
        assert_eq!(got, expect, "{args}");
        // B is on this node: named even where its address would be aggregated.
        let to_b = s.one(
            "netsleuth_flow_packets_total",
            &[
                ("netns", ino_a.as_str()),
                ("direction", "egress"),
                ("peer_address", b.ip4.as_str()),
            ],
        );
        assert_eq!(to_b.labels["peer_name"], b.ns.name);
        assert_eq!(to_b.labels["peer_kind"], "named");
    }
}

/// More distinct flows than the kernel map holds: the overflow is counted in
/// netsleuth_bpf_map_full_total, and maxSeries folds the series beyond it into one.
#[test]
fn flow_map_bound_and_max_series() {
    let test = "flow_map_bound_and_max_series";
    if !common::privileged_with(test, &["iptables"]) {
        return;
    }
    let _g = lock();
    let (node, a, _b) = quiet_v4_node();
    let e = NodeExporter::start(
        &node,
        // No per-CPU tables: the hash alone holds the keys.
        "{mapEntries: 4, maxSeries: 3, cpuTableEntries: 0, clusterCIDRs: ['198.18.0.0/15']}",
    );
    attached_and_forwarding(&node, &e, [&a, &_b]);
    // Six datagrams to six addresses. Keys: A egress to each (6), and B's port of the bridge
    // floods them all to B's veth: B ingress from A (1, created by the first datagram). The
    // map holds 4: A to the first three and B from A; the last three updates find it full.
    let off: Vec<String> = (200..206)
        .map(|h| format!("198.18.{}.{h}", node.net))
        .collect();
    udp_off_node(&a, &off);
    let full = [("probe", "flow")];
    let t0 = Instant::now();
    loop {
        let s = e.scrape();
        let v = s.sum("netsleuth_bpf_map_full_total", &full);
        if v == Some(3.0) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "map full counted {v:?} times, not 3; flow series: {:?}",
            s.find("netsleuth_flow_packets_total", &[])
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let s = e.scrape();
    let series = s.find("netsleuth_flow_packets_total", &[]);
    let overflow: Vec<_> = series
        .iter()
        .filter(|x| x.labels.get("peer_address").map(String::as_str) == Some("overflow"))
        .collect();
    assert_eq!(
        series.len(),
        4,
        "three series and the overflow series: {series:?}"
    );
    assert_eq!(overflow.len(), 1);
    // One series went into the overflow series: counted once, however often it is scraped.
    assert_eq!(
        s.sum("netsleuth_flow_series_overflowed_total", &[]),
        Some(1.0)
    );
    // Every counted packet is in some series: A's three + B's six.
    assert_eq!(s.sum("netsleuth_flow_packets_total", &[]), Some(9.0));
    // Nothing else broke: a later scrape gives the same series.
    let again = e.scrape();
    assert_eq!(again.find("netsleuth_flow_packets_total", &[]).len(), 4);
    assert_eq!(
        again.sum("netsleuth_flow_series_overflowed_total", &[]),
        Some(1.0)
    );
}

/// Keys of the kernel hash `flows4` whose namespace is `netns` (bpftool, checking only).
fn hash_keys_of(netns: u64) -> usize {
    let out = run("bpftool", &["map", "dump", "name", "flows4", "-j"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    // One map: its entries; several of that name: each map with its `elements`.
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|m| match m["elements"].as_array() {
            Some(e) => e.clone(),
            None => vec![m.clone()],
        })
        .filter(|e| e["formatted"]["key"]["netns"].as_u64() == Some(netns))
        .count()
}

impl Node {
    /// A pod that sends nothing of its own: its IGMP reports would take map entries and
    /// table slots at random times (the bridge, made without snooping, sends none).
    fn quiet_pod(&mut self) -> Pod {
        let p = self.pod();
        p.ns.exec("iptables", &["-A", "OUTPUT", "-p", "igmp", "-j", "DROP"]);
        p
    }
}

/// An IPv4-only node with two quiet pods: nothing but a test's datagrams is counted.
fn quiet_v4_node() -> (Node, Pod, Pod) {
    let mut node = Node::new();
    node.v6 = false;
    let a = node.quiet_pod();
    let b = node.quiet_pod();
    (node, a, b)
}

/// Waits for both of the node's pods to be attached and their bridge ports to forward: a port
/// comes up through linkwatch, which runs non-urgent events at most once a second, and a
/// flood that finds B's port not forwarding misses B (A's frames are counted at A's port
/// before the bridge sees them, B's only if the bridge forwards them).
fn attached_and_forwarding(node: &Node, e: &NodeExporter, pods: [&Pod; 2]) {
    wait_for("attached", Duration::from_secs(10), || {
        (e.scrape().sum("netsleuth_flow_devices", &[]) == Some(2.0)).then_some(())
    });
    for dev in pods.map(|p| &p.host_dev) {
        wait_for("bridge ports forwarding", Duration::from_secs(5), || {
            node.ns
                .exec("ip", &["-d", "link", "show", "dev", dev])
                .contains("state forwarding")
                .then_some(())
        });
    }
}

/// The per-CPU tables in front of the hashes (`cpuTableEntries: 2`, two slots a CPU, every
/// key probing both): the first two keys of CPU 0 take its slots, the others go to the hash,
/// and every packet is counted once. A dead pod's table id is retired with its hash entries
/// after the grace period (all counted as reaped), and a new pod's key reclaims its slot.
#[test]
fn flow_cpu_tables_spill_retire_and_reclaim() {
    let test = "flow_cpu_tables_spill_retire_and_reclaim";
    if !common::privileged_with(test, &["iptables", "bpftool"]) {
        return;
    }
    let _g = lock();
    let (mut node, a, b) = quiet_v4_node();
    let e = NodeExporter::start(
        &node,
        "{cpuTableEntries: 2, clusterCIDRs: ['198.18.0.0/15']}",
    );
    attached_and_forwarding(&node, &e, [&a, &b]);
    let (ino_a, ino_b) = (a.ns.inode(), b.ns.inode());
    let (name_a, ip_a) = (a.ns.name.clone(), a.ip4.clone());
    let (ns_a, ns_b) = (ino_a.to_string(), ino_b.to_string());
    // Twelve datagrams from A (on CPU 0) to twelve addresses of no namespace: A egress to
    // each (12 keys), and the bridge floods each to B: B ingress from A (1 key). The first
    // datagram's two keys take CPU 0's two slots; A's other eleven go to the hash.
    let off: Vec<String> = (200..212)
        .map(|h| format!("198.18.{}.{h}", node.net))
        .collect();
    udp_off_node(&a, &off);
    let egress_a = [("netns", ns_a.as_str()), ("direction", "egress")];
    let ingress_b = [("netns", ns_b.as_str()), ("direction", "ingress")];
    wait_for("24 packets counted", Duration::from_secs(5), || {
        (e.scrape().sum("netsleuth_flow_packets_total", &[]) == Some(24.0)).then_some(())
    });
    let s = e.scrape();
    let series = s.find("netsleuth_flow_packets_total", &egress_a);
    assert_eq!(series.len(), 12, "{series:?}");
    assert!(series.iter().all(|x| x.value == "1"), "{series:?}");
    let from_a = [
        ("netns", ns_b.as_str()),
        ("direction", "ingress"),
        ("peer_address", ip_a.as_str()),
    ];
    let found = s.find("netsleuth_flow_packets_total", &from_a);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].value, "12");
    assert_eq!(found[0].labels["peer_name"], name_a);
    // 10-byte payloads: 38 IP bytes each.
    assert_eq!(
        s.sum("netsleuth_flow_bytes_total", &egress_a),
        Some(12.0 * 38.0)
    );
    assert_eq!(
        s.sum("netsleuth_flow_bytes_total", &ingress_b),
        Some(12.0 * 38.0)
    );
    assert_eq!(
        s.sum("netsleuth_bpf_map_full_total", &[("probe", "flow")]),
        Some(0.0)
    );
    assert_eq!(hash_keys_of(ino_a), 11, "A's keys in the hash");
    assert_eq!(hash_keys_of(ino_b), 0, "B's key in the hash");
    let reaped = || {
        e.scrape()
            .sum(
                "netsleuth_bpf_map_entries_reaped_total",
                &[("probe", "flow")],
            )
            .unwrap_or(0.0)
    };
    assert_eq!(reaped(), 0.0);
    // A goes: after the grace period its eleven hash entries are deleted and its table id
    // (one slot) retired.
    let gone = Instant::now();
    drop(a);
    wait_for("A reaped", Duration::from_secs(75), || {
        (reaped() == 12.0).then_some(())
    });
    eprintln!("A reaped {:?} after it went", gone.elapsed());
    let s = e.scrape();
    assert!(s.find("netsleuth_flow_packets_total", &egress_a).is_empty());
    assert_eq!(hash_keys_of(ino_a), 0);
    // B's key from A lives on (A's address is no longer a peer on the node).
    assert_eq!(s.sum("netsleuth_flow_packets_total", &from_a), Some(12.0));
    // A new pod C: its one key reclaims A's retired slot (B's slot is live); B's key from C
    // finds both slots live and goes to the hash.
    let c = node.quiet_pod();
    attached_and_forwarding(&node, &e, [&b, &c]);
    udp_off_node(&c, &[format!("198.18.{}.220", node.net)]);
    // By inode: C may well get A's (it is free again), and its name label follows once the
    // inventory has seen it.
    let ns_c = c.ns.inode().to_string();
    let egress_c = [("netns", ns_c.as_str()), ("direction", "egress")];
    let t0 = Instant::now();
    while e.flow(&egress_c).1 != 1 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "C's datagram not counted: {:?}",
            e.scrape().find("netsleuth_flow_packets_total", &[])
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(e.flow(&egress_c), (38, 1));
    assert_eq!(hash_keys_of(c.ns.inode()), 0, "C's key in the hash");
    assert_eq!(hash_keys_of(ino_b), 1, "B's keys in the hash");
    let from_c = [
        ("netns", ns_b.as_str()),
        ("direction", "ingress"),
        ("peer_address", c.ip4.as_str()),
    ];
    assert_eq!(e.flow(&from_c), (38, 1));
    assert_eq!(e.flow(&from_a), (12 * 38, 12));
}

/// The default tables spread a cluster's addresses: 24 remote addresses that differ only in
/// their last octet all get slots of CPU 0's 512 (their slot index comes from the top bits of
/// the key's hash, which every byte of the address reaches), none goes to the hash.
#[test]
fn flow_cpu_table_spreads_neighbouring_addresses() {
    let test = "flow_cpu_table_spreads_neighbouring_addresses";
    if !common::privileged_with(test, &["iptables", "bpftool"]) {
        return;
    }
    let _g = lock();
    let (node, a, b) = quiet_v4_node();
    let e = NodeExporter::start(&node, "{clusterCIDRs: ['198.18.0.0/15']}");
    attached_and_forwarding(&node, &e, [&a, &b]);
    let off: Vec<String> = (200..224)
        .map(|h| format!("198.18.{}.{h}", node.net))
        .collect();
    udp_off_node(&a, &off);
    wait_for("48 packets counted", Duration::from_secs(5), || {
        (e.scrape().sum("netsleuth_flow_packets_total", &[]) == Some(48.0)).then_some(())
    });
    let ino_a = a.ns.inode().to_string();
    let series = e.scrape();
    let series = series.find(
        "netsleuth_flow_packets_total",
        &[("netns", ino_a.as_str()), ("direction", "egress")],
    );
    assert_eq!(series.len(), 24, "{series:?}");
    assert!(series.iter().all(|x| x.value == "1"), "{series:?}");
    assert_eq!(hash_keys_of(a.ns.inode()), 0, "A's keys in the hash");
    assert_eq!(hash_keys_of(b.ns.inode()), 0, "B's key in the hash");
}

/// `tc` output of a device's hook in the node namespace.
fn tc_show(node: &Node, what: &str, dev: &str, hook: Option<&str>) -> String {
    let mut args = vec![what, "show", "dev", dev];
    args.extend(hook);
    node.ns.exec("tc", &args)
}

/// The cls_bpf fallback (forced with attachMethods): exact counts; an existing clsact and a
/// foreign filter are kept; kill -9 leaves our filters (cls_bpf filters are not owned by an fd),
/// the next start removes them; a clean exit removes ours and the clsact we made.
#[test]
fn flow_cls_bpf_fallback() {
    let test = "flow_cls_bpf_fallback";
    if !privileged(test) {
        return;
    }
    let _g = lock();
    let mut node = Node::new();
    node.v6 = false;
    let a = node.pod();
    let b = node.pod();
    // Someone else's clsact and filter on B's device (a u32 filter that never matches).
    node.ns
        .exec("tc", &["qdisc", "add", "dev", &b.host_dev, "clsact"]);
    node.ns.exec(
        "tc",
        &[
            "filter",
            "add",
            "dev",
            &b.host_dev,
            "ingress",
            "pref",
            "1",
            "protocol",
            "ip",
            "u32",
            "match",
            "ip",
            "dst",
            "198.18.255.255/32",
            "classid",
            "1:1",
        ],
    );
    let foreign = tc_show(&node, "filter", &b.host_dev, Some("ingress"));
    assert!(foreign.contains("u32"), "{foreign}");
    let args = "{attachMethods: [tc], clusterCIDRs: ['198.18.0.0/15']}";
    let ours = |pid: i32| format!("netsleuth_flow:{pid}");
    let e = NodeExporter::start(&node, args);
    wait_for("attached with tc", Duration::from_secs(10), || {
        let s = e.scrape();
        (s.sum("netsleuth_flow_devices", &[]) == Some(2.0)).then_some(())
    });
    let s = e.scrape();
    s.one(
        "netsleuth_probe_attach_info",
        &[("probe", "flow"), ("method", "tc")],
    );
    for dev in [&a.host_dev, &b.host_dev] {
        for hook in ["ingress", "egress"] {
            let f = tc_show(&node, "filter", dev, Some(hook));
            assert_eq!(f.matches(&ours(e.pid())).count(), 1, "{dev} {hook}: {f}");
        }
    }
    udp(&a, &b, 13, 50);
    let ino_b = b.ns.inode().to_string();
    let ino_a = a.ns.inode().to_string();
    let b_in = [
        ("netns", ino_b.as_str()),
        ("direction", "ingress"),
        ("protocol", "UDP"),
    ];
    let a_eg = [
        ("netns", ino_a.as_str()),
        ("direction", "egress"),
        ("protocol", "UDP"),
    ];
    wait_for("counted", Duration::from_secs(5), || {
        (e.flow(&b_in).1 == 13).then_some(())
    });
    assert_eq!(e.flow(&b_in), (13 * 78, 13));
    assert_eq!(e.flow(&a_eg), (13 * 78, 13));

    // kill -9: cls_bpf filters stay in the kernel (no fd owns them)...
    let pid1 = e.pid();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid1),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    drop(e);
    assert!(tc_show(&node, "filter", &a.host_dev, Some("ingress")).contains(&ours(pid1)));
    // ...and the next start removes them before attaching its own.
    let e2 = NodeExporter::start(&node, args);
    wait_for("attached again", Duration::from_secs(10), || {
        (e2.scrape().sum("netsleuth_flow_devices", &[]) == Some(2.0)).then_some(())
    });
    for dev in [&a.host_dev, &b.host_dev] {
        for hook in ["ingress", "egress"] {
            let f = tc_show(&node, "filter", dev, Some(hook));
            assert!(!f.contains(&ours(pid1)), "stale filter left: {f}");
            assert_eq!(f.matches(&ours(e2.pid())).count(), 1, "{f}");
        }
    }
    // A clean exit removes ours and the clsact we made; the foreign ones survive.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(e2.pid()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut e2 = e2;
    let st = e2.child.wait().unwrap();
    assert!(st.success(), "{st:?}");
    for hook in ["ingress", "egress"] {
        let f = tc_show(&node, "filter", &b.host_dev, Some(hook));
        assert!(!f.contains("netsleuth_flow"), "{f}");
        let f = tc_show(&node, "filter", &a.host_dev, Some(hook));
        assert!(!f.contains("netsleuth_flow"), "{f}");
    }
    assert_eq!(
        tc_show(&node, "filter", &b.host_dev, Some("ingress")),
        foreign
    );
    assert!(tc_show(&node, "qdisc", &b.host_dev, None).contains("clsact"));
    assert!(!tc_show(&node, "qdisc", &a.host_dev, None).contains("clsact"));
}

/// Two pod-like namespaces A and B and a real podman container C, all behind veths on the
/// node's bridge: N UDP datagrams of a known size from A to B, then M TCP bytes from B to C.
/// Exact packets and bytes for A egress / B ingress (peer: the other namespace, by name) and
/// for B egress / C ingress (peer_kind="container", peer_name = the container's name).
#[test]
fn flow_pods_and_a_podman_container() {
    let test = "flow_pods_and_a_podman_container";
    if !common::privileged_with(test, &["podman"]) {
        return;
    }
    let _g = lock();
    let mut node = Node::new();
    node.v6 = false;
    let a = node.pod();
    let b = node.pod();
    // C: a podman container without a network of its own; its eth0 is a veth on our bridge.
    let mut objs = common::PodmanObjects::default();
    let c = unique("nslfc");
    objs.run(&c, &["--network", "none"]);
    let pid: i32 = common::podman(&["inspect", "-f", "{{.State.Pid}}", &c])
        .parse()
        .unwrap();
    let c_ns = format!("/proc/{pid}/ns/net");
    let ino_c = std::fs::metadata(&c_ns).map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.ino()
    });
    let ino_c = ino_c.unwrap().to_string();
    let c_dev = unique("fh");
    run(
        "ip",
        &[
            "link",
            "add",
            &c_dev,
            "netns",
            &node.ns.name,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &pid.to_string(),
        ],
    );
    node.ns
        .exec("ip", &["link", "set", &c_dev, "master", "br0", "up"]);
    let ip_c = format!("198.18.{}.200", node.net);
    in_netns(c_ns.clone(), {
        let cidr = format!("{ip_c}/24");
        move || {
            run("ip", &["addr", "add", &cidr, "dev", "eth0"]);
            run("ip", &["link", "set", "eth0", "up"]);
        }
    });
    let e = NodeExporter::start(&node, "{clusterCIDRs: ['198.18.0.0/15']}");
    wait_for(
        "flow attached to A's, B's and C's veths",
        Duration::from_secs(10),
        || (e.scrape().sum("netsleuth_flow_devices", &[]) == Some(3.0)).then_some(()),
    );

    // UDP A -> B.
    const N: usize = 23;
    const SIZE: usize = 555;
    udp(&a, &b, N, SIZE);
    let (ino_a, ino_b) = (a.ns.inode().to_string(), b.ns.inode().to_string());
    let want_udp = ((SIZE + 28) * N) as u64;
    let a_eg = [
        ("netns", ino_a.as_str()),
        ("direction", "egress"),
        ("protocol", "UDP"),
        ("peer_kind", "named"),
        ("peer_name", b.ns.name.as_str()),
        ("peer_address", b.ip4.as_str()),
    ];
    let b_in = [
        ("netns", ino_b.as_str()),
        ("direction", "ingress"),
        ("protocol", "UDP"),
        ("peer_kind", "named"),
        ("peer_name", a.ns.name.as_str()),
        ("peer_address", a.ip4.as_str()),
    ];
    wait_for("UDP counted", Duration::from_secs(5), || {
        (e.flow(&b_in).1 >= N as u64).then_some(())
    });
    assert_eq!(e.flow(&a_eg), (want_udp, N as u64), "A egress {a_eg:?}");
    assert_eq!(e.flow(&b_in), (want_udp, N as u64), "B ingress {b_in:?}");

    // TCP B -> C: C's server listens in the container's own namespace.
    const M: usize = 1_234_567;
    tcp_leg(b.ns.path(), c_ns.clone(), format!("{ip_c}:0"), M, 9);
    let b_eg = [
        ("netns", ino_b.as_str()),
        ("direction", "egress"),
        ("protocol", "TCP"),
        ("peer_kind", "container"),
        ("peer_k8s_pod", ""),
        ("peer_name", c.as_str()),
        ("peer_address", ip_c.as_str()),
    ];
    let c_in = [
        ("netns", ino_c.as_str()),
        ("kind", "container"),
        ("name", c.as_str()),
        ("direction", "ingress"),
        ("protocol", "TCP"),
        ("peer_kind", "named"),
        ("peer_name", b.ns.name.as_str()),
        ("peer_address", b.ip4.as_str()),
    ];
    // B's namespace has no other TCP: settled when its OutSegs stop moving and are counted.
    let segs = tcp_settled(&b.ns, || e.flow(&b_eg).1);
    // IPv4 (20) + TCP with timestamps (32) per segment, the SYN's options 8 bytes more.
    let want = M as u64 + segs.0 * 52 + 8;
    tcp_bytes_match(e.flow(&b_eg), want, segs, "B egress TCP");
    tcp_bytes_match(e.flow(&c_in), want, segs, "C ingress TCP");
    eprintln!(
        "{test}: UDP {N} x {SIZE} B = {want_udp} B; TCP {M} B in {} segments = {want} B",
        segs.0
    );
    drop(e);
    drop(objs);
    drop(node);
}
