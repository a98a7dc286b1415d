//! Program load: map fds already patched in, `attach_btf_id` for BTF-attached
//! kinds from the kernel's BTF, object BTF (func/line info) when loaded, and
//! the verifier log on failure (first without a log, then with one that grows
//! on ENOSPC). A poisoned CO-RE call the verifier trips on is named.
#![forbid(unsafe_code)]

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::abi::{self, GetIdAttr, InfoAttr, ProgInfo, ProgLoadAttr};
use super::btf::Btf;
use super::core::CoreOutcome;
use super::error::{KError, KResult};
use super::insn::{self, POISON_HELPER};
use super::map::raw;
use super::object::{Object, ProgramKind};
use super::reloc::LinkedProgram;
use super::sys;

/// A loaded program. Dropping it (and every link using it) unloads it.
#[derive(Debug)]
pub struct Program {
    fd: OwnedFd,
    name: String,
    kind: ProgramKind,
}

/// What a program load needs besides the program.
pub struct LoadCtx<'a> {
    /// Loaded object BTF, if the kernel took it.
    pub btf_fd: Option<BorrowedFd<'a>>,
    /// Kernel BTF (for `attach_btf_id`).
    pub target: &'a Btf,
    /// Why `target`'s type ids are not the running kernel's (an embedded minimal BTF), if so:
    /// programs attached by BTF id are then refused with this reason.
    pub foreign_ids: Option<&'a str>,
    /// The object (to map instructions back to sections in error messages).
    pub obj: &'a Object,
    /// CO-RE outcomes (to name a poisoned relocation).
    pub core: &'a [CoreOutcome],
}

const LOG_START: usize = 64 * 1024;
const LOG_MAX: usize = (u32::MAX >> 8) as usize;

/// Whether we hold CAP_SYS_ADMIN or CAP_BPF (so EPERM means "the kernel
/// refuses", not "we may not").
pub fn privileged() -> bool {
    let Ok(s) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    s.lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 21) != 0 || caps & (1 << 39) != 0)
}

fn encode_func_info(p: &LinkedProgram) -> Vec<u8> {
    p.func_info
        .iter()
        .flat_map(|f| [f.insn_off, f.type_id])
        .flat_map(u32::to_ne_bytes)
        .collect()
}

fn encode_line_info(p: &LinkedProgram) -> Vec<u8> {
    p.line_info
        .iter()
        .flat_map(|l| [l.insn_off, l.file_name_off, l.line_off, l.line_col])
        .flat_map(u32::to_ne_bytes)
        .collect()
}

/// Instruction index of a poisoned call the verifier complained about.
pub fn poisoned_insn_in_log(log: &str) -> Option<usize> {
    let needle = format!("call unknown#{POISON_HELPER}");
    log.lines().find_map(|l| {
        if !l.contains(&needle) {
            return None;
        }
        l.split(':').next()?.trim().parse().ok()
    })
}

/// Maps a linked instruction back to a (section, section instruction) and finds
/// the poisoned CO-RE relocation there.
pub fn describe_poison(
    p: &LinkedProgram,
    obj: &Object,
    core: &[CoreOutcome],
    idx: usize,
) -> Option<String> {
    let (fname, start) = p
        .functions
        .iter()
        .filter(|(_, s)| *s <= idx)
        .max_by_key(|(_, s)| *s)?;
    let (sec, f) = obj.sections.iter().find_map(|s| {
        s.functions
            .iter()
            .find(|f| &f.name == fname)
            .map(|f| (s, f))
    })?;
    let sec_insn = f.insn_off + (idx - start);
    let o = core
        .iter()
        .find(|o| o.poisoned && o.section == sec.name && o.insn == sec_insn)?;
    Some(format!(
        "instruction {idx} ({fname}) is a poisoned CO-RE relocation: {o} — the kernel lacks {}[{}] and the code using it is reachable",
        o.type_name, o.access
    ))
}

