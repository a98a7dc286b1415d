//! Client-side TLS for ureq, shared by the Loki sink and the inspector's client
//! ([`crate::top::client`]): the trust roots (the bundled Mozilla roots, or a CA file), a client
//! certificate, and errors an operator can act on. Every file is read and checked here, at
//! config time: rustls would ignore a bad CA certificate silently, and a key that does not fit
//! its certificate would panic inside ureq.

use std::path::PathBuf;
use std::sync::Arc;

/// How errors name each file: the config key (`caFile`) or the flag (`--tls.ca-file`).
pub(crate) struct TlsNames {
    pub ca: &'static str,
    pub cert: &'static str,
    pub key: &'static str,
    /// The error when only one of the certificate and the key is given.
    pub need_both: &'static str,
}

/// The files and switches of one client.
pub(crate) struct TlsFiles<'a> {
    pub ca_file: Option<&'a PathBuf>,
    pub cert_file: Option<&'a PathBuf>,
    pub key_file: Option<&'a PathBuf>,
    /// Accept any server certificate (the Loki sink's `insecureSkipVerify`).
    pub insecure_skip_verify: bool,
    pub names: TlsNames,
}

/// The ureq TLS config of `f`: roots, client certificate, verification.
pub(crate) fn ureq_tls(f: &TlsFiles) -> Result<ureq::tls::TlsConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};

    let n = &f.names;
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
    let der = |certs: &[CertificateDer<'static>]| -> Vec<Certificate<'static>> {
        certs
            .iter()
            .map(|c| Certificate::from_der(c.as_ref()).to_owned())
            .collect()
    };
    if let Some(p) = f.ca_file {
        let certs = certs_of(n.ca, p)?;
        let mut store = rustls::RootCertStore::empty();
        for (i, c) in certs.iter().enumerate() {
            store
                .add(c.clone())
                .map_err(|e| format!("{} `{}`: certificate {}: {e}", n.ca, p.display(), i + 1))?;
        }
        b = b.root_certs(RootCerts::new_with_certs(&der(&certs)));
    }
    match (f.cert_file, f.key_file) {
        (Some(cp), Some(kp)) => {
            let chain = certs_of(n.cert, cp)?;
            let key_err = |e: &dyn std::fmt::Display| format!("{} `{}`: {e}", n.key, kp.display());
            let pem = std::fs::read(kp).map_err(|e| key_err(&e))?;
            let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| key_err(&e))?;
            // What ureq will do, checked here: a key that does not fit would panic there.
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS: {e}"))?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|e| {
                    format!(
                        "{} `{}` / {} `{}`: {e}",
                        n.cert,
                        cp.display(),
                        n.key,
                        kp.display()
                    )
                })?;
            let key = PrivateKey::from_pem(&pem).map_err(|e| key_err(&e))?;
            b = b.client_cert(Some(ClientCert::new_with_certs(&der(&chain), key)));
        }
        (None, None) => {}
        _ => return Err(n.need_both.into()),
    }
    if f.insecure_skip_verify {
        b = b.disable_verification(true);
    }
    Ok(b.build())
}

/// A ureq error as an operator should read it, `bad_cert_hint` appended when the server's
/// certificate was refused.
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
