//! `metrics.additionalLabels` values that take pod labels, KubeSkoop's syntax:
//! `app=${labels:app}`, `team=t-${labels:example.com/team}`. Each `${labels:KEY}` is replaced
//! by the value of the pod's (or container's) label KEY, or by nothing if it has none; the
//! text around the placeholders is kept. Checked once when the config is read
//! ([`check`]); expanded for every namespace at every inventory scan ([`expand`]).

use std::borrow::Cow;
use std::collections::BTreeMap;

const OPEN: &str = "${labels:";

/// Whether `key` is a Kubernetes label key (`[prefix/]name`, at most 253+1+63 bytes of
/// letters, digits, `-`, `_`, `.`).
fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 317
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
        && key.matches('/').count() <= 1
        && !key.starts_with('/')
        && !key.ends_with('/')
}

/// Check a value: `Ok(true)` if it takes pod labels, `Ok(false)` if it is static, `Err`
/// naming what is wrong (an unterminated placeholder, a bad key, `${` of another kind).
pub fn check(value: &str) -> Result<bool, String> {
    let mut rest = value;
    let mut dynamic = false;
    while let Some(i) = rest.find("${") {
        let after = &rest[i..];
        let Some(body) = after.strip_prefix(OPEN) else {
            let shown: String = after.chars().take(24).collect();
            return Err(format!(
                "`{shown}`: only `${{labels:KEY}}` placeholders are known"
            ));
        };
        let Some(end) = body.find('}') else {
            return Err(format!("`{after}`: placeholder without its closing `}}`"));
        };
        let key = &body[..end];
        if !valid_key(key) {
            return Err(format!("`{key}` in `${{labels:{key}}}` is not a label key"));
        }
        dynamic = true;
        rest = &body[end + 1..];
    }
    Ok(dynamic)
}

/// The value with every `${labels:KEY}` replaced by `labels[KEY]` (empty if absent). A value
/// [`check`] did not accept is returned as it is.
pub fn expand<'a>(value: &'a str, labels: &BTreeMap<String, String>) -> Cow<'a, str> {
    if !value.contains(OPEN) || check(value).is_err() {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find(OPEN) {
        out.push_str(&rest[..i]);
        let body = &rest[i + OPEN.len()..];
        let end = body.find('}').unwrap_or(body.len());
        if let Some(v) = labels.get(&body[..end]) {
            out.push_str(v);
        }
        rest = body.get(end + 1..).unwrap_or("");
    }
    out.push_str(rest);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn expands_like_kubeskoop() {
        let l = m(&[("app", "web"), ("example.com/team", "a b"), ("empty", "")]);
        assert_eq!(expand("${labels:app}", &l), "web");
        assert_eq!(expand("pre-${labels:app}-post", &l), "pre-web-post");
        assert_eq!(
            expand("${labels:app}/${labels:example.com/team}", &l),
            "web/a b"
        );
        assert_eq!(expand("${labels:missing}", &l), "");
        assert_eq!(expand("x${labels:missing}y", &l), "xy");
        assert_eq!(expand("${labels:empty}", &l), "");
        assert_eq!(expand("static", &l), "static");
        assert_eq!(expand("${labels:app}", &BTreeMap::new()), "");
    }

    #[test]
    fn checks() {
        assert_eq!(check("dev"), Ok(false));
        assert_eq!(check("${labels:app}"), Ok(true));
        assert_eq!(check("a${labels:app.kubernetes.io/name}b"), Ok(true));
        for bad in [
            "${labels:app",
            "${labels:}",
            "${env:HOME}",
            "${labels:a b}",
            "${labels:/x}",
            "${labels:a/b/c}",
            "x${",
        ] {
            let e = check(bad).unwrap_err();
            assert!(!e.is_empty(), "{bad}");
        }
    }
}
