//! What a mock route answers, and how it becomes an HTTP response with the RackNap envelope.
//!
//! Routes build a [`Reply`] (status, payload, extra headers); the handler renders it once,
//! adding `meta`, `Date`, the rate-limit headers and `Content-Type`, and dropping the body
//! for `HEAD`.

use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use serde_json::{json, Value};

use super::{limiter::Quota, ForcedHeaders};
use crate::{
    body::{empty, full, Body},
    envelope::{self, Meta},
};

/// `X-RateLimit-Limit`.
pub(crate) const LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// `X-RateLimit-Remaining`.
pub(crate) const REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// `X-RateLimit-Reset`.
pub(crate) const RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// The `pagination` object of list answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pagination {
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
}

/// The body of an answer before `meta` is known.
#[derive(Debug)]
pub(crate) enum Payload {
    /// A success envelope.
    Data { data: Value, pagination: Option<Pagination> },
    /// An error envelope.
    Error { kind: &'static str, message: String },
    /// A JSON document outside the envelope (the stats endpoint).
    Raw(Bytes),
    /// No body at all (304).
    Empty,
}

/// A route's answer.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: StatusCode,
    pub payload: Payload,
    pub headers: HeaderMap,
}

impl Reply {
    /// A success envelope with `data`.
    pub fn data(status: StatusCode, data: Value) -> Self {
        Self::new(status, Payload::Data { data, pagination: None })
    }

    /// A 200 list envelope with `pagination`.
    pub fn list(data: Value, pagination: Pagination) -> Self {
        Self::new(StatusCode::OK, Payload::Data { data, pagination: Some(pagination) })
    }

    /// An error envelope.
    pub fn error(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self::new(status, Payload::Error { kind, message: message.into() })
    }

    /// A raw JSON document.
    pub fn raw(json: Bytes) -> Self {
        Self::new(StatusCode::OK, Payload::Raw(json))
    }

    /// Add a header (values that are not valid header text are skipped).
    pub fn with_header(mut self, name: HeaderName, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.insert(name, v);
        }
        self
    }

    fn new(status: StatusCode, payload: Payload) -> Self {
        Self { status, payload, headers: HeaderMap::new() }
    }

    /// A strong validator for a success payload: a hash of `data` and `pagination` (`meta`
    /// changes on every answer, the representation does not).
    pub fn etag(&self) -> Option<String> {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let Payload::Data { data, pagination } = &self.payload else { return None };
        let mut h = DefaultHasher::new();
        data.to_string().hash(&mut h);
        pagination.map(|p| (p.total, p.offset, p.limit)).hash(&mut h);
        Some(format!("\"{:016x}\"", h.finish()))
    }

    /// The same answer as `304 Not Modified`: headers kept, no body.
    pub fn not_modified(mut self) -> Self {
        self.status = StatusCode::NOT_MODIFIED;
        self.payload = Payload::Empty;
        self
    }

    /// The usual rate-limit headers of an answer.
    pub fn with_quota(self, q: &Quota) -> Self {
        self.with_header(LIMIT, &q.limit.to_string())
            .with_header(REMAINING, &q.remaining.to_string())
            .with_header(RESET, &q.reset.to_string())
    }

    /// A 429 over budget: `Remaining: 0` and `Retry-After`.
    pub fn limited(q: &Quota) -> Self {
        Self::error(StatusCode::TOO_MANY_REQUESTS, "rate_limit_exceeded", rate_limit_message(q.retry_after))
            .with_quota(q)
            .with_header(header::RETRY_AFTER, &q.retry_after.to_string())
    }

    /// A forced 429 carrying exactly the headers asked for.
    pub fn forced(q: &Quota, headers: ForcedHeaders) -> Self {
        let reply =
            Self::error(StatusCode::TOO_MANY_REQUESTS, "rate_limit_exceeded", rate_limit_message(q.retry_after));
        match headers {
            ForcedHeaders::RateLimit => reply.with_quota(q),
            ForcedHeaders::RetryAfterSeconds => reply.with_header(header::RETRY_AFTER, &q.retry_after.to_string()),
            ForcedHeaders::RetryAfterDate => reply.with_header(header::RETRY_AFTER, &http_date(q.reset)),
            ForcedHeaders::None => reply,
        }
    }

    /// Render with `meta`; `head` drops the body but keeps `Content-Length`.
    pub fn render(self, meta: &Meta, head: bool) -> Response<Body> {
        let no_body = matches!(self.payload, Payload::Empty);
        let bytes = payload_bytes(self.status, self.payload, meta);
        let mut res = Response::new(if head { empty() } else { full(bytes.clone()) });
        *res.status_mut() = self.status;
        let headers = res.headers_mut();
        *headers = self.headers;
        if !no_body {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        }
        res
    }
}

fn rate_limit_message(retry_after: u64) -> String {
    format!("Rate limit exceeded; retry in {retry_after} s")
}

/// An HTTP-date for epoch seconds.
pub(crate) fn http_date(epoch_secs: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(epoch_secs))
}

fn payload_bytes(status: StatusCode, payload: Payload, meta: &Meta) -> Bytes {
    match payload {
        Payload::Raw(bytes) => bytes,
        Payload::Empty => Bytes::new(),
        Payload::Error { kind, message } => envelope::error(status.as_u16(), kind, &message, meta),
        Payload::Data { data, pagination } => success(status, data, pagination, meta),
    }
}

fn success(status: StatusCode, data: Value, pagination: Option<Pagination>, meta: &Meta) -> Bytes {
    let mut v = json!({
        "success": true,
        "code": status.as_u16(),
        "data": data,
        "meta": { "timestamp": meta.timestamp, "requestId": meta.request_id },
    });
    if let (Some(p), Some(obj)) = (pagination, v.as_object_mut()) {
        let has_more = p.offset.saturating_add(p.limit) < p.total;
        obj.insert(
            "pagination".into(),
            json!({ "total": p.total, "offset": p.offset, "limit": p.limit, "hasMore": has_more }),
        );
    }
    Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
}
