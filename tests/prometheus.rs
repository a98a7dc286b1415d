//! The exposition against Prometheus's own tools: `promtool check metrics` lints a full scrape,
//! and a real Prometheus server scrapes the exporter on loopback.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// promtool lints a scrape with every probe and every kernel field: exit 0, no complaints.
#[test]
fn promtool_check_metrics_passes() {
    if !privileged_with("promtool_check_metrics_passes", &["promtool"]) {
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
            "tbf",
            "rate",
            "1mbit",
            "burst",
            "32kbit",
            "latency",
            "400ms",
        ],
    );
    // Every probe, the eBPF ones too, and a refused connect so their series exist.
    let cfg = format!("{EVERY_PROBE_EVERY_FIELD}  - {{name: packetloss}}\n  - {{name: tcpreset}}\n  - {{name: tcpretrans}}\n");
    let p = write_config(&cfg);
    let e = Exporter::start(&[&format!("--config.file={}", p.display())]);
    let text = e.scrape_text();
    assert!(
        text.contains("netsleuth_tcpext_"),
        "probes missing from the scrape"
    );
    let mut c = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = c.wait_with_output().unwrap();
    let msg = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool check metrics failed ({:?}):\n{msg}",
        out.status.code()
    );
    assert!(msg.trim().is_empty(), "promtool complained:\n{msg}");
}

/// A real Prometheus server scrapes us: the target is up and our series are queryable.
#[test]
fn real_prometheus_scrapes_the_exporter() {
    if !privileged_with("real_prometheus_scrapes_the_exporter", &["prometheus"]) {
        return;
    }
    let ns = Netns::new("nsq");
    let e = Exporter::start(&[]);
    let dir = std::env::temp_dir().join(unique("nslprom"));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n- job_name: netsleuth\n  static_configs:\n  - targets: ['{}']\n",
            e.addr
        ),
    )
    .unwrap();
    // Prometheus binds a port of the kernel's choosing (port 0), read back from its socket.
    let prom = Holder::spawn(
        Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg("--web.listen-address=127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let port = listening_port(prom.pid(), Duration::from_secs(60));
    let api = format!("127.0.0.1:{port}");
    let result = std::panic::catch_unwind(|| {
        let target = wait_for("prometheus target up", Duration::from_secs(60), || {
            let (code, _, body) = try_http_get(&api, "/api/v1/targets", &[]).ok()?;
            if code != 200 {
                return None;
            }
            let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
            let t = v["data"]["activeTargets"].as_array()?.first()?.clone();
            (t["health"] == "up").then_some(t)
        });
        assert_eq!(target["labels"]["job"], "netsleuth");
        assert_eq!(target["lastError"], "");
        let inode = ns.inode().to_string();
        let q = format!("/api/v1/query?query=netsleuth_tcp_curr_estab%7Bnetns%3D%22{inode}%22%7D");
        let v = wait_for("series in prometheus", Duration::from_secs(30), || {
            let (_, _, body) = http_get(&api, &q, &[]);
            let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
            let r = v["data"]["result"].as_array()?.first()?.clone();
            Some(r)
        });
        assert_eq!(v["metric"]["kind"], "named");
        assert_eq!(v["metric"]["name"], ns.name.as_str());
        assert_eq!(v["value"][1], "0");
        let (_, _, body) = http_get(
            &api,
            "/api/v1/query?query=up%7Bjob%3D%22netsleuth%22%7D",
            &[],
        );
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["data"]["result"][0]["value"][1], "1");
    });
    drop(prom);
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}
