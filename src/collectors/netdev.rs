//! The `netdev` probe: per-device counters from `/proc/<pid>/net/dev`.
//!
//! Column names come from the two header lines (`Inter-|   Receive ... |  Transmit` and
//! ` face |bytes packets ...|bytes ...`), so a kernel that adds a column needs no code change.
//! Names follow node_exporter: `netsleuth_netdev_receive_bytes_total{device="eth0"}`.

use rustc_hash::FxHashSet as HashSet;

use super::snmp::{metric_name, Entry, NameCache};
use super::{parse_int, CollectError, Collector, FieldFilter, NetnsCtx, ProbeArgs, ProbeSpec};
use crate::model::{snake_case, MetricKind, Sink, Value};

/// Parsed `/proc/net/dev`: column names (`receive_bytes`...) and, per device, one value per
/// column.
#[derive(Debug, Default, PartialEq)]
pub struct NetDev<'a> {
    pub columns: Vec<String>,
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
    let mut nd = NetDev {
        columns,
        ..NetDev::default()
    };
    let n = nd.columns.len();
    let mut seen = HashSet::default();
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
        if dev.is_empty() || !seen.insert(dev) {
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

struct NetdevProbe {
    fields: FieldFilter,
    devices: FieldFilter,
    exclude: Option<FieldFilter>,
    names: NameCache,
}

impl Collector for NetdevProbe {
    fn name(&self) -> &'static str {
        "netdev"
    }

    fn collect(&self, ctx: &NetnsCtx, out: &mut dyn Sink) -> Result<(), CollectError> {
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
            if !self.devices.matches(dev) || self.exclude.as_ref().is_some_and(|x| x.matches(dev)) {
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
    std::mem::take(args).finish()?;
    Ok(Box::new(NetdevProbe {
        fields,
        devices,
        exclude,
        names: NameCache::new(),
    }))
}

fn available() -> Result<(), String> {
    super::require_file("/proc/self/net/dev")
}

pub fn specs() -> Vec<ProbeSpec> {
    vec![ProbeSpec {
        name: "netdev",
        description: "Per-device receive/transmit counters (/proc/net/dev); args fields, devices, devicesExclude",
        default_fields: Some(DEFAULT_FIELDS),
        default_enabled: true,
        build,
        available,
    }]
}

#[cfg(test)]
mod tests {
    use super::super::snmp::testutil::*;
    use super::*;

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
        let c = build_probe(specs(), "netdev", "{fields: '.*'}");
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
}
