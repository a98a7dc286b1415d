//! The listeners (one ctnetlink socket per namespace, opened by entering it) and the
//! `conntrack-events` reader thread: epoll, rate limit, lost-event accounting.
#![forbid(unsafe_code)]

use super::*;
use crate::events::EntityCache;

/// `NETLINK_NETFILTER`.
const NETLINK_NETFILTER: isize = 12;

/// What subscribing to ctnetlink's groups takes (netlink checks it in the namespace's user
/// namespace).
const NEEDS_CAP: &str = "CAP_NET_ADMIN";

/// A ctnetlink listener in the calling thread's namespace: every event group bound, a receive
/// buffer of `rcvbuf` bytes (forced past `rmem_max` where we may), non-blocking.
pub(super) fn open_socket(rcvbuf: u64) -> Result<Socket, String> {
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    let mut s = Socket::new(NETLINK_NETFILTER).map_err(|e| io("socket(NETLINK_NETFILTER)", e))?;
    let size = usize::try_from(rcvbuf).unwrap_or(usize::MAX);
    if nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::RcvBufForce, &size).is_err() {
        // Without CAP_NET_ADMIN: capped at net.core.rmem_max.
        nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::RcvBuf, &size)
            .map_err(|e| format!("setsockopt(SO_RCVBUF): {e}"))?;
    }
    let mask = GROUPS.iter().fold(0u32, |m, g| m | (1 << (g - 1)));
    s.bind(&SocketAddr::new(0, mask)).map_err(|e| {
        if e.raw_os_error() == Some(libc::EPERM) {
            format!("bind(ctnetlink event groups): {e}: listening to conntrack events needs {NEEDS_CAP}")
        } else {
            io("bind(ctnetlink event groups)", e)
        }
    })?;
    s.set_non_blocking(true)
        .map_err(|e| io("fcntl(O_NONBLOCK)", e))?;
    Ok(s)
}

/// A listener in one namespace.
struct Listener {
    inode: u64,
    name: String,
    sock: Socket,
    /// `sk_drops` as last read.
    drops: u32,
    /// An `ENOBUFS` was seen and the drops are to be read again once the queue is empty.
    overflowed: bool,
    /// A malformed message was logged for this listener (once).
    warned: bool,
    /// The rate limit, per event type, of this namespace.
    buckets: [Bucket; 5],
}

/// Namespaces re-checked at most this often when nothing changed.
const SYNC_EVERY: Duration = Duration::from_secs(1);
/// A namespace whose listener could not be opened is retried after this long.
const RETRY_AFTER: Duration = Duration::from_secs(30);
/// At most this many listeners (namespaces); more are logged and left out.
const MAX_LISTENERS: usize = 8192;
/// Datagrams read from one socket per wake-up, so one busy namespace cannot starve the others.
const MAX_PER_WAKE: usize = 512;
/// A ctnetlink event is well below 1 KiB; room for anything the kernel sends.
const RECV_BUF: usize = 64 * 1024;

fn open_listener(e: &Entity, proc_root: &std::path::Path, rcvbuf: u64) -> Result<Socket, String> {
    let r = crate::inventory::with_netns(e, proc_root, || {
        // The inode matched; the cookie proves it is the namespace the inventory labelled.
        if let (Some(want), Some(got)) = (e.cookie, crate::sys::current_netns_cookie()) {
            if want != got {
                return Err("the namespace behind the inode changed".to_string());
            }
        }
        open_socket(rcvbuf)
    });
    match r {
        Ok(r) => r,
        Err(err) if err.raw_os_error() == Some(libc::EPERM) => {
            Err(format!("enter netns: {err}: needs CAP_SYS_ADMIN"))
        }
        Err(err) => Err(format!("enter netns: {err}")),
    }
}

struct Reader {
    cfg: ConntrackEventsConfig,
    inventory: Arc<Inventory>,
    pipeline: Option<Arc<Pipeline>>,
    epoll: crate::bpf::sys::Epoll,
    listeners: HashMap<u64, Listener>,
    by_inode: HashMap<u64, u64>,
    failed: HashMap<u64, Instant>,
    next_token: u64,
    buf: Vec<u8>,
    parsed: Vec<CtEvent>,
    /// The events' entities, one per namespace while the inventory's entity stays the same.
    entities: EntityCache,
    warned_unloaded: bool,
    warned_full: bool,
    /// A missing capability was logged (once: it fails every namespace alike; the host's own
    /// listener may still work without CAP_SYS_ADMIN).
    warned_cap: bool,
}

