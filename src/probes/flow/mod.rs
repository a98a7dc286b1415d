//! `flow`: bytes and packets per local entity, direction and remote side, counted in the kernel
//! by two `tc` classifiers (`bpf-asm/flow.bpf.c`) on the node's devices.
//!
//! **Attach.** Per device, a tcx link at ingress and at egress (`BPF_LINK_CREATE` with
//! `BPF_TCX_INGRESS/EGRESS`, 6.6+): owned by our fd, so it is gone when the process dies, and
//! appended after whatever else is attached there. The attach method is decided once at start
//! (`tcx` where the kernel has it); `attachMethods` restricts it.
//!
//! **Devices.** By default the host side of every veth whose peer lives in another namespace
//! (a pod's or container's interface) plus the devices of the IPv4/IPv6 default routes (the
//! uplinks); `interfaceName` (exact name, or `prefix*`) replaces that choice. A thread
//! (`flow-devices`) subscribes to rtnetlink link and route notifications and re-reads the
//! links on each, so a new pod's veth is attached within milliseconds and a vanished device is
//! forgotten (its links closed, its `devices_direct`/`devices` entry cleared); it also
//! re-reads every 5 s.
//!
//! **Local entity and direction.** The kernel maps `devices_direct` (ifindex < 4096, an array)
//! and `devices` (a hash, the others) give each attached ifindex the namespace inode of its
//! local entity: the veth peer's namespace for a pod's device
//! (resolved through `RTM_GETNSID` of each inventory namespace against the link's
//! `IFLA_LINK_NETNSID`), the host for an uplink. `direction` is as the local entity sees it:
//! what enters the host side of a pod's veth is the pod's egress.
//!
//! **Remote side.** A remote address that belongs to a namespace on this node gets
//! `peer_kind`, `peer_k8s_namespace`, `peer_k8s_pod`, `peer_name` and the exact
//! `peer_address`. Other addresses are aggregated so that cardinality stays bounded:
//! inside `clusterCIDRs` (default: the private ranges 10/8, 172.16/12, 192.168/16,
//! 100.64/10, fc00::/7) the exact address; outside, the enclosing /`peerPrefixV4` (24) or
//! /`peerPrefixV6` (48) network (`203.0.113.0/24`), or `other` when that prefix is 0.
//!
//! **Bounds.** The kernel maps `flows4` (IPv4, a 16-byte key) and `flows` (IPv6, 28 bytes) hold
//! `mapEntries` (16384) keys each; an update that finds its map full is counted in
//! `netsleuth_bpf_map_full_total{probe="flow"}`. They are per-CPU hashes, allocated as flows
//! appear (16 bytes per possible CPU per key; no locked adds per packet), and a scrape sums the
//! CPUs' values. In front of them, per CPU, the tables `table4` and `table6` (`cpuTableEntries`,
//! 512 slots each): open addressing over a per-CPU array, whose lookup the verifier inlines, so
//! a packet of a key the CPU already holds costs no hash lookup. A slot's key carries the
//! namespace's table id ([`TableIds`]) instead of its inode; the id is retired when the reaper
//! deletes the namespace's map entries, and its slots are then skipped here and reclaimed by
//! the kernel. Every packet is added in one place, a slot of its CPU or the hash, so a scrape
//! sums both.
//! `maxSeries` (10000) caps
//! the flow series per scrape: series are admitted first come, first served and stay admitted
//! while their kernel keys exist (so their counters never jump); the others are summed into one
//! series per family with `peer_address="overflow"` and no entity labels; what leaves it (a
//! series admitted later, or gone with its namespace) stays counted in it, so it never goes
//! down.
//! `netsleuth_flow_series_overflowed_total` counts the series that went into it: a series is
//! counted at the first scrape that sums it into the overflow series, and not again while it
//! stays there (a series that leaves — admitted once an admitted one is gone, or gone itself —
//! and comes back is counted again). A true counter, whatever the scrape interval: its rate is
//! how fast new series are being refused; 0 means every series is exported on its own.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::layout::{flow_slot, flow_slot4, Field};
use super::registry::{EbpfProbe, Setup};
use super::{Alternative, ProbeKind, RunningProbe};
use crate::bpf::attach::{self, Link};
use crate::bpf::Loaded;
use crate::collectors::netlink::DumpSocket;
use crate::collectors::ProbeArgs;
use crate::inventory::{Entity, Inventory};
use crate::model::{Families, MetricKind, Sink, Value};
use crate::rtnl;

