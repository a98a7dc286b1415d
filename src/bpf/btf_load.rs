//! Kernel feature probes (probed once per process, cached), object BTF
//! sanitizing for kernels missing BTF kinds, and `BPF_BTF_LOAD`.
//!
//! Probe, don't parse `uname`: each probe loads a tiny hand-built BTF blob or
//! program. Sanitizing is pure and tested offline by injecting a feature set.
#![forbid(unsafe_code)]

use std::os::fd::OwnedFd;
use std::sync::OnceLock;

use super::abi::{self, BtfLoadAttr, ProgLoadAttr};
use super::btf::{Btf, Member, Param, Type};
use super::error::{KError, KResult};
use super::insn::Insn;
use super::sys;

/// What the running kernel supports (BTF kinds and a few program features).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// `BPF_BTF_LOAD` works at all.
    pub btf: bool,
    /// FUNC / FUNC_PROTO.
    pub btf_func: bool,
    /// Global FUNC linkage.
    pub btf_global_func: bool,
    /// VAR / DATASEC.
    pub btf_datasec: bool,
    /// FLOAT.
    pub btf_float: bool,
    /// DECL_TAG.
    pub btf_decl_tag: bool,
    /// TYPE_TAG.
    pub btf_type_tag: bool,
    /// ENUM64.
    pub btf_enum64: bool,
    /// BPF memory is charged to the memory cgroup (5.11+): RLIMIT_MEMLOCK is irrelevant.
    pub memcg_account: bool,
}

impl Features {
    /// Everything supported (a modern kernel).
    pub const ALL: Features = Features {
        btf: true,
        btf_func: true,
        btf_global_func: true,
        btf_datasec: true,
        btf_float: true,
        btf_decl_tag: true,
        btf_type_tag: true,
        btf_enum64: true,
        memcg_account: true,
    };
}

static FEATURES: OnceLock<Features> = OnceLock::new();

/// The running kernel's features, probed on first use.
pub fn features() -> &'static Features {
    FEATURES.get_or_init(probe_all)
}

fn int(b: &mut Btf) -> u32 {
    let n = b.add_string("int");
    b.add_type(Type::Int {
        name_off: n,
        size: 4,
        encoding: 1,
        offset: 0,
        bits: 32,
    })
}

fn try_btf(b: &Btf) -> bool {
    load_btf_raw(&b.to_bytes(), false).is_ok()
}

fn probe_all() -> Features {
    let mut base = Btf::new();
    int(&mut base);
    let btf = try_btf(&base);
    let with = |f: &dyn Fn(&mut Btf, u32)| {
        btf && {
            let mut b = Btf::new();
            let i = int(&mut b);
            f(&mut b, i);
            try_btf(&b)
        }
    };
    let func = |linkage: u16| {
        move |b: &mut Btf, i: u32| {
            let a = b.add_string("a");
            let p = b.add_type(Type::FuncProto {
                ret: i,
                params: vec![Param { name_off: a, ty: i }],
            });
            let n = b.add_string("f");
            b.add_type(Type::Func {
                name_off: n,
                proto: p,
                linkage,
            });
        }
    };
    Features {
        btf,
        btf_func: with(&func(0)),
        btf_global_func: with(&func(1)),
        btf_datasec: with(&|b, i| {
            b.add_global("x", ".data", i, 4);
        }),
        btf_float: with(&|b, _| {
            let n = b.add_string("float");
            b.add_type(Type::Float {
                name_off: n,
                size: 4,
            });
        }),
        btf_decl_tag: with(&|b, i| {
            let n = b.add_string("tag");
            let v = b.add_string("x");
            let var = b.add_type(Type::Var {
                name_off: v,
                ty: i,
                linkage: 1,
            });
            b.add_type(Type::DeclTag {
                name_off: n,
                ty: var,
                component_idx: -1,
            });
        }),
        btf_type_tag: with(&|b, i| {
            let n = b.add_string("tag");
            let t = b.add_type(Type::TypeTag { name_off: n, ty: i });
            b.add_type(Type::Ptr { ty: t });
        }),
        btf_enum64: with(&|b, _| {
            let n = b.add_string("e");
            let v = b.add_string("v");
            b.add_type(Type::Enum64 {
                name_off: n,
                size: 8,
                signed: false,
                values: vec![super::btf::EnumValue {
                    name_off: v,
                    value: 1 << 40,
                }],
            });
        }),
        memcg_account: probe_memcg(),
    }
}

