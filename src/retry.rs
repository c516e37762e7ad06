//! Retry: a 429 is not the client's problem. The Budget has already closed the gate until the
//! reset; this layer replays the buffered request (each attempt pays its own permit in `pace`,
//! below) within a bound on attempts and on total wait, and only then passes the last 429 on as
//! it was.

use std::{
    task::{Context, Poll},
    time::Duration,
};

use http::StatusCode;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use crate::{
    budget::Budget,
    context::{context_of, duplicate, Attempts, ProxyFuture, ProxyRequest, ProxyResponse, QueueWait, RequestContext},
    error::ProxyError,
    metrics::Metrics,
};

/// Bounds on replays.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Total time a request may spend waiting out 429s.
    pub max_wait: Duration,
}

/// Layer for [`Retry`].
#[derive(Clone)]
pub struct RetryLayer {
    policy: RetryPolicy,
    budget: std::sync::Arc<dyn Budget>,
    metrics: Metrics,
}

impl RetryLayer {
    /// Retry 429s as `policy` allows, asking `budget` how long the gate stays closed.
    pub fn new(policy: RetryPolicy, budget: std::sync::Arc<dyn Budget>, metrics: Metrics) -> Self {
        Self { policy, budget, metrics }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;
    fn layer(&self, inner: S) -> Retry<S> {
        Retry { inner, layer: self.clone() }
    }
}

/// Replays 429s.
#[derive(Clone)]
pub struct Retry<S> {
    inner: S,
    layer: RetryLayer,
}

impl<S> Retry<S>
where
    S: Service<ProxyRequest, Response = ProxyResponse, Error = ProxyError> + Clone + Send + 'static,
    S::Future: Send,
{
    async fn run(self, req: ProxyRequest) -> Result<ProxyResponse, ProxyError> {
        let ctx = context_of(&req)?;
        let started = Instant::now();
        let give_up_at = started + self.layer.policy.max_wait;
        let mut waited = Duration::ZERO;
        let mut attempt = 1;
        loop {
            let mut resp = self.inner.clone().oneshot(clone_request(&req, &ctx, attempt, give_up_at)).await?;
            waited += resp.extensions().get::<QueueWait>().copied().unwrap_or_default().0;
            if !self.should_retry(&resp, attempt, give_up_at) {
                resp.extensions_mut().insert(QueueWait(waited));
                resp.extensions_mut().insert(Attempts(attempt));
                return Ok(resp);
            }
            tracing::debug!(attempt, "Upstream answered 429; replaying after the reset");
            self.layer.metrics.retries.with_label_values(&["429"]).inc();
            drain(resp).await;
            attempt += 1;
        }
    }

    /// A 429 is replayed while attempts remain and the gate opens before we must give up.
    fn should_retry(&self, resp: &ProxyResponse, attempt: u32, give_up_at: Instant) -> bool {
        if resp.status() != StatusCode::TOO_MANY_REQUESTS || attempt >= self.layer.policy.max_attempts {
            return false;
        }
        let now = Instant::now();
        let opens = self.layer.budget.gate_until(now).unwrap_or(now);
        opens < give_up_at
    }
}

/// The request again, for attempt `attempt`: replays may wait until `give_up_at`.
fn clone_request(req: &ProxyRequest, ctx: &RequestContext, attempt: u32, give_up_at: Instant) -> ProxyRequest {
    let mut out = duplicate(req);
    if attempt > 1 {
        out.extensions_mut().insert(RequestContext { deadline: give_up_at, ..ctx.clone() });
    }
    out
}

/// Read a small discarded body to its end so the connection can go back to the pool.
async fn drain(resp: ProxyResponse) {
    let body = resp.into_body();
    let _ = tokio::time::timeout(Duration::from_secs(1), crate::body::collect_bounded(body, 64 * 1024)).await;
}

impl<S> Service<ProxyRequest> for Retry<S>
where
    S: Service<ProxyRequest, Response = ProxyResponse, Error = ProxyError> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = ProxyResponse;
    type Error = ProxyError;
    type Future = ProxyFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: ProxyRequest) -> ProxyFuture {
        Box::pin(self.clone().run(req))
    }
}
