//! The binary's command line, configuration handling, HTTP endpoint and signals.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn run_bin(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn version_and_help() {
    let (rc, out, _) = run_bin(&["--version"]);
    assert_eq!(rc, 0);
    assert_eq!(out, format!("netsleuth {}\n", env!("CARGO_PKG_VERSION")));
    let (rc, out, _) = run_bin(&["--help"]);
    assert_eq!(rc, 0);
    for flag in [
        "--config.file",
        "--web.listen-address",
        "--log.level",
        "probes",
        "serve",
    ] {
        assert!(out.contains(flag), "help lacks {flag}");
    }
}

#[test]
fn bad_flags_exit_2_and_name_the_problem() {
    for (args, needle) in [
        (&["--no-such-flag"][..], "--no-such-flag"),
        (&["--log.level=chatty"], "--log.level"),
        (&["--web.listen-address=:99999"], "--web.listen-address"),
        (&["jump"], "jump"),
        (
            &["--config.file=/nonexistent/netsleuth.yaml"],
            "/nonexistent/netsleuth.yaml",
        ),
    ] {
        let (rc, _, err) = run_bin(args);
        assert_eq!(rc, 2, "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: stderr does not name {needle}: {err}"
        );
    }
}

#[test]
fn bad_config_exit_2_and_name_the_key() {
    for (yaml, needle) in [
        ("metrics:\n  probes: [netdev]\n  frobs: 1\n", "frobs"),
        ("metrix: {}\n", "metrix"),
        ("metrics:\n  probes: [nosuchprobe]\n", "nosuchprobe"),
        (
            "metrics:\n  probes:\n    - name: tcpext\n      args: {fields: '('}\n",
            "fields",
        ),
        (
            "metrics:\n  probes:\n    - name: netdev\n      args: {colour: red}\n",
            "colour",
        ),
        (
            "metrics:\n  probes:\n    - {name: netdev, argz: {}}\n",
            "argz",
        ),
        (
            "metrics:\n  probes: [netdev, {name: netdev, args: {devices: eth0}}]\n",
            "twice",
        ),
        ("collection:\n  timeout: 5 parsecs\n", "collection.timeout"),
        ("collection:\n  workers: 0\n", "collection.workers"),
        (
            "event:\n  sinks:\n    - name: carrier-pigeon\n",
            "carrier-pigeon",
        ),
        ("metrics: [\n", "config file"),
        ("event:\n  sinks:\n    - name: file\n", "args.path"),
        ("bpf:\n  btfPath: /nonexistent/vmlinux.btf\n", "bpf.btfPath"),
        (
            "event:\n  sinks:\n    - {name: file, args: {path: /tmp/x, colour: red}}\n",
            "colour",
        ),
    ] {
        let p = write_config(yaml);
        let (rc, _, err) = run_bin(&[&format!("--config.file={}", p.display()), "probes"]);
        assert_eq!(rc, 2, "{yaml}: {err}");
        assert!(
            err.contains(needle),
            "{yaml}: stderr does not name {needle}: {err}"
        );
    }
}

/// A KubeSkoop exporter config (shape of its Helm chart) loads unchanged.
#[test]
fn kubeskoop_config_loads() {
    let yaml = r#"
debugMode: false
port: 9102
enableController: true
controllerAddr: "dns:controller:10263"
metrics:
  additionalLabels: []
  probes:
  - name: conntrack
  - name: qdisc
  - name: netdev
  - name: io
  - name: sock
  - name: tcpsummary
  - name: tcp
  - name: tcpext
  - name: udp
  - name: packetloss
  - name: flow
    args:
      enablePortInLabel: false
  - name: tcpretrans
event:
  probes:
  - name: packetloss
    args:
      enableStack: false
  - name: tcpreset
  sinks:
  - name: stderr
  - name: file
    args:
      path: /tmp/events.json
"#;
    let p = write_config(yaml);
    let (rc, out, err) = run_bin(&[&format!("--config.file={}", p.display()), "probes"]);
    assert_eq!(rc, 0, "{err}");
    let line = |probe: &str| {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(probe))
            .unwrap_or_else(|| panic!("no {probe} line in:\n{out}"))
            .to_string()
    };
    assert!(line("netdev").split_whitespace().nth(1) == Some("yes"));
    assert!(line("fd").split_whitespace().nth(1) == Some("no"));
    // eBPF probes: enabled as metrics and events; the attach method (root) or why not.
    let pl = line("packetloss");
    assert_eq!(pl.split_whitespace().nth(1), Some("yes"), "{pl}");
    if nix::unistd::geteuid().is_root() {
        assert!(pl.contains("[attach: tp_btf]"), "{pl}");
    }
    assert_eq!(line("tcpreset").split_whitespace().nth(1), Some("events"));
    assert_eq!(
        line("tcpretrans").split_whitespace().nth(1),
        Some("metrics")
    );
    assert_eq!(line("flow").split_whitespace().nth(1), Some("metrics"));
}