/// One attach point (every device's ingress and egress): tcx links, else cls_bpf filters.
pub const PLAN: &[&[Alternative]] = &[&[
    ("tcx", &["flow_ingress", "flow_egress"]),
    ("tc", &["flow_ingress", "flow_egress"]),
]];

/// `struct dev_info.flags`: directions swapped (the host side of a pod's veth).
const DEV_FLIP: u32 = 1;

pub const DEFAULT_MAP_ENTRIES: u32 = 16384;
pub const DEFAULT_MAX_SERIES: usize = 10_000;
/// Slots per CPU of each of the tables `table4` and `table6` (`cpuTableEntries`).
pub const DEFAULT_CPU_TABLE_ENTRIES: u32 = 512;
const MAX_CPU_TABLE_ENTRIES: u64 = 1 << 16;

/// An address prefix (`10.0.0.0/8`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (a, l) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not a prefix like 10.0.0.0/8"))?;
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("`{s}`: `{a}` is not an IP address"))?;
        let len: u8 = l
            .parse()
            .map_err(|_| format!("`{s}`: `{l}` is not a prefix length"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(format!("`{s}`: prefix length {len} is above {max}"));
        }
        Ok(Cidr {
            addr: mask(addr, len),
            len,
        })
    }

    pub fn contains(&self, a: IpAddr) -> bool {
        a.is_ipv4() == self.addr.is_ipv4() && mask(a, self.len) == self.addr
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// `a` with all but the first `len` bits cleared.
pub fn mask(a: IpAddr, len: u8) -> IpAddr {
    match a {
        IpAddr::V4(v) => {
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len.min(32)))
            };
            IpAddr::V4(Ipv4Addr::from(u32::from(v) & m))
        }
        IpAddr::V6(v) => {
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len.min(128)))
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(v) & m))
        }
    }
}

pub const DEFAULT_CLUSTER_CIDRS: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "fc00::/7",
];

/// The flow probe's own args.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowArgs {
    /// `enablePortInLabel` (KubeSkoop's): `local_port`/`peer_port` labels.
    pub enable_ports: bool,
    /// `interfaceName` (KubeSkoop's): an exact device name or `prefix*`.
    pub interface: Option<String>,
    /// `maxSeries`: flow series per scrape (per family).
    pub max_series: usize,
    /// `clusterCIDRs`: remote addresses kept exact.
    pub cluster_cidrs: Vec<Cidr>,
    /// `peerPrefixV4` / `peerPrefixV6`: aggregation outside `clusterCIDRs` (0: `other`).
    pub peer_prefix_v4: u8,
    pub peer_prefix_v6: u8,
    /// `mapEntries`: size of each of the kernel maps `flows4` (IPv4) and `flows` (IPv6).
    pub map_entries: u32,
    /// `cpuTableEntries`: slots of each per-CPU table in front of them (`table4`, `table6`);
    /// 0: none, every packet goes to the hashes.
    pub cpu_table_entries: u32,
}

impl Default for FlowArgs {
    fn default() -> Self {
        FlowArgs {
            enable_ports: false,
            interface: None,
            max_series: DEFAULT_MAX_SERIES,
            cluster_cidrs: DEFAULT_CLUSTER_CIDRS
                .iter()
                .filter_map(|c| Cidr::parse(c).ok())
                .collect(),
            peer_prefix_v4: 24,
            peer_prefix_v6: 48,
            map_entries: DEFAULT_MAP_ENTRIES,
            cpu_table_entries: DEFAULT_CPU_TABLE_ENTRIES,
        }
    }
}

