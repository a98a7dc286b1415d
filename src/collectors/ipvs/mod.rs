//! The `ipvs` probe: IP Virtual Server statistics, per network namespace that has IPVS state
//! (kube-proxy in IPVS mode keeps it in the host namespace).
//!
//! Three sources, each for what only it has:
//!
//! - `/proc/net/ip_vs_stats`: the namespace's totals (connections scheduled, packets and bytes
//!   in and out), printed in **hexadecimal**; columns are found by their two-line header
//!   (`Total Conns`, `Incoming Packets`, ...), so a swapped column cannot be exported under the
//!   wrong name (KubeSkoop's exporter filled `incomingpackets` with the incoming bytes). The
//!   per-second rate estimates below them are left out (rates are Prometheus' job), and so is
//!   `ip_vs_stats_percpu`, which splits the same counters by CPU.
//! - `/proc/net/ip_vs`: every virtual service and its destinations with weight and active /
//!   inactive connection counts (node_exporter's `ipvs_backend_*`). It has no packet or byte
//!   counters per service or destination.
//! - Generic netlink, family `IPVS` (`IPVS_CMD_GET_SERVICE` / `IPVS_CMD_GET_DEST` dumps, the
//!   `*_ATTR_STATS64` nests): connections, packets and bytes per service and per destination.
//!   Needs the namespace entered; on by default, `netlink: false` turns it off (then the probe
//!   never enters namespaces).
//!
//! IPVS sums its per-CPU counters into what procfs and netlink show from its rate estimator,
//! every 2 seconds: the figures lag the traffic by up to that much.
//!
//! Where IPVS is not loaded the files are absent: the probe reports "not available" once and
//! exports nothing. A namespace with no virtual service and all-zero totals (every pod's, once
//! the module is loaded) exports nothing either.

pub mod genl;
pub mod procfs;

pub use genl::{
    parse_dest_msg, parse_dumps, parse_service_msg, IpvsNl, NlDest, NlService,
    IPVS_CMD_DEL_SERVICE, IPVS_CMD_NEW_DEST, IPVS_CMD_NEW_SERVICE, IP_VS_CONN_F_MASQ,
};
pub use procfs::{parse_services, parse_stats, Backend, Counters, Service, ServiceKey};

use super::netlink::NlError;
use super::{CollectError, Collector, NetnsCtx, ProbeArgs, ProbeSpec};
use crate::model::{MetricKind, Sink, Value};

// ---------------------------------------------------------------------------------------------
// The collector.

/// Everything one namespace shows, gathered before emitting.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub totals: Counters,
    pub services: Vec<Service>,
    /// From netlink (empty when `netlink: false`).
    pub nl: Vec<(NlService, Vec<NlDest>)>,
}

fn emit_counters(
    out: &mut dyn Sink,
    prefix: &str,
    what: &str,
    c: &Counters,
    labels: &[(&str, &str)],
) {
    for (suffix, v, help) in c.fields() {
        out.emit(
            &format!("{prefix}{suffix}"),
            &format!("{help} by IPVS {what}."),
            MetricKind::Counter,
            labels,
            Value::U64(v),
        );
    }
}

/// Emit a namespace's IPVS figures (nothing when it has no service and zero totals).
pub fn emit(s: &Snapshot, out: &mut dyn Sink) {
    if s.services.is_empty() && s.nl.is_empty() && s.totals.is_zero() {
        return;
    }
    emit_counters(
        out,
        "netsleuth_ipvs_",
        "in this namespace (/proc/net/ip_vs_stats)",
        &s.totals,
        &[],
    );
    for svc in &s.services {
        let l = svc.key.labels();
        for b in &svc.backends {
            let port = b.port.to_string();
            let labels = [
                (l[0].0, l[0].1.as_str()),
                (l[1].0, l[1].1.as_str()),
                (l[2].0, l[2].1.as_str()),
                (l[3].0, l[3].1.as_str()),
                ("remote_address", b.address.as_str()),
                ("remote_port", port.as_str()),
            ];
            for (name, v, help) in [
                (
                    "netsleuth_ipvs_backend_connections_active",
                    b.active,
                    "Active connections",
                ),
                (
                    "netsleuth_ipvs_backend_connections_inactive",
                    b.inactive,
                    "Inactive connections",
                ),
                ("netsleuth_ipvs_backend_weight", b.weight, "Weight"),
            ] {
                out.emit(
                    name,
                    &format!("{help} of the IPVS destination (/proc/net/ip_vs)."),
                    MetricKind::Gauge,
                    &labels,
                    Value::I64(v),
                );
            }
        }
    }
    for (svc, dests) in &s.nl {
        let l = svc.key.labels();
        let labels = [
            (l[0].0, l[0].1.as_str()),
            (l[1].0, l[1].1.as_str()),
            (l[2].0, l[2].1.as_str()),
            (l[3].0, l[3].1.as_str()),
        ];
        emit_counters(
            out,
            "netsleuth_ipvs_service_",
            "for the virtual service (generic netlink IPVS)",
            &svc.counters,
            &labels,
        );
        for d in dests {
            let port = d.port.to_string();
            let labels = [
                labels[0],
                labels[1],
                labels[2],
                labels[3],
                ("remote_address", d.address.as_str()),
                ("remote_port", port.as_str()),
            ];
            emit_counters(
                out,
                "netsleuth_ipvs_backend_",
                "for the destination (generic netlink IPVS)",
                &d.counters,
                &labels,
            );
        }
    }
}

