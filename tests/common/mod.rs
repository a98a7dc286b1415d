//! Shared helpers for the integration tests: privilege checks, the real binary, scraping, an
//! independent exposition parser, and test network namespaces (addresses in 198.18.0.0/15 only).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_netsleuth");

/// True if the test may run. Without root it prints why and returns false, unless
/// `NETSLEUTH_REQUIRE_PRIVILEGED=1`, where a skip is a failure.
pub fn privileged(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    skip(test, "needs root (network namespaces, setns)")
}

/// Skip with a reason (or fail under NETSLEUTH_REQUIRE_PRIVILEGED=1).
pub fn skip(test: &str, why: &str) -> bool {
    if std::env::var("NETSLEUTH_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("{test}: cannot skip under NETSLEUTH_REQUIRE_PRIVILEGED=1: {why}");
    }
    eprintln!("SKIP {test}: {why}");
    false
}

/// True if the test may run: root, and every tool in `tools` on PATH. Otherwise it skips with
/// the reason through [`skip`] (a failure under NETSLEUTH_REQUIRE_PRIVILEGED=1).
pub fn privileged_with(test: &str, tools: &[&str]) -> bool {
    if !privileged(test) {
        return false;
    }
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !have(t)).collect();
    if missing.is_empty() {
        return true;
    }
    skip(
        test,
        &format!(
            "not on PATH: {} (tests/setup installs them)",
            missing.join(", ")
        ),
    )
}

/// What this kernel offers beyond tracepoints, as the loader's own feature probes see it: the
/// getppid fentry and kprobe programs of selftest.bpf.o loaded and attached through our loader
/// (the same probes `netsleuth selftest` reports as `bpf.fentry_getppid`/`bpf.kprobe_getppid`).
/// `Err(why)` is the loader's typed `Unsupported` refusal; any other error panics (a loader
/// failure is not a kernel property). Needs root.
pub struct Offers {
    pub fentry: Result<(), String>,
    pub kprobes: Result<(), String>,
}

impl Offers {
    pub fn fentry(&self) -> bool {
        self.fentry.is_ok()
    }
    pub fn kprobes(&self) -> bool {
        self.kprobes.is_ok()
    }
}

/// [`Offers`] of this kernel, probed once per test binary.
pub fn offers() -> &'static Offers {
    static O: std::sync::OnceLock<Offers> = std::sync::OnceLock::new();
    O.get_or_init(|| {
        use netsleuth::bpf::{embedded, load, LoadOptions};
        let probe = |prog: &str| -> Result<(), String> {
            let l = load(
                embedded::object("selftest").expect("selftest.bpf.o embedded"),
                &LoadOptions {
                    programs: Some(vec![prog.to_string()]),
                    ..Default::default()
                },
            )
            .unwrap_or_else(|e| panic!("loading selftest.bpf.o ({prog}): {e}"));
            match l.attach(prog) {
                Ok(_) => Ok(()),
                Err(e) if e.is_unsupported() => Err(e.to_string()),
                Err(e) => panic!("{prog}: the loader failed (not Unsupported): {e}"),
            }
        };
        Offers {
            fentry: probe("fentry_getppid"),
            kprobes: probe("kprobe_getppid"),
        }
    })
}

/// Whether a kernel text symbol exists (`/proc/kallsyms`, module suffix ignored).
pub fn kernel_function(name: &str) -> bool {
    std::fs::read_to_string("/proc/kallsyms")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let mut it = l.split_whitespace();
            let ty = it.nth(1);
            matches!(ty, Some("t" | "T")) && it.next() == Some(name)
        })
}

/// A child process killed and reaped on drop (holders of namespaces and sockets), so that a
/// failing test leaves no process behind.
pub struct Holder(pub Child);

impl Holder {
    pub fn spawn(cmd: &mut Command) -> Holder {
        Holder(cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}")))
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads lines from `r` on a thread until `f` returns Some, for at most `timeout` (a child
/// that never says what we wait for fails the test instead of hanging the suite).
pub fn read_line_until<T: Send + 'static>(
    what: &str,
    r: impl Read + Send + 'static,
    timeout: Duration,
    mut f: impl FnMut(&str) -> Option<T> + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if let Some(v) = f(&line) {
                let _ = tx.send(v);
                return;
            }
        }
    });
    rx.recv_timeout(timeout)
        .unwrap_or_else(|_| panic!("timed out ({timeout:?}) waiting for {what}"))
}

