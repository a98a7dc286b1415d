//! Producing loadable instruction streams: bpf-to-bpf call linking (callees
//! appended after the entry program, call offsets fixed, func_info/line_info
//! rebased) and map references for the kernel layer to patch with fds.
//!
//! Run [`super::core::relocate`] on the object first (libbpf's order: CO-RE on
//! each section's own instructions, then linking, then data relocations).
#![forbid(unsafe_code)]

use std::collections::HashMap;

use super::btf_ext::{BtfExt, FuncInfo, LineInfo};
use super::insn::{Insn, PSEUDO_FUNC, PSEUDO_MAP_FD, PSEUDO_MAP_VALUE};
use super::object::{Object, ProgramKind, RelocKind};
use super::{Error, Result};

/// How an instruction refers to a map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapRefKind {
    /// `BPF_PSEUDO_MAP_FD`: `insn.imm = fd`.
    Fd,
    /// `BPF_PSEUDO_MAP_VALUE`: `insn.imm = fd`, the next instruction's `imm` already holds `offset`.
    Value {
        /// Byte offset into the map's value.
        offset: u32,
    },
}

/// One `ld_imm64` that must receive a map fd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapRef {
    /// Instruction index in [`LinkedProgram::insns`].
    pub insn: usize,
    /// Index into [`Object::maps`].
    pub map: usize,
    /// Fd or value pointer.
    pub kind: MapRefKind,
}

/// A program ready for `BPF_PROG_LOAD` once map fds are patched in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkedProgram {
    /// Program (function) name.
    pub name: String,
    /// Section name.
    pub section_name: String,
    /// Type and attach point.
    pub kind: ProgramKind,
    /// License string for the kernel ("GPL" when the object has none is the kernel layer's call).
    pub license: Option<String>,
    /// Entry function first, then every reachable subprogram.
    pub insns: Vec<Insn>,
    /// `ld_imm64`s to patch with map fds.
    pub map_refs: Vec<MapRef>,
    /// One record per function, `insn_off` in instructions (what the kernel wants).
    pub func_info: Vec<FuncInfo>,
    /// Line info, `insn_off` in instructions.
    pub line_info: Vec<LineInfo>,
    /// (function name, first instruction) of every linked function, entry first.
    pub functions: Vec<(String, usize)>,
}

impl LinkedProgram {
    /// Writes map fds (indexed like [`Object::maps`]) into the `ld_imm64`s.
    pub fn apply_map_fds(&mut self, fds: &[i32]) -> Result<()> {
        for r in &self.map_refs {
            let fd = *fds.get(r.map).ok_or_else(|| Error::Relocation {
                context: self.name.clone(),
                insn: r.insn,
                detail: format!("no fd for map #{}", r.map),
            })?;
            self.insns[r.insn].imm = fd;
        }
        Ok(())
    }
}

type Unit = (usize, usize, usize, usize, String);

/// Appends the function starting at `start` of section `sec`.
fn append(
    obj: &Object,
    prog: &str,
    (sec, start): (usize, usize),
    out: &mut Vec<Insn>,
    units: &mut Vec<Unit>,
    placed: &mut HashMap<(usize, usize), usize>,
) -> Result<usize> {
    let cs = &obj.sections[sec];
    let err = |detail: String| Error::Relocation {
        context: prog.to_string(),
        insn: out.len(),
        detail,
    };
    let f = cs
        .functions
        .iter()
        .find(|f| f.insn_off == start)
        .ok_or_else(|| err(format!("no function at {}+{start}", cs.name)))?;
    if f.insn_len == 0 {
        return Err(err(format!("function {} has no size", f.name)));
    }
    let at = out.len();
    out.extend_from_slice(&cs.insns[start..start + f.insn_len]);
    placed.insert((sec, start), at);
    units.push((sec, start, f.insn_len, at, f.name.clone()));
    Ok(at)
}

/// Links every program of `obj`.
pub fn link_all(obj: &Object) -> Result<Vec<LinkedProgram>> {
    obj.programs
        .iter()
        .map(|p| link_program(obj, &p.name))
        .collect()
}

