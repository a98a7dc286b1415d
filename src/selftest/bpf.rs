//! The loader part of the self-test: `selftest.bpf.o` (embedded) loaded through our loader,
//! every program attached the way its section says, the programs triggered by traffic in a
//! namespace of our own, and their counters read back. Programs that serve the same purpose
//! form an attach plan (ordered alternatives, e.g. `tp_btf/kfree_skb` then `raw_tp/kfree_skb`);
//! a program the kernel cannot run is `unsupported` when a later alternative covers it.
//! A program the kernel refuses outright (the loader says `Unsupported`, e.g. no kprobes
//! compiled in, or fentry refused with EPERM) is `unsupported:load` / `unsupported:attach`
//! with the reason in the detail, and so is its plan when no alternative can run.

use std::net::{SocketAddrV4, TcpListener, TcpStream, UdpSocket};

use nix::sys::socket::{setsockopt, sockopt};
use std::time::Duration;

use super::netns::{self, TestNs};
use super::{Check, Status, A_ADDR, CLOSED_PORT, N, PAYLOAD};
use crate::bpf::attach::{Link, Method};
use crate::bpf::{self, KError, LoadOptions};

fn method_name(m: Method) -> &'static str {
    match m {
        Method::PerfLink => "perf_link",
        Method::PerfIoctl => "perf_ioctl",
        Method::RawTracepointOpen => "raw_tracepoint_open",
        Method::BtfLink => "btf_link",
        Method::KprobePmu { perf_link: true } => "kprobe_pmu+perf_link",
        Method::KprobePmu { perf_link: false } => "kprobe_pmu+perf_ioctl",
        Method::KprobeEvents { perf_link: true } => "kprobe_events+perf_link",
        Method::KprobeEvents { perf_link: false } => "kprobe_events+perf_ioctl",
        Method::Tcx => "tcx",
    }
}

/// What each program of selftest.bpf.o counts into (`hits` slot), how many hits the trigger
/// must produce at least, and its plan (programs earlier in the list are preferred).
struct Prog {
    name: &'static str,
    slot: u32,
    plan: &'static str,
}

const PROGS: &[Prog] = &[
    Prog {
        name: "tcp_send_reset",
        slot: 0,
        plan: "tcp_reset",
    },
    Prog {
        name: "kfree_skb_btf",
        slot: 1,
        plan: "kfree_skb",
    },
    Prog {
        name: "kfree_skb_raw",
        slot: 2,
        plan: "kfree_skb",
    },
    Prog {
        name: "net_dev_queue_a",
        slot: 3,
        plan: "net_dev_queue",
    },
    Prog {
        name: "net_dev_queue_b",
        slot: 3,
        plan: "net_dev_queue",
    },
    // getppid(2): fentry/fexit preferred, kprobes as the fallback (a plan's members must be
    // adjacent).
    Prog {
        name: "fentry_getppid",
        slot: 6,
        plan: "getppid_entry",
    },
    Prog {
        name: "kprobe_getppid",
        slot: 4,
        plan: "getppid_entry",
    },
    Prog {
        name: "fexit_getppid",
        slot: 7,
        plan: "getppid_exit",
    },
    Prog {
        name: "kretprobe_getppid",
        slot: 5,
        plan: "getppid_exit",
    },
];

/// Why a program has no link: the stage (`load`/`attach`), the one-line error, and whether
/// the loader called it unsupported on this kernel (rather than a failure).
#[derive(Clone)]
struct NoLink {
    stage: &'static str,
    error: String,
    unsupported: bool,
}

impl NoLink {
    fn new(stage: &'static str, e: &KError) -> NoLink {
        NoLink {
            stage,
            error: format!("{stage}: {}", short(e)),
            unsupported: e.is_unsupported(),
        }
    }
}

/// One line of an error (the verifier log tail goes to the detail after it).
fn short(e: &KError) -> String {
    let s = e.to_string();
    let first = s.lines().next().unwrap_or("").to_string();
    let last = s.lines().last().unwrap_or("").trim().to_string();
    if first == last {
        first
    } else {
        format!("{first} … {last}")
    }
}

