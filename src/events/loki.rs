//! The `loki` sink: `POST /loki/api/v1/push` with the JSON body
//! (`{"streams":[{"stream":{labels},"values":[["<ns>","<line>"]]}]}`), in batches by size and
//! time, retried with exponential backoff and jitter on 429, 5xx and connection errors (never
//! on other 4xx), with a bounded backlog: when Loki is away longer than the backlog lasts,
//! events are dropped and counted.
//!
//! Stream labels are few and bounded: `job`, `node`, `type`, `k8s_namespace` (when set). The
//! pod, the tuple and the rest go in the line (KubeSkoop's logfmt line, `| logfmt` in LogQL).
//!
//! The HTTP client is a small HTTP/1.1 POST over `std::net::TcpStream` (one connection per
//! batch, `Connection: close`): no TLS yet, so `https://` URLs are refused at config time.

use std::collections::VecDeque;
use std::io::{Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, UNIX_EPOCH};

use super::{DropReason, Event, EventSink, SinkCounters};

#[derive(Clone, Debug, PartialEq)]
pub struct LokiConfig {
    /// `http://host:port/loki/api/v1/push`.
    pub url: String,
    /// `X-Scope-OrgID`.
    pub tenant: Option<String>,
    pub basic_auth: Option<(String, String)>,
    pub bearer_token: Option<String>,
    /// The `job` label.
    pub job: String,
    /// The `node` label.
    pub node: String,
    /// Push when the batch reaches this many bytes of lines...
    pub batch_size: usize,
    /// ...or its oldest event is this old.
    pub batch_wait: Duration,
    /// Events held at most (batch and backlog together); beyond, new events are dropped.
    pub max_backlog: usize,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Attempts per batch before it is dropped (0: retry forever, the backlog bound still holds).
    pub max_retries: u32,
    pub timeout: Duration,
}

impl LokiConfig {
    pub fn new(url: impl Into<String>) -> LokiConfig {
        LokiConfig {
            url: url.into(),
            tenant: None,
            basic_auth: None,
            bearer_token: None,
            job: "netsleuth".into(),
            node: default_node(),
            batch_size: 1 << 20,
            batch_wait: Duration::from_secs(1),
            max_backlog: 20_000,
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_retries: 10,
            timeout: Duration::from_secs(10),
        }
    }

    /// KubeSkoop's `addr`: `host` or `host:port` of Loki (port 3100 by default).
    pub fn url_from_addr(addr: &str) -> String {
        let has_port = match addr.rsplit_once(':') {
            Some((h, p)) => p.parse::<u16>().is_ok() && (!h.contains(':') || h.ends_with(']')),
            None => false,
        };
        if has_port {
            format!("http://{addr}/loki/api/v1/push")
        } else if addr.contains(':') && !addr.starts_with('[') {
            format!("http://[{addr}]:3100/loki/api/v1/push")
        } else {
            format!("http://{addr}:3100/loki/api/v1/push")
        }
    }
}

/// `NODE_NAME`, else the host name.
pub fn default_node() -> String {
    std::env::var("NODE_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default()
}

/// `http://host[:port][/path]`, split; the path defaults to `/loki/api/v1/push`.
pub fn parse_url(url: &str) -> Result<(String, u16, String), String> {
    if url.starts_with("https://") {
        return Err(format!(
            "`{url}`: https is not supported yet (no TLS in this build); use http:// or a local proxy"
        ));
    }
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("`{url}`: the URL must start with http://"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let path = if path.is_empty() || path == "/" {
        "/loki/api/v1/push".to_string()
    } else {
        path.to_string()
    };
    let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
        let (h, p) = h
            .split_once(']')
            .ok_or_else(|| format!("`{url}`: bad IPv6 host"))?;
        let port = match p.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| format!("`{url}`: bad port"))?,
            None => 80,
        };
        (h.to_string(), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse().map_err(|_| format!("`{url}`: bad port"))?,
            ),
            None => (hostport.to_string(), 80),
        }
    };
    if host.is_empty() {
        return Err(format!("`{url}`: no host"));
    }
    Ok((host, port, path))
}

/// One event waiting for Loki.
struct Entry {
    /// Index into `LokiSink::streams`.
    stream: usize,
    ts: u128,
    line: String,
}

