//! `netsleuth selftest --json` on the host kernel, as root: every check passes or is reported
//! unsupported with a reason, the exit code says so, and the JSON has one check per line with
//! the fields `tests/kernel-matrix/run` compares.

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
