//! `tls_server_config`: the rustls server config (versions, suites, curves, client
//! certificates) and the SAN check of a verified client certificate.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsSchema;

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

pub(super) fn build_tls(
    t: TlsSchema,
    base: &Path,
) -> Result<(rustls::ServerConfig, Vec<String>), String> {
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
