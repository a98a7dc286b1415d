//! The `softnet` probe: per-CPU packet processing from `/proc/net/softnet_stat`.
//!
//! The file is node-global (identical in every namespace), so the probe has [`Scope::Node`]
//! and is collected once per scrape. Columns are hex: processed, dropped, time_squeeze, five
//! unused, cpu_collision, received_rps, flow_limit_count, then (5.10+) backlog_len and the CPU
//! index, and (6.x) input and process queue lengths.

use super::{CollectError, Collector, FieldFilter, NetnsCtx, ProbeArgs, ProbeSpec, Scope};
use crate::model::{MetricKind, Sink, Value};

/// One CPU's line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SoftnetCpu {
    /// The CPU index column when present, else the line number.
    pub cpu: u64,
    pub processed: u64,
    pub dropped: u64,
    pub time_squeeze: u64,
    pub cpu_collision: Option<u64>,
    pub received_rps: Option<u64>,
    pub flow_limit_count: Option<u64>,
    pub backlog_len: Option<u64>,
}

fn hex(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

/// Parse `softnet_stat`. Lines with fewer than 9 columns or non-hex values are skipped; a CPU
/// index seen twice keeps its first line; an error only if no line parses.
pub fn parse_softnet(data: &[u8]) -> Result<Vec<SoftnetCpu>, String> {
    let mut out: Vec<SoftnetCpu> = Vec::new();
    let mut first_err = None;
    for (i, line) in data
        .split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .enumerate()
    {
        let line = std::str::from_utf8(line).unwrap_or("");
        let mut cols = [0u64; 13];
        let mut n = 0;
        let mut ok = true;
        for tok in line.split_ascii_whitespace() {
            match hex(tok) {
                Some(v) => {
                    if n < cols.len() {
                        cols[n] = v;
                    }
                    n += 1;
                }
                None => {
                    ok = false;
                    break;
                }
            }
        }
        if !ok || n < 9 {
            first_err
                .get_or_insert_with(|| format!("line {}: expected at least 9 hex columns", i + 1));
            continue;
        }
        let at = |k: usize| (n > k).then_some(cols[k]);
        let c = SoftnetCpu {
            cpu: at(12).unwrap_or(i as u64),
            processed: cols[0],
            dropped: cols[1],
            time_squeeze: cols[2],
            cpu_collision: at(8),
            received_rps: at(9),
            flow_limit_count: at(10),
            backlog_len: at(11),
        };
        if out.iter().any(|x| x.cpu == c.cpu) {
            continue;
        }
        out.push(c);
    }
    if out.is_empty() {
        return Err(first_err.unwrap_or_else(|| "no CPU lines".to_string()));
    }
    Ok(out)
}

struct Metric {
    name: &'static str,
    field: &'static str,
    help: &'static str,
    kind: MetricKind,
    get: fn(&SoftnetCpu) -> Option<u64>,
}

const METRICS: &[Metric] = &[
    Metric {
        name: "netsleuth_softnet_processed_total",
        field: "processed",
        help: "Packets processed by the CPU's network softirq (/proc/net/softnet_stat).",
        kind: MetricKind::Counter,
        get: |c| Some(c.processed),
    },
    Metric {
        name: "netsleuth_softnet_dropped_total",
        field: "dropped",
        help: "Packets dropped because the CPU's input backlog was full (/proc/net/softnet_stat).",
        kind: MetricKind::Counter,
        get: |c| Some(c.dropped),
    },
    Metric {
        name: "netsleuth_softnet_times_squeezed_total",
        field: "times_squeezed",
        help: "Times the network softirq ran out of budget or time with work left (time_squeeze in /proc/net/softnet_stat).",
        kind: MetricKind::Counter,
        get: |c| Some(c.time_squeeze),
    },
    Metric {
        name: "netsleuth_softnet_cpu_collision_total",
        field: "cpu_collision",
        help: "Collisions taking the transmit lock (cpu_collision in /proc/net/softnet_stat; always 0 on newer kernels).",
        kind: MetricKind::Counter,
        get: |c| c.cpu_collision,
    },
    Metric {
        name: "netsleuth_softnet_received_rps_total",
        field: "received_rps",
        help: "Times the CPU was woken by an inter-processor interrupt to process packets steered by RPS (/proc/net/softnet_stat).",
        kind: MetricKind::Counter,
        get: |c| c.received_rps,
    },
    Metric {
        name: "netsleuth_softnet_flow_limit_count_total",
        field: "flow_limit_count",
        help: "Packets dropped by the RPS flow limit (flow_limit_count in /proc/net/softnet_stat).",
        kind: MetricKind::Counter,
        get: |c| c.flow_limit_count,
    },
    Metric {
        name: "netsleuth_softnet_backlog_len",
        field: "backlog_len",
        help: "Packets waiting in the CPU's input backlog (/proc/net/softnet_stat, kernel 5.10 and later).",
        kind: MetricKind::Gauge,
        get: |c| c.backlog_len,
    },
];

struct SoftnetProbe {
    /// Which of [`METRICS`] are selected by `fields`.
    enabled: Vec<bool>,
}

impl Collector for SoftnetProbe {
    fn name(&self) -> &'static str {
        "softnet"
    }

    fn scope(&self) -> Scope {
        Scope::Node
    }

    fn collect(&self, ctx: &NetnsCtx, out: &mut dyn Sink) -> Result<(), CollectError> {
        let data = ctx.read_net("softnet_stat")?;
        let cpus = parse_softnet(&data).map_err(|e| {
            CollectError::Failed(format!(
                "parsing {}: {e}",
                ctx.net_dir.join("softnet_stat").display()
            ))
        })?;
        for c in &cpus {
            let cpu = c.cpu.to_string();
            let labels = [("cpu", cpu.as_str())];
            for (m, _) in METRICS.iter().zip(&self.enabled).filter(|(_, &e)| e) {
                if let Some(v) = (m.get)(c) {
                    out.emit(m.name, m.help, m.kind, &labels, Value::U64(v));
                }
            }
        }
        Ok(())
    }
}

