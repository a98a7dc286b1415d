//! The HTTP/1.1 server behind `/metrics` and `/events`: synchronous, bounded, over `std::net`,
//! `httparse` and `rustls`.
//!
//! Why not tiny_http: it gives no socket timeouts (a client that sends half a header, or stops
//! reading, holds a thread until TCP gives up), no header size limit (a 10 MiB header was read
//! and answered 200), a thread per stalled connection (5,000 of them left 5,010 threads and
//! 93 MiB), and its TLS pins rustls 0.20 (RUSTSEC-2024-0336).
//!
//! Shape: one reactor thread owns every connection that is between requests. With `poll(2)` it
//! accepts, runs TLS handshakes, and reads request heads without blocking, each under a deadline
//! (header timeout; idle timeout between keep-alive requests). A complete head goes with its
//! connection to a fixed pool of worker threads, which write the response with a write timeout
//! and hand a kept-alive connection back. `/events` clients get a thread each, at most
//! [`crate::events::stream::MAX_CLIENTS`] of them (more are refused with 503). Open connections
//! are capped: when the cap is reached, a new connection evicts the one that has waited longest
//! for its request head, so a flood of stalled clients cannot lock a scraper out, and neither
//! threads nor memory grow with the number of clients.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};

use crate::web_config::{Watched, WebConfig};

/// The server's bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Open connections at most (reactor, workers and streams together).
    pub max_connections: usize,
    /// Worker threads (fixed).
    pub workers: usize,
    /// `/metrics` and `/` requests queued or running at most (`--web.max-requests`; 0: no limit);
    /// beyond, 503.
    pub max_requests: usize,
    /// Time to send a whole request head (and to finish the TLS handshake).
    pub header_timeout: Duration,
    /// Time a kept-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Time one write of the response may block (a client that stops reading is cut off).
    pub write_timeout: Duration,
    /// Request head size at most; beyond, 431.
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 512,
            workers: 4,
            max_requests: 40,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            write_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
        }
    }
}

/// Headers per request at most (beyond: 431).
const MAX_HEADERS: usize = 100;

/// Why a connection or request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rejected {
    /// A connection, request or stream limit.
    Limit,
    /// Header, idle or write timeout.
    Timeout,
    /// Missing or wrong credentials, or a client certificate without an allowed name.
    Auth,
    /// TLS handshake failed (wrong certificate, plaintext to the TLS port, bad records).
    Tls,
    /// Malformed request (bad request line or headers, head too large, a body).
    BadRequest,
}

impl Rejected {
    const ALL: [Rejected; 5] = [
        Rejected::Limit,
        Rejected::Timeout,
        Rejected::Auth,
        Rejected::Tls,
        Rejected::BadRequest,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Rejected::Limit => "limit",
            Rejected::Timeout => "timeout",
            Rejected::Auth => "auth",
            Rejected::Tls => "tls",
            Rejected::BadRequest => "bad_request",
        }
    }
}

/// The server's own figures (`netsleuth_http_*`).
#[derive(Default)]
pub struct Stats {
    open: AtomicUsize,
    rejected: [AtomicU64; 5],
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    metrics_inflight: AtomicUsize,
}

impl Stats {
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
    pub fn rejected(&self, r: Rejected) -> u64 {
        self.rejected[r as usize].load(Ordering::Relaxed)
    }
    fn reject(&self, r: Rejected) {
        self.rejected[r as usize].fetch_add(1, Ordering::Relaxed);
    }
    fn count(&self, handler: &'static str, code: u16) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((handler, code))
            .or_default() += 1;
    }
}

impl crate::selfmetrics::SelfMetrics for Stats {
    fn emit(&self, s: &mut dyn crate::model::Sink) {
        use crate::model::{MetricKind, Value};
        for ((h, c), n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            s.emit(
                "netsleuth_http_requests_total",
                "HTTP requests answered, by handler and status code.",
                MetricKind::Counter,
                &[("code", &c.to_string()), ("handler", h)],
                Value::U64(*n),
            );
        }
        s.emit(
            "netsleuth_http_connections",
            "Open HTTP connections (waiting for a request, being answered, or streaming /events).",
            MetricKind::Gauge,
            &[],
            Value::U64(self.open_connections() as u64),
        );
        for r in Rejected::ALL {
            s.emit(
                "netsleuth_http_rejected_total",
                "HTTP connections or requests refused or cut off, by reason (limit, timeout, auth, tls, bad_request).",
                MetricKind::Counter,
                &[("reason", r.as_str())],
                Value::U64(self.rejected(r)),
            );
        }
    }
}

