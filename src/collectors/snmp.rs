//! The `ip`, `icmp`, `tcp` and `udp` probes: `/proc/<pid>/net/snmp` and `/proc/<pid>/net/snmp6`.
//!
//! `snmp` (and `netstat`, see [`super::netstat`]) is a sequence of line pairs, a header naming
//! the fields and a line of values, both prefixed by the group: `Tcp: RtoAlgorithm RtoMin ...` /
//! `Tcp: 1 200 ...`. `snmp6` has one `Ip6InReceives  123` line per field. Every field the kernel
//! prints is exportable: names are derived from the file, never from a list in this code, and a
//! per-probe `fields` regex over `Group_Field` (node_exporter's netstat convention) picks which.
//!
//! This module also holds what the header/value-pair probes share: [`parse_pairs`], the
//! per-field name cache [`NameCache`] and the lint-safe name builder [`metric_name`].

use rustc_hash::FxHashSet as HashSet;

use rustc_hash::FxHashMap as HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use super::{parse_int, CollectError, Collector, FieldFilter, NetnsCtx, ProbeArgs, ProbeSpec};
use crate::model::{snake_case, MetricKind, Sink, Value};

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
fn text_lines(data: &[u8]) -> Box<dyn Iterator<Item = Option<&str>> + '_> {
    match std::str::from_utf8(data) {
        Ok(t) => Box::new(t.split('\n').map(Some)),
        Err(_) => Box::new(
            data.split(|&b| b == b'\n')
                .map(|l| std::str::from_utf8(l).ok()),
        ),
    }
}

/// Parse `/proc/net/snmp`.
pub fn parse_snmp(data: &[u8]) -> Result<Vec<Stat<'_>>, String> {
    parse_pairs(data)
}

/// Split an snmp6 key into group and field: the group is the leading letters plus the digits
/// that follow them (`Ip6`, `Icmp6`, `Udp6`, `UdpLite6`), the field the rest (`InReceives`,
/// `InType133`).
fn split_snmp6_key(key: &str) -> Option<(&str, &str)> {
    let b = key.as_bytes();
    let letters = b.iter().take_while(|c| c.is_ascii_alphabetic()).count();
    let digits = b[letters..]
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .count();
    if letters == 0 || digits == 0 || letters + digits == b.len() {
        return None;
    }
    Some(key.split_at(letters + digits))
}

/// Parse `/proc/net/snmp6` (`Ip6InReceives   123` per line). Malformed lines are skipped; an
/// error only when nothing parses.
pub fn parse_snmp6(data: &[u8]) -> Result<Vec<Stat<'_>>, String> {
    let mut out = Vec::with_capacity(128);
    let mut first_err: Option<String> = None;
    for (n, line) in text_lines(data).enumerate() {
        let Some(line) = line else {
            first_err.get_or_insert_with(|| format!("line {}: not UTF-8", n + 1));
            continue;
        };
        let mut it = line.split_ascii_whitespace();
        let (Some(key), Some(v), None) = (it.next(), it.next(), it.next()) else {
            if !line.trim().is_empty() {
                first_err.get_or_insert_with(|| format!("line {}: not `Name value`", n + 1));
            }
            continue;
        };
        let Some((group, field)) = split_snmp6_key(key) else {
            first_err.get_or_insert_with(|| format!("line {}: no group in `{key}`", n + 1));
            continue;
        };
        let Some(value) = parse_int(v.as_bytes()) else {
            first_err.get_or_insert_with(|| format!("{key}: `{v}` is not an integer"));
            continue;
        };
        out.push(Stat {
            group,
            field,
            value,
        });
    }
    if out.is_empty() {
        return Err(first_err.unwrap_or_else(|| "no statistics found".to_string()));
    }
    dedupe(&mut out);
    Ok(out)
}

/// Drop repeated `(group, field)` keys, keeping the first value.
///
/// A kernel never repeats a key, and files with the same keys come by the hundred (one per
/// namespace), so a key sequence found free of repeats is remembered by a hash of its keys and
/// not checked with a set again.
fn dedupe(items: &mut Vec<Stat<'_>>) {
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

// ---------------------------------------------------------------------------------------------
// Names, shared by the procfs probes of this crate.

/// Words `promtool check metrics` flags as abbreviated units when they stand alone.
const UNIT_ABBREVIATIONS: &[&str] = &[
    "s", "ms", "us", "ns", "sec", "b", "kb", "mb", "gb", "tb", "pb", "m", "h", "d",
];

/// Build `<prefix>_<field words>` (plus `_total` for counters) so that it passes promtool's
/// lint whatever the kernel calls the field.
///
/// `field` is snake_case already. One rule keeps names lint-clean: a word promtool would
/// reject is glued to its neighbour instead of standing alone. That covers abbreviated units
/// (`HMacFailure` → `h_mac_failure` → `hmac_failure`; a trailing `_s` → glued to the word
/// before it) and, for gauges, a last word that is a suffix reserved for other types (`count`,
/// `sum`, `bucket`, `total`, `gauge`: `x_count` → `xcount`); a field that is one such word is
/// glued to the prefix (`netsleuth_sock_udp` + `count` → `netsleuth_sock_udpcount`). Returns `None` for a field without
/// any letter or digit.
pub fn metric_name(prefix: &str, field: &str, kind: MetricKind) -> Option<String> {
    let mut words: Vec<String> = field
        .split('_')
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect();
    if words.is_empty() {
        return None;
    }
    let bad = |w: &str, last: bool| {
        UNIT_ABBREVIATIONS.contains(&w)
            || (kind == MetricKind::Counter && last && w == "counter")
            || (kind == MetricKind::Gauge
                && last
                && matches!(w, "count" | "sum" | "bucket" | "total" | "gauge"))
    };
    let mut i = 0;
    while i < words.len() {
        let last = i + 1 == words.len();
        if bad(&words[i], last) && words.len() > 1 {
            if last {
                let w = words.remove(i);
                words[i - 1].push_str(&w);
            } else {
                let next = words.remove(i + 1);
                words[i].push_str(&next);
            }
            // Re-check the merged word (it may have become another reserved word).
            i = i.saturating_sub(1);
            continue;
        }
        i += 1;
    }
    let mut name = String::with_capacity(prefix.len() + field.len() + 8);
    name.push_str(prefix);
    // A lone bad word is glued to the prefix (`netsleuth_sock_udp` + `count`).
    if words.len() == 1 && bad(&words[0], true) {
        name.push_str(&words[0]);
        words.clear();
    }
    for w in &words {
        name.push('_');
        name.push_str(w);
    }
    if kind == MetricKind::Counter {
        name.push_str("_total");
    }
    Some(name)
}

/// A metric's name, help and type for one kernel field, plus a scale applied to the value
/// (sockstat `mem` is in pages, exported in bytes).
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub help: String,
    pub kind: MetricKind,
    pub scale: u64,
    /// The family, registered once, so emitting skips the name lookup.
    fam: crate::model::FamilyId,
}

