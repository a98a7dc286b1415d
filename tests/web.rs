//! The HTTP endpoint under TLS, client certificates, basic auth and abuse: the real binary on
//! loopback, a real Prometheus scraping it over TLS, promtool checking our web configs, and
//! floods of stalled, oversized and malformed requests.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// A test CA with a server certificate (127.0.0.1, localhost) and two client certificates:
/// one from the CA, one self-signed by a stranger.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose as Eku, IsCa, KeyPair,
            KeyUsagePurpose, SanType,
        };
        let dir = std::env::temp_dir().join(unique("nslweb"));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "netsleuth test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issue = |names: Vec<SanType>, eku: Eku, file: &str| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.subject_alt_names = names;
            p.extended_key_usages = vec![eku];
            let c = p.signed_by(&key, &ca_cert, &ca_key).unwrap();
            std::fs::write(dir.join(format!("{file}.pem")), c.pem()).unwrap();
            std::fs::write(dir.join(format!("{file}-key.pem")), key.serialize_pem()).unwrap();
        };
        issue(
            vec![
                SanType::IpAddress("127.0.0.1".parse().unwrap()),
                SanType::DnsName("localhost".try_into().unwrap()),
            ],
            Eku::ServerAuth,
            "server",
        );
        issue(
            vec![SanType::DnsName("prometheus.test".try_into().unwrap())],
            Eku::ClientAuth,
            "client",
        );
        issue(
            vec![SanType::DnsName("intruder.test".try_into().unwrap())],
            Eku::ClientAuth,
            "other-client",
        );
        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
        let stranger_key = KeyPair::generate().unwrap();
        let stranger = CertificateParams::new(vec!["prometheus.test".to_string()])
            .unwrap()
            .self_signed(&stranger_key)
            .unwrap();
        std::fs::write(dir.join("stranger.pem"), stranger.pem()).unwrap();
        std::fs::write(dir.join("stranger-key.pem"), stranger_key.serialize_pem()).unwrap();
        Pki { dir }
    }

    fn path(&self, f: &str) -> String {
        self.dir.join(f).display().to_string()
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn hash(pw: &str) -> String {
    // Cost 10, what `htpasswd -nBC 10` writes and exporter-toolkit documents.
    bcrypt::hash(pw, 10).unwrap()
}

fn promtool_accepts(path: &Path) {
    let out = Command::new("promtool")
        .args(["check", "web-config"])
        .arg(path)
        .output()
        .expect("promtool (Debian package prometheus; tests/setup installs it)");
    assert!(
        out.status.success(),
        "promtool check web-config {}: {}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A rustls client for the test CA, optionally presenting a client certificate.
fn tls_client(pki: &Pki, cert: Option<&str>) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(pki.dir.join("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(match cert {
        None => b.with_no_client_auth(),
        Some(name) => {
            let chain = CertificateDer::pem_file_iter(pki.dir.join(format!("{name}.pem")))
                .unwrap()
                .map(|c| c.unwrap())
                .collect();
            let key =
                PrivateKeyDer::from_pem_file(pki.dir.join(format!("{name}-key.pem"))).unwrap();
            b.with_client_auth_cert(chain, key).unwrap()
        }
    })
}

/// One HTTPS request; Err when the TLS handshake or the connection fails.
fn https_get(
    addr: &str,
    cfg: Arc<rustls::ClientConfig>,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String), String> {
    let mut sock = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = rustls::ClientConnection::new(cfg, name).unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    tls.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    match tls.read_to_end(&mut out) {
        Ok(_) => {}
        // Servers may close without close_notify after Connection: close.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => {}
        Err(e) => return Err(e.to_string()),
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line in {text:?}"))?;
    Ok((code, text))
}

fn basic(user: &str, pw: &str) -> String {
    use std::fmt::Write as _;
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = format!("{user}:{pw}").into_bytes();
    let mut o = String::from("Basic ");
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                let _ = write!(o, "{}", T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                o.push('=');
            }
        }
    }
    o
}

/// Counter value of `name{labels}` from a page (0 when absent).
fn value(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

fn prometheus_port() -> (u16, TcpListener) {
    // Prometheus binds its own port: a port is picked here and kept bound until just before
    // Prometheus starts (the test retries with another port if Prometheus loses the race).
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    (l.local_addr().unwrap().port(), l)
}

/// A real Prometheus scrapes two exporters over TLS: one with basic auth (a job with the right
/// password and one with a wrong password), one requiring a client certificate from the test CA
/// (a job with it). The API reports up 1 for both good jobs with their series, up 0 for the
/// wrong password, and the exporter counts the 401s.
#[test]
fn prometheus_scrapes_over_tls_with_basic_auth_and_client_certificates() {
    if !have("prometheus") || !have("promtool") {
        skip(
            "prometheus_scrapes_over_tls_with_basic_auth_and_client_certificates",
            "prometheus/promtool not installed (tests/setup installs the Debian package)",
        );
        return;
    }
    let pki = Pki::new();
    let auth_cfg = pki.write(
        "web-auth.yml",
        &format!(
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server-key.pem\n\
             http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n    Strict-Transport-Security: max-age=31536000\n\
             basic_auth_users:\n  prometheus: '{}'\n",
            hash("s3cret pass")
        ),
    );
    let mtls_cfg = pki.write(
        "web-mtls.yml",
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server-key.pem\n  \
         client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n  \
         client_allowed_sans: [prometheus.test]\n  min_version: TLS12\n",
    );
    promtool_accepts(&auth_cfg);
    // Debian 12's promtool (2.42) predates client_allowed_sans: it checks the rest.
    let mtls_text = std::fs::read_to_string(&mtls_cfg).unwrap();
    promtool_accepts(&pki.write(
        "web-mtls-promtool.yml",
        &mtls_text.replace("  client_allowed_sans: [prometheus.test]\n", ""),
    ));
    let auth = Exporter::start(&[&format!("--web.config.file={}", auth_cfg.display())]);
    let mtls = Exporter::start(&[&format!("--web.config.file={}", mtls_cfg.display())]);

    // Direct checks first: what each client gets.
    let anon = tls_client(&pki, None);
    let (code, resp) = https_get(&auth.addr, anon.clone(), "/metrics", &[]).unwrap();
    assert_eq!(code, 401, "{resp}");
    assert!(resp.contains("WWW-Authenticate: Basic\r\n"), "{resp}");
    assert!(
        resp.contains("X-Content-Type-Options: nosniff\r\n"),
        "{resp}"
    );
    assert!(
        resp.contains("Strict-Transport-Security: max-age=31536000\r\n"),
        "{resp}"
    );
    for bad in [
        "Basic",
        "Basic !!!",
        "Bearer abc",
        "Basic cHJvbWV0aGV1cw==",
        "",
    ] {
        let (code, _) = https_get(
            &auth.addr,
            anon.clone(),
            "/metrics",
            &[("Authorization", bad)],
        )
        .unwrap();
        assert_eq!(code, 401, "Authorization: {bad:?}");
    }
    let (code, _) = https_get(
        &auth.addr,
        anon.clone(),
        "/metrics",
        &[("Authorization", &basic("nobody", "s3cret pass"))],
    )
    .unwrap();
    assert_eq!(code, 401, "unknown user");
    let (code, page) = https_get(
        &auth.addr,
        anon.clone(),
        "/metrics",
        &[("Authorization", &basic("prometheus", "s3cret pass"))],
    )
    .unwrap();
    assert_eq!(code, 200);
    assert!(page.contains("netsleuth_build_info"));
    // The mTLS exporter: no certificate, a stranger's, one of the CA without an allowed name.
    assert!(https_get(&mtls.addr, anon.clone(), "/metrics", &[]).is_err());
    assert!(https_get(
        &mtls.addr,
        tls_client(&pki, Some("stranger")),
        "/metrics",
        &[]
    )
    .is_err());
    let (code, _) = https_get(
        &mtls.addr,
        tls_client(&pki, Some("other-client")),
        "/metrics",
        &[],
    )
    .unwrap();
    assert_eq!(code, 403, "a CA certificate without an allowed SAN");
    let (code, _) = https_get(
        &mtls.addr,
        tls_client(&pki, Some("client")),
        "/metrics",
        &[],
    )
    .unwrap();
    assert_eq!(code, 200);
    // Plain HTTP on the TLS port gets a readable answer, not a hang.
    let mut s = TcpStream::connect(&auth.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.0 400"), "{out:?}");
    assert!(out.contains("HTTP request to an HTTPS server"), "{out:?}");

    let dir = pki.dir.join("prom");
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n\
             - job_name: auth\n  scheme: https\n  tls_config: {{ca_file: {ca}}}\n  basic_auth: {{username: prometheus, password: 's3cret pass'}}\n  static_configs: [{{targets: ['{a}']}}]\n\
             - job_name: wrongpw\n  scheme: https\n  tls_config: {{ca_file: {ca}}}\n  basic_auth: {{username: prometheus, password: wrong}}\n  static_configs: [{{targets: ['{a}']}}]\n\
             - job_name: mtls\n  scheme: https\n  tls_config: {{ca_file: {ca}, cert_file: {cc}, key_file: {ck}}}\n  static_configs: [{{targets: ['{m}']}}]\n",
            ca = pki.path("ca.pem"),
            cc = pki.path("client.pem"),
            ck = pki.path("client-key.pem"),
            a = auth.addr,
            m = mtls.addr,
        ),
    )
    .unwrap();
    let (port, hold) = prometheus_port();
    drop(hold);
    let prom = Child(
        Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let api = format!("127.0.0.1:{port}");
    let health = |job: &str| -> Option<(String, String)> {
        let (code, _, body) = try_http_get(&api, "/api/v1/targets", &[]).ok()?;
        if code != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
        let t = v["data"]["activeTargets"]
            .as_array()?
            .iter()
            .find(|t| t["labels"]["job"] == job)?
            .clone();
        let h = t["health"].as_str()?.to_string();
        (h != "unknown").then(|| (h, t["lastError"].as_str().unwrap_or("").to_string()))
    };
    for (job, want) in [("auth", "up"), ("mtls", "up"), ("wrongpw", "down")] {
        let (h, err) = wait_for(
            &format!("job {job} scraped"),
            Duration::from_secs(60),
            || health(job).filter(|(h, _)| h == want),
        );
        assert_eq!(h, want, "{job}: {err}");
        if job == "wrongpw" {
            assert!(err.contains("401"), "{job}: {err}");
        }
    }
    for job in ["auth", "mtls"] {
        let q = format!("/api/v1/query?query=netsleuth_build_info%7Bjob%3D%22{job}%22%7D");
        wait_for(
            &format!("{job} series in prometheus"),
            Duration::from_secs(30),
            || {
                let (_, _, body) = http_get(&api, &q, &[]);
                let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
                (v["data"]["result"].as_array()?.len() == 1).then_some(())
            },
        );
    }
    let (_, _, body) = http_get(&api, "/api/v1/query?query=up", &[]);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let up: Vec<(String, String)> = v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["metric"]["job"].as_str().unwrap().to_string(),
                r["value"][1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (job, want) in [("auth", "1"), ("mtls", "1"), ("wrongpw", "0")] {
        assert!(
            up.contains(&(job.to_string(), want.to_string())),
            "up: {up:?}"
        );
    }
    drop(prom);
    let (_, page) = https_get(
        &auth.addr,
        anon,
        "/metrics",
        &[("Authorization", &basic("prometheus", "s3cret pass"))],
    )
    .unwrap();
    let unauthorized = value(
        &page,
        "netsleuth_http_requests_total{code=\"401\",handler=\"metrics\"}",
    );
    // The 7 direct ones, plus at least one from the wrong-password job.
    assert!(unauthorized >= 8.0, "401s counted: {unauthorized}\n{page}");
    assert_eq!(
        value(&page, "netsleuth_http_rejected_total{reason=\"auth\"}"),
        unauthorized
    );
    assert!(value(&page, "netsleuth_http_rejected_total{reason=\"tls\"}") >= 1.0);
}

/// A child process killed on drop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Threads and RSS (kB) of a process.
fn threads_rss(pid: i32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let get = |k: &str| -> u64 {
        s.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    };
    (get("Threads:"), get("VmRSS:"))
}

/// Make room for `n` open files in this test process (prlimit from util-linux, on our pid).
fn raise_nofile(n: u64) {
    let cur = std::fs::read_to_string("/proc/self/limits").unwrap();
    let soft: u64 = cur
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .unwrap_or(0);
    if soft >= n {
        return;
    }
    let pid = std::process::id().to_string();
    let out = Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={n}:{n}")])
        .output()
        .expect("prlimit (util-linux)");
    assert!(
        out.status.success(),
        "cannot raise RLIMIT_NOFILE to {n} (soft limit {soft}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// 5,000 connections that send half a request head and stall: the exporter's threads do not
/// grow, its RSS grows by less than 16 MiB, a normal scrape still answers, and every stalled
/// connection is closed (evicted at the connection cap or at the header timeout).
#[test]
fn stalled_connections_are_bounded() {
    raise_nofile(12_000);
    let e = Exporter::start(&["--web.header-timeout=3s", "--web.max-connections=256"]);
    let pid = e.pid();
    let _ = e.scrape_text();
    let (threads0, rss0) = threads_rss(pid);
    let mut stalled = Vec::with_capacity(5000);
    for _ in 0..5000 {
        let s = TcpStream::connect(&e.addr).unwrap();
        let _ = (&s).write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Half");
        stalled.push(s);
    }
    let t = Instant::now();
    let page = e.scrape_text();
    let took = t.elapsed();
    assert!(page.contains("netsleuth_build_info"));
    let (threads, rss) = threads_rss(pid);
    assert!(
        threads <= threads0,
        "threads grew from {threads0} to {threads} with 5,000 stalled clients"
    );
    assert!(
        rss < rss0 + 16 * 1024,
        "RSS grew from {rss0} kB to {rss} kB with 5,000 stalled clients"
    );
    // Not a timing target: a scrape that waits for a stalled client would take the 3 s header
    // timeout at least.
    assert!(
        took < Duration::from_secs(3),
        "scrape took {took:?} beside 5,000 stalled clients"
    );
    // Every stalled connection is closed: 5,000 counted as evicted (limit) or timed out.
    let closed = wait_for(
        "every stalled connection closed",
        Duration::from_secs(20),
        || {
            let p = e.scrape_text();
            let n = value(&p, "netsleuth_http_rejected_total{reason=\"limit\"}")
                + value(&p, "netsleuth_http_rejected_total{reason=\"timeout\"}");
            (n >= 5000.0).then_some(n)
        },
    );
    assert_eq!(closed, 5000.0);
    let mut open = 0;
    for s in &stalled {
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        match (&*s).read(&mut b) {
            Ok(0) => {}
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => {}
            _ => open += 1,
        }
    }
    assert_eq!(open, 0, "stalled connections still open");
}

/// A 10 MiB request head gets 431 (or the connection closed while it is being sent) and the
/// exporter's RSS grows by less than 4 MiB (the head limit is 64 KiB).
#[test]
fn huge_header_is_refused() {
    let e = Exporter::start(&[]);
    let pid = e.pid();
    let (_, rss0) = threads_rss(pid);
    let mut s = TcpStream::connect(&e.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    head.resize(head.len() + (10 << 20), b'a');
    let sent = s.write_all(&head);
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(
        out.starts_with("HTTP/1.1 431") || sent.is_err(),
        "10 MiB head answered {out:?}"
    );
    let (_, rss) = threads_rss(pid);
    assert!(rss < rss0 + 4096, "RSS {rss0} → {rss} kB");
    let page = e.scrape_text();
    assert_eq!(
        value(
            &page,
            "netsleuth_http_rejected_total{reason=\"bad_request\"}"
        ),
        1.0
    );
}

/// Send raw bytes, read until the server closes (or 5 s), return the text.
fn raw(addr: &str, chunks: &[&[u8]], pause: Duration) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for c in chunks {
        s.write_all(c).unwrap();
        std::thread::sleep(pause);
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn malformed_and_unusual_requests() {
    let e = Exporter::start(&["--web.header-timeout=2s"]);
    let a = e.addr.as_str();
    let z = Duration::ZERO;
    // Garbage request line, a header line without a colon, an unknown version.
    assert!(raw(a, &[b"\x16\x03\x01garbage\r\n\r\n"], z).starts_with("HTTP/1.1 400"));
    assert!(raw(a, &[b"GET / HTTP/1.1\r\nHost x\r\n\r\n"], z).starts_with("HTTP/1.1 400"));
    assert!(raw(a, &[b"GET / HTTP/3.0\r\nHost: x\r\n\r\n"], z).starts_with("HTTP/1.1 505"));
    // HTTP/1.1 needs Host.
    assert!(raw(a, &[b"GET / HTTP/1.1\r\n\r\n"], z).starts_with("HTTP/1.1 400"));
    // 200 headers (over the 100 allowed).
    let mut flood = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..200 {
        flood.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    flood.extend_from_slice(b"\r\n");
    assert!(raw(a, &[&flood], z).starts_with("HTTP/1.1 431"));
    // A body is refused (GET-only endpoints), and so are other methods.
    let r = raw(
        a,
        &[b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"],
        z,
    );
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    let r = raw(
        a,
        &[b"DELETE /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"],
        z,
    );
    assert!(
        r.starts_with("HTTP/1.1 405") && r.contains("Allow: GET, HEAD\r\n"),
        "{r}"
    );
    let r = raw(
        a,
        &[b"BREW /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"],
        z,
    );
    assert!(r.starts_with("HTTP/1.1 405"), "{r}");
    // A request split byte by byte still works.
    let req = b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let bytes: Vec<&[u8]> = req.chunks(1).collect();
    let r = raw(a, &bytes, Duration::from_millis(2));
    assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("OK\n"), "{r}");
    // HTTP/1.0: answered in 1.0 and closed.
    let r = raw(a, &[b"GET /-/healthy HTTP/1.0\r\n\r\n"], z);
    assert!(
        r.starts_with("HTTP/1.0 200") && r.contains("Connection: close\r\n"),
        "{r}"
    );
    // Pipelined requests: answered in order on the one connection.
    let r = raw(
        a,
        &[b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\nHEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"],
        z,
    );
    let statuses: Vec<&str> = r
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &r[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["200", "404", "200"], "{r}");
    assert!(!r.contains("<html>"), "HEAD has no body: {r}");
    // A head that stops coming is closed at the header timeout (2 s here).
    let t = Instant::now();
    let r = raw(a, &[b"GET /metrics HTTP/1.1\r\nHost: x\r\n"], z);
    assert_eq!(r, "");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let page = e.scrape_text();
    assert_eq!(
        value(&page, "netsleuth_http_rejected_total{reason=\"timeout\"}"),
        1.0
    );
    assert_eq!(
        value(
            &page,
            "netsleuth_http_rejected_total{reason=\"bad_request\"}"
        ),
        6.0
    );
}

/// A TLS handshake that stalls is closed at the header timeout; wrong certificates fail the
/// handshake; a web config that changes is picked up, and a broken new one keeps the old one.
#[test]
fn tls_stall_rotation_and_broken_reload() {
    let pki = Pki::new();
    let pw1 = hash("one");
    let cfg = pki.write(
        "web.yml",
        &format!("tls_server_config:\n  cert_file: server.pem\n  key_file: server-key.pem\nbasic_auth_users:\n  u: '{pw1}'\n"),
    );
    let e = Exporter::start(&[
        &format!("--web.config.file={}", cfg.display()),
        "--web.header-timeout=2s",
    ]);
    let client = tls_client(&pki, None);
    let get = |pw: &str| {
        https_get(
            &e.addr,
            client.clone(),
            "/-/healthy",
            &[("Authorization", &basic("u", pw))],
        )
        .unwrap()
        .0
    };
    assert_eq!(get("one"), 200);
    // Half a ClientHello, then silence: closed after ~2 s.
    let t = Instant::now();
    let r = raw(
        &e.addr,
        &[b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"],
        Duration::ZERO,
    );
    assert_eq!(r, "");
    assert!(
        t.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        t.elapsed()
    );
    // Rotate the password: the new file is read within about a second.
    std::fs::write(
        &cfg,
        format!("tls_server_config:\n  cert_file: server.pem\n  key_file: server-key.pem\nbasic_auth_users:\n  u: '{}'\n", hash("two")),
    )
    .unwrap();
    wait_for("the new password", Duration::from_secs(10), || {
        (get("two") == 200).then_some(())
    });
    assert_eq!(get("one"), 401);
    // A broken file (bad PEM path) is logged and the running configuration stays.
    std::fs::write(
        &cfg,
        "tls_server_config:\n  cert_file: missing.pem\n  key_file: server-key.pem\n",
    )
    .unwrap();
    let logged = wait_for(
        "the broken web config logged",
        Duration::from_secs(10),
        || {
            let _ = get("two");
            e.log.lock().unwrap().try_iter().find(|l| {
                l.contains("missing.pem") && l.contains("keeping the web config in force")
            })
        },
    );
    assert!(logged.contains("tls_server_config.cert_file"), "{logged}");
    assert_eq!(get("two"), 200);
}

/// Bad web configs stop the start with exit code 2 and a message naming the problem.
#[test]
fn bad_web_configs_are_named() {
    let pki = Pki::new();
    let tls = "tls_server_config:\n  cert_file: server.pem\n  key_file: server-key.pem\n";
    let cases: Vec<(String, &str)> = vec![
        (format!("{tls}  bogus_key: 1\n"), "bogus_key"),
        ("tls_server_config:\n  cert_file: ca.pem\n  key_file: ca.pem\n".into(), "key_file"),
        ("tls_server_config:\n  cert: \"not pem\"\n  key_file: server-key.pem\n".into(), "no PEM certificate"),
        (format!("{tls}  min_version: TLS10\n"), "TLS 1.2 and 1.3 only"),
        (format!("{tls}  cipher_suites: [TLS_RSA_WITH_AES_128_CBC_SHA]\n"), "TLS_RSA_WITH_AES_128_CBC_SHA"),
        (format!("{tls}  client_auth_type: RequireAndVerifyClientCert\n"), "needs client_ca_file"),
        ("basic_auth_users:\n  u: '$2y$03$abcdefghijklmnopqrstuuabcdefghijklmnopqrstuvwxyz01234'\n".into(), "cost 3"),
        ("basic_auth_users:\n  u: plaintext\n".into(), "basic_auth_users.u"),
        ("http_server_config:\n  headers:\n    Set-Cookie: a\n".into(), "Set-Cookie"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let p = pki.write(&format!("bad{i}.yml"), text);
        let out = Command::new(BIN)
            .arg(format!("--web.config.file={}", p.display()))
            .arg("--web.listen-address=127.0.0.1:0")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {err}");
        assert!(err.contains(want), "{text}: wanted {want:?} in {err}");
    }
}

/// A handler with a 32 MiB page (more than any socket buffer holds): what a client that stops
/// reading meets.
struct BigPage;

impl netsleuth::server::Handler for BigPage {
    fn handle(&self, _: &netsleuth::server::Request) -> netsleuth::server::Outcome {
        netsleuth::server::Outcome::Respond(netsleuth::server::Response {
            status: 200,
            headers: vec![],
            body: netsleuth::server::Body::Bytes(vec![b'x'; 32 << 20]),
        })
    }
    fn handler_name(&self, _: &str) -> &'static str {
        "metrics"
    }
    fn is_collection(&self, _: &str) -> bool {
        true
    }
}

/// Clients that ask for a page and never read are cut off at the write timeout (1 s here): the
/// workers they held are free again (more stalled readers than workers, and a reader that reads
/// still gets its page), and every cut is counted.
#[test]
fn clients_that_stop_reading_are_cut_off() {
    let listeners = netsleuth::server::bind(&[vec!["127.0.0.1:0".parse().unwrap()]]).unwrap();
    let limits = netsleuth::server::Limits {
        write_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let workers = limits.workers;
    let server = netsleuth::server::start(
        listeners,
        Arc::new(BigPage),
        Arc::new(netsleuth::web_config::Watched::plain()),
        limits,
    )
    .unwrap();
    let addr = server.addrs[0].to_string();
    let mut stalled = Vec::new();
    for _ in 0..workers + 2 {
        let s = TcpStream::connect(&addr).unwrap();
        nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::RcvBuf, &4096).unwrap();
        (&s).write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        stalled.push(s);
    }
    let t = Instant::now();
    wait_for(
        "every stalled reader cut off",
        Duration::from_secs(20),
        || {
            (server.stats.rejected(netsleuth::server::Rejected::Timeout) == (workers + 2) as u64)
                .then_some(())
        },
    );
    // Two rounds of `workers` cuts at 1 s each, not TCP's minutes.
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut page = Vec::new();
    s.read_to_end(&mut page).unwrap();
    assert!(page.len() > 32 << 20, "{} bytes", page.len());
    drop(stalled);
}

/// A handler that panics on one path.
struct Panicky;

impl netsleuth::server::Handler for Panicky {
    fn handle(&self, req: &netsleuth::server::Request) -> netsleuth::server::Outcome {
        assert!(req.path() != "/boom", "handler bug");
        netsleuth::server::Outcome::Respond(netsleuth::server::Response::text(200, "fine\n"))
    }
    fn handler_name(&self, _: &str) -> &'static str {
        "other"
    }
    fn is_collection(&self, _: &str) -> bool {
        false
    }
}

/// A panicking handler answers 500 and its worker keeps serving (one worker here: a lost
/// worker would leave nobody to answer the next request).
#[test]
fn a_panicking_handler_costs_one_request_not_a_worker() {
    let listeners = netsleuth::server::bind(&[vec!["127.0.0.1:0".parse().unwrap()]]).unwrap();
    let limits = netsleuth::server::Limits {
        workers: 1,
        ..Default::default()
    };
    let server = netsleuth::server::start(
        listeners,
        Arc::new(Panicky),
        Arc::new(netsleuth::web_config::Watched::plain()),
        limits,
    )
    .unwrap();
    let a = server.addrs[0].to_string();
    for _ in 0..3 {
        let r = raw(
            &a,
            &[b"GET /boom HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"],
            Duration::ZERO,
        );
        assert!(r.starts_with("HTTP/1.1 500"), "{r}");
    }
    let r = raw(
        &a,
        &[b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"],
        Duration::ZERO,
    );
    assert!(
        r.starts_with("HTTP/1.1 200") && r.ends_with("fine\n"),
        "{r}"
    );
}

/// A /metrics handler that takes a while (a slow collection).
struct SlowPage;

impl netsleuth::server::Handler for SlowPage {
    fn handle(&self, _: &netsleuth::server::Request) -> netsleuth::server::Outcome {
        std::thread::sleep(Duration::from_millis(800));
        netsleuth::server::Outcome::Respond(netsleuth::server::Response::text(200, "page\n"))
    }
    fn handler_name(&self, _: &str) -> &'static str {
        "metrics"
    }
    fn is_collection(&self, path: &str) -> bool {
        path == "/metrics"
    }
}

/// `--web.max-requests`: collections queued or running beyond the limit get 503 at once, the
/// others their page; other paths are not limited by it.
#[test]
fn collections_beyond_max_requests_get_503() {
    let listeners = netsleuth::server::bind(&[vec!["127.0.0.1:0".parse().unwrap()]]).unwrap();
    let limits = netsleuth::server::Limits {
        max_requests: 2,
        ..Default::default()
    };
    let server = netsleuth::server::start(
        listeners,
        Arc::new(SlowPage),
        Arc::new(netsleuth::web_config::Watched::plain()),
        limits,
    )
    .unwrap();
    let a = server.addrs[0].to_string();
    let clients: Vec<_> = (0..5)
        .map(|_| {
            let a = a.clone();
            std::thread::spawn(move || {
                raw(
                    &a,
                    &[b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"],
                    Duration::ZERO,
                )
            })
        })
        .collect();
    let answers: Vec<String> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let ok = answers
        .iter()
        .filter(|r| r.starts_with("HTTP/1.1 200"))
        .count();
    let busy = answers
        .iter()
        .filter(|r| r.starts_with("HTTP/1.1 503"))
        .count();
    assert_eq!((ok, busy), (2, 3), "{answers:?}");
    assert_eq!(server.stats.rejected(netsleuth::server::Rejected::Limit), 3);
    // Afterwards the limit is free again.
    let r = raw(
        &a,
        &[b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"],
        Duration::ZERO,
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
}

/// A kept-alive connection is served again, then closed by the server after the idle timeout
/// (not counted as a rejection: an idle keep-alive ending is normal).
#[test]
fn kept_alive_connections_close_after_the_idle_timeout() {
    let e = Exporter::start(&["--web.idle-timeout=1s"]);
    let mut s = TcpStream::connect(&e.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = vec![0u8; 4096];
    for _ in 0..2 {
        s.write_all(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let n = s.read(&mut buf).unwrap();
        let r = String::from_utf8_lossy(&buf[..n]);
        assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("OK\n"), "{r}");
    }
    let t = Instant::now();
    assert_eq!(s.read(&mut buf).unwrap(), 0, "closed by the server");
    let idle = t.elapsed();
    assert!(
        idle >= Duration::from_millis(900) && idle < Duration::from_secs(4),
        "{idle:?}"
    );
    let page = e.scrape_text();
    assert_eq!(
        value(&page, "netsleuth_http_rejected_total{reason=\"timeout\"}"),
        0.0
    );
    assert_eq!(
        value(
            &page,
            "netsleuth_http_requests_total{code=\"200\",handler=\"healthy\"}"
        ),
        2.0
    );
}

/// `--web.listen-address` twice: both addresses serve (IPv4 and IPv6 loopback).
#[test]
fn several_listen_addresses() {
    let mut child = Command::new(BIN)
        .args([
            "--web.listen-address=127.0.0.1:0",
            "--web.listen-address=[::1]:0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let addrs: Vec<String> = loop {
        line.clear();
        use std::io::BufRead;
        if stderr.read_line(&mut line).unwrap() == 0 {
            let _ = child.kill();
            panic!("exporter exited before listening");
        }
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest
                .split(';')
                .next()
                .unwrap()
                .split_whitespace()
                .map(str::to_string)
                .collect();
        }
    };
    let served = addrs
        .iter()
        .map(|a| {
            raw(
                a,
                &[b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"],
                Duration::ZERO,
            )
        })
        .collect::<Vec<_>>();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(addrs.len(), 2, "{line}");
    assert!(
        addrs[0].starts_with("127.0.0.1:") && addrs[1].starts_with("[::1]:"),
        "{addrs:?}"
    );
    for r in served {
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    }
}

/// One row of `netsleuth probes`: name, ENABLED, AVAILABLE, DETAILS.
fn probes_table(stdout: &str) -> Vec<(String, String, String, String)> {
    stdout
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with(' '))
        .map(|l| {
            let name = l[..14].trim().to_string();
            let enabled = l[15..23].trim().to_string();
            let avail = l[24..34].trim().to_string();
            (name, enabled, avail, l[35..].to_string())
        })
        .collect()
}

/// `/status` says, for the same config, exactly what `netsleuth probes` says (enabled,
/// available, the attach methods or why not), with an eBPF probe attached for real
/// (packetloss) and one that cannot run here (virtcmdlatency: no virtio-net on this machine),
/// plus every sink's state and counters; behind the web config's basic auth like /metrics.
/// `netsleuth list probe` prints what `netsleuth probes` prints.
#[test]
fn status_is_what_probes_reports() {
    if !privileged("status_is_what_probes_reports") {
        return;
    }
    let dir = std::env::temp_dir().join(unique("nslstatus"));
    std::fs::create_dir_all(&dir).unwrap();
    let events = dir.join("events.json");
    // A sink that cannot start: its folder would have to be made under a regular file.
    let blocker = dir.join("not-a-folder");
    std::fs::write(&blocker, "").unwrap();
    let cfg = write_config(&format!(
        "metrics:\n  probes: [netdev, tcp, packetloss, virtcmdlatency, flow]\n\
         event:\n  probes: [tcpreset]\n  sinks:\n  - name: stderr\n  - name: file\n    \
         args: {{path: {}}}\n  - name: file\n    args: {{path: {}/e.json}}\n",
        events.display(),
        blocker.display()
    ));
    let cfg_arg = format!("--config.file={}", cfg.display());
    let run_probes = |cmd: &[&str]| {
        let out = Command::new(BIN).args(cmd).arg(&cfg_arg).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{cmd:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let table_text = run_probes(&["probes"]);
    assert_eq!(run_probes(&["list", "probe"]), table_text);
    let table = probes_table(&table_text);
    let row = |n: &str| table.iter().find(|r| r.0 == n).unwrap().clone();
    // The two conditions this test is about hold on this machine.
    assert_eq!(row("packetloss").2, "yes", "{table_text}");
    if row("virtcmdlatency").2 != "no" {
        skip(
            "status_is_what_probes_reports",
            "virtcmdlatency attaches on this machine; the test needs a probe that cannot run",
        );
        return;
    }

    let web = dir.join("web.yml");
    std::fs::write(
        &web,
        format!("basic_auth_users:\n  prometheus: '{}'\n", hash("st4tus")),
    )
    .unwrap();
    let e = Exporter::start(&[&cfg_arg, &format!("--web.config.file={}", web.display())]);
    let (code, _, _) = e.get("/status", &[]);
    assert_eq!(code, 401);
    let (code, _, _) = e.get(
        "/status",
        &[("Authorization", &basic("prometheus", "wrong"))],
    );
    assert_eq!(code, 401);
    let auth = basic("prometheus", "st4tus");
    let (code, headers, body) = e.get("/status", &[("Authorization", &auth)]);
    assert_eq!(code, 200);
    assert!(headers
        .iter()
        .any(|(k, v)| k == "content-type" && v == "application/json"));
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();

    let probes = doc["probes"].as_array().unwrap();
    let names: Vec<&str> = probes.iter().map(|p| p["name"].as_str().unwrap()).collect();
    let table_names: Vec<&str> = table.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(names, table_names, "the same probes in the same order");
    for (p, (name, enabled, avail, details)) in probes.iter().zip(&table) {
        assert_eq!(p["enabled"], enabled.as_str(), "{name}");
        let ebpf = p["source"] == "ebpf";
        if ebpf && enabled == "no" {
            // Not loaded by the exporter, so not known to be able to run.
            assert_eq!(p["available"], serde_json::Value::Null, "{name}");
            assert_eq!(p["running"], false, "{name}");
            continue;
        }
        assert_eq!(p["available"], avail == "yes", "{name}");
        assert_eq!(p["details"], details.as_str(), "{name}");
        assert_eq!(p["running"], enabled != "no" && avail == "yes", "{name}");
        if avail == "no" {
            assert_eq!(p["error"], details.as_str(), "{name}");
        }
    }
    let by_name = |n: &str| probes.iter().find(|p| p["name"] == n).unwrap();
    let pl = by_name("packetloss");
    assert_eq!(pl["running"], true);
    assert_eq!(pl["source"], "ebpf");
    let methods = row("packetloss").3;
    let methods = methods
        .split("[attach: ")
        .nth(1)
        .unwrap()
        .split(']')
        .next()
        .unwrap()
        .split(", ")
        .collect::<Vec<_>>();
    assert_eq!(pl["attach"], serde_json::json!(methods));
    let v = by_name("virtcmdlatency");
    assert_eq!(v["running"], false);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("no attach method works: "),
        "{v}"
    );
    assert_eq!(by_name("tcpreset")["enabled"], "events");
    assert_eq!(by_name("flow")["source"], "ebpf");
    assert_eq!(by_name("flow")["running"], true);
    assert_eq!(by_name("flow")["attach"], serde_json::json!(["tcx"]));
    // KubeSkoop's shape.
    assert_eq!(
        doc["inuse_probes"]["metrics"],
        serde_json::json!([
            {"name": "netdev", "state": "Running"},
            {"name": "tcp", "state": "Running"},
            {"name": "packetloss", "state": "Running"},
            {"name": "virtcmdlatency", "state": "Failed"},
            {"name": "flow", "state": "Running"},
        ])
    );
    assert_eq!(
        doc["inuse_probes"]["event"],
        serde_json::json!([{"name": "tcpreset", "state": "Running"}])
    );

    // Sinks: the two that started, then the one that could not.
    let sinks = doc["sinks"].as_array().unwrap();
    let s: Vec<(&str, &str, &str)> = sinks
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap(),
                s["type"].as_str().unwrap(),
                s["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        s,
        [
            ("stderr", "stderr", "running"),
            ("file", "file", "running"),
            ("file-2", "file", "failed")
        ]
    );
    assert!(
        sinks[2]["error"].as_str().unwrap().contains("File exists"),
        "{}",
        sinks[2]
    );
    // The counters are the pipeline's: never ahead of the metrics read right after.
    let page = e.get("/metrics", &[("Authorization", &auth)]);
    let scrape = Scrape::parse(&String::from_utf8(page.2).unwrap());
    for s in &sinks[..2] {
        let name = s["name"].as_str().unwrap();
        let sent: f64 = scrape
            .one("netsleuth_event_sink_sent_total", &[("sink", name)])
            .value
            .parse()
            .unwrap();
        assert!(s["sent"].as_f64().unwrap() <= sent, "{s}");
        assert!(s["queued"].is_u64() && s["backlog"].is_u64(), "{s}");
        assert_eq!(
            s["dropped"].as_object().unwrap().len(),
            6,
            "every sink-side drop reason: {s}"
        );
    }
    drop(e);
    let _ = std::fs::remove_dir_all(&dir);
}
