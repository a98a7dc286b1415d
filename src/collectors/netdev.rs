//! The `netdev` probe: per-device counters from `/proc/<pid>/net/dev`.
//!
//! Column names come from the two header lines (`Inter-|   Receive ... |  Transmit` and
//! ` face |bytes packets ...|bytes ...`), so a kernel that adds a column needs no code change.
//! Names follow node_exporter: `netsleuth_netdev_receive_bytes_total{device="eth0"}`.
//!
//! The detailed counters of `struct rtnl_link_stats64` that `/proc/net/dev` folds into sums or
//! leaves out (its `frame` is length + over + crc + frame errors, `carrier` is carrier +
//! aborted + window + heartbeat errors, `drop` is dropped + missed; `rx_nohandler` and
//! `rx_otherhost_dropped` are not printed) come from an rtnetlink `RTM_GETLINK` dump
//! (`IFLA_STATS64`), under node_exporter's netlink names: [`NETLINK_COLUMNS`]. The dump runs
//! only when the `fields` regex selects one of them (then the probe enters the namespace,
//! like the other netlink probes). The fifo, multicast and collision counters are not repeated
//! from netlink: `/proc/net/dev` prints them unchanged (`receive_fifo`, `transmit_fifo`,
//! `receive_multicast`, `transmit_colls`). A kernel whose `rtnl_link_stats64` is shorter
//! (`rx_otherhost_dropped` is new in 5.19) exports only the counters it has.

use rustc_hash::FxHashSet as HashSet;

use std::mem::size_of;

use netlink_packet_core::{parse_string, NlasIterator};
use netlink_packet_route::link::{LinkHeader, LinkMessage, LinkMessageBuffer};
use netlink_packet_route::RouteNetlinkMessage;

use super::names::{metric_name, Entry, NameCache};
use super::netlink::{walk, DumpSocket, NlError};
use super::{parse_int, CollectError, Collector, FieldFilter, NetnsCtx, ProbeArgs, ProbeSpec};
use crate::model::{snake_case, MetricKind, Sink, Value};

/// Parsed `/proc/net/dev`: column names (`receive_bytes`...) and, per device, one value per
/// column.
#[derive(Debug, Default, PartialEq)]
pub struct NetDev<'a> {
    /// Shared between parses of the same header (every namespace prints the same one).
    pub columns: std::sync::Arc<[String]>,
    pub devices: Vec<&'a str>,
    /// `devices.len() * columns.len()` values, device-major.
    pub values: Vec<u64>,
}

impl NetDev<'_> {
    /// Values of device `i`.
    pub fn device_values(&self, i: usize) -> &[u64] {
        let n = self.columns.len();
        &self.values[i * n..(i + 1) * n]
    }

    pub fn get(&self, device: &str, column: &str) -> Option<u64> {
        let d = self.devices.iter().position(|&x| x == device)?;
        let c = self.columns.iter().position(|x| x == column)?;
        Some(self.device_values(d)[c])
    }
}

/// Parse `/proc/net/dev`. A line with too few or non-numeric values is skipped; the result is
/// an error only if no device at all parses (naming the first bad device).
pub fn parse_netdev(data: &[u8]) -> Result<NetDev<'_>, String> {
    let mut lines = data
        .split(|&b| b == b'\n')
        .map(|l| std::str::from_utf8(l).unwrap_or(""));
    let (Some(h1), Some(h2)) = (lines.next(), lines.next()) else {
        return Err("missing the two header lines".to_string());
    };
    let columns = header_columns(h1, h2)?;
    let nd = NetDev {
        columns,
        ..NetDev::default()
    };
    parse_rows(lines, nd)
}

thread_local! {
    /// The last header parsed on this thread and its column names: the names are built
    /// (`snake_case`, one string each) once, not once per namespace per scrape.
    static HEADER: std::cell::RefCell<(String, std::sync::Arc<[String]>)> =
        std::cell::RefCell::new((String::new(), std::sync::Arc::from(Vec::new())));
}

