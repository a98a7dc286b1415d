//! The protobuf exposition (`application/vnd.google.protobuf;
//! proto=io.prometheus.client.MetricFamily; encoding=delimited`), served when the scraper
//! prefers it: the same families and samples as the text page, and every latency histogram
//! as a Prometheus **native histogram** beside its classic buckets.
//!
//! The text page stays the single source of samples: this module reads a rendered [`Page`]'s
//! family text back (the renderer's own output, so the grammar is known exactly) and writes
//! one length-delimited `MetricFamily` per family. Nothing is re-measured or rounded: values
//! are parsed from the shortest round-trip decimal the renderer wrote.
//!
//! Native buckets. The kernel's log2 histograms (`struct hist`) count slot i = [2^i, 2^(i+1))
//! **nanoseconds**; the metrics are in seconds. Schema 0 bucket k covers (2^(k-1), 2^k]
//! seconds. 1 ns = 2^-29.897 s, so no schema's boundaries fall on the kernel's in seconds: slot
//! i is bucket k = i - 29 scaled by 1.0737 (10^-9 / 2^-30). Each slot's count goes to that
//! bucket, which overlaps 90 % of the slot's log-width; a quantile read from the native
//! histogram can be low by at most 7.4 % of the value, where the classic buckets are exact at
//! their bounds. Counts and sums are exact in both. The classic first bucket (all slots up to
//! 2^10 ns) goes to k = -20 and the overflow slot (above 2^35 ns, only in `+Inf`) to k = 6.
//! A histogram whose bounds are not of the 2^j ns form is sent classic only.

use std::borrow::Cow;
use std::io::Read;
use std::sync::Arc;

use prost::Message;

use super::{MetricKind, Page};

/// `Content-Type` of the delimited protobuf exposition.
pub const CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// The zero bucket's width: client_golang's default (2^-128), below any latency; non-zero so
/// that every server version reads the histogram as native even before its first observation.
pub const ZERO_THRESHOLD: f64 = 2.938_735_877_055_719e-39;

// The messages of `io.prometheus.client` (metrics.proto) this exporter writes, field numbers
// as in that file. Hand-written prost structs: no protoc, no build script.

#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricFamily {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub help: String,
    /// COUNTER 0, GAUGE 1, HISTOGRAM 4.
    #[prost(int32, tag = "3")]
    pub r#type: i32,
    #[prost(message, repeated, tag = "4")]
    pub metric: Vec<Metric>,
}

pub const TYPE_COUNTER: i32 = 0;
pub const TYPE_GAUGE: i32 = 1;
pub const TYPE_HISTOGRAM: i32 = 4;

