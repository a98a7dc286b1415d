//! The metric model every collector writes into, and the Prometheus text (0.0.4) renderer.
//!
//! Collectors do not build metric objects: they call [`Sink::emit`] with a family name, help,
//! type, their own labels and a value. The scrape engine gives each network namespace a
//! [`Families`] whose sink prepends that namespace's entity labels, renders each sample straight
//! into its family's text, and merges the per-namespace pieces at the end. No sample is ever
//! stored as a structure, which keeps a 500-namespace scrape cheap.

use std::collections::HashMap;
use std::fmt::Write as _;

/// Prometheus metric type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
}

impl MetricKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
        }
    }
}

/// A sample value. Integers are kept as integers so that exported counters equal the kernel's
/// figures digit for digit, even above 2^53.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    fn write_to(self, out: &mut String) {
        match self {
            Value::U64(v) => {
                let _ = write!(out, "{v}");
            }
            Value::I64(v) => {
                let _ = write!(out, "{v}");
            }
            Value::F64(v) => {
                if v.is_nan() {
                    out.push_str("NaN");
                } else if v.is_infinite() {
                    out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
                } else {
                    let _ = write!(out, "{v}");
                }
            }
        }
    }
}

/// Where collectors put their samples.
pub trait Sink {
    /// One sample. `name` is the full metric name (`netsleuth_...`); `labels` are the probe's
    /// own labels (the engine adds the entity labels). A family's help and kind are taken from
    /// its first sample.
    fn emit(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricKind,
        labels: &[(&str, &str)],
        value: Value,
    );
}

/// Escape a label value per the text format: backslash, double quote and newline.
pub fn escape_label_value(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Escape help text: backslash and newline.
fn escape_help(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Render a label set `a="x",b="y"` (no braces) for use as a prefix of every sample.
pub fn render_labels(labels: &[(&str, &str)]) -> String {
    let mut s = String::new();
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(k);
        s.push_str("=\"");
        escape_label_value(v, &mut s);
        s.push('"');
    }
    s
}

#[derive(Debug)]
struct Family {
    help: String,
    kind: MetricKind,
    body: String,
}

/// A set of metric families with their rendered sample lines.
#[derive(Debug, Default)]
pub struct Families {
    map: HashMap<String, Family>,
}

impl Families {
    pub fn new() -> Self {
        Self::default()
    }

    /// A sink that writes into these families, prefixing every sample with `prefix` (a label
    /// set rendered by [`render_labels`], possibly empty).
    pub fn sink<'a>(&'a mut self, prefix: &'a str) -> FamilySink<'a> {
        FamilySink { fams: self, prefix }
    }

    /// Number of families.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// True if a family of that name has at least one sample.
    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// Append `other`'s samples to ours (families are matched by name; a kind mismatch keeps
    /// ours and drops theirs, so the output stays parseable).
    pub fn merge(&mut self, other: Families) {
        for (name, fam) in other.map {
            match self.map.get_mut(&name) {
                Some(mine) => {
                    if mine.kind == fam.kind {
                        mine.body.push_str(&fam.body);
                    } else {
                        log::warn!(
                            "metric {name}: kind conflict ({:?} vs {:?}), samples dropped",
                            mine.kind,
                            fam.kind
                        );
                    }
                }
                None => {
                    self.map.insert(name, fam);
                }
            }
        }
    }

    /// Render everything as text format 0.0.4, families sorted by name.
    pub fn render(&self, out: &mut String) {
        let mut names: Vec<&String> = self.map.keys().collect();
        names.sort();
        for name in names {
            let fam = &self.map[name];
            out.push_str("# HELP ");
            out.push_str(name);
            out.push(' ');
            escape_help(&fam.help, out);
            out.push_str("\n# TYPE ");
            out.push_str(name);
            out.push(' ');
            out.push_str(fam.kind.as_str());
            out.push('\n');
            out.push_str(&fam.body);
        }
    }
}

/// See [`Families::sink`].
pub struct FamilySink<'a> {
    fams: &'a mut Families,
    prefix: &'a str,
}

impl Sink for FamilySink<'_> {
    fn emit(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricKind,
        labels: &[(&str, &str)],
        value: Value,
    ) {
        let fam = match self.fams.map.get_mut(name) {
            Some(f) => f,
            None => self
                .fams
                .map
                .entry(name.to_string())
                .or_insert_with(|| Family {
                    help: help.to_string(),
                    kind,
                    body: String::new(),
                }),
        };
        if fam.kind != kind {
            log::warn!(
                "metric {name}: emitted as {kind:?} but declared {:?}; sample dropped",
                fam.kind
            );
            return;
        }
        let b = &mut fam.body;
        b.push_str(name);
        if !self.prefix.is_empty() || !labels.is_empty() {
            b.push('{');
            b.push_str(self.prefix);
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 || !self.prefix.is_empty() {
                    b.push(',');
                }
                b.push_str(k);
                b.push_str("=\"");
                escape_label_value(v, b);
                b.push('"');
            }
            b.push('}');
        }
        b.push(' ');
        value.write_to(b);
        b.push('\n');
    }
}

