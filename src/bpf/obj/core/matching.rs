//! libbpf's CO-RE type compatibility rules and candidate matching (`relo_core.c`).

use super::*;

pub(super) fn is_flex_arr(btf: &Btf, acc: Option<&Accessor>, nelems: u32) -> Result<bool> {
    let Some(acc) = acc else { return Ok(false) };
    if acc.name.is_none() || nelems > 0 {
        return Ok(false);
    }
    let t = btf.type_by_id(acc.type_id)?;
    Ok(acc.idx as usize + 1 == t.members().len())
}

pub(super) fn kinds_compat(a: &Type, b: &Type) -> bool {
    a.kind() == b.kind() || (a.is_any_enum() && b.is_any_enum())
}

pub(super) fn names_match(lb: &Btf, loff: u32, tb: &Btf, toff: u32) -> Result<bool> {
    Ok(essential_name(lb.name(loff)?) == essential_name(tb.name(toff)?))
}

pub(super) fn fields_compat(lb: &Btf, lid: u32, tb: &Btf, tid: u32) -> Result<bool> {
    let (mut lid, mut tid) = (lid, tid);
    for _ in 0..MAX_SPEC_LEN {
        let (l, lt) = lb.skip_mods_and_typedefs(lid)?;
        let (t, tt) = tb.skip_mods_and_typedefs(tid)?;
        if lt.is_composite() && tt.is_composite() {
            return Ok(true);
        }
        if !kinds_compat(lt, tt) {
            return Ok(false);
        }
        match (lt, tt) {
            (Type::Ptr { .. }, _) | (Type::Float { .. }, _) => return Ok(true),
            (Type::Fwd { .. } | Type::Enum { .. } | Type::Enum64 { .. }, _) => {
                return names_match(lb, lt.name_off(), tb, tt.name_off())
            }
            (Type::Int { offset: lo, .. }, Type::Int { offset: to, .. }) => {
                return Ok(*lo == 0 && *to == 0)
            }
            (Type::Array { elem: le, .. }, Type::Array { elem: te, .. }) => {
                lid = *le;
                tid = *te;
                let _ = (l, t);
            }
            _ => return Ok(false),
        }
    }
    Err(bad("field type nesting too deep"))
}

pub(super) fn types_compat(lb: &Btf, lid: u32, tb: &Btf, tid: u32, depth: usize) -> Result<bool> {
    if depth > MAX_SPEC_LEN {
        return Err(bad("type nesting too deep"));
    }
    let (_, lt) = lb.skip_mods_and_typedefs(lid)?;
    let (_, tt) = tb.skip_mods_and_typedefs(tid)?;
    if !kinds_compat(lt, tt) {
        return Ok(false);
    }
    Ok(match (lt, tt) {
        (Type::Void, _)
        | (Type::Struct { .. }, _)
        | (Type::Union { .. }, _)
        | (Type::Enum { .. }, _)
        | (Type::Enum64 { .. }, _)
        | (Type::Fwd { .. }, _) => true,
        (Type::Int { offset: lo, .. }, Type::Int { offset: to, .. }) => *lo == 0 && *to == 0,
        (Type::Ptr { ty: l }, Type::Ptr { ty: t }) => types_compat(lb, *l, tb, *t, depth + 1)?,
        (Type::Array { elem: l, .. }, Type::Array { elem: t, .. }) => {
            types_compat(lb, *l, tb, *t, depth + 1)?
        }
        (
            Type::FuncProto {
                ret: lr,
                params: lp,
            },
            Type::FuncProto {
                ret: tr,
                params: tp,
            },
        ) => {
            if lp.len() != tp.len() {
                return Ok(false);
            }
            for (l, t) in lp.iter().zip(tp) {
                if !types_compat(lb, l.ty, tb, t.ty, depth + 1)? {
                    return Ok(false);
                }
            }
            types_compat(lb, *lr, tb, *tr, depth + 1)?
        }
        _ => false,
    })
}

/// A stricter check for `TYPE_MATCHES`: names agree, every local member or
/// enumerator exists in the target by name with a matching type, ints agree in
/// size and signedness, arrays in length.
pub(super) fn types_match(lb: &Btf, lid: u32, tb: &Btf, tid: u32, depth: usize) -> Result<bool> {
    if depth > MAX_SPEC_LEN {
        return Err(bad("type nesting too deep"));
    }
    let (_, lt) = lb.skip_mods(lid)?;
    let (_, tt) = tb.skip_mods(tid)?;
    if lt.name_off() != 0 && !names_match(lb, lt.name_off(), tb, tt.name_off())? {
        return Ok(false);
    }
    let (_, lt) = lb.skip_mods_and_typedefs(lid)?;
    let (_, tt) = tb.skip_mods_and_typedefs(tid)?;
    if !kinds_compat(lt, tt) {
        return Ok(false);
    }
    Ok(match (lt, tt) {
        (Type::Void, _) | (Type::Fwd { .. }, _) => true,
        (
            Type::Int {
                size: ls,
                encoding: le,
                ..
            },
            Type::Int {
                size: ts,
                encoding: te,
                ..
            },
        ) => ls == ts && (le & INT_SIGNED) == (te & INT_SIGNED),
        (Type::Float { size: ls, .. }, Type::Float { size: ts, .. }) => ls == ts,
        (Type::Ptr { ty: l }, Type::Ptr { ty: t }) => types_match(lb, *l, tb, *t, depth + 1)?,
        (
            Type::Array {
                elem: l,
                nelems: ln,
                ..
            },
            Type::Array {
                elem: t,
                nelems: tn,
                ..
            },
        ) => ln == tn && types_match(lb, *l, tb, *t, depth + 1)?,
        (l, t) if l.is_any_enum() => {
            for lv in l.enum_values() {
                let ln = lb.name(lv.name_off)?;
                let mut found = false;
                for tv in t.enum_values() {
                    if tb.name(tv.name_off)? == ln {
                        found = true;
                        break;
                    }
                }
                if !found {
                    return Ok(false);
                }
            }
            true
        }
        (l, t) if l.is_composite() => {
            for lm in l.members() {
                let ln = lb.name(lm.name_off)?;
                let mut found = false;
                for tm in t.members() {
                    if tb.name(tm.name_off)? == ln {
                        if !types_match(lb, lm.ty, tb, tm.ty, depth + 1)? {
                            return Ok(false);
                        }
                        found = true;
                        break;
                    }
                }
                if !found {
                    return Ok(false);
                }
            }
            true
        }
        (Type::FuncProto { .. }, Type::FuncProto { .. }) => {
            types_compat(lb, lid, tb, tid, depth + 1)?
        }
        _ => false,
    })
}