/// Column names from the two header lines (cached per thread by their text).
fn header_columns(h1: &str, h2: &str) -> Result<std::sync::Arc<[String]>, String> {
    let hit = HEADER.with(|c| {
        let c = c.borrow();
        let key = &c.0;
        (key.len() == h1.len() + 1 + h2.len()
            && key.starts_with(h1)
            && key.ends_with(h2)
            && key.as_bytes()[h1.len()] == b'\n')
            .then(|| c.1.clone())
    });
    if let Some(cols) = hit {
        return Ok(cols);
    }
    let sections: Vec<String> = h1
        .split('|')
        .skip(1)
        .map(|s| snake_case(s.trim()))
        .collect();
    let groups: Vec<&str> = h2.split('|').skip(1).collect();
    if groups.is_empty() || sections.len() < groups.len() {
        return Err(format!("malformed header `{}`", h2.trim()));
    }
    let mut columns = Vec::new();
    for (sec, cols) in sections.iter().zip(&groups) {
        if sec.is_empty() {
            return Err(format!("malformed header `{}`", h1.trim()));
        }
        for c in cols.split_ascii_whitespace() {
            let name = format!("{sec}_{}", snake_case(c));
            if columns.contains(&name) {
                return Err(format!("column {name} appears twice"));
            }
            columns.push(name);
        }
    }
    if columns.is_empty() {
        return Err("no columns in header".to_string());
    }
    let columns: std::sync::Arc<[String]> = columns.into();
    HEADER.with(|c| *c.borrow_mut() = (format!("{h1}\n{h2}"), columns.clone()));
    Ok(columns)
}

/// The device lines under the header.
fn parse_rows<'a>(
    lines: impl Iterator<Item = &'a str>,
    mut nd: NetDev<'a>,
) -> Result<NetDev<'a>, String> {
    let n = nd.columns.len();
    // Duplicate devices are skipped: a linear scan while there are few (most namespaces have
    // two or three), a set once there are many (the host of a node with hundreds of veths).
    let mut seen: HashSet<&str> = HashSet::default();
    let mut first_err = None;
    for line in lines {
        if line.trim().is_empty() {
            continue;
        }
        let Some((dev, rest)) = line.split_once(':') else {
            first_err.get_or_insert_with(|| format!("line without a device: `{}`", trunc(line)));
            continue;
        };
        let dev = dev.trim();
        let start = nd.values.len();
        let mut ok = true;
        for tok in rest.split_ascii_whitespace().take(n) {
            match parse_int(tok.as_bytes()) {
                Some(Value::U64(v)) => nd.values.push(v),
                _ => {
                    ok = false;
                    break;
                }
            }
        }
        if !ok || nd.values.len() - start != n {
            nd.values.truncate(start);
            first_err.get_or_insert_with(|| {
                if ok {
                    format!("device {}: fewer than {n} values", trunc(dev))
                } else {
                    format!("device {}: a value is not an integer", trunc(dev))
                }
            });
            continue;
        }
        let dup = if nd.devices.len() < 32 {
            nd.devices.contains(&dev)
        } else {
            if seen.is_empty() {
                seen.extend(nd.devices.iter().copied());
            }
            !seen.insert(dev)
        };
        if dev.is_empty() || dup {
            nd.values.truncate(start);
            continue;
        }
        nd.devices.push(dev);
    }
    if nd.devices.is_empty() {
        if let Some(e) = first_err {
            return Err(e);
        }
    }
    Ok(nd)
}