/// Traffic that fires every program: a refused TCP connect (tcp_send_reset, kfree_skb) and
/// UDP to a closed port (kfree_skb, net_dev_queue), all on lo of a fresh namespace; and N
/// getppid(2) calls (the kprobes and fentry/fexit programs).
fn trigger(ns: &TestNs) -> Result<(), String> {
    for _ in 0..N {
        nix::unistd::getppid();
    }
    ns.run(|| -> Result<(), String> {
        netns::disable_ipv6();
        netns::lo_up().map_err(|e| format!("lo up: {e}"))?;
        netns::lo_addr(A_ADDR, 32).map_err(|e| format!("addr: {e}"))?;
        let to = SocketAddrV4::new(A_ADDR, CLOSED_PORT).into();
        for _ in 0..N {
            let _ = TcpStream::connect_timeout(&to, Duration::from_secs(5));
        }
        // Resets from a full socket (SO_LINGER 0 then close: tcp_send_active_reset): the
        // tracepoint fires for these on every kernel; before 6.10 it skipped socket-less
        // resets such as the answer to a SYN on a closed port.
        let l = TcpListener::bind(SocketAddrV4::new(A_ADDR, 0)).map_err(|e| e.to_string())?;
        let at = l.local_addr().map_err(|e| e.to_string())?;
        for _ in 0..N {
            let c = TcpStream::connect_timeout(&at, Duration::from_secs(5))
                .map_err(|e| format!("connect {at}: {e}"))?;
            let (_srv, _) = l.accept().map_err(|e| e.to_string())?;
            let zero = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            setsockopt(&c, sockopt::Linger, &zero).map_err(|e| e.to_string())?;
            drop(c);
        }
        let s = UdpSocket::bind(SocketAddrV4::new(A_ADDR, 0)).map_err(|e| e.to_string())?;
        for _ in 0..N {
            s.send_to(&[0u8; PAYLOAD], to).map_err(|e| e.to_string())?;
        }
        Ok(())
    })
    .map_err(|e| e.to_string())?
}

