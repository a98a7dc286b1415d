//! `metrics.rdma`: a real Soft-RoCE (`rdma_rxe`) device, made through rdma netlink (no
//! `rdma` tool needed) on a veth in a throw-away namespace, and the `rdma` probe's figures
//! compared exactly with what the kernel shows.
//!
//! The namespace gets a veth pair `nsrxa`/`nsrxb`, both up; `RDMA_NLDEV_CMD_NEWLINK` (sent
//! from inside the namespace, where the netdev is looked up) makes `nsrxe0` of type `rxe` on
//! `nsrxa`. The probe runs where the exporter does, in the initial namespace: rdma devices are
//! visible in every namespace in the kernel's default `shared` netns mode (`rdma system show
//! netns`; in `exclusive` mode a device belongs to one namespace, and the check says so).
//! Then:
//! - `nsrxa` is taken down and up again `DOWNS` times: rxe counts each port-down in its
//!   `link_downed` driver counter, so `netsleuth_rdma_port_hw_stats_total{counter=
//!   "link_downed"}` must grow by exactly `DOWNS`;
//! - every file of `/sys/class/infiniband/nsrxe0/ports/1/hw_counters` (but `lifespan`, the
//!   refresh interval) is a sample with exactly the file's value, and no sample of the device
//!   has a name the directory lacks;
//! - every resource count of `netsleuth_rdma_resources{device="nsrxe0"}` (the kernel's
//!   `RES_GET` summary) equals the number of objects the per-object dumps (`rdma resource
//!   show qp|cq|pd|mr|...`) list one by one for the device.
//!
//! Where `rdma_rxe` is not loaded (the host: no RDMA in its kernel) the check is unsupported.

use std::collections::BTreeMap;
use std::path::Path;

use super::netns::{self, TestNs};
use super::{collect, exp, measure, Check, Status};
use crate::collectors::rdma;

const DEV: &str = "nsrxe0";
const VETH: &str = "nsrxa";
const PEER: &str = "nsrxb";
/// Port-down events induced.
const DOWNS: u64 = 3;
const LINK_DOWNED: &[(&str, &str)] = &[("device", DEV), ("port", "1"), ("counter", "link_downed")];

pub fn checks(out: &mut Vec<Check>) {
    out.push(match check() {
        Ok(d) => Check::new("metrics.rdma", Status::Pass, "", d),
        Err((s, d)) => Check::new("metrics.rdma", s, "", d),
    });
}

fn fail(d: impl Into<String>) -> (Status, String) {
    (Status::Fail, d.into())
}

fn check() -> Result<String, (Status, String)> {
    if !Path::new("/sys/module/rdma_rxe").exists() {
        return Err((
            Status::Unsupported,
            "the rdma_rxe module (Soft-RoCE) is not loaded".into(),
        ));
    }
    let shared = rdma::netns_shared().map_err(|e| fail(format!("RDMA_NLDEV_CMD_SYS_GET: {e}")))?;
    if shared == Some(false) {
        return Err((
            Status::Unsupported,
            "rdma netns mode is exclusive: a device made in a test namespace is not visible \
             where the exporter runs"
                .into(),
        ));
    }
    let ns = TestNs::new().map_err(|e| fail(format!("creating a namespace: {e}")))?;
    ns.run(|| -> Result<(), String> {
        netns::disable_ipv6();
        netns::veth_pair(VETH, 0, PEER, 0, None).map_err(|e| format!("veth {VETH}/{PEER}: {e}"))?;
        for l in [VETH, PEER] {
            netns::link_set_up(l, true).map_err(|e| format!("{l} up: {e}"))?;
        }
        rdma::new_link(DEV, "rxe", VETH)
            .map_err(|e| format!("RDMA_NLDEV_CMD_NEWLINK {DEV} type rxe netdev {VETH}: {e}"))
    })
    .map_err(|e| fail(format!("entering the namespace: {e}")))?
    .map_err(fail)?;
    let r = measured(&ns);
    // Deleting the device; the namespace (and the veth) goes with `ns`.
    if let Some(i) = index() {
        let _ = rdma::del_link(i);
    }
    r
}

fn index() -> Option<u32> {
    rdma::dump_resources()
        .ok()?
        .into_iter()
        .find(|r| r.device == DEV)
        .map(|r| r.index)
}

