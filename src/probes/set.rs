//! The running set of eBPF probes: start and reload take-over, the threads it owns (event
//! reader, map reaper, flow's device thread) and the reaping of dead namespaces' map entries.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::chain;
use super::plan::{start_probe, RunningProbe};
use super::reader::reader_loop;
use super::totals::ProbeState;
use super::{flow, BpfProbeConfig, ProbeKind};
use crate::bpf;
use crate::bpf::kallsyms::Kallsyms;
use crate::bpf::target_btf::BtfSources;
use crate::events::Pipeline;
use crate::inventory::Inventory;

/// The running eBPF probes: one metrics collector for the engine, one event reader thread.
pub struct ProbeSet {
    probes: Vec<Arc<RunningProbe>>,
    inventory: Arc<Inventory>,
    /// Namespaces in the counting maps: listed by the inventory, or missing since when.
    netns_seen: Arc<NetnsSeen>,
    pub failed: Vec<(ProbeKind, String)>,
    btf: BtfSources,
    /// The event reader and the map reaper: their stop flags and threads.
    threads: Mutex<Vec<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>>,
    kallsyms: Arc<Mutex<Option<Kallsyms>>>,
    /// Totals and run-time stats, shared with the sets before and after this one.
    state: Arc<ProbeState>,
}

impl ProbeSet {
    /// Starts every configured probe; a probe that cannot run is logged and listed in
    /// `failed`, the others run.
    pub fn start(
        cfgs: &[BpfProbeConfig],
        btf: &BtfSources,
        inventory: Arc<Inventory>,
        pipeline: Option<Arc<Pipeline>>,
    ) -> ProbeSet {
        let state = Arc::new(ProbeState::default());
        Self::restart(None, cfgs, btf, inventory, pipeline, state)
    }

