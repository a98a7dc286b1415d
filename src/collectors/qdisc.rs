//! `qdisc`: per-qdisc statistics from an rtnetlink `RTM_GETQDISC` dump.
//!
//! One `NETLINK_ROUTE` socket per namespace dumps the qdiscs, then the links on the same
//! socket, so device names are resolved in the namespace the qdiscs belong to (KubeSkoop
//! resolved ifindexes in the exporter's own namespace and mislabelled or dropped pod qdiscs).
//! Every qdisc, root and children, is one series per (device, handle, parent): nothing is
//! summed, since sums double-count hierarchies (KubeSkoop summed `mq` with its children).
//!
//! Statistics come from the nested `TCA_STATS2` (`TCA_STATS_BASIC` = 1, `TCA_STATS_QUEUE` = 3,
//! `TCA_STATS_PKT64` = 8; KubeSkoop's constants were off by an `iota` and never matched),
//! falling back to the legacy `TCA_STATS` only when `TCA_STATS2` is absent.
//!
//! Why not `TcMessage::parse` from netlink-packet-route: it also decodes `TCA_OPTIONS` and
//! `TCA_XSTATS` per qdisc kind, so a kind whose options it decodes differently (or a newer
//! kernel's layout) would fail the whole message and lose its statistics, and it allocates a
//! tree per qdisc. We use the crate's header, attribute iterator and stats structs
//! (`TcHeader`, `NlasIterator`, `TcStatsBasic`, `TcStatsQueue`, `TcStats`) and pick the few
//! attributes we need. The crate does not decode `TCA_STATS_PKT64` (it lands in
//! `TcStats2::Other`), so that one 8-byte value is read by hand.

use std::mem::size_of;

use netlink_packet_core::{parse_string, NlasIterator};
use netlink_packet_route::link::LinkMessageBuffer;
use netlink_packet_route::link::{LinkAttribute, LinkExtentMask, LinkHeader, LinkMessage};
use netlink_packet_route::tc::{TcHeader, TcMessage, TcMessageBuffer};
use netlink_packet_route::tc::{TcStats, TcStatsBasic, TcStatsQueue};
use netlink_packet_route::RouteNetlinkMessage;

use super::netlink::{walk, DumpSocket, NlError};
use super::{CollectError, Collector, NetnsCtx, ProbeArgs, ProbeSpec};
use crate::model::{MetricKind, Sink, Value};

const RTM_NEWLINK: u16 = 16;
const RTM_NEWQDISC: u16 = 36;

const IFLA_IFNAME: u16 = 3;

const TCA_KIND: u16 = 1;
const TCA_STATS: u16 = 3;
const TCA_STATS2: u16 = 7;

const TCA_STATS_BASIC: u16 = 1;
const TCA_STATS_QUEUE: u16 = 3;
const TCA_STATS_BASIC_HW: u16 = 7;
const TCA_STATS_PKT64: u16 = 8;

const TC_H_ROOT: u32 = 0xffff_ffff;

/// A qdisc's counters and gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QdiscStats {
    pub bytes: u64,
    pub packets: u64,
    pub drops: u64,
    pub requeues: u64,
    pub overlimits: u64,
    pub qlen: u64,
    pub backlog: u64,
}

/// One qdisc of the dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qdisc {
    pub ifindex: i32,
    pub handle: u32,
    pub parent: u32,
    /// `TCA_KIND` (`tbf`, `htb`, `ingress`...).
    pub kind: String,
    pub stats: QdiscStats,
    /// Where the stats came from: `TCA_STATS2` (true) or legacy `TCA_STATS` (false). A qdisc
    /// with neither reports zeros.
    pub from_stats2: bool,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Parse the nested `TCA_STATS2` attribute value.