impl FlowArgs {
    pub fn take(&mut self, a: &mut ProbeArgs) -> Result<(), String> {
        if let Some(b) = a.take_bool("enablePortInLabel")? {
            self.enable_ports = b;
        }
        if let Some(s) = a.take_str("interfaceName")? {
            let s = s.trim().to_string();
            if s.is_empty() || s == "*" {
                self.interface = None;
            } else {
                if s[..s.len() - 1].contains('*') {
                    return Err(format!(
                        "arg `interfaceName`: `{s}`: only a trailing `*` (a prefix) is supported"
                    ));
                }
                self.interface = Some(s);
            }
        }
        let num = |a: &mut ProbeArgs, key: &str, max: u64| -> Result<Option<u64>, String> {
            match a.take_scalar(key)? {
                None => Ok(None),
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(n) if n <= max => Ok(Some(n)),
                    _ => Err(format!(
                        "arg `{key}`: `{v}` is not a whole number between 0 and {max}"
                    )),
                },
            }
        };
        if let Some(n) = num(a, "maxSeries", 10_000_000)? {
            if n == 0 {
                return Err("arg `maxSeries`: must be at least 1".into());
            }
            self.max_series = n as usize;
        }
        if let Some(n) = num(a, "mapEntries", 1 << 22)? {
            if n == 0 {
                return Err("arg `mapEntries`: must be at least 1".into());
            }
            self.map_entries = n as u32;
        }
        if let Some(n) = num(a, "cpuTableEntries", MAX_CPU_TABLE_ENTRIES)? {
            if n != 0 && !n.is_power_of_two() {
                return Err(format!(
                    "arg `cpuTableEntries`: `{n}` is neither 0 nor a power of two"
                ));
            }
            self.cpu_table_entries = n as u32;
        }
        if let Some(n) = num(a, "peerPrefixV4", 32)? {
            self.peer_prefix_v4 = n as u8;
        }
        if let Some(n) = num(a, "peerPrefixV6", 128)? {
            self.peer_prefix_v6 = n as u8;
        }
        if let Some(v) = a.take_str_list("clusterCIDRs")? {
            self.cluster_cidrs = v
                .iter()
                .map(|c| Cidr::parse(c).map_err(|e| format!("arg `clusterCIDRs`: {e}")))
                .collect::<Result<_, _>>()?;
        }
        Ok(())
    }

    /// Whether device `name` is chosen by `interfaceName` (`None`: the default choice).
    pub fn interface_matches(&self, name: &str) -> Option<bool> {
        let want = self.interface.as_deref()?;
        Some(match want.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == want,
        })
    }

    /// The `peer_address` label of an address that belongs to no namespace on this node.
    pub fn aggregate(&self, a: IpAddr) -> String {
        if self.cluster_cidrs.iter().any(|c| c.contains(a)) {
            return a.to_string();
        }
        let len = if a.is_ipv4() {
            self.peer_prefix_v4
        } else {
            self.peer_prefix_v6
        };
        if len == 0 {
            return "other".into();
        }
        Cidr {
            addr: mask(a, len),
            len,
        }
        .to_string()
    }
}

/// `.rodata` values by global name.
pub type Globals = Vec<(String, Vec<u8>)>;

