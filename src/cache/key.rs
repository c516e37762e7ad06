//! Cache keys: account, path, the query in canonical order with consistent percent-encoding,
//! and the request headers that change the answer. Pure functions, no I/O.

use http::HeaderMap;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Request headers that always change the representation and so always belong to the key.
pub const VARYING: [&str; 3] = ["accept", "accept-encoding", "accept-language"];

/// Characters that stay literal in a canonical query component (RFC 3986 unreserved).
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// A resource: account, method, normalised path and canonical query. The upstream's `Vary`
/// names are remembered per resource.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ResourceKey(String);

impl ResourceKey {
    /// The resource of a GET of `path` (already normalised by admission) with `query`.
    pub fn new(account: &str, path: &str, query: Option<&str>) -> Self {
        let query = canonical_query(query.unwrap_or(""));
        let mut k = String::with_capacity(account.len() + path.len() + query.len() + 8);
        for part in [account, "GET", path, &query] {
            k.push_str(part);
            k.push('\n');
        }
        Self(k)
    }
}

/// The identity of a cacheable answer: the resource plus the values of the request headers
/// that change it ([`VARYING`] and what the upstream named in `Vary`).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct CacheKey(String);

impl CacheKey {
    /// Key for a GET of `path` with `query`, varying only on [`VARYING`].
    pub fn new(account: &str, path: &str, query: Option<&str>, headers: &HeaderMap) -> Self {
        Self::varying(&ResourceKey::new(account, path, query), headers, &[])
    }

    /// Key for `resource` whose upstream also varies on `vary` (lower-case names).
    pub fn varying(resource: &ResourceKey, headers: &HeaderMap, vary: &[String]) -> Self {
        let mut k = resource.0.clone();
        for name in VARYING {
            push_header(&mut k, name, headers, true);
        }
        for name in vary.iter().filter(|n| !VARYING.contains(&n.as_str())) {
            push_header(&mut k, name, headers, false);
        }
        Self(k)
    }

    /// The path part of the key (for invalidation by collection).
    pub fn path(&self) -> &str {
        self.0.split('\n').nth(2).unwrap_or("")
    }
}

/// `name:v1,v2` on a line of its own. Values of the always-varying headers are compared
/// case-insensitively and without spaces; other headers exactly, only trimmed.
fn push_header(k: &mut String, name: &str, headers: &HeaderMap, fold: bool) {
    k.push_str(name);
    k.push(':');
    for v in headers.get_all(name) {
        let v = String::from_utf8_lossy(v.as_bytes());
        if fold {
            k.push_str(&v.to_ascii_lowercase().replace(' ', ""));
        } else {
            k.push_str(v.trim());
        }
        k.push(',');
    }
    k.push('\n');
}

/// The header names in `Vary`, lower-case, sorted, without duplicates; `None` for `Vary: *`
/// (the answer depends on something no request header says: never stored).
pub fn parse_vary(headers: &HeaderMap) -> Option<Vec<String>> {
    let mut names: Vec<String> = headers
        .get_all(http::header::VARY)
        .iter()
        .map(|v| v.to_str().unwrap_or("*")) // an unreadable Vary is as good as `*`
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    if names.iter().any(|n| n == "*") {
        return None;
    }
    names.sort();
    names.dedup();
    Some(names)
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
        assert_ne!(a, CacheKey::new("acct", "/v1/invoices", None, &HeaderMap::new()));
        assert_ne!(a, CacheKey::new("other", "/v1/invoices", None, &json), "accounts never share");
        assert_eq!(a.path(), "/v1/invoices");
    }

    #[test]
    fn vary_names_add_their_headers_to_the_key() {
        let resource = ResourceKey::new("acct", "/v1/customers", Some("b=2&a=1"));
        let mut t1 = HeaderMap::new();
        t1.insert("x-tenant", "One".parse().unwrap());
        let mut t2 = HeaderMap::new();
        t2.insert("x-tenant", "one".parse().unwrap());
        let vary = vec!["x-tenant".to_owned()];
        assert_eq!(CacheKey::varying(&resource, &t1, &[]), CacheKey::varying(&resource, &t2, &[]));
        assert_ne!(CacheKey::varying(&resource, &t1, &vary), CacheKey::varying(&resource, &t2, &vary), "exact values");
        assert_eq!(CacheKey::varying(&resource, &t1, &vary).path(), "/v1/customers");
        assert_eq!(
            CacheKey::varying(&resource, &t1, &[]),
            CacheKey::new("acct", "/v1/customers", Some("a=1&b=2"), &t2)
        );
    }

    #[test]
    fn vary_parsing() {
        let mut h = HeaderMap::new();
        h.append("vary", "X-Tenant, accept".parse().unwrap());
        h.append("vary", "x-tenant".parse().unwrap());
        assert_eq!(parse_vary(&h), Some(vec!["accept".to_owned(), "x-tenant".to_owned()]));
        h.append("vary", "*".parse().unwrap());
        assert_eq!(parse_vary(&h), None);
        assert_eq!(parse_vary(&HeaderMap::new()), Some(vec![]));
    }

    #[test]
    fn collections() {
        assert_eq!(collection_of("/v1/invoices"), "/v1/invoices");
        assert_eq!(collection_of("/v1/invoices/"), "/v1/invoices");
        assert_eq!(collection_of("/v1/invoices/inv_1"), "/v1/invoices");
        assert_eq!(collection_of("/v1/invoices/inv_1/items"), "/v1/invoices");
    }
}
