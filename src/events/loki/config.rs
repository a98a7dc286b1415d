//! The Loki sink's configuration: the args as parsed from `event.sinks`, KubeSkoop's `addr`,
//! the push URL (parsed by the `http` crate's `Uri`, with the few rules of ours on top).

use std::path::PathBuf;
use std::time::Duration;

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
/// to 80 or 443. `http::Uri` splits and checks the characters; on top of it, what a push URL
/// must also be: lower-case `http`/`https` only, no credentials (they go in username/password),
/// no fragment, a path that starts with `/` and is printable ASCII, a host name of letters,
/// digits, `-`, `.` and `_` or a bracketed IPv6 address, a port in 1..=65535.
pub fn parse_url(url: &str) -> Result<LokiUrl, String> {
    let https = if url.starts_with("https://") {
        true
    } else if url.starts_with("http://") {
        false
    } else {
        return Err(format!(
            "`{url}`: the URL must start with http:// or https://"
        ));
    };
    let uri: http::Uri = url.parse().map_err(|e| format!("`{url}`: {e}"))?;
    let auth = uri.authority().ok_or_else(|| format!("`{url}`: no host"))?;
    if auth.as_str().contains('@') {
        return Err(format!(
            "`{url}`: credentials in the URL are not supported; use username/password"
        ));
    }
    // `Uri` drops a fragment and takes bytes above ASCII in the path; a push URL has neither.
    let path = uri.path_and_query().map_or("", |p| p.as_str());
    if url.contains('#') || !(path.is_empty() || path.starts_with('/')) {
        return Err(format!("`{url}`: bad path"));
    }
    if path.bytes().any(|b| b <= b' ' || b >= 0x7f) {
        return Err(format!("`{url}`: spaces or non-ASCII in the path"));
    }
    let path = if path.is_empty() || path == "/" {
        "/loki/api/v1/push".to_string()
    } else {
        path.to_string()
    };
    let host = auth.host();
    let host = match host.strip_prefix('[') {
        Some(h) => {
            let h = h.strip_suffix(']').unwrap_or(h);
            if h.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("`{url}`: bad IPv6 host"));
            }
            h
        }
        None if host.is_empty() => return Err(format!("`{url}`: no host")),
        None if !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) =>
        {
            return Err(format!("`{url}`: bad host `{host}`"))
        }
        None => host,
    };
    // `Uri` keeps a port it cannot read as a u16 (`:99999`, `:`) but reports none.
    let written_port = auth.as_str().len() > auth.host().len();
    let port = match auth.port_u16() {
        Some(0) => return Err(format!("`{url}`: bad port")),
        Some(p) => p,
        None if written_port => return Err(format!("`{url}`: bad port")),
        None if https => 443,
        None => 80,
    };
    Ok(LokiUrl {
        https,
        host: host.to_string(),
        port,
        path,
    })
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

    /// Regression: the hand-written parser split `http://fd00::1:3100` at its last colon and
    /// pushed to `[fd00::1]:3100`, a guess (it may as well be host `fd00::1:3100` without a
    /// port); an IPv6 host in a URL is bracketed (RFC 3986), KubeSkoop's `addr` brackets its own.
    #[test]
    fn unbracketed_ipv6_url_is_refused_not_guessed() {
        assert!(parse_url("http://fd00::1:3100").is_err());
        assert!(parse_url("http://fd00::1").is_err());
        assert_eq!(
            parse_url("http://[fd00::1]:3100").unwrap().to_string(),
            "http://[fd00::1]:3100/loki/api/v1/push"
        );
    }

    /// What `Uri` lets through and a push URL may not have.
    #[test]
    fn url_rules_on_top_of_uri() {
        for bad in [
            "HTTP://l",
            "http://l?x=1",
            "http://l#x",
            "http://l/p#x",
            "http://l/\u{e9}",
            "http://l:",
            "http://[::1%eth0]:1",
            "http://l!/p",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_url("http://l_x.y-z/p").unwrap().to_string(),
            "http://l_x.y-z/p"
        );
    }
}
