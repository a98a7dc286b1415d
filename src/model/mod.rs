//! The metric model every collector writes into, and the Prometheus text (0.0.4) renderer.
//!
//! Collectors do not build metric objects: they call [`Sink::emit`] with a family name, help,
//! type, their own labels and a value. The scrape engine gives each network namespace a
//! [`Families`] whose sink prepends that namespace's entity labels, renders each sample straight
//! into its family's text, and merges the per-namespace pieces at the end. No sample is ever
//! stored as a structure, which keeps a 500-namespace scrape cheap.

use rustc_hash::FxHashMap as HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock, RwLock};

mod names;
mod page;
pub mod protobuf;

pub use names::snake_case;
use page::TEXT_POOL;
pub use page::{Page, PageReader};

/// Prometheus metric type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    /// Written with [`FamilySink::emit_histogram`]: `_bucket{le}`, `_sum`, `_count` samples.
    Histogram,
}

impl MetricKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
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
            Value::U64(v) => push_u64(out, v),
            Value::I64(v) => {
                if v < 0 {
                    out.push('-');
                }
                push_u64(out, v.unsigned_abs());
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

/// Decimal digits of `v` without the formatting machinery (most samples are integers).
fn push_u64(out: &mut String, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for &d in &buf[i..] {
        out.push(d as char);
    }
}

/// A family registered once (see [`family`]), so a sink need not look its name up per sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FamilyId {
    id: u32,
    kind: MetricKind,
}

impl FamilyId {
    /// The kind the family was registered with.
    pub fn kind(self) -> MetricKind {
        self.kind
    }
}

/// Register a family (name, help and kind of its first registration win) and get its id.
pub fn family(name: &str, help: &str, kind: MetricKind) -> FamilyId {
    let (id, kind) = intern(name, help, kind);
    FamilyId { id, kind }
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

    /// [`Sink::emit`] for a family registered with [`family`]: `name`, `help` and `kind` must be
    /// the ones it was registered with. Sinks that intern names skip the lookup.
    fn emit_family(
        &mut self,
        fam: FamilyId,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        value: Value,
    ) {
        self.emit(name, help, fam.kind, labels, value)
    }
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

/// Every metric family name seen by this process, with its help and type, interned once:
/// per-namespace pieces then carry a small id instead of a name and help string per family
/// (500 namespaces × 200 families of strings were the bulk of a scrape's allocations).
struct Registry {
    ids: HashMap<Box<str>, u32>,
    descs: Vec<(Box<str>, Box<str>, MetricKind)>,
}

fn registry() -> &'static RwLock<Registry> {
    static R: OnceLock<RwLock<Registry>> = OnceLock::new();
    R.get_or_init(|| {
        RwLock::new(Registry {
            ids: HashMap::default(),
            descs: Vec::new(),
        })
    })
}

/// The id of a family, registering it (with the help and kind of its first use) if new.
fn intern(name: &str, help: &str, kind: MetricKind) -> (u32, MetricKind) {
    {
        let r = registry().read().unwrap_or_else(|e| e.into_inner());
        if let Some(&id) = r.ids.get(name) {
            return (id, r.descs[id as usize].2);
        }
    }
    let mut r = registry().write().unwrap_or_else(|e| e.into_inner());
    if let Some(&id) = r.ids.get(name) {
        return (id, r.descs[id as usize].2);
    }
    let id = r.descs.len() as u32;
    r.descs.push((name.into(), help.into(), kind));
    r.ids.insert(name.into(), id);
    (id, kind)
}

/// A set of metric families with their rendered sample lines (one namespace's, typically).
///
/// All sample text goes into one buffer in emission order, and `runs` records which family each
/// stretch of it belongs to; the page groups the runs by family when it is built. One buffer per
/// namespace instead of one string per family and namespace: a 500-namespace scrape made 80 000
/// small allocations (and their slack) before.
#[derive(Debug, Default)]
pub struct Families {
    text: String,
    /// (family id, start, end) of each stretch of `text` holding one family's samples.
    runs: Vec<(u32, u32, u32)>,
}

impl Families {
    pub fn new() -> Self {
        Self::default()
    }

