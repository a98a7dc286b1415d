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
    /// time first; no intermediate `Value`). The file sink writes the same bytes through
    /// [`JsonParts`], which keeps the JSON of the entities and stacks events share.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        self.write_json_head(out);
        write_entity_json(&self.entity, out);
        self.write_json_fields(out);
        write_stack_json(&self.stack, out);
        out.push(b'}');
    }

    /// `{"time":"…","type":"…"`.
    fn write_json_head(&self, out: &mut Vec<u8>) {
        let mut num = itoa::Buffer::new();
        out.extend_from_slice(b"{\"time\":\"");
        let ns = self.unix_nanos();
        // u64 nanoseconds last until 2554; its formatting is a third of u128's.
        match u64::try_from(ns) {
            Ok(ns) => put::<24>(out, num.format(ns).as_bytes()),
            Err(_) => out.extend_from_slice(num.format(ns).as_bytes()),
        }
        out.extend_from_slice(b"\",\"type\":");
        json_str(out, &self.kind);
    }

    /// `,"fields":{…}`.
    fn write_json_fields(&self, out: &mut Vec<u8>) {
        let mut num = itoa::Buffer::new();
        out.extend_from_slice(b",\"fields\":{");
        json_seq(out, &self.fields, |out, (k, v)| {
            json_str(out, k);
            out.push(b':');
            match v {
                FieldValue::Str(s) => json_str(out, s),
                FieldValue::Int(i) => put::<24>(out, num.format(*i).as_bytes()),
                FieldValue::UInt(u) => put::<24>(out, num.format(*u).as_bytes()),
                FieldValue::Addr(IpAddr::V4(a)) => json_ipv4(out, a.octets()),
                FieldValue::Addr(a) => {
                    let _ = write!(out, "\"{a}\"");
                }
                FieldValue::Seconds(f) => {
                    let _ = serde_json::to_writer(&mut *out, f);
                }
            }
        });
        out.push(b'}');
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

/// `v` as a JSON string, byte for byte what serde_json writes: strings with nothing to escape
/// (the usual names, types and frames) are copied in one go; the rest go through serde_json.
#[inline]
fn json_str(out: &mut Vec<u8>, v: &str) {
    if !needs_escape(v.as_bytes()) {
        out.push(b'"');
        put::<16>(out, v.as_bytes());
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, v);
    }
}

/// `s` appended to `out`. Up to `N` bytes (the usual keys, names, numbers) go as a few
/// fixed-size copies into `N` zeroed bytes, which the compiler makes register loads and
/// stores, and a truncation: copied by length, each took a call to memcpy (about twenty short
/// strings an event; `perf` put a quarter of serialising in those calls). Longer ones are
/// copied by length. (Made in a buffer on the stack and copied over at once, the narrow
/// stores then read as one wide load stalled the CPU more than the calls cost.)
#[inline(always)]
fn put<const N: usize>(out: &mut Vec<u8>, s: &[u8]) {
    let n = s.len();
    if n > N {
        out.extend_from_slice(s);
        return;
    }
    let len = out.len();
    out.extend_from_slice(&[0u8; N]);
    let w = &mut out[len..len + N];
    // Copies of a fixed size, the last overlapping the one before, cover any length from it
    // up.
    if n >= 8 {
        let mut i = 0;
        while i + 8 < n {
            w[i..i + 8].copy_from_slice(&s[i..i + 8]);
            i += 8;
        }
        w[n - 8..n].copy_from_slice(&s[n - 8..]);
    } else if n >= 4 {
        w[..4].copy_from_slice(&s[..4]);
        w[n - 4..n].copy_from_slice(&s[n - 4..]);
    } else if n > 0 {
        w[0] = s[0];
        w[n / 2] = s[n / 2];
        w[n - 1] = s[n - 1];
    }
    out.truncate(len + n);
}

/// `"a.b.c.d"` (what `Ipv4Addr`'s Display writes between quotes), made in place.
#[inline]
fn json_ipv4(out: &mut Vec<u8>, octets: [u8; 4]) {
    let len = out.len();
    out.extend_from_slice(&[0u8; 24]);
    let w = &mut out[len..len + 24];
    w[0] = b'"';
    let mut n = 1;
    for (i, o) in octets.into_iter().enumerate() {
        if i > 0 {
            w[n] = b'.';
            n += 1;
        }
        if o >= 100 {
            w[n] = b'0' + o / 100;
            n += 1;
        }
        if o >= 10 {
            w[n] = b'0' + o / 10 % 10;
            n += 1;
        }
        w[n] = b'0' + o % 10;
        n += 1;
    }
    w[n] = b'"';
    out.truncate(len + n + 1);
}

