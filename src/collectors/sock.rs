//! The `sock` probe: socket counts and memory from `/proc/<pid>/net/sockstat` and `sockstat6`
//! (`TCP: inuse 1 orphan 0 tw 0 alloc 2 mem 1`). Gauges `netsleuth_sock_<proto>_<field>`;
//! `mem` is in pages and exported as `_mem_bytes`, FRAG `memory` is bytes already
//! (`_memory_bytes`). Unlike KubeSkoop, every namespace is collected, not only the host.

use std::sync::OnceLock;

use super::names::{metric_name, Entry, NameCache};
use super::{parse_int, CollectError, Collector, FieldFilter, NetnsCtx, ProbeArgs, ProbeSpec};
use crate::model::{snake_case, MetricKind, Sink, Value};

/// One `PROTO field value` triple.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SockStat<'a> {
    pub proto: &'a str,
    pub field: &'a str,
    pub value: Value,
}

/// Parse `sockstat`/`sockstat6`. Bad lines and pairs are skipped; an error only if nothing
/// parses.
pub fn parse_sockstat(data: &[u8]) -> Result<Vec<SockStat<'_>>, String> {
    let mut out: Vec<SockStat<'_>> = Vec::with_capacity(16);
    let mut first_err = None;
    for line in data.split(|&b| b == b'\n') {
        let Ok(line) = std::str::from_utf8(line) else {
            first_err.get_or_insert_with(|| "a line is not UTF-8".to_string());
            continue;
        };
        if line.trim().is_empty() {
            continue;
        }
        let Some((proto, rest)) = line.split_once(':') else {
            first_err.get_or_insert_with(|| format!("line without `PROTO:`: {}", line.len()));
            continue;
        };
        let proto = proto.trim();
        if proto.is_empty() || proto.contains(char::is_whitespace) {
            continue;
        }
        let mut it = rest.split_ascii_whitespace();
        while let (Some(field), Some(v)) = (it.next(), it.next()) {
            let Some(value) = parse_int(v.as_bytes()) else {
                first_err
                    .get_or_insert_with(|| format!("{proto} {field}: `{v}` is not an integer"));
                continue;
            };
            if out.iter().any(|s| s.proto == proto && s.field == field) {
                continue;
            }
            out.push(SockStat {
                proto,
                field,
                value,
            });
        }
    }
    if out.is_empty() {
        return Err(first_err.unwrap_or_else(|| "no statistics found".to_string()));
    }
    Ok(out)
}

/// The system page size (sockstat `mem` is in pages).
pub fn page_size() -> u64 {
    static PS: OnceLock<u64> = OnceLock::new();
    *PS.get_or_init(crate::sys::page_size)
}

/// Fields the kernel prints in every namespace's sockstat but counts for the whole node
/// (`tcp_orphan_count`, `tcp_sockets_allocated`, protocol memory): exported for the host
/// namespace only, so that summing over pods means something.
pub fn node_global(proto: &str, field: &str) -> bool {
    matches!(
        (proto, field),
        ("TCP", "orphan" | "alloc" | "mem") | ("UDP", "mem")
    )
}

/// Build the entry for `PROTO field`; `None` if filtered out.
fn make_entry(filter: &FieldFilter, proto: &str, field: &str, page: u64) -> Option<Entry> {
    if !filter.matches(&format!("{proto}_{field}")) {
        return None;
    }
    let (suffix, scale, unit) = match field {
        "mem" => (
            "mem_bytes".to_string(),
            page,
            " in bytes (kernel pages × page size)",
        ),
        "memory" => ("memory_bytes".to_string(), 1, " in bytes"),
        f => (snake_case(f), 1, ""),
    };
    let p: String = proto
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let name = metric_name(&format!("netsleuth_sock_{p}"), &suffix, MetricKind::Gauge)?;
    let file = if proto.ends_with('6') {
        "sockstat6"
    } else {
        "sockstat"
    };
    let help = match (proto, field) {
        ("sockets", "used") => "Sockets in use, all families (sockets used in /proc/net/sockstat).".to_string(),
        (_, "inuse") => format!("{proto} sockets in use ({proto} inuse in /proc/net/{file})."),
        (_, "orphan") => format!("{proto} sockets not attached to a file descriptor ({proto} orphan in /proc/net/{file})."),
        (_, "tw") => format!("{proto} sockets in TIME-WAIT ({proto} tw in /proc/net/{file})."),
        (_, "alloc") => format!("{proto} sockets allocated ({proto} alloc in /proc/net/{file})."),
        _ => format!("Memory used by {proto} sockets{unit} ({proto} {field} in /proc/net/{file})."),
    };
    let known = matches!(
        field,
        "mem" | "memory" | "inuse" | "orphan" | "tw" | "alloc" | "used"
    );
    let help = if known {
        help
    } else {
        format!("Kernel value {proto} {field} from /proc/net/{file}.")
    };
    let mut e = Entry::new(name, help, MetricKind::Gauge);
    e.scale = scale;
    Some(e)
}