impl Entry {
    pub fn new(name: String, help: String, kind: MetricKind) -> Self {
        let fam = crate::model::family(&name, &help, kind);
        Entry {
            name,
            help,
            kind,
            scale: 1,
            fam,
        }
    }

    /// Emit `value` (scaled) under this entry. A scaled value that overflows is dropped.
    pub fn emit(&self, out: &mut dyn Sink, labels: &[(&str, &str)], value: Value) {
        let v = if self.scale == 1 {
            value
        } else {
            match value {
                Value::U64(v) => match v.checked_mul(self.scale) {
                    Some(v) => Value::U64(v),
                    None => return,
                },
                Value::I64(v) => match i64::try_from(self.scale)
                    .ok()
                    .and_then(|s| v.checked_mul(s))
                {
                    Some(v) => Value::I64(v),
                    None => return,
                },
                Value::F64(v) => Value::F64(v * self.scale as f64),
            }
        };
        if self.fam.kind() == self.kind {
            out.emit_family(self.fam, &self.name, &self.help, labels, v);
        } else {
            // Registered earlier with another kind: `emit` drops it with a warning.
            out.emit(&self.name, &self.help, self.kind, labels, v);
        }
    }
}

/// Most entries a cache keeps; beyond that (garbage input) names are built per sample.
const CACHE_LIMIT: usize = 4096;

/// Longest key sequence a cache follows (a file with more keys uses the maps only).
const SEQ_LIMIT: usize = 4096;

/// How far ahead a [`Cursor`] looks for a key the file skipped (an `IcmpMsg` type one
/// namespace has and another has not).
const RESYNC: usize = 4;

/// Entries by group, then field.
type EntryMap = HashMap<String, HashMap<String, Option<Arc<Entry>>>>;

/// A key and its entry (`None`: filtered out).
type SeqItem = (Box<str>, Box<str>, Option<Arc<Entry>>);

/// Per-collector cache of the filter decision and metric name for each `(group, field)`, so a
/// namespace's collection neither runs regexes nor allocates names. `None` means "filtered
/// out".
///
/// Namespaces on one kernel print the same keys in the same order, so besides the maps the
/// cache keeps the last file's key sequence: a [`Cursor`] walking a new file finds each entry
/// with one string comparison against the next key of that sequence, and only falls back to
/// the maps where the file differs.
#[derive(Debug, Default)]
pub struct NameCache {
    map: RwLock<EntryMap>,
    len: AtomicUsize,
    seq: RwLock<Arc<Vec<SeqItem>>>,
}

impl NameCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Start emitting one file's keys in order.
    pub fn cursor(&self) -> Cursor<'_> {
        Cursor {
            cache: self,
            seq: self.seq.read().unwrap_or_else(|e| e.into_inner()).clone(),
            pos: 0,
            misses: 0,
            record: None,
        }
    }

    /// Emit `value` for `(group, field)`, building its entry with `make` the first time.
    pub fn emit(
        &self,
        group: &str,
        field: &str,
        value: Value,
        labels: &[(&str, &str)],
        out: &mut dyn Sink,
        make: &dyn Fn(&str, &str) -> Option<Entry>,
    ) {
        if let Some(e) = self.lookup(group, field, make) {
            e.emit(out, labels, value);
        }
    }

    /// The entry of `(group, field)` from the maps, built with `make` the first time.
    fn lookup(
        &self,
        group: &str,
        field: &str,
        make: &dyn Fn(&str, &str) -> Option<Entry>,
    ) -> Option<Arc<Entry>> {
        {
            let m = self.map.read().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = m.get(group).and_then(|g| g.get(field)) {
                return e.clone();
            }
        }
        let e = make(group, field).map(Arc::new);
        if self.len.load(Ordering::Relaxed) < CACHE_LIMIT {
            let mut m = self.map.write().unwrap_or_else(|e| e.into_inner());
            let g = m.entry(group.to_string()).or_default();
            if g.insert(field.to_string(), e.clone()).is_none() {
                self.len.fetch_add(1, Ordering::Relaxed);
            }
        }
        e
    }
}

