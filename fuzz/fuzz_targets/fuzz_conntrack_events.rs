//! Fuzz the ctnetlink event decoder: any bytes, as one received datagram, must give events or
//! an error, never a panic, and every event decoded must render as the pipeline's event.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netsleuth::events::EventEntity;
use netsleuth::probes::conntrack_events::{parse_datagram, to_event};

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    let _ = parse_datagram(data, &mut out);
    for ev in &out {
        let e = to_event(ev, EventEntity::unknown(1));
        let _ = e.log_line();
        let mut json = Vec::new();
        e.write_json(&mut json);
    }
});
