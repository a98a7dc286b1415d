//! BPF ELF objects (clang `-target bpf`), parsed with the `object` crate.
//!
//! Finds programs (one per global function in each `SEC("...")` section),
//! subprograms in `.text`, the license, BTF-defined maps in `.maps`, global
//! data (`.rodata*`, `.data*`, `.bss*`) as array maps with per-variable
//! offsets from BTF, and the relocations of every code section, already
//! resolved to maps and functions.
//!
//! `section`: what a section name says (program type, attach point);
//! `btf_maps`: BTF-defined maps and global data's BTF; here: the ELF walk.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use object::{
    Object as _, ObjectSection as _, ObjectSymbol as _, RelocationTarget, SectionFlags,
    SectionIndex,
};

use super::btf::{Btf, Kind, Type};
use super::btf_ext::BtfExt;
use super::insn::{self, Insn};
use super::{Error, Result};

mod btf_maps;
mod section;

use btf_maps::{datasec_vars, fixup_datasecs, parse_btf_maps};
pub use section::ProgramKind;

/// `SHF_EXECINSTR`.
const SHF_EXECINSTR: u64 = 0x4;
/// `R_BPF_64_64`: `ld_imm64` of a map or global data.
const R_BPF_64_64: u32 = 1;
/// `R_BPF_64_32`: bpf-to-bpf call.
const R_BPF_64_32: u32 = 10;
/// Largest total of global-data sections we accept (the kernel caps array values far lower).
const MAX_DATA_SECTION: u64 = 64 << 20;

use super::uapi::MAP_ARRAY;
/// `BPF_F_RDONLY_PROG`: `.rodata` maps are read-only to programs.
pub const F_RDONLY_PROG: u32 = 1 << 7;
/// `BPF_F_MMAPABLE`.
pub const F_MMAPABLE: u32 = 1 << 10;

/// A function symbol inside a code section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    /// Symbol name.
    pub name: String,
    /// First instruction, relative to the section.
    pub insn_off: usize,
    /// Number of instructions.
    pub insn_len: usize,
    /// `STB_GLOBAL`.
    pub global: bool,
}

/// What a relocated instruction refers to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelocKind {
    /// `ld_imm64` of a map: becomes `BPF_PSEUDO_MAP_FD`.
    MapFd {
        /// Index into [`Object::maps`].
        map: usize,
    },
    /// `ld_imm64` of a global variable: `BPF_PSEUDO_MAP_VALUE` at `offset`.
    MapValue {
        /// Index into [`Object::maps`].
        map: usize,
        /// Byte offset into the map value (`imm + st_value`).
        offset: u32,
    },
    /// bpf-to-bpf call into `section`'s instruction `insn`.
    Call {
        /// Index into [`Object::sections`].
        section: usize,
        /// Callee's first instruction, relative to its section.
        insn: usize,
    },
    /// `ld_imm64` of a function address (`BPF_PSEUDO_FUNC`, callbacks).
    SubprogAddr {
        /// Index into [`Object::sections`].
        section: usize,
        /// Callee's first instruction, relative to its section.
        insn: usize,
    },
}

/// A relocation of one instruction of a code section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reloc {
    /// Symbol the ELF relocation names.
    pub symbol: String,
    /// What it resolves to.
    pub kind: RelocKind,
}

/// An executable section: `.text` (subprograms) or a program section.
#[derive(Clone, Debug)]
pub struct CodeSection {
    /// Section name (the `SEC()` string).
    pub name: String,
    /// ELF section index.
    pub elf_index: usize,
    /// Instructions (CO-RE relocations patch these in place).
    pub insns: Vec<Insn>,
    /// Function symbols, sorted by offset.
    pub functions: Vec<Function>,
    /// Relocations by instruction index.
    pub relocs: BTreeMap<usize, Reloc>,
}

/// An entry-point program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    /// Function name (the kernel's `prog_name`, truncated to 15 bytes by the kernel layer).
    pub name: String,
    /// Index into [`Object::sections`].
    pub section: usize,
    /// Section name.
    pub section_name: String,
    /// Program type and attach point from the section name.
    pub kind: ProgramKind,
    /// First instruction, relative to the section.
    pub insn_off: usize,
    /// Number of instructions.
    pub insn_len: usize,
}

