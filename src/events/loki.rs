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
//! HTTP is ureq's synchronous client ([`LokiClient`]): one kept-alive connection reused between
//! pushes (ureq's pool checks that an idle connection is still open before reusing it and
//! reconnects otherwise), `https://` through rustls with the bundled Mozilla roots or `caFile`,
//! optional client certificate. Status codes come back as values: the retry policy is ours.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use super::{DropReason, Event, EventSink, SinkCounters};

/// The push body's encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LokiFormat {
    /// `application/json`.
    Json,
    /// `application/x-protobuf`: snappy block-compressed `logproto.PushRequest`.
    Protobuf,
}

impl LokiFormat {
    pub fn parse(s: &str) -> Result<LokiFormat, String> {
        match s {
            "json" => Ok(LokiFormat::Json),
            "protobuf" => Ok(LokiFormat::Protobuf),
            _ => Err(format!("`format` is json or protobuf, not `{s}`")),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct LokiConfig {
    /// `http[s]://host:port/loki/api/v1/push`.
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
    /// PEM file of the CA certificate(s) trusted for Loki's certificate, instead of the
    /// bundled Mozilla roots (https only).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain and its private key, for Loki behind mutual TLS.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate. Dangerous: anyone on the path can read and forge pushes.
    pub insecure_skip_verify: bool,
    pub format: LokiFormat,
    /// Send the pod, netns, entity kind and name as structured metadata too (Loki 3 with
    /// structured metadata allowed; older Loki rejects such pushes with 400).
    pub structured_metadata: bool,
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
            ca_file: None,
            cert_file: None,
            key_file: None,
            insecure_skip_verify: false,
            format: LokiFormat::Json,
            structured_metadata: false,
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

/// A Loki URL, split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LokiUrl {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// Defaults to `/loki/api/v1/push`.
    pub path: String,
}

impl std::fmt::Display for LokiUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (scheme, default_port) = if self.https {
            ("https", 443)
        } else {
            ("http", 80)
        };
        // The default port is left out, as in the Host header a browser would send (virtual
        // hosts in front of Loki match on it).
        let port = if self.port == default_port {
            String::new()
        } else {
            format!(":{}", self.port)
        };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]{port}{}", self.host, self.path)
        } else {
            write!(f, "{scheme}://{}{port}{}", self.host, self.path)
        }
    }
}

/// `http[s]://host[:port][/path]`, split; the path defaults to `/loki/api/v1/push`, the port
/// to 80 or 443.
pub fn parse_url(url: &str) -> Result<LokiUrl, String> {
    let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(format!(
            "`{url}`: the URL must start with http:// or https://"
        ));
    };
    let default_port = if https { 443 } else { 80 };
    let (hostport, path) = match rest.find(['/', '?', '#']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if hostport.contains('@') {
        return Err(format!(
            "`{url}`: credentials in the URL are not supported; use username/password"
        ));
    }
    let path = if path.is_empty() || path == "/" {
        "/loki/api/v1/push".to_string()
    } else if !path.starts_with('/') || path.contains('#') {
        return Err(format!("`{url}`: bad path"));
    } else {
        path.to_string()
    };
    if path.bytes().any(|b| b <= b' ' || b >= 0x7f) {
        return Err(format!("`{url}`: spaces or non-ASCII in the path"));
    }
    let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
        let (h, p) = h
            .split_once(']')
            .ok_or_else(|| format!("`{url}`: bad IPv6 host"))?;
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("`{url}`: bad IPv6 host"));
        }
        let port = match p.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| format!("`{url}`: bad port"))?,
            None if p.is_empty() => default_port,
            None => return Err(format!("`{url}`: bad IPv6 host")),
        };
        (h.to_string(), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse().map_err(|_| format!("`{url}`: bad port"))?,
            ),
            None => (hostport.to_string(), default_port),
        }
    };
    if host.is_empty() {
        return Err(format!("`{url}`: no host"));
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b))
    {
        return Err(format!("`{url}`: bad host `{host}`"));
    }
    if port == 0 {
        return Err(format!("`{url}`: bad port"));
    }
    Ok(LokiUrl {
        https,
        host,
        port,
        path,
    })
}

/// Loki's answer to a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    /// `Retry-After` in seconds, when given.
    pub retry_after: Option<Duration>,
    /// The start of the response body (Loki's reason on errors).
    pub text: String,
}