/// A parsed request head.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The request target as sent (`/metrics?x=1`).
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
    pub fn query(&self) -> &str {
        self.target.split_once('?').map(|(_, q)| q).unwrap_or("")
    }
    /// Whether the client wants the connection kept open after this request.
    fn keep_alive(&self) -> bool {
        let conn = self.header("Connection").unwrap_or("");
        let has = |t: &str| conn.split(',').any(|p| p.trim().eq_ignore_ascii_case(t));
        if self.version == 0 {
            has("keep-alive")
        } else {
            !has("close")
        }
    }
}

/// A response body.
pub enum Body {
    Bytes(Vec<u8>),
    /// Streamed; with its length when known (else chunked, or close-delimited for HTTP/1.0).
    Reader(Box<dyn Read + Send>, Option<usize>),
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

impl Response {
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
            body: Body::Bytes(body.into().into_bytes()),
        }
    }
    pub fn with_header(mut self, k: &str, v: &str) -> Response {
        self.headers.push((k.into(), v.into()));
        self
    }
}

/// What a handler does with a request.
pub enum Outcome {
    Respond(Response),
    /// Hand the connection to a long-lived writer (the `/events` stream), which writes its own
    /// response head (with the web config's security headers, given). Its thread is the
    /// handler's to bound.
    Stream(StreamFn),
}

/// A stream writer: takes the connection (blocking, with the write timeout) and the extra
/// response headers.
pub type StreamFn = Box<dyn FnOnce(Conn, Vec<(String, String)>) + Send>;

/// The application: maps a request to what to do, and names its handler for the metrics.
pub trait Handler: Send + Sync {
    fn handle(&self, req: &Request) -> Outcome;
    /// `netsleuth_http_requests_total{handler}` for a path (a small fixed set).
    fn handler_name(&self, path: &str) -> &'static str;
    /// Whether a request for this path is a collection (`/metrics`, the status page `/`),
    /// counted against `max_requests`.
    fn is_collection(&self, path: &str) -> bool;
}

enum Transport {
    Plain(TcpStream),
    Tls(TcpStream, Box<rustls::ServerConnection>),
}

/// A client connection.
pub struct Conn {
    t: Transport,
    /// Plaintext read ahead of the current request (pipelined requests).
    buf: Vec<u8>,
    /// Requests answered on this connection.
    served: u64,
    /// The write timeout, and the deadline of the response being written (None: per write).
    write_timeout: Duration,
    deadline: Option<Instant>,
    stats: Arc<Stats>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Transport::Tls(s, c) = &mut self.t {
            if c.is_handshaking() {
                // Nothing was said over TLS yet: just close.
                let _ = s.shutdown(Shutdown::Both);
                self.stats.open.fetch_sub(1, Ordering::Relaxed);
                return;
            }
            c.send_close_notify();
            let _ = s.set_nonblocking(true);
            let _ = c.write_tls(s);
        }
        self.stream().shutdown(Shutdown::Both).ok();
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Conn {
    fn stream(&self) -> &TcpStream {
        match &self.t {
            Transport::Plain(s) | Transport::Tls(s, _) => s,
        }
    }

    /// Switch to blocking writes bounded by `timeout` (a worker or stream thread owns it now).
    pub fn set_blocking(&mut self, timeout: Duration) -> io::Result<()> {
        self.write_timeout = timeout;
        let s = self.stream();
        s.set_nonblocking(false)?;
        s.set_write_timeout(Some(timeout))?;
        s.set_read_timeout(Some(timeout))
    }

    /// Write all of `data`, through TLS when the connection has it, by the response's deadline
    /// (a worker's whole response has one write timeout, so a client reading a byte now and
    /// then cannot hold it), else within one write timeout from now (a stream's each write).
    pub fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        let deadline = self
            .deadline
            .unwrap_or_else(|| Instant::now() + self.write_timeout);
        for chunk in data.chunks(64 * 1024) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "write timeout"));
            }
            match &mut self.t {
                Transport::Plain(s) => {
                    s.set_write_timeout(Some(left))?;
                    s.write_all(chunk)?;
                }
                Transport::Tls(s, c) => {
                    s.set_write_timeout(Some(left))?;
                    let mut st = rustls::Stream::new(c.as_mut(), s);
                    st.write_all(chunk)?;
                    st.flush()?;
                }
            }
        }
        Ok(())
    }
}

