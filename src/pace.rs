//! Pace: one Budget permit per upstream attempt, waited for in the fair, bounded queue.
//!
//! The permit is taken inside the response future (not in `poll_ready`), so a request that is
//! dropped while it waits leaves the queue and spends nothing. It is held until the upstream's
//! response head has been observed.

use std::task::{Context, Poll};

use tower::{Layer, Service, ServiceExt};

use crate::{
    context::{context_of, ProxyFuture, ProxyRequest, ProxyResponse, QueueWait},
    error::ProxyError,
    metrics::Metrics,
};

pub mod queue;

#[cfg(test)]
mod tests;

use queue::Queue;

/// Layer for [`Pace`].
#[derive(Clone)]
pub struct PaceLayer {
    queue: Queue,
    metrics: Metrics,
}

impl PaceLayer {
    /// Pace through `queue`.
    pub fn new(queue: Queue, metrics: Metrics) -> Self {
        Self { queue, metrics }
    }
}

impl<S> Layer<S> for PaceLayer {
    type Service = Pace<S>;
    fn layer(&self, inner: S) -> Pace<S> {
        Pace { inner, queue: self.queue.clone(), metrics: self.metrics.clone() }
    }
}

/// Waits for a permit, then calls the inner service.
#[derive(Clone)]
pub struct Pace<S> {
    inner: S,
    queue: Queue,
    metrics: Metrics,
}

/// Keeps the queue-depth gauge honest whichever way the wait ends.
struct DepthGuard(prometheus::IntGauge);

impl Drop for DepthGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl<S> Service<ProxyRequest> for Pace<S>
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

    fn call(&mut self, mut req: ProxyRequest) -> ProxyFuture {
        let (inner, queue, metrics) = (self.inner.clone(), self.queue.clone(), self.metrics.clone());
        Box::pin(async move {
            let ctx = context_of(&req)?;
            metrics.queue_depth.inc();
            let depth = DepthGuard(metrics.queue_depth.clone());
            let permit = queue.acquire(ctx.client, ctx.deadline).await;
            drop(depth);
            let permit = permit?;
            metrics.queue_wait.observe(permit.waited.as_secs_f64());
            req.extensions_mut().insert(permit.ticket());
            let mut resp = inner.oneshot(req).await?;
            resp.extensions_mut().insert(QueueWait(permit.waited));
            drop(permit);
            Ok(resp)
        })
    }
}
