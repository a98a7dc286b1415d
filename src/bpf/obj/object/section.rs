//! What a program section name (`SEC("...")`) says: program type, attach point.

use super::super::btf::Kind;

/// What a program section name (`SEC("...")`) says about type and attach point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProgramKind {
    /// `tracepoint/<category>/<name>` or `tp/<category>/<name>`.
    Tracepoint {
        /// Tracepoint category (e.g. `tcp`).
        category: String,
        /// Tracepoint name (e.g. `tcp_send_reset`).
        name: String,
    },
    /// `raw_tp/<name>` or `raw_tracepoint/<name>`.
    RawTracepoint {
        /// Tracepoint name.
        name: String,
    },
    /// `raw_tp.w/<name>`.
    RawTracepointWritable {
        /// Tracepoint name.
        name: String,
    },
    /// `tp_btf/<name>`: needs `attach_btf_id` of `btf_trace_<name>`.
    TpBtf {
        /// Tracepoint name.
        name: String,
    },
    /// `fentry/<func>`.
    Fentry {
        /// Kernel function.
        func: String,
    },
    /// `fexit/<func>`.
    Fexit {
        /// Kernel function.
        func: String,
    },
    /// `kprobe/<func>[+off]`.
    Kprobe {
        /// Kernel function.
        func: String,
        /// Offset into it.
        offset: u64,
    },
    /// `kretprobe/<func>`.
    Kretprobe {
        /// Kernel function.
        func: String,
    },
    /// `perf_event`.
    PerfEvent,
    /// `tc`, `classifier`, `tcx/ingress`, `tcx/egress`: a traffic-control classifier
    /// (`BPF_PROG_TYPE_SCHED_CLS`), attached per device as a tcx link or a cls_bpf filter.
    SchedCls,
    /// Anything else; the kernel layer refuses to load it.
    Unknown(String),
}

impl ProgramKind {
    /// Parses a section name following libbpf's `section_defs` for the kinds we use.
    pub fn from_section(sec: &str) -> ProgramKind {
        let (prefix, rest) = sec.split_once('/').unwrap_or((sec, ""));
        let s = |x: &str| x.to_string();
        match prefix {
            "tracepoint" | "tp" => match rest.split_once('/') {
                Some((c, n)) if !c.is_empty() && !n.is_empty() => ProgramKind::Tracepoint {
                    category: s(c),
                    name: s(n),
                },
                _ => ProgramKind::Unknown(s(sec)),
            },
            "raw_tp" | "raw_tracepoint" if !rest.is_empty() => {
                ProgramKind::RawTracepoint { name: s(rest) }
            }
            "raw_tp.w" | "raw_tracepoint.w" if !rest.is_empty() => {
                ProgramKind::RawTracepointWritable { name: s(rest) }
            }
            "tp_btf" if !rest.is_empty() => ProgramKind::TpBtf { name: s(rest) },
            "fentry" if !rest.is_empty() => ProgramKind::Fentry { func: s(rest) },
            "fexit" if !rest.is_empty() => ProgramKind::Fexit { func: s(rest) },
            "kprobe" if !rest.is_empty() => {
                let (func, offset) = match rest.split_once('+') {
                    Some((f, o)) => {
                        let o = o
                            .strip_prefix("0x")
                            .map_or_else(|| o.parse().ok(), |h| u64::from_str_radix(h, 16).ok());
                        match o {
                            Some(o) => (f, o),
                            None => return ProgramKind::Unknown(s(sec)),
                        }
                    }
                    None => (rest, 0),
                };
                ProgramKind::Kprobe {
                    func: s(func),
                    offset,
                }
            }
            "kretprobe" if !rest.is_empty() => ProgramKind::Kretprobe { func: s(rest) },
            "perf_event" if rest.is_empty() => ProgramKind::PerfEvent,
            "tc" | "classifier" if rest.is_empty() => ProgramKind::SchedCls,
            "tcx" if rest == "ingress" || rest == "egress" => ProgramKind::SchedCls,
            _ => ProgramKind::Unknown(s(sec)),
        }
    }

    /// `enum bpf_prog_type` value, `None` for unknown sections.
    pub fn prog_type(&self) -> Option<u32> {
        use super::super::uapi::*;
        Some(match self {
            ProgramKind::Kprobe { .. } | ProgramKind::Kretprobe { .. } => PROG_TYPE_KPROBE,
            ProgramKind::Tracepoint { .. } => PROG_TYPE_TRACEPOINT,
            ProgramKind::PerfEvent => PROG_TYPE_PERF_EVENT,
            ProgramKind::SchedCls => PROG_TYPE_SCHED_CLS,
            ProgramKind::RawTracepoint { .. } => PROG_TYPE_RAW_TRACEPOINT,
            ProgramKind::RawTracepointWritable { .. } => PROG_TYPE_RAW_TRACEPOINT_WRITABLE,
            ProgramKind::TpBtf { .. } | ProgramKind::Fentry { .. } | ProgramKind::Fexit { .. } => {
                PROG_TYPE_TRACING
            }
            ProgramKind::Unknown(_) => return None,
        })
    }

    /// `enum bpf_attach_type` passed as `expected_attach_type` at load.
    pub fn expected_attach_type(&self) -> u32 {
        use super::super::uapi::*;
        match self {
            ProgramKind::TpBtf { .. } => ATTACH_TRACE_RAW_TP,
            ProgramKind::Fentry { .. } => ATTACH_TRACE_FENTRY,
            ProgramKind::Fexit { .. } => ATTACH_TRACE_FEXIT,
            _ => 0,
        }
    }

    /// For BTF-attached kinds: the kernel BTF name and kind to put in `attach_btf_id`.
    pub fn attach_btf_target(&self) -> Option<(String, Kind)> {
        match self {
            ProgramKind::TpBtf { name } => Some((format!("btf_trace_{name}"), Kind::Typedef)),
            ProgramKind::Fentry { func } | ProgramKind::Fexit { func } => {
                Some((func.clone(), Kind::Func))
            }
            _ => None,
        }
    }
}
