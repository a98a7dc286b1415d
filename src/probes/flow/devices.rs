//! flow's devices: which of the node's devices it attaches to, the `flow-devices` thread that
//! follows them (rtnetlink), attaching and detaching per device, and the kernel device maps.
#![forbid(unsafe_code)]

use super::*;

/// A device we attached to.
struct Attached {
    name: String,
    info: DevInfo,
    /// tcx: the links (closing them detaches); tc: our filters (deleted on drop).
    _links: DeviceLinks,
}

/// One device's programs: dropping it detaches them. A tc attachment deletes its filters by
/// ifindex through rtnetlink in the dropping thread's namespace: drop it in the namespace it was
/// made in.
pub enum DeviceLinks {
    Tcx(#[allow(dead_code)] Vec<Link>),
    Tc(#[allow(dead_code)] crate::tc::Attachment),
}

/// `struct dev_info` of `flow.bpf.c`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DevInfo {
    pub netns: u32,
    pub flags: u32,
}

impl DevInfo {
    /// `struct dev_info` with the namespace's table id (0: not in the per-CPU tables).
    fn bytes(&self, table_id: u32) -> [u8; 12] {
        use crate::probes::layout::dev_info as f;
        let mut b = [0u8; f::LAYOUT.size];
        b[f::NETNS.offset..][..f::NETNS.size].copy_from_slice(&self.netns.to_ne_bytes());
        b[f::FLAGS.offset..][..f::FLAGS.size].copy_from_slice(&self.flags.to_ne_bytes());
        b[f::TABLE_ID.offset..][..f::TABLE_ID.size].copy_from_slice(&table_id.to_ne_bytes());
        b
    }
}

/// How many slots (per CPU) of the per-CPU tables hold one of `ids`.
fn table_slots_of(loaded: &Loaded, ids: &HashSet<u32>) -> u64 {
    let mut n = 0;
    for (name, ..) in TABLES {
        let Ok(m) = loaded.map(name) else { continue };
        let stride = m.cpu_stride().max(1);
        let Ok(entries) = m.entries() else { continue };
        for (_, v) in entries {
            n += v
                .chunks(stride)
                .filter_map(|s| crate::probes::layout::flow_key::NETNS.u32(s))
                .filter(|id| ids.contains(id))
                .count() as u64;
        }
    }
    n
}

/// Entries of the kernel array `table_ids` (`bpf-asm/flow.bpf.c`): a live id `i` is at
/// `i % TABLE_IDS`.
const TABLE_IDS: u32 = 4096;

/// The namespaces' ids in the per-CPU tables. A slot's key carries the id instead of the
/// namespace's inode so that a retired namespace's slots are told apart from those of a new
/// namespace that gets the same inode: ids are never reused (a u32 counter), and live ids
/// never share an entry of `table_ids`, whose entry says to the kernel whether an id is live
/// (a slot of a retired id is free to reclaim).
#[derive(Default)]
pub struct TableIds {
    ids: Mutex<TableIdsInner>,
}

#[derive(Default)]
struct TableIdsInner {
    of_netns: HashMap<u32, u32>,
    netns_of: HashMap<u32, u32>,
    /// The `table_ids` entries live ids take (`id % TABLE_IDS`).
    entries: HashSet<u32>,
    last: u32,
}

impl TableIds {
    /// Namespace `netns`'s id, allocated (and made live in the kernel) if it has none; 0 when
    /// every entry of `table_ids` holds a live id (its packets then go to the hashes).
    fn id_for(&self, l: &Loaded, netns: u32) -> Result<u32, String> {
        let mut t = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = t.of_netns.get(&netns) {
            return Ok(*id);
        }
        if t.entries.len() >= TABLE_IDS as usize {
            return Ok(0);
        }
        let mut id = t.last;
        loop {
            id = id.wrapping_add(1).max(1);
            if !t.entries.contains(&(id % TABLE_IDS)) {
                break;
            }
        }
        l.map("table_ids")
            .and_then(|m| m.update(&(id % TABLE_IDS).to_ne_bytes(), &id.to_ne_bytes(), 0))
            .map_err(|e| format!("table_ids[{}]: {e}", id % TABLE_IDS))?;
        t.last = id;
        t.of_netns.insert(netns, id);
        t.netns_of.insert(id, netns);
        t.entries.insert(id % TABLE_IDS);
        Ok(id)
    }

