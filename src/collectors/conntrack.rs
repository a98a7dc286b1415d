//! The `conntrack` probe: `/proc/<pid>/net/stat/nf_conntrack` (a header of column names, then
//! one line of hex values per CPU; the column set varies by kernel, so it is parsed by header)
//! and the global `/proc/sys/net/netfilter/nf_conntrack_max`.
//!
//! `entries` is the namespace's entry count (the same on every line): gauge
//! `netsleuth_conntrack_entries`. Every other column is summed over CPUs as counter
//! `netsleuth_conntrack_<column>_total`.

use super::names::{metric_name, Entry, NameCache};
use super::{
    parse_int, read_file, CollectError, Collector, FieldFilter, NetnsCtx, ProbeArgs, ProbeSpec,
};
use crate::model::{snake_case, MetricKind, Sink, Value};

/// Parsed stat file: columns other than `entries`, with their sums over CPUs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ConntrackStat<'a> {
    pub entries: Option<u64>,
    pub columns: Vec<&'a str>,
    pub sums: Vec<u64>,
}

impl ConntrackStat<'_> {
    pub fn get(&self, column: &str) -> Option<u64> {
        let i = self.columns.iter().position(|&c| c == column)?;
        Some(self.sums[i])
    }
}

fn hex(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

/// Parse the stat file. A CPU line whose value count differs from the header's, or with a
/// non-hex value, is skipped; an error only if no line parses.
pub fn parse_conntrack_stat(data: &[u8]) -> Result<ConntrackStat<'_>, String> {
    let mut lines = data
        .split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace));
    let header = lines
        .next()
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or("missing header line")?;
    let names: Vec<&str> = header.split_ascii_whitespace().collect();
    if names.iter().any(|n| hex(n).is_some()) {
        return Err("header line has a hex number: no header".to_string());
    }
    let entries_at = names.iter().position(|&n| n == "entries");
    let mut st = ConntrackStat::default();
    let mut idx = Vec::new();
    for (i, &n) in names.iter().enumerate() {
        if Some(i) != entries_at && !st.columns.contains(&n) {
            st.columns.push(n);
            idx.push(i);
        }
    }
    st.sums = vec![0; st.columns.len()];
    let mut vals = Vec::with_capacity(names.len());
    let mut parsed = 0;
    let mut first_err = None;
    for (ln, line) in lines.enumerate() {
        vals.clear();
        let line = std::str::from_utf8(line).unwrap_or("\u{0}");
        for tok in line.split_ascii_whitespace() {
            match hex(tok) {
                Some(v) => vals.push(v),
                None => break,
            }
        }
        if vals.len() != names.len() || line.split_ascii_whitespace().count() != names.len() {
            first_err.get_or_insert_with(|| {
                format!("CPU line {}: expected {} hex values", ln + 1, names.len())
            });
            continue;
        }
        parsed += 1;
        if let Some(e) = entries_at {
            st.entries.get_or_insert(vals[e]);
        }
        for (s, &i) in st.sums.iter_mut().zip(&idx) {
            *s = s.wrapping_add(vals[i]);
        }
    }
    if parsed == 0 {
        return Err(first_err.unwrap_or_else(|| "no CPU lines".to_string()));
    }
    Ok(st)
}

const NOT_LOADED: &str = "nf_conntrack module not loaded (no /proc/net/stat/nf_conntrack)";

struct ConntrackProbe {
    filter: FieldFilter,
    names: NameCache,
    /// `nf_conntrack_max` is node-wide: read once a second, not once per namespace (a sysctl
    /// lookup per namespace showed in profiles).
    limit: std::sync::Mutex<Option<(std::path::PathBuf, std::time::Instant, Option<Value>)>>,
}

