//! CO-RE (compile once, run everywhere) relocations, following libbpf's
//! `relo_core.c`: parse the local access spec, find candidate target types by
//! essential name (`___flavor` stripped), match each candidate by walking the
//! access string with libbpf's compatibility rules, require all matching
//! candidates to agree, then patch the instruction — or poison it when the
//! target lacks the field/enumerator, so that code guarded by
//! `bpf_core_field_exists` still loads.
//!
//! `matching`: libbpf's type compatibility and candidate matching; `patch`:
//! rewriting (or poisoning) the instruction; here: specs, the computed values, the driver.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fmt;

use super::btf::{essential_name, Btf, Type, INT_SIGNED};
use super::btf_ext::{BtfExt, CoreRelo};
use super::insn::{class, Insn, SRC_K};
use super::object::Object;
use super::{Error, Result};

mod matching;
mod patch;

use matching::{is_flex_arr, kinds_compat, spec_match};
use patch::patch;

/// `enum bpf_core_relo_kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CoreKind {
    /// Field byte offset.
    FieldByteOffset = 0,
    /// Field byte size.
    FieldByteSize = 1,
    /// Field exists (0/1).
    FieldExists = 2,
    /// Field is signed (0/1).
    FieldSigned = 3,
    /// Bitfield left shift for a u64 load.
    FieldLshiftU64 = 4,
    /// Bitfield right shift for a u64 load.
    FieldRshiftU64 = 5,
    /// Local BTF type id.
    TypeIdLocal = 6,
    /// Target BTF type id.
    TypeIdTarget = 7,
    /// Type exists (0/1).
    TypeExists = 8,
    /// Type size.
    TypeSize = 9,
    /// Enumerator exists (0/1).
    EnumvalExists = 10,
    /// Enumerator value.
    EnumvalValue = 11,
    /// Type matches (0/1).
    TypeMatches = 12,
}

impl CoreKind {
    fn from_u32(k: u32) -> Option<CoreKind> {
        use CoreKind::*;
        Some(match k {
            0 => FieldByteOffset,
            1 => FieldByteSize,
            2 => FieldExists,
            3 => FieldSigned,
            4 => FieldLshiftU64,
            5 => FieldRshiftU64,
            6 => TypeIdLocal,
            7 => TypeIdTarget,
            8 => TypeExists,
            9 => TypeSize,
            10 => EnumvalExists,
            11 => EnumvalValue,
            12 => TypeMatches,
            _ => return None,
        })
    }

    fn is_field(self) -> bool {
        (self as u32) <= 5
    }

    fn is_type(self) -> bool {
        matches!(
            self,
            CoreKind::TypeIdLocal
                | CoreKind::TypeIdTarget
                | CoreKind::TypeExists
                | CoreKind::TypeSize
                | CoreKind::TypeMatches
        )
    }

    fn is_enumval(self) -> bool {
        matches!(self, CoreKind::EnumvalExists | CoreKind::EnumvalValue)
    }
}

/// What happened to one relocation (for logs and tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreOutcome {
    /// ELF section.
    pub section: String,
    /// Instruction index in the section.
    pub insn: usize,
    /// Relocation kind.
    pub kind: CoreKind,
    /// Local root type name.
    pub type_name: String,
    /// Access string (`"0:1"`).
    pub access: String,
    /// Value the compiler emitted for the local layout.
    pub local_value: u64,
    /// Value patched in (meaningless when poisoned).
    pub target_value: u64,
    /// The instruction was poisoned (no matching target).
    pub poisoned: bool,
}

impl fmt::Display for CoreOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}+{} {:?} {}[{}]: ",
            self.section, self.insn, self.kind, self.type_name, self.access
        )?;
        if self.poisoned {
            write!(f, "poisoned")
        } else {
            write!(f, "{} -> {}", self.local_value, self.target_value)
        }
    }
}

const MAX_SPEC_LEN: usize = 64;

#[derive(Clone, Debug)]
struct Accessor {
    type_id: u32,
    idx: u32,
    name: Option<String>,
}

#[derive(Clone, Debug, Default)]
struct Spec {
    root_type_id: u32,
    spec: Vec<Accessor>,
    raw_len: usize,
    bit_offset: u64,
}