/// libbpf's probe: `bpf_ktime_get_coarse_ns` (helper 160) arrived in 5.11
/// together with memcg accounting of BPF memory.
fn probe_memcg() -> bool {
    let insns = [Insn::call_helper(160), Insn::mov64_imm(0, 0), Insn::exit()];
    let lic = b"GPL\0";
    let mut a = ProgLoadAttr {
        prog_type: 1, // SOCKET_FILTER
        insn_cnt: insns.len() as u32,
        insns: sys::addr(&insns[..]),
        license: sys::addr(&lic[..]),
        ..Default::default()
    };
    match sys::bpf_fd(abi::BPF_PROG_LOAD, &mut a) {
        Ok(_) => true,
        // Refused outright (no CAP_BPF, kernel.unprivileged_bpf_disabled): the probe tells
        // nothing about accounting, the release does.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) => {
            std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .is_ok_and(|r| release_at_least(&r, (5, 11)))
        }
        Err(_) => false,
    }
}

/// `6.18.0-foo` ≥ (5, 11).
fn release_at_least(release: &str, want: (u32, u32)) -> bool {
    let mut it = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let major = it.next().unwrap_or(0);
    let minor = it.next().unwrap_or(0);
    (major, minor) >= want
}

/// A copy of `btf` with every kind the kernel lacks replaced the way libbpf
/// does (`bpf_object__sanitize_btf`), so `BPF_BTF_LOAD` accepts it. The
/// original stays intact for CO-RE.
pub fn sanitize(btf: &Btf, f: &Features) -> Btf {
    let mut out = btf.clone();
    let n = out.len();
    for id in 1..n {
        let Ok(t) = out.type_by_id(id) else { continue };
        let new = match t.clone() {
            Type::Func {
                name_off, proto, ..
            } if !f.btf_func => Some(Type::Typedef {
                name_off,
                ty: proto,
            }),
            Type::Func {
                name_off,
                proto,
                linkage: 1,
            } if !f.btf_global_func => Some(Type::Func {
                name_off,
                proto,
                linkage: 0,
            }),
            Type::FuncProto { params, .. } if !f.btf_func => Some(Type::Enum {
                name_off: 0,
                size: 4,
                signed: false,
                values: params
                    .iter()
                    .map(|p| super::btf::EnumValue {
                        name_off: p.name_off,
                        value: u64::from(p.ty),
                    })
                    .collect(),
            }),
            Type::Var { name_off, .. } if !f.btf_datasec => Some(Type::Int {
                name_off,
                size: 1,
                encoding: 0,
                offset: 0,
                bits: 8,
            }),
            Type::Datasec {
                name_off,
                size,
                vars,
            } if !f.btf_datasec => {
                let name: String = out
                    .name(name_off)
                    .unwrap_or("")
                    .chars()
                    .map(|c| if c == '.' || c == '?' { '_' } else { c })
                    .collect();
                let members = vars
                    .iter()
                    .map(|v| Member {
                        name_off: out.type_by_id(v.ty).map(|t| t.name_off()).unwrap_or(0),
                        ty: v.ty,
                        bit_offset: v.offset * 8,
                        bitfield_size: 0,
                    })
                    .collect();
                let name_off = out.add_string(&name);
                Some(Type::Struct {
                    name_off,
                    size,
                    members,
                })
            }
            Type::Float { size, .. } if !f.btf_float => Some(Type::Struct {
                name_off: 0,
                size,
                members: vec![],
            }),
            Type::DeclTag { name_off, .. } if !f.btf_decl_tag => Some(Type::Int {
                name_off,
                size: 1,
                encoding: 0,
                offset: 0,
                bits: 8,
            }),
            Type::TypeTag { ty, .. } if !f.btf_type_tag => Some(Type::Const { ty }),
            Type::Enum64 { name_off, size, .. } if !f.btf_enum64 => Some(Type::Union {
                name_off,
                size,
                members: vec![],
            }),
            Type::Enum {
                name_off,
                size,
                values,
                signed: true,
            } if !f.btf_enum64 => Some(Type::Enum {
                name_off,
                size,
                values,
                signed: false,
            }),
            _ => None,
        };
        if let Some(t) = new {
            if let Ok(slot) = out.type_mut(id) {
                *slot = t;
            }
        }
    }
    out
}