fn trunc(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// English help per known column.
fn help_for(column: &str) -> String {
    let what = match column {
        "receive_bytes" => "Bytes received",
        "receive_packets" => "Packets received",
        "receive_errs" => "Receive errors",
        "receive_drop" => "Received packets dropped",
        "receive_fifo" => "Receive FIFO buffer errors",
        "receive_frame" => "Receive framing errors",
        "receive_compressed" => "Compressed packets received",
        "receive_multicast" => "Multicast packets received",
        "transmit_bytes" => "Bytes transmitted",
        "transmit_packets" => "Packets transmitted",
        "transmit_errs" => "Transmit errors",
        "transmit_drop" => "Transmitted packets dropped",
        "transmit_fifo" => "Transmit FIFO buffer errors",
        "transmit_colls" => "Collisions while transmitting",
        "transmit_carrier" => "Carrier losses while transmitting",
        "transmit_compressed" => "Compressed packets transmitted",
        _ => return format!("Network device counter {column} from /proc/net/dev, per device."),
    };
    format!("{what} by the network device (/proc/net/dev).")
}

/// The `rtnl_link_stats64` counters exported from netlink: (column, index of the `__u64` in
/// the struct, help). Names as node_exporter's netdev collector gives them in netlink mode.
pub const NETLINK_COLUMNS: [(&str, usize, &str); 11] = [
    ("receive_length_errors", 10, "Received frames with a bad length (rx_length_errors)"),
    ("receive_over_errors", 11, "Receive ring buffer overflows (rx_over_errors)"),
    ("receive_crc_errors", 12, "Received frames with a CRC error (rx_crc_errors)"),
    ("receive_frame_errors", 13, "Received frames with an alignment error (rx_frame_errors)"),
    ("receive_missed_errors", 15, "Frames the device missed for lack of host buffers (rx_missed_errors)"),
    ("transmit_aborted_errors", 16, "Aborted transmissions (tx_aborted_errors)"),
    ("transmit_carrier_errors", 17, "Transmissions lost to carrier errors (tx_carrier_errors)"),
    ("transmit_heartbeat_errors", 19, "Transmissions with heartbeat (SQE) errors (tx_heartbeat_errors)"),
    ("transmit_window_errors", 20, "Late collisions while transmitting (tx_window_errors)"),
    ("receive_nohandler", 23, "Received packets dropped because no protocol handler took them (rx_nohandler)"),
    ("receive_otherhost_dropped", 24, "Received packets dropped because they were addressed to another host's MAC (rx_otherhost_dropped)"),
];

/// `RTM_NEWLINK`.
const RTM_NEWLINK: u16 = 16;
/// `IFLA_IFNAME`.
const IFLA_IFNAME: u16 = 3;
/// `IFLA_STATS64`: `struct rtnl_link_stats64`, native-endian `__u64`s.
const IFLA_STATS64: u16 = 23;

/// One link of an `RTM_GETLINK` dump: its name and the `__u64`s of its `IFLA_STATS64` (as
/// many as the kernel's struct has; empty if the link carries none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkStats {
    pub name: String,
    pub stats64: Vec<u64>,
}

impl LinkStats {
    /// The value of `column` (one of [`NETLINK_COLUMNS`]), if this kernel reports it.
    pub fn get(&self, column: &str) -> Option<u64> {
        let &(_, i, _) = NETLINK_COLUMNS.iter().find(|c| c.0 == column)?;
        self.stats64.get(i).copied()
    }
}

/// Add the links in `bytes` (netlink messages of an `RTM_GETLINK` dump) to `out`. Returns
/// `Ok(true)` at the dump's `NLMSG_DONE`.
pub fn parse_link_stats(bytes: &[u8], out: &mut Vec<LinkStats>) -> Result<bool, NlError> {
    walk(bytes, None, &mut |ty, p| add_link_stats(ty, p, out))
}

fn add_link_stats(ty: u16, payload: &[u8], out: &mut Vec<LinkStats>) -> Result<(), String> {
    if ty != RTM_NEWLINK {
        return Err(format!("expected RTM_NEWLINK ({RTM_NEWLINK})"));
    }
    let h = LinkHeader::parse(payload).map_err(|e| e.to_string())?;
    let attrs = payload
        .get(size_of::<LinkMessageBuffer>()..)
        .ok_or("message shorter than struct ifinfomsg")?;
    let (mut name, mut stats64) = (None, Vec::new());
    for nla in NlasIterator::new(attrs) {
        let nla = nla.map_err(|e| format!("link {}: {e}", h.index))?;
        match nla.kind() {
            IFLA_IFNAME => {
                name = Some(parse_string(nla.value()).map_err(|e| format!("IFLA_IFNAME: {e}"))?)
            }
            IFLA_STATS64 => {
                let v = nla.value();
                if v.len() % 8 != 0 {
                    return Err(format!(
                        "link {}: IFLA_STATS64 of {} bytes is not a whole number of u64",
                        h.index,
                        v.len()
                    ));
                }
                stats64 = v
                    .chunks_exact(8)
                    .map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")))
                    .collect();
            }
            _ => {}
        }
    }
    let name = name.ok_or_else(|| format!("link {} has no IFLA_IFNAME", h.index))?;
    out.push(LinkStats { name, stats64 });
    Ok(())
}

