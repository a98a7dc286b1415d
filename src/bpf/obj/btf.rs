//! BTF (BPF Type Format) parsing, lookup and encoding.
//!
//! Parses the kernel's `/sys/kernel/btf/vmlinux` (~150k types) in a few
//! milliseconds in release builds and an object's `.BTF` section alike. Input is
//! untrusted: every offset, count and type id is checked, and no allocation is
//! sized from a count that the input has not already proven it holds.
#![forbid(unsafe_code)]

use std::fmt;
use std::sync::OnceLock;

use super::{Error, Reader, Result};

/// `BTF_MAGIC`.
pub const MAGIC: u16 = 0xeb9f;
/// Length of `struct btf_header` as we know it.
pub const HEADER_LEN: u32 = 24;
/// libbpf's `MAX_RESOLVE_DEPTH`: modifier/typedef chains longer than this are rejected.
pub const MAX_RESOLVE_DEPTH: usize = 32;

/// `BTF_INT_SIGNED` bit of an INT's encoding.
pub const INT_SIGNED: u8 = 1;
/// `BTF_INT_CHAR`.
pub const INT_CHAR: u8 = 2;
/// `BTF_INT_BOOL`.
pub const INT_BOOL: u8 = 4;

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
    fn from_u32(k: u32) -> Option<Kind> {
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

    fn for_each_type_ref(&self, mut f: impl FnMut(u32) -> Result<()>) -> Result<()> {
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

    fn for_each_name(&self, mut f: impl FnMut(u32) -> Result<()>) -> Result<()> {
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

/// A parsed BTF blob: types (id 0 is void) and the string section.
#[derive(Clone, Default)]
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
    /// (hash of essential name, type id), sorted: built on first name lookup.
    essential_index: OnceLock<Vec<(u64, u32)>>,
}

impl fmt::Debug for Btf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Btf")
            .field("types", &self.types.len())
            .field("strings", &self.strings.len())
            .finish()
    }
}

/// Returns `name` without a `___flavor` suffix (libbpf's
/// `bpf_core_essential_name_len`: the last `X___Y` with X and Y not `_`).
pub fn essential_name(name: &str) -> &str {
    let b = name.as_bytes();
    let n = b.len();
    if n >= 5 {
        for i in (0..=n - 5).rev() {
            if b[i] != b'_'
                && b[i + 1] == b'_'
                && b[i + 2] == b'_'
                && b[i + 3] == b'_'
                && b[i + 4] != b'_'
            {
                return &name[..=i];
            }
        }
    }
    name
}

