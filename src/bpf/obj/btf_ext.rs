//! `.BTF.ext`: func_info, line_info and CO-RE relocation records, grouped per
//! ELF section. Offsets (`insn_off`) are in bytes from the start of the section.
#![forbid(unsafe_code)]

use super::btf::Btf;
use super::{Error, Reader, Result};

/// `struct bpf_func_info`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FuncInfo {
    /// Byte offset in the section (instruction index once rebased by [`super::reloc`]).
    pub insn_off: u32,
    /// BTF FUNC type id.
    pub type_id: u32,
}

/// `struct bpf_line_info`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineInfo {
    /// Byte offset in the section (instruction index once rebased).
    pub insn_off: u32,
    /// File name (BTF string offset).
    pub file_name_off: u32,
    /// Source line text (BTF string offset).
    pub line_off: u32,
    /// `line << 10 | column`.
    pub line_col: u32,
}

/// `struct bpf_core_relo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoreRelo {
    /// Byte offset of the instruction in the section.
    pub insn_off: u32,
    /// Local (object BTF) root type id.
    pub type_id: u32,
    /// Access string (`"0:1:2"`), BTF string offset.
    pub access_str_off: u32,
    /// `enum bpf_core_relo_kind`.
    pub kind: u32,
}

/// Records of one kind for one ELF section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecInfo<T> {
    /// Section name (BTF string offset).
    pub sec_name_off: u32,
    /// The records.
    pub records: Vec<T>,
}

/// Parsed `.BTF.ext`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BtfExt {
    /// func_info per section.
    pub func_info: Vec<SecInfo<FuncInfo>>,
    /// line_info per section.
    pub line_info: Vec<SecInfo<LineInfo>>,
    /// CO-RE relocations per section.
    pub core_relos: Vec<SecInfo<CoreRelo>>,
}

const MAGIC: u16 = 0xeb9f;

impl BtfExt {
    /// Parses `.BTF.ext` bytes.
    pub fn parse(data: &[u8]) -> Result<BtfExt> {
        let r = Reader::new(data, "BTF.ext header");
        let magic = r.u16(0)?;
        if magic != MAGIC {
            return Err(Error::BadMagic {
                what: "BTF.ext",
                found: magic.into(),
            });
        }
        if r.u8(2)? != 1 {
            return Err(Error::Unsupported(format!("BTF.ext version {}", r.u8(2)?)));
        }
        let hdr_len = r.u32(4)? as usize;
        if hdr_len < 24 {
            return Err(Error::malformed(
                "BTF.ext header",
                format!("hdr_len {hdr_len} < 24"),
            ));
        }
        r.bytes(0, hdr_len)?;
        let body = &data[hdr_len..];
        let mut ext = BtfExt::default();
        let (fo, fl) = (r.u32(8)?, r.u32(12)?);
        let (lo, ll) = (r.u32(16)?, r.u32(20)?);
        ext.func_info = parse_info(body, fo, fl, 8, "BTF.ext func_info", |c| FuncInfo {
            insn_off: le(c, 0),
            type_id: le(c, 4),
        })?;
        ext.line_info = parse_info(body, lo, ll, 16, "BTF.ext line_info", |c| LineInfo {
            insn_off: le(c, 0),
            file_name_off: le(c, 4),
            line_off: le(c, 8),
            line_col: le(c, 12),
        })?;
        if hdr_len >= 32 {
            let (co, cl) = (r.u32(24)?, r.u32(28)?);
            ext.core_relos = parse_info(body, co, cl, 16, "BTF.ext core_relo", |c| CoreRelo {
                insn_off: le(c, 0),
                type_id: le(c, 4),
                access_str_off: le(c, 8),
                kind: le(c, 12),
            })?;
        }
        Ok(ext)
    }

    /// Records for the section named `name` (names resolved through `btf`).
    pub fn for_section<'a, T>(infos: &'a [SecInfo<T>], btf: &Btf, name: &str) -> &'a [T] {
        infos
            .iter()
            .find(|s| btf.name(s.sec_name_off).is_ok_and(|n| n == name))
            .map(|s| s.records.as_slice())
            .unwrap_or(&[])
    }
}

fn le(c: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([c[o], c[o + 1], c[o + 2], c[o + 3]])
}

fn parse_info<T>(
    body: &[u8],
    off: u32,
    len: u32,
    min_rec: usize,
    what: &'static str,
    f: impl Fn(&[u8]) -> T,
) -> Result<Vec<SecInfo<T>>> {
    if len == 0 {
        return Ok(Vec::new());
    }
    let data = Reader::new(body, what).bytes(off as usize, len as usize)?;
    if off % 4 != 0 || len % 4 != 0 {
        return Err(Error::malformed(what, "not 4-byte aligned"));
    }
    let r = Reader::new(data, what);
    let rec_size = r.u32(0)? as usize;
    if rec_size < min_rec || rec_size % 4 != 0 || rec_size > 1024 {
        return Err(Error::malformed(what, format!("record size {rec_size}")));
    }
    let mut out = Vec::new();
    let mut pos = 4;
    while pos < data.len() {
        let sec_name_off = r.u32(pos)?;
        let num = r.u32(pos + 4)? as usize;
        pos += 8;
        if num == 0 {
            return Err(Error::malformed(what, "section with zero records"));
        }
        let total = num
            .checked_mul(rec_size)
            .ok_or_else(|| Error::malformed(what, "record count overflow"))?;
        let recs = r.bytes(pos, total)?;
        out.push(SecInfo {
            sec_name_off,
            records: recs.chunks_exact(rec_size).map(&f).collect(),
        });
        pos += total;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob() -> Vec<u8> {
        let mut v = vec![0x9f, 0xeb, 1, 0];
        let func: Vec<u32> = vec![8, 1, 2, 0, 7, 16, 9];
        let line: Vec<u32> = vec![16, 1, 1, 0, 3, 4, 5 << 10 | 2];
        let core: Vec<u32> = vec![16, 1, 1, 24, 5, 6, 2];
        let (fl, ll, cl) = (
            func.len() as u32 * 4,
            line.len() as u32 * 4,
            core.len() as u32 * 4,
        );
        for x in [32, 0, fl, fl, ll, fl + ll, cl] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        for x in func.iter().chain(&line).chain(&core) {
            v.extend_from_slice(&x.to_le_bytes());
        }
        v
    }

    #[test]
    fn parses_all_three_blocks() {
        let e = BtfExt::parse(&blob()).unwrap();
        assert_eq!(e.func_info[0].sec_name_off, 1);
        assert_eq!(
            e.func_info[0].records,
            vec![
                FuncInfo {
                    insn_off: 0,
                    type_id: 7
                },
                FuncInfo {
                    insn_off: 16,
                    type_id: 9
                }
            ]
        );
        assert_eq!(e.line_info[0].records[0].line_col >> 10, 5);
        assert_eq!(
            e.core_relos[0].records[0],
            CoreRelo {
                insn_off: 24,
                type_id: 5,
                access_str_off: 6,
                kind: 2
            }
        );
    }

    #[test]
    fn malformed_is_an_error() {
        let good = blob();
        for n in 0..good.len() {
            assert!(BtfExt::parse(&good[..n]).is_err(), "prefix {n}");
        }
        let mut bad = good.clone();
        bad[40..44].copy_from_slice(&u32::MAX.to_le_bytes()); // num_info of func_info
        assert!(BtfExt::parse(&bad).is_err());
        let mut bad = good;
        bad[32..36].copy_from_slice(&3u32.to_le_bytes()); // record size too small
        assert!(BtfExt::parse(&bad).is_err());
    }
}