fn bad(detail: impl Into<String>) -> Error {
    Error::malformed("CO-RE", detail)
}

fn parse_spec(btf: &Btf, type_id: u32, access: &str, kind: CoreKind) -> Result<Spec> {
    let raw: Vec<u32> = access
        .split(':')
        .map(|s| {
            s.parse::<u32>()
                .map_err(|_| bad(format!("bad access string {access:?}")))
        })
        .collect::<Result<_>>()?;
    if raw.is_empty() || raw.len() > MAX_SPEC_LEN {
        return Err(bad(format!("bad access string {access:?}")));
    }
    let mut spec = Spec {
        root_type_id: type_id,
        raw_len: raw.len(),
        ..Spec::default()
    };
    if kind.is_type() {
        if access != "0" {
            return Err(bad(format!(
                "type relocation with access string {access:?}"
            )));
        }
        return Ok(spec);
    }
    let (mut id, t) = btf.skip_mods_and_typedefs(type_id)?;
    let first = raw[0];
    spec.spec.push(Accessor {
        type_id: id,
        idx: first,
        name: None,
    });
    if kind.is_enumval() {
        let vals = t.enum_values();
        if !t.is_any_enum() || raw.len() > 1 || first as usize >= vals.len() {
            return Err(bad("enum relocation on a non-enum or bad index"));
        }
        spec.spec[0].name = Some(btf.name(vals[first as usize].name_off)?.to_string());
        return Ok(spec);
    }
    let sz = btf.resolve_size(id)?;
    spec.bit_offset = u64::from(first) * sz * 8;
    for &idx in &raw[1..] {
        let (tid, t) = btf.skip_mods_and_typedefs(id)?;
        id = tid;
        if t.is_composite() {
            let m = t
                .members()
                .get(idx as usize)
                .ok_or_else(|| bad(format!("member index {idx} out of range")))?;
            spec.bit_offset += u64::from(m.bit_offset);
            if m.name_off != 0 {
                let name = btf.name(m.name_off)?;
                if name.is_empty() {
                    return Err(bad("member with empty name"));
                }
                spec.spec.push(Accessor {
                    type_id: id,
                    idx,
                    name: Some(name.to_string()),
                });
            }
            id = m.ty;
        } else if let Type::Array { elem, nelems, .. } = t {
            let flex = is_flex_arr(btf, spec.spec.last(), *nelems)?;
            let (eid, _) = btf.skip_mods_and_typedefs(*elem)?;
            id = eid;
            if !flex && idx >= *nelems {
                return Err(bad(format!("array index {idx} out of bounds")));
            }
            spec.spec.push(Accessor {
                type_id: id,
                idx,
                name: None,
            });
            let sz = btf.resolve_size(id)?;
            spec.bit_offset += u64::from(idx) * sz * 8;
        } else {
            return Err(bad(format!(
                "access through type {id} of kind {:?}",
                t.kind()
            )));
        }
    }
    Ok(spec)
}

#[derive(Clone, Debug, Default)]
struct Res {
    orig_val: u64,
    new_val: u64,
    poison: bool,
    validate: bool,
    fail_memsz_adjust: bool,
    orig_sz: u32,
    new_sz: u32,
    orig_type_id: u32,
    new_type_id: u32,
    bit_offset: u64,
}

struct FieldVal {
    val: u64,
    field_sz: u32,
    type_id: u32,
    validate: bool,
}

