#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = netsleuth::collectors::snmp::parse_snmp6(data);
});
