//! What this process may do: its capability sets (from `/proc/self/status`) and the sysctls
//! that gate BPF and perf events, so that an EPERM is reported as what is missing
//! ("the process lacks CAP_BPF ...") instead of a guess.
#![forbid(unsafe_code)]

/// Capability numbers (linux/capability.h) of the ones netsleuth uses or talks about.
pub const CAP_DAC_OVERRIDE: u32 = 1;
pub const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_SYS_RESOURCE: u32 = 24;
pub const CAP_SYSLOG: u32 = 34;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// `CAP_BPF` for 39 (`cap_39` beyond the table).
pub fn name(cap: u32) -> String {
    NAMES
        .get(cap as usize)
        .map(|s| s.to_string())
        .unwrap_or_else(|| format!("cap_{cap}"))
}

/// A capability by name (`CAP_BPF`, `cap_bpf`, `bpf`).
pub fn from_name(n: &str) -> Option<u32> {
    let up = n.trim().to_ascii_uppercase();
    let full = if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    };
    NAMES.iter().position(|c| *c == full).map(|i| i as u32)
}

/// The capability sets of a process (bit n = capability n).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Caps {
    pub effective: u64,
    pub permitted: u64,
    pub bounding: u64,
    pub ambient: u64,
    pub uid: u32,
}

impl Caps {
    /// This process' sets (`/proc/self/status`); all empty if it cannot be read.
    pub fn current() -> Caps {
        std::fs::read_to_string("/proc/self/status")
            .map(|s| Caps::parse(&s))
            .unwrap_or_default()
    }

    /// Parse a `/proc/<pid>/status` text.
    pub fn parse(status: &str) -> Caps {
        let mut c = Caps::default();
        for l in status.lines() {
            let Some((k, v)) = l.split_once(':') else {
                continue;
            };
            let hex = || u64::from_str_radix(v.trim(), 16).unwrap_or(0);
            match k {
                "CapEff" => c.effective = hex(),
                "CapPrm" => c.permitted = hex(),
                "CapBnd" => c.bounding = hex(),
                "CapAmb" => c.ambient = hex(),
                // Real, effective, saved, fs: the effective one.
                "Uid" => {
                    c.uid = v
                        .split_whitespace()
                        .nth(1)
                        .and_then(|u| u.parse().ok())
                        .unwrap_or(0)
                }
                _ => {}
            }
        }
        c
    }

    /// Whether `cap` is effective.
    pub fn has(&self, cap: u32) -> bool {
        cap < 64 && self.effective & (1 << cap) != 0
    }

    /// CAP_PERFMON, or CAP_SYS_ADMIN which the kernel accepts in its place.
    pub fn perfmon_capable(&self) -> bool {
        self.has(CAP_PERFMON) || self.has(CAP_SYS_ADMIN)
    }

    /// CAP_BPF, or CAP_SYS_ADMIN which the kernel accepts in its place.
    pub fn bpf_capable(&self) -> bool {
        self.has(CAP_BPF) || self.has(CAP_SYS_ADMIN)
    }

    /// What netsleuth cannot do without the capabilities it lacks: one line per missing
    /// capability, naming it and what goes missing (the unit grants them all). `bpf`: eBPF
    /// probes are configured.
    pub fn missing_for_netsleuth(&self, bpf: bool) -> Vec<String> {
        let mut out = Vec::new();
        // CAP_SYS_ADMIN (setns): the inventory says so when it finds it cannot enter.
        if !self.has(CAP_SYS_PTRACE) {
            out.push("CAP_SYS_PTRACE is missing: /proc/<pid>/ns/net, io and fd of other users' processes are unreadable, so their namespaces (containers, pods) are not found and not exported, and io/fd count only this user's processes".to_string());
        }
        if self.uid != 0 && !self.has(CAP_DAC_READ_SEARCH) && !self.has(CAP_DAC_OVERRIDE) {
            out.push("CAP_DAC_READ_SEARCH is missing: /proc/<pid>/fd and /proc/<pid>/io of other users' processes are unreadable (the io and fd probes fail) and so are the container runtimes' state folders (containers and pods are not named: kind=\"process\")".to_string());
        }
        if bpf && !self.bpf_capable() {
            out.push("CAP_BPF is missing: the eBPF probes cannot create maps or load programs (netsleuth_probe_up 0)".to_string());
        }
        if bpf && !self.perfmon_capable() {
            out.push("CAP_PERFMON is missing: the eBPF probes' tracing programs cannot be loaded or attached (netsleuth_probe_up 0)".to_string());
        }
        out
    }