/// A loopback TCP port held by a listener that resets every connection (SO_LINGER 0, then
/// close: the client's request fails at once), so no other process can take the port until
/// [`HeldPort::listen`] hands the same socket over to a real server (no port freed and picked
/// again).
pub struct HeldPort {
    pub port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<std::net::TcpListener>>,
}

impl HeldPort {
    pub fn new() -> HeldPort {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        l.set_nonblocking(true).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((c, _)) => {
                        let zero = libc::linger {
                            l_onoff: 1,
                            l_linger: 0,
                        };
                        let _ = nix::sys::socket::setsockopt(
                            &c,
                            nix::sys::socket::sockopt::Linger,
                            &zero,
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            l.set_nonblocking(false).unwrap();
            l
        });
        HeldPort {
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// The listener, no longer resetting: connections queue for whoever accepts now.
    pub fn listen(mut self) -> std::net::TcpListener {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for HeldPort {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The TCP port a process listens on (its listening socket's inode found in `/proc/<pid>/fd`
/// and `/proc/<pid>/net/tcp`), once it does: for servers started on port 0.
pub fn listening_port(pid: u32, timeout: Duration) -> u16 {
    wait_for("the server's listening port", timeout, || {
        let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .ok()?
            .flatten()
            .filter_map(|d| {
                let l = std::fs::read_link(d.path()).ok()?;
                let l = l.to_str()?;
                Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
            })
            .collect();
        let tcp = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).ok()?;
        tcp.lines().skip(1).find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // local_address, state 0A (LISTEN), inode.
            (f.get(3) == Some(&"0A") && inodes.iter().any(|i| Some(&i.as_str()) == f.get(9)))
                .then(|| u16::from_str_radix(f[1].split_once(':')?.1, 16).ok())?
        })
    })
}

/// Whether a program is on PATH.
pub fn have(prog: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {prog}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Run a command, panicking with its stderr if it fails; returns stdout.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Read a started exporter's stderr (piped) on a thread until it logs `listening on ADDR`:
/// returns the address, the lines logged until then and the receiver of the later ones. Panics
/// with those lines when nothing comes within `timeout`.
pub fn await_address(
    child: &mut Child,
    timeout: Duration,
    what: &str,
) -> (String, Vec<String>, mpsc::Receiver<String>) {
    let stderr = child.stderr.take().expect("stderr piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let mut log = Vec::new();
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).unwrap_or_else(|_| {
            panic!(
                "{what} did not report its address; log:\n{}",
                log.join("\n")
            )
        });
        log.push(line.clone());
        if let Some(i) = line.find("listening on ") {
            let addr = line[i + "listening on ".len()..]
                .split(|c: char| c == ';' || c.is_whitespace())
                .next()
                .unwrap()
                .to_string();
            return (addr, log, rx);
        }
    }
}

/// A running exporter, killed on drop.
pub struct Exporter {
    pub child: Child,
    pub addr: String,
    pub log: std::sync::Mutex<mpsc::Receiver<String>>,
}

impl Exporter {
    /// Reads the exporter's log until a line contains `needle`; returns every line read.
    pub fn log_until(&self, needle: &str, timeout: Duration) -> Vec<String> {
        let rx = self.log.lock().unwrap();
        let end = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) => {
                    let hit = l.contains(needle);
                    seen.push(l);
                    if hit {
                        return seen;
                    }
                }
                Err(_) => panic!("no log line with `{needle}`; read: {seen:#?}"),
            }
        }
    }
}

