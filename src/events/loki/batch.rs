//! The Loki sink's batching: events waiting for Loki, grouped into streams by their few
//! bounded labels, cut into batches by size, and rendered as Loki's JSON or protobuf push body.

use std::collections::VecDeque;
use std::time::Instant;

use super::config::{LokiConfig, LokiFormat};
use crate::events::Event;

/// One event waiting for Loki.
struct Entry {
    /// Index into `Batcher::streams`.
    stream: usize,
    ts: u128,
    line: String,
    /// Structured metadata (empty unless `structured_metadata`).
    meta: Vec<(String, String)>,
}

/// A stream's label set, rendered for both encodings.
struct Stream {
    kind: String,
    k8s_namespace: String,
    /// `{"job":"netsleuth",...}`
    json: String,
    /// `{job="netsleuth", ...}` (Prometheus label syntax, for protobuf).
    prom: String,
}

/// The events held for Loki, oldest first, and the streams they belong to.
pub(super) struct Batcher {
    job: String,
    node: String,
    batch_size: usize,
    format: LokiFormat,
    structured_metadata: bool,
    /// Label sets seen (bounded: type × k8s namespace).
    streams: Vec<Stream>,
    pending: VecDeque<Entry>,
    pending_bytes: usize,
    /// When the oldest pending event arrived.
    oldest: Option<Instant>,
}

/// A label value in Prometheus/LogQL syntax: quoted, `\`, `"` and newlines escaped.
fn prom_quote(out: &mut String, v: &str) {
    out.push('"');
    crate::model::escape_label_value(v, out);
    out.push('"');
}

impl Batcher {
    pub(super) fn new(cfg: &LokiConfig) -> Batcher {
        Batcher {
            job: cfg.job.clone(),
            node: cfg.node.clone(),
            batch_size: cfg.batch_size,
            format: cfg.format,
            structured_metadata: cfg.structured_metadata,
            streams: Vec::new(),
            pending: VecDeque::new(),
            pending_bytes: 0,
            oldest: None,
        }
    }

