//! Our own BPF loader.
//!
//! The *pure* layer: ELF objects ([`object`]), BTF ([`btf`]) and BTF.ext
//! ([`btf_ext`]) parsing, instructions ([`insn`]), CO-RE ([`core`]) and
//! relocation/linking ([`reloc`]). Nothing here makes a syscall, so all of it is
//! unit-tested without root; the kernel layer (maps, program load, attach,
//! buffers) builds on the [`reloc::LinkedProgram`]s produced here.
//!
//! Pipeline, in libbpf's order: [`object::Object::parse`] →
//! [`core::relocate`] (on each section's own instructions) →
//! [`reloc::link_program`] (append subprograms, rebase func/line info, record
//! map references) → kernel layer (create maps, patch fds with
//! [`reloc::LinkedProgram::apply_map_fds`], load).
//!
//! The *kernel* layer: [`sys`] is the one syscall choke point (with a test
//! seam); [`abi`] holds the kernel structs with compile-time layout checks.
//! Only those two and the ring consumers [`ringbuf`]/[`perfbuf`] (reading
//! published records out of the mapping, [`sys::Mmap::bytes`]) contain
//! `unsafe`; every other module is `#![forbid(unsafe_code)]`. [`loader::load`] runs the whole pipeline and
//! returns a [`loader::Loaded`] (maps + programs); [`attach`] attaches
//! (ordered fallbacks inside each method, typed [`error::KError`]s between
//! methods); [`ringbuf`]/[`perfbuf`] consume events; [`kallsyms`] symbolizes
//! stack-trace maps ([`map::Map::stack`]).
#![deny(unsafe_code)]

#[allow(unsafe_code)]
pub mod abi;
pub mod attach;
pub mod btf;
pub mod btf_ext;
pub mod btf_load;
pub mod core;
pub mod embedded;
pub mod error;
pub mod fs;
pub mod insn;
pub mod kallsyms;
pub mod loader;
pub mod map;
pub mod object;
#[allow(unsafe_code)]
pub mod perfbuf;
pub mod prog;
pub mod reloc;
#[allow(unsafe_code)]
pub mod ringbuf;
#[allow(unsafe_code)]
pub mod sys;
pub mod target_btf;

pub use error::{KError, KResult};
pub use loader::{load, LoadOptions, Loaded};

use std::fmt;

/// Everything the pure layer can fail with. Untrusted input never panics: it
/// ends up here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The input ends before a structure it announces.
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Bytes needed (end offset).
        need: u64,
        /// Bytes available.
        have: u64,
    },
    /// A magic number did not match.
    BadMagic {
        /// What was being read.
        what: &'static str,
        /// The value found.
        found: u32,
    },
    /// Structurally invalid input.
    Malformed {
        /// What was being read.
        what: &'static str,
        /// Why it is invalid.
        detail: String,
    },
    /// A BTF type id past the last type.
    TypeIdOutOfRange {
        /// The id.
        id: u32,
        /// Number of types (including void).
        count: u32,
    },
    /// A string offset past the end of a string section.
    StringOffset {
        /// The offset.
        off: u32,
        /// String section length.
        len: u32,
    },
    /// Valid input using something this loader does not support.
    Unsupported(String),
    /// Something looked up by name is missing.
    NotFound {
        /// Kind of thing (program, map, variable, ...).
        what: &'static str,
        /// Its name.
        name: String,
    },
    /// A relocation could not be applied.
    Relocation {
        /// Program or section.
        context: String,
        /// Instruction index in that program or section.
        insn: usize,
        /// Why.
        detail: String,
    },
}

impl Error {
    pub(crate) fn malformed(what: &'static str, detail: impl Into<String>) -> Self {
        Error::Malformed {
            what,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated { what, need, have } => {
                write!(f, "{what}: truncated (needs {need} bytes, has {have})")
            }
            Error::BadMagic { what, found } => write!(f, "{what}: bad magic {found:#x}"),
            Error::Malformed { what, detail } => write!(f, "{what}: {detail}"),
            Error::TypeIdOutOfRange { id, count } => {
                write!(f, "BTF type id {id} out of range (have {count} types)")
            }
            Error::StringOffset { off, len } => {
                write!(
                    f,
                    "string offset {off} past the end of the string section ({len} bytes)"
                )
            }
            Error::Unsupported(what) => write!(f, "unsupported: {what}"),
            Error::NotFound { what, name } => write!(f, "{what} {name:?} not found"),
            Error::Relocation {
                context,
                insn,
                detail,
            } => write!(f, "{context}: relocation at insn #{insn}: {detail}"),
        }
    }
}

impl std::error::Error for Error {}

/// Result alias for the loader.
pub type Result<T> = std::result::Result<T, Error>;

/// Little-endian reader over untrusted bytes: every read is bounds-checked.
#[derive(Clone, Copy)]
pub(crate) struct Reader<'a> {
    data: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(data: &'a [u8], what: &'static str) -> Self {
        Reader { data, what }
    }

    pub(crate) fn bytes(&self, off: usize, len: usize) -> Result<&'a [u8]> {
        let end = off.checked_add(len).ok_or(Error::Truncated {
            what: self.what,
            need: u64::MAX,
            have: self.data.len() as u64,
        })?;
        self.data.get(off..end).ok_or(Error::Truncated {
            what: self.what,
            need: end as u64,
            have: self.data.len() as u64,
        })
    }

    pub(crate) fn u8(&self, off: usize) -> Result<u8> {
        Ok(self.bytes(off, 1)?[0])
    }

    pub(crate) fn u16(&self, off: usize) -> Result<u16> {
        let b = self.bytes(off, 2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&self, off: usize) -> Result<u32> {
        let b = self.bytes(off, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}
