//! Attaching programs. Each method returns a [`Link`] owning the kernel
//! objects that keep the program attached; dropping it detaches. Methods fail
//! with typed errors (`Unsupported`, `NotFound`) so a probe can try its next
//! alternative.
//!
//! - `tracepoint/`: `perf_event_open(PERF_TYPE_TRACEPOINT)` + a BPF perf link
//!   (`BPF_LINK_CREATE`), or `PERF_EVENT_IOC_SET_BPF` where links are missing.
//! - `raw_tp/`: `BPF_RAW_TRACEPOINT_OPEN`.
//! - `tp_btf/`, `fentry/`, `fexit/`: `BPF_LINK_CREATE`, else `BPF_RAW_TRACEPOINT_OPEN`.
//! - `kprobe/`, `kretprobe/`: the kprobe PMU, else `kprobe_events` in tracefs.
//! - `tc`/`tcx/*` classifiers: per device, with [`attach_tcx`] (`BPF_LINK_CREATE` with
//!   `BPF_TCX_INGRESS/EGRESS`, 6.6+); the cls_bpf fallback is rtnetlink (`crate::tc`).
#![forbid(unsafe_code)]

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::abi::{self, LinkCreateAttr, PerfEventAttr, RawTpOpenAttr};
use super::error::{KError, KResult};
use super::fs;
use super::map::raw;
use super::object::ProgramKind;
use super::prog::Program;
use super::sys;

/// How a link was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// perf event + `BPF_LINK_CREATE(BPF_PERF_EVENT)`.
    PerfLink,
    /// perf event + `PERF_EVENT_IOC_SET_BPF`.
    PerfIoctl,
    /// `BPF_RAW_TRACEPOINT_OPEN`.
    RawTracepointOpen,
    /// `BPF_LINK_CREATE` for a BTF-attached program (tp_btf, fentry, fexit).
    BtfLink,
    /// A kprobe/kretprobe perf event from the kprobe PMU, attached like a
    /// tracepoint: a BPF perf link, or `PERF_EVENT_IOC_SET_BPF` when
    /// `perf_link` is false.
    KprobePmu {
        /// Attached through `BPF_LINK_CREATE(BPF_PERF_EVENT)`.
        perf_link: bool,
    },
    /// The legacy path: a `kprobe_events` entry in tracefs, its tracepoint
    /// perf event attached the same way.
    KprobeEvents {
        /// Attached through `BPF_LINK_CREATE(BPF_PERF_EVENT)`.
        perf_link: bool,
    },
    /// A tcx link on a device (`BPF_LINK_CREATE(BPF_TCX_INGRESS/EGRESS)`): owned by our fd,
    /// gone when the process dies, appended after the programs already there.
    Tcx,
}

/// An attachment; dropping it detaches the program.
#[derive(Debug)]
pub struct Link {
    method: Method,
    /// BPF link fd (or raw tracepoint fd).
    link: Option<OwnedFd>,
    /// The perf event, for perf-based attachments.
    perf: Option<OwnedFd>,
    /// A `kprobe_events` entry to remove on drop.
    kprobe_event: Option<String>,
}

impl Link {
    /// A link that is one BPF fd (a BPF link or a raw tracepoint fd).
    fn bpf_fd(method: Method, fd: OwnedFd) -> Link {
        Link {
            method,
            link: Some(fd),
            perf: None,
            kprobe_event: None,
        }
    }

    /// How it was attached.
    pub fn method(&self) -> Method {
        self.method
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Some(p) = &self.perf {
            let _ = sys::perf_ioctl(p.as_fd(), abi::PERF_EVENT_IOC_DISABLE, 0);
        }
        self.link.take();
        self.perf.take();
        if let Some(ev) = self.kprobe_event.take() {
            if let Ok(t) = fs::tracefs() {
                if let Ok(mut f) = std::fs::OpenOptions::new()
                    .append(true)
                    .open(t.join("kprobe_events"))
                {
                    let _ = writeln!(f, "-:{ev}");
                }
            }
        }
    }
}

/// A `kprobe_events` entry written during an attach that has not succeeded yet: removed on
/// drop unless the link took it over.
struct KprobeEntry<'a> {
    events: &'a std::path::Path,
    full: Option<String>,
}

