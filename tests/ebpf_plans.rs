//! Attach plans on this kernel, through the real binary's `netsleuth probes` (which loads,
//! attaches and detaches every eBPF probe): each probe's tracepoint alternatives are chosen; a
//! plan restricted to its fentry or kprobe fallbacks (`attachMethods`) fails with the reason of
//! every alternative; virtcmdlatency (no tracepoint) says why it cannot run.
//!
//! What each restriction must give follows from what this kernel offers, asked of the loader's
//! own feature probes (`common::offers()`: the getppid fentry and kprobe programs): where a
//! family is offered its fallbacks attach and are used alone; where it is refused, every probe
//! says so with the kernel's reason (this development machine: no CONFIG_KPROBES, fentry
//! refused with EPERM). The fallbacks also count on the Debian kernels: `tests/kernel-matrix/run`.

mod common;
use common::*;

use std::process::Command;

/// The seven probes that have tracepoints, with their number of attach points.
const TRACEPOINT_PROBES: [(&str, usize); 8] = [
    ("packetloss", 1),
    ("tcpreset", 2),
    ("tcpretrans", 2),
    ("netiftxlat", 4),
    ("softirq", 3),
    ("socketlatency", 4),
    ("kernellatency", 5),
    ("biolatency", 2),
];

fn probes_output(config: Option<&str>) -> (i32, String, String) {
    let mut c = Command::new(BIN);
    if let Some(yaml) = config {
        c.arg(format!("--config.file={}", write_config(yaml).display()));
    }
    let out = c.arg("probes").output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `netsleuth probes` line of `probe`: (enabled, available, text).
fn line<'a>(out: &'a str, probe: &str) -> (&'a str, &'a str, &'a str) {
    let l = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some(probe))
        .unwrap_or_else(|| panic!("no line for {probe} in:\n{out}"));
    let rest = l[probe.len()..].trim_start();
    let (on, rest) = rest.split_once(' ').unwrap();
    let rest = rest.trim_start();
    let (avail, rest) = rest.split_once(' ').unwrap();
    (on, avail, rest.trim_start())
}

/// The methods in a line's `[attach: a, b]`.
fn attach_methods(text: &str) -> Vec<String> {
    let (_, tail) = text
        .split_once("[attach: ")
        .unwrap_or_else(|| panic!("no [attach: ...] in {text}"));
    let (list, _) = tail.split_once(']').unwrap();
    list.split(", ").map(str::to_string).collect()
}

/// The kernel's reason in a loader refusal (`<what>: unsupported on this kernel: <why>: <more>`):
/// its first clause, the same for every program of the family (e.g. `BPF_PROG_LOAD failed with
/// EPERM although we hold CAP_BPF/CAP_SYS_ADMIN`, `no kprobe PMU (...) and no kprobe_events in
/// tracefs`).
fn reason(refusal: &str) -> &str {
    let why = refusal
        .split_once("unsupported on this kernel: ")
        .map_or(refusal, |(_, why)| why);
    why.split(": ").next().unwrap_or(why)
}

fn family(method: &str) -> &str {
    match method {
        "fexit" => "fentry",
        "kretprobe" => "kprobe",
        m => m,
    }
}

/// Whether the loader's probes say this kernel runs the method family.
fn offered(method: &str) -> bool {
    match family(method) {
        "fentry" => offers().fentry(),
        "kprobe" => offers().kprobes(),
        _ => true,
    }
}

/// A config with the seven tracepoint probes, each restricted to `methods`.
fn restricted(methods: &str) -> String {
    let mut y = String::from("metrics:\n  probes:\n");
    for (p, _) in TRACEPOINT_PROBES {
        y.push_str(&format!(
            "  - {{name: {p}, args: {{attachMethods: [{methods}]}}}}\n"
        ));
    }
    y
}

