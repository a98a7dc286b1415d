//! Live `/events` clients: each has a bounded queue; a client whose queue is full is cut off
//! (its subscription ends, counted as `netsleuth_events_dropped_total{stage="stream",
//! reason="slow_client"}`), never buffered without bound and never slowing the others.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};

use super::{DropReason, Event, SinkCounters};

/// Live clients at most.
pub const MAX_CLIENTS: usize = 16;
/// Events queued per client at most.
pub const CLIENT_QUEUE: usize = 4096;

/// `?type=A,B&k8s_namespace=x`: an event matches when every given list contains its value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub types: Vec<String>,
    pub namespaces: Vec<String>,
}

impl Filter {
    /// From a query string (`type` and `k8s_namespace` may repeat or hold commas).
    pub fn from_query(q: &str) -> Result<Filter, String> {
        let mut f = Filter::default();
        for kv in q.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let v = percent_decode(v);
            let list = match k {
                "type" => &mut f.types,
                "k8s_namespace" | "namespace" => &mut f.namespaces,
                _ => return Err(format!("unknown filter `{k}` (known: type, k8s_namespace)")),
            };
            list.extend(v.split(',').filter(|s| !s.is_empty()).map(str::to_string));
        }
        Ok(f)
    }

    pub fn matches(&self, ev: &Event) -> bool {
        (self.types.is_empty() || self.types.iter().any(|t| t.eq_ignore_ascii_case(&ev.kind)))
            && (self.namespaces.is_empty() || self.namespaces.contains(&ev.entity.k8s_namespace))
    }
}

/// A query value: `+` is a blank (form encoding), then `%XX` escapes are decoded; a `%` not
/// followed by two hex digits stays as written, bytes that are not UTF-8 become U+FFFD.
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

struct Sub {
    filter: Filter,
    tx: Sender<Arc<Event>>,
    alive: Arc<AtomicBool>,
}

/// A connected client's end: its queue; dropping it unsubscribes.
pub struct Client {
    pub rx: Receiver<Arc<Event>>,
    alive: Arc<AtomicBool>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.alive.store(false, Ordering::Relaxed);
    }
}

pub struct Hub {
    subs: Mutex<Vec<Sub>>,
    n: AtomicUsize,
    counters: Arc<SinkCounters>,
}

impl Hub {
    pub fn new(counters: Arc<SinkCounters>) -> Hub {
        Hub {
            subs: Mutex::new(Vec::new()),
            n: AtomicUsize::new(0),
            counters,
        }
    }

    /// A new client's queue, or `None` when `MAX_CLIENTS` are connected.
    pub fn subscribe(&self, filter: Filter, queue: usize) -> Option<Client> {
        let mut subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
        subs.retain(|s| s.alive.load(Ordering::Relaxed));
        if subs.len() >= MAX_CLIENTS {
            return None;
        }
        let (tx, rx) = bounded(queue.max(1));
        let alive = Arc::new(AtomicBool::new(true));
        subs.push(Sub {
            filter,
            tx,
            alive: alive.clone(),
        });
        self.n.store(subs.len(), Ordering::Relaxed);
        Some(Client { rx, alive })
    }

    pub fn clients(&self) -> usize {
        self.n.load(Ordering::Relaxed)
    }

    pub fn publish(&self, ev: &Arc<Event>) {
        if self.n.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
        subs.retain(|s| {
            if !s.filter.matches(ev) {
                return s.alive.load(Ordering::Relaxed);
            }
            match s.tx.try_send(ev.clone()) {
                Ok(()) => {
                    self.counters.sent.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Err(TrySendError::Full(_)) => {
                    // Cut off: the events still queued are written, then the stream ends.
                    self.counters.drop_events(DropReason::SlowClient, 1);
                    log::info!("/events client too slow; disconnecting it");
                    false
                }
                Err(TrySendError::Disconnected(_)) => false,
            }
        });
        self.n.store(subs.len(), Ordering::Relaxed);
    }

    pub fn emit(&self, s: &mut dyn crate::model::Sink) {
        s.emit(
            "netsleuth_event_stream_clients",
            "Clients connected to /events.",
            crate::model::MetricKind::Gauge,
            &[],
            crate::model::Value::U64(self.clients() as u64),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventEntity;

    fn ev(kind: &str, ns: &str) -> Arc<Event> {
        let mut e = EventEntity::unknown(1);
        e.k8s_namespace = ns.into();
        Arc::new(Event::new(kind.to_string(), e))
    }

    #[test]
    fn filters() {
        let f = Filter::from_query("type=PACKETLOSS,TCPRESET_NOSOCK&k8s_namespace=kube%2Dsystem")
            .unwrap();
        assert_eq!(f.namespaces, vec!["kube-system"]);
        assert!(f.matches(&ev("PACKETLOSS", "kube-system")));
        assert!(f.matches(&ev("tcpreset_nosock", "kube-system")));
        assert!(!f.matches(&ev("PACKETLOSS", "default")));
        assert!(!f.matches(&ev("TCPRETRANS", "kube-system")));
        assert!(Filter::from_query("").unwrap().matches(&ev("X", "")));
        assert!(Filter::from_query("pod=x").is_err());
        assert_eq!(percent_decode("a%20b+c%zz%4"), "a b c%zz%4");
    }

    /// Regression: the hand-written decoder read `%XX` with `u8::from_str_radix`, which takes
    /// a leading `+`, so `%+1` was the byte 0x01; it is not an escape (and `+` is a blank).
    #[test]
    fn percent_decode_takes_no_sign_as_hex() {
        assert_eq!(percent_decode("%+1"), "% 1");
        assert_eq!(percent_decode("%2B%2b"), "++");
        assert_eq!(percent_decode("kube%2Dsystem"), "kube-system");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
    }

    #[test]
    fn slow_client_cut_off_other_unharmed() {
        let c = Arc::new(SinkCounters::new("stream"));
        let hub = Hub::new(c.clone());
        let fast = hub.subscribe(Filter::default(), 8).unwrap();
        let slow = hub.subscribe(Filter::default(), 8).unwrap();
        for i in 0..20 {
            hub.publish(&ev("PACKETLOSS", ""));
            // The fast one keeps up.
            assert!(fast.rx.try_recv().is_ok(), "{i}");
        }
        assert_eq!(c.dropped(DropReason::SlowClient), 1);
        assert_eq!(hub.clients(), 1);
        // The slow one gets what was queued, then the end of the stream.
        assert_eq!(slow.rx.try_iter().count(), 8);
        assert!(slow.rx.recv().is_err());
        drop(fast);
        hub.publish(&ev("PACKETLOSS", ""));
        assert_eq!(hub.clients(), 0);
    }
}