/// libbpf's `bpf_core_calc_field_relo`; `None` spec → `Ok(None)` (poison) except FIELD_EXISTS.
fn calc_field(kind: CoreKind, spec: Option<(&Spec, &Btf)>) -> Result<Option<FieldVal>> {
    if kind == CoreKind::FieldExists {
        return Ok(Some(FieldVal {
            val: u64::from(spec.is_some()),
            field_sz: 0,
            type_id: 0,
            validate: true,
        }));
    }
    let Some((spec, btf)) = spec else {
        return Ok(None);
    };
    let acc = spec.spec.last().ok_or_else(|| bad("empty spec"))?;
    if acc.name.is_none() {
        let sz = u32::try_from(btf.resolve_size(acc.type_id)?).map_err(|_| bad("size"))?;
        let (val, field_sz, type_id) = match kind {
            CoreKind::FieldByteOffset => (spec.bit_offset / 8, sz, acc.type_id),
            CoreKind::FieldByteSize => (u64::from(sz), 0, 0),
            _ => {
                return Err(bad(format!(
                    "{kind:?} cannot be applied to an array access"
                )))
            }
        };
        return Ok(Some(FieldVal {
            val,
            field_sz,
            type_id,
            validate: true,
        }));
    }
    let t = btf.type_by_id(acc.type_id)?;
    let m = *t
        .members()
        .get(acc.idx as usize)
        .ok_or_else(|| bad("member index"))?;
    let (field_type_id, mt) = btf.skip_mods_and_typedefs(m.ty)?;
    let bit_off = spec.bit_offset;
    let mut bit_sz = u64::from(m.bitfield_size);
    let bitfield = bit_sz > 0;
    let (mut byte_sz, mut byte_off);
    if bitfield {
        byte_sz = btf.resolve_size(field_type_id)?;
        if byte_sz == 0 {
            return Err(bad("zero-sized bitfield type"));
        }
        byte_off = bit_off / 8 / byte_sz * byte_sz;
        while bit_off + bit_sz - byte_off * 8 > byte_sz * 8 {
            if byte_sz >= 8 {
                return Err(bad("bitfield cannot be read with a 64-bit load"));
            }
            byte_sz *= 2;
            byte_off = bit_off / 8 / byte_sz * byte_sz;
        }
    } else {
        byte_sz = btf.resolve_size(field_type_id)?;
        byte_off = bit_off / 8;
        bit_sz = byte_sz * 8;
    }
    let mut validate = !bitfield;
    let (mut field_sz, mut type_id) = (0, 0);
    let val = match kind {
        CoreKind::FieldByteOffset => {
            if !bitfield {
                field_sz = u32::try_from(byte_sz).map_err(|_| bad("size"))?;
                type_id = field_type_id;
            }
            byte_off
        }
        CoreKind::FieldByteSize => byte_sz,
        CoreKind::FieldSigned => {
            validate = true;
            let signed = match mt {
                Type::Enum { signed, .. } | Type::Enum64 { signed, .. } => *signed,
                Type::Int { encoding, .. } => encoding & INT_SIGNED != 0,
                _ => false,
            };
            u64::from(signed)
        }
        CoreKind::FieldLshiftU64 => 64u64.wrapping_sub(bit_off + bit_sz - byte_off * 8),
        CoreKind::FieldRshiftU64 => {
            validate = true;
            64u64.wrapping_sub(bit_sz)
        }
        _ => return Err(bad(format!("{kind:?} is not a field relocation"))),
    };
    Ok(Some(FieldVal {
        val,
        field_sz,
        type_id,
        validate,
    }))
}

fn calc_type(kind: CoreKind, spec: Option<(&Spec, &Btf)>) -> Result<u64> {
    let Some((spec, btf)) = spec else {
        return Ok(0);
    };
    Ok(match kind {
        CoreKind::TypeIdLocal | CoreKind::TypeIdTarget => u64::from(spec.root_type_id),
        CoreKind::TypeExists | CoreKind::TypeMatches => 1,
        CoreKind::TypeSize => btf.resolve_size(spec.root_type_id)?,
        _ => return Err(bad("not a type relocation")),
    })
}

fn calc_enumval(kind: CoreKind, spec: Option<(&Spec, &Btf)>) -> Result<Option<u64>> {
    match kind {
        CoreKind::EnumvalExists => Ok(Some(u64::from(spec.is_some()))),
        _ => {
            let Some((spec, btf)) = spec else {
                return Ok(None);
            };
            let acc = &spec.spec[0];
            let t = btf.type_by_id(acc.type_id)?;
            let v = t
                .enum_values()
                .get(acc.idx as usize)
                .ok_or_else(|| bad("enumerator index"))?;
            Ok(Some(match t {
                // libbpf assigns the __s32 `val` to a u64: sign-extended.
                Type::Enum { .. } => v.value as u32 as i32 as i64 as u64,
                _ => v.value,
            }))
        }
    }
}