/// Dump every link of the socket's namespace with its statistics.
pub fn dump_link_stats(sock: &mut DumpSocket) -> Result<Vec<LinkStats>, NlError> {
    let mut out = Vec::new();
    sock.dump(
        RouteNetlinkMessage::GetLink(LinkMessage::default()),
        &mut |ty, p| add_link_stats(ty, p, &mut out),
    )?;
    Ok(out)
}

/// Emit every [`NETLINK_COLUMNS`] counter of every link (a device named twice: the first).
pub fn emit_link_stats(links: &[LinkStats], out: &mut dyn Sink) {
    emit_links(links, &|_| true, &|_| true, &NameCache::new(), out)
}

fn emit_links(
    links: &[LinkStats],
    device: &dyn Fn(&str) -> bool,
    field: &dyn Fn(&str) -> bool,
    names: &NameCache,
    out: &mut dyn Sink,
) {
    let make = |_: &str, col: &str| {
        let &(_, _, what) = NETLINK_COLUMNS.iter().find(|c| c.0 == col)?;
        let name = metric_name("netsleuth_netdev", col, MetricKind::Counter)?;
        Some(Entry::new(
            name,
            format!("{what}, by the network device (rtnetlink IFLA_STATS64)."),
            MetricKind::Counter,
        ))
    };
    let mut cur = names.cursor();
    let mut seen = HashSet::default();
    for l in links {
        if !device(&l.name) || !seen.insert(l.name.as_str()) {
            continue;
        }
        let labels = [("device", l.name.as_str())];
        for &(col, i, _) in &NETLINK_COLUMNS {
            if let (true, Some(&v)) = (field(col), l.stats64.get(i)) {
                cur.emit("", col, Value::U64(v), &labels, out, &make);
            }
        }
    }
}

struct NetdevProbe {
    /// Whether `fields` selects a netlink column: then the probe dumps links.
    netlink: bool,
    fields: FieldFilter,
    devices: FieldFilter,
    exclude: Option<FieldFilter>,
    loopback: Loopback,
    names: NameCache,
}

/// Whose `lo` the netdev probe exports (arg `loopback`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loopback {
    /// The host's only (the default): a pod's loopback carries traffic between its own
    /// containers, which cAdvisor's `container_network_*` and KubeSkoop's netdev leave out too,
    /// and its eight series per namespace were a tenth of the default page.
    Host,
    /// Every namespace's.
    All,
    /// None, not even the host's.
    None,
}

impl Loopback {
    fn parse(s: &str) -> Result<Loopback, String> {
        match s {
            "host" => Ok(Loopback::Host),
            "all" => Ok(Loopback::All),
            "none" => Ok(Loopback::None),
            other => Err(format!(
                "probe netdev: arg `loopback` is `{other}`: expected `host` (the default), `all` or `none`"
            )),
        }
    }

    /// Whether `dev` of a namespace (`host` or not) is left out.
    fn skips(self, dev: &str, host: bool) -> bool {
        dev == "lo"
            && match self {
                Loopback::Host => !host,
                Loopback::All => false,
                Loopback::None => true,
            }
    }
}

impl Collector for NetdevProbe {
    fn name(&self) -> &'static str {
        "netdev"
    }

    fn netlink_protocols(&self) -> &'static [isize] {
        if self.netlink {
            &[netlink_sys::protocols::NETLINK_ROUTE]
        } else {
            &[]
        }
    }

    fn collect(&self, ctx: &NetnsCtx, out: &mut dyn Sink) -> Result<(), CollectError> {
        self.collect_procfs(ctx, out)?;
        // The engine gives a probe with netlink protocols a way into the namespace; only a
        // caller that reads a directory of files (the fixtures) gets here without.
        if self.netlink && ctx.reaches(self.netlink_protocols()) {
            let links = ctx
                .netlink(netlink_sys::protocols::NETLINK_ROUTE, dump_link_stats)
                .map_err(|e| CollectError::Failed(format!("rtnetlink RTM_GETLINK dump: {e}")))?;
            self.emit_netlink(&links, ctx.host, out);
        }
        Ok(())
    }
}

impl NetdevProbe {
    fn wanted(&self, dev: &str, host: bool) -> bool {
        !self.loopback.skips(dev, host)
            && self.devices.matches(dev)
            && !self.exclude.as_ref().is_some_and(|x| x.matches(dev))
    }

