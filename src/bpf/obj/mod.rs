//! The pure layer of the loader: ELF objects ([`object`]), BTF ([`btf`]) and
//! BTF.ext ([`btf_ext`]) parsing, instructions ([`insn`]), CO-RE ([`core`]) and
//! relocation/linking ([`reloc`]).
//!
//! Nothing here makes a syscall or touches the file system: it works on byte
//! slices, so all of it is unit-tested without root and fuzzed. `unsafe` is
//! forbidden, and `no_syscalls_in_the_pure_layer` (below) fails when a file of
//! this folder imports `libc`, `nix`, `std::fs`, `std::os` or the kernel layer.
//! Kernel ABI numbers are in [`uapi`], which the kernel layer shares.
#![forbid(unsafe_code)]

pub mod btf;
pub mod btf_ext;
pub mod core;
pub mod insn;
pub mod object;
pub mod reloc;
pub mod uapi;

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

#[cfg(test)]
mod tests {
    /// Words that mean a syscall, the file system or the kernel layer. Test
    /// modules (from `#[cfg(test)]` on) may read fixtures and are not scanned.
    const FORBIDDEN: &[&str] = &[
        "libc",
        "nix::",
        "std::fs",
        "std::os",
        "std::process",
        "std::net",
        "bpf::sys",
        "super::sys",
        "bpf::map",
        "bpf::prog",
        "bpf::attach",
        "bpf::loader",
        "bpf::btf_load",
        "bpf::target_btf",
        "bpf::fs",
        "bpf::ringbuf",
        "bpf::perfbuf",
        "bpf::kallsyms",
    ];

    fn rs_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                rs_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    #[test]
    fn no_syscalls_in_the_pure_layer() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bpf/obj");
        let mut files = Vec::new();
        rs_files(&dir, &mut files);
        assert!(files.len() >= 7, "scanned {files:?}");
        let mut bad = Vec::new();
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            for (n, line) in code.lines().enumerate() {
                let l = line.trim_start();
                if l.starts_with("//") {
                    continue;
                }
                for w in FORBIDDEN {
                    if l.contains(w) {
                        bad.push(format!("{}:{}: {w}: {line}", f.display(), n + 1));
                    }
                }
            }
        }
        assert!(
            bad.is_empty(),
            "the pure layer must not make syscalls:\n{}",
            bad.join("\n")
        );
    }
}
