//! The config's unit tests: KubeSkoop's own configs, key spellings, probe names, labels.

use super::*;
use crate::collectors;

/// What a loaded config sets up, in one line per part, for exact comparison.
fn summary(c: &Config) -> Vec<String> {
    let names = |v: Vec<String>| v.join(",");
    let bpf = |f: fn(&crate::probes::BpfProbeConfig) -> bool| {
        names(
            c.bpf_probes
                .iter()
                .filter(|p| f(p))
                .map(|p| {
                    let mut n = p.kind.name().to_string();
                    if p.enable_stack {
                        n.push_str("+stack");
                    }
                    n
                })
                .collect(),
        )
    };
    let sinks = c
        .event_sinks
        .iter()
        .map(|s| match s {
            crate::events::SinkConfig::Loki(l) => format!("loki {}", l.url),
            other => other.kind().to_string(),
        })
        .collect();
    vec![
        format!("listen {:?}", c.listen_address),
        format!("debug {}", c.debug),
        format!(
            "procfs {}",
            names(c.probes.iter().map(|p| p.name.clone()).collect())
        ),
        format!("bpf-metrics {}", bpf(|p| p.metrics)),
        format!("bpf-events {}", bpf(|p| p.events)),
        format!("deferred {}", names(c.deferred_probes.clone())),
        format!("sinks {}", names(sinks)),
        format!("labels {:?}", c.extra_labels),
    ]
}

fn fixture(name: &str) -> Vec<String> {
    let path = format!(
        "{}/tests/fixtures/kubeskoop-configs/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    match Config::load(Path::new(&path)) {
        Ok(c) => summary(&c),
        Err(e) => vec![format!("error {e}")],
    }
}

