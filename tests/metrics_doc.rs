//! `docs/metrics.md` is generated from the code: the procfs probes run over the committed 6.18
//! fixtures (`tests/fixtures/procfs/6.18`), the netlink probes over the captured netlink
//! replies (`tests/fixtures/netlink`), and the fixed-name families come from
//! `netsleuth::catalog`. `reference_is_current` fails when the committed file differs from what
//! the code generates (`NETSLEUTH_UPDATE_DOCS=1 cargo test --test metrics_doc` rewrites it);
//! `real_scrape_is_documented` scrapes a real exporter running every probe, with traffic, and
//! fails on any family, type, label or help on the page that the reference does not list.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use netsleuth::catalog::{FamilyDoc, FAMILIES};
use netsleuth::collectors::{self, qdisc, tcpsummary, NetnsCtx, ProbeArgs, Scope};
use netsleuth::model::{MetricKind, Sink, Value};

/// Labels every per-namespace series carries (engine-added), left out of the family's own.
const ENTITY_LABELS: &[&str] = &[
    "netns",
    "kind",
    "k8s_namespace",
    "k8s_pod",
    "name",
    "k8s_node",
];

#[derive(Debug, Clone, PartialEq)]
struct Fam {
    kind: MetricKind,
    help: String,
    labels: BTreeSet<String>,
    per_namespace: bool,
    host_only: bool,
}

/// Records what a collector emits: family name → type, help and the union of label names.
#[derive(Default)]
struct Recorder {
    fams: BTreeMap<String, Fam>,
    per_namespace: bool,
}

