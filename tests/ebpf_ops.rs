//! Operating the eBPF probes (root, real binary, own namespaces in 198.18.0.0/15): the
//! kernel's per-program run-time stats, the in-kernel per-type event rate limit (events bounded,
//! metrics exact), SIGHUP keeping an unchanged probe running, and kernel-map entries of deleted
//! namespaces going away after the inventory's grace period.
mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{events_of, scrape_sum, wait_for, write_config, Exporter, Netns, Pair};

/// Tests share kernel-global tracepoints: one at a time.
static LOCK: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn root(test: &str) -> bool {
    common::privileged_with(test, &["iptables"])
}

/// The exporter on `yaml`, once the probe's program series shows up (attached).
fn start(yaml: &str, probe: &str) -> (Exporter, std::path::PathBuf) {
    let cfg = write_config(yaml);
    let e = Exporter::start(&[&format!("--config.file={}", cfg.display())]);
    wait_for("eBPF probe attached", Duration::from_secs(10), || {
        (!programs(&e, probe).is_empty()).then_some(())
    });
    (e, cfg)
}

/// `program` label → (run_seconds, runs) of one probe's programs.
fn programs(e: &Exporter, probe: &str) -> Vec<(String, f64, u64)> {
    let s = e.scrape();
    let prefix = format!("{probe}/");
    s.find("netsleuth_bpf_program_runs_total", &[])
        .into_iter()
        .filter(|r| r.labels["program"].starts_with(&prefix))
        .map(|r| {
            let prog = r.labels["program"].clone();
            let secs = s
                .one(
                    "netsleuth_bpf_program_run_seconds_total",
                    &[("program", &prog)],
                )
                .value
                .parse()
                .unwrap();
            (prog, secs, r.value.parse().unwrap())
        })
        .collect()
}

fn runs(e: &Exporter, probe: &str) -> (f64, u64) {
    programs(e, probe)
        .iter()
        .fold((0.0, 0), |(s, n), p| (s + p.1, n + p.2))
}

fn value(e: &Exporter, name: &str, want: &[(&str, &str)]) -> u64 {
    scrape_sum(e, name, want) as u64
}

/// Sends `n` datagrams from a to b's dropped port; returns how long the sending took.
fn send_dropped(p: &Pair, n: usize) -> Duration {
    let ip_b = p.ip_b.clone();
    p.a.within(move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        let t = Instant::now();
        for _ in 0..n {
            s.send_to(b"x", format!("{ip_b}:9999")).unwrap();
        }
        t.elapsed()
    })
}

fn drops_of(e: &Exporter, ns: &str) -> u64 {
    value(
        e,
        "netsleuth_packetloss_total",
        &[("netns", ns), ("reason", "NETFILTER_DROP")],
    )
}

/// Processes holding a `BPF_ENABLE_STATS` fd (`anon_inode:bpf-stats`).
fn stats_holders() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|d| d.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .into_iter()
                .flatten()
                .flatten()
                .any(|f| {
                    std::fs::read_link(f.path())
                        .is_ok_and(|l| l.as_os_str() == "anon_inode:bpf-stats")
                })
        })
        .collect()
}