impl ConntrackProbe {
    fn limit(&self, proc_root: &std::path::Path) -> Option<Value> {
        let mut g = self.limit.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((root, at, v)) = g.as_ref() {
            if root == proc_root && at.elapsed() < std::time::Duration::from_secs(1) {
                return *v;
            }
        }
        let path = proc_root.join("sys/net/netfilter/nf_conntrack_max");
        let v = read_file(&path)
            .ok()
            .and_then(|b| parse_int(b.trim_ascii()));
        *g = Some((proc_root.to_path_buf(), std::time::Instant::now(), v));
        v
    }
}

impl Collector for ConntrackProbe {
    fn name(&self) -> &'static str {
        "conntrack"
    }

    fn collect(&self, ctx: &NetnsCtx, out: &mut dyn Sink) -> Result<(), CollectError> {
        let data = match ctx.read_net("stat/nf_conntrack") {
            Ok(d) => d,
            Err(CollectError::NotAvailable(_)) => {
                return Err(CollectError::NotAvailable(NOT_LOADED.to_string()))
            }
            Err(e) => return Err(e),
        };
        let st = parse_conntrack_stat(&data).map_err(|e| {
            CollectError::Failed(format!(
                "parsing {}: {e}",
                ctx.net_dir.join("stat/nf_conntrack").display()
            ))
        })?;
        if let (Some(e), true) = (st.entries, self.filter.matches("entries")) {
            out.emit(
                "netsleuth_conntrack_entries",
                "Connection tracking entries in the namespace (entries in /proc/net/stat/nf_conntrack).",
                MetricKind::Gauge,
                &[],
                Value::U64(e),
            );
        }
        let make = |_: &str, col: &str| {
            if !self.filter.matches(col) {
                return None;
            }
            let name = metric_name("netsleuth_conntrack", &snake_case(col), MetricKind::Counter)?;
            if name == "netsleuth_conntrack_entries_limit" {
                return None;
            }
            let help = format!(
                "Connection tracking counter {col}, summed over CPUs (/proc/net/stat/nf_conntrack)."
            );
            Some(Entry::new(name, help, MetricKind::Counter))
        };
        let mut cur = self.names.cursor();
        for (col, &v) in st.columns.iter().zip(&st.sums) {
            cur.emit("", col, Value::U64(v), &[], out, &make);
        }
        if self.filter.matches("entries_limit") {
            {
                if let Some(v) = self.limit(ctx.proc_root) {
                    out.emit(
                        "netsleuth_conntrack_entries_limit",
                        "Maximum number of connection tracking entries, node-wide (/proc/sys/net/netfilter/nf_conntrack_max).",
                        MetricKind::Gauge,
                        &[],
                        v,
                    );
                }
            }
        }
        Ok(())
    }
}

/// KubeSkoop's and node_exporter's set; the columns modern kernels keep at zero (searched,
/// new, delete, delete_list, expect_*) are one `fields` regex away.
pub const DEFAULT_FIELDS: &str =
    "entries|entries_limit|found|invalid|ignore|insert|insert_failed|drop|early_drop|icmp_error|search_restart|clashres";

fn build(args: &mut ProbeArgs) -> Result<Box<dyn Collector>, String> {
    let filter = FieldFilter::from_args(args, DEFAULT_FIELDS)?;
    std::mem::take(args).finish()?;
    Ok(Box::new(ConntrackProbe {
        filter,
        names: NameCache::new(),
        limit: std::sync::Mutex::new(None),
    }))
}

fn available() -> Result<(), String> {
    if std::path::Path::new("/proc/self/net/stat/nf_conntrack").exists() {
        Ok(())
    } else {
        Err(NOT_LOADED.to_string())
    }
}

