//! The metric model every collector writes into, and the Prometheus text (0.0.4) renderer.
//!
//! Collectors do not build metric objects: they call [`Sink::emit`] with a family name, help,
//! type, their own labels and a value. The scrape engine gives each network namespace a
//! [`Families`] whose sink prepends that namespace's entity labels, renders each sample straight
//! into its family's text, and merges the per-namespace pieces at the end. No sample is ever
//! stored as a structure, which keeps a 500-namespace scrape cheap.

use rustc_hash::FxHashMap as HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

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

/// Text buffers of dropped pages, for the next scrape's namespaces: the buffers of a large
/// node's page are megabytes that would otherwise go back to the system after each scrape and
/// be page-faulted in again by the next one.
static TEXT_POOL: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Most buffers kept (a node's namespaces, with room to spare).
const POOL_MAX_BUFFERS: usize = 8192;

/// A family on a page: name, help, kind, and (part, run) of each stretch of its samples.
type IndexEntry = (Box<str>, Box<str>, MetricKind, Vec<(u32, u32)>);

/// Every family of one scrape, kept as the per-namespace pieces the workers produced, and
/// rendered by streaming ([`PageReader`]) so the whole text page never exists in memory at once:
/// with 500 namespaces the page is over 10 MB, the pieces are needed anyway, and gzip can
/// compress while reading.
#[derive(Debug, Default)]
pub struct Page {
    parts: Vec<Families>,
    /// Families sorted by name: name, help, kind, and (part, run) of each piece.
    index: Vec<IndexEntry>,
}

impl Page {
    /// Build from per-namespace pieces, in the order their samples should appear.
    pub fn new(mut parts: Vec<Families>) -> Page {
        let descs: Vec<(Box<str>, Box<str>, MetricKind)> = registry()
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .descs
            .clone();
        let mut pieces: Vec<Vec<(u32, u32)>> = vec![Vec::new(); descs.len()];
        for (pi, part) in parts.iter_mut().enumerate() {
            // Stable: a family's runs keep their emission order.
            part.runs.sort_by_key(|r| r.0);
            part.runs.shrink_to_fit();
            for (i, &(id, _, _)) in part.runs.iter().enumerate() {
                if let Some(v) = pieces.get_mut(id as usize) {
                    v.push((pi as u32, i as u32));
                }
            }
        }
        let mut index: Vec<IndexEntry> = descs
            .into_iter()
            .zip(pieces)
            .filter(|(_, p)| !p.is_empty())
            .map(|((n, h, k), p)| (n, h, k, p))
            .collect();
        index.sort_by(|a, b| a.0.cmp(&b.0));
        Page { parts, index }
    }

    /// Hand the text buffers to the pool (called when the page is dropped). The pool never
    /// holds much more than this page's text: when scrapes overlap, the older page's buffers
    /// are freed rather than hoarded, and a buffer far larger than what it held (the host's,
    /// say) is freed rather than handed to a small namespace.
    fn recycle(&mut self) {
        let used: usize = self.parts.iter().map(|p| p.text.len()).sum();
        let limit = used + used / 4;
        let mut pool = TEXT_POOL.lock().unwrap_or_else(|e| e.into_inner());
        let mut held: usize = pool.iter().map(|t| t.capacity()).sum();
        for p in &mut self.parts {
            let mut t = std::mem::take(&mut p.text);
            let cap = t.capacity();
            if cap == 0 || cap > 2 * t.len() + 4096 {
                continue;
            }
            if pool.len() >= POOL_MAX_BUFFERS || held + cap > limit {
                break;
            }
            held += cap;
            t.clear();
            pool.push(t);
        }
    }

    /// Names of the families on the page, sorted.
    pub fn family_names(&self) -> impl Iterator<Item = &str> {
        self.index.iter().map(|f| &*f.0)
    }

    /// The sample lines of the named families only (no `# HELP`/`# TYPE`), appended to `out`:
    /// a cheap read of a few families of a large page (the status page's rates).
    pub fn family_text(&self, names: &[&str], out: &mut String) {
        for name in names {
            let Ok(fam) = self.index.binary_search_by(|f| (*f.0).cmp(name)) else {
                continue;
            };
            for piece in 0..self.index[fam].3.len() {
                out.push_str(std::str::from_utf8(self.body(fam, piece)).unwrap_or_default());
            }
        }
    }

    /// Bytes of sample text held.
    pub fn body_bytes(&self) -> usize {
        self.parts.iter().map(|p| p.text.len()).sum()
    }

    /// Bytes the page renders to (what [`PageReader`] yields), so it can be sent with a
    /// `Content-Length` rather than in chunks.
    pub fn rendered_len(&self) -> usize {
        let bodies: usize = self
            .index
            .iter()
            .map(|f| {
                f.3.iter()
                    .map(|&(part, run)| {
                        let (_, start, end) = self.parts[part as usize].runs[run as usize];
                        end.saturating_sub(start) as usize
                    })
                    .sum::<usize>()
            })
            .sum();
        let headers: usize = (0..self.index.len()).map(|f| self.header(f).len()).sum();
        bodies + headers
    }

    fn header(&self, fam: usize) -> Vec<u8> {
        let (name, help, kind, _) = &self.index[fam];
        let mut h = String::with_capacity(name.len() * 2 + help.len() + 24);
        h.push_str("# HELP ");
        h.push_str(name);
        h.push(' ');
        escape_help(help, &mut h);
        h.push_str("\n# TYPE ");
        h.push_str(name);
        h.push(' ');
        h.push_str(kind.as_str());
        h.push('\n');
        h.into_bytes()
    }

    fn body(&self, fam: usize, piece: usize) -> &[u8] {
        let (part, run) = self.index[fam].3[piece];
        let p = &self.parts[part as usize];
        let (_, start, end) = p.runs[run as usize];
        p.text
            .as_bytes()
            .get(start as usize..end as usize)
            .unwrap_or_default()
    }

    /// Render the whole page (tests and small pages).
    pub fn render(self: &Arc<Self>, out: &mut String) {
        let mut r = PageReader::new(self.clone());
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut r, &mut buf).expect("reading from memory");
        out.push_str(&String::from_utf8_lossy(&buf));
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        self.recycle();
    }
}

