//! A kernel with no BTF anywhere, for real: the binary runs in a private mount namespace where
//! an empty file is bind-mounted over /sys/kernel/btf/vmlinux, no bpf.btfPath is given and this
//! kernel's release is not in the embedded vendor-btf table. Then the exporter says once, at
//! start, which eBPF probes cannot run, what it tried and how to fix it; the procfs/netlink
//! collectors and the BTF-free flow probe keep working, and the self-test reports the eBPF
//! checks `unsupported` (not `fail`).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::BIN;

/// The probes whose objects have CO-RE relocations (every eBPF probe but flow and
/// virtcmdlatency, which only lose their BTF-id programs).
const NEED_BTF: [&str; 8] = [
    "packetloss",
    "tcpreset",
    "tcpretrans",
    "netiftxlat",
    "softirq",
    "socketlatency",
    "kernellatency",
    "biolatency",
];

/// `None` (skipped, reason printed) unless root with unshare and the kernel's BTF to hide.
fn empty_file(test: &str) -> Option<std::path::PathBuf> {
    if !common::privileged_with(test, &["unshare"]) {
        return None;
    }
    if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        common::skip(test, "this kernel has no /sys/kernel/btf/vmlinux to hide");
        return None;
    }
    let p = std::env::temp_dir().join(format!("ns-empty-btf-{}-{test}", std::process::id()));
    std::fs::File::create(&p).unwrap();
    Some(p)
}

/// `netsleuth ARGS` with /sys/kernel/btf/vmlinux hidden (its own mount namespace).
fn hidden(empty: &std::path::Path, args: &[&str]) -> Command {
    let mut c = Command::new("unshare");
    c.args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind "$0" /sys/kernel/btf/vmlinux && exec "$@""#)
        .arg(empty)
        .arg(BIN)
        .args(args);
    c
}

fn outcomes(json: &str) -> Vec<(String, String, String)> {
    let doc: serde_json::Value = serde_json::from_str(json).expect("valid JSON");
    doc["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| {
            (
                c["check"].as_str().unwrap().to_string(),
                c["outcome"].as_str().unwrap().to_string(),
                c["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn assert_help(msg: &str) {
    for want in NEED_BTF.iter().copied().chain([
        "/sys/kernel/btf/vmlinux: BTF header: truncated",
        "no configured BTF path (bpf.btfPath)",
        "no embedded vendor-btf for release",
        "CONFIG_DEBUG_INFO_BTF=y",
        "bpf.btfPath set to this kernel's BTF",
        "vendor-btf/README.md",
        "collectors are not affected",
    ]) {
        assert!(msg.contains(want), "{want:?} missing from: {msg}");
    }
    for runs in ["flow", "virtcmdlatency"] {
        assert!(
            !msg.contains(&format!(" {runs},")) && !msg.contains(&format!(" {runs} (")),
            "{runs} needs no BTF: {msg}"
        );
    }
}

#[test]
fn selftest_without_any_kernel_btf() {
    const T: &str = "selftest_without_any_kernel_btf";
    let Some(empty) = empty_file(T) else { return };
    let out = hidden(&empty, &["selftest", "--json"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let hid = outcomes(&text);
    let normal = outcomes(
        &String::from_utf8(
            Command::new(BIN)
                .args(["selftest", "--json"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap(),
    );
    std::fs::remove_file(&empty).unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let get = |name: &str| hid.iter().find(|c| c.0 == name);
    let (_, outcome, detail) = get("btf.source").expect("a btf.source check");
    assert_eq!(outcome, "unsupported");
    assert_help(detail);
    let normal_src = normal.iter().find(|c| c.0 == "btf.source").unwrap();
    assert_eq!(normal_src.1, "pass:sysfs", "{normal_src:?}");
    // The collectors and the flow probe: exactly as with BTF.
    let unaffected = |n: &str| n.starts_with("metrics.") || n.starts_with("probe.flow");
    let a: Vec<_> = normal
        .iter()
        .filter(|c| unaffected(&c.0))
        .map(|c| (&c.0, &c.1))
        .collect();
    let b: Vec<_> = hid
        .iter()
        .filter(|c| unaffected(&c.0))
        .map(|c| (&c.0, &c.1))
        .collect();
    assert!(a.len() >= 8, "{a:?}");
    assert_eq!(a, b);
    // Every check of a probe needing BTF, and the loader's own, is unsupported with the reason.
    for (name, outcome, detail) in &hid {
        let needs = NEED_BTF
            .iter()
            .any(|p| name == &format!("probe.{p}") || name.starts_with(&format!("probe.{p}.")));
        if needs || name == "bpf.load" {
            assert_eq!(outcome, "unsupported", "{name}: {detail}");
            assert!(detail.contains("no kernel BTF found"), "{name}: {detail}");
        }
    }
    assert!(hid.iter().all(|c| !c.1.starts_with("fail")), "{hid:?}");
}

#[test]
fn serve_without_any_kernel_btf_says_so_once_and_collects() {
    const T: &str = "serve_without_any_kernel_btf_says_so_once_and_collects";
    let Some(empty) = empty_file(T) else { return };
    let cfg = std::env::temp_dir().join(format!("ns-no-btf-{}.yaml", std::process::id()));
    let mut f = std::fs::File::create(&cfg).unwrap();
    writeln!(
        f,
        "metrics:\n  probes: [tcp, udp, packetloss, tcpreset, flow]"
    )
    .unwrap();
    let cfg_arg = format!("--config.file={}", cfg.display());
    // The child is killed and waited for below.
    #[allow(clippy::zombie_processes)]
    let mut child = hidden(
        &empty,
        &["--web.listen-address=127.0.0.1:0", cfg_arg.as_str()],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let (addr, mut log, rx) =
        common::await_address(&mut child, Duration::from_secs(20), "netsleuth");
    // The collectors answer although no eBPF probe could start.
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let r = common::http_get(&addr, "/metrics", &[]);
        let body = String::from_utf8(r.2).unwrap();
        if body.contains("netsleuth_tcp_") || Instant::now() > deadline {
            break body;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    std::thread::sleep(Duration::from_millis(300));
    log.extend(rx.try_iter());
    let _ = child.kill();
    let _ = child.wait();
    std::fs::remove_file(&empty).unwrap();
    std::fs::remove_file(&cfg).unwrap();
    let all = log.join("\n");
    assert!(
        body.contains("netsleuth_tcp_"),
        "no tcp collector series:\n{body}\n{all}"
    );
    assert!(
        body.contains("netsleuth_udp_"),
        "no udp collector series:\n{body}\n{all}"
    );
    let help: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("no kernel BTF for"))
        .collect();
    assert_eq!(help.len(), 1, "one start-up message:\n{all}");
    // Only the configured probes that need BTF are named.
    let msg = help[0];
    assert!(msg.contains("ERROR"), "{msg}");
    assert!(
        msg.contains("these eBPF probes cannot run: packetloss, tcpreset ("),
        "{msg}"
    );
    for want in [
        "CONFIG_DEBUG_INFO_BTF=y",
        "bpf.btfPath",
        "vendor-btf/README.md",
    ] {
        assert!(msg.contains(want), "{want}: {msg}");
    }
}