/// The HTTP side of the sink: one ureq agent (its pool keeps the connection alive between
/// pushes), the URL and the fixed headers.
pub struct LokiClient {
    agent: ureq::Agent,
    url: String,
    headers: Vec<(&'static str, String)>,
}

impl LokiClient {
    /// Checks the URL and reads the TLS files: every problem is named here, at config time.
    pub fn new(cfg: &LokiConfig) -> Result<LokiClient, String> {
        let url = parse_url(&cfg.url)?;
        let tls = tls_config(cfg, &url)?;
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // Loki is named explicitly; HTTP(S)_PROXY from the environment is not used.
            .proxy(None)
            .max_redirects(0)
            .timeout_global(Some(cfg.timeout))
            .timeout_connect(Some(cfg.timeout.min(Duration::from_secs(5))))
            .user_agent(format!("netsleuth/{}", env!("CARGO_PKG_VERSION")))
            .accept("*/*")
            .max_idle_connections(2)
            .max_idle_connections_per_host(2)
            .max_idle_age(Duration::from_secs(60))
            .tls_config(tls)
            .build();
        let mut headers = vec![(
            "Content-Type",
            match cfg.format {
                LokiFormat::Json => "application/json",
                LokiFormat::Protobuf => "application/x-protobuf",
            }
            .to_string(),
        )];
        if let Some(t) = &cfg.tenant {
            headers.push(("X-Scope-OrgID", t.clone()));
        }
        if let Some((u, p)) = &cfg.basic_auth {
            headers.push((
                "Authorization",
                format!("Basic {}", base64(format!("{u}:{p}").as_bytes())),
            ));
        } else if let Some(t) = &cfg.bearer_token {
            headers.push(("Authorization", format!("Bearer {t}")));
        }
        for (k, v) in &headers {
            if v.bytes().any(|b| b < b' ' || b == 0x7f) {
                return Err(format!("`{k}` header: control characters in the value"));
            }
        }
        Ok(LokiClient {
            agent: config.new_agent(),
            url: url.to_string(),
            headers,
        })
    }

    /// One push. `Err`: no HTTP answer (connection, TLS, timeout), with the reason.
    pub fn post(&self, body: &[u8]) -> Result<Reply, String> {
        let mut req = self.agent.post(&self.url);
        for (k, v) in &self.headers {
            req = req.header(*k, v);
        }
        let mut resp = req.send(body).map_err(|e| describe(&e))?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // Read the body to its end (up to 64 KiB): only then does the connection go back to
        // the pool for the next push.
        let text = match resp.body_mut().with_config().limit(64 * 1024).read_to_vec() {
            Ok(b) => String::from_utf8_lossy(&b)
                .trim()
                .chars()
                .take(200)
                .collect(),
            Err(_) => String::new(),
        };
        Ok(Reply {
            status,
            retry_after,
            text,
        })
    }
}

/// A ureq error as an operator should read it: TLS problems say so.
fn describe(e: &ureq::Error) -> String {
    describe_ureq(
        e,
        " (is `caFile` the CA that signed Loki's certificate, and is the URL's host in it?)",
    )
}

/// A ureq error as an operator should read it, `bad_cert_hint` appended when the server's
/// certificate was refused (shared with the inspector's client).
pub(crate) fn describe_ureq(e: &ureq::Error, bad_cert_hint: &str) -> String {
    let tls = |r: &rustls::Error| {
        let hint = match r {
            rustls::Error::InvalidCertificate(_) => bad_cert_hint,
            _ => "",
        };
        format!("TLS: {r}{hint}")
    };
    match e {
        ureq::Error::Rustls(r) => tls(r),
        ureq::Error::Io(io) => match io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            Some(r) => tls(r),
            None => format!("connection: {io}"),
        },
        ureq::Error::Tls(m) => format!("TLS: {m}"),
        other => other.to_string(),
    }
}

