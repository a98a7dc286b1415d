//! The inspector's pure core: a page of samples becomes a [`Snapshot`] (the counters of every
//! entity, summed over devices, protocols and qdiscs, and the exporter's own state); two
//! snapshots become [`Rows`] of deltas and rates over the interval between them. No I/O.

use std::collections::BTreeMap;

use super::expo::Sample;

/// Which namespace a series belongs to: its entity labels.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntityKey {
    pub netns: u64,
    pub kind: String,
    pub k8s_namespace: String,
    pub k8s_pod: String,
    pub name: String,
}

impl EntityKey {
    fn of(s: &Sample) -> Option<EntityKey> {
        let netns = s.label("netns")?.parse().ok()?;
        Some(EntityKey {
            netns,
            kind: s.label("kind").unwrap_or("").to_string(),
            k8s_namespace: s.label("k8s_namespace").unwrap_or("").to_string(),
            k8s_pod: s.label("k8s_pod").unwrap_or("").to_string(),
            name: s.label("name").unwrap_or("").to_string(),
        })
    }

    /// What the view calls it: `namespace/pod` for pods, else the name, else the kind.
    pub fn display(&self) -> String {
        if !self.k8s_pod.is_empty() {
            format!("{}/{}", self.k8s_namespace, self.k8s_pod)
        } else if !self.name.is_empty() {
            self.name.clone()
        } else {
            self.kind.clone()
        }
    }
}

/// One device's counters: rx bytes, tx bytes, rx packets, tx packets, rx drops, tx drops.
pub type DeviceCounters = [f64; 6];

/// The counters of one entity in one sample.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counters {
    pub devices: BTreeMap<String, DeviceCounters>,
    /// `netsleuth_packetloss_total` by reason (summed over protocols); empty without the
    /// packetloss probe.
    pub packetloss: BTreeMap<String, f64>,
    pub has_packetloss: bool,
    /// `netsleuth_tcpreset_total` by type.
    pub resets: BTreeMap<String, f64>,
    /// `netsleuth_tcpretrans_total` (eBPF), else `netsleuth_tcp_retrans_segs_total` (snmp).
    pub retrans_bpf: Option<f64>,
    pub retrans_snmp: Option<f64>,
    pub established: Option<f64>,
    pub listen_overflows: Option<f64>,
    /// `netsleuth_socketlatency_read_seconds` buckets: upper bound → cumulative count.
    pub read_latency: Vec<(f64, f64)>,
    pub qdisc_drops: Option<f64>,
}

/// The exporter's own state in one sample (the view's header).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Exporter {
    pub version: String,
    pub netns_by_kind: BTreeMap<String, f64>,
    /// `netsleuth_probe_up` and `netsleuth_scrape_collector_success`: name → up.
    pub probes: BTreeMap<String, bool>,
    pub events_published: f64,
    /// Events lost in the kernel's buffers plus dropped on the way to a sink.
    pub events_lost: f64,
}

/// One page, read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub entities: BTreeMap<EntityKey, Counters>,
    pub exporter: Exporter,
}