    fn emit_netlink(&self, links: &[LinkStats], host: bool, out: &mut dyn Sink) {
        emit_links(
            links,
            &|d| self.wanted(d, host),
            &|c| self.fields.matches(c),
            &self.names,
            out,
        );
    }

    fn collect_procfs(&self, ctx: &NetnsCtx, out: &mut dyn Sink) -> Result<(), CollectError> {
        let data = ctx.read_net("dev")?;
        let nd = parse_netdev(&data).map_err(|e| {
            CollectError::Failed(format!(
                "parsing {}: {e}",
                ctx.net_dir.join("dev").display()
            ))
        })?;
        let make = |_: &str, col: &str| {
            if !self.fields.matches(col) {
                return None;
            }
            let name = metric_name("netsleuth_netdev", col, MetricKind::Counter)?;
            Some(Entry::new(name, help_for(col), MetricKind::Counter))
        };
        let mut cur = self.names.cursor();
        for (i, dev) in nd.devices.iter().enumerate() {
            if !self.wanted(dev, ctx.host) {
                continue;
            }
            let labels = [("device", *dev)];
            for (col, &v) in nd.columns.iter().zip(nd.device_values(i)) {
                cur.emit("", col, Value::U64(v), &labels, out, &make);
            }
        }
        Ok(())
    }
}

/// KubeSkoop's eight per-device figures; the rarer columns (fifo, frame, compressed,
/// multicast, colls, carrier) are one `fields` regex away.
pub const DEFAULT_FIELDS: &str = "(receive|transmit)_(bytes|packets|errs|drop)";

fn build(args: &mut ProbeArgs) -> Result<Box<dyn Collector>, String> {
    let fields = FieldFilter::from_args(args, DEFAULT_FIELDS)?;
    let devices = FieldFilter::new(
        args.take_regex("devices")?
            .unwrap_or_else(|| regex::Regex::new("^(?:.*)$").expect("valid")),
    );
    let exclude = args.take_regex("devicesExclude")?.map(FieldFilter::new);
    let loopback = match args.take_str("loopback")? {
        Some(s) => Loopback::parse(&s)?,
        None => Loopback::Host,
    };
    std::mem::take(args).finish()?;
    let netlink = NETLINK_COLUMNS.iter().any(|c| fields.matches(c.0));
    Ok(Box::new(NetdevProbe {
        netlink,
        fields,
        devices,
        exclude,
        loopback,
        names: NameCache::new(),
    }))
}

fn available() -> Result<(), String> {
    super::require_file("/proc/self/net/dev")
}