/// Convert a kernel field name (`ActiveOpens`, `TCPSynRetrans`, `DelayedACKs`, `InCEPkts`,
/// `Icmp6InMLDv2Reports`) to snake_case (`active_opens`, `tcp_syn_retrans`, `delayed_acks`,
/// `in_ce_pkts`, `icmp6_in_mldv2_reports`).
///
/// Rules: a word starts at an upper-case letter that follows a lower-case letter or digit, and
/// at the last capital of an acronym when a lower-case word of two or more letters follows it
/// (`TCPSyn` → `tcp_syn`); a lone lower-case letter after an acronym is a suffix (`ACKs`,
/// `MLDv2`). Existing underscores are kept; anything outside `[A-Za-z0-9_]` becomes `_`.
pub fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    // Split points inside all-capital runs made only of known acronyms (`TCPOFO` → TCP|OFO).
    let mut acronym_split = vec![false; chars.len() + 1];
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_uppercase() {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && chars[i].is_ascii_uppercase() {
            i += 1;
        }
        // The run's last capital begins the next word when a lower-case word follows.
        let lower_run = chars[i..]
            .iter()
            .take_while(|c| c.is_ascii_lowercase())
            .count();
        let end = if lower_run >= 2 { i - 1 } else { i };
        if let Some(cuts) = segment_acronyms(&chars[start..end]) {
            for c in cuts {
                acronym_split[start + c] = true;
            }
        }
    }
    let mut out = String::with_capacity(name.len() + 8);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            let prev = chars[i - 1];
            let split = if prev.is_ascii_lowercase() || prev.is_ascii_digit() {
                true
            } else if prev.is_ascii_uppercase() {
                // Acronym followed by a word: split before the word's capital when the word
                // has at least two lower-case letters.
                let lower_run = chars[i + 1..]
                    .iter()
                    .take_while(|c| c.is_ascii_lowercase())
                    .count();
                lower_run >= 2 || acronym_split[i]
            } else {
                false
            };
            if split && !out.ends_with('_') {
                out.push('_');
            }
        }
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else {
            out.push('_');
        }
    }
    out
}

/// Acronyms the kernel glues together in counter names (`TCPOFOQueue`, `TCPMTUPFail`).
const ACRONYMS: &[&str] = &[
    "TCP", "UDP", "IP", "ICMP", "OFO", "MTUP", "MTU", "PMTU", "DSACK", "SACK", "ACK", "HP", "AO",
    "ECT", "CE", "ECN", "TW", "PAWS", "RTO", "SYN", "FIN", "RST", "TS", "MLD", "RPS", "GRO", "MD",
    "MP", "LRO", "URG", "RCV", "SND", "TLP", "FRTO", "ABC", "RFC",
];

/// Cut positions (relative) if `run` is a concatenation of two or more known acronyms.
fn segment_acronyms(run: &[char]) -> Option<Vec<usize>> {
    if run.len() < 4 {
        return None;
    }
    let mut cuts = Vec::new();
    let mut pos = 0;
    while pos < run.len() {
        let best = ACRONYMS
            .iter()
            .filter(|a| {
                a.len() <= run.len() - pos && a.chars().zip(&run[pos..]).all(|(x, y)| x == *y)
            })
            .map(|a| a.len())
            .max()?;
        pos += best;
        if pos < run.len() {
            cuts.push(pos);
        }
    }
    if cuts.is_empty() {
        None
    } else {
        Some(cuts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_kernel_names() {
        let cases = [
            ("ActiveOpens", "active_opens"),
            ("TCPSynRetrans", "tcp_syn_retrans"),
            ("DelayedACKs", "delayed_acks"),
            ("InCEPkts", "in_ce_pkts"),
            ("InMLDv2Reports", "in_mldv2_reports"),
            ("RcvbufErrors", "rcvbuf_errors"),
            ("TCPOFOQueue", "tcp_ofo_queue"),
            ("PAWSEstab", "paws_estab"),
            ("TW", "tw"),
            ("TWRecycled", "tw_recycled"),
            ("InECT1Pkts", "in_ect1_pkts"),
            ("TCPMTUPFail", "tcp_mtup_fail"),
            ("TCPHPAcks", "tcp_hp_acks"),
            ("InType3", "in_type3"),
            ("TCPDSACKOldSent", "tcp_dsack_old_sent"),
            ("CurrEstab", "curr_estab"),
            ("DefaultTTL", "default_ttl"),
            ("TCPAOKeyNotFound", "tcp_ao_key_not_found"),
            ("receive_bytes", "receive_bytes"),
            ("TCPDeliveredCE", "tcp_delivered_ce"),
            ("TCPACKSkippedSynRecv", "tcp_ack_skipped_syn_recv"),
            ("TCPSACKReorder", "tcp_sack_reorder"),
            ("IPReversePathFilter", "ip_reverse_path_filter"),
        ];
        for (k, want) in cases {
            assert_eq!(snake_case(k), want, "{k}");
        }
    }

    #[test]
    fn render_groups_and_escapes() {
        let mut f = Families::new();
        let p = render_labels(&[("netns", "1"), ("name", "a\"b\\c\nd")]);
        f.sink(&p).emit(
            "x_total",
            "help\\me\nplease",
            MetricKind::Counter,
            &[("device", "eth0")],
            Value::U64(u64::MAX),
        );
        let mut g = Families::new();
        g.sink("")
            .emit("x_total", "other", MetricKind::Counter, &[], Value::I64(-1));
        g.sink("")
            .emit("a", "gauge", MetricKind::Gauge, &[], Value::F64(0.5));
        f.merge(g);
        let mut out = String::new();
        f.render(&mut out);
        assert_eq!(
            out,
            "# HELP a gauge\n# TYPE a gauge\na 0.5\n\
             # HELP x_total help\\\\me\\nplease\n# TYPE x_total counter\n\
             x_total{netns=\"1\",name=\"a\\\"b\\\\c\\nd\",device=\"eth0\"} 18446744073709551615\n\
             x_total -1\n"
        );
    }
}
