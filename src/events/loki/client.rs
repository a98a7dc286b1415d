//! The HTTP side of the Loki sink: ureq's synchronous client, one kept-alive connection
//! reused between pushes (ureq's pool checks that an idle connection is still open before
//! reusing it and reconnects otherwise), `https://` through rustls with the bundled Mozilla
//! roots or `caFile`, optional client certificate. Status codes come back as values and are
//! classified here ([`PushError`]); the retry policy is the sink's.

use std::time::Duration;

use super::config::{parse_url, LokiConfig, LokiFormat, LokiUrl};
use super::tls::{describe_ureq, ureq_tls, TlsFiles, TlsNames};

/// Loki's answer to a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    /// `Retry-After` in seconds, when given.
    pub retry_after: Option<Duration>,
    /// The start of the response body (Loki's reason on errors).
    pub text: String,
}

/// Why a push did not land; the sink acts on the kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushError {
    /// 429, 5xx, or no HTTP answer (connection, TLS, timeout): the batch is kept and tried
    /// again after a backoff, at least `after` (Loki's `Retry-After`) when given.
    Retryable {
        after: Option<Duration>,
        why: String,
    },
    /// Any other 4xx, 260 (ingestion blocked), or a client that could not be built: trying
    /// again cannot help, so the batch is dropped (counted as rejected).
    Permanent(String),
}

impl Reply {
    /// Delivered, or why not.
    pub fn verdict(&self) -> Result<(), PushError> {
        match self.status {
            // 260: Loki's `block_ingestion_status_code`, accepted but not stored.
            260 => Err(PushError::Permanent(format!(
                "HTTP 260 (ingestion blocked): {}",
                self.text
            ))),
            200..=299 => Ok(()),
            429 | 500..=599 => Err(PushError::Retryable {
                after: self.retry_after,
                why: format!("HTTP {}: {}", self.status, self.text),
            }),
            s => Err(PushError::Permanent(format!("HTTP {s}: {}", self.text))),
        }
    }
}

/// One ureq agent (its pool keeps the connection alive between pushes), the URL and the fixed
/// headers.
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
            headers.push(("Authorization", crate::web_config::basic_header(u, p)));
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

    /// One push, classified: no answer is retryable, an answer is what [`Reply::verdict`] says.
    pub fn push(&self, body: &[u8]) -> Result<(), PushError> {
        match self.post(body) {
            Ok(r) => r.verdict(),
            Err(why) => Err(PushError::Retryable { after: None, why }),
        }
    }
}

/// A ureq error as an operator should read it: TLS problems say so.
fn describe(e: &ureq::Error) -> String {
    describe_ureq(
        e,
        " (is `caFile` the CA that signed Loki's certificate, and is the URL's host in it?)",
    )
}

/// The TLS side: roots (bundled, or `caFile`), client certificate, verification.
fn tls_config(cfg: &LokiConfig, url: &LokiUrl) -> Result<ureq::tls::TlsConfig, String> {
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
    ureq_tls(&TlsFiles {
        ca_file: cfg.ca_file.as_ref(),
        cert_file: cfg.cert_file.as_ref(),
        key_file: cfg.key_file.as_ref(),
        insecure_skip_verify: cfg.insecure_skip_verify,
        names: TlsNames {
            ca: "caFile",
            cert: "certFile",
            key: "keyFile",
            need_both: "give both `certFile` and `keyFile` (the client certificate)",
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// The retry policy's input: 429 and 5xx are retried (with Loki's Retry-After), 260 and
    /// every other 4xx are not.
    #[test]
    fn replies_classified_retryable_or_permanent() {
        let r = |status, after: Option<u64>| Reply {
            status,
            retry_after: after.map(Duration::from_secs),
            text: "why".into(),
        };
        assert_eq!(r(204, None).verdict(), Ok(()));
        assert_eq!(r(200, None).verdict(), Ok(()));
        for s in [429, 500, 503, 599] {
            assert_eq!(
                r(s, Some(3)).verdict(),
                Err(PushError::Retryable {
                    after: Some(Duration::from_secs(3)),
                    why: format!("HTTP {s}: why"),
                })
            );
        }
        assert_eq!(
            r(260, None).verdict(),
            Err(PushError::Permanent(
                "HTTP 260 (ingestion blocked): why".into()
            ))
        );
        for s in [400, 401, 404, 413, 301] {
            assert_eq!(
                r(s, None).verdict(),
                Err(PushError::Permanent(format!("HTTP {s}: why")))
            );
        }
    }
}
