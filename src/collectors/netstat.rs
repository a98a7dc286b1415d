//! The `tcpext` and `ipext` probes: `/proc/<pid>/net/netstat` (groups TcpExt, IpExt, MPTcpExt,
//! in the same header/value line pairs as `snmp`). Every field is exportable as a counter
//! `netsleuth_tcpext_<snake>_total` / `netsleuth_ipext_<snake>_total`; the `fields` regex over
//! `Group_Field` picks which. The `mptcp` probe (off by default) exports the MPTcpExt group the
//! same way (`netsleuth_mptcpext_<snake>_total`, every field by default), so every group the
//! kernel prints in this file is exportable, as node_exporter's netstat collector allows.

use super::names::NameCache;
use super::parse::{parse_pairs, Stat};
use super::snmp::make_entry;
use super::{CollectError, Collector, FieldFilter, NetnsCtx, ProbeArgs, ProbeSpec};
use crate::model::{MetricKind, Sink};

pub const DEFAULT_TCPEXT: &str = "TcpExt_(Listen.*|Syncookies.*|TCPSynRetrans|TCPTimeouts|TCPOFOQueue|TCPRcvQDrop|TCPFastRetrans|TCPRetransFail|TCPAbortOn.*|TCPAbortFailed|TCPACKSkipped.*|TCPMemoryPressures|TCPMemoryPressuresChrono|PAWSActive|PAWSEstab|EmbryonicRsts|TCPWinProbe|TCPKeepAlive|TCPMTUPFail|TCPMTUPSuccess|TCPZeroWindowDrop|TCPBacklogDrop|PFMemallocDrop|TCPWqueueTooBig|TCPLossProbes|TCPReqQFullDrop|TCPReqQFullDoCookies)";
/// Of the ECN counters only InCEPkts (congestion experienced) is on by default: NoECT, ECT(0)
/// and ECT(1) tally codepoints on healthy traffic.
pub const DEFAULT_IPEXT: &str =
    "IpExt_(InOctets|OutOctets|InNoRoutes|InTruncatedPkts|InCsumErrors|InCEPkts)";

pub const DEFAULT_MPTCPEXT: &str = "MPTcpExt_.*";

/// Parse `/proc/net/netstat`: see [`parse_pairs`].
pub fn parse_netstat(data: &[u8]) -> Result<Vec<Stat<'_>>, String> {
    parse_pairs(data)
}

struct NetstatProbe {
    name: &'static str,
    group: &'static str,
    filter: FieldFilter,
    names: NameCache,
}

impl Collector for NetstatProbe {
    fn name(&self) -> &'static str {
        self.name
    }

    fn collect(&self, ctx: &NetnsCtx, out: &mut dyn Sink) -> Result<(), CollectError> {
        let stats = ctx.stats("netstat", parse_netstat)?;
        let make =
            |g: &str, f: &str| make_entry(&self.filter, g, f, kind(g, f), "/proc/net/netstat");
        let mut cur = self.names.cursor();
        for s in stats.iter().filter(|s| s.group == self.group) {
            cur.emit(s.group, s.field, s.value, &[], out, &make);
        }
        Ok(())
    }
}

/// Every field is a counter but MPTcpExt's MPCurrEstab, the number of MPTCP connections now
/// established (the kernel increments and decrements it).
fn kind(group: &str, field: &str) -> MetricKind {
    if group == "MPTcpExt" && field == "MPCurrEstab" {
        MetricKind::Gauge
    } else {
        MetricKind::Counter
    }
}

fn build(
    args: &mut ProbeArgs,
    name: &'static str,
    group: &'static str,
    default: &str,
) -> Result<Box<dyn Collector>, String> {
    let filter = FieldFilter::from_args(args, default)?;
    std::mem::take(args).finish()?;
    Ok(Box::new(NetstatProbe {
        name,
        group,
        filter,
        names: NameCache::new(),
    }))
}

fn available() -> Result<(), String> {
    super::require_file("/proc/self/net/netstat")
}

