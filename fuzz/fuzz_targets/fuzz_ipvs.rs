#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    use netsleuth::collectors::ipvs;
    let _ = ipvs::parse_stats(data);
    let _ = ipvs::parse_services(data);
    let _ = ipvs::parse_service_msg(data);
    let _ = ipvs::parse_dest_msg(data, 2);
    let _ = ipvs::parse_dumps(data, data);
});