#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelPair {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Metric {
    #[prost(message, repeated, tag = "1")]
    pub label: Vec<LabelPair>,
    #[prost(message, optional, tag = "2")]
    pub gauge: Option<Gauge>,
    #[prost(message, optional, tag = "3")]
    pub counter: Option<Counter>,
    #[prost(message, optional, tag = "7")]
    pub histogram: Option<Histogram>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Gauge {
    #[prost(double, tag = "1")]
    pub value: f64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Counter {
    #[prost(double, tag = "1")]
    pub value: f64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Histogram {
    #[prost(uint64, tag = "1")]
    pub sample_count: u64,
    #[prost(double, tag = "2")]
    pub sample_sum: f64,
    /// Classic buckets, cumulative, ascending, without `+Inf`.
    #[prost(message, repeated, tag = "3")]
    pub bucket: Vec<Bucket>,
    #[prost(sint32, tag = "5")]
    pub schema: i32,
    #[prost(double, tag = "6")]
    pub zero_threshold: f64,
    #[prost(uint64, tag = "7")]
    pub zero_count: u64,
    #[prost(message, repeated, tag = "12")]
    pub positive_span: Vec<BucketSpan>,
    /// Each bucket's count minus the previous bucket's (the first's minus zero).
    #[prost(sint64, repeated, tag = "13")]
    pub positive_delta: Vec<i64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Bucket {
    #[prost(uint64, tag = "1")]
    pub cumulative_count: u64,
    #[prost(double, tag = "2")]
    pub upper_bound: f64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct BucketSpan {
    /// The first span's first bucket index; later spans' gap after the previous span.
    #[prost(sint32, tag = "1")]
    pub offset: i32,
    #[prost(uint32, tag = "2")]
    pub length: u32,
}

/// Whether an `Accept` header prefers the delimited protobuf exposition to text: offered
/// (with `proto=io.prometheus.client.MetricFamily` and `encoding=delimited`), with q > 0, and
/// at least as preferred as any text type we would answer with instead.
pub fn accept_prefers_protobuf(accept: &str) -> bool {
    let mut proto_q: f32 = 0.0;
    let mut text_q: f32 = 0.0;
    for part in accept.split(',') {
        let mut it = part.split(';');
        let media = it.next().unwrap_or("").trim().to_ascii_lowercase();
        let (mut q, mut proto, mut delimited) = (1.0f32, false, false);
        for p in it {
            let Some((k, v)) = p.split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches('"');
            match k.trim().to_ascii_lowercase().as_str() {
                "q" => q = v.parse().unwrap_or(0.0),
                "proto" => proto = v == "io.prometheus.client.MetricFamily",
                "encoding" => delimited = v.eq_ignore_ascii_case("delimited"),
                _ => {}
            }
        }
        match media.as_str() {
            "application/vnd.google.protobuf" if proto && delimited => proto_q = proto_q.max(q),
            "text/plain" | "text/*" | "*/*" | "application/openmetrics-text" => {
                text_q = text_q.max(q)
            }
            _ => {}
        }
    }
    proto_q > 0.0 && proto_q >= text_q
}

/// The page as delimited `MetricFamily` messages, whole (tests, benches).
pub fn encode_page(page: &Arc<Page>) -> Vec<u8> {
    let mut out = Vec::with_capacity(page.body_bytes() * 3 / 4);
    // Reading from memory cannot fail.
    let _ = ProtobufReader::new(page.clone()).read_to_end(&mut out);
    out
}

/// Streams a [`Page`] as delimited `MetricFamily` messages, one family encoded at a time:
/// the protobuf page never exists whole, as the text page never does.
pub struct ProtobufReader {
    page: Arc<Page>,
    /// The next family to encode.
    next: usize,
    text: String,
    buf: Vec<u8>,
    off: usize,
}

impl ProtobufReader {
    pub fn new(page: Arc<Page>) -> ProtobufReader {
        ProtobufReader {
            page,
            next: 0,
            text: String::new(),
            buf: Vec::new(),
            off: 0,
        }
    }

    /// Encode the next family with samples into `buf`; false at the end of the page.
    fn fill(&mut self) -> bool {
        let page = self.page.clone();
        while let Some((name, help, kind)) = page.families().nth(self.next) {
            self.next += 1;
            self.text.clear();
            page.family_text(&[name], &mut self.text);
            let mut fam = Vec::with_capacity(self.text.len() / 2 + 64);
            if encode_family(name, help, kind, &self.text, &mut fam) == 0 {
                continue;
            }
            self.buf.clear();
            self.off = 0;
            prost::encoding::encode_varint(fam.len() as u64, &mut self.buf);
            self.buf.extend_from_slice(&fam);
            return true;
        }
        false
    }
}

impl Read for ProtobufReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let mut written = 0;
        while written < out.len() {
            if self.off == self.buf.len() && !self.fill() {
                break;
            }
            let n = (out.len() - written).min(self.buf.len() - self.off);
            out[written..written + n].copy_from_slice(&self.buf[self.off..self.off + n]);
            self.off += n;
            written += n;
        }
        Ok(written)
    }
}

// Protobuf wire encoding of the few shapes written here (prost's varint helper underneath):
// field keys, length-delimited fields, doubles.
fn put_key(out: &mut Vec<u8>, tag: u32, wire: u32) {
    prost::encoding::encode_varint(u64::from(tag << 3 | wire), out);
}

fn put_bytes(out: &mut Vec<u8>, tag: u32, b: &[u8]) {
    put_key(out, tag, 2);
    prost::encoding::encode_varint(b.len() as u64, out);
    out.extend_from_slice(b);
}

fn put_f64(out: &mut Vec<u8>, tag: u32, v: f64) {
    put_key(out, tag, 1);
    out.extend_from_slice(&v.to_le_bytes());
}

/// `LabelPair`s (Metric field 1).
fn put_labels(out: &mut Vec<u8>, labels: &[(&str, Cow<'_, str>)]) {
    let mut pair = Vec::with_capacity(64);
    for (k, v) in labels {
        pair.clear();
        put_bytes(&mut pair, 1, k.as_bytes());
        put_bytes(&mut pair, 2, v.as_bytes());
        put_bytes(out, 1, &pair);
    }
}

/// One family's `MetricFamily` message from its sample lines, appended to `out`; returns the
/// number of metrics written (0: nothing to send).
fn encode_family(name: &str, help: &str, kind: MetricKind, text: &str, out: &mut Vec<u8>) -> usize {
    put_bytes(out, 1, name.as_bytes());
    put_bytes(out, 2, help.as_bytes());
    let r#type = match kind {
        MetricKind::Counter => TYPE_COUNTER,
        MetricKind::Gauge => TYPE_GAUGE,
        MetricKind::Histogram => TYPE_HISTOGRAM,
    };
    if r#type != 0 {
        put_key(out, 3, 0);
        prost::encoding::encode_varint(r#type as u64, out);
    }
    let mut metrics = 0;
    let mut m = Vec::with_capacity(256);
    let mut value = Vec::with_capacity(16);
    let mut hist = Histogram::default();
    for line in text.lines() {
        let mut labels = Vec::with_capacity(8);
        let Some((sample, v)) = parse_line(line, &mut labels) else {
            log::warn!("protobuf exposition: unparseable line of {name} skipped: {line:?}");
            continue;
        };
        m.clear();
        match kind {
            MetricKind::Counter | MetricKind::Gauge => {
                put_labels(&mut m, &labels);
                value.clear();
                put_f64(&mut value, 1, parse_value(v));
                put_bytes(
                    &mut m,
                    if kind == MetricKind::Counter { 3 } else { 2 },
                    &value,
                );
            }
            // A series is written whole, in order: buckets, `+Inf`, `_sum`, `_count`.
            MetricKind::Histogram => match sample.strip_prefix(name).unwrap_or("") {
                "_bucket" => {
                    let Some(i) = labels.iter().position(|l| l.0 == "le") else {
                        continue;
                    };
                    let le = labels.remove(i).1;
                    if le != "+Inf" {
                        hist.bucket.push(Bucket {
                            cumulative_count: v.parse::<u64>().unwrap_or(0),
                            upper_bound: parse_value(&le),
                        });
                    }
                    continue;
                }
                "_sum" => {
                    hist.sample_sum = parse_value(v);
                    continue;
                }
                "_count" => {
                    hist.sample_count = v.parse::<u64>().unwrap_or(0);
                    let mut h = std::mem::take(&mut hist);
                    add_native(&mut h);
                    put_labels(&mut m, &labels);
                    put_bytes(&mut m, 7, &h.encode_to_vec());
                }
                _ => continue,
            },
        }
        put_bytes(out, 4, &m);
        metrics += 1;
    }
    metrics
}

/// The native-histogram index of a classic upper bound of the form 2^j ns: 2^(i+1) ns, the
/// top of kernel slot i, gives bucket i - 29 (see the module comment).
fn native_index(upper_s: f64) -> Option<i32> {
    let ns = upper_s * 1e9;
    let r = ns.round();
    if !(1.0..=(1u64 << 62) as f64).contains(&r) || (ns - r).abs() > r * 1e-9 {
        return None;
    }
    let r = r as u64;
    r.is_power_of_two()
        .then(|| r.trailing_zeros() as i32 - 1 - 29)
}

/// Fill the native fields from the classic buckets when they are the kernel's log2 slots.
fn add_native(h: &mut Histogram) {
    let mut idx = Vec::with_capacity(h.bucket.len() + 1);
    for b in &h.bucket {
        match native_index(b.upper_bound) {
            Some(k) if idx.last().is_none_or(|&p| k == p + 1) => idx.push(k),
            _ => return,
        }
    }
    let Some(&last) = idx.last() else { return };
    // Per-bucket counts: the classic first bucket, the differences, then the overflow.
    let mut counts = Vec::with_capacity(idx.len() + 1);
    let mut prev = 0u64;
    for b in &h.bucket {
        counts.push(b.cumulative_count.saturating_sub(prev));
        prev = b.cumulative_count;
    }
    counts.push(h.sample_count.saturating_sub(prev));
    // The overflow slot, 2^35 ns and above, is the next bucket up.
    idx.push(last + 1);
    h.schema = 0;
    h.zero_threshold = ZERO_THRESHOLD;
    h.zero_count = 0;
    let first = counts.iter().position(|&c| c > 0);
    let Some(first) = first else {
        // No observation yet: the no-op span marks the histogram native.
        h.positive_span.push(BucketSpan {
            offset: 0,
            length: 0,
        });
        return;
    };
    let end = counts.iter().rposition(|&c| c > 0).unwrap_or(first) + 1;
    h.positive_span.push(BucketSpan {
        offset: idx[first],
        length: (end - first) as u32,
    });
    let mut prev = 0i64;
    for &c in &counts[first..end] {
        let c = c.min(i64::MAX as u64) as i64;
        h.positive_delta.push(c - prev);
        prev = c;
    }
}

fn parse_value(v: &str) -> f64 {
    match v {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => v.parse().unwrap_or(f64::NAN),
    }
}

/// `name{k="v",...} value` as the renderer writes it (label values escaped `\\`, `\"`, `\n`;
/// borrowed unless escaped): the sample name and value, the labels into `labels`.
fn parse_line<'a>(
    line: &'a str,
    labels: &mut Vec<(&'a str, Cow<'a, str>)>,
) -> Option<(&'a str, &'a str)> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
        loop {
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let (key, r) = rest.split_once("=\"")?;
            let close = r.find(['"', '\\'])?;
            let (value, after) = if r.as_bytes()[close] == b'"' {
                (Cow::Borrowed(&r[..close]), &r[close + 1..])
            } else {
                let mut v = String::from(&r[..close]);
                let mut chars = r[close..].char_indices();
                let end = loop {
                    let (i, c) = chars.next()?;
                    match c {
                        '"' => break close + i,
                        '\\' => match chars.next()?.1 {
                            'n' => v.push('\n'),
                            c => v.push(c),
                        },
                        c => v.push(c),
                    }
                };
                (Cow::Owned(v), &r[end + 1..])
            };
            labels.push((key, value));
            rest = after.strip_prefix(',').unwrap_or(after);
        }
    }
    let value = rest.strip_prefix(' ')?;
    Some((name, value))
}

