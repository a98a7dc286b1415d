//! What TLS with basic auth costs a scrape, and what the listener sustains.
//!
//! Run (root, it creates network namespaces): `cargo bench --bench web`. It makes
//! NETSLEUTH_BENCH_NETNS (500) namespaces with a veth each, starts two exporters on the same
//! node, one plain and one with `--web.config.file` (TLS 1.3, bcrypt basic auth, cost 10), and
//! scrapes them in alternating rounds over one kept-alive connection each (as Prometheus does):
//! p50 of each and their ratio (target ≤ 1.10). Then the plain listener's connections per
//! second (connect, GET /-/healthy, close; NETSLEUTH_BENCH_CLIENTS threads) and its threads and
//! RSS with 5,000 stalled connections open. Quote the ratio, not the times: the machines vary.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env_or(key: &str, d: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// Read one HTTP/1.1 response with a Content-Length (or chunked) from a kept-alive stream.
fn read_response(r: &mut impl Read) -> usize {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        r.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .expect("a Content-Length (uncompressed /metrics)");
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).unwrap();
    len
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

// The child is returned and killed and waited for by the caller.
#[allow(clippy::zombie_processes)]
fn start(bin: &str, port: u16, extra: &[String]) -> std::process::Child {
    let c = Command::new(bin)
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn")
        .args(extra)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return c;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("exporter on {port} did not start");
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn pki(dir: &Path) -> Arc<rustls::ClientConfig> {
    use rcgen::{CertificateParams, KeyPair, SanType};
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().unwrap())];
    let cert = p.self_signed(&key).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    let hash = bcrypt::hash("bench password", 10).unwrap();
    std::fs::write(
        dir.join("web.yml"),
        format!(
            "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\nbasic_auth_users:\n  prometheus: '{hash}'\n"
        ),
    )
    .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("the web benchmark needs root (it creates network namespaces)");
        return;
    }
    let n = env_or("NETSLEUTH_BENCH_NETNS", 500);
    let rounds = env_or("NETSLEUTH_BENCH_SCRAPES", 20);
    let clients = env_or("NETSLEUTH_BENCH_CLIENTS", 4);
    let status = Command::new("cargo")
        .args(["build", "--release", "--quiet", "--bin", "netsleuth"])
        .status()
        .unwrap();
    assert!(status.success());
    let bin = format!("{}/target/release/netsleuth", env!("CARGO_MANIFEST_DIR"));
    let tag = std::process::id() % 10000;
    let dir = std::env::temp_dir().join(format!("nslwebbench{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    let tls = pki(&dir);

    // Namespaces, each with a veth (its device series) — one `ip -batch` for all.
    let mut batch = String::new();
    let names: Vec<String> = (0..n).map(|i| format!("nslw{tag}x{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        batch.push_str(&format!(
            "netns add {name}\nlink add nslw{tag}v{i} type veth peer name eth0 netns {name}\n"
        ));
    }
    let mut ip = Command::new("ip")
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    ip.stdin
        .take()
        .unwrap()
        .write_all(batch.as_bytes())
        .unwrap();
    assert!(ip.wait().unwrap().success());

    let plain = start(&bin, 19301, &[]);
    let secure = start(
        &bin,
        19302,
        &[format!(
            "--web.config.file={}",
            dir.join("web.yml").display()
        )],
    );
    let auth = "Authorization: Basic cHJvbWV0aGV1czpiZW5jaCBwYXNzd29yZA==\r\n";
    let req_plain = b"GET /metrics HTTP/1.1\r\nHost: b\r\n\r\n".to_vec();
    let req_tls = format!("GET /metrics HTTP/1.1\r\nHost: b\r\n{auth}\r\n").into_bytes();
    let mut p = TcpStream::connect("127.0.0.1:19301").unwrap();
    let mut sock = TcpStream::connect("127.0.0.1:19302").unwrap();
    let mut conn = rustls::ClientConnection::new(
        tls.clone(),
        rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
    )
    .unwrap();
    let mut s = rustls::Stream::new(&mut conn, &mut sock);
    // Warm-up (and the first, uncached bcrypt check).
    p.write_all(&req_plain).unwrap();
    let size = read_response(&mut p);
    s.write_all(&req_tls).unwrap();
    read_response(&mut s);
    let (mut tp, mut ts) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        p.write_all(&req_plain).unwrap();
        read_response(&mut p);
        tp.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        s.write_all(&req_tls).unwrap();
        read_response(&mut s);
        ts.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let (mp, ms) = (pct(&mut tp, 0.5), pct(&mut ts, 0.5));
    println!(
        "{n} netns, {} KiB page, {rounds} rounds on kept-alive connections: plain p50 {mp:.1} ms, TLS+basic auth p50 {ms:.1} ms, ratio {:.3} (target <= 1.10)",
        size / 1024,
        ms / mp
    );
    drop(sock);
    let mut secure = secure;
    let _ = secure.kill();
    let _ = secure.wait();
    for name in &names {
        let _ = Command::new("ip").args(["netns", "del", name]).status();
    }

    // Connections per second: connect, GET /-/healthy, read, close; `clients` threads, 3 s.
    let stop = Instant::now() + Duration::from_secs(3);
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            std::thread::spawn(move || {
                let mut n = 0u64;
                let mut buf = [0u8; 512];
                while Instant::now() < stop {
                    let mut c = TcpStream::connect("127.0.0.1:19301").unwrap();
                    c.write_all(b"GET /-/healthy HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
                        .unwrap();
                    while c.read(&mut buf).unwrap_or(0) > 0 {}
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    println!(
        "listener: {:.0} connections/s ({clients} client threads, connect + GET /-/healthy + close)",
        total as f64 / 3.0
    );

    // 5,000 stalled connections (half a request head each).
    let pid = plain.id();
    let (t0, r0) = (status_kib(pid, "Threads:"), status_kib(pid, "VmRSS:"));
    let mut stalled = Vec::new();
    let t = Instant::now();
    for _ in 0..5000 {
        if let Ok(mut c) = TcpStream::connect("127.0.0.1:19301") {
            let _ = c.write_all(b"GET /metrics HTTP/1.1\r\nHost: b\r\nX-");
            stalled.push(c);
        }
    }
    let opened = t.elapsed();
    let t = Instant::now();
    let mut p = TcpStream::connect("127.0.0.1:19301").unwrap();
    p.write_all(&req_plain).unwrap();
    read_response(&mut p);
    let scrape = t.elapsed();
    println!(
        "5,000 stalled connections (opened in {:.1} s): threads {t0} -> {}, RSS {:.1} -> {:.1} MiB, peak {:.1} MiB; a scrape beside them {:.0} ms",
        opened.as_secs_f64(),
        status_kib(pid, "Threads:"),
        r0 as f64 / 1024.0,
        status_kib(pid, "VmRSS:") as f64 / 1024.0,
        status_kib(pid, "VmHWM:") as f64 / 1024.0,
        scrape.as_secs_f64() * 1000.0
    );
    drop(stalled);
    let mut plain = plain;
    let _ = plain.kill();
    let _ = plain.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
