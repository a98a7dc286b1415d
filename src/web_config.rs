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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

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

/// `Basic <base64(user:password)>` → (user, password).
pub fn parse_basic(v: &str) -> Option<(String, String)> {
    let (scheme, rest) = v.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64_decode(rest.trim())?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// HTTP basic auth's base64 (RFC 7617: RFC 4648's alphabet, padded). Decoding wants the
/// padding and takes non-zero trailing bits (`Zh==` is `f`), as browsers' and curl's encoders
/// never write them but lenient decoders read them.
const BASIC_B64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireCanonical),
);

/// (user, password) → `Basic <base64(user:password)>`, the `Authorization` value of the Loki
/// sink's and the inspector's basic auth.
pub fn basic_header(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!("Basic {}", BASIC_B64.encode(format!("{user}:{password}")))
}

/// A basic-auth token, bounded (4 KiB).
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    if s.len() > 4096 {
        return None;
    }
    BASIC_B64.decode(s).ok()
}

/// A bcrypt hash as htpasswd and exporter-toolkit write it: `$2a$`, `$2b$` or `$2y$`, a
/// two-digit cost 04..31, 53 characters of bcrypt's base64.
fn check_bcrypt(h: &str) -> Result<(), String> {
    let b = h.as_bytes();
    let shape = b.len() == 60
        && b[0] == b'$'
        && b[1] == b'2'
        && matches!(b[2], b'a' | b'b' | b'y')
        && b[3] == b'$'
        && b[6] == b'$'
        && b[7..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'.' || *c == b'/');
    if !shape {
        return Err("not a bcrypt hash ($2y$NN$ followed by 53 characters; make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)".into());
    }
    let cost: u32 = h[4..6]
        .parse()
        .map_err(|_| format!("bcrypt cost `{}` is not a number", &h[4..6]))?;
    if !(4..=31).contains(&cost) {
        return Err(format!("bcrypt cost {cost} is outside 4..31"));
    }
    Ok(())
}

/// Users and bcrypt hashes, with exporter-toolkit's cache of verified (user, hash, password)
/// triples: a Prometheus scraping every 10 s must not pay ~70 ms of bcrypt per scrape.
struct BasicAuth {
    users: BTreeMap<String, String>,
    /// SHA-256 of (user, hash, password) → verified. Bounded; cleared when full.
    cache: Mutex<std::collections::HashMap<[u8; 32], bool>>,
}

/// A bcrypt hash compared against for unknown users, so that the time of an answer does not
/// tell which users exist: of a password nobody sends, at the cost of the configured entries.
fn dummy_hash(cost: u32) -> String {
    static DUMMY: Mutex<Vec<(u32, String)>> = Mutex::new(Vec::new());
    let mut d = DUMMY.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, h)) = d.iter().find(|(c, _)| *c == cost) {
        return h.clone();
    }
    let h = bcrypt::hash_with_salt("netsleuth: no such user", cost, *b"netsleuth-dummy!")
        .map(|h| h.format_for_version(bcrypt::Version::TwoY))
        .unwrap_or_default();
    d.push((cost, h.clone()));
    h
}

const CACHE_MAX: usize = 1024;

impl BasicAuth {
    fn new(users: BTreeMap<String, String>) -> BasicAuth {
        BasicAuth {
            users,
            cache: Mutex::new(std::collections::HashMap::new()),
        }
    }

    fn check(&self, user: &str, password: &str) -> bool {
        let dummy;
        let (hash, known) = match self.users.get(user) {
            Some(h) => (h.as_str(), true),
            None => {
                // The cost of the first configured user's hash (all usually share one).
                let cost = self
                    .users
                    .values()
                    .next()
                    .and_then(|h| h.get(4..6)?.parse().ok())
                    .unwrap_or(10);
                dummy = dummy_hash(cost);
                (dummy.as_str(), false)
            }
        };
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for part in [user, hash, password] {
            ctx.update(&(part.len() as u64).to_le_bytes());
            ctx.update(part.as_bytes());
        }
        let key: [u8; 32] = ctx.finish().as_ref().try_into().unwrap_or([0; 32]);
        // One bcrypt at a time (as exporter-toolkit): a flood of wrong passwords costs one
        // core, not all of them; cached answers never wait for it.
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&ok) = cache.get(&key) {
            return ok && known;
        }
        let ok = bcrypt::verify(password, hash).unwrap_or(false);
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, ok);
        ok && known
    }
}