#[test]
fn program_run_time_and_count_rise_with_the_drops_they_handle() {
    if !root("program_run_stats") {
        return;
    }
    let _g = lock();
    // The stats are node-wide: on while the sysctl says so or any process holds a
    // BPF_ENABLE_STATS fd. The exporter's own part is exact either way (whether it holds
    // such an fd); zero runs are seen only on a node where nothing else has them on.
    let sysctl = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap();
    let others_on = sysctl.trim() == "1" || !stats_holders().is_empty();
    let p = Pair::dropping(9999);
    let b = p.b.inode().to_string();
    // By default the exporter leaves the node-wide stats off (they cost every BPF program):
    // drops are counted, runs are not.
    {
        let (e, _) = start("metrics:\n  probes: [packetloss]\n", "packetloss");
        send_dropped(&p, 20);
        wait_for("20 drops counted", Duration::from_secs(5), || {
            (drops_of(&e, &b) >= 20).then_some(())
        });
        assert!(
            !stats_holders().contains(&e.pid()),
            "the exporter holds a BPF_ENABLE_STATS fd without bpf.programStats"
        );
        if !others_on {
            assert_eq!(
                runs(&e, "packetloss"),
                (0.0, 0),
                "stats on without bpf.programStats"
            );
        }
    }
    let (e, _) = start(
        "bpf:\n  programStats: true\nmetrics:\n  probes: [packetloss]\n",
        "packetloss",
    );
    // (Run-time stats are switched on before the "listening" line: a rise below proves it.)
    assert!(
        stats_holders().contains(&e.pid()),
        "bpf.programStats: the exporter holds a BPF_ENABLE_STATS fd"
    );
    // One attach point: one program series, named probe/program.
    let progs = programs(&e, "packetloss");
    assert_eq!(progs.len(), 1, "{progs:?}");
    assert!(
        progs[0].0 == "packetloss/kfree_skb_btf" || progs[0].0 == "packetloss/kfree_skb_raw",
        "{progs:?}"
    );
    let (secs0, runs0) = runs(&e, "packetloss");
    const N: usize = 200;
    send_dropped(&p, N);
    wait_for("N drops counted", Duration::from_secs(5), || {
        (drops_of(&e, &b) >= N as u64).then_some(())
    });
    assert_eq!(drops_of(&e, &b), N as u64);
    let (secs1, runs1) = runs(&e, "packetloss");
    // Every counted drop is one run of the program (others on the node add more runs).
    assert!(runs1 - runs0 >= N as u64, "runs {runs0} -> {runs1}");
    assert!(secs1 > secs0, "run time {secs0} -> {secs1}");
    // Sane per-run cost: well under 100 µs on average.
    let per_run = (secs1 - secs0) / (runs1 - runs0) as f64;
    assert!(per_run > 0.0 && per_run < 100e-6, "{per_run} s per run");
}

/// PACKETLOSS events of namespace `ns` with reason NETFILTER_DROP (the neighbour priming
/// datagram to a closed port is another drop).
fn nf_events(path: &std::path::Path, ns: u64) -> u64 {
    events_of(path, "PACKETLOSS", ns)
        .iter()
        .filter(|v| v["fields"]["reason"] == "NETFILTER_DROP")
        .count() as u64
}

/// Sums over every namespace (foreign drops show up here).
fn all_drops(e: &Exporter) -> u64 {
    value(e, "netsleuth_packetloss_total", &[])
}

fn suppressed(e: &Exporter) -> u64 {
    value(
        e,
        "netsleuth_events_suppressed_total",
        &[("type", "PACKETLOSS")],
    )
}