    /// The effective set as names (`none` when empty, `all` when full).
    pub fn effective_names(&self) -> String {
        names_of(self.effective)
    }
}

/// A set as `CAP_A,CAP_B`; `none` when empty, `all (root)` for every known capability.
pub fn names_of(set: u64) -> String {
    let all = (1u64 << NAMES.len()) - 1;
    if set & all == all {
        return "all".into();
    }
    let v: Vec<String> = (0..64).filter(|i| set & (1 << i) != 0).map(name).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(",")
    }
}

/// A sysctl under /proc/sys (`kernel.unprivileged_bpf_disabled`), trimmed; `None` if unreadable.
pub fn sysctl(key: &str) -> Option<String> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// What kind of operation failed with EPERM/EACCES, by its description.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// bpf(): maps, BTF, a socket-filter probe program.
    Bpf,
    /// bpf() loading or attaching a tracing program (tp_btf, raw_tp, fentry, kprobe).
    BpfTracing,
    /// bpf() loading or attaching a traffic-control program (tc, tcx): the kernel wants
    /// CAP_NET_ADMIN (or CAP_SYS_ADMIN) besides CAP_BPF.
    BpfNet,
    /// perf_event_open (tracepoints, kprobes).
    Perf,
    /// bpf() commands only CAP_SYS_ADMIN may use (enumerating programs by id, BPF_ENABLE_STATS).
    BpfAdmin,
    /// mount (tracefs, bpffs).
    Mount,
    /// Anything else (a file).
    File,
}

impl Op {
    /// Classify a failed operation from its description ("map x: create", "load program p",
    /// "perf_event_open tracepoint ...", "mount -t tracefs ...").
    pub fn of(what: &str) -> Op {
        let w = what.to_ascii_lowercase();
        if w.starts_with("mount") {
            Op::Mount
        } else if ["get_next_id", "get_fd_by_id", "enable_stats"]
            .iter()
            .any(|c| w.contains(c))
        {
            Op::BpfAdmin
        } else if w.contains("tc program") {
            Op::BpfNet
        } else if w.contains("perf_event_open") || w.contains("kprobe_events") {
            Op::Perf
        } else if w.contains("program") || w.starts_with("attach") || w.contains("link") {
            Op::BpfTracing
        } else if w.starts_with("map") || w.contains("btf") || w.contains("bpf") {
            Op::Bpf
        } else {
            Op::File
        }
    }
}

/// Why `op` was refused, from what this process holds and the kernel's settings: names the
/// missing capability and the sysctl that makes it necessary.
pub fn diagnose(op: Op) -> String {
    diagnose_with(op, &Caps::current(), &sysctl)
}