/// `.rodata` and map sizes for the object.
pub fn globals(args: &FlowArgs) -> (Globals, Vec<(String, u32)>) {
    let slots = args.cpu_table_entries;
    let mut sizes: Vec<(String, u32)> = FLOW_MAPS
        .iter()
        .map(|m| (m.to_string(), args.map_entries))
        .collect();
    // No table: one unused slot each (an array has at least one).
    sizes.extend(TABLES.iter().map(|(m, ..)| (m.to_string(), slots.max(1))));
    (
        vec![
            ("with_ports".into(), vec![u8::from(args.enable_ports)]),
            ("with_table".into(), vec![u8::from(slots > 0)]),
            (
                "table_mask".into(),
                slots.saturating_sub(1).to_ne_bytes().to_vec(),
            ),
            (
                "table_shift".into(),
                (64 - slots.max(2).trailing_zeros()).to_ne_bytes().to_vec(),
            ),
        ],
        sizes,
    )
}
mod devices;

pub use devices::*;

/// The kernel maps of flows: IPv4 keys (`struct flow_key4`, 16 bytes) and IPv6 keys
/// (`struct flow_key`, 28 bytes).
const FLOW_MAPS: &[&str] = &["flows4", "flows"];

/// The per-CPU tables in front of them (`struct flow_slot4`, `struct flow_slot`) with their
/// slots' key and value fields. A slot's key starts at offset 0, so its table id is at the
/// key's `netns`.
const TABLES: &[(&str, Field, Field)] = &[
    ("table4", flow_slot4::KEY, flow_slot4::VAL),
    ("table6", flow_slot::KEY, flow_slot::VAL),
];

/// A key of the kernel maps `flows4` and `flows`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowKey {
    pub netns: u32,
    pub egress: bool,
    pub family: u8,
    pub proto: u8,
    pub lport: u16,
    pub rport: u16,
    pub raddr: IpAddr,
}

/// `struct flow_key4` (16 bytes, IPv4) or `struct flow_key` (28 bytes, IPv6) → [`FlowKey`]. The
/// IPv4 key is the IPv6 key's first 16 bytes with a 4-byte address.
pub fn parse_key(k: &[u8]) -> Option<FlowKey> {
    use super::layout::{flow_key as f, flow_key4 as f4};
    let raddr = match f::FAMILY.u8(k)? {
        2 if k.len() == f4::LAYOUT.size => {
            let a = f4::RADDR.bytes(k)?;
            IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
        }
        10 if k.len() == f::LAYOUT.size => IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(f::RADDR.bytes(k)?).ok()?,
        )),
        _ => return None,
    };
    let family = f::FAMILY.u8(k)?;
    Some(FlowKey {
        netns: f::NETNS.u32(k)?,
        egress: f::DIR.u8(k)? == 1,
        family,
        proto: f::PROTO.u8(k)?,
        lport: f::LPORT.u16(k)?,
        rport: f::RPORT.u16(k)?,
        raddr,
    })
}

/// A flow series' labels (after aggregation).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    pub netns: u32,
    pub direction: &'static str,
    pub protocol: String,
    pub ports: Option<(u16, u16)>,
    pub peer_kind: String,
    pub peer_k8s_namespace: String,
    pub peer_k8s_pod: String,
    pub peer_name: String,
    pub peer_address: String,
}

/// The series a kernel key belongs to; `peer` finds the entity an address belongs to.
pub fn series_of(
    args: &FlowArgs,
    k: &FlowKey,
    peer: &dyn Fn(IpAddr) -> Option<Arc<Entity>>,
) -> SeriesKey {
    let mut s = SeriesKey {
        netns: k.netns,
        direction: if k.egress { "egress" } else { "ingress" },
        protocol: super::protocol_name(u16::from(k.family), k.proto).into_owned(),
        ports: args.enable_ports.then_some((k.lport, k.rport)),
        peer_kind: String::new(),
        peer_k8s_namespace: String::new(),
        peer_k8s_pod: String::new(),
        peer_name: String::new(),
        peer_address: String::new(),
    };
    match peer(k.raddr) {
        Some(e) => {
            s.peer_kind = e.kind.as_str().to_string();
            s.peer_k8s_namespace = e.k8s_namespace.clone();
            s.peer_k8s_pod = e.k8s_pod.clone();
            s.peer_name = e.name.clone();
            s.peer_address = k.raddr.to_string();
        }
        None => s.peer_address = args.aggregate(k.raddr),
    }
    s
}

