//! `netsleuth events`: follows an exporter's `/events` (NDJSON), prints each event as the
//! stderr sink's line (logfmt) or as the JSON line received, and reconnects with backoff when
//! the stream ends (the exporter restarted). The first connection decides: a wrong URL or a
//! refused login exits at once with a code that says which.

use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::client::{Client, FetchError};

/// An event as `/events` sends it; `fields` keep the order they arrive in.
#[derive(Debug, Deserialize)]
pub struct WireEvent {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub netns: u64,
    #[serde(default, rename = "kind")]
    pub entity_kind: String,
    #[serde(default)]
    pub k8s_namespace: String,
    #[serde(default)]
    pub k8s_pod: String,
    #[serde(default)]
    pub name: String,
    /// The entity's extra labels (`metrics.additionalLabels`).
    #[serde(default)]
    pub labels: Ordered,
    #[serde(default)]
    pub fields: Ordered,
    #[serde(default)]
    pub stack: Vec<String>,
}

/// A JSON object's members in the order sent.
#[derive(Debug, Default)]
pub struct Ordered(pub Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Ordered, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Ordered, A::Error> {
                let mut v = Vec::new();
                while let Some((k, val)) = m.next_entry::<String, serde_json::Value>()? {
                    v.push((k, val));
                }
                Ok(Ordered(v))
            }
        }
        d.deserialize_map(V)
    }
}

fn quote(v: &str) -> String {
    if v.chars().any(|c| c.is_whitespace() || c == '"' || c == '=') {
        format!("{v:?}")
    } else {
        v.to_string()
    }
}

impl WireEvent {
    /// The stderr sink's line (`type=... pod=... namespace=... netns=... kind=... name=...`,
    /// the tuple, the other fields, the stack).
    pub fn log_line(&self) -> String {
        let mut s = format!(
            "type={} pod={} namespace={} netns={} kind={} name={}",
            self.kind,
            quote(&self.k8s_pod),
            quote(&self.k8s_namespace),
            self.netns,
            self.entity_kind,
            quote(&self.name)
        );
        for (k, v) in &self.labels.0 {
            let t = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            s.push_str(&format!(" {k}={}", quote(&t)));
        }
        // The tuple first, as the stderr sink writes it; `/events` sends the other fields by
        // name, in that order.
        const TUPLE: [&str; 5] = ["protocol", "saddr", "sport", "daddr", "dport"];
        let f = &self.fields.0;
        let tuple = TUPLE.iter().filter_map(|t| f.iter().find(|(k, _)| k == t));
        let rest = f.iter().filter(|(k, _)| !TUPLE.contains(&k.as_str()));
        for (k, v) in tuple.chain(rest) {
            let t = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            s.push_str(&format!(" {k}={}", quote(&t)));
        }
        if !self.stack.is_empty() {
            s.push_str(&format!(" stack={}", quote(&self.stack.join("/"))));
        }
        s
    }
}

/// `--type`, `--namespace` (the server filters) and `--pod` (here: the pod, or for other kinds
/// the entity's name).
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    pub types: Vec<String>,
    pub namespace: Option<String>,
    pub pod: Option<regex::Regex>,
}

impl EventFilter {
    pub fn query(&self) -> String {
        let mut q = Vec::new();
        if !self.types.is_empty() {
            q.push(format!("type={}", self.types.join(",")));
        }
        if let Some(n) = &self.namespace {
            q.push(format!("k8s_namespace={}", encode(n)));
        }
        q.join("&")
    }

