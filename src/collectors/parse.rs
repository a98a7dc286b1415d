//! The header/value line-pair format of `/proc/net/snmp` and `/proc/net/netstat`, shared by the
//! probes that read them ([`super::snmp`], [`super::netstat`]).

use rustc_hash::FxHashSet as HashSet;

use super::parse_int;
use crate::model::Value;

/// One kernel statistic: `Tcp` / `ActiveOpens` / 42.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat<'a> {
    pub group: &'a str,
    pub field: &'a str,
    pub value: Value,
}

/// Split a line into its group (text before the first `:`) and the rest.
fn split_group(line: &str) -> Option<(&str, &str)> {
    let (g, rest) = line.split_once(':')?;
    let g = g.trim();
    if g.is_empty() || g.contains(char::is_whitespace) {
        return None;
    }
    Some((g, rest))
}

/// Parse the header/value line-pair format of `/proc/net/snmp` and `/proc/net/netstat`.
///
/// A pair whose header and value lines have different numbers of fields is skipped (the other
/// groups are kept); a value that is not a decimal integer skips that field only; a repeated
/// `Group_Field` keeps its first value. Returns an error only when nothing at all could be
/// parsed, naming the first problem.
pub fn parse_pairs(data: &[u8]) -> Result<Vec<Stat<'_>>, String> {
    let mut lines = text_lines(data)
        .map(|l| l.unwrap_or(""))
        .enumerate()
        .peekable();
    let mut out = Vec::with_capacity(256);
    let mut first_err: Option<String> = None;
    while let Some((i, line)) = lines.next() {
        let Some((group, header)) = split_group(line) else {
            if !line.trim().is_empty() && first_err.is_none() {
                first_err = Some(format!("line {}: no `Group:` prefix", i + 1));
            }
            continue;
        };
        let next = lines.peek().and_then(|(_, l)| split_group(l));
        let Some((_, values)) = next.filter(|(g, _)| *g == group) else {
            if first_err.is_none() {
                first_err = Some(format!("group {group}: header without a value line"));
            }
            continue;
        };
        lines.next();
        // One pass over both lines; a pair whose counts differ is taken back out.
        let start = out.len();
        let (mut names, mut vals) = (
            header.split_ascii_whitespace(),
            values.split_ascii_whitespace(),
        );
        let (mut n_names, mut n_vals) = (0usize, 0usize);
        let mut bad: Option<String> = None;
        loop {
            match (names.next(), vals.next()) {
                (Some(name), Some(v)) => {
                    n_names += 1;
                    n_vals += 1;
                    match parse_int(v.as_bytes()) {
                        Some(value) => out.push(Stat {
                            group,
                            field: name,
                            value,
                        }),
                        None => {
                            bad.get_or_insert_with(|| {
                                format!("{group} {name}: `{v}` is not an integer")
                            });
                        }
                    }
                }
                (None, None) => break,
                (a, b) => {
                    n_names += usize::from(a.is_some()) + names.by_ref().count();
                    n_vals += usize::from(b.is_some()) + vals.by_ref().count();
                    break;
                }
            }
        }
        if n_names != n_vals {
            out.truncate(start);
            if first_err.is_none() {
                first_err = Some(format!(
                    "group {group}: {n_names} field names but {n_vals} values"
                ));
            }
            continue;
        }
        if first_err.is_none() {
            first_err = bad;
        }
    }
    if out.is_empty() {
        return Err(first_err.unwrap_or_else(|| "no statistics found".to_string()));
    }
    dedupe(&mut out);
    Ok(out)
}

/// The lines of `data`: all of them as text when the whole is valid UTF-8 (one check), else
/// line by line, `None` for a line that is not.
pub(super) fn text_lines(data: &[u8]) -> Box<dyn Iterator<Item = Option<&str>> + '_> {
    match std::str::from_utf8(data) {
        Ok(t) => Box::new(Lines(Some(t)).map(Some)),
        Err(_) => Box::new(
            data.split(|&b| b == b'\n')
                .map(|l| std::str::from_utf8(l).ok()),
        ),
    }
}

/// `str::split('\n')` with memchr's search: the pieces between newlines, the last one too
/// (empty after a final newline). The generic char searcher was 5 % of a scrape's
/// instructions over the hundreds of short lines of each namespace's files.
struct Lines<'a>(Option<&'a str>);

impl<'a> Iterator for Lines<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.0?;
        match memchr::memchr(b'\n', rest.as_bytes()) {
            Some(i) => {
                // `\n` is ASCII: both sides of it are on char boundaries.
                self.0 = Some(&rest[i + 1..]);
                Some(&rest[..i])
            }
            None => {
                self.0 = None;
                Some(rest)
            }
        }
    }
}

/// Drop repeated `(group, field)` keys, keeping the first value.
///
/// A kernel never repeats a key, and files with the same keys come by the hundred (one per
/// namespace), so a key sequence found free of repeats is remembered by a hash of its keys and
/// not checked with a set again.
pub(super) fn dedupe(items: &mut Vec<Stat<'_>>) {
    use std::hash::Hasher;
    static UNIQUE: std::sync::Mutex<Option<HashSet<u64>>> = std::sync::Mutex::new(None);
    let mut h = rustc_hash::FxHasher::default();
    for s in items.iter() {
        h.write(s.group.as_bytes());
        h.write_u8(0xff);
        h.write(s.field.as_bytes());
        h.write_u8(0xfe);
    }
    let key = h.finish();
    let known = |f: &mut dyn FnMut(&mut HashSet<u64>) -> bool| {
        let mut g = UNIQUE.lock().unwrap_or_else(|e| e.into_inner());
        f(g.get_or_insert_with(HashSet::default))
    };
    if known(&mut |set| set.contains(&key)) {
        return;
    }
    let mut seen: HashSet<(&str, &str)> =
        HashSet::with_capacity_and_hasher(items.len(), Default::default());
    let before = items.len();
    items.retain(|s| seen.insert((s.group, s.field)));
    if items.len() == before {
        known(&mut |set| {
            // Bounded: garbage input must not grow it (a cleared set only costs re-checks).
            if set.len() >= 1024 {
                set.clear();
            }
            set.insert(key)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_as_str_split_does() {
        for t in [
            "",
            "\n",
            "a",
            "a\n",
            "a\nb",
            "a\n\nb\n",
            "\n\nx\n\n",
            "Ip: Forwarding\nIp: 1\n",
            "ünï\ncodé\n",
        ] {
            let want: Vec<&str> = t.split('\n').collect();
            let got: Vec<&str> = Lines(Some(t)).collect();
            assert_eq!(got, want, "{t:?}");
            let via: Vec<Option<&str>> = text_lines(t.as_bytes()).collect();
            assert_eq!(via, want.iter().copied().map(Some).collect::<Vec<_>>());
        }
    }
}
