//! The scrape engine: collects every namespace in parallel on a bounded worker pool, merges the
//! results, adds self-metrics and renders the page. Concurrent scrapes share one collection; a
//! slow or vanished namespace never fails or stalls the scrape past its deadline.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::collectors::{CollectError, Collector, MapCollector, NetnsCtx, NetnsHandles, Scope};
use crate::config::Config;
use crate::inventory::{self, Entity, EntityKind, Inventory, Snapshot};
use crate::model::{Families, MetricKind, Page, Sink, Value};
use crate::selfmetrics::{self, SelfMetrics};
use crate::sys;

/// The probes in use; swapped whole on config reload.
#[derive(Clone)]
pub struct ActiveProbes {
    pub netns: Vec<Arc<dyn Collector>>,
    pub node: Vec<Arc<dyn Collector>>,
    /// Kernel-map probes (eBPF): collected once per scrape, series keyed by netns inode.
    pub maps: Vec<Arc<dyn MapCollector>>,
    /// The netlink protocols the namespace probes dump (their union): a socket of each is
    /// kept open per namespace.
    protocols: Vec<isize>,
}

impl ActiveProbes {
    pub fn from_config(cfg: Config) -> ActiveProbes {
        let mut netns = Vec::new();
        let mut node = Vec::new();
        for p in cfg.probes {
            let c: Arc<dyn Collector> = Arc::from(p.collector);
            match c.scope() {
                Scope::Netns => netns.push(c),
                Scope::Node => node.push(c),
            }
        }
        let mut protocols: Vec<isize> = netns
            .iter()
            .flat_map(|c| c.netlink_protocols().iter().copied())
            .collect();
        protocols.sort_unstable();
        protocols.dedup();
        ActiveProbes {
            netns,
            node,
            maps: Vec::new(),
            protocols,
        }
    }

    fn needs_entered(&self) -> bool {
        self.netns.iter().any(|c| c.needs_entered())
    }
}

/// Outcome of one collector in one namespace.
#[derive(Clone, Debug)]
struct ProbeRun {
    elapsed: Duration,
    result: Result<(), CollectError>,
}

/// Outcome of one namespace: what the scrape merges, or why there is nothing to merge.
enum JobResult {
    /// Collected; a probe's own failure is in its run.
    Collected {
        families: Families,
        runs: Vec<ProbeRun>,
    },
    /// The namespace is gone (its last process exited, its mount was removed, it could not
    /// be entered): counted as vanished.
    Vanished,
    /// The inode now belongs to another namespace than the one we labelled (its cookie
    /// changed): counted as vanished, and the inventory relabels the inode.
    Replaced,
}

struct Job {
    index: usize,
    entity: Arc<Entity>,
    probes: Arc<ActiveProbes>,
    deadline: Instant,
    batch: Arc<Batch>,
}

/// Where one collection's workers put their results. The scraping thread sleeps until the
/// last result is in (or the deadline): one wake-up per scrape, not one per namespace — with a
/// reply channel, its wake-ups and spinning took CPU from the workers on a 2-core node.
struct Batch {
    results: Mutex<Vec<Option<JobResult>>>,
    remaining: Mutex<usize>,
    all_in: Condvar,
}

impl Batch {
    fn put(&self, index: usize, r: JobResult) {
        // After a deadline the scraper has taken the results away: a late one is dropped.
        if let Some(slot) = self
            .results
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(index)
        {
            *slot = Some(r);
        }
        let mut left = self.remaining.lock().unwrap_or_else(|e| e.into_inner());
        *left = left.saturating_sub(1);
        if *left == 0 {
            self.all_in.notify_one();
        }
    }
}

/// Counters kept across scrapes.
#[derive(Default)]
pub struct Stats {
    pub vanished: AtomicU64,
    pub timeouts: AtomicU64,
    pub scrapes: AtomicU64,
    pub reloads_failed: AtomicU64,
    pub last_reload_ok: AtomicU64,
    pub identity_changes: AtomicU64,
    /// Times a collection worker entered a namespace (`setns`).
    pub enters: AtomicU64,
}

