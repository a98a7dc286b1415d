//! The worker pool's side: one request answered with a write timeout (client-certificate
//! names, basic auth, the handler, a panic caught as 500), the connection handed back when kept.

use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use super::conn::Transport;
use super::http1::write_response;
use super::{Conn, Handler, Limits, Outcome, Rejected, Request, Response, Stats};
use crate::web_config::{Watched, WebConfig};

pub(super) fn worker(
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
