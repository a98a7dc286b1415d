#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(nd) = netsleuth::collectors::netdev::parse_netdev(data) {
        assert_eq!(nd.values.len(), nd.devices.len() * nd.columns.len());
        for i in 0..nd.devices.len() {
            let _ = nd.device_values(i);
        }
    }
});
