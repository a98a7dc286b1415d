//! The event reader thread: one epoll loop over every probe's ring buffer; each record is
//! decoded by its probe's descriptor, given the entity of its namespace as of the event's
//! time, its peer and stack, and published to the pipeline (which never blocks).
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::event::{DecodeCtx, RawEvent};
use super::plan::RunningProbe;
use super::totals::ProbeState;
use super::{stack, EVENT_TYPES};
use crate::bpf::kallsyms::Kallsyms;
use crate::bpf::{self, Loaded};
use crate::events::{EntityCache, Event, FieldValue, Pipeline};
use crate::inventory::Inventory;

/// `peer_kind`, `peer_namespace`, `peer_pod`, `peer_name` of an event with a tuple: the
/// namespace on this node that has the remote address, when the other address is the event's
/// own namespace's (a socket's or a packet's local end) and exactly one namespace has the remote
/// one; empty otherwise (forwarded packets, addresses off the node), never a guess.
pub fn add_peer_fields(ev: &mut Event, snap: &crate::inventory::Snapshot, own: u64) {
    let addr = |k: &str| match ev.field(k) {
        Some(FieldValue::Addr(a)) => Some(*a),
        _ => None,
    };
    let (s, d) = (addr("saddr"), addr("daddr"));
    let (Some(s), Some(d)) = (s, d) else { return };
    let mine = |a: IpAddr| snap.addresses.get(&a) == Some(&Some(own));
    let remote = if mine(s) {
        Some(d)
    } else if mine(d) {
        Some(s)
    } else {
        None
    };
    let peer = remote
        .and_then(|a| snap.peer(a))
        .filter(|e| e.inode != own)
        .cloned();
    let get = |f: fn(&crate::inventory::Entity) -> String| {
        FieldValue::Str(peer.as_deref().map(f).unwrap_or_default().into())
    };
    ev.fields
        .push(("peer_kind", get(|e| e.kind.as_str().to_string())));
    ev.fields
        .push(("peer_namespace", get(|e| e.k8s_namespace.clone())));
    ev.fields.push(("peer_pod", get(|e| e.k8s_pod.clone())));
    ev.fields.push(("peer_name", get(|e| e.name.clone())));
}

pub(super) fn reader_loop(
    probes: Vec<Arc<RunningProbe>>,
    stop: Arc<AtomicBool>,
    inventory: Arc<Inventory>,
    pipeline: Option<Arc<Pipeline>>,
    kallsyms: Arc<Mutex<Option<Kallsyms>>>,
    totals: Arc<ProbeState>,
) {
    let epoll = match bpf::sys::Epoll::new() {
        Ok(e) => e,
        Err(e) => {
            log::error!("BPF event reader: epoll: {e}");
            return;
        }
    };
    let mut rings = Vec::new();
    for (i, p) in probes.iter().enumerate() {
        let r = p
            .loaded
            .ringbuf("events")
            .and_then(|rb| p.loaded.map("events").map(|m| (rb, m)))
            .and_then(|(rb, m)| {
                epoll
                    .add(m.as_fd(), i as u64)
                    .map_err(|e| bpf::KError::io("epoll_ctl", e))?;
                Ok(rb)
            });
        match r {
            Ok(rb) => rings.push((p.clone(), rb, StackIds::default())),
            Err(e) => log::error!("eBPF probe {}: no events: {e}", p.cfg.kind.name()),
        }
    }
    if probes
        .iter()
        .any(|p| p.cfg.enable_stack || p.cfg.kind.probe().symbolizes())
    {
        let mut g = kallsyms.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_none() {
            match Kallsyms::load() {
                Ok(k) => *g = Some(k),
                Err(e) => log::warn!("kallsyms: {e}; locations and stacks stay numeric"),
            }
        }
    }
    let mut ready = Vec::new();
    let mut raw = Vec::new();
    let mut last_refresh = Instant::now();
    let mut entities = EntityCache::default();
    while !stop.load(Ordering::Relaxed) {
        ready.clear();
        if let Err(e) = epoll.wait(&mut ready, rings.len().max(1), 200) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                log::error!("BPF event reader: epoll_wait: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        if last_refresh.elapsed() > Duration::from_secs(60) {
            last_refresh = Instant::now();
            entities.clear();
            if let Some(k) = kallsyms.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                let _ = k.refresh();
            }
        }
        for (p, rb, ids) in rings.iter_mut() {
            raw.clear();
            rb.consume(|rec| {
                if let Some(r) = RawEvent::parse(rec) {
                    raw.push(r);
                }
            });
            if raw.is_empty() {
                ids.sweep(p);
                continue;
            }
            let mono_now = crate::sys::monotonic_ns();
            let (inst_now, sys_now) = (Instant::now(), SystemTime::now());
            let ks = kallsyms.lock().unwrap_or_else(|e| e.into_inner());
            let ctx = DecodeCtx {
                probe: p,
                kallsyms: ks.as_ref(),
            };
            let mut stacks: HashMap<i32, Arc<[String]>> = HashMap::new();
            // One snapshot for the batch: its entities and addresses for every event in it.
            let snap = inventory.snapshot();
            for r in &raw {
                let ago = Duration::from_nanos(mono_now.saturating_sub(r.ts));
                let at = inst_now.checked_sub(ago).unwrap_or(inst_now);
                let netns = u64::from(r.netns);
                let entity = entities.get(netns, inventory.entity_at_in(&snap, netns, at));
                let Some(mut ev) = p.cfg.kind.probe().decode(&ctx, r, entity) else {
                    continue;
                };
                add_peer_fields(&mut ev, &snap, netns);
                ev.time = sys_now.checked_sub(ago).unwrap_or(sys_now);
                if r.stack_id >= 0 {
                    ev.stack = stacks
                        .entry(r.stack_id)
                        .or_insert_with(|| read_stack(&p.loaded, r.stack_id, ctx.kallsyms).into())
                        .clone();
                }
                let kind: &'static str = event_type_static(&ev.kind);
                totals.with(|c| *c.by_type.entry(kind).or_default() += 1);
                if let Some(pl) = &pipeline {
                    pl.publish(ev);
                }
            }
            // After the batch: an event that took an old id while the batch was read is in it.
            ids.seen(stacks.keys().copied());
            ids.sweep(p);
        }
    }
}