/// Streams a [`Page`] as text format 0.0.4.
pub struct PageReader {
    page: Arc<Page>,
    fam: usize,
    /// `None` while the family's header is being written, then the index of the piece.
    piece: Option<usize>,
    header: Vec<u8>,
    off: usize,
}

impl PageReader {
    pub fn new(page: Arc<Page>) -> PageReader {
        let header = if page.index.is_empty() {
            Vec::new()
        } else {
            page.header(0)
        };
        PageReader {
            page,
            fam: 0,
            piece: None,
            header,
            off: 0,
        }
    }
}

impl std::io::Read for PageReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut written = 0;
        // Fill as much of `buf` as there is: callers (gzip, the HTTP writer) read in chunks.
        while written < buf.len() && self.fam < self.page.index.len() {
            let src: &[u8] = match self.piece {
                None => &self.header,
                Some(p) => self.page.body(self.fam, p),
            };
            if self.off < src.len() {
                let n = (buf.len() - written).min(src.len() - self.off);
                buf[written..written + n].copy_from_slice(&src[self.off..self.off + n]);
                self.off += n;
                written += n;
                continue;
            }
            self.off = 0;
            let next = self.piece.map_or(0, |p| p + 1);
            if next < self.page.index[self.fam].3.len() {
                self.piece = Some(next);
            } else {
                self.fam += 1;
                self.piece = None;
                if self.fam < self.page.index.len() {
                    self.header = self.page.header(self.fam);
                }
            }
        }
        Ok(written)
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
    fn page_streams_like_merged_render() {
        let mut a = Families::new();
        let pa = render_labels(&[("netns", "1")]);
        a.sink(&pa).emit(
            "b_total",
            "B.",
            MetricKind::Counter,
            &[("x", "1")],
            Value::U64(1),
        );
        a.sink(&pa)
            .emit("a", "A.", MetricKind::Gauge, &[], Value::U64(2));
        let mut b = Families::new();
        let pb = render_labels(&[("netns", "2")]);
        b.sink(&pb).emit(
            "b_total",
            "B.",
            MetricKind::Counter,
            &[("x", "1")],
            Value::U64(3),
        );
        b.sink(&pb)
            .emit("a", "A.", MetricKind::Counter, &[], Value::U64(9)); // kind conflict: dropped
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
