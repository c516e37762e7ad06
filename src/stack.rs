//! The request path, assembled in one place and in request order.

use std::{net::SocketAddr, sync::Arc};

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};
use tracing::Instrument;

use crate::{
    admission::Admission,
    body::Body,
    budget::Budget,
    cache::{Cache, CacheLayer, CacheStatus, CacheStore},
    clock::{rfc3339, EpochClock},
    context::{Attempts, QueueWait, UpstreamTime},
    envelope::{self, Meta},
    error::rescue,
    forward::Forward,
    metrics::{method_label, Metrics},
    pace::{Pace, PaceLayer},
    retry::{Retry, RetryLayer},
};

/// The layered service behind admission.
pub type Stack = Cache<Retry<Pace<Forward>>>;

/// Build the stack. The first layer sees the request first.
pub fn build(cache: CacheStore, retry: RetryLayer, pace: PaceLayer, forward: Forward) -> Stack {
    ServiceBuilder::new()
        .layer(CacheLayer::new(cache)) // GET only: fresh hits never spend budget; misses coalesce
        .layer(retry) // outside pace, so every replay of a 429 pays for its own permit
        .layer(pace) // one permit per attempt; bounded, fair, deadline; a dropped waiter spends nothing
        .service(forward) // strip hop-by-hop and inbound credentials, inject the key, observe X-RateLimit-*
}

/// Everything a downstream request needs; cloned per connection.
#[derive(Clone)]
pub struct Proxy {
    /// Checks and buffers the request.
    pub admission: Admission,
    /// The layered service.
    pub stack: Stack,
    /// Metrics.
    pub metrics: Metrics,
    /// For the `RateLimit` fields on every answer.
    pub budget: Arc<dyn Budget>,
    /// For envelope timestamps.
    pub clock: EpochClock,
}

impl Proxy {
    /// Answer one downstream request: admission, the stack, and on any error the envelope.
    pub async fn handle(self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let id: Arc<str> = Arc::from(envelope::new_request_id());
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let span = tracing::info_span!("request", request_id = %id, %method, %path);
        let start = Instant::now();
        async move {
            let result = match self.admission.admit(req, peer, id.clone()).await {
                Ok(req) => self.stack.clone().oneshot(req).await,
                Err(e) => Err(e),
            };
            let mut resp = result.unwrap_or_else(|e| {
                self.metrics.refused.with_label_values(&[e.kind()]).inc();
                tracing::warn!(error.type = e.kind(), error = %e, "Proxy answered with an error");
                rescue(&e, &Meta { timestamp: rfc3339(self.clock.now()), request_id: id.to_string() })
            });
            self.finish(&mut resp, &id, &method, start);
            resp
        }
        .instrument(span)
        .await
    }

    /// Response headers for the caller, metrics and the one log line.
    fn finish(&self, resp: &mut Response<Body>, id: &str, method: &http::Method, start: Instant) {
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(id) {
            h.insert("x-request-id", v);
        }
        let snap = self.budget.snapshot(Instant::now());
        // draft-ietf-httpapi-ratelimit-headers: structured fields, one named policy.
        let policy = format!("\"account\";q={};w={}", snap.limit, snap.window.as_secs().max(1));
        let state = format!("\"account\";r={};t={}", snap.remaining, snap.reset_in.as_secs_f64().ceil() as u64);
        h.insert("ratelimit-policy", HeaderValue::from_str(&policy).expect("ascii"));
        h.insert("ratelimit", HeaderValue::from_str(&state).expect("ascii"));
        let cache = resp.extensions().get::<CacheStatus>().copied().unwrap_or(CacheStatus::Bypass);
        let queue = resp.extensions().get::<QueueWait>().copied().unwrap_or_default().0;
        let upstream = resp.extensions().get::<UpstreamTime>().copied().unwrap_or_default().0;
        let attempts = resp.extensions().get::<Attempts>().map_or(0, |a| a.0);
        let status = resp.status();
        self.metrics.requests.with_label_values(&[method_label(method), status.as_str(), cache.as_str()]).inc();
        let elapsed = start.elapsed();
        self.metrics.request_duration.with_label_values(&[cache.as_str()]).observe(elapsed.as_secs_f64());
        tracing::info!(
            status = status.as_u16(),
            queue_ms = queue.as_millis() as u64,
            upstream_ms = upstream.as_millis() as u64,
            total_ms = elapsed.as_millis() as u64,
            attempts,
            cache = cache.as_str(),
            "Request finished"
        );
    }
}