struct Pending {
    done: Mutex<Option<Arc<Page>>>,
    cv: Condvar,
}

pub struct Engine {
    probes: RwLock<Arc<ActiveProbes>>,
    inventory: Arc<Inventory>,
    jobs: Sender<Job>,
    inflight: Mutex<Option<Arc<Pending>>>,
    max_staleness: Duration,
    timeout: Duration,
    pub stats: Arc<Stats>,
    started: Instant,
    /// Other parts' own figures (the event pipeline), rendered with the self-metrics.
    extra: RwLock<Vec<Arc<dyn SelfMetrics>>>,
    /// Static labels of every entity, also given to namespaces the inventory does not know.
    extra_labels: Vec<(String, String)>,
}

impl Engine {
    pub fn new(cfg: Config, inventory: Arc<Inventory>) -> Arc<Engine> {
        let workers = cfg.workers;
        let max_staleness = cfg.max_staleness;
        let timeout = cfg.timeout;
        let extra_labels = cfg.extra_labels.clone();
        // Room for every namespace of a very dense node; crossbeam touches every slot up front,
        // so this is resident memory (about 60 bytes a slot).
        let (tx, rx) = bounded::<Job>(8192);
        let proc_root: PathBuf = inventory.proc_root().to_path_buf();
        let can_enter = inventory.can_enter();
        let stats = Arc::new(Stats::default());
        for i in 0..workers {
            let w = Worker {
                proc_root: proc_root.clone(),
                can_enter,
                inventory: inventory.clone(),
                stats: stats.clone(),
            };
            spawn_worker(i, rx.clone(), w);
        }
        stats.last_reload_ok.store(1, Ordering::Relaxed);
        Arc::new(Engine {
            probes: RwLock::new(Arc::new(ActiveProbes::from_config(cfg))),
            inventory,
            jobs: tx,
            inflight: Mutex::new(None),
            max_staleness,
            timeout,
            stats,
            started: Instant::now(),
            extra: RwLock::new(Vec::new()),
            extra_labels,
        })
    }

    /// Add a source of self-metrics (rendered on every scrape, after the engine's own).
    pub fn add_self_metrics(&self, m: Arc<dyn SelfMetrics>) {
        self.extra
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(m);
    }

    /// Replace the probes (config reload). A scrape in flight finishes with the old set.
    pub fn set_probes(&self, p: ActiveProbes) {
        *self.probes.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(p);
        // The new probes may read other files or dump over other protocols.
        self.inventory.forget_all_handles();
    }

    /// Replace only the kernel-map probes (the eBPF probe set), keeping the others.
    pub fn set_map_collectors(&self, maps: Vec<Arc<dyn MapCollector>>) {
        let mut g = self.probes.write().unwrap_or_else(|e| e.into_inner());
        let mut p = ActiveProbes::clone(&g);
        p.maps = maps;
        *g = Arc::new(p);
    }

    /// The entity label prefix for series of namespace `inode`: the inventory's, else an
    /// unknown namespace's (same label names, `kind="unknown"`).
    fn map_labels(&self, snap: &Snapshot, inode: u64) -> String {
        if let Some(e) = snap.by_inode(inode) {
            return e.labels.clone();
        }
        if let Some(e) = self.inventory.entity_at(inode, Instant::now()) {
            return e.labels.clone();
        }
        unknown_labels(inode, &self.extra_labels)
    }

    /// Time since the engine started (the exporter's uptime).
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn inventory(&self) -> &Arc<Inventory> {
        &self.inventory
    }

