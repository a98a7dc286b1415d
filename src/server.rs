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
//!
//! Parts: `http1` (request heads, responses, their framing), `conn` (a connection, plain or
//! TLS), `reactor` (accepting, handshakes, heads under deadlines, the connection cap),
//! `worker` (answering: client-certificate names, basic auth, the handler, keep-alive).

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::bounded;

use crate::web_config::Watched;

mod conn;
mod http1;
mod reactor;
mod worker;

pub use conn::Conn;
pub use http1::{parse_head, Body, Request, Response};

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
            .spawn(move || worker::worker(rx, back, wake, handler, web, stats, limits))?;
    }
    let reactor = reactor::Reactor {
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

/// Count a stream writer cut off by its write timeout.
pub fn stream_timed_out(stats: &Stats) {
    stats.reject(Rejected::Timeout);
}

/// Count a stream refused (too many clients).
pub fn stream_refused(stats: &Stats) {
    stats.reject(Rejected::Limit);
}