/// Emits one file's keys through a [`NameCache`], following the cache's last key sequence; if
/// the file strays from it by more than a few keys, the file's own sequence replaces it when
/// the cursor is dropped.
pub struct Cursor<'c> {
    cache: &'c NameCache,
    seq: Arc<Vec<SeqItem>>,
    pos: usize,
    misses: usize,
    /// This file's sequence, recorded from the first miss on (when it may replace the cache's).
    record: Option<Vec<SeqItem>>,
}

impl Cursor<'_> {
    /// Emit `value` for the file's next key `(group, field)`.
    pub fn emit(
        &mut self,
        group: &str,
        field: &str,
        value: Value,
        labels: &[(&str, &str)],
        out: &mut dyn Sink,
        make: &dyn Fn(&str, &str) -> Option<Entry>,
    ) {
        let same = |it: &SeqItem| *it.0 == *group && *it.1 == *field;
        // A file repeating its keys (one block per device) starts the sequence over.
        if self.pos == self.seq.len() && self.seq.first().is_some_and(same) {
            self.pos = 0;
        }
        let found =
            (self.pos..(self.pos + RESYNC).min(self.seq.len())).find(|&i| same(&self.seq[i]));
        if let Some(i) = found {
            if i != self.pos {
                self.miss();
            }
            self.pos = i + 1;
            // Borrowed from the sequence: no reference count touched on the hot path.
            let entry = &self.seq[i].2;
            if let Some(r) = &mut self.record {
                if r.len() < SEQ_LIMIT {
                    r.push((group.into(), field.into(), entry.clone()));
                }
            }
            if let Some(e) = entry {
                e.emit(out, labels, value);
            }
            return;
        }
        self.miss();
        let entry = self.cache.lookup(group, field, make);
        if let Some(r) = &mut self.record {
            if r.len() < SEQ_LIMIT {
                r.push((group.into(), field.into(), entry.clone()));
            }
        }
        if let Some(e) = entry {
            e.emit(out, labels, value);
        }
    }

    fn miss(&mut self) {
        self.misses += 1;
        if self.record.is_none() {
            // Everything before the first miss followed the sequence (in the current pass
            // over it, for files that repeat their keys).
            self.record = Some(self.seq[..self.pos.min(self.seq.len())].to_vec());
        }
    }
}