/// [`diagnose`] for given capability sets and sysctls (testable).
pub fn diagnose_with(op: Op, caps: &Caps, sysctl: &dyn Fn(&str) -> Option<String>) -> String {
    let admin = caps.has(CAP_SYS_ADMIN);
    let bpf = caps.has(CAP_BPF) || admin;
    let perfmon = caps.has(CAP_PERFMON) || admin;
    let held = format!("effective capabilities: {}", caps.effective_names());
    let ubd = sysctl("kernel.unprivileged_bpf_disabled");
    let paranoid = sysctl("kernel.perf_event_paranoid");
    let sc = |k: &str, v: &Option<String>| match v {
        Some(v) => format!("{k}={v}"),
        None => format!("{k} unreadable"),
    };
    let mut missing = Vec::new();
    let mut because = Vec::new();
    match op {
        Op::Bpf => {
            if !bpf {
                missing.push("CAP_BPF");
                because.push(format!(
                    "{}: bpf() needs CAP_BPF (or CAP_SYS_ADMIN)",
                    sc("kernel.unprivileged_bpf_disabled", &ubd)
                ));
            }
        }
        Op::BpfTracing => {
            if !bpf {
                missing.push("CAP_BPF");
                because.push(format!(
                    "{}; tracing programs always need CAP_BPF",
                    sc("kernel.unprivileged_bpf_disabled", &ubd)
                ));
            }
            if !perfmon {
                missing.push("CAP_PERFMON");
                because.push(
                    "tracing programs (tp_btf, raw_tp, fentry, kprobe) need CAP_PERFMON".into(),
                );
            }
        }
        Op::BpfNet => {
            if !bpf {
                missing.push("CAP_BPF");
                because.push(format!(
                    "{}; BPF programs need CAP_BPF",
                    sc("kernel.unprivileged_bpf_disabled", &ubd)
                ));
            }
            if !caps.has(CAP_NET_ADMIN) && !admin {
                missing.push("CAP_NET_ADMIN");
                because.push(
                    "traffic-control programs (tc, tcx: the flow probe) need CAP_NET_ADMIN".into(),
                );
            }
        }
        Op::Perf => {
            if !perfmon {
                missing.push("CAP_PERFMON");
                because.push(format!(
                    "{}: kernel tracepoint and kprobe events need CAP_PERFMON",
                    sc("kernel.perf_event_paranoid", &paranoid)
                ));
            }
            if !bpf {
                missing.push("CAP_BPF");
                because.push("attaching a BPF program needs CAP_BPF".into());
            }
        }
        Op::BpfAdmin => {
            if !admin {
                missing.push("CAP_SYS_ADMIN");
                because
                    .push("this bpf() command needs CAP_SYS_ADMIN (CAP_BPF is not enough)".into());
            }
        }
        Op::Mount => {
            if !admin {
                missing.push("CAP_SYS_ADMIN");
                because.push("mount() needs CAP_SYS_ADMIN".into());
            }
        }
        Op::File => {
            if !caps.has(CAP_DAC_READ_SEARCH) && !caps.has(CAP_DAC_OVERRIDE) && caps.uid != 0 {
                missing.push("CAP_DAC_READ_SEARCH");
                because.push("reading files of other users needs CAP_DAC_READ_SEARCH".into());
            }
        }
    }
    if missing.is_empty() {
        let lockdown = std::fs::read_to_string("/sys/kernel/security/lockdown")
            .ok()
            .and_then(|s| {
                s.split_whitespace()
                    .find(|w| w.starts_with('['))
                    .map(|w| w.trim_matches(|c| c == '[' || c == ']').to_string())
            });
        let mut s = format!(
            "the process holds the capabilities this needs ({held}); refused by kernel policy"
        );
        match lockdown.as_deref() {
            Some("none") | None => s.push_str(" (an LSM such as SELinux/AppArmor, or seccomp)"),
            Some(l) => s.push_str(&format!(" (kernel lockdown={l}, or an LSM)")),
        }
        return s;
    }
    format!(
        "the process lacks {} ({held}; {})",
        missing.join(" and "),
        because.join("; ")
    )
}

