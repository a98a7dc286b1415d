//! The `ip`, `icmp`, `tcp` and `udp` probes: `/proc/<pid>/net/snmp` and `/proc/<pid>/net/snmp6`.
//!
//! `snmp` (and `netstat`, see [`super::netstat`]) is a sequence of line pairs, a header naming
//! the fields and a line of values, both prefixed by the group: `Tcp: RtoAlgorithm RtoMin ...` /
//! `Tcp: 1 200 ...`. `snmp6` has one `Ip6InReceives  123` line per field. Every field the kernel
//! prints is exportable: names are derived from the file, never from a list in this code, and a
//! per-probe `fields` regex over `Group_Field` (node_exporter's netstat convention) picks which.
//!
//! What the header/value-pair probes share lives beside it: [`parse_pairs`] in
//! [`super::parse`], the per-field name cache [`NameCache`] and the lint-safe name builder
//! [`metric_name`] in [`super::names`] (re-exported here for the paths used outside).

pub use super::names::{metric_name, Entry, NameCache};
use super::parse::{dedupe, text_lines};
pub use super::parse::{parse_pairs, Stat};
use super::{parse_int, CollectError, Collector, FieldFilter, NetnsCtx, ProbeArgs, ProbeSpec};
use crate::model::{snake_case, MetricKind, Sink};

/// Parse `/proc/net/snmp`.
pub fn parse_snmp(data: &[u8]) -> Result<Vec<Stat<'_>>, String> {
    parse_pairs(data)
}

/// Split an snmp6 key into group and field: the group is the leading letters plus the digits
/// that follow them (`Ip6`, `Icmp6`, `Udp6`, `UdpLite6`), the field the rest (`InReceives`,
/// `InType133`).
fn split_snmp6_key(key: &str) -> Option<(&str, &str)> {
    let b = key.as_bytes();
    let letters = b.iter().take_while(|c| c.is_ascii_alphabetic()).count();
    let digits = b[letters..]
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .count();
    if letters == 0 || digits == 0 || letters + digits == b.len() {
        return None;
    }
    Some(key.split_at(letters + digits))
}

/// Parse `/proc/net/snmp6` (`Ip6InReceives   123` per line). Malformed lines are skipped; an
/// error only when nothing parses.
pub fn parse_snmp6(data: &[u8]) -> Result<Vec<Stat<'_>>, String> {
    let mut out = Vec::with_capacity(128);
    let mut first_err: Option<String> = None;
    for (n, line) in text_lines(data).enumerate() {
        let Some(line) = line else {
            first_err.get_or_insert_with(|| format!("line {}: not UTF-8", n + 1));
            continue;
        };
        let mut it = line.split_ascii_whitespace();
        let (Some(key), Some(v), None) = (it.next(), it.next(), it.next()) else {
            if !line.trim().is_empty() {
                first_err.get_or_insert_with(|| format!("line {}: not `Name value`", n + 1));
            }
            continue;
        };
        let Some((group, field)) = split_snmp6_key(key) else {
            first_err.get_or_insert_with(|| format!("line {}: no group in `{key}`", n + 1));
            continue;
        };
        let Some(value) = parse_int(v.as_bytes()) else {
            first_err.get_or_insert_with(|| format!("{key}: `{v}` is not an integer"));
            continue;
        };
        out.push(Stat {
            group,
            field,
            value,
        });
    }
    if out.is_empty() {
        return Err(first_err.unwrap_or_else(|| "no statistics found".to_string()));
    }
    dedupe(&mut out);
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The probes.

pub const DEFAULT_IP: &str = "Ip_(Forwarding|DefaultTTL|InReceives|InHdrErrors|InAddrErrors|ForwDatagrams|InUnknownProtos|InDiscards|InDelivers|OutRequests|OutDiscards|OutNoRoutes|ReasmTimeout|ReasmReqds|ReasmOKs|ReasmFails|FragOKs|FragFails|FragCreates)|Ip6_(InReceives|InDelivers|OutRequests|InDiscards|OutDiscards|InNoRoutes|OutNoRoutes|InOctets|OutOctets|InHdrErrors|InAddrErrors)";
pub const DEFAULT_ICMP: &str =
    "Icmp6?_(InMsgs|OutMsgs|InErrors|OutErrors|InDestUnreachs|OutDestUnreachs|InCsumErrors)";
