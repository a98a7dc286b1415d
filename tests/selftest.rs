//! `netsleuth selftest --json` on the host kernel, as root: every check passes or is reported
//! unsupported with a reason, the exit code says so, and the JSON has one check per line with
//! the fields `tests/kernel-matrix/run` compares; and each outcome is the one that follows from
//! what the loader's own probes say this kernel offers (not merely "not fail").

mod common;

use std::process::Command;

#[test]
fn selftest_json_on_this_kernel() {
    if !common::privileged("selftest_json_on_this_kernel") {
        return;
    }
    let out = Command::new(common::BIN)
        .args(["selftest", "--json"])
        .output()
        .expect("run netsleuth selftest");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let checks = doc["checks"].as_array().expect("checks array");
    let failed: Vec<&serde_json::Value> = checks.iter().filter(|c| c["status"] == "fail").collect();
    assert!(failed.is_empty(), "failed checks: {failed:#?}");
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(doc["ok"], true);
    for want in [
        "metrics.tcp_rst_closed_port",
        "metrics.udp_noports",
        "metrics.drop",
        "metrics.qdisc_tbf",
        "metrics.netns_isolation",
        "bpf.load",
        "bpf.plan.tcp_reset",
        "bpf.plan.kfree_skb",
    ] {
        assert!(
            checks.iter().any(|c| c["check"] == want),
            "no check {want}: {text}"
        );
    }
    // One check per line: the matrix runner reads the outcomes with sed.
    let lines = text
        .lines()
        .filter(|l| l.starts_with("{\"check\":\""))
        .count();
    assert_eq!(lines, checks.len(), "{text}");
    for c in checks {
        if c["status"] == "unsupported" {
            assert!(!c["detail"].as_str().unwrap_or("").is_empty(), "{c}");
        }
    }
}

#[test]
fn selftest_text_is_the_default() {
    if !common::privileged("selftest_text_is_the_default") {
        return;
    }
    let out = Command::new(common::BIN)
        .arg("selftest")
        .output()
        .expect("run netsleuth selftest");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("netsleuth selftest on kernel "), "{text}");
    assert!(text.contains(" checks: "), "{text}");
    assert_eq!(out.status.code(), Some(0), "{text}");
}