/// Where a map definition came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapOrigin {
    /// A variable in `SEC(".maps")`.
    BtfDefined,
    /// `.rodata*`: read-only to programs, settable before load.
    Rodata,
    /// `.data*`.
    Data,
    /// `.bss*`: zero-initialized.
    Bss,
}

/// A global variable inside a global-data map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobalVar {
    /// Variable name.
    pub name: String,
    /// Byte offset in the map value.
    pub offset: u32,
    /// Size in bytes.
    pub size: u32,
    /// BTF type id of the variable's type.
    pub type_id: u32,
}

/// A map to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapDef {
    /// Variable name, or the section name for global data (e.g. `.rodata`).
    pub name: String,
    /// Where it came from.
    pub origin: MapOrigin,
    /// `enum bpf_map_type`.
    pub map_type: u32,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes.
    pub value_size: u32,
    /// `max_entries`.
    pub max_entries: u32,
    /// `map_flags`.
    pub map_flags: u32,
    /// `numa_node`.
    pub numa_node: u32,
    /// `pinning` (0 none, 1 by name).
    pub pinning: u32,
    /// `map_extra`.
    pub map_extra: u64,
    /// Object BTF type of the key, 0 if none.
    pub key_type_id: u32,
    /// Object BTF type of the value, 0 if none.
    pub value_type_id: u32,
    /// Initial value (global data only).
    pub data: Vec<u8>,
    /// Variables (global data only), sorted by offset.
    pub vars: Vec<GlobalVar>,
    elf_section: usize,
    sym_offset: u64,
}

/// A parsed BPF object.
#[derive(Clone, Debug)]
pub struct Object {
    /// `SEC("license")`, if present.
    pub license: Option<String>,
    /// `SEC("version")`, if present.
    pub kern_version: Option<u32>,
    /// Object BTF (`.BTF`), with DATASEC sizes and offsets fixed up.
    pub btf: Option<Btf>,
    /// `.BTF.ext`.
    pub btf_ext: Option<BtfExt>,
    /// Code sections (`.text` and program sections).
    pub sections: Vec<CodeSection>,
    /// Entry programs in section order.
    pub programs: Vec<Program>,
    /// Maps: BTF-defined first, then global data.
    pub maps: Vec<MapDef>,
}

struct Sym {
    name: String,
    section: Option<usize>,
    undefined: bool,
    value: u64,
    size: u64,
    is_func: bool,
    is_section: bool,
    global: bool,
}

fn elf_err(e: object::Error) -> Error {
    Error::malformed("ELF", e.to_string())
}