/// Whether `s` has a byte JSON escapes: a control character (below 0x20), `"` or `\`.
/// Eight bytes at a time: a byte-by-byte loop was a sixth of the file sink's time. The bytes
/// after the last whole eight, and strings shorter than eight (most field keys), are read as
/// words that overlap ones already read (a byte read twice is still exact).
#[inline]
fn needs_escape(s: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A byte of `x` below `n` (n <= 0x80) sets its high bit here; exact for "any byte".
    let below = |x: u64, n: u64| x.wrapping_sub(n * ONES) & !x & HIGH;
    let bad = |x: u64| {
        below(x, 0x20) | below(x ^ (b'"' as u64 * ONES), 1) | below(x ^ (b'\\' as u64 * ONES), 1)
            != 0
    };
    let u64_at = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&s[i..i + 8]);
        u64::from_le_bytes(w)
    };
    let u32_at = |i: usize| {
        let mut w = [0u8; 4];
        w.copy_from_slice(&s[i..i + 4]);
        u32::from_le_bytes(w) as u64
    };
    let n = s.len();
    if n >= 8 {
        let mut i = 0;
        while i + 8 <= n {
            if bad(u64_at(i)) {
                return true;
            }
            i += 8;
        }
        i < n && bad(u64_at(n - 8))
    } else if n >= 4 {
        bad(u32_at(0) | u32_at(n - 4) << 32)
    } else if n > 0 {
        // Three bytes (the first, middle and last: all of a string this short), the rest of
        // the word a byte that needs no escape.
        let x = s[0] as u64 | (s[n / 2] as u64) << 8 | (s[n - 1] as u64) << 16;
        bad(x | (b'a' as u64 * ONES) << 24)
    } else {
        false
    }
}

/// `,"netns":…,"kind":…,"k8s_namespace":…,"k8s_pod":…,"name":…,"labels":{…}`.
fn write_entity_json(e: &EventEntity, out: &mut Vec<u8>) {
    out.extend_from_slice(b",\"netns\":");
    put::<24>(out, itoa::Buffer::new().format(e.netns).as_bytes());
    out.extend_from_slice(b",\"kind\":");
    json_str(out, &e.kind);
    out.extend_from_slice(b",\"k8s_namespace\":");
    json_str(out, &e.k8s_namespace);
    out.extend_from_slice(b",\"k8s_pod\":");
    json_str(out, &e.k8s_pod);
    out.extend_from_slice(b",\"name\":");
    json_str(out, &e.name);
    out.extend_from_slice(b",\"labels\":{");
    json_seq(out, &e.labels, |out, (k, v)| {
        json_str(out, k);
        out.push(b':');
        json_str(out, v);
    });
    out.push(b'}');
}

/// `,"stack":[…]`.
fn write_stack_json(stack: &[String], out: &mut Vec<u8>) {
    out.extend_from_slice(b",\"stack\":[");
    json_seq(out, stack, |out, f| json_str(out, f));
    out.push(b']');
}

/// `items`, each written by `item`, separated by commas.
fn json_seq<T>(
    out: &mut Vec<u8>,
    items: impl IntoIterator<Item = T>,
    mut item: impl FnMut(&mut Vec<u8>, T),
) {
    for (i, x) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        item(out, x);
    }
}

/// The JSON of the entities and stacks recent events shared, for a sink that writes many
/// events' JSON lines ([`JsonParts::write`]: the bytes of [`Event::write_json`]). Readers hand
/// the events of one namespace the same `Arc<EventEntity>` (an [`EntityCache`]) and those of
/// one stack id the same stack, so most events' entity and stack are written by copying bytes
/// made once, instead of escaping half a dozen strings last touched on another CPU. Each slot
/// keeps the `Arc` its bytes were made from: its address cannot be reused by another entity
/// while the slot holds it, and an entity is never changed in place while shared (a change is
/// a new `Arc`). Bounded: `SLOTS` entities and stacks, a new one takes its slot's place.
pub struct JsonParts {
    entities: Vec<Part<Arc<EventEntity>>>,
    stacks: Vec<Part<Arc<[String]>>>,
}

/// A slot of [`JsonParts`]: what its JSON was made from, and the JSON.
type Part<T> = Option<(T, Vec<u8>)>;

impl Default for JsonParts {
    fn default() -> JsonParts {
        JsonParts {
            entities: vec![None; JsonParts::SLOTS],
            stacks: vec![None; JsonParts::SLOTS],
        }
    }
}

impl JsonParts {
    /// A node's namespaces with events at a time, with room to spare (a slot costs 32 bytes,
    /// plus the JSON it keeps: about 200 bytes).
    const SLOTS: usize = 1024;

    /// The slot of an `Arc` by its address (Fibonacci hashing: allocations are spaced by
    /// multiples of 16, which a plain modulus would crowd into a few slots).
    fn slot(addr: usize) -> usize {
        ((addr as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - Self::SLOTS.trailing_zeros()))
            as usize
    }

