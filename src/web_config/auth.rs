//! Basic auth: the `Authorization` header's base64, exporter-toolkit's bcrypt hashes, and the
//! cache of verified passwords.

use std::collections::BTreeMap;
use std::sync::Mutex;

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
pub(super) fn check_bcrypt(h: &str) -> Result<(), String> {
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
pub(super) struct BasicAuth {
    pub(super) users: BTreeMap<String, String>,
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
    pub(super) fn new(users: BTreeMap<String, String>) -> BasicAuth {
        BasicAuth {
            users,
            cache: Mutex::new(std::collections::HashMap::new()),
        }
    }

    pub(super) fn check(&self, user: &str, password: &str) -> bool {
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::web_config::WebConfig;
    use std::path::Path;

    pub(crate) fn hash_of(pw: &str) -> String {
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
}