impl Drop for Cursor<'_> {
    fn drop(&mut self) {
        // A few strays (an ICMP type more or less) are cheap to skip; a different layout
        // (another kernel's file, a cold cache) becomes the sequence to follow.
        if self.misses > RESYNC {
            if let Some(r) = self.record.take() {
                *self.cache.seq.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(r);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The probes.

pub const DEFAULT_IP: &str = "Ip_(Forwarding|DefaultTTL|InReceives|InHdrErrors|InAddrErrors|ForwDatagrams|InUnknownProtos|InDiscards|InDelivers|OutRequests|OutDiscards|OutNoRoutes|ReasmTimeout|ReasmReqds|ReasmOKs|ReasmFails|FragOKs|FragFails|FragCreates)|Ip6_(InReceives|InDelivers|OutRequests|InDiscards|OutDiscards|InNoRoutes|OutNoRoutes|InOctets|OutOctets|InHdrErrors|InAddrErrors)";
pub const DEFAULT_ICMP: &str =
    "Icmp6?_(InMsgs|OutMsgs|InErrors|OutErrors|InDestUnreachs|OutDestUnreachs|InCsumErrors)";
pub const DEFAULT_TCP: &str = "Tcp_(ActiveOpens|PassiveOpens|AttemptFails|EstabResets|CurrEstab|InSegs|OutSegs|RetransSegs|InErrs|OutRsts|InCsumErrors)";
/// UdpLite and UdpLite6 are exportable but off by default (almost nobody uses UDP-Lite).
pub const DEFAULT_UDP: &str = "Udp6?_(InDatagrams|NoPorts|InErrors|OutDatagrams|RcvbufErrors|SndbufErrors|InCsumErrors|IgnoredMulti)";

/// Which probe owns which groups.
const IP_GROUPS: &[&str] = &["Ip", "Ip6"];
const ICMP_GROUPS: &[&str] = &["Icmp", "IcmpMsg", "Icmp6"];
const TCP_GROUPS: &[&str] = &["Tcp"];
const UDP_GROUPS: &[&str] = &["Udp", "UdpLite", "Udp6", "UdpLite6"];

/// Fields that are values, not counters.
fn is_gauge(group: &str, field: &str) -> bool {
    matches!(
        (group, field),
        (
            "Tcp",
            "RtoAlgorithm" | "RtoMin" | "RtoMax" | "MaxConn" | "CurrEstab"
        ) | ("Ip", "Forwarding" | "DefaultTTL")
    )
}

/// English help for well-known fields.
fn known_help(group: &str, field: &str) -> Option<&'static str> {
    Some(match (group, field) {
        ("Tcp", "RtoAlgorithm") => "TCP retransmission timeout algorithm, 1 = other (Tcp RtoAlgorithm in /proc/net/snmp).",
        ("Tcp", "RtoMin") => "Minimum TCP retransmission timeout in milliseconds (Tcp RtoMin in /proc/net/snmp).",
        ("Tcp", "RtoMax") => "Maximum TCP retransmission timeout in milliseconds (Tcp RtoMax in /proc/net/snmp).",
        ("Tcp", "MaxConn") => "Limit on TCP connections, -1 if dynamic (Tcp MaxConn in /proc/net/snmp).",
        ("Tcp", "ActiveOpens") => "TCP connections opened actively, SYN sent (Tcp ActiveOpens in /proc/net/snmp).",
        ("Tcp", "PassiveOpens") => "TCP connections opened passively, SYN received (Tcp PassiveOpens in /proc/net/snmp).",
        ("Tcp", "AttemptFails") => "TCP connection attempts that failed (Tcp AttemptFails in /proc/net/snmp).",
        ("Tcp", "EstabResets") => "TCP connections reset from ESTABLISHED or CLOSE-WAIT (Tcp EstabResets in /proc/net/snmp).",
        ("Tcp", "CurrEstab") => "TCP connections currently in ESTABLISHED or CLOSE-WAIT (Tcp CurrEstab in /proc/net/snmp).",
        ("Tcp", "InSegs") => "TCP segments received, including errors (Tcp InSegs in /proc/net/snmp).",
        ("Tcp", "OutSegs") => "TCP segments sent, excluding retransmissions (Tcp OutSegs in /proc/net/snmp).",
        ("Tcp", "RetransSegs") => "TCP segments retransmitted (Tcp RetransSegs in /proc/net/snmp).",
        ("Tcp", "InErrs") => "TCP segments received in error (Tcp InErrs in /proc/net/snmp).",
        ("Tcp", "OutRsts") => "TCP segments sent with the RST flag (Tcp OutRsts in /proc/net/snmp).",
        ("Tcp", "InCsumErrors") => "TCP segments received with a bad checksum (Tcp InCsumErrors in /proc/net/snmp).",
        ("Ip", "Forwarding") => "IPv4 forwarding, 1 = enabled, 2 = disabled (Ip Forwarding in /proc/net/snmp).",
        ("Ip", "DefaultTTL") => "Default IPv4 time-to-live (Ip DefaultTTL in /proc/net/snmp).",
        ("Ip", "InReceives") => "IPv4 datagrams received, including errors (Ip InReceives in /proc/net/snmp).",
        ("Ip", "InDelivers") => "IPv4 datagrams delivered to upper layers (Ip InDelivers in /proc/net/snmp).",
        ("Ip", "OutRequests") => "IPv4 datagrams handed to IP for sending (Ip OutRequests in /proc/net/snmp).",
        ("Ip", "InDiscards") => "IPv4 datagrams received and discarded without error, e.g. lack of buffers (Ip InDiscards in /proc/net/snmp).",
        ("Ip", "OutNoRoutes") => "IPv4 datagrams dropped for lack of a route (Ip OutNoRoutes in /proc/net/snmp).",
        ("Ip", "ForwDatagrams") => "IPv4 datagrams forwarded (Ip ForwDatagrams in /proc/net/snmp).",
        ("Udp", "InDatagrams") => "UDP datagrams delivered to sockets (Udp InDatagrams in /proc/net/snmp).",
        ("Udp", "OutDatagrams") => "UDP datagrams sent (Udp OutDatagrams in /proc/net/snmp).",
        ("Udp", "NoPorts") => "UDP datagrams received for a port with no listener (Udp NoPorts in /proc/net/snmp).",
        ("Udp", "InErrors") => "UDP datagrams that could not be delivered, other than for lack of a port (Udp InErrors in /proc/net/snmp).",
        ("Udp", "RcvbufErrors") => "UDP datagrams dropped because the socket receive buffer was full (Udp RcvbufErrors in /proc/net/snmp).",
        ("Udp", "SndbufErrors") => "UDP datagrams dropped because the socket send buffer was full (Udp SndbufErrors in /proc/net/snmp).",
        ("Udp6", "RcvbufErrors") => "UDP over IPv6 datagrams dropped because the socket receive buffer was full (Udp6 RcvbufErrors in /proc/net/snmp6).",
        ("Icmp", "InMsgs") => "ICMP messages received, including errors (Icmp InMsgs in /proc/net/snmp).",
        ("Icmp", "OutMsgs") => "ICMP messages sent (Icmp OutMsgs in /proc/net/snmp).",
        ("Ip6", "InReceives") => "IPv6 datagrams received, including errors (Ip6 InReceives in /proc/net/snmp6).",
        _ => return None,
    })
}

/// `netsleuth_<group lowercased>`, keeping only letters and digits (`IcmpMsg` → `icmpmsg`).
pub fn group_prefix(group: &str) -> String {
    let mut p = String::with_capacity(group.len() + 10);
    p.push_str("netsleuth_");
    p.extend(
        group
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase()),
    );
    p
}

/// Build the entry for a field of a header/value or snmp6 file. `file` is the path shown in
/// help (`/proc/net/snmp`).
pub fn make_entry(
    filter: &FieldFilter,
    group: &str,
    field: &str,
    kind: MetricKind,
    file: &str,
) -> Option<Entry> {
    let mut key = String::with_capacity(group.len() + field.len() + 1);
    key.push_str(group);
    key.push('_');
    key.push_str(field);
    if !filter.matches(&key) {
        return None;
    }
    let prefix = group_prefix(group);
    let name = metric_name(&prefix, &snake_case(field), kind)?;
    let help = match known_help(group, field) {
        Some(h) => h.to_string(),
        None => format!(
            "Kernel {} {group} {field} from {file}.",
            if kind == MetricKind::Counter {
                "counter"
            } else {
                "value"
            }
        ),
    };
    Some(Entry::new(name, help, kind))
}

struct SnmpProbe {
    name: &'static str,
    groups: &'static [&'static str],
    filter: FieldFilter,
    /// One cache per file (`snmp`, `snmp6`): each follows its own key sequence.
    names: [NameCache; 2],
}

