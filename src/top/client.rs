//! The inspector's HTTP client for an exporter's `/metrics` and `/events`: ureq (synchronous,
//! rustls with the ring provider, what the Loki sink uses) with the client side of the web
//! config: a CA to verify the exporter's certificate, a client certificate and key, basic auth
//! from a username and a password file. Every failure is classified so that the commands can
//! exit with a code that says what went wrong.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

/// Exit codes shared by `top` and `events`.
pub const EXIT_UNREACHABLE: i32 = 3;
pub const EXIT_UNAUTHORIZED: i32 = 4;
pub const EXIT_BAD_PAGE: i32 = 5;

/// Why a request gave nothing usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// No HTTP answer: connection refused, DNS, timeout, TLS.
    Unreachable(String),
    /// 401 or 403.
    Unauthorized(String),
    /// An answer, but not what we asked for (another status, not Prometheus text).
    BadPage(String),
}

impl FetchError {
    pub fn exit_code(&self) -> i32 {
        match self {
            FetchError::Unreachable(_) => EXIT_UNREACHABLE,
            FetchError::Unauthorized(_) => EXIT_UNAUTHORIZED,
            FetchError::BadPage(_) => EXIT_BAD_PAGE,
        }
    }
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Unreachable(m) | FetchError::Unauthorized(m) | FetchError::BadPage(m) => {
                f.write_str(m)
            }
        }
    }
}

/// The client flags (`--tls.ca-file`, `--tls.cert-file`, `--tls.key-file`, `--web.username`,
/// `--web.password-file`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientOptions {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
}

/// An exporter: its base URL and an agent set up for it.
pub struct Client {
    base: String,
    agent: ureq::Agent,
    stream_agent: ureq::Agent,
    auth: Option<String>,
}

/// `http://host:port[/prefix]` without a trailing `/`; `host:port` alone means http.
pub fn base_url(url: &str) -> Result<(String, bool), String> {
    let url = url.trim();
    let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else if url.contains("://") {
        return Err(format!(
            "--url `{url}`: only http:// and https:// are supported"
        ));
    } else {
        (false, url)
    };
    let rest = rest.trim_end_matches('/');
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() {
        return Err(format!("--url `{url}`: no host"));
    }
    let base = format!("{}://{rest}", if https { "https" } else { "http" });
    // What ureq would refuse later is refused here, named.
    base.parse::<ureq::http::Uri>()
        .map_err(|e| format!("--url `{url}`: {e}"))?;
    Ok((base, https))
}

