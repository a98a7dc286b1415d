//! The exporter's own figures: build info and the standard `process_*` metrics, read from
//! `/proc/self` (the `prometheus` crate's process collector would pull a second procfs version),
//! and [`SelfMetrics`], the trait other parts (the event pipeline, the HTTP server, the
//! conntrack event probe) implement to add their own counters to the page.
//!
//! It depends on `model` only, so `events` and `probes` name the trait without depending on the
//! scrape engine (which depends on `config`, which depends on them).

use std::sync::Arc;

use crate::model::{MetricKind, Sink, Value};
use crate::sys;

/// A part of the exporter with figures of its own on `/metrics` (counters it keeps itself).
pub trait SelfMetrics: Send + Sync {
    fn emit(&self, s: &mut dyn Sink);
}

/// Where sources of [`SelfMetrics`] are registered (the engine renders them on every scrape).
pub trait Registry {
    fn add_self_metrics(&self, m: Arc<dyn SelfMetrics>);
}

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Emit `netsleuth_build_info` and `process_*`.
pub fn emit(s: &mut dyn Sink) {
    s.emit(
        "netsleuth_build_info",
        "A metric with a constant '1' value labeled by version and target of the netsleuth build.",
        MetricKind::Gauge,
        &[
            ("version", VERSION),
            ("arch", std::env::consts::ARCH),
            ("os", std::env::consts::OS),
        ],
        Value::U64(1),
    );
    if let Some(p) = read_self() {
        let g = MetricKind::Gauge;
        s.emit(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            MetricKind::Counter,
            &[],
            Value::F64(p.cpu_seconds),
        );
        s.emit(
            "process_open_fds",
            "Number of open file descriptors.",
            g,
            &[],
            Value::U64(p.open_fds),
        );
        if let Some(m) = p.max_fds {
            s.emit(
                "process_max_fds",
                "Maximum number of open file descriptors.",
                g,
                &[],
                Value::U64(m),
            );
        }
        s.emit(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            g,
            &[],
            Value::U64(p.vsize),
        );
        s.emit(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            g,
            &[],
            Value::U64(p.rss_bytes),
        );
        s.emit(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            g,
            &[],
            Value::F64(p.start_time),
        );
        s.emit(
            "process_threads",
            "Number of OS threads in the process.",
            g,
            &[],
            Value::U64(p.threads),
        );
    }
}

/// Figures about this process.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcSelf {
    pub cpu_seconds: f64,
    pub open_fds: u64,
    pub max_fds: Option<u64>,
    pub vsize: u64,
    pub rss_bytes: u64,
    pub start_time: f64,
    pub threads: u64,
}

/// Parse `/proc/<pid>/stat` into (utime+stime ticks, threads, starttime ticks, vsize, rss pages).
pub fn parse_stat(stat: &str) -> Option<(u64, u64, u64, u64, u64)> {
    let close = stat.rfind(')')?;
    let f: Vec<&str> = stat[close + 1..].split_ascii_whitespace().collect();
    // f[0] is field 3 (state); field N is f[N - 3].
    let get = |n: usize| -> Option<u64> { f.get(n - 3)?.parse().ok() };
    let rss: i64 = f.get(24 - 3)?.parse().ok()?;
    Some((
        get(14)? + get(15)?,
        get(20)?,
        get(22)?,
        get(23)?,
        rss.max(0) as u64,
    ))
}

fn boot_time() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
}

/// The soft `RLIMIT_NOFILE` (what `Max open files` in `/proc/self/limits` says), none when
/// unlimited.
fn max_fds() -> Option<u64> {
    Some(sys::nofile_limit()).filter(|&n| n != libc::RLIM_INFINITY)
}

/// The open descriptors of a process, from its `/proc/<pid>/fd`: the directory's size where the
/// kernel reports the count there (6.2 on), else its entries. The exporter keeps about 9
/// descriptors per namespace open, and listing 4,500 of them every scrape cost a 500-namespace
/// scrape about 4 % of its CPU.
pub fn count_open_fds(dir: &std::path::Path) -> std::io::Result<u64> {
    let size = std::fs::metadata(dir)?.len();
    if size > 0 {
        return Ok(size);
    }
    Ok(std::fs::read_dir(dir)?.count() as u64)
}

pub fn read_self() -> Option<ProcSelf> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let (ticks, threads, start, vsize, rss) = parse_stat(&stat)?;
    let hz = sys::clock_ticks() as f64;
    let open_fds = count_open_fds(std::path::Path::new("/proc/self/fd")).unwrap_or(0);
    Some(ProcSelf {
        cpu_seconds: ticks as f64 / hz,
        open_fds,
        max_fds: max_fds(),
        vsize,
        rss_bytes: rss * sys::page_size(),
        start_time: boot_time().unwrap_or(0) as f64 + start as f64 / hz,
        threads,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_in_comm() {
        let s = "42 (a) b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 3 0 1234 10485760 300 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";
        assert_eq!(parse_stat(s), Some((12, 3, 1234, 10485760, 300)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1"), None);
    }

    /// A sleeping child with stdin, stdout, stderr, fd 7 and whatever this test inherited from
    /// its own parent open: the directory's size (this kernel) and its entries agree.
    #[test]
    fn open_fds_of_a_process() {
        use std::process::{Command, Stdio};
        let mut child = Command::new("sh")
            .args(["-c", "exec 7</dev/null; exec sleep 30"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let dir = std::path::PathBuf::from(format!("/proc/{}/fd", child.id()));
        let counted = count_open_fds(&dir);
        let listed: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let _ = child.kill();
        let _ = child.wait();
        for fd in ["0", "1", "2", "7"] {
            assert!(listed.iter().any(|l| l == fd), "fd {fd} in {listed:?}");
        }
        assert_eq!(counted.unwrap(), listed.len() as u64);
        assert!(count_open_fds(std::path::Path::new("/proc/self/fd/nonexistent")).is_err());
    }

    #[test]
    fn self_figures() {
        let p = read_self().unwrap();
        assert!(p.threads >= 1 && p.open_fds >= 3 && p.rss_bytes > 0);
        // The soft limit, as /proc/self/limits shows it.
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
        let soft = limits
            .lines()
            .find_map(|l| l.strip_prefix("Max open files"))
            .and_then(|l| l.split_whitespace().next())
            .unwrap();
        assert_eq!(p.max_fds, soft.parse().ok());
    }
}