fn calc_relo(kind: CoreKind, local: (&Spec, &Btf), targ: Option<(&Spec, &Btf)>) -> Result<Res> {
    let mut res = Res {
        validate: true,
        bit_offset: targ.map_or(0, |(s, _)| s.bit_offset),
        ..Res::default()
    };
    if kind.is_field() {
        let l = calc_field(kind, Some(local))?.ok_or_else(|| bad("local field"))?;
        res.orig_val = l.val;
        res.orig_sz = l.field_sz;
        res.orig_type_id = l.type_id;
        res.validate = l.validate;
        match calc_field(kind, targ)? {
            None => res.poison = true,
            Some(t) => {
                res.new_val = t.val;
                res.new_sz = t.field_sz;
                res.new_type_id = t.type_id;
                if res.orig_sz != res.new_sz {
                    let (_, ot) = local.1.skip_mods(res.orig_type_id)?;
                    let tb = targ.map(|(_, b)| b).ok_or_else(|| bad("target btf"))?;
                    let (_, nt) = tb.skip_mods(res.new_type_id)?;
                    let ok = match (ot, nt) {
                        (Type::Ptr { .. }, Type::Ptr { .. }) => true,
                        (Type::Int { encoding: a, .. }, Type::Int { encoding: b, .. }) => a == b,
                        _ => false,
                    };
                    res.fail_memsz_adjust = !ok;
                }
            }
        }
    } else if kind.is_type() {
        res.orig_val = calc_type(kind, Some(local))?;
        res.new_val = calc_type(kind, targ)?;
        if matches!(kind, CoreKind::TypeIdLocal | CoreKind::TypeIdTarget) {
            res.validate = false;
        }
    } else {
        res.orig_val = calc_enumval(kind, Some(local))?.ok_or_else(|| bad("local enum"))?;
        match calc_enumval(kind, targ)? {
            Some(v) => res.new_val = v,
            None => res.poison = true,
        }
    }
    Ok(res)
}

/// Computes and applies one relocation to `insns` (a section's instructions).
fn relocate_one(
    local: &Btf,
    target: &Btf,
    relo: &CoreRelo,
    insns: &mut [Insn],
    cands_cache: &mut HashMap<u32, Vec<u32>>,
) -> Result<(CoreOutcome, usize)> {
    let kind = CoreKind::from_u32(relo.kind)
        .ok_or_else(|| Error::Unsupported(format!("CO-RE relocation kind {}", relo.kind)))?;
    let access = local.name(relo.access_str_off)?.to_string();
    let type_name = local.type_name(relo.type_id)?.to_string();
    if relo.insn_off % 8 != 0 {
        return Err(bad("misaligned instruction offset"));
    }
    let idx = (relo.insn_off / 8) as usize;
    if idx >= insns.len() {
        return Err(bad(format!("instruction #{idx} past the section end")));
    }
    let local_spec = parse_spec(local, relo.type_id, &access, kind)?;
    let res = if kind == CoreKind::TypeIdLocal {
        Res {
            orig_val: u64::from(relo.type_id),
            new_val: u64::from(relo.type_id),
            validate: false,
            ..Res::default()
        }
    } else {
        if type_name.is_empty() {
            return Err(Error::Unsupported(
                "CO-RE relocation against an anonymous type".into(),
            ));
        }
        let cands = match cands_cache.get(&relo.type_id) {
            Some(c) => c.clone(),
            None => {
                let lt = local.type_by_id(relo.type_id)?;
                let c: Vec<u32> = target
                    .ids_by_essential_name(essential_name(&type_name))
                    .into_iter()
                    .filter(|&id| target.type_by_id(id).is_ok_and(|t| kinds_compat(lt, t)))
                    .collect();
                cands_cache.insert(relo.type_id, c.clone());
                c
            }
        };
        let mut chosen: Option<Res> = None;
        for cand in cands {
            let Some(tspec) = spec_match(&local_spec, local, target, cand, kind)? else {
                continue;
            };
            let r = calc_relo(kind, (&local_spec, local), Some((&tspec, target)))?;
            if let Some(c) = &chosen {
                if kind.is_field() && c.bit_offset != r.bit_offset {
                    return Err(bad(format!(
                        "field offset ambiguity for {type_name}[{access}]: {} != {}",
                        c.bit_offset, r.bit_offset
                    )));
                }
                if c.poison != r.poison || (!r.poison && c.new_val != r.new_val) {
                    return Err(bad(format!(
                        "relocation decision ambiguity for {type_name}[{access}]"
                    )));
                }
            } else {
                chosen = Some(r);
            }
        }
        match chosen {
            Some(r) => r,
            None => calc_relo(kind, (&local_spec, local), None)?,
        }
    };
    patch(insns, idx, &res).map_err(|detail| Error::Relocation {
        context: String::new(),
        insn: idx,
        detail: format!("CO-RE {kind:?} {type_name}[{access}]: {detail}"),
    })?;
    Ok((
        CoreOutcome {
            section: String::new(),
            insn: idx,
            kind,
            type_name,
            access,
            local_value: res.orig_val,
            target_value: res.new_val,
            poisoned: res.poison,
        },
        idx,
    ))
}