/// FNV-1a: cheap, allocation-free, good enough to bucket type names.
fn name_hash(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &c in b {
        h = (h ^ u64::from(c)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn essential_bytes(b: &[u8]) -> &[u8] {
    let n = b.len();
    if n >= 5 {
        for i in (0..=n - 5).rev() {
            if b[i] != b'_'
                && b[i + 1] == b'_'
                && b[i + 2] == b'_'
                && b[i + 3] == b'_'
                && b[i + 4] != b'_'
            {
                return &b[..=i];
            }
        }
    }
    b
}

impl Btf {
    /// An empty BTF (void only, empty string at offset 0), to build types into.
    pub fn new() -> Self {
        Btf {
            types: vec![Type::Void],
            strings: vec![0],
            essential_index: OnceLock::new(),
        }
    }

    /// Parses raw BTF (`/sys/kernel/btf/vmlinux` or an object's `.BTF`).
    pub fn parse(data: &[u8]) -> Result<Btf> {
        let r = Reader::new(data, "BTF header");
        let magic = r.u16(0)?;
        if magic != MAGIC {
            if magic == MAGIC.swap_bytes() {
                return Err(Error::Unsupported("big-endian BTF".into()));
            }
            return Err(Error::BadMagic {
                what: "BTF",
                found: magic.into(),
            });
        }
        let version = r.u8(2)?;
        if version != 1 {
            return Err(Error::Unsupported(format!("BTF version {version}")));
        }
        let hdr_len = r.u32(4)?;
        if hdr_len < HEADER_LEN {
            return Err(Error::malformed(
                "BTF header",
                format!("hdr_len {hdr_len} < 24"),
            ));
        }
        let (type_off, type_len, str_off, str_len) =
            (r.u32(8)?, r.u32(12)?, r.u32(16)?, r.u32(20)?);
        let body = r
            .bytes(hdr_len as usize, 0)
            .map(|_| &data[hdr_len as usize..])?;
        let body_r = Reader::new(body, "BTF sections");
        let type_sec = Reader::new(
            body_r.bytes(type_off as usize, type_len as usize)?,
            "BTF type section",
        );
        let strings =
            Reader::new(body, "BTF string section").bytes(str_off as usize, str_len as usize)?;
        if type_len % 4 != 0 || type_off % 4 != 0 {
            return Err(Error::malformed("BTF type section", "not 4-byte aligned"));
        }
        if !strings.is_empty() && (strings[0] != 0 || strings[strings.len() - 1] != 0) {
            return Err(Error::malformed(
                "BTF string section",
                "must start and end with NUL",
            ));
        }
        let mut btf = Btf {
            types: Vec::with_capacity(type_len as usize / 12 + 1),
            strings: if strings.is_empty() {
                vec![0]
            } else {
                strings.to_vec()
            },
            essential_index: OnceLock::new(),
        };
        btf.types.push(Type::Void);
        let mut pos = 0usize;
        let ts = type_sec;
        let total = type_len as usize;
        while pos < total {
            let (t, len) = parse_type(&ts, pos)?;
            btf.types.push(t);
            pos += len;
        }
        btf.validate()?;
        Ok(btf)
    }

    fn validate(&self) -> Result<()> {
        let count = self.types.len() as u32;
        let slen = self.strings.len() as u32;
        for t in &self.types {
            t.for_each_type_ref(|id| {
                if id >= count {
                    Err(Error::TypeIdOutOfRange { id, count })
                } else {
                    Ok(())
                }
            })?;
            t.for_each_name(|off| {
                if off >= slen {
                    Err(Error::StringOffset { off, len: slen })
                } else {
                    Ok(())
                }
            })?;
        }
        Ok(())
    }

    /// Number of types including void (valid ids are `0..len()`).
    pub fn len(&self) -> u32 {
        self.types.len() as u32
    }

    /// Whether only void is present.
    pub fn is_empty(&self) -> bool {
        self.types.len() <= 1
    }

    /// All types, indexed by id.
    pub fn types(&self) -> &[Type] {
        &self.types
    }

    /// The raw string section.
    pub fn strings(&self) -> &[u8] {
        &self.strings
    }

    /// The type with id `id`.
    pub fn type_by_id(&self, id: u32) -> Result<&Type> {
        self.types.get(id as usize).ok_or(Error::TypeIdOutOfRange {
            id,
            count: self.len(),
        })
    }

    /// Mutable access to a type (for DATASEC fix-ups and sanitizing).
    pub fn type_mut(&mut self, id: u32) -> Result<&mut Type> {
        let count = self.len();
        self.essential_index = OnceLock::new();
        self.types
            .get_mut(id as usize)
            .ok_or(Error::TypeIdOutOfRange { id, count })
    }

    /// The string at `off`.
    pub fn name(&self, off: u32) -> Result<&str> {
        let len = self.strings.len() as u32;
        let rest = self
            .strings
            .get(off as usize..)
            .filter(|r| !r.is_empty())
            .ok_or(Error::StringOffset { off, len })?;
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(Error::StringOffset { off, len })?;
        std::str::from_utf8(&rest[..end])
            .map_err(|_| Error::malformed("BTF string", format!("not UTF-8 at {off}")))
    }

    /// Name of type `id` ("" for anonymous types).
    pub fn type_name(&self, id: u32) -> Result<&str> {
        self.name(self.type_by_id(id)?.name_off())
    }

    /// Appends a string, returning its offset.
    pub fn add_string(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        off
    }

    /// Appends a type, returning its id.
    pub fn add_type(&mut self, t: Type) -> u32 {
        self.essential_index = OnceLock::new();
        self.types.push(t);
        self.types.len() as u32 - 1
    }

    /// Appends a global variable `var` of type `ty` (`size` bytes, global
    /// linkage) at offset 0 of a new data section `section`; returns the
    /// section's id.
    pub fn add_global(&mut self, var: &str, section: &str, ty: u32, size: u32) -> u32 {
        let name_off = self.add_string(var);
        let var = self.add_type(Type::Var {
            name_off,
            ty,
            linkage: 1,
        });
        let name_off = self.add_string(section);
        self.add_type(Type::Datasec {
            name_off,
            size,
            vars: vec![VarSecinfo {
                ty: var,
                offset: 0,
                size,
            }],
        })
    }

    fn name_bytes(&self, off: u32) -> &[u8] {
        let rest = self.strings.get(off as usize..).unwrap_or(&[]);
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        &rest[..end]
    }

    fn essential_index(&self) -> &[(u64, u32)] {
        self.essential_index.get_or_init(|| {
            let mut v: Vec<(u64, u32)> = self
                .types
                .iter()
                .enumerate()
                .filter(|(_, t)| t.name_off() != 0 && t.kind() != Kind::DeclTag)
                .map(|(id, t)| {
                    (
                        name_hash(essential_bytes(self.name_bytes(t.name_off()))),
                        id as u32,
                    )
                })
                .collect();
            v.sort_unstable();
            v
        })
    }

    /// Ids of all types whose essential name (without `___flavor`) is
    /// `essential`, in id order. Builds a name index on first use.
    pub fn ids_by_essential_name(&self, essential: &str) -> Vec<u32> {
        let idx = self.essential_index();
        let h = name_hash(essential.as_bytes());
        let start = idx.partition_point(|&(k, _)| k < h);
        idx[start..]
            .iter()
            .take_while(|&&(k, _)| k == h)
            .map(|&(_, id)| id)
            .filter(|&id| {
                essential_bytes(self.name_bytes(self.types[id as usize].name_off()))
                    == essential.as_bytes()
            })
            .collect()
    }

    /// The first type named exactly `name` of kind `kind`.
    pub fn find_by_name_kind(&self, name: &str, kind: Kind) -> Option<u32> {
        self.ids_by_essential_name(essential_name(name))
            .into_iter()
            .find(|&id| {
                self.types[id as usize].kind() == kind
                    && self.type_name(id).is_ok_and(|n| n == name)
            })
    }

    /// Follows const/volatile/restrict/type_tag (not typedefs).
    pub fn skip_mods(&self, mut id: u32) -> Result<(u32, &Type)> {
        for _ in 0..MAX_RESOLVE_DEPTH {
            let t = self.type_by_id(id)?;
            match t {
                Type::Volatile { ty }
                | Type::Const { ty }
                | Type::Restrict { ty }
                | Type::TypeTag { ty, .. } => id = *ty,
                _ => return Ok((id, t)),
            }
        }
        Err(Error::malformed(
            "BTF",
            format!("modifier chain too deep at type {id}"),
        ))
    }

    /// Follows modifiers and typedefs to the underlying type.
    pub fn skip_mods_and_typedefs(&self, mut id: u32) -> Result<(u32, &Type)> {
        for _ in 0..MAX_RESOLVE_DEPTH {
            let t = self.type_by_id(id)?;
            match t {
                Type::Volatile { ty }
                | Type::Const { ty }
                | Type::Restrict { ty }
                | Type::TypeTag { ty, .. }
                | Type::Typedef { ty, .. } => id = *ty,
                _ => return Ok((id, t)),
            }
        }
        Err(Error::malformed(
            "BTF",
            format!("typedef/modifier chain too deep at type {id}"),
        ))
    }

    /// Size in bytes of type `id` (libbpf's `btf__resolve_size`).
    pub fn resolve_size(&self, id: u32) -> Result<u64> {
        let mut id = id;
        let mut nelems: u64 = 1;
        for _ in 0..MAX_RESOLVE_DEPTH {
            let t = self.type_by_id(id)?;
            let size = match t {
                Type::Int { size, .. }
                | Type::Struct { size, .. }
                | Type::Union { size, .. }
                | Type::Enum { size, .. }
                | Type::Enum64 { size, .. }
                | Type::Datasec { size, .. }
                | Type::Float { size, .. } => Some(u64::from(*size)),
                Type::Ptr { .. } => Some(8),
                Type::Typedef { ty, .. }
                | Type::Volatile { ty }
                | Type::Const { ty }
                | Type::Restrict { ty }
                | Type::TypeTag { ty, .. }
                | Type::Var { ty, .. } => {
                    id = *ty;
                    None
                }
                Type::Array {
                    elem, nelems: n, ..
                } => {
                    nelems = nelems
                        .checked_mul(u64::from(*n))
                        .filter(|&v| v <= u64::from(u32::MAX))
                        .ok_or_else(|| {
                            Error::malformed("BTF", format!("array size overflow at type {id}"))
                        })?;
                    id = *elem;
                    None
                }
                _ => {
                    return Err(Error::malformed(
                        "BTF",
                        format!("type {id} ({:?}) has no size", t.kind()),
                    ))
                }
            };
            if let Some(size) = size {
                return size
                    .checked_mul(nelems)
                    .filter(|&v| v <= u64::from(u32::MAX))
                    .ok_or_else(|| Error::malformed("BTF", format!("size overflow at type {id}")));
            }
        }
        Err(Error::malformed(
            "BTF",
            format!("type chain too deep at type {id}"),
        ))
    }

    /// Finds a member of composite `id` by name, searching anonymous members
    /// recursively; returns the member and its bit offset from the start of `id`.
    pub fn find_member(&self, id: u32, name: &str) -> Result<Option<(Member, u32)>> {
        self.find_member_depth(id, name, 0)
    }

    fn find_member_depth(
        &self,
        id: u32,
        name: &str,
        depth: usize,
    ) -> Result<Option<(Member, u32)>> {
        if depth > MAX_RESOLVE_DEPTH {
            return Err(Error::malformed("BTF", "anonymous member nesting too deep"));
        }
        let (_, t) = self.skip_mods_and_typedefs(id)?;
        for m in t.members() {
            if m.name_off == 0 {
                if let Some((inner, off)) = self.find_member_depth(m.ty, name, depth + 1)? {
                    return Ok(Some((inner, off + m.bit_offset)));
                }
            } else if self.name(m.name_off)? == name {
                return Ok(Some((*m, m.bit_offset)));
            }
        }
        Ok(None)
    }

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
fn parse_type(r: &Reader<'_>, pos: usize) -> Result<(Type, usize)> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A small BTF with every kind, built through the encoder.
    pub(crate) fn sample() -> Btf {
        let mut b = Btf::new();
        let int_n = b.add_string("int");
        let int = b.add_type(Type::Int {
            name_off: int_n,
            size: 4,
            encoding: INT_SIGNED,
            offset: 0,
            bits: 32,
        });
        let s_n = b.add_string("s");
        let a_n = b.add_string("a");
        let bf_n = b.add_string("bf");
        let s = b.add_type(Type::Struct {
            name_off: s_n,
            size: 8,
            members: vec![
                Member {
                    name_off: a_n,
                    ty: int,
                    bit_offset: 0,
                    bitfield_size: 0,
                },
                Member {
                    name_off: bf_n,
                    ty: int,
                    bit_offset: 35,
                    bitfield_size: 3,
                },
            ],
        });
        let ptr = b.add_type(Type::Ptr { ty: s });
        let arr = b.add_type(Type::Array {
            elem: int,
            index: int,
            nelems: 10,
        });
        let u_n = b.add_string("u");
        b.add_type(Type::Union {
            name_off: u_n,
            size: 40,
            members: vec![Member {
                name_off: 0,
                ty: arr,
                bit_offset: 0,
                bitfield_size: 0,
            }],
        });
        let e_n = b.add_string("e");
        let x_n = b.add_string("X");
        b.add_type(Type::Enum {
            name_off: e_n,
            size: 4,
            signed: true,
            values: vec![EnumValue {
                name_off: x_n,
                value: -1i64 as u64,
            }],
        });
        let e64_n = b.add_string("e64");
        b.add_type(Type::Enum64 {
            name_off: e64_n,
            size: 8,
            signed: false,
            values: vec![EnumValue {
                name_off: x_n,
                value: 1 << 40,
            }],
        });
        let f_n = b.add_string("fw");
        b.add_type(Type::Fwd {
            name_off: f_n,
            union: true,
        });
        let td_n = b.add_string("s_t");
        let td = b.add_type(Type::Typedef {
            name_off: td_n,
            ty: s,
        });
        let c = b.add_type(Type::Const { ty: td });
        let v = b.add_type(Type::Volatile { ty: c });
        let r = b.add_type(Type::Restrict { ty: ptr });
        let tt_n = b.add_string("user");
        b.add_type(Type::TypeTag {
            name_off: tt_n,
            ty: v,
        });
        let p_n = b.add_string("p");
        let proto = b.add_type(Type::FuncProto {
            ret: int,
            params: vec![Param {
                name_off: p_n,
                ty: r,
            }],
        });
        let fn_n = b.add_string("f");
        let func = b.add_type(Type::Func {
            name_off: fn_n,
            proto,
            linkage: 1,
        });
        b.add_global("g", ".data", v, 8);
        let fl_n = b.add_string("double");
        b.add_type(Type::Float {
            name_off: fl_n,
            size: 8,
        });
        let dt_n = b.add_string("tag");
        b.add_type(Type::DeclTag {
            name_off: dt_n,
            ty: func,
            component_idx: -1,
        });
        b
    }

    #[test]
    fn encode_parse_round_trip_all_kinds() {
        let b = sample();
        let bytes = b.to_bytes();
        let p = Btf::parse(&bytes).unwrap();
        assert_eq!(p.types(), b.types());
        assert_eq!(p.to_bytes(), bytes);
        let kinds: Vec<Kind> = p.types().iter().map(Type::kind).collect();
        for k in [
            Kind::Int,
            Kind::Ptr,
            Kind::Array,
            Kind::Struct,
            Kind::Union,
            Kind::Enum,
            Kind::Enum64,
            Kind::Fwd,
            Kind::Typedef,
            Kind::Const,
            Kind::Volatile,
            Kind::Restrict,
            Kind::TypeTag,
            Kind::FuncProto,
            Kind::Func,
            Kind::Var,
            Kind::Datasec,
            Kind::Float,
            Kind::DeclTag,
        ] {
            assert!(kinds.contains(&k), "{k:?} missing");
        }
    }

    #[test]
    fn lookups_sizes_and_chains() {
        let b = Btf::parse(&sample().to_bytes()).unwrap();
        let s = b.find_by_name_kind("s", Kind::Struct).unwrap();
        assert_eq!(b.type_name(s).unwrap(), "s");
        assert_eq!(b.resolve_size(s).unwrap(), 8);
        let (m, off) = b.find_member(s, "bf").unwrap().unwrap();
        assert_eq!((off, m.bitfield_size), (35, 3));
        // type_tag -> volatile -> const -> typedef -> struct
        let tag = b.find_by_name_kind("user", Kind::TypeTag).unwrap();
        assert_eq!(b.skip_mods_and_typedefs(tag).unwrap().0, s);
        assert_eq!(b.skip_mods(tag).unwrap().1.kind(), Kind::Typedef);
        assert_eq!(b.resolve_size(tag).unwrap(), 8);
        let u = b.find_by_name_kind("u", Kind::Union).unwrap();
        assert_eq!(b.resolve_size(u).unwrap(), 40);
        let e = b.find_by_name_kind("e", Kind::Enum).unwrap();
        assert_eq!(b.type_by_id(e).unwrap().enum_values()[0].value, u64::MAX);
        let g = b.find_by_name_kind("g", Kind::Var).unwrap();
        assert_eq!(b.resolve_size(g).unwrap(), 8);
        assert!(b
            .resolve_size(b.find_by_name_kind("f", Kind::Func).unwrap())
            .is_err());
        assert!(b.find_by_name_kind("nope", Kind::Struct).is_none());
        assert!(b.type_by_id(b.len()).is_err());
    }

    #[test]
    fn essential_names_follow_libbpf() {
        assert_eq!(essential_name("task_struct___v2"), "task_struct");
        assert_eq!(essential_name("a___b___c"), "a___b");
        assert_eq!(essential_name("thing"), "thing");
        assert_eq!(essential_name("___x"), "___x");
        assert_eq!(essential_name("x____y"), "x____y");
        assert_eq!(essential_name("x___"), "x___");
    }

    fn header(type_len: u32, str_len: u32) -> Vec<u8> {
        let mut v = vec![0x9f, 0xeb, 1, 0];
        for x in [24, 0, type_len, type_len, str_len] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        v
    }

    #[test]
    fn malformed_inputs_are_errors() {
        assert!(matches!(Btf::parse(&[]), Err(Error::Truncated { .. })));
        assert!(matches!(
            Btf::parse(&[1, 2, 3, 4, 5, 6]),
            Err(Error::BadMagic { .. })
        ));
        // Header claims more than there is.
        let mut v = header(1000, 1);
        v.push(0);
        assert!(matches!(Btf::parse(&v), Err(Error::Truncated { .. })));
        // Huge vlen: a struct with 65535 members but no bytes for them.
        let mut v = header(12, 1);
        v.extend_from_slice(&[0, 0, 0, 0]);
        v.extend_from_slice(&((4u32 << 24) | 0xffff).to_le_bytes());
        v.extend_from_slice(&8u32.to_le_bytes());
        v.push(0);
        assert!(matches!(Btf::parse(&v), Err(Error::Truncated { .. })));
        // Type id out of range.
        let mut v = header(12, 1);
        v.extend_from_slice(&[0, 0, 0, 0]);
        v.extend_from_slice(&(2u32 << 24).to_le_bytes());
        v.extend_from_slice(&99u32.to_le_bytes());
        v.push(0);
        assert!(matches!(
            Btf::parse(&v),
            Err(Error::TypeIdOutOfRange { id: 99, .. })
        ));
        // Name offset past the string section.
        let mut v = header(12, 1);
        v.extend_from_slice(&50u32.to_le_bytes());
        v.extend_from_slice(&(8u32 << 24).to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v.push(0);
        assert!(matches!(
            Btf::parse(&v),
            Err(Error::StringOffset { off: 50, .. })
        ));
        // Unknown kind.
        let mut v = header(12, 1);
        v.extend_from_slice(&[0, 0, 0, 0]);
        v.extend_from_slice(&(30u32 << 24).to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v.push(0);
        assert!(matches!(Btf::parse(&v), Err(Error::Malformed { .. })));
        // Every truncation of a valid blob fails cleanly.
        let good = sample().to_bytes();
        for n in 0..good.len() {
            assert!(Btf::parse(&good[..n]).is_err(), "prefix {n} parsed");
        }
        // Self-referencing typedef loops are rejected, not followed forever.
        let mut b = Btf::new();
        let n = b.add_string("loop");
        b.add_type(Type::Typedef { name_off: n, ty: 1 });
        let b = Btf::parse(&b.to_bytes()).unwrap();
        assert!(b.skip_mods_and_typedefs(1).is_err());
        assert!(b.resolve_size(1).is_err());
    }

    #[test]
    fn corrupted_blobs_error_or_round_trip() {
        // What fuzz_btf checks, on a budget: mutate a valid blob; whatever
        // parses must encode and parse back to the same types.
        let good = sample().to_bytes();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..5000 {
            let mut v = good.clone();
            for _ in 0..3 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let i = (seed % v.len() as u64) as usize;
                v[i] = (seed >> 40) as u8;
            }
            if let Ok(b) = Btf::parse(&v) {
                for id in 0..b.len() {
                    let _ = b.resolve_size(id);
                    let _ = b.skip_mods_and_typedefs(id);
                    let _ = b.find_member(id, "a");
                }
                let again = Btf::parse(&b.to_bytes()).unwrap();
                assert_eq!(again.types(), b.types());
            }
        }
    }

    #[test]
    fn kernel_vmlinux_btf() {
        let Some(data) = crate::bpf::target_btf::vmlinux_for_test("kernel_vmlinux_btf") else {
            return;
        };
        let start = std::time::Instant::now();
        let btf = Btf::parse(&data).unwrap();
        let parse = start.elapsed();
        let start = std::time::Instant::now();
        let skb = btf
            .find_by_name_kind("sk_buff", Kind::Struct)
            .expect("struct sk_buff");
        let index = start.elapsed();
        eprintln!(
            "vmlinux BTF: {} bytes, {} types, parsed in {parse:?} (name index {index:?}, {} build)",
            data.len(),
            btf.len(),
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
        );
        assert!(btf.len() > 10_000);
        assert!(btf.find_member(skb, "dev").unwrap().is_some());
        let (_, off) = btf.find_member(skb, "len").unwrap().unwrap();
        assert_eq!(off % 8, 0);
    }
}
