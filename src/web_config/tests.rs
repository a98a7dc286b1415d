//! The web config's parse errors and the TLS options refused.

use super::auth::tests::hash_of;
use super::*;

#[test]
fn errors_name_the_key() {
    let e = |t: &str| WebConfig::parse(t, Path::new("/nonexistent")).unwrap_err();
    assert!(e("tls_server_config:\n  cert_file: a\n  key_file: b\n  bogus: 1\n").contains("bogus"));
    assert!(e("rate_limit: {}\n").contains("rate_limit"));
    assert!(
        e("tls_server_config:\n  cert_file: a.pem\n  key_file: b.pem\n")
            .contains("cert_file `/nonexistent/a.pem`")
    );
    assert!(
        e("tls_server_config:\n  key_file: b.pem\n").contains("cert_file (or cert) is required")
    );
    assert!(
        e("tls_server_config:\n  cert: \"garbage\"\n  key: \"garbage\"\n")
            .contains("no PEM certificate")
    );
    assert!(
        e("http_server_config:\n  headers:\n    Content-Length: '1'\n")
            .contains("`Content-Length` is not allowed")
    );
    assert!(e("http_server_config:\n  headers:\n    X-Frame-Options: allow\n").contains("deny"));
    assert!(e("basic_auth_users:\n  alice: plaintext\n").contains("basic_auth_users.alice"));
    assert!(
        e(&format!("basic_auth_users:\n  'a:b': '{}'\n", hash_of("x"))).contains("contains `:`")
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
    let ok = |extra: &str| WebConfig::parse(&base(extra), Path::new(".")).map(|c| c.tls.is_some());
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
