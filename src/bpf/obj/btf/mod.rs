//! BTF (BPF Type Format) parsing, lookup and encoding.
//!
//! Parses the kernel's `/sys/kernel/btf/vmlinux` (~150k types) in a few
//! milliseconds in release builds and an object's `.BTF` section alike. Input is
//! untrusted: every offset, count and type id is checked, and no allocation is
//! sized from a count that the input has not already proven it holds.
//!
//! `types`: the type model; `wire`: the binary format (one type's parse and
//! encoding); here: the blob (header, validation, strings, lookups).
#![forbid(unsafe_code)]

use std::fmt;
use std::sync::OnceLock;

use super::{Error, Reader, Result};

mod types;
mod wire;

pub use types::{EnumValue, Kind, Member, Param, Type, VarSecinfo};
use wire::parse_type;

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