/// Loads `p` (whose map fds must already be applied).
pub fn load(p: &LinkedProgram, ctx: &LoadCtx<'_>) -> KResult<Program> {
    let prog_type = p.kind.prog_type().ok_or_else(|| {
        KError::unsupported(
            format!("program {}", p.name),
            format!("unknown section {:?}", p.section_name),
        )
    })?;
    let mut attach_btf_id = 0;
    if let Some((target, kind)) = p.kind.attach_btf_target() {
        if let Some(why) = ctx.foreign_ids {
            return Err(KError::unsupported(format!("program {}", p.name), why));
        }
        attach_btf_id =
            ctx.target
                .find_by_name_kind(&target, kind)
                .ok_or_else(|| KError::NotFound {
                    what: match p.kind {
                        ProgramKind::TpBtf { .. } => "BTF tracepoint (btf_trace_*)",
                        _ => "kernel function in BTF",
                    },
                    name: target.clone(),
                })?;
    }
    let insns = insn::encode(&p.insns);
    let license = format!("{}\0", p.license.as_deref().unwrap_or("GPL"));
    let fi = encode_func_info(p);
    let li = encode_line_info(p);
    let mut a = ProgLoadAttr {
        prog_type,
        insn_cnt: p.insns.len() as u32,
        insns: sys::addr(&insns[..]),
        license: sys::addr(license.as_bytes()),
        prog_name: abi::obj_name(&p.name),
        expected_attach_type: p.kind.expected_attach_type(),
        attach_btf_id,
        ..Default::default()
    };
    if let Some(b) = ctx.btf_fd {
        a.prog_btf_fd = raw(&b);
        if !p.func_info.is_empty() {
            a.func_info_rec_size = 8;
            a.func_info = sys::addr(&fi[..]);
            a.func_info_cnt = p.func_info.len() as u32;
        }
        if !p.line_info.is_empty() {
            a.line_info_rec_size = 16;
            a.line_info = sys::addr(&li[..]);
            a.line_info_cnt = p.line_info.len() as u32;
        }
    }
    let attempt = |a: &mut ProgLoadAttr| {
        let mut tries = 0;
        loop {
            match sys::bpf_fd(abi::BPF_PROG_LOAD, a) {
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && tries < 5 => tries += 1,
                r => return r,
            }
        }
    };
    let first = match attempt(&mut a) {
        Ok(fd) => {
            return Ok(Program {
                fd,
                name: p.name.clone(),
                kind: p.kind.clone(),
            })
        }
        Err(e) => e,
    };
    // Retry with a log, growing it while the kernel says ENOSPC.
    let mut size = LOG_START;
    let (err, log) = loop {
        let mut buf = vec![0u8; size];
        let mut b = a;
        b.log_level = 1;
        b.log_buf = sys::addr_mut(&mut buf[..]);
        b.log_size = size as u32;
        match attempt(&mut b) {
            Ok(fd) => {
                // Loads with a log but not without: keep it, it is valid.
                return Ok(Program {
                    fd,
                    name: p.name.clone(),
                    kind: p.kind.clone(),
                });
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && size < LOG_MAX => {
                size = (size * 4).min(LOG_MAX);
            }
            Err(e) => break (e, abi::c_str(&buf)),
        }
    };
    let errno = err
        .raw_os_error()
        .unwrap_or(first.raw_os_error().unwrap_or(0));
    let tracing = matches!(
        p.kind,
        ProgramKind::Fentry { .. } | ProgramKind::Fexit { .. }
    );
    // Traffic-control programs need CAP_NET_ADMIN besides CAP_BPF: without it EPERM is ours,
    // and the message must say so, not blame the kernel's policy.
    let caps = crate::caps::Caps::current();
    if errno == libc::EPERM
        && matches!(p.kind, ProgramKind::SchedCls)
        && !caps.has(crate::caps::CAP_NET_ADMIN)
        && !caps.has(crate::caps::CAP_SYS_ADMIN)
    {
        return Err(KError::permission(
            format!("load tc program {}", p.name),
            &err,
        ));
    }
    // Tracing programs need CAP_PERFMON besides CAP_BPF: without it EPERM is ours, not the
    // kernel's policy.
    let may_trace = caps.perfmon_capable();
    if errno == libc::EPERM && privileged() && may_trace && (tracing || log.is_empty()) {
        return Err(KError::unsupported(
            format!("{} program {}", p.section_name, p.name),
            format!(
                "BPF_PROG_LOAD failed with EPERM although we hold CAP_BPF/CAP_SYS_ADMIN: this kernel refuses {} programs (lockdown, or no BPF trampoline/ftrace access)",
                p.section_name.split('/').next().unwrap_or("these")
            ),
        ));
    }
    if errno == libc::EPERM || errno == libc::EACCES && log.is_empty() {
        return Err(KError::permission(format!("load program {}", p.name), &err));
    }
    if errno == libc::ENOTSUP || errno == abi::ENOTSUPP {
        return Err(KError::unsupported(
            format!("{} program {}", p.section_name, p.name),
            format!("{err}: {}", log.lines().last().unwrap_or("")),
        ));
    }
    let core = poisoned_insn_in_log(&log).and_then(|i| describe_poison(p, ctx.obj, ctx.core, i));
    Err(KError::Verifier {
        prog: p.name.clone(),
        errno,
        log,
        core,
    })
}

impl Program {
    /// Program name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Section kind (decides how it attaches).
    pub fn kind(&self) -> &ProgramKind {
        &self.kind
    }

    /// Kernel-side info (id, name).
    pub fn info(&self) -> KResult<ProgInfo> {
        prog_info(self.fd.as_fd())
    }
}

impl AsFd for Program {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// `BPF_OBJ_GET_INFO_BY_FD` for a program.
pub fn prog_info(fd: BorrowedFd<'_>) -> KResult<ProgInfo> {
    let mut info = ProgInfo::default();
    let mut a = InfoAttr {
        bpf_fd: raw(&fd),
        info_len: std::mem::size_of::<ProgInfo>() as u32,
        info: sys::addr_mut(&mut info),
    };
    sys::bpf(abi::BPF_OBJ_GET_INFO_BY_FD, &mut a).map_err(|e| KError::io("prog info", e))?;
    Ok(info)
}

/// How the kernel's per-program run-time statistics are switched on.
#[derive(Debug)]
pub enum RunStats {
    /// Our `BPF_ENABLE_STATS` fd: on while it is held.
    Enabled(OwnedFd),
    /// `BPF_ENABLE_STATS` failed (the error) but `kernel.bpf_stats_enabled` is 1.
    Sysctl(String),
    /// Neither: `run_time_ns`/`run_cnt` stay 0. Why, for the log.
    Off(String),
}

/// Where the `kernel.bpf_stats_enabled` sysctl lives.
pub const BPF_STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl RunStats {
    /// Switches run-time stats on with `BPF_ENABLE_STATS`; if the kernel refuses, looks whether
    /// the `kernel.bpf_stats_enabled` sysctl has them on already (it is never written: that is
    /// the administrator's global setting).
    pub fn enable() -> RunStats {
        let e = match sys::enable_run_time_stats() {
            Ok(fd) => return RunStats::Enabled(fd),
            Err(e) => e,
        };
        match std::fs::read_to_string(BPF_STATS_SYSCTL) {
            Ok(v) if v.trim() == "1" => RunStats::Sysctl(format!("BPF_ENABLE_STATS: {e}")),
            Ok(v) => RunStats::Off(format!(
                "BPF_ENABLE_STATS failed ({e}) and {BPF_STATS_SYSCTL} is {}",
                v.trim()
            )),
            Err(r) => RunStats::Off(format!(
                "BPF_ENABLE_STATS failed ({e}) and {BPF_STATS_SYSCTL} cannot be read ({r})"
            )),
        }
    }

    /// Not switching stats on ourselves (`why`): they count only if the administrator has
    /// set `kernel.bpf_stats_enabled` (or another tool holds them on).
    pub fn observe(why: &str) -> RunStats {
        match std::fs::read_to_string(BPF_STATS_SYSCTL) {
            Ok(v) if v.trim() == "1" => RunStats::Sysctl(format!("{why}; {BPF_STATS_SYSCTL} is 1")),
            _ => RunStats::Off(why.to_string()),
        }
    }

    /// Whether the kernel is counting.
    pub fn on(&self) -> bool {
        !matches!(self, RunStats::Off(_))
    }
}

/// A program's (`run_time_ns`, `run_cnt`): totals since load, counted only while run-time
/// stats are on.
pub fn run_stats(fd: BorrowedFd<'_>) -> KResult<(u64, u64)> {
    let i = prog_info(fd)?;
    Ok((i.run_time_ns, i.run_cnt))
}

/// Every program loaded in the kernel: (id, name), by walking
/// `BPF_PROG_GET_NEXT_ID` and `BPF_OBJ_GET_INFO_BY_FD`.
pub fn loaded_programs() -> KResult<Vec<(u32, String)>> {
    let mut out = Vec::new();
    let mut id = 0;
    loop {
        let mut a = GetIdAttr {
            start_id: id,
            ..Default::default()
        };
        match sys::bpf(abi::BPF_PROG_GET_NEXT_ID, &mut a) {
            Ok(_) => id = a.next_id,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
            Err(e) => return Err(KError::io("BPF_PROG_GET_NEXT_ID", e)),
        }
        let mut g = GetIdAttr {
            start_id: id,
            ..Default::default()
        };
        let fd = match sys::bpf_fd(abi::BPF_PROG_GET_FD_BY_ID, &mut g) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue, // gone meanwhile
            Err(e) => return Err(KError::io("BPF_PROG_GET_FD_BY_ID", e)),
        };
        let info = prog_info(fd.as_fd())?;
        out.push((id, abi::c_str(&info.name)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_poisoned_call_in_log() {
        let log =
            "0: (b7) r1 = 0\n12: (85) call unknown#195896080\ninvalid func unknown#195896080\n";
        assert_eq!(poisoned_insn_in_log(log), Some(12));
        assert_eq!(poisoned_insn_in_log("0: (95) exit\n"), None);
    }

    #[test]
    fn poisoned_insn_is_mapped_back_to_its_relocation() {
        use super::super::core::CoreKind;
        let obj = Object::parse(super::super::embedded::object("loadertest").unwrap()).unwrap();
        let sec = "tracepoint/syscalls/sys_enter_getppid";
        let lp = super::super::reloc::link_program(&obj, "getppid_enter").unwrap();
        let core = [CoreOutcome {
            section: sec.into(),
            insn: 3,
            kind: CoreKind::FieldByteOffset,
            type_name: "sk_buff".into(),
            access: "0:1".into(),
            local_value: 8,
            target_value: 0,
            poisoned: true,
        }];
        let d = describe_poison(&lp, &obj, &core, 3).unwrap();
        assert!(
            d.contains("getppid_enter") && d.contains("sk_buff[0:1]"),
            "{d}"
        );
        assert!(describe_poison(&lp, &obj, &core, 4).is_none());
    }
}