struct SockProbe {
    filter: FieldFilter,
    names: NameCache,
}

impl SockProbe {
    fn emit(&self, stats: &[SockStat<'_>], host: bool, out: &mut dyn Sink) {
        let page = page_size();
        let make = |p: &str, f: &str| make_entry(&self.filter, p, f, page);
        for s in stats {
            if !host && node_global(s.proto, s.field) {
                continue;
            }
            self.names.emit(s.proto, s.field, s.value, &[], out, &make);
        }
    }
}

impl Collector for SockProbe {
    fn name(&self) -> &'static str {
        "sock"
    }

    fn collect(&self, ctx: &NetnsCtx, out: &mut dyn Sink) -> Result<(), CollectError> {
        let data = ctx.read_net("sockstat")?;
        let stats = parse_sockstat(&data).map_err(|e| {
            CollectError::Failed(format!(
                "parsing {}: {e}",
                ctx.net_dir.join("sockstat").display()
            ))
        })?;
        self.emit(&stats, ctx.host, out);
        // sockstat6 is absent when IPv6 is disabled: sockstat alone is a full answer.
        let data = match ctx.read_net("sockstat6") {
            Ok(d) => d,
            Err(CollectError::NotAvailable(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let stats = parse_sockstat(&data).map_err(|e| {
            CollectError::Failed(format!(
                "parsing {}: {e}",
                ctx.net_dir.join("sockstat6").display()
            ))
        })?;
        self.emit(&stats, ctx.host, out);
        Ok(())
    }
}

/// Everything but UDP-Lite, which almost nobody uses (its snmp counters are off by default
/// too): two series fewer per namespace.
pub const DEFAULT_FIELDS: &str = "sockets_used|(TCP|UDP|RAW|FRAG)6?_.*";

fn build(args: &mut ProbeArgs) -> Result<Box<dyn Collector>, String> {
    let filter = FieldFilter::from_args(args, DEFAULT_FIELDS)?;
    std::mem::take(args).finish()?;
    Ok(Box::new(SockProbe {
        filter,
        names: NameCache::new(),
    }))
}

fn available() -> Result<(), String> {
    super::require_file("/proc/self/net/sockstat")
}

pub fn specs() -> Vec<ProbeSpec> {
    vec![ProbeSpec::new(
        "sock",
        "Sockets in use and socket memory per protocol (/proc/net/sockstat, sockstat6); fields regex over PROTO_field, e.g. TCP_inuse",
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
    fn sockstat_6_18_real() {
        let d = fixture("6.18/net/sockstat");
        let s = parse_sockstat(&d).unwrap();
        let get = |p: &str, f: &str| {
            s.iter()
                .find(|x| x.proto == p && x.field == f)
                .map(|x| x.value)
        };
        assert_eq!(get("sockets", "used"), Some(Value::U64(0)));
        assert_eq!(get("TCP", "alloc"), Some(Value::U64(3)));
        assert_eq!(get("TCP", "mem"), Some(Value::U64(237)));
        assert_eq!(get("FRAG", "memory"), Some(Value::U64(0)));
        assert_eq!(s.len(), 1 + 5 + 2 + 1 + 1 + 2);
        let d6 = fixture("6.18/net/sockstat6");
        let s6 = parse_sockstat(&d6).unwrap();
        assert_eq!(s6.len(), 6);
    }

    #[test]
    fn rendering() {
        let c = build_probe(specs(), "sock", "");
        let (text, r) = run(c.as_ref(), "6.18", &[]);
        r.unwrap();
        lint_rendering(&text);
        let mem = 237 * page_size();
        for l in [
            "netsleuth_sock_sockets_used 0".to_string(),
            "netsleuth_sock_tcp_inuse 0".to_string(),
            "netsleuth_sock_tcp_orphan 0".to_string(),
            "netsleuth_sock_tcp_tw 0".to_string(),
            "netsleuth_sock_tcp_alloc 3".to_string(),
            format!("netsleuth_sock_tcp_mem_bytes {mem}"),
            "netsleuth_sock_udp_mem_bytes 0".to_string(),
            "netsleuth_sock_frag_memory_bytes 0".to_string(),
            "netsleuth_sock_frag6_memory_bytes 0".to_string(),
            "netsleuth_sock_tcp6_inuse 0".to_string(),
        ] {
            assert!(samples(&text).contains(&l.as_str()), "{l}\n{text}");
        }
        // UDP-Lite is off by default, one `fields` regex away.
        assert!(!text.contains("udplite"), "{text}");
        assert_eq!(samples(&text).len(), 11 + 5);
        let all = build_probe(specs(), "sock", "{fields: '.*'}");
        let (text, r) = run(all.as_ref(), "6.18", &[]);
        r.unwrap();
        assert!(samples(&text).contains(&"netsleuth_sock_udplite6_inuse 0"));
        assert_eq!(samples(&text).len(), 12 + 6);
    }

    /// Node-global sockstat fields appear for the host namespace only (a pod's sockstat
    /// prints the node's TCP orphan/alloc/mem and UDP mem too).
    #[test]
    fn node_global_fields_only_for_the_host() {
        let c = build_probe(specs(), "sock", "");
        let dir = std::env::temp_dir().join(format!("netsleuth-sock3-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("net")).unwrap();
        std::fs::write(
            dir.join("net/sockstat"),
            "sockets: used 4\nTCP: inuse 1 orphan 2 tw 3 alloc 4 mem 5\nUDP: inuse 6 mem 7\n",
        )
        .unwrap();
        let render = |host: bool| samples_of_dir(c.as_ref(), &dir, host);
        assert_eq!(
            render(false),
            vec![
                "netsleuth_sock_sockets_used 4",
                "netsleuth_sock_tcp_inuse 1",
                "netsleuth_sock_tcp_tw 3",
                "netsleuth_sock_udp_inuse 6",
            ]
        );
        assert_eq!(render(true).len(), 8);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_sockstat6_keeps_sockstat() {
        let c = build_probe(specs(), "sock", "{fields: 'TCP_inuse|TCP6_inuse'}");
        // 4.19 fixture dir has no sockstat at all: NotAvailable.
        let (_, r) = run(c.as_ref(), "4.19", &[]);
        assert!(r.unwrap_err().starts_with("not available"));
        let dir = std::env::temp_dir().join(format!("netsleuth-sock-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("net")).unwrap();
        std::fs::write(dir.join("net/sockstat"), "TCP: inuse 7 mem 2\n").unwrap();
        let proc_root = dir.clone();
        let ctx = NetnsCtx::new(1, dir.join("net"), &proc_root, false, &[]);
        let mut f = crate::model::Families::new();
        c.collect(&ctx, &mut f.sink("")).unwrap();
        let mut s = String::new();
        f.render(&mut s);
        assert_eq!(samples(&s), vec!["netsleuth_sock_tcp_inuse 7"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn garbage_and_odd_pairs() {
        for d in [
            &b""[..],
            b"\n",
            b"TCP:",
            b"TCP: inuse",
            b"TCP: inuse x",
            b"\xff: a 1",
            b": a 1",
        ] {
            assert!(parse_sockstat(d).is_err(), "{d:?}");
        }
        let s = parse_sockstat(b"TCP: inuse 1 orphan\nTCP: inuse 9 tw 2\n").unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].value, Value::U64(1));
        // A huge page count does not overflow into a wrong value: it is dropped.
        let c = build_probe(specs(), "sock", "");
        let dir = std::env::temp_dir().join(format!("netsleuth-sock2-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("net")).unwrap();
        std::fs::write(
            dir.join("net/sockstat"),
            "TCP: mem 18446744073709551615 inuse 1\nUDP: count 3\n",
        )
        .unwrap();
        let ctx = NetnsCtx::new(1, dir.join("net"), &dir, false, &[]);
        let mut f = crate::model::Families::new();
        c.collect(&ctx, &mut f.sink("")).unwrap();
        let mut s = String::new();
        f.render(&mut s);
        // A gauge field named `count` is glued (`_count` is reserved for histograms).
        assert_eq!(
            samples(&s),
            vec!["netsleuth_sock_tcp_inuse 1", "netsleuth_sock_udpcount 3"]
        );
        lint_rendering(&s);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
