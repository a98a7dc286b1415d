#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(stats) = netsleuth::collectors::netstat::parse_netstat(data) {
        for s in stats {
            let f = netsleuth::model::snake_case(s.field);
            let _ = netsleuth::collectors::snmp::metric_name("netsleuth_x", &f, netsleuth::model::MetricKind::Counter);
        }
    }
});
