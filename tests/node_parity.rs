//! node_exporter parity, against the real kernel with the real binary: the rtnetlink-only
//! per-device counters equal what `ip -s -s -j link` reports, and the `mptcp` probe's
//! MPTcpExt figures equal the namespace's `/proc/net/netstat` after real MPTCP connections.

mod common;

use std::time::Duration;

use common::*;
use netsleuth::collectors::snmp::metric_name;
use netsleuth::model::{snake_case, MetricKind};

/// The netdev columns that come from `IFLA_STATS64`, with `ip -s -s -j`'s direction and key
/// (iproute2 leaves out `nohandler` and `otherhost` when they are 0).
const NETLINK: [(&str, &str, &str); 11] = [
    ("receive_length_errors", "rx", "length_errors"),
    ("receive_over_errors", "rx", "over_errors"),
    ("receive_crc_errors", "rx", "crc_errors"),
    ("receive_frame_errors", "rx", "frame_errors"),
    ("receive_missed_errors", "rx", "missed_errors"),
    ("transmit_aborted_errors", "tx", "aborted_errors"),
    ("transmit_carrier_errors", "tx", "carrier_errors"),
    ("transmit_heartbeat_errors", "tx", "heartbeat_errors"),
    ("transmit_window_errors", "tx", "window_errors"),
    ("receive_nohandler", "rx", "nohandler"),
    ("receive_otherhost_dropped", "rx", "otherhost"),
];

#[test]
fn netdev_netlink_counters_equal_ip() {
    if !privileged_with("netdev_netlink_counters_equal_ip", &["ip"]) {
        return;
    }
    let pair = Pair::new();
    // 7 datagrams to a neighbour whose MAC is not b's: b's veth receives them and IPv4 drops
    // them as addressed to another host (rx_otherhost_dropped, 5.19+).
    let bogus = format!("{}.77", pair.ip_b.rsplit_once('.').map(|(n, _)| n).unwrap());
    pair.a.exec(
        "ip",
        &[
            "neigh",
            "add",
            &bogus,
            "lladdr",
            "02:00:00:00:00:77",
            "dev",
            &pair.dev_a,
        ],
    );
    let to = format!("{bogus}:9");
    pair.a.within(move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..7 {
            s.send_to(b"otherhost", &to).unwrap();
        }
    });
    let ip_b = || -> serde_json::Value {
        let out = pair
            .b
            .exec("ip", &["-s", "-s", "-j", "link", "show", &pair.dev_b]);
        serde_json::from_str::<serde_json::Value>(&out).unwrap()[0]["stats64"].clone()
    };
    let kernel = nix::sys::utsname::uname().unwrap();
    let release = kernel.release().to_string_lossy().to_string();
    let (maj, min) = {
        let mut it = release
            .split(['.', '-'])
            .map(|x| x.parse::<u32>().unwrap_or(0));
        (it.next().unwrap_or(0), it.next().unwrap_or(0))
    };
    let has_otherhost = (maj, min) >= (5, 19);
    if has_otherhost {
        wait_for("b counted the datagrams", Duration::from_secs(5), || {
            (ip_b()["rx"]["otherhost"].as_u64() == Some(7)).then_some(())
        });
    }
    let cfg = write_config(
        "metrics:\n  probes:\n  - {name: netdev, args: {fields: 'receive_.*|transmit_.*', loopback: all}}\n",
    );
    let e = Exporter::start(&[&format!("--config.file={}", cfg.display())]);
    let s = e.scrape();
    let mut checked = 0;
    for (ns, dev) in [(&pair.a, &pair.dev_a), (&pair.b, &pair.dev_b)] {
        let inode = ns.inode().to_string();
        let out = ns.exec("ip", &["-s", "-s", "-j", "link", "show"]);
        let links: serde_json::Value = serde_json::from_str(&out).unwrap();
        let links = links.as_array().unwrap();
        assert_eq!(links.len(), 2, "lo and {dev} in {}", ns.name);
        for l in links {
            let name = l["ifname"].as_str().unwrap();
            for (col, dir, key) in NETLINK {
                let m = format!("netsleuth_netdev_{col}_total");
                let want = l["stats64"][dir][key].as_u64().unwrap_or(0);
                if col == "receive_otherhost_dropped" && !has_otherhost {
                    assert!(s.find(&m, &[("netns", &inode)]).is_empty());
                    continue;
                }
                let got = s.one(&m, &[("netns", &inode), ("device", name)]);
                assert_eq!(got.value, want.to_string(), "{m} {name} in {}", ns.name);
                checked += 1;
            }
        }
        // The procfs columns are there as before.
        let procfs = proc_net_dev(&ns.cat("/proc/self/net/dev"));
        let got = s.one(
            "netsleuth_netdev_receive_packets_total",
            &[("netns", &inode), ("device", dev)],
        );
        assert_eq!(got.value, procfs[dev.as_str()][1].to_string());
    }
    assert!(checked >= 40, "only {checked} compared");
    if has_otherhost {
        let inode = pair.b.inode().to_string();
        let got = s.one(
            "netsleuth_netdev_receive_otherhost_dropped_total",
            &[("netns", &inode), ("device", &pair.dev_b)],
        );
        assert_eq!(got.value, "7");
    }
}

