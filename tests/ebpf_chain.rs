//! One program per shared tracepoint (root, real binary, real kernel, own namespaces in
//! 198.18.0.0/15): with netiftxlat, socketlatency, kernellatency and packetloss running, each
//! tracepoint two of them hook (net_dev_start_xmit, net_dev_queue, kfree_skb) has exactly one
//! link of the exporter's (read from `/proc/<pid>/fdinfo`), and every probe still counts
//! exactly what the kernel counts; a SIGHUP that disables, re-enables or reconfigures one of
//! them leaves the other counting exactly, again through one program.
mod common;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{scrape_sum, wait_for, write_config, Exporter, Pair, Routed};

/// Tests share kernel-global tracepoints: one at a time.
static LOCK: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The exporter's BPF links per tracepoint (`tp_name` of its link fds' fdinfo), each with the
/// id of the program it runs.
fn links(pid: i32) -> BTreeMap<String, Vec<u32>> {
    let mut out: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for ent in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap() {
        let Ok(text) = std::fs::read_to_string(ent.unwrap().path()) else {
            continue;
        };
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
        };
        if field("link_type:").is_none() {
            continue;
        }
        if let Some(tp) = field("tp_name:") {
            let id = field("prog_id:").and_then(|v| v.parse().ok()).unwrap_or(0);
            out.entry(tp).or_default().push(id);
        }
    }
    out
}

/// How many of the exporter's links are on tracepoint `tp`.
fn links_on(e: &Exporter, tp: &str) -> usize {
    links(e.pid()).get(tp).map_or(0, |v| v.len())
}

/// The name of program `id` (bpftool, when installed; else `None`).
fn prog_name(id: u32) -> Option<String> {
    let out = std::process::Command::new("bpftool")
        .args(["-j", "prog", "show", "id", &id.to_string()])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["name"].as_str().map(str::to_string)
}

fn config(probes: &str) -> String {
    format!("metrics:\n  probes: [{probes}]\n")
}

/// The exporter on `probes` (names), once each has attached: with the methods its attach
/// points attached by (`netsleuth_probe_attach_info`).
fn start(probes: &[&str]) -> (Exporter, std::path::PathBuf, Vec<String>) {
    start_with(&probes.join(", "), probes)
}

/// [`start`] with the `metrics.probes` entries `yaml` (args allowed) for the probes `names`.
fn start_with(yaml: &str, probes: &[&str]) -> (Exporter, std::path::PathBuf, Vec<String>) {
    let cfg = write_config(&config(yaml));
    let e = Exporter::start(&[&format!("--config.file={}", cfg.display())]);
    let methods = wait_for("every probe attached", Duration::from_secs(20), || {
        let s = e.scrape();
        let mut methods = Vec::new();
        for p in probes {
            let rows = s.find("netsleuth_probe_attach_info", &[("probe", p)]);
            if rows.is_empty() {
                return None;
            }
            methods.extend(rows.iter().map(|r| format!("{p}: {}", r.labels["method"])));
        }
        Some(methods)
    });
    (e, cfg, methods)
}

/// Every attach point attached by tp_btf (the chains this test expects); else skips.
fn all_tp_btf(test: &str, methods: &[String]) -> bool {
    if methods.iter().all(|m| m.ends_with(": tp_btf")) {
        return true;
    }
    common::skip(
        test,
        &format!("not every attach point attached by tp_btf: {methods:?}"),
    );
    false
}

/// Rewrites the configuration and reloads it (SIGHUP); the log until it says it is done.
fn reload(e: &Exporter, cfg: &std::path::Path, probes: &str) -> Vec<String> {
    std::fs::write(cfg, config(probes)).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(e.pid()),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    e.log_until("configuration reloaded", Duration::from_secs(20))
}

/// (kernellatency forward observations, netiftxlat qdisc observations, netiftxlat device
/// observations) of r / r's device towards b.
fn counts(e: &Exporter, net: &Routed) -> (f64, f64, f64) {
    let ri = net.r.inode().to_string();
    let dev = [("netns", ri.as_str()), ("device", net.rb_r.as_str())];
    (
        scrape_sum(
            e,
            "netsleuth_kernellatency_forward_seconds_count",
            &[("netns", &ri)],
        ),
        scrape_sum(e, "netsleuth_netiftxlat_qdisc_seconds_count", &dev),
        scrape_sum(e, "netsleuth_netiftxlat_device_seconds_count", &dev),
    )
}