#[test]
fn rate_limit_emits_the_burst_suppresses_the_rest_and_keeps_metrics_exact() {
    if !root("rate_limit") {
        return;
    }
    let _g = lock();
    let dir = std::env::temp_dir().join(common::unique("nslrl"));
    std::fs::create_dir_all(&dir).unwrap();
    let evp = dir.join("events.jsonl");
    // 20 events/s: 50 ms per token, a full bucket of 5 in 250 ms. Each scrape ends with a
    // QUEUE_PURGE free of the exporter's own HTTP socket (sk_stream_kill_queues): left out
    // here, or our own scrapes would take tokens.
    let yaml = format!(
        r#"
metrics:
  probes: [{{name: packetloss, args: {{excludeReasons: [NOT_SPECIFIED, CONSUMED, QUEUE_PURGE]}}}}]
event:
  probes: [{{name: packetloss, args: {{rateLimit: 20, burst: 5}}}}]
  sinks: [{{name: file, args: {{path: {}}}}}]
"#,
        evp.display()
    );
    let (e, _) = start(&yaml, "packetloss");
    let p = Pair::dropping(9999);
    let b = p.b.inode().to_string();
    let b_n: u64 = p.b.inode();
    // The bucket is shared by every PACKETLOSS of the node: a round is exact only if nothing
    // else dropped a packet from the refill wait to the end (then the bucket was full and all
    // 50 drops were ours). Other activity on the node makes us try again.
    let mut exact = false;
    for _round in 0..10 {
        let pre = all_drops(&e);
        std::thread::sleep(Duration::from_millis(400));
        let (all0, supp0, ours0) = (all_drops(&e), suppressed(&e), drops_of(&e, &b));
        let ev0 = nf_events(&evp, b_n) as usize;
        let took = send_dropped(&p, 50);
        wait_for("50 drops counted", Duration::from_secs(5), || {
            (drops_of(&e, &b) >= ours0 + 50).then_some(())
        });
        std::thread::sleep(Duration::from_millis(300));
        let (all1, supp1, ours1) = (all_drops(&e), suppressed(&e), drops_of(&e, &b));
        let ev1 = nf_events(&evp, b_n) as usize;
        // The metric is exact whatever the limit.
        assert_eq!(ours1 - ours0, 50);
        // Never more than the burst plus what refilled while sending.
        let refill = (took.as_secs_f64() * 20.0).ceil() as usize;
        assert!(ev1 - ev0 <= 5 + refill + 1, "{} events", ev1 - ev0);
        if all0 != pre || all1 - all0 != 50 || took >= Duration::from_millis(40) {
            eprintln!(
                "round not exact (foreign drops {} / {}, sending took {took:?}); again",
                all0 - pre,
                all1 - all0 - 50
            );
            continue;
        }
        assert_eq!(ev1 - ev0, 5, "exactly the burst is emitted");
        assert_eq!(supp1 - supp0, 45, "the rest is counted as suppressed");
        exact = true;
        break;
    }
    assert!(exact, "no quiet round on this node in 10 tries");
    // Every counted drop was either emitted (and read), suppressed, or lost in a full buffer.
    let consistent = wait_for("consistent scrape", Duration::from_secs(10), || {
        let s = e.scrape();
        let sum = |n: &str, w: &[(&str, &str)]| -> u64 {
            s.find(n, w)
                .iter()
                .map(|x| x.value.parse::<u64>().unwrap())
                .sum()
        };
        let drops = sum("netsleuth_packetloss_total", &[]);
        let emitted = sum("netsleuth_events_total", &[("type", "PACKETLOSS")]);
        let supp = sum(
            "netsleuth_events_suppressed_total",
            &[("type", "PACKETLOSS")],
        );
        let lost = sum("netsleuth_events_lost_total", &[("probe", "packetloss")]);
        (drops == emitted + supp + lost).then_some((drops, emitted, supp, lost))
    });
    eprintln!("drops, emitted, suppressed, lost: {consistent:?}");

    // Sustained: sending for ~1 s gives about burst + rate * t events, not one per drop.
    std::thread::sleep(Duration::from_millis(400));
    let (supp0, ours0) = (suppressed(&e), drops_of(&e, &b));
    let ev0 = nf_events(&evp, b_n) as usize;
    let ip_b = p.ip_b.clone();
    let (sent, took) = p.a.within(move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        let t = Instant::now();
        let mut n = 0u64;
        while t.elapsed() < Duration::from_secs(1) {
            s.send_to(b"x", format!("{ip_b}:9999")).unwrap();
            n += 1;
            std::thread::sleep(Duration::from_micros(500));
        }
        (n, t.elapsed())
    });
    wait_for("sustained drops counted", Duration::from_secs(5), || {
        (drops_of(&e, &b) >= ours0 + sent).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        drops_of(&e, &b) - ours0,
        sent,
        "metric exact under the limit"
    );
    let ev = (nf_events(&evp, b_n) as usize - ev0) as f64;
    let max = 5.0 + 20.0 * took.as_secs_f64() + 2.0;
    assert!(
        ev <= max && ev >= 5.0 + 20.0 * 0.9 - 6.0,
        "{ev} events for {sent} drops in {took:?} (at most {max})"
    );
    assert!(suppressed(&e) - supp0 >= sent - ev as u64);
}