impl SnmpProbe {
    fn emit_stats<'s>(
        &self,
        stats: impl Iterator<Item = Stat<'s>>,
        file: &str,
        out: &mut dyn Sink,
    ) {
        let mut cur = self.names[usize::from(file.ends_with('6'))].cursor();
        // Keys come grouped: decide per run of one group, not per key.
        let mut last: (&str, bool) = ("", false);
        for s in stats {
            if s.group != last.0 {
                last = (s.group, self.groups.contains(&s.group));
            }
            if !last.1 {
                continue;
            }
            let make = |g: &str, f: &str| {
                let kind = if is_gauge(g, f) {
                    MetricKind::Gauge
                } else {
                    MetricKind::Counter
                };
                make_entry(&self.filter, g, f, kind, file)
            };
            cur.emit(s.group, s.field, s.value, &[], out, &make);
        }
    }
}

impl Collector for SnmpProbe {
    fn name(&self) -> &'static str {
        self.name
    }

    fn collect(&self, ctx: &NetnsCtx, out: &mut dyn Sink) -> Result<(), CollectError> {
        let wants_v4 = self.groups.iter().any(|g| !g.ends_with('6'));
        let wants_v6 = self.groups.iter().any(|g| g.ends_with('6'));
        if wants_v4 {
            let stats = ctx.stats("snmp", parse_snmp)?;
            self.emit_stats(stats.iter(), "/proc/net/snmp", out);
        }
        if wants_v6 {
            // No snmp6 when IPv6 is disabled: the IPv4 groups stand alone.
            let stats = match ctx.stats("snmp6", parse_snmp6) {
                Ok(s) => s,
                Err(CollectError::NotAvailable(_)) if wants_v4 => return Ok(()),
                Err(e) => return Err(e),
            };
            self.emit_stats(stats.iter(), "/proc/net/snmp6", out);
        }
        Ok(())
    }
}

fn build(
    args: &mut ProbeArgs,
    name: &'static str,
    groups: &'static [&'static str],
    default: &str,
) -> Result<Box<dyn Collector>, String> {
    let filter = FieldFilter::from_args(args, default)?;
    std::mem::take(args).finish()?;
    Ok(Box::new(SnmpProbe {
        name,
        groups,
        filter,
        names: [NameCache::new(), NameCache::new()],
    }))
}

fn available() -> Result<(), String> {
    super::require_file("/proc/self/net/snmp")
}

pub fn specs() -> Vec<ProbeSpec> {
    vec![
        ProbeSpec {
            name: "ip",
            description: "IPv4 and IPv6 counters (Ip in /proc/net/snmp, Ip6 in /proc/net/snmp6)",
            default_fields: Some(DEFAULT_IP),
            default_enabled: true,
            build: |a| build(a, "ip", IP_GROUPS, DEFAULT_IP),
            available,
        },
        ProbeSpec {
            name: "icmp",
            description: "ICMP counters (Icmp, IcmpMsg in /proc/net/snmp, Icmp6 in /proc/net/snmp6)",
            default_fields: Some(DEFAULT_ICMP),
            default_enabled: true,
            build: |a| build(a, "icmp", ICMP_GROUPS, DEFAULT_ICMP),
            available,
        },
        ProbeSpec {
            name: "tcp",
            description: "TCP counters and connection gauges (Tcp in /proc/net/snmp)",
            default_fields: Some(DEFAULT_TCP),
            default_enabled: true,
            build: |a| build(a, "tcp", TCP_GROUPS, DEFAULT_TCP),
            available,
        },
        ProbeSpec {
            name: "udp",
            description: "UDP counters (Udp, UdpLite in /proc/net/snmp, Udp6, UdpLite6 in /proc/net/snmp6); UdpLite is off by default",
            default_fields: Some(DEFAULT_UDP),
            default_enabled: true,
            build: |a| build(a, "udp", UDP_GROUPS, DEFAULT_UDP),
            available,
        },
    ]
}

/// Helpers shared by the procfs probes' unit tests.
#[cfg(test)]
pub(crate) mod testutil {
    use std::path::{Path, PathBuf};

    use super::super::{Collector, NetnsCtx, ProbeArgs, ProbeSpec};
    use crate::model::{Families, MetricKind};

    pub fn fixture_dir(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/procfs")
            .join(rel)
    }

    pub fn fixture(rel: &str) -> Vec<u8> {
        std::fs::read(fixture_dir(rel)).unwrap_or_else(|e| panic!("fixture {rel}: {e}"))
    }

    pub fn spec(specs: Vec<ProbeSpec>, name: &str) -> ProbeSpec {
        specs.into_iter().find(|s| s.name == name).expect("probe")
    }

    /// Build a probe from a YAML args string (`""` for defaults).
    pub fn build_probe(specs: Vec<ProbeSpec>, name: &str, args: &str) -> Box<dyn Collector> {
        let s = spec(specs, name);
        let y: serde_norway::Value = if args.is_empty() {
            serde_norway::Value::Null
        } else {
            serde_norway::from_str(args).unwrap()
        };
        let mut a = ProbeArgs::from_yaml(name, &y).unwrap();
        (s.build)(&mut a).unwrap()
    }

    /// Run a collector on `<fixture>/net` with `<fixture>/proc` as proc root and render.
    pub fn run(c: &dyn Collector, fixture: &str, pids: &[i32]) -> (String, Result<(), String>) {
        let root = fixture_dir(fixture);
        let proc_root = root.join("proc");
        // Fixtures are captured from the host namespace.
        let ctx = NetnsCtx::new(1, root.join("net"), &proc_root, false, pids).with_host(true);
        let mut f = Families::new();
        let r = c.collect(&ctx, &mut f.sink("")).map_err(|e| e.to_string());
        let mut s = String::new();
        f.render(&mut s);
        (s, r)
    }