pub const DEFAULT_TCP: &str = "Tcp_(ActiveOpens|PassiveOpens|AttemptFails|EstabResets|CurrEstab|InSegs|OutSegs|RetransSegs|InErrs|OutRsts|InCsumErrors)";
/// UdpLite and UdpLite6 are exportable but off by default (almost nobody uses UDP-Lite).
pub const DEFAULT_UDP: &str = "Udp6?_(InDatagrams|NoPorts|InErrors|OutDatagrams|RcvbufErrors|SndbufErrors|InCsumErrors|IgnoredMulti)";

/// Which probe owns which groups.
const IP_GROUPS: &[&str] = &["Ip", "Ip6"];
const ICMP_GROUPS: &[&str] = &["Icmp", "IcmpMsg", "Icmp6"];
const TCP_GROUPS: &[&str] = &["Tcp"];
const UDP_GROUPS: &[&str] = &["Udp", "UdpLite", "Udp6", "UdpLite6"];

/// Fields that are values, not counters.
fn is_gauge(group: &str, field: &str) -> bool {
    matches!(
        (group, field),
        (
            "Tcp",
            "RtoAlgorithm" | "RtoMin" | "RtoMax" | "MaxConn" | "CurrEstab"
        ) | ("Ip", "Forwarding" | "DefaultTTL")
    )
}

/// English help for well-known fields.
fn known_help(group: &str, field: &str) -> Option<&'static str> {
    Some(match (group, field) {
        ("Tcp", "RtoAlgorithm") => "TCP retransmission timeout algorithm, 1 = other (Tcp RtoAlgorithm in /proc/net/snmp).",
        ("Tcp", "RtoMin") => "Minimum TCP retransmission timeout in milliseconds (Tcp RtoMin in /proc/net/snmp).",
        ("Tcp", "RtoMax") => "Maximum TCP retransmission timeout in milliseconds (Tcp RtoMax in /proc/net/snmp).",
        ("Tcp", "MaxConn") => "Limit on TCP connections, -1 if dynamic (Tcp MaxConn in /proc/net/snmp).",
        ("Tcp", "ActiveOpens") => "TCP connections opened actively, SYN sent (Tcp ActiveOpens in /proc/net/snmp).",
        ("Tcp", "PassiveOpens") => "TCP connections opened passively, SYN received (Tcp PassiveOpens in /proc/net/snmp).",
        ("Tcp", "AttemptFails") => "TCP connection attempts that failed (Tcp AttemptFails in /proc/net/snmp).",
        ("Tcp", "EstabResets") => "TCP connections reset from ESTABLISHED or CLOSE-WAIT (Tcp EstabResets in /proc/net/snmp).",
        ("Tcp", "CurrEstab") => "TCP connections currently in ESTABLISHED or CLOSE-WAIT (Tcp CurrEstab in /proc/net/snmp).",
        ("Tcp", "InSegs") => "TCP segments received, including errors (Tcp InSegs in /proc/net/snmp).",
        ("Tcp", "OutSegs") => "TCP segments sent, excluding retransmissions (Tcp OutSegs in /proc/net/snmp).",
        ("Tcp", "RetransSegs") => "TCP segments retransmitted (Tcp RetransSegs in /proc/net/snmp).",
        ("Tcp", "InErrs") => "TCP segments received in error (Tcp InErrs in /proc/net/snmp).",
        ("Tcp", "OutRsts") => "TCP segments sent with the RST flag (Tcp OutRsts in /proc/net/snmp).",
        ("Tcp", "InCsumErrors") => "TCP segments received with a bad checksum (Tcp InCsumErrors in /proc/net/snmp).",
        ("Ip", "Forwarding") => "IPv4 forwarding, 1 = enabled, 2 = disabled (Ip Forwarding in /proc/net/snmp).",
        ("Ip", "DefaultTTL") => "Default IPv4 time-to-live (Ip DefaultTTL in /proc/net/snmp).",
        ("Ip", "InReceives") => "IPv4 datagrams received, including errors (Ip InReceives in /proc/net/snmp).",
        ("Ip", "InDelivers") => "IPv4 datagrams delivered to upper layers (Ip InDelivers in /proc/net/snmp).",
        ("Ip", "OutRequests") => "IPv4 datagrams handed to IP for sending (Ip OutRequests in /proc/net/snmp).",
        ("Ip", "InDiscards") => "IPv4 datagrams received and discarded without error, e.g. lack of buffers (Ip InDiscards in /proc/net/snmp).",
        ("Ip", "OutNoRoutes") => "IPv4 datagrams dropped for lack of a route (Ip OutNoRoutes in /proc/net/snmp).",
        ("Ip", "ForwDatagrams") => "IPv4 datagrams forwarded (Ip ForwDatagrams in /proc/net/snmp).",
        ("Udp", "InDatagrams") => "UDP datagrams delivered to sockets (Udp InDatagrams in /proc/net/snmp).",
        ("Udp", "OutDatagrams") => "UDP datagrams sent (Udp OutDatagrams in /proc/net/snmp).",
        ("Udp", "NoPorts") => "UDP datagrams received for a port with no listener (Udp NoPorts in /proc/net/snmp).",
        ("Udp", "InErrors") => "UDP datagrams that could not be delivered, other than for lack of a port (Udp InErrors in /proc/net/snmp).",
        ("Udp", "RcvbufErrors") => "UDP datagrams dropped because the socket receive buffer was full (Udp RcvbufErrors in /proc/net/snmp).",
        ("Udp", "SndbufErrors") => "UDP datagrams dropped because the socket send buffer was full (Udp SndbufErrors in /proc/net/snmp).",
        ("Udp6", "RcvbufErrors") => "UDP over IPv6 datagrams dropped because the socket receive buffer was full (Udp6 RcvbufErrors in /proc/net/snmp6).",
        ("Icmp", "InMsgs") => "ICMP messages received, including errors (Icmp InMsgs in /proc/net/snmp).",
        ("Icmp", "OutMsgs") => "ICMP messages sent (Icmp OutMsgs in /proc/net/snmp).",
        ("Ip6", "InReceives") => "IPv6 datagrams received, including errors (Ip6 InReceives in /proc/net/snmp6).",
        _ => return None,
    })
}