/// Sends 30 datagrams through r; then waits until the probes that run (`forward`: kernellatency,
/// `txlat`: netiftxlat) observed exactly what r's kernel counted meanwhile (forwarded
/// datagrams; packets its device towards b sent), and returns those figures.
fn send_and_match(e: &Exporter, net: &Routed, forward: bool, txlat: bool) {
    let (f0, q0, d0) = counts(e, net);
    let (fw0, tx0) = (net.forwarded(), net.tx_packets());
    net.send(30);
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let (f, q, d) = counts(e, net);
        let (fw, tx) = (net.forwarded() - fw0, net.tx_packets() - tx0);
        let ok_f = if forward {
            f - f0 == fw as f64
        } else {
            f == f0
        };
        let ok_t = if txlat {
            q - q0 == tx as f64 && d - d0 == tx as f64
        } else {
            q == q0 && d == d0
        };
        if fw >= 30 && ok_f && ok_t {
            return;
        }
        assert!(
            Instant::now() < end,
            "forward observations {} vs r's ForwDatagrams {fw} (kernellatency on: {forward}); \
             qdisc {} / device {} observations vs {tx} packets sent on {} (netiftxlat on: {txlat})",
            f - f0,
            q - q0,
            d - d0,
            net.rb_r
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn shared_tracepoints_run_one_program_and_every_probe_counts_exactly() {
    if !common::privileged_with("chain_one_program", &["iptables"]) {
        return;
    }
    let _g = lock();
    let (e, _cfg, methods) = start(&["packetloss", "netiftxlat", "socketlatency", "kernellatency"]);
    if !all_tp_btf("chain_one_program", &methods) {
        return;
    }
    let l = links(e.pid());
    for (tp, n) in [
        ("net_dev_start_xmit", 1),
        ("net_dev_queue", 1),
        ("kfree_skb", 1),
        ("net_dev_xmit", 1),
        ("netif_receive_skb", 1),
        ("sk_data_ready", 1),
    ] {
        assert_eq!(l.get(tp).map_or(0, |v| v.len()), n, "{tp}: {l:?}");
    }
    // The one program there is the chain's first (bpftool names it, where installed).
    for (tp, first) in [
        ("net_dev_start_xmit", "start_btf"),
        ("net_dev_queue", "queue_btf"),
        ("kfree_skb", "kfree_skb_btf"),
    ] {
        if let Some(name) = prog_name(l[tp][0]) {
            assert_eq!(name, first, "{tp}");
        }
    }

    // net_dev_queue: netiftxlat first, kernellatency tail-called; net_dev_start_xmit:
    // netiftxlat first. Both count exactly what r's kernel counted.
    let net = Routed::new();
    // (r also forwards b's ICMP answers back to a, on its other device.)
    send_and_match(&e, &net, true, true);

    // kfree_skb: packetloss first, exact drop count.
    let p = Pair::dropping(9998);
    let b = p.b.inode().to_string();
    let drops = |e: &Exporter| {
        scrape_sum(
            e,
            "netsleuth_packetloss_total",
            &[("netns", &b), ("reason", "NETFILTER_DROP")],
        )
    };
    let d0 = drops(&e);
    p.send_udp_to_b(9998, 10);
    wait_for("10 drops", Duration::from_secs(5), || {
        (drops(&e) - d0 == 10.0).then_some(())
    });

    // net_dev_start_xmit: socketlatency tail-called behind netiftxlat: a write held by a
    // full window is timed only there (the segment carrying its last byte reaching the device).
    let q = Pair::new();
    let a = q.a.inode().to_string();
    let port: u16 = 30000 + (std::process::id() % 20000) as u16 + 7;
    q.full_window_write(port, 300, 500);
    wait_for(
        "socketlatency send observed",
        Duration::from_secs(5),
        || {
            (scrape_sum(
                &e,
                "netsleuth_socketlatency_send_seconds_count",
                &[("netns", &a)],
            ) >= 1.0)
                .then_some(())
        },
    );
    // Still one program per tracepoint after all that traffic.
    assert_eq!(links_on(&e, "net_dev_start_xmit"), 1);
    assert_eq!(links_on(&e, "net_dev_queue"), 1);
}

#[test]
fn reload_disabling_reenabling_or_reconfiguring_one_probe_keeps_the_other_counting() {
    if !common::privileged("chain_reload") {
        return;
    }
    let _g = lock();
    let (e, cfg, methods) = start(&["netiftxlat", "kernellatency"]);
    if !all_tp_btf("chain_reload", &methods) {
        return;
    }
    let net = Routed::new();
    assert_eq!(links_on(&e, "net_dev_queue"), 1);
    send_and_match(&e, &net, true, true);

    // netiftxlat (the chain's first program) disabled: kernellatency attached on its own.
    let log = reload(&e, &cfg, "kernellatency");
    assert!(
        log.iter()
            .any(|l| l.contains("kernellatency: configuration unchanged, kept running")),
        "{log:#?}"
    );
    assert_eq!(links_on(&e, "net_dev_queue"), 1, "{:?}", links(e.pid()));
    assert_eq!(links_on(&e, "net_dev_start_xmit"), 0);
    send_and_match(&e, &net, true, false);

    // netiftxlat enabled again: one program on net_dev_queue, both counting.
    let log = reload(&e, &cfg, "netiftxlat, kernellatency");
    assert!(
        log.iter().any(|l| l.contains(
            "one program attached: tp_btf net_dev_queue: netiftxlat/queue_btf -> kernellatency/queue_btf"
        )),
        "{log:#?}"
    );
    assert_eq!(links_on(&e, "net_dev_queue"), 1, "{:?}", links(e.pid()));
    send_and_match(&e, &net, true, true);

    // kernellatency reconfigured (a new threshold: loaded again), netiftxlat kept.
    let log = reload(
        &e,
        &cfg,
        "netiftxlat, {name: kernellatency, args: {threshold: 50ms}}",
    );
    assert!(
        log.iter()
            .any(|l| l.contains("netiftxlat: configuration unchanged, kept running")),
        "{log:#?}"
    );
    assert_eq!(links_on(&e, "net_dev_queue"), 1, "{:?}", links(e.pid()));
    send_and_match(&e, &net, true, true);

    // kernellatency (the chain's last program) disabled: netiftxlat counts on its own.
    reload(&e, &cfg, "netiftxlat");
    assert_eq!(links_on(&e, "net_dev_queue"), 1, "{:?}", links(e.pid()));
    send_and_match(&e, &net, false, true);
}

#[test]
fn programs_of_different_methods_stay_apart_and_raw_tp_ones_chain() {
    if !common::privileged("chain_methods") {
        return;
    }
    let _g = lock();
    // netiftxlat restricted to raw tracepoints, kernellatency on tp_btf: a raw_tp program
    // cannot tail-call a tp_btf one (another program type), so both keep their links.
    let (e, cfg, methods) = start_with(
        "{name: netiftxlat, args: {attachMethods: [raw_tp]}}, kernellatency",
        &["netiftxlat", "kernellatency"],
    );
    let raw = |m: &String| m.starts_with("netiftxlat: ") == m.ends_with(": raw_tp");
    if !methods.iter().all(raw) {
        common::skip("chain_methods", &format!("unexpected methods: {methods:?}"));
        return;
    }
    let net = Routed::new();
    assert_eq!(links_on(&e, "net_dev_queue"), 2, "{:?}", links(e.pid()));
    send_and_match(&e, &net, true, true);

    // Both on raw tracepoints: one program again.
    let log = reload(
        &e,
        &cfg,
        "{name: netiftxlat, args: {attachMethods: [raw_tp]}}, {name: kernellatency, args: {attachMethods: [raw_tp]}}",
    );
    assert!(
        log.iter().any(|l| l.contains(
            "one program attached: raw_tp net_dev_queue: netiftxlat/queue_raw -> kernellatency/queue_raw"
        )),
        "{log:#?}"
    );
    assert_eq!(links_on(&e, "net_dev_queue"), 1, "{:?}", links(e.pid()));
    send_and_match(&e, &net, true, true);

    // bpf.chainPrograms: false: every program on its own link, still exact.
    std::fs::write(
        &cfg,
        "bpf:\n  chainPrograms: false\nmetrics:\n  probes: [netiftxlat, kernellatency]\n",
    )
    .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(e.pid()),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    e.log_until("configuration reloaded", Duration::from_secs(20));
    assert_eq!(links_on(&e, "net_dev_queue"), 2, "{:?}", links(e.pid()));
    send_and_match(&e, &net, true, true);
}