    /// Retires namespace `netns`'s id: its slots are no longer read, and the kernel may
    /// reclaim them. Returns whether it had one.
    fn retire(&self, l: &Loaded, netns: u32) -> bool {
        let mut t = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        let Some(id) = t.of_netns.remove(&netns) else {
            return false;
        };
        t.netns_of.remove(&id);
        t.entries.remove(&(id % TABLE_IDS));
        if let Ok(m) = l.map("table_ids") {
            let _ = m.update(&(id % TABLE_IDS).to_ne_bytes(), &0u32.to_ne_bytes(), 0);
        }
        true
    }

    /// Live id → namespace inode.
    pub fn live(&self) -> HashMap<u32, u32> {
        let t = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        t.netns_of.clone()
    }
}

/// Devices with an ifindex below this are in the kernel array `devices_direct` (its lookup is
/// inlined: cheaper per packet), the others in the hash `devices` (`bpf-asm/flow.bpf.c`).
const DEV_DIRECT: u32 = 4096;

/// Writes device `ifindex`'s entry into whichever kernel map holds it.
fn dev_write(l: &Loaded, ifindex: u32, info: DevInfo, table_id: u32) -> Result<(), String> {
    let name = if ifindex < DEV_DIRECT {
        "devices_direct"
    } else {
        "devices"
    };
    l.map(name)
        .and_then(|m| m.update(&ifindex.to_ne_bytes(), &info.bytes(table_id), 0))
        .map_err(|e| format!("{name}[{ifindex}]: {e}"))
}

/// Sets device `ifindex`'s entry, with its namespace's table id (allocated if new; none when
/// `cpuTableEntries` is 0).
fn dev_put(p: &RunningProbe, state: &State, ifindex: u32, info: DevInfo) -> Result<(), String> {
    let id = if p.cfg.flow.cpu_table_entries > 0 {
        state.tables.id_for(&p.loaded, info.netns)?
    } else {
        0
    };
    dev_write(&p.loaded, ifindex, info, id)
}

/// Removes device `ifindex`'s entry (in the array: netns 0, "not attached").
fn dev_del(l: &Loaded, ifindex: u32) {
    if ifindex < DEV_DIRECT {
        let _ = dev_write(l, ifindex, DevInfo { netns: 0, flags: 0 }, 0);
    } else if let Ok(m) = l.map("devices") {
        let _ = m.delete(&ifindex.to_ne_bytes());
    }
}

/// The flow probe's run-time state (inside its [`RunningProbe`]).
pub struct State {
    /// `tcx` or `tc`.
    pub method: &'static str,
    devices: Mutex<BTreeMap<u32, Attached>>,
    /// The namespaces' ids in the per-CPU tables.
    pub tables: TableIds,
    /// Series admitted under `maxSeries`, and those summed into the overflow series.
    pub(super) admission: Mutex<Admission>,
}

#[derive(Default)]
pub(super) struct Admission {
    pub(super) admitted: HashSet<SeriesKey>,
    /// The series the last scrape summed into the overflow series, with their (bytes,
    /// packets) then.
    pub(super) overflowed: HashMap<SeriesKey, (u64, u64)>,
    /// (bytes, packets) of series that left the overflow series (admitted later, or gone):
    /// kept in it, so that it never goes down.
    pub(super) retired: (u64, u64),
    /// `netsleuth_flow_series_overflowed_total`.
    pub(super) overflowed_total: u64,
}

impl State {
    pub fn new(method: &'static str) -> State {
        State {
            method,
            devices: Mutex::new(BTreeMap::new()),
            tables: TableIds::default(),
            admission: Mutex::new(Admission::default()),
        }
    }