/// Every KubeSkoop config in its repositories loads, and means what it meant there.
#[test]
fn kubeskoop_fixtures_configure_what_they_say() {
    let helm = [
        "listen Some(\":9102\")",
        "debug false",
        "procfs conntrack,qdisc,netdev,io,sock,tcpsummary,tcp,tcpext,udp",
        "bpf-metrics packetloss,flow,tcpretrans",
        "bpf-events packetloss,tcpretrans,tcpreset",
        "deferred ",
        "sinks stderr",
        "labels []",
    ];
    assert_eq!(fixture("helm-chart.yaml"), helm);
    // The website's chart: `debugmode:` rendered empty is no value.
    assert_eq!(fixture("website-chart-kubeskoop.yaml"), helm);
    // The commented example is one multi-line label whose value is filled from pod labels.
    let mut labelled = helm.map(String::from);
    labelled[7] =
        "labels [(\"application\", \"${labels:application} businessline=${labels:businessline} \
                   department=${labels:department} environment=environment\")]"
            .to_string();
    assert_eq!(fixture("helm-chart-additional-labels.yaml"), labelled);
    assert_eq!(
        fixture("helm-chart-0.3.0.yaml"),
        [format!(
            "error config file {}/tests/fixtures/kubeskoop-configs/helm-chart-0.3.0.yaml: \
             unknown key `events` (did you mean `event`?)",
            env!("CARGO_MANIFEST_DIR")
        )]
    );
    assert_eq!(
        fixture("skoopbundle.yaml"),
        [
            "listen Some(\":9102\")",
            "debug true",
            "procfs conntrack,qdisc,netdev,io,sock,tcpsummary,tcp,tcpext,udp",
            "bpf-metrics socketlatency,packetloss,flow,tcpretrans",
            "bpf-events packetloss,tcpretrans,tcpreset",
            "deferred ",
            "sinks stderr,loki http://loki-service:3100/loki/api/v1/push",
            "labels []",
        ]
    );
    let docs = [
        "listen Some(\":9102\")",
        "debug true",
        "procfs netdev,io,sock,tcpsummary,tcp,tcpext,udp",
        "bpf-metrics socketlatency,packetloss,flow",
        "bpf-events packetloss,tcpreset",
        "deferred info",
        "sinks stderr,loki http://loki-service:3100/loki/api/v1/push",
        "labels []",
    ];
    assert_eq!(fixture("skoopbundle-2024-04-02.yaml"), docs);
    assert_eq!(fixture("website-docs-configuration.yaml"), docs);
    assert_eq!(
        fixture("skoopbundle-2023-09-25.yaml"),
        [
            "listen Some(\":9102\")",
            "debug true",
            "procfs netdev,io,sock,tcpsummary,tcp,tcpext,udp",
            "bpf-metrics socketlatency,packetloss",
            "bpf-events packetloss,tcpreset",
            "deferred ",
            "sinks stderr,loki http://loki-service:3100/loki/api/v1/push",
            "labels []",
        ]
    );
    let old = |softirq_at: usize| {
        let mut bpf = vec!["socketlatency", "packetloss", "virtcmdlatency"];
        bpf.insert(softirq_at, "softirq");
        [
            "listen Some(\":9102\")".to_string(),
            "debug true".to_string(),
            "procfs netdev,io,sock,tcpsummary,tcp,tcpext,udp".to_string(),
            format!("bpf-metrics {}", bpf.join(",")),
            "bpf-events packetloss,tcpreset".to_string(),
            "deferred ".to_string(),
            "sinks loki http://loki-service:3100/loki/api/v1/push".to_string(),
            "labels []".to_string(),
        ]
    };
    assert_eq!(fixture("skoopbundle-2023-08-09.yaml"), old(2));
    assert_eq!(fixture("vagrant-skoop-deploy.yaml"), old(2));
    assert_eq!(
        fixture("net-exporter-config.yaml"),
        [
            "listen Some(\":9102\")",
            "debug true",
            "procfs conntrack,qdisc,netdev,io,sock,tcpsummary,tcp,tcpext,udp",
            "bpf-metrics kernellatency,packetloss,flow,tcpretrans",
            "bpf-events kernellatency,packetloss,tcpretrans,biolatency,tcpreset",
            "deferred ",
            "sinks stderr",
            "labels []",
        ]
    );
    assert_eq!(
        fixture("website-docs-sidecar.yaml"),
        [
            "listen Some(\":9102\")",
            "debug true",
            "procfs netdev,io,sock,tcpsummary,tcp,tcpext,udp",
            "bpf-metrics ",
            "bpf-events ",
            "deferred ",
            "sinks ",
            "labels []",
        ]
    );
    assert_eq!(
        fixture("website-chart-kubeskoop-exporter.yaml"),
        [
            "listen Some(\":9102\")",
            "debug false",
            "procfs netdev,io,tcpext,tcpsummary,tcp,sock,softnet,udp",
            "bpf-metrics socketlatency,packetloss,softirq,virtcmdlatency,kernellatency",
            "bpf-events packetloss,tcpreset",
            "deferred ",
            "sinks loki http://loki-service.skoop.svc.cluster.local:3100/loki/api/v1/push",
            "labels []",
        ]
    );
}

fn parse_err(yaml: &str) -> String {
    match Config::parse(yaml) {
        Ok(_) => panic!("{yaml}: loaded"),
        Err(e) => e.0,
    }
}