#[test]
fn probes_lists_every_probe_with_availability() {
    let (rc, out, _) = run_bin(&["probes"]);
    assert_eq!(rc, 0);
    for probe in [
        "netdev",
        "ip",
        "icmp",
        "tcp",
        "udp",
        "tcpext",
        "ipext",
        "sock",
        "softnet",
        "tcpsummary",
        "io",
        "fd",
        "conntrack",
        "qdisc",
        "mptcp",
        "ipvs",
        "rdma",
        "netiftxlat",
        "softirq",
        "socketlatency",
        "kernellatency",
        "virtcmdlatency",
        "biolatency",
        "flow",
    ] {
        let l = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(probe))
            .unwrap_or_else(|| panic!("{probe} missing:\n{out}"));
        let avail = l.split_whitespace().nth(2).unwrap();
        assert!(avail == "yes" || avail == "no", "{l}");
        if avail == "no" {
            assert!(
                l.split_whitespace().count() > 3,
                "{probe} unavailable without a reason: {l}"
            );
        }
    }
}

#[test]
fn endpoints_content_type_and_gzip() {
    let e = Exporter::start(&[]);
    let (code, hdrs, body) = e.get("/metrics", &[]);
    assert_eq!(code, 200);
    let ct = hdrs.iter().find(|(k, _)| k == "content-type").unwrap();
    assert_eq!(ct.1, "text/plain; version=0.0.4; charset=utf-8");
    // Uncompressed, the page's length is known up front: sent with a Content-Length.
    let cl = hdrs.iter().find(|(k, _)| k == "content-length").unwrap();
    assert_eq!(cl.1, body.len().to_string());
    let plain = String::from_utf8(body).unwrap();
    assert!(plain.contains("netsleuth_build_info{"));

    let (code, hdrs, body) = e.get("/metrics", &[("Accept-Encoding", "gzip")]);
    assert_eq!(code, 200);
    assert!(hdrs
        .iter()
        .any(|(k, v)| k == "content-encoding" && v == "gzip"));
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut text).unwrap();
    assert!(text.contains("# TYPE netsleuth_build_info gauge"));

    let (code, _, body) = e.get("/", &[]);
    assert_eq!(code, 200);
    assert!(String::from_utf8(body)
        .unwrap()
        .contains("href=\"metrics\""));
    let (code, _, body) = e.get("/-/healthy", &[]);
    assert_eq!((code, body.as_slice()), (200, &b"OK\n"[..]));
    assert_eq!(e.get("/nope", &[]).0, 404);
}

#[test]
fn sigterm_exits_zero_within_a_second() {
    let mut e = Exporter::start(&[]);
    let _ = e.scrape_text();
    let t = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(e.pid()),
        nix::sys::signal::SIGTERM,
    )
    .unwrap();
    let status = loop {
        if let Some(s) = e.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "still running 1 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(0));
}

#[test]
fn sighup_reloads_config_and_keeps_running_config_on_error() {
    let p = write_config("metrics:\n  probes: [netdev]\n");
    let e = Exporter::start(&[&format!("--config.file={}", p.display())]);
    let s = e.scrape();
    assert!(!s
        .find("netsleuth_netdev_receive_bytes_total", &[])
        .is_empty());
    assert!(s.find("netsleuth_sock_tcp_inuse", &[]).is_empty());

    std::fs::write(&p, "metrics:\n  probes: [sock]\n").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(e.pid()),
        nix::sys::signal::SIGHUP,
    )
    .unwrap();
    let s = wait_for("reload", Duration::from_secs(5), || {
        let s = e.scrape();
        (!s.find("netsleuth_sock_tcp_inuse", &[]).is_empty()).then_some(s)
    });
    assert!(s
        .find("netsleuth_netdev_receive_bytes_total", &[])
        .is_empty());
    assert_eq!(
        s.one("netsleuth_config_last_reload_successful", &[]).value,
        "1"
    );

    std::fs::write(&p, "metrics:\n  probes: [nosuch]\n").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(e.pid()),
        nix::sys::signal::SIGHUP,
    )
    .unwrap();
    let s = wait_for("failed reload", Duration::from_secs(5), || {
        let s = e.scrape();
        (s.one("netsleuth_config_last_reload_successful", &[]).value == "0").then_some(s)
    });
    assert!(
        !s.find("netsleuth_sock_tcp_inuse", &[]).is_empty(),
        "running config kept"
    );
}

#[test]
fn self_metrics_present() {
    let e = Exporter::start(&[]);
    let s = e.scrape();
    assert_eq!(
        s.one(
            "netsleuth_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        )
        .value,
        "1"
    );
    for kind in ["host", "named", "process"] {
        s.one("netsleuth_netns", &[("kind", kind)]);
    }
    assert_eq!(s.one("netsleuth_netns", &[("kind", "host")]).value, "1");
    for c in ["netdev", "tcp", "softnet"] {
        s.one("netsleuth_scrape_collector_success", &[("collector", c)]);
        s.one(
            "netsleuth_scrape_collector_duration_seconds",
            &[("collector", c)],
        );
    }
    for m in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        s.one(m, &[]);
    }
    assert_eq!(s.types["process_cpu_seconds_total"], "counter");
}

/// Concurrent scrapes all succeed and are answered by shared collections.
#[test]
fn concurrent_scrapes() {
    let e = std::sync::Arc::new(Exporter::start(&[]));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let e = e.clone();
            std::thread::spawn(move || e.scrape_text())
        })
        .collect();
    let pages: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for p in &pages {
        assert!(p.contains("netsleuth_build_info"));
    }
}

/// `netsleuth probes | head -1` ends quietly when the pipe closes (no panic message).
#[test]
fn probes_into_a_closed_pipe_is_quiet() {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{BIN} probes | head -1"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("PROBE"));
}