fn tls_version(key: &str, v: &str) -> Result<u8, String> {
    match v {
        "TLS12" => Ok(12),
        "TLS13" => Ok(13),
        "TLS10" | "TLS11" => Err(format!(
            "{key}: {v}: rustls supports TLS 1.2 and 1.3 only (use TLS12 or TLS13)"
        )),
        _ => Err(format!("{key}: unknown TLS version `{v}` (TLS12, TLS13)")),
    }
}

/// Go's names for the TLS 1.2 suites rustls (ring) implements. TLS 1.3 suites are not
/// configurable (as in Go).
fn suite_of(name: &str) -> Option<rustls::SupportedCipherSuite> {
    use rustls::crypto::ring::cipher_suite as cs;
    Some(match name {
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305"
        | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => {
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => {
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        }
        _ => return None,
    })
}

fn read_pem_certs(what: &str, bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what}: not a PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what}: no PEM certificate in it"));
    }
    Ok(certs)
}

fn build_tls(t: TlsSchema, base: &Path) -> Result<(rustls::ServerConfig, Vec<String>), String> {
    let read = |key: &str, p: &str| -> Result<Vec<u8>, String> {
        let path = base.join(p);
        std::fs::read(&path)
            .map_err(|e| format!("tls_server_config.{key} `{}`: {e}", path.display()))
    };
    let cert_pem = match (&t.cert_file, &t.cert) {
        (Some(f), None) => read("cert_file", f)?,
        (None, Some(c)) => c.clone().into_bytes(),
        (Some(_), Some(_)) => {
            return Err("tls_server_config: give cert_file or cert, not both".into())
        }
        (None, None) => return Err("tls_server_config: cert_file (or cert) is required".into()),
    };
    let key_pem = match (&t.key_file, &t.key) {
        (Some(f), None) => read("key_file", f)?,
        (None, Some(k)) => k.clone().into_bytes(),
        (Some(_), Some(_)) => {
            return Err("tls_server_config: give key_file or key, not both".into())
        }
        (None, None) => return Err("tls_server_config: key_file (or key) is required".into()),
    };
    let certs = read_pem_certs("tls_server_config.cert_file", &cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        format!(
            "tls_server_config.key_file: no PEM private key (PKCS#8, PKCS#1 or SEC1) in it: {e}"
        )
    })?;

    let min = tls_version(
        "tls_server_config.min_version",
        t.min_version.as_deref().unwrap_or("TLS12"),
    )?;
    let max = tls_version(
        "tls_server_config.max_version",
        t.max_version.as_deref().unwrap_or("TLS13"),
    )?;
    if min > max {
        return Err("tls_server_config: min_version is above max_version".into());
    }
    let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
    if min <= 12 {
        versions.push(&rustls::version::TLS12);
    }
    if max >= 13 {
        versions.push(&rustls::version::TLS13);
    }

    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(names) = &t.cipher_suites {
        if !names.is_empty() {
            let mut suites: Vec<rustls::SupportedCipherSuite> = Vec::new();
            for n in names {
                let s = suite_of(n).ok_or_else(|| {
                    format!("tls_server_config.cipher_suites: `{n}` is not one rustls implements (ECDHE with AES-GCM or ChaCha20-Poly1305 only; CBC and RSA key exchange are not offered)")
                })?;
                suites.push(s);
            }
            // TLS 1.3 suites stay (not configurable, as in Go); the 1.2 ones are the list.
            let tls13: Vec<_> = provider
                .cipher_suites
                .iter()
                .copied()
                .filter(|s| s.version() == &rustls::version::TLS13)
                .collect();
            provider.cipher_suites = tls13.into_iter().chain(suites).collect();
        }
    }
    if let Some(curves) = &t.curve_preferences {
        if !curves.is_empty() {
            use rustls::crypto::ring::kx_group;
            let mut groups: Vec<&'static dyn rustls::crypto::SupportedKxGroup> = Vec::new();
            for c in curves {
                groups.push(match c.as_str() {
                    "X25519" => kx_group::X25519,
                    "CurveP256" => kx_group::SECP256R1,
                    "CurveP384" => kx_group::SECP384R1,
                    _ => {
                        return Err(format!(
                        "tls_server_config.curve_preferences: `{c}` is not supported (X25519, CurveP256, CurveP384)"
                    ))
                    }
                });
            }
            provider.kx_groups = groups;
        }
    }
    let provider = Arc::new(provider);

    let client_auth = t.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let ca_pem = match (&t.client_ca_file, &t.client_ca) {
        (Some(f), None) => Some(read("client_ca_file", f)?),
        (None, Some(c)) => Some(c.clone().into_bytes()),
        (Some(_), Some(_)) => {
            return Err("tls_server_config: give client_ca_file or client_ca, not both".into())
        }
        (None, None) => None,
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("tls_server_config: {e}"))?;
    let verifying = |ca: &Option<Vec<u8>>,
                     optional: bool|
     -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, String> {
        let Some(ca) = ca else {
            return Err(format!(
                "tls_server_config.client_auth_type {client_auth} needs client_ca_file"
            ));
        };
        let mut roots = rustls::RootCertStore::empty();
        for c in read_pem_certs("tls_server_config.client_ca_file", ca)? {
            roots
                .add(c)
                .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?;
        }
        let b = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        );
        let b = if optional {
            b.allow_unauthenticated()
        } else {
            b
        };
        b.build()
            .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))
    };
    let builder = match client_auth {
        "NoClientCert" => {
            if ca_pem.is_some() {
                log::warn!("web config: client_ca_file is set but client_auth_type is NoClientCert: client certificates are not asked for");
            }
            builder.with_no_client_auth()
        }
        "VerifyClientCertIfGiven" => builder.with_client_cert_verifier(verifying(&ca_pem, true)?),
        "RequireAndVerifyClientCert" => {
            builder.with_client_cert_verifier(verifying(&ca_pem, false)?)
        }
        "RequestClientCert" | "RequireAnyClientCert" => {
            return Err(format!(
                "tls_server_config.client_auth_type {client_auth}: a client certificate that is not verified proves nothing; netsleuth supports NoClientCert, VerifyClientCertIfGiven and RequireAndVerifyClientCert"
            ))
        }
        other => {
            return Err(format!(
                "tls_server_config.client_auth_type: unknown `{other}` (NoClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert)"
            ))
        }
    };
    let sans = t.client_allowed_sans.unwrap_or_default();
    if !sans.is_empty() && client_auth != "RequireAndVerifyClientCert" {
        return Err("tls_server_config.client_allowed_sans needs client_auth_type RequireAndVerifyClientCert".into());
    }
    let mut cfg = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls_server_config: certificate and key do not go together: {e}"))?;
    cfg.ignore_client_order = t.prefer_server_cipher_suites.unwrap_or(true);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((cfg, sans))
}