fn parse_stats2(value: &[u8]) -> Result<QdiscStats, String> {
    let mut s = QdiscStats::default();
    // TCA_STATS_PKT64 follows the basic block it widens (software or hardware).
    let mut last_basic_is_sw = false;
    for nla in NlasIterator::new(value) {
        let nla = nla.map_err(|e| format!("TCA_STATS2: {e}"))?;
        match nla.kind() {
            TCA_STATS_BASIC => {
                let b = TcStatsBasic::parse(nla.value())
                    .map_err(|e| format!("TCA_STATS_BASIC: {e}"))?;
                s.bytes = b.bytes;
                s.packets = u64::from(b.packets);
                last_basic_is_sw = true;
            }
            TCA_STATS_BASIC_HW => {
                // Offloaded part, already included in TCA_STATS_BASIC for qdiscs; checked
                // for well-formedness only.
                TcStatsBasic::parse(nla.value()).map_err(|e| format!("TCA_STATS_BASIC_HW: {e}"))?;
                last_basic_is_sw = false;
            }
            TCA_STATS_PKT64 => {
                let v: [u8; 8] = nla
                    .value()
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| {
                        format!("TCA_STATS_PKT64: {} bytes, want 8", nla.value().len())
                    })?;
                if last_basic_is_sw {
                    s.packets = u64::from_ne_bytes(v);
                }
            }
            TCA_STATS_QUEUE => {
                let q = TcStatsQueue::parse(nla.value())
                    .map_err(|e| format!("TCA_STATS_QUEUE: {e}"))?;
                s.qlen = u64::from(q.qlen);
                s.backlog = u64::from(q.backlog);
                s.drops = u64::from(q.drops);
                s.requeues = u64::from(q.requeues);
                s.overlimits = u64::from(q.overlimits);
            }
            _ => {} // rate estimators, app (xstats), padding
        }
    }
    Ok(s)
}

/// Parse the legacy `TCA_STATS` (`struct tc_stats`; it has no requeues).
fn parse_legacy(value: &[u8]) -> Result<QdiscStats, String> {
    let t = TcStats::parse(value).map_err(|e| format!("TCA_STATS: {e}"))?;
    Ok(QdiscStats {
        bytes: t.bytes,
        packets: u64::from(t.packets),
        drops: u64::from(t.drops),
        requeues: 0,
        overlimits: u64::from(t.overlimits),
        qlen: u64::from(t.qlen),
        backlog: u64::from(t.backlog),
    })
}

/// Parse one `RTM_NEWQDISC` message payload (`struct tcmsg` + attributes).
pub fn parse_qdisc_message(payload: &[u8]) -> Result<Qdisc, String> {
    let h = TcHeader::parse(payload).map_err(err)?;
    let attrs = &payload[size_of::<TcMessageBuffer>()..];
    let mut kind = None;
    let mut stats2 = None;
    let mut legacy = None;
    for nla in NlasIterator::new(attrs) {
        let nla = nla.map_err(err)?;
        match nla.kind() {
            TCA_KIND => {
                kind = Some(parse_string(nla.value()).map_err(|e| format!("TCA_KIND: {e}"))?)
            }
            TCA_STATS2 => stats2 = Some(parse_stats2(nla.value())?),
            TCA_STATS => legacy = Some(parse_legacy(nla.value())?),
            _ => {}
        }
    }
    let (stats, from_stats2) = match (stats2, legacy) {
        (Some(s), _) => (s, true),
        (None, Some(s)) => (s, false),
        (None, None) => (QdiscStats::default(), false),
    };
    Ok(Qdisc {
        ifindex: h.index,
        handle: u32::from(h.handle),
        parent: u32::from(h.parent),
        kind: kind.ok_or("no TCA_KIND")?,
        stats,
        from_stats2,
    })
}

/// Add the qdiscs in `bytes` (netlink messages of an `RTM_GETQDISC` dump) to `out`. Returns
/// `Ok(true)` at the dump's `NLMSG_DONE`.
pub fn parse_qdiscs(bytes: &[u8], out: &mut Vec<Qdisc>) -> Result<bool, NlError> {
    walk(bytes, None, &mut |ty, p| add_qdisc(ty, p, out))
}