impl Exporter {
    /// Start the real binary on a free loopback port with extra args.
    // The child is returned inside `Exporter`, whose Drop kills and waits for it.
    #[allow(clippy::zombie_processes)]
    pub fn start(extra: &[&str]) -> Exporter {
        let mut child = Command::new(BIN)
            .arg("--web.listen-address=127.0.0.1:0")
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start netsleuth");
        let (addr, _, rx) = await_address(&mut child, Duration::from_secs(20), "netsleuth");
        Exporter {
            child,
            addr,
            log: std::sync::Mutex::new(rx),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn get(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, Vec<(String, String)>, Vec<u8>) {
        http_get(&self.addr, path, headers)
    }

    /// Scrape /metrics and parse it.
    pub fn scrape(&self) -> Scrape {
        let (code, _, body) = self.get("/metrics", &[]);
        assert_eq!(code, 200);
        Scrape::parse(&String::from_utf8(body).unwrap())
    }

    pub fn scrape_text(&self) -> String {
        let (code, _, body) = self.get("/metrics", &[]);
        assert_eq!(code, 200);
        String::from_utf8(body).unwrap()
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Status, lower-cased headers and body of a response.
pub type HttpResponse = (u16, Vec<(String, String)>, Vec<u8>);

/// Minimal HTTP/1.0 GET (no client crate needed for loopback tests).
pub fn http_get(addr: &str, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    try_http_get(addr, path, headers).unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

/// [`http_get`] that reports failures instead of panicking (for polling a server that is
/// still starting).
pub fn try_http_get(
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<HttpResponse, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no HTTP header end")?;
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let body = buf[split + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines.next().ok_or("empty response")?;
    let code: u16 = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("bad status line")?;
    let hdrs = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok((code, hdrs, body))
}

/// One parsed sample.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: String,
}

/// A parsed exposition (independent of the exporter's renderer).
#[derive(Debug, Default)]
pub struct Scrape {
    pub samples: Vec<Sample>,
    pub types: BTreeMap<String, String>,
}

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        let mut sc = Scrape::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (n, t) = rest.split_once(' ').unwrap();
                sc.types.insert(n.to_string(), t.to_string());
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (name, labels, value) = match line.find('{') {
                Some(i) => {
                    let close = line.rfind('}').unwrap();
                    (
                        &line[..i],
                        parse_labels(&line[i + 1..close]),
                        line[close + 1..].trim(),
                    )
                }
                None => {
                    let (n, v) = line.split_once(' ').unwrap();
                    (n, BTreeMap::new(), v.trim())
                }
            };
            sc.samples.push(Sample {
                name: name.to_string(),
                labels,
                value: value.to_string(),
            });
        }
        sc
    }

    /// Samples of a family whose labels include all of `want`.
    /// The sum of the matching samples, None when there is none.
    pub fn sum(&self, name: &str, want: &[(&str, &str)]) -> Option<f64> {
        let v = self.find(name, want);
        (!v.is_empty()).then(|| v.iter().map(|x| x.value.parse::<f64>().unwrap()).sum())
    }

    pub fn find(&self, name: &str, want: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && want
                        .iter()
                        // As Prometheus matches: an absent label is an empty one.
                        .all(|(k, v)| s.labels.get(*k).map_or("", String::as_str) == *v)
            })
            .collect()
    }

    /// The single sample of a family with these labels.
    pub fn one(&self, name: &str, want: &[(&str, &str)]) -> &Sample {
        let v = self.find(name, want);
        assert_eq!(v.len(), 1, "expected one {name}{want:?}, got {v:?}");
        v[0]
    }

    /// All samples of one namespace.
    pub fn of_netns(&self, inode: u64) -> Vec<&Sample> {
        let s = inode.to_string();
        self.samples
            .iter()
            .filter(|x| x.labels.get("netns") == Some(&s))
            .collect()
    }
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let eq = s[i..].find('=').unwrap() + i;
        let key = s[i..eq].trim_start_matches(',').to_string();
        assert_eq!(b[eq + 1], b'"');
        let mut j = eq + 2;
        let mut val = String::new();
        while b[j] != b'"' {
            if b[j] == b'\\' {
                j += 1;
                val.push(match b[j] {
                    b'n' => '\n',
                    c => c as char,
                });
            } else {
                val.push(b[j] as char);
            }
            j += 1;
        }
        m.insert(key, val);
        i = j + 1;
        if i < b.len() && b[i] == b',' {
            i += 1;
        }
    }
    m
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A unique short name for test objects (interface names are limited to 15 bytes).
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}x{}",
        std::process::id() % 100000,
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// A named network namespace (`ip netns add`), deleted on drop. Loopback is up and IPv6 is off
/// so that nothing talks on its own (router solicitations, DAD) while a test compares figures.
pub struct Netns {
    pub name: String,
}

/// Runs `f` on a thread inside the network namespace at `path` (`/run/netns/<name>`,
/// `/proc/<pid>/ns/net`; commands it spawns too).
pub fn in_netns<T: Send + 'static>(path: String, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