    pub fn matches(&self, e: &WireEvent) -> bool {
        let pod = if e.k8s_pod.is_empty() {
            &e.name
        } else {
            &e.k8s_pod
        };
        self.pod.as_ref().is_none_or(|r| r.is_match(pod))
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The backoff after the `n`th failed reconnect in a row: 0.5 s doubling up to 10 s.
pub fn backoff(n: u32) -> Duration {
    Duration::from_millis((500u64 << n.min(5)).min(10_000))
}

/// Follows the stream until a signal or a fatal error; returns the exit code.
pub fn run(client: &Client, filter: &EventFilter, json: bool) -> i32 {
    use signal_hook::consts::{SIGINT, SIGTERM};
    // SIGTERM/SIGINT: what was printed is flushed, exit 0.
    match signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) {
        Ok(mut s) => {
            std::thread::spawn(move || {
                if s.forever().next().is_some() {
                    let _ = std::io::stdout().lock().flush();
                    std::process::exit(0);
                }
            });
        }
        Err(e) => {
            eprintln!("netsleuth events: cannot install signal handlers: {e}");
            return 1;
        }
    }
    let url = client.url("/events");
    let query = filter.query();
    let mut connected_once = false;
    let mut failures = 0u32;
    loop {
        let reader = match client.events(&query) {
            Ok(r) => r,
            Err(e @ FetchError::Unauthorized(_)) => {
                eprintln!("netsleuth events: {e}");
                return e.exit_code();
            }
            Err(e) if !connected_once => {
                eprintln!("netsleuth events: {e}");
                return e.exit_code();
            }
            Err(e) => {
                let wait = backoff(failures);
                failures += 1;
                eprintln!(
                    "netsleuth events: {e}; retrying in {:.1}s",
                    wait.as_secs_f64()
                );
                std::thread::sleep(wait);
                continue;
            }
        };
        connected_once = true;
        failures = 0;
        eprintln!("netsleuth events: following {url}");
        let mut out = std::io::stdout();
        let why = match follow(reader, filter, json, &mut out) {
            Ok(()) => "the exporter closed the stream".to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return 0,
            Err(e) => e.to_string(),
        };
        let wait = backoff(0);
        eprintln!(
            "netsleuth events: {why}; reconnecting in {:.1}s",
            wait.as_secs_f64()
        );
        std::thread::sleep(wait);
    }
}

/// Copies one connection's events to `out`; `Ok` at the end of the stream. A line that is not
/// an event is reported on stderr and skipped.
pub fn follow(
    r: impl std::io::Read,
    filter: &EventFilter,
    json: bool,
    out: &mut impl Write,
) -> std::io::Result<()> {
    for line in BufReader::new(r).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let ev: WireEvent = match serde_json::from_str(&line) {
            Ok(e) => e,
            Err(e) => {
                let shown: String = line.chars().take(80).collect();
                eprintln!("netsleuth events: skipping a line that is not an event ({e}): {shown}");
                continue;
            }
        };
        if !filter.matches(&ev) {
            continue;
        }
        if json {
            writeln!(out, "{line}")?;
        } else {
            writeln!(out, "{}", ev.log_line())?;
        }
        out.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Event, EventEntity, FieldValue};

    #[test]
    fn logfmt_is_the_stderr_sink_line() {
        let ev = Event::new(
            "TCPRESET_NOSOCK",
            EventEntity {
                netns: 4026532901,
                kind: "pod".into(),
                k8s_namespace: "shop".into(),
                k8s_pod: "web-0".into(),
                name: "web 0".into(),
                labels: vec![("app".into(), "web".into())],
            },
        )
        .with("protocol", FieldValue::Str("TCP".into()))
        .with("saddr", FieldValue::Addr("198.18.0.2".parse().unwrap()))
        .with("sport", FieldValue::UInt(443))
        .with("daddr", FieldValue::Addr("198.18.0.1".parse().unwrap()))
        .with("dport", FieldValue::UInt(33488))
        .with("state", FieldValue::Str("TCP_SYN_SENT".into()));
        // (The stderr sink's probe fields after the tuple are in the probe's order; `/events`
        // sends them by name: one field here, so both agree.)
        let mut ev = ev;
        ev.stack = vec!["tcp_v4_send_reset+0x1f".into(), "tcp_v4_rcv+0x8".into()].into();
        let line = serde_json::to_string(&ev.to_json()).unwrap();
        let w: WireEvent = serde_json::from_str(&line).unwrap();
        assert_eq!(w.log_line(), ev.log_line());
        let mut out = Vec::new();
        let f = EventFilter {
            pod: Some(regex::Regex::new("^web-").unwrap()),
            ..Default::default()
        };
        let input = format!("{line}\nnot json\n\n{line}\n");
        follow(input.as_bytes(), &f, false, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("{}\n{}\n", ev.log_line(), ev.log_line())
        );
        let f = EventFilter {
            pod: Some(regex::Regex::new("^db-").unwrap()),
            ..Default::default()
        };
        let mut out = Vec::new();
        follow(input.as_bytes(), &f, true, &mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn query_and_backoff() {
        let f = EventFilter {
            types: vec!["PACKETLOSS".into(), "TCPRESET_NOSOCK".into()],
            namespace: Some("a b".into()),
            pod: None,
        };
        assert_eq!(
            f.query(),
            "type=PACKETLOSS,TCPRESET_NOSOCK&k8s_namespace=a%20b"
        );
        assert_eq!(backoff(0), Duration::from_millis(500));
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(9), Duration::from_secs(10));
    }
}
