//! The per-architecture BPF objects (bpf-asm/Makefile): every `bpf-asm/arm64/NAME.bpf.o` is
//! the same program set as `bpf-asm/NAME.bpf.o` (names, program and attach types, maps), its
//! kprobe arguments are read from arm64's `struct pt_regs` (`regs[]`, not x86-64's `di`...),
//! and only the self-test's getppid probes name other kernel symbols. Unprivileged: reads the
//! committed files. Loading them on real arm64 kernels is the kernel matrix's arm64 columns.

use netsleuth::bpf::btf::Kind;
use netsleuth::bpf::object::Object;
use std::path::Path;

fn parse(path: &Path) -> Object {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Object::parse(&data).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The member names of the object's `struct pt_regs___p`, if it has one.
fn pt_regs_members(o: &Object) -> Option<Vec<String>> {
    let btf = o.btf.as_ref()?;
    let id = btf.find_by_name_kind("pt_regs___p", Kind::Struct)?;
    let t = btf.type_by_id(id).unwrap();
    Some(
        t.members()
            .iter()
            .map(|m| btf.name(m.name_off).unwrap().to_string())
            .collect(),
    )
}

fn arm64_objects() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("bpf-asm/arm64");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".bpf.o"))
        .collect();
    names.sort();
    names
}

#[test]
fn arm64_objects_match_the_x86_64_ones_but_for_pt_regs_and_syscall_names() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("bpf-asm");
    let names = arm64_objects();
    // Every object with kprobe programs reading arguments, and the self-test's.
    for want in [
        "biolatency",
        "kernellatency",
        "netiftxlat",
        "packetloss",
        "selftest",
        "socketlatency",
        "softirq",
        "tcpreset",
        "tcpretrans",
    ] {
        assert!(
            names.contains(&format!("{want}.bpf.o")),
            "no bpf-asm/arm64/{want}.bpf.o"
        );
    }
    for n in &names {
        let x86 = parse(&root.join(n));
        let arm = parse(&root.join("arm64").join(n));
        let progs = |o: &Object| -> Vec<(String, String, Option<u32>, u32)> {
            o.programs
                .iter()
                .map(|p| {
                    let sec = p
                        .section_name
                        .replace("__x64_sys_getppid", "SYS_getppid")
                        .replace("__do_sys_getppid", "BTF_getppid")
                        .replace("__arm64_sys_getppid", "SYS_getppid");
                    (
                        p.name.clone(),
                        sec,
                        p.kind.prog_type(),
                        p.kind.expected_attach_type(),
                    )
                })
                .collect()
        };
        let mut a = progs(&arm);
        // arm64's fentry target for getppid is the wrapper itself (no __do_sys_getppid).
        for p in &mut a {
            if p.1.starts_with("fentry/") || p.1.starts_with("fexit/") {
                p.1 = p.1.replace("SYS_getppid", "BTF_getppid");
            }
        }
        assert_eq!(progs(&x86), a, "{n}: programs differ");
        let maps = |o: &Object| o.maps.iter().map(|m| m.name.clone()).collect::<Vec<_>>();
        assert_eq!(maps(&x86), maps(&arm), "{n}: maps differ");
        let (xr, ar) = (pt_regs_members(&x86), pt_regs_members(&arm));
        assert_eq!(xr.is_some(), ar.is_some(), "{n}: pt_regs___p in one only");
        if let (Some(xr), Some(ar)) = (xr, ar) {
            assert!(xr.iter().any(|m| m == "di"), "{n}: x86-64 pt_regs {xr:?}");
            assert_eq!(ar, ["regs", "sp", "pc"], "{n}: arm64 pt_regs");
        }
    }
    let st = parse(&root.join("arm64/selftest.bpf.o"));
    let secs: Vec<&str> = st
        .programs
        .iter()
        .filter(|p| p.name.ends_with("_getppid"))
        .map(|p| p.section_name.as_str())
        .collect();
    assert_eq!(
        secs,
        [
            "kprobe/__arm64_sys_getppid",
            "kretprobe/__arm64_sys_getppid",
            "fentry/__arm64_sys_getppid",
            "fexit/__arm64_sys_getppid"
        ]
    );
}

/// An aarch64 build embeds the arm64 objects, any other the x86-64 ones (build.rs).
#[test]
fn the_build_embeds_its_architectures_objects() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("bpf-asm");
    let dir = if cfg!(target_arch = "aarch64") {
        root.join("arm64")
    } else {
        root.clone()
    };
    for n in arm64_objects() {
        let name = n.trim_end_matches(".bpf.o");
        let embedded = netsleuth::bpf::embedded::object(name).unwrap();
        assert_eq!(embedded, std::fs::read(dir.join(&n)).unwrap(), "{name}");
    }
}
