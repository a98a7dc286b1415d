//! The HTTP endpoint: `/metrics` (text format 0.0.4, gzip when asked), `/` and `/-/healthy`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tiny_http::{Header, Method, Request, Response, Server};

use crate::engine::Engine;
use crate::events::Pipeline;
use crate::model::PageReader;

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

/// Bind the first address that works (`[::]` is dual-stack; `0.0.0.0` where IPv6 is off).
pub fn bind(addrs: &[SocketAddr]) -> Result<Server, String> {
    let mut last = String::new();
    for a in addrs {
        match Server::http(a) {
            Ok(s) => return Ok(s),
            Err(e) => last = format!("cannot listen on {a}: {e}"),
        }
    }
    Err(last)
}

/// Serve requests on `threads` threads; returns when the server is dropped elsewhere (never,
/// in practice: the process exits on SIGTERM).
pub fn serve(
    server: Arc<Server>,
    engine: Arc<Engine>,
    threads: usize,
) -> Vec<std::thread::JoinHandle<()>> {
    serve_with_events(server, engine, threads, None)
}

/// [`serve`], plus `/events` when there is an event pipeline.
pub fn serve_with_events(
    server: Arc<Server>,
    engine: Arc<Engine>,
    threads: usize,
    events: Option<Arc<Pipeline>>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..threads)
        .map(|i| {
            let server = server.clone();
            let engine = engine.clone();
            let events = events.clone();
            std::thread::Builder::new()
                .name(format!("http-{i}"))
                .spawn(move || {
                    while let Ok(req) = server.recv() {
                        if req.url() == "/events" || req.url().starts_with("/events?") {
                            events_stream(req, events.as_ref());
                            continue;
                        }
                        handle(req, &engine);
                    }
                })
                .expect("spawning HTTP threads at start-up")
        })
        .collect()
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes())
        .expect("static header names and values are valid")
}

fn find_header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers()
        .iter()
        .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
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

const LANDING: &str = "<!DOCTYPE html>\n<html><head><title>netsleuth</title></head><body>\n<h1>netsleuth</h1>\n<p>Network observability per network namespace.</p>\n<ul><li><a href=\"metrics\">Metrics</a></li><li><a href=\"-/healthy\">Health</a></li></ul>\n</body></html>\n";

fn handle(req: Request, engine: &Engine) {
    let path = req.url().split('?').next().unwrap_or("").to_string();
    let method = req.method().clone();
    if method != Method::Get && method != Method::Head {
        let _ = req.respond(
            Response::from_string("method not allowed\n")
                .with_status_code(405)
                .with_header(header("Allow", "GET, HEAD")),
        );
        return;
    }
    match path.as_str() {
        "/metrics" => {
            let budget = scrape_budget(find_header(&req, "X-Prometheus-Scrape-Timeout-Seconds"));
            let gzip = find_header(&req, "Accept-Encoding").is_some_and(accepts_gzip);
            let page = engine.scrape(budget);
            // Stream the page: the text of a large node never sits in memory whole, and gzip
            // compresses as it reads. Uncompressed, its length is known: sent with a
            // Content-Length in large writes instead of 8 KiB chunks (half the syscalls).
            let length = (!gzip).then(|| page.rendered_len());
            let reader = PageReader::new(page);
            let mut resp_headers = vec![header("Content-Type", CONTENT_TYPE)];
            let body: Box<dyn std::io::Read + Send> = if gzip {
                resp_headers.push(header("Content-Encoding", "gzip"));
                Box::new(flate2::read::GzEncoder::new(
                    reader,
                    flate2::Compression::fast(),
                ))
            } else {
                Box::new(reader)
            };
            let _ = req.respond(
                Response::new(tiny_http::StatusCode(200), resp_headers, body, length, None)
                    .with_chunked_threshold(usize::MAX),
            );
            // The page's pieces were just freed (unless another scrape still streams them).
            crate::sys::release_free_memory();
        }
        "/" => {
            let _ = req.respond(
                Response::from_string(LANDING)
                    .with_header(header("Content-Type", "text/html; charset=utf-8")),
            );
        }
        "/-/healthy" => {
            let _ = req.respond(
                Response::from_string("OK\n")
                    .with_header(header("Content-Type", "text/plain; charset=utf-8")),
            );
        }
        _ => {
            let _ = req.respond(Response::from_string("not found\n").with_status_code(404));
        }
    }
}

/// Threads writing `/events` streams.
static STREAM_WRITERS: AtomicUsize = AtomicUsize::new(0);

/// `/events`: the live stream, NDJSON (`application/x-ndjson`), or SSE when the client sends
/// `Accept: text/event-stream`; filters `?type=A,B&k8s_namespace=x`. Each client gets its own
/// thread and a bounded queue: a client that falls behind is cut off, never buffered for.
fn events_stream(req: Request, events: Option<&Arc<Pipeline>>) {
    use std::io::Write as _;
    let Some(p) = events else {
        let _ = req.respond(Response::from_string("no event pipeline\n").with_status_code(404));
        return;
    };
    if *req.method() != Method::Get {
        let _ = req.respond(
            Response::from_string("method not allowed\n")
                .with_status_code(405)
                .with_header(header("Allow", "GET")),
        );
        return;
    }
    let query = req.url().split_once('?').map(|(_, q)| q).unwrap_or("");
    let filter = match crate::events::stream::Filter::from_query(query) {
        Ok(f) => f,
        Err(e) => {
            let _ = req.respond(Response::from_string(format!("{e}\n")).with_status_code(400));
            return;
        }
    };
    let sse = find_header(&req, "Accept").is_some_and(|a| a.contains("text/event-stream"));
    // A client cut off while its socket is stalled keeps its writer thread blocked until the
    // peer goes away (tiny_http gives no socket timeout): bound those threads too.
    if STREAM_WRITERS.load(Ordering::Relaxed) >= 2 * crate::events::stream::MAX_CLIENTS {
        let _ = req
            .respond(Response::from_string("too many /events connections\n").with_status_code(503));
        return;
    }
    let Some(client) = p
        .streams
        .subscribe(filter, crate::events::stream::CLIENT_QUEUE)
    else {
        let _ =
            req.respond(Response::from_string("too many /events clients\n").with_status_code(503));
        return;
    };
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
            let mut w = req.into_writer();
            let ctype = if sse {
                "text/event-stream"
            } else {
                "application/x-ndjson"
            };
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\nConnection: close\r\n\r\n"
            );
            if w.write_all(head.as_bytes()).and_then(|()| w.flush()).is_err() {
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
                if w.write_all(&buf).and_then(|()| w.flush()).is_err() {
                    return;
                }
            }
        });
    if let Err(e) = r {
        STREAM_WRITERS.fetch_sub(1, Ordering::Relaxed);
        log::error!("cannot start an /events thread: {e}");
    }
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
