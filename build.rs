//! Embeds the committed BPF objects (`bpf-asm/*.bpf.o`) so that building
//! netsleuth never needs clang; `make -C bpf-asm verify` keeps them honest.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let dir = Path::new("bpf-asm");
    println!("cargo:rerun-if-changed=bpf-asm");
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
        let path = std::fs::canonicalize(dir.join(n)).expect("canonical path of a BPF object");
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
