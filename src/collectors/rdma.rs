//! The `rdma` probe (node level): every counter each RDMA device lists, and its resource
//! counts.
//!
//! - `/sys/class/infiniband/<device>/ports/<port>/counters/<name>` (the IB PMA counters) and
//!   `.../hw_counters/<name>` (driver counters: mlx5's `out_of_buffer`, rxe's `sent_pkts`, ...),
//!   plus device-level `/sys/class/infiniband/<device>/hw_counters/<name>`: whatever files the
//!   driver creates, no table of names (KubeSkoop kept fixed lists for mlx5 and erdma and
//!   exported nothing else). One family per directory kind with the file name as the `counter`
//!   label: `netsleuth_rdma_port_stats_total`, `netsleuth_rdma_port_hw_stats_total`,
//!   `netsleuth_rdma_device_hw_stats_total`. Values are exported as the driver prints them
//!   (`port_xmit_data` / `port_rcv_data` count 4-byte words, per the IB specification).
//!   `hw_counters/lifespan` is the refresh interval of the others (ms), not a counter, and is
//!   left out; a counter that reads `N/A` (a port without PMA) is left out.
//! - rdma netlink (`NETLINK_RDMA`, `RDMA_NLDEV_CMD_RES_GET` dump): per device the number of
//!   objects of each resource type (`pd`, `cq`, `qp`, `cm_id`, `mr`, `ctx`, `srq`: whatever
//!   the kernel lists) as `netsleuth_rdma_resources{device,resource}`.
//!
//! On a node without RDMA devices (`/sys/class/infiniband` absent or empty) the probe exports
//! nothing.

use std::path::{Path, PathBuf};

use netlink_packet_core::{parse_string, NlasIterator};

use super::netlink::{DumpSocket, NlError, RawRequest};
use super::{CollectError, Collector, NetnsCtx, ProbeArgs, ProbeSpec, Scope};
use crate::model::{MetricKind, Sink, Value};

/// Where the devices are.
pub const SYSFS_CLASS: &str = "/sys/class/infiniband";

/// One counter file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CounterFile {
    pub device: String,
    /// Empty for device-level `hw_counters`.
    pub port: String,
    /// `counters` or `hw_counters`.
    pub dir: &'static str,
    pub name: String,
    pub value: u64,
}

/// A counter file's content: a decimal number and a newline. `Ok(None)` for `N/A ...`.
pub fn parse_counter(data: &[u8]) -> Result<Option<u64>, String> {
    let s = std::str::from_utf8(data).map_err(|_| "not UTF-8".to_string())?;
    let s = s.trim();
    if s.starts_with("N/A") {
        return Ok(None);
    }
    s.parse::<u64>().map(Some).map_err(|_| {
        format!(
            "`{}` is not a counter",
            s.chars().take(40).collect::<String>()
        )
    })
}

fn sorted_dir(p: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(p)?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
        .collect();
    v.sort();
    Ok(v)
}

/// Read every counter under `class` (a `/sys/class/infiniband`). Files that cannot be read or
/// parsed are reported in the second vector (path: why); the rest are returned.
pub fn read_counters(class: &Path) -> (Vec<CounterFile>, Vec<String>) {
    let mut out = Vec::new();
    let mut errs = Vec::new();
    let Ok(devices) = sorted_dir(class) else {
        return (out, errs);
    };
    let mut read_dir = |device: &str, port: &str, dir: &'static str, path: &Path| {
        let Ok(files) = sorted_dir(path) else {
            return;
        };
        for (name, p) in files {
            if dir == "hw_counters" && name == "lifespan" {
                continue;
            }
            match std::fs::read(&p)
                .map_err(|e| e.to_string())
                .and_then(|d| parse_counter(&d))
            {
                Ok(Some(value)) => out.push(CounterFile {
                    device: device.to_string(),
                    port: port.to_string(),
                    dir,
                    name,
                    value,
                }),
                Ok(None) => {}
                Err(e) => errs.push(format!("{}: {e}", p.display())),
            }
        }
    };
    for (device, dpath) in devices {
        read_dir(&device, "", "hw_counters", &dpath.join("hw_counters"));
        let Ok(ports) = sorted_dir(&dpath.join("ports")) else {
            continue;
        };
        for (port, ppath) in ports {
            for dir in ["counters", "hw_counters"] {
                read_dir(&device, &port, dir, &ppath.join(dir));
            }
        }
    }
    (out, errs)
}