pub fn specs() -> Vec<ProbeSpec> {
    vec![ProbeSpec::new(
        "conntrack",
        "Connection tracking entries, limit and per-CPU statistics summed (/proc/net/stat/nf_conntrack, nf_conntrack_max); fields regex over column names plus entries_limit",
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
    fn conntrack_formats() {
        let d = fixture("6.18/net/stat/nf_conntrack");
        let s = parse_conntrack_stat(&d).unwrap();
        assert_eq!(s.entries, Some(0));
        assert_eq!(s.columns.len(), 16);
        assert_eq!(s.get("chainlength"), Some(0));
        assert_eq!(s.get("clashres"), Some(0));
        let d = fixture("4.19/net/stat/nf_conntrack");
        let s = parse_conntrack_stat(&d).unwrap();
        assert_eq!(s.entries, Some(42));
        assert_eq!(s.get("searched"), Some(0));
        assert_eq!(s.get("found"), Some(0x30));
        assert_eq!(s.get("new"), Some(0x300));
        assert_eq!(s.get("ignore"), Some(0xabd));
        assert_eq!(s.get("delete_list"), Some(0xff));
        assert_eq!(s.get("search_restart"), Some(5));
        let d = fixture("5.10/net/stat/nf_conntrack");
        let s = parse_conntrack_stat(&d).unwrap();
        assert_eq!(s.entries, Some(7));
        assert_eq!(s.get("clashres"), Some(3));
        assert_eq!(s.get("insert"), Some(10));
        assert_eq!(s.get("invalid"), Some(5));
    }

    #[test]
    fn rendering() {
        // The default set on a 6.18 file: entries, limit and 10 statistics.
        let d = build_probe(specs(), "conntrack", "");
        let (text, r) = run(d.as_ref(), "6.18", &[]);
        r.unwrap();
        assert_eq!(samples(&text).len(), 12);
        assert!(!text.contains("netsleuth_conntrack_chainlength_total"));
        let c = build_probe(specs(), "conntrack", "{fields: '.*'}");
        let (text, r) = run(c.as_ref(), "6.18", &[]);
        r.unwrap();
        lint_rendering(&text);
        let max =
            String::from_utf8(fixture("6.18/proc/sys/net/netfilter/nf_conntrack_max")).unwrap();
        assert!(text.contains(&format!(
            "\nnetsleuth_conntrack_entries_limit {}\n",
            max.trim()
        )));
        assert!(text.contains("\nnetsleuth_conntrack_entries 0\n"));
        assert!(text.contains("\nnetsleuth_conntrack_insert_failed_total 0\n"));
        assert!(text.contains("\nnetsleuth_conntrack_early_drop_total 0\n"));
        assert_eq!(samples(&text).len(), 18);
        let (text, r) = run(c.as_ref(), "4.19", &[]);
        r.unwrap();
        assert!(text.contains("\nnetsleuth_conntrack_entries 42\n"));
        assert!(text.contains("\nnetsleuth_conntrack_searched_total 0\n"));
        assert!(text.contains("\nnetsleuth_conntrack_drop_total 2\n"));
        assert!(
            !text.contains("entries_limit"),
            "no nf_conntrack_max in that fixture"
        );
    }

    #[test]
    fn module_not_loaded() {
        let c = build_probe(specs(), "conntrack", "");
        let dir = fixture_dir("6.18");
        let proc_root = dir.join("proc");
        let ctx = NetnsCtx::new(1, dir.join("nonexistent"), &proc_root, false, &[]);
        let mut f = crate::model::Families::new();
        let e = c.collect(&ctx, &mut f.sink("")).unwrap_err();
        assert_eq!(e, CollectError::NotAvailable(NOT_LOADED.to_string()));
        assert!(f.is_empty());
    }

    #[test]
    fn garbage() {
        for d in [
            &b""[..],
            b"entries found\n",
            b"entries found\n1\n",
            b"entries found\n1 2 3\n",
            b"00000001 00000002\n",
            b"entries found\nzz 1\n",
            b"\xff\n\xff",
        ] {
            assert!(parse_conntrack_stat(d).is_err(), "{d:?}");
        }
        // Overflowing sums wrap instead of panicking.
        let s = parse_conntrack_stat(b"x\nffffffffffffffff\nffffffffffffffff\n").unwrap();
        assert_eq!(s.get("x"), Some(u64::MAX - 1));
        let d = fixture("6.18/net/stat/nf_conntrack");
        for cut in 0..d.len() {
            let _ = parse_conntrack_stat(&d[..cut]);
        }
    }
}
