//! Orchestration in libbpf's order: parse → set `.rodata` → CO-RE against the
//! kernel BTF → load sanitized object BTF (optional) → create maps (fill
//! global data, freeze `.rodata`) → link, patch map fds and load programs.
//! Program load failures are kept per program so a probe can fall back to an
//! alternative program in the same object.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use super::attach::{self, Link};
use super::btf::Btf;
use super::btf_load;
use super::core::{self, CoreOutcome};
use super::error::{KError, KResult};
use super::map::{Map, MapSpec};
use super::object::{MapOrigin, Object};
use super::perfbuf::PerfBuf;
use super::prog::{self, LoadCtx, Program};
use super::reloc;
use super::ringbuf::RingBuf;
use super::sys;
use super::target_btf::{self, BtfSources};

/// Options for [`load`].
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Where kernel BTF comes from.
    pub btf: BtfSources,
    /// `.rodata`/`.data` variables to set before load: (name, bytes).
    pub globals: Vec<(String, Vec<u8>)>,
    /// Only these programs (default: all).
    pub programs: Option<Vec<String>>,
    /// `max_entries` overrides by map name (e.g. ring buffer sizes).
    pub max_entries: Vec<(String, u32)>,
}

/// A loaded object: its maps and programs.
#[derive(Debug)]
pub struct Loaded {
    maps: Vec<Map>,
    programs: BTreeMap<String, Result<Program, KError>>,
    /// CO-RE outcomes (one per relocation).
    pub core: Vec<CoreOutcome>,
    /// Why object BTF was not loaded, if it was not (loading continued).
    pub btf_error: Option<KError>,
    _btf_fd: Option<OwnedFd>,
}

impl KError {
    /// A copy of this error (the io error keeps its kind and message).
    pub fn duplicate(&self) -> KError {
        match self {
            KError::Unsupported { what, why } => KError::unsupported(what.clone(), why.clone()),
            KError::NotFound { what, name } => KError::NotFound {
                what,
                name: name.clone(),
            },
            KError::MissingBtf { tried } => KError::MissingBtf {
                tried: tried.clone(),
            },
            KError::Verifier {
                prog,
                errno,
                log,
                core,
            } => KError::Verifier {
                prog: prog.clone(),
                errno: *errno,
                log: log.clone(),
                core: core.clone(),
            },
            KError::Permission { what, why } => KError::Permission {
                what: what.clone(),
                why: why.clone(),
            },
            KError::Io { what, source } => KError::Io {
                what: what.clone(),
                source: match source.raw_os_error() {
                    Some(e) => std::io::Error::from_raw_os_error(e),
                    None => std::io::Error::new(source.kind(), source.to_string()),
                },
            },
            KError::Object(e) => KError::Object(e.clone()),
        }
    }
}

/// Raises RLIMIT_MEMLOCK only on kernels that still charge BPF memory to it
/// (no memcg accounting). `Ok(false)`: nothing needed.
pub fn raise_memlock() -> KResult<bool> {
    if btf_load::features().memcg_account {
        return Ok(false);
    }
    let (soft, hard) = sys::memlock_limit().map_err(|e| KError::io("getrlimit(MEMLOCK)", e))?;
    if soft == u64::MAX {
        return Ok(false);
    }
    if sys::set_memlock_limit(u64::MAX, u64::MAX).is_ok() {
        return Ok(true);
    }
    if hard > soft && sys::set_memlock_limit(hard, hard).is_ok() {
        return Ok(true);
    }
    Err(KError::Permission {
        what: "raise RLIMIT_MEMLOCK".into(),
        why: format!(
            "this kernel charges BPF maps and programs to RLIMIT_MEMLOCK (soft {soft}, hard {hard}) and raising it needs CAP_SYS_RESOURCE; set LimitMEMLOCK=infinity or `ulimit -l unlimited`"
        ),
    })
}

/// The object has CO-RE relocations: it cannot load at all without kernel BTF.
pub fn has_core_relos(obj: &Object) -> bool {
    obj.btf_ext
        .as_ref()
        .is_some_and(|e| !e.core_relos.is_empty())
}

/// The object needs kernel BTF: CO-RE relocations, or programs attached by BTF id
/// (`tp_btf`, `fentry`/`fexit`), which alone fail without it while the others load.
pub fn needs_kernel_btf(obj: &Object) -> bool {
    has_core_relos(obj)
        || obj
            .programs
            .iter()
            .any(|p| p.kind.attach_btf_target().is_some())
}

/// Loads an object: maps created, programs loaded (each program's result kept).
pub fn load(bytes: &[u8], opts: &LoadOptions) -> KResult<Loaded> {
    let mut obj = Object::parse(bytes)?;
    let (target, foreign): (Arc<Btf>, Option<String>) = if needs_kernel_btf(&obj) {
        match target_btf::target(&opts.btf) {
            Ok(t) => {
                let f = t.foreign_ids();
                (t.btf, f)
            }
            // No CO-RE: only the BTF-id programs need the kernel's BTF; the others load.
            Err(e @ KError::MissingBtf { .. }) if !has_core_relos(&obj) => {
                (Arc::new(Btf::new()), Some(e.to_string()))
            }
            Err(e) => return Err(e),
        }
    } else {
        (Arc::new(Btf::new()), None)
    };
    load_object_with(&mut obj, &target, foreign.as_deref(), opts)
}

