//! The `biolatency` eBPF probe end to end (root): the real binary, real block I/O on loop
//! devices backed by files (`losetup --direct-io=on`), `O_DIRECT` reads and writes by `dd`
//! inside a test network namespace. Counts are compared with the kernel's own per-device
//! accounting (`/sys/block/<dev>/stat`), attribution with the namespace and pid of the `dd`
//! the test ran, and the slow case is made for real: blk-throttle (`blkio.throttle.*` in
//! cgroup v1, `io.max` in v2) holds the requests a stacked loop device sends to its backing
//! loop device, so the upper device's requests take the throttle's interval.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{events_of, wait_for, write_config, Exporter, Netns};

/// One test at a time: they share the block tracepoints and the loop devices' numbers.
static LOCK: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn tmp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(common::unique("nslbio"));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A loop device (`losetup --direct-io=on`) over `backing` (a file or a block device),
/// detached on drop.
struct Loop {
    dev: String,
}

impl Loop {
    fn new(backing: &Path) -> Loop {
        let out = common::run(
            "losetup",
            &[
                "--find",
                "--show",
                "--direct-io=on",
                backing.to_str().unwrap(),
            ],
        );
        Loop {
            dev: out.trim().to_string(),
        }
    }

    /// `loop3`.
    fn name(&self) -> &str {
        self.dev.trim_start_matches("/dev/")
    }

    /// `7:3`.
    fn major_minor(&self) -> String {
        std::fs::read_to_string(format!("/sys/block/{}/dev", self.name()))
            .unwrap()
            .trim()
            .to_string()
    }

    /// The kernel's accounting of the device (`/sys/block/<dev>/stat`).
    fn stat(&self) -> DiskStat {
        let s = std::fs::read_to_string(format!("/sys/block/{}/stat", self.name())).unwrap();
        let f: Vec<u64> = s.split_whitespace().map(|x| x.parse().unwrap()).collect();
        DiskStat {
            reads: f[0],
            read_sectors: f[2],
            read_ms: f[3],
            writes: f[4],
            write_sectors: f[6],
            write_ms: f[7],
        }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

#[derive(Clone, Copy, Debug)]
struct DiskStat {
    reads: u64,
    read_sectors: u64,
    read_ms: u64,
    writes: u64,
    write_sectors: u64,
    write_ms: u64,
}

/// A backing file of `mb` MiB in `dir`.
fn backing_file(dir: &Path, mb: u64) -> PathBuf {
    let p = dir.join("backing.img");
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(mb << 20).unwrap();
    p
}

/// `dd` with `args` run inside `ns` (with `cgroup_procs`, in that cgroup first: `ip netns exec`
/// mounts a sysfs of its own, without the cgroup tree); returns the pid of the dd (`sh -c exec`
/// and `ip netns exec` replace themselves, so it is the pid of the spawned child).
fn dd_in(ns: &Netns, cgroup_procs: Option<&Path>, args: &[String]) -> u32 {
    let mut cmd = match cgroup_procs {
        Some(p) => {
            let mut c = Command::new("sh");
            c.args([
                "-c",
                &format!("echo $$ > {} && exec ip \"$@\"", p.display()),
                "ip",
            ]);
            c
        }
        None => Command::new("ip"),
    };
    cmd.args(["netns", "exec", &ns.name, "dd"]);
    cmd.args(args).arg("status=none");
    let child = cmd.spawn().unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "dd {args:?}: {:?}", out.status);
    pid
}

/// The exporter with biolatency (and netdev with every namespace's `lo`, whose series show when
/// the inventory knows `ns`: events are attributed through it).
fn start(events: &Path, event_args: &str, ns: &Netns) -> Exporter {
    let cfg = write_config(&format!(
        r#"
metrics:
  probes: [biolatency, {{name: netdev, args: {{loopback: all}}}}]
event:
  probes: [{{name: biolatency, args: {event_args}}}]
  sinks: [{{name: file, args: {{path: {}}}}}]
"#,
        events.display()
    ));
    let e = Exporter::start(&[&format!("--config.file={}", cfg.display())]);
    wait_for("biolatency attached", Duration::from_secs(10), || {
        let s = e.scrape();
        (s.sum("netsleuth_probe_up", &[("probe", "biolatency")]) == Some(1.0)).then_some(())
    });
    common::assert_probes_attached(&e.scrape(), &["biolatency"]);
    let ino = ns.inode();
    wait_for(
        "the test namespace in the inventory",
        Duration::from_secs(10),
        || (!e.scrape().of_netns(ino).is_empty()).then_some(()),
    );
    e
}

/// BIOLAT_10MS events of `ns` on `device`.
fn events_on(path: &Path, ns: u64, device: &str) -> Vec<serde_json::Value> {
    events_of(path, "BIOLAT_10MS", ns)
        .into_iter()
        .filter(|v| v["fields"]["device"] == device)
        .collect()
}

/// Every BIOLAT_10MS event on `device`, whatever its namespace.
fn all_events_on(path: &Path, device: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "BIOLAT_10MS" && v["fields"]["device"] == device)
        .collect()
}