#[test]
fn kubeskoop_keys_any_case_own_keys_one_spelling() {
    let c = Config::parse(
        "DEBUGMODE: true\nPort: 9200\nEnableController: false\nControllerAddr: x\n\
         Metrics:\n  Probes: [{Name: netdev, Args: {Devices: eth0}}]\n  ADDITIONALLABELS: [a=b]\n\
         EVENT:\n  Sinks: [stderr]\n",
    )
    .unwrap();
    assert_eq!(c.listen_address.as_deref(), Some(":9200"));
    assert!(c.debug);
    assert_eq!(c.probes[0].name, "netdev");
    assert_eq!(c.extra_labels, vec![("a".to_string(), "b".to_string())]);
    assert_eq!(c.event_sinks.len(), 1);
    // `address` wins over `port`, which wins over the old metric_config.port.
    let c = Config::parse("address: tcp://127.0.0.1:9300\nport: 9200\n").unwrap();
    assert_eq!(c.listen_address.as_deref(), Some("127.0.0.1:9300"));
    for (yaml, msg) in [
        (
            "Inventory: {}\n",
            "unknown key `Inventory` (did you mean `inventory`?)",
        ),
        (
            "metrix: {}\n",
            "unknown key `metrix` (did you mean `metrics`?)",
        ),
        (
            "debugMode: true\ndebugmode: false\n",
            "`debugMode` and `debugmode` are the same key (KubeSkoop's keys are matched \
             without regard to case): give it once",
        ),
        (
            "metrics:\n  probes: [netdev]\n  frobs: 1\n",
            "metrics: unknown key `frobs` (did you mean `probes`?)",
        ),
        (
            "debugmode: yes please\n",
            "debugMode: must be true or false, not \"yes please\"",
        ),
        (
            "port: 99999\n",
            "port: must be a port number (0..65535), not 99999",
        ),
        (
            "port: [1]\n",
            "port: must be a port number (0..65535), not a list",
        ),
        (
            "enableController: 1\n",
            "enableController: must be true or false, not 1",
        ),
        ("address: 9102\n", "address: must be a string, not 9102"),
        (
            "metrics: [netdev]\n",
            "metrics: must be a mapping, not a list",
        ),
        (
            "metrics:\n  probes: netdev\n",
            "metrics.probes: must be a list, not \"netdev\"",
        ),
        (
            "metrics:\n  additionalLabels: [{a: b}]\n",
            "metrics.additionalLabels[0]: must be a string, not a mapping",
        ),
        (
            "metric_config:\n  interval: 15s\n",
            "metric_config.interval: must be a whole number, not \"15s\"",
        ),
        (
            "event_config:\n  loki_enable: true\n",
            "event_config.loki_enable: true needs event_config.loki_address",
        ),
        (
            "metrics: {}\nmetric_config: {}\n",
            "metric_config: KubeSkoop's older schema; give `metrics` or `metric_config`, \
             not both",
        ),
        (
            "zzzzzzzzzzzz: 1\n",
            "unknown key `zzzzzzzzzzzz` (known: debugMode, port, address, enableController, \
             enable_controller, controllerAddr, metrics, event, metric_config, event_config, \
             inventory, collection, bpf)",
        ),
    ] {
        assert_eq!(parse_err(yaml), msg, "{yaml}");
    }
    let e = parse_err("inventory:\n  refreshIntervall: 10s\n");
    assert!(
        e.starts_with("inventory: unknown field `refreshIntervall`"),
        "{e}"
    );
    assert!(e.ends_with("(did you mean `refreshInterval`?)"), "{e}");
}