/// `netsleuth_<group lowercased>`, keeping only letters and digits (`IcmpMsg` → `icmpmsg`).
pub fn group_prefix(group: &str) -> String {
    let mut p = String::with_capacity(group.len() + 10);
    p.push_str("netsleuth_");
    p.extend(
        group
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase()),
    );
    p
}

/// Build the entry for a field of a header/value or snmp6 file. `file` is the path shown in
/// help (`/proc/net/snmp`).
pub fn make_entry(
    filter: &FieldFilter,
    group: &str,
    field: &str,
    kind: MetricKind,
    file: &str,
) -> Option<Entry> {
    let mut key = String::with_capacity(group.len() + field.len() + 1);
    key.push_str(group);
    key.push('_');
    key.push_str(field);
    if !filter.matches(&key) {
        return None;
    }
    let prefix = group_prefix(group);
    let name = metric_name(&prefix, &snake_case(field), kind)?;
    let help = match known_help(group, field) {
        Some(h) => h.to_string(),
        None => format!(
            "Kernel {} {group} {field} from {file}.",
            if kind == MetricKind::Counter {
                "counter"
            } else {
                "value"
            }
        ),
    };
    Some(Entry::new(name, help, kind))
}

struct SnmpProbe {
    name: &'static str,
    groups: &'static [&'static str],
    filter: FieldFilter,
    /// One cache per file (`snmp`, `snmp6`): each follows its own key sequence.
    names: [NameCache; 2],
}

impl SnmpProbe {
    fn emit_stats<'s>(
        &self,
        stats: impl Iterator<Item = Stat<'s>>,
        file: &str,
        out: &mut dyn Sink,
    ) {
        let mut cur = self.names[usize::from(file.ends_with('6'))].cursor();
        // Keys come grouped: decide per run of one group, not per key.
        let mut last: (&str, bool) = ("", false);
        for s in stats {
            if s.group != last.0 {
                last = (s.group, self.groups.contains(&s.group));
            }
            if !last.1 {
                continue;
            }
            let make = |g: &str, f: &str| {
                let kind = if is_gauge(g, f) {
                    MetricKind::Gauge
                } else {
                    MetricKind::Counter
                };
                make_entry(&self.filter, g, f, kind, file)
            };
            cur.emit(s.group, s.field, s.value, &[], out, &make);
        }
    }
}

