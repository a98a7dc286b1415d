//! The `fd` probe: open file descriptors and sockets over the processes of a namespace
//! (`/proc/<pid>/fd`). Counts descriptors, not distinct targets (KubeSkoop counted distinct
//! link targets), and emits each series once. The exporter's own process is left out: it keeps
//! about 9 descriptors per namespace on the node open (see `NetnsHandles`), which would swamp
//! its namespace's figure, and reading each of those links back cost a 500-namespace scrape
//! about a tenth of its CPU; `process_open_fds` counts them.

use super::io::vanished;
use super::{CollectError, Collector, FieldFilter, NetnsCtx, ProbeArgs, ProbeSpec};
use crate::model::{MetricKind, Sink, Value};

/// True if a `/proc/<pid>/fd/<n>` link target names a socket (`socket:[12345]`).
pub fn is_socket_link(target: &[u8]) -> bool {
    target.starts_with(b"socket:[")
}

/// Count the entries of an fd directory and those linking to sockets.
fn count_fds(dir: &std::path::Path) -> std::io::Result<(u64, u64)> {
    crate::sys::count_fd_links(dir, is_socket_link)
}

struct FdProbe {
    fds: bool,
    sockets: bool,
}

impl Collector for FdProbe {
    fn name(&self) -> &'static str {
        "fd"
    }

    fn per_process(&self) -> bool {
        true
    }

    fn collect(&self, ctx: &NetnsCtx, out: &mut dyn Sink) -> Result<(), CollectError> {
        let (mut fds, mut socks, mut ok) = (0u64, 0u64, 0usize);
        let mut denied = None;
        let mut path = ctx.proc_root.to_path_buf();
        let me = std::process::id() as i32;
        for pid in ctx.pids.iter().filter(|&&p| p != me) {
            path.push(pid.to_string());
            path.push("fd");
            let r = count_fds(&path);
            path.pop();
            path.pop();
            match r {
                Ok((f, s)) => {
                    fds += f;
                    socks += s;
                    ok += 1;
                }
                Err(e) if vanished(&e) => {}
                Err(e) => {
                    denied.get_or_insert_with(|| {
                        format!("reading {}/{pid}/fd: {e}", ctx.proc_root.display())
                    });
                }
            }
        }
        if ok == 0 {
            return match denied {
                Some(m) => Err(CollectError::Failed(m)),
                None => Ok(()),
            };
        }
        if self.fds {
            out.emit(
                "netsleuth_fd_open_fds",
                "Open file descriptors of the namespace's processes (entries of /proc/<pid>/fd, summed; the exporter's own not counted).",
                MetricKind::Gauge,
                &[],
                Value::U64(fds),
            );
        }
        if self.sockets {
            out.emit(
                "netsleuth_fd_open_sockets",
                "Open file descriptors that are sockets, over the namespace's processes (/proc/<pid>/fd links to socket:[...]; the exporter's own not counted).",
                MetricKind::Gauge,
                &[],
                Value::U64(socks),
            );
        }
        Ok(())
    }
}

fn build(args: &mut ProbeArgs) -> Result<Box<dyn Collector>, String> {
    let filter = FieldFilter::from_args(args, ".*")?;
    std::mem::take(args).finish()?;
    Ok(Box::new(FdProbe {
        fds: filter.matches("open_fds"),
        sockets: filter.matches("open_sockets"),
    }))
}

fn available() -> Result<(), String> {
    std::fs::read_dir("/proc/self/fd")
        .map(|_| ())
        .map_err(|e| format!("/proc/self/fd: {e}"))
}

pub fn specs() -> Vec<ProbeSpec> {
    vec![ProbeSpec::new(
        "fd",
        "Open file descriptors and sockets over the namespace's processes (/proc/<pid>/fd); fields: open_fds, open_sockets",
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
    fn socket_links() {
        assert!(is_socket_link(b"socket:[123]"));
        assert!(!is_socket_link(b"pipe:[1]"));
        assert!(!is_socket_link(b"/dev/null"));
        assert!(!is_socket_link(b""));
    }

    /// Regression for KubeSkoop's duplicate `openfd` series and distinct-target counting: two
    /// fds to the same socket count twice and each series appears once.
    #[test]
    fn counts_fds_once_each() {
        let dir = std::env::temp_dir().join(format!("netsleuth-fd-{}", std::process::id()));
        let fdd = dir.join("77/fd");
        std::fs::create_dir_all(&fdd).unwrap();
        for (n, t) in [
            ("0", "/dev/null"),
            ("1", "socket:[5]"),
            ("2", "socket:[5]"),
            ("3", "pipe:[9]"),
        ] {
            std::os::unix::fs::symlink(t, fdd.join(n)).unwrap();
        }
        let c = build_probe(specs(), "fd", "");
        let ctx = NetnsCtx::new(1, dir.join("net"), &dir, false, &[77, 78]);
        let mut f = crate::model::Families::new();
        c.collect(&ctx, &mut f.sink("")).unwrap();
        let mut s = String::new();
        f.render(&mut s);
        lint_rendering(&s);
        assert_eq!(
            samples(&s),
            vec!["netsleuth_fd_open_fds 4", "netsleuth_fd_open_sockets 2"]
        );
        std::fs::remove_dir_all(&dir).unwrap();
        // Through the real /proc: a sleeping child, counted as the kernel lists its fds, and
        // our own process, which is not counted.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        let pids = [child.id() as i32, std::process::id() as i32];
        let ctx = NetnsCtx::new(
            1,
            "/proc/self/net".into(),
            std::path::Path::new("/proc"),
            false,
            &pids,
        );
        let mut f = crate::model::Families::new();
        c.collect(&ctx, &mut f.sink("")).unwrap();
        let (mut fds, mut socks) = (0, 0);
        for e in std::fs::read_dir(format!("/proc/{}/fd", child.id())).unwrap() {
            fds += 1;
            let target = std::fs::read_link(e.unwrap().path()).unwrap();
            socks += is_socket_link(target.as_os_str().as_encoded_bytes()) as u32;
        }
        let _ = child.kill();
        let _ = child.wait();
        let mut s = String::new();
        f.render(&mut s);
        assert!(fds >= 3);
        assert_eq!(
            samples(&s),
            vec![
                format!("netsleuth_fd_open_fds {fds}"),
                format!("netsleuth_fd_open_sockets {socks}")
            ]
        );
    }
}