#[test]
fn probe_names_old_aliases_and_the_whole_known_list() {
    let c = Config::parse(
        "metrics:\n  probes: [net_softirq, netiftxlatency, virtcmdLatency]\n\
         event:\n  probes: [netsoftirq, netif_txlatency]\n",
    )
    .unwrap();
    let kinds: Vec<(&str, bool, bool)> = c
        .bpf_probes
        .iter()
        .map(|p| (p.kind.name(), p.metrics, p.events))
        .collect();
    assert_eq!(
        kinds,
        [
            ("softirq", true, true),
            ("netiftxlat", true, true),
            ("virtcmdlatency", true, false)
        ]
    );
    // Both names of one probe in one list are the same probe twice: collapsed when the
    // args agree, an error when they do not.
    let c = Config::parse("metrics:\n  probes: [softirq, net_softirq]\n").unwrap();
    assert_eq!(c.bpf_probes.len(), 1);
    assert_eq!(
        parse_err("metrics:\n  probes: [softirq, {name: net_softirq, args: {threshold: 1ms}}]\n"),
        "metrics.probes[1]: probe `softirq` is listed twice"
    );
    let known = known_metric_probes();
    for k in crate::probes::ProbeKind::ALL {
        assert!(known.contains(&k.name()), "{}", k.name());
    }
    for s in collectors::registry() {
        assert!(known.contains(&s.name), "{}", s.name);
    }
    assert_eq!(
        parse_err("metrics:\n  probes: [packetlos]\n"),
        format!(
            "metrics.probes[0]: unknown probe `packetlos` (known: {}; did you mean \
             `packetloss`?)",
            known.join(", ")
        )
    );
    assert_eq!(
        parse_err("metrics:\n  probes: [net-softirq]\n"),
        format!(
            "metrics.probes[0]: unknown probe `net-softirq` (known: {}; did you mean \
             `softirq`?)",
            known.join(", ")
        )
    );
    let ebpf: Vec<&str> = crate::probes::ProbeKind::ALL
        .iter()
        .map(|k| k.name())
        .collect();
    assert_eq!(
        parse_err("event:\n  probes: [tcpreste]\n"),
        format!(
            "event.probes[0]: unknown event probe `tcpreste` (known: {}; did you mean \
             `tcpreset`?)",
            ebpf.join(", ")
        )
    );
    assert_eq!(
        parse_err("metrics:\n  probes: ['map[name:netdev]']\n"),
        "metrics.probes[0]: `map[name:netdev]` is how Go prints a mapping (a Helm template \
         wrote `- {{ . }}` for a `{name: ...}` entry); write the entry as `- name: ...`"
    );
    // A repeat with the same args is collapsed as KubeSkoop did; other args are an error.
    let c = Config::parse("metrics:\n  probes: [netdev, netdev]\n").unwrap();
    assert_eq!(c.probes.len(), 1);
    assert_eq!(
        parse_err("metrics:\n  probes: [netdev, {name: netdev, args: {devices: eth0}}]\n"),
        "metrics.probes[1]: probe `netdev` is listed twice"
    );
}

#[test]
fn loki_node_follows_inventory_node_name() {
    let node = |extra: &str| {
        let c = Config::parse(&format!(
            "inventory:\n  nodeName: worker-7\nevent:\n  sinks:\n  - name: loki\n    args: {{url: http://127.0.0.1:1/loki/api/v1/push{extra}}}\n"
        ))
        .unwrap();
        match &c.event_sinks[0] {
            crate::events::SinkConfig::Loki(l) => l.node.clone(),
            _ => unreachable!(),
        }
    };
    assert_eq!(node(""), "worker-7");
    assert_eq!(node(", node: other"), "other");
}

#[test]
fn additional_labels_static_and_pod_labels() {
    let c = Config::parse(
        "metrics:\n  additionalLabels: [\"cluster=dev\", \"app=${labels:app}\"]\ninventory:\n  addNodeLabel: true\n  nodeName: n1\n",
    )
    .unwrap();
    assert_eq!(
        c.extra_labels,
        vec![
            ("k8s_node".to_string(), "n1".to_string()),
            ("cluster".to_string(), "dev".to_string()),
            ("app".to_string(), "${labels:app}".to_string())
        ]
    );
    for bad in [
        "[\"nolabel\"]",
        "[\"1x=a\"]",
        "[\"k8s_pod=x\"]",
        "[\"__a=b\"]",
        "[\"app-name=${labels:app}\"]",
        "[\"app=${labels:app\"]",
        "[\"app=${env:HOME}\"]",
    ] {
        let e = Config::parse(&format!("metrics:\n  additionalLabels: {bad}\n")).unwrap_err();
        assert!(e.0.contains("metrics.additionalLabels[0]"), "{e}");
    }
}

#[test]
fn state_roots() {
    let c = Config::parse(
        "inventory:\n  stateRoots:\n    containerd: [/x]\n    podman: [{graphRoot: /g, runRoot: /r}]\n",
    )
    .unwrap();
    let r = c.state_roots.unwrap();
    assert_eq!(r.containerd, vec![std::path::PathBuf::from("/x")]);
    assert_eq!(r.podman, vec![("/g".into(), "/r".into())]);
    assert_eq!(r.docker, vec![std::path::PathBuf::from("/var/lib/docker")]);
    assert!(Config::parse("inventory:\n  stateRoots: {cri: [/x]}\n").is_err());
    let off = Config::parse("inventory:\n  attribution: false\n").unwrap();
    assert!(off.state_roots.is_none());
}