impl Client {
    /// Checks the URL and reads the TLS and password files: a problem with them is named here.
    pub fn new(url: &str, o: &ClientOptions) -> Result<Client, String> {
        let (base, https) = base_url(url)?;
        let tls = tls_config(o, https)?;
        let auth = match (&o.username, &o.password_file) {
            (Some(u), Some(p)) => {
                let pw = std::fs::read_to_string(p)
                    .map_err(|e| format!("--web.password-file `{}`: {e}", p.display()))?;
                // A trailing newline (`echo pw > file`) is not part of the password.
                let pw = pw.strip_suffix('\n').unwrap_or(&pw);
                let pw = pw.strip_suffix('\r').unwrap_or(pw);
                Some(crate::web_config::basic_header(u, pw))
            }
            (Some(_), None) => return Err("--web.username needs --web.password-file".into()),
            (None, Some(_)) => return Err("--web.password-file needs --web.username".into()),
            (None, None) => None,
        };
        let agent = |global: Option<Duration>| {
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .proxy(None)
                .max_redirects(0)
                .timeout_global(global)
                .timeout_connect(Some(Duration::from_secs(5)))
                .timeout_recv_response(Some(Duration::from_secs(60)))
                .user_agent(format!("netsleuth-inspector/{}", env!("CARGO_PKG_VERSION")))
                .tls_config(tls.clone())
                .build()
                .new_agent()
        };
        Ok(Client {
            base,
            agent: agent(Some(Duration::from_secs(60))),
            // The events stream lasts as long as the exporter runs.
            stream_agent: agent(None),
            auth,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn get(
        &self,
        agent: &ureq::Agent,
        path: &str,
    ) -> Result<ureq::http::Response<ureq::Body>, FetchError> {
        let url = self.url(path);
        let mut req = agent.get(&url);
        if let Some(a) = &self.auth {
            req = req.header("Authorization", a);
        }
        let resp = req.call().map_err(|e| {
            FetchError::Unreachable(format!("cannot reach {url}: {}", describe(&e)))
        })?;
        let status = resp.status().as_u16();
        match status {
            200 => Ok(resp),
            401 | 403 => Err(FetchError::Unauthorized(format!(
                "{url}: {status} {}{}",
                if status == 401 {
                    "unauthorised"
                } else {
                    "forbidden"
                },
                if self.auth.is_some() {
                    " (check --web.username and --web.password-file)"
                } else {
                    " (the exporter wants basic auth: --web.username and --web.password-file)"
                }
            ))),
            _ => Err(FetchError::BadPage(format!(
                "{url}: HTTP {status} (expected 200)"
            ))),
        }
    }

    /// `/metrics` as text.
    pub fn metrics(&self) -> Result<String, FetchError> {
        let mut resp = self.get(&self.agent, "/metrics")?;
        resp.body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_string()
            .map_err(|e| {
                FetchError::Unreachable(format!("{}: reading the page: {e}", self.url("/metrics")))
            })
    }

    /// `/events?query`: the NDJSON stream, as a reader.
    pub fn events(&self, query: &str) -> Result<Box<dyn Read + Send>, FetchError> {
        let path = if query.is_empty() {
            "/events".to_string()
        } else {
            format!("/events?{query}")
        };
        let resp = self.get(&self.stream_agent, &path)?;
        Ok(Box::new(resp.into_body().into_reader()))
    }
}

/// A ureq error as an operator should read it.
fn describe(e: &ureq::Error) -> String {
    crate::events::loki::describe_ureq(
        e,
        " (is --tls.ca-file the CA that signed the exporter's certificate, and is the URL's host in it?)",
    )
}

fn tls_config(o: &ClientOptions, https: bool) -> Result<ureq::tls::TlsConfig, String> {
    use crate::events::loki::tls::{ureq_tls, TlsFiles, TlsNames};
    let any = o.ca_file.is_some() || o.cert_file.is_some() || o.key_file.is_some();
    if any && !https {
        return Err(
            "--tls.ca-file, --tls.cert-file and --tls.key-file need an https:// --url".into(),
        );
    }
    ureq_tls(&TlsFiles {
        ca_file: o.ca_file.as_ref(),
        cert_file: o.cert_file.as_ref(),
        key_file: o.key_file.as_ref(),
        insecure_skip_verify: false,
        names: TlsNames {
            ca: "--tls.ca-file",
            cert: "--tls.cert-file",
            key: "--tls.key-file",
            need_both: "give both --tls.cert-file and --tls.key-file (the client certificate)",
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            base_url("127.0.0.1:9102").unwrap(),
            ("http://127.0.0.1:9102".to_string(), false)
        );
        assert_eq!(
            base_url("https://node:9102/").unwrap(),
            ("https://node:9102".to_string(), true)
        );
        assert!(base_url("ftp://x").unwrap_err().contains("http://"));
        assert!(base_url("http://").unwrap_err().contains("no host"));
    }

    #[test]
    fn tls_flags_checked() {
        let o = ClientOptions {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        assert!(Client::new("http://x:1", &o)
            .err()
            .unwrap()
            .contains("https://"));
        let e = Client::new("https://x:1", &o).err().unwrap();
        assert!(e.contains("--tls.ca-file `/nonexistent/ca.pem`"), "{e}");
        let o = ClientOptions {
            username: Some("u".into()),
            ..Default::default()
        };
        assert!(Client::new("x:1", &o)
            .err()
            .unwrap()
            .contains("--web.password-file"));
    }
}
