//! The `io` probe: `/proc/<pid>/io` summed over the processes of a namespace.

use super::{parse_int, CollectError, Collector, FieldFilter, NetnsCtx, ProbeArgs, ProbeSpec};
use crate::model::{MetricKind, Sink, Value};

/// The fields of `/proc/<pid>/io` this probe uses; a missing key stays `None`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ProcIo {
    pub syscr: Option<u64>,
    pub syscw: Option<u64>,
    pub read_bytes: Option<u64>,
    pub write_bytes: Option<u64>,
}

/// Parse `/proc/<pid>/io` (`key: value` lines) by key. Error only if no known key parses.
pub fn parse_proc_io(data: &[u8]) -> Result<ProcIo, String> {
    let mut io = ProcIo::default();
    let mut any = false;
    for line in data.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (k, v) = (&line[..colon], line[colon + 1..].trim_ascii());
        let slot = match k {
            b"syscr" => &mut io.syscr,
            b"syscw" => &mut io.syscw,
            b"read_bytes" => &mut io.read_bytes,
            b"write_bytes" => &mut io.write_bytes,
            _ => continue,
        };
        if let (Some(Value::U64(v)), None) = (parse_int(v), *slot) {
            *slot = Some(v);
            any = true;
        }
    }
    if !any {
        return Err("no syscr/syscw/read_bytes/write_bytes field".to_string());
    }
    Ok(io)
}

const METRICS: [(&str, &str, &str); 4] = [
    ("read_syscalls", "netsleuth_io_read_syscalls_total", "Read system calls by the namespace's processes (syscr in /proc/<pid>/io, summed)."),
    ("write_syscalls", "netsleuth_io_write_syscalls_total", "Write system calls by the namespace's processes (syscw in /proc/<pid>/io, summed)."),
    ("read_bytes", "netsleuth_io_read_bytes_total", "Bytes the namespace's processes caused to be read from storage (read_bytes in /proc/<pid>/io, summed)."),
    ("write_bytes", "netsleuth_io_write_bytes_total", "Bytes the namespace's processes caused to be written to storage (write_bytes in /proc/<pid>/io, summed)."),
];

/// True for errors meaning the process is gone.
pub(crate) fn vanished(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

struct IoProbe {
    enabled: [bool; 4],
}

impl Collector for IoProbe {
    fn name(&self) -> &'static str {
        "io"
    }

    fn per_process(&self) -> bool {
        true
    }

    fn collect(&self, ctx: &NetnsCtx, out: &mut dyn Sink) -> Result<(), CollectError> {
        let mut sums = [0u64; 4];
        let (mut ok, mut denied) = (0usize, None);
        let mut path = ctx.proc_root.to_path_buf();
        for pid in ctx.pids {
            path.push(pid.to_string());
            path.push("io");
            let r = std::fs::read(&path);
            path.pop();
            path.pop();
            let data = match r {
                Ok(d) => d,
                Err(e) if vanished(&e) => continue,
                Err(e) => {
                    denied.get_or_insert_with(|| {
                        format!("reading {}/{pid}/io: {e}", ctx.proc_root.display())
                    });
                    continue;
                }
            };
            // An exiting process can show an empty file: skip it like a vanished one.
            let Ok(io) = parse_proc_io(&data) else {
                continue;
            };
            ok += 1;
            for (s, v) in sums
                .iter_mut()
                .zip([io.syscr, io.syscw, io.read_bytes, io.write_bytes])
            {
                *s = s.wrapping_add(v.unwrap_or(0));
            }
        }
        if ok == 0 {
            return match denied {
                Some(m) => Err(CollectError::Failed(m)),
                None => Ok(()),
            };
        }
        for (i, (_, name, help)) in METRICS.iter().enumerate() {
            if self.enabled[i] {
                out.emit(name, help, MetricKind::Counter, &[], Value::U64(sums[i]));
            }
        }
        Ok(())
    }
}

fn build(args: &mut ProbeArgs) -> Result<Box<dyn Collector>, String> {
    let filter = FieldFilter::from_args(args, ".*")?;
    std::mem::take(args).finish()?;
    Ok(Box::new(IoProbe {
        enabled: METRICS.map(|(f, _, _)| filter.matches(f)),
    }))
}

fn available() -> Result<(), String> {
    std::fs::read("/proc/self/io")
        .map(|_| ())
        .map_err(|e| format!("/proc/self/io: {e}"))
}

pub fn specs() -> Vec<ProbeSpec> {
    vec![ProbeSpec::new(
        "io",
        "Storage I/O system calls and bytes summed over the namespace's processes (/proc/<pid>/io); fields: read_syscalls, write_syscalls, read_bytes, write_bytes",
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
    fn proc_io_real_and_partial() {
        let io = parse_proc_io(&fixture("6.18/proc/1234/io")).unwrap();
        assert_eq!(
            io,
            ProcIo {
                syscr: Some(10),
                syscw: Some(0),
                read_bytes: Some(0),
                write_bytes: Some(0)
            }
        );
        let io = parse_proc_io(b"rchar: 1\nsyscw: 5\n").unwrap();
        assert_eq!(
            io,
            ProcIo {
                syscw: Some(5),
                ..ProcIo::default()
            }
        );
        for d in [
            &b""[..],
            b"syscr:",
            b"syscr: x",
            b"rchar: 1",
            b"\xff:\xff",
            b"syscr: -1",
        ] {
            assert!(parse_proc_io(d).is_err(), "{d:?}");
        }
    }

    #[test]
    fn sums_and_vanished_pids() {
        let c = build_probe(specs(), "io", "");
        // Pid 99999 does not exist in the fixture: skipped silently.
        let (text, r) = run(c.as_ref(), "6.18", &[1234, 99999, 1234]);
        r.unwrap();
        lint_rendering(&text);
        assert_eq!(
            samples(&text),
            vec![
                "netsleuth_io_read_bytes_total 0",
                "netsleuth_io_read_syscalls_total 20",
                "netsleuth_io_write_bytes_total 0",
                "netsleuth_io_write_syscalls_total 0",
            ]
        );
        let (text, r) = run(c.as_ref(), "6.18", &[99999]);
        assert_eq!((text.as_str(), r), ("", Ok(())));
    }
}