fn build(args: &mut ProbeArgs) -> Result<Box<dyn Collector>, String> {
    let filter = FieldFilter::from_args(args, ".*")?;
    std::mem::take(args).finish()?;
    Ok(Box::new(SoftnetProbe {
        enabled: METRICS.iter().map(|m| filter.matches(m.field)).collect(),
    }))
}

fn available() -> Result<(), String> {
    super::require_file("/proc/net/softnet_stat")
}

pub fn specs() -> Vec<ProbeSpec> {
    vec![ProbeSpec::new(
        "softnet",
        "Per-CPU softirq packet processing, drops and squeezes (/proc/net/softnet_stat, node-wide); fields: processed, dropped, times_squeezed, cpu_collision, received_rps, flow_limit_count, backlog_len",
        Some(".*"),
        build,
        available,
    )]
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn softnet_6_18_real_15_columns() {
        let c = parse_softnet(&fixture("6.18/net/softnet_stat")).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].cpu, 0);
        assert_eq!(c[0].processed, 0x19);
        assert_eq!(c[1].cpu, 1);
        assert_eq!(c[1].processed, 0x1354);
        assert_eq!(c[1].backlog_len, Some(0));
        assert_eq!(c[1].flow_limit_count, Some(0));
    }

    #[test]
    fn softnet_older_formats() {
        let c = parse_softnet(&fixture("4.19/net/softnet_stat")).unwrap();
        assert_eq!(
            c[1],
            SoftnetCpu {
                cpu: 1,
                processed: 0xc0ffee,
                dropped: 7,
                time_squeeze: 0xff,
                cpu_collision: Some(2),
                received_rps: Some(0x10),
                flow_limit_count: Some(1),
                backlog_len: None,
            }
        );
        let c = parse_softnet(&fixture("5.10/net/softnet_stat")).unwrap();
        assert_eq!(c[0].backlog_len, Some(5));
        assert_eq!(c[0].received_rps, Some(3));
        // The 13th column names the CPU (offline CPUs leave gaps).
        assert_eq!(c[1].cpu, 2);
        let c = parse_softnet(b"1 2 3 4 5 6 7 8 9\n").unwrap();
        assert_eq!(c[0].received_rps, None);
        assert_eq!(c[0].cpu_collision, Some(9));
    }

    #[test]
    fn rendering() {
        let p = build_probe(specs(), "softnet", "");
        let (text, r) = run(p.as_ref(), "4.19", &[]);
        r.unwrap();
        lint_rendering(&text);
        assert!(text.contains("\nnetsleuth_softnet_processed_total{cpu=\"1\"} 12648430\n"));
        assert!(text.contains("\nnetsleuth_softnet_times_squeezed_total{cpu=\"0\"} 18\n"));
        assert!(!text.contains("backlog_len"));
        assert_eq!(samples(&text).len(), 12);
        let (text, _) = run(p.as_ref(), "5.10", &[]);
        assert!(text.contains("# TYPE netsleuth_softnet_backlog_len gauge\n"));
        assert!(text.contains("\nnetsleuth_softnet_backlog_len{cpu=\"2\"} 0\n"));
        let p = build_probe(specs(), "softnet", "{fields: dropped}");
        let (text, _) = run(p.as_ref(), "6.18", &[]);
        assert_eq!(
            samples(&text),
            vec![
                "netsleuth_softnet_dropped_total{cpu=\"0\"} 0",
                "netsleuth_softnet_dropped_total{cpu=\"1\"} 0"
            ]
        );
    }

    #[test]
    fn garbage() {
        for d in [
            &b""[..],
            b"\n \n",
            b"1 2 3",
            b"zz 1 2 3 4 5 6 7 8",
            b"\xff\xff",
            b"11111111111111111 0 0 0 0 0 0 0 0",
        ] {
            assert!(parse_softnet(d).is_err(), "{d:?}");
        }
        let d = fixture("6.18/host/softnet_stat");
        for cut in 0..d.len() {
            let _ = parse_softnet(&d[..cut]);
        }
        // Many columns: only the known ones are kept.
        let long = "1 ".repeat(100_000);
        assert_eq!(parse_softnet(long.as_bytes()).unwrap()[0].cpu, 1);
    }
}