/// The TLS side: roots (bundled, or `caFile`), client certificate, verification. Each file is
/// read and checked here (rustls would ignore a bad CA certificate silently).
fn tls_config(cfg: &LokiConfig, url: &LokiUrl) -> Result<ureq::tls::TlsConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};

    let any_tls = cfg.ca_file.is_some()
        || cfg.cert_file.is_some()
        || cfg.key_file.is_some()
        || cfg.insecure_skip_verify;
    if !url.https && any_tls {
        return Err(format!(
            "`{}`: caFile, certFile, keyFile and insecureSkipVerify need an https:// URL",
            cfg.url
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut b = TlsConfig::builder().unversioned_rustls_crypto_provider(provider.clone());
    let certs_of = |what: &str, p: &PathBuf| -> Result<Vec<CertificateDer<'static>>, String> {
        let certs = CertificateDer::pem_file_iter(p)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("{what} `{}`: {e}", p.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "{what} `{}`: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
                p.display()
            ));
        }
        Ok(certs)
    };
    if let Some(p) = &cfg.ca_file {
        let certs = certs_of("caFile", p)?;
        let mut store = rustls::RootCertStore::empty();
        for (i, c) in certs.iter().enumerate() {
            store
                .add(c.clone())
                .map_err(|e| format!("caFile `{}`: certificate {}: {e}", p.display(), i + 1))?;
        }
        b = b.root_certs(RootCerts::new_with_certs(
            &certs
                .iter()
                .map(|c| Certificate::from_der(c.as_ref()).to_owned())
                .collect::<Vec<_>>(),
        ));
    }
    match (&cfg.cert_file, &cfg.key_file) {
        (Some(cp), Some(kp)) => {
            let chain = certs_of("certFile", cp)?;
            let pem = std::fs::read(kp).map_err(|e| format!("keyFile `{}`: {e}", kp.display()))?;
            let key = PrivateKeyDer::from_pem_slice(&pem)
                .map_err(|e| format!("keyFile `{}`: {e}", kp.display()))?;
            // What ureq will do, checked here: a key that does not fit would panic there.
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS: {e}"))?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|e| {
                    format!(
                        "certFile `{}` / keyFile `{}`: {e}",
                        cp.display(),
                        kp.display()
                    )
                })?;
            let chain: Vec<_> = chain
                .iter()
                .map(|c| Certificate::from_der(c.as_ref()).to_owned())
                .collect();
            let key = PrivateKey::from_pem(&pem)
                .map_err(|e| format!("keyFile `{}`: {e}", kp.display()))?;
            b = b.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
        }
        (None, None) => {}
        _ => return Err("give both `certFile` and `keyFile` (the client certificate)".into()),
    }
    if cfg.insecure_skip_verify {
        b = b.disable_verification(true);
    }
    Ok(b.build())
}

/// One event waiting for Loki.
struct Entry {
    /// Index into `LokiSink::streams`.
    stream: usize,
    ts: u128,
    line: String,
    /// Structured metadata (empty unless `structured_metadata`).
    meta: Vec<(String, String)>,
}

/// A stream's label set, rendered for both encodings.
struct Stream {
    kind: String,
    k8s_namespace: String,
    /// `{"job":"netsleuth",...}`
    json: String,
    /// `{job="netsleuth", ...}` (Prometheus label syntax, for protobuf).
    prom: String,
}

