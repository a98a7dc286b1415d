//! Kept handles, with the real binary: after its first scrape the exporter enters no namespace
//! (`netsleuth_netns_enters_total` stays put) and still reports each namespace's figures as
//! they are now, for a named namespace without any process and for one with a process; when a
//! namespace is deleted, what was kept for it is closed, so the kernel frees it (its veth goes).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn gauge(s: &Scrape, name: &str, want: &[(&str, &str)]) -> f64 {
    s.sum(name, want)
        .unwrap_or_else(|| panic!("{name} {want:?} not on the page"))
}

/// `Ip: InReceives` of the namespace, as the kernel counts it.
fn in_receives(ns: &Netns) -> f64 {
    let snmp = ns.cat("/proc/net/snmp");
    let mut ip = snmp.lines().filter(|l| l.starts_with("Ip:"));
    let (head, vals) = (ip.next().unwrap(), ip.next().unwrap());
    let i = head
        .split_whitespace()
        .position(|f| f == "InReceives")
        .unwrap();
    vals.split_whitespace().nth(i).unwrap().parse().unwrap()
}

/// `n` UDP datagrams from the namespace to its own address (198.18.0.0/15).
fn send_to_self(ns: &Netns, addr: &str, n: usize) {
    let script = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('{addr}',9999))\n\
         for _ in range({n}): s.sendto(b'x',('{addr}',9999))\n"
    );
    ns.exec("python3", &["-c", &script]);
}

#[test]
fn scrapes_enter_no_namespace_and_deleted_namespaces_are_freed() {
    if !privileged_with(
        "scrapes_enter_no_namespace_and_deleted_namespaces_are_freed",
        &["ip", "python3"],
    ) {
        return;
    }
    // A: named, no process, with a veth to the host. B: named, with a process in it.
    let a = Netns::new("nkA");
    let b = Netns::new("nkB");
    let veth = unique("nkv");
    run(
        "ip",
        &[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &a.name,
        ],
    );
    a.exec("ip", &["addr", "add", "198.18.77.1/32", "dev", "eth0"]);
    a.exec("ip", &["link", "set", "eth0", "up"]);
    b.exec("ip", &["addr", "add", "198.18.77.2/32", "dev", "lo"]);
    let _sleeper =
        Holder::spawn(Command::new("ip").args(["netns", "exec", &b.name, "sleep", "600"]));
    std::thread::sleep(Duration::from_millis(300));

    let ex = Exporter::start(&[]);
    let s1 = ex.scrape();
    let enters1 = gauge(&s1, "netsleuth_netns_enters_total", &[]);
    assert!(enters1 >= 1.0, "the first scrape enters to open sockets");
    let s2 = ex.scrape();
    let enters2 = gauge(&s2, "netsleuth_netns_enters_total", &[]);
    let netlink2 = gauge(&s2, "netsleuth_netns_kept_fds", &[("kind", "netlink")]);
    let procfs2 = gauge(&s2, "netsleuth_netns_kept_fds", &[("kind", "procfs")]);
    assert!(procfs2 > 0.0 && netlink2 > 0.0);

    // Traffic between scrapes: the figures read through kept files are the kernel's now.
    send_to_self(&a, "198.18.77.1", 7);
    send_to_self(&b, "198.18.77.2", 5);
    let s3 = ex.scrape();
    assert_eq!(
        gauge(&s3, "netsleuth_netns_enters_total", &[]),
        enters2,
        "a scrape with everything kept enters no namespace"
    );
    for (ns, sent) in [(&a, 7.0), (&b, 5.0)] {
        let ours = gauge(&s3, "netsleuth_ip_in_receives_total", &[("name", &ns.name)]);
        let before = gauge(&s2, "netsleuth_ip_in_receives_total", &[("name", &ns.name)]);
        assert_eq!(ours, in_receives(ns), "{}: InReceives", ns.name);
        assert_eq!(
            ours - before,
            sent,
            "{}: datagrams since the last scrape",
            ns.name
        );
    }

    // Delete A: the inventory notices (its mount is gone), closes what it kept, and the kernel
    // dismantles the namespace, taking the veth's host side with it.
    let a_name = a.name.clone();
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = ex.scrape();
        let gone = s
            .find("netsleuth_ip_in_receives_total", &[("name", &a_name)])
            .is_empty();
        let veth_gone = !Command::new("ip")
            .args(["link", "show", &veth])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success();
        if gone && veth_gone {
            assert_eq!(
                gauge(&s, "netsleuth_netns_kept_fds", &[("kind", "netlink")]),
                netlink2 - 2.0,
                "A's rtnetlink and sock_diag sockets are closed"
            );
            assert!(gauge(&s, "netsleuth_netns_kept_fds", &[("kind", "procfs")]) < procfs2);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "deleted namespace {a_name} still held: series gone {gone}, veth {veth} gone {veth_gone}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