pub(super) fn reader_loop(
    cfg: ConntrackEventsConfig,
    stop: Arc<AtomicBool>,
    inventory: Arc<Inventory>,
    pipeline: Option<Arc<Pipeline>>,
) {
    let epoll = match crate::bpf::sys::Epoll::new() {
        Ok(e) => e,
        Err(e) => {
            log::error!("conntrack event probe: epoll: {e}");
            return;
        }
    };
    let mut r = Reader {
        cfg,
        inventory,
        pipeline,
        epoll,
        listeners: HashMap::new(),
        by_inode: HashMap::new(),
        failed: HashMap::new(),
        next_token: 0,
        buf: Vec::with_capacity(RECV_BUF),
        parsed: Vec::new(),
        entities: EntityCache::default(),
        warned_unloaded: false,
        warned_full: false,
        warned_cap: false,
    };
    let mut last_snap: Option<Arc<crate::inventory::Snapshot>> = None;
    let mut last_sync = Instant::now();
    let mut ready = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let snap = r.inventory.snapshot();
        let changed = last_snap.as_ref().is_none_or(|s| !Arc::ptr_eq(s, &snap));
        if changed || last_sync.elapsed() >= SYNC_EVERY {
            r.sync(&snap);
            r.check_drops();
            // Namespaces gone since are released; the rest are looked up again once.
            r.entities.clear();
            last_sync = Instant::now();
            last_snap = Some(snap);
        }
        ready.clear();
        if let Err(e) = r.epoll.wait(&mut ready, 64, 200) {
            log::error!("conntrack event probe: epoll_wait: {e}");
            std::thread::sleep(Duration::from_millis(200));
        }
        for token in &ready {
            r.drain(*token);
        }
    }
    STATS.listeners.store(0, Ordering::Relaxed);
}

impl Reader {
    /// Open listeners in new namespaces, close those of namespaces gone from the inventory.
    fn sync(&mut self, snap: &crate::inventory::Snapshot) {
        let alive: std::collections::HashSet<u64> = snap.entities.iter().map(|e| e.inode).collect();
        let gone: Vec<u64> = self
            .by_inode
            .keys()
            .filter(|i| !alive.contains(i))
            .copied()
            .collect();
        for inode in gone {
            if let Some(token) = self.by_inode.remove(&inode) {
                // Read what it still holds, then close it (and let the namespace go).
                self.drain(token);
                if let Some(l) = self.listeners.remove(&token) {
                    log::debug!(
                        "conntrack events: netns {} ({}) gone; listener closed",
                        l.inode,
                        l.name
                    );
                }
            }
        }
        self.failed.retain(|i, _| alive.contains(i));
        if !conntrack_loaded() {
            if !self.warned_unloaded {
                log::warn!(
                    "conntrack event probe: nf_conntrack is not loaded; listening once it is"
                );
                self.warned_unloaded = true;
            }
            STATS
                .listeners
                .store(self.listeners.len() as u64, Ordering::Relaxed);
            return;
        }
        let proc_root = self.inventory.proc_root().to_path_buf();
        for e in &snap.entities {
            if e.group || self.by_inode.contains_key(&e.inode) {
                continue;
            }
            if self
                .failed
                .get(&e.inode)
                .is_some_and(|t| t.elapsed() < RETRY_AFTER)
            {
                continue;
            }
            if self.listeners.len() >= MAX_LISTENERS {
                if !self.warned_full {
                    log::warn!("conntrack event probe: {MAX_LISTENERS} namespaces listened to; no more listeners");
                    self.warned_full = true;
                }
                break;
            }
            match open_listener(e, &proc_root, self.cfg.rcvbuf) {
                Ok(sock) => {
                    let token = self.next_token;
                    self.next_token += 1;
                    if let Err(err) = self.epoll.add(sock.as_fd(), token) {
                        log::warn!(
                            "conntrack events: netns {} ({}): epoll_ctl: {err}",
                            e.inode,
                            e.name
                        );
                        self.failed.insert(e.inode, Instant::now());
                        continue;
                    }
                    let drops = crate::sys::socket_drops(sock.as_fd()).unwrap_or(0);
                    log::debug!(
                        "conntrack events: listening in netns {} ({})",
                        e.inode,
                        e.name
                    );
                    self.failed.remove(&e.inode);
                    self.by_inode.insert(e.inode, token);
                    self.listeners.insert(
                        token,
                        Listener {
                            inode: e.inode,
                            name: e.name.clone(),
                            sock,
                            drops,
                            overflowed: false,
                            warned: false,
                            buckets: [Bucket::new(self.cfg.rate_limit, self.cfg.burst); 5],
                        },
                    );
                }
                Err(err) if err.contains("needs CAP_") => {
                    if !self.warned_cap {
                        log::error!("conntrack event probe: {err}; no namespace is listened to");
                        self.warned_cap = true;
                    }
                    self.failed.insert(e.inode, Instant::now());
                }
                Err(err) => {
                    // Logged once per retry period per namespace: bounded by the inventory.
                    log::warn!(
                        "conntrack events: netns {} ({}): no listener: {err}; retrying in {}s",
                        e.inode,
                        e.name,
                        RETRY_AFTER.as_secs()
                    );
                    self.failed.insert(e.inode, Instant::now());
                }
            }
        }
        STATS
            .listeners
            .store(self.listeners.len() as u64, Ordering::Relaxed);
    }

