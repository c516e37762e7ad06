//! Inputs the fuzzers (`fuzz/`, `scripts/fuzz.sh`) found, kept as regular tests.

use std::time::{Duration, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue};
use racknap_proxy::budget::headers::{parse_ratelimit_headers, parse_reset, MAX_DELAY};

/// Found by `ratelimit_headers` in its first second: an upstream answering
/// `X-RateLimit-Reset: 99999999999999999999` (or any reset of 2^63 s and more) makes
/// `parse_reset` panic ("overflow when adding duration to `SystemTime`"), which kills the
/// connection task of the request that got that answer. Fixed in `parse_reset`
/// (`UNIX_EPOCH.checked_add(..)`, overflow read as `MAX_DELAY`).
#[test]
fn a_huge_ratelimit_reset_does_not_panic() {
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    assert_eq!(parse_reset(u64::MAX, now), MAX_DELAY);
    let mut h = HeaderMap::new();
    h.insert("x-ratelimit-reset", HeaderValue::from_static("99999999999999999999"));
    let obs = parse_ratelimit_headers(200, &h, now);
    assert!(obs.reset_after.is_some_and(|d| d <= MAX_DELAY), "{obs:?}");
}

/// The largest reset that does not overflow is read, and capped.
#[test]
fn a_far_reset_below_the_overflow_is_capped() {
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    assert_eq!(parse_reset(1 << 40, now), MAX_DELAY);
}