impl Snapshot {
    pub fn from_samples(samples: &[Sample]) -> Snapshot {
        let mut snap = Snapshot::default();
        for s in samples {
            if !s.value.is_finite() && !s.name.ends_with("_bucket") {
                continue;
            }
            match s.name.as_str() {
                "netsleuth_build_info" => {
                    snap.exporter.version = s.label("version").unwrap_or("").to_string()
                }
                "netsleuth_netns" => {
                    let k = s.label("kind").unwrap_or("").to_string();
                    *snap.exporter.netns_by_kind.entry(k).or_default() += s.value;
                }
                "netsleuth_probe_up" => {
                    if let Some(p) = s.label("probe") {
                        snap.exporter.probes.insert(p.to_string(), s.value >= 1.0);
                    }
                }
                "netsleuth_scrape_collector_success" => {
                    if let Some(p) = s.label("collector") {
                        snap.exporter.probes.insert(p.to_string(), s.value >= 1.0);
                    }
                }
                "netsleuth_events_published_total" => snap.exporter.events_published += s.value,
                "netsleuth_events_lost_total" | "netsleuth_events_dropped_total" => {
                    snap.exporter.events_lost += s.value
                }
                _ => {}
            }
            let Some(key) = EntityKey::of(s) else {
                continue;
            };
            let field = match s.name.as_str() {
                "netsleuth_netdev_receive_bytes_total" => Some(0),
                "netsleuth_netdev_transmit_bytes_total" => Some(1),
                "netsleuth_netdev_receive_packets_total" => Some(2),
                "netsleuth_netdev_transmit_packets_total" => Some(3),
                "netsleuth_netdev_receive_drop_total" => Some(4),
                "netsleuth_netdev_transmit_drop_total" => Some(5),
                _ => None,
            };
            let c = snap.entities.entry(key).or_default();
            if let Some(i) = field {
                let dev = s.label("device").unwrap_or("").to_string();
                c.devices.entry(dev).or_default()[i] += s.value;
                continue;
            }
            let add = |o: &mut Option<f64>, v: f64| *o = Some(o.unwrap_or(0.0) + v);
            match s.name.as_str() {
                "netsleuth_packetloss_total" => {
                    c.has_packetloss = true;
                    let r = s.label("reason").unwrap_or("").to_string();
                    *c.packetloss.entry(r).or_default() += s.value;
                }
                "netsleuth_tcpreset_total" => {
                    let t = s.label("type").unwrap_or("").to_string();
                    *c.resets.entry(t).or_default() += s.value;
                }
                "netsleuth_tcpretrans_total" => add(&mut c.retrans_bpf, s.value),
                "netsleuth_tcp_retrans_segs_total" => add(&mut c.retrans_snmp, s.value),
                "netsleuth_tcp_curr_estab" => add(&mut c.established, s.value),
                "netsleuth_tcpext_listen_overflows_total" => add(&mut c.listen_overflows, s.value),
                "netsleuth_qdisc_drops_total" => add(&mut c.qdisc_drops, s.value),
                "netsleuth_socketlatency_read_seconds_bucket" => {
                    let le = s.label("le").and_then(|l| {
                        if l == "+Inf" {
                            Some(f64::INFINITY)
                        } else {
                            l.parse().ok()
                        }
                    });
                    if let Some(le) = le {
                        match c.read_latency.iter_mut().find(|(b, _)| *b == le) {
                            Some(b) => b.1 += s.value,
                            None => c.read_latency.push((le, s.value)),
                        }
                    }
                }
                _ => {}
            }
        }
        for c in snap.entities.values_mut() {
            c.read_latency.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        snap
    }
}

/// A counter's change over the interval, and that per second.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Delta {
    pub delta: f64,
    pub rate: f64,
}

/// One entity over the interval.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    pub key: EntityKey,
    /// Not in the first sample: its deltas are 0 until the next interval.
    pub new: bool,
    pub rx_bytes: Delta,
    pub tx_bytes: Delta,
    pub rx_packets: Delta,
    pub tx_packets: Delta,
    /// Kernel drops by reason (packetloss probe), else the devices' rx+tx drops.
    pub drops: Delta,
    pub drops_source: &'static str,
    pub drop_reasons: BTreeMap<String, f64>,
    /// The reason with the most drops in the interval (ties: the first by name).
    pub top_reason: Option<String>,
    pub resets: Delta,
    pub resets_by_type: BTreeMap<String, f64>,
    pub retrans: Delta,
    pub established: Option<f64>,
    pub listen_overflows: Delta,
    /// Socket read latency p99 over the interval (seconds), from the histogram's buckets.
    pub read_p99: Option<f64>,
    /// The interval's bucket counts (upper bound, non-cumulative), for the detail pane.
    pub read_buckets: Vec<(f64, f64)>,
    pub qdisc_drops: Delta,
    /// Per device: rx bytes, tx bytes, rx packets, tx packets, rx drops, tx drops (deltas).
    pub devices: BTreeMap<String, DeviceCounters>,
}

/// The exporter over the interval.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Header {
    pub version: String,
    pub netns_by_kind: BTreeMap<String, f64>,
    pub probes_running: Vec<String>,
    pub probes_failed: Vec<String>,
    pub events: Delta,
    pub events_lost: Delta,
}