/// Non-blocking reading of a head in the reactor.
enum Progress {
    /// Need more bytes.
    More,
    /// A complete head, and whether TLS output is pending.
    Head(Request),
    /// Close, answering with this response first (best effort) and counting the reason.
    Fail(Option<&'static [u8]>, Rejected),
    /// The peer closed (or reset) the connection between requests.
    Closed,
}

const RESP_400: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 12\r\nConnection: close\r\n\r\nbad request\n";
const RESP_431: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 32\r\nConnection: close\r\n\r\nrequest header fields too large\n";
const RESP_413: &[u8] = b"HTTP/1.1 413 Content Too Large\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 33\r\nConnection: close\r\n\r\nrequest bodies are not accepted\n\n";
const RESP_505: &[u8] =
    b"HTTP/1.1 505 HTTP Version Not Supported\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
const RESP_503: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 20\r\nConnection: close\r\n\r\ntoo many requests\n\n";
const RESP_PLAIN_TO_TLS: &[u8] = b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// Parse a request head from `buf`; on success the head's bytes are removed from `buf`.
pub fn parse_head(
    buf: &mut Vec<u8>,
    max: usize,
) -> Result<Option<Request>, (&'static [u8], &'static str)> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let n = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > max {
                return Err((RESP_431, "request head too large"));
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err((RESP_431, "too many headers")),
        Err(httparse::Error::Version) => return Err((RESP_505, "unsupported HTTP version")),
        Err(_) => return Err((RESP_400, "malformed request")),
    };
    if n > max {
        return Err((RESP_431, "request head too large"));
    }
    let version = req.version.unwrap_or(1);
    let r = Request {
        method: req.method.unwrap_or("").to_string(),
        target: req.path.unwrap_or("").to_string(),
        version,
        headers: req
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
    };
    let body = r.header("Transfer-Encoding").is_some()
        || r.header("Content-Length").is_some_and(|v| v.trim() != "0");
    if body {
        return Err((RESP_413, "request with a body"));
    }
    if version == 1 && r.header("Host").is_none() {
        return Err((RESP_400, "HTTP/1.1 request without Host"));
    }
    buf.drain(..n);
    Ok(Some(r))
}

struct Waiting {
    conn: Conn,
    /// When it started waiting for this head (eviction picks the oldest).
    since: Instant,
    deadline: Instant,
    /// No byte of the next request yet (idle keep-alive): the idle timeout applies.
    idle: bool,
    /// TLS records to send are pending (wait for POLLOUT too).
    want_write: bool,
    /// The TLS handshake is still running (a failure is a TLS rejection).
    handshaking: bool,
}

/// The server: listeners, the reactor and the workers.
pub struct Server {
    pub addrs: Vec<SocketAddr>,
    pub stats: Arc<Stats>,
    /// Whether the listeners speak TLS (from the web config at start).
    pub tls: bool,
}

/// Bind every address list (each: the first address that works, `[::]` before `0.0.0.0`).
pub fn bind(lists: &[Vec<SocketAddr>]) -> Result<Vec<TcpListener>, String> {
    let mut out = Vec::new();
    for addrs in lists {
        let mut last = String::new();
        let mut bound = None;
        for a in addrs {
            match TcpListener::bind(a) {
                Ok(l) => {
                    bound = Some(l);
                    break;
                }
                Err(e) => last = format!("cannot listen on {a}: {e}"),
            }
        }
        out.push(bound.ok_or(last)?);
    }
    Ok(out)
}

