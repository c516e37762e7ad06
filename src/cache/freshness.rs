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
    /// `must-revalidate` or `proxy-revalidate`
    pub must_revalidate: bool,
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
            "must-revalidate" | "proxy-revalidate" => d.must_revalidate = true,
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

/// How a storable upstream answer may be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Storage {
    /// Freshness from the moment it was received (zero: revalidate before every use).
    pub lifetime: Duration,
    /// The `Age` the upstream reported (added to the `Age` of every hit).
    pub initial_age: Duration,
    /// `no-cache`, `must-revalidate`, `proxy-revalidate`: never served stale.
    pub no_stale: bool,
}

/// Whether and how a response may be stored, given the TTL of its collection; `None` for
/// `no-store`, `Set-Cookie` and `Vary: *`. `no-cache` answers are stored with a zero lifetime
/// (every use revalidates); `private` is fine, the cache belongs to one account.
pub fn storage(headers: &HeaderMap, ttl: Duration) -> Option<Storage> {
    let cc = parse_cache_control(headers);
    if cc.no_store || headers.contains_key(header::SET_COOKIE) || super::key::parse_vary(headers).is_none() {
        return None;
    }
    let initial_age = headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_secs);
    let upstream = cc.s_maxage.or(cc.max_age).or_else(|| expires_in(headers));
    let lifetime =
        if cc.no_cache { Duration::ZERO } else { upstream.map_or(ttl, |u| u.min(ttl)).saturating_sub(initial_age) };
    Some(Storage { lifetime, initial_age, no_stale: cc.no_cache || cc.must_revalidate })
}

/// How long a response may be served fresh; `None` when it must not be served without
/// revalidation (or not be stored at all).
pub fn lifetime(headers: &HeaderMap, ttl: Duration) -> Option<Duration> {
    storage(headers, ttl).map(|s| s.lifetime).filter(|l| !l.is_zero())
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
    fn no_store_and_cookies_are_not_stored_no_cache_is_stored_to_revalidate() {
        assert_eq!(storage(&h(&[("cache-control", "no-store")]), TTL), None);
        assert_eq!(storage(&h(&[("cache-control", "private, no-store")]), TTL), None);
        assert_eq!(storage(&h(&[("set-cookie", "a=b")]), TTL), None);
        let no_cache = storage(&h(&[("cache-control", "private, NO-CACHE")]), TTL).unwrap();
        assert_eq!((no_cache.lifetime, no_cache.no_stale), (Duration::ZERO, true));
        assert_eq!(lifetime(&h(&[("cache-control", "no-cache")]), TTL), None);
        assert_eq!(lifetime(&h(&[("cache-control", "private")]), TTL), Some(TTL));
        assert!(storage(&h(&[("cache-control", "max-age=5, must-revalidate")]), TTL).unwrap().no_stale);
        assert!(!storage(&h(&[("cache-control", "max-age=5")]), TTL).unwrap().no_stale);
    }

    #[test]
    fn s_maxage_wins_over_max_age() {
        let headers = h(&[("cache-control", "max-age=20, s-maxage=3")]);
        assert_eq!(lifetime(&headers, TTL), Some(Duration::from_secs(3)));
    }

    #[test]
    fn age_is_subtracted() {
        let headers = h(&[("cache-control", "max-age=10"), ("age", "4")]);
        assert_eq!(lifetime(&headers, TTL), Some(Duration::from_secs(6)));
        assert_eq!(storage(&headers, TTL).unwrap().initial_age, Duration::from_secs(4));
    }

    #[test]
    fn vary_star_is_never_stored_named_headers_are() {
        assert_eq!(lifetime(&h(&[("vary", "Accept-Encoding")]), TTL), Some(TTL));
        assert_eq!(lifetime(&h(&[("vary", "*")]), TTL), None);
        assert_eq!(lifetime(&h(&[("vary", "X-Tenant, *")]), TTL), None);
        assert_eq!(lifetime(&h(&[("vary", "X-Tenant")]), TTL), Some(TTL));
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