    /// Read every listener's drop counter (drops the kernel counted without an `ENOBUFS`
    /// reaching us yet).
    fn check_drops(&mut self) {
        let tokens: Vec<u64> = self.listeners.keys().copied().collect();
        for t in tokens {
            if let Some(l) = self.listeners.get_mut(&t) {
                account_drops(l);
            }
        }
    }

    /// Read and publish what one listener holds (bounded per wake-up).
    fn drain(&mut self, token: u64) {
        let Some(l) = self.listeners.get_mut(&token) else {
            return;
        };
        for _ in 0..MAX_PER_WAKE {
            self.buf.clear();
            match l.sock.recv(&mut self.buf, libc::MSG_TRUNC) {
                Ok(n) => {
                    if n > self.buf.len() {
                        if !l.warned {
                            log::warn!(
                                "conntrack events: netns {} ({}): a {n}-byte datagram exceeds the {}-byte buffer; skipped",
                                l.inode, l.name, self.buf.len()
                            );
                            l.warned = true;
                        }
                        continue;
                    }
                    self.parsed.clear();
                    if let Err(e) = parse_datagram(&self.buf, &mut self.parsed) {
                        if !l.warned {
                            log::warn!(
                                "conntrack events: netns {} ({}): {e} (further malformed messages are not logged)",
                                l.inode, l.name
                            );
                            l.warned = true;
                        }
                    }
                    let now = crate::sys::monotonic_ns();
                    for c in self.parsed.drain(..) {
                        let i = c.kind.index();
                        if !l.buckets[i].admit(now) {
                            STATS.suppressed[i].fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        STATS.published[i].fetch_add(1, Ordering::Relaxed);
                        let entity = self
                            .entities
                            .get(l.inode, self.inventory.entity_at(l.inode, Instant::now()));
                        if let Some(p) = &self.pipeline {
                            p.publish(to_event(&c, entity));
                        }
                    }
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::ENOBUFS) => {
                        // The receive buffer overflowed: the kernel dropped (and counted)
                        // messages. Count them now; read again once the queue is empty, for
                        // those dropped until then.
                        l.overflowed = true;
                        account_drops(l);
                    }
                    Some(libc::EAGAIN) => {
                        if l.overflowed {
                            l.overflowed = false;
                            account_drops(l);
                        }
                        return;
                    }
                    _ => {
                        if !l.warned {
                            log::warn!(
                                "conntrack events: netns {} ({}): recv: {e}",
                                l.inode,
                                l.name
                            );
                            l.warned = true;
                        }
                        return;
                    }
                },
            }
        }
    }
}

/// Add the listener's new `sk_drops` to the lost counter, and log them.
fn account_drops(l: &mut Listener) {
    let n = match crate::sys::socket_drops(l.sock.as_fd()) {
        Some(d) => {
            let n = d.wrapping_sub(l.drops);
            l.drops = d;
            u64::from(n)
        }
        // No SO_MEMINFO (before 4.6): an ENOBUFS says at least one was lost.
        None if l.overflowed => 1,
        None => 0,
    };
    if n == 0 {
        return;
    }
    let total = STATS.lost.fetch_add(n, Ordering::Relaxed) + n;
    log::warn!(
        "conntrack events: netns {} ({}): receive buffer full, {n} events lost ({total} lost in all); raise the probe's rcvbuf",
        l.inode,
        l.name
    );
}