/// [`load`] for an already parsed object and a given target BTF (the running kernel's: its
/// type ids are used for `attach_btf_id`).
pub fn load_object(obj: &mut Object, target: &Btf, opts: &LoadOptions) -> KResult<Loaded> {
    load_object_with(obj, target, None, opts)
}

/// [`load_object`]; with `foreign_ids` (why) the target's type ids are not the running
/// kernel's, and programs attached by BTF id are refused (`Unsupported`) instead of loaded.
pub fn load_object_with(
    obj: &mut Object,
    target: &Btf,
    foreign_ids: Option<&str>,
    opts: &LoadOptions,
) -> KResult<Loaded> {
    if let Err(e) = raise_memlock() {
        log::warn!("{e}");
    }
    for (name, val) in &opts.globals {
        obj.set_global(name, val)?;
    }
    for (name, n) in &opts.max_entries {
        let i = obj.map_index(name).ok_or_else(|| KError::NotFound {
            what: "map",
            name: name.clone(),
        })?;
        obj.maps[i].max_entries = *n;
    }
    let core = core::relocate(obj, target)?;
    let (btf_fd, btf_error) = match obj.btf.as_ref().map(btf_load::load_object_btf) {
        Some(Ok(fd)) => (fd, None),
        Some(Err(e)) => {
            log::info!("continuing without object BTF: {e}");
            (None, Some(e))
        }
        None => (None, None),
    };
    let mut maps = Vec::with_capacity(obj.maps.len());
    for def in &obj.maps {
        let m = Map::create(&MapSpec::from(def), btf_fd.as_ref().map(|f| f.as_fd()))?;
        if def.origin != MapOrigin::BtfDefined {
            if !def.data.is_empty() {
                let mut data = def.data.clone();
                data.resize(m.value_len(), 0);
                m.set_data(&data)?;
            }
            if def.origin == MapOrigin::Rodata {
                m.freeze()?;
            }
        }
        maps.push(m);
    }
    let fds: Vec<i32> = maps.iter().map(|m| super::map::raw(m) as i32).collect();
    let mut programs = BTreeMap::new();
    for p in &obj.programs {
        if let Some(only) = &opts.programs {
            if !only.contains(&p.name) {
                continue;
            }
        }
        let r = reloc::link_program(obj, &p.name)
            .map_err(KError::from)
            .and_then(|mut lp| {
                lp.apply_map_fds(&fds)?;
                prog::load(
                    &lp,
                    &LoadCtx {
                        btf_fd: btf_fd.as_ref().map(|f| f.as_fd()),
                        target,
                        foreign_ids,
                        obj,
                        core: &core,
                    },
                )
            });
        programs.insert(p.name.clone(), r);
    }
    Ok(Loaded {
        maps,
        programs,
        core,
        btf_error,
        _btf_fd: btf_fd,
    })
}

impl Loaded {
    /// The map named `name` (global data: `.rodata`, `.data`, `.bss`).
    pub fn map(&self, name: &str) -> KResult<&Map> {
        self.maps
            .iter()
            .find(|m| m.name() == name)
            .ok_or_else(|| KError::NotFound {
                what: "map",
                name: name.into(),
            })
    }

    /// All maps.
    pub fn maps(&self) -> &[Map] {
        &self.maps
    }

    /// The program named `name`, or why it did not load.
    pub fn program(&self, name: &str) -> KResult<&Program> {
        match self.programs.get(name) {
            Some(Ok(p)) => Ok(p),
            Some(Err(e)) => Err(e.duplicate()),
            None => Err(KError::NotFound {
                what: "program",
                name: name.into(),
            }),
        }
    }

    /// Names of programs and whether each loaded.
    pub fn program_names(&self) -> impl Iterator<Item = (&str, bool)> {
        self.programs.iter().map(|(n, r)| (n.as_str(), r.is_ok()))
    }

    /// Attaches program `name` the way its section says.
    pub fn attach(&self, name: &str) -> KResult<Link> {
        attach::attach(self.program(name)?)
    }

    /// Attaches every loaded program; the first error stops.
    pub fn attach_all(&self) -> KResult<Vec<Link>> {
        self.programs
            .values()
            .filter_map(|r| r.as_ref().ok())
            .map(attach::attach)
            .collect()
    }

    /// A consumer for ring buffer map `name`. If a map `<name>_lost` exists
    /// (a per-CPU or plain array the programs bump when a reserve fails), its
    /// key 0 is what [`RingBuf::lost`] reports.
    pub fn ringbuf(&self, name: &str) -> KResult<RingBuf> {
        let mut rb = RingBuf::new(self.map(name)?)?;
        if let Ok(l) = self.map(&format!("{name}_lost")) {
            rb.set_lost_counter(l)?;
        }
        Ok(rb)
    }

    /// A per-CPU perf buffer consumer for perf event array `name`, with
    /// `pages` data pages (a power of 2) per CPU.
    pub fn perfbuf(&self, name: &str, pages: usize) -> KResult<PerfBuf> {
        PerfBuf::new(self.map(name)?, pages)
    }
}