impl Drop for KprobeEntry<'_> {
    fn drop(&mut self) {
        if let Some(full) = self.full.take() {
            let _ = std::fs::OpenOptions::new()
                .append(true)
                .open(self.events)
                .and_then(|mut f| writeln!(f, "-:{full}"));
        }
    }
}

static NO_PERF_LINK: AtomicBool = AtomicBool::new(false);

/// Forces (`true`) or re-enables (`false`) the `PERF_EVENT_IOC_SET_BPF` path
/// for perf-based attachments, as on kernels without BPF perf links (tests).
pub fn disable_perf_link(disabled: bool) {
    NO_PERF_LINK.store(disabled, Ordering::Relaxed);
}

/// Attaches `prog` the way its section says.
pub fn attach(prog: &Program) -> KResult<Link> {
    match prog.kind().clone() {
        ProgramKind::Tracepoint { category, name } => attach_tracepoint(prog, &category, &name),
        ProgramKind::RawTracepoint { name } | ProgramKind::RawTracepointWritable { name } => {
            attach_raw_tracepoint(prog, &name)
        }
        ProgramKind::TpBtf { .. } | ProgramKind::Fentry { .. } | ProgramKind::Fexit { .. } => {
            attach_btf(prog)
        }
        ProgramKind::Kprobe { func, offset } => attach_kprobe(prog, &func, offset, false),
        ProgramKind::Kretprobe { func } => attach_kprobe(prog, &func, 0, true),
        k => Err(KError::unsupported(
            format!("attach {}", prog.name()),
            format!("no automatic attach for {k:?}"),
        )),
    }
}

fn perf_attach(prog: &Program, pfd: OwnedFd, kprobe_event: Option<String>) -> KResult<Link> {
    let mut method = Method::PerfIoctl;
    let mut link = None;
    if !NO_PERF_LINK.load(Ordering::Relaxed) {
        let mut a = LinkCreateAttr {
            prog_fd: raw(prog),
            target_fd: raw(&pfd),
            attach_type: abi::ATTACH_PERF_EVENT,
            ..Default::default()
        };
        match sys::bpf_fd(abi::BPF_LINK_CREATE, &mut a) {
            Ok(fd) => {
                link = Some(fd);
                method = Method::PerfLink;
            }
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINVAL) | Some(libc::EOPNOTSUPP)
                ) =>
            {
                log::debug!("BPF perf link unavailable ({e}); using PERF_EVENT_IOC_SET_BPF");
                NO_PERF_LINK.store(true, Ordering::Relaxed);
            }
            Err(e) => {
                return Err(KError::io(
                    format!("attach {}: BPF_LINK_CREATE", prog.name()),
                    e,
                ))
            }
        }
    }
    if link.is_none() {
        sys::perf_ioctl(
            pfd.as_fd(),
            abi::PERF_EVENT_IOC_SET_BPF,
            u64::from(raw(prog)),
        )
        .map_err(|e| KError::io(format!("attach {}: PERF_EVENT_IOC_SET_BPF", prog.name()), e))?;
    }
    sys::perf_ioctl(pfd.as_fd(), abi::PERF_EVENT_IOC_ENABLE, 0)
        .map_err(|e| KError::io(format!("attach {}: PERF_EVENT_IOC_ENABLE", prog.name()), e))?;
    Ok(Link {
        method,
        link,
        perf: Some(pfd),
        kprobe_event,
    })
}

fn perf_open(attr: &PerfEventAttr, what: &str) -> KResult<OwnedFd> {
    sys::perf_event_open(attr, -1, 0, -1, 0)
        .map_err(|e| KError::io(format!("perf_event_open {what}"), e))
}

/// Attaches a tracepoint program to `category:name`.
pub fn attach_tracepoint(prog: &Program, category: &str, name: &str) -> KResult<Link> {
    let id = fs::tracepoint_id(category, name)?;
    let attr = PerfEventAttr {
        type_: abi::PERF_TYPE_TRACEPOINT,
        size: abi::PERF_ATTR_SIZE,
        config: id,
        ..Default::default()
    };
    let pfd = perf_open(&attr, &format!("tracepoint {category}:{name}"))?;
    perf_attach(prog, pfd, None)
}