    /// Detach from every device.
    pub fn detach(&self, loaded: &Loaded) {
        let mut d = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        for ifindex in d.keys() {
            dev_del(loaded, *ifindex);
        }
        d.clear();
    }

    /// Retires the table ids of `dead` namespaces that no attached device counts for (their
    /// slots are no longer read and may be reclaimed); returns the namespaces retired and how
    /// many slots (per CPU) they held.
    pub fn retire_tables(&self, loaded: &Loaded, dead: &HashSet<u32>) -> (Vec<u32>, u64) {
        let attached: HashSet<u32> = {
            let d = self.devices.lock().unwrap_or_else(|e| e.into_inner());
            d.values().map(|a| a.info.netns).collect()
        };
        let live = self.tables.live();
        let ids: HashSet<u32> = live
            .iter()
            .filter(|(_, n)| dead.contains(n) && !attached.contains(n))
            .map(|(id, _)| *id)
            .collect();
        if ids.is_empty() {
            return (Vec::new(), 0);
        }
        let slots = table_slots_of(loaded, &ids);
        let retired = ids
            .iter()
            .filter_map(|id| live.get(id).copied())
            .filter(|n| self.tables.retire(loaded, *n))
            .collect();
        (retired, slots)
    }

    /// The namespaces that hold table ids.
    pub fn table_netns(&self) -> Vec<u32> {
        self.tables.live().into_values().collect()
    }

    /// The attached devices' names (sorted by ifindex).
    pub fn device_names(&self) -> Vec<String> {
        let d = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        d.values().map(|a| a.name.clone()).collect()
    }
}

/// The attach method this kernel and `attachMethods` allow: `tcx` where the kernel has tcx
/// links; `Err` says why neither works.
pub fn choose_method(loaded: &Loaded, only: Option<&[String]>) -> Result<&'static str, String> {
    let allowed = |m: &str| only.is_none_or(|o| o.iter().any(|x| x == m));
    let prog = loaded
        .program("flow_ingress")
        .map_err(|e| format!("program flow_ingress: {e}"))?;
    let mut why = Vec::new();
    if allowed("tcx") {
        if attach::tcx_available(prog) {
            return Ok("tcx");
        }
        why.push("tcx: the kernel has no tcx links (6.6+)".to_string());
    }
    if allowed("tc") {
        // cls_bpf filters on clsact through rtnetlink: every kernel we run on has them.
        return Ok("tc");
    }
    if why.is_empty() {
        why.push("attachMethods excludes every method of this attach point (tcx, tc)".into());
    }
    Err(why.join("; "))
}

/// A link as the device choice sees it.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub link: rtnl::Link,
    /// The namespace inode of the veth peer (from `IFLA_LINK_NETNSID`), if resolved.
    pub peer_inode: Option<u64>,
}

/// The devices to attach and their local entity: `interfaceName` if set, else every veth
/// whose peer is in another namespace plus the default-route devices; never `lo`.
pub fn choose_devices(
    args: &FlowArgs,
    links: &[Candidate],
    default_devs: &[u32],
    host_inode: u64,
) -> BTreeMap<u32, (String, DevInfo)> {
    let mut out = BTreeMap::new();
    for c in links {
        let l = &c.link;
        if l.name == "lo" {
            continue;
        }
        let pod_side = l.kind == "veth" && l.link_netnsid.is_some();
        let wanted = match args.interface_matches(&l.name) {
            Some(m) => m,
            None => pod_side || default_devs.contains(&l.index),
        };
        if !wanted {
            continue;
        }
        let info = if pod_side {
            match c.peer_inode {
                Some(ino) => DevInfo {
                    netns: ino as u32,
                    flags: DEV_FLIP,
                },
                // The peer's namespace is not known yet: retried at the next sync.
                None => continue,
            }
        } else {
            DevInfo {
                netns: host_inode as u32,
                flags: 0,
            }
        };
        out.insert(l.index, (l.name.clone(), info));
    }
    out
}

/// How long the device thread waits for notifications before it re-reads the links anyway.
const RESYNC: Duration = Duration::from_secs(5);

