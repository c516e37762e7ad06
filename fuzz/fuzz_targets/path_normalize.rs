//! Path normalisation never panics, and what it returns is canonical: absolute, no `.` or `..`
//! segments, no empty segments, no backslash, and normalising it again changes nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use racknap_proxy::admission::path::normalize;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else { return };
    let Ok(path) = normalize(raw) else { return };
    assert!(path.starts_with('/'), "{raw:?} -> {path:?}");
    assert!(!path.contains('\\'), "{raw:?} -> {path:?}");
    let inner = path.trim_start_matches('/').trim_end_matches('/');
    if !inner.is_empty() {
        for seg in inner.split('/') {
            assert!(!matches!(seg, "" | "." | ".."), "{raw:?} -> {path:?}");
            assert!(!seg.eq_ignore_ascii_case("%2e") && !seg.eq_ignore_ascii_case("%2e%2e"), "{raw:?} -> {path:?}");
        }
    }
    assert_eq!(normalize(&path).as_deref(), Ok(path.as_str()), "not idempotent for {raw:?}");
});