/// Attaches a raw tracepoint program to `name`.
pub fn attach_raw_tracepoint(prog: &Program, name: &str) -> KResult<Link> {
    let c = format!("{name}\0");
    let mut a = RawTpOpenAttr {
        name: sys::addr(c.as_bytes()),
        prog_fd: raw(prog),
        ..Default::default()
    };
    match sys::bpf_fd(abi::BPF_RAW_TRACEPOINT_OPEN, &mut a) {
        Ok(fd) => Ok(Link::bpf_fd(Method::RawTracepointOpen, fd)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Err(KError::NotFound {
            what: "raw tracepoint",
            name: name.into(),
        }),
        Err(e) => Err(KError::io(
            format!("attach {}: BPF_RAW_TRACEPOINT_OPEN", prog.name()),
            e,
        )),
    }
}

/// Attaches a tp_btf/fentry/fexit program (target fixed at load).
pub fn attach_btf(prog: &Program) -> KResult<Link> {
    let mut a = LinkCreateAttr {
        prog_fd: raw(prog),
        attach_type: prog.kind().expected_attach_type(),
        ..Default::default()
    };
    match sys::bpf_fd(abi::BPF_LINK_CREATE, &mut a) {
        Ok(fd) => return Ok(Link::bpf_fd(Method::BtfLink, fd)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            log::debug!(
                "BPF_LINK_CREATE for {} refused ({e}); raw tracepoint open",
                prog.name()
            );
        }
        Err(e)
            if e.raw_os_error() == Some(abi::ENOTSUPP)
                || e.raw_os_error() == Some(libc::EOPNOTSUPP) =>
        {
            return Err(KError::unsupported(
                format!("attach {}", prog.name()),
                format!("{e}: no BPF trampoline support"),
            ))
        }
        Err(e) => {
            return Err(KError::io(
                format!("attach {}: BPF_LINK_CREATE", prog.name()),
                e,
            ))
        }
    }
    let mut a = RawTpOpenAttr {
        name: 0,
        prog_fd: raw(prog),
        ..Default::default()
    };
    let fd = sys::bpf_fd(abi::BPF_RAW_TRACEPOINT_OPEN, &mut a).map_err(|e| {
        KError::io(
            format!("attach {}: BPF_RAW_TRACEPOINT_OPEN", prog.name()),
            e,
        )
    })?;
    Ok(Link::bpf_fd(Method::RawTracepointOpen, fd))
}

/// Attaches a `tc`/`tcx` classifier to device `ifindex` (of the caller's network namespace)
/// as a tcx link, at ingress or egress, after the programs already attached there (it never
/// replaces or reorders them). [`KError::Unsupported`] on kernels before 6.6 (no tcx),
/// [`KError::NotFound`] when the device is gone.
pub fn attach_tcx(prog: &Program, ifindex: u32, egress: bool) -> KResult<Link> {
    let mut a = LinkCreateAttr {
        prog_fd: raw(prog),
        target_fd: ifindex,
        attach_type: if egress {
            abi::ATTACH_TCX_EGRESS
        } else {
            abi::ATTACH_TCX_INGRESS
        },
        ..Default::default()
    };
    match sys::bpf_fd(abi::BPF_LINK_CREATE, &mut a) {
        Ok(fd) => Ok(Link::bpf_fd(Method::Tcx, fd)),
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Err(KError::NotFound {
            what: "network device",
            name: format!("ifindex {ifindex}"),
        }),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EINVAL) | Some(libc::EOPNOTSUPP)
            ) =>
        {
            Err(KError::unsupported(
                format!("attach {}", prog.name()),
                format!("{e}: no tcx links (kernel 6.6+)"),
            ))
        }
        Err(e) => Err(KError::io(
            format!("attach {}: BPF_LINK_CREATE(BPF_TCX_*)", prog.name()),
            e,
        )),
    }
}

/// Whether this kernel has tcx links: a tcx link to ifindex 0 is refused with `ENODEV` where
/// tcx exists (the device lookup fails) and `EINVAL` where the attach type is unknown.
pub fn tcx_available(prog: &Program) -> bool {
    matches!(attach_tcx(prog, 0, false), Err(KError::NotFound { .. }))
}

const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe";

/// Parses `config:<bit>` from the PMU's `format/retprobe`.
pub fn retprobe_bit(s: &str) -> Option<u32> {
    s.trim().strip_prefix("config:")?.parse().ok()
}