impl Object {
    /// Parses a BPF ELF object.
    pub fn parse(data: &[u8]) -> Result<Object> {
        let file = object::File::parse(data).map_err(elf_err)?;
        if file.architecture() != object::Architecture::Bpf {
            return Err(Error::Unsupported(format!(
                "ELF architecture {:?}, expected BPF",
                file.architecture()
            )));
        }
        if !file.is_little_endian() {
            return Err(Error::Unsupported("big-endian BPF object".into()));
        }
        if file.symbol_table().is_none() {
            return Err(Error::malformed(
                "ELF",
                "no symbol table (stripped object?)",
            ));
        }
        let syms: Vec<Option<Sym>> = {
            let mut v = Vec::new();
            for s in file.symbols() {
                let idx = s.index().0;
                if v.len() <= idx {
                    v.resize_with(idx + 1, || None);
                }
                v[idx] = Some(Sym {
                    name: s.name().unwrap_or("").to_string(),
                    section: s.section_index().map(|i| i.0),
                    undefined: s.is_undefined(),
                    value: s.address(),
                    size: s.size(),
                    is_func: s.kind() == object::SymbolKind::Text,
                    is_section: s.kind() == object::SymbolKind::Section,
                    global: s.is_global(),
                });
            }
            v
        };

        let mut obj = Object {
            license: None,
            kern_version: None,
            btf: None,
            btf_ext: None,
            sections: Vec::new(),
            programs: Vec::new(),
            maps: Vec::new(),
        };
        let mut maps_section = None;
        let mut data_sections: Vec<(usize, String, MapOrigin, Vec<u8>)> = Vec::new();
        let mut section_sizes: BTreeMap<String, (usize, u64)> = BTreeMap::new();
        let mut data_total: u64 = 0;

        for sec in file.sections() {
            let name = sec.name().map_err(elf_err)?.to_string();
            let idx = sec.index().0;
            let flags = match sec.flags() {
                SectionFlags::Elf { sh_flags, .. } => sh_flags.0,
                _ => 0,
            };
            section_sizes.insert(name.clone(), (idx, sec.size()));
            match name.as_str() {
                "license" => {
                    let d = sec.data().map_err(elf_err)?;
                    let end = d.iter().position(|&b| b == 0).unwrap_or(d.len());
                    obj.license = Some(String::from_utf8_lossy(&d[..end]).into_owned());
                }
                "version" => {
                    let d = sec.data().map_err(elf_err)?;
                    let b: [u8; 4] = d.try_into().map_err(|_| {
                        Error::malformed("ELF", format!("version section of {} bytes", d.len()))
                    })?;
                    obj.kern_version = Some(u32::from_le_bytes(b));
                }
                "maps" => {
                    return Err(Error::Unsupported(
                        "legacy 'maps' section; use BTF-defined maps in SEC(\".maps\")".into(),
                    ))
                }
                ".maps" => maps_section = Some(idx),
                ".BTF" => obj.btf = Some(Btf::parse(sec.data().map_err(elf_err)?)?),
                ".BTF.ext" => obj.btf_ext = Some(BtfExt::parse(sec.data().map_err(elf_err)?)?),
                _ => {
                    let origin = if name == ".rodata" || name.starts_with(".rodata.") {
                        Some(MapOrigin::Rodata)
                    } else if name == ".data" || name.starts_with(".data.") {
                        Some(MapOrigin::Data)
                    } else if name == ".bss" || name.starts_with(".bss.") {
                        Some(MapOrigin::Bss)
                    } else {
                        None
                    };
                    if let Some(origin) = origin {
                        data_total = data_total.saturating_add(sec.size());
                        if data_total > MAX_DATA_SECTION {
                            return Err(Error::Unsupported(format!(
                                "section {name} of {} bytes is too large",
                                sec.size()
                            )));
                        }
                        let data = if origin == MapOrigin::Bss {
                            vec![0; sec.size() as usize]
                        } else {
                            sec.data().map_err(elf_err)?.to_vec()
                        };
                        data_sections.push((idx, name, origin, data));
                    } else if flags & SHF_EXECINSTR != 0 && sec.size() > 0 {
                        let bytes = sec.data().map_err(elf_err)?;
                        let insns = insn::decode(bytes)?;
                        obj.sections.push(CodeSection {
                            name,
                            elf_index: idx,
                            insns,
                            functions: Vec::new(),
                            relocs: BTreeMap::new(),
                        });
                    }
                }
            }
        }

        // Functions per code section.
        for s in syms.iter().flatten() {
            if !s.is_func {
                continue;
            }
            let Some(cs) = obj
                .sections
                .iter_mut()
                .find(|c| Some(c.elf_index) == s.section)
            else {
                continue;
            };
            if s.value % 8 != 0 || s.size % 8 != 0 || s.value + s.size > cs.insns.len() as u64 * 8 {
                return Err(Error::malformed(
                    "ELF",
                    format!(
                        "function {} outside section {} or misaligned",
                        s.name, cs.name
                    ),
                ));
            }
            cs.functions.push(Function {
                name: s.name.clone(),
                insn_off: (s.value / 8) as usize,
                insn_len: (s.size / 8) as usize,
                global: s.global,
            });
        }
        for (si, cs) in obj.sections.iter_mut().enumerate() {
            cs.functions.sort_by_key(|f| f.insn_off);
            if cs.name == ".text" {
                continue;
            }
            for f in &cs.functions {
                if !f.global {
                    return Err(Error::Unsupported(format!(
                        "static function {} in program section {} (subprograms belong in .text)",
                        f.name, cs.name
                    )));
                }
                obj.programs.push(Program {
                    name: f.name.clone(),
                    section: si,
                    section_name: cs.name.clone(),
                    kind: ProgramKind::from_section(&cs.name),
                    insn_off: f.insn_off,
                    insn_len: f.insn_len,
                });
            }
        }

        // DATASEC fix-ups: clang may leave sizes and offsets zero.
        if let Some(btf) = obj.btf.as_mut() {
            fixup_datasecs(btf, &section_sizes, &syms)?;
        }

        // BTF-defined maps.
        if let Some(ms) = maps_section {
            let btf = obj
                .btf
                .as_ref()
                .ok_or_else(|| Error::malformed("ELF", ".maps section without .BTF"))?;
            obj.maps.extend(parse_btf_maps(btf, ms, &syms)?);
        }
        // Global data maps.
        for (idx, name, origin, data) in data_sections {
            let vars = obj
                .btf
                .as_ref()
                .map(|b| datasec_vars(b, &name))
                .transpose()?
                .unwrap_or_default();
            let map_flags = if origin == MapOrigin::Rodata {
                F_RDONLY_PROG
            } else {
                0
            };
            obj.maps.push(MapDef {
                name,
                origin,
                map_type: MAP_ARRAY, // global data
                key_size: 4,
                value_size: data.len() as u32,
                max_entries: 1,
                map_flags,
                numa_node: 0,
                pinning: 0,
                map_extra: 0,
                key_type_id: 0,
                value_type_id: 0,
                data,
                vars,
                elf_section: idx,
                sym_offset: 0,
            });
        }

        // Relocations of code sections.
        for sec in file.sections() {
            let Some(ci) = obj
                .sections
                .iter()
                .position(|c| c.elf_index == sec.index().0)
            else {
                continue;
            };
            for (offset, rel) in sec.relocations() {
                let r_type = match rel.flags() {
                    object::RelocationFlags::Elf { r_type } => r_type.0,
                    _ => match (rel.kind(), rel.size()) {
                        (object::RelocationKind::Absolute, 64) => R_BPF_64_64,
                        _ => R_BPF_64_32,
                    },
                };
                let RelocationTarget::Symbol(si) = rel.target() else {
                    return Err(reloc_err(
                        &obj.sections[ci].name,
                        offset,
                        "target is not a symbol",
                    ));
                };
                let sym = syms
                    .get(si.0)
                    .and_then(Option::as_ref)
                    .ok_or_else(|| reloc_err(&obj.sections[ci].name, offset, "bad symbol index"))?;
                let r = resolve_reloc(
                    &obj,
                    ci,
                    offset,
                    r_type,
                    sym,
                    SectionIndex(maps_section.unwrap_or(0)),
                )?;
                obj.sections[ci].relocs.insert((offset / 8) as usize, r);
            }
        }
        Ok(obj)
    }

