//! Rewriting a relocated instruction with its computed value, or poisoning it.

use super::*;

pub(super) fn bytes_to_size_bits(sz: u32) -> Option<u8> {
    use super::super::insn::size;
    Some(match sz {
        1 => size::B,
        2 => size::H,
        4 => size::W,
        8 => size::DW,
        _ => return None,
    })
}

/// Poisons `insns[idx]` (and the second half of an `ld_imm64`).
pub(super) fn poison(insns: &mut [Insn], idx: usize) {
    if insns[idx].is_ld_imm64() {
        if let Some(next) = insns.get_mut(idx + 1) {
            *next = Insn::poison();
        }
    }
    insns[idx] = Insn::poison();
}

pub(super) fn patch(insns: &mut [Insn], idx: usize, res: &Res) -> std::result::Result<(), String> {
    if res.poison {
        poison(insns, idx);
        return Ok(());
    }
    let ins = insns[idx];
    let (orig, new) = (res.orig_val, res.new_val);
    match ins.class() {
        class::ALU | class::ALU64 => {
            if ins.code & SRC_K_MASK != SRC_K {
                return Err("ALU instruction does not use an immediate".into());
            }
            if res.validate && ins.imm as i64 as u64 != orig {
                return Err(format!("unexpected imm {} (expected {orig})", ins.imm));
            }
            insns[idx].imm = new as i32;
        }
        class::LDX | class::ST | class::STX => {
            if res.validate && ins.off as i64 as u64 != orig {
                return Err(format!("unexpected off {} (expected {orig})", ins.off));
            }
            if new > i16::MAX as u64 {
                return Err(format!("offset {new} too big for a load/store"));
            }
            if res.fail_memsz_adjust {
                poison(insns, idx);
                return Ok(());
            }
            insns[idx].off = new as i16;
            if res.new_sz != res.orig_sz {
                if ins.mem_size() != res.orig_sz {
                    return Err(format!(
                        "unexpected mem size {} (expected {})",
                        ins.mem_size(),
                        res.orig_sz
                    ));
                }
                let bits = bytes_to_size_bits(res.new_sz)
                    .ok_or_else(|| format!("invalid new mem size {}", res.new_sz))?;
                insns[idx].code = (ins.code & !0x18) | bits;
            }
        }
        class::LD => {
            let hi = insns.get(idx + 1).copied().ok_or("truncated ld_imm64")?;
            if !ins.is_ld_imm64()
                || ins.src() != 0
                || ins.off != 0
                || hi.code != 0
                || hi.regs != 0
                || hi.off != 0
            {
                return Err("ld_imm64 has unexpected form".into());
            }
            let imm = super::super::insn::ld_imm64_value(&ins, &hi);
            if res.validate && imm != orig {
                return Err(format!("unexpected imm64 {imm} (expected {orig})"));
            }
            insns[idx].imm = new as u32 as i32;
            insns[idx + 1].imm = (new >> 32) as u32 as i32;
        }
        _ => {
            return Err(format!(
                "cannot relocate instruction with code {:#x}",
                ins.code
            ))
        }
    }
    Ok(())
}

pub(super) const SRC_K_MASK: u8 = 0x08;
