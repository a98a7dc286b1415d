//! Embeds the committed BPF objects (`bpf-asm/*.bpf.o`) so that building
//! netsleuth never needs clang; `make -C bpf-asm verify` keeps them honest.
//! Objects whose kprobe programs read `struct pt_regs` (or that name
//! per-architecture kernel symbols) also exist as `bpf-asm/arm64/*.bpf.o`:
//! an aarch64 build embeds those instead (bpf-asm/Makefile).

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let dir = Path::new("bpf-asm");
    println!("cargo:rerun-if-changed=bpf-asm");
    println!("cargo:rerun-if-changed=bpf-asm/arm64");
    // The per-architecture folder of the target, if it has one (x86_64 is bpf-asm/ itself).
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let arch_dir = match arch.as_str() {
        "aarch64" => Some(dir.join("arm64")),
        _ => None,
    };
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.ends_with(".bpf.o"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let mut out = String::from(
        "/// Embedded BPF objects: (name without `.bpf.o`, bytes).\npub static OBJECTS: &[(&str, &[u8])] = &[\n",
    );
    for n in &names {
        let own = arch_dir.as_ref().map(|d| d.join(n)).filter(|p| p.is_file());
        let path = std::fs::canonicalize(own.unwrap_or_else(|| dir.join(n)))
            .expect("canonical path of a BPF object");
        println!("cargo:rerun-if-changed={}", path.display());
        writeln!(
            out,
            "    ({:?}, include_bytes!({:?})),",
            n.trim_end_matches(".bpf.o"),
            path.display().to_string()
        )
        .unwrap();
    }
    out.push_str("];\n");
    let out_dir = std::env::var("OUT_DIR").expect("OUT_DIR");
    std::fs::write(Path::new(&out_dir).join("bpf_objects.rs"), out).expect("write bpf_objects.rs");
}