impl Collector for SnmpProbe {
    fn name(&self) -> &'static str {
        self.name
    }

    fn collect(&self, ctx: &NetnsCtx, out: &mut dyn Sink) -> Result<(), CollectError> {
        let wants_v4 = self.groups.iter().any(|g| !g.ends_with('6'));
        let wants_v6 = self.groups.iter().any(|g| g.ends_with('6'));
        if wants_v4 {
            let stats = ctx.stats("snmp", parse_snmp)?;
            self.emit_stats(stats.iter(), "/proc/net/snmp", out);
        }
        if wants_v6 {
            // No snmp6 when IPv6 is disabled: the IPv4 groups stand alone.
            let stats = match ctx.stats("snmp6", parse_snmp6) {
                Ok(s) => s,
                Err(CollectError::NotAvailable(_)) if wants_v4 => return Ok(()),
                Err(e) => return Err(e),
            };
            self.emit_stats(stats.iter(), "/proc/net/snmp6", out);
        }
        Ok(())
    }
}

fn build(
    args: &mut ProbeArgs,
    name: &'static str,
    groups: &'static [&'static str],
    default: &str,
) -> Result<Box<dyn Collector>, String> {
    let filter = FieldFilter::from_args(args, default)?;
    std::mem::take(args).finish()?;
    Ok(Box::new(SnmpProbe {
        name,
        groups,
        filter,
        names: [NameCache::new(), NameCache::new()],
    }))
}

fn available() -> Result<(), String> {
    super::require_file("/proc/self/net/snmp")
}

