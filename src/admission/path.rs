//! Path normalisation (RFC 3986 §6.2.2): one spelling per resource, so the allow-list and the
//! cache key cannot be bypassed by `..`, `%2e%2e`, `//` or backslashes. Pure.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

/// Characters re-encoded in a path segment after decoding.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'%')
    .add(b'/')
    .add(b'\\')
    .add(b'^')
    .add(b'|')
    .add(b'[')
    .add(b']');

/// Normalise an origin-form path: decode each segment, refuse encoded slashes and backslashes
/// (they have no meaning in RackNap ids and are the classic bypass), drop empty and `.`
/// segments, resolve `..` (never above the root) and re-encode one canonical way.
pub fn normalize(raw: &str) -> Result<String, String> {
    if raw.contains('\\') {
        return Err("backslashes are not allowed in paths".into());
    }
    let mut out: Vec<String> = Vec::new();
    for seg in raw.split('/') {
        let decoded = percent_decode_str(seg).decode_utf8().map_err(|_| "path is not valid UTF-8".to_string())?;
        if decoded.contains('/') || decoded.contains('\\') {
            return Err("encoded slashes are not allowed in paths".into());
        }
        if decoded.chars().any(char::is_control) {
            return Err("control characters are not allowed in paths".into());
        }
        check_segment(&decoded)?;
        match decoded.as_ref() {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(utf8_percent_encode(s, SEGMENT).to_string()),
        }
    }
    let trailing = raw.ends_with('/') && !out.is_empty() && !raw.ends_with("/.") && !raw.ends_with("/..");
    let mut path = String::with_capacity(raw.len());
    for seg in &out {
        path.push('/');
        path.push_str(seg);
    }
    if path.is_empty() || trailing {
        path.push('/');
    }
    Ok(path)
}

/// Spellings that another parser could read as something else: a dot-segment carrying path
/// parameters (`..;x`, Tomcat/Spring read it as `..`), a still-encoded triplet after one
/// decoding (`%252e`, double decoders read it as `.`), and Unicode look-alikes of `.`, `/` and
/// `\` that NFKC-normalising servers fold into them.
fn check_segment(decoded: &str) -> Result<(), String> {
    let before_params = decoded.split(';').next().unwrap_or_default();
    if decoded.contains(';') && matches!(before_params, "." | "..") {
        return Err("dot-segments with path parameters are not allowed".into());
    }
    let b = decoded.as_bytes();
    if b.windows(3).any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit()) {
        return Err("doubly percent-encoded paths are not allowed".into());
    }
    const LOOKALIKES: [char; 8] =
        ['\u{2024}', '\u{FE52}', '\u{FF0E}', '\u{2215}', '\u{2044}', '\u{FF0F}', '\u{FE68}', '\u{FF3C}'];
    if decoded.chars().any(|c| LOOKALIKES.contains(&c)) {
        return Err("look-alikes of '.', '/' or '\\' are not allowed in paths".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn plain_paths_are_unchanged() {
        assert_eq!(normalize("/v1/invoices").unwrap(), "/v1/invoices");
        assert_eq!(normalize("/v1/invoices/inv_8392ae4c").unwrap(), "/v1/invoices/inv_8392ae4c");
        assert_eq!(normalize("/v1/").unwrap(), "/v1/");
    }

    #[test]
    fn dot_segments_are_resolved() {
        assert_eq!(normalize("/v1/invoices/../customers").unwrap(), "/v1/customers");
        assert_eq!(normalize("/v1/./invoices").unwrap(), "/v1/invoices");
        assert_eq!(normalize("/v1/../../../etc/passwd").unwrap(), "/etc/passwd");
        assert_eq!(normalize("/v1/%2e%2e/admin").unwrap(), "/admin");
        assert_eq!(normalize("/v1/%2E%2e/admin").unwrap(), "/admin");
        assert_eq!(normalize("/v1/.%2e/admin").unwrap(), "/admin");
    }

    #[test]
    fn doubled_slashes_collapse() {
        assert_eq!(normalize("//v1//invoices").unwrap(), "/v1/invoices");
    }

    #[test]
    fn encoded_separators_and_backslashes_are_refused() {
        assert!(normalize("/v1/invoices%2f..%2f..%2fadmin").is_err());
        assert!(normalize("/v1/invoices%2F1").is_err());
        assert!(normalize("/v1\\..\\admin").is_err());
        assert!(normalize("/v1/%5c..%5cadmin").is_err());
        assert!(normalize("/v1/%00").is_err());
        assert!(normalize("/v1/%ff").is_err());
        assert!(normalize("/v1/%c0%ae%c0%ae/admin").is_err(), "overlong UTF-8");
    }

    #[test]
    fn other_parsers_readings_are_refused() {
        for bad in [
            "/v1/..;/admin",
            "/v1/.;/x",
            "/v1/%2e%2e;x/admin",
            "/v1/%252e%252e/admin",
            "/v1/%252F",
            "/v1/\u{FF0E}\u{FF0E}/a",
        ] {
            assert!(normalize(bad).is_err(), "{bad}");
        }
        assert_eq!(normalize("/v1/invoices;v=1").unwrap(), "/v1/invoices;v=1");
    }

    #[test]
    fn percent_encoding_is_canonical() {
        assert_eq!(normalize("/v1/invoices/inv%5F1").unwrap(), "/v1/invoices/inv_1");
        assert_eq!(normalize("/v1/a%20b").unwrap(), "/v1/a%20b");
    }
}