impl Sink for Recorder {
    fn emit(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricKind,
        labels: &[(&str, &str)],
        _value: Value,
    ) {
        let per_namespace = self.per_namespace;
        let f = self.fams.entry(name.to_string()).or_insert_with(|| Fam {
            kind,
            help: help.to_string(),
            labels: BTreeSet::new(),
            per_namespace,
            host_only: false,
        });
        f.labels.extend(labels.iter().map(|(k, _)| k.to_string()));
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// One probe's section of the reference.
struct Section {
    probe: String,
    description: String,
    default_fields: Option<String>,
    /// Families with the default `fields`.
    default: BTreeMap<String, Fam>,
    /// Further families `fields` can select (as a 6.18 kernel prints them).
    more: BTreeMap<String, Fam>,
}

/// Run a procfs probe over the fixtures with `fields` (None: its default).
fn run_procfs(probe: &str, fields: Option<&str>, host: bool) -> BTreeMap<String, Fam> {
    let spec = collectors::find(probe).unwrap();
    let mut args = ProbeArgs::new(probe);
    let mut yaml = fields
        .map(|f| format!("fields: '{f}'\n"))
        .unwrap_or_default();
    if probe == "netdev" {
        // The fixture namespace has only `lo`, which netdev exports for the host only by
        // default: every namespace's, so that the per-device series are documented as such.
        yaml.push_str("loopback: all\n");
    }
    if !yaml.is_empty() {
        let yaml: serde_norway::Value = serde_norway::from_str(&yaml).unwrap();
        args = ProbeArgs::from_yaml(probe, &yaml).unwrap();
    }
    let c = (spec.build)(&mut args).unwrap_or_else(|e| panic!("{probe}: {e}"));
    let fx = root().join("tests/fixtures/procfs/6.18");
    let proc_root = fx.join("proc");
    let pids = [1234];
    let net_dir = if c.scope() == Scope::Node {
        fx.join("host")
    } else {
        fx.join("net")
    };
    let ctx = NetnsCtx::new(1, net_dir, &proc_root, false, &pids).with_host(host);
    let mut rec = Recorder {
        per_namespace: c.scope() == Scope::Netns,
        ..Recorder::default()
    };
    c.collect(&ctx, &mut rec)
        .unwrap_or_else(|e| panic!("{probe} over the 6.18 fixtures: {e}"));
    assert!(
        !rec.fams.is_empty(),
        "{probe} emitted nothing over the fixtures"
    );
    rec.fams
}

fn procfs_section(probe: &str) -> Section {
    let spec = collectors::find(probe).unwrap();
    let default = run_procfs(probe, None, true);
    let guest = run_procfs(probe, None, false);
    let default: BTreeMap<String, Fam> = default
        .into_iter()
        .map(|(n, mut f)| {
            f.host_only = !guest.contains_key(&n);
            (n, f)
        })
        .collect();
    let mut more = BTreeMap::new();
    if spec.default_fields.is_some() {
        for (n, f) in run_procfs(probe, Some(".*"), true) {
            if !default.contains_key(&n) {
                more.insert(n, f);
            }
        }
    }
    if probe == "netdev" {
        // The counters netdev takes from rtnetlink, over the captured link dump.
        let mut links = Vec::new();
        let dump = std::fs::read(root().join("tests/fixtures/netlink/link_stats_dump.bin"));
        collectors::netdev::parse_link_stats(&dump.unwrap(), &mut links).unwrap();
        let mut rec = Recorder {
            per_namespace: true,
            ..Recorder::default()
        };
        collectors::netdev::emit_link_stats(&links, &mut rec);
        assert_eq!(rec.fams.len(), collectors::netdev::NETLINK_COLUMNS.len());
        more.extend(rec.fams);
    }
    Section {
        probe: probe.into(),
        description: spec.description.into(),
        default_fields: spec.default_fields.map(str::to_string),
        default,
        more,
    }
}

fn netlink_section(probe: &str) -> Section {
    let spec = collectors::find(probe).unwrap();
    let nl = root().join("tests/fixtures/netlink");
    let read = |f: &str| std::fs::read(nl.join(f)).unwrap();
    let mut rec = Recorder {
        per_namespace: true,
        ..Recorder::default()
    };
    match probe {
        "qdisc" => {
            let (mut q, mut l) = (Vec::new(), Vec::new());
            qdisc::parse_qdiscs(&read("qdisc_dump.bin"), &mut q).unwrap();
            qdisc::parse_links(&read("link_dump.bin"), &mut l).unwrap();
            qdisc::emit(&mut q, &mut l, &mut rec);
        }
        "tcpsummary" => {
            let mut s = tcpsummary::TcpSummary::default();
            tcpsummary::parse(&read("sockdiag_inet4.bin"), &mut s).unwrap();
            tcpsummary::parse(&read("sockdiag_inet6.bin"), &mut s).unwrap();
            s.finish();
            s.emit(&mut rec);
        }
        _ => unreachable!("{probe}"),
    }
    assert!(
        !rec.fams.is_empty(),
        "{probe} emitted nothing over the fixtures"
    );
    Section {
        probe: probe.into(),
        description: spec.description.into(),
        default_fields: None,
        default: rec.fams,
        more: BTreeMap::new(),
    }
}

/// ipvs over what a 6.12 kernel-matrix guest showed after `metrics.ipvs` (procfs files and
/// the generic netlink dumps); rdma over the sysfs fixture trees and a resource summary.
fn fixture_section(probe: &str) -> Section {
    use collectors::{ipvs, rdma};
    let spec = collectors::find(probe).unwrap();
    let mut rec = Recorder {
        per_namespace: spec.name == "ipvs",
        ..Recorder::default()
    };
    match probe {
        "ipvs" => {
            let net = root().join("tests/fixtures/procfs/ipvs-6.12/net");
            let nl = root().join("tests/fixtures/netlink/ipvs-6.12");
            let read = |p: PathBuf| std::fs::read(p).unwrap();
            let mut snap = ipvs::Snapshot {
                totals: ipvs::parse_stats(&read(net.join("ip_vs_stats"))).unwrap(),
                services: ipvs::parse_services(&read(net.join("ip_vs"))).unwrap(),
                nl: Vec::new(),
            };
            let (svcs, dests) = ipvs::parse_dumps(
                &read(nl.join("genl_services.bin")),
                &read(nl.join("genl_dests.bin")),
            )
            .unwrap();
            snap.nl = svcs.into_iter().map(|s| (s, dests.clone())).collect();
            ipvs::emit(&snap, &mut rec);
        }
        "rdma" => {
            let mut all = Vec::new();
            for tree in ["mlx5", "rxe"] {
                let class = root()
                    .join("tests/fixtures/sysfs")
                    .join(tree)
                    .join("class/infiniband");
                all.extend(rdma::read_counters(&class).0);
            }
            let res = rdma::Resources {
                index: 0,
                device: "mlx5_0".into(),
                counts: vec![("qp".into(), 1)],
            };
            rdma::emit(&all, &[res], &mut rec);
        }
        _ => unreachable!("{probe}"),
    }
    Section {
        probe: probe.into(),
        description: spec.description.into(),
        default_fields: None,
        default: rec.fams,
        more: BTreeMap::new(),
    }
}

fn catalog_fam(d: &FamilyDoc) -> Fam {
    Fam {
        kind: d.kind,
        help: d.help.into(),
        labels: d.labels.iter().map(|s| s.to_string()).collect(),
        per_namespace: d.per_namespace,
        host_only: false,
    }
}

fn catalog_sections() -> Vec<Section> {
    let mut order: Vec<&str> = Vec::new();
    for d in FAMILIES {
        if !order.contains(&d.source) {
            order.push(d.source);
        }
    }
    order
        .into_iter()
        .map(|src| {
            let description = match src {
                "ebpf" => "Every eBPF probe: map capacity, reaping, kernel run time, events read, lost and rate-limited.".to_string(),
                "events" => "Event delivery: the pipeline, each sink (`sink` is `file`, `loki`, `stderr`, a second one `file-2`) and the `/events` stream.".to_string(),
                "exporter" => "The exporter itself: build, reloads, inventory, each collector's scrape, the process.".to_string(),
                p => netsleuth::probes::ProbeKind::from_name(p)
                    .map(|k| format!("eBPF: {}.", k.description()))
                    .unwrap_or_else(|| panic!("catalog source {p} is no probe")),
            };
            Section {
                probe: src.into(),
                description,
                default_fields: None,
                default: FAMILIES
                    .iter()
                    .filter(|d| d.source == src)
                    .map(|d| (d.name.to_string(), catalog_fam(d)))
                    .collect(),
                more: BTreeMap::new(),
            }
        })
        .collect()
}

fn sections() -> Vec<Section> {
    let mut v = Vec::new();
    for spec in collectors::registry() {
        v.push(match spec.name {
            "qdisc" | "tcpsummary" => netlink_section(spec.name),
            "ipvs" | "rdma" => fixture_section(spec.name),
            p => procfs_section(p),
        });
    }
    v.extend(catalog_sections());
    v
}

fn labels_cell(f: &Fam) -> String {
    let mut parts: Vec<String> = Vec::new();
    if f.per_namespace {
        parts.push("*entity*".into());
    }
    parts.extend(f.labels.iter().map(|l| format!("`{l}`")));
    if f.kind == MetricKind::Histogram {
        parts.push("`le`".into());
    }
    if parts.is_empty() {
        "—".into()
    } else {
        parts.join(", ")
    }
}

fn table(out: &mut String, fams: &BTreeMap<String, Fam>) {
    out.push_str("| family | type | labels | help |\n|---|---|---|---|\n");
    for (n, f) in fams {
        let help = f.help.replace('|', "\\|");
        let host = if f.host_only {
            " (host namespace only)"
        } else {
            ""
        };
        out.push_str(&format!(
            "| `{n}` | {} | {} | {help}{host} |\n",
            f.kind.as_str(),
            labels_cell(f)
        ));
    }
}

fn generate() -> String {
    let secs = sections();
    let mut out = String::new();
    out.push_str(
        "# Metrics reference\n\n\
         Generated from the code by `NETSLEUTH_UPDATE_DOCS=1 cargo test --test metrics_doc` \
         (do not edit by hand; `cargo test` fails when this file differs from what the code \
         generates). The procfs probes' families are what they export over files a 6.18 \
         kernel printed (`tests/fixtures/procfs/6.18`), the netlink probes' over captured \
         replies (`tests/fixtures/netlink`), the rest is `src/catalog.rs`; a privileged test \
         scrapes a real exporter running every probe and fails on anything this file does \
         not list.\n\n\
         *entity*: the series carries the namespace's labels `netns` (inode), `kind` (`pod`, \
         `container`, `named`, `host`, `process`), `k8s_namespace`, `k8s_pod` and `name`, \
         then `k8s_node` (with `inventory.addNodeLabel`) and the `metrics.additionalLabels`. \
         A label whose value is empty (`k8s_namespace` and `k8s_pod` outside pods, `name` of \
         the host, an additional label the namespace has no value for) is not written: \
         Prometheus does not tell an empty label from an absent one, so `k8s_pod=\"\"` still \
         selects those series, and at 500 named namespaces leaving them out made the page \
         24 % smaller. \
         Histograms are `_bucket{le}`, `_sum` and `_count`, in seconds, with log2 buckets \
         from about 1 µs to 34 s; a scraper that asks for the protobuf exposition also gets \
         each as a schema-0 native histogram (docs/operations.md, \"Native histograms\"). \
         Counters end in `_total`.\n\n\
         Probes that read kernel fields export those their `fields` regex selects (over \
         `Group_Field`, e.g. `TcpExt_ListenDrops`); the first table of such a probe is its \
         default, the second what `fields: '.*'` adds on a 6.18 kernel (other kernels print \
         other fields; each becomes `netsleuth_<group>_<field in snake_case>`).\n\n",
    );
    out.push_str("| probe | families |\n|---|---|\n");
    for s in &secs {
        out.push_str(&format!(
            "| [{}](#{}) | {} |\n",
            s.probe,
            s.probe,
            s.default.len() + s.more.len()
        ));
    }
    for s in &secs {
        out.push_str(&format!("\n## {}\n\n{}\n\n", s.probe, s.description));
        if let Some(f) = &s.default_fields {
            out.push_str(&format!("Default `fields`: `{f}`\n\n"));
        }
        table(&mut out, &s.default);
        if !s.more.is_empty() {
            out.push_str("\nAlso selectable with `fields`:\n\n");
            table(&mut out, &s.more);
        }
    }
    out
}

#[test]
fn reference_is_current() {
    let path = root().join("docs/metrics.md");
    let text = generate();
    if std::env::var("NETSLEUTH_UPDATE_DOCS").as_deref() == Ok("1") {
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != text {
        let first = committed
            .lines()
            .zip(text.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(committed.lines().count().min(text.lines().count()));
        panic!(
            "docs/metrics.md differs from what the code generates (first at line {}: committed {:?}, generated {:?}); \
             run NETSLEUTH_UPDATE_DOCS=1 cargo test --test metrics_doc and commit the file",
            first + 1,
            committed.lines().nth(first),
            text.lines().nth(first)
        );
    }
}

/// Every documented family by name.
fn documented() -> BTreeMap<String, Fam> {
    let mut all = BTreeMap::new();
    for s in sections() {
        all.extend(s.default);
        all.extend(s.more);
    }
    all
}

/// Parse a page into name → (type, help, label names of its samples).
fn page_families(page: &str) -> BTreeMap<String, (String, String, BTreeSet<String>)> {
    let mut fams: BTreeMap<String, (String, String, BTreeSet<String>)> = BTreeMap::new();
    for l in page.lines() {
        if let Some(r) = l.strip_prefix("# HELP ") {
            let (n, h) = r.split_once(' ').unwrap();
            fams.entry(n.into()).or_default().1 = h.replace("\\\\", "\\").replace("\\n", "\n");
        } else if let Some(r) = l.strip_prefix("# TYPE ") {
            let (n, t) = r.split_once(' ').unwrap();
            fams.entry(n.into()).or_default().0 = t.into();
        }
    }
    for s in common::Scrape::parse(page).samples {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suf| {
                let b = s.name.strip_suffix(suf)?;
                (fams.get(b).map(|f| f.0.as_str()) == Some("histogram")).then_some(b)
            })
            .unwrap_or(&s.name)
            .to_string();
        let f = fams
            .get_mut(&base)
            .unwrap_or_else(|| panic!("sample {} without HELP/TYPE", s.name));
        f.2.extend(s.labels.keys().filter(|k| *k != "le").cloned());
    }
    fams
}

#[test]
fn real_scrape_is_documented() {
    if !common::privileged("real_scrape_is_documented") {
        return;
    }
    // Every probe, events to a file, BPF run-time stats on: as many families as this kernel
    // can show. A pair of namespaces with a drop and a reset makes the eBPF counters appear.
    let events = std::env::temp_dir().join(common::unique("mdoc-events.json"));
    let cfg = format!(
        "metrics:\n  probes: [netdev, ip, icmp, tcp, udp, tcpext, ipext, sock, softnet, tcpsummary, io, fd, conntrack, qdisc, mptcp, \
         packetloss, tcpreset, tcpretrans, netiftxlat, softirq, socketlatency, kernellatency, virtcmdlatency, biolatency, flow]\n\
         event:\n  probes: [packetloss, tcpreset]\n  sinks:\n  - name: file\n    args: {{path: {}}}\n\
         bpf: {{programStats: true}}\n",
        events.display()
    );
    let cfg_path = common::write_config(&cfg);
    let pair = common::Pair::new();
    let ex = common::Exporter::start(&["--config.file", cfg_path.to_str().unwrap()]);
    // A reset (connect to a closed port) and UDP to a closed port (a NO_SOCKET drop).
    pair.b.exec(
        "python3",
        &[
            "-c",
            &format!(
                "import socket\n\
                 s=socket.socket(); s.settimeout(2)\n\
                 try: s.connect(('{a}', 9))\n\
                 except OSError: pass\n\
                 u=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                 u.sendto(b'x', ('{a}', 9))\n",
                a = pair.ip_a
            ),
        ],
    );
    let docs = documented();
    let page = common::wait_for(
        "the reset and the drop on the page",
        std::time::Duration::from_secs(10),
        || {
            let page = ex.scrape_text();
            (page.contains("netsleuth_tcpreset_total{")
                && page.contains("netsleuth_packetloss_total{"))
            .then_some(page)
        },
    );
    let _ = std::fs::remove_file(&events);
    let fams = page_families(&page);
    for must in [
        "netsleuth_tcpreset_total",
        "netsleuth_packetloss_total",
        "netsleuth_netdev_receive_bytes_total",
    ] {
        assert!(fams.contains_key(must), "{must} not on the page:\n{page}");
    }
    let mut problems = Vec::new();
    for (name, (ty, help, labels)) in &fams {
        let Some(d) = docs.get(name) else {
            problems.push(format!("{name} ({ty}) is not in docs/metrics.md"));
            continue;
        };
        if d.kind.as_str() != ty {
            problems.push(format!(
                "{name}: page says {ty}, docs say {}",
                d.kind.as_str()
            ));
        }
        if &d.help != help {
            problems.push(format!(
                "{name}: help on the page {help:?}, in the docs {:?}",
                d.help
            ));
        }
        let own: BTreeSet<String> = if d.per_namespace {
            labels
                .iter()
                .filter(|l| !ENTITY_LABELS.contains(&l.as_str()))
                .cloned()
                .collect()
        } else {
            labels.clone()
        };
        if d.per_namespace && !labels.contains("netns") {
            problems.push(format!(
                "{name}: documented per namespace, but has no netns label"
            ));
        }
        if own != d.labels {
            problems.push(format!(
                "{name}: labels on the page {own:?}, in the docs {:?}",
                d.labels
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