/// Decode a delimited stream (tests and the inspector).
pub fn decode_families(mut buf: &[u8]) -> Result<Vec<MetricFamily>, prost::DecodeError> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        out.push(MetricFamily::decode_length_delimited(&mut buf)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{render_labels, Families, HistogramValue, Sink, Value};
    use crate::probes::hist::Log2Hist;

    fn page_of(f: impl FnOnce(&mut Families)) -> Arc<Page> {
        let mut fams = Families::new();
        f(&mut fams);
        Arc::new(Page::new(vec![fams]))
    }

    #[test]
    fn counters_gauges_and_escaped_labels_round_trip() {
        let p = render_labels(&[("netns", "4026531840"), ("name", "a\"b\\c\nd")]);
        let page = page_of(|f| {
            f.sink(&p).emit(
                "pb_test_packets_total",
                "Packets.",
                MetricKind::Counter,
                &[("device", "eth0")],
                Value::U64(12_345_678_901),
            );
            f.sink(&p).emit(
                "pb_test_ratio",
                "A ratio.",
                MetricKind::Gauge,
                &[],
                Value::F64(-0.125),
            );
        });
        let fams = decode_families(&encode_page(&page)).unwrap();
        let c = fams
            .iter()
            .find(|f| f.name == "pb_test_packets_total")
            .unwrap();
        assert_eq!(c.r#type, TYPE_COUNTER);
        assert_eq!(c.help, "Packets.");
        assert_eq!(c.metric.len(), 1);
        let m = &c.metric[0];
        assert_eq!(m.counter.as_ref().unwrap().value, 12_345_678_901.0);
        let labels: Vec<(&str, &str)> = m
            .label
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        assert_eq!(
            labels,
            [
                ("netns", "4026531840"),
                ("name", "a\"b\\c\nd"),
                ("device", "eth0")
            ]
        );
        let g = fams.iter().find(|f| f.name == "pb_test_ratio").unwrap();
        assert_eq!(g.r#type, TYPE_GAUGE);
        assert_eq!(g.metric[0].gauge.as_ref().unwrap().value, -0.125);
    }

    #[test]
    fn kernel_log2_histogram_gets_exact_native_buckets_beside_the_classic_ones() {
        let mut h = Log2Hist::default();
        // 3 below 1 µs (slots 2 and 9 fold into the first classic bucket), 5 in slot 20
        // (~1 ms), 2 in slot 25 (~34 ms), 1 above 34 s (the overflow slot).
        h.slots[2] = 1;
        h.slots[9] = 2;
        h.slots[20] = 5;
        h.slots[25] = 2;
        h.slots[35] = 1;
        h.sum_ns = 123_456_789_000;
        let hv: HistogramValue = h.to_prometheus();
        let page = page_of(|f| {
            f.sink("netns=\"1\"").emit_histogram(
                "pb_test_seconds",
                "Latency.",
                &[("stage", "rx")],
                &hv,
            );
        });
        let fams = decode_families(&encode_page(&page)).unwrap();
        let fam = fams.iter().find(|f| f.name == "pb_test_seconds").unwrap();
        assert_eq!(fam.r#type, TYPE_HISTOGRAM);
        assert_eq!(fam.metric.len(), 1);
        let m = &fam.metric[0];
        let names: Vec<&str> = m.label.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["netns", "stage"], "le is not a label");
        let nh = m.histogram.as_ref().unwrap();
        assert_eq!(nh.sample_count, 11);
        assert_eq!(nh.sample_sum, 123.456789);
        // Classic: exactly the text page's buckets.
        assert_eq!(nh.bucket.len(), hv.buckets.len());
        for (b, (le, n)) in nh.bucket.iter().zip(&hv.buckets) {
            assert_eq!((b.upper_bound, b.cumulative_count), (*le, *n));
        }
        // Native: slot i in bucket i - 29; the first classic bucket (slots 0..=9) at -20.
        assert_eq!(nh.schema, 0);
        assert_eq!(nh.zero_threshold, ZERO_THRESHOLD);
        assert_eq!(nh.zero_count, 0);
        assert_eq!(
            nh.positive_span,
            [BucketSpan {
                offset: -20,
                length: 27
            }]
        );
        let mut counts = Vec::new();
        let mut c = 0i64;
        for d in &nh.positive_delta {
            c += d;
            counts.push(c);
        }
        let mut want = vec![0i64; 27];
        want[0] = 3; // -20
        want[20 - 9] = 5; // slot 20 -> -9
        want[25 - 9] = 2; // slot 25 -> -4
        want[26] = 1; // overflow -> 6
        assert_eq!(counts, want);
        // Each kernel slot's bounds are its bucket's times 10^-9 / 2^-30.
        let slot = 20;
        let k = slot - 29;
        let ratio = ((1u64 << slot) as f64 * 1e-9) / 2f64.powi(k - 1);
        assert!((ratio - 1.0737).abs() < 1e-4, "{ratio}");
    }

    #[test]
    fn empty_and_foreign_histograms() {
        let empty = Log2Hist::default().to_prometheus();
        let foreign = HistogramValue {
            buckets: vec![(0.1, 1), (0.5, 2), (1.0, 2)],
            sum: 0.7,
            count: 3,
        };
        let page = page_of(|f| {
            f.sink("")
                .emit_histogram("pb_test_empty_seconds", "E.", &[], &empty);
            f.sink("")
                .emit_histogram("pb_test_foreign_seconds", "F.", &[], &foreign);
        });
        let fams = decode_families(&encode_page(&page)).unwrap();
        let h = |n: &str| {
            fams.iter().find(|f| f.name == n).unwrap().metric[0]
                .histogram
                .clone()
                .unwrap()
        };
        let e = h("pb_test_empty_seconds");
        assert_eq!(e.sample_count, 0);
        assert_eq!(
            e.positive_span,
            [BucketSpan {
                offset: 0,
                length: 0
            }]
        );
        assert!(e.positive_delta.is_empty());
        assert_eq!(e.zero_threshold, ZERO_THRESHOLD);
        let f = h("pb_test_foreign_seconds");
        assert!(
            f.positive_span.is_empty() && f.zero_threshold == 0.0,
            "{f:?}"
        );
        assert_eq!(f.bucket.len(), 3);
        assert_eq!(f.sample_count, 3);
    }

    #[test]
    fn accept_negotiation() {
        // What Prometheus sends with --enable-feature=native-histograms, and without.
        assert!(accept_prefers_protobuf(
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ));
        assert!(!accept_prefers_protobuf(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ));
        assert!(!accept_prefers_protobuf(""));
        assert!(!accept_prefers_protobuf("*/*"));
        // The text encoding of the protobuf media type, q=0 and a preferred text.
        assert!(!accept_prefers_protobuf(
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text"
        ));
        assert!(!accept_prefers_protobuf(
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0"
        ));
        assert!(!accept_prefers_protobuf(
            "text/plain;q=0.9, application/vnd.google.protobuf; proto=\"io.prometheus.client.MetricFamily\"; encoding=delimited; q=0.5"
        ));
        assert!(accept_prefers_protobuf(
            "Application/Vnd.Google.Protobuf; proto=\"io.prometheus.client.MetricFamily\"; encoding=delimited"
        ));
    }

    #[test]
    fn parse_line_reads_what_write_sample_writes() {
        let mut l = Vec::new();
        let (n, v) = parse_line(r#"a_b{x="1",y="q\"\\\n,}"} 3.5"#, &mut l).unwrap();
        assert_eq!(n, "a_b");
        assert_eq!(v, "3.5");
        assert_eq!(l[0].1, "1");
        assert!(matches!(l[0].1, Cow::Borrowed(_)));
        assert_eq!(l[1].1, "q\"\\\n,}");
        let mut l = Vec::new();
        let (n, v) = parse_line("plain 7", &mut l).unwrap();
        assert_eq!((n, l.len(), v), ("plain", 0, "7"));
        assert!(parse_line("garbage", &mut Vec::new()).is_none());
        assert!(parse_line(r#"x{a="unterminated} 1"#, &mut Vec::new()).is_none());
        assert!(parse_line(r#"x{a="esc\"unterminated} 1"#, &mut Vec::new()).is_none());
    }
}