/// The `flow-devices` thread: attaches the chosen devices and follows link notifications until
/// `stop`.
pub fn device_loop(p: Arc<RunningProbe>, inv: Arc<Inventory>, stop: Arc<AtomicBool>) {
    let Some(state) = p.flow.clone() else { return };
    let mut mon = match rtnl::Monitor::open(rtnl::GROUPS_LINK_ROUTE, Duration::from_millis(200)) {
        Ok(m) => Some(m),
        Err(e) => {
            log::warn!(
                "flow: no rtnetlink link notifications ({e}); re-reading links every second"
            );
            None
        }
    };
    let mut nsids: HashMap<i32, u64> = HashMap::new();
    let mut last_refresh: Option<Instant> = None;
    let mut next_sync = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if Instant::now() >= next_sync {
            let retry = match sync(&p, &state, &inv, &mut nsids, &mut last_refresh) {
                Ok(r) => r,
                Err(e) => {
                    log::warn!("flow: reading the node's devices failed: {e}");
                    true
                }
            };
            next_sync = Instant::now()
                + if retry {
                    Duration::from_millis(250)
                } else {
                    RESYNC
                };
        }
        match mon.as_mut() {
            Some(m) => match m.wait() {
                // Let a burst of notifications (a pod's veth pair) settle, then re-read once.
                Ok(true) => next_sync = next_sync.min(Instant::now() + Duration::from_millis(20)),
                Ok(false) => {}
                Err(e) => {
                    log::warn!("flow: link notifications: {e}; re-reading links every second");
                    mon = None;
                }
            },
            None => {
                std::thread::sleep(Duration::from_millis(200));
                next_sync = next_sync.min(Instant::now() + Duration::from_secs(1));
            }
        }
    }
}

/// Namespace id (ours) → inode for every namespace of the inventory.
fn map_nsids(sock: &mut DumpSocket, inv: &Inventory) -> HashMap<i32, u64> {
    let snap = inv.snapshot();
    let own = crate::sys::thread_netns().map(|(_, ino)| ino).ok();
    let mut out = HashMap::new();
    for e in &snap.entities {
        if e.group || Some(e.inode) == own {
            continue;
        }
        let Some(fd) = crate::inventory::open_entity_netns(e, inv.proc_root()) else {
            continue;
        };
        if let Ok(Some(id)) = rtnl::nsid_of(sock, &fd) {
            out.insert(id, e.inode);
        }
    }
    out
}

