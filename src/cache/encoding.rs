//! Content codings: whether a stored answer's `Content-Encoding` is one the request accepted,
//! and whether a (possibly compressed) body is a success envelope. Pure, no I/O.

use std::io::Read;

use flate2::read::{GzDecoder, ZlibDecoder};
use http::{header, HeaderMap};

use crate::envelope;

/// The answer's content codings, lower-case, `identity` left out.
fn codings(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("?").split(','))
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty() && c != "identity")
        .collect()
}

/// Whether every `Content-Encoding` of the answer is named with a non-zero weight in the
/// request's `Accept-Encoding` (`*` is not trusted: only names count).
pub(super) fn encoding_accepted(request: &HeaderMap, response: &HeaderMap) -> bool {
    let offers: Vec<(String, bool)> = request
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|offer| {
            let mut parts = offer.split(';');
            let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let refused =
                parts.any(|p| p.replace(' ', "").strip_prefix("q=").and_then(|q| q.parse::<f32>().ok()) == Some(0.0));
            (name, refused)
        })
        .collect();
    codings(response).iter().all(|c| offers.iter().any(|(name, refused)| name == c && !refused))
}

/// Whether `body` is a `"success": true` envelope, decoding a gzip or deflate body first (at
/// most `limit` decoded bytes). Other codings cannot be checked, so they count as not success.
pub(super) fn is_success(headers: &HeaderMap, body: &[u8], limit: usize) -> bool {
    match codings(headers).as_slice() {
        [] => envelope::is_success(body),
        [c] if c == "gzip" || c == "x-gzip" => decoded_success(GzDecoder::new(body), limit),
        [c] if c == "deflate" => decoded_success(ZlibDecoder::new(body), limit),
        _ => false,
    }
}

fn decoded_success(decoder: impl Read, limit: usize) -> bool {
    let mut out = Vec::new();
    let read = decoder.take(u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1)).read_to_end(&mut out);
    read.is_ok() && out.len() <= limit && envelope::is_success(&out)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::{write::GzEncoder, Compression};

    use super::*;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (http::HeaderName::from_static(k), v.parse().unwrap())).collect()
    }

    pub(crate) fn gzip(body: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::fast());
        e.write_all(body).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn accepted_encodings() {
        let gz = h(&[("content-encoding", "gzip")]);
        assert!(encoding_accepted(&h(&[("accept-encoding", "br, GZIP;q=0.5")]), &gz));
        assert!(!encoding_accepted(&h(&[]), &gz));
        assert!(!encoding_accepted(&h(&[("accept-encoding", "gzip;q=0")]), &gz));
        assert!(!encoding_accepted(&h(&[("accept-encoding", "*")]), &gz));
        assert!(encoding_accepted(&h(&[]), &h(&[("content-encoding", "identity")])));
    }

    #[test]
    fn compressed_success_is_recognised_within_the_limit() {
        let ok = br#"{"success":true,"data":[]}"#;
        let gz = h(&[("content-encoding", "gzip")]);
        assert!(is_success(&gz, &gzip(ok), 1024));
        assert!(!is_success(&gz, &gzip(ok), 10), "decoded size is bounded");
        assert!(!is_success(&gz, ok, 1024), "not really gzip");
        assert!(!is_success(&gz, &gzip(br#"{"success":false}"#), 1024));
        assert!(!is_success(&h(&[("content-encoding", "br")]), ok, 1024), "cannot be checked");
    }
}