/// Start serving `listeners` with `handler` under `limits` and the web config `web`.
pub fn start(
    listeners: Vec<TcpListener>,
    handler: Arc<dyn Handler>,
    web: Arc<Watched>,
    limits: Limits,
) -> io::Result<Server> {
    let stats = Arc::new(Stats::default());
    let addrs = listeners
        .iter()
        .map(|l| l.local_addr())
        .collect::<io::Result<Vec<_>>>()?;
    for l in &listeners {
        l.set_nonblocking(true)?;
    }
    let (wake_rx, wake_tx) = UnixStream::pair()?;
    wake_rx.set_nonblocking(true)?;
    wake_tx.set_nonblocking(true)?;
    let wake_tx = Arc::new(wake_tx);
    let (work_tx, work_rx) = bounded::<(Conn, Request)>(limits.workers * 16);
    let (back_tx, back_rx) = bounded::<Conn>(limits.max_connections);
    let tls = web.current().tls.is_some();
    for i in 0..limits.workers {
        let rx = work_rx.clone();
        let back = back_tx.clone();
        let wake = wake_tx.clone();
        let handler = handler.clone();
        let web = web.clone();
        let stats = stats.clone();
        let limits = limits.clone();
        std::thread::Builder::new()
            .name(format!("http-{i}"))
            .spawn(move || worker(rx, back, wake, handler, web, stats, limits))?;
    }
    let reactor = Reactor {
        listeners,
        wake: wake_rx,
        work: work_tx,
        back: back_rx,
        waiting: Vec::new(),
        stats: stats.clone(),
        web,
        handler,
        limits,
    };
    std::thread::Builder::new()
        .name("http-accept".into())
        .spawn(move || reactor.run())?;
    Ok(Server { addrs, stats, tls })
}

struct Reactor {
    listeners: Vec<TcpListener>,
    wake: UnixStream,
    work: Sender<(Conn, Request)>,
    back: Receiver<Conn>,
    waiting: Vec<Waiting>,
    stats: Arc<Stats>,
    web: Arc<Watched>,
    handler: Arc<dyn Handler>,
    limits: Limits,
}

