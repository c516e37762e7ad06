//! What travels with a request through the stack (request extensions) and what layers report
//! back on the response (response extensions), for the log line and metrics.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Request, Response};
use tokio::time::Instant;

use crate::{body::Body, error::ProxyError, pace::queue::ClientId};

/// A request inside the stack: admitted, body buffered (so it can be replayed).
pub type ProxyRequest = Request<Bytes>;
/// A response inside the stack.
pub type ProxyResponse = Response<Body>;
/// The future every layer returns.
pub type ProxyFuture = BoxFuture<'static, Result<ProxyResponse, ProxyError>>;

/// Set by admission on every request.
#[derive(Clone, Debug)]
pub struct RequestContext {
    /// `req_...`, echoed as `X-Request-Id` and in envelopes.
    pub id: Arc<str>,
    /// The fairness unit.
    pub client: ClientId,
    /// Latest instant a permit may be granted for the first attempt.
    pub deadline: Instant,
}

/// Response extension: time waited for permits, all attempts together.
#[derive(Clone, Copy, Debug, Default)]
pub struct QueueWait(pub Duration);

/// Response extension: upstream time to response head of the last attempt.
#[derive(Clone, Copy, Debug, Default)]
pub struct UpstreamTime(pub Duration);

/// Response extension: upstream attempts made for this answer.
#[derive(Clone, Copy, Debug, Default)]
pub struct Attempts(pub u32);

/// Read the context admission attached, or fail loudly (a stack assembled without admission).
pub fn context_of(req: &ProxyRequest) -> Result<RequestContext, ProxyError> {
    req.extensions()
        .get::<RequestContext>()
        .cloned()
        .ok_or_else(|| ProxyError::Internal("request reached the stack without admission".into()))
}

/// A copy of a buffered request, extensions included (for replays and shared fetches).
pub fn duplicate(req: &ProxyRequest) -> ProxyRequest {
    let mut out = Request::new(req.body().clone());
    *out.method_mut() = req.method().clone();
    *out.uri_mut() = req.uri().clone();
    *out.version_mut() = req.version();
    *out.headers_mut() = req.headers().clone();
    *out.extensions_mut() = req.extensions().clone();
    out
}