/// Logs a warning for each capability netsleuth lacks here ([`Caps::missing_for_netsleuth`]).
pub fn warn_missing(bpf: bool) {
    let c = Caps::current();
    for m in c.missing_for_netsleuth(bpf) {
        log::warn!("{m} (effective capabilities: {})", c.effective_names());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: &str) -> Option<String> {
        Some("2".into())
    }

    #[test]
    fn parses_status() {
        let s = "Name:\tx\nUid:\t65534\t65534\t65534\t65534\nCapPrm:\t000000c000280004\nCapEff:\t000000c000280004\nCapBnd:\t000001ffffffffff\nCapAmb:\t000000c000280004\n";
        let c = Caps::parse(s);
        assert_eq!(c.uid, 65534);
        assert!(c.has(CAP_BPF) && c.has(CAP_PERFMON) && c.has(CAP_SYS_ADMIN));
        assert!(c.has(CAP_SYS_PTRACE) && c.has(CAP_DAC_READ_SEARCH));
        assert!(!c.has(CAP_NET_ADMIN));
        assert_eq!(
            c.effective_names(),
            "CAP_DAC_READ_SEARCH,CAP_SYS_PTRACE,CAP_SYS_ADMIN,CAP_PERFMON,CAP_BPF"
        );
        assert_eq!(names_of(0x1ff_ffff_ffff), "all");
        assert_eq!(from_name("cap_bpf"), Some(39));
        assert_eq!(from_name("PERFMON"), Some(38));
        assert_eq!(from_name("cap_nope"), None);
    }

    #[test]
    fn names_what_is_missing() {
        let nobody = Caps {
            uid: 65534,
            ..Caps::default()
        };
        let d = diagnose_with(Op::of("map rl_tat: create"), &nobody, &none);
        assert!(d.contains("lacks CAP_BPF"), "{d}");
        assert!(d.contains("kernel.unprivileged_bpf_disabled=2"), "{d}");
        assert!(!d.contains("MEMLOCK"), "{d}");
        let only_bpf = Caps {
            effective: 1 << CAP_BPF,
            uid: 65534,
            ..Caps::default()
        };
        let d = diagnose_with(Op::of("load program kfree_skb_btf"), &only_bpf, &none);
        assert!(d.contains("lacks CAP_PERFMON"), "{d}");
        assert!(!d.contains("CAP_BPF and"), "{d}");
        let d = diagnose_with(Op::of("load tc program flow_ingress"), &only_bpf, &none);
        assert!(d.contains("lacks CAP_NET_ADMIN"), "{d}");
        assert!(!d.contains("CAP_PERFMON"), "{d}");
        let net = Caps {
            effective: 1 << CAP_BPF | 1 << CAP_NET_ADMIN,
            uid: 65534,
            ..Caps::default()
        };
        let d = diagnose_with(Op::of("load tc program flow_ingress"), &net, &none);
        assert!(d.contains("holds the capabilities"), "{d}");
        let d = diagnose_with(Op::of("perf_event_open tracepoint"), &only_bpf, &none);
        assert!(d.contains("lacks CAP_PERFMON"), "{d}");
        assert!(d.contains("kernel.perf_event_paranoid=2"), "{d}");
        let d = diagnose_with(Op::of("BPF_PROG_GET_NEXT_ID"), &only_bpf, &none);
        assert!(d.contains("lacks CAP_SYS_ADMIN"), "{d}");
        let d = diagnose_with(
            Op::of("mount -t tracefs /sys/kernel/tracing"),
            &only_bpf,
            &none,
        );
        assert!(d.contains("lacks CAP_SYS_ADMIN"), "{d}");
        let both = Caps {
            effective: 1 << CAP_BPF | 1 << CAP_PERFMON,
            uid: 65534,
            ..Caps::default()
        };
        let d = diagnose_with(Op::BpfTracing, &both, &none);
        assert!(d.contains("holds the capabilities"), "{d}");
        let m = nobody.missing_for_netsleuth(true).join("\n");
        for c in [
            "CAP_SYS_PTRACE",
            "CAP_DAC_READ_SEARCH",
            "CAP_BPF",
            "CAP_PERFMON",
        ] {
            assert!(m.contains(&format!("{c} is missing")), "{m}");
        }
        let unit = Caps {
            effective: 1 << CAP_SYS_ADMIN | 1 << CAP_SYS_PTRACE | 1 << CAP_DAC_READ_SEARCH,
            uid: 65534,
            ..Caps::default()
        };
        assert!(unit.missing_for_netsleuth(true).is_empty());
    }
}
