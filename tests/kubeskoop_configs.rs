//! KubeSkoop's own configurations (tests/fixtures/kubeskoop-configs, copied from its
//! repositories) load in the real binary, and bad KubeSkoop-style input exits 2 naming the key.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use common::*;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kubeskoop-configs")
}

/// `netsleuth probes --config.file=PATH`: exit code, PROBE → ENABLED column, stderr.
fn probes(path: &std::path::Path) -> (i32, BTreeMap<String, String>, String) {
    let out = Command::new(BIN)
        .arg("probes")
        .arg(format!("--config.file={}", path.display()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut enabled = BTreeMap::new();
    for line in stdout.lines().skip(1) {
        let mut f = line.split_whitespace();
        if line.starts_with(' ') {
            continue; // a `default fields:` continuation line
        }
        if let (Some(name), Some(on)) = (f.next(), f.next()) {
            // `conntrack` is both a metric probe and (after it) an event probe, as in KubeSkoop.
            let name = if name == "conntrack" && enabled.contains_key(name) {
                "conntrack(events)"
            } else {
                name
            };
            assert!(
                enabled.insert(name.to_string(), on.to_string()).is_none(),
                "{}: probe {name} printed twice:\n{stdout}",
                path.display()
            );
        }
    }
    (
        out.status.code().unwrap_or(-1),
        enabled,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every fixture but the broken 0.3.0 chart loads with exit 0, and `netsleuth probes` shows
/// exactly the probes it names as enabled (old names under their new ones, not-built ones as
/// accepted), every other probe as `no`.
#[test]
fn every_kubeskoop_config_loads() {
    let procfs = "conntrack=yes qdisc=yes netdev=yes io=yes sock=yes tcpsummary=yes tcp=yes \
                  tcpext=yes udp=yes";
    let expect: &[(&str, String)] = &[
        (
            "helm-chart.yaml",
            format!("{procfs} packetloss=yes tcpretrans=yes tcpreset=events flow=metrics"),
        ),
        (
            "helm-chart-additional-labels.yaml",
            format!("{procfs} packetloss=yes tcpretrans=yes tcpreset=events flow=metrics"),
        ),
        (
            "website-chart-kubeskoop.yaml",
            format!("{procfs} packetloss=yes tcpretrans=yes tcpreset=events flow=metrics"),
        ),
        (
            "skoopbundle.yaml",
            format!(
                "{procfs} socketlatency=metrics packetloss=yes tcpretrans=yes tcpreset=events \
                 flow=metrics"
            ),
        ),
        (
            "skoopbundle-2024-04-02.yaml",
            "netdev=yes io=yes sock=yes tcpsummary=yes tcp=yes tcpext=yes udp=yes \
             socketlatency=metrics packetloss=yes tcpreset=events flow=metrics info=metrics"
                .into(),
        ),
        (
            "website-docs-configuration.yaml",
            "netdev=yes io=yes sock=yes tcpsummary=yes tcp=yes tcpext=yes udp=yes \
             socketlatency=metrics packetloss=yes tcpreset=events flow=metrics info=metrics"
                .into(),
        ),
        (
            "skoopbundle-2023-09-25.yaml",
            "netdev=yes io=yes sock=yes tcpsummary=yes tcp=yes tcpext=yes udp=yes \
             socketlatency=metrics packetloss=yes tcpreset=events"
                .into(),
        ),
        (
            "skoopbundle-2023-08-09.yaml",
            "netdev=yes io=yes sock=yes tcpsummary=yes tcp=yes tcpext=yes udp=yes \
             socketlatency=metrics packetloss=yes softirq=metrics virtcmdlatency=metrics \
             tcpreset=events"
                .into(),
        ),
        (
            "vagrant-skoop-deploy.yaml",
            "netdev=yes io=yes sock=yes tcpsummary=yes tcp=yes tcpext=yes udp=yes \
             socketlatency=metrics packetloss=yes softirq=metrics virtcmdlatency=metrics \
             tcpreset=events"
                .into(),
        ),
        (
            "net-exporter-config.yaml",
            format!(
                "{procfs} kernellatency=yes packetloss=yes tcpretrans=yes tcpreset=events \
                 flow=metrics biolatency=events"
            ),
        ),
        (
            "website-docs-sidecar.yaml",
            "netdev=yes io=yes sock=yes tcpsummary=yes tcp=yes tcpext=yes udp=yes".into(),
        ),
        (
            "website-chart-kubeskoop-exporter.yaml",
            "netdev=yes io=yes tcpext=yes tcpsummary=yes tcp=yes sock=yes softnet=yes udp=yes \
             socketlatency=metrics packetloss=yes softirq=metrics virtcmdlatency=metrics \
             kernellatency=metrics tcpreset=events"
                .into(),
        ),
    ];
    // No fixture is left out of the table (the README lists each one's origin).
    let mut on_disk: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "helm-chart-0.3.0.yaml")
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = expect.iter().map(|(f, _)| f.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed);
    let readme = std::fs::read_to_string(fixtures().join("README.md")).unwrap();
    for f in on_disk
        .iter()
        .chain(["helm-chart-0.3.0.yaml".to_string()].iter())
    {
        assert!(readme.contains(&format!("`{f}`")), "README lacks {f}");
    }

    for (file, want) in expect {
        let (rc, enabled, err) = probes(&fixtures().join(file));
        assert_eq!(rc, 0, "{file}: {err}");
        let mut want: BTreeMap<String, String> = want
            .split_whitespace()
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect();
        for name in enabled.keys() {
            want.entry(name.clone()).or_insert_with(|| "no".into());
        }
        assert_eq!(enabled, want, "{file}: ENABLED column\n{err}");
    }
}

/// What is accepted but unused is said once, at info level; old probe names are named with
/// their new ones.
#[test]
fn kubeskoop_keys_netsleuth_does_not_use_are_logged_once() {
    let (rc, _, err) = probes(&fixtures().join("website-chart-kubeskoop-exporter.yaml"));
    assert_eq!(rc, 0, "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("config:")).collect();
    assert_eq!(
        lines,
        [
            "[INFO  netsleuth::config::kubeskoop] config: debugMode: KubeSkoop's debug switch is \
             accepted and ignored; use --log.level=debug for debug logs",
            "[INFO  netsleuth::config::kubeskoop] config: metric_config.interval: accepted and \
             ignored: netsleuth reads every figure at scrape time, there is no cache to refresh",
            "[INFO  netsleuth::config::kubeskoop] config: metric_config.verbose: accepted and \
             ignored: the label set is fixed",
            "[INFO  netsleuth::config::kubeskoop] config: metric_config.expose_labels: accepted \
             and ignored: use metrics.additionalLabels for static labels",
            "[INFO  netsleuth::config::kubeskoop] config: event_config.port: accepted and \
             ignored: KubeSkoop's gRPC event server is gone; events stream from GET /events on \
             the metrics listener",
            "[INFO  netsleuth::config::kubeskoop] config: probe net_softirq: `net_softirq` (at \
             metrics.probes[4]) is KubeSkoop's old name of the `softirq` probe; loaded as \
             `softirq`",
        ]
    );
}

/// Bad KubeSkoop-style input: exit 2 and a message naming the key (and the closest known one).
#[test]
fn bad_kubeskoop_input_exits_2_naming_the_key() {
    let broken = fixtures().join("helm-chart-0.3.0.yaml");
    let (rc, _, err) = probes(&broken);
    assert_eq!(rc, 2);
    assert_eq!(
        err,
        format!(
            "netsleuth: config file {}: unknown key `events` (did you mean `event`?)\n",
            broken.display()
        )
    );
    for (yaml, msg) in [
        (
            "debugmod: false\n",
            "unknown key `debugmod` (did you mean `debugMode`?)",
        ),
        (
            "metrics:\n  probe: [netdev]\n",
            "metrics: unknown key `probe` (did you mean `probes`?)",
        ),
        (
            "event:\n  sink: [stderr]\n",
            "event: unknown key `sink` (did you mean `sinks`?)",
        ),
        (
            "inventory:\n  nodename: x\n",
            "inventory: unknown field `nodename`, expected one of",
        ),
        (
            "debugmode: maybe\n",
            "debugMode: must be true or false, not \"maybe\"",
        ),
        (
            "port: http\n",
            "port: must be a port number (0..65535), not \"http\"",
        ),
        (
            "enableController: \"yes\"\n",
            "enableController: must be true or false, not \"yes\"",
        ),
        (
            "metric_config:\n  port: -1\n",
            "metric_config.port: must be a port number (0..65535), not -1",
        ),
        (
            "event_config:\n  loki_address: [a]\n",
            "event_config.loki_address: must be a string, not a list",
        ),
        (
            "metrics:\n  probes:\n  - name: [netdev]\n",
            "metrics.probes[0].name: must be a string, not a list",
        ),
    ] {
        let p = write_config(yaml);
        let (rc, _, err) = probes(&p);
        assert_eq!(rc, 2, "{yaml}: {err}");
        let want = format!("netsleuth: config file {}: {msg}", p.display());
        assert!(err.starts_with(&want), "{yaml}:\n{err}\nwanted: {want}");
        assert_eq!(err.lines().count(), 1, "{yaml}: {err}");
    }
    // The one suggestion for a lower-cased own key is the one spelling it has.
    let p = write_config("inventory:\n  nodename: x\n");
    let (_, _, err) = probes(&p);
    assert!(err.ends_with("(did you mean `nodeName`?)\n"), "{err}");
}