    /// Only the sample lines of a rendering.
    pub fn samples(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    /// The rules of `promtool check metrics` that depend on the name and type (snake_case,
    /// `_total` exactly on counters, no reserved `_count`/`_sum`/`_bucket` suffix, no
    /// abbreviated unit, no type in the name), returning the problem or `None`.
    pub fn lint(name: &str, kind: MetricKind) -> Option<String> {
        let ok_chars = name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !ok_chars || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Some(format!("{name}: not snake_case"));
        }
        let counter = kind == MetricKind::Counter;
        if counter != name.ends_with("_total") {
            return Some(format!("{name}: _total mismatch for {kind:?}"));
        }
        for suf in ["_count", "_sum", "_bucket"] {
            if name.ends_with(suf) {
                return Some(format!("{name}: reserved suffix {suf}"));
            }
        }
        for a in super::UNIT_ABBREVIATIONS {
            if name.contains(&format!("_{a}_")) || name.ends_with(&format!("_{a}")) {
                return Some(format!("{name}: abbreviated unit {a}"));
            }
        }
        let t = kind.as_str();
        if name.contains(&format!("_{t}_")) || name.ends_with(&format!("_{t}")) {
            return Some(format!("{name}: type in name"));
        }
        None
    }

    /// Lint every family of a rendering.
    pub fn lint_rendering(text: &str) {
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                let (name, t) = rest.split_once(' ').unwrap();
                let kind = if t == "counter" {
                    MetricKind::Counter
                } else {
                    MetricKind::Gauge
                };
                assert_eq!(lint(name, kind), None);
            }
            if let Some(rest) = l.strip_prefix("# HELP ") {
                let (_, help) = rest.split_once(' ').unwrap();
                assert!(help.ends_with('.') && help.len() > 20, "{l}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    fn get<'a>(s: &'a [Stat<'a>], g: &str, f: &str) -> Option<Value> {
        s.iter()
            .find(|x| x.group == g && x.field == f)
            .map(|x| x.value)
    }

    #[test]
    fn snmp_6_18_real() {
        let d = fixture("6.18/net/snmp");
        let s = parse_snmp(&d).unwrap();
        assert_eq!(get(&s, "Tcp", "MaxConn"), Some(Value::I64(-1)));
        assert_eq!(get(&s, "Tcp", "RtoMax"), Some(Value::U64(120000)));
        assert_eq!(get(&s, "Tcp", "ActiveOpens"), Some(Value::U64(1)));
        assert_eq!(get(&s, "Tcp", "OutRsts"), Some(Value::U64(1)));
        assert_eq!(get(&s, "Ip", "Forwarding"), Some(Value::U64(2)));
        // Added in 6.x: found without any code knowing it.
        assert_eq!(get(&s, "Ip", "OutTransmits"), Some(Value::U64(6)));
        assert_eq!(get(&s, "Icmp", "OutRateLimitHost"), Some(Value::U64(0)));
        assert_eq!(get(&s, "IcmpMsg", "InType3"), Some(Value::U64(2)));
        assert_eq!(get(&s, "Udp", "NoPorts"), Some(Value::U64(2)));
        assert_eq!(get(&s, "UdpLite", "MemErrors"), Some(Value::U64(0)));
        assert_eq!(s.len(), 20 + 29 + 2 + 15 + 9 + 9);
    }

    #[test]
    fn snmp_4_19_format() {
        let d = fixture("4.19/net/snmp");
        let s = parse_snmp(&d).unwrap();
        assert_eq!(get(&s, "Ip", "OutTransmits"), None);
        assert_eq!(get(&s, "Ip", "InReceives"), Some(Value::U64(1836518)));
        assert_eq!(get(&s, "Tcp", "RetransSegs"), Some(Value::U64(2310)));
        assert_eq!(get(&s, "Udp", "RcvbufErrors"), Some(Value::U64(5)));
        assert_eq!(get(&s, "Udp", "MemErrors"), None);
        assert_eq!(s.len(), 19 + 27 + 2 + 15 + 8 + 8);
    }

    #[test]
    fn snmp6_formats() {
        let d = fixture("6.18/net/snmp6");
        let s = parse_snmp6(&d).unwrap();
        assert_eq!(get(&s, "Ip6", "InReceives"), Some(Value::U64(0)));
        assert_eq!(get(&s, "Udp6", "MemErrors"), Some(Value::U64(0)));
        assert_eq!(get(&s, "UdpLite6", "InCsumErrors"), Some(Value::U64(0)));
        assert_eq!(get(&s, "Icmp6", "OutMLDv2Reports"), Some(Value::U64(0)));
        assert_eq!(s.len(), d.iter().filter(|&&b| b == b'\n').count());

        let d = fixture("4.19/net/snmp6");
        let s = parse_snmp6(&d).unwrap();
        assert_eq!(get(&s, "Ip6", "InReceives"), Some(Value::U64(2231)));
        assert_eq!(get(&s, "Ip6", "InOctets"), Some(Value::U64(u64::MAX)));
        assert_eq!(get(&s, "Icmp6", "InType135"), Some(Value::U64(19)));
        assert_eq!(get(&s, "Icmp6", "OutType143"), Some(Value::U64(8)));
        assert_eq!(get(&s, "Udp6", "RcvbufErrors"), Some(Value::U64(9)));
        assert_eq!(s.len(), 19);
    }

    #[test]
    fn mismatched_group_skipped_rest_kept() {
        let d = b"Tcp: A B C\nTcp: 1 2\nUdp: X Y\nUdp: 3 4\nIp: F\nIp: zz\n";
        let s = parse_snmp(d).unwrap();
        assert_eq!(
            s,
            vec![
                Stat {
                    group: "Udp",
                    field: "X",
                    value: Value::U64(3)
                },
                Stat {
                    group: "Udp",
                    field: "Y",
                    value: Value::U64(4)
                }
            ]
        );
        let e = parse_snmp(b"Tcp: A B C\nTcp: 1 2\n").unwrap_err();
        assert_eq!(e, "group Tcp: 3 field names but 2 values");
    }

    #[test]
    fn garbage_never_panics() {
        for d in [
            &b""[..],
            b"\n\n\n",
            b":",
            b": :\n: :",
            b"Tcp:",
            b"Tcp: A\n",
            b"Tcp: A\nUdp: 1\n",
            b"\xff\xfe:\x00 1\n\xff\xfe:\x00 1",
            b"Ip6",
            b"6 6\n66 6\nIp6 x\nIp6In 1 2\n",
        ] {
            assert!(parse_snmp(d).is_err(), "{d:?}");
            assert!(parse_snmp6(d).is_err(), "{d:?}");
        }
        // Truncated real file: the complete pairs survive.
        let d = fixture("6.18/net/snmp");
        let cut = &d[..d.len() / 2];
        assert!(get(&parse_snmp(cut).unwrap(), "Ip", "InReceives").is_some());
        let long = format!(
            "Tcp: {}\nTcp: {}\n",
            "A ".repeat(100_000),
            "1 ".repeat(100_000)
        );
        assert_eq!(parse_snmp(long.as_bytes()).unwrap().len(), 1);
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut buf = Vec::new();
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf.push(b"Tcp: 1-\n 6aIp:"[(x % 14) as usize]);
        }
        let _ = parse_snmp(&buf);
        let _ = parse_snmp6(&buf);
    }

