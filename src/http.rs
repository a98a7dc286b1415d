//! The HTTP endpoints: `/metrics` (text format 0.0.4, or the delimited protobuf exposition
//! with native histograms when the scraper prefers it; gzip when asked), `/events`, `/status`
//! (what runs, [`crate::status`]), `/` (the status page, [`crate::statuspage`]) and `/-/healthy`. The connections, TLS, auth and limits are [`crate::server`]'s.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::engine::Engine;
use crate::events::Pipeline;
use crate::model::PageReader;
use crate::server::{Body, Conn, Handler, Outcome, Request, Response};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Resolve a Prometheus-style listen address: `:9102` means every address (IPv6 and IPv4).
pub fn parse_listen_address(s: &str) -> Result<Vec<SocketAddr>, String> {
    let s = s.trim();
    if let Some(port) = s.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("invalid port in listen address `{s}`"))?;
        return Ok(vec![
            SocketAddr::from(([0u16; 8], port)),
            SocketAddr::from(([0u8; 4], port)),
        ]);
    }
    let addrs: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| format!("invalid listen address `{s}`: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("listen address `{s}` resolves to nothing"));
    }
    Ok(addrs)
}

/// Whether an `Accept-Encoding` value accepts gzip (and does not refuse it with q=0).
pub fn accepts_gzip(v: &str) -> bool {
    v.split(',').any(|part| {
        let mut it = part.split(';');
        let coding = it.next().unwrap_or("").trim();
        if !coding.eq_ignore_ascii_case("gzip") {
            return false;
        }
        !it.any(|p| {
            let p = p.trim();
            p.strip_prefix("q=")
                .and_then(|q| q.parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        })
    })
}

/// The scraper's timeout (`X-Prometheus-Scrape-Timeout-Seconds`), less a margin for rendering
/// and transfer.
pub fn scrape_budget(v: Option<&str>) -> Option<Duration> {
    let secs: f64 = v?.trim().parse().ok()?;
    if !secs.is_finite() || secs <= 0.0 {
        return None;
    }
    let margin = (secs * 0.1).clamp(0.05, 0.5);
    Some(Duration::from_secs_f64((secs - margin).max(0.05)))
}

/// The exporter's endpoints, served by [`crate::server`].
pub struct App {
    pub engine: Arc<Engine>,
    pub events: Option<Arc<Pipeline>>,
    /// What `/status` reports: the probes and sinks now configured and running.
    pub status: Arc<crate::status::StatusBoard>,
    /// The samples the status page's rates come from.
    pub history: crate::statuspage::History,
}

impl Handler for App {
    fn handle(&self, req: &Request) -> Outcome {
        if req.path() == "/events" {
            return events_stream(req, self.events.as_ref());
        }
        if req.path() == "/status" {
            if req.method != "GET" && req.method != "HEAD" {
                return Outcome::Respond(method_not_allowed("GET, HEAD"));
            }
            let doc = self.status.to_json(self.events.as_deref());
            let mut body = serde_json::to_vec_pretty(&doc).unwrap_or_default();
            body.push(b'\n');
            return Outcome::Respond(Response {
                status: 200,
                headers: vec![("Content-Type".into(), "application/json".into())],
                body: Body::Bytes(body),
            });
        }
        if req.path() == "/" && (req.method == "GET" || req.method == "HEAD") {
            let html = crate::statuspage::page(
                &self.engine,
                &self.status,
                self.events.as_deref(),
                &self.history,
            );
            return Outcome::Respond(Response {
                status: 200,
                headers: vec![
                    ("Content-Type".into(), "text/html; charset=utf-8".into()),
                    ("Cache-Control".into(), "no-store".into()),
                ],
                body: Body::Bytes(html.into_bytes()),
            });
        }
        Outcome::Respond(handle(req, &self.engine, &self.history))
    }

    fn handler_name(&self, path: &str) -> &'static str {
        match path {
            "/metrics" => "metrics",
            "/events" => "events",
            "/status" => "status",
            "/" => "landing",
            "/-/healthy" => "healthy",
            _ => "other",
        }
    }

    fn is_collection(&self, path: &str) -> bool {
        // The status page collects too (twice, 1 s apart, on a first load).
        path == "/metrics" || path == "/"
    }
}

