//! Fuzz the sock_diag (tcpsummary) parser: any bytes must give a summary or an error, never a
//! panic, and the summary must render.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netsleuth::collectors::tcpsummary::{parse, TcpSummary};
use netsleuth::model::Families;

fuzz_target!(|data: &[u8]| {
    let mut sum = TcpSummary::default();
    let _ = parse(data, &mut sum);
    sum.finish();
    let mut fams = Families::new();
    sum.emit(&mut fams.sink(""));
    let mut text = String::new();
    fams.render(&mut text);
});
