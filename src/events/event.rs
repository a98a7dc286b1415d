//! The event model and its two renderings: KubeSkoop's log line and a JSON line with the same
//! data.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::inventory::{Entity, EntityKind};

/// A typed field value.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldValue {
    /// A name from a fixed set (protocol, state) borrowed, anything else owned.
    Str(Cow<'static, str>),
    Int(i64),
    UInt(u64),
    Addr(IpAddr),
    /// Seconds (latencies).
    Seconds(f64),
}

impl std::fmt::Display for FieldValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FieldValue::Str(s) => f.write_str(s),
            FieldValue::Int(v) => write!(f, "{v}"),
            FieldValue::UInt(v) => write!(f, "{v}"),
            FieldValue::Addr(a) => write!(f, "{a}"),
            FieldValue::Seconds(v) => write!(f, "{v}"),
        }
    }
}

/// Who an event happened to: the namespace's entity labels.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventEntity {
    pub netns: u64,
    pub kind: String,
    pub k8s_namespace: String,
    pub k8s_pod: String,
    pub name: String,
    /// The entity's extra labels (`k8s_node`, `metrics.additionalLabels` with `${labels:KEY}`
    /// expanded from its pod's labels): the same names and values as its metrics have.
    pub labels: Vec<(String, String)>,
}

impl EventEntity {
    pub fn from_entity(e: &Entity) -> EventEntity {
        EventEntity {
            netns: e.inode,
            kind: e.kind.as_str().to_string(),
            k8s_namespace: e.k8s_namespace.clone(),
            k8s_pod: e.k8s_pod.clone(),
            name: e.name.clone(),
            labels: e.extra_labels.clone(),
        }
    }

    /// A namespace the inventory does not know: labelled by its inode, never dropped.
    pub fn unknown(netns: u64) -> EventEntity {
        EventEntity {
            netns,
            kind: "unknown".into(),
            ..Default::default()
        }
    }

    pub fn is_host(&self) -> bool {
        self.kind == EntityKind::Host.as_str()
    }
}

/// The entities of the events a reader makes, one per namespace for as long as the inventory
/// hands out the same entity (the same `Arc`, kept here so it cannot be freed and its address
/// reused): each event takes a reference instead of copies of the entity's strings, which a
/// sink thread would then read from another CPU's cache and free into another thread's heap.
#[derive(Default)]
pub struct EntityCache(HashMap<u64, (Option<Arc<Entity>>, Arc<EventEntity>)>);

impl EntityCache {
    /// At most this many namespaces are kept; beyond, the cache starts over.
    const MAX: usize = 4096;

    pub fn get(&mut self, netns: u64, e: Option<Arc<Entity>>) -> Arc<EventEntity> {
        if let Some((known, ev)) = self.0.get(&netns) {
            let same = match (known, &e) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            };
            if same {
                return ev.clone();
            }
        }
        if self.0.len() >= Self::MAX {
            self.0.clear();
        }
        let ev = Arc::new(match &e {
            Some(e) => EventEntity::from_entity(e),
            None => EventEntity::unknown(netns),
        });
        self.0.insert(netns, (e, ev.clone()));
        ev
    }

    /// Forget every entity (namespaces gone since are released).
    pub fn clear(&mut self) {
        self.0.clear();
    }
}

/// One event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub time: SystemTime,
    /// `PACKETLOSS`, `TCPRESET_NOSOCK`, ... (KubeSkoop's names).
    pub kind: Cow<'static, str>,
    /// Shared: a reader makes one per namespace and hands each event a reference, so an event
    /// carries no string of its entity's to allocate, copy between threads and free.
    pub entity: Arc<EventEntity>,
    /// Ordered fields: protocol, saddr, sport, daddr, dport, then probe-specific ones.
    pub fields: Vec<(&'static str, FieldValue)>,
    /// Kernel stack, innermost first, as `sym+0xoff [module]`, from the kernel function that
    /// acted (the probe's own frames cut: [`crate::probes::stack`]). Shared by the events
    /// that carry the same stack id in a read.
    pub stack: Arc<[String]>,
}

impl Event {
    pub fn new(kind: impl Into<Cow<'static, str>>, entity: impl Into<Arc<EventEntity>>) -> Event {
        Event {
            time: SystemTime::now(),
            kind: kind.into(),
            entity: entity.into(),
            fields: Vec::new(),
            stack: Arc::new([]),
        }
    }