pub struct LokiSink {
    cfg: LokiConfig,
    host: String,
    port: u16,
    path: String,
    /// Label sets seen (bounded: type × k8s namespace), as rendered JSON objects.
    streams: Vec<(String, String, String)>,
    pending: VecDeque<Entry>,
    pending_bytes: usize,
    /// When the oldest pending event arrived.
    oldest: Option<Instant>,
    /// No push before this (backoff).
    next_attempt: Option<Instant>,
    attempts: u32,
    rng: u64,
}

/// What a push came to.
enum Outcome {
    Ok,
    Retry(Option<Duration>, String),
    Reject(String),
}

impl LokiSink {
    pub fn new(cfg: LokiConfig) -> LokiSink {
        let (host, port, path) = parse_url(&cfg.url).unwrap_or_else(|e| {
            log::error!("loki sink: {e}");
            (String::new(), 0, String::new())
        });
        let seed = std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ u64::from(std::process::id());
        LokiSink {
            cfg,
            host,
            port,
            path,
            streams: Vec::new(),
            pending: VecDeque::new(),
            pending_bytes: 0,
            oldest: None,
            next_attempt: None,
            attempts: 0,
            rng: seed | 1,
        }
    }

    fn stream_of(&mut self, ev: &Event) -> usize {
        let ns = &ev.entity.k8s_namespace;
        if let Some(i) = self
            .streams
            .iter()
            .position(|(t, n, _)| *t == ev.kind && n == ns)
        {
            return i;
        }
        let mut labels = serde_json::Map::new();
        labels.insert("job".into(), self.cfg.job.clone().into());
        if !self.cfg.node.is_empty() {
            labels.insert("node".into(), self.cfg.node.clone().into());
        }
        labels.insert("type".into(), ev.kind.clone().into());
        if !ns.is_empty() {
            labels.insert("k8s_namespace".into(), ns.clone().into());
        }
        let rendered = serde_json::Value::Object(labels).to_string();
        self.streams.push((ev.kind.clone(), ns.clone(), rendered));
        self.streams.len() - 1
    }

    fn jitter(&mut self, d: Duration) -> Duration {
        // xorshift64: "equal jitter", half fixed and half random.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let frac = (self.rng >> 11) as f64 / (1u64 << 53) as f64;
        d / 2 + d.mul_f64(frac / 2.0)
    }

    fn backoff(&mut self) -> Duration {
        let exp = self.attempts.saturating_sub(1).min(20);
        let d = self
            .cfg
            .min_backoff
            .saturating_mul(1u32 << exp)
            .min(self.cfg.max_backoff);
        self.jitter(d)
    }

    /// The body of the next batch: up to `batch_size` bytes of lines, grouped by stream,
    /// each stream's values in time order. Returns the body and the number of events.
    fn next_body(&self) -> (Vec<u8>, usize) {
        let mut n = 0;
        let mut bytes = 0;
        for e in &self.pending {
            if n > 0 && bytes + e.line.len() > self.cfg.batch_size {
                break;
            }
            bytes += e.line.len();
            n += 1;
        }
        let mut by_stream: Vec<Vec<&Entry>> = vec![Vec::new(); self.streams.len()];
        for e in self.pending.iter().take(n) {
            by_stream[e.stream].push(e);
        }
        let mut body = Vec::with_capacity(bytes + n * 40 + 64);
        body.extend_from_slice(b"{\"streams\":[");
        let mut first = true;
        for (i, entries) in by_stream.iter_mut().enumerate() {
            if entries.is_empty() {
                continue;
            }
            entries.sort_by_key(|e| e.ts);
            if !first {
                body.push(b',');
            }
            first = false;
            body.extend_from_slice(b"{\"stream\":");
            body.extend_from_slice(self.streams[i].2.as_bytes());
            body.extend_from_slice(b",\"values\":[");
            for (j, e) in entries.iter().enumerate() {
                if j > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(format!("[\"{}\",", e.ts).as_bytes());
                let _ = serde_json::to_writer(&mut body, &e.line);
                body.push(b']');
            }
            body.extend_from_slice(b"]}");
        }
        body.extend_from_slice(b"]}");
        (body, n)
    }

    fn take(&mut self, n: usize, c: &SinkCounters) {
        for e in self.pending.drain(..n) {
            self.pending_bytes -= e.line.len();
        }
        self.oldest = if self.pending.is_empty() {
            None
        } else {
            Some(Instant::now())
        };
        c.backlog
            .store(self.pending.len() as u64, Ordering::Relaxed);
    }