/// `BPF_BTF_LOAD`; with `log` the kernel's BTF log is returned in the error.
pub fn load_btf_raw(bytes: &[u8], log: bool) -> KResult<OwnedFd> {
    let mut a = BtfLoadAttr {
        btf: sys::addr(bytes),
        btf_size: bytes.len() as u32,
        ..Default::default()
    };
    match sys::bpf_fd(abi::BPF_BTF_LOAD, &mut a) {
        Ok(fd) => Ok(fd),
        Err(e) if !log => Err(KError::io("BPF_BTF_LOAD", e)),
        Err(_) => {
            let mut buf = vec![0u8; 64 * 1024];
            let mut a = BtfLoadAttr {
                btf: sys::addr(bytes),
                btf_size: bytes.len() as u32,
                btf_log_buf: sys::addr_mut(&mut buf[..]),
                btf_log_size: buf.len() as u32,
                btf_log_level: 1,
                ..Default::default()
            };
            match sys::bpf_fd(abi::BPF_BTF_LOAD, &mut a) {
                Ok(fd) => Ok(fd),
                Err(e) => Err(KError::Unsupported {
                    what: "object BTF load".into(),
                    why: format!("{e}: {}", abi::c_str(&buf).trim_end()),
                }),
            }
        }
    }
}

/// Sanitizes `btf` for the running kernel and loads it. `Ok(None)` when the
/// kernel has no BTF support at all.
pub fn load_object_btf(btf: &Btf) -> KResult<Option<OwnedFd>> {
    let f = features();
    if !f.btf {
        return Ok(None);
    }
    let clean = sanitize(btf, f);
    load_btf_raw(&clean.to_bytes(), true).map(Some)
}

#[cfg(test)]
mod tests {
    use super::super::btf::Kind;
    use super::*;

    #[test]
    fn release_compare() {
        assert!(release_at_least("6.18.0-netsleuth\n", (5, 11)));
        assert!(release_at_least("5.11.0", (5, 11)));
        assert!(!release_at_least("5.10.0-30-amd64", (5, 11)));
        assert!(!release_at_least("4.19.0", (5, 11)));
    }

    fn sample() -> Btf {
        let mut b = Btf::new();
        let i = int(&mut b);
        let p = b.add_type(Type::FuncProto {
            ret: i,
            params: vec![],
        });
        let f = b.add_string("prog");
        b.add_type(Type::Func {
            name_off: f,
            proto: p,
            linkage: 1,
        });
        b.add_global("x", ".rodata", i, 4);
        let fl = b.add_string("double");
        b.add_type(Type::Float {
            name_off: fl,
            size: 8,
        });
        b
    }

    #[test]
    fn nothing_changes_on_a_modern_kernel() {
        let b = sample();
        assert_eq!(sanitize(&b, &Features::ALL).to_bytes(), b.to_bytes());
    }

    #[test]
    fn old_kernel_kinds_are_replaced() {
        let b = sample();
        let f = Features {
            btf_func: false,
            btf_datasec: false,
            btf_float: false,
            ..Features::ALL
        };
        let s = sanitize(&b, &f);
        let kinds: Vec<Kind> = (1..s.len())
            .map(|i| s.type_by_id(i).unwrap().kind())
            .collect();
        assert_eq!(
            kinds,
            [
                Kind::Int,
                Kind::Enum,
                Kind::Typedef,
                Kind::Int,
                Kind::Struct,
                Kind::Struct
            ]
        );
        assert_eq!(s.type_name(5).unwrap(), "_rodata");
        assert_eq!(s.find_member(5, "x").unwrap().unwrap().0.bit_offset, 0);
        // The original is untouched for CO-RE.
        assert_eq!(b.type_by_id(5).unwrap().kind(), Kind::Datasec);
        // And still encodes to a parseable blob.
        Btf::parse(&s.to_bytes()).unwrap();
    }

    #[test]
    fn global_func_downgraded_to_static() {
        let b = sample();
        let s = sanitize(
            &b,
            &Features {
                btf_global_func: false,
                ..Features::ALL
            },
        );
        assert!(matches!(
            s.type_by_id(3).unwrap(),
            Type::Func { linkage: 0, .. }
        ));
    }
}