    /// Empty families with room for `bytes` of sample text (a namespace's last size, say),
    /// reusing a text buffer of an earlier page when one is free.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut text = TEXT_POOL
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default();
        text.reserve(bytes);
        Families {
            text,
            runs: Vec::with_capacity(bytes / 96),
        }
    }

    /// A sink that writes into these families, prefixing every sample with `prefix` (a label
    /// set rendered by [`render_labels`], possibly empty).
    pub fn sink<'a>(&'a mut self, prefix: &'a str) -> FamilySink<'a> {
        FamilySink { fams: self, prefix }
    }

    /// Number of distinct families.
    pub fn len(&self) -> usize {
        let mut ids: Vec<u32> = self.runs.iter().map(|r| r.0).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Bytes of sample text held.
    pub fn text_len(&self) -> usize {
        self.text.len()
    }

    /// True if a family of that name has at least one sample.
    pub fn contains(&self, name: &str) -> bool {
        let r = registry().read().unwrap_or_else(|e| e.into_inner());
        r.ids
            .get(name)
            .is_some_and(|id| self.runs.iter().any(|run| run.0 == *id))
    }

    /// Render everything as text format 0.0.4, families sorted by name.
    pub fn render(self, out: &mut String) {
        Arc::new(Page::new(vec![self])).render(out);
    }

    /// Start (or continue) a run of family `id` and return the text to append to. Call
    /// [`Families::end_run`] after writing.
    fn run_text(&mut self, id: u32) -> &mut String {
        let at = self.text.len() as u32;
        match self.runs.last() {
            Some(&(last, _, end)) if last == id && end == at => {}
            _ => self.runs.push((id, at, at)),
        }
        &mut self.text
    }

    fn end_run(&mut self) {
        let end = self.text.len() as u32;
        if let Some(r) = self.runs.last_mut() {
            r.2 = end;
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
        if kind == MetricKind::Histogram {
            log::warn!("metric {name}: histograms go through emit_histogram; sample dropped");
            return;
        }
        let (id, declared) = intern(name, help, kind);
        if declared != kind {
            log::warn!(
                "metric {name}: emitted as {kind:?} but declared {declared:?}; sample dropped"
            );
            return;
        }
        let prefix = self.prefix;
        let b = self.body(id);
        write_sample(b, name, "", prefix, labels, None, value);
        self.fams.end_run();
    }

    fn emit_family(
        &mut self,
        fam: FamilyId,
        name: &str,
        _help: &str,
        labels: &[(&str, &str)],
        value: Value,
    ) {
        if fam.kind == MetricKind::Histogram {
            log::warn!("metric {name}: histograms go through emit_histogram; sample dropped");
            return;
        }
        let prefix = self.prefix;
        let b = self.body(fam.id);
        write_sample(b, name, "", prefix, labels, None, value);
        self.fams.end_run();
    }
}

/// One histogram series: cumulative bucket counts by upper bound (seconds, ascending, without
/// `+Inf`), the sum of observations (seconds) and their count (the `+Inf` bucket).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistogramValue {
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

impl FamilySink<'_> {
    /// The text to append family `id`'s samples to (see [`Families::run_text`]).
    fn body(&mut self, id: u32) -> &mut String {
        self.fams.run_text(id)
    }

    /// One histogram series of family `name` (declared [`MetricKind::Histogram`]). Buckets
    /// must be cumulative; `le="+Inf"` is written from `count`.
    pub fn emit_histogram(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        h: &HistogramValue,
    ) {
        let (id, declared) = intern(name, help, MetricKind::Histogram);
        if declared != MetricKind::Histogram {
            log::warn!("metric {name}: emitted as Histogram but declared {declared:?}; dropped");
            return;
        }
        let prefix = self.prefix;
        let b = self.body(id);
        let mut le = String::new();
        for (upper, n) in &h.buckets {
            le.clear();
            Value::F64(*upper).write_to(&mut le);
            write_sample(
                b,
                name,
                "_bucket",
                prefix,
                labels,
                Some(&le),
                Value::U64(*n),
            );
        }
        write_sample(
            b,
            name,
            "_bucket",
            prefix,
            labels,
            Some("+Inf"),
            Value::U64(h.count),
        );
        write_sample(b, name, "_sum", prefix, labels, None, Value::F64(h.sum));
        write_sample(b, name, "_count", prefix, labels, None, Value::U64(h.count));
        self.fams.end_run();
    }
}