pub fn specs() -> Vec<ProbeSpec> {
    vec![
        ProbeSpec {
            name: "tcpext",
            description:
                "Extended TCP counters (TcpExt in /proc/net/netstat), every field exportable",
            default_fields: Some(DEFAULT_TCPEXT),
            default_enabled: true,
            build: |a| build(a, "tcpext", "TcpExt", DEFAULT_TCPEXT),
            available,
        },
        ProbeSpec {
            name: "ipext",
            description:
                "Extended IP counters (IpExt in /proc/net/netstat), every field exportable",
            default_fields: Some(DEFAULT_IPEXT),
            default_enabled: true,
            build: |a| build(a, "ipext", "IpExt", DEFAULT_IPEXT),
            available,
        },
        ProbeSpec {
            name: "mptcp",
            description:
                "Multipath TCP counters (MPTcpExt in /proc/net/netstat, kernels with CONFIG_MPTCP), every field by default",
            default_fields: Some(DEFAULT_MPTCPEXT),
            default_enabled: false,
            build: |a| build(a, "mptcp", "MPTcpExt", DEFAULT_MPTCPEXT),
            available,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use crate::model::Value;

    #[test]
    fn netstat_6_18_real() {
        let d = fixture("6.18/net/netstat");
        let s = parse_netstat(&d).unwrap();
        assert_eq!(s.iter().filter(|x| x.group == "TcpExt").count(), 135);
        assert_eq!(s.iter().filter(|x| x.group == "IpExt").count(), 18);
        assert_eq!(s.iter().filter(|x| x.group == "MPTcpExt").count(), 76);
        assert_eq!(get(&s, "TcpExt", "ListenDrops"), Some(Value::U64(0)));
        assert_eq!(get(&s, "IpExt", "InOctets"), Some(Value::U64(276)));
    }

    #[test]
    fn netstat_4_19_format() {
        let d = fixture("4.19/net/netstat");
        let s = parse_netstat(&d).unwrap();
        assert_eq!(get(&s, "TcpExt", "ListenOverflows"), Some(Value::U64(17)));
        assert_eq!(get(&s, "TcpExt", "ListenDrops"), Some(Value::U64(19)));
        assert_eq!(get(&s, "TcpExt", "TCPSynRetrans"), Some(Value::U64(321)));
        assert_eq!(get(&s, "TcpExt", "TCPMigrateReqSuccess"), None);
        assert_eq!(get(&s, "IpExt", "InCEPkts"), Some(Value::U64(2)));
        assert_eq!(s.iter().filter(|x| x.group == "MPTcpExt").count(), 0);
    }

    #[test]
    fn default_and_all_renderings() {
        let c = build_probe(specs(), "tcpext", "");
        let (text, r) = run(c.as_ref(), "4.19", &[]);
        r.unwrap();
        lint_rendering(&text);
        assert!(text.contains("\nnetsleuth_tcpext_listen_drops_total 19\n"));
        assert!(text.contains("\nnetsleuth_tcpext_listen_overflows_total 17\n"));
        assert!(text.contains("\nnetsleuth_tcpext_tcp_syn_retrans_total 321\n"));
        assert!(!text.contains("delayed_acks"));
        let c = build_probe(specs(), "ipext", "");
        let (text, _) = run(c.as_ref(), "4.19", &[]);
        assert!(text.contains("\nnetsleuth_ipext_in_ce_pkts_total 2\n"));
        assert!(text.contains("\nnetsleuth_ipext_in_octets_total 123456789012\n"));
        for (p, n) in [("tcpext", 135), ("ipext", 18)] {
            let c = build_probe(specs(), p, "{fields: '.*'}");
            let (text, r) = run(c.as_ref(), "6.18", &[]);
            r.unwrap();
            lint_rendering(&text);
            assert_eq!(samples(&text).len(), n);
        }
    }

    #[test]
    fn mptcp_every_field_by_default() {
        // Captured on 6.18 in a fresh namespace after three MPTCP connections over loopback
        // (IPPROTO_MPTCP sockets, one accepted and closed each).
        let c = build_probe(specs(), "mptcp", "");
        let (text, r) = run(c.as_ref(), "6.18-mptcp", &[]);
        r.unwrap();
        lint_rendering(&text);
        let s = samples(&text);
        assert_eq!(s.len(), 76);
        assert!(
            s.iter().all(|l| l.starts_with("netsleuth_mptcpext_")),
            "{s:?}"
        );
        for want in [
            "netsleuth_mptcpext_mp_capable_synrx_total 3",
            "netsleuth_mptcpext_mp_capable_syntx_total 3",
            "netsleuth_mptcpext_mp_capable_synackrx_total 3",
            "netsleuth_mptcpext_mp_capable_ackrx_total 3",
            "netsleuth_mptcpext_mp_curr_estab 0",
            "netsleuth_mptcpext_mp_join_syn_rx_total 0",
        ] {
            assert!(s.contains(&want), "{want} not in {s:?}");
        }
        assert_eq!(s.iter().filter(|l| !l.ends_with(" 0")).count(), 4);
        // A kernel without MPTCP (4.19) prints no MPTcpExt line: nothing, no error.
        let (text, r) = run(c.as_ref(), "4.19", &[]);
        r.unwrap();
        assert_eq!(samples(&text), Vec::<&str>::new());
        let c = build_probe(specs(), "mptcp", "{fields: 'MPTcpExt_MPCapableSYNRX'}");
        let (text, _) = run(c.as_ref(), "6.18-mptcp", &[]);
        assert_eq!(
            samples(&text),
            vec!["netsleuth_mptcpext_mp_capable_synrx_total 3"]
        );
    }

    #[test]
    fn garbage() {
        for d in [
            &b""[..],
            b"TcpExt: A B\nTcpExt: 1\n",
            b"\x00\xff",
            b"TcpExt:\nTcpExt:\n",
        ] {
            assert!(parse_netstat(d).is_err(), "{d:?}");
        }
        let d = fixture("6.18/net/netstat");
        for cut in [1, 100, d.len() / 2, d.len() - 3] {
            let _ = parse_netstat(&d[..cut]);
        }
    }
}