static KPROBE_SEQ: AtomicU64 = AtomicU64::new(0);

/// Attaches a kprobe/kretprobe program to `func+offset`: the kprobe PMU, else
/// a `kprobe_events` entry; [`KError::Unsupported`] when the kernel has neither
/// (built without `CONFIG_KPROBES`).
pub fn attach_kprobe(prog: &Program, func: &str, offset: u64, ret: bool) -> KResult<Link> {
    let what = if ret { "kretprobe" } else { "kprobe" };
    let pmu = std::path::Path::new(KPROBE_PMU);
    if let Ok(t) = std::fs::read_to_string(pmu.join("type")) {
        let ty: u32 = t.trim().parse().unwrap_or(0);
        let mut config = 0;
        if ret {
            let bit = std::fs::read_to_string(pmu.join("format/retprobe"))
                .ok()
                .and_then(|s| retprobe_bit(&s))
                .ok_or_else(|| {
                    KError::unsupported(what, "kprobe PMU has no retprobe format bit")
                })?;
            config |= 1 << bit;
        }
        let name = format!("{func}\0");
        let attr = PerfEventAttr {
            type_: ty,
            size: abi::PERF_ATTR_SIZE,
            config,
            config1: sys::addr(name.as_bytes()),
            config2: offset,
            ..Default::default()
        };
        return match sys::perf_event_open(&attr, -1, 0, -1, 0) {
            Ok(pfd) => perf_attach(prog, pfd, None).map(|mut l| {
                l.method = Method::KprobePmu {
                    perf_link: l.method == Method::PerfLink,
                };
                l
            }),
            Err(e)
                if e.raw_os_error() == Some(libc::ENOENT)
                    || e.raw_os_error() == Some(libc::EINVAL) =>
            {
                Err(KError::NotFound {
                    what: "kernel function (kprobe)",
                    name: func.into(),
                })
            }
            Err(e) => Err(KError::io(format!("perf_event_open {what} {func}"), e)),
        };
    }
    // Legacy: tracefs kprobe_events.
    let tracefs = fs::tracefs().ok();
    let events = tracefs.map(|t| t.join("kprobe_events"));
    let Some(events) = events.filter(|p| p.exists()) else {
        return Err(KError::unsupported(
            format!("{what} {func}"),
            format!("no kprobe PMU ({KPROBE_PMU}/type) and no kprobe_events in tracefs: kernel built without CONFIG_KPROBES"),
        ));
    };
    let safe: String = func
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let ev = format!(
        "netsleuth_{}_{}_{safe}_{offset:x}",
        std::process::id(),
        KPROBE_SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let group = if ret { "kretprobes" } else { "kprobes" };
    let line = if ret {
        format!("r:{group}/{ev} {func}")
    } else {
        format!("p:{group}/{ev} {func}+{offset:#x}")
    };
    std::fs::OpenOptions::new()
        .append(true)
        .open(&events)
        .and_then(|mut f| writeln!(f, "{line}"))
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::EINVAL) => KError::NotFound {
                what: "kernel function (kprobe)",
                name: func.into(),
            },
            _ => KError::io(format!("write {line:?} to kprobe_events"), e),
        })?;
    let full = format!("{group}/{ev}");
    // From here on the entry exists: remove it again on any failure below.
    let mut entry = KprobeEntry {
        events: &events,
        full: Some(full.clone()),
    };
    let id = fs::tracepoint_id(group, &ev)?;
    let attr = PerfEventAttr {
        type_: abi::PERF_TYPE_TRACEPOINT,
        size: abi::PERF_ATTR_SIZE,
        config: id,
        ..Default::default()
    };
    let pfd = perf_open(&attr, &full)?;
    let mut l = perf_attach(prog, pfd, None)?;
    // The link owns the entry now and removes it when dropped.
    l.kprobe_event = entry.full.take();
    l.method = Method::KprobeEvents {
        perf_link: l.method == Method::PerfLink,
    };
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_retprobe_bit() {
        assert_eq!(retprobe_bit("config:0\n"), Some(0));
        assert_eq!(retprobe_bit("config:9"), Some(9));
        assert_eq!(retprobe_bit("bogus"), None);
    }
}