fn measured(ns: &TestNs) -> Result<String, (Status, String)> {
    // The port comes up asynchronously after NEWLINK: let it settle before the first sample.
    let port = Path::new("/sys/class/infiniband").join(DEV).join("ports/1");
    let t0 = std::time::Instant::now();
    while !read_state(&port).contains("ACTIVE") {
        if t0.elapsed() > std::time::Duration::from_secs(10) {
            return Err(fail(format!(
                "{DEV} port 1 not ACTIVE within 10 s: {}",
                read_state(&port)
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let flap = || -> Result<String, String> {
        ns.run(|| -> Result<(), String> {
            for _ in 0..DOWNS {
                netns::link_set_up(VETH, false).map_err(|e| format!("{VETH} down: {e}"))?;
                netns::link_set_up(VETH, true).map_err(|e| format!("{VETH} up: {e}"))?;
            }
            Ok(())
        })
        .map_err(|e| e.to_string())??;
        // Let the last port-up land before the second sample.
        std::thread::sleep(std::time::Duration::from_millis(300));
        Ok(format!("{VETH} down and up {DOWNS} times"))
    };
    let counted = measure(
        &["rdma"],
        0,
        flap,
        &[exp(
            "netsleuth_rdma_port_hw_stats_total",
            LINK_DOWNED,
            DOWNS,
        )],
    )
    .map_err(fail)?;
    let cap = collect(&["rdma"], 0).map_err(fail)?;
    let mut bad = Vec::new();
    // Every hw_counters file, exactly.
    let mut files = BTreeMap::new();
    let dir = port.join("hw_counters");
    for e in std::fs::read_dir(&dir).map_err(|e| fail(format!("{}: {e}", dir.display())))? {
        let e = e.map_err(|e| fail(e.to_string()))?;
        let name = e.file_name().to_string_lossy().to_string();
        if name == "lifespan" {
            continue;
        }
        let v = std::fs::read_to_string(e.path())
            .map_err(|er| fail(format!("{}: {er}", e.path().display())))?;
        let v: u64 = v
            .trim()
            .parse()
            .map_err(|_| fail(format!("{}: `{}`", e.path().display(), v.trim())))?;
        files.insert(name, v);
    }
    for (name, v) in &files {
        let want: Vec<(&str, &str)> = vec![("device", DEV), ("port", "1"), ("counter", name)];
        match cap.get("netsleuth_rdma_port_hw_stats_total", &want) {
            Some(g) if g == *v as f64 => {}
            g => bad.push(format!("hw_counters/{name} = {v}, exported {g:?}")),
        }
    }
    let exported: Vec<&str> = cap
        .0
        .iter()
        .filter(|(n, l, _)| {
            n == "netsleuth_rdma_port_hw_stats_total"
                && l.iter().any(|(k, v)| k == "device" && v == DEV)
        })
        .filter_map(|(_, l, _)| {
            l.iter()
                .find(|(k, _)| k == "counter")
                .map(|(_, v)| v.as_str())
        })
        .collect();
    for n in &exported {
        if !files.contains_key(*n) {
            bad.push(format!("exported counter {n} is no hw_counters file"));
        }
    }
    if files.is_empty() || exported.len() != files.len() {
        bad.push(format!(
            "{} hw_counters files, {} exported samples",
            files.len(),
            exported.len()
        ));
    }
    // Resource counts: the summary the probe exports vs the objects listed one by one.
    let idx = index().ok_or_else(|| fail(format!("{DEV} not in the RES_GET dump")))?;
    let objects = rdma::count_objects(idx).map_err(|e| fail(format!("per-object dumps: {e}")))?;
    let mut res = Vec::new();
    for (name, n) in &objects {
        let want: Vec<(&str, &str)> = vec![("device", DEV), ("resource", name)];
        match cap.get("netsleuth_rdma_resources", &want) {
            Some(g) if g == *n as f64 => res.push(format!("{name}={n}")),
            g => bad.push(format!("{name}: {n} objects listed, exported {g:?}")),
        }
    }
    if objects.is_empty() {
        bad.push("no per-object dump answered".into());
    }
    if !bad.is_empty() {
        return Err(fail(bad.join("; ")));
    }
    let nz: Vec<String> = files
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    Ok(format!(
        "{counted}; {} hw_counters of {DEV} port 1 exported exactly (non-zero: {}); resources \
         as listed one by one: {}",
        files.len(),
        nz.join(" "),
        res.join(" ")
    ))
}

fn read_state(port: &Path) -> String {
    std::fs::read_to_string(port.join("state"))
        .unwrap_or_default()
        .trim()
        .to_string()
}