/// Every outcome follows from what this kernel offers, as the loader's own probes see it
/// (`common::offers()`: the getppid fentry and kprobe programs): what every supported kernel
/// has (namespaces, tracepoints, the probes' tracepoint plans) passes; the fentry and kprobe
/// checks pass where the family is offered and are `unsupported` only where it is refused; a
/// probe check is `unsupported` only with the kernel's lack named (anything else would be a
/// loader failure, which is `fail`).
#[test]
fn selftest_outcomes_follow_what_the_kernel_offers() {
    if !common::privileged("selftest_outcomes_follow_what_the_kernel_offers") {
        return;
    }
    let o = common::offers();
    let out = Command::new(common::BIN)
        .args(["selftest", "--json"])
        .output()
        .expect("run netsleuth selftest");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let checks = doc["checks"].as_array().expect("checks array");
    let get = |name: &str| -> (&str, &str, &str) {
        let c = checks
            .iter()
            .find(|c| c["check"] == name)
            .unwrap_or_else(|| panic!("no check {name}: {text}"));
        (
            c["status"].as_str().unwrap(),
            c["outcome"].as_str().unwrap(),
            c["detail"].as_str().unwrap(),
        )
    };
    let pass = |name: &str| {
        let (st, outcome, detail) = get(name);
        assert_eq!(st, "pass", "{name}: {outcome}: {detail}");
    };
    // What every kernel we support has.
    for c in checks {
        let name = c["check"].as_str().unwrap();
        if name.starts_with("metrics.") && name != "metrics.ipvs" && name != "metrics.rdma" {
            pass(name);
        }
    }
    // IPVS only where the ip_vs module is loaded (the kernel matrix loads it; this kernel may
    // not have it at all).
    if std::path::Path::new("/proc/net/ip_vs_stats").exists() {
        pass("metrics.ipvs");
    } else {
        let (st, _, detail) = get("metrics.ipvs");
        assert_eq!(st, "unsupported", "{detail}");
        assert!(detail.contains("ip_vs module is not loaded"), "{detail}");
    }
    // Soft-RoCE likewise (the kernel matrix loads rdma_rxe; this kernel has no RDMA).
    if std::path::Path::new("/sys/module/rdma_rxe").exists() {
        pass("metrics.rdma");
    } else {
        let (st, _, detail) = get("metrics.rdma");
        assert_eq!(st, "unsupported", "{detail}");
        assert!(detail.contains("rdma_rxe module"), "{detail}");
    }
    let iptables = common::have("iptables");
    assert_eq!(
        get("metrics.drop").1,
        if iptables {
            "pass:iptables"
        } else {
            "pass:blackhole"
        }
    );
    for name in [
        "bpf.load",
        "bpf.tcp_send_reset",
        "bpf.kfree_skb_raw",
        "bpf.net_dev_queue_a",
        "bpf.net_dev_queue_b",
        "bpf.plan.tcp_reset",
        "bpf.plan.kfree_skb",
        "bpf.plan.net_dev_queue",
    ] {
        pass(name);
    }
    // tp_btf kfree_skb: attached, or covered by the raw_tp fallback where the kernel lacks it.
    let (st, outcome, detail) = get("bpf.kfree_skb_btf");
    assert!(
        st == "pass" || outcome == "unsupported:fallback",
        "{outcome}: {detail}"
    );
    // The function probes: as offered.
    for (prog, offered, refused) in [
        ("fentry_getppid", o.fentry(), "unsupported:load"),
        ("fexit_getppid", o.fentry(), "unsupported:load"),
        ("kprobe_getppid", o.kprobes(), "unsupported:attach"),
        ("kretprobe_getppid", o.kprobes(), "unsupported:attach"),
    ] {
        let name = format!("bpf.{prog}");
        let (st, outcome, detail) = get(&name);
        if offered {
            assert_eq!(st, "pass", "{name}: {outcome}: {detail}");
        } else {
            assert_eq!(outcome, refused, "{name}: {detail}");
        }
    }
    for plan in ["bpf.plan.getppid_entry", "bpf.plan.getppid_exit"] {
        let (st, outcome, detail) = get(plan);
        let want = if o.fentry() || o.kprobes() {
            "pass"
        } else {
            "unsupported"
        };
        assert_eq!(st, want, "{plan}: {outcome}: {detail}");
    }
    // The probes' plans.
    let tracepoint_probes = [
        "packetloss",
        "tcpreset",
        "tcpretrans",
        "netiftxlat",
        "softirq",
        "socketlatency",
        "kernellatency",
    ];
    for p in tracepoint_probes {
        pass(&format!("probe.{p}"));
        let (st, outcome, detail) = get(&format!("probe.{p}.kprobe"));
        if o.kprobes() {
            assert_eq!(st, "pass", "probe.{p}.kprobe: {outcome}: {detail}");
        } else {
            assert_eq!(st, "unsupported", "probe.{p}.kprobe: {detail}");
        }
        let (st, outcome, detail) = get(&format!("probe.{p}.fentry"));
        if !o.fentry() {
            assert_eq!(st, "unsupported", "probe.{p}.fentry: {detail}");
        } else {
            // Offered fentry: only a target this kernel lacks may stop it (see ebpf_plans).
            assert!(
                st == "pass" || p == "packetloss",
                "probe.{p}.fentry: {outcome}: {detail}"
            );
        }
    }
    for name in [
        "probe.packetloss.drop",
        "probe.tcpreset.count",
        "probe.netiftxlat.count",
        "probe.socketlatency.read",
    ] {
        pass(name);
    }
    let (st, outcome, detail) = get("probe.kernellatency.tx");
    let want = if o.fentry() || o.kprobes() {
        "pass"
    } else {
        "unsupported"
    };
    assert_eq!(st, want, "probe.kernellatency.tx: {outcome}: {detail}");
    // An unsupported probe check names what the kernel lacks (else it would be `fail`).
    for c in checks {
        let name = c["check"].as_str().unwrap();
        if name.starts_with("probe.") && c["status"] == "unsupported" {
            let detail = c["detail"].as_str().unwrap();
            assert!(detail.contains("the kernel lacks it"), "{name}: {detail}");
        }
    }
}