/// Read the namespace's netlink figures (the calling thread must be in it).
pub fn netlink_snapshot() -> Result<Vec<(NlService, Vec<NlDest>)>, NlError> {
    let Some(mut nl) = IpvsNl::open()? else {
        return Ok(Vec::new());
    };
    let services = nl.services()?;
    let mut out = Vec::with_capacity(services.len());
    for s in services {
        let d = nl.dests(&s)?;
        out.push((s, d));
    }
    Ok(out)
}

struct IpvsProbe {
    netlink: bool,
}

impl Collector for IpvsProbe {
    fn name(&self) -> &'static str {
        "ipvs"
    }

    fn needs_entered(&self) -> bool {
        self.netlink
    }

    fn collect(&self, ctx: &NetnsCtx, out: &mut dyn Sink) -> Result<(), CollectError> {
        let path = |f: &str| ctx.net_dir.join(f).display().to_string();
        let data = ctx.read_net("ip_vs_stats")?;
        let totals = parse_stats(&data)
            .map_err(|e| CollectError::Failed(format!("parsing {}: {e}", path("ip_vs_stats"))))?;
        let data = ctx.read_net("ip_vs")?;
        let services = parse_services(&data)
            .map_err(|e| CollectError::Failed(format!("parsing {}: {e}", path("ip_vs"))))?;
        let mut snap = Snapshot {
            totals,
            services,
            nl: Vec::new(),
        };
        // The engine enters the namespace for this probe; a directory of fixture files has
        // only the procfs part.
        let mut nl_err = None;
        if self.netlink && ctx.entered && !snap.services.is_empty() {
            match netlink_snapshot() {
                Ok(nl) => snap.nl = nl,
                Err(e) => nl_err = Some(e),
            }
        }
        emit(&snap, out);
        match nl_err {
            // The procfs figures are out; the error says what is missing.
            Some(e) => Err(CollectError::Failed(format!(
                "generic netlink IPVS dump: {e}"
            ))),
            None => Ok(()),
        }
    }
}

fn build(args: &mut ProbeArgs) -> Result<Box<dyn Collector>, String> {
    let netlink = args.take_bool("netlink")?.unwrap_or(true);
    std::mem::take(args).finish()?;
    Ok(Box::new(IpvsProbe { netlink }))
}

fn available() -> Result<(), String> {
    super::require_file("/proc/self/net/ip_vs_stats")
        .map_err(|e| format!("{e} (the ip_vs module is not loaded)"))
}

pub fn specs() -> Vec<ProbeSpec> {
    vec![ProbeSpec::new(
        "ipvs",
        "IPVS totals (/proc/net/ip_vs_stats), destinations (/proc/net/ip_vs) and per-service/destination counters (generic netlink IPVS) where IPVS has state; arg netlink",
        None,
        build,
        available,
    ).off_by_default()]
}

#[cfg(test)]
mod tests {
    use super::genl::tests::service_msg;
    use super::procfs::tests::IP_VS;
    use super::*;

