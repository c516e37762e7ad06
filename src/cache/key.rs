//! Cache keys: account, path, the query in canonical order with consistent percent-encoding,
//! and the request headers that change the answer. Pure functions, no I/O.

use http::HeaderMap;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Request headers that change the representation and so belong to the key.
pub const VARYING: [&str; 3] = ["accept", "accept-encoding", "accept-language"];

/// Characters that stay literal in a canonical query component (RFC 3986 unreserved).
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// The identity of a cacheable answer.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct CacheKey(String);

impl CacheKey {
    /// Key for a GET of `path` (already normalised by admission) with `query`.
    pub fn new(account: &str, path: &str, query: Option<&str>, headers: &HeaderMap) -> Self {
        let mut k = String::with_capacity(64);
        k.push_str(account);
        k.push('\n');
        k.push_str(path);
        k.push('\n');
        k.push_str(&canonical_query(query.unwrap_or("")));
        for name in VARYING {
            k.push('\n');
            for v in headers.get_all(name) {
                k.push_str(&String::from_utf8_lossy(v.as_bytes()).to_ascii_lowercase().replace(' ', ""));
                k.push(',');
            }
        }
        Self(k)
    }

    /// The path part of the key (for invalidation by collection).
    pub fn path(&self) -> &str {
        self.0.split('\n').nth(1).unwrap_or("")
    }
}

/// `b=2&a=1&&a=0` → `a=1&a=0&b=2`: parameters sorted by name (stable, so repeated names keep
/// their order), empty pieces dropped, each component percent-encoded one canonical way.
pub fn canonical_query(query: &str) -> String {
    let mut params: Vec<(String, Option<String>)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((n, v)) => (canonical_component(n), Some(canonical_component(v))),
            None => (canonical_component(p), None),
        })
        .collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = String::new();
    for (i, (n, v)) in params.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(n);
        if let Some(v) = v {
            out.push('=');
            out.push_str(v);
        }
    }
    out
}

/// Decode, then encode everything but unreserved characters. `+` stays distinct from `%20`
/// only in meaning to the server, so both are kept as written (`+` is encoded as `%2B` only
/// when it arrived encoded).
fn canonical_component(s: &str) -> String {
    s.split('+')
        .map(|piece| utf8_percent_encode(&percent_decode_str(piece).decode_utf8_lossy(), ENCODE).to_string())
        .collect::<Vec<_>>()
        .join("+")
}

/// The collection a path belongs to: `/v1/invoices/inv_1/items` → `/v1/invoices`.
pub fn collection_of(path: &str) -> &str {
    let mut slashes = path.match_indices('/').map(|(i, _)| i);
    let _root = slashes.next();
    let _version = slashes.next();
    match slashes.next() {
        Some(end) => &path[..end],
        None => path.trim_end_matches('/'),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_order_does_not_matter() {
        assert_eq!(canonical_query("a=1&b=2"), canonical_query("b=2&a=1"));
        assert_eq!(canonical_query("b=2&&a=1&"), "a=1&b=2");
    }

    #[test]
    fn repeated_names_keep_their_order() {
        assert_ne!(canonical_query("a=1&a=2"), canonical_query("a=2&a=1"));
    }

    #[test]
    fn percent_encoding_is_canonical() {
        assert_eq!(canonical_query("customerId=cust%5F1"), canonical_query("customerId=cust_1"));
        assert_eq!(canonical_query("q=%c3%a9"), canonical_query("q=%C3%A9"));
        assert_ne!(canonical_query("q=a%26b"), canonical_query("q=a&b"));
        assert_ne!(canonical_query("a"), canonical_query("a="));
    }

    #[test]
    fn varying_headers_are_part_of_the_key() {
        let mut json = HeaderMap::new();
        json.insert("accept", "application/json".parse().unwrap());
        let mut gz = json.clone();
        gz.insert("accept-encoding", "gzip".parse().unwrap());
        let a = CacheKey::new("acct", "/v1/invoices", None, &json);
        let b = CacheKey::new("acct", "/v1/invoices", None, &gz);
        assert_ne!(a, b);
        assert_ne!(a, CacheKey::new("other", "/v1/invoices", None, &json), "accounts never share");
        assert_eq!(a.path(), "/v1/invoices");
    }

    #[test]
    fn collections() {
        assert_eq!(collection_of("/v1/invoices"), "/v1/invoices");
        assert_eq!(collection_of("/v1/invoices/"), "/v1/invoices");
        assert_eq!(collection_of("/v1/invoices/inv_1"), "/v1/invoices");
        assert_eq!(collection_of("/v1/invoices/inv_1/items"), "/v1/invoices");
    }
}