fn hist(e: &Exporter, suffix: &str, device: &str, op: &str) -> f64 {
    e.scrape()
        .sum(
            &format!("netsleuth_biolatency_seconds_{suffix}"),
            &[("device", device), ("operation", op)],
        )
        .unwrap_or(0.0)
}

#[test]
fn direct_io_on_a_loop_device_gives_exactly_n_events_per_operation() {
    if !common::privileged_with("biolatency_direct_io", &["losetup", "dd", "ip"]) {
        return;
    }
    direct_io_case("", "tp_btf");
}

/// The raw tracepoint programs alone (the one-argument block_rq_issue program: the two-argument
/// one, first in the plan, is refused here at attach).
#[test]
fn direct_io_through_raw_tracepoints_alone() {
    if !common::privileged_with("biolatency_direct_io_raw_tp", &["losetup", "dd", "ip"]) {
        return;
    }
    direct_io_case(", attachMethods: [raw_tp]", "raw_tp");
}

fn direct_io_case(extra_args: &str, method: &str) {
    let _g = lock();
    const N: usize = 7;
    let dir = tmp_dir();
    let lo = Loop::new(&backing_file(&dir, 16));
    let evp = dir.join("events.jsonl");
    // Threshold 0: every request is an event.
    let ns = Netns::new("nsbio");
    let e = start(
        &evp,
        &format!("{{threshold: 0ms, rateLimit: 0{extra_args}}}"),
        &ns,
    );
    let s = e.scrape();
    let methods: Vec<&str> = s
        .find("netsleuth_probe_attach_info", &[("probe", "biolatency")])
        .iter()
        .map(|x| x.labels["method"].as_str())
        .collect();
    assert_eq!(methods, [method, method], "one method per attach point");
    let ino = ns.inode();
    let before = lo.stat();
    let read_pid = dd_in(
        &ns,
        None,
        &[
            format!("if={}", lo.dev),
            "of=/dev/null".into(),
            "iflag=direct".into(),
            "bs=4096".into(),
            format!("count={N}"),
        ],
    );
    let write_pid = dd_in(
        &ns,
        None,
        &[
            "if=/dev/zero".into(),
            format!("of={}", lo.dev),
            "oflag=direct".into(),
            "bs=8192".into(),
            format!("count={N}"),
            "seek=100".into(),
        ],
    );
    let after = lo.stat();
    // The kernel's own accounting: N reads of 8 sectors, N writes of 16.
    assert_eq!(after.reads - before.reads, N as u64, "{before:?} {after:?}");
    assert_eq!(
        after.writes - before.writes,
        N as u64,
        "{before:?} {after:?}"
    );
    assert_eq!(after.read_sectors - before.read_sectors, 8 * N as u64);
    assert_eq!(after.write_sectors - before.write_sectors, 16 * N as u64);

    let name = lo.name().to_string();
    let evs = wait_for("2N events", Duration::from_secs(5), || {
        let v = events_on(&evp, ino, &name);
        (v.len() >= 2 * N).then_some(v)
    });
    std::thread::sleep(Duration::from_millis(500));
    let evs_again = all_events_on(&evp, &name);
    assert_eq!(
        evs_again.len(),
        2 * N,
        "exactly 2N events on {name}: {evs_again:#?}"
    );
    assert_eq!(evs.len(), 2 * N);
    let of = |op: &str| -> Vec<&serde_json::Value> {
        evs.iter()
            .filter(|v| v["fields"]["operation"] == op)
            .collect()
    };
    let (reads, writes) = (of("read"), of("write"));
    assert_eq!(reads.len(), N, "{evs:#?}");
    assert_eq!(writes.len(), N, "{evs:#?}");
    let mm = lo.major_minor();
    for (v, bytes, pid) in reads
        .iter()
        .map(|v| (v, 4096, read_pid))
        .chain(writes.iter().map(|v| (v, 8192, write_pid)))
    {
        assert_eq!(v["kind"], "named", "{v}");
        assert_eq!(v["name"], ns.name.as_str(), "{v}");
        let f = &v["fields"];
        assert_eq!(f["bytes"], bytes, "{v}");
        assert_eq!(f["dev"], mm.as_str(), "{v}");
        assert_eq!(f["pid"], pid, "{v}");
        assert_eq!(f["comm"], "dd", "{v}");
        let lat = f["latency"].as_f64().unwrap();
        assert!(lat > 0.0 && lat < 5.0, "{v}");
    }
    // The events' latencies add up within the kernel's per-device time (which starts earlier,
    // at request allocation, and is rounded down to ms).
    let sum = |v: &[&serde_json::Value]| -> f64 {
        v.iter()
            .map(|x| x["fields"]["latency"].as_f64().unwrap())
            .sum()
    };
    assert!(sum(&reads) <= (after.read_ms - before.read_ms + 1) as f64 / 1e3);
    assert!(sum(&writes) <= (after.write_ms - before.write_ms + 1) as f64 / 1e3);

    // The histogram: exactly N per operation on this device, the same latencies as the events.
    assert_eq!(hist(&e, "count", &name, "read"), N as f64);
    assert_eq!(hist(&e, "count", &name, "write"), N as f64);
    assert_eq!(hist(&e, "count", &name, "flush"), 0.0);
    let hs = hist(&e, "sum", &name, "read");
    assert!((hs - sum(&reads)).abs() < 1e-6, "{hs} vs {}", sum(&reads));
    let hs = hist(&e, "sum", &name, "write");
    assert!((hs - sum(&writes)).abs() < 1e-6, "{hs} vs {}", sum(&writes));
    let s = e.scrape();
    assert_eq!(
        s.sum("netsleuth_bpf_map_full_total", &[("probe", "biolatency")]),
        Some(0.0)
    );
    assert!(
        s.sum("netsleuth_events_total", &[("type", "BIOLAT_10MS")])
            .unwrap()
            >= 2.0 * N as f64
    );
    drop(e);
    drop(lo);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Requests per second the throttle lets through to the backing device: one every 250 ms.
const IOPS: u64 = 4;

/// A blkio cgroup that throttles reads of one device to [`IOPS`] (cgroup v1
/// `blkio.throttle.read_iops_device`, else v2 `io.max`), removed on drop.
struct Throttle {
    dir: PathBuf,
}

impl Throttle {
    fn new(major_minor: &str) -> Result<Throttle, String> {
        let v1 = Path::new("/sys/fs/cgroup/blkio");
        if v1.join("blkio.throttle.read_iops_device").exists() {
            let dir = v1.join(common::unique("nslbio"));
            std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let t = Throttle { dir };
            std::fs::write(
                t.dir.join("blkio.throttle.read_iops_device"),
                format!("{major_minor} {IOPS}"),
            )
            .map_err(|e| format!("blkio.throttle.read_iops_device: {e}"))?;
            return Ok(t);
        }
        let v2 = Path::new("/sys/fs/cgroup");
        let controllers =
            std::fs::read_to_string(v2.join("cgroup.controllers")).unwrap_or_default();
        if !controllers.split_whitespace().any(|c| c == "io") {
            return Err("no blkio (v1) or io (v2) cgroup controller".into());
        }
        std::fs::write(v2.join("cgroup.subtree_control"), "+io")
            .map_err(|e| format!("cgroup.subtree_control +io: {e}"))?;
        let dir = v2.join(common::unique("nslbio"));
        std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let t = Throttle { dir };
        std::fs::write(t.dir.join("io.max"), format!("{major_minor} riops={IOPS}"))
            .map_err(|e| format!("io.max: {e}"))?;
        Ok(t)
    }

    fn procs(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        // Its processes (the dd runs) have exited.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn throttled_requests_give_slow_events_and_fast_ones_none() {
    if !common::privileged_with("biolatency_throttled", &["losetup", "dd", "ip", "sh"]) {
        return;
    }
    let _g = lock();
    const N: usize = 4;
    let delay = Duration::from_millis(1000 / IOPS);
    let dir = tmp_dir();
    // upper (measured) -> lower (throttled for the cgroup) -> file. The upper loop device's
    // worker sends the I/O to the lower one charged to the issuing task's cgroup.
    let lower = Loop::new(&backing_file(&dir, 16));
    let upper = Loop::new(Path::new(&lower.dev));
    let throttle = match Throttle::new(&lower.major_minor()) {
        Ok(t) => t,
        Err(why) => {
            common::skip(
                "biolatency_throttled",
                &format!("no blk-throttle here: {why}"),
            );
            return;
        }
    };
    let evp = dir.join("events.jsonl");
    // The default threshold (10ms).
    let ns = Netns::new("nsbio");
    let e = start(&evp, "{rateLimit: 0}", &ns);
    let ino = ns.inode();
    let (up, low) = (upper.name().to_string(), lower.name().to_string());
    let read = |skip: usize| -> Vec<String> {
        vec![
            format!("if={}", upper.dev),
            "of=/dev/null".into(),
            "iflag=direct".into(),
            "bs=4096".into(),
            format!("count={N}"),
            format!("skip={skip}"),
        ]
    };

    // Fast: outside the throttled cgroup.
    let (u0, l0) = (upper.stat(), lower.stat());
    dd_in(&ns, None, &read(0));
    let (u1, l1) = (upper.stat(), lower.stat());
    assert_eq!(u1.reads - u0.reads, N as u64);
    assert_eq!(l1.reads - l0.reads, N as u64);

    // Slow: the same reads from inside the cgroup.
    let t = Instant::now();
    let pid = dd_in(&ns, Some(&throttle.procs()), &read(1000));
    let took = t.elapsed();
    let (u2, l2) = (upper.stat(), lower.stat());
    assert_eq!(u2.reads - u1.reads, N as u64);
    assert_eq!(l2.reads - l1.reads, N as u64);
    assert!(
        took >= delay * (N as u32 - 1),
        "the throttle held the reads: {took:?}"
    );

    wait_for("slow events", Duration::from_secs(5), || {
        (events_on(&evp, ino, &up).len() >= N).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let slow = events_on(&evp, ino, &up);
    let slow_all = all_events_on(&evp, &up);
    assert_eq!(slow_all.len(), slow.len(), "{slow_all:#?}");
    // Each request waited for its turn at the throttle (the first too: a new slice allows no
    // I/O at once at this rate): one event each, with the throttle's interval (less the moment
    // between one completion and the next issue).
    assert_eq!(slow.len(), N, "{slow:#?}");
    let held = slow
        .iter()
        .filter(|v| v["fields"]["latency"].as_f64().unwrap() >= delay.as_secs_f64() * 0.9)
        .count();
    assert_eq!(held, N, "{slow:#?}");
    let lats: Vec<f64> = slow
        .iter()
        .map(|v| v["fields"]["latency"].as_f64().unwrap())
        .collect();
    eprintln!("throttled reads took {took:?}; their events' latencies: {lats:?}");
    for v in &slow {
        let f = &v["fields"];
        assert_eq!(f["operation"], "read", "{v}");
        assert_eq!(f["bytes"], 4096, "{v}");
        assert_eq!(f["pid"], pid, "{v}");
        assert_eq!(f["comm"], "dd", "{v}");
        assert_eq!(v["name"], ns.name.as_str(), "{v}");
        assert!(f["latency"].as_f64().unwrap() >= 0.010, "{v}");
    }
    let lat_sum: f64 = slow
        .iter()
        .map(|v| v["fields"]["latency"].as_f64().unwrap())
        .sum();
    // Within the kernel's own time for the device's reads in the slow phase.
    assert!(
        lat_sum <= (u2.read_ms - u1.read_ms + 1) as f64 / 1e3,
        "{lat_sum} {u1:?} {u2:?}"
    );

    // Fast requests: no event. The kernel's per-device read time (from request allocation,
    // so at least the probe's latency) says whether any could have reached 10 ms.
    let fast_ms_upper = u1.read_ms - u0.read_ms;
    let lower_ms = l2.read_ms - l0.read_ms;
    let lower_events = all_events_on(&evp, &low);
    if lower_ms < 10 {
        assert!(lower_events.is_empty(), "{lower_events:#?}");
    } else {
        eprintln!("lower device's reads took {lower_ms} ms in all: not asserting none were slow");
    }
    if fast_ms_upper < 10 {
        // Every event on the upper device is from the slow run's dd.
        assert!(slow.iter().all(|v| v["fields"]["pid"] == pid));
    } else {
        eprintln!("upper device's fast reads took {fast_ms_upper} ms in all: not asserting none were slow");
    }
    // The histogram saw all 2N reads of the upper device and the lower one's.
    assert_eq!(hist(&e, "count", &up, "read"), 2.0 * N as f64);
    assert_eq!(hist(&e, "count", &low, "read"), 2.0 * N as f64);
    let total = hist(&e, "sum", &up, "read");
    assert!(total >= lat_sum - 1e-6, "{total} {lat_sum}");
    assert!(
        total <= (u2.read_ms - u0.read_ms + 1) as f64 / 1e3,
        "{total}"
    );
    drop(e);
    drop(throttle);
    drop(upper);
    drop(lower);
    let _ = std::fs::remove_dir_all(&dir);
}