fn add_qdisc(ty: u16, payload: &[u8], out: &mut Vec<Qdisc>) -> Result<(), String> {
    if ty != RTM_NEWQDISC {
        return Err(format!("expected RTM_NEWQDISC ({RTM_NEWQDISC})"));
    }
    out.push(parse_qdisc_message(payload)?);
    Ok(())
}

/// Add the (ifindex, name) pairs in `bytes` (netlink messages of an `RTM_GETLINK` dump) to
/// `out`. Returns `Ok(true)` at the dump's `NLMSG_DONE`.
pub fn parse_links(bytes: &[u8], out: &mut Vec<(u32, String)>) -> Result<bool, NlError> {
    walk(bytes, None, &mut |ty, p| add_link(ty, p, out))
}

fn add_link(ty: u16, payload: &[u8], out: &mut Vec<(u32, String)>) -> Result<(), String> {
    if ty != RTM_NEWLINK {
        return Err(format!("expected RTM_NEWLINK ({RTM_NEWLINK})"));
    }
    let h = LinkHeader::parse(payload).map_err(err)?;
    for nla in NlasIterator::new(&payload[size_of::<LinkMessageBuffer>()..]) {
        let nla = nla.map_err(err)?;
        if nla.kind() == IFLA_IFNAME {
            let name = parse_string(nla.value()).map_err(|e| format!("IFLA_IFNAME: {e}"))?;
            out.push((h.index, name));
            return Ok(());
        }
    }
    Err(format!("link {} has no IFLA_IFNAME", h.index))
}

/// A tc handle in tc's notation: `8001:`, `1:10`, `:1`, `root`, `none`.
pub fn tc_handle(h: u32) -> String {
    let (maj, min) = (h >> 16, h & 0xffff);
    if h == TC_H_ROOT {
        "root".into()
    } else if h == 0 {
        "none".into()
    } else if maj == 0 {
        format!(":{min:x}")
    } else if min == 0 {
        format!("{maj:x}:")
    } else {
        format!("{maj:x}:{min:x}")
    }
}

/// A qdisc's own handle as `tc qdisc show` prints it: the major number and a colon (`0:` for
/// the handle-less `noqueue`).
pub fn qdisc_handle(h: u32) -> String {
    if h & 0xffff == 0 {
        format!("{:x}:", h >> 16)
    } else {
        tc_handle(h)
    }
}

/// Resolve devices, drop qdiscs of links that vanished between the two dumps and any
/// duplicate (device, handle, parent), and emit.
pub fn emit(qdiscs: &mut [Qdisc], links: &mut [(u32, String)], out: &mut dyn Sink) {
    links.sort_unstable_by_key(|l| l.0);
    let mut seen: Vec<(i32, u32, u32)> = Vec::with_capacity(qdiscs.len());
    for q in qdiscs.iter() {
        let Ok(i) = links.binary_search_by_key(&(q.ifindex as u32), |l| l.0) else {
            continue;
        };
        let key = (q.ifindex, q.handle, q.parent);
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        let handle = qdisc_handle(q.handle);
        let parent = tc_handle(q.parent);
        let labels = [
            ("device", links[i].1.as_str()),
            ("qdisc_kind", q.kind.as_str()),
            ("handle", handle.as_str()),
            ("parent", parent.as_str()),
        ];
        let s = &q.stats;
        let c = MetricKind::Counter;
        let g = MetricKind::Gauge;
        #[rustfmt::skip]
        let samples: [(&str, &str, MetricKind, u64); 7] = [
            ("netsleuth_qdisc_bytes_total", "Bytes sent by the qdisc.", c, s.bytes),
            ("netsleuth_qdisc_packets_total", "Packets sent by the qdisc.", c, s.packets),
            ("netsleuth_qdisc_drops_total", "Packets dropped by the qdisc.", c, s.drops),
            ("netsleuth_qdisc_requeues_total", "Packets requeued by the qdisc (driver busy).", c, s.requeues),
            ("netsleuth_qdisc_overlimits_total", "Times the qdisc was over its limit (throttled or dropped).", c, s.overlimits),
            ("netsleuth_qdisc_qlen", "Packets currently queued in the qdisc.", g, s.qlen),
            ("netsleuth_qdisc_backlog_bytes", "Bytes currently queued in the qdisc.", g, s.backlog),
        ];
        for (name, help, kind, v) in samples {
            out.emit(name, help, kind, &labels, Value::U64(v));
        }
    }
}