    /// Render the metrics page, collecting now or joining a collection already running.
    /// `timeout` is the scraper's budget (its timeout header), if it sent one.
    pub fn scrape(&self, timeout: Option<Duration>) -> Arc<Page> {
        let budget = timeout.map_or(self.timeout, |t| t.min(self.timeout));
        let (pending, leader) = {
            let mut g = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            match g.as_ref() {
                Some(p) => (p.clone(), false),
                None => {
                    let p = Arc::new(Pending {
                        done: Mutex::new(None),
                        cv: Condvar::new(),
                    });
                    *g = Some(p.clone());
                    (p, true)
                }
            }
        };
        if leader {
            let out = Arc::new(self.collect_now(budget));
            *pending.done.lock().unwrap_or_else(|e| e.into_inner()) = Some(out.clone());
            pending.cv.notify_all();
            *self.inflight.lock().unwrap_or_else(|e| e.into_inner()) = None;
            return out;
        }
        let mut done = pending.done.lock().unwrap_or_else(|e| e.into_inner());
        let wait_until = Instant::now() + budget + Duration::from_secs(1);
        loop {
            if let Some(out) = done.as_ref() {
                return out.clone();
            }
            let now = Instant::now();
            if now >= wait_until {
                drop(done);
                // The shared collection overran; collect on our own rather than hang.
                return Arc::new(self.collect_now(budget));
            }
            done = pending
                .cv
                .wait_timeout(done, wait_until - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn collect_now(&self, budget: Duration) -> Page {
        let start = Instant::now();
        let deadline = start + budget;
        self.stats.scrapes.fetch_add(1, Ordering::Relaxed);
        let probes = self
            .probes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let snap = self.inventory.fresh(self.max_staleness);

        // Namespaces, then the process groups of host-network pods (io/fd only).
        let all_entities: Vec<&Arc<Entity>> =
            snap.entities.iter().chain(snap.groups.iter()).collect();
        let n_jobs = if probes.netns.is_empty() {
            0
        } else {
            all_entities.len()
        };
        let batch = Arc::new(Batch {
            results: Mutex::new((0..all_entities.len()).map(|_| None).collect()),
            remaining: Mutex::new(n_jobs),
            all_in: Condvar::new(),
        });
        for (index, e) in all_entities.iter().enumerate().take(n_jobs) {
            let job = Job {
                index,
                entity: (*e).clone(),
                probes: probes.clone(),
                deadline,
                batch: batch.clone(),
            };
            if self.jobs.try_send(job).is_err() {
                log::warn!("collection queue full; namespace {} skipped", e.inode);
                *batch.remaining.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
            }
        }

        // Node-scope probes run here while the workers go.
        let mut node_fams = Families::new();
        let mut node_runs = Vec::new();
        for c in &probes.node {
            let ctx = NetnsCtx::new(
                snap.host_inode,
                PathBuf::from("/proc/self/net"),
                self.inventory.proc_root(),
                false,
                &[],
            );
            let t = Instant::now();
            let result = c.collect(&ctx, &mut node_fams.sink(""));
            node_runs.push((
                c.name(),
                ProbeRun {
                    elapsed: t.elapsed(),
                    result,
                },
            ));
        }

        // Kernel-map probes: once per scrape, one series per namespace inode in the map.
        for c in &probes.maps {
            let t = Instant::now();
            let labels = |inode: u64| self.map_labels(&snap, inode);
            let result = c.collect(&labels, &mut node_fams);
            node_runs.push((
                c.name(),
                ProbeRun {
                    elapsed: t.elapsed(),
                    result,
                },
            ));
        }

        let timed_out = {
            let mut left = batch.remaining.lock().unwrap_or_else(|e| e.into_inner());
            while *left > 0 {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                left = batch
                    .all_in
                    .wait_timeout(left, deadline - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            *left
        };
        // Late results land in the batch after we took it and are dropped with it.
        let results: Vec<Option<JobResult>> =
            std::mem::take(&mut *batch.results.lock().unwrap_or_else(|e| e.into_inner()));

        if timed_out > 0 {
            self.stats
                .timeouts
                .fetch_add(timed_out as u64, Ordering::Relaxed);
            log::warn!(
                "scrape deadline ({budget:?}) passed with {timed_out} namespaces uncollected"
            );
        }

        // Merge in inventory order; tally per-collector outcomes.
        let mut parts: Vec<Families> = Vec::with_capacity(snap.entities.len() + 2);
        let mut tallies: BTreeMap<&'static str, Tally> = BTreeMap::new();
        for c in probes.netns.iter().chain(probes.node.iter()) {
            tallies.insert(c.name(), Tally::default());
        }
        for c in &probes.maps {
            tallies.insert(c.name(), Tally::default());
        }
        let mut vanished = 0u64;
        for (e, r) in all_entities.iter().zip(results) {
            let (families, runs) = match r {
                None => continue,
                Some(JobResult::Collected { families, runs }) => (families, runs),
                Some(gone) => {
                    if matches!(gone, JobResult::Replaced) {
                        self.inventory.distrust(e.inode);
                        self.stats.identity_changes.fetch_add(1, Ordering::Relaxed);
                    }
                    vanished += 1;
                    log::debug!("netns {} ({}) vanished during collection", e.inode, e.name);
                    continue;
                }
            };
            for (c, run) in probes.netns.iter().zip(&runs) {
                tallies
                    .entry(c.name())
                    .or_default()
                    .add(run, || format!("netns {} ({})", e.inode, e.name));
            }
            parts.push(families);
        }
        for (name, run) in &node_runs {
            tallies
                .entry(name)
                .or_default()
                .add(run, || "node".to_string());
        }
        parts.push(node_fams);
        if vanished > 0 {
            self.stats.vanished.fetch_add(vanished, Ordering::Relaxed);
        }

        let mut own = Families::new();
        {
            let mut s = own.sink("");
            for (name, t) in &tallies {
                let labels = [("collector", *name)];
                s.emit(
                    "netsleuth_scrape_collector_duration_seconds",
                    "Time the collector spent in this scrape, summed over namespaces.",
                    MetricKind::Gauge,
                    &labels,
                    Value::F64(t.elapsed.as_secs_f64()),
                );
                s.emit(
                    "netsleuth_scrape_collector_success",
                    "Whether the collector succeeded in every namespace this scrape (1) or not (0).",
                    MetricKind::Gauge,
                    &labels,
                    Value::U64(u64::from(t.failed == 0 && t.unavailable == 0)),
                );
                s.emit(
                    "netsleuth_scrape_collector_failed_namespaces",
                    "Namespaces in which the collector failed this scrape (not counting unavailable data).",
                    MetricKind::Gauge,
                    &labels,
                    Value::U64(t.failed),
                );
            }
            for (kind, n) in snap.count_by_kind() {
                s.emit(
                    "netsleuth_netns",
                    "Network namespaces known to the exporter, by kind.",
                    MetricKind::Gauge,
                    &[("kind", kind.as_str())],
                    Value::U64(n as u64),
                );
            }
            s.emit(
                "netsleuth_inventory_scan_duration_seconds",
                "Time the namespace inventory scan behind this scrape took.",
                MetricKind::Gauge,
                &[],
                Value::F64(snap.scan_duration.as_secs_f64()),
            );
            s.emit(
                "netsleuth_netns_vanished_total",
                "Namespaces that disappeared while being collected and were skipped.",
                MetricKind::Counter,
                &[],
                Value::U64(self.stats.vanished.load(Ordering::Relaxed)),
            );
            s.emit(
                "netsleuth_netns_identity_changes_total",
                "Times a namespace inode was found reused by a new namespace at collection (its series were skipped and it is relabelled).",
                MetricKind::Counter,
                &[],
                Value::U64(self.stats.identity_changes.load(Ordering::Relaxed)),
            );
            s.emit(
                "netsleuth_netns_enters_total",
                "Times collection entered a network namespace (setns): once per namespace to open its netlink sockets (and, without a process in it, its files), then only for the ipvs probe or past the kept-fd budget.",
                MetricKind::Counter,
                &[],
                Value::U64(self.stats.enters.load(Ordering::Relaxed)),
            );
            let (kept_sockets, kept_files) = self.inventory.kept_counts();
            for (kind, n) in [("netlink", kept_sockets), ("procfs", kept_files)] {
                s.emit(
                    "netsleuth_netns_kept_fds",
                    "File descriptors kept open for collection, bound to their namespaces: netlink sockets (one per protocol) and procfs files.",
                    MetricKind::Gauge,
                    &[("kind", kind)],
                    Value::U64(n as u64),
                );
            }
            s.emit(
                "netsleuth_scrape_timeouts_total",
                "Namespaces left uncollected because a scrape's deadline passed.",
                MetricKind::Counter,
                &[],
                Value::U64(self.stats.timeouts.load(Ordering::Relaxed)),
            );
            s.emit(
                "netsleuth_scrape_duration_seconds",
                "Wall time of the last collection.",
                MetricKind::Gauge,
                &[],
                Value::F64(start.elapsed().as_secs_f64()),
            );
            s.emit(
                "netsleuth_config_last_reload_successful",
                "Whether the last configuration reload succeeded.",
                MetricKind::Gauge,
                &[],
                Value::U64(self.stats.last_reload_ok.load(Ordering::Relaxed)),
            );
            selfmetrics::emit(&mut s);
            for m in self.extra.read().unwrap_or_else(|e| e.into_inner()).iter() {
                m.emit(&mut s);
            }
        }

        // Log failures once per scrape per collector, with one example.
        for (name, t) in &tallies {
            if let Some(msg) = &t.example {
                log::debug!(
                    "collector {name}: {} namespaces failed, e.g. {msg}",
                    t.failed + t.unavailable
                );
            }
        }

        parts.push(own);
        Page::new(parts)
    }
}

impl selfmetrics::Registry for Engine {
    fn add_self_metrics(&self, m: Arc<dyn SelfMetrics>) {
        Engine::add_self_metrics(self, m)
    }
}

#[derive(Default)]
struct Tally {
    elapsed: Duration,
    failed: u64,
    unavailable: u64,
    example: Option<String>,
}

impl Tally {
    fn add(&mut self, run: &ProbeRun, where_: impl FnOnce() -> String) {
        self.elapsed += run.elapsed;
        match &run.result {
            Ok(()) => {}
            Err(err) => {
                match err {
                    CollectError::NotAvailable(_) => self.unavailable += 1,
                    CollectError::Failed(_) => self.failed += 1,
                }
                if self.example.is_none() {
                    self.example = Some(format!("{}: {err}", where_()));
                }
            }
        }
    }
}

/// What a collection worker needs besides its jobs.
struct Worker {
    proc_root: PathBuf,
    can_enter: bool,
    /// Where the namespaces' kept netlink sockets are.
    inventory: Arc<Inventory>,
    stats: Arc<Stats>,
}

fn spawn_worker(i: usize, rx: Receiver<Job>, w: Worker) {
    let r = std::thread::Builder::new()
        .name(format!("collect-{i}"))
        .spawn(move || {
            let home = match sys::thread_netns() {
                Ok(h) => h,
                Err(e) => {
                    log::error!("worker {i}: cannot open own network namespace: {e}");
                    return;
                }
            };
            while let Ok(job) = rx.recv() {
                if Instant::now() >= job.deadline {
                    continue;
                }
                let r = collect_entity(&job.entity, &job.probes, &w, &home);
                job.batch.put(job.index, r);
            }
        });
    if let Err(e) = r {
        log::error!("cannot start collection worker {i}: {e}");
    }
}

/// Bytes of sample text the last collected namespace produced.
static PIECE_HINT: AtomicUsize = AtomicUsize::new(0);

/// Collect one namespace (or process group) on the calling worker thread.
fn collect_entity(
    e: &Entity,
    probes: &ActiveProbes,
    w: &Worker,
    home: &(std::os::fd::OwnedFd, u64),
) -> JobResult {
    let r = collect_entity_in(e, probes, w, home);
    if !matches!(r, JobResult::Collected { .. }) {
        // Gone or replaced: what is kept open would only hold a dead namespace alive.
        w.inventory.forget_handles(e.inode);
    }
    r
}

fn collect_entity_in(
    e: &Entity,
    probes: &ActiveProbes,
    w: &Worker,
    home: &(std::os::fd::OwnedFd, u64),
) -> JobResult {
    let proc_root = w.proc_root.as_path();
    // Sized like the last namespace's text (they are alike): no growing through a dozen
    // reallocations per namespace.
    let mut fams = Families::with_capacity(PIECE_HINT.load(Ordering::Relaxed));
    let mut runs = Vec::with_capacity(probes.netns.len());
    let (home_fd, home_ino) = home;
    let at_home = e.inode == *home_ino;
    let protocols = probes.protocols.as_slice();
    // What is kept open for this namespace: sockets and files bound to it, so that neither
    // entering nor opening is needed.
    let kept = w.inventory.kept_handles(e);
    let sockets_kept = kept.as_ref().is_some_and(|k| k.sockets.has_all(protocols));
    let files_kept = kept.as_ref().is_some_and(|k| k.is_complete());
    // Enter only for what cannot be reached from outside: a probe that must run inside
    // (ipvs), netlink sockets not kept yet (to open them, once), or files not kept yet in a
    // named namespace without a process (procfs shows a namespace only through a process in
    // it, or through files opened inside it).
    let want_enter = !at_home
        && w.can_enter
        && (probes.needs_entered() || !sockets_kept || (e.pids.is_empty() && !files_kept));
    let mut kept_only = false;

    // Where to read the namespace's files, and whether we are inside it.
    let (net_dir, entered) = if at_home {
        (PathBuf::from("/proc/thread-self/net"), true)
    } else if want_enter {
        match inventory::enter(e, proc_root) {
            Ok(()) => {}
            Err(inventory::EnterError::Gone) => return JobResult::Vanished,
            Err(err) => {
                log::debug!("setns into netns {}: {err}", e.inode);
                return JobResult::Vanished;
            }
        }
        w.stats.enters.fetch_add(1, Ordering::Relaxed);
        // The inode matched; the cookie proves it is the namespace we labelled, not a new
        // one that got a recycled inode.
        if let (Some(want), Some(got)) = (e.cookie, sys::current_netns_cookie()) {
            if want != got {
                go_home(home_fd);
                return JobResult::Replaced;
            }
        }
        (PathBuf::from("/proc/thread-self/net"), true)
    } else if e.pids.is_empty() && files_kept && sockets_kept {
        // A named namespace without a process, everything kept: read it from here. It is
        // gone once its mount is (the kept files alone hold it alive).
        if !still_exists(e, proc_root) {
            return JobResult::Vanished;
        }
        kept_only = true;
        (
            e.mount.clone().unwrap_or_else(|| PathBuf::from(&e.name)),
            false,
        )
    } else {
        match e.pids.iter().find(|p| {
            std::fs::read_link(proc_root.join(p.to_string()).join("ns/net"))
                .ok()
                .and_then(|l| inventory::parse_ns_link(l.as_os_str().as_encoded_bytes()))
                == Some(e.inode)
        }) {
            Some(p) => (proc_root.join(p.to_string()).join("net"), false),
            None if e.pids.is_empty() && e.mount.is_some() && still_exists(e, proc_root) => {
                // A named namespace with no process can only be read from inside.
                let runs = probes
                    .netns
                    .iter()
                    .map(|c| ProbeRun {
                        elapsed: Duration::ZERO,
                        result: Err(CollectError::Failed(format!(
                            "{}: named netns {} has no process; reading it needs setns (CAP_SYS_ADMIN)",
                            c.name(),
                            e.name
                        ))),
                    })
                    .collect();
                return JobResult::Collected {
                    families: fams,
                    runs,
                };
            }
            None => return JobResult::Vanished,
        }
    };

    // Keep what this collection opens, for the next ones. Sockets only from inside (or at
    // home); files wherever they are opened (through a process's `net` directory too).
    let kept = match kept {
        Some(k) => Some(k),
        None if entered || !e.pids.is_empty() => {
            let cookie = if entered {
                sys::current_netns_cookie()
            } else {
                e.cookie
            };
            let k = Arc::new(NetnsHandles::new(cookie));
            // Past the fd budget they serve this collection only.
            w.inventory.keep_handles(e.inode, k.clone());
            Some(k)
        }
        None => None,
    };
    if let Some(k) = &kept {
        if entered {
            // From inside, every file asked for is opened and kept.
            k.reset_incomplete();
            if !protocols.is_empty() {
                if let Err(err) = k.sockets.open_missing(protocols) {
                    log::debug!("netns {}: cannot open netlink sockets: {err}", e.inode);
                }
            }
        }
    }

    {
        // Per-process probes sum over `proc_pids` (the host's leave out host-network pods,
        // which are reported as their own groups).
        let mut ctx = NetnsCtx::new(e.inode, net_dir, proc_root, entered, &e.proc_pids)
            .with_host(e.kind == EntityKind::Host)
            .with_handles(kept);
        if kept_only {
            ctx = ctx.kept_only();
        }
        let mut sink = fams.sink(&e.labels);
        for c in &probes.netns {
            let t = Instant::now();
            let result = if e.group && !c.per_process() {
                Ok(())
            } else if (c.needs_entered() && !entered) || !ctx.reaches(c.netlink_protocols()) {
                Err(CollectError::Failed(format!(
                    "{} needs to enter netns {} and cannot (setns needs CAP_SYS_ADMIN)",
                    c.name(),
                    e.inode
                )))
            } else {
                // A collector bug must not kill the worker (and with it a slot of the pool) or
                // leave it in a foreign namespace: it becomes this probe's failure.
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    c.collect(&ctx, &mut sink)
                }))
                .unwrap_or_else(|_| {
                    Err(CollectError::Failed(format!(
                        "{} panicked in netns {}",
                        c.name(),
                        e.inode
                    )))
                })
            };
            runs.push(ProbeRun {
                elapsed: t.elapsed(),
                result,
            });
        }
    }
    if entered && !at_home {
        go_home(home_fd);
    }

    // A read that failed because the namespace's last process exited is a vanish, not an error.
    let any_failed = runs.iter().any(|r| r.result.is_err());
    if any_failed && !entered && !still_exists(e, proc_root) {
        return JobResult::Vanished;
    }
    // Namespaces only (a process group's io/fd text is tiny), and not an outlier's size.
    if !at_home && !e.group {
        PIECE_HINT.store(fams.text_len().min(256 << 10), Ordering::Relaxed);
    }
    JobResult::Collected {
        families: fams,
        runs,
    }
}

fn go_home(home: &std::os::fd::OwnedFd) {
    if let Err(err) = sys::enter_netns(home.as_fd()) {
        log::error!("cannot return to own network namespace: {err}; aborting");
        std::process::abort();
    }
}

fn still_exists(e: &Entity, proc_root: &Path) -> bool {
    inventory::open_entity_netns(e, proc_root).is_some()
}

/// Labels of a namespace the inventory does not know: its inode, `kind="unknown"`, then the
/// static extra labels that are not empty (the names are empty, so not written).
pub fn unknown_labels(inode: u64, extra: &[(String, String)]) -> String {
    let inode_s = inode.to_string();
    let mut l: Vec<(&str, &str)> = vec![
        ("netns", &inode_s),
        ("kind", "unknown"),
        ("k8s_namespace", ""),
        ("k8s_pod", ""),
        ("name", ""),
    ];
    // An unknown namespace has no pod labels: `${labels:KEY}` expands to nothing.
    let none = std::collections::BTreeMap::new();
    let values: Vec<_> = extra
        .iter()
        .map(|(_, v)| crate::attribution::template::expand(v, &none))
        .collect();
    l.extend(
        extra
            .iter()
            .zip(&values)
            .map(|((k, _), v)| (k.as_str(), v.as_ref())),
    );
    // As for known entities: an empty label is not written (Prometheus reads it as absent).
    l.retain(|(_, v)| !v.is_empty());
    crate::model::render_labels(&l)
}

/// For tests and `netsleuth probes`: the snapshot the next scrape would use.
pub fn snapshot_of(engine: &Engine) -> Arc<Snapshot> {
    engine.inventory.snapshot()
}
