//! The RackNap JSON envelope for errors the proxy (or the bundled mock) makes itself.
//!
//! Shape: `{"success":false,"code":N,"error":{"type","message"},"meta":{"timestamp","requestId"}}`,
//! so clients' existing `if not body["success"]` handling works for proxy-made errors too.

use bytes::Bytes;
use serde_json::json;

/// `meta` of every envelope.
#[derive(Clone, Debug)]
pub struct Meta {
    /// RFC 3339, second precision.
    pub timestamp: String,
    /// The request id (`req_...`).
    pub request_id: String,
}

/// An error envelope body.
pub fn error(code: u16, error_type: &str, message: &str, meta: &Meta) -> Bytes {
    let v = json!({
        "success": false,
        "code": code,
        "error": { "type": error_type, "message": message },
        "meta": { "timestamp": meta.timestamp, "requestId": meta.request_id },
    });
    Bytes::from(serde_json::to_vec(&v).expect("json values serialise"))
}

/// A fresh request id: `req_` and 16 hex digits.
pub fn new_request_id() -> String {
    format!("req_{:016x}", rand::random::<u64>())
}

/// Whether a stored JSON body is a success envelope (`"success": true`).
pub fn is_success(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Probe {
        success: Option<bool>,
    }
    serde_json::from_slice::<Probe>(body).is_ok_and(|p| p.success == Some(true))
}