#[test]
fn mptcp_equals_procfs_after_mptcp_connections() {
    if !privileged_with(
        "mptcp_equals_procfs_after_mptcp_connections",
        &["ip", "python3"],
    ) {
        return;
    }
    if !std::path::Path::new("/proc/sys/net/mptcp/enabled").exists() {
        skip(
            "mptcp_equals_procfs_after_mptcp_connections",
            "kernel without CONFIG_MPTCP",
        );
        return;
    }
    let ns = Netns::new("nsmp");
    ns.sysctl("net.mptcp.enabled", "1");
    // Four MPTCP connections over the namespace's loopback (IPPROTO_MPTCP = 262), each
    // accepted, one request each way, closed.
    ns.exec(
        "python3",
        &[
            "-c",
            "import socket\n\
             l = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)\n\
             l.bind(('127.0.0.1', 5000)); l.listen(8)\n\
             for i in range(4):\n\
             \x20   c = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)\n\
             \x20   c.connect(('127.0.0.1', 5000)); s, _ = l.accept()\n\
             \x20   c.sendall(b'q' * 100); s.recv(100); s.sendall(b'r'); c.recv(1)\n\
             \x20   c.close(); s.close()\n",
        ],
    );
    let cfg = write_config("metrics:\n  probes:\n  - {name: mptcp}\n");
    let e = Exporter::start(&[&format!("--config.file={}", cfg.display())]);
    let s = e.scrape();
    let want = proc_pairs(&ns.cat("/proc/self/net/netstat"));
    let inode = ns.inode().to_string();
    let mut checked = 0;
    for (key, val) in want.iter().filter(|(k, _)| k.starts_with("MPTcpExt_")) {
        let field = &key["MPTcpExt_".len()..];
        let kind = if field == "MPCurrEstab" {
            MetricKind::Gauge
        } else {
            MetricKind::Counter
        };
        // The exporter's naming rule (a lone unit abbreviation is glued to its neighbour:
        // `HMacFailure` → `hmac_failure`).
        let name = metric_name("netsleuth_mptcpext", &snake_case(field), kind).unwrap();
        let got = s.one(&name, &[("netns", &inode)]);
        assert_eq!(&got.value, val, "{name} ({key})");
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} MPTcpExt fields");
    // The connections are really counted: four passive and four active MP_CAPABLE handshakes.
    assert_eq!(want["MPTcpExt_MPCapableSYNRX"], "4");
    assert_eq!(want["MPTcpExt_MPCapableSYNTX"], "4");
    // The probe is off by default; no TcpExt from it.
    assert!(s
        .find("netsleuth_tcpext_listen_drops_total", &[])
        .is_empty());
}

/// On a node without IPVS or RDMA (this one: no ip_vs module, no /sys/class/infiniband) both
/// probes load, export nothing and fail no namespace: "not available" is not an error.
#[test]
fn ipvs_and_rdma_quiet_where_absent() {
    if !privileged("ipvs_and_rdma_quiet_where_absent") {
        return;
    }
    if std::path::Path::new("/proc/net/ip_vs_stats").exists()
        || std::path::Path::new("/sys/class/infiniband").exists()
    {
        skip(
            "ipvs_and_rdma_quiet_where_absent",
            "this node has IPVS or RDMA state (the test needs neither)",
        );
        return;
    }
    let _ns = Netns::new("nsq");
    let cfg = write_config("metrics:\n  probes:\n  - {name: ipvs}\n  - {name: rdma}\n");
    let e = Exporter::start(&[&format!("--config.file={}", cfg.display())]);
    let text = e.scrape_text();
    let s = Scrape::parse(&text);
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            !l.starts_with("netsleuth_ipvs_") && !l.starts_with("netsleuth_rdma_"),
            "{l}"
        );
    }
    for c in ["ipvs", "rdma"] {
        let failed = s.one(
            "netsleuth_scrape_collector_failed_namespaces",
            &[("collector", c)],
        );
        assert_eq!(failed.value, "0", "{c}");
    }
}
