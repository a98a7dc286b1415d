//! Fuzzes BPF ELF object parsing, linking and CO-RE against the object's own
//! BTF: errors are fine, panics are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netsleuth::bpf::{core, object::Object, reloc};

fuzz_target!(|data: &[u8]| {
    let Ok(mut obj) = Object::parse(data) else {
        return;
    };
    let _ = reloc::link_all(&obj);
    if let Some(btf) = obj.btf.clone() {
        let _ = core::relocate(&mut obj, &btf);
        let _ = reloc::link_all(&obj);
    }
});