// rdma netlink (include/uapi/rdma/rdma_netlink.h).
const RDMA_NL_NLDEV: u16 = 5;
const RDMA_NLDEV_CMD_RES_GET: u16 = 9;
const RDMA_NLDEV_ATTR_DEV_INDEX: u16 = 1;
const RDMA_NLDEV_ATTR_DEV_NAME: u16 = 2;
const RDMA_NLDEV_ATTR_RES_SUMMARY: u16 = 15;
const RDMA_NLDEV_ATTR_RES_SUMMARY_ENTRY: u16 = 16;
const RDMA_NLDEV_ATTR_RES_SUMMARY_ENTRY_NAME: u16 = 17;
const RDMA_NLDEV_ATTR_RES_SUMMARY_ENTRY_CURR: u16 = 18;
/// `NETLINK_RDMA`.
const NETLINK_RDMA: isize = 20;

/// `RDMA_NL_GET_TYPE(RDMA_NL_NLDEV, RDMA_NLDEV_CMD_RES_GET)`.
pub const RES_GET_TYPE: u16 = (RDMA_NL_NLDEV << 10) | RDMA_NLDEV_CMD_RES_GET;

/// One device's resource summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    pub index: u32,
    pub device: String,
    /// (resource name, objects in use).
    pub counts: Vec<(String, u64)>,
}

/// The payload of one `RDMA_NLDEV_CMD_RES_GET` reply message (attributes only; rdma netlink
/// has no family header).
pub fn parse_res_msg(ty: u16, payload: &[u8]) -> Result<Resources, String> {
    if ty != RES_GET_TYPE {
        return Err(format!("expected message type {RES_GET_TYPE} (RES_GET)"));
    }
    let (mut index, mut device, mut counts) = (None, None, Vec::new());
    for nla in NlasIterator::new(payload) {
        let nla = nla.map_err(|e| e.to_string())?;
        let v = nla.value();
        match nla.kind() {
            RDMA_NLDEV_ATTR_DEV_INDEX => {
                index = Some(u32::from_ne_bytes(
                    v.get(..4).ok_or("short DEV_INDEX")?.try_into().expect("4"),
                ))
            }
            RDMA_NLDEV_ATTR_DEV_NAME => {
                device = Some(parse_string(v).map_err(|e| format!("DEV_NAME: {e}"))?)
            }
            RDMA_NLDEV_ATTR_RES_SUMMARY => {
                for e in NlasIterator::new(v) {
                    let e = e.map_err(|e| format!("RES_SUMMARY: {e}"))?;
                    if e.kind() != RDMA_NLDEV_ATTR_RES_SUMMARY_ENTRY {
                        continue;
                    }
                    let (mut name, mut curr) = (None, None);
                    for a in NlasIterator::new(e.value()) {
                        let a = a.map_err(|e| format!("RES_SUMMARY_ENTRY: {e}"))?;
                        match a.kind() {
                            RDMA_NLDEV_ATTR_RES_SUMMARY_ENTRY_NAME => {
                                name = Some(parse_string(a.value()).map_err(|e| e.to_string())?)
                            }
                            RDMA_NLDEV_ATTR_RES_SUMMARY_ENTRY_CURR => {
                                curr = Some(u64::from_ne_bytes(
                                    a.value()
                                        .get(..8)
                                        .ok_or("short RES_SUMMARY_ENTRY_CURR")?
                                        .try_into()
                                        .expect("8"),
                                ))
                            }
                            _ => {}
                        }
                    }
                    match (name, curr) {
                        (Some(n), Some(c)) => counts.push((n, c)),
                        _ => return Err("RES_SUMMARY_ENTRY without name or count".into()),
                    }
                }
            }
            _ => {}
        }
    }
    Ok(Resources {
        index: index.ok_or("no RDMA_NLDEV_ATTR_DEV_INDEX")?,
        device: device.ok_or("no RDMA_NLDEV_ATTR_DEV_NAME")?,
        counts,
    })
}

/// Dump the resource summaries of every RDMA device.
pub fn dump_resources() -> Result<Vec<Resources>, NlError> {
    let mut sock = DumpSocket::open(NETLINK_RDMA)?;
    let mut out = Vec::new();
    sock.dump(
        RawRequest {
            message_type: RES_GET_TYPE,
            payload: Vec::new(),
        },
        &mut |ty, p| {
            out.push(parse_res_msg(ty, p)?);
            Ok(())
        },
    )?;
    Ok(out)
}

