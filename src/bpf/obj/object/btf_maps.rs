//! BTF-defined maps (`.maps`) and the BTF of global data sections.

use super::*;

pub(super) fn datasec_vars(btf: &Btf, section: &str) -> Result<Vec<GlobalVar>> {
    let Some(id) = btf.find_by_name_kind(section, Kind::Datasec) else {
        return Ok(Vec::new());
    };
    let Type::Datasec { vars, .. } = btf.type_by_id(id)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for v in vars {
        if let Type::Var { name_off, ty, .. } = btf.type_by_id(v.ty)? {
            out.push(GlobalVar {
                name: btf.name(*name_off)?.to_string(),
                offset: v.offset,
                size: v.size,
                type_id: *ty,
            });
        }
    }
    out.sort_by_key(|v| v.offset);
    Ok(out)
}

pub(super) fn fixup_datasecs(
    btf: &mut Btf,
    sections: &BTreeMap<String, (usize, u64)>,
    syms: &[Option<Sym>],
) -> Result<()> {
    for id in 1..btf.len() {
        let Type::Datasec { name_off, vars, .. } = btf.type_by_id(id)? else {
            continue;
        };
        let name = btf.name(*name_off)?.to_string();
        let Some(&(sec_idx, sec_size)) = sections.get(&name) else {
            continue;
        };
        let mut fixed = Vec::with_capacity(vars.len());
        for v in vars.clone() {
            let mut v = v;
            if let Type::Var { name_off, ty, .. } = btf.type_by_id(v.ty)? {
                let vname = btf.name(*name_off)?;
                if let Some(s) = syms
                    .iter()
                    .flatten()
                    .find(|s| s.section == Some(sec_idx) && !s.is_section && s.name == vname)
                {
                    v.offset = u32::try_from(s.value)
                        .map_err(|_| Error::malformed("ELF", "symbol offset"))?;
                }
                let size = btf.resolve_size(*ty)?;
                v.size = size as u32;
            }
            if u64::from(v.offset) + u64::from(v.size) > sec_size {
                return Err(Error::malformed(
                    "BTF DATASEC",
                    format!(
                        "variable in {name} at {}+{} past the section end",
                        v.offset, v.size
                    ),
                ));
            }
            fixed.push(v);
        }
        fixed.sort_by_key(|v| v.offset);
        if let Type::Datasec { size, vars, .. } = btf.type_mut(id)? {
            *size = u32::try_from(sec_size).map_err(|_| Error::malformed("ELF", "section size"))?;
            *vars = fixed;
        }
    }
    Ok(())
}

pub(super) fn parse_btf_maps(
    btf: &Btf,
    maps_sec: usize,
    syms: &[Option<Sym>],
) -> Result<Vec<MapDef>> {
    let id = btf
        .find_by_name_kind(".maps", Kind::Datasec)
        .ok_or_else(|| Error::malformed("BTF", "no DATASEC .maps"))?;
    let Type::Datasec { vars, .. } = btf.type_by_id(id)? else {
        unreachable!("looked up by kind");
    };
    let mut maps = Vec::new();
    for v in vars {
        let Type::Var { name_off, ty, .. } = btf.type_by_id(v.ty)? else {
            return Err(Error::malformed("BTF .maps", "DATASEC entry is not a VAR"));
        };
        let name = btf.name(*name_off)?.to_string();
        let (_, def) = btf.skip_mods_and_typedefs(*ty)?;
        let Type::Struct { members, .. } = def else {
            return Err(Error::malformed(
                "BTF .maps",
                format!("map {name} is not a struct"),
            ));
        };
        let sym = syms
            .iter()
            .flatten()
            .find(|s| s.section == Some(maps_sec) && s.name == name)
            .ok_or_else(|| Error::malformed("ELF", format!("no symbol for map {name}")))?;
        let mut m = MapDef {
            name: name.clone(),
            origin: MapOrigin::BtfDefined,
            map_type: 0,
            key_size: 0,
            value_size: 0,
            max_entries: 0,
            map_flags: 0,
            numa_node: 0,
            pinning: 0,
            map_extra: 0,
            key_type_id: 0,
            value_type_id: 0,
            data: Vec::new(),
            vars: Vec::new(),
            elf_section: maps_sec,
            sym_offset: sym.value,
        };
        for mem in members {
            let field = btf.name(mem.name_off)?;
            let bad = |why: &str| {
                Error::malformed("BTF .maps", format!("map {name} field {field}: {why}"))
            };
            let (_, pt) = btf.skip_mods_and_typedefs(mem.ty)?;
            let Type::Ptr { ty: pointee } = pt else {
                return Err(bad("not a pointer (use __uint/__type)"));
            };
            let int_val = || -> Result<u32> {
                match btf.type_by_id(*pointee)? {
                    Type::Array { nelems, .. } => Ok(*nelems),
                    _ => Err(bad("not an array pointer (use __uint)")),
                }
            };
            let type_size = || -> Result<u32> {
                u32::try_from(btf.resolve_size(*pointee)?).map_err(|_| bad("size too large"))
            };
            match field {
                "type" => m.map_type = int_val()?,
                "max_entries" => m.max_entries = int_val()?,
                "map_flags" => m.map_flags = int_val()?,
                "numa_node" => m.numa_node = int_val()?,
                "pinning" => m.pinning = int_val()?,
                "map_extra" => m.map_extra = u64::from(int_val()?),
                "key_size" => set_size(&mut m.key_size, int_val()?).map_err(|e| bad(&e))?,
                "value_size" => set_size(&mut m.value_size, int_val()?).map_err(|e| bad(&e))?,
                "key" => {
                    set_size(&mut m.key_size, type_size()?).map_err(|e| bad(&e))?;
                    m.key_type_id = *pointee;
                }
                "value" => {
                    set_size(&mut m.value_size, type_size()?).map_err(|e| bad(&e))?;
                    m.value_type_id = *pointee;
                }
                "values" => {
                    return Err(Error::Unsupported(format!(
                        "map {name}: initial 'values' (map-in-map)"
                    )))
                }
                other => {
                    return Err(Error::Unsupported(format!(
                        "map {name}: unknown attribute {other}"
                    )))
                }
            }
        }
        if m.map_type == 0 {
            return Err(Error::malformed(
                "BTF .maps",
                format!("map {name} has no type"),
            ));
        }
        maps.push(m);
    }
    Ok(maps)
}

fn set_size(slot: &mut u32, v: u32) -> std::result::Result<(), String> {
    if *slot != 0 && *slot != v {
        return Err(format!("conflicting sizes {} and {v}", *slot));
    }
    *slot = v;
    Ok(())
}