    fn post(&self, body: &[u8]) -> Outcome {
        if self.port == 0 {
            return Outcome::Reject(format!("bad URL `{}`", self.cfg.url));
        }
        match self.post_io(body) {
            Ok((status, retry_after, text)) => match status {
                // 260: Loki's `block_ingestion_status_code`, accepted but not stored.
                260 => Outcome::Reject(format!("HTTP 260 (ingestion blocked): {text}")),
                200..=299 => Outcome::Ok,
                429 | 500..=599 => Outcome::Retry(retry_after, format!("HTTP {status}: {text}")),
                _ => Outcome::Reject(format!("HTTP {status}: {text}")),
            },
            Err(e) => Outcome::Retry(None, e.to_string()),
        }
    }

    fn post_io(&self, body: &[u8]) -> std::io::Result<(u16, Option<Duration>, String)> {
        let addrs: Vec<_> = (self.host.as_str(), self.port).to_socket_addrs()?.collect();
        let mut last = std::io::Error::other(format!("{} resolves to nothing", self.host));
        let mut conn = None;
        for a in &addrs {
            match TcpStream::connect_timeout(a, self.cfg.timeout.min(Duration::from_secs(5))) {
                Ok(s) => {
                    conn = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let mut s = conn.ok_or(last)?;
        s.set_write_timeout(Some(self.cfg.timeout))?;
        s.set_read_timeout(Some(self.cfg.timeout))?;
        let _ = s.set_nodelay(true);
        let host = if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: netsleuth/{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.path,
            env!("CARGO_PKG_VERSION"),
            body.len()
        );
        if let Some(t) = &self.cfg.tenant {
            head.push_str(&format!("X-Scope-OrgID: {t}\r\n"));
        }
        if let Some((u, p)) = &self.cfg.basic_auth {
            head.push_str(&format!(
                "Authorization: Basic {}\r\n",
                base64(format!("{u}:{p}").as_bytes())
            ));
        } else if let Some(t) = &self.cfg.bearer_token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        head.push_str("\r\n");
        let mut out = Vec::with_capacity(head.len() + body.len());
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(body);
        s.write_all(&out)?;
        let mut resp = Vec::new();
        s.take(64 * 1024).read_to_end(&mut resp)?;
        let text = String::from_utf8_lossy(&resp);
        let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.lines();
        let status: u16 = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other("no HTTP status line in the response"))?;
        let retry_after = lines
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("retry-after"))
            .and_then(|(_, v)| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        Ok((status, retry_after, rest.trim().chars().take(200).collect()))
    }

    /// Push batches while one is due and Loki takes them. `force`: push even a small batch.
    fn push(&mut self, c: &SinkCounters, force: bool) {
        loop {
            if self.pending.is_empty() {
                return;
            }
            let now = Instant::now();
            if self.next_attempt.is_some_and(|t| now < t) {
                return;
            }
            let due = force
                || self.pending_bytes >= self.cfg.batch_size
                || self
                    .oldest
                    .is_some_and(|t| now.duration_since(t) >= self.cfg.batch_wait)
                || self.attempts > 0;
            if !due {
                return;
            }
            let (body, n) = self.next_body();
            match self.post(&body) {
                Outcome::Ok => {
                    c.sent.fetch_add(n as u64, Ordering::Relaxed);
                    self.attempts = 0;
                    self.next_attempt = None;
                    self.take(n, c);
                }
                Outcome::Reject(why) => {
                    log::warn!("loki sink: batch of {n} events rejected ({why}); dropped");
                    c.failed.fetch_add(1, Ordering::Relaxed);
                    c.drop_events(DropReason::Rejected, n as u64);
                    self.attempts = 0;
                    self.next_attempt = None;
                    self.take(n, c);
                }
                Outcome::Retry(after, why) => {
                    c.failed.fetch_add(1, Ordering::Relaxed);
                    self.attempts += 1;
                    if self.cfg.max_retries > 0 && self.attempts > self.cfg.max_retries {
                        log::warn!(
                            "loki sink: {n} events dropped after {} attempts ({why})",
                            self.attempts
                        );
                        c.drop_events(DropReason::RetriesExhausted, n as u64);
                        self.attempts = 0;
                        self.next_attempt = None;
                        self.take(n, c);
                        continue;
                    }
                    let mut d = self.backoff();
                    if let Some(a) = after {
                        d = d.max(a.min(self.cfg.max_backoff));
                    }
                    log::debug!(
                        "loki sink: push failed ({why}); retry {} in {d:?}",
                        self.attempts
                    );
                    c.retried.fetch_add(1, Ordering::Relaxed);
                    self.next_attempt = Some(now + d);
                    return;
                }
            }
        }
    }
}

impl EventSink for LokiSink {
    fn name(&self) -> &str {
        "loki"
    }

    fn write(&mut self, ev: &Event, c: &SinkCounters) {
        if self.pending.len() >= self.cfg.max_backlog {
            c.drop_events(DropReason::BacklogFull, 1);
            return;
        }
        let stream = self.stream_of(ev);
        let ts = ev
            .time
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let line = ev.log_line();
        self.pending_bytes += line.len();
        self.pending.push_back(Entry { stream, ts, line });
        if self.oldest.is_none() {
            self.oldest = Some(Instant::now());
        }
        c.backlog
            .store(self.pending.len() as u64, Ordering::Relaxed);
        if self.pending_bytes >= self.cfg.batch_size {
            self.push(c, false);
        }
    }

    fn flush(&mut self, c: &SinkCounters) {
        self.push(c, false);
    }

    fn wait(&self) -> Duration {
        let now = Instant::now();
        let mut w = self.cfg.batch_wait.min(Duration::from_secs(1));
        if let Some(t) = self.next_attempt {
            w = w.min(t.saturating_duration_since(now));
        } else if let Some(o) = self.oldest {
            w = w.min((o + self.cfg.batch_wait).saturating_duration_since(now));
        }
        w.max(Duration::from_millis(5))
    }

    /// One last try per batch (no backoff), bounded by 5 s; the rest is counted as dropped.
    fn close(&mut self, c: &SinkCounters) {
        let deadline = Instant::now() + Duration::from_secs(5);
        self.next_attempt = None;
        while !self.pending.is_empty() && Instant::now() < deadline {
            let (body, n) = self.next_body();
            match self.post(&body) {
                Outcome::Ok => {
                    c.sent.fetch_add(n as u64, Ordering::Relaxed);
                    self.take(n, c);
                }
                Outcome::Reject(_) => {
                    c.failed.fetch_add(1, Ordering::Relaxed);
                    c.drop_events(DropReason::Rejected, n as u64);
                    self.take(n, c);
                }
                Outcome::Retry(..) => {
                    c.failed.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
        let left = self.pending.len();
        c.drop_events(DropReason::Shutdown, left as u64);
        self.take(left, c);
    }
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for ch in data.chunks(3) {
        let b = [ch[0], *ch.get(1).unwrap_or(&0), *ch.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= ch.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://loki:3100").unwrap(),
            ("loki".into(), 3100, "/loki/api/v1/push".into())
        );
        assert_eq!(
            parse_url("http://[::1]:8080/api/prom/push").unwrap(),
            ("::1".into(), 8080, "/api/prom/push".into())
        );
        assert_eq!(parse_url("http://h").unwrap().1, 80);
        assert!(parse_url("https://loki").unwrap_err().contains("TLS"));
        assert!(parse_url("loki:3100").is_err());
        assert_eq!(
            LokiConfig::url_from_addr("loki.monitoring"),
            "http://loki.monitoring:3100/loki/api/v1/push"
        );
        assert_eq!(
            LokiConfig::url_from_addr("10.0.0.1:3101"),
            "http://10.0.0.1:3101/loki/api/v1/push"
        );
        assert_eq!(
            LokiConfig::url_from_addr("fd00::1"),
            "http://[fd00::1]:3100/loki/api/v1/push"
        );
    }

    #[test]
    fn base64_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let mut s = LokiSink::new(LokiConfig::new("http://127.0.0.1:1"));
        for a in 1..30 {
            s.attempts = a;
            let d = s.backoff();
            let full = (s.cfg.min_backoff * (1u32 << (a - 1).min(20))).min(s.cfg.max_backoff);
            assert!(d >= full / 2 && d <= full, "{a}: {d:?} vs {full:?}");
        }
    }
}