/// Applies every CO-RE relocation of `obj` against `target` (usually the
/// kernel's BTF), patching the sections' instructions in place. Call before
/// [`super::reloc::link_program`]. Returns one outcome per relocation.
pub fn relocate(obj: &mut Object, target: &Btf) -> Result<Vec<CoreOutcome>> {
    let Object {
        btf,
        btf_ext,
        sections,
        ..
    } = obj;
    let (Some(local), Some(ext)) = (btf.as_ref(), btf_ext.as_ref()) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    let mut cache = HashMap::new();
    for sec in &ext.core_relos {
        let name = local.name(sec.sec_name_off)?;
        let cs = sections
            .iter_mut()
            .find(|c| c.name == name)
            .ok_or_else(|| Error::NotFound {
                what: "code section for CO-RE relocations",
                name: name.into(),
            })?;
        for relo in &sec.records {
            let (mut o, _) = relocate_one(local, target, relo, &mut cs.insns, &mut cache).map_err(
                |e| match e {
                    Error::Relocation { insn, detail, .. } => Error::Relocation {
                        context: name.to_string(),
                        insn,
                        detail,
                    },
                    other => Error::Relocation {
                        context: name.to_string(),
                        insn: (relo.insn_off / 8) as usize,
                        detail: other.to_string(),
                    },
                },
            )?;
            o.section = name.to_string();
            out.push(o);
        }
    }
    Ok(out)
}

