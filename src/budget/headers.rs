//! Pure parsing of what a response says about the budget: `X-RateLimit-*`, `Retry-After`
//! and `Date`. Server times become deltas here (`Reset − Date`), so nothing downstream ever
//! compares our clock with the server's.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;

/// Longest wait any header can impose; larger values are treated as this.
pub const MAX_DELAY: Duration = Duration::from_secs(24 * 3600);

/// What one response says about the account's budget, relative to the moment it arrived.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    /// HTTP status of the response.
    pub status: u16,
    /// `X-RateLimit-Limit`.
    pub limit: Option<u32>,
    /// `X-RateLimit-Remaining`.
    pub remaining: Option<u32>,
    /// `X-RateLimit-Reset − Date`: how long until the budget resets.
    pub reset_after: Option<Duration>,
    /// `Retry-After`, either form, as a delay.
    pub retry_after: Option<Duration>,
    /// `Date − our clock` in whole seconds (positive: server ahead), when both are known.
    pub clock_offset_secs: Option<i64>,
    /// `X-RateLimit-Reset` as sent (epoch seconds on the server's clock).
    pub reset_epoch: Option<u64>,
    /// `Date` as sent (epoch seconds on the server's clock, truncated to the second).
    pub date_epoch: Option<u64>,
}

impl Observation {
    /// Whether the response carried any budget information at all.
    pub fn is_informative(&self) -> bool {
        self.limit.is_some() || self.remaining.is_some() || self.reset_after.is_some() || self.retry_after.is_some()
    }
}

/// Parse a response's budget headers. `local_now` is our own epoch clock, used only when the
/// response has no usable `Date` (then the reset is read against our clock).
pub fn parse_ratelimit_headers(status: u16, headers: &HeaderMap, local_now: SystemTime) -> Observation {
    let server_now = parse_date(headers);
    let base = server_now.unwrap_or(local_now);
    let reset_epoch = header_u64(headers, "x-ratelimit-reset");
    Observation {
        status,
        limit: header_u64(headers, "x-ratelimit-limit").and_then(|v| u32::try_from(v).ok()).filter(|v| *v > 0),
        remaining: header_u64(headers, "x-ratelimit-remaining").map(|v| v.min(u64::from(u32::MAX)) as u32),
        reset_after: reset_epoch.map(|r| parse_reset(r, base)),
        retry_after: headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, base)),
        clock_offset_secs: server_now.map(|s| epoch_secs(s) - epoch_secs(local_now)),
        reset_epoch,
        date_epoch: server_now.map(|s| epoch_secs(s).max(0) as u64),
    }
}

/// `Retry-After`: delta seconds or an HTTP-date (read against `server_now`). Junk gives `None`.
pub fn parse_retry_after(value: &str, server_now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        let secs = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs).min(MAX_DELAY));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(server_now).unwrap_or(Duration::ZERO).min(MAX_DELAY))
}

/// `X-RateLimit-Reset` (epoch seconds) as a delay from `server_now`. Some servers send a delta
/// in seconds instead of an epoch: a value far below any plausible epoch is read that way.
pub fn parse_reset(reset: u64, server_now: SystemTime) -> Duration {
    const DELTA_FORM_BELOW: u64 = 1_000_000_000; // 2001-09-09: no real reset epoch is earlier
    if reset < DELTA_FORM_BELOW {
        return Duration::from_secs(reset).min(MAX_DELAY);
    }
    // An epoch beyond what SystemTime can hold is "very far": the cap, never a panic.
    let Some(at) = UNIX_EPOCH.checked_add(Duration::from_secs(reset)) else { return MAX_DELAY };
    at.duration_since(server_now).unwrap_or(Duration::ZERO).min(MAX_DELAY)
}

fn parse_date(headers: &HeaderMap) -> Option<SystemTime> {
    let v = headers.get(http::header::DATE)?.to_str().ok()?;
    httpdate::parse_http_date(v.trim()).ok()
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    let v = headers.get(name)?.to_str().ok()?.trim();
    // Tolerate a fractional form ("12.0"), never a negative or junk one.
    let int = v.split_once('.').map_or(v, |(i, _)| i);
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(int.parse::<u64>().unwrap_or(u64::MAX))
}

fn epoch_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn retry_after_delta_seconds() {
        assert_eq!(parse_retry_after("120", at(0)), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 ", at(0)), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_http_date_is_read_on_the_servers_clock() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2026 07:26:00 GMT").unwrap();
        assert_eq!(parse_retry_after("Wed, 21 Oct 2026 07:28:00 GMT", now), Some(Duration::from_secs(120)));
        // A date in the past means "now".
        assert_eq!(parse_retry_after("Wed, 21 Oct 2026 07:20:00 GMT", now), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_junk_is_ignored() {
        for junk in ["", "soon", "-5", "1.5", "12abc", "Wed, 99 Oct 2026 07:28:00 GMT", "١٢"] {
            assert_eq!(parse_retry_after(junk, at(0)), None, "{junk:?}");
        }
    }

    #[test]
    fn retry_after_is_capped() {
        assert_eq!(parse_retry_after("99999999999999999999999", at(0)), Some(MAX_DELAY));
    }

    #[test]
    fn reset_is_a_delta_from_the_date_header_not_our_clock() {
        // The server is 30 s ahead of us: Reset − Date is still 10 s.
        let h = headers(&[
            ("date", &httpdate::fmt_http_date(at(1_800_000_030))),
            ("x-ratelimit-reset", "1800000040"),
            ("x-ratelimit-remaining", "7"),
            ("x-ratelimit-limit", "1000"),
        ]);
        let o = parse_ratelimit_headers(200, &h, at(1_800_000_000));
        assert_eq!(o.reset_after, Some(Duration::from_secs(10)));
        assert_eq!(o.remaining, Some(7));
        assert_eq!(o.limit, Some(1000));
        assert_eq!(o.clock_offset_secs, Some(30));
    }

    #[test]
    fn reset_without_date_uses_our_clock() {
        let h = headers(&[("x-ratelimit-reset", "1800000005")]);
        let o = parse_ratelimit_headers(429, &h, at(1_800_000_000));
        assert_eq!(o.reset_after, Some(Duration::from_secs(5)));
        assert_eq!(o.clock_offset_secs, None);
    }

    #[test]
    fn reset_in_the_past_is_zero_and_small_values_are_deltas() {
        assert_eq!(parse_reset(1_700_000_000, at(1_800_000_000)), Duration::ZERO);
        assert_eq!(parse_reset(30, at(1_800_000_000)), Duration::from_secs(30));
    }

    #[test]
    fn junk_headers_are_ignored() {
        let h = headers(&[
            ("x-ratelimit-limit", "0"),
            ("x-ratelimit-remaining", "-1"),
            ("x-ratelimit-reset", "tomorrow"),
            ("retry-after", "never"),
            ("date", "yesterday"),
        ]);
        let o = parse_ratelimit_headers(429, &h, at(0));
        assert!(!o.is_informative(), "{o:?}");
    }
}
