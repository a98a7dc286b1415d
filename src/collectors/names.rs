//! Metric names for kernel fields, shared by the procfs probes: the lint-safe name builder
//! [`metric_name`], a field's [`Entry`] and the per-collector [`NameCache`].

use rustc_hash::FxHashMap as HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use crate::model::{MetricKind, Sink, Value};

/// Words `promtool check metrics` flags as abbreviated units when they stand alone.
pub(super) const UNIT_ABBREVIATIONS: &[&str] = &[
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
        let looked_up;
        let entry = match found {
            Some(i) => {
                if i != self.pos {
                    self.miss();
                }
                self.pos = i + 1;
                // Borrowed from the sequence: no reference count touched on the hot path.
                &self.seq[i].2
            }
            None => {
                self.miss();
                looked_up = self.cache.lookup(group, field, make);
                &looked_up
            }
        };
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

#[cfg(test)]
mod tests {
    use super::super::testutil::{self, samples};
    use super::*;
    use crate::model::snake_case;

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