const BYTES: &str = "netsleuth_flow_bytes_total";
const PACKETS: &str = "netsleuth_flow_packets_total";
const BYTES_HELP: &str = "IP bytes (every segment's headers included) the local entity sent (egress) or received (ingress), by protocol and remote side (flow probe: tc programs on the node's pod veths and uplinks).";
const OVERFLOWED: &str = "netsleuth_flow_series_overflowed_total";
const OVERFLOWED_HELP: &str = "Flow series summed into the peer_address=\"overflow\" series because maxSeries series were already exported: each counted at the first scrape that put it there, again only if it left and came back.";
const PACKETS_HELP: &str = "IP packets (segments) the local entity sent (egress) or received (ingress), by protocol and remote side (flow probe).";

pub fn collect(
    p: &RunningProbe,
    prefix: &mut dyn FnMut(u64) -> String,
    out: &mut Families,
    peer: &dyn Fn(IpAddr) -> Option<Arc<Entity>>,
) -> Result<(), String> {
    let Some(state) = p.flow.as_ref() else {
        return Ok(());
    };
    let args = &p.cfg.flow;
    let mut series: BTreeMap<SeriesKey, (u64, u64)> = BTreeMap::new();
    // One peer lookup per remote address.
    let mut memo: HashMap<IpAddr, Option<Arc<Entity>>> = HashMap::new();
    let peer = |a: IpAddr| memo.entry(a).or_insert_with(|| peer(a)).clone();
    let peer = std::cell::RefCell::new(peer);
    use super::layout::{flow_key, flow_val as f};
    // One CPU's `struct flow_val` of key `k`, added to its series.
    let mut add = |k: &FlowKey, v: &[u8]| {
        let e = series
            .entry(series_of(args, k, &|a| (peer.borrow_mut())(a)))
            .or_default();
        e.0 = e.0.wrapping_add(f::BYTES.u64(v).unwrap_or(0));
        e.1 = e.1.wrapping_add(f::PACKETS.u64(v).unwrap_or(0));
    };
    for name in FLOW_MAPS {
        let m = p.loaded.map(name).map_err(|e| e.to_string())?;
        let stride = m.cpu_stride().max(1);
        for (k, v) in m.entries().map_err(|e| format!("read map {name}: {e}"))? {
            let Some(k) = parse_key(&k) else { continue };
            // Per CPU: one value per possible CPU, summed.
            for v in v.chunks(stride) {
                add(&k, v);
            }
        }
    }
    // The per-CPU tables: a slot holds a key (the namespace's table id in place of its inode)
    // and its counts on that CPU; slots of no live id (free, or retired) are skipped.
    let live = state.tables.live();
    let tables = if args.cpu_table_entries > 0 {
        TABLES
    } else {
        &[]
    };
    for (name, kf, vf) in tables {
        let m = p.loaded.map(name).map_err(|e| e.to_string())?;
        let stride = m.cpu_stride().max(1);
        for (_, v) in m.entries().map_err(|e| format!("read map {name}: {e}"))? {
            for slot in v.chunks(stride) {
                let Some(netns) = flow_key::NETNS.u32(slot).and_then(|id| live.get(&id)) else {
                    continue;
                };
                let Some(mut key) = kf.bytes(slot).map(<[u8]>::to_vec) else {
                    continue;
                };
                key[flow_key::NETNS.offset..][..flow_key::NETNS.size]
                    .copy_from_slice(&netns.to_ne_bytes());
                if let (Some(k), Some(val)) = (parse_key(&key), vf.bytes(slot)) {
                    add(&k, val);
                }
            }
        }
    }
    // maxSeries: admitted first come, first served; kept while they exist.
    let mut adm = state.admission.lock().unwrap_or_else(|e| e.into_inner());
    let Admission {
        admitted,
        overflowed,
        retired,
        overflowed_total,
    } = &mut *adm;
    admitted.retain(|s| series.contains_key(s));
    let mut overflow: (u64, u64, u64) = (0, 0, 0);
    let mut now_overflowed = HashMap::new();
    let mut keep = Vec::with_capacity(series.len().min(args.max_series));
    for (s, v) in series {
        if admitted.contains(&s) || admitted.len() < args.max_series {
            admitted.insert(s.clone());
            keep.push((s, v));
        } else {
            overflow.0 += v.0;
            overflow.1 += v.1;
            overflow.2 += 1;
            if overflowed.remove(&s).is_none() {
                *overflowed_total += 1;
            }
            now_overflowed.insert(s, v);
        }
    }
    // What left the overflow series stays in it: a counter never goes down.
    for (_, (b, p)) in overflowed.drain() {
        retired.0 = retired.0.wrapping_add(b);
        retired.1 = retired.1.wrapping_add(p);
    }
    *overflowed = now_overflowed;
    overflow.0 = overflow.0.wrapping_add(retired.0);
    overflow.1 = overflow.1.wrapping_add(retired.1);
    let any_overflow = overflow.2 > 0 || *overflowed_total > 0;
    let overflowed_total = *overflowed_total;
    drop(adm);
    for (s, (bytes, packets)) in &keep {
        let pre = prefix(u64::from(s.netns));
        let (lp, rp) = s.ports.map_or((String::new(), String::new()), |(l, r)| {
            (l.to_string(), r.to_string())
        });
        let mut labels: Vec<(&str, &str)> =
            vec![("direction", s.direction), ("protocol", &s.protocol)];
        if args.enable_ports {
            labels.push(("local_port", &lp));
            labels.push(("peer_port", &rp));
        }
        labels.extend([
            ("peer_kind", s.peer_kind.as_str()),
            ("peer_k8s_namespace", &s.peer_k8s_namespace),
            ("peer_k8s_pod", &s.peer_k8s_pod),
            ("peer_name", &s.peer_name),
            ("peer_address", &s.peer_address),
        ]);
        let mut sink = out.sink(&pre);
        sink.emit(
            BYTES,
            BYTES_HELP,
            MetricKind::Counter,
            &labels,
            Value::U64(*bytes),
        );
        sink.emit(
            PACKETS,
            PACKETS_HELP,
            MetricKind::Counter,
            &labels,
            Value::U64(*packets),
        );
    }
    let mut s = out.sink("");
    if any_overflow {
        let labels = [("peer_address", "overflow")];
        s.emit(
            BYTES,
            BYTES_HELP,
            MetricKind::Counter,
            &labels,
            Value::U64(overflow.0),
        );
        s.emit(
            PACKETS,
            PACKETS_HELP,
            MetricKind::Counter,
            &labels,
            Value::U64(overflow.1),
        );
    }
    s.emit(
        OVERFLOWED,
        OVERFLOWED_HELP,
        MetricKind::Counter,
        &[],
        Value::U64(overflowed_total),
    );
    s.emit(
        "netsleuth_flow_devices",
        "Devices the flow probe is attached to.",
        MetricKind::Gauge,
        &[],
        Value::U64(state.device_names().len() as u64),
    );
    Ok(())
}

