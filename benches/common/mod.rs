//! What more than one bench needs.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A Loki push endpoint that reads each request whole and answers 204 on a kept-alive
/// connection (a thread per connection), optionally after a delay (a slow Loki). Counts
/// requests and connections.
pub fn loki_server(delay: Duration) -> (String, Arc<AtomicU64>, Arc<AtomicU64>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let reqs = Arc::new(AtomicU64::new(0));
    let conns = Arc::new(AtomicU64::new(0));
    let (r, n) = (reqs.clone(), conns.clone());
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            n.fetch_add(1, Ordering::Relaxed);
            let r = r.clone();
            std::thread::spawn(move || {
                let mut rd = BufReader::new(c.try_clone().unwrap());
                'conn: loop {
                    let mut len = 0usize;
                    let mut first = true;
                    loop {
                        let mut line = String::new();
                        if rd.read_line(&mut line).unwrap_or(0) == 0 {
                            break 'conn;
                        }
                        let t = line.trim_end();
                        if t.is_empty() && !first {
                            break;
                        }
                        first = false;
                        if let Some(v) = t
                            .to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().to_string())
                        {
                            len = v.parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; len];
                    if rd.read_exact(&mut body).is_err() {
                        break;
                    }
                    std::thread::sleep(delay);
                    r.fetch_add(1, Ordering::Relaxed);
                    if c.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, reqs, conns)
}

/// A field of `/proc/<pid>/status` (`VmRSS:`, `Threads:`...), its first number.
pub fn proc_status(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// `ip -force -batch` of the lines: one process for a whole batch of namespaces and links
/// (`-force`: past a failing line to the end). Whether every line succeeded.
pub fn ip_batch(lines: &[String]) -> bool {
    let mut c = Command::new("ip")
        .args(["-force", "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(lines.join("\n").as_bytes())
        .unwrap();
    c.wait().is_ok_and(|s| s.success())
}
