#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = netsleuth::collectors::conntrack::parse_conntrack_stat(data) {
        assert_eq!(s.columns.len(), s.sums.len());
    }
});