#[test]
fn sighup_keeps_an_unchanged_probe_counting_and_restarts_a_changed_one() {
    if !root("sighup_keeps_probe") {
        return;
    }
    let _g = lock();
    let dir = std::env::temp_dir().join(common::unique("nslhup"));
    std::fs::create_dir_all(&dir).unwrap();
    let evp = dir.join("events.jsonl");
    let conf = |event_probes: &str| {
        format!(
            "bpf:\n  programStats: true\nmetrics:\n  probes: [packetloss, tcpreset]\nevent:\n  probes: [{event_probes}]\n  sinks: [{{name: file, args: {{path: {}}}}}]\n",
            evp.display()
        )
    };
    let (e, cfg) = start(&conf("packetloss"), "packetloss");
    wait_for("tcpreset attached", Duration::from_secs(10), || {
        (!programs(&e, "tcpreset").is_empty()).then_some(())
    });
    let p = Pair::dropping(9999);
    let b = p.b.inode().to_string();
    send_dropped(&p, 10);
    wait_for("10 drops", Duration::from_secs(5), || {
        (drops_of(&e, &b) == 10).then_some(())
    });
    let (_, runs0) = runs(&e, "packetloss");
    let (_, rst_runs0) = runs(&e, "tcpreset");
    // tcpreset changes (now with events), packetloss does not.
    std::fs::write(&cfg, conf("packetloss, tcpreset")).unwrap();
    // Drops keep coming while the reload happens: none may be missed.
    let ip_b = p.ip_b.clone();
    let a_path = format!("/run/netns/{}", p.a.name);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let st = stop.clone();
    let sender = std::thread::spawn(move || {
        let f = std::fs::File::open(&a_path).unwrap();
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        let mut n = 0u64;
        while !st.load(std::sync::atomic::Ordering::Relaxed) {
            s.send_to(b"x", format!("{ip_b}:9999")).unwrap();
            n += 1;
            std::thread::sleep(Duration::from_micros(200));
        }
        n
    });
    std::thread::sleep(Duration::from_millis(200));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(e.pid()),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let log = e.log_until("configuration reloaded", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = sender.join().unwrap();
    assert!(
        log.iter()
            .any(|l| l.contains("packetloss: configuration unchanged, kept running")),
        "{log:#?}"
    );
    assert!(
        log.iter()
            .any(|l| l.contains("eBPF probe tcpreset attached via")),
        "{log:#?}"
    );
    wait_for("every drop counted", Duration::from_secs(5), || {
        (drops_of(&e, &b) >= 10 + sent).then_some(())
    });
    std::thread::sleep(Duration::from_millis(200));
    // Nothing reset, nothing missed across the reload: neither counts nor events.
    assert_eq!(drops_of(&e, &b), 10 + sent, "{sent} sent during the reload");
    let b_n: u64 = p.b.inode();
    let evs = wait_for("every event written", Duration::from_secs(5), || {
        let n = nf_events(&evp, b_n);
        (n >= 10 + sent).then_some(n)
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(evs, 10 + sent);
    assert_eq!(nf_events(&evp, b_n), 10 + sent);
    let (_, runs1) = runs(&e, "packetloss");
    assert!(runs1 >= runs0 + sent, "runs {runs0} -> {runs1}");
    // The restarted probe's run counter does not go back either.
    let (_, rst_runs1) = runs(&e, "tcpreset");
    assert!(rst_runs1 >= rst_runs0, "{rst_runs0} -> {rst_runs1}");
}

/// A namespace of its own whose OUTPUT chain drops UDP to port 9999, after `n` such drops.
fn dropping_ns(shield: &common::InumShield, prefix: &str, n: usize) -> Netns {
    let ns = common::netns_above(shield, prefix);
    ns.exec(
        "iptables",
        &["-A", "OUTPUT", "-p", "udp", "--dport", "9999", "-j", "DROP"],
    );
    let path = format!("/run/netns/{}", ns.name);
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..n {
            // EPERM: the OUTPUT rule drops it.
            let _ = s.send_to(b"x", "127.0.0.1:9999");
        }
    })
    .join()
    .unwrap();
    ns
}

#[test]
fn map_entries_of_a_deleted_namespace_go_after_the_grace_period() {
    if !root("dead_namespace_entries") {
        return;
    }
    let _g = lock();
    let (e, _) = start("metrics:\n  probes: [packetloss]\n", "packetloss");
    let reaped = || {
        value(
            &e,
            "netsleuth_bpf_map_entries_reaped_total",
            &[("probe", "packetloss")],
        )
    };
    // Inode numbers held below the two namespaces, released just before they are deleted, so
    // that no other namespace on the node takes their inodes meanwhile.
    let shield = common::InumShield::hold(256);
    // One namespace scraped while it lives...
    let ns1 = dropping_ns(&shield, "nsdead", 3);
    let ino1 = ns1.inode().to_string();
    let want1 = [("netns", ino1.as_str()), ("reason", "NETFILTER_DROP")];
    wait_for("3 drops in the namespace", Duration::from_secs(5), || {
        let s = e.scrape();
        let m = s.find("netsleuth_packetloss_total", &want1);
        (m.len() == 1 && m[0].value == "3" && m[0].labels["name"] == ns1.name).then_some(())
    });
    let reaped0 = reaped();
    // ...and one never scraped while it lives (only the reaper thread sees it alive).
    let ns2 = dropping_ns(&shield, "nsdead", 4);
    let ino2 = ns2.inode().to_string();
    let want2 = [("netns", ino2.as_str()), ("reason", "NETFILTER_DROP")];
    std::thread::sleep(Duration::from_secs(7));
    drop(shield);
    drop(ns1);
    drop(ns2);
    let gone = Instant::now();
    // Within the grace period the series stay (late scrapes still see the last counts).
    std::thread::sleep(Duration::from_secs(5));
    // A new namespace with one of those inodes would rightly keep its entries: the shield
    // makes that the 257th namespace made on the node meanwhile, which this test then reports.
    let not_reused = |ino: &str| {
        let ino: u64 = ino.parse().unwrap();
        assert!(
            !common::netns_inode_in_use(ino),
            "netns inode {ino} was reused by another namespace despite the 256-number shield"
        );
    };
    not_reused(&ino1);
    not_reused(&ino2);
    assert_eq!(value(&e, "netsleuth_packetloss_total", &want1), 3);
    assert_eq!(value(&e, "netsleuth_packetloss_total", &want2), 4);
    let mut last_report = Instant::now();
    wait_for("entries deleted", Duration::from_secs(60), || {
        let s = e.scrape();
        let left1 = !s.find("netsleuth_packetloss_total", &want1).is_empty();
        let left2 = !s.find("netsleuth_packetloss_total", &want2).is_empty();
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "after {:?}: ns1 entry left: {left1}, ns2: {left2}",
                gone.elapsed()
            );
            last_report = Instant::now();
        }
        (!(left1 || left2)).then_some(())
    });
    not_reused(&ino1);
    not_reused(&ino2);
    let after = gone.elapsed();
    assert!(
        after >= netsleuth::inventory::GRACE,
        "deleted {after:?} after the namespaces went, before the grace period"
    );
    // Each namespace had one key (NETFILTER_DROP, UDP); others may go at the same time.
    let reaped1 = reaped();
    assert!(reaped1 >= reaped0 + 2, "{reaped0} -> {reaped1}");
}

/// Scrapes are not packet loss: each closes an HTTP connection whose queued FIN is freed as
/// `QUEUE_PURGE`, a reason left out by default (with the default `excludeReasons`, while the
/// same scrapes with an empty list do show it, so the check can fail).
#[test]
fn scrapes_do_not_count_as_packet_loss_by_default() {
    if !root("scrapes_do_not_count_as_packet_loss_by_default") {
        return;
    }
    let _g = lock();
    let purges = |yaml: &str| {
        let (e, _) = start(yaml, "packetloss");
        for _ in 0..10 {
            let _ = e.scrape_text();
        }
        // The last connection's teardown lands after its response: one more scrape sees it.
        std::thread::sleep(Duration::from_millis(200));
        let s = e.scrape();
        s.find("netsleuth_packetloss_total", &[("reason", "QUEUE_PURGE")])
            .iter()
            .map(|x| x.value.parse::<f64>().unwrap())
            .sum::<f64>()
    };
    assert_eq!(purges("metrics:\n  probes: [packetloss]\n"), 0.0);
    assert!(purges("metrics:\n  probes: [{name: packetloss, args: {excludeReasons: []}}]\n") > 0.0);
}
