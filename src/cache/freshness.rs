//! How long an upstream answer may be served from the cache. Pure: directives in, a lifetime
//! out; the caller anchors it to `tokio::time::Instant`.

use std::time::{Duration, SystemTime};

use http::{header, HeaderMap};

/// `Cache-Control` directives that matter here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Directives {
    /// `no-store`
    pub no_store: bool,
    /// `no-cache` (or `Pragma: no-cache` on a request)
    pub no_cache: bool,
    /// `max-age=N`
    pub max_age: Option<Duration>,
    /// `s-maxage=N`
    pub s_maxage: Option<Duration>,
    /// `only-if-cached`
    pub only_if_cached: bool,
}

/// Parse every `Cache-Control` value (and `Pragma: no-cache`).
pub fn parse_cache_control(headers: &HeaderMap) -> Directives {
    let mut d = Directives::default();
    let values = headers.get_all(header::CACHE_CONTROL).into_iter().filter_map(|v| v.to_str().ok());
    for directive in values.flat_map(|v| v.split(',')) {
        let (name, arg) = match directive.split_once('=') {
            Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
            None => (directive.trim(), None),
        };
        let secs = || arg.and_then(|a| a.parse::<u64>().ok()).map(Duration::from_secs);
        match name.to_ascii_lowercase().as_str() {
            "no-store" => d.no_store = true,
            "no-cache" => d.no_cache = true,
            "only-if-cached" => d.only_if_cached = true,
            // An unparsable max-age means "stale" (RFC 9111 §4.2.1).
            "max-age" => d.max_age = Some(secs().unwrap_or(Duration::ZERO)),
            "s-maxage" => d.s_maxage = Some(secs().unwrap_or(Duration::ZERO)),
            _ => {}
        }
    }
    let pragma = headers.get_all(header::PRAGMA).into_iter().filter_map(|v| v.to_str().ok());
    if pragma.flat_map(|v| v.split(',')).any(|p| p.trim().eq_ignore_ascii_case("no-cache")) {
        d.no_cache = true;
    }
    d
}

/// How long a response may be served, given the configured TTL; `None` when it must not be
/// stored at all.
pub fn lifetime(headers: &HeaderMap, ttl: Duration) -> Option<Duration> {
    let cc = parse_cache_control(headers);
    if cc.no_store || cc.no_cache || headers.contains_key(header::SET_COOKIE) {
        return None;
    }
    let vary_ok = headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_ascii_lowercase())
        .all(|v| v.is_empty() || super::key::VARYING.contains(&v.as_str()));
    if !vary_ok {
        return None;
    }
    let upstream = cc.s_maxage.or(cc.max_age).or_else(|| expires_in(headers));
    let age = headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_secs);
    let life = upstream.map_or(ttl, |u| u.min(ttl)).saturating_sub(age);
    (!life.is_zero()).then_some(life)
}

/// `Expires − Date`; an invalid `Expires` means already expired.
fn expires_in(headers: &HeaderMap) -> Option<Duration> {
    let expires = headers.get(header::EXPIRES)?.to_str().ok();
    let date =
        headers.get(header::DATE).and_then(|v| v.to_str().ok()).and_then(|v| httpdate::parse_http_date(v).ok())?;
    let at: SystemTime = match expires.and_then(|e| httpdate::parse_http_date(e).ok()) {
        Some(at) => at,
        None => return Some(Duration::ZERO),
    };
    Some(at.duration_since(date).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, v.parse().unwrap());
        }
        m
    }

    const TTL: Duration = Duration::from_secs(30);

    #[test]
    fn default_ttl_without_directives() {
        assert_eq!(lifetime(&h(&[]), TTL), Some(TTL));
    }

    #[test]
    fn max_age_shortens_but_never_extends() {
        assert_eq!(lifetime(&h(&[("cache-control", "max-age=5")]), TTL), Some(Duration::from_secs(5)));
        assert_eq!(lifetime(&h(&[("cache-control", "public, max-age=3600")]), TTL), Some(TTL));
        assert_eq!(lifetime(&h(&[("cache-control", "max-age=0")]), TTL), None);
        assert_eq!(lifetime(&h(&[("cache-control", "max-age=junk")]), TTL), None);
    }

    #[test]
    fn no_store_no_cache_and_cookies_are_not_stored() {
        assert_eq!(lifetime(&h(&[("cache-control", "no-store")]), TTL), None);
        assert_eq!(lifetime(&h(&[("cache-control", "private, NO-CACHE")]), TTL), None);
        assert_eq!(lifetime(&h(&[("set-cookie", "a=b")]), TTL), None);
    }

    #[test]
    fn age_is_subtracted() {
        let headers = h(&[("cache-control", "max-age=10"), ("age", "4")]);
        assert_eq!(lifetime(&headers, TTL), Some(Duration::from_secs(6)));
    }

    #[test]
    fn unknown_vary_is_not_stored() {
        assert_eq!(lifetime(&h(&[("vary", "Accept-Encoding")]), TTL), Some(TTL));
        assert_eq!(lifetime(&h(&[("vary", "*")]), TTL), None);
        assert_eq!(lifetime(&h(&[("vary", "X-Tenant")]), TTL), None);
    }

    #[test]
    fn expires_relative_to_date() {
        let headers = h(&[("date", "Wed, 21 Oct 2026 07:28:00 GMT"), ("expires", "Wed, 21 Oct 2026 07:28:10 GMT")]);
        assert_eq!(lifetime(&headers, TTL), Some(Duration::from_secs(10)));
        let invalid = h(&[("date", "Wed, 21 Oct 2026 07:28:00 GMT"), ("expires", "0")]);
        assert_eq!(lifetime(&invalid, TTL), None);
    }

    #[test]
    fn request_directives() {
        let d = parse_cache_control(&h(&[("cache-control", "no-cache"), ("cache-control", "only-if-cached")]));
        assert!(d.no_cache && d.only_if_cached);
        assert!(parse_cache_control(&h(&[("pragma", "no-cache")])).no_cache);
    }
}