/// How long a stack id stays in the probe's stack map after the last event that carried it.
const STACK_GRACE: Duration = Duration::from_secs(2);

/// The stack ids events carried, with when they were last seen, so that each is deleted from
/// the stack map (which would otherwise fill up for good) only once no event has carried it
/// for [`STACK_GRACE`]. Deleting a batch's ids right after the batch lost the stack of an
/// event that took the same id (the same stack) while the batch was being read and came in
/// the next one: it found its id gone and had an empty stack (ten drops at the same site,
/// CI). Now that takes a stack unseen for two seconds recurring in the moment its id is
/// deleted. An id is never read after it may have been deleted and reused for another stack:
/// nothing here keeps a stack's frames past its id's deletion.
#[derive(Default)]
struct StackIds {
    last: HashMap<i32, Instant>,
    swept: Option<Instant>,
}

impl StackIds {
    fn seen(&mut self, ids: impl Iterator<Item = i32>) {
        let now = Instant::now();
        for id in ids {
            self.last.insert(id, now);
        }
    }

    /// Delete the ids unseen for [`STACK_GRACE`] (looked at four times per grace at most).
    fn sweep(&mut self, p: &RunningProbe) {
        let now = Instant::now();
        if self.last.is_empty() || self.swept.is_some_and(|t| now - t < STACK_GRACE / 4) {
            return;
        }
        self.swept = Some(now);
        let Ok(m) = p.loaded.map("stacks") else {
            self.last.clear();
            return;
        };
        self.last.retain(|id, seen| {
            let keep = now.duration_since(*seen) < STACK_GRACE;
            if !keep {
                let _ = m.delete(&(*id as u32).to_ne_bytes());
            }
            keep
        });
    }
}

fn read_stack(l: &Loaded, id: i32, ks: Option<&Kallsyms>) -> Vec<String> {
    let Ok(m) = l.map("stacks") else {
        return Vec::new();
    };
    match (m.stack(id as u32), ks) {
        // Symbolized, the stack starts at the kernel function: the probe's frames are cut.
        (Ok(Some(ips)), Some(k)) => {
            stack::trim(ips.into_iter().map(|ip| k.symbolize(ip)).collect())
        }
        // Numeric, nothing tells the probe's frames apart: left whole.
        (Ok(Some(ips)), None) => ips.into_iter().map(|ip| format!("{ip:#x}")).collect(),
        _ => Vec::new(),
    }
}

/// Drains the probe's event ring and returns each event's kernel stack as symbolized (whole)
/// and as events carry it (the probe's leading frames cut). For the self-test's captures of
/// real stacks per kernel and attach method.
pub fn drain_event_stacks(p: &RunningProbe, ks: &Kallsyms) -> Vec<(Vec<String>, Vec<String>)> {
    let Ok(mut rb) = p.loaded.ringbuf("events") else {
        return Vec::new();
    };
    let mut ids = Vec::new();
    rb.consume(|rec| {
        if let Some(r) = RawEvent::parse(rec) {
            ids.push(r.stack_id);
        }
    });
    let Ok(m) = p.loaded.map("stacks") else {
        return Vec::new();
    };
    ids.into_iter()
        .filter(|id| *id >= 0)
        .filter_map(|id| m.stack(id as u32).ok().flatten())
        .map(|ips| {
            let whole: Vec<String> = ips.iter().map(|ip| ks.symbolize(*ip)).collect();
            (whole.clone(), stack::trim(whole))
        })
        .collect()
}

fn event_type_static(k: &str) -> &'static str {
    EVENT_TYPES
        .iter()
        .find(|t| **t == k)
        .copied()
        .unwrap_or("OTHER")
}