/// Two snapshots compared.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rows {
    pub interval: f64,
    pub header: Header,
    pub rows: Vec<Row>,
}

/// A counter's increase; a counter that went down was reset (the exporter restarted, a
/// namespace's counters began again) and counts from 0, like Prometheus' `increase`.
fn inc(prev: f64, cur: f64) -> f64 {
    if cur >= prev {
        cur - prev
    } else {
        cur
    }
}

fn delta(d: f64, secs: f64) -> Delta {
    Delta {
        delta: d,
        rate: if secs > 0.0 { d / secs } else { 0.0 },
    }
}

fn map_inc(prev: &BTreeMap<String, f64>, cur: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    cur.iter()
        .map(|(k, v)| (k.clone(), inc(prev.get(k).copied().unwrap_or(0.0), *v)))
        .collect()
}

/// Prometheus' `histogram_quantile` on cumulative buckets (upper bound, count), sorted by
/// bound and ending with +Inf: linear interpolation inside the bucket holding the rank; the
/// first bucket starts at 0; a rank in the +Inf bucket gives the highest finite bound.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last().filter(|b| b.0.is_infinite())?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let in_bucket = count - lower.1;
            if in_bucket <= 0.0 {
                return Some(le);
            }
            return Some(lower.0 + (le - lower.0) * (rank - lower.1) / in_bucket);
        }
        lower = (le, count);
    }
    None
}

/// The rows between two samples `secs` apart.
pub fn compare(prev: &Snapshot, cur: &Snapshot, secs: f64) -> Rows {
    let mut rows = Vec::new();
    for (key, c) in &cur.entities {
        let (p, new) = match prev.entities.get(key) {
            Some(p) => (p, false),
            None => (c, true),
        };
        let mut devices = BTreeMap::new();
        let mut sum = [0.0; 6];
        for (dev, d) in &c.devices {
            let pd = p.devices.get(dev).copied().unwrap_or([0.0; 6]);
            let mut out = [0.0; 6];
            for i in 0..6 {
                out[i] = inc(pd[i], d[i]);
                sum[i] += out[i];
            }
            devices.insert(dev.clone(), out);
        }
        let drop_reasons = map_inc(&p.packetloss, &c.packetloss);
        // One source for every row: the kernel's reasons when the packetloss probe runs (an
        // entity without its series had no drops), else the devices' counters.
        let packetloss = c.has_packetloss || cur.exporter.probes.contains_key("packetloss");
        let (drops, drops_source) = if packetloss {
            (drop_reasons.values().sum(), "packetloss")
        } else {
            (sum[4] + sum[5], "netdev")
        };
        let top_reason = drop_reasons
            .iter()
            .filter(|(_, v)| **v > 0.0)
            .fold(None::<(&String, f64)>, |best, (k, v)| match best {
                Some((_, bv)) if bv >= *v => best,
                _ => Some((k, *v)),
            })
            .map(|(k, _)| k.clone());
        let resets_by_type = map_inc(&p.resets, &c.resets);
        let opt_inc = |a: Option<f64>, b: Option<f64>| match b {
            Some(b) => inc(a.unwrap_or(b), b),
            None => 0.0,
        };
        let retrans = if c.retrans_bpf.is_some() {
            opt_inc(p.retrans_bpf, c.retrans_bpf)
        } else {
            opt_inc(p.retrans_snmp, c.retrans_snmp)
        };
        // The histogram over the interval: cumulative bucket increases.
        let cum: Vec<(f64, f64)> = c
            .read_latency
            .iter()
            .map(|&(le, v)| {
                let pv = p
                    .read_latency
                    .iter()
                    .find(|b| b.0 == le)
                    .map(|b| b.1)
                    .unwrap_or(0.0);
                (le, inc(pv, v))
            })
            .collect();
        let mut read_buckets = Vec::new();
        let mut below = 0.0;
        for &(le, v) in &cum {
            read_buckets.push((le, (v - below).max(0.0)));
            below = v;
        }
        rows.push(Row {
            key: key.clone(),
            new,
            rx_bytes: delta(sum[0], secs),
            tx_bytes: delta(sum[1], secs),
            rx_packets: delta(sum[2], secs),
            tx_packets: delta(sum[3], secs),
            drops: delta(drops, secs),
            drops_source,
            drop_reasons,
            top_reason,
            resets: delta(resets_by_type.values().sum(), secs),
            resets_by_type,
            retrans: delta(retrans, secs),
            established: c.established,
            listen_overflows: delta(opt_inc(p.listen_overflows, c.listen_overflows), secs),
            read_p99: quantile(0.99, &cum),
            read_buckets,
            qdisc_drops: delta(opt_inc(p.qdisc_drops, c.qdisc_drops), secs),
            devices,
        });
    }
    let e = &cur.exporter;
    let header = Header {
        version: e.version.clone(),
        netns_by_kind: e.netns_by_kind.clone(),
        probes_running: e
            .probes
            .iter()
            .filter(|(_, up)| **up)
            .map(|(n, _)| n.clone())
            .collect(),
        probes_failed: e
            .probes
            .iter()
            .filter(|(_, up)| !**up)
            .map(|(n, _)| n.clone())
            .collect(),
        events: delta(
            inc(prev.exporter.events_published, e.events_published),
            secs,
        ),
        events_lost: delta(inc(prev.exporter.events_lost, e.events_lost), secs),
    };
    Rows {
        interval: secs,
        header,
        rows,
    }
}