/// Whether a verified client certificate carries one of the allowed subject alternative names
/// (DNS or IP; exporter-toolkit compares every SAN of the certificate with the list).
pub fn client_san_allowed(cert: &CertificateDer<'_>, allowed: &[String]) -> bool {
    if allowed.is_empty() {
        return true;
    }
    let Ok(ee) = webpki::EndEntityCert::try_from(cert) else {
        return false;
    };
    allowed.iter().any(|name| {
        rustls::pki_types::ServerName::try_from(name.as_str())
            .ok()
            .is_some_and(|sn| ee.verify_is_valid_for_subject_name(&sn).is_ok())
    })
}

/// Each watched file's (mtime, size, inode), None when it is missing.
type Stamp = Vec<(PathBuf, Option<(SystemTime, u64, u64)>)>;

/// A web config that follows its file: checked for changes at most once a second.
pub struct Watched {
    path: Option<PathBuf>,
    state: Mutex<WatchState>,
}

struct WatchState {
    current: Arc<WebConfig>,
    stamp: Stamp,
    checked: Instant,
}

fn stamp_of(paths: &[PathBuf]) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    paths
        .iter()
        .map(|p| {
            let m = std::fs::metadata(p).ok();
            (
                p.clone(),
                m.map(|m| {
                    (
                        m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                        m.len(),
                        m.ino(),
                    )
                }),
            )
        })
        .collect()
}

impl Watched {
    /// No web config file: plain HTTP, no auth.
    pub fn plain() -> Watched {
        Watched {
            path: None,
            state: Mutex::new(WatchState {
                current: Arc::new(WebConfig::plain()),
                stamp: Vec::new(),
                checked: Instant::now(),
            }),
        }
    }