fn open() -> Result<DumpSocket, NlError> {
    DumpSocket::open(netlink_sys::protocols::NETLINK_ROUTE)
}

fn dump_qdiscs(sock: &mut DumpSocket, out: &mut Vec<Qdisc>) -> Result<(), NlError> {
    let req = RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default());
    sock.dump(req, &mut |ty, p| add_qdisc(ty, p, out))
}

fn dump_links(sock: &mut DumpSocket, out: &mut Vec<(u32, String)>) -> Result<(), NlError> {
    let mut msg = LinkMessage::default();
    // Only names are needed: ask the kernel to leave out the per-link statistics blocks.
    msg.attributes
        .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    sock.dump(RouteNetlinkMessage::GetLink(msg), &mut |ty, p| {
        add_link(ty, p, out)
    })
}

/// Up to this many devices with qdiscs to report, names are asked for one by one rather than
/// by dumping every link: the host of 500 pods has 500 veths, all `noqueue`, and one NIC.
const GET_LINKS_MAX: usize = 16;

/// The names of the links `ifindexes`; a link deleted meanwhile is left out.
fn get_links(
    sock: &mut DumpSocket,
    ifindexes: &[u32],
    out: &mut Vec<(u32, String)>,
) -> Result<(), NlError> {
    for &i in ifindexes {
        let mut msg = LinkMessage::default();
        msg.header.index = i;
        msg.attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        match sock.get(RouteNetlinkMessage::GetLink(msg), &mut |ty, p| {
            add_link(ty, p, out)
        }) {
            Ok(()) => {}
            Err(NlError::Errno(e)) if e == libc::ENODEV => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

struct QdiscCollector {
    /// Qdisc kinds to export (anchored regex over TCA_KIND).
    kinds: regex::Regex,
    /// Qdisc kinds to leave out; by default `noqueue`, the stats-less placeholder every
    /// virtual device (lo, veth) has, which would add seven always-zero series per device.
    kinds_exclude: Option<regex::Regex>,
}

impl Collector for QdiscCollector {
    fn name(&self) -> &'static str {
        "qdisc"
    }

    fn netlink_protocols(&self) -> &'static [isize] {
        &[netlink_sys::protocols::NETLINK_ROUTE]
    }

    fn collect(&self, ctx: &NetnsCtx, out: &mut dyn Sink) -> Result<(), CollectError> {
        let mut qdiscs = Vec::new();
        let mut links = Vec::new();
        let mut step = "RTM_GETQDISC dump";
        ctx.netlink(netlink_sys::protocols::NETLINK_ROUTE, |sock| {
            dump_qdiscs(sock, &mut qdiscs)?;
            qdiscs.retain(|q| {
                self.kinds.is_match(&q.kind)
                    && !self
                        .kinds_exclude
                        .as_ref()
                        .is_some_and(|x| x.is_match(&q.kind))
            });
            if qdiscs.is_empty() {
                return Ok(());
            }
            // Links after qdiscs: a link added in between is simply known; one deleted in
            // between drops its qdiscs rather than mislabelling them.
            step = "RTM_GETLINK";
            let mut wanted: Vec<u32> = qdiscs.iter().map(|q| q.ifindex as u32).collect();
            wanted.sort_unstable();
            wanted.dedup();
            if wanted.len() <= GET_LINKS_MAX {
                get_links(sock, &wanted, &mut links)
            } else {
                dump_links(sock, &mut links)
            }
        })
        .map_err(|e| CollectError::Failed(format!("rtnetlink {step}: {e}")))?;
        if !qdiscs.is_empty() {
            emit(&mut qdiscs, &mut links, out);
        }
        Ok(())
    }
}

fn build(args: &mut ProbeArgs) -> Result<Box<dyn Collector>, String> {
    let kinds = args
        .take_regex("kinds")?
        .unwrap_or_else(|| regex::Regex::new("^(?:.*)$").expect("valid"));
    let kinds_exclude =
        match args.take_str("kindsExclude")? {
            None => Some(regex::Regex::new("^(?:noqueue)$").expect("valid")),
            Some(s) if s.is_empty() => None,
            Some(s) => Some(regex::Regex::new(&format!("^(?:{s})$")).map_err(|e| {
                format!("probe qdisc: arg `kindsExclude` is not a valid regex: {e}")
            })?),
        };
    std::mem::take(args).finish()?;
    Ok(Box::new(QdiscCollector {
        kinds,
        kinds_exclude,
    }))
}

fn available() -> Result<(), String> {
    let mut sock = open().map_err(|e| format!("rtnetlink: {e}"))?;
    dump_qdiscs(&mut sock, &mut Vec::new()).map_err(|e| format!("rtnetlink RTM_GETQDISC: {e}"))
}

pub fn specs() -> Vec<ProbeSpec> {
    vec![ProbeSpec::new(
        "qdisc",
        "Per-qdisc bytes, packets, drops, requeues, overlimits, queue length and \
         backlog (rtnetlink RTM_GETQDISC; every qdisc, root and children)",
        None,
        build,
        available,
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    const QDISCS: &[u8] = include_bytes!("../../tests/fixtures/netlink/qdisc_dump.bin");
    const LINKS: &[u8] = include_bytes!("../../tests/fixtures/netlink/link_dump.bin");

    fn fixture() -> (Vec<Qdisc>, Vec<(u32, String)>) {
        let mut q = Vec::new();
        assert_eq!(parse_qdiscs(QDISCS, &mut q), Ok(true));
        let mut l = Vec::new();
        assert_eq!(parse_links(LINKS, &mut l), Ok(true));
        (q, l)
    }

    fn render(q: &mut [Qdisc], l: &mut [(u32, String)]) -> String {
        let mut fams = crate::model::Families::new();
        emit(q, l, &mut fams.sink(""));
        let mut text = String::new();
        fams.render(&mut text);
        text
    }

    /// One attribute, padded.
    fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut v = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(value);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    /// A tcmsg payload for ifindex 1, handle 8001:, root, with the given attributes.
    fn tcmsg(attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut v = vec![0u8; 4];
        v.extend_from_slice(&1i32.to_ne_bytes());
        v.extend_from_slice(&0x8001_0000u32.to_ne_bytes());
        v.extend_from_slice(&TC_H_ROOT.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        for a in attrs {
            v.extend_from_slice(a);
        }
        v
    }

    fn basic(bytes: u64, packets: u32) -> Vec<u8> {
        let mut v = bytes.to_ne_bytes().to_vec();
        v.extend_from_slice(&packets.to_ne_bytes());
        v.extend_from_slice(&[0; 4]);
        v
    }

    fn queue(qlen: u32, backlog: u32, drops: u32, requeues: u32, overlimits: u32) -> Vec<u8> {
        [qlen, backlog, drops, requeues, overlimits]
            .iter()
            .flat_map(|x| x.to_ne_bytes())
            .collect()
    }

    fn legacy(
        bytes: u64,
        packets: u32,
        drops: u32,
        overlimits: u32,
        qlen: u32,
        backlog: u32,
    ) -> Vec<u8> {
        let mut v = bytes.to_ne_bytes().to_vec();
        for x in [packets, drops, overlimits, 0, 0, qlen, backlog, 0] {
            v.extend_from_slice(&x.to_ne_bytes());
        }
        v
    }

    #[test]
    fn fixture_dump_exact_values() {
        // Captured with tests/fixtures/netlink/{setup.sh,cap.py} after a 300-packet burst into
        // the tbf; `tc -s qdisc` (qdisc_tc.txt, read a moment later) shows the same drops and
        // one more packet (1442 bytes) dequeued.
        let (q, l) = fixture();
        assert_eq!(
            l,
            vec![
                (1, "lo".to_string()),
                (2, "v1".into()),
                (3, "v0".into()),
                (4, "v3".into()),
                (5, "v2".into())
            ]
        );
        let got: Vec<(i32, String, String, &str)> = q
            .iter()
            .map(|q| {
                (
                    q.ifindex,
                    qdisc_handle(q.handle),
                    tc_handle(q.parent),
                    q.kind.as_str(),
                )
            })
            .collect();
        let want: Vec<(i32, String, String, &str)> = [
            (1, "0:", "root", "noqueue"),
            (2, "0:", "root", "noqueue"),
            (3, "8003:", "root", "tbf"),
            (3, "ffff:", "ffff:fff1", "ingress"),
            (4, "8001:", "root", "bfifo"),
            (5, "1:", "root", "htb"),
            (5, "10:", "1:10", "pfifo"),
            (5, "20:", "1:20", "bfifo"),
            (5, "ffff:", "ffff:fff1", "clsact"),
        ]
        .iter()
        .map(|&(i, h, p, k)| (i, h.to_string(), p.to_string(), k))
        .collect();
        assert_eq!(got, want);
        assert!(q.iter().all(|q| q.from_stats2));
        let tbf = &q[2];
        assert_eq!(
            tbf.stats,
            QdiscStats {
                bytes: 16572,
                packets: 16,
                drops: 261,
                requeues: 0,
                overlimits: 316,
                qlen: 28,
                backlog: 40376,
            }
        );
        // The HTB root and its pfifo child both count the 7 packets: exported apart, never
        // summed.
        let htb = QdiscStats {
            bytes: 1694,
            packets: 7,
            overlimits: 2,
            ..Default::default()
        };
        assert_eq!(q[5].stats, htb);
        assert_eq!(
            q[6].stats,
            QdiscStats {
                overlimits: 0,
                ..htb
            }
        );
        assert_eq!(q[7].stats, QdiscStats::default());
    }

    #[test]
    fn renders_one_series_per_qdisc() {
        let (mut q, mut l) = fixture();
        let text = render(&mut q, &mut l);
        for line in [
            "netsleuth_qdisc_bytes_total{device=\"v0\",qdisc_kind=\"tbf\",handle=\"8003:\",parent=\"root\"} 16572",
            "netsleuth_qdisc_drops_total{device=\"v0\",qdisc_kind=\"tbf\",handle=\"8003:\",parent=\"root\"} 261",
            "netsleuth_qdisc_overlimits_total{device=\"v0\",qdisc_kind=\"tbf\",handle=\"8003:\",parent=\"root\"} 316",
            "netsleuth_qdisc_qlen{device=\"v0\",qdisc_kind=\"tbf\",handle=\"8003:\",parent=\"root\"} 28",
            "netsleuth_qdisc_backlog_bytes{device=\"v0\",qdisc_kind=\"tbf\",handle=\"8003:\",parent=\"root\"} 40376",
            "netsleuth_qdisc_packets_total{device=\"v2\",qdisc_kind=\"pfifo\",handle=\"10:\",parent=\"1:10\"} 7",
            "netsleuth_qdisc_packets_total{device=\"v2\",qdisc_kind=\"htb\",handle=\"1:\",parent=\"root\"} 7",
            "netsleuth_qdisc_requeues_total{device=\"v0\",qdisc_kind=\"ingress\",handle=\"ffff:\",parent=\"ffff:fff1\"} 0",
            "netsleuth_qdisc_bytes_total{device=\"lo\",qdisc_kind=\"noqueue\",handle=\"0:\",parent=\"root\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        let samples = text.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(samples, 9 * 7);
        assert!(text.contains("# TYPE netsleuth_qdisc_bytes_total counter"));
        assert!(text.contains("# TYPE netsleuth_qdisc_backlog_bytes gauge"));
    }

    #[test]
    fn devices_resolve_in_the_dumped_namespace_only() {
        // Regression (KubeSkoop looked ifindexes up in the host namespace): a qdisc whose
        // ifindex is not in this namespace's link dump is dropped, never given another name.
        let (mut q, mut l) = fixture();
        l.retain(|(i, _)| *i != 3);
        let text = render(&mut q, &mut l);
        assert!(!text.contains("tbf"), "{text}");
        assert!(!text.contains("device=\"v0\""), "{text}");
        // And a duplicate (device, handle, parent) is emitted once.
        let (mut q, mut l) = fixture();
        let dup = q[2].clone();
        q.push(dup);
        let text = render(&mut q, &mut l);
        assert_eq!(
            text.matches("netsleuth_qdisc_bytes_total{device=\"v0\",qdisc_kind=\"tbf\"")
                .count(),
            1
        );
    }

    #[test]
    fn tc_notation() {
        assert_eq!(tc_handle(TC_H_ROOT), "root");
        assert_eq!(tc_handle(0xffff_fff1), "ffff:fff1");
        assert_eq!(tc_handle(0x0001_0010), "1:10");
        assert_eq!(tc_handle(0x8001_0000), "8001:");
        assert_eq!(tc_handle(0x0000_0001), ":1");
        assert_eq!(tc_handle(0), "none");
        assert_eq!(qdisc_handle(0), "0:");
        assert_eq!(qdisc_handle(0xffff_0000), "ffff:");
    }

    #[test]
    fn stats2_wins_over_legacy_and_pkt64_widens_packets() {
        let stats2 = nla(
            TCA_STATS2,
            &[
                nla(TCA_STATS_BASIC, &basic(10_000_000_000, 5)),
                nla(TCA_STATS_PKT64, &((1u64 << 32) + 5).to_ne_bytes()),
                nla(TCA_STATS_BASIC_HW, &basic(1, 1)),
                nla(TCA_STATS_PKT64, &9u64.to_ne_bytes()), // widens the hw block: ignored
                nla(TCA_STATS_QUEUE, &queue(1, 2, 3, 4, 5)),
                nla(4, &[0; 8]), // TCA_STATS_APP, ignored
            ]
            .concat(),
        );
        let m = tcmsg(&[
            nla(TCA_KIND, b"tbf\0"),
            nla(TCA_STATS, &legacy(7, 7, 7, 7, 7, 7)),
            stats2,
        ]);
        let q = parse_qdisc_message(&m).unwrap();
        assert!(q.from_stats2);
        assert_eq!(
            q.stats,
            QdiscStats {
                bytes: 10_000_000_000,
                packets: (1 << 32) + 5,
                qlen: 1,
                backlog: 2,
                drops: 3,
                requeues: 4,
                overlimits: 5,
            }
        );
    }

    #[test]
    fn legacy_stats_only_when_stats2_is_absent() {
        let m = tcmsg(&[
            nla(TCA_KIND, b"pfifo_fast\0"),
            nla(TCA_STATS, &legacy(1000, 10, 2, 3, 4, 500)),
        ]);
        let q = parse_qdisc_message(&m).unwrap();
        assert!(!q.from_stats2);
        assert_eq!(
            q.stats,
            QdiscStats {
                bytes: 1000,
                packets: 10,
                drops: 2,
                requeues: 0,
                overlimits: 3,
                qlen: 4,
                backlog: 500,
            }
        );
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let mut q = Vec::new();
        assert_eq!(parse_qdiscs(b"", &mut q), Ok(false));
        for cut in 0..QDISCS.len() {
            match parse_qdiscs(&QDISCS[..cut], &mut Vec::new()) {
                Ok(done) => assert!(!done, "cut at {cut}"),
                Err(NlError::Malformed(_)) => {}
                Err(e) => panic!("cut at {cut}: {e}"),
            }
        }
        for cut in (0..LINKS.len()).step_by(7) {
            assert_ne!(parse_links(&LINKS[..cut], &mut Vec::new()), Ok(true));
        }
        // Nested TCA_STATS2 attribute whose length runs past its parent.
        let mut inner = nla(TCA_STATS_QUEUE, &queue(1, 2, 3, 4, 5));
        inner[..2].copy_from_slice(&200u16.to_ne_bytes());
        let m = tcmsg(&[nla(TCA_KIND, b"tbf\0"), nla(TCA_STATS2, &inner)]);
        let e = parse_qdisc_message(&m).unwrap_err();
        assert!(e.starts_with("TCA_STATS2:"), "{e}");
        // Stats blocks shorter than their struct.
        for (kind, short) in [
            (TCA_STATS_BASIC, &[0u8; 8][..]),
            (TCA_STATS_QUEUE, &[0u8; 12][..]),
            (TCA_STATS_PKT64, &[0u8; 4][..]),
        ] {
            let m = tcmsg(&[nla(TCA_KIND, b"x\0"), nla(TCA_STATS2, &nla(kind, short))]);
            assert!(parse_qdisc_message(&m).is_err(), "kind {kind}");
        }
        let m = tcmsg(&[nla(TCA_KIND, b"x\0"), nla(TCA_STATS, &[0; 20])]);
        assert!(parse_qdisc_message(&m)
            .unwrap_err()
            .starts_with("TCA_STATS:"));
        // No TCA_KIND; tcmsg too short; top-level attribute past the end.
        assert_eq!(parse_qdisc_message(&tcmsg(&[])).unwrap_err(), "no TCA_KIND");
        assert!(parse_qdisc_message(&[0; 12]).is_err());
        let mut m = tcmsg(&[nla(TCA_KIND, b"tbf\0")]);
        m[20..22].copy_from_slice(&64u16.to_ne_bytes());
        assert!(parse_qdisc_message(&m).is_err());
        // A message of the wrong type, and NLMSG_ERROR.
        let mut other = LINKS.to_vec();
        other.truncate(u32::from_ne_bytes(LINKS[..4].try_into().unwrap()) as usize);
        assert!(matches!(
            parse_qdiscs(&other, &mut Vec::new()),
            Err(NlError::Malformed(_))
        ));
        let mut err = 36u32.to_ne_bytes().to_vec();
        err.extend_from_slice(&2u16.to_ne_bytes());
        err.extend_from_slice(&[0; 10]);
        err.extend_from_slice(&(-libc::EOPNOTSUPP).to_ne_bytes());
        err.extend_from_slice(&[0; 16]);
        assert_eq!(
            parse_qdiscs(&err, &mut Vec::new()),
            Err(NlError::Errno(libc::EOPNOTSUPP))
        );
    }

    #[test]
    fn args_are_rejected_by_name() {
        let y: serde_norway::Value = serde_norway::from_str("{Devices: eth0}").unwrap();
        let mut a = ProbeArgs::from_yaml("qdisc", &y).unwrap();
        assert_eq!(
            build(&mut a).err().unwrap(),
            "probe qdisc: unknown arg `Devices`"
        );
        assert!(build(&mut ProbeArgs::new("qdisc")).is_ok());
    }

    #[test]
    fn refuses_to_run_outside_the_namespace() {
        let c = build(&mut ProbeArgs::new("qdisc")).unwrap();
        assert_eq!(
            super::super::testutil::collect_not_entered(c.as_ref()).unwrap_err(),
            CollectError::Failed(format!(
                "rtnetlink RTM_GETQDISC dump: {}",
                crate::collectors::netlink::NlError::NoSocket
            ))
        );
    }
}
