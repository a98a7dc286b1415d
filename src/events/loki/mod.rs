//! The `loki` sink: `POST /loki/api/v1/push` with the JSON body
//! (`{"streams":[{"stream":{labels},"values":[["<ns>","<line>"]]}]}`) or, with `format:
//! protobuf`, Loki's snappy-compressed protobuf `PushRequest` ([`super::loki_proto`]), in
//! batches by size and time, retried with exponential backoff and jitter on 429, 5xx and
//! connection (and TLS) errors (never on other 4xx), with a bounded backlog: when Loki is away
//! longer than the backlog lasts, events are dropped and counted.
//!
//! Stream labels are few and bounded: `job`, `node`, `type`, `k8s_namespace` (when set). The
//! pod, the tuple and the rest go in the line (KubeSkoop's logfmt line, `| logfmt` in LogQL),
//! and with `structuredMetadata: true` the pod, netns and entity also as structured metadata.
//!
//! Parts: [`config`] (the args, the URL), [`client`] (HTTP through ureq, the verdict on a
//! reply), `batch` (streams, batches, push bodies), `tls` (client TLS shared with the
//! inspector); here the sink itself: backlog bound, push loop, backoff, TLS file rotation.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, UNIX_EPOCH};

use super::{DropReason, Event, EventSink, SinkCounters};
use crate::web_config::{stamp_of, FileStamp};

mod batch;
pub mod client;
pub mod config;
pub(crate) mod tls;

pub use client::{LokiClient, PushError, Reply};
pub use config::{default_node, parse_url, LokiConfig, LokiFormat, LokiUrl};
pub(crate) use tls::describe_ureq;

use batch::Batcher;

pub struct LokiSink {
    cfg: LokiConfig,
    client: Result<LokiClient, String>,
    /// The TLS files as last read (see [`LokiSink::refresh_tls`]), and when they were checked.
    tls_files: Vec<FileStamp>,
    tls_checked: Instant,
    batch: Batcher,
    /// No push before this (backoff).
    next_attempt: Option<Instant>,
    attempts: u32,
    rng: u64,
}

impl LokiSink {
    pub fn new(cfg: LokiConfig) -> LokiSink {
        let tls_files = tls_stamps(&cfg);
        let client = LokiClient::new(&cfg);
        if let Err(e) = &client {
            log::error!("loki sink: {e}");
        }
        let seed = std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ u64::from(std::process::id());
        LokiSink {
            batch: Batcher::new(&cfg),
            cfg,
            client,
            tls_files,
            tls_checked: Instant::now(),
            next_attempt: None,
            attempts: 0,
            rng: seed | 1,
        }
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

    /// Drop the first `n` held events and publish the backlog.
    fn take(&mut self, n: usize, c: &SinkCounters) {
        self.batch.take(n);
        c.backlog.store(self.batch.len() as u64, Ordering::Relaxed);
    }

    /// Certificates are rotated (cert-manager, mounted Secrets) under an unchanged config: the
    /// TLS files are checked (stat) after a failed push and once a minute, and when one changed
    /// the client is built anew from them. A broken new file keeps the old client (logged).
    fn refresh_tls(&mut self) {
        if self.tls_files.is_empty()
            || (self.attempts == 0 && self.tls_checked.elapsed() < Duration::from_secs(60))
        {
            return;
        }
        self.tls_checked = Instant::now();
        let now = tls_stamps(&self.cfg);
        if now == self.tls_files {
            return;
        }
        self.tls_files = now;
        match LokiClient::new(&self.cfg) {
            Ok(c) => {
                log::info!("loki sink: TLS files changed; read again");
                self.client = Ok(c);
            }
            Err(e) => {
                log::warn!("loki sink: TLS files changed but not usable ({e}); kept the old ones")
            }
        }
    }

    /// One push; a client that could not be built rejects every batch.
    fn post(&self, body: &[u8]) -> Result<(), PushError> {
        match &self.client {
            Ok(c) => c.push(body),
            Err(e) => Err(PushError::Permanent(e.clone())),
        }
    }

    /// Push batches while one is due and Loki takes them. `force`: push even a small batch.
    fn push(&mut self, c: &SinkCounters, force: bool) {
        loop {
            if self.batch.is_empty() {
                return;
            }
            let now = Instant::now();
            if self.next_attempt.is_some_and(|t| now < t) {
                return;
            }
            let due = force
                || self.batch.bytes() >= self.cfg.batch_size
                || self
                    .batch
                    .oldest()
                    .is_some_and(|t| now.duration_since(t) >= self.cfg.batch_wait)
                || self.attempts > 0;
            if !due {
                return;
            }
            self.refresh_tls();
            let (body, n) = self.batch.next_body();
            match self.post(&body) {
                Ok(()) => {
                    if self.attempts > 0 {
                        log::info!("loki sink: delivering again");
                    }
                    c.sent.fetch_add(n as u64, Ordering::Relaxed);
                    self.attempts = 0;
                    self.next_attempt = None;
                    self.take(n, c);
                }
                Err(PushError::Permanent(why)) => {
                    log::warn!("loki sink: batch of {n} events rejected ({why}); dropped");
                    c.failed.fetch_add(1, Ordering::Relaxed);
                    c.drop_events(DropReason::Rejected, n as u64);
                    self.attempts = 0;
                    self.next_attempt = None;
                    self.take(n, c);
                }
                Err(PushError::Retryable { after, why }) => {
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
                    // The first failure of a run is a warning (a certificate problem must be
                    // seen); the retries that follow are debug.
                    if self.attempts == 1 {
                        log::warn!("loki sink: push failed ({why}); retrying in {d:?}");
                    } else {
                        log::debug!(
                            "loki sink: push failed ({why}); retry {} in {d:?}",
                            self.attempts
                        );
                    }
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
        if self.batch.len() >= self.cfg.max_backlog {
            c.drop_events(DropReason::BacklogFull, 1);
            return;
        }
        self.batch.add(ev);
        c.backlog.store(self.batch.len() as u64, Ordering::Relaxed);
        if self.batch.bytes() >= self.cfg.batch_size {
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
        } else if let Some(o) = self.batch.oldest() {
            w = w.min((o + self.cfg.batch_wait).saturating_duration_since(now));
        }
        w.max(Duration::from_millis(5))
    }

    /// One last try per batch (no backoff), bounded by 5 s; the rest is counted as dropped.
    fn close(&mut self, c: &SinkCounters) {
        let deadline = Instant::now() + Duration::from_secs(5);
        self.next_attempt = None;
        while !self.batch.is_empty() && Instant::now() < deadline {
            let (body, n) = self.batch.next_body();
            match self.post(&body) {
                Ok(()) => {
                    c.sent.fetch_add(n as u64, Ordering::Relaxed);
                    self.take(n, c);
                }
                Err(PushError::Permanent(_)) => {
                    c.failed.fetch_add(1, Ordering::Relaxed);
                    c.drop_events(DropReason::Rejected, n as u64);
                    self.take(n, c);
                }
                Err(PushError::Retryable { .. }) => {
                    c.failed.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
        let left = self.batch.len();
        c.drop_events(DropReason::Shutdown, left as u64);
        self.take(left, c);
    }
}

/// The TLS files' stamps, to see when one was replaced.
fn tls_stamps(cfg: &LokiConfig) -> Vec<FileStamp> {
    stamp_of(
        [&cfg.ca_file, &cfg.cert_file, &cfg.key_file]
            .into_iter()
            .flatten(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