impl Netns {
    pub fn new(prefix: &str) -> Netns {
        let name = unique(prefix);
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1");
        ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1");
        ns.exec("ip", &["link", "set", "lo", "up"]);
        ns
    }

    pub fn sysctl(&self, key: &str, val: &str) {
        self.exec("sysctl", &["-q", "-w", &format!("{key}={val}")]);
    }

    /// Run a command inside the namespace; returns stdout.
    pub fn exec(&self, cmd: &str, args: &[&str]) -> String {
        let mut a = vec!["netns", "exec", &self.name, cmd];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    /// Read a file as a process in this namespace sees it.
    pub fn cat(&self, path: &str) -> String {
        self.exec("cat", &[path])
    }

    pub fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(self.path()).unwrap().ino()
    }

    /// Run `f` on a fresh thread inside this namespace.
    /// The namespace's bind mount.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    pub fn within<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        in_netns(self.path(), f)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Namespace inode numbers held below the namespaces a test is about to create, so that none
/// of those is reused by another namespace soon after the test deletes it: the kernel gives
/// every new namespace (of any type, anywhere on the node: each `ip netns exec` makes a mount
/// namespace) the lowest free proc inode number. `hold` takes `n` of the lowest with UTS
/// namespaces kept open by fd; create the test's namespaces next (check them with
/// [`InumShield::below`]), and drop the shield just before deleting them: the next `n`
/// namespaces made on the node take the shield's numbers, not the test's.
pub struct InumShield(Vec<std::fs::File>);

impl InumShield {
    pub fn hold(n: usize) -> InumShield {
        let files = std::thread::spawn(move || {
            (0..n)
                .map(|_| {
                    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUTS).unwrap();
                    std::fs::File::open("/proc/thread-self/ns/uts").unwrap()
                })
                .collect()
        })
        .join()
        .unwrap();
        InumShield(files)
    }

    /// Whether every held number is below `ino`.
    pub fn below(&self, ino: u64) -> bool {
        use std::os::unix::fs::MetadataExt;
        self.0
            .iter()
            .all(|f| f.metadata().is_ok_and(|m| m.ino() < ino))
    }
}

/// A new named namespace whose inode is above every number `shield` holds (retried until it
/// is: a number freed meanwhile below the shield would be the next one reused).
pub fn netns_above(shield: &InumShield, prefix: &str) -> Netns {
    for _ in 0..20 {
        let ns = Netns::new(prefix);
        if shield.below(ns.inode()) {
            return ns;
        }
    }
    panic!("no namespace above the inode shield after 20 tries");
}

/// Whether any live namespace (bound under /run/netns or of a process) has inode `ino`.
pub fn netns_inode_in_use(ino: u64) -> bool {
    use std::os::unix::fs::MetadataExt;
    let bound = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .any(|d| std::fs::metadata(d.path()).is_ok_and(|m| m.ino() == ino));
    bound
        || std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .any(|d| std::fs::metadata(d.path().join("ns/net")).is_ok_and(|m| m.ino() == ino))
}

/// Two namespaces joined by a veth pair: `a` has 198.18.<net>.1/24 on `dev_a`, `b` has
/// 198.18.<net>.2/24 on `dev_b`.
pub struct Pair {
    pub a: Netns,
    pub b: Netns,
    pub dev_a: String,
    pub dev_b: String,
    pub ip_a: String,
    pub ip_b: String,
}

static NET: AtomicUsize = AtomicUsize::new(0);

impl Pair {
    pub fn new() -> Pair {
        let a = Netns::new("nsa");
        let b = Netns::new("nsb");
        let dev_a = unique("va");
        let dev_b = unique("vb");
        // A distinct /24 per pair inside 198.18.0.0/15 (test traffic never leaves it).
        let net = 100 + (std::process::id() as usize + NET.fetch_add(1, Ordering::Relaxed)) % 150;
        let ip_a = format!("198.18.{net}.1");
        let ip_b = format!("198.18.{net}.2");
        run(
            "ip",
            &[
                "link", "add", &dev_a, "netns", &a.name, "type", "veth", "peer", "name", &dev_b,
                "netns", &b.name,
            ],
        );
        a.exec("ip", &["addr", "add", &format!("{ip_a}/24"), "dev", &dev_a]);
        b.exec("ip", &["addr", "add", &format!("{ip_b}/24"), "dev", &dev_b]);
        a.exec("ip", &["link", "set", &dev_a, "up"]);
        b.exec("ip", &["link", "set", &dev_b, "up"]);
        Pair {
            a,
            b,
            dev_a,
            dev_b,
            ip_a,
            ip_b,
        }
    }
}

