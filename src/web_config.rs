//! `--web.config.file`: TLS, client certificates, security headers and basic auth in the schema
//! of the Prometheus exporter-toolkit, so an operator's existing file works unchanged and
//! `promtool check web-config` accepts ours.
//!
//! Every key is checked: unknown keys, options rustls cannot honour (TLS 1.0/1.1, CBC or RSA
//! key-exchange suites, P-521, client certificates requested but not verified) and bad PEM or
//! bcrypt hashes are errors that name the key, never silently ignored. The file (and the PEM
//! files it names) is checked for changes at most once a second while requests arrive; a broken
//! new version keeps the running one and is logged.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

mod auth;
mod tls;
mod watch;

pub use auth::{basic_header, parse_basic};
use auth::{check_bcrypt, BasicAuth};
use tls::build_tls;
pub use tls::client_san_allowed;
pub use watch::Watched;
pub(crate) use watch::{stamp_of, FileStamp};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSchema {
    tls_server_config: Option<TlsSchema>,
    http_server_config: Option<HttpSchema>,
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSchema {
    cert_file: Option<String>,
    key_file: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<String>,
    client_ca: Option<String>,
    client_allowed_sans: Option<Vec<String>>,
    cipher_suites: Option<Vec<String>>,
    curve_preferences: Option<Vec<String>>,
    min_version: Option<String>,
    max_version: Option<String>,
    prefer_server_cipher_suites: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpSchema {
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

/// The security headers exporter-toolkit allows (other names are refused: they could break the
/// protocol, e.g. Content-Length).
const ALLOWED_HEADERS: &[&str] = &[
    "Content-Security-Policy",
    "X-Frame-Options",
    "X-Content-Type-Options",
    "X-XSS-Protection",
    "Strict-Transport-Security",
];

/// A loaded web configuration.
pub struct WebConfig {
    /// TLS, when `tls_server_config` is set.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Subject alternative names a client certificate must carry one of (empty: any).
    pub allowed_sans: Vec<String>,
    /// Extra response headers.
    pub headers: Vec<(String, String)>,
    auth: Option<BasicAuth>,
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("allowed_sans", &self.allowed_sans)
            .field("headers", &self.headers)
            .field(
                "basic_auth_users",
                &self.auth.as_ref().map(|a| a.users.len()),
            )
            .finish()
    }
}

impl WebConfig {
    /// No TLS, no auth, no extra headers (no `--web.config.file`).
    pub fn plain() -> WebConfig {
        WebConfig {
            tls: None,
            allowed_sans: Vec::new(),
            headers: Vec::new(),
            auth: None,
        }
    }

    /// Parse a web config; relative paths are relative to `base` (the file's folder, as
    /// exporter-toolkit does).
    pub fn parse(text: &str, base: &Path) -> Result<WebConfig, String> {
        let schema: FileSchema = if text.trim().is_empty() {
            FileSchema::default()
        } else {
            serde_norway::from_str(text).map_err(|e| e.to_string())?
        };
        let mut cfg = WebConfig::plain();
        let mut warnings = Vec::new();
        if let Some(t) = schema.tls_server_config {
            let (tls, sans) = build_tls(t, base)?;
            cfg.tls = Some(Arc::new(tls));
            cfg.allowed_sans = sans;
        }
        if let Some(h) = schema.http_server_config {
            if h.http2 == Some(true) && cfg.tls.is_some() {
                warnings.push("http_server_config.http2: netsleuth serves HTTP/1.1 only (Prometheus scrapes over HTTP/1.1)");
            }
            for (k, v) in h.headers.unwrap_or_default() {
                let Some(name) = ALLOWED_HEADERS.iter().find(|a| a.eq_ignore_ascii_case(&k)) else {
                    return Err(format!(
                        "http_server_config.headers: header `{k}` is not allowed (allowed: {})",
                        ALLOWED_HEADERS.join(", ")
                    ));
                };
                if v.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f) {
                    return Err(format!(
                        "http_server_config.headers.{k}: control characters in the value"
                    ));
                }
                match *name {
                    "X-Content-Type-Options" if !v.eq_ignore_ascii_case("nosniff") => {
                        return Err(format!("http_server_config.headers.{k}: must be `nosniff`"))
                    }
                    "X-Frame-Options"
                        if !v.eq_ignore_ascii_case("deny")
                            && !v.eq_ignore_ascii_case("sameorigin") =>
                    {
                        return Err(format!(
                            "http_server_config.headers.{k}: must be `deny` or `sameorigin`"
                        ))
                    }
                    _ => {}
                }
                cfg.headers.push((name.to_string(), v));
            }
        }
        if let Some(users) = schema.basic_auth_users {
            let mut parsed = BTreeMap::new();
            for (user, hash) in users {
                if user.contains(':') {
                    return Err(format!(
                        "basic_auth_users: user `{user}` contains `:` (not possible in basic auth)"
                    ));
                }
                check_bcrypt(&hash).map_err(|e| format!("basic_auth_users.{user}: {e}"))?;
                parsed.insert(user, hash);
            }
            if !parsed.is_empty() {
                cfg.auth = Some(BasicAuth::new(parsed));
            }
        }
        for w in warnings {
            log::warn!("web config: {w}");
        }
        Ok(cfg)
    }

    /// Load from a file.
    pub fn load(path: &Path) -> Result<WebConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("web config {}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        WebConfig::parse(&text, base).map_err(|e| format!("web config {}: {e}", path.display()))
    }

    /// Whether requests need a user and password.
    pub fn auth_required(&self) -> bool {
        self.auth.is_some()
    }

    /// Check an `Authorization` header value (None: absent).
    pub fn authorize(&self, header: Option<&str>) -> bool {
        match &self.auth {
            None => true,
            Some(a) => match header.and_then(parse_basic) {
                Some((u, p)) => a.check(&u, &p),
                None => false,
            },
        }
    }

    /// Files the configuration was built from (for change detection).
    fn files(text: &str, base: &Path) -> Vec<PathBuf> {
        let Ok(s) = serde_norway::from_str::<FileSchema>(text) else {
            return Vec::new();
        };
        let Some(t) = s.tls_server_config else {
            return Vec::new();
        };
        [t.cert_file, t.key_file, t.client_ca_file]
            .into_iter()
            .flatten()
            .map(|p| base.join(p))
            .collect()
    }
}

#[cfg(test)]
mod tests;