/// The `flow` probe's descriptor.
pub static PROBE: EbpfProbe = EbpfProbe {
    kind: ProbeKind::Flow,
    name: "flow",
    description: "bytes and packets per pod, direction and remote side (tc programs on pod veths and uplinks: tcx links, else cls_bpf)",
    plan: PLAN,
    netns_maps: FLOW_MAPS,
    learns_addresses: true,
    take_args: Some(|cfg, a| cfg.flow.take(a)),
    // No events, no rate limit: only its own globals.
    setup: Some(|cfg, _| {
        let (globals, max_entries) = globals(&cfg.flow);
        Ok(Setup {
            globals,
            own_globals_only: true,
            max_entries,
            ..Setup::default()
        })
    }),
    attach_per_device: Some(|cfg, loaded| {
        let method = choose_method(loaded, cfg.attach_methods.as_deref())?;
        let alt = *PLAN[0]
            .iter()
            .find(|a| a.0 == method)
            .ok_or_else(|| format!("no plan alternative {method}"))?;
        Ok((alt, Arc::new(State::new(method))))
    }),
    collect: |p, cx| {
        let snap = cx.inventory.snapshot();
        collect(p, cx.prefix, cx.out, &|a| snap.peer(a).cloned())
    },
    ..EbpfProbe::DEFAULT
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_and_aggregation() {
        let a = FlowArgs::default();
        assert_eq!(a.aggregate("10.1.2.3".parse().unwrap()), "10.1.2.3");
        assert_eq!(
            a.aggregate("203.0.113.77".parse().unwrap()),
            "203.0.113.0/24"
        );
        assert_eq!(
            a.aggregate("2001:db8:1:2::5".parse().unwrap()),
            "2001:db8:1::/48"
        );
        assert_eq!(a.aggregate("fd00::1".parse().unwrap()), "fd00::1");
        let mut b = a.clone();
        b.peer_prefix_v4 = 0;
        assert_eq!(b.aggregate("203.0.113.77".parse().unwrap()), "other");
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("10.0.0.0").is_err());
        assert!(Cidr::parse("x/8").is_err());
        assert_eq!(Cidr::parse("10.9.9.9/8").unwrap().to_string(), "10.0.0.0/8");
        assert!(!Cidr::parse("::/0")
            .unwrap()
            .contains("1.2.3.4".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("1.2.3.4".parse().unwrap()));
    }

    fn args(yaml: &str) -> Result<FlowArgs, String> {
        let v: serde_norway::Value = serde_norway::from_str(yaml).unwrap();
        let mut a = ProbeArgs::from_yaml("flow", &v)?;
        let mut f = FlowArgs::default();
        f.take(&mut a)?;
        Ok(f)
    }

    #[test]
    fn cpu_table_entries_and_globals() {
        assert_eq!(args("{}").unwrap().cpu_table_entries, 512);
        assert_eq!(args("{cpuTableEntries: 0}").unwrap().cpu_table_entries, 0);
        assert_eq!(args("{cpuTableEntries: 4}").unwrap().cpu_table_entries, 4);
        assert_eq!(
            args("{cpuTableEntries: 65536}").unwrap().cpu_table_entries,
            65536
        );
        let e = args("{cpuTableEntries: 1000}").unwrap_err();
        assert!(e.contains("`1000` is neither 0 nor a power of two"), "{e}");
        let e = args("{cpuTableEntries: 131072}").unwrap_err();
        assert!(e.contains("between 0 and 65536"), "{e}");
        let e = args("{cpuTableEntries: -1}").unwrap_err();
        assert!(e.contains("cpuTableEntries"), "{e}");
        // The tables' size and mask, and whether they are used, go to the object.
        let g = |yaml: &str| globals(&args(yaml).unwrap());
        let (vars, sizes) = g("{cpuTableEntries: 256, mapEntries: 100}");
        let var = |n: &str| vars.iter().find(|(k, _)| k == n).unwrap().1.clone();
        assert_eq!(var("with_table"), vec![1]);
        assert_eq!(var("table_mask"), 255u32.to_ne_bytes().to_vec());
        assert_eq!(var("table_shift"), 56u32.to_ne_bytes().to_vec());
        assert_eq!(
            sizes,
            [
                ("flows4", 100),
                ("flows", 100),
                ("table4", 256),
                ("table6", 256)
            ]
            .map(|(n, v)| (n.to_string(), v))
            .to_vec()
        );
        let (vars, sizes) = g("{cpuTableEntries: 0}");
        let var = |n: &str| vars.iter().find(|(k, _)| k == n).unwrap().1.clone();
        assert_eq!(var("with_table"), vec![0]);
        assert_eq!(var("table_mask"), 0u32.to_ne_bytes().to_vec());
        assert_eq!(var("table_shift"), 63u32.to_ne_bytes().to_vec());
        assert_eq!(sizes[2..], [("table4".into(), 1), ("table6".into(), 1)]);
    }

    #[test]
    fn interface_name() {
        let mut a = FlowArgs::default();
        assert_eq!(a.interface_matches("eth0"), None);
        a.interface = Some("veth*".into());
        assert_eq!(a.interface_matches("veth12"), Some(true));
        assert_eq!(a.interface_matches("eth0"), Some(false));
        a.interface = Some("eth0".into());
        assert_eq!(a.interface_matches("eth0"), Some(true));
        assert_eq!(a.interface_matches("eth01"), Some(false));
    }

    fn link(index: u32, name: &str, kind: &str, nsid: Option<i32>, ino: Option<u64>) -> Candidate {
        Candidate {
            link: rtnl::Link {
                index,
                name: name.into(),
                kind: kind.into(),
                link_netnsid: nsid,
            },
            peer_inode: ino,
        }
    }

    #[test]
    fn default_devices_are_pod_veths_and_uplinks() {
        let links = [
            link(1, "lo", "", None, None),
            link(2, "eth0", "", None, None),
            link(3, "cni0", "bridge", None, None),
            link(4, "veth1", "veth", Some(0), Some(4026532000)),
            link(5, "veth2", "veth", None, None),
            link(6, "veth3", "veth", Some(1), None),
        ];
        let d = choose_devices(&FlowArgs::default(), &links, &[1, 2], 4026531840);
        let got: Vec<(u32, u32, u32)> =
            d.iter().map(|(i, (_, x))| (*i, x.netns, x.flags)).collect();
        assert_eq!(
            got,
            vec![
                (2, 4026531840u64 as u32, 0),
                (4, 4026532000u64 as u32, DEV_FLIP)
            ]
        );
        let a = FlowArgs {
            interface: Some("cni*".into()),
            ..Default::default()
        };
        let d = choose_devices(&a, &links, &[2], 4026531840);
        assert_eq!(d.keys().copied().collect::<Vec<_>>(), vec![3]);
    }

    #[test]
    fn keys_parse() {
        let mut k = vec![0u8; 28];
        k[0..4].copy_from_slice(&7u32.to_ne_bytes());
        k[4] = 1;
        k[5] = 2;
        k[6] = 17;
        k[8..10].copy_from_slice(&5353u16.to_ne_bytes());
        k[10..12].copy_from_slice(&53u16.to_ne_bytes());
        k[12..16].copy_from_slice(&[198, 18, 0, 1]);
        // IPv4 keys are 16 bytes (`flows4`), IPv6 keys 28 (`flows`).
        let f = parse_key(&k[..16]).unwrap();
        assert_eq!(
            (f.netns, f.egress, f.family, f.proto, f.lport, f.rport),
            (7, true, 2, 17, 5353, 53)
        );
        assert_eq!(f.raddr, "198.18.0.1".parse::<IpAddr>().unwrap());
        assert!(parse_key(&k[..15]).is_none());
        assert!(parse_key(&k).is_none());
        k[5] = 10;
        k[12..28].copy_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        let f = parse_key(&k).unwrap();
        assert_eq!(
            (f.netns, f.egress, f.family, f.proto, f.lport, f.rport),
            (7, true, 10, 17, 5353, 53)
        );
        assert_eq!(f.raddr, "2001:db8::1".parse::<IpAddr>().unwrap());
        assert!(parse_key(&k[..27]).is_none());
        assert!(parse_key(&k[..16]).is_none());
        k[5] = 99;
        assert!(parse_key(&k).is_none());
    }
}