/// The columns the rows can be sorted by (and the view shows).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Column {
    Name,
    Kind,
    RxBytes,
    TxBytes,
    RxPackets,
    TxPackets,
    #[default]
    Drops,
    TopReason,
    Resets,
    Retrans,
    Established,
    ListenOverflows,
    ReadP99,
    QdiscDrops,
}

impl Column {
    pub const ALL: [Column; 14] = [
        Column::Kind,
        Column::Name,
        Column::RxBytes,
        Column::TxBytes,
        Column::RxPackets,
        Column::TxPackets,
        Column::Drops,
        Column::TopReason,
        Column::Resets,
        Column::Retrans,
        Column::Established,
        Column::ListenOverflows,
        Column::ReadP99,
        Column::QdiscDrops,
    ];

    /// The `--sort` name.
    pub fn name(self) -> &'static str {
        match self {
            Column::Name => "name",
            Column::Kind => "kind",
            Column::RxBytes => "rx_bytes",
            Column::TxBytes => "tx_bytes",
            Column::RxPackets => "rx_packets",
            Column::TxPackets => "tx_packets",
            Column::Drops => "drops",
            Column::TopReason => "reason",
            Column::Resets => "resets",
            Column::Retrans => "retrans",
            Column::Established => "estab",
            Column::ListenOverflows => "listen_overflows",
            Column::ReadP99 => "read_p99",
            Column::QdiscDrops => "qdisc_drops",
        }
    }

    pub fn parse(s: &str) -> Result<Column, String> {
        Column::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Column::ALL.iter().map(|c| c.name()).collect();
                format!("--sort: `{s}` is not one of {}", names.join(", "))
            })
    }
}

impl Row {
    fn number(&self, c: Column) -> f64 {
        match c {
            Column::RxBytes => self.rx_bytes.rate,
            Column::TxBytes => self.tx_bytes.rate,
            Column::RxPackets => self.rx_packets.rate,
            Column::TxPackets => self.tx_packets.rate,
            Column::Drops => self.drops.rate,
            Column::Resets => self.resets.rate,
            Column::Retrans => self.retrans.rate,
            Column::Established => self.established.unwrap_or(-1.0),
            Column::ListenOverflows => self.listen_overflows.rate,
            Column::ReadP99 => self.read_p99.unwrap_or(-1.0),
            Column::QdiscDrops => self.qdisc_drops.rate,
            Column::Name | Column::Kind | Column::TopReason => 0.0,
        }
    }
}