    /// The program named `name`.
    pub fn program(&self, name: &str) -> Option<&Program> {
        self.programs.iter().find(|p| p.name == name)
    }

    /// Index of the map named `name`.
    pub fn map_index(&self, name: &str) -> Option<usize> {
        self.maps.iter().position(|m| m.name == name)
    }

    /// Sets a global variable's initial value before load (typically a
    /// `const volatile` in `.rodata`). `bytes` must be exactly its size.
    pub fn set_global(&mut self, var: &str, bytes: &[u8]) -> Result<()> {
        for m in &mut self.maps {
            if m.origin == MapOrigin::BtfDefined {
                continue;
            }
            if let Some(v) = m.vars.iter().find(|v| v.name == var) {
                if v.size as usize != bytes.len() {
                    return Err(Error::malformed(
                        "global variable",
                        format!("{var} is {} bytes, got {}", v.size, bytes.len()),
                    ));
                }
                let start = v.offset as usize;
                let dst = m.data.get_mut(start..start + bytes.len()).ok_or_else(|| {
                    Error::malformed("global variable", format!("{var} lies outside {}", m.name))
                })?;
                dst.copy_from_slice(bytes);
                return Ok(());
            }
        }
        Err(Error::NotFound {
            what: "global variable",
            name: var.into(),
        })
    }

    /// Current initial value of a global variable.
    pub fn global(&self, var: &str) -> Option<&[u8]> {
        self.maps
            .iter()
            .filter(|m| m.origin != MapOrigin::BtfDefined)
            .find_map(|m| {
                let v = m.vars.iter().find(|v| v.name == var)?;
                m.data.get(v.offset as usize..(v.offset + v.size) as usize)
            })
    }
}

fn reloc_err(sec: &str, offset: u64, detail: impl Into<String>) -> Error {
    Error::Relocation {
        context: sec.to_string(),
        insn: (offset / 8) as usize,
        detail: detail.into(),
    }
}

