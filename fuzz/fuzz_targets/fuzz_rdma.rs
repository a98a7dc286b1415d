#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    use netsleuth::collectors::rdma;
    let _ = rdma::parse_counter(data);
    let _ = rdma::parse_res_msg(rdma::RES_GET_TYPE, data);
    let mut links = Vec::new();
    let _ = netsleuth::collectors::netdev::parse_link_stats(data, &mut links);
});