/// Links the program named `name`: appends each reachable subprogram once,
/// fixes call offsets, rebases func/line info and collects map references.
pub fn link_program(obj: &Object, name: &str) -> Result<LinkedProgram> {
    let prog = obj.program(name).ok_or_else(|| Error::NotFound {
        what: "program",
        name: name.into(),
    })?;
    let err = |insn: usize, detail: String| Error::Relocation {
        context: name.to_string(),
        insn,
        detail,
    };
    let has_func_info = obj
        .btf_ext
        .as_ref()
        .is_some_and(|e| e.func_info.iter().any(|s| !s.records.is_empty()));

    // (section, first insn in section) -> first insn in the linked program
    let mut placed: HashMap<(usize, usize), usize> = HashMap::new();
    // (section, first insn in section, length, linked offset, name)
    let mut units: Vec<Unit> = Vec::new();
    let mut out: Vec<Insn> = Vec::new();
    let mut map_refs = Vec::new();

    append(
        obj,
        name,
        (prog.section, prog.insn_off),
        &mut out,
        &mut units,
        &mut placed,
    )?;

    let mut u = 0;
    while u < units.len() {
        let (sec, start, len, at, _) = units[u].clone();
        let cs = &obj.sections[sec];
        let mut j = 0;
        while j < len {
            let li = at + j;
            let si = start + j;
            let ins = out[li];
            let mut target = None;
            if let Some(r) = cs.relocs.get(&si) {
                match r.kind {
                    RelocKind::MapFd { map } => {
                        out[li].set_src(PSEUDO_MAP_FD);
                        out[li].imm = 0;
                        map_refs.push(MapRef {
                            insn: li,
                            map,
                            kind: MapRefKind::Fd,
                        });
                    }
                    RelocKind::MapValue { map, offset } => {
                        if li + 1 >= out.len() {
                            return Err(err(li, "truncated ld_imm64".into()));
                        }
                        out[li].set_src(PSEUDO_MAP_VALUE);
                        out[li].imm = 0;
                        out[li + 1].imm = offset as i32;
                        map_refs.push(MapRef {
                            insn: li,
                            map,
                            kind: MapRefKind::Value { offset },
                        });
                    }
                    RelocKind::Call { section, insn } => target = Some((section, insn)),
                    RelocKind::SubprogAddr { section, insn } => {
                        out[li].set_src(PSEUDO_FUNC);
                        target = Some((section, insn));
                    }
                }
            } else if ins.is_pseudo_call() || (ins.is_ld_imm64() && ins.src() == PSEUDO_FUNC) {
                let t = si as i64 + i64::from(ins.imm) + 1;
                let t = usize::try_from(t)
                    .map_err(|_| err(li, format!("call target {t} out of range")))?;
                target = Some((sec, t));
            }
            if let Some((tsec, tinsn)) = target {
                let callee = match placed.get(&(tsec, tinsn)) {
                    Some(&c) => c,
                    None => append(obj, name, (tsec, tinsn), &mut out, &mut units, &mut placed)?,
                };
                let rel = callee as i64 - li as i64 - 1;
                out[li].imm =
                    i32::try_from(rel).map_err(|_| err(li, "call offset overflow".into()))?;
            }
            j += if ins.is_ld_imm64() { 2 } else { 1 };
        }
        u += 1;
    }

    let mut func_info = Vec::new();
    let mut line_info = Vec::new();
    if let (Some(ext), Some(btf)) = (obj.btf_ext.as_ref(), obj.btf.as_ref()) {
        for (sec, start, len, at, fname) in &units {
            let sname = &obj.sections[*sec].name;
            let fi = BtfExt::for_section(&ext.func_info, btf, sname);
            match fi.iter().find(|r| r.insn_off as usize == start * 8) {
                Some(r) => func_info.push(FuncInfo {
                    insn_off: *at as u32,
                    type_id: r.type_id,
                }),
                None if has_func_info => {
                    return Err(err(
                        *at,
                        format!(
                        "function {fname} has no func_info; the kernel needs one per subprogram"
                    ),
                    ))
                }
                None => {}
            }
            let (lo, hi) = (start * 8, (start + len) * 8);
            for r in BtfExt::for_section(&ext.line_info, btf, sname) {
                let off = r.insn_off as usize;
                if off >= lo && off < hi {
                    line_info.push(LineInfo {
                        insn_off: (at + off / 8 - start) as u32,
                        ..*r
                    });
                }
            }
        }
    }
    line_info.sort_by_key(|l| l.insn_off);

    Ok(LinkedProgram {
        name: prog.name.clone(),
        section_name: prog.section_name.clone(),
        kind: prog.kind.clone(),
        license: obj.license.clone(),
        insns: out,
        map_refs,
        func_info,
        line_info,
        functions: units.into_iter().map(|(_, _, _, at, n)| (n, at)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::insn::PSEUDO_CALL;

    fn selftest() -> Object {
        Object::parse(crate::bpf::embedded::object("selftest").unwrap()).unwrap()
    }

    #[test]
    fn subprogram_is_appended_and_call_fixed() {
        let o = selftest();
        let p = link_program(&o, "kfree_skb_btf").unwrap();
        assert_eq!(p.insns.len(), 66 + 31);
        assert_eq!(
            p.functions,
            vec![
                ("kfree_skb_btf".to_string(), 0),
                ("skb_netns".to_string(), 66)
            ]
        );
        let call = p.insns[2];
        assert_eq!((call.src(), call.imm), (PSEUDO_CALL, 66 - 2 - 1));
        // The appended body is the .text function verbatim (no relocations in it).
        assert_eq!(&p.insns[66..], &o.sections[0].insns[..31]);
        // func_info: one per function, in instruction units.
        let fi: Vec<u32> = p.func_info.iter().map(|f| f.insn_off).collect();
        assert_eq!(fi, vec![0, 66]);
        let btf = o.btf.as_ref().unwrap();
        assert_eq!(btf.type_name(p.func_info[1].type_id).unwrap(), "skb_netns");
        // line_info rebased into the program and sorted; some lines in the subprogram.
        assert!(p
            .line_info
            .windows(2)
            .all(|w| w[0].insn_off <= w[1].insn_off));
        assert!(p.line_info.iter().any(|l| l.insn_off >= 66));
        assert!(p
            .line_info
            .iter()
            .all(|l| (l.insn_off as usize) < p.insns.len()));
        // Same subprogram, different caller offset.
        let r = link_program(&o, "kfree_skb_raw").unwrap();
        assert_eq!(r.insns[1].imm, 23 - 1 - 1);
        assert_eq!(r.func_info[1].insn_off, 23);
    }

    #[test]
    fn map_references_and_fds() {
        let o = selftest();
        let mut p = link_program(&o, "kfree_skb_raw").unwrap();
        assert_eq!(
            p.map_refs,
            vec![
                MapRef {
                    insn: 6,
                    map: 2,
                    kind: MapRefKind::Fd
                },
                MapRef {
                    insn: 13,
                    map: 4,
                    kind: MapRefKind::Value { offset: 0 }
                },
                MapRef {
                    insn: 16,
                    map: 3,
                    kind: MapRefKind::Value { offset: 4 }
                },
            ]
        );
        assert_eq!(p.insns[6].src(), PSEUDO_MAP_FD);
        assert_eq!((p.insns[16].src(), p.insns[17].imm), (PSEUDO_MAP_VALUE, 4));
        let fds = [100, 101, 102, 103, 104];
        p.apply_map_fds(&fds).unwrap();
        assert_eq!(
            (p.insns[6].imm, p.insns[13].imm, p.insns[16].imm),
            (102, 104, 103)
        );
        assert!(p.apply_map_fds(&[1]).is_err());
    }

    #[test]
    fn two_programs_in_one_section_link_separately() {
        let o = selftest();
        let all = link_all(&o).unwrap();
        assert_eq!(all.len(), 9);
        let b = all.iter().find(|p| p.name == "net_dev_queue_b").unwrap();
        assert_eq!(b.insns.len(), 16);
        assert_eq!(
            b.map_refs[0].insn, 4,
            "relocation indices are relative to the program"
        );
        assert_eq!(b.func_info.len(), 1);
        assert!(b.line_info.iter().all(|l| l.insn_off < 16));
        assert!(matches!(
            link_program(&o, "nope"),
            Err(Error::NotFound { .. })
        ));
    }
}