/// The CO-RE records of `ext` for one section (convenience for diagnostics).
pub fn relos_for_section<'a>(ext: &'a BtfExt, btf: &Btf, section: &str) -> &'a [CoreRelo] {
    BtfExt::for_section(&ext.core_relos, btf, section)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::btf::Kind;
    use crate::bpf::object::Object;

    const CORE_A: &[u8] = include_bytes!("../../../../tests/fixtures/bpf/core_a.bpf.o");
    const CORE_B: &[u8] = include_bytes!("../../../../tests/fixtures/bpf/core_b.bpf.o");

    fn outcomes() -> (Object, Object, Vec<CoreOutcome>) {
        let mut a = Object::parse(CORE_A).unwrap();
        let b = Object::parse(CORE_B).unwrap();
        let out = relocate(&mut a, b.btf.as_ref().unwrap()).unwrap();
        (a, b, out)
    }

    fn find<'a>(
        out: &'a [CoreOutcome],
        kind: CoreKind,
        ty: &str,
        access: &str,
    ) -> Vec<&'a CoreOutcome> {
        out.iter()
            .filter(|o| o.kind == kind && o.type_name == ty && o.access == access)
            .collect()
    }

    /// (kind, type, access, local value, target value); `None` = poisoned.
    const EXPECTED: &[(CoreKind, &str, &str, u64, Option<u64>)] = &[
        (CoreKind::FieldByteOffset, "thing", "0:0", 0, Some(12)),
        (CoreKind::FieldByteOffset, "thing", "0:1", 4, Some(8)),
        (CoreKind::FieldExists, "thing", "0:0", 1, Some(1)),
        (CoreKind::FieldExists, "thing", "0:2", 1, Some(0)),
        (CoreKind::FieldByteOffset, "thing", "0:2", 8, None),
        // unsigned lo:4 — local bits 96..100, target bits 135..139
        (CoreKind::FieldByteSize, "thing", "0:3", 4, Some(4)),
        (CoreKind::FieldByteOffset, "thing", "0:3", 12, Some(16)),
        (CoreKind::FieldLshiftU64, "thing", "0:3", 60, Some(53)),
        (CoreKind::FieldRshiftU64, "thing", "0:3", 60, Some(60)),
        (CoreKind::FieldSigned, "thing", "0:3", 0, Some(0)),
        // int hi:12 — local bits 100..112, target bits 139..151
        (CoreKind::FieldLshiftU64, "thing", "0:4", 48, Some(41)),
        (CoreKind::FieldRshiftU64, "thing", "0:4", 52, Some(52)),
        (CoreKind::FieldSigned, "thing", "0:4", 1, Some(1)),
        // short w at 14 -> int w at 20
        (CoreKind::FieldByteOffset, "thing", "0:5", 14, Some(20)),
        // flavor thing___v2 matches target `thing`
        (CoreKind::FieldByteOffset, "thing___v2", "0:0", 0, Some(12)),
        (CoreKind::TypeExists, "thing", "0", 1, Some(1)),
        (CoreKind::TypeExists, "nothere", "0", 1, Some(0)),
        (CoreKind::TypeSize, "thing", "0", 16, Some(24)),
        (CoreKind::EnumvalExists, "thing_state", "2", 1, Some(0)),
        (CoreKind::EnumvalValue, "thing_state", "0", 1, Some(10)),
        (CoreKind::EnumvalValue, "thing_state", "2", 3, None),
        (CoreKind::FieldByteOffset, "nothere", "0:0", 0, None),
    ];

    #[test]
    fn core_a_against_core_b_patches_exact_values() {
        let (a, b, out) = outcomes();
        assert_eq!(out.len(), 25, "{out:#?}");
        for &(kind, ty, access, local, target) in EXPECTED {
            let found = find(&out, kind, ty, access);
            assert!(!found.is_empty(), "no {kind:?} {ty}[{access}]");
            for o in found {
                assert_eq!(o.local_value, local, "{o}");
                match target {
                    Some(v) => {
                        assert!(!o.poisoned, "{o}");
                        assert_eq!(o.target_value, v, "{o}");
                    }
                    None => assert!(o.poisoned, "{o}"),
                }
            }
        }
        let btf_b = b.btf.as_ref().unwrap();
        let thing_b = btf_b.find_by_name_kind("thing", Kind::Struct).unwrap();
        let thing_a = a
            .btf
            .as_ref()
            .unwrap()
            .find_by_name_kind("thing", Kind::Struct)
            .unwrap();
        let tid = find(&out, CoreKind::TypeIdTarget, "thing", "0")[0];
        assert_eq!(
            (tid.local_value, tid.target_value),
            (u64::from(thing_a), u64::from(thing_b))
        );
        let lid = find(&out, CoreKind::TypeIdLocal, "thing", "0")[0];
        assert_eq!(lid.target_value, u64::from(thing_a));
    }

    #[test]
    fn patched_instructions_are_exact() {
        let (a, _, out) = outcomes();
        let insns = &a
            .sections
            .iter()
            .find(|s| s.name == "raw_tp/core")
            .unwrap()
            .insns;
        let at = |kind, ty, access| {
            find(&out, kind, ty, access)
                .iter()
                .map(|o| o.insn)
                .collect::<Vec<_>>()
        };
        // ALU immediates.
        for i in at(CoreKind::FieldByteOffset, "thing", "0:0") {
            assert_eq!(insns[i].imm, 12);
        }
        // LDX of t->b: off 4 -> 8, still a 4-byte load.
        let b_loads: Vec<usize> = at(CoreKind::FieldByteOffset, "thing", "0:1")
            .into_iter()
            .filter(|&i| insns[i].class() == class::LDX)
            .collect();
        assert_eq!(b_loads.len(), 1);
        assert_eq!(
            (insns[b_loads[0]].off, insns[b_loads[0]].mem_size()),
            (8, 4)
        );
        // LDX of t->w: off 14 -> 20 and the load grows from 2 to 4 bytes.
        let w = at(CoreKind::FieldByteOffset, "thing", "0:5")[0];
        assert_eq!(insns[w].class(), class::LDX);
        assert_eq!((insns[w].off, insns[w].mem_size()), (20, 4));
        // The guarded load of t->gone is poisoned; its guard is 0.
        let gone = at(CoreKind::FieldByteOffset, "thing", "0:2")[0];
        assert!(insns[gone].is_poison());
        let exists = at(CoreKind::FieldExists, "thing", "0:2")[0];
        assert_eq!(insns[exists].imm, 0);
        // ld_imm64 enum value: both halves poisoned.
        let ev = at(CoreKind::EnumvalValue, "thing_state", "2")[0];
        assert!(insns[ev].is_poison() && insns[ev + 1].is_poison());
        // ld_imm64 enum value THING_A = 10.
        let ev = at(CoreKind::EnumvalValue, "thing_state", "0")[0];
        assert_eq!(
            crate::bpf::insn::ld_imm64_value(&insns[ev], &insns[ev + 1]),
            10
        );
        // Nothing else became a poison call.
        let poisoned = insns.iter().filter(|i| i.is_poison()).count();
        assert_eq!(
            poisoned, 4,
            "gone load, nothere offset, enum value (2 halves)"
        );
    }

    #[test]
    fn flavors_in_one_btf_make_type_size_ambiguous() {
        // core_a's own BTF holds `thing` and `thing___v2` of different sizes:
        // like libbpf, a TYPE_SIZE relocation against it must refuse to guess.
        let mut a = Object::parse(CORE_A).unwrap();
        let own = a.btf.clone().unwrap();
        let err = relocate(&mut a, &own).unwrap_err();
        assert!(err.to_string().contains("ambiguity"), "{err}");
    }

    #[test]
    fn ambiguous_candidates_are_an_error() {
        // Target with two flavors of `thing` that disagree on `a`'s offset.
        let b = Object::parse(CORE_B).unwrap();
        let mut target = b.btf.clone().unwrap();
        let thing = target.find_by_name_kind("thing", Kind::Struct).unwrap();
        let Type::Struct { size, members, .. } = target.type_by_id(thing).unwrap().clone() else {
            unreachable!()
        };
        let mut members = members;
        for m in &mut members {
            m.bit_offset += 64;
        }
        let n = target.add_string("thing___other");
        target.add_type(Type::Struct {
            name_off: n,
            size: size + 8,
            members,
        });
        let mut a = Object::parse(CORE_A).unwrap();
        let err = relocate(&mut a, &target).unwrap_err();
        assert!(err.to_string().contains("ambiguity"), "{err}");
    }

    #[test]
    fn selftest_against_vmlinux() {
        let Some(data) = crate::bpf::target_btf::vmlinux_for_test("selftest_against_vmlinux")
        else {
            return;
        };
        let vmlinux = Btf::parse(&data).unwrap();
        let mut obj = Object::parse(crate::bpf::embedded::object("selftest").unwrap()).unwrap();
        let out = relocate(&mut obj, &vmlinux).unwrap();
        assert!(!out.is_empty());
        for o in &out {
            assert!(!o.poisoned, "{o}");
        }
        // sk_buff->dev offset must be what the kernel BTF says.
        let skb = vmlinux.find_by_name_kind("sk_buff", Kind::Struct).unwrap();
        let (_, dev_bits) = vmlinux.find_member(skb, "dev").unwrap().unwrap();
        let dev = out
            .iter()
            .find(|o| o.kind == CoreKind::FieldByteOffset && o.type_name == "sk_buff")
            .unwrap();
        assert_eq!(dev.target_value, u64::from(dev_bits / 8));
        let ns = vmlinux
            .find_by_name_kind("ns_common", Kind::Struct)
            .unwrap();
        let (_, inum_bits) = vmlinux.find_member(ns, "inum").unwrap().unwrap();
        let net = vmlinux.find_by_name_kind("net", Kind::Struct).unwrap();
        let (_, ns_bits) = vmlinux.find_member(net, "ns").unwrap().unwrap();
        let inum = out
            .iter()
            .find(|o| o.kind == CoreKind::FieldByteOffset && o.type_name == "net")
            .unwrap();
        assert_eq!(inum.target_value, u64::from((ns_bits + inum_bits) / 8));
    }
}