// Device management and per-object dumps (the self-test's Soft-RoCE check).
const RDMA_NLDEV_CMD_NEWLINK: u16 = 3;
const RDMA_NLDEV_CMD_DELLINK: u16 = 4;
const RDMA_NLDEV_CMD_SYS_GET: u16 = 6;
const RDMA_NLDEV_ATTR_NDEV_NAME: u16 = 51;
const RDMA_NLDEV_ATTR_LINK_TYPE: u16 = 65;
const RDMA_NLDEV_SYS_ATTR_NETNS_MODE: u16 = 66;

/// The per-object dumps: (summary name, command, table attribute, entry attribute).
pub const OBJECT_DUMPS: [(&str, u16, u16, u16); 7] = [
    ("qp", 10, 19, 20),
    ("cm_id", 11, 30, 31),
    ("cq", 12, 35, 36),
    ("mr", 13, 40, 41),
    ("pd", 14, 46, 47),
    ("ctx", 22, 86, 87),
    ("srq", 23, 88, 89),
];

fn nldev(cmd: u16) -> u16 {
    (RDMA_NL_NLDEV << 10) | cmd
}

fn strz(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// `rdma link add NAME type TYPE netdev NDEV`: the netdev is looked up in the calling
/// thread's network namespace.
pub fn new_link(name: &str, link_type: &str, ndev: &str) -> Result<(), NlError> {
    let mut payload = Vec::new();
    super::netlink::put_attr(&mut payload, RDMA_NLDEV_ATTR_DEV_NAME, &strz(name));
    super::netlink::put_attr(&mut payload, RDMA_NLDEV_ATTR_LINK_TYPE, &strz(link_type));
    super::netlink::put_attr(&mut payload, RDMA_NLDEV_ATTR_NDEV_NAME, &strz(ndev));
    DumpSocket::open(NETLINK_RDMA)?.ack(
        RawRequest {
            message_type: nldev(RDMA_NLDEV_CMD_NEWLINK),
            payload,
        },
        0,
    )
}

/// `rdma link delete` of the device with index `index`.
pub fn del_link(index: u32) -> Result<(), NlError> {
    let mut payload = Vec::new();
    super::netlink::put_attr(
        &mut payload,
        RDMA_NLDEV_ATTR_DEV_INDEX,
        &index.to_ne_bytes(),
    );
    DumpSocket::open(NETLINK_RDMA)?.ack(
        RawRequest {
            message_type: nldev(RDMA_NLDEV_CMD_DELLINK),
            payload,
        },
        0,
    )
}

/// `rdma system show netns`: `Some(true)` shared (every device in every namespace, the
/// default), `Some(false)` exclusive; `None` when the kernel does not say.
pub fn netns_shared() -> Result<Option<bool>, NlError> {
    let mut mode = None;
    DumpSocket::open(NETLINK_RDMA)?.get(
        RawRequest {
            message_type: nldev(RDMA_NLDEV_CMD_SYS_GET),
            payload: Vec::new(),
        },
        &mut |_, p| {
            for nla in NlasIterator::new(p) {
                let nla = nla.map_err(|e| e.to_string())?;
                if nla.kind() == RDMA_NLDEV_SYS_ATTR_NETNS_MODE {
                    mode = nla.value().first().map(|m| *m != 0);
                }
            }
            Ok(())
        },
    )?;
    Ok(mode)
}

/// The number of entries in a per-object dump reply (`table` nests `entry` attributes).
pub fn count_entries(payload: &[u8], table: u16, entry: u16) -> Result<u64, String> {
    let mut n = 0;
    for nla in NlasIterator::new(payload) {
        let nla = nla.map_err(|e| e.to_string())?;
        if nla.kind() == table {
            for e in NlasIterator::new(nla.value()) {
                if e.map_err(|e| e.to_string())?.kind() == entry {
                    n += 1;
                }
            }
        }
    }
    Ok(n)
}

/// Objects of each type on device `index`, counted one by one from the per-object dumps
/// (`rdma resource show qp` ...); a type the kernel has no dump for is left out.
pub fn count_objects(index: u32) -> Result<Vec<(&'static str, u64)>, NlError> {
    let mut out = Vec::new();
    for (name, cmd, table, entry) in OBJECT_DUMPS {
        let mut payload = Vec::new();
        super::netlink::put_attr(
            &mut payload,
            RDMA_NLDEV_ATTR_DEV_INDEX,
            &index.to_ne_bytes(),
        );
        let mut n = 0;
        let r = DumpSocket::open(NETLINK_RDMA)?.dump(
            RawRequest {
                message_type: nldev(cmd),
                payload,
            },
            &mut |_, p| {
                n += count_entries(p, table, entry)?;
                Ok(())
            },
        );
        match r {
            Ok(()) => out.push((name, n)),
            Err(NlError::Errno(e)) if e == libc::EOPNOTSUPP || e == libc::EINVAL => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Emit the counters and resource counts.
pub fn emit(counters: &[CounterFile], resources: &[Resources], out: &mut dyn Sink) {
    for c in counters {
        let (name, help) = match (c.port.is_empty(), c.dir) {
            (true, _) => (
                "netsleuth_rdma_device_hw_stats_total",
                "Device-level driver counter of the RDMA device (/sys/class/infiniband/<device>/hw_counters/<counter>).",
            ),
            (false, "counters") => (
                "netsleuth_rdma_port_stats_total",
                "Port counter of the RDMA device (/sys/class/infiniband/<device>/ports/<port>/counters/<counter>; *_data count 4-byte words).",
            ),
            (false, _) => (
                "netsleuth_rdma_port_hw_stats_total",
                "Driver counter of the RDMA port (/sys/class/infiniband/<device>/ports/<port>/hw_counters/<counter>).",
            ),
        };
        let labels: &[(&str, &str)] = if c.port.is_empty() {
            &[("device", &c.device), ("counter", &c.name)]
        } else {
            &[
                ("device", &c.device),
                ("port", &c.port),
                ("counter", &c.name),
            ]
        };
        out.emit(name, help, MetricKind::Counter, labels, Value::U64(c.value));
    }
    for r in resources {
        for (res, n) in &r.counts {
            out.emit(
                "netsleuth_rdma_resources",
                "Objects of each resource type in use on the RDMA device (rdma netlink RES_GET).",
                MetricKind::Gauge,
                &[("device", &r.device), ("resource", res)],
                Value::U64(*n),
            );
        }
    }
}

struct RdmaProbe {
    class: PathBuf,
    netlink: bool,
}

impl Collector for RdmaProbe {
    fn name(&self) -> &'static str {
        "rdma"
    }

    fn scope(&self) -> Scope {
        Scope::Node
    }

    fn collect(&self, _ctx: &NetnsCtx, out: &mut dyn Sink) -> Result<(), CollectError> {
        if !self.class.exists() {
            return Err(CollectError::NotAvailable(format!(
                "{} does not exist (no RDMA devices)",
                self.class.display()
            )));
        }
        let (counters, errs) = read_counters(&self.class);
        let mut problems = errs;
        let mut resources = Vec::new();
        if self.netlink && !counters.is_empty() {
            match dump_resources() {
                Ok(r) => resources = r,
                // Kernels without rdma netlink or ib_core's nldev: counters only.
                Err(NlError::Errno(e)) if e == libc::EPROTONOSUPPORT || e == libc::EOPNOTSUPP => {}
                Err(NlError::Io { errno, .. }) if errno == libc::EPROTONOSUPPORT => {}
                Err(e) => problems.push(format!("rdma netlink RES_GET dump: {e}")),
            }
        }
        emit(&counters, &resources, out);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(CollectError::Failed(problems.join("; ")))
        }
    }
}

fn build(args: &mut ProbeArgs) -> Result<Box<dyn Collector>, String> {
    let netlink = args.take_bool("netlink")?.unwrap_or(true);
    std::mem::take(args).finish()?;
    Ok(Box::new(RdmaProbe {
        class: PathBuf::from(SYSFS_CLASS),
        netlink,
    }))
}

fn available() -> Result<(), String> {
    match std::fs::read_dir(SYSFS_CLASS).map(|mut d| d.next().is_some()) {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!("{SYSFS_CLASS} has no RDMA devices")),
        Err(_) => Err(format!("{SYSFS_CLASS} does not exist (no RDMA devices)")),
    }
}

pub fn specs() -> Vec<ProbeSpec> {
    vec![ProbeSpec::new(
        "rdma",
        "RDMA devices, node level: every port and driver counter in /sys/class/infiniband and the resource counts from rdma netlink; arg netlink",
        None,
        build,
        available,
    ).off_by_default()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/sysfs")
            .join(rel)
    }

    fn get(v: &[CounterFile], dev: &str, port: &str, dir: &str, name: &str) -> Option<u64> {
        v.iter()
            .find(|c| c.device == dev && c.port == port && c.dir == dir && c.name == name)
            .map(|c| c.value)
    }

    #[test]
    fn counter_files() {
        assert_eq!(parse_counter(b"0\n"), Ok(Some(0)));
        assert_eq!(parse_counter(b"18446744073709551615\n"), Ok(Some(u64::MAX)));
        assert_eq!(parse_counter(b"N/A (no PMA)\n"), Ok(None));
        for bad in [
            &b""[..],
            b"-1\n",
            b"12 34\n",
            b"\xff\n",
            b"18446744073709551616",
        ] {
            assert!(parse_counter(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mlx5_tree_every_counter() {
        let (v, errs) = read_counters(&fixture("mlx5/class/infiniband"));
        assert_eq!(errs, Vec::<String>::new());
        // mlx5_0 port 1: 21 PMA counters, 27 hw counters (lifespan left out); mlx5_1 the same
        // names; device-level hw_counters of efa_0: 2.
        let n = |dev: &str, port: &str, dir: &str| {
            v.iter()
                .filter(|c| c.device == dev && c.port == port && c.dir == dir)
                .count()
        };
        assert_eq!(n("mlx5_0", "1", "counters"), 21);
        assert_eq!(n("mlx5_0", "1", "hw_counters"), 27);
        assert_eq!(n("mlx5_1", "1", "counters"), 21);
        assert_eq!(n("efa_0", "", "hw_counters"), 2);
        assert_eq!(v.len(), 2 * (21 + 27) + 2);
        assert_eq!(
            get(&v, "mlx5_0", "1", "counters", "port_xmit_data"),
            Some(4162942591)
        );
        assert_eq!(
            get(&v, "mlx5_0", "1", "counters", "port_rcv_packets"),
            Some(61266312)
        );
        assert_eq!(
            get(&v, "mlx5_0", "1", "hw_counters", "out_of_buffer"),
            Some(1377)
        );
        assert_eq!(
            get(&v, "mlx5_0", "1", "hw_counters", "np_cnp_sent"),
            Some(88)
        );
        assert_eq!(get(&v, "mlx5_0", "1", "hw_counters", "lifespan"), None);
        assert_eq!(
            get(&v, "efa_0", "", "hw_counters", "alloc_ucontext_err"),
            Some(5)
        );
        assert_eq!(get(&v, "mlx5_1", "1", "counters", "symbol_error"), Some(3));
    }

    #[test]
    fn rxe_tree_and_bad_files() {
        let (v, errs) = read_counters(&fixture("rxe/class/infiniband"));
        // rxe0 has no PMA (`counters/port_rcv_data` reads N/A) and 15 driver counters; one
        // file of rxe1 is garbage: named, the rest still read.
        assert_eq!(get(&v, "rxe0", "1", "hw_counters", "sent_pkts"), Some(1204));
        assert_eq!(get(&v, "rxe0", "1", "hw_counters", "rcvd_pkts"), Some(1190));
        assert_eq!(get(&v, "rxe0", "1", "counters", "port_rcv_data"), None);
        assert_eq!(
            v.iter()
                .filter(|c| c.device == "rxe0" && c.dir == "hw_counters")
                .count(),
            15
        );
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].ends_with("rxe1/ports/1/hw_counters/send_err: `garbage` is not a counter"),
            "{errs:?}"
        );
        assert_eq!(get(&v, "rxe1", "1", "hw_counters", "sent_pkts"), Some(7));
        // A missing class directory: nothing, no error.
        assert_eq!(
            read_counters(Path::new("/nonexistent/infiniband")),
            (vec![], vec![])
        );
    }

    /// A RES_GET reply as the kernel builds it (fill_nldev_handle + fill_res_info), with the
    /// 64-bit pad attributes nla_put_u64_64bit inserts.
    fn res_msg(index: u32, name: &str, counts: &[(&str, u64)]) -> Vec<u8> {
        use crate::collectors::netlink::put_attr;
        let mut p = Vec::new();
        put_attr(&mut p, RDMA_NLDEV_ATTR_DEV_INDEX, &index.to_ne_bytes());
        let mut n = name.as_bytes().to_vec();
        n.push(0);
        put_attr(&mut p, RDMA_NLDEV_ATTR_DEV_NAME, &n);
        let mut table = Vec::new();
        for (res, c) in counts {
            let mut e = Vec::new();
            let mut r = res.as_bytes().to_vec();
            r.push(0);
            put_attr(&mut e, RDMA_NLDEV_ATTR_RES_SUMMARY_ENTRY_NAME, &r);
            put_attr(&mut e, 0, &[]); // RDMA_NLDEV_ATTR_PAD
            put_attr(
                &mut e,
                RDMA_NLDEV_ATTR_RES_SUMMARY_ENTRY_CURR,
                &c.to_ne_bytes(),
            );
            put_attr(&mut table, RDMA_NLDEV_ATTR_RES_SUMMARY_ENTRY, &e);
        }
        put_attr(&mut p, RDMA_NLDEV_ATTR_RES_SUMMARY, &table);
        p
    }

    #[test]
    fn res_get_messages() {
        let counts = [
            ("pd", 3),
            ("cq", 12),
            ("qp", 9),
            ("cm_id", 2),
            ("mr", 1 << 33),
            ("ctx", 1),
            ("srq", 0),
        ];
        let m = res_msg(4, "mlx5_0", &counts);
        let r = parse_res_msg(RES_GET_TYPE, &m).unwrap();
        assert_eq!(r.index, 4);
        assert_eq!(r.device, "mlx5_0");
        assert_eq!(
            r.counts,
            counts
                .iter()
                .map(|(n, c)| (n.to_string(), *c))
                .collect::<Vec<_>>()
        );
        assert_eq!(RES_GET_TYPE, 5129);
        assert!(parse_res_msg(RES_GET_TYPE + 1, &m)
            .unwrap_err()
            .contains("expected message type"));
        for cut in 0..m.len() {
            let _ = parse_res_msg(RES_GET_TYPE, &m[..cut]);
        }
        let e = parse_res_msg(RES_GET_TYPE, &res_msg(1, "x", &[])[..8]).unwrap_err();
        assert!(
            e.contains("DEV_NAME") || e.contains("no RDMA_NLDEV_ATTR"),
            "{e}"
        );
        // Framed as a dump (NLMSG_DONE at the end) through the shared walker.
        let mut dump = Vec::new();
        for (i, (name, c)) in [("mlx5_0", 3u64), ("rxe0", 0)].iter().enumerate() {
            let p = res_msg(i as u32, name, &[("qp", *c)]);
            dump.extend_from_slice(&((16 + p.len()) as u32).to_ne_bytes());
            dump.extend_from_slice(&RES_GET_TYPE.to_ne_bytes());
            dump.extend_from_slice(&2u16.to_ne_bytes());
            dump.extend_from_slice(&[0; 8]);
            dump.extend(p);
        }
        dump.extend_from_slice(&20u32.to_ne_bytes());
        dump.extend_from_slice(&3u16.to_ne_bytes());
        dump.extend_from_slice(&[0; 14]);
        let mut got = Vec::new();
        let done = crate::collectors::netlink::walk(&dump, None, &mut |ty, p| {
            got.push(parse_res_msg(ty, p)?);
            Ok(())
        });
        assert_eq!(done, Ok(true));
        assert_eq!(got[1].device, "rxe0");
        assert_eq!(got[0].counts, vec![("qp".to_string(), 3)]);
    }

    #[test]
    fn rendering() {
        let (v, _) = read_counters(&fixture("mlx5/class/infiniband"));
        let r = parse_res_msg(RES_GET_TYPE, &res_msg(0, "mlx5_0", &[("qp", 9)])).unwrap();
        let mut f = crate::model::Families::new();
        emit(&v, &[r], &mut f.sink(""));
        let mut text = String::new();
        f.render(&mut text);
        crate::collectors::testutil::lint_rendering(&text);
        for want in [
            "netsleuth_rdma_port_stats_total{device=\"mlx5_0\",port=\"1\",counter=\"port_xmit_data\"} 4162942591",
            "netsleuth_rdma_port_hw_stats_total{device=\"mlx5_0\",port=\"1\",counter=\"out_of_buffer\"} 1377",
            "netsleuth_rdma_device_hw_stats_total{device=\"efa_0\",counter=\"alloc_pd_err\"} 2",
            "netsleuth_rdma_resources{device=\"mlx5_0\",resource=\"qp\"} 9",
        ] {
            assert!(text.lines().any(|l| l == want), "{want} not in\n{text}");
        }
    }
}
