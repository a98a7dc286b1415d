//! Attach plans on this kernel, through the real binary's `netsleuth probes` (which loads,
//! attaches and detaches every eBPF probe): each probe's tracepoint alternatives are chosen; a
//! plan restricted to its fentry or kprobe fallbacks (`attachMethods`) fails with the reason of
//! every alternative; virtcmdlatency (no tracepoint) says why it cannot run.
//!
//! The development machine has no kprobes (CONFIG_KPROBES=n) and refuses fentry with EPERM;
//! the assertions about those two reasons are made where the kernel says so (kprobe PMU
//! absent, and the fentry load refused), and skipped with a printed reason elsewhere. The
//! fallbacks themselves attach and count on the Debian kernels: `tests/kernel-matrix/run`.

mod common;
use common::*;

use std::process::Command;

/// The seven probes that have tracepoints, with their number of attach points.
const TRACEPOINT_PROBES: [(&str, usize); 7] = [
    ("packetloss", 1),
    ("tcpreset", 2),
    ("tcpretrans", 2),
    ("netiftxlat", 4),
    ("softirq", 3),
    ("socketlatency", 4),
    ("kernellatency", 5),
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

fn no_kprobes() -> bool {
    !std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists()
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
        assert!(
            m.iter().all(|m| m == "tp_btf" || m == "raw_tp"),
            "{p} must run on tracepoints here: {m:?}"
        );
    }
    // kernellatency's optional tx side (fentry/kprobes only) is reported, the probe runs.
    let (_, _, text) = line(&out, "kernellatency");
    let tx = text
        .split_once("[tx: ")
        .unwrap_or_else(|| panic!("kernellatency does not report its tx side: {text}"))
        .1;
    if no_kprobes() {
        assert!(
            tx.starts_with("unavailable: fentry tx_start_fentry"),
            "{tx}"
        );
        assert!(tx.contains("kprobe tx_start_kprobe"), "{tx}");
        assert!(tx.contains("CONFIG_KPROBES"), "{tx}");
    }
    let (_, avail, why) = line(&out, "virtcmdlatency");
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
    if no_kprobes() {
        assert!(why.contains("CONFIG_KPROBES"), "{why}");
    } else {
        eprintln!("SKIP virtcmdlatency kprobe reason: this kernel has kprobes");
    }
}

#[test]
fn fentry_fallbacks_alone_fail_with_the_kernels_refusal() {
    if !privileged("fentry_fallbacks_alone_fail_with_the_kernels_refusal") {
        return;
    }
    let (rc, out, err) = probes_output(Some(&restricted("fentry")));
    assert_eq!(rc, 0, "{err}");
    let mut refused = 0;
    for (p, _) in TRACEPOINT_PROBES {
        let (on, avail, why) = line(&out, p);
        assert_eq!(on, "metrics");
        if avail == "yes" {
            // A kernel that runs fentry: the plan then uses it and nothing else.
            assert!(
                attach_methods(why)
                    .iter()
                    .all(|m| m == "fentry" || m == "fexit"),
                "{p}: {why}"
            );
            continue;
        }
        assert!(why.starts_with("no attach method works: "), "{p}: {why}");
        assert!(
            !why.contains("tp_btf") && !why.contains("raw_tp") && !why.contains("kprobe"),
            "{p}: only fentry alternatives may be tried: {why}"
        );
        assert!(why.contains("fentry ") || why.contains("fexit "), "{why}");
        if why.contains("EPERM") {
            refused += 1;
        }
    }
    // This machine refuses fentry programs at load: every probe says so.
    if refused == 0 {
        eprintln!("SKIP fentry EPERM: this kernel does not refuse fentry");
    } else {
        assert_eq!(refused, TRACEPOINT_PROBES.len(), "{out}");
    }
}

#[test]
fn kprobe_fallbacks_alone_fail_where_kprobes_are_not_built_in() {
    if !privileged("kprobe_fallbacks_alone_fail_where_kprobes_are_not_built_in") {
        return;
    }
    if !no_kprobes() && !skip("kprobe fallbacks", "this kernel has kprobes") {
        return;
    }
    let (rc, out, err) = probes_output(Some(&restricted("kprobe")));
    assert_eq!(rc, 0, "{err}");
    for (p, _) in TRACEPOINT_PROBES {
        let (on, avail, why) = line(&out, p);
        assert_eq!((on, avail), ("metrics", "no"), "{p}: {why}");
        assert!(
            why.starts_with("no attach method works: kprobe "),
            "{p}: {why}"
        );
        assert!(
            why.contains("kernel built without CONFIG_KPROBES"),
            "{p}: {why}"
        );
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