    #[test]
    fn tcp_default_rendering() {
        let c = build_probe(specs(), "tcp", "");
        let (text, r) = run(c.as_ref(), "6.18", &[]);
        r.unwrap();
        assert_eq!(
            samples(&text),
            vec![
                "netsleuth_tcp_active_opens_total 1",
                "netsleuth_tcp_attempt_fails_total 1",
                "netsleuth_tcp_curr_estab 0",
                "netsleuth_tcp_estab_resets_total 0",
                "netsleuth_tcp_in_csum_errors_total 0",
                "netsleuth_tcp_in_errs_total 0",
                "netsleuth_tcp_in_segs_total 2",
                "netsleuth_tcp_out_rsts_total 1",
                "netsleuth_tcp_out_segs_total 2",
                "netsleuth_tcp_passive_opens_total 0",
                "netsleuth_tcp_retrans_segs_total 0",
            ]
        );
        assert!(text.contains(
            "# HELP netsleuth_tcp_retrans_segs_total TCP segments retransmitted (Tcp RetransSegs in /proc/net/snmp).\n# TYPE netsleuth_tcp_retrans_segs_total counter\n"
        ));
        assert!(text.contains("# TYPE netsleuth_tcp_curr_estab gauge\n"));
        // The second collection uses the cache and renders the same.
        assert_eq!(run(c.as_ref(), "6.18", &[]).0, text);
    }

    #[test]
    fn every_field_exportable_and_lint_clean() {
        for probe in ["ip", "icmp", "tcp", "udp"] {
            let c = build_probe(specs(), probe, "{fields: '.*'}");
            for k in ["6.18", "4.19"] {
                let (text, r) = run(c.as_ref(), k, &[]);
                r.unwrap();
                lint_rendering(&text);
            }
        }
        let c = build_probe(specs(), "ip", "{fields: '.*'}");
        let (text, _) = run(c.as_ref(), "6.18", &[]);
        assert!(text.contains("\nnetsleuth_ip_forwarding 2\n"));
        assert!(text.contains("\nnetsleuth_ip_default_ttl 64\n"));
        assert!(text.contains("\nnetsleuth_ip_out_transmits_total 6\n"));
        assert!(text.contains("\nnetsleuth_ip6_in_receives_total 0\n"));
        let c = build_probe(specs(), "icmp", "{fields: '.*'}");
        let (text, _) = run(c.as_ref(), "4.19", &[]);
        assert!(text.contains("\nnetsleuth_icmpmsg_in_type3_total 45\n"));
        assert!(text.contains("\nnetsleuth_icmp6_in_type135_total 19\n"));
        let c = build_probe(specs(), "udp", "");
        let (text, _) = run(c.as_ref(), "4.19", &[]);
        assert!(text.contains("\nnetsleuth_udp6_rcvbuf_errors_total 9\n"));
        assert!(!text.contains("udplite"), "UdpLite is off by default");
        let c = build_probe(specs(), "tcp", "");
        let (text, _) = run(c.as_ref(), "4.19", &[]);
        assert!(!text.contains("max_conn"));
        let c = build_probe(specs(), "tcp", "{fields: 'Tcp_MaxConn'}");
        let (text, _) = run(c.as_ref(), "4.19", &[]);
        assert_eq!(samples(&text), vec!["netsleuth_tcp_max_conn -1"]);
    }

    #[test]
    fn unknown_arg_rejected() {
        let s = spec(specs(), "udp");
        let y: serde_norway::Value = serde_norway::from_str("{fields: x, device: y}").unwrap();
        let mut a = ProbeArgs::from_yaml("udp", &y).unwrap();
        let e = (s.build)(&mut a).err().unwrap();
        assert_eq!(e, "probe udp: unknown arg `device`");
    }