/// `name+suffix{prefix,labels[,le]} value\n`.
fn write_sample(
    b: &mut String,
    name: &str,
    suffix: &str,
    prefix: &str,
    labels: &[(&str, &str)],
    le: Option<&str>,
    value: Value,
) {
    b.push_str(name);
    b.push_str(suffix);
    if !prefix.is_empty() || !labels.is_empty() || le.is_some() {
        b.push('{');
        b.push_str(prefix);
        let mut first = prefix.is_empty();
        for (k, v) in labels.iter().copied().chain(le.map(|l| ("le", l))) {
            if !first {
                b.push(',');
            }
            first = false;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_streams_like_merged_render() {
        // One namespace's piece: `b_total` and `a` (of kind `a_kind`).
        let piece = |netns: &str, b: u64, a_kind: MetricKind, a: u64| {
            let mut f = Families::new();
            let p = render_labels(&[("netns", netns)]);
            f.sink(&p).emit(
                "b_total",
                "B.",
                MetricKind::Counter,
                &[("x", "1")],
                Value::U64(b),
            );
            f.sink(&p).emit("a", "A.", a_kind, &[], Value::U64(a));
            f
        };
        let a = piece("1", 1, MetricKind::Gauge, 2);
        let b = piece("2", 3, MetricKind::Counter, 9); // kind conflict: dropped
        let page = std::sync::Arc::new(Page::new(vec![a, b]));
        let mut out = String::new();
        page.render(&mut out);
        assert_eq!(
            out,
            "# HELP a A.\n# TYPE a gauge\na{netns=\"1\"} 2\n\
             # HELP b_total B.\n# TYPE b_total counter\nb_total{netns=\"1\",x=\"1\"} 1\nb_total{netns=\"2\",x=\"1\"} 3\n"
        );
        // Tiny reads give the same bytes.
        let mut r = PageReader::new(page.clone());
        let mut got = Vec::new();
        let mut buf = [0u8; 3];
        loop {
            let n = std::io::Read::read(&mut r, &mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(String::from_utf8(got).unwrap(), out);
        let empty = std::sync::Arc::new(Page::new(Vec::new()));
        let mut e = String::new();
        empty.render(&mut e);
        assert_eq!(e, "");
    }

    #[test]
    fn integers_render_exactly() {
        for (v, want) in [
            (Value::U64(0), "0"),
            (Value::U64(7), "7"),
            (Value::U64(u64::MAX), "18446744073709551615"),
            (Value::I64(-1), "-1"),
            (Value::I64(0), "0"),
            (Value::I64(i64::MIN), "-9223372036854775808"),
            (Value::I64(i64::MAX), "9223372036854775807"),
        ] {
            let mut s = String::new();
            v.write_to(&mut s);
            assert_eq!(s, want);
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
        g.sink("").emit(
            "a_test_gauge",
            "gauge",
            MetricKind::Gauge,
            &[],
            Value::F64(0.5),
        );
        let mut out = String::new();
        Arc::new(Page::new(vec![f, g])).render(&mut out);
        assert_eq!(
            out,
            "# HELP a_test_gauge gauge\n# TYPE a_test_gauge gauge\na_test_gauge 0.5\n\
             # HELP x_total help\\\\me\\nplease\n# TYPE x_total counter\n\
             x_total{netns=\"1\",name=\"a\\\"b\\\\c\\nd\",device=\"eth0\"} 18446744073709551615\n\
             x_total -1\n"
        );
    }

    #[test]
    fn histogram_renders_buckets_sum_count() {
        let mut f = Families::new();
        f.sink("netns=\"7\"").emit_histogram(
            "t_hist_seconds",
            "H.",
            &[("device", "eth0")],
            &HistogramValue {
                buckets: vec![(0.001, 1), (0.5, 3)],
                sum: 0.75,
                count: 4,
            },
        );
        let mut out = String::new();
        f.render(&mut out);
        assert_eq!(
            out,
            "# HELP t_hist_seconds H.\n# TYPE t_hist_seconds histogram\n\
             t_hist_seconds_bucket{netns=\"7\",device=\"eth0\",le=\"0.001\"} 1\n\
             t_hist_seconds_bucket{netns=\"7\",device=\"eth0\",le=\"0.5\"} 3\n\
             t_hist_seconds_bucket{netns=\"7\",device=\"eth0\",le=\"+Inf\"} 4\n\
             t_hist_seconds_sum{netns=\"7\",device=\"eth0\"} 0.75\n\
             t_hist_seconds_count{netns=\"7\",device=\"eth0\"} 4\n"
        );
    }
}
