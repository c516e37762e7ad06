//! The rate-limit header parsers never panic, and every delay they return is capped at
//! `MAX_DELAY`, whatever the bytes of `X-RateLimit-*`, `Retry-After` (both forms) and `Date`.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use racknap_proxy::budget::headers::{parse_ratelimit_headers, parse_reset, parse_retry_after, MAX_DELAY};

const NAMES: [&str; 5] = ["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "retry-after", "date"];

/// KNOWN CRASH (found by this target in 1 s, kept as the ignored test
/// `a_huge_ratelimit_reset_does_not_panic` in tests/fuzz_regressions.rs): `parse_reset` adds the
/// reset to `UNIX_EPOCH` unchecked, which panics for a reset of 2^63 seconds or more. Until it is
/// fixed in src/budget/headers.rs such resets are skipped so the rest keeps being fuzzed; set
/// this to `false` once fixed.
const SKIP_KNOWN_RESET_OVERFLOW: bool = false;
const OVERFLOWS: u64 = 1 << 62;

/// `X-RateLimit-Reset` as the parser reads it (digits before any `.`, saturating).
fn reset_value(v: &[u8]) -> Option<u64> {
    let int = std::str::from_utf8(v).ok()?.trim().split('.').next()?;
    (!int.is_empty() && int.bytes().all(|b| b.is_ascii_digit())).then(|| int.parse().unwrap_or(u64::MAX))
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let (head, rest) = data.split_at(9);
    let status = u16::from_le_bytes([head[0], head[1]]);
    let now = UNIX_EPOCH + Duration::from_secs(u64::from_le_bytes(head[1..9].try_into().unwrap()) % (1 << 40));
    let mut headers = HeaderMap::new();
    // Up to five values separated by 0xff, one per header name (repeats allowed).
    for (i, value) in rest.split(|b| *b == 0xff).take(8).enumerate() {
        let name = NAMES[(i + usize::from(head[0])) % NAMES.len()];
        if SKIP_KNOWN_RESET_OVERFLOW
            && name == "x-ratelimit-reset"
            && reset_value(value).is_some_and(|r| r >= OVERFLOWS)
        {
            return;
        }
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.append(name, v);
        }
    }
    let obs = parse_ratelimit_headers(status, &headers, now);
    assert!(obs.reset_after.is_none_or(|d| d <= MAX_DELAY), "{obs:?}");
    assert!(obs.retry_after.is_none_or(|d| d <= MAX_DELAY), "{obs:?}");
    assert!(obs.limit != Some(0));
    if let Ok(text) = std::str::from_utf8(rest) {
        assert!(parse_retry_after(text, now).is_none_or(|d| d <= MAX_DELAY));
    }
    let mut reset = u64::from_le_bytes(head[1..9].try_into().unwrap());
    if SKIP_KNOWN_RESET_OVERFLOW {
        reset %= OVERFLOWS;
    }
    assert!(parse_reset(reset, now) <= MAX_DELAY);
});