    pub fn with(mut self, key: &'static str, v: FieldValue) -> Event {
        self.fields.push((key, v));
        self
    }

    pub fn field(&self, key: &str) -> Option<&FieldValue> {
        self.fields.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// KubeSkoop's line: `type=TCPRESET_NOSOCK pod=web-0 namespace=default protocol=TCP
    /// saddr=198.18.0.2 sport=443 daddr=198.18.0.1 dport=33488`, then our own keys (`netns`,
    /// `kind`, `name`), the entity's extra labels (`app=web`: `metrics.additionalLabels`), the
    /// fields, and the stack as `stack=sym+0x1f/sym2+0x8`.
    pub fn log_line(&self) -> String {
        let mut s = String::with_capacity(160);
        let _ = write!(
            s,
            "type={} pod={} namespace={} netns={} kind={} name={}",
            self.kind,
            quote(&self.entity.k8s_pod),
            quote(&self.entity.k8s_namespace),
            self.entity.netns,
            self.entity.kind,
            quote(&self.entity.name)
        );
        for (k, v) in &self.entity.labels {
            let _ = write!(s, " {k}={}", quote(v));
        }
        for (k, v) in &self.fields {
            let _ = write!(s, " {k}={}", quote(&v.to_string()));
        }
        if !self.stack.is_empty() {
            let _ = write!(s, " stack={}", quote(&self.stack.join("/")));
        }
        s
    }

    /// The event's time in nanoseconds since the Unix epoch (0 before it).
    pub fn unix_nanos(&self) -> u128 {
        self.time
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    }

    /// [`Event::to_json`] written straight into `out` (same data; keys in the event's order,
    /// time first; no intermediate `Value`: the file sink's hot path).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let mut num = itoa::Buffer::new();
        out.extend_from_slice(b"{\"time\":\"");
        out.extend_from_slice(num.format(self.unix_nanos()).as_bytes());
        out.extend_from_slice(b"\",\"type\":");
        json_str(out, &self.kind);
        out.extend_from_slice(b",\"netns\":");
        out.extend_from_slice(num.format(self.entity.netns).as_bytes());
        out.extend_from_slice(b",\"kind\":");
        json_str(out, &self.entity.kind);
        out.extend_from_slice(b",\"k8s_namespace\":");
        json_str(out, &self.entity.k8s_namespace);
        out.extend_from_slice(b",\"k8s_pod\":");
        json_str(out, &self.entity.k8s_pod);
        out.extend_from_slice(b",\"name\":");
        json_str(out, &self.entity.name);
        out.extend_from_slice(b",\"labels\":{");
        for (i, (k, v)) in self.entity.labels.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json_str(out, k);
            out.push(b':');
            json_str(out, v);
        }
        out.extend_from_slice(b"},\"fields\":{");
        for (i, (k, v)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json_str(out, k);
            out.push(b':');
            match v {
                FieldValue::Str(s) => json_str(out, s),
                FieldValue::Int(i) => out.extend_from_slice(num.format(*i).as_bytes()),
                FieldValue::UInt(u) => out.extend_from_slice(num.format(*u).as_bytes()),
                FieldValue::Addr(IpAddr::V4(a)) => {
                    out.push(b'"');
                    for (i, o) in a.octets().iter().enumerate() {
                        if i > 0 {
                            out.push(b'.');
                        }
                        out.extend_from_slice(num.format(*o).as_bytes());
                    }
                    out.push(b'"');
                }
                FieldValue::Addr(a) => {
                    let _ = write!(out, "\"{a}\"");
                }
                FieldValue::Seconds(f) => {
                    let _ = serde_json::to_writer(&mut *out, f);
                }
            }
        }
        out.extend_from_slice(b"},\"stack\":[");
        for (i, f) in self.stack.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json_str(out, f);
        }
        out.extend_from_slice(b"]}");
    }

    /// The same data as one JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        let ns = self.unix_nanos();
        let mut fields = serde_json::Map::new();
        for (k, v) in &self.fields {
            let jv = match v {
                FieldValue::Str(s) => serde_json::Value::from(&**s),
                FieldValue::Int(i) => serde_json::Value::from(*i),
                FieldValue::UInt(u) => serde_json::Value::from(*u),
                FieldValue::Addr(a) => serde_json::Value::from(a.to_string()),
                FieldValue::Seconds(f) => serde_json::Value::from(*f),
            };
            fields.insert((*k).to_string(), jv);
        }
        let labels: serde_json::Map<String, serde_json::Value> = self
            .entity
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
            .collect();
        serde_json::json!({
            "time": ns.to_string(),
            "type": self.kind,
            "netns": self.entity.netns,
            "kind": self.entity.kind,
            "k8s_namespace": self.entity.k8s_namespace,
            "k8s_pod": self.entity.k8s_pod,
            "name": self.entity.name,
            "labels": labels,
            "fields": fields,
            "stack": &*self.stack,
        })
    }
}

