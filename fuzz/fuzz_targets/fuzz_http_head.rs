#![no_main]

use libfuzzer_sys::fuzz_target;

// The server's request-head parser, fed the input whole and then in pieces (as a slow client
// sends it): never a panic, the same request either way, and the limit always holds.
fuzz_target!(|data: &[u8]| {
    const MAX: usize = 4096;
    let mut whole = data.to_vec();
    let a = netsleuth::server::parse_head(&mut whole, MAX);
    let mut buf = Vec::new();
    let mut b = Ok(None);
    for chunk in data.chunks(7) {
        buf.extend_from_slice(chunk);
        b = netsleuth::server::parse_head(&mut buf, MAX);
        if !matches!(b, Ok(None)) {
            break;
        }
    }
    match (&a, &b) {
        (Ok(Some(x)), Ok(Some(y))) => {
            assert_eq!(x.method, y.method);
            assert_eq!(x.target, y.target);
            assert_eq!(x.headers, y.headers);
        }
        (Ok(None), _) => assert!(data.len() <= MAX),
        _ => {}
    }
});