impl Reactor {
    fn run(mut self) {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        loop {
            let now = Instant::now();
            let next = self
                .waiting
                .iter()
                .map(|w| w.deadline)
                .min()
                .map(|d| d.saturating_duration_since(now))
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1));
            let revents: Vec<PollFlags> = {
                let mut fds: Vec<PollFd> =
                    Vec::with_capacity(self.listeners.len() + 1 + self.waiting.len());
                for l in &self.listeners {
                    fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
                }
                fds.push(PollFd::new(self.wake.as_fd(), PollFlags::POLLIN));
                for w in &self.waiting {
                    let mut f = PollFlags::POLLIN;
                    if w.want_write {
                        f |= PollFlags::POLLOUT;
                    }
                    fds.push(PollFd::new(w.conn.stream().as_fd(), f));
                }
                let ms = next.as_millis().clamp(1, 1000) as u16;
                match poll(&mut fds, PollTimeout::from(ms)) {
                    Ok(_) => fds
                        .iter()
                        .map(|f| f.revents().unwrap_or(PollFlags::empty()))
                        .collect(),
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => {
                        log::error!("http: poll failed: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                }
            };
            let nl = self.listeners.len();
            // Connections whose sockets are ready, indexes into `waiting` (before new ones).
            let ready: Vec<usize> = revents[nl + 1..]
                .iter()
                .enumerate()
                .filter(|(_, r)| !r.is_empty())
                .map(|(i, _)| i)
                .collect();
            self.progress(&ready);
            if !revents[nl].is_empty() {
                let mut b = [0u8; 256];
                while matches!(self.wake.read(&mut b), Ok(n) if n > 0) {}
            }
            while let Ok(conn) = self.back.try_recv() {
                let now = Instant::now();
                let idle = conn.buf.is_empty();
                let mut w = Waiting {
                    conn,
                    since: now,
                    deadline: now
                        + if idle {
                            self.limits.idle_timeout
                        } else {
                            self.limits.header_timeout
                        },
                    idle,
                    want_write: false,
                    handshaking: false,
                };
                // A pipelined request may already be complete in the read-ahead.
                match try_head(&mut w, self.limits.max_header_bytes) {
                    Progress::Head(req) => self.dispatch(w.conn, req),
                    Progress::Fail(resp, why) => fail(w.conn, resp, why),
                    _ => self.waiting.push(w),
                }
            }
            for (i, r) in revents[..nl].iter().enumerate() {
                if !r.is_empty() {
                    self.accept(i);
                }
            }
            self.expire();
        }
    }

    fn accept(&mut self, i: usize) {
        loop {
            let (s, _peer) = match self.listeners[i].accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE/ENFILE and the like: the backlog keeps the client until we can.
                    log::warn!("http: accept failed: {e}");
                    return;
                }
            };
            if self.stats.open.load(Ordering::Relaxed) >= self.limits.max_connections {
                // Evict the connection that has waited longest for its head; if every
                // connection is busy (being answered or streaming), refuse the new one.
                match self
                    .waiting
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, w)| w.since)
                    .map(|(i, _)| i)
                {
                    Some(old) => {
                        let w = self.waiting.swap_remove(old);
                        self.stats.reject(Rejected::Limit);
                        drop(w);
                    }
                    None => {
                        self.stats.reject(Rejected::Limit);
                        let _ = s.set_nonblocking(true);
                        let _ = (&s).write(RESP_503);
                        continue;
                    }
                }
            }
            if s.set_nonblocking(true).is_err() {
                continue;
            }
            let _ = s.set_nodelay(true);
            self.stats.open.fetch_add(1, Ordering::Relaxed);
            let web = self.web.current();
            let t = match &web.tls {
                Some(cfg) => match rustls::ServerConnection::new(cfg.clone()) {
                    Ok(c) => Transport::Tls(s, Box::new(c)),
                    Err(e) => {
                        log::error!("http: TLS session: {e}");
                        self.stats.open.fetch_sub(1, Ordering::Relaxed);
                        continue;
                    }
                },
                None => Transport::Plain(s),
            };
            let handshaking = matches!(t, Transport::Tls(..));
            let now = Instant::now();
            self.waiting.push(Waiting {
                conn: Conn {
                    t,
                    buf: Vec::new(),
                    served: 0,
                    write_timeout: self.limits.write_timeout,
                    deadline: None,
                    stats: self.stats.clone(),
                },
                since: now,
                deadline: now + self.limits.header_timeout,
                idle: false,
                want_write: false,
                handshaking,
            });
        }
    }

    fn progress(&mut self, ready: &[usize]) {
        // Highest index first, so swap_remove keeps the lower indexes valid.
        for &i in ready.iter().rev() {
            let max = self.limits.max_header_bytes;
            let header_timeout = self.limits.header_timeout;
            let w = &mut self.waiting[i];
            let r = read_some(w, max);
            if w.idle && !w.conn.buf.is_empty() {
                // The next request has begun: it has the header timeout to arrive.
                w.idle = false;
                w.deadline = w.deadline.min(Instant::now() + header_timeout);
            }
            match r {
                Progress::More => {}
                Progress::Closed => {
                    drop(self.waiting.swap_remove(i));
                }
                Progress::Fail(resp, why) => {
                    let w = self.waiting.swap_remove(i);
                    fail(w.conn, resp, why);
                }
                Progress::Head(req) => {
                    let w = self.waiting.swap_remove(i);
                    self.dispatch(w.conn, req);
                }
            }
        }
    }

    fn dispatch(&mut self, conn: Conn, req: Request) {
        let path = req.path().to_string();
        if self.handler.is_collection(&path) && self.limits.max_requests > 0 {
            let n = self.stats.metrics_inflight.fetch_add(1, Ordering::Relaxed);
            if n >= self.limits.max_requests {
                self.stats.metrics_inflight.fetch_sub(1, Ordering::Relaxed);
                self.stats.count(self.handler.handler_name(&path), 503);
                fail(conn, Some(RESP_503), Rejected::Limit);
                return;
            }
        }
        match self.work.try_send((conn, req)) {
            Ok(()) => {}
            Err(TrySendError::Full((conn, req))) | Err(TrySendError::Disconnected((conn, req))) => {
                if self.handler.is_collection(req.path()) && self.limits.max_requests > 0 {
                    self.stats.metrics_inflight.fetch_sub(1, Ordering::Relaxed);
                }
                self.stats.count(self.handler.handler_name(req.path()), 503);
                fail(conn, Some(RESP_503), Rejected::Limit);
            }
        }
    }

    fn expire(&mut self) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.waiting.len() {
            if self.waiting[i].deadline <= now {
                let w = self.waiting.swap_remove(i);
                // An idle keep-alive connection closing is normal, not a rejection.
                if !(w.idle && w.conn.served > 0) {
                    self.stats.reject(Rejected::Timeout);
                }
                drop(w);
            } else {
                i += 1;
            }
        }
    }
}

