//! One program per tracepoint: where several running probes attached programs to the same
//! tracepoint with the same method (`tp_btf` with `tp_btf`, `raw_tp` with `raw_tp`), only the
//! first stays attached and each tail-calls the next through its one-slot program array
//! `next_<program>` (`bpf-asm/include/chain.h`). The kernel then dispatches one program per
//! event there instead of one per probe.
//!
//! Each probe keeps its own object, maps, `.rodata` and attach plan: a chain only decides which
//! program the kernel calls first. It is rebuilt whenever the probe set changes (start,
//! reload): [`unmerge`] gives every program of the previous set its own link back and empties
//! its slot, [`merge`] chains the new set's. A probe whose plan fell back to fentry or kprobes
//! has no chained program there (those programs end in no tail call) and stays apart.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;

use super::plan::RunningProbe;
use crate::bpf::object::ProgramKind;

/// A tracepoint where programs of several probes run as one: the method, the tracepoint and
/// the programs (`probe/program`) in the order the kernel runs them (the first is attached).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    pub method: &'static str,
    pub tracepoint: String,
    pub programs: Vec<String>,
}

impl std::fmt::Display for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.method,
            self.tracepoint,
            self.programs.join(" -> ")
        )
    }
}

/// The name of program `prog`'s program array.
pub fn next_map(prog: &str) -> String {
    format!("next_{prog}")
}

/// A chainable program of a running probe.
struct Member<'a> {
    probe: &'a RunningProbe,
    prog: &'static str,
}

impl Member<'_> {
    fn label(&self) -> String {
        self.probe.program_label(self.prog)
    }
}

