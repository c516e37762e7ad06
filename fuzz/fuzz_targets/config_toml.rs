//! Config parsing and validation never panic on any text; a config that validates also
//! survives the checks `run` makes next (the upstream URL splits).
#![no_main]

use libfuzzer_sys::fuzz_target;
use racknap_proxy::{config::parse_upstream, Config};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(cfg) = Config::from_toml(text) else { return };
    if cfg.validate().is_ok() {
        parse_upstream(&cfg.upstream.url).expect("a validated upstream URL parses");
        assert!(cfg.budget.window.as_millis() >= 100);
        assert!(cfg.queue.capacity >= 1);
    }
});
