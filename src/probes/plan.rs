//! The attach-plan runner: [`start_probe`] loads a probe's object with its `.rodata` and walks
//! its plan (for each attach point the alternatives in order, the first whose programs all
//! attach wins), and [`RunningProbe`], a loaded and attached probe.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::hist::per_cpu_sum;
use super::totals::ProbeState;
use super::{flow, rate_limit_globals, BpfProbeConfig, ProbeKind};
use crate::bpf::attach::Link;
use crate::bpf::target_btf::BtfSources;
use crate::bpf::{self, LoadOptions, Loaded};

/// One way to attach an attach point: the method (`tp_btf`, `raw_tp`, `fentry`/`fexit`,
/// `kprobe`/`kretprobe`) and the programs of the object that, all attached, make it (a
/// fallback may need several kernel functions for what one tracepoint sees).
pub type Alternative = (&'static str, &'static [&'static str]);

/// The links of an attach point's programs, each with its program's name.
pub type NamedLinks = Vec<(&'static str, Link)>;

/// Optional attach points: a named group of points the probe uses where all of them attach,
/// and reports unavailable (with every alternative's reason) elsewhere; the probe runs without.
pub type OptionalGroup = (&'static str, &'static [&'static [Alternative]]);

/// The attach methods by preference, as `attachMethods` names them: tracepoints (BTF-typed,
/// then raw), then the BPF trampoline (fentry/fexit), then kprobes (kprobe/kretprobe); for the
/// per-device `flow` probe tcx links, then cls_bpf filters (`tc`).
pub const METHODS: [&str; 6] = ["tp_btf", "raw_tp", "fentry", "kprobe", "tcx", "tc"];

/// The `attachMethods` name of an alternative's method (fexit is a fentry-family method,
/// kretprobe a kprobe one).
pub fn method_family(m: &str) -> &str {
    match m {
        "fexit" => "fentry",
        "kretprobe" => "kprobe",
        m => m,
    }
}

/// The attach point "the skb is freed" (`skb:kfree_skb`, else the functions it sits in:
/// sk_skb_reason_drop (6.11+), kfree_skb_reason (5.17+), kfree_skb), as the eight programs
/// `<prefix>_btf`, `<prefix>_raw`, `<prefix>_sk_reason_fentry`, `<prefix>_reason_fentry`,
/// `<prefix>_fentry` and the three kprobes of the same names that `bpf-asm/include`'s skb-free
/// macro defines; written once for every probe that clears in-flight state on a free
/// (netiftxlat, kernellatency) and, in its `drops` form, for packetloss.
macro_rules! skb_free_point {
    ($prefix:literal) => {
        &[
            ("tp_btf", &[concat!($prefix, "_btf")]),
            ("raw_tp", &[concat!($prefix, "_raw")]),
            ("fentry", &[concat!($prefix, "_sk_reason_fentry")]),
            ("fentry", &[concat!($prefix, "_reason_fentry")]),
            ("fentry", &[concat!($prefix, "_fentry")]),
            ("kprobe", &[concat!($prefix, "_sk_reason_kprobe")]),
            ("kprobe", &[concat!($prefix, "_reason_kprobe")]),
            ("kprobe", &[concat!($prefix, "_kprobe")]),
        ]
    };
    // Drop counting (packetloss): the tracepoint's programs named `<tp>_btf`/`<tp>_raw`, the
    // functions' `<prefix>_...`; no plain kfree_skb fentry (it cannot see the drop location).
    ($tp:literal, $prefix:literal, drops) => {
        &[
            ("tp_btf", &[concat!($tp, "_btf")]),
            ("raw_tp", &[concat!($tp, "_raw")]),
            ("fentry", &[concat!($prefix, "_sk_reason_fentry")]),
            ("fentry", &[concat!($prefix, "_reason_fentry")]),
            ("kprobe", &[concat!($prefix, "_sk_reason_kprobe")]),
            ("kprobe", &[concat!($prefix, "_reason_kprobe")]),
            ("kprobe", &[concat!($prefix, "_kprobe")]),
        ]
    };
}
pub(crate) use skb_free_point;

/// Event types with their own kernel token bucket (`RL_TYPES` in `ratelimit.h`).
pub const RL_TYPES: u32 = 8;

/// A loaded and attached probe.
pub struct RunningProbe {
    pub cfg: BpfProbeConfig,
    pub loaded: Loaded,
    /// How each attach point got attached (`tp_btf`, `raw_tp`...).
    pub methods: Vec<&'static str>,
    /// The alternative used for each attach point.
    pub attached: Vec<Alternative>,
    /// Each optional group: the methods used, or why it is unavailable here.
    pub optional: Vec<(&'static str, Result<Vec<&'static str>, String>)>,
    /// Each attached program's link (a program chained behind another probe's on its
    /// tracepoint has none: see [`super::chain`]).
    pub(super) links: Mutex<NamedLinks>,
    /// packetloss: drop reason value → name, from the kernel's BTF.
    pub reasons: Arc<BTreeMap<u64, String>>,
    /// The attached programs (of every attach point and attached optional group).
    pub programs: Vec<&'static str>,
    /// Detached for good and its counters moved into the totals of past probes.
    pub(super) retired: AtomicBool,
    /// flow: the devices it is attached to (per-device links, kept across reloads with the
    /// probe).
    pub flow: Option<Arc<flow::State>>,
}

impl RunningProbe {
    /// Detach now (also happens on drop).
    pub fn detach(&self) {
        self.links.lock().unwrap_or_else(|e| e.into_inner()).clear();
        super::chain::clear_slots(self);
        if let Some(f) = &self.flow {
            f.detach(&self.loaded);
        }
    }

    /// Detached for good (its counters are in the totals of past probes).
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::SeqCst)
    }

    /// The `program` label of one of its programs: `probe/program`.
    pub fn program_label(&self, prog: &str) -> String {
        format!("{}/{prog}", self.cfg.kind.name())
    }

    /// (`run_time_ns`, `run_cnt`) per attached program, from the kernel's run-time stats.
    pub fn run_stats(&self) -> Vec<(String, bpf::KResult<(u64, u64)>)> {
        self.programs
            .iter()
            .map(|name| {
                let r = self
                    .loaded
                    .program(name)
                    .and_then(|p| bpf::prog::run_stats(p.as_fd()));
                (self.program_label(name), r)
            })
            .collect()
    }

    /// Events suppressed by the kernel rate limit, per event type.
    pub fn suppressed(&self) -> bpf::KResult<BTreeMap<&'static str, u64>> {
        let m = self.loaded.map("events_suppressed")?;
        let mut out = BTreeMap::new();
        for t in 0..RL_TYPES {
            let Some(name) = super::event_type_of(self.cfg.kind, t as u8) else {
                continue;
            };
            let n: u64 = m
                .lookup_percpu(&t.to_ne_bytes())?
                .unwrap_or_default()
                .iter()
                .map(|v| u64::from_ne_bytes(v[..8].try_into().unwrap_or([0; 8])))
                .sum();
            *out.entry(name).or_default() += n;
        }
        Ok(out)
    }

    /// Ring buffer records lost so far.
    pub fn lost(&self) -> bpf::KResult<u64> {
        per_cpu_sum(&self.loaded, "events_lost")
    }

    /// Detach and fold its counters into the totals kept across probe sets (once).
    pub(super) fn retire(&self, totals: &ProbeState) {
        if self.retired.swap(true, Ordering::SeqCst) {
            return;
        }
        // Final figures first, then detach: nothing runs after the links are gone.
        self.detach();
        let lost = if self.cfg.events {
            self.lost().ok()
        } else {
            None
        };
        let suppressed = self.suppressed().unwrap_or_default();
        let runs = self.run_stats();
        totals.with(|c| {
            let name = self.cfg.kind.name();
            if let Some(n) = lost {
                *c.lost_base.entry(name).or_default() += n;
            }
            c.lost_now.remove(name);
            for (t, n) in suppressed {
                *c.suppressed_base.entry(t).or_default() += n;
            }
            for (label, r) in runs {
                if let Ok((ns, cnt)) = r {
                    let b = c.run_base.entry(label).or_default();
                    b.0 += ns;
                    b.1 += cnt;
                }
            }
        });
    }
}

/// Tries each alternative of an attach point in order (only the `only` methods, when given);
/// the error lists every alternative and why it failed.
pub fn attach_point(
    l: &Loaded,
    alts: &[Alternative],
    only: Option<&[String]>,
) -> Result<(NamedLinks, Alternative), String> {
    let mut why = Vec::new();
    for (method, progs) in alts {
        if let Some(only) = only {
            if !only.iter().any(|m| m == method_family(method)) {
                continue;
            }
        }
        let mut links = Vec::new();
        let mut failed = None;
        for prog in progs.iter() {
            match l.attach(prog) {
                Ok(link) => links.push((*prog, link)),
                Err(e) => {
                    failed = Some(format!("{method} {prog}: {e}"));
                    break;
                }
            }
        }
        match failed {
            None => return Ok((links, (*method, *progs))),
            Some(f) => why.push(f),
        }
    }
    if why.is_empty() {
        let m: Vec<&str> = alts.iter().map(|(m, _)| *m).collect();
        why.push(format!(
            "attachMethods excludes every method of this attach point ({})",
            m.join(", ")
        ));
    }
    Err(why.join("; "))
}

/// Why a probe cannot start. The kind tells "this build or configuration cannot"
/// from "the kernel refused" (the loader's typed [`bpf::KError`]); the message is the final one.
#[derive(Debug)]
pub enum StartError {
    /// No object of that name is embedded.
    NotEmbedded(&'static str),
    /// The args or the kernel's BTF do not give the object's `.rodata`.
    Config(String),
    /// The kernel refused the object (verifier, missing BTF, permission...).
    Load(bpf::KError),
    /// No alternative of an attach point attached; every alternative's reason.
    Attach(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::NotEmbedded(n) => write!(f, "{n}: BPF object not embedded in this build"),
            StartError::Config(e) => f.write_str(e),
            StartError::Load(e) => write!(f, "load: {e}"),
            StartError::Attach(e) => write!(f, "no attach method works: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

impl From<StartError> for String {
    fn from(e: StartError) -> String {
        e.to_string()
    }
}

/// The globals every probe object has: `emit_events`, `enable_stack`, the rate limit's
/// `rl_interval_ns` and `rl_depth_ns`, and latency probes' `threshold_ns`.
fn common_globals(cfg: &BpfProbeConfig) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut globals = vec![
        ("emit_events".to_string(), vec![u8::from(cfg.events)]),
        (
            "enable_stack".to_string(),
            vec![u8::from(cfg.events && cfg.enable_stack)],
        ),
    ];
    let (rl_interval, rl_depth) = if cfg.events {
        rate_limit_globals(cfg.rate_limit, cfg.burst)?
    } else {
        (0, 0)
    };
    globals.push((
        "rl_interval_ns".to_string(),
        rl_interval.to_ne_bytes().to_vec(),
    ));
    globals.push(("rl_depth_ns".to_string(), rl_depth.to_ne_bytes().to_vec()));
    if cfg.is_latency() {
        globals.push((
            "threshold_ns".to_string(),
            cfg.threshold_ns.to_ne_bytes().to_vec(),
        ));
    }
    Ok(globals)
}

/// The probes of `kinds` that cannot run at all without kernel BTF (their objects have CO-RE
/// relocations), in order; the others can still attach through methods that need no BTF.
pub fn probes_needing_btf(kinds: &[ProbeKind]) -> Vec<&'static str> {
    kinds
        .iter()
        .filter(|k| {
            bpf::embedded::object(k.probe().object())
                .and_then(|o| bpf::object::Object::parse(o).ok())
                .is_some_and(|o| bpf::loader::has_core_relos(&o))
        })
        .map(|k| k.name())
        .collect()
}

/// Where the eBPF probes' kernel BTF comes from (`kernel BTF: sysfs (/sys/kernel/btf/vmlinux)`),
/// or the one start-up message of a kernel without BTF anywhere naming the probes of `kinds`
/// that cannot run, the sources tried and the fixes ([`bpf::target_btf::missing_btf_help`]).
pub fn kernel_btf_summary(btf: &BtfSources, kinds: &[ProbeKind]) -> Result<String, String> {
    match bpf::target_btf::target(btf) {
        Ok(t) => Ok(match t.foreign_ids() {
            None => format!("kernel BTF: {}", t.describe()),
            Some(_) => format!(
                "kernel BTF: {} (CO-RE only: tp_btf/fentry need the kernel's own BTF, the probes use raw tracepoints and kprobes)",
                t.describe()
            ),
        }),
        Err(bpf::KError::MissingBtf { tried }) => Err(bpf::target_btf::missing_btf_help(
            &tried,
            &probes_needing_btf(kinds),
        )),
        Err(e) => Err(format!("kernel BTF: {e}")),
    }
}

/// Loads and attaches one probe. `Err` says why it cannot run here.
pub fn start_probe(cfg: &BpfProbeConfig, btf: &BtfSources) -> Result<RunningProbe, StartError> {
    let kind = cfg.kind;
    let d = kind.probe();
    let obj = bpf::embedded::object(d.object()).ok_or(StartError::NotEmbedded(d.name()))?;
    let mut globals = common_globals(cfg).map_err(StartError::Config)?;
    let setup = d.setup(cfg, btf).map_err(StartError::Config)?;
    if setup.own_globals_only {
        globals.clear();
    }
    globals.extend(setup.globals);
    let loaded = bpf::load(
        obj,
        &LoadOptions {
            btf: btf.clone(),
            globals,
            programs: cfg.attach_methods.as_ref().map(|only| {
                // Restricted plans load only the programs they may attach.
                kind.plan()
                    .iter()
                    .chain(kind.optional().iter().flat_map(|(_, p)| p.iter()))
                    .flat_map(|alts| alts.iter())
                    .filter(|(m, _)| only.iter().any(|o| o == method_family(m)))
                    .flat_map(|(_, progs)| progs.iter().map(|p| p.to_string()))
                    .collect()
            }),
            max_entries: setup.max_entries,
        },
    )
    .map_err(StartError::Load)?;
    let reasons = Arc::new(setup.names);
    if let Some(r) = d.attach_per_device(cfg, &loaded) {
        // Attached per device by the `flow-devices` thread (ProbeSet), not through the plan.
        let (alt, state) = r.map_err(StartError::Attach)?;
        return Ok(RunningProbe {
            cfg: cfg.clone(),
            loaded,
            methods: vec![alt.0],
            attached: vec![alt],
            optional: Vec::new(),
            links: Mutex::new(Vec::new()),
            reasons,
            programs: alt.1.to_vec(),
            retired: AtomicBool::new(false),
            flow: Some(state),
        });
    }
    let mut links = Vec::new();
    let mut attached = Vec::new();
    for alts in kind.plan() {
        let (l, a) = attach_point(&loaded, alts, cfg.attach_methods.as_deref())
            .map_err(StartError::Attach)?;
        links.extend(l);
        attached.push(a);
    }
    // The attached programs (run-time stats per program).
    let mut programs: Vec<&'static str> =
        attached.iter().flat_map(|a| a.1.iter().copied()).collect();
    let mut optional = Vec::new();
    for (what, points) in kind.optional() {
        let mut group = Vec::new();
        let mut ms = Vec::new();
        let mut progs = Vec::new();
        let r = points.iter().try_for_each(|alts| {
            let (l, a) = attach_point(&loaded, alts, cfg.attach_methods.as_deref())?;
            group.extend(l);
            ms.push(a.0);
            progs.extend(a.1.iter().copied());
            Ok::<(), String>(())
        });
        match r {
            Ok(()) => {
                links.extend(group);
                programs.extend(progs);
                optional.push((*what, Ok(ms)));
            }
            Err(e) => optional.push((*what, Err(e))),
        }
    }
    Ok(RunningProbe {
        cfg: cfg.clone(),
        loaded,
        methods: attached.iter().map(|(m, _)| *m).collect(),
        attached,
        optional,
        links: Mutex::new(links),
        reasons,
        programs,
        retired: AtomicBool::new(false),
        flow: None,
    })
}

/// For `netsleuth probes`: load, attach and detach at once; how it would attach here
/// (`[attach: <method per attach point>]`, then `[<optional group>: <methods> | unavailable:
/// <why>]`), or why it cannot run.
pub fn check(cfg: &BpfProbeConfig, btf: &BtfSources) -> Result<String, StartError> {
    let p = start_probe(cfg, btf)?;
    p.detach();
    Ok(crate::status::attach_summary(&p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probes::ProbeKind;

    #[test]
    fn plans_are_ordered_and_name_real_programs() {
        let rank = |m: &str| METHODS.iter().position(|k| *k == method_family(m)).unwrap();
        let last_resort = ["send_reset_noreason_btf", "send_reset_noreason_raw"];
        for kind in ProbeKind::ALL {
            let obj = crate::bpf::embedded::object(kind.name()).unwrap();
            let parsed = crate::bpf::object::Object::parse(obj).unwrap();
            let optional = kind.optional().iter().flat_map(|(_, points)| points.iter());
            for alts in kind.plan().iter().chain(optional) {
                let ranks: Vec<usize> = alts
                    .iter()
                    .filter(|(_, p)| !last_resort.contains(&p[0]))
                    .map(|(m, _)| rank(m))
                    .collect();
                assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "{kind:?}: {alts:?}");
                for (_, progs) in alts.iter() {
                    for p in progs.iter() {
                        assert!(
                            parsed.programs.iter().any(|x| x.name == *p),
                            "{kind:?}: no program {p}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn skb_free_point_names_the_eight_programs() {
        const P: &[Alternative] = skb_free_point!("drop");
        assert_eq!(P.len(), 8);
        assert_eq!(P[0], ("tp_btf", &["drop_btf"][..]));
        assert_eq!(P[4], ("fentry", &["drop_fentry"][..]));
        assert_eq!(P[7], ("kprobe", &["drop_kprobe"][..]));
    }
}