impl Pair {
    /// A TCP write held by a full window: with a small receive buffer on `b` and a large send
    /// buffer on `a`, `a` writes to `b`'s `port` until its socket buffer is full while `b`
    /// reads nothing for `b_waits_ms`, so the last writes return with data the stack cannot send
    /// yet; then `b` reads everything, and `a` keeps the connection for `a_waits_ms`.
    pub fn full_window_write(&self, port: u16, b_waits_ms: u64, a_waits_ms: u64) {
        self.b.sysctl("net.ipv4.tcp_rmem", "4096 16384 16384");
        self.a.sysctl("net.ipv4.tcp_wmem", "4096 1048576 4194304");
        let (tx, rx) = std::sync::mpsc::channel();
        let dst = format!("{}:{port}", self.ip_b);
        std::thread::scope(|s| {
            s.spawn(|| {
                self.b.within(move || {
                    use std::io::Read;
                    let l = std::net::TcpListener::bind(("0.0.0.0", port)).unwrap();
                    tx.send(()).unwrap();
                    let (mut c, _) = l.accept().unwrap();
                    std::thread::sleep(Duration::from_millis(b_waits_ms));
                    let mut buf = vec![0u8; 1 << 16];
                    while c.read(&mut buf).map(|n| n > 0).unwrap_or(false) {}
                })
            });
            rx.recv().unwrap();
            self.a.within(move || {
                use std::io::Write;
                let mut c = std::net::TcpStream::connect(&dst).unwrap();
                c.set_nonblocking(true).unwrap();
                let chunk = vec![0u8; 1 << 16];
                let mut sent = 0usize;
                while sent < (64 << 20) {
                    match c.write(&chunk) {
                        Ok(n) => sent += n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => panic!("write: {e}"),
                    }
                }
                std::thread::sleep(Duration::from_millis(a_waits_ms));
            });
        });
    }
}

impl Pair {
    /// A pair whose `b` drops UDP to `port` (iptables INPUT). The neighbour is resolved first
    /// (one datagram to `port - 1`) so that no datagram sent later waits in, or is dropped
    /// from, the neighbour queue.
    pub fn dropping(port: u16) -> Pair {
        let p = Pair::new();
        let dport = port.to_string();
        p.b.exec(
            "iptables",
            &["-A", "INPUT", "-p", "udp", "--dport", &dport, "-j", "DROP"],
        );
        let to = format!("{}:{}", p.ip_b, port - 1);
        p.a.within(move || {
            let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            s.send_to(b"w", to).unwrap();
        });
        p.wait_neighbour_resolved();
        p
    }

    /// Waits until `a` has resolved `b`'s address (its neighbour entry is REACHABLE), so that
    /// nothing sent from now on waits in the neighbour queue.
    pub fn wait_neighbour_resolved(&self) {
        wait_for("a resolved b's address", Duration::from_secs(5), || {
            let out = self
                .a
                .exec("ip", &["neigh", "show", &self.ip_b, "dev", &self.dev_a]);
            out.contains("REACHABLE").then_some(())
        });
    }

    /// Sends `n` one-byte datagrams from `a` to `b`'s `port` from one socket; returns its
    /// source port.
    pub fn send_udp_to_b(&self, port: u16, n: usize) -> u16 {
        let to = format!("{}:{port}", self.ip_b);
        self.a.within(move || {
            let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            for _ in 0..n {
                s.send_to(b"x", &to).unwrap();
            }
            s.local_addr().unwrap().port()
        })
    }
}

/// Parse `/proc/net/dev` independently: device → column values in file order.
pub fn proc_net_dev(text: &str) -> BTreeMap<String, Vec<u64>> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (dev, rest) = l.split_once(':')?;
            Some((
                dev.trim().to_string(),
                rest.split_whitespace()
                    .map(|v| v.parse().unwrap())
                    .collect(),
            ))
        })
        .collect()
}

