//! The BTF wire format: one type's encoding and parsing, and a blob's encoding.

use super::super::{Error, Reader, Result};
use super::*;

impl Btf {
    /// Encodes back to raw BTF (header, types, strings).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut types = Vec::new();
        for t in self.types.iter().skip(1) {
            encode_type(t, &mut types);
        }
        let mut out = Vec::with_capacity(24 + types.len() + self.strings.len());
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.push(1);
        out.push(0);
        for v in [
            HEADER_LEN,
            0,
            types.len() as u32,
            types.len() as u32,
            self.strings.len() as u32,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&types);
        out.extend_from_slice(&self.strings);
        out
    }
}

fn info(kind: Kind, vlen: usize, kflag: bool) -> u32 {
    ((kind as u32) << 24) | (vlen as u32 & 0xffff) | (u32::from(kflag) << 31)
}

fn put(out: &mut Vec<u8>, vals: &[u32]) {
    for v in vals {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn encode_type(t: &Type, out: &mut Vec<u8>) {
    match t {
        Type::Void => {}
        Type::Int {
            name_off,
            size,
            encoding,
            offset,
            bits,
        } => put(
            out,
            &[
                *name_off,
                info(Kind::Int, 0, false),
                *size,
                (u32::from(*encoding) << 24) | (u32::from(*offset) << 16) | u32::from(*bits),
            ],
        ),
        Type::Ptr { ty } => put(out, &[0, info(Kind::Ptr, 0, false), *ty]),
        Type::Array {
            elem,
            index,
            nelems,
        } => put(
            out,
            &[0, info(Kind::Array, 0, false), 0, *elem, *index, *nelems],
        ),
        Type::Struct {
            name_off,
            size,
            members,
        }
        | Type::Union {
            name_off,
            size,
            members,
        } => {
            let kflag = members.iter().any(|m| m.bitfield_size != 0);
            put(
                out,
                &[*name_off, info(t.kind(), members.len(), kflag), *size],
            );
            for m in members {
                let off = if kflag {
                    (m.bitfield_size << 24) | (m.bit_offset & 0xff_ffff)
                } else {
                    m.bit_offset
                };
                put(out, &[m.name_off, m.ty, off]);
            }
        }
        Type::Enum {
            name_off,
            size,
            signed,
            values,
        } => {
            put(
                out,
                &[*name_off, info(Kind::Enum, values.len(), *signed), *size],
            );
            for v in values {
                put(out, &[v.name_off, v.value as u32]);
            }
        }
        Type::Enum64 {
            name_off,
            size,
            signed,
            values,
        } => {
            put(
                out,
                &[*name_off, info(Kind::Enum64, values.len(), *signed), *size],
            );
            for v in values {
                put(out, &[v.name_off, v.value as u32, (v.value >> 32) as u32]);
            }
        }
        Type::Fwd { name_off, union } => put(out, &[*name_off, info(Kind::Fwd, 0, *union), 0]),
        Type::Typedef { name_off, ty } | Type::TypeTag { name_off, ty } => {
            put(out, &[*name_off, info(t.kind(), 0, false), *ty])
        }
        Type::Volatile { ty } | Type::Const { ty } | Type::Restrict { ty } => {
            put(out, &[0, info(t.kind(), 0, false), *ty])
        }
        Type::Func {
            name_off,
            proto,
            linkage,
        } => put(
            out,
            &[
                *name_off,
                info(Kind::Func, usize::from(*linkage), false),
                *proto,
            ],
        ),
        Type::FuncProto { ret, params } => {
            put(out, &[0, info(Kind::FuncProto, params.len(), false), *ret]);
            for p in params {
                put(out, &[p.name_off, p.ty]);
            }
        }
        Type::Var {
            name_off,
            ty,
            linkage,
        } => put(out, &[*name_off, info(Kind::Var, 0, false), *ty, *linkage]),
        Type::Datasec {
            name_off,
            size,
            vars,
        } => {
            put(
                out,
                &[*name_off, info(Kind::Datasec, vars.len(), false), *size],
            );
            for v in vars {
                put(out, &[v.ty, v.offset, v.size]);
            }
        }
        Type::Float { name_off, size } => {
            put(out, &[*name_off, info(Kind::Float, 0, false), *size])
        }
        Type::DeclTag {
            name_off,
            ty,
            component_idx,
        } => put(
            out,
            &[
                *name_off,
                info(Kind::DeclTag, 0, false),
                *ty,
                *component_idx as u32,
            ],
        ),
    }
}

/// Parses one type at `pos`; returns it and its encoded length.
pub(super) fn parse_type(r: &Reader<'_>, pos: usize) -> Result<(Type, usize)> {
    let name_off = r.u32(pos)?;
    let info = r.u32(pos + 4)?;
    let size_or_type = r.u32(pos + 8)?;
    let vlen = (info & 0xffff) as usize;
    let kflag = info >> 31 == 1;
    let kind_raw = (info >> 24) & 0x1f;
    let kind = Kind::from_u32(kind_raw)
        .filter(|k| *k != Kind::Void)
        .ok_or_else(|| {
            Error::malformed(
                "BTF type section",
                format!("unknown kind {kind_raw} at offset {pos}"),
            )
        })?;
    let body = pos + 12;
    // Records of `rec` bytes × vlen: prove the bytes exist before allocating.
    let records = |rec: usize| -> Result<&[u8]> { r.bytes(body, rec * vlen) };
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let t = match kind {
        Kind::Void => unreachable!("filtered above"),
        Kind::Int => {
            let v = r.u32(body)?;
            let bits = (v & 0xff) as u8;
            let offset = ((v >> 16) & 0xff) as u8;
            let encoding = ((v >> 24) & 0x0f) as u8;
            return Ok((
                Type::Int {
                    name_off,
                    size: size_or_type,
                    encoding,
                    offset,
                    bits,
                },
                16,
            ));
        }
        Kind::Ptr => Type::Ptr { ty: size_or_type },
        Kind::Array => {
            let b = r.bytes(body, 12)?;
            return Ok((
                Type::Array {
                    elem: u32_at(b, 0),
                    index: u32_at(b, 4),
                    nelems: u32_at(b, 8),
                },
                24,
            ));
        }
        Kind::Struct | Kind::Union => {
            let b = records(12)?;
            let members = b
                .chunks_exact(12)
                .map(|c| {
                    let off = u32_at(c, 8);
                    Member {
                        name_off: u32_at(c, 0),
                        ty: u32_at(c, 4),
                        bit_offset: if kflag { off & 0xff_ffff } else { off },
                        bitfield_size: if kflag { off >> 24 } else { 0 },
                    }
                })
                .collect();
            let t = if kind == Kind::Struct {
                Type::Struct {
                    name_off,
                    size: size_or_type,
                    members,
                }
            } else {
                Type::Union {
                    name_off,
                    size: size_or_type,
                    members,
                }
            };
            return Ok((t, 12 + 12 * vlen));
        }
        Kind::Enum => {
            let b = records(8)?;
            let values = b
                .chunks_exact(8)
                .map(|c| {
                    let v = u32_at(c, 4);
                    EnumValue {
                        name_off: u32_at(c, 0),
                        value: if kflag {
                            v as i32 as i64 as u64
                        } else {
                            u64::from(v)
                        },
                    }
                })
                .collect();
            return Ok((
                Type::Enum {
                    name_off,
                    size: size_or_type,
                    signed: kflag,
                    values,
                },
                12 + 8 * vlen,
            ));
        }
        Kind::Enum64 => {
            let b = records(12)?;
            let values = b
                .chunks_exact(12)
                .map(|c| EnumValue {
                    name_off: u32_at(c, 0),
                    value: u64::from(u32_at(c, 4)) | (u64::from(u32_at(c, 8)) << 32),
                })
                .collect();
            return Ok((
                Type::Enum64 {
                    name_off,
                    size: size_or_type,
                    signed: kflag,
                    values,
                },
                12 + 12 * vlen,
            ));
        }
        Kind::Fwd => Type::Fwd {
            name_off,
            union: kflag,
        },
        Kind::Typedef => Type::Typedef {
            name_off,
            ty: size_or_type,
        },
        Kind::Volatile => Type::Volatile { ty: size_or_type },
        Kind::Const => Type::Const { ty: size_or_type },
        Kind::Restrict => Type::Restrict { ty: size_or_type },
        Kind::TypeTag => Type::TypeTag {
            name_off,
            ty: size_or_type,
        },
        Kind::Func => Type::Func {
            name_off,
            proto: size_or_type,
            linkage: vlen as u16,
        },
        Kind::FuncProto => {
            let b = records(8)?;
            let params = b
                .chunks_exact(8)
                .map(|c| Param {
                    name_off: u32_at(c, 0),
                    ty: u32_at(c, 4),
                })
                .collect();
            return Ok((
                Type::FuncProto {
                    ret: size_or_type,
                    params,
                },
                12 + 8 * vlen,
            ));
        }
        Kind::Var => {
            let linkage = r.u32(body)?;
            return Ok((
                Type::Var {
                    name_off,
                    ty: size_or_type,
                    linkage,
                },
                16,
            ));
        }
        Kind::Datasec => {
            let b = records(12)?;
            let vars = b
                .chunks_exact(12)
                .map(|c| VarSecinfo {
                    ty: u32_at(c, 0),
                    offset: u32_at(c, 4),
                    size: u32_at(c, 8),
                })
                .collect();
            return Ok((
                Type::Datasec {
                    name_off,
                    size: size_or_type,
                    vars,
                },
                12 + 12 * vlen,
            ));
        }
        Kind::Float => Type::Float {
            name_off,
            size: size_or_type,
        },
        Kind::DeclTag => {
            let idx = r.u32(body)? as i32;
            return Ok((
                Type::DeclTag {
                    name_off,
                    ty: size_or_type,
                    component_idx: idx,
                },
                16,
            ));
        }
    };
    Ok((t, 12))
}