    #[test]
    fn rendering() {
        let services = parse_services(IP_VS).unwrap();
        let nl_svc = parse_service_msg(&service_msg(Some([1, 5, 4, 640, 600]), None)).unwrap();
        let snap = Snapshot {
            totals: Counters {
                conns: 1,
                inpkts: 5,
                outpkts: 4,
                inbytes: 640,
                outbytes: 600,
            },
            services,
            nl: vec![(
                nl_svc,
                vec![NlDest {
                    address: "198.18.0.1".into(),
                    port: 7777,
                    counters: Counters {
                        conns: 1,
                        inpkts: 5,
                        outpkts: 4,
                        inbytes: 640,
                        outbytes: 600,
                    },
                }],
            )],
        };
        let mut f = crate::model::Families::new();
        emit(&snap, &mut f.sink(""));
        let mut text = String::new();
        f.render(&mut text);
        crate::collectors::testutil::lint_rendering(&text);
        for want in [
            "netsleuth_ipvs_connections_total 1",
            "netsleuth_ipvs_incoming_packets_total 5",
            "netsleuth_ipvs_outgoing_packets_total 4",
            "netsleuth_ipvs_incoming_bytes_total 640",
            "netsleuth_ipvs_outgoing_bytes_total 600",
            "netsleuth_ipvs_backend_connections_active{local_address=\"198.18.5.1\",local_port=\"80\",local_mark=\"\",proto=\"TCP\",remote_address=\"198.18.0.2\",remote_port=\"8080\"} 3",
            "netsleuth_ipvs_backend_connections_inactive{local_address=\"198.18.5.1\",local_port=\"80\",local_mark=\"\",proto=\"TCP\",remote_address=\"198.18.0.2\",remote_port=\"8080\"} 7",
            "netsleuth_ipvs_backend_weight{local_address=\"\",local_port=\"0\",local_mark=\"16\",proto=\"FWM\",remote_address=\"198.18.0.4\",remote_port=\"0\"} 5",
            "netsleuth_ipvs_service_incoming_packets_total{local_address=\"198.18.5.1\",local_port=\"5353\",local_mark=\"\",proto=\"UDP\"} 5",
            "netsleuth_ipvs_service_incoming_bytes_total{local_address=\"198.18.5.1\",local_port=\"5353\",local_mark=\"\",proto=\"UDP\"} 640",
            "netsleuth_ipvs_backend_outgoing_packets_total{local_address=\"198.18.5.1\",local_port=\"5353\",local_mark=\"\",proto=\"UDP\",remote_address=\"198.18.0.1\",remote_port=\"7777\"} 4",
        ] {
            assert!(text.lines().any(|l| l == want), "{want} not in\n{text}");
        }
        // Nothing for a namespace without IPVS state.
        let mut f = crate::model::Families::new();
        emit(&Snapshot::default(), &mut f.sink(""));
        let mut text = String::new();
        f.render(&mut text);
        assert_eq!(text, "");
    }

    /// What the kernel-matrix guests showed at the end of `metrics.ipvs` (one UDP service
    /// 198.18.6.1:5353, one masq destination 198.18.6.2:7777, 5 requests and 5 answers of
    /// 128 bytes at the IP layer), captured with NETSLEUTH_SELFTEST_CAPTURE.
    #[test]
    fn captured_from_matrix_kernels() {
        let want = Counters {
            conns: 1,
            inpkts: 5,
            outpkts: 5,
            inbytes: 640,
            outbytes: 640,
        };
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        for k in ["5.10", "6.1", "6.12"] {
            let net = root.join(format!("procfs/ipvs-{k}/net"));
            let read = |p: std::path::PathBuf| {
                std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            };
            assert_eq!(
                parse_stats(&read(net.join("ip_vs_stats"))).unwrap(),
                want,
                "{k}"
            );
            let services = parse_services(&read(net.join("ip_vs"))).unwrap();
            assert_eq!(services.len(), 1, "{k}");
            assert_eq!(
                services[0].key,
                ServiceKey {
                    proto: "UDP".into(),
                    address: "198.18.6.1".into(),
                    port: 5353,
                    fwmark: 0
                }
            );
            assert_eq!(services[0].scheduler, "rr");
            let b = &services[0].backends;
            assert_eq!(b.len(), 1);
            assert_eq!((b[0].address.as_str(), b[0].port), ("198.18.6.2", 7777));
            assert_eq!((b[0].forward.as_str(), b[0].weight), ("Masq", 1));
            // UDP connections count as inactive until they expire.
            assert_eq!(b[0].active + b[0].inactive, 1, "{k}: {:?}", b[0]);
            let nl = root.join(format!("netlink/ipvs-{k}"));
            let (svcs, dests) = parse_dumps(
                &read(nl.join("genl_services.bin")),
                &read(nl.join("genl_dests.bin")),
            )
            .unwrap();
            assert_eq!(svcs.len(), 1);
            assert_eq!(svcs[0].key, services[0].key);
            assert_eq!(svcs[0].counters, want, "{k} service");
            assert_eq!(dests.len(), 1);
            assert_eq!(
                (dests[0].address.as_str(), dests[0].port),
                ("198.18.6.2", 7777)
            );
            assert_eq!(dests[0].counters, want, "{k} destination");
            // The probe over the captured files (procfs part: a directory is not entered).
            let ctx = NetnsCtx::new(7, net.clone(), std::path::Path::new("/proc"), false, &[]);
            let c = build_probe_default();
            let mut f = crate::model::Families::new();
            c.collect(&ctx, &mut f.sink("")).unwrap();
            let mut text = String::new();
            f.render(&mut text);
            assert!(
                text.contains("\nnetsleuth_ipvs_incoming_packets_total 5\n"),
                "{text}"
            );
            assert!(
                text.contains("\nnetsleuth_ipvs_incoming_bytes_total 640\n"),
                "{text}"
            );
            assert!(
                text.contains("\nnetsleuth_ipvs_connections_total 1\n"),
                "{text}"
            );
        }
    }

    fn build_probe_default() -> Box<dyn Collector> {
        (specs()[0].build)(&mut ProbeArgs::new("ipvs")).unwrap()
    }
}
