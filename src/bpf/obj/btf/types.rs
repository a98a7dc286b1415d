//! The BTF type model: kinds, the parsed types and their references.

use super::super::Result;

/// BTF type kinds (`BTF_KIND_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Type id 0.
    Void = 0,
    /// Integer.
    Int = 1,
    /// Pointer.
    Ptr = 2,
    /// Array.
    Array = 3,
    /// Struct.
    Struct = 4,
    /// Union.
    Union = 5,
    /// 32-bit enum.
    Enum = 6,
    /// Forward declaration.
    Fwd = 7,
    /// Typedef.
    Typedef = 8,
    /// `volatile`.
    Volatile = 9,
    /// `const`.
    Const = 10,
    /// `restrict`.
    Restrict = 11,
    /// Function.
    Func = 12,
    /// Function prototype.
    FuncProto = 13,
    /// Variable.
    Var = 14,
    /// Data section.
    Datasec = 15,
    /// Floating point.
    Float = 16,
    /// Declaration tag.
    DeclTag = 17,
    /// Type tag.
    TypeTag = 18,
    /// 64-bit enum.
    Enum64 = 19,
}

impl Kind {
    pub(super) fn from_u32(k: u32) -> Option<Kind> {
        use Kind::*;
        Some(match k {
            0 => Void,
            1 => Int,
            2 => Ptr,
            3 => Array,
            4 => Struct,
            5 => Union,
            6 => Enum,
            7 => Fwd,
            8 => Typedef,
            9 => Volatile,
            10 => Const,
            11 => Restrict,
            12 => Func,
            13 => FuncProto,
            14 => Var,
            15 => Datasec,
            16 => Float,
            17 => DeclTag,
            18 => TypeTag,
            19 => Enum64,
            _ => return None,
        })
    }
}

/// A struct/union member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// Name (0 for anonymous members).
    pub name_off: u32,
    /// Member type.
    pub ty: u32,
    /// Offset from the start of the composite, in bits.
    pub bit_offset: u32,
    /// Bitfield width in bits, 0 if not a bitfield.
    pub bitfield_size: u32,
}

/// An enumerator. `value` holds the raw bits: 32-bit enums are sign-extended
/// when the enum is signed, zero-extended otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnumValue {
    /// Name.
    pub name_off: u32,
    /// Value.
    pub value: u64,
}

/// A function prototype parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Param {
    /// Name (may be 0).
    pub name_off: u32,
    /// Type (0 for a trailing `...`).
    pub ty: u32,
}

/// One variable of a DATASEC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VarSecinfo {
    /// The VAR (or FUNC for extern functions) type id.
    pub ty: u32,
    /// Offset in the section.
    pub offset: u32,
    /// Size in bytes.
    pub size: u32,
}

/// One BTF type.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Type {
    Void,
    Int {
        name_off: u32,
        size: u32,
        /// `BTF_INT_SIGNED | BTF_INT_CHAR | BTF_INT_BOOL`.
        encoding: u8,
        /// Bit offset (legacy bitfield ints), normally 0.
        offset: u8,
        bits: u8,
    },
    Ptr {
        ty: u32,
    },
    Array {
        elem: u32,
        index: u32,
        nelems: u32,
    },
    Struct {
        name_off: u32,
        size: u32,
        members: Vec<Member>,
    },
    Union {
        name_off: u32,
        size: u32,
        members: Vec<Member>,
    },
    Enum {
        name_off: u32,
        size: u32,
        signed: bool,
        values: Vec<EnumValue>,
    },
    Enum64 {
        name_off: u32,
        size: u32,
        signed: bool,
        values: Vec<EnumValue>,
    },
    Fwd {
        name_off: u32,
        union: bool,
    },
    Typedef {
        name_off: u32,
        ty: u32,
    },
    Volatile {
        ty: u32,
    },
    Const {
        ty: u32,
    },
    Restrict {
        ty: u32,
    },
    TypeTag {
        name_off: u32,
        ty: u32,
    },
    Func {
        name_off: u32,
        proto: u32,
        /// 0 static, 1 global, 2 extern.
        linkage: u16,
    },
    FuncProto {
        ret: u32,
        params: Vec<Param>,
    },
    Var {
        name_off: u32,
        ty: u32,
        /// 0 static, 1 global, 2 extern.
        linkage: u32,
    },
    Datasec {
        name_off: u32,
        size: u32,
        vars: Vec<VarSecinfo>,
    },
    Float {
        name_off: u32,
        size: u32,
    },
    DeclTag {
        name_off: u32,
        ty: u32,
        /// -1 for the type itself, else member/param index.
        component_idx: i32,
    },
}