/// Answer (best effort, without blocking) and close.
fn fail(mut conn: Conn, resp: Option<&'static [u8]>, why: Rejected) {
    conn.stats.reject(why);
    if let Some(r) = resp {
        match &mut conn.t {
            Transport::Plain(s) => {
                let _ = s.write(r);
            }
            Transport::Tls(s, c) => {
                let _ = c.writer().write_all(r);
                let _ = c.write_tls(s);
            }
        }
    }
}

/// Read what is there without blocking, then try to parse a head.
fn read_some(w: &mut Waiting, max: usize) -> Progress {
    let mut chunk = [0u8; 4096];
    match &mut w.conn.t {
        Transport::Plain(s) => loop {
            match s.read(&mut chunk) {
                Ok(0) => return Progress::Closed,
                Ok(n) => {
                    w.conn.buf.extend_from_slice(&chunk[..n]);
                    if w.conn.buf.len() > max {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Progress::Closed,
            }
        },
        Transport::Tls(s, c) => {
            loop {
                if c.wants_read() {
                    match c.read_tls(s) {
                        Ok(0) => return Progress::Closed,
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => return Progress::Closed,
                    }
                }
                if let Err(e) = c.process_new_packets() {
                    let plaintext_http =
                        w.handshaking && matches!(e, rustls::Error::InvalidMessage(_));
                    if plaintext_http {
                        // A plain HTTP client on the TLS port: tell it in its own protocol.
                        let _ = s.write(RESP_PLAIN_TO_TLS);
                    } else {
                        // Send the alert rustls queued, then close.
                        let _ = c.write_tls(s);
                    }
                    log::debug!("http: TLS: {e}");
                    return Progress::Fail(None, Rejected::Tls);
                }
                let mut got = false;
                loop {
                    match c.reader().read(&mut chunk) {
                        Ok(0) => return Progress::Closed,
                        Ok(n) => {
                            got = true;
                            w.conn.buf.extend_from_slice(&chunk[..n]);
                            if w.conn.buf.len() > max {
                                break;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => return Progress::Closed,
                    }
                }
                while c.wants_write() {
                    match c.write_tls(s) {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => return Progress::Closed,
                    }
                }
                w.want_write = c.wants_write();
                if w.handshaking && !c.is_handshaking() {
                    w.handshaking = false;
                }
                // More records may wait in the socket: go on while reads give plaintext.
                if !got || w.conn.buf.len() > max {
                    break;
                }
            }
            if w.handshaking {
                return Progress::More;
            }
        }
    }
    try_head(w, max)
}

fn try_head(w: &mut Waiting, max: usize) -> Progress {
    if w.conn.buf.is_empty() {
        return Progress::More;
    }
    match parse_head(&mut w.conn.buf, max) {
        Ok(Some(r)) => Progress::Head(r),
        Ok(None) => Progress::More,
        Err((resp, why)) => {
            log::debug!("http: {why}");
            Progress::Fail(Some(resp), Rejected::BadRequest)
        }
    }
}

fn status_text(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// A response head: status, the handler's headers, the web config's security headers, framing.
fn head(
    req: &Request,
    resp: &Response,
    extra: &[(String, String)],
    framing: &str,
    keep: bool,
) -> Vec<u8> {
    let mut h = format!(
        "HTTP/1.{} {} {}\r\n",
        req.version,
        resp.status,
        status_text(resp.status)
    );
    for (k, v) in resp.headers.iter().chain(extra) {
        h.push_str(k);
        h.push_str(": ");
        h.push_str(v);
        h.push_str("\r\n");
    }
    h.push_str(framing);
    h.push_str(if keep {
        if req.version == 0 {
            "Connection: keep-alive\r\n"
        } else {
            ""
        }
    } else {
        "Connection: close\r\n"
    });
    h.push_str("\r\n");
    h.into_bytes()
}

/// Write a response; returns whether the connection may be kept.
fn write_response(
    conn: &mut Conn,
    req: &Request,
    resp: Response,
    web: &WebConfig,
    keep: bool,
) -> io::Result<bool> {
    let head_only = req.method == "HEAD";
    match resp.body {
        Body::Bytes(ref b) => {
            let framing = format!("Content-Length: {}\r\n", b.len());
            let mut out = head(req, &resp, &web.headers, &framing, keep);
            if !head_only {
                out.extend_from_slice(b);
            }
            conn.write_all(&out)?;
            Ok(keep)
        }
        Body::Reader(_, len) => {
            let (framing, keep) = match (len, req.version) {
                (Some(n), _) => (format!("Content-Length: {n}\r\n"), keep),
                (None, 1) => ("Transfer-Encoding: chunked\r\n".to_string(), keep),
                (None, _) => (String::new(), false),
            };
            let chunked = len.is_none() && req.version == 1;
            let h = head(req, &resp, &web.headers, &framing, keep);
            let Body::Reader(mut r, _) = resp.body else {
                unreachable!()
            };
            if head_only {
                conn.write_all(&h)?;
                return Ok(keep);
            }
            // The head goes out with the first piece of the body (one write for small pages).
            let mut pending = h;
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = match r.read(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                if chunked {
                    pending.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                    pending.extend_from_slice(&buf[..n]);
                    pending.extend_from_slice(b"\r\n");
                } else {
                    pending.extend_from_slice(&buf[..n]);
                }
                conn.write_all(&pending)?;
                pending.clear();
                if n == 0 {
                    break;
                }
            }
            Ok(keep)
        }
    }
}

fn worker(
    rx: Receiver<(Conn, Request)>,
    back: Sender<Conn>,
    wake: Arc<UnixStream>,
    handler: Arc<dyn Handler>,
    web: Arc<Watched>,
    stats: Arc<Stats>,
    limits: Limits,
) {
    while let Ok((conn, req)) = rx.recv() {
        let path = req.path().to_string();
        let collection = handler.is_collection(&path) && limits.max_requests > 0;
        let web = web.current();
        let kept = serve_one(conn, &req, &*handler, &web, &stats, &limits);
        if collection {
            stats.metrics_inflight.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(mut conn) = kept {
            conn.served += 1;
            conn.deadline = None;
            if conn.stream().set_nonblocking(true).is_ok() && back.try_send(conn).is_ok() {
                let _ = (&*wake).write(&[1]);
            }
        }
    }
}

/// Answer one request; returns the connection when it is kept alive.
fn serve_one(
    mut conn: Conn,
    req: &Request,
    handler: &dyn Handler,
    web: &WebConfig,
    stats: &Stats,
    limits: &Limits,
) -> Option<Conn> {
    let name = handler.handler_name(req.path());
    if conn.set_blocking(limits.write_timeout).is_err() {
        return None;
    }
    // The whole response within one write timeout; streams set their own per write.
    conn.deadline = Some(Instant::now() + limits.write_timeout);
    let keep = req.keep_alive();
    // A verified client certificate must carry an allowed name (client_allowed_sans).
    if let Transport::Tls(_, c) = &conn.t {
        if !web.allowed_sans.is_empty() {
            let ok = c
                .peer_certificates()
                .and_then(|certs| certs.first())
                .is_some_and(|cert| crate::web_config::client_san_allowed(cert, &web.allowed_sans));
            if !ok {
                stats.reject(Rejected::Auth);
                stats.count(name, 403);
                let r = Response::text(
                    403,
                    "client certificate names none of client_allowed_sans\n",
                );
                let _ = write_response(&mut conn, req, r, web, false);
                return None;
            }
        }
    }
    if web.auth_required() && !web.authorize(req.header("Authorization")) {
        stats.reject(Rejected::Auth);
        stats.count(name, 401);
        let r = Response::text(401, "Unauthorized\n").with_header("WWW-Authenticate", "Basic");
        return match write_response(&mut conn, req, r, web, keep) {
            Ok(true) => Some(conn),
            _ => None,
        };
    }
    // A handler that panics answers 500 and leaves the worker serving (the panic is logged by
    // the panic hook); a worker lost per panic would shrink the fixed pool.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.handle(req)))
        .unwrap_or_else(|_| Outcome::Respond(Response::text(500, "internal error\n")));
    match outcome {
        Outcome::Respond(r) => {
            stats.count(name, r.status);
            match write_response(&mut conn, req, r, web, keep) {
                Ok(true) => Some(conn),
                Ok(false) => None,
                Err(e) => {
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) {
                        stats.reject(Rejected::Timeout);
                    }
                    None
                }
            }
        }
        Outcome::Stream(f) => {
            stats.count(name, 200);
            conn.deadline = None;
            f(conn, web.headers.clone());
            None
        }
    }
}

impl Conn {
    /// The server's figures (a stream writer counts its own timeouts).
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

/// Count a stream writer cut off by its write timeout.
pub fn stream_timed_out(stats: &Stats) {
    stats.reject(Rejected::Timeout);
}

/// Count a stream refused (too many clients).
pub fn stream_refused(stats: &Stats) {
    stats.reject(Rejected::Limit);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &[u8]) -> Result<Option<Request>, &'static str> {
        let mut b = s.to_vec();
        parse_head(&mut b, 1024).map_err(|(_, why)| why)
    }

    #[test]
    fn heads() {
        let r = parse(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.method.as_str(), r.path(), r.query(), r.version),
            ("GET", "/metrics", "x=1", 1)
        );
        assert_eq!(r.header("accept-encoding"), Some("gzip"));
        assert!(r.keep_alive());
        let r = parse(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!r.keep_alive());
        let r = parse(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(r.keep_alive());
        assert!(
            parse(b"GET / HTTP/1.1\r\nHost: a\r\n").unwrap().is_none(),
            "partial"
        );
        assert_eq!(parse(b"GARBAGE\r\n\r\n").unwrap_err(), "malformed request");
        assert_eq!(
            parse(b"GET / HTTP/2.0\r\n\r\n").unwrap_err(),
            "unsupported HTTP version"
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\n\r\n").unwrap_err(),
            "HTTP/1.1 request without Host"
        );
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello").unwrap_err(),
            "request with a body"
        );
        assert_eq!(parse(&[b'a'; 2000]).unwrap_err(), "request head too large");
        assert_eq!(
            parse(b"\x01\x02 / HTTP/1.1\r\n\r\n").unwrap_err(),
            "malformed request"
        );
        let mut big = b"GET / HTTP/1.1\r\nHost: a\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'y', 2000));
        assert_eq!(parse(&big).unwrap_err(), "request head too large");
        let mut many = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 0..MAX_HEADERS {
            many.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        let mut b = many.clone();
        assert_eq!(
            parse_head(&mut b, 1 << 20).unwrap_err().1,
            "too many headers"
        );
    }

    #[test]
    fn pipelined_heads_come_one_by_one() {
        let mut b =
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\nGET /c".to_vec();
        assert_eq!(parse_head(&mut b, 1024).unwrap().unwrap().path(), "/a");
        assert_eq!(parse_head(&mut b, 1024).unwrap().unwrap().path(), "/b");
        assert!(parse_head(&mut b, 1024).unwrap().is_none());
        assert_eq!(b, b"GET /c");
    }
}