fn method_not_allowed(allow: &str) -> Response {
    Response::text(405, "method not allowed\n").with_header("Allow", allow)
}

fn handle(req: &Request, engine: &Engine, history: &crate::statuspage::History) -> Response {
    if req.method != "GET" && req.method != "HEAD" {
        return method_not_allowed("GET, HEAD");
    }
    match req.path() {
        "/metrics" => {
            let budget = scrape_budget(req.header("X-Prometheus-Scrape-Timeout-Seconds"));
            let gzip = req.header("Accept-Encoding").is_some_and(accepts_gzip);
            let protobuf = req
                .header("Accept")
                .is_some_and(crate::model::protobuf::accept_prefers_protobuf);
            let page = engine.scrape(budget);
            history.observe_scrape(&page);
            if protobuf {
                return protobuf_response(page, gzip);
            }
            // Stream the page: the text of a large node never sits in memory whole, and gzip
            // compresses as it reads. Uncompressed, its length is known and goes in
            // Content-Length.
            let length = (!gzip).then(|| page.rendered_len());
            let reader = PageReader::new(page);
            let mut headers = vec![
                ("Content-Type".to_string(), CONTENT_TYPE.to_string()),
                ("Vary".to_string(), "Accept, Accept-Encoding".to_string()),
            ];
            let body: Box<dyn std::io::Read + Send> = if gzip {
                headers.push(("Content-Encoding".into(), "gzip".into()));
                Box::new(Released::new(flate2::read::GzEncoder::new(
                    reader,
                    flate2::Compression::fast(),
                )))
            } else {
                Box::new(Released::new(reader))
            };
            Response {
                status: 200,
                headers,
                body: Body::Reader(body, length),
            }
        }
        "/-/healthy" => Response::text(200, "OK\n"),
        _ => Response::text(404, "not found\n"),
    }
}

/// `/metrics` in the delimited protobuf exposition, native histograms included
/// ([`crate::model::protobuf`]), streamed a family at a time like the text page (so sent
/// chunked: the length is known only at the end).
fn protobuf_response(page: std::sync::Arc<crate::model::Page>, gzip: bool) -> Response {
    let mut headers = vec![
        (
            "Content-Type".to_string(),
            crate::model::protobuf::CONTENT_TYPE.to_string(),
        ),
        ("Vary".to_string(), "Accept, Accept-Encoding".to_string()),
    ];
    let reader = Released::new(crate::model::protobuf::ProtobufReader::new(page));
    let body: Box<dyn std::io::Read + Send> = if gzip {
        headers.push(("Content-Encoding".into(), "gzip".into()));
        Box::new(flate2::read::GzEncoder::new(
            reader,
            flate2::Compression::fast(),
        ))
    } else {
        Box::new(reader)
    };
    Response {
        status: 200,
        headers,
        body: Body::Reader(body, None),
    }
}

/// A page reader that gives the page's memory back to the system once the page is sent.
struct Released<R>(Option<R>);

impl<R> Released<R> {
    fn new(r: R) -> Released<R> {
        Released(Some(r))
    }
}

impl<R: std::io::Read> std::io::Read for Released<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match &mut self.0 {
            Some(r) => r.read(buf),
            None => Ok(0),
        }
    }
}

impl<R> Drop for Released<R> {
    fn drop(&mut self) {
        // The reader first, so the page's pieces are freed (unless another scrape still sends
        // them) before the allocator's free memory goes back to the system: a field is dropped
        // only after its owner's `drop`, which trimmed before the page was gone.
        drop(self.0.take());
        crate::sys::release_free_memory();
    }
}

/// Threads writing `/events` streams.
static STREAM_WRITERS: AtomicUsize = AtomicUsize::new(0);