/// libbpf's `bpf_core_match_member`: find the local accessor's field in the
/// target composite, descending into anonymous members.
pub(super) fn match_member(
    lb: &Btf,
    lacc: &Accessor,
    tb: &Btf,
    targ_id: u32,
    spec: &mut Spec,
    next: &mut u32,
    depth: usize,
) -> Result<bool> {
    if depth > MAX_SPEC_LEN {
        return Err(bad("anonymous member nesting too deep"));
    }
    let (targ_id, tt) = tb.skip_mods_and_typedefs(targ_id)?;
    if !tt.is_composite() {
        return Ok(false);
    }
    let lt = lb.type_by_id(lacc.type_id)?;
    let lm = *lt
        .members()
        .get(lacc.idx as usize)
        .ok_or_else(|| bad("local member index out of range"))?;
    let lname = lacc.name.as_deref().unwrap_or("");
    for (i, m) in tt.members().iter().enumerate() {
        if spec.raw_len >= MAX_SPEC_LEN {
            return Err(bad("access spec too long"));
        }
        spec.bit_offset += u64::from(m.bit_offset);
        spec.raw_len += 1;
        let tname = tb.name(m.name_off)?;
        if tname.is_empty() {
            if match_member(lb, lacc, tb, m.ty, spec, next, depth + 1)? {
                return Ok(true);
            }
        } else if tname == lname {
            *next = m.ty;
            if fields_compat(lb, lm.ty, tb, m.ty)? {
                spec.spec.push(Accessor {
                    type_id: targ_id,
                    idx: i as u32,
                    name: Some(tname.to_string()),
                });
                return Ok(true);
            }
            return Ok(false);
        }
        spec.bit_offset -= u64::from(m.bit_offset);
        spec.raw_len -= 1;
    }
    Ok(false)
}

pub(super) fn spec_match(
    local: &Spec,
    lb: &Btf,
    tb: &Btf,
    targ_id: u32,
    kind: CoreKind,
) -> Result<Option<Spec>> {
    let mut t = Spec {
        root_type_id: targ_id,
        ..Spec::default()
    };
    if kind.is_type() {
        let ok = if kind == CoreKind::TypeMatches {
            types_match(lb, local.root_type_id, tb, targ_id, 0)?
        } else {
            types_compat(lb, local.root_type_id, tb, targ_id, 0)?
        };
        return Ok(ok.then_some(t));
    }
    if kind.is_enumval() {
        let (tid, tt) = tb.skip_mods_and_typedefs(targ_id)?;
        if !tt.is_any_enum() {
            return Ok(None);
        }
        let lname = essential_name(local.spec[0].name.as_deref().unwrap_or(""));
        for (i, v) in tt.enum_values().iter().enumerate() {
            let n = tb.name(v.name_off)?;
            if essential_name(n) == lname {
                t.spec.push(Accessor {
                    type_id: tid,
                    idx: i as u32,
                    name: Some(n.to_string()),
                });
                t.raw_len = 1;
                return Ok(Some(t));
            }
        }
        return Ok(None);
    }
    let mut targ_id = targ_id;
    for (i, lacc) in local.spec.iter().enumerate() {
        let (tid, tt) = tb.skip_mods_and_typedefs(targ_id)?;
        targ_id = tid;
        if lacc.name.is_some() {
            let mut next = 0;
            if !match_member(lb, lacc, tb, targ_id, &mut t, &mut next, 0)? {
                return Ok(None);
            }
            targ_id = next;
        } else {
            if i > 0 {
                let Type::Array { elem, nelems, .. } = tt else {
                    return Ok(None);
                };
                let flex = is_flex_arr(tb, t.spec.last(), *nelems)?;
                if !flex && lacc.idx >= *nelems {
                    return Ok(None);
                }
                targ_id = tb.skip_mods_and_typedefs(*elem)?.0;
            }
            if t.raw_len >= MAX_SPEC_LEN {
                return Err(bad("access spec too long"));
            }
            t.spec.push(Accessor {
                type_id: targ_id,
                idx: lacc.idx,
                name: None,
            });
            t.raw_len += 1;
            let sz = tb.resolve_size(targ_id)?;
            t.bit_offset += u64::from(lacc.idx) * sz * 8;
        }
    }
    Ok(Some(t))
}