    /// `ev` as [`Event::write_json`] writes it, appended to `out`.
    pub fn write(&mut self, ev: &Event, out: &mut Vec<u8>) {
        ev.write_json_head(out);
        Self::part(&mut self.entities, &ev.entity, out, write_entity_json);
        ev.write_json_fields(out);
        if ev.stack.is_empty() {
            // Every stackless event has an empty slice of its own: nothing worth keeping.
            write_stack_json(&[], out);
        } else {
            Self::part(&mut self.stacks, &ev.stack, out, write_stack_json);
        }
        out.push(b'}');
    }

    /// The JSON of `of` from its slot, made by `make` (and kept there) if the slot holds
    /// another's.
    fn part<T: ?Sized>(
        slots: &mut [Part<Arc<T>>],
        of: &Arc<T>,
        out: &mut Vec<u8>,
        make: impl Fn(&T, &mut Vec<u8>),
    ) {
        let slot = &mut slots[Self::slot(Arc::as_ptr(of) as *const u8 as usize)];
        match slot {
            Some((kept, json)) if Arc::ptr_eq(kept, of) => out.extend_from_slice(json),
            _ => {
                let mut json = Vec::with_capacity(160);
                make(of, &mut json);
                out.extend_from_slice(&json);
                *slot = Some((of.clone(), json));
            }
        }
    }
}

/// Values with spaces or quotes are quoted (logfmt style); empty values stay empty.
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

    /// The parts a sink keeps write exactly the bytes of `write_json`: for events that share
    /// an entity and a stack, for a changed entity (a new `Arc`), for entities freed while
    /// another takes their memory, for more entities and stacks than there are slots, and for
    /// events without a stack.
    #[test]
    fn json_parts_write_what_write_json_writes() {
        let mut parts = JsonParts::default();
        let check = |parts: &mut JsonParts, e: &Event| {
            let (mut a, mut b) = (Vec::new(), b"prefix".to_vec());
            e.write_json(&mut a);
            parts.write(e, &mut b);
            assert_eq!(
                String::from_utf8(b).unwrap(),
                format!("prefix{}", String::from_utf8(a).unwrap())
            );
        };
        let e = sample();
        check(&mut parts, &e);
        check(&mut parts, &e.clone().with("seq", FieldValue::UInt(2)));
        // A changed entity is a new Arc: its new name is written.
        let mut renamed = e.clone();
        Arc::make_mut(&mut renamed.entity).k8s_pod = "web-1".into();
        check(&mut parts, &renamed);
        check(&mut parts, &e);
        // Entities and stacks made and freed one after another (the allocator hands the
        // same memory out again), far more than the slots.
        for i in 0..3 * JsonParts::SLOTS as u64 {
            let mut x = Event::new(
                "PACKETLOSS",
                EventEntity {
                    netns: i,
                    kind: "pod".into(),
                    k8s_pod: format!("pod-{i}"),
                    ..Default::default()
                },
            )
            .with("n", FieldValue::UInt(i));
            if i % 3 != 0 {
                x.stack = vec![format!("f{i}+0x1"), "g+0x2".to_string()].into();
            }
            check(&mut parts, &x);
            check(&mut parts, &x);
        }
        check(&mut parts, &e);
    }

    /// Eight bytes at a time finds every byte JSON escapes, at every position, and nothing
    /// else (UTF-8, DEL, the bytes next to the escaped ones).
    #[test]
    fn needs_escape_is_exact() {
        for len in 0..20 {
            for pos in 0..len {
                for b in 0u8..=255 {
                    let mut v = vec![b'a'; len];
                    v[pos] = b;
                    let want = b < 0x20 || b == b'"' || b == b'\\';
                    assert_eq!(needs_escape(&v), want, "byte {b:#x} at {pos} of {len}");
                }
            }
        }
        assert!(!needs_escape(
            "kfree_skb_reason+0x1f [nf_tables] é \u{7f}".as_bytes()
        ));
    }

    #[test]
    fn put_appends_exactly_the_bytes() {
        for len in 0..40 {
            let s: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
            for before in 0..3 {
                let mut a = vec![b'x'; before];
                let mut b = a.clone();
                put::<16>(&mut a, &s);
                put::<24>(&mut b, &s);
                let mut want = vec![b'x'; before];
                want.extend_from_slice(&s);
                assert_eq!(a, want, "N=16, {len} bytes after {before}");
                assert_eq!(b, want, "N=24, {len} bytes after {before}");
            }
        }
    }

    #[test]
    fn json_ipv4_writes_what_display_writes() {
        for v in 0..=255u8 {
            for pos in 0..4 {
                let mut o = [1, 22, 203, 0];
                o[pos] = v;
                let mut out = b"[".to_vec();
                json_ipv4(&mut out, o);
                let want = format!("[\"{}\"", std::net::Ipv4Addr::from(o));
                assert_eq!(String::from_utf8(out).unwrap(), want);
            }
        }
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