/// Parse header/value pair files (`snmp`, `netstat`): `Group_Field` → value text.
pub fn proc_pairs(text: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.chunks(2) {
        if pair.len() < 2 {
            break;
        }
        let (g, names) = pair[0].split_once(':').unwrap();
        let (_, vals) = pair[1].split_once(':').unwrap();
        for (n, v) in names.split_whitespace().zip(vals.split_whitespace()) {
            m.insert(format!("{g}_{n}"), v.to_string());
        }
    }
    m
}

/// Parse `snmp6`: `Ip6InReceives 3` → (`Ip6_InReceives`, "3").
pub fn proc_snmp6(text: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for l in text.lines() {
        let mut it = l.split_whitespace();
        let (Some(k), Some(v)) = (it.next(), it.next()) else {
            continue;
        };
        for g in ["UdpLite6", "Icmp6", "Udp6", "Ip6"] {
            if let Some(f) = k.strip_prefix(g) {
                m.insert(format!("{g}_{f}"), v.to_string());
                break;
            }
        }
    }
    m
}

/// Wait until `f` returns Some or the time is up.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Write a config file into a temp dir; returns its path.
pub fn write_config(yaml: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(unique("nslcfg"));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("config.yaml");
    std::fs::write(&p, yaml).unwrap();
    p
}

/// A config enabling every metric probe with every kernel field.
pub const EVERY_PROBE_EVERY_FIELD: &str = r#"
metrics:
  probes:
  - {name: netdev, args: {fields: '.*', loopback: all}}
  - {name: ip, args: {fields: '.*'}}
  - {name: icmp, args: {fields: '.*'}}
  - {name: tcp, args: {fields: '.*'}}
  - {name: udp, args: {fields: '.*'}}
  - {name: tcpext, args: {fields: '.*'}}
  - {name: ipext, args: {fields: '.*'}}
  - {name: sock, args: {fields: '.*'}}
  - {name: softnet}
  - {name: io}
  - {name: fd}
  - {name: conntrack, args: {fields: '.*'}}
  - {name: tcpsummary}
  - {name: qdisc, args: {kindsExclude: ''}}
"#;

/// Events of one type for one namespace from a `file` sink's JSON lines.
pub fn events_of(path: &std::path::Path, kind: &str, netns: u64) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == kind && v["netns"] == netns)
        .collect()
}

/// Sum of a family's samples with these labels, from a fresh scrape.
pub fn scrape_sum(e: &Exporter, name: &str, want: &[(&str, &str)]) -> f64 {
    e.scrape()
        .find(name, want)
        .iter()
        .map(|s| s.value.parse::<f64>().unwrap())
        .sum()
}

/// `tests/runtimes`: the test container runtimes' configs and helpers.
pub fn runtimes_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/runtimes")
}