    /// Kernel names that would break promtool lint are glued, not dropped.
    #[test]
    fn lint_unsafe_field_names_are_glued() {
        use MetricKind::*;
        let n = |f: &str, k| metric_name("netsleuth_x", &snake_case(f), k).unwrap();
        assert_eq!(
            n("MPJoinSynAckHMacFailure", Counter),
            "netsleuth_x_mp_join_syn_ack_hmac_failure_total"
        );
        assert_eq!(n("EntriesCount", Gauge), "netsleuth_x_entriescount");
        assert_eq!(
            n("EntriesCount", Counter),
            "netsleuth_x_entries_count_total"
        );
        assert_eq!(n("WaitMs", Counter), "netsleuth_x_waitms_total");
        assert_eq!(n("Total", Gauge), "netsleuth_xtotal");
        assert_eq!(n("BigTotal", Gauge), "netsleuth_x_bigtotal");
        assert_eq!(n("S", Counter), "netsleuth_xs_total");
        assert_eq!(n("Count", Gauge), "netsleuth_xcount");
        assert_eq!(metric_name("netsleuth_x", "__", Counter), None);
        for f in [
            "MPJoinSynAckHMacFailure",
            "EntriesCount",
            "WaitMs",
            "BigTotal",
            "AMsB",
        ] {
            for k in [Counter, Gauge] {
                assert_eq!(testutil::lint(&n(f, k), k), None, "{f}");
            }
        }
    }

    #[test]
    fn repeated_keys_keep_the_first_value_every_time() {
        let d = b"Tcp: A B A\nTcp: 1 2 3\nUdp: X\nUdp: 4\nTcp: B\nTcp: 5\n";
        // Twice: the second parse must not trust a remembered "no repeats" for this layout.
        for _ in 0..2 {
            let s = parse_pairs(d).unwrap();
            let keys: Vec<_> = s.iter().map(|x| (x.group, x.field, x.value)).collect();
            assert_eq!(
                keys,
                [
                    ("Tcp", "A", Value::U64(1)),
                    ("Tcp", "B", Value::U64(2)),
                    ("Udp", "X", Value::U64(4))
                ]
            );
        }
        let s = parse_snmp6(b"Ip6InReceives 1\nIp6InReceives 2\nIp6OutRequests 3\n").unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(get(&s, "Ip6", "InReceives"), Some(Value::U64(1)));
    }

    /// Emit `keys` through one cursor of `cache`; returns the rendered samples.
    fn emit_through(cache: &NameCache, keys: &[(&str, u64)]) -> Vec<String> {
        let mut f = crate::model::Families::new();
        {
            let mut sink = f.sink("");
            let mut cur = cache.cursor();
            let make = |_: &str, field: &str| {
                (!field.starts_with('x')).then(|| {
                    Entry::new(
                        format!("netsleuth_cursortest_{}_total", field.to_lowercase()),
                        "h".into(),
                        MetricKind::Counter,
                    )
                })
            };
            for &(k, v) in keys {
                cur.emit("G", k, Value::U64(v), &[], &mut sink, &make);
            }
        }
        let mut text = String::new();
        f.render(&mut text);
        samples(&text).into_iter().map(String::from).collect()
    }

    #[test]
    fn cursor_follows_skips_and_relearns_sequences() {
        let c = NameCache::new();
        let base = [("A", 1), ("xB", 2), ("C", 3), ("D", 4)];
        let want = |a, c, d| {
            vec![
                format!("netsleuth_cursortest_a_total {a}"),
                format!("netsleuth_cursortest_c_total {c}"),
                format!("netsleuth_cursortest_d_total {d}"),
            ]
        };
        assert_eq!(emit_through(&c, &base), want(1, 3, 4));
        assert_eq!(emit_through(&c, &base), want(1, 3, 4));
        // A key missing, a key extra: still right.
        assert_eq!(
            emit_through(&c, &[("A", 5), ("C", 6), ("E", 9), ("D", 7)]),
            vec![
                "netsleuth_cursortest_a_total 5".to_string(),
                "netsleuth_cursortest_c_total 6".into(),
                "netsleuth_cursortest_d_total 7".into(),
                "netsleuth_cursortest_e_total 9".into(),
            ]
        );
        // Repeated blocks (one per device) and a wholly different order.
        let rev = [
            ("D", 1),
            ("C", 2),
            ("xB", 0),
            ("A", 3),
            ("F", 4),
            ("G", 5),
            ("H", 6),
        ];
        for _ in 0..3 {
            let got = emit_through(&c, &rev);
            assert_eq!(got.len(), 6, "{got:?}");
            assert!(got.contains(&"netsleuth_cursortest_a_total 3".to_string()));
        }
        let twice = [("A", 1), ("C", 2), ("A", 3), ("C", 4)];
        let mut f = crate::model::Families::new();
        {
            let mut sink = f.sink("");
            let mut cur = c.cursor();
            let make = |_: &str, _: &str| None;
            for (i, &(k, v)) in twice.iter().enumerate() {
                let dev = i.to_string();
                cur.emit("G", k, Value::U64(v), &[("device", &dev)], &mut sink, &make);
            }
        }
        let mut text = String::new();
        f.render(&mut text);
        assert_eq!(
            samples(&text),
            [
                "netsleuth_cursortest_a_total{device=\"0\"} 1",
                "netsleuth_cursortest_a_total{device=\"2\"} 3",
                "netsleuth_cursortest_c_total{device=\"1\"} 2",
                "netsleuth_cursortest_c_total{device=\"3\"} 4",
            ]
        );
    }
}