/// Re-reads links and default routes and (de)attaches. `Ok(true)`: a pod device's namespace
/// could not be resolved yet; try again soon.
fn sync(
    p: &RunningProbe,
    state: &State,
    inv: &Inventory,
    nsids: &mut HashMap<i32, u64>,
    last_refresh: &mut Option<Instant>,
) -> Result<bool, String> {
    let mut sock =
        DumpSocket::open(netlink_sys::protocols::NETLINK_ROUTE).map_err(|e| e.to_string())?;
    let links = rtnl::dump_links(&mut sock).map_err(|e| format!("RTM_GETLINK: {e}"))?;
    let defaults =
        rtnl::default_route_devices(&mut sock).map_err(|e| format!("RTM_GETROUTE: {e}"))?;
    let unknown = |nsids: &HashMap<i32, u64>| {
        links
            .iter()
            .filter_map(|l| l.link_netnsid)
            .any(|id| !nsids.contains_key(&id))
    };
    // A pod device not attached yet: its namespace id may be one a namespace that is gone had
    // (the kernel reuses them), so the ids are mapped afresh rather than trusted.
    let fresh = {
        let d = state.devices.lock().unwrap_or_else(|e| e.into_inner());
        links.iter().any(|l| {
            l.kind == "veth"
                && l.link_netnsid.is_some()
                && p.cfg.flow.interface_matches(&l.name) != Some(false)
                && d.get(&l.index).is_none_or(|a| a.name != l.name)
        })
    };
    if fresh || unknown(nsids) {
        *nsids = map_nsids(&mut sock, inv);
        // A namespace the inventory has not seen yet (a pod that just started): rescan, at
        // most once a second.
        if unknown(nsids) && last_refresh.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            inv.refresh();
            *last_refresh = Some(Instant::now());
            *nsids = map_nsids(&mut sock, inv);
        }
    }
    let candidates: Vec<Candidate> = links
        .into_iter()
        .map(|l| Candidate {
            peer_inode: l.link_netnsid.and_then(|id| nsids.get(&id).copied()),
            link: l,
        })
        .collect();
    // Uplinks belong to the namespace the exporter runs in (the node's, normally the host's).
    let host = crate::sys::thread_netns()
        .map(|(_, ino)| ino)
        .unwrap_or_else(|_| inv.snapshot().host_inode);
    let unresolved = candidates.iter().any(|c| {
        c.link.kind == "veth"
            && c.link.link_netnsid.is_some()
            && c.peer_inode.is_none()
            && p.cfg.flow.interface_matches(&c.link.name) != Some(false)
    });
    let want = choose_devices(&p.cfg.flow, &candidates, &defaults, host);
    let mut d = state.devices.lock().unwrap_or_else(|e| e.into_inner());
    // Gone, renamed or no longer chosen: forget (closing the links detaches).
    let stale: Vec<u32> = d
        .iter()
        .filter(|(i, a)| want.get(i).is_none_or(|(n, _)| *n != a.name))
        .map(|(i, _)| *i)
        .collect();
    for i in stale {
        if let Some(a) = d.remove(&i) {
            log::info!("flow: device {} (ifindex {i}) forgotten", a.name);
        }
        dev_del(&p.loaded, i);
    }
    for (ifindex, (name, info)) in want {
        if let Some(a) = d.get_mut(&ifindex) {
            if a.info != info {
                dev_put(p, state, ifindex, info)?;
                a.info = info;
            }
            continue;
        }
        // The entry first: a packet of an attached device without one is not counted.
        if let Err(e) = dev_put(p, state, ifindex, info) {
            log::warn!("flow: device {name}: devices map: {e}");
            continue;
        }
        match attach_device(p, state.method, ifindex) {
            Ok(links) => {
                log::info!(
                    "flow: attached to {name} (ifindex {ifindex}, netns {}) via {}",
                    info.netns,
                    state.method
                );
                d.insert(
                    ifindex,
                    Attached {
                        name,
                        info,
                        _links: links,
                    },
                );
            }
            Err(e) => {
                dev_del(&p.loaded, ifindex);
                log::warn!("flow: cannot attach to {name} (ifindex {ifindex}): {e}");
            }
        }
    }
    Ok(unresolved)
}

/// Sets the local entity of device `ifindex` in the kernel maps (before attaching:
/// packets of a device without an entry are not counted).
pub fn set_device(p: &RunningProbe, ifindex: u32, info: DevInfo) -> Result<(), String> {
    let state = p
        .flow
        .as_ref()
        .ok_or("the flow probe has no device state")?;
    dev_put(p, state, ifindex, info)
}

/// Attaches both programs to device `ifindex` of the calling thread's namespace with `method`
/// (`tcx` or `tc`).
pub fn attach_device(p: &RunningProbe, method: &str, ifindex: u32) -> Result<DeviceLinks, String> {
    let prog = |name: &str| p.loaded.program(name).map_err(|e| e.to_string());
    let (ing, eg) = (prog("flow_ingress")?, prog("flow_egress")?);
    match method {
        "tcx" => {
            let mut links = Vec::new();
            for (pr, egress) in [(ing, false), (eg, true)] {
                links.push(attach::attach_tcx(pr, ifindex, egress).map_err(|e| e.to_string())?);
            }
            Ok(DeviceLinks::Tcx(links))
        }
        "tc" => {
            use std::os::fd::{AsFd, AsRawFd};
            let fd = |pr: &crate::bpf::prog::Program| pr.as_fd().as_raw_fd() as u32;
            crate::tc::attach(ifindex, fd(ing), fd(eg)).map(DeviceLinks::Tc)
        }
        m => Err(format!("attach method {m} not available")),
    }
}