/// `/events`: the live stream, NDJSON (`application/x-ndjson`), or SSE when the client sends
/// `Accept: text/event-stream`; filters `?type=A,B&k8s_namespace=x`. Each client gets its own
/// thread and a bounded queue: a client that falls behind is cut off, never buffered for, and
/// one that stops reading is cut off by the server's write timeout.
fn events_stream(req: &Request, events: Option<&Arc<Pipeline>>) -> Outcome {
    let Some(p) = events else {
        return Outcome::Respond(Response::text(404, "no event pipeline\n"));
    };
    if req.method != "GET" {
        return Outcome::Respond(method_not_allowed("GET"));
    }
    let filter = match crate::events::stream::Filter::from_query(req.query()) {
        Ok(f) => f,
        Err(e) => return Outcome::Respond(Response::text(400, format!("{e}\n"))),
    };
    let sse = req
        .header("Accept")
        .is_some_and(|a| a.contains("text/event-stream"));
    // Writers of clients already cut off finish within the write timeout; bound them too.
    if STREAM_WRITERS.load(Ordering::Relaxed) >= 2 * crate::events::stream::MAX_CLIENTS {
        return Outcome::Respond(Response::text(503, "too many /events connections\n"));
    }
    let Some(client) = p
        .streams
        .subscribe(filter, crate::events::stream::CLIENT_QUEUE)
    else {
        return Outcome::Respond(Response::text(503, "too many /events clients\n"));
    };
    let version = req.version;
    Outcome::Stream(Box::new(
        move |mut conn: Conn, extra: Vec<(String, String)>| {
            STREAM_WRITERS.fetch_add(1, Ordering::Relaxed);
            let r = std::thread::Builder::new()
            .name("http-events".into())
            .spawn(move || {
                struct Done;
                impl Drop for Done {
                    fn drop(&mut self) {
                        STREAM_WRITERS.fetch_sub(1, Ordering::Relaxed);
                    }
                }
                let _done = Done;
                let ctype = if sse {
                    "text/event-stream"
                } else {
                    "application/x-ndjson"
                };
                let mut head = format!(
                    "HTTP/1.{version} 200 OK\r\nContent-Type: {ctype}\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\nConnection: close\r\n"
                );
                for (k, v) in &extra {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                if conn.write_all(head.as_bytes()).is_err() {
                    return;
                }
                let mut buf = Vec::with_capacity(4096);
                loop {
                    buf.clear();
                    match client.rx.recv_timeout(Duration::from_secs(15)) {
                        Ok(ev) => {
                            let put = |ev: &crate::events::Event, buf: &mut Vec<u8>| {
                                if sse {
                                    buf.extend_from_slice(b"event: ");
                                    buf.extend_from_slice(ev.kind.as_bytes());
                                    buf.extend_from_slice(b"\ndata: ");
                                }
                                let _ = serde_json::to_writer(&mut *buf, &ev.to_json());
                                buf.extend_from_slice(if sse { b"\n\n" } else { b"\n" });
                            };
                            put(&ev, &mut buf);
                            for ev in client.rx.try_iter().take(256) {
                                put(&ev, &mut buf);
                            }
                        }
                        // Keep-alive (SSE comment): finds clients that went away.
                        Err(crossbeam_channel::RecvTimeoutError::Timeout) if sse => {
                            buf.extend_from_slice(b": keep-alive\n\n")
                        }
                        Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
                        // Cut off (too slow) or the exporter is stopping.
                        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
                    }
                    if let Err(e) = conn.write_all(&buf) {
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) {
                            crate::server::stream_timed_out(conn.stats());
                        }
                        return;
                    }
                }
            });
            if let Err(e) = r {
                STREAM_WRITERS.fetch_sub(1, Ordering::Relaxed);
                log::error!("cannot start an /events thread: {e}");
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(parse_listen_address(":9102").unwrap().len(), 2);
        assert_eq!(
            parse_listen_address("127.0.0.1:0").unwrap(),
            vec!["127.0.0.1:0".parse().unwrap()]
        );
        assert!(parse_listen_address(":x").is_err());
        assert!(parse_listen_address("nonsense").is_err());
    }

    #[test]
    fn gzip_negotiation() {
        assert!(accepts_gzip("gzip"));
        assert!(accepts_gzip("deflate, GZIP;q=0.5"));
        assert!(!accepts_gzip("gzip;q=0"));
        assert!(!accepts_gzip("identity"));
    }

    #[test]
    fn budget_from_header() {
        assert_eq!(
            scrape_budget(Some("10")),
            Some(Duration::from_secs_f64(9.5))
        );
        assert_eq!(
            scrape_budget(Some("0.5")),
            Some(Duration::from_secs_f64(0.45))
        );
        assert_eq!(scrape_budget(Some("-1")), None);
        assert_eq!(scrape_budget(Some("x")), None);
        assert_eq!(scrape_budget(None), None);
    }
}