    /// Events held.
    pub(super) fn len(&self) -> usize {
        self.pending.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Bytes of lines held.
    pub(super) fn bytes(&self) -> usize {
        self.pending_bytes
    }

    /// When the oldest held event arrived (or the last batch was taken).
    pub(super) fn oldest(&self) -> Option<Instant> {
        self.oldest
    }

    /// Hold `ev` (the caller bounds the backlog).
    pub(super) fn add(&mut self, ev: &Event) {
        let stream = self.stream_of(ev);
        let ts = ev.unix_nanos();
        let line = ev.log_line();
        let meta = if self.structured_metadata {
            structured_metadata(ev)
        } else {
            Vec::new()
        };
        self.pending_bytes += line.len();
        self.pending.push_back(Entry {
            stream,
            ts,
            line,
            meta,
        });
        if self.oldest.is_none() {
            self.oldest = Some(Instant::now());
        }
    }

    /// Drop the first `n` events (delivered, rejected or given up on).
    pub(super) fn take(&mut self, n: usize) {
        for e in self.pending.drain(..n) {
            self.pending_bytes -= e.line.len();
        }
        self.oldest = if self.pending.is_empty() {
            None
        } else {
            Some(Instant::now())
        };
    }

    fn stream_of(&mut self, ev: &Event) -> usize {
        let ns = &ev.entity.k8s_namespace;
        if let Some(i) = self
            .streams
            .iter()
            .position(|s| s.kind == ev.kind && s.k8s_namespace == *ns)
        {
            return i;
        }
        let mut labels: Vec<(&str, &str)> = vec![("job", &self.job)];
        if !self.node.is_empty() {
            labels.push(("node", &self.node));
        }
        labels.push(("type", &ev.kind));
        if !ns.is_empty() {
            labels.push(("k8s_namespace", ns));
        }
        let json = serde_json::Value::Object(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
                .collect(),
        )
        .to_string();
        let mut prom = String::from("{");
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                prom.push_str(", ");
            }
            prom.push_str(k);
            prom.push('=');
            prom_quote(&mut prom, v);
        }
        prom.push('}');
        self.streams.push(Stream {
            kind: ev.kind.to_string(),
            k8s_namespace: ns.clone(),
            json,
            prom,
        });
        self.streams.len() - 1
    }

    /// The next batch: up to `batch_size` bytes of lines, grouped by stream (streams in first-
    /// seen order), each stream's entries in time order. Returns the groups and the number of
    /// events.
    fn next_batch(&self) -> (Vec<(usize, Vec<&Entry>)>, usize) {
        let mut n = 0;
        let mut bytes = 0;
        for e in &self.pending {
            if n > 0 && bytes + e.line.len() > self.batch_size {
                break;
            }
            bytes += e.line.len();
            n += 1;
        }
        let mut by_stream: Vec<Vec<&Entry>> = vec![Vec::new(); self.streams.len()];
        for e in self.pending.iter().take(n) {
            by_stream[e.stream].push(e);
        }
        let groups = by_stream
            .into_iter()
            .enumerate()
            .filter(|(_, es)| !es.is_empty())
            .map(|(i, mut es)| {
                es.sort_by_key(|e| e.ts);
                (i, es)
            })
            .collect();
        (groups, n)
    }

    /// The body of the next batch in the configured format, and the number of events.
    pub(super) fn next_body(&self) -> (Vec<u8>, usize) {
        let (groups, n) = self.next_batch();
        let body = match self.format {
            LokiFormat::Json => self.json_body(&groups),
            LokiFormat::Protobuf => self.protobuf_body(&groups),
        };
        (body, n)
    }

    fn json_body(&self, groups: &[(usize, Vec<&Entry>)]) -> Vec<u8> {
        let bytes: usize = groups
            .iter()
            .flat_map(|(_, es)| es.iter().map(|e| e.line.len() + 40))
            .sum();
        let mut body = Vec::with_capacity(bytes + 64);
        body.extend_from_slice(b"{\"streams\":[");
        for (gi, (i, entries)) in groups.iter().enumerate() {
            if gi > 0 {
                body.push(b',');
            }
            body.extend_from_slice(b"{\"stream\":");
            body.extend_from_slice(self.streams[*i].json.as_bytes());
            body.extend_from_slice(b",\"values\":[");
            for (j, e) in entries.iter().enumerate() {
                if j > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(format!("[\"{}\",", e.ts).as_bytes());
                let _ = serde_json::to_writer(&mut body, &e.line);
                if !e.meta.is_empty() {
                    body.push(b',');
                    body.push(b'{');
                    for (k, (name, value)) in e.meta.iter().enumerate() {
                        if k > 0 {
                            body.push(b',');
                        }
                        let _ = serde_json::to_writer(&mut body, name);
                        body.push(b':');
                        let _ = serde_json::to_writer(&mut body, value);
                    }
                    body.push(b'}');
                }
                body.push(b']');
            }
            body.extend_from_slice(b"]}");
        }
        body.extend_from_slice(b"]}");
        body
    }

    fn protobuf_body(&self, groups: &[(usize, Vec<&Entry>)]) -> Vec<u8> {
        use crate::events::loki_proto::{
            EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter, Timestamp,
        };
        let req = PushRequest {
            streams: groups
                .iter()
                .map(|(i, entries)| StreamAdapter {
                    labels: self.streams[*i].prom.clone(),
                    entries: entries
                        .iter()
                        .map(|e| EntryAdapter {
                            timestamp: Some(Timestamp {
                                seconds: (e.ts / 1_000_000_000) as i64,
                                nanos: (e.ts % 1_000_000_000) as i32,
                            }),
                            line: e.line.clone(),
                            structured_metadata: e
                                .meta
                                .iter()
                                .map(|(k, v)| LabelPairAdapter {
                                    name: k.clone(),
                                    value: v.clone(),
                                })
                                .collect(),
                        })
                        .collect(),
                })
                .collect(),
        };
        crate::events::loki_proto::encode_snappy(&req)
    }
}

/// Per-line metadata for Loki 3 (`| k8s_pod="web-0"` without parsing the line): the
/// high-cardinality entity keys and the entity's extra labels (`metrics.additionalLabels`:
/// pod labels can be anything, so never stream labels).
fn structured_metadata(ev: &Event) -> Vec<(String, String)> {
    let e = &ev.entity;
    let mut m = Vec::with_capacity(4 + e.labels.len());
    if !e.k8s_pod.is_empty() {
        m.push(("k8s_pod".to_string(), e.k8s_pod.clone()));
    }
    m.push(("netns".to_string(), e.netns.to_string()));
    if !e.kind.is_empty() {
        m.push(("entity_kind".to_string(), e.kind.clone()));
    }
    if !e.name.is_empty() {
        m.push(("entity_name".to_string(), e.name.clone()));
    }
    m.extend(e.labels.iter().filter(|(_, v)| !v.is_empty()).cloned());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_syntax() {
        let mut s = String::new();
        prom_quote(&mut s, "a\"b\\c\nd");
        assert_eq!(s, r#""a\"b\\c\nd""#);
    }
}
