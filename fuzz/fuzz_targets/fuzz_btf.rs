//! Fuzzes the BTF and BTF.ext parsers plus a few lookups: errors are fine,
//! panics, hangs and unbounded allocations are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netsleuth::bpf::btf::{essential_name, Btf, Kind};
use netsleuth::bpf::btf_ext::BtfExt;

fuzz_target!(|data: &[u8]| {
    let _ = BtfExt::parse(data);
    let Ok(btf) = Btf::parse(data) else {
        return;
    };
    for id in 0..btf.len().min(256) {
        let _ = btf.type_name(id);
        let _ = btf.resolve_size(id);
        let _ = btf.skip_mods_and_typedefs(id);
        if let Ok(name) = btf.type_name(id) {
            let name = name.to_string();
            let _ = btf.ids_by_essential_name(essential_name(&name));
            let _ = btf.find_member(id, "a");
        }
    }
    let _ = btf.find_by_name_kind("sk_buff", Kind::Struct);
    let again = Btf::parse(&btf.to_bytes()).expect("re-encoded BTF parses");
    assert_eq!(again.types(), btf.types());
});