#[test]
fn every_tracepoint_probe_chooses_tracepoints_and_virtcmdlatency_says_why_not() {
    if !privileged("every_tracepoint_probe_chooses_tracepoints_and_virtcmdlatency_says_why_not") {
        return;
    }
    let (rc, out, err) = probes_output(None);
    assert_eq!(rc, 0, "{err}");
    for (p, points) in TRACEPOINT_PROBES {
        let (on, avail, text) = line(&out, p);
        assert_eq!((on, avail), ("no", "yes"), "{p}: {text}");
        let m = attach_methods(text);
        assert_eq!(m.len(), points, "{p}: one method per attach point: {text}");
        // Tracepoints first; a point whose tracepoint this kernel lacks may only fall back to
        // a family the kernel offers.
        assert!(
            m.iter()
                .all(|m| m == "tp_btf" || m == "raw_tp" || offered(m)),
            "{p} must run on tracepoints or an offered fallback: {m:?}"
        );
    }
    // kernellatency's optional tx side (fentry/kprobes only) is reported, the probe runs.
    let (_, _, text) = line(&out, "kernellatency");
    let tx = text
        .split_once("[tx: ")
        .unwrap_or_else(|| panic!("kernellatency does not report its tx side: {text}"))
        .1;
    let o = offers();
    match (&o.fentry, &o.kprobes) {
        (Err(f), Err(k)) => {
            // Neither family: unavailable, with both refusals.
            assert!(
                tx.starts_with("unavailable: fentry tx_start_fentry"),
                "{tx}"
            );
            assert!(tx.contains("kprobe tx_start_kprobe"), "{tx}");
            assert!(tx.contains(reason(f)), "fentry refusal {f:?} missing: {tx}");
            assert!(tx.contains(reason(k)), "kprobe refusal {k:?} missing: {tx}");
        }
        (fentry, _) => {
            let (list, _) = tx.split_once(']').unwrap();
            let want = if fentry.is_ok() { "fentry" } else { "kprobe" };
            assert!(
                list.split(", ").all(|m| family(m) == want),
                "tx attaches via {want} here: {tx}"
            );
        }
    }
    let (_, avail, why) = line(&out, "virtcmdlatency");
    // virtio-net's control command function, which only fentry or kprobes reach.
    let target =
        kernel_function("virtnet_send_command_reply") || kernel_function("virtnet_send_command");
    if target && (o.fentry() || o.kprobes()) {
        assert_eq!(avail, "yes", "{why}");
        assert!(
            attach_methods(why).iter().all(|m| offered(m)),
            "virtcmdlatency attaches via an offered family: {why}"
        );
        return;
    }
    assert_eq!(avail, "no", "{why}");
    assert!(why.starts_with("no attach method works: "), "{why}");
    // Every alternative of the plan is named with its reason.
    for alt in [
        "fentry entry_reply_fentry:",
        "fentry entry_fentry:",
        "kprobe entry_reply_kprobe:",
        "kprobe entry_kprobe:",
    ] {
        assert!(why.contains(alt), "{alt} missing: {why}");
    }
    for refusal in [&o.fentry, &o.kprobes]
        .into_iter()
        .filter_map(|r| r.as_ref().err())
    {
        assert!(why.contains(reason(refusal)), "{refusal:?} missing: {why}");
    }
}

#[test]
fn fentry_fallbacks_alone_fail_with_the_kernels_refusal() {
    if !privileged("fentry_fallbacks_alone_fail_with_the_kernels_refusal") {
        return;
    }
    let (rc, out, err) = probes_output(Some(&restricted("fentry")));
    assert_eq!(rc, 0, "{err}");
    let refusal = offers().fentry.as_ref().err();
    let mut attached = 0;
    for (p, points) in TRACEPOINT_PROBES {
        let (on, avail, why) = line(&out, p);
        assert_eq!(on, "metrics");
        if avail == "yes" {
            // Only where the kernel runs fentry; the plan then uses it and nothing else.
            assert!(
                refusal.is_none(),
                "{p} attached although fentry is refused: {why}"
            );
            assert_eq!(
                attach_methods(why)
                    .iter()
                    .filter(|m| *m == "fentry" || *m == "fexit")
                    .count(),
                points,
                "{p}: {why}"
            );
            attached += 1;
            continue;
        }
        assert_eq!(avail, "no", "{p}: {why}");
        assert!(why.starts_with("no attach method works: "), "{p}: {why}");
        assert!(
            !why.contains("tp_btf") && !why.contains("raw_tp") && !why.contains("kprobe"),
            "{p}: only fentry alternatives may be tried: {why}"
        );
        assert!(why.contains("fentry ") || why.contains("fexit "), "{why}");
        // Refused fentry: the kernel's reason. Offered fentry: only packetloss may lack its
        // targets (kfree_skb_reason and sk_skb_reason_drop exist since 5.17); every other
        // probe's fentry targets exist since 5.10.
        match refusal {
            Some(r) => assert!(why.contains(reason(r)), "{p}: {r:?} missing: {why}"),
            None => {
                assert_eq!(p, "packetloss", "{why}");
                assert!(
                    !kernel_function("kfree_skb_reason"),
                    "packetloss has kfree_skb_reason to attach to: {why}"
                );
            }
        }
    }
    if refusal.is_some() {
        assert_eq!(attached, 0, "{out}");
    }
}

