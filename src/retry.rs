//! Retry: a 429 is not the client's problem, and neither is a passing upstream fault.
//!
//! - A 429: the Budget has already closed the gate until the reset; the buffered request is
//!   replayed (its permit waits in `pace`, below) up to `max_attempts`.
//! - A fault (connection reset, timeout, 502/503/504): the request is replayed after a jittered
//!   exponential backoff (at least a 503's `Retry-After`) up to `fault_attempts`, but only when
//!   replaying cannot do a thing twice: idempotent methods (GET, HEAD, PUT, DELETE, OPTIONS)
//!   always, any method when the connection was refused (hyper-util's `is_connect`: the
//!   connector failed, so no byte of the request was sent). A POST or PATCH that may have
//!   reached the upstream (a reset, a timeout or any answer) is never replayed.
//!
//! Every replay pays its own permit (pace is below), and all waiting together stays within
//! `max_wait`; when a bound is hit, the last answer (or error) is passed on as it was.

use std::{
    task::{Context, Poll},
    time::Duration,
};

use http::{header, StatusCode};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use crate::{
    budget::{headers::parse_retry_after, Budget},
    clock::EpochClock,
    context::{context_of, duplicate, Attempts, ProxyFuture, ProxyRequest, ProxyResponse, QueueWait, RequestContext},
    error::ProxyError,
    metrics::Metrics,
};

pub mod backoff;

#[cfg(test)]
mod tests;

/// Bounds on replays.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts in all when the upstream answers 429, the first included.
    pub max_attempts: u32,
    /// Total time a request may spend waiting out 429s and fault backoffs.
    pub max_wait: Duration,
    /// Attempts in all when the upstream faults, the first included.
    pub fault_attempts: u32,
    /// First backoff after a fault (doubling, jittered).
    pub backoff_base: Duration,
    /// Longest single backoff.
    pub backoff_max: Duration,
}

/// Layer for [`Retry`].
#[derive(Clone)]
pub struct RetryLayer {
    policy: RetryPolicy,
    budget: std::sync::Arc<dyn Budget>,
    metrics: Metrics,
}

impl RetryLayer {
    /// Retry as `policy` allows, asking `budget` how long a 429's gate stays closed.
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

/// Replays 429s and upstream faults.
#[derive(Clone)]
pub struct Retry<S> {
    inner: S,
    layer: RetryLayer,
}

/// What to do after one attempt.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Pass the result on.
    Done,
    /// Replay at once: pace holds the permit until the 429's reset.
    Replay429,
    /// Replay after this backoff; the reason labels the retry metric.
    Backoff(Duration, &'static str),
}

/// Where a request stands in its retries.
struct Progress {
    attempt: u32,
    faults: u32,
    idempotent: bool,
    give_up_at: Instant,
}

impl<S> Retry<S>
where
    S: Service<ProxyRequest, Response = ProxyResponse, Error = ProxyError> + Clone + Send + 'static,
    S::Future: Send,
{
    async fn run(self, req: ProxyRequest) -> Result<ProxyResponse, ProxyError> {
        let ctx = context_of(&req)?;
        let give_up_at = Instant::now() + self.layer.policy.max_wait;
        let mut p = Progress { attempt: 1, faults: 0, idempotent: req.method().is_idempotent(), give_up_at };
        let mut waited = Duration::ZERO;
        loop {
            let result = self.inner.clone().oneshot(clone_request(&req, &ctx, p.attempt, give_up_at)).await;
            if let Ok(resp) = &result {
                waited += resp.extensions().get::<QueueWait>().copied().unwrap_or_default().0;
            }
            let next = self.next(&result, &p);
            match (next, result) {
                (Next::Done, Ok(mut resp)) => {
                    resp.extensions_mut().insert(QueueWait(waited));
                    resp.extensions_mut().insert(Attempts(p.attempt));
                    return Ok(resp);
                }
                (Next::Done, Err(e)) => return Err(e),
                (Next::Replay429, result) => {
                    tracing::debug!(attempt = p.attempt, "Upstream answered 429; replaying after the reset");
                    self.layer.metrics.retries.with_label_values(&["429"]).inc();
                    discard(result).await;
                }
                (Next::Backoff(wait, reason), result) => {
                    tracing::debug!(attempt = p.attempt, reason, ?wait, "Upstream fault; replaying after a backoff");
                    self.layer.metrics.retries.with_label_values(&[reason]).inc();
                    discard(result).await;
                    p.faults += 1;
                    tokio::time::sleep(wait).await;
                }
            }
            p.attempt += 1;
        }
    }

    fn next(&self, result: &Result<ProxyResponse, ProxyError>, p: &Progress) -> Next {
        let policy = &self.layer.policy;
        let (reason, retry_after) = match result {
            Ok(resp) if resp.status() == StatusCode::TOO_MANY_REQUESTS => {
                return if self.should_retry_429(p) { Next::Replay429 } else { Next::Done };
            }
            Ok(resp) => match fault_status(resp) {
                Some(retry_after) if p.idempotent => ("5xx", retry_after),
                _ => return Next::Done,
            },
            Err(ProxyError::UpstreamConnect(_)) => ("connect", None),
            Err(ProxyError::UpstreamUnavailable(_)) if p.idempotent => ("reset", None),
            Err(ProxyError::UpstreamTimeout { .. }) if p.idempotent => ("timeout", None),
            Err(_) => return Next::Done,
        };
        if p.faults + 1 >= policy.fault_attempts {
            return Next::Done;
        }
        let backoff = backoff::jittered(p.faults + 1, policy.backoff_base, policy.backoff_max);
        let wait = retry_after.map_or(backoff, |ra| ra.max(backoff));
        if Instant::now() + wait >= p.give_up_at {
            return Next::Done;
        }
        Next::Backoff(wait, reason)
    }

    /// A 429 is replayed while attempts remain and the gate opens before we must give up.
    fn should_retry_429(&self, p: &Progress) -> bool {
        if p.attempt - p.faults >= self.layer.policy.max_attempts {
            return false;
        }
        let now = Instant::now();
        let opens = self.layer.budget.gate_until(now).unwrap_or(now);
        opens < p.give_up_at
    }
}

/// A 502, 503 or 504 from the upstream: `Some(retry_after)` (a 503's `Retry-After`, if any).
fn fault_status(resp: &ProxyResponse) -> Option<Option<Duration>> {
    let status = resp.status();
    if !matches!(status, StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT) {
        return None;
    }
    if status != StatusCode::SERVICE_UNAVAILABLE {
        return Some(None);
    }
    let h = resp.headers();
    let server_now = h
        .get(header::DATE)
        .and_then(|v| httpdate::parse_http_date(v.to_str().ok()?).ok())
        .unwrap_or_else(|| EpochClock::system().now());
    Some(h.get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| parse_retry_after(v, server_now)))
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
async fn discard(result: Result<ProxyResponse, ProxyError>) {
    let Ok(resp) = result else { return };
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
