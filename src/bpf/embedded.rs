//! The BPF objects committed under `bpf-asm/`, embedded at build time by
//! `build.rs` (no clang needed to build netsleuth).
#![forbid(unsafe_code)]

include!(concat!(env!("OUT_DIR"), "/bpf_objects.rs"));

/// The embedded object named `name` (file name without `.bpf.o`).
pub fn object(name: &str) -> Option<&'static [u8]> {
    OBJECTS.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}