pub struct LokiSink {
    cfg: LokiConfig,
    client: Result<LokiClient, String>,
    /// The TLS files as last read (see [`LokiSink::refresh_tls`]), and when they were checked.
    tls_files: Vec<FileStamp>,
    tls_checked: Instant,
    /// Label sets seen (bounded: type × k8s namespace).
    streams: Vec<Stream>,
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

/// A label value in Prometheus/LogQL syntax: quoted, `\`, `"` and newlines escaped.
fn prom_quote(out: &mut String, v: &str) {
    out.push('"');
    crate::model::escape_label_value(v, out);
    out.push('"');
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
            cfg,
            client,
            tls_files,
            tls_checked: Instant::now(),
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
            .position(|s| s.kind == ev.kind && s.k8s_namespace == *ns)
        {
            return i;
        }
        let mut labels: Vec<(&str, &str)> = vec![("job", &self.cfg.job)];
        if !self.cfg.node.is_empty() {
            labels.push(("node", &self.cfg.node));
        }
        labels.push(("type", &ev.kind));
        if !ns.is_empty() {
            labels.push(("k8s_namespace", ns));
        }
        let json = serde_json::Value::Object(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
                .collect(),
        )
        .to_string();
        let mut prom = String::from("{");
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                prom.push_str(", ");
            }
            prom.push_str(k);
            prom.push('=');
            prom_quote(&mut prom, v);
        }
        prom.push('}');
        self.streams.push(Stream {
            kind: ev.kind.clone(),
            k8s_namespace: ns.clone(),
            json,
            prom,
        });
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

    /// The next batch: up to `batch_size` bytes of lines, grouped by stream (streams in first-
    /// seen order), each stream's entries in time order. Returns the groups and the number of
    /// events.
    fn next_batch(&self) -> (Vec<(usize, Vec<&Entry>)>, usize) {
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
        let groups = by_stream
            .into_iter()
            .enumerate()
            .filter(|(_, es)| !es.is_empty())
            .map(|(i, mut es)| {
                es.sort_by_key(|e| e.ts);
                (i, es)
            })
            .collect();
        (groups, n)
    }

    /// The body of the next batch in the configured format, and the number of events.
    fn next_body(&self) -> (Vec<u8>, usize) {
        let (groups, n) = self.next_batch();
        let body = match self.cfg.format {
            LokiFormat::Json => self.json_body(&groups),
            LokiFormat::Protobuf => self.protobuf_body(&groups),
        };
        (body, n)
    }

    fn json_body(&self, groups: &[(usize, Vec<&Entry>)]) -> Vec<u8> {
        let bytes: usize = groups
            .iter()
            .flat_map(|(_, es)| es.iter().map(|e| e.line.len() + 40))
            .sum();
        let mut body = Vec::with_capacity(bytes + 64);
        body.extend_from_slice(b"{\"streams\":[");
        for (gi, (i, entries)) in groups.iter().enumerate() {
            if gi > 0 {
                body.push(b',');
            }
            body.extend_from_slice(b"{\"stream\":");
            body.extend_from_slice(self.streams[*i].json.as_bytes());
            body.extend_from_slice(b",\"values\":[");
            for (j, e) in entries.iter().enumerate() {
                if j > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(format!("[\"{}\",", e.ts).as_bytes());
                let _ = serde_json::to_writer(&mut body, &e.line);
                if !e.meta.is_empty() {
                    body.push(b',');
                    body.push(b'{');
                    for (k, (name, value)) in e.meta.iter().enumerate() {
                        if k > 0 {
                            body.push(b',');
                        }
                        let _ = serde_json::to_writer(&mut body, name);
                        body.push(b':');
                        let _ = serde_json::to_writer(&mut body, value);
                    }
                    body.push(b'}');
                }
                body.push(b']');
            }
            body.extend_from_slice(b"]}");
        }
        body.extend_from_slice(b"]}");
        body
    }

    fn protobuf_body(&self, groups: &[(usize, Vec<&Entry>)]) -> Vec<u8> {
        use super::loki_proto::{
            EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter, Timestamp,
        };
        let req = PushRequest {
            streams: groups
                .iter()
                .map(|(i, entries)| StreamAdapter {
                    labels: self.streams[*i].prom.clone(),
                    entries: entries
                        .iter()
                        .map(|e| EntryAdapter {
                            timestamp: Some(Timestamp {
                                seconds: (e.ts / 1_000_000_000) as i64,
                                nanos: (e.ts % 1_000_000_000) as i32,
                            }),
                            line: e.line.clone(),
                            structured_metadata: e
                                .meta
                                .iter()
                                .map(|(k, v)| LabelPairAdapter {
                                    name: k.clone(),
                                    value: v.clone(),
                                })
                                .collect(),
                        })
                        .collect(),
                })
                .collect(),
        };
        super::loki_proto::encode_snappy(&req)
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

    fn post(&self, body: &[u8]) -> Outcome {
        let client = match &self.client {
            Ok(c) => c,
            Err(e) => return Outcome::Reject(e.clone()),
        };
        match client.post(body) {
            Ok(r) => match r.status {
                // 260: Loki's `block_ingestion_status_code`, accepted but not stored.
                260 => Outcome::Reject(format!("HTTP 260 (ingestion blocked): {}", r.text)),
                200..=299 => Outcome::Ok,
                429 | 500..=599 => {
                    Outcome::Retry(r.retry_after, format!("HTTP {}: {}", r.status, r.text))
                }
                s => Outcome::Reject(format!("HTTP {s}: {}", r.text)),
            },
            Err(e) => Outcome::Retry(None, e),
        }
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
            self.refresh_tls();
            let (body, n) = self.next_body();
            match self.post(&body) {
                Outcome::Ok => {
                    if self.attempts > 0 {
                        log::info!("loki sink: delivering again");
                    }
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
        let meta = if self.cfg.structured_metadata {
            structured_metadata(ev)
        } else {
            Vec::new()
        };
        self.pending_bytes += line.len();
        self.pending.push_back(Entry {
            stream,
            ts,
            line,
            meta,
        });
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

/// What tells a file changed: (path, mtime, size, inode); `None` when it cannot be read.
type FileStamp = (PathBuf, Option<(std::time::SystemTime, u64, u64)>);

fn tls_stamps(cfg: &LokiConfig) -> Vec<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    [&cfg.ca_file, &cfg.cert_file, &cfg.key_file]
        .into_iter()
        .flatten()
        .map(|p| {
            let m = std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len(), m.ino())));
            (p.clone(), m)
        })
        .collect()
}