pub fn checks(out: &mut Vec<Check>) {
    let Some(obj) = bpf::embedded::object("selftest") else {
        out.push(Check::new(
            "bpf.load",
            Status::Fail,
            "",
            "selftest.bpf.o is not embedded in this build",
        ));
        return;
    };
    let loaded = match bpf::load(obj, &LoadOptions::default()) {
        Ok(l) => l,
        Err(e) => {
            let status = if e.is_unsupported() || matches!(e, KError::MissingBtf { .. }) {
                Status::Unsupported
            } else {
                Status::Fail
            };
            out.push(Check::new("bpf.load", status, "", e.to_string()));
            return;
        }
    };
    let btf_note = match &loaded.btf_error {
        Some(e) => format!("object BTF not loaded ({})", short(e)),
        None => "object BTF loaded".to_string(),
    };
    out.push(Check::new(
        "bpf.load",
        Status::Pass,
        "",
        format!(
            "selftest.bpf.o: {} maps, {} CO-RE relocations, {btf_note}",
            loaded.maps().len(),
            loaded.core.len()
        ),
    ));

    // Attach every program that loaded; keep the links until the counters are read.
    let mut links: Vec<(usize, Result<Link, NoLink>)> = Vec::new();
    for (i, p) in PROGS.iter().enumerate() {
        let r = match loaded.program(p.name) {
            Ok(_) => loaded.attach(p.name).map_err(|e| NoLink::new("attach", &e)),
            Err(e) => Err(NoLink::new("load", &e)),
        };
        links.push((i, r));
    }
    let ns = TestNs::new().map_err(|e| e.to_string());
    let trig = ns.as_ref().map_err(Clone::clone).and_then(trigger);
    let hits = loaded.map("hits");
    let count = |slot: u32| -> u64 {
        hits.as_ref()
            .ok()
            .and_then(|m| m.get_u64(&slot.to_ne_bytes()).ok())
            .unwrap_or(0)
    };
    // Per program: attached how, and was it observed?
    let mut prog_ok = vec![false; PROGS.len()];
    let mut rows = Vec::new();
    for (i, r) in &links {
        let p = &PROGS[*i];
        let attached_in_slot = links
            .iter()
            .filter(|(j, r)| PROGS[*j].slot == p.slot && r.is_ok())
            .count() as u64;
        let need = N * attached_in_slot;
        let row = match (r, &trig) {
            (Err(e), _) if e.unsupported => {
                (Status::Unsupported, e.stage.to_string(), e.error.clone())
            }
            (Err(e), _) => (Status::Fail, String::new(), e.error.clone()),
            (Ok(_), Err(e)) => (Status::Fail, String::new(), format!("trigger: {e}")),
            (Ok(l), Ok(())) => {
                let m = method_name(l.method());
                let mut fb = String::new();
                if matches!(
                    l.method(),
                    Method::PerfIoctl
                        | Method::KprobePmu { perf_link: false }
                        | Method::KprobeEvents { perf_link: false }
                ) {
                    fb = " (BPF_LINK_CREATE(BPF_PERF_EVENT) refused: fell back to PERF_EVENT_IOC_SET_BPF)".into();
                }
                let c = count(p.slot);
                if c >= need {
                    prog_ok[*i] = true;
                    (
                        Status::Pass,
                        m.to_string(),
                        format!("attached via {m}{fb}; hits[{}]={c} (>= {need})", p.slot),
                    )
                } else {
                    (
                        Status::Fail,
                        m.to_string(),
                        format!(
                            "attached via {m}{fb}; hits[{}]={c}, expected >= {need}",
                            p.slot
                        ),
                    )
                }
            }
        };
        rows.push(row);
    }
    // Plans: a program that failed is unsupported if a later alternative of its plan works.
    let mut plans: Vec<&str> = PROGS.iter().map(|p| p.plan).collect();
    plans.dedup();
    let unsupported: Vec<bool> = rows.iter().map(|r| r.0 == Status::Unsupported).collect();
    for (i, (status, how, detail)) in rows.into_iter().enumerate() {
        let p = &PROGS[i];
        let covered = PROGS
            .iter()
            .enumerate()
            .any(|(j, q)| j > i && q.plan == p.plan && prog_ok[j]);
        let (status, how) = if status != Status::Pass && covered {
            (Status::Unsupported, "fallback".to_string())
        } else {
            (status, how)
        };
        let how = if how.is_empty() {
            detail.split(':').next().unwrap_or("").to_string()
        } else {
            how
        };
        out.push(Check::new(&format!("bpf.{}", p.name), status, &how, detail));
    }
    for plan in plans {
        let members: Vec<usize> = (0..PROGS.len())
            .filter(|&i| PROGS[i].plan == plan)
            .collect();
        let chosen = members.iter().find(|&&i| prog_ok[i]);
        let tried: Vec<String> = members
            .iter()
            .take_while(|&&i| !prog_ok[i])
            .map(|&i| match &links[i].1 {
                Err(e) => format!("{}: {}", PROGS[i].name, e.error),
                Ok(_) => format!("{}: attached but not triggered", PROGS[i].name),
            })
            .collect();
        out.push(match chosen {
            Some(&i) => Check::new(
                &format!("bpf.plan.{plan}"),
                Status::Pass,
                PROGS[i].name,
                if tried.is_empty() {
                    format!("first choice {} works", PROGS[i].name)
                } else {
                    format!("{} after fallbacks: {}", PROGS[i].name, tried.join("; "))
                },
            ),
            None if members.iter().all(|&i| unsupported[i]) => Check::new(
                &format!("bpf.plan.{plan}"),
                Status::Unsupported,
                "",
                format!(
                    "no alternative can run on this kernel: {}",
                    tried.join("; ")
                ),
            ),
            None => Check::new(
                &format!("bpf.plan.{plan}"),
                Status::Fail,
                "",
                format!("no alternative works: {}", tried.join("; ")),
            ),
        });
    }
    drop(links);
}