pub fn specs() -> Vec<ProbeSpec> {
    vec![ProbeSpec::new(
        "netdev",
        "Per-device receive/transmit counters (/proc/net/dev); args fields, devices, devicesExclude, loopback",
        Some(DEFAULT_FIELDS),
        build,
        available,
    )]
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn duplicate_devices_skipped_with_few_and_with_many() {
        for n in [3usize, 40, 300] {
            let mut d = String::from("Inter-| Receive | Transmit\n face |bytes|bytes\n");
            for i in 0..n {
                d.push_str(&format!("v{i}: {i} 1\n"));
            }
            // Again, with other values: the first line of a device wins.
            d.push_str("v0: 99 99\n");
            d.push_str(&format!("v{}: 99 99\n", n - 1));
            let nd = parse_netdev(d.as_bytes()).unwrap();
            assert_eq!(nd.devices.len(), n, "{n}");
            assert_eq!(nd.get("v0", "receive_bytes"), Some(0));
            assert_eq!(
                nd.get(&format!("v{}", n - 1), "receive_bytes"),
                Some(n as u64 - 1)
            );
        }
        // Another header after a cached one: its own columns.
        let nd =
            parse_netdev(b"Inter-| Receive | Transmit\n face |bytes packets|bytes\n e: 1 2 3\n")
                .unwrap();
        assert_eq!(
            &nd.columns[..],
            ["receive_bytes", "receive_packets", "transmit_bytes"]
        );
    }

    #[test]
    fn netdev_6_18_real() {
        let d = fixture("6.18/host/dev");
        let nd = parse_netdev(&d).unwrap();
        assert_eq!(nd.columns.len(), 16);
        assert_eq!(nd.columns[0], "receive_bytes");
        assert_eq!(nd.columns[13], "transmit_colls");
        assert_eq!(nd.devices, vec!["lo", "ifb0", "ifb1", "eth0"]);
        assert_eq!(nd.get("eth0", "receive_bytes"), Some(71467732));
        assert_eq!(nd.get("eth0", "transmit_packets"), Some(3369));
        assert_eq!(nd.get("lo", "transmit_bytes"), Some(3193));
    }

    #[test]
    fn extra_columns_and_short_lines() {
        // A future kernel with a 9th receive column; a short line; extra trailing values.
        let d = b"Inter-|   Receive                            |  Transmit\n \
face |bytes packets errs drop fifo frame compressed multicast nohandler|bytes packets\n\
  eth0: 1 2 3 4 5 6 7 8 9 10 11 99\n  veth1: 1 2 3\n  lo: 18446744073709551615 0 0 0 0 0 0 0 0 0 0\n";
        let nd = parse_netdev(d).unwrap();
        assert_eq!(nd.devices, vec!["eth0", "lo"]);
        assert_eq!(nd.get("eth0", "receive_nohandler"), Some(9));
        assert_eq!(nd.get("eth0", "transmit_packets"), Some(11));
        assert_eq!(nd.get("lo", "receive_bytes"), Some(u64::MAX));
        let e = parse_netdev(b"Inter-| Receive | Transmit\n face |bytes|bytes\n veth1: 1\n")
            .unwrap_err();
        assert_eq!(e, "device veth1: fewer than 2 values");
    }

    #[test]
    fn garbage() {
        for d in [
            &b""[..],
            b"\n",
            b"a|b\n",
            b"x\ny\n",
            b"|\n|\n",
            b"Inter-|a\n face |x x\n",
            b"Inter-| R | T\n face |bytes|bytes\n e: x y\n",
        ] {
            assert!(parse_netdev(d).is_err(), "{d:?}");
        }
        let d = fixture("6.18/host/dev");
        for cut in 0..d.len() {
            let _ = parse_netdev(&d[..cut]);
        }
        let long = format!("Inter-| R | T\n face |{}|x\n", "c ".repeat(50_000));
        let _ = parse_netdev(long.as_bytes());
    }

    #[test]
    fn rendering_and_filters() {
        let d = build_probe(specs(), "netdev", "");
        let (text, r) = run(d.as_ref(), "6.18", &[]);
        r.unwrap();
        assert_eq!(
            samples(&text).len(),
            8,
            "default: bytes, packets, errs, drop each way"
        );
        // `.*` selects the netlink columns too: the probe then needs an rtnetlink socket in the
        // namespace (kept, or opened inside it; a directory of fixture files has only the
        // procfs columns).
        let c = build_probe(specs(), "netdev", "{fields: '.*'}");
        assert!(!c.netlink_protocols().is_empty());
        let (text, r) = run(c.as_ref(), "6.18", &[]);
        r.unwrap();
        lint_rendering(&text);
        assert_eq!(samples(&text).len(), 16);
        for name in [
            "receive_bytes",
            "receive_packets",
            "receive_errs",
            "receive_drop",
            "receive_fifo",
            "receive_frame",
            "receive_compressed",
            "receive_multicast",
            "transmit_bytes",
            "transmit_packets",
            "transmit_errs",
            "transmit_drop",
            "transmit_fifo",
            "transmit_colls",
            "transmit_carrier",
            "transmit_compressed",
        ] {
            assert!(text.contains(&format!("# TYPE netsleuth_netdev_{name}_total counter\n")));
        }
        assert!(text.contains("\nnetsleuth_netdev_receive_bytes_total{device=\"lo\"} 276\n"));
        assert!(text.contains(
            "# HELP netsleuth_netdev_receive_bytes_total Bytes received by the network device (/proc/net/dev).\n"
        ));
        let c = build_probe(
            specs(),
            "netdev",
            "{fields: 'receive_bytes|transmit_bytes', devicesExclude: 'lo'}",
        );
        let (text, _) = run(c.as_ref(), "6.18", &[]);
        assert_eq!(samples(&text), Vec::<&str>::new());
        let c = build_probe(
            specs(),
            "netdev",
            "{fields: 'receive_bytes', devices: 'l.'}",
        );
        let (text, _) = run(c.as_ref(), "6.18", &[]);
        assert_eq!(
            samples(&text),
            vec!["netsleuth_netdev_receive_bytes_total{device=\"lo\"} 276"]
        );
    }

    const LINKS: &[u8] = include_bytes!("../../tests/fixtures/netlink/link_stats_dump.bin");
    const IP_JSON: &str = include_str!("../../tests/fixtures/netlink/link_stats_ip.json");

    /// `ip -s -s -j link`'s key for a netlink column (iproute2 leaves out nohandler and
    /// otherhost when they are 0).
    fn ip_key(col: &str) -> (&'static str, &str) {
        let (dir, rest) = col.split_once('_').unwrap();
        let dir = if dir == "receive" { "rx" } else { "tx" };
        let key = match rest {
            "otherhost_dropped" => "otherhost",
            r => r,
        };
        (dir, key)
    }

    #[test]
    fn link_stats_equal_ip() {
        let mut links = Vec::new();
        assert_eq!(parse_link_stats(LINKS, &mut links), Ok(true));
        let ip: serde_json::Value = serde_json::from_str(IP_JSON).unwrap();
        let ip = ip.as_array().unwrap();
        let names: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["lo", "v1", "v0", "v3", "v2"]);
        for l in &links {
            // 6.18's struct: 25 counters, rx_otherhost_dropped last.
            assert_eq!(l.stats64.len(), 25, "{}", l.name);
            let j = &ip.iter().find(|x| x["ifname"] == l.name.as_str()).unwrap()["stats64"];
            // The layout: the first four are rx/tx packets, rx/tx bytes.
            assert_eq!(l.stats64[0], j["rx"]["packets"].as_u64().unwrap());
            assert_eq!(l.stats64[1], j["tx"]["packets"].as_u64().unwrap());
            assert_eq!(l.stats64[2], j["rx"]["bytes"].as_u64().unwrap());
            assert_eq!(l.stats64[3], j["tx"]["bytes"].as_u64().unwrap());
            for (col, _, _) in NETLINK_COLUMNS {
                let (dir, key) = ip_key(col);
                let want = j[dir][key].as_u64().unwrap_or(0);
                assert_eq!(l.get(col), Some(want), "{} {col}", l.name);
            }
        }
        let v3 = links.iter().find(|l| l.name == "v3").unwrap();
        assert_eq!(v3.get("receive_otherhost_dropped"), Some(5));
        assert_eq!(v3.stats64[0], 5);
    }

    /// `lo` is the host's only by default; `loopback: all` and `none` widen and narrow that,
    /// other values are refused with what is expected.
    #[test]
    fn loopback_of_the_host_only_by_default() {
        let dir = std::env::temp_dir().join(format!("netsleuth-netdev-lo-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("net")).unwrap();
        std::fs::write(
            dir.join("net/dev"),
            "Inter-|   Receive                                                |  Transmit\n \
             face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
             lo:      11       1    0    0    0     0          0         0       11       1    0    0    0     0       0          0\n  \
             eth0:      22       2    0    0    0     0          0         0       33       3    0    0    0     0       0          0\n",
        )
        .unwrap();
        let devices = |args: &str, host: bool| {
            let c = build_probe(specs(), "netdev", args);
            samples_of_dir(c.as_ref(), &dir, host)
                .into_iter()
                .filter(|l| l.starts_with("netsleuth_netdev_receive_bytes_total"))
                .collect::<Vec<_>>()
        };
        let lo = "netsleuth_netdev_receive_bytes_total{device=\"lo\"} 11";
        let eth0 = "netsleuth_netdev_receive_bytes_total{device=\"eth0\"} 22";
        assert_eq!(devices("", false), [eth0]);
        assert_eq!(devices("", true), [lo, eth0]);
        assert_eq!(devices("{loopback: host}", false), [eth0]);
        assert_eq!(devices("{loopback: all}", false), [lo, eth0]);
        assert_eq!(devices("{loopback: none}", true), [eth0]);
        let y: serde_norway::Value = serde_norway::from_str("{loopback: pods}").unwrap();
        let err = build(&mut ProbeArgs::from_yaml("netdev", &y).unwrap())
            .err()
            .unwrap();
        assert!(err.contains("`loopback` is `pods`"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn netlink_rendering() {
        let mut links = Vec::new();
        parse_link_stats(LINKS, &mut links).unwrap();
        // An older kernel's shorter struct (5.10: 24 counters, no rx_otherhost_dropped).
        links.push(LinkStats {
            name: "old0".into(),
            stats64: (0..24).map(|i| 1000 + i).collect(),
        });
        links.push(LinkStats {
            name: "nostats".into(),
            stats64: vec![],
        });
        let y: serde_norway::Value =
            serde_norway::from_str("{fields: 'receive_(nohandler|otherhost_dropped|crc_errors)', devices: 'v3|old0|nostats'}").unwrap();
        let mut a = ProbeArgs::from_yaml("netdev", &y).unwrap();
        let fields = FieldFilter::from_args(&mut a, DEFAULT_FIELDS).unwrap();
        let devices = FieldFilter::new(a.take_regex("devices").unwrap().unwrap());
        let p = NetdevProbe {
            netlink: true,
            fields,
            devices,
            exclude: None,
            loopback: Loopback::Host,
            names: NameCache::new(),
        };
        let mut f = crate::model::Families::new();
        p.emit_netlink(&links, false, &mut f.sink(""));
        let mut text = String::new();
        f.render(&mut text);
        lint_rendering(&text);
        let mut got = samples(&text);
        got.sort();
        assert_eq!(
            got,
            [
                "netsleuth_netdev_receive_crc_errors_total{device=\"old0\"} 1012",
                "netsleuth_netdev_receive_crc_errors_total{device=\"v3\"} 0",
                "netsleuth_netdev_receive_nohandler_total{device=\"old0\"} 1023",
                "netsleuth_netdev_receive_nohandler_total{device=\"v3\"} 0",
                "netsleuth_netdev_receive_otherhost_dropped_total{device=\"v3\"} 5",
            ]
        );
        assert!(text.contains("# HELP netsleuth_netdev_receive_otherhost_dropped_total Received packets dropped because they were addressed to another host's MAC (rx_otherhost_dropped), by the network device (rtnetlink IFLA_STATS64).\n"));
        // The default fields need no netlink and no entering.
        assert!(build_probe(specs(), "netdev", "")
            .netlink_protocols()
            .is_empty());
    }

    #[test]
    fn link_stats_garbage() {
        let mut out = Vec::new();
        for cut in 0..LINKS.len() {
            out.clear();
            let _ = parse_link_stats(&LINKS[..cut], &mut out);
        }
        // A stats block that is not a whole number of u64s, a link without a name, another
        // message type: errors naming the problem.
        fn msg(ty: u16, attrs: &[(u16, &[u8])]) -> Vec<u8> {
            let mut p = vec![0u8; 16]; // ifinfomsg
            p[4..8].copy_from_slice(&7i32.to_ne_bytes());
            for (k, v) in attrs {
                p.extend_from_slice(&((4 + v.len()) as u16).to_ne_bytes());
                p.extend_from_slice(&k.to_ne_bytes());
                p.extend_from_slice(v);
                while p.len() % 4 != 0 {
                    p.push(0);
                }
            }
            let mut m = ((16 + p.len()) as u32).to_ne_bytes().to_vec();
            m.extend_from_slice(&ty.to_ne_bytes());
            m.extend_from_slice(&[0; 10]);
            m.extend(p);
            m
        }
        let e = parse_link_stats(&msg(16, &[(3, b"x0\0"), (23, &[0; 12])]), &mut out).unwrap_err();
        assert!(e.to_string().contains("IFLA_STATS64 of 12 bytes"), "{e}");
        let e = parse_link_stats(&msg(16, &[(23, &[0; 16])]), &mut out).unwrap_err();
        assert!(e.to_string().contains("link 7 has no IFLA_IFNAME"), "{e}");
        let e = parse_link_stats(&msg(17, &[]), &mut out).unwrap_err();
        assert!(e.to_string().contains("expected RTM_NEWLINK"), "{e}");
        out.clear();
        let mut one = 42u64.to_ne_bytes().to_vec();
        one.extend_from_slice(&[0; 8]);
        parse_link_stats(&msg(16, &[(3, b"x0\0"), (23, &one)]), &mut out).unwrap();
        assert_eq!(out[0].stats64, vec![42, 0]);
        assert_eq!(out[0].get("receive_crc_errors"), None);
    }
}