    /// Like [`ProbeSet::start`], taking over from `previous` (a config reload): a probe whose
    /// configuration did not change keeps running as it is (same programs and maps: no
    /// detach/attach gap, no counter reset, its queued events stay in its ring buffer); the
    /// previous set's other probes are detached before their replacements attach. The previous
    /// set's event reader stops here; dropping it afterwards detaches nothing that was kept.
    /// `state` carries the totals and the run-time stats switch from set to set.
    pub fn restart(
        previous: Option<&ProbeSet>,
        cfgs: &[BpfProbeConfig],
        btf: &BtfSources,
        inventory: Arc<Inventory>,
        pipeline: Option<Arc<Pipeline>>,
        state: Arc<ProbeState>,
    ) -> ProbeSet {
        let mut keep: BTreeMap<ProbeKind, Arc<RunningProbe>> = BTreeMap::new();
        if let Some(prev) = previous {
            prev.stop_threads();
            // Every program on its own link again before any probe is detached.
            chain::unmerge(&prev.probes);
            for p in &prev.probes {
                if prev.btf == *btf && cfgs.contains(&p.cfg) {
                    keep.insert(p.cfg.kind, p.clone());
                } else {
                    p.retire(&state);
                }
            }
        }
        // Flows and events with a tuple name their peer on this node by its address.
        if cfgs
            .iter()
            .any(|c| c.kind.probe().learns_addresses() || c.events)
        {
            inventory.learn_addresses();
        }
        if !cfgs.is_empty() {
            if let Err(e) = bpf::fs::tracefs() {
                log::debug!("tracefs: {e}");
            }
            state.ensure_run_stats();
        }
        let mut probes = Vec::new();
        let mut failed = Vec::new();
        for c in cfgs {
            if let Some(p) = keep.remove(&c.kind) {
                log::info!(
                    "eBPF probe {}: configuration unchanged, kept running",
                    c.kind.name()
                );
                probes.push(p);
                continue;
            }
            match start_probe(c, btf) {
                Ok(p) => {
                    log::info!(
                        "eBPF probe {} attached via {} (metrics: {}, events: {})",
                        c.kind.name(),
                        p.methods.join(", "),
                        c.metrics,
                        c.events
                    );
                    for (what, r) in &p.optional {
                        if let Err(e) = r {
                            log::info!(
                                "eBPF probe {}: {what} unavailable here (runs without): {e}",
                                c.kind.name()
                            );
                        }
                    }
                    probes.push(Arc::new(p));
                }
                Err(e) => {
                    log::error!("eBPF probe {} cannot run: {e}", c.kind.name());
                    failed.push((c.kind, e.to_string()));
                }
            }
        }
        if state.chain_programs() {
            for c in chain::merge(&probes) {
                log::info!("eBPF tracepoint shared, one program attached: {c}");
            }
        }
        let kallsyms = previous
            .map(|p| p.kallsyms.clone())
            .unwrap_or_else(|| Arc::new(Mutex::new(None)));
        let netns_seen = previous.map(|p| p.netns_seen.clone()).unwrap_or_default();
        let inv = inventory.clone();
        let mut threads = Vec::new();
        // Dead namespaces are reaped every few seconds too, not only on scrapes: a namespace
        // that comes and goes between two scrapes is still seen alive once.
        if probes
            .iter()
            .any(|p| !p.cfg.kind.probe().netns_maps().is_empty())
        {
            let stop = Arc::new(AtomicBool::new(false));
            let st = stop.clone();
            let (ps, inv, seen) = (probes.clone(), inventory.clone(), netns_seen.clone());
            let totals = state.clone();
            match std::thread::Builder::new()
                .name("bpf-reaper".into())
                .spawn(move || {
                    let mut next = Instant::now();
                    while !st.load(Ordering::Relaxed) {
                        if Instant::now() >= next {
                            reap_dead_namespaces(&ps, &inv, &seen, &totals, Instant::now());
                            next = Instant::now() + REAP_EVERY;
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }) {
                Ok(h) => threads.push((stop, h)),
                Err(e) => log::error!("cannot start the BPF map reaper: {e}"),
            }
        }
        if let Some(p) = probes.iter().find(|p| p.flow.is_some()) {
            let stop = Arc::new(AtomicBool::new(false));
            let (st, p, inv) = (stop.clone(), p.clone(), inventory.clone());
            match std::thread::Builder::new()
                .name("flow-devices".into())
                .spawn(move || flow::device_loop(p, inv, st))
            {
                Ok(h) => threads.push((stop, h)),
                Err(e) => log::error!("cannot start the flow probe's device thread: {e}"),
            }
        }
        let ev: Vec<Arc<RunningProbe>> = probes.iter().filter(|p| p.cfg.events).cloned().collect();
        if !ev.is_empty() {
            let stop = Arc::new(AtomicBool::new(false));
            let st = stop.clone();
            let ks = kallsyms.clone();
            let pipeline = pipeline.clone();
            let totals = state.clone();
            match std::thread::Builder::new()
                .name("bpf-events".into())
                .spawn(move || reader_loop(ev, st, inventory, pipeline, ks, totals))
            {
                Ok(h) => threads.push((stop, h)),
                Err(e) => log::error!("cannot start the BPF event reader: {e}"),
            }
        }
        ProbeSet {
            probes,
            inventory: inv,
            netns_seen,
            failed,
            btf: btf.clone(),
            threads: Mutex::new(threads),
            kallsyms,
            state,
        }
    }

    fn stop_threads(&self) {
        let ts = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for (stop, _) in &ts {
            stop.store(true, Ordering::Relaxed);
        }
        for (_, h) in ts {
            let _ = h.join();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.probes.is_empty()
    }

    /// See [`reap_dead_namespaces`].
    pub fn reap_dead_namespaces(&self, now: Instant) -> usize {
        reap_dead_namespaces(
            &self.probes,
            &self.inventory,
            &self.netns_seen,
            &self.state,
            now,
        )
    }

    /// The probes not retired: a reload may have retired some of this set's probes (their
    /// counters moved to the totals of past probes) while a scrape still uses this set.
    pub(super) fn live(&self) -> impl Iterator<Item = &Arc<RunningProbe>> {
        self.probes
            .iter()
            .filter(|p| !p.retired.load(Ordering::SeqCst))
    }

    /// The state shared with the sets before and after this one.
    pub fn state(&self) -> &Arc<ProbeState> {
        &self.state
    }

    pub(super) fn kallsyms(&self) -> &Arc<Mutex<Option<Kallsyms>>> {
        &self.kallsyms
    }

    pub(super) fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    pub fn running(&self) -> impl Iterator<Item = &RunningProbe> {
        self.probes.iter().map(|p| p.as_ref())
    }
}

impl Drop for ProbeSet {
    fn drop(&mut self) {
        self.stop_threads();
        for p in &self.probes {
            // A probe a newer set took over is still referenced there: it keeps running.
            if Arc::strong_count(p) == 1 {
                p.retire(&self.state);
            }
        }
    }
}

/// How often the reaper thread looks for dead namespaces in the maps.
const REAP_EVERY: Duration = Duration::from_secs(5);

/// What the reaper knows of a namespace in the counting maps: `None` while the inventory lists
/// it, then since when it has been missing.
pub type NetnsSeen = Mutex<HashMap<u64, Option<Instant>>>;

/// Deletes the counting maps' entries of namespaces that have been missing from the inventory
/// for longer than [`crate::inventory::GRACE`], so that dead pods do not fill the bounded maps.
/// Only namespaces the inventory once listed are deleted: an unknown namespace (labelled by
/// its inode) may well be alive. The grace period runs from the first call that finds the
/// namespace missing, so entries never go early. Returns the number of entries deleted.
pub fn reap_dead_namespaces(
    probes: &[Arc<RunningProbe>],
    inventory: &Inventory,
    seen: &NetnsSeen,
    totals: &ProbeState,
    now: Instant,
) -> usize {
    let snap = inventory.snapshot();
    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    let mut in_maps = HashSet::new();
    let mut dead = HashSet::new();
    let mut total = 0;
    // Whether namespace `ino` is dead past the grace period (its entries may go).
    let mut gone = |ino: u64| -> bool {
        in_maps.insert(ino);
        if snap.by_inode(ino).is_some() {
            seen.insert(ino, None);
            return false;
        }
        match seen.get(&ino).copied() {
            // Never listed: unknown, kept.
            None => false,
            Some(None) => {
                seen.insert(ino, Some(now));
                false
            }
            Some(Some(since)) => now.saturating_duration_since(since) > crate::inventory::GRACE,
        }
    };
    for p in probes {
        let mut n = 0u64;
        for name in p.cfg.kind.probe().netns_maps() {
            let Ok(m) = p.loaded.map(name) else { continue };
            let Ok(keys) = m.keys() else { continue };
            for k in keys {
                let Some(ino) = k
                    .get(..4)
                    .and_then(|b| b.try_into().ok())
                    .map(u32::from_ne_bytes)
                else {
                    continue;
                };
                let ino = u64::from(ino);
                if gone(ino) {
                    if m.delete(&k).unwrap_or(false) {
                        n += 1;
                    }
                    dead.insert(ino);
                }
            }
        }
        // flow's per-CPU tables: the namespace's id is retired, its slots no longer read.
        if let Some(st) = p.flow.as_ref() {
            let ids: HashSet<u32> = st
                .table_netns()
                .into_iter()
                .filter(|n| gone(u64::from(*n)))
                .collect();
            let (retired, slots) = st.retire_tables(&p.loaded, &ids);
            n += slots;
            dead.extend(retired.iter().map(|n| u64::from(*n)));
        }
        if n > 0 {
            totals.with(|c| *c.reaped.entry(p.cfg.kind.name()).or_default() += n);
            total += n as usize;
        }
    }
    // Bounded by what the maps hold: forget what is gone from them.
    seen.retain(|ino, _| in_maps.contains(ino) && !dead.contains(ino));
    total
}