    /// Load `path` (an error here stops the start).
    pub fn load(path: &Path) -> Result<Watched, String> {
        let cfg = WebConfig::load(path)?;
        let w = Watched {
            path: Some(path.to_path_buf()),
            state: Mutex::new(WatchState {
                current: Arc::new(cfg),
                stamp: Vec::new(),
                checked: Instant::now(),
            }),
        };
        w.state.lock().unwrap_or_else(|e| e.into_inner()).stamp = w.stamps();
        Ok(w)
    }

    fn stamps(&self) -> Stamp {
        let Some(p) = &self.path else {
            return Vec::new();
        };
        let text = std::fs::read_to_string(p).unwrap_or_default();
        let mut files = vec![p.clone()];
        files.extend(WebConfig::files(
            &text,
            p.parent().unwrap_or(Path::new(".")),
        ));
        stamp_of(&files)
    }

    /// The configuration in force, re-read first when its files changed (at most once a second).
    pub fn current(&self) -> Arc<WebConfig> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(path) = &self.path else {
            return st.current.clone();
        };
        if st.checked.elapsed() < Duration::from_secs(1) {
            return st.current.clone();
        }
        st.checked = Instant::now();
        let stamp = self.stamps();
        if stamp != st.stamp {
            match WebConfig::load(path) {
                Ok(c) => {
                    log::info!("web config {} reloaded", path.display());
                    st.current = Arc::new(c);
                }
                Err(e) => log::error!("{e}; keeping the web config in force"),
            }
            st.stamp = stamp;
        }
        st.current.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash_of(pw: &str) -> String {
        bcrypt::hash_with_salt(pw, 4, [7u8; 16])
            .unwrap()
            .format_for_version(bcrypt::Version::TwoY)
    }

    #[test]
    fn basic_header_parsing() {
        assert_eq!(
            parse_basic("Basic YWxpY2U6cGE6c3M="),
            Some(("alice".into(), "pa:ss".into()))
        );
        assert_eq!(
            parse_basic("basic YWxpY2U6"),
            Some(("alice".into(), "".into()))
        );
        for bad in [
            "",
            "Basic",
            "Basic !!!!",
            "Bearer YWxpY2U6cGFzcw==",
            "Basic YWxpY2U",
            "Basic YQ==YQ==",
            "Basic bm9jb2xvbg==",
        ] {
            assert_eq!(parse_basic(bad), None, "{bad}");
        }
    }

    #[test]
    fn bcrypt_shapes() {
        let secret = hash_of("secret");
        assert!(check_bcrypt(&secret).is_ok());
        assert!(check_bcrypt(&dummy_hash(10)).is_ok());
        assert!(check_bcrypt(&dummy_hash(10)).is_ok());
        let hash_secret = secret.as_str();
        assert!(check_bcrypt("secret")
            .unwrap_err()
            .contains("not a bcrypt hash"));
        assert!(check_bcrypt(&hash_secret.replace("$04$", "$03$"))
            .unwrap_err()
            .contains("cost 3"));
        assert!(check_bcrypt(&hash_secret.replace("$04$", "$32$"))
            .unwrap_err()
            .contains("cost 32"));
        assert!(check_bcrypt(&hash_secret.replace("$2y$", "$2x$")).is_err());
        assert!(check_bcrypt(&hash_secret[..59]).is_err());
    }

    #[test]
    fn auth_checks_and_caches() {
        let hash = hash_of("secret");
        let cfg = WebConfig::parse(
            &format!("basic_auth_users:\n  alice: {hash}\n"),
            Path::new("."),
        )
        .unwrap();
        assert!(cfg.auth_required());
        let h = |u: &str, p: &str| basic_header(u, p);
        assert!(cfg.authorize(Some(&h("alice", "secret"))));
        assert!(cfg.authorize(Some(&h("alice", "secret"))), "cached answer");
        assert!(!cfg.authorize(Some(&h("alice", "wrong"))));
        assert!(!cfg.authorize(Some(&h("bob", "secret"))));
        assert!(!cfg.authorize(None));
        assert!(!cfg.authorize(Some("Basic %%%")));
    }