/// Sorts rows: numbers largest first, text A to Z; `reverse` flips; ties by name, then inode.
pub fn sort(rows: &mut [Row], by: Column, reverse: bool) {
    rows.sort_by(|a, b| {
        let o = match by {
            Column::Name => a.key.display().cmp(&b.key.display()),
            Column::Kind => a.key.kind.cmp(&b.key.kind),
            Column::TopReason => a.top_reason.cmp(&b.top_reason).reverse(),
            c => b.number(c).total_cmp(&a.number(c)),
        };
        let o = if reverse { o.reverse() } else { o };
        o.then_with(|| a.key.display().cmp(&b.key.display()))
            .then(a.key.netns.cmp(&b.key.netns))
    });
}

/// `--namespace` and `--pod` (or the view's `/` filter): regexes an entity must match.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Matched against the Kubernetes namespace.
    pub namespace: Option<regex::Regex>,
    /// Matched against the pod, or for other kinds the entity's name.
    pub pod: Option<regex::Regex>,
    /// The view's free filter: matched against kind, namespace, pod and name.
    pub any: Option<regex::Regex>,
}

impl Filter {
    pub fn matches(&self, k: &EntityKey) -> bool {
        let pod = if k.k8s_pod.is_empty() {
            &k.name
        } else {
            &k.k8s_pod
        };
        self.namespace
            .as_ref()
            .is_none_or(|r| r.is_match(&k.k8s_namespace))
            && self.pod.as_ref().is_none_or(|r| r.is_match(pod))
            && self.any.as_ref().is_none_or(|r| {
                r.is_match(&k.kind)
                    || r.is_match(&k.k8s_namespace)
                    || r.is_match(&k.k8s_pod)
                    || r.is_match(&k.name)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::expo;

    const FIRST: &str = include_str!("testdata/first.prom");
    const SECOND: &str = include_str!("testdata/second.prom");

    fn snap(t: &str) -> Snapshot {
        Snapshot::from_samples(&expo::parse(t).unwrap())
    }

    #[test]
    fn quantile_like_prometheus() {
        // 100 observations: 90 ≤ 1 ms, 9 in (1, 10] ms, 1 in (10, 100] ms.
        let b = [
            (0.001, 90.0),
            (0.01, 99.0),
            (0.1, 100.0),
            (f64::INFINITY, 100.0),
        ];
        // rank 99 is the last of the (1, 10] ms bucket: its upper bound.
        assert_eq!(quantile(0.99, &b), Some(0.001 + (0.01 - 0.001) * 9.0 / 9.0));
        // rank 50 in the first bucket: 0 + 1 ms × 50/90.
        assert_eq!(quantile(0.5, &b), Some(0.001 * 50.0 / 90.0));
        // rank 94.5: 1 ms + 9 ms × 4.5/9.
        assert_eq!(
            quantile(0.945, &b),
            Some(0.001 + (0.01 - 0.001) * (94.5 - 90.0) / 9.0)
        );
        // In the +Inf bucket: the highest finite bound.
        assert_eq!(
            quantile(0.99, &[(0.001, 1.0), (f64::INFINITY, 10.0)]),
            Some(0.001)
        );
        assert_eq!(quantile(0.99, &[(0.001, 0.0), (f64::INFINITY, 0.0)]), None);
        assert_eq!(quantile(0.99, &[]), None);
    }

    /// Two pages captured from the real exporter about a second apart (netdev, tcp, udp,
    /// tcpext, qdisc, packetloss, tcpreset, socketlatency; cut to the exporter's own series and
    /// the two test namespaces), while `nsacap` sent `nsbcap` (IPv6 off: nothing else on the
    /// link) 25 UDP datagrams into an iptables DROP and made 3 connects to a closed port.
    #[test]
    fn rates_from_captured_pages() {
        let a = snap(FIRST);
        let b = snap(SECOND);
        let rows = compare(&a, &b, 2.0);
        let find = |prefix: &str| {
            rows.rows
                .iter()
                .find(|r| r.key.name.starts_with(prefix) && r.key.kind == "named")
                .unwrap_or_else(|| panic!("no row {prefix}"))
        };
        let dst = find("nsb");
        assert!(!dst.new);
        assert_eq!(dst.drops_source, "packetloss");
        // The 25 datagrams, and the 3 SYNs that found no socket.
        assert_eq!(dst.drops.delta, 28.0);
        assert_eq!(dst.drops.rate, 14.0);
        assert_eq!(dst.top_reason.as_deref(), Some("NETFILTER_DROP"));
        assert_eq!(dst.drop_reasons["NETFILTER_DROP"], 25.0);
        assert_eq!(dst.drop_reasons["NO_SOCKET"], 3.0);
        assert_eq!(dst.resets_by_type["NOSOCK"], 3.0);
        assert_eq!(dst.resets.delta, 3.0);
        // 25 UDP datagrams of 43 bytes and 3 SYNs of 74 bytes in; 3 RSTs of 54 bytes out.
        assert_eq!(dst.rx_packets.delta, 28.0);
        assert_eq!(dst.rx_bytes.delta, 25.0 * 43.0 + 3.0 * 74.0);
        assert_eq!(dst.rx_bytes.rate, (25.0 * 43.0 + 3.0 * 74.0) / 2.0);
        assert_eq!(dst.tx_packets.delta, 3.0);
        assert_eq!(dst.tx_bytes.delta, 3.0 * 54.0);
        let src = find("nsa");
        assert_eq!(src.tx_packets.delta, 28.0);
        assert_eq!(src.resets_by_type["RECEIVE"], 3.0);
        assert_eq!(src.drops.delta, 0.0);
        assert_eq!(src.top_reason, None);
        assert_eq!(rows.header.version, env!("CARGO_PKG_VERSION"));
        assert!(rows
            .header
            .probes_running
            .contains(&"packetloss".to_string()));
        assert!(rows.header.netns_by_kind["named"] >= 2.0);
    }

    #[test]
    fn counter_reset_and_new_entities() {
        let k = "netns=\"7\",kind=\"named\",k8s_namespace=\"\",k8s_pod=\"\",name=\"x\"";
        let p1 = format!("netsleuth_netdev_receive_packets_total{{{k},device=\"eth0\"}} 100\nnetsleuth_tcp_retrans_segs_total{{{k}}} 5\n");
        let p2 = format!("netsleuth_netdev_receive_packets_total{{{k},device=\"eth0\"}} 30\nnetsleuth_tcp_retrans_segs_total{{{k}}} 9\nnetsleuth_netdev_receive_packets_total{{netns=\"8\",kind=\"named\",name=\"y\",device=\"lo\"}} 4\n");
        let r = compare(&snap(&p1), &snap(&p2), 1.0);
        assert_eq!(r.rows.len(), 2);
        assert_eq!(r.rows[0].rx_packets.delta, 30.0, "reset: counts from 0");
        assert_eq!(r.rows[0].retrans.delta, 4.0);
        assert_eq!(r.rows[0].drops_source, "netdev");
        // With the packetloss probe up, an entity without its series had no kernel drops.
        let up = "netsleuth_probe_up{probe=\"packetloss\"} 1\n";
        let r = compare(
            &snap(&format!("{up}{p1}")),
            &snap(&format!("{up}{p2}")),
            1.0,
        );
        assert_eq!(r.rows[0].drops_source, "packetloss");
        assert!(r.rows[1].new);
        assert_eq!(r.rows[1].rx_packets.delta, 0.0);
    }

    #[test]
    fn sorting_and_filters() {
        let mut rows: Vec<Row> = ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(i, n)| Row {
                key: EntityKey {
                    netns: i as u64,
                    kind: "named".into(),
                    name: n.to_string(),
                    ..Default::default()
                },
                drops: delta([5.0, 9.0, 1.0][i], 1.0),
                ..Default::default()
            })
            .collect();
        sort(&mut rows, Column::Drops, false);
        let names: Vec<&str> = rows.iter().map(|r| r.key.name.as_str()).collect();
        assert_eq!(names, ["b", "a", "c"]);
        sort(&mut rows, Column::Name, true);
        let names: Vec<&str> = rows.iter().map(|r| r.key.name.as_str()).collect();
        assert_eq!(names, ["c", "b", "a"]);
        let f = Filter {
            pod: Some(regex::Regex::new("^b$").unwrap()),
            ..Default::default()
        };
        assert_eq!(rows.iter().filter(|r| f.matches(&r.key)).count(), 1);
        assert!(Column::parse("nope").unwrap_err().contains("drops"));
    }
}