pub fn specs() -> Vec<ProbeSpec> {
    vec![
        ProbeSpec {
            name: "ip",
            description: "IPv4 and IPv6 counters (Ip in /proc/net/snmp, Ip6 in /proc/net/snmp6)",
            default_fields: Some(DEFAULT_IP),
            default_enabled: true,
            build: |a| build(a, "ip", IP_GROUPS, DEFAULT_IP),
            available,
        },
        ProbeSpec {
            name: "icmp",
            description: "ICMP counters (Icmp, IcmpMsg in /proc/net/snmp, Icmp6 in /proc/net/snmp6)",
            default_fields: Some(DEFAULT_ICMP),
            default_enabled: true,
            build: |a| build(a, "icmp", ICMP_GROUPS, DEFAULT_ICMP),
            available,
        },
        ProbeSpec {
            name: "tcp",
            description: "TCP counters and connection gauges (Tcp in /proc/net/snmp)",
            default_fields: Some(DEFAULT_TCP),
            default_enabled: true,
            build: |a| build(a, "tcp", TCP_GROUPS, DEFAULT_TCP),
            available,
        },
        ProbeSpec {
            name: "udp",
            description: "UDP counters (Udp, UdpLite in /proc/net/snmp, Udp6, UdpLite6 in /proc/net/snmp6); UdpLite is off by default",
            default_fields: Some(DEFAULT_UDP),
            default_enabled: true,
            build: |a| build(a, "udp", UDP_GROUPS, DEFAULT_UDP),
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
    fn snmp_6_18_real() {
        let d = fixture("6.18/net/snmp");
        let s = parse_snmp(&d).unwrap();
        assert_eq!(get(&s, "Tcp", "MaxConn"), Some(Value::I64(-1)));
        assert_eq!(get(&s, "Tcp", "RtoMax"), Some(Value::U64(120000)));
        assert_eq!(get(&s, "Tcp", "ActiveOpens"), Some(Value::U64(1)));
        assert_eq!(get(&s, "Tcp", "OutRsts"), Some(Value::U64(1)));
        assert_eq!(get(&s, "Ip", "Forwarding"), Some(Value::U64(2)));
        // Added in 6.x: found without any code knowing it.
        assert_eq!(get(&s, "Ip", "OutTransmits"), Some(Value::U64(6)));
        assert_eq!(get(&s, "Icmp", "OutRateLimitHost"), Some(Value::U64(0)));
        assert_eq!(get(&s, "IcmpMsg", "InType3"), Some(Value::U64(2)));
        assert_eq!(get(&s, "Udp", "NoPorts"), Some(Value::U64(2)));
        assert_eq!(get(&s, "UdpLite", "MemErrors"), Some(Value::U64(0)));
        assert_eq!(s.len(), 20 + 29 + 2 + 15 + 9 + 9);
    }

    #[test]
    fn snmp_4_19_format() {
        let d = fixture("4.19/net/snmp");
        let s = parse_snmp(&d).unwrap();
        assert_eq!(get(&s, "Ip", "OutTransmits"), None);
        assert_eq!(get(&s, "Ip", "InReceives"), Some(Value::U64(1836518)));
        assert_eq!(get(&s, "Tcp", "RetransSegs"), Some(Value::U64(2310)));
        assert_eq!(get(&s, "Udp", "RcvbufErrors"), Some(Value::U64(5)));
        assert_eq!(get(&s, "Udp", "MemErrors"), None);
        assert_eq!(s.len(), 19 + 27 + 2 + 15 + 8 + 8);
    }

    #[test]
    fn snmp6_formats() {
        let d = fixture("6.18/net/snmp6");
        let s = parse_snmp6(&d).unwrap();
        assert_eq!(get(&s, "Ip6", "InReceives"), Some(Value::U64(0)));
        assert_eq!(get(&s, "Udp6", "MemErrors"), Some(Value::U64(0)));
        assert_eq!(get(&s, "UdpLite6", "InCsumErrors"), Some(Value::U64(0)));
        assert_eq!(get(&s, "Icmp6", "OutMLDv2Reports"), Some(Value::U64(0)));
        assert_eq!(s.len(), d.iter().filter(|&&b| b == b'\n').count());

        let d = fixture("4.19/net/snmp6");
        let s = parse_snmp6(&d).unwrap();
        assert_eq!(get(&s, "Ip6", "InReceives"), Some(Value::U64(2231)));
        assert_eq!(get(&s, "Ip6", "InOctets"), Some(Value::U64(u64::MAX)));
        assert_eq!(get(&s, "Icmp6", "InType135"), Some(Value::U64(19)));
        assert_eq!(get(&s, "Icmp6", "OutType143"), Some(Value::U64(8)));
        assert_eq!(get(&s, "Udp6", "RcvbufErrors"), Some(Value::U64(9)));
        assert_eq!(s.len(), 19);
    }

    #[test]
    fn mismatched_group_skipped_rest_kept() {
        let d = b"Tcp: A B C\nTcp: 1 2\nUdp: X Y\nUdp: 3 4\nIp: F\nIp: zz\n";
        let s = parse_snmp(d).unwrap();
        assert_eq!(
            s,
            vec![
                Stat {
                    group: "Udp",
                    field: "X",
                    value: Value::U64(3)
                },
                Stat {
                    group: "Udp",
                    field: "Y",
                    value: Value::U64(4)
                }
            ]
        );
        let e = parse_snmp(b"Tcp: A B C\nTcp: 1 2\n").unwrap_err();
        assert_eq!(e, "group Tcp: 3 field names but 2 values");
    }

    #[test]
    fn garbage_never_panics() {
        for d in [
            &b""[..],
            b"\n\n\n",
            b":",
            b": :\n: :",
            b"Tcp:",
            b"Tcp: A\n",
            b"Tcp: A\nUdp: 1\n",
            b"\xff\xfe:\x00 1\n\xff\xfe:\x00 1",
            b"Ip6",
            b"6 6\n66 6\nIp6 x\nIp6In 1 2\n",
        ] {
            assert!(parse_snmp(d).is_err(), "{d:?}");
            assert!(parse_snmp6(d).is_err(), "{d:?}");
        }
        // Truncated real file: the complete pairs survive.
        let d = fixture("6.18/net/snmp");
        let cut = &d[..d.len() / 2];
        assert!(get(&parse_snmp(cut).unwrap(), "Ip", "InReceives").is_some());
        let long = format!(
            "Tcp: {}\nTcp: {}\n",
            "A ".repeat(100_000),
            "1 ".repeat(100_000)
        );
        assert_eq!(parse_snmp(long.as_bytes()).unwrap().len(), 1);
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut buf = Vec::new();
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf.push(b"Tcp: 1-\n 6aIp:"[(x % 14) as usize]);
        }
        let _ = parse_snmp(&buf);
        let _ = parse_snmp6(&buf);
    }

    #[test]
    fn tcp_default_rendering() {
        let c = build_probe(specs(), "tcp", "");
        let (text, r) = run(c.as_ref(), "6.18", &[]);
        r.unwrap();
        assert_eq!(
            samples(&text),
            vec![
                "netsleuth_tcp_active_opens_total 1",
                "netsleuth_tcp_attempt_fails_total 1",
                "netsleuth_tcp_curr_estab 0",
                "netsleuth_tcp_estab_resets_total 0",
                "netsleuth_tcp_in_csum_errors_total 0",
                "netsleuth_tcp_in_errs_total 0",
                "netsleuth_tcp_in_segs_total 2",
                "netsleuth_tcp_out_rsts_total 1",
                "netsleuth_tcp_out_segs_total 2",
                "netsleuth_tcp_passive_opens_total 0",
                "netsleuth_tcp_retrans_segs_total 0",
            ]
        );
        assert!(text.contains(
            "# HELP netsleuth_tcp_retrans_segs_total TCP segments retransmitted (Tcp RetransSegs in /proc/net/snmp).\n# TYPE netsleuth_tcp_retrans_segs_total counter\n"
        ));
        assert!(text.contains("# TYPE netsleuth_tcp_curr_estab gauge\n"));
        // The second collection uses the cache and renders the same.
        assert_eq!(run(c.as_ref(), "6.18", &[]).0, text);
    }

    #[test]
    fn every_field_exportable_and_lint_clean() {
        for probe in ["ip", "icmp", "tcp", "udp"] {
            let c = build_probe(specs(), probe, "{fields: '.*'}");
            for k in ["6.18", "4.19"] {
                let (text, r) = run(c.as_ref(), k, &[]);
                r.unwrap();
                lint_rendering(&text);
            }
        }
        let c = build_probe(specs(), "ip", "{fields: '.*'}");
        let (text, _) = run(c.as_ref(), "6.18", &[]);
        assert!(text.contains("\nnetsleuth_ip_forwarding 2\n"));
        assert!(text.contains("\nnetsleuth_ip_default_ttl 64\n"));
        assert!(text.contains("\nnetsleuth_ip_out_transmits_total 6\n"));
        assert!(text.contains("\nnetsleuth_ip6_in_receives_total 0\n"));
        let c = build_probe(specs(), "icmp", "{fields: '.*'}");
        let (text, _) = run(c.as_ref(), "4.19", &[]);
        assert!(text.contains("\nnetsleuth_icmpmsg_in_type3_total 45\n"));
        assert!(text.contains("\nnetsleuth_icmp6_in_type135_total 19\n"));
        let c = build_probe(specs(), "udp", "");
        let (text, _) = run(c.as_ref(), "4.19", &[]);
        assert!(text.contains("\nnetsleuth_udp6_rcvbuf_errors_total 9\n"));
        assert!(!text.contains("udplite"), "UdpLite is off by default");
        let c = build_probe(specs(), "tcp", "");
        let (text, _) = run(c.as_ref(), "4.19", &[]);
        assert!(!text.contains("max_conn"));
        let c = build_probe(specs(), "tcp", "{fields: 'Tcp_MaxConn'}");
        let (text, _) = run(c.as_ref(), "4.19", &[]);
        assert_eq!(samples(&text), vec!["netsleuth_tcp_max_conn -1"]);
    }

    #[test]
    fn unknown_arg_rejected() {
        let s = spec(specs(), "udp");
        let y: serde_norway::Value = serde_norway::from_str("{fields: x, device: y}").unwrap();
        let mut a = ProbeArgs::from_yaml("udp", &y).unwrap();
        let e = (s.build)(&mut a).err().unwrap();
        assert_eq!(e, "probe udp: unknown arg `device`");
    }

    #[test]
    fn repeated_keys_keep_the_first_value_every_time() {
        let d = b"Tcp: A B A\nTcp: 1 2 3\nUdp: X\nUdp: 4\nTcp: B\nTcp: 5\n";
        // Twice: the second parse must not trust a remembered "no repeats" for this layout.
        for _ in 0..2 {
            let s = parse_pairs(d).unwrap();
            let keys: Vec<_> = s.iter().map(|x| (x.group, x.field, x.value)).collect();
            assert_eq!(
                keys,
                [
                    ("Tcp", "A", Value::U64(1)),
                    ("Tcp", "B", Value::U64(2)),
                    ("Udp", "X", Value::U64(4))
                ]
            );
        }
        let s = parse_snmp6(b"Ip6InReceives 1\nIp6InReceives 2\nIp6OutRequests 3\n").unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(get(&s, "Ip6", "InReceives"), Some(Value::U64(1)));
    }
}