#[test]
fn kprobe_fallbacks_alone_attach_where_kprobes_exist_and_fail_where_not() {
    if !privileged("kprobe_fallbacks_alone_attach_where_kprobes_exist_and_fail_where_not") {
        return;
    }
    let (rc, out, err) = probes_output(Some(&restricted("kprobe")));
    assert_eq!(rc, 0, "{err}");
    let Err(refusal) = &offers().kprobes else {
        // A kernel with kprobes: every probe attaches through kprobes alone.
        for (p, points) in TRACEPOINT_PROBES {
            let (on, avail, text) = line(&out, p);
            assert_eq!((on, avail), ("metrics", "yes"), "{p}: {text}");
            let m = attach_methods(text);
            assert_eq!(m.len(), points, "{p}: {text}");
            assert!(
                m.iter().all(|m| m == "kprobe" || m == "kretprobe"),
                "{p}: {text}"
            );
        }
        return;
    };
    for (p, _) in TRACEPOINT_PROBES {
        let (on, avail, why) = line(&out, p);
        assert_eq!((on, avail), ("metrics", "no"), "{p}: {why}");
        assert!(
            why.starts_with("no attach method works: kprobe "),
            "{p}: {why}"
        );
        assert!(why.contains(reason(refusal)), "{p}: {refusal:?}: {why}");
        assert!(
            !why.contains("tp_btf") && !why.contains("raw_tp") && !why.contains("fentry"),
            "{p}: only kprobe alternatives may be tried: {why}"
        );
    }
}

#[test]
fn raw_tp_alone_is_chosen_for_every_point() {
    if !privileged("raw_tp_alone_is_chosen_for_every_point") {
        return;
    }
    let (rc, out, err) = probes_output(Some(&restricted("raw_tp")));
    assert_eq!(rc, 0, "{err}");
    for (p, points) in TRACEPOINT_PROBES {
        let (_, avail, text) = line(&out, p);
        assert_eq!(avail, "yes", "{p}: {text}");
        assert_eq!(attach_methods(text), vec!["raw_tp"; points], "{p}: {text}");
    }
}

#[test]
fn unknown_attach_method_is_refused_by_name() {
    let (rc, _, err) = probes_output(Some(
        "metrics:\n  probes:\n  - {name: packetloss, args: {attachMethods: [uprobe]}}\n",
    ));
    assert_eq!(rc, 2, "{err}");
    assert!(
        err.contains("attachMethods") && err.contains("uprobe"),
        "{err}"
    );
}

/// Without CAP_NET_ADMIN (and CAP_SYS_ADMIN, which the kernel accepts in its place) the
/// kernel refuses to load the flow probe's tc programs with EPERM: `netsleuth probes` must
/// name the missing capability, not blame the kernel's policy.
#[test]
fn flow_without_cap_net_admin_names_the_capability() {
    let test = "flow_without_cap_net_admin";
    if !privileged_with(test, &["setpriv"]) {
        return;
    }
    let cfg = write_config("metrics:\n  probes:\n  - flow\n");
    let caps = "-all,+bpf,+perfmon,+dac_read_search,+sys_ptrace";
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--no-new-privs",
            &format!("--inh-caps={caps}"),
            &format!("--ambient-caps={caps}"),
            &format!("--bounding-set={caps}"),
            "--",
            BIN,
            &format!("--config.file={}", cfg.display()),
            "probes",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let (on, avail, text) = line(&stdout, "flow");
    assert_eq!((on, avail), ("metrics", "no"), "{stdout}\n{stderr}");
    assert!(
        text.contains("lacks CAP_NET_ADMIN") && !text.contains("refused by kernel policy"),
        "flow's reason must name CAP_NET_ADMIN: {text}"
    );
}