impl Type {
    /// The kind.
    pub fn kind(&self) -> Kind {
        match self {
            Type::Void => Kind::Void,
            Type::Int { .. } => Kind::Int,
            Type::Ptr { .. } => Kind::Ptr,
            Type::Array { .. } => Kind::Array,
            Type::Struct { .. } => Kind::Struct,
            Type::Union { .. } => Kind::Union,
            Type::Enum { .. } => Kind::Enum,
            Type::Enum64 { .. } => Kind::Enum64,
            Type::Fwd { .. } => Kind::Fwd,
            Type::Typedef { .. } => Kind::Typedef,
            Type::Volatile { .. } => Kind::Volatile,
            Type::Const { .. } => Kind::Const,
            Type::Restrict { .. } => Kind::Restrict,
            Type::TypeTag { .. } => Kind::TypeTag,
            Type::Func { .. } => Kind::Func,
            Type::FuncProto { .. } => Kind::FuncProto,
            Type::Var { .. } => Kind::Var,
            Type::Datasec { .. } => Kind::Datasec,
            Type::Float { .. } => Kind::Float,
            Type::DeclTag { .. } => Kind::DeclTag,
        }
    }

    /// Name offset (0 for kinds without a name).
    pub fn name_off(&self) -> u32 {
        match self {
            Type::Int { name_off, .. }
            | Type::Struct { name_off, .. }
            | Type::Union { name_off, .. }
            | Type::Enum { name_off, .. }
            | Type::Enum64 { name_off, .. }
            | Type::Fwd { name_off, .. }
            | Type::Typedef { name_off, .. }
            | Type::TypeTag { name_off, .. }
            | Type::Func { name_off, .. }
            | Type::Var { name_off, .. }
            | Type::Datasec { name_off, .. }
            | Type::Float { name_off, .. }
            | Type::DeclTag { name_off, .. } => *name_off,
            _ => 0,
        }
    }

    /// Members of a struct/union, empty otherwise.
    pub fn members(&self) -> &[Member] {
        match self {
            Type::Struct { members, .. } | Type::Union { members, .. } => members,
            _ => &[],
        }
    }

    /// Enumerators of an enum/enum64, empty otherwise.
    pub fn enum_values(&self) -> &[EnumValue] {
        match self {
            Type::Enum { values, .. } | Type::Enum64 { values, .. } => values,
            _ => &[],
        }
    }

    /// Struct or union.
    pub fn is_composite(&self) -> bool {
        matches!(self, Type::Struct { .. } | Type::Union { .. })
    }

    /// Enum or enum64.
    pub fn is_any_enum(&self) -> bool {
        matches!(self, Type::Enum { .. } | Type::Enum64 { .. })
    }

    /// The single type this one refers to (modifiers, typedef, ptr, var, tags).
    pub fn referenced(&self) -> Option<u32> {
        match self {
            Type::Ptr { ty }
            | Type::Typedef { ty, .. }
            | Type::Volatile { ty }
            | Type::Const { ty }
            | Type::Restrict { ty }
            | Type::TypeTag { ty, .. }
            | Type::Var { ty, .. }
            | Type::DeclTag { ty, .. } => Some(*ty),
            Type::Func { proto, .. } => Some(*proto),
            _ => None,
        }
    }

    pub(super) fn for_each_type_ref(&self, mut f: impl FnMut(u32) -> Result<()>) -> Result<()> {
        if let Some(t) = self.referenced() {
            f(t)?;
        }
        match self {
            Type::Array { elem, index, .. } => {
                f(*elem)?;
                f(*index)?;
            }
            Type::Struct { members, .. } | Type::Union { members, .. } => {
                for m in members {
                    f(m.ty)?;
                }
            }
            Type::FuncProto { ret, params } => {
                f(*ret)?;
                for p in params {
                    f(p.ty)?;
                }
            }
            Type::Datasec { vars, .. } => {
                for v in vars {
                    f(v.ty)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    pub(super) fn for_each_name(&self, mut f: impl FnMut(u32) -> Result<()>) -> Result<()> {
        f(self.name_off())?;
        match self {
            Type::Struct { members, .. } | Type::Union { members, .. } => {
                for m in members {
                    f(m.name_off)?;
                }
            }
            Type::Enum { values, .. } | Type::Enum64 { values, .. } => {
                for v in values {
                    f(v.name_off)?;
                }
            }
            Type::FuncProto { params, .. } => {
                for p in params {
                    f(p.name_off)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}
