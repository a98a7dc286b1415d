//! Fuzz the rtnetlink qdisc and link parsers: the first byte splits the input into a qdisc dump
//! and a link dump; any bytes must give results or an error, never a panic, and whatever was
//! parsed must render.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netsleuth::collectors::qdisc::{emit, parse_links, parse_qdiscs};
use netsleuth::model::Families;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let at = (usize::from(split) * 16).min(rest.len());
    let (qbytes, lbytes) = rest.split_at(at);
    let mut qdiscs = Vec::new();
    let _ = parse_qdiscs(qbytes, &mut qdiscs);
    let mut links = Vec::new();
    let _ = parse_links(lbytes, &mut links);
    let mut fams = Families::new();
    emit(&mut qdiscs, &mut links, &mut fams.sink(""));
    let mut text = String::new();
    fams.render(&mut text);
});
