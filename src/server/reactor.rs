//! The reactor: one thread that owns every connection between requests. With `poll(2)` it
//! accepts, runs TLS handshakes and reads request heads without blocking, each under a deadline;
//! a complete head goes to the workers, a kept-alive connection comes back.

use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::conn::Transport;
use super::http1::{parse_head, RESP_503, RESP_PLAIN_TO_TLS};
use super::{Conn, Handler, Limits, Rejected, Request, Stats};
use crate::web_config::Watched;

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

pub(super) struct Waiting {
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

pub(super) struct Reactor {
    pub(super) listeners: Vec<TcpListener>,
    pub(super) wake: UnixStream,
    pub(super) work: Sender<(Conn, Request)>,
    pub(super) back: Receiver<Conn>,
    pub(super) waiting: Vec<Waiting>,
    pub(super) stats: Arc<Stats>,
    pub(super) web: Arc<Watched>,
    pub(super) handler: Arc<dyn Handler>,
    pub(super) limits: Limits,
}

impl Reactor {
    pub(super) fn run(mut self) {
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