fn resolve_reloc(
    obj: &Object,
    ci: usize,
    offset: u64,
    r_type: u32,
    sym: &Sym,
    maps_sec: SectionIndex,
) -> Result<Reloc> {
    let cs = &obj.sections[ci];
    let err = |d: String| reloc_err(&cs.name, offset, d);
    if offset % 8 != 0 {
        return Err(err("misaligned relocation".into()));
    }
    let idx = (offset / 8) as usize;
    let ins = *cs
        .insns
        .get(idx)
        .ok_or_else(|| err("relocation past the end of the section".into()))?;
    if sym.undefined {
        return Err(Error::Unsupported(format!(
            "{}: extern symbol {} (kconfig/ksym/kfunc externs are not supported)",
            cs.name, sym.name
        )));
    }
    let Some(sym_sec) = sym.section else {
        return Err(err(format!(
            "symbol {} is not in a section (uninitialized global? initialize it)",
            sym.name
        )));
    };
    let code_target = obj.sections.iter().position(|c| c.elf_index == sym_sec);
    let kind = match r_type {
        R_BPF_64_32 => {
            if !ins.is_pseudo_call() {
                return Err(err(format!(
                    "call relocation on a non-call instruction {:#x}",
                    ins.code
                )));
            }
            let section =
                code_target.ok_or_else(|| err(format!("call target {} is not code", sym.name)))?;
            if sym.value % 8 != 0 {
                return Err(err(format!("call target {} misaligned", sym.name)));
            }
            let target = (sym.value / 8) as i64 + i64::from(ins.imm) + 1;
            RelocKind::Call {
                section,
                insn: check_target(obj, section, target).map_err(err)?,
            }
        }
        R_BPF_64_64 => {
            if !ins.is_ld_imm64() {
                return Err(err(format!(
                    "64-bit relocation on a non-ld_imm64 instruction {:#x}",
                    ins.code
                )));
            }
            if sym_sec == maps_sec.0 && maps_sec.0 != 0 {
                let map = obj
                    .maps
                    .iter()
                    .position(|m| m.origin == MapOrigin::BtfDefined && m.sym_offset == sym.value)
                    .ok_or_else(|| err(format!("no map at .maps+{} ({})", sym.value, sym.name)))?;
                RelocKind::MapFd { map }
            } else if let Some(map) = obj
                .maps
                .iter()
                .position(|m| m.origin != MapOrigin::BtfDefined && m.elf_section == sym_sec)
            {
                let off = i64::from(ins.imm) + sym.value as i64;
                let size = obj.maps[map].value_size;
                let offset = u32::try_from(off)
                    .ok()
                    .filter(|&o| o < size.max(1))
                    .ok_or_else(|| err(format!("offset {off} outside {}", obj.maps[map].name)))?;
                RelocKind::MapValue { map, offset }
            } else if let Some(section) = code_target.filter(|_| sym.is_func || sym.is_section) {
                let target = (sym.value as i64 + i64::from(ins.imm)) / 8;
                RelocKind::SubprogAddr {
                    section,
                    insn: check_target(obj, section, target).map_err(err)?,
                }
            } else {
                return Err(err(format!(
                    "symbol {} is neither a map, global data nor a function",
                    sym.name
                )));
            }
        }
        other => return Err(err(format!("unsupported relocation type {other}"))),
    };
    Ok(Reloc {
        symbol: sym.name.clone(),
        kind,
    })
}

fn check_target(obj: &Object, section: usize, target: i64) -> std::result::Result<usize, String> {
    let cs = &obj.sections[section];
    usize::try_from(target)
        .ok()
        .filter(|t| cs.functions.iter().any(|f| f.insn_off == *t))
        .ok_or_else(|| {
            format!(
                "call target {} in {} is not the start of a function",
                target, cs.name
            )
        })
}