/// Run podman with the tests' containers.conf (tests/runtimes); panics with its stderr on failure.
pub fn podman(args: &[&str]) -> String {
    let out = Command::new("podman")
        .args(args)
        .env("CONTAINERS_CONF", runtimes_dir().join("containers.conf"))
        .output()
        .expect("podman");
    assert!(
        out.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Podman containers and pods removed on drop (`rm -f -t 0`), so a failing test leaves none.
#[derive(Default)]
pub struct PodmanObjects {
    pub containers: Vec<String>,
    pub pods: Vec<String>,
}

impl PodmanObjects {
    pub fn run(&mut self, name: &str, extra: &[&str]) {
        self.containers.push(name.to_string());
        let mut a = vec!["run", "-d", "--name", name];
        a.extend_from_slice(extra);
        a.extend_from_slice(&["localhost/bbtest:1", "/pause"]);
        podman(&a);
    }

    pub fn pod(&mut self, name: &str) {
        self.pods.push(name.to_string());
        podman(&["pod", "create", "--network", "none", "--name", name]);
    }

    pub fn rm(&mut self, name: &str) {
        podman(&["rm", "-f", "-t", "0", name]);
        self.containers.retain(|c| c != name);
    }

    pub fn rm_pod(&mut self, name: &str) {
        podman(&["pod", "rm", "-f", "-t", "0", name]);
        self.pods.retain(|c| c != name);
    }
}

impl Drop for PodmanObjects {
    fn drop(&mut self) {
        let quiet = |args: &[&str]| {
            let _ = Command::new("podman")
                .args(args)
                .env("CONTAINERS_CONF", runtimes_dir().join("containers.conf"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        for c in &self.containers {
            quiet(&["rm", "-f", "-t", "0", c]);
        }
        for p in &self.pods {
            quiet(&["pod", "rm", "-f", "-t", "0", p]);
        }
    }
}

/// The default procfs/netlink probe set (what runs when `metrics.probes` is absent).
pub const DEFAULT_COLLECTORS: &[&str] = &[
    "netdev",
    "ip",
    "icmp",
    "tcp",
    "udp",
    "tcpext",
    "ipext",
    "sock",
    "softnet",
    "tcpsummary",
    "io",
    "fd",
    "conntrack",
    "qdisc",
];

/// Each eBPF probe in `probes` is up (1) and reports how it is attached.
pub fn assert_probes_attached(s: &Scrape, probes: &[&str]) {
    for p in probes {
        assert_eq!(
            s.sum("netsleuth_probe_up", &[("probe", p)]),
            Some(1.0),
            "{p}"
        );
        assert!(
            !s.find("netsleuth_probe_attach_info", &[("probe", p)])
                .is_empty(),
            "{p}: no attach info"
        );
    }
}

/// a -> r -> b, r routing between two veth pairs (198.19.<net>.0/24 and the next /24): what r
/// forwards crosses kernellatency's forward stage (netif_receive_skb -> net_dev_queue in r) and
/// netiftxlat's stages on r's device towards b.
pub struct Routed {
    pub a: Netns,
    pub r: Netns,
    pub b: Netns,
    /// r's device towards b.
    pub rb_r: String,
    pub ip_b: String,
}

impl Routed {
    pub fn new() -> Routed {
        let a = Netns::new("cha");
        let r = Netns::new("chr");
        let b = Netns::new("chb");
        let (ar_a, ar_r) = (unique("ca"), unique("cr"));
        let (rb_r, rb_b) = (unique("cs"), unique("cb"));
        let net = 100 + (std::process::id() as usize % 150);
        let (ip_a, ip_ra) = (format!("198.19.{net}.1"), format!("198.19.{net}.2"));
        let net2 = (net + 1) % 250;
        let (ip_rb, ip_b) = (format!("198.19.{net2}.1"), format!("198.19.{net2}.2"));
        for (x, xn, y, yn) in [(&ar_a, &a, &ar_r, &r), (&rb_r, &r, &rb_b, &b)] {
            run(
                "ip",
                &[
                    "link", "add", x, "netns", &xn.name, "type", "veth", "peer", "name", y,
                    "netns", &yn.name,
                ],
            );
        }
        a.exec("ip", &["addr", "add", &format!("{ip_a}/24"), "dev", &ar_a]);
        r.exec("ip", &["addr", "add", &format!("{ip_ra}/24"), "dev", &ar_r]);
        r.exec("ip", &["addr", "add", &format!("{ip_rb}/24"), "dev", &rb_r]);
        b.exec("ip", &["addr", "add", &format!("{ip_b}/24"), "dev", &rb_b]);
        for (ns, dev) in [(&a, &ar_a), (&r, &ar_r), (&r, &rb_r), (&b, &rb_b)] {
            ns.exec("ip", &["link", "set", dev, "up"]);
        }
        a.exec("ip", &["route", "add", "default", "via", &ip_ra]);
        b.exec("ip", &["route", "add", "default", "via", &ip_rb]);
        r.sysctl("net.ipv4.ip_forward", "1");
        Routed {
            a,
            r,
            b,
            rb_r,
            ip_b,
        }
    }

    /// r's `Ip ForwDatagrams`.
    pub fn forwarded(&self) -> u64 {
        proc_pairs(&self.r.cat("/proc/net/snmp"))["Ip_ForwDatagrams"]
            .parse()
            .unwrap()
    }

    /// Packets r's device towards b transmitted (`/proc/net/dev` in r).
    pub fn tx_packets(&self) -> u64 {
        proc_net_dev(&self.r.cat("/proc/net/dev"))[&self.rb_r][9]
    }

    /// `n` datagrams a -> b (through r).
    pub fn send(&self, n: usize) {
        let dst = format!("{}:9", self.ip_b);
        self.a.within(move || {
            let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            for _ in 0..n {
                s.send_to(&[0u8; 100], &dst).unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
        });
    }
}