    /// The encoding the Loki sink's and the inspector's `Authorization` header use.
    #[test]
    fn base64_rfc4648() {
        use base64::Engine as _;
        assert_eq!(BASIC_B64.encode(b""), "");
        assert_eq!(BASIC_B64.encode(b"f"), "Zg==");
        assert_eq!(BASIC_B64.encode(b"fo"), "Zm8=");
        assert_eq!(BASIC_B64.encode(b"foo"), "Zm9v");
        assert_eq!(basic_header("user", "pass"), "Basic dXNlcjpwYXNz");
        assert_eq!(
            basic_header("u", "s3cret pass"),
            "Basic dTpzM2NyZXQgcGFzcw=="
        );
        assert_eq!(base64_decode("Zh==").unwrap(), b"f");
        assert_eq!(base64_decode(&"A".repeat(4100)), None);
    }

    #[test]
    fn errors_name_the_key() {
        let e = |t: &str| WebConfig::parse(t, Path::new("/nonexistent")).unwrap_err();
        assert!(
            e("tls_server_config:\n  cert_file: a\n  key_file: b\n  bogus: 1\n").contains("bogus")
        );
        assert!(e("rate_limit: {}\n").contains("rate_limit"));
        assert!(
            e("tls_server_config:\n  cert_file: a.pem\n  key_file: b.pem\n")
                .contains("cert_file `/nonexistent/a.pem`")
        );
        assert!(e("tls_server_config:\n  key_file: b.pem\n")
            .contains("cert_file (or cert) is required"));
        assert!(
            e("tls_server_config:\n  cert: \"garbage\"\n  key: \"garbage\"\n")
                .contains("no PEM certificate")
        );
        assert!(
            e("http_server_config:\n  headers:\n    Content-Length: '1'\n")
                .contains("`Content-Length` is not allowed")
        );
        assert!(
            e("http_server_config:\n  headers:\n    X-Frame-Options: allow\n").contains("deny")
        );
        assert!(e("basic_auth_users:\n  alice: plaintext\n").contains("basic_auth_users.alice"));
        assert!(
            e(&format!("basic_auth_users:\n  'a:b': '{}'\n", hash_of("x")))
                .contains("contains `:`")
        );
        assert!(WebConfig::parse("", Path::new(".")).unwrap().tls.is_none());
        assert_eq!(
            WebConfig::parse(
                "http_server_config:\n  headers:\n    x-content-type-options: nosniff\n",
                Path::new(".")
            )
            .unwrap()
            .headers,
            vec![("X-Content-Type-Options".to_string(), "nosniff".to_string())]
        );
    }

    #[test]
    fn tls_options_rustls_cannot_honour_are_refused() {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = ck.cert.pem();
        let key = ck.key_pair.serialize_pem();
        let base = |extra: &str| {
            format!(
                "tls_server_config:\n  cert: |\n{}\n  key: |\n{}\n{extra}",
                indent(&cert),
                indent(&key)
            )
        };
        let ok =
            |extra: &str| WebConfig::parse(&base(extra), Path::new(".")).map(|c| c.tls.is_some());
        assert_eq!(ok(""), Ok(true));
        assert_eq!(ok("  min_version: TLS13\n"), Ok(true));
        assert_eq!(ok("  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]\n  curve_preferences: [X25519, CurveP256]\n"), Ok(true));
        for (extra, msg) in [
            ("  min_version: TLS10\n", "TLS 1.2 and 1.3 only"),
            ("  max_version: TLS11\n", "TLS 1.2 and 1.3 only"),
            (
                "  min_version: TLS13\n  max_version: TLS12\n",
                "above max_version",
            ),
            (
                "  cipher_suites: [TLS_RSA_WITH_AES_128_CBC_SHA]\n",
                "TLS_RSA_WITH_AES_128_CBC_SHA",
            ),
            ("  curve_preferences: [CurveP521]\n", "CurveP521"),
            (
                "  client_auth_type: RequireAnyClientCert\n",
                "proves nothing",
            ),
            (
                "  client_auth_type: RequireAndVerifyClientCert\n",
                "needs client_ca_file",
            ),
            ("  client_auth_type: Sometimes\n", "unknown `Sometimes`"),
            ("  client_allowed_sans: [a]\n", "needs client_auth_type"),
        ] {
            let e = ok(extra).unwrap_err();
            assert!(e.contains(msg), "{extra}: {e}");
        }
    }

    fn indent(s: &str) -> String {
        s.lines()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