/// Reads target BTF from raw BTF bytes (`/sys/kernel/btf/vmlinux`, a `.btf`
/// file) or from an ELF file's `.BTF` section (a vmlinux with BTF).
pub fn btf_from_bytes(data: &[u8]) -> Result<Btf> {
    if data.len() >= 2 && u16::from_le_bytes([data[0], data[1]]) == super::btf::MAGIC {
        return Btf::parse(data);
    }
    let file = object::File::parse(data).map_err(elf_err)?;
    let sec = file.section_by_name(".BTF").ok_or(Error::NotFound {
        what: "ELF section",
        name: ".BTF".into(),
    })?;
    Btf::parse(sec.data().map_err(elf_err)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selftest() -> Object {
        Object::parse(crate::bpf::embedded::object("selftest").expect("embedded selftest")).unwrap()
    }

    #[test]
    fn selftest_programs_split_by_symbol() {
        let o = selftest();
        assert_eq!(o.license.as_deref(), Some("GPL"));
        let progs: Vec<(&str, &str, usize, usize)> = o
            .programs
            .iter()
            .map(|p| {
                (
                    p.name.as_str(),
                    p.section_name.as_str(),
                    p.insn_off,
                    p.insn_len,
                )
            })
            .collect();
        assert_eq!(
            progs,
            vec![
                ("tcp_send_reset", "tracepoint/tcp/tcp_send_reset", 0, 16),
                ("kfree_skb_btf", "tp_btf/kfree_skb", 0, 66),
                ("kfree_skb_raw", "raw_tp/kfree_skb", 0, 23),
                ("net_dev_queue_a", "raw_tp/net_dev_queue", 0, 16),
                ("net_dev_queue_b", "raw_tp/net_dev_queue", 16, 16),
                ("kprobe_getppid", "kprobe/__x64_sys_getppid", 0, 16),
                ("kretprobe_getppid", "kretprobe/__x64_sys_getppid", 0, 16),
                ("fentry_getppid", "fentry/__do_sys_getppid", 0, 16),
                ("fexit_getppid", "fexit/__do_sys_getppid", 0, 16),
            ]
        );
        let kinds: Vec<(Option<u32>, u32)> = o
            .programs
            .iter()
            .map(|p| (p.kind.prog_type(), p.kind.expected_attach_type()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (Some(5), 0),
                (Some(26), 23),
                (Some(17), 0),
                (Some(17), 0),
                (Some(17), 0),
                (Some(2), 0),
                (Some(2), 0),
                (Some(26), 24),
                (Some(26), 25),
            ]
        );
        assert_eq!(
            o.programs[1].kind.attach_btf_target(),
            Some(("btf_trace_kfree_skb".to_string(), Kind::Typedef))
        );
        let text = &o.sections[0];
        assert_eq!(text.name, ".text");
        assert_eq!(text.functions.len(), 1);
        assert_eq!(
            (text.functions[0].name.as_str(), text.functions[0].global),
            ("skb_netns", false)
        );
    }

    #[test]
    fn selftest_maps() {
        let o = selftest();
        let btf = o.btf.as_ref().unwrap();
        let maps: Vec<(&str, MapOrigin, u32, u32, u32, u32, u32)> = o
            .maps
            .iter()
            .map(|m| {
                (
                    m.name.as_str(),
                    m.origin,
                    m.map_type,
                    m.key_size,
                    m.value_size,
                    m.max_entries,
                    m.map_flags,
                )
            })
            .collect();
        assert_eq!(
            maps,
            vec![
                ("drops_by_netns", MapOrigin::BtfDefined, 1, 4, 8, 1024, 0),
                ("events", MapOrigin::BtfDefined, 27, 0, 0, 256 * 1024, 0),
                ("hits", MapOrigin::BtfDefined, 2, 4, 8, 8, 0),
                (".rodata", MapOrigin::Rodata, 2, 4, 8, 1, F_RDONLY_PROG),
                (".bss", MapOrigin::Bss, 2, 4, 8, 1, 0),
            ]
        );
        assert_eq!(btf.type_name(o.maps[0].key_type_id).unwrap(), "__u32");
        assert_eq!(btf.type_name(o.maps[0].value_type_id).unwrap(), "__u64");
        let ro: Vec<(&str, u32, u32)> = o.maps[3]
            .vars
            .iter()
            .map(|v| (v.name.as_str(), v.offset, v.size))
            .collect();
        assert_eq!(ro, vec![("target_netns", 0, 4), ("sample_every", 4, 4)]);
        assert_eq!(o.maps[3].data, [0, 0, 0, 0, 1, 0, 0, 0]);
        // DATASEC fix-up: size and offsets now match the ELF section.
        let ds = btf.find_by_name_kind(".rodata", Kind::Datasec).unwrap();
        let Type::Datasec { size, vars, .. } = btf.type_by_id(ds).unwrap() else {
            unreachable!()
        };
        assert_eq!((*size, vars[1].offset), (8, 4));
    }

    #[test]
    fn rodata_is_settable_by_name() {
        let mut o = selftest();
        o.set_global("target_netns", &4_026_531_840u32.to_le_bytes())
            .unwrap();
        o.set_global("sample_every", &7u32.to_le_bytes()).unwrap();
        assert_eq!(o.global("sample_every").unwrap(), 7u32.to_le_bytes());
        assert_eq!(o.maps[3].data[..4], 4_026_531_840u32.to_le_bytes());
        assert!(matches!(
            o.set_global("target_netns", &[1]),
            Err(Error::Malformed { .. })
        ));
        assert!(matches!(
            o.set_global("nope", &[1]),
            Err(Error::NotFound { .. })
        ));
    }

    #[test]
    fn selftest_relocations() {
        let o = selftest();
        let btf_sec = &o.sections[2];
        assert_eq!(btf_sec.name, "tp_btf/kfree_skb");
        let r: Vec<(usize, &RelocKind)> =
            btf_sec.relocs.iter().map(|(i, r)| (*i, &r.kind)).collect();
        assert_eq!(
            r,
            vec![
                (
                    2,
                    &RelocKind::Call {
                        section: 0,
                        insn: 0
                    }
                ),
                (10, &RelocKind::MapFd { map: 2 }),
                (16, &RelocKind::MapValue { map: 4, offset: 0 }),
                (19, &RelocKind::MapValue { map: 3, offset: 0 }),
                (31, &RelocKind::MapFd { map: 0 }),
                (42, &RelocKind::MapFd { map: 0 }),
                (49, &RelocKind::MapFd { map: 1 }),
            ]
        );
        // `sample_every` is at .rodata+4: the addend comes from the symbol value.
        assert_eq!(
            o.sections[3].relocs[&16].kind,
            RelocKind::MapValue { map: 3, offset: 4 }
        );
    }

    #[test]
    fn section_names_parse_like_libbpf() {
        use ProgramKind::*;
        assert_eq!(
            ProgramKind::from_section("tp/sched/sched_switch"),
            Tracepoint {
                category: "sched".into(),
                name: "sched_switch".into()
            }
        );
        assert_eq!(
            ProgramKind::from_section("kprobe/tcp_v4_connect+0x10"),
            Kprobe {
                func: "tcp_v4_connect".into(),
                offset: 16
            }
        );
        assert_eq!(
            ProgramKind::from_section("kretprobe/f"),
            Kretprobe { func: "f".into() }
        );
        assert_eq!(
            ProgramKind::from_section("fentry/f").expected_attach_type(),
            24
        );
        assert_eq!(
            ProgramKind::from_section("fexit/f").attach_btf_target(),
            Some(("f".into(), Kind::Func))
        );
        assert_eq!(
            ProgramKind::from_section("raw_tp.w/x"),
            RawTracepointWritable { name: "x".into() }
        );
        assert_eq!(
            ProgramKind::from_section("tracepoint/nocat"),
            Unknown("tracepoint/nocat".into())
        );
        assert_eq!(ProgramKind::from_section("xdp").prog_type(), None);
        assert_eq!(ProgramKind::from_section("tc").prog_type(), Some(3));
        assert_eq!(ProgramKind::from_section("tcx/egress"), SchedCls);
        assert_eq!(
            ProgramKind::from_section("tcx/sideways"),
            Unknown("tcx/sideways".into())
        );
    }

    #[test]
    fn malformed_elf_is_an_error_not_a_panic() {
        let good = crate::bpf::embedded::object("selftest").unwrap();
        assert!(Object::parse(&[]).is_err());
        assert!(Object::parse(b"\x7fELF garbage").is_err());
        for n in (0..good.len()).step_by(7) {
            let _ = Object::parse(&good[..n]);
        }
        // Flip bytes all over the file: errors are fine, panics are not.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let mut v = good.to_vec();
            for _ in 0..4 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let i = (seed % v.len() as u64) as usize;
                v[i] = (seed >> 32) as u8;
            }
            if let Ok(mut o) = Object::parse(&v) {
                let _ = crate::bpf::reloc::link_all(&o);
                if let Some(b) = o.btf.clone() {
                    let _ = crate::bpf::core::relocate(&mut o, &b);
                }
            }
        }
        // Not BPF.
        assert!(matches!(
            btf_from_bytes(b"nope"),
            Err(Error::Malformed { .. })
        ));
    }

    #[test]
    fn btf_from_elf_or_raw() {
        let good = crate::bpf::embedded::object("selftest").unwrap();
        let from_elf = btf_from_bytes(good).unwrap();
        let raw = from_elf.to_bytes();
        assert_eq!(btf_from_bytes(&raw).unwrap().types(), from_elf.types());
    }
}