/// The attached programs of `probes` that can be chained, grouped by (method, tracepoint) in
/// probe order (then program name): those with a program array, on a tracepoint.
fn groups(probes: &[Arc<RunningProbe>]) -> BTreeMap<(&'static str, String), Vec<Member<'_>>> {
    let mut sorted: Vec<&RunningProbe> = probes
        .iter()
        .map(|p| p.as_ref())
        .filter(|p| p.flow.is_none() && !p.is_retired())
        .collect();
    sorted.sort_by_key(|p| p.cfg.kind);
    let mut out: BTreeMap<(&'static str, String), Vec<Member<'_>>> = BTreeMap::new();
    for p in sorted {
        let mut progs: Vec<&'static str> = p.programs.clone();
        progs.sort_unstable();
        progs.dedup();
        for prog in progs {
            if p.loaded.map(&next_map(prog)).is_err() {
                continue;
            }
            let Ok(program) = p.loaded.program(prog) else {
                continue;
            };
            let key = match program.kind() {
                ProgramKind::TpBtf { name } => ("tp_btf", name.clone()),
                ProgramKind::RawTracepoint { name } => ("raw_tp", name.clone()),
                _ => continue,
            };
            out.entry(key).or_default().push(Member { probe: p, prog });
        }
    }
    out
}

/// Puts `to`'s program in `from`'s slot (`None`: empties it). `Err` says why not.
fn set_next(from: &Member<'_>, to: Option<&Member<'_>>) -> Result<(), String> {
    let m = from
        .probe
        .loaded
        .map(&next_map(from.prog))
        .map_err(|e| e.to_string())?;
    let key = 0u32.to_ne_bytes();
    match to {
        None => m.delete(&key).map(|_| ()).map_err(|e| e.to_string()),
        Some(t) => {
            let p = t.probe.loaded.program(t.prog).map_err(|e| e.to_string())?;
            let fd = p.as_fd().as_raw_fd() as u32;
            m.update(&key, &fd.to_ne_bytes(), 0)
                .map_err(|e| e.to_string())
        }
    }
}

/// Gives `m` its own link again if it has none; `Err` says why it cannot attach.
fn own_link(m: &Member<'_>) -> Result<(), String> {
    let mut links = m.probe.links.lock().unwrap_or_else(|e| e.into_inner());
    if links.iter().any(|(p, _)| *p == m.prog) {
        return Ok(());
    }
    let l = m.probe.loaded.attach(m.prog).map_err(|e| e.to_string())?;
    links.push((m.prog, l));
    Ok(())
}

/// Detaches `m`'s own link (its predecessor in the chain runs it now).
fn drop_link(m: &Member<'_>) {
    m.probe
        .links
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|(p, _)| *p != m.prog);
}

/// Chains the programs of `probes` that share a tracepoint and its method; returns the chains
/// made (tracepoints with one program are left as they are, their slot emptied). A slot that
/// cannot be set leaves the program after it attached on its own: it starts a chain of its own
/// with the programs after it.
pub fn merge(probes: &[Arc<RunningProbe>]) -> Vec<Chain> {
    let mut chains = Vec::new();
    for ((method, tracepoint), members) in groups(probes) {
        // A chain ends in an empty slot.
        if let Some(last) = members.last() {
            if let Err(e) = set_next(last, None) {
                log::warn!("eBPF chain {method} {tracepoint}: {}: {e}", last.label());
            }
        }
        let mut run: Vec<String> = Vec::new();
        for (i, m) in members.iter().enumerate() {
            let chained = i > 0
                && !run.is_empty()
                && {
                    // Off its own link first, then behind its predecessor: a packet in between
                    // misses it rather than running it twice.
                    drop_link(m);
                    match set_next(&members[i - 1], Some(m)) {
                        Ok(()) => true,
                        Err(e) => {
                            log::warn!(
                            "eBPF chain {method} {tracepoint}: {} cannot call {}: {e}; attached on its own",
                            members[i - 1].label(),
                            m.label()
                        );
                            false
                        }
                    }
                };
            if !chained {
                if let Err(e) = own_link(m) {
                    log::error!(
                        "eBPF chain {method} {tracepoint}: {} cannot attach: {e}",
                        m.label()
                    );
                    run.clear();
                    continue;
                }
                if run.len() > 1 {
                    chains.push(Chain {
                        method,
                        tracepoint: tracepoint.clone(),
                        programs: std::mem::take(&mut run),
                    });
                }
                run.clear();
            }
            run.push(m.label());
        }
        if run.len() > 1 {
            chains.push(Chain {
                method,
                tracepoint,
                programs: run,
            });
        }
    }
    chains
}

/// Undoes [`merge`] for `probes`: every chained program gets its own link back and every slot
/// is emptied, so that any of them can be retired (detached) without taking another probe's
/// programs with it. Each program is attached again just after its predecessor stops calling
/// it: a packet in between misses it rather than running it twice.
pub fn unmerge(probes: &[Arc<RunningProbe>]) {
    for ((method, tracepoint), members) in groups(probes) {
        for (i, m) in members.iter().enumerate() {
            if i > 0 {
                if let Err(e) = set_next(&members[i - 1], None) {
                    log::warn!(
                        "eBPF chain {method} {tracepoint}: {}: {e}",
                        members[i - 1].label()
                    );
                }
            }
            if let Err(e) = own_link(m) {
                log::error!(
                    "eBPF chain {method} {tracepoint}: {} cannot attach again: {e}",
                    m.label()
                );
            }
        }
        if let Some(last) = members.last() {
            let _ = set_next(last, None);
        }
    }
}

/// Empties every slot of one probe's chained programs (it is being detached: it must not keep
/// another probe's program alive, nor run it).
pub(super) fn clear_slots(p: &RunningProbe) {
    let key = 0u32.to_ne_bytes();
    for prog in &p.programs {
        if let Ok(m) = p.loaded.map(&next_map(prog)) {
            let _ = m.delete(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::ProbeKind;
    use super::*;

    /// The probes whose programs [`merge`] may chain on a shared tracepoint (their objects have
    /// program arrays).
    fn chainable_kinds() -> Vec<ProbeKind> {
        ProbeKind::ALL
            .iter()
            .copied()
            .filter(|k| {
                crate::bpf::embedded::object(k.probe().object())
                    .and_then(|o| crate::bpf::object::Object::parse(o).ok())
                    .is_some_and(|o| o.maps.iter().any(|m| m.name.starts_with("next_")))
            })
            .collect()
    }

    #[test]
    fn every_chained_program_has_its_array_and_a_tracepoint() {
        // Each `next_<prog>` map belongs to a tp_btf or raw_tp program of the same object,
        // and is a one-slot program array.
        let kinds = chainable_kinds();
        assert_eq!(
            kinds,
            [
                ProbeKind::PacketLoss,
                ProbeKind::NetifTxLat,
                ProbeKind::SocketLatency,
                ProbeKind::KernelLatency
            ]
        );
        for k in kinds {
            let o = crate::bpf::object::Object::parse(
                crate::bpf::embedded::object(k.probe().object()).unwrap(),
            )
            .unwrap();
            for m in o.maps.iter().filter(|m| m.name.starts_with("next_")) {
                // BPF_MAP_TYPE_PROG_ARRAY, one slot, a u32 key and a u32 program fd as the
                // value ([`set_next`] writes it).
                assert_eq!(
                    (m.map_type, m.max_entries, m.key_size, m.value_size),
                    (3, 1, 4, 4),
                    "{k:?} {}",
                    m.name
                );
                let prog = &m.name["next_".len()..];
                let p = o
                    .programs
                    .iter()
                    .find(|p| p.name == prog)
                    .unwrap_or_else(|| panic!("{k:?}: {} has no program {prog}", m.name));
                assert!(
                    matches!(
                        p.kind,
                        ProgramKind::TpBtf { .. } | ProgramKind::RawTracepoint { .. }
                    ),
                    "{k:?}: {prog} is {:?}",
                    p.kind
                );
            }
        }
    }
}
