//! Errors the proxy makes itself: one variant per cause, each with a status, a stable `type`
//! string (public API, listed in the README) and, where waiting helps, a `Retry-After`.
//! [`rescue`] is the single place where an error becomes a response.

use std::time::Duration;

use http::{header, HeaderValue, Response, StatusCode};

use crate::{body, body::Body, envelope};

/// Why the proxy answered instead of the upstream.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ProxyError {
    /// The queue in front of the budget is at capacity.
    #[error("the request queue is full ({capacity} waiting); retry later")]
    QueueFull {
        /// Configured capacity.
        capacity: usize,
        /// When a retry has a chance.
        retry_after: Duration,
    },
    /// The request could not be sent within its allowed wait.
    #[error("the request could not be sent within its maximum wait of {}", humantime::format_duration(*max_wait))]
    QueueDeadline {
        /// The wait that was allowed.
        max_wait: Duration,
        /// When a retry has a chance.
        retry_after: Duration,
    },
    /// The proxy is shutting down and will send nothing more.
    #[error("the proxy is shutting down")]
    ShuttingDown,
    /// Malformed request.
    #[error("{0}")]
    BadRequest(String),
    /// Inbound authentication is on and the request carries no valid token.
    #[error("a valid proxy token is required in the {0} header")]
    Unauthenticated(String),
    /// The target is outside what the proxy forwards.
    #[error("{0}")]
    Forbidden(String),
    /// A method the proxy never forwards (CONNECT, TRACE).
    #[error("method {0} is not forwarded by the proxy")]
    MethodNotAllowed(String),
    /// Request body over the configured limit.
    #[error("the request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// Limit in bytes.
        limit: usize,
    },
    /// The client did not send its body in time.
    #[error("the request body did not arrive within {}", humantime::format_duration(*after))]
    RequestTimeout {
        /// The timeout that elapsed.
        after: Duration,
    },
    /// The upstream could not be reached or broke the connection.
    #[error("the upstream could not be reached: {0}")]
    UpstreamUnavailable(String),
    /// No connection to the upstream could be made (refused, connect timeout, TLS handshake):
    /// nothing of the request was sent, so it may be retried whatever its method.
    #[error("the upstream could not be reached: {0}")]
    UpstreamConnect(String),
    /// The upstream did not answer in time.
    #[error("the upstream did not answer within {}", humantime::format_duration(*after))]
    UpstreamTimeout {
        /// The timeout that elapsed.
        after: Duration,
    },
    /// `Cache-Control: only-if-cached` and nothing fresh is cached.
    #[error("no cached answer for this request (only-if-cached)")]
    NotCached,
    /// A bug or an impossible state.
    #[error("internal proxy error: {0}")]
    Internal(String),
}

impl ProxyError {
    /// HTTP status of the envelope.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::QueueFull { .. } | Self::QueueDeadline { .. } | Self::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::UpstreamUnavailable(_) | Self::UpstreamConnect(_) => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout { .. } | Self::NotCached => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable `error.type` string.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::QueueFull { .. } => "proxy_queue_full",
            Self::QueueDeadline { .. } => "proxy_queue_timeout",
            Self::ShuttingDown => "proxy_shutting_down",
            Self::BadRequest(_) => "proxy_bad_request",
            Self::Unauthenticated(_) => "proxy_unauthenticated",
            Self::Forbidden(_) => "proxy_forbidden",
            Self::MethodNotAllowed(_) => "proxy_method_not_allowed",
            Self::PayloadTooLarge { .. } => "proxy_payload_too_large",
            Self::RequestTimeout { .. } => "proxy_request_timeout",
            Self::UpstreamUnavailable(_) | Self::UpstreamConnect(_) => "proxy_upstream_unavailable",
            Self::UpstreamTimeout { .. } => "proxy_upstream_timeout",
            Self::NotCached => "proxy_not_cached",
            Self::Internal(_) => "proxy_internal_error",
        }
    }

    /// `Retry-After` for errors where waiting helps.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::QueueFull { retry_after, .. } | Self::QueueDeadline { retry_after, .. } => Some(*retry_after),
            Self::ShuttingDown
            | Self::UpstreamUnavailable(_)
            | Self::UpstreamConnect(_)
            | Self::UpstreamTimeout { .. } => Some(Duration::from_secs(1)),
            _ => None,
        }
    }
}

/// Turn an error into the RackNap error envelope.
pub fn rescue(err: &ProxyError, meta: &envelope::Meta) -> Response<Body> {
    let status = err.status();
    let bytes = envelope::error(status.as_u16(), err.kind(), &err.to_string(), meta);
    let mut resp = Response::new(body::full(bytes));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(wait) = err.retry_after() {
        // Whole seconds, rounded up: a client that waits this long has a chance.
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    if let ProxyError::MethodNotAllowed(_) = err {
        h.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"));
    }
    resp
}
