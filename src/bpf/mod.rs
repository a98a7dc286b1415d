//! Our own BPF loader.
//!
//! The *pure* layer, in [`obj`] (re-exported here): ELF objects ([`object`]), BTF ([`btf`]) and BTF.ext
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
pub mod btf_load;
pub mod embedded;
pub mod error;
pub mod fs;
pub mod kallsyms;
pub mod loader;
pub mod map;
pub mod obj;
#[allow(unsafe_code)]
pub mod perfbuf;
pub mod prog;
#[allow(unsafe_code)]
pub mod ringbuf;
#[allow(unsafe_code)]
pub mod sys;
pub mod target_btf;

pub use error::{KError, KResult};
pub use loader::{load, LoadOptions, Loaded};
/// The pure layer's modules, at their old paths (`crate::bpf::btf`, ...).
pub use obj::{btf, btf_ext, core, insn, object, reloc};
pub use obj::{Error, Result};