/// Per-line metadata for Loki 3 (`| k8s_pod="web-0"` without parsing the line): the
/// high-cardinality entity keys and the entity's extra labels (`metrics.additionalLabels`:
/// pod labels can be anything, so never stream labels).
fn structured_metadata(ev: &Event) -> Vec<(String, String)> {
    let e = &ev.entity;
    let mut m = Vec::with_capacity(4 + e.labels.len());
    if !e.k8s_pod.is_empty() {
        m.push(("k8s_pod".to_string(), e.k8s_pod.clone()));
    }
    m.push(("netns".to_string(), e.netns.to_string()));
    if !e.kind.is_empty() {
        m.push(("entity_kind".to_string(), e.kind.clone()));
    }
    if !e.name.is_empty() {
        m.push(("entity_name".to_string(), e.name.clone()));
    }
    m.extend(e.labels.iter().filter(|(_, v)| !v.is_empty()).cloned());
    m
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
        let u = |https, host: &str, port, path: &str| LokiUrl {
            https,
            host: host.into(),
            port,
            path: path.into(),
        };
        assert_eq!(
            parse_url("http://loki:3100").unwrap(),
            u(false, "loki", 3100, "/loki/api/v1/push")
        );
        assert_eq!(
            parse_url("http://[::1]:8080/api/prom/push").unwrap(),
            u(false, "::1", 8080, "/api/prom/push")
        );
        assert_eq!(parse_url("http://h").unwrap().port, 80);
        assert_eq!(
            parse_url("https://loki.example").unwrap(),
            u(true, "loki.example", 443, "/loki/api/v1/push")
        );
        assert_eq!(
            parse_url("https://[::1]/p").unwrap().to_string(),
            "https://[::1]/p"
        );
        assert_eq!(
            parse_url("http://127.0.0.1:3100/").unwrap().to_string(),
            "http://127.0.0.1:3100/loki/api/v1/push"
        );
        assert_eq!(
            parse_url("https://loki.example:443/x?y=1")
                .unwrap()
                .to_string(),
            "https://loki.example/x?y=1"
        );
        for bad in [
            "loki:3100",
            "ftp://l",
            "http://",
            "http://:80",
            "http://l:0",
            "http://l:99999",
            "http://u:p@l",
            "http://[zz]:1",
            "http://l/a b",
            "http://l o",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
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
    fn tls_args_need_https_and_readable_files() {
        let mut c = LokiConfig::new("http://l");
        c.insecure_skip_verify = true;
        assert!(LokiClient::new(&c).err().unwrap().contains("https://"));
        let mut c = LokiConfig::new("https://l");
        c.ca_file = Some("/nonexistent/ca.pem".into());
        assert!(LokiClient::new(&c)
            .err()
            .unwrap()
            .contains("caFile `/nonexistent/ca.pem`"));
        // A file with no certificate in it is refused (rustls would trust nothing silently).
        let p = std::env::temp_dir().join(format!("nsl-empty-ca-{}.pem", std::process::id()));
        std::fs::write(&p, "not a certificate\n").unwrap();
        c.ca_file = Some(p.clone());
        assert!(LokiClient::new(&c)
            .err()
            .unwrap()
            .contains("no PEM certificate"));
        std::fs::remove_file(&p).unwrap();
        let mut c = LokiConfig::new("https://l");
        c.cert_file = Some("/x".into());
        assert!(LokiClient::new(&c).err().unwrap().contains("keyFile"));
        assert!(LokiClient::new(&LokiConfig::new("https://l")).is_ok());
        let mut c = LokiConfig::new("https://l");
        c.tenant = Some("a\r\nX: y".into());
        assert!(LokiClient::new(&c).is_err());
    }

    #[test]
    fn label_syntax() {
        let mut s = String::new();
        prom_quote(&mut s, "a\"b\\c\nd");
        assert_eq!(s, r#""a\"b\\c\nd""#);
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
