//! The inspector end to end: `netsleuth top --once` and `netsleuth events` against the real
//! exporter (and `top --local`), with traffic, drops and resets induced in our own namespaces
//! (198.18.0.0/15, IPv6 off: nothing else on the link), their figures compared with what the
//! kernel reports; the full-screen view under tmux; a wrong URL, a 401, TLS with a CA and a
//! client certificate, a page that is not Prometheus text.
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{unique, wait_for, write_config, Exporter, Netns, Pair, BIN};

/// Tests share kernel-global tracepoints: one at a time.
static LOCK: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The exporter with the eBPF drop and reset probes beside the procfs ones.
fn exporter(extra_yaml: &str, args: &[&str]) -> Exporter {
    let cfg = write_config(&format!(
        "metrics:\n  probes: [netdev, tcp, udp, tcpext, qdisc, packetloss, tcpreset]\n{extra_yaml}"
    ));
    let mut a = vec![format!("--config.file={}", cfg.display())];
    a.extend(args.iter().map(|s| s.to_string()));
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let e = Exporter::start(&a);
    wait_for("eBPF probes attached", Duration::from_secs(15), || {
        (e.scrape().find("netsleuth_bpf_map_full_total", &[]).len() == 2).then_some(())
    });
    e
}

/// A child whose stderr lines arrive on a channel (and are kept for failure messages).
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Proc {
    fn start(cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start netsleuth");
        let err = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Proc {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a stderr line containing `what`.
    fn await_stderr(&mut self, what: &str, timeout: Duration) {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let hit = l.contains(what);
                    self.seen.push(l);
                    if hit {
                        return;
                    }
                }
                Err(_) => panic!("no `{what}` on stderr; got:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// Waits for the exit; returns the code, stdout and all of stderr.
    fn finish(mut self, timeout: Duration) -> (i32, String, String) {
        let out = self.child.stdout.take();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut out) = out {
                let _ = out.read_to_string(&mut s);
            }
            let _ = tx.send(s);
        });
        let end = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                panic!("did not exit; stderr:\n{}", self.seen.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.seen.push(l);
        }
        (status.code().unwrap_or(-1), stdout, self.seen.join("\n"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child's stdout, line by line, on a channel.
fn lines_of(r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

fn next_line(rx: &mpsc::Receiver<String>) -> String {
    rx.recv_timeout(Duration::from_secs(10))
        .expect("an event line within 10 s")
}

fn top(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("top").args(args);
    c
}

/// `/proc/net/dev` of one device in a namespace: rx bytes, rx packets, tx bytes, tx packets.
fn dev(ns: &Netns, device: &str) -> [u64; 4] {
    let m = common::proc_net_dev(&ns.cat("/proc/net/dev"));
    let v = &m[device];
    [v[0], v[1], v[8], v[9]]
}

fn row(j: &serde_json::Value, netns: u64) -> &serde_json::Value {
    j["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["netns"] == netns)
        .unwrap_or_else(|| panic!("no row for netns {netns} in {j:#}"))
}

fn connect_refused(p: &Pair, sport: u16) {
    let st = Command::new("ip")
        .args([
            "netns",
            "exec",
            &p.a.name,
            "curl",
            "-s",
            "--connect-timeout",
            "3",
        ])
        .args(["--local-port", &sport.to_string()])
        .arg(format!("http://{}:7777/", p.ip_b))
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(7), "curl: connection refused");
}

#[test]
fn top_once_json_deltas_match_the_kernel() {
    if !common::privileged_with("top_once_json", &["iptables", "curl"]) {
        return;
    }
    let _g = lock();
    let e = exporter("", &[]);
    let p = Pair::dropping(9999);
    let (a_ino, b_ino) = (p.a.inode(), p.b.inode());
    let (a0, b0) = (dev(&p.a, &p.dev_a), dev(&p.b, &p.dev_b));
    let url = format!("--url=http://{}", e.addr);
    let mut t = Proc::start(&mut top(&[
        &url,
        "--once",
        "--output=json",
        "--interval=2s",
    ]));
    t.await_stderr("first sample taken", Duration::from_secs(20));
    // Within the interval: 25 datagrams into the DROP rule, 3 connects to a closed port.
    p.send_udp_to_b(9999, 25);
    let base = 40000 + (std::process::id() % 10000) as u16;
    for i in 0..3 {
        connect_refused(&p, base + i);
    }
    let (code, out, err) = t.finish(Duration::from_secs(20));
    assert_eq!(code, 0, "{err}");
    let (a1, b1) = (dev(&p.a, &p.dev_a), dev(&p.b, &p.dev_b));
    // The kernel over the whole test: our packets and nothing else (a quiet namespace).
    assert_eq!(a1[3] - a0[3], 28, "a sent 25 datagrams and 3 SYNs");
    assert_eq!(b1[1] - b0[1], 28);
    assert_eq!(a1[1] - a0[1], 3, "a received 3 RSTs");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let secs = j["interval_seconds"].as_f64().unwrap();
    assert!((2.0..4.0).contains(&secs), "{secs}");
    let a = row(&j, a_ino);
    let b = row(&j, b_ino);
    assert_eq!(a["name"], p.a.name.as_str());
    assert_eq!(a["kind"], "named");
    let check = |r: &serde_json::Value, key: &str, want: u64| {
        assert_eq!(r[key]["delta"], want as f64, "{key}: {r:#}");
        // The rate is delta/interval; JSON text → f64 may differ in the last bit
        // (serde_json's default parser is not correctly rounded), so compare to 1e-12.
        let rate = r[key]["rate"].as_f64().unwrap();
        let expect = want as f64 / secs;
        assert!(
            (rate - expect).abs() <= 1e-12 * expect.abs().max(1.0),
            "{key} rate {rate} = delta/interval {expect}"
        );
    };
    check(a, "tx_packets", a1[3] - a0[3]);
    check(a, "tx_bytes", a1[2] - a0[2]);
    check(a, "rx_packets", a1[1] - a0[1]);
    check(a, "rx_bytes", a1[0] - a0[0]);
    check(b, "rx_packets", b1[1] - b0[1]);
    check(b, "rx_bytes", b1[0] - b0[0]);
    check(b, "tx_packets", 3);
    assert_eq!(
        a1[2] - a0[2],
        25 * 43 + 3 * 74,
        "43-byte datagrams, 74-byte SYNs"
    );
    // Drops by the kernel's reason: the DROP rule's 25 and the 3 SYNs without a socket.
    check(b, "drops", 28);
    assert_eq!(b["drops_source"], "packetloss");
    assert_eq!(b["drop_reasons"]["NETFILTER_DROP"], 25.0);
    assert_eq!(b["drop_reasons"]["NO_SOCKET"], 3.0);
    assert_eq!(b["top_drop_reason"], "NETFILTER_DROP");
    check(b, "resets", 3);
    assert_eq!(b["resets_by_type"]["NOSOCK"], 3.0);
    assert_eq!(a["resets_by_type"]["RECEIVE"], 3.0);
    check(a, "drops", 0);
    assert!(a["top_drop_reason"].is_null());
    assert_eq!(a["established"], 0.0);
    // The exporter's own counters agree with the kernel's.
    let s = e.scrape();
    let bs = b_ino.to_string();
    assert_eq!(
        s.sum(
            "netsleuth_packetloss_total",
            &[("netns", &bs), ("reason", "NETFILTER_DROP")]
        ),
        Some(25.0)
    );
    assert_eq!(j["exporter"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(j["exporter"]["namespaces"]["named"].as_f64().unwrap() >= 2.0);
    let running: Vec<&str> = j["exporter"]["probes_running"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        running.contains(&"packetloss") && running.contains(&"tcpreset"),
        "{running:?}"
    );

    // The plain table, filtered to b: the header lines, the column headings in order, one row.
    let pod = format!("--pod=^{}$", p.b.name);
    let t = Proc::start(&mut top(&[&url, "--once", "--interval=1s", &pod]));
    let (code, out, err) = t.finish(Duration::from_secs(20));
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with(&format!("netsleuth {}", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
    let head = lines[3];
    let cols = [
        "KIND",
        "NAME",
        "RX B/s",
        "TX B/s",
        "RX pk/s",
        "TX pk/s",
        "DROP/s",
        "TOP DROP REASON",
        "RST/s",
        "RETR/s",
        "ESTAB",
        "LOVF/s",
        "RD p99",
        "QDROP/s",
    ];
    let mut at = 0;
    for c in cols {
        let i = head[at..]
            .find(c)
            .unwrap_or_else(|| panic!("{c} after {at} in {head}"));
        at += i + c.len();
    }
    assert_eq!(lines.len(), 5, "one row: {out}");
    assert!(
        lines[4].starts_with("named") && lines[4].contains(&p.b.name),
        "{out}"
    );
    assert!(
        lines[4].contains(" - "),
        "no drops in this interval: no reason: {out}"
    );
}

#[test]
fn events_follows_resets_and_survives_a_restart() {
    if !common::privileged_with("events_follow", &["curl"]) {
        return;
    }
    let _g = lock();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let fixed = format!("--web.listen-address=127.0.0.1:{port}");
    let ev_yaml = "event:\n  probes: [tcpreset]\n";
    let e = exporter(ev_yaml, &[&fixed]);
    let p = Pair::new();
    let url = format!("--url=http://127.0.0.1:{port}");
    let mut json = Proc::start(Command::new(BIN).args([
        "events",
        &url,
        "--output=json",
        "--type=TCPRESET_NOSOCK",
    ]));
    let mut logfmt =
        Proc::start(Command::new(BIN).args(["events", &url, &format!("--pod=^{}$", p.b.name)]));
    json.await_stderr("following", Duration::from_secs(10));
    logfmt.await_stderr("following", Duration::from_secs(10));
    let json_out = lines_of(json.child.stdout.take().unwrap());
    let log_out = lines_of(logfmt.child.stdout.take().unwrap());
    let sport = 30000 + (std::process::id() % 10000) as u16;
    connect_refused(&p, sport);
    let line = next_line(&json_out);
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["type"], "TCPRESET_NOSOCK");
    assert_eq!(v["netns"], p.b.inode());
    assert_eq!(v["name"], p.b.name.as_str());
    let f = &v["fields"];
    assert_eq!(f["saddr"], p.ip_b.as_str());
    assert_eq!(f["sport"], 7777);
    assert_eq!(f["daddr"], p.ip_a.as_str());
    assert_eq!(f["dport"], sport);
    // The logfmt client (no type filter, b only): the stderr sink's line for the same reset.
    let l = next_line(&log_out);
    let want = format!(
        "type=TCPRESET_NOSOCK pod= namespace= netns={} kind=named name={} protocol=TCP saddr={} sport=7777 daddr={} dport={sport}",
        p.b.inode(),
        p.b.name,
        p.ip_b,
        p.ip_a
    );
    assert!(l.starts_with(&want), "{l}\nwanted: {want}");

    // The exporter goes away and comes back on the same port: the client follows again.
    drop(e);
    json.await_stderr("reconnecting", Duration::from_secs(10));
    let e2 = exporter(ev_yaml, &[&fixed]);
    json.await_stderr("following", Duration::from_secs(30));
    connect_refused(&p, sport + 1);
    let line = next_line(&json_out);
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["fields"]["dport"], sport + 1, "{line}");
    assert_eq!(v["netns"], p.b.inode());
    // SIGTERM: exit 0.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(json.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let (code, _, err) = json.finish(Duration::from_secs(10));
    assert_eq!(code, 0, "{err}");
    drop(e2);
}

/// A server answering every request with an HTML page.
fn html_server() -> (String, std::thread::JoinHandle<()>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let h = std::thread::spawn(move || {
        if let Ok((mut c, _)) = l.accept() {
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let body = "<!DOCTYPE html>\n<html><body>login</body></html>\n";
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (addr, h)
}

#[test]
fn bad_urls_and_pages_exit_with_a_named_problem() {
    // A port nobody listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("--url=http://127.0.0.1:{closed}");
    let (code, _, err) = Proc::start(&mut top(&[&url, "--once"])).finish(Duration::from_secs(20));
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains(&format!("cannot reach http://127.0.0.1:{closed}/metrics")),
        "{err}"
    );
    let (code, _, err) =
        Proc::start(Command::new(BIN).args(["events", &url])).finish(Duration::from_secs(20));
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("/events") && err.contains("connection"),
        "{err}"
    );
    // Not Prometheus text.
    let (addr, h) = html_server();
    let (code, _, err) = Proc::start(&mut top(&[&format!("--url=http://{addr}"), "--once"]))
        .finish(Duration::from_secs(20));
    h.join().unwrap();
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("not Prometheus text: line 1"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // Bad flags.
    let (code, _, err) = Proc::start(&mut top(&["--sort=nope"])).finish(Duration::from_secs(10));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--sort: `nope`"), "{err}");
}

#[test]
fn basic_auth_401_and_the_password_file() {
    let dir = std::env::temp_dir().join(unique("nslinsp"));
    std::fs::create_dir_all(&dir).unwrap();
    let web = dir.join("web.yml");
    std::fs::write(
        &web,
        format!(
            "basic_auth_users:\n  sre: '{}'\n",
            bcrypt::hash("night shift", 5).unwrap()
        ),
    )
    .unwrap();
    let e = Exporter::start(&[&format!("--web.config.file={}", web.display())]);
    let url = format!("--url=http://{}", e.addr);
    let (code, _, err) = Proc::start(&mut top(&[&url, "--once", "--interval=100ms"]))
        .finish(Duration::from_secs(20));
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("401 unauthorised") && err.contains("--web.username"),
        "{err}"
    );
    let (code, _, err) =
        Proc::start(Command::new(BIN).args(["events", &url])).finish(Duration::from_secs(20));
    assert_eq!(code, 4, "{err}");
    let wrong = dir.join("wrong");
    std::fs::write(&wrong, "day shift\n").unwrap();
    let right = dir.join("right");
    std::fs::write(&right, "night shift\n").unwrap();
    let pw = |p: &Path| format!("--web.password-file={}", p.display());
    let (code, _, err) = Proc::start(&mut top(&[
        &url,
        "--once",
        "--interval=100ms",
        "--web.username=sre",
        &pw(&wrong),
    ]))
    .finish(Duration::from_secs(20));
    assert_eq!(code, 4, "{err}");
    let (code, out, err) = Proc::start(&mut top(&[
        &url,
        "--once",
        "--interval=100ms",
        "--output=json",
        "--web.username=sre",
        &pw(&right),
    ]))
    .finish(Duration::from_secs(20));
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(!j["rows"].as_array().unwrap().is_empty(), "{out}");
    drop(e);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files.
fn pki(dir: &Path) {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose as Eku, IsCa, KeyPair,
        KeyUsagePurpose, SanType,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "inspector test CA");
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
        vec![SanType::IpAddress("127.0.0.1".parse().unwrap())],
        Eku::ServerAuth,
        "server",
    );
    issue(
        vec![SanType::DnsName("sre.test".try_into().unwrap())],
        Eku::ClientAuth,
        "client",
    );
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
}

#[test]
fn tls_with_a_ca_and_a_client_certificate() {
    let dir = std::env::temp_dir().join(unique("nslinsptls"));
    std::fs::create_dir_all(&dir).unwrap();
    pki(&dir);
    let web = dir.join("web.yml");
    std::fs::write(
        &web,
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server-key.pem\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n",
    )
    .unwrap();
    let e = Exporter::start(&[&format!("--web.config.file={}", web.display())]);
    let url = format!("--url=https://{}", e.addr);
    let f = |n: &str| dir.join(n).display().to_string();
    let ca = format!("--tls.ca-file={}", f("ca.pem"));
    let cert = format!("--tls.cert-file={}", f("client.pem"));
    let key = format!("--tls.key-file={}", f("client-key.pem"));
    let (code, out, err) = Proc::start(&mut top(&[
        &url,
        "--once",
        "--interval=100ms",
        "--output=json",
        &ca,
        &cert,
        &key,
    ]))
    .finish(Duration::from_secs(20));
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["exporter"]["version"], env!("CARGO_PKG_VERSION"));
    // Without the CA: the bundled roots do not know the test CA.
    let (code, _, err) =
        Proc::start(&mut top(&[&url, "--once", &cert, &key])).finish(Duration::from_secs(20));
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("TLS") && err.contains("--tls.ca-file"),
        "{err}"
    );
    // Without the client certificate: the exporter refuses the handshake.
    let (code, _, err) =
        Proc::start(&mut top(&[&url, "--once", &ca])).finish(Duration::from_secs(20));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("TLS") || err.contains("connection"), "{err}");
    // A TLS flag with http://: refused before anything is sent.
    let (code, _, err) = Proc::start(&mut top(&[
        &format!("--url=http://{}", e.addr),
        "--once",
        &ca,
    ]))
    .finish(Duration::from_secs(20));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("https://"), "{err}");
    drop(e);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn top_local_runs_the_collectors_in_process() {
    if !common::privileged("top_local") {
        return;
    }
    let _g = lock();
    let p = Pair::new();
    // No listener on b: the datagrams are answered by ICMP (rate-limited): count a's side.
    let to = format!("{}:9", p.ip_b);
    p.a.within(move || {
        std::net::UdpSocket::bind("0.0.0.0:0")
            .unwrap()
            .send_to(b"w", to)
            .unwrap();
    });
    p.wait_neighbour_resolved();
    let a0 = dev(&p.a, &p.dev_a);
    let b0 = dev(&p.b, &p.dev_b);
    let pod = format!("--pod=^{}$", p.a.name);
    let mut t = Proc::start(&mut top(&[
        "--local",
        "--once",
        "--output=json",
        "--interval=2s",
        &pod,
    ]));
    t.await_stderr("first sample taken", Duration::from_secs(30));
    p.send_udp_to_b(9, 40);
    let (code, out, err) = t.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "{err}");
    let (a1, b1) = (dev(&p.a, &p.dev_a), dev(&p.b, &p.dev_b));
    assert_eq!(a1[3] - a0[3], 40, "the kernel: a sent 40");
    assert_eq!(b1[1] - b0[1], 40, "the kernel: b received 40");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let rows = j["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "--pod keeps a only: {j:#}");
    let a = row(&j, p.a.inode());
    assert_eq!(a["tx_packets"]["delta"], 40.0);
    assert_eq!(a["tx_bytes"]["delta"], 40.0 * 43.0);
    assert_eq!(a["devices"][&p.dev_a]["tx_packets"], 40.0);
    assert_eq!(
        a["rx_packets"]["delta"],
        (a1[1] - a0[1]) as f64,
        "ICMP answers"
    );
    assert_eq!(a["drops_source"], "netdev", "no eBPF probes in-process");
    assert_eq!(j["exporter"]["version"], env!("CARGO_PKG_VERSION"));
}

/// A tmux server of our own (its own socket), killed on drop.
struct Tmux {
    socket: String,
    dir: PathBuf,
}

impl Tmux {
    fn new() -> Tmux {
        let socket = unique("nsltop");
        let dir = std::env::temp_dir().join(&socket);
        std::fs::create_dir_all(&dir).unwrap();
        Tmux { socket, dir }
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `netsleuth top ARGS` in a detached session of `w`×`h`; its exit code goes to
    /// `exit-<name>`.
    fn start(&self, name: &str, w: u16, h: u16, args: &str) {
        let exit = self.dir.join(format!("exit-{name}"));
        let cmd = format!(
            "NO_COLOR=1 {BIN} top {args}; echo $? > {}; sleep 60",
            exit.display()
        );
        self.run(&[
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            &w.to_string(),
            "-y",
            &h.to_string(),
            &cmd,
        ]);
    }

    fn screen(&self, name: &str) -> String {
        self.run(&["capture-pane", "-p", "-t", name])
    }

    fn wait_screen(&self, name: &str, what: &str, f: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let s = self.screen(name);
            if f(&s) {
                return s;
            }
            assert!(Instant::now() < end, "{what}; screen:\n{s}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn keys(&self, name: &str, keys: &[&str]) {
        let mut a = vec!["send-keys", "-t", name];
        a.extend_from_slice(keys);
        self.run(&a);
    }

    fn exit_code(&self, name: &str) -> String {
        let p = self.dir.join(format!("exit-{name}"));
        wait_for("top to exit", Duration::from_secs(10), || {
            std::fs::read_to_string(&p).ok().filter(|s| !s.is_empty())
        })
        .trim()
        .to_string()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
        // kill-server leaves the socket file.
        let tmp = std::env::var("TMUX_TMPDIR").unwrap_or_else(|_| "/tmp".into());
        let uid = nix::unistd::getuid();
        let _ = std::fs::remove_file(format!("{tmp}/tmux-{uid}/{}", self.socket));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn the_full_screen_view_under_tmux() {
    if !common::privileged_with("top_tmux", &["iptables", "tmux", "curl"]) {
        return;
    }
    let _g = lock();
    let e = exporter("event:\n  probes: [tcpreset]\n", &[]);
    let p = Pair::dropping(9999);
    // Drops all along: 20 datagrams every 200 ms.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        let (a, to) = (p.a.name.clone(), format!("{}:9999", p.ip_b));
        std::thread::spawn(move || {
            let f = std::fs::File::open(format!("/run/netns/{a}")).unwrap();
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for _ in 0..20 {
                    let _ = s.send_to(b"x", &to);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let tm = Tmux::new();
    let args = format!("--url=http://{} --interval=1s", e.addr);
    tm.start("wide", 160, 40, &args);
    let b = p.b.name.clone();
    let s = tm.wait_screen("wide", "b's row with its drops and reason", |s| {
        s.lines()
            .any(|l| l.contains(&b) && l.contains("NETFILTER_DROP"))
    });
    let head = s.lines().find(|l| l.contains("NAME")).unwrap().to_string();
    assert!(head.contains("DROP/sv"), "sorted by drops: {head}");
    assert!(
        head.contains("TX pk/s"),
        "160 columns: every column: {head}"
    );
    let first_row = s
        .lines()
        .skip_while(|l| !l.contains("NAME"))
        .nth(1)
        .unwrap();
    assert!(
        first_row.contains(&b),
        "the dropping namespace on top:\n{s}"
    );
    let rate: f64 = first_row
        .split_whitespace()
        .skip_while(|w| *w != b.as_str())
        .nth(5)
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("{first_row}"));
    assert!(rate > 0.0, "{first_row}");
    // Sort by the next column (the reason), then filter to a: b's row goes away.
    tm.keys("wide", &[">"]);
    tm.wait_screen("wide", "sorted by reason", |s| {
        s.contains("TOP DROP REASONv")
    });
    tm.keys("wide", &["/"]);
    tm.keys("wide", &["-l", &format!("^{}$", p.a.name)]);
    tm.keys("wide", &["Enter"]);
    let a = p.a.name.clone();
    let s = tm.wait_screen("wide", "only a", |s| s.contains(&a) && !s.contains(&b));
    assert!(s.contains(&format!("/ filter: ^{a}$")), "{s}");
    // The detail pane of a, with the reset it just received among its last events.
    let sport = 20000 + (std::process::id() % 10000) as u16;
    connect_refused(&p, sport);
    tm.keys("wide", &["Enter"]);
    let recv = format!(
        "type=TCPRESET_RECEIVE pod= namespace= netns={}",
        p.a.inode()
    );
    tm.wait_screen("wide", "a's detail pane", |s| {
        s.contains(&format!(" {a} (named, netns {})", p.a.inode()))
            && s.contains("devices")
            && s.contains(&recv)
    });
    tm.keys("wide", &["q"]);
    assert_eq!(tm.exit_code("wide"), "0");
    let s = tm.screen("wide");
    assert!(
        !s.contains("DROP/s"),
        "the terminal is restored (alternate screen left):\n{s}"
    );

    // 80×24: columns dropped, not wrapped; b's drops and reason still there.
    tm.start("narrow", 80, 24, &args);
    let s = tm.wait_screen("narrow", "b's row at 80 columns", |s| {
        s.lines()
            .any(|l| l.contains(&b) && l.contains("NETFILTER_DROP"))
    });
    let head = s.lines().find(|l| l.contains("NAME")).unwrap();
    assert!(!head.contains("TX pk/s"), "{head}");
    assert!(s.lines().all(|l| l.chars().count() <= 80), "{s}");
    tm.keys("narrow", &["q"]);
    assert_eq!(tm.exit_code("narrow"), "0");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sender.join().unwrap();
}
