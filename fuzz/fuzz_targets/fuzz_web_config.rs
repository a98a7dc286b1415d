#![no_main]

use libfuzzer_sys::fuzz_target;

// --web.config.file: any text is a configuration or an error message, never a panic.
fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = netsleuth::web_config::WebConfig::parse(text, std::path::Path::new("/nonexistent")) {
            assert!(!e.is_empty());
        }
    }
    if let Some(v) = std::str::from_utf8(data).ok() {
        let _ = netsleuth::web_config::parse_basic(v);
    }
});