/// Values with spaces or quotes are quoted (logfmt style); empty values stay empty.
/// `v` as a JSON string, byte for byte what serde_json writes: strings with nothing to escape
/// (the usual names, types and frames) are copied in one go; the rest go through serde_json.
fn json_str(out: &mut Vec<u8>, v: &str) {
    if v.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.reserve(v.len() + 2);
        out.push(b'"');
        out.extend_from_slice(v.as_bytes());
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, v);
    }
}

fn quote(v: &str) -> String {
    if v.chars().any(|c| c.is_whitespace() || c == '"' || c == '=') {
        format!("{v:?}")
    } else {
        v.to_string()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn named(inode: u64, name: &str) -> Arc<Entity> {
        let kind = crate::inventory::EntityKind::Named;
        Arc::new(Entity::new(
            inode,
            None,
            kind,
            name.into(),
            vec![],
            None,
            None,
        ))
    }

    #[test]
    fn entity_cache_shares_one_entity_until_the_inventory_changes_it() {
        let mut c = EntityCache::default();
        let blue = named(7, "blue");
        let a = c.get(7, Some(blue.clone()));
        assert_eq!(
            (a.netns, a.kind.as_str(), a.name.as_str()),
            (7, "named", "blue")
        );
        // The same entity again: the same reference, nothing copied.
        assert!(Arc::ptr_eq(&a, &c.get(7, Some(blue.clone()))));
        // The inventory publishes a changed entity as a new one: taken anew.
        let b = c.get(7, Some(named(7, "green")));
        assert_eq!(b.name, "green");
        assert!(!Arc::ptr_eq(&a, &b));
        // A namespace the inventory does not know, then knows.
        let u = c.get(8, None);
        assert_eq!(
            (u.netns, u.kind.as_str(), u.name.as_str()),
            (8, "unknown", "")
        );
        assert!(Arc::ptr_eq(&u, &c.get(8, None)));
        assert_eq!(c.get(8, Some(named(8, "red"))).name, "red");
        assert_eq!(c.get(8, None).kind, "unknown");
        // Bounded: never more than MAX namespaces kept.
        for i in 0..(EntityCache::MAX as u64 + 10) {
            c.get(100 + i, None);
        }
        assert!(c.0.len() <= EntityCache::MAX, "{}", c.0.len());
        c.clear();
        assert!(c.0.is_empty());
    }

    pub(crate) fn sample() -> Event {
        let mut e = Event::new(
            "TCPRESET_NOSOCK",
            EventEntity {
                netns: 4026532001,
                kind: "pod".into(),
                k8s_namespace: "default".into(),
                k8s_pod: "web-0".into(),
                name: "web-0".into(),
                labels: vec![
                    ("app".into(), "web".into()),
                    ("team".into(), "t shop".into()),
                ],
            },
        )
        .with("protocol", FieldValue::Str("TCP".into()))
        .with("saddr", FieldValue::Addr("198.18.0.2".parse().unwrap()))
        .with("sport", FieldValue::UInt(443))
        .with("daddr", FieldValue::Addr("2001:db8::1".parse().unwrap()))
        .with("dport", FieldValue::UInt(33488))
        .with("state", FieldValue::Str("CLOSE".into()));
        e.time = UNIX_EPOCH + std::time::Duration::from_nanos(1_700_000_000_123_456_789);
        e.stack = vec![
            "tcp_v4_send_reset+0x1f".into(),
            "tcp_v4_rcv+0x8a [kernel]".into(),
        ]
        .into();
        e
    }

    #[test]
    fn log_line_like_kubeskoop() {
        assert_eq!(
            sample().log_line(),
            "type=TCPRESET_NOSOCK pod=web-0 namespace=default netns=4026532001 kind=pod name=web-0 \
             app=web team=\"t shop\" protocol=TCP saddr=198.18.0.2 sport=443 daddr=2001:db8::1 dport=33488 state=CLOSE \
             stack=\"tcp_v4_send_reset+0x1f/tcp_v4_rcv+0x8a [kernel]\""
        );
    }

    #[test]
    fn write_json_equals_to_json() {
        let mut e = sample().with("rtt", FieldValue::Seconds(0.25));
        Arc::make_mut(&mut e.entity).name = "we\"ird name\n".into();
        let mut out = Vec::new();
        e.write_json(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v, e.to_json());
        // Keys in the event's own order (time first, fields as the probe gave them).
        assert!(out.starts_with(b"{\"time\":\"1700000000123456789\",\"type\":"));
    }

    /// The fast path writes what serde_json writes, byte for byte, escapes or not; IPv4 and
    /// IPv6 addresses, negative integers and the time as serde_json formats them.
    #[test]
    fn write_json_bytes_equal_serde_json() {
        let mut e = sample()
            .with("saddr", FieldValue::Addr("198.18.0.255".parse().unwrap()))
            .with("daddr", FieldValue::Addr("2001:2::1".parse().unwrap()))
            .with("delta", FieldValue::Int(-42))
            .with(
                "note",
                FieldValue::Str("tab\there \\ \"q\" \u{7f} \u{e9}".into()),
            );
        e.stack = vec!["kfree_skb_reason+0x1f".into(), "a\u{1}b".into()].into();
        let mut fast = Vec::new();
        e.write_json(&mut fast);
        let mut slow = Vec::new();
        let st = |out: &mut Vec<u8>, v: &str| serde_json::to_writer(&mut *out, v).unwrap();
        write!(slow, "{{\"time\":\"{}\",\"type\":", e.unix_nanos()).unwrap();
        st(&mut slow, &e.kind);
        write!(slow, ",\"netns\":{},\"kind\":", e.entity.netns).unwrap();
        st(&mut slow, &e.entity.kind);
        for (k, v) in [
            ("k8s_namespace", &e.entity.k8s_namespace),
            ("k8s_pod", &e.entity.k8s_pod),
            ("name", &e.entity.name),
        ] {
            write!(slow, ",\"{k}\":").unwrap();
            st(&mut slow, v);
        }
        slow.extend_from_slice(b",\"labels\":");
        let labels: serde_json::Map<String, serde_json::Value> = e
            .entity
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into()))
            .collect();
        serde_json::to_writer(&mut slow, &labels).unwrap();
        slow.extend_from_slice(b",\"fields\":{");
        for (i, (k, v)) in e.fields.iter().enumerate() {
            if i > 0 {
                slow.push(b',');
            }
            st(&mut slow, k);
            slow.push(b':');
            match v {
                FieldValue::Str(s) => st(&mut slow, s),
                FieldValue::Int(i) => write!(slow, "{i}").unwrap(),
                FieldValue::UInt(u) => write!(slow, "{u}").unwrap(),
                FieldValue::Addr(a) => st(&mut slow, &a.to_string()),
                FieldValue::Seconds(f) => serde_json::to_writer(&mut slow, f).unwrap(),
            }
        }
        slow.extend_from_slice(b"},\"stack\":");
        serde_json::to_writer(&mut slow, &*e.stack).unwrap();
        slow.push(b'}');
        assert_eq!(
            String::from_utf8(fast).unwrap(),
            String::from_utf8(slow).unwrap()
        );
    }

    #[test]
    fn json_line_same_data() {
        let j = sample().to_json();
        assert_eq!(j["time"], "1700000000123456789");
        assert_eq!(j["type"], "TCPRESET_NOSOCK");
        assert_eq!(j["k8s_pod"], "web-0");
        assert_eq!(
            j["labels"],
            serde_json::json!({"app": "web", "team": "t shop"})
        );
        assert_eq!(j["fields"]["sport"], 443);
        assert_eq!(j["fields"]["daddr"], "2001:db8::1");
        assert_eq!(j["stack"][1], "tcp_v4_rcv+0x8a [kernel]");
    }
}
