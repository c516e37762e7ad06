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

pub mod labels;
pub mod queue;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use labels::ClientLabels;
use queue::{Priority, Queue};

/// Layer for [`Pace`].
#[derive(Clone)]
pub struct PaceLayer {
    queue: Queue,
    metrics: Metrics,
    labels: Arc<ClientLabels>,
}

impl PaceLayer {
    /// Pace through `queue`; at most `client_labels` clients get their own metric label.
    pub fn new(queue: Queue, metrics: Metrics, client_labels: usize) -> Self {
        Self { queue, metrics, labels: Arc::new(ClientLabels::new(client_labels)) }
    }
}

impl<S> Layer<S> for PaceLayer {
    type Service = Pace<S>;
    fn layer(&self, inner: S) -> Pace<S> {
        Pace { inner, queue: self.queue.clone(), metrics: self.metrics.clone(), labels: self.labels.clone() }
    }
}

/// Waits for a permit, then calls the inner service.
#[derive(Clone)]
pub struct Pace<S> {
    inner: S,
    queue: Queue,
    metrics: Metrics,
    labels: Arc<ClientLabels>,
}

/// Keeps the queue-depth gauges honest whichever way the wait ends.
struct DepthGuard([prometheus::IntGauge; 3]);

impl DepthGuard {
    fn new(gauges: [prometheus::IntGauge; 3]) -> Self {
        gauges.iter().for_each(prometheus::IntGauge::inc);
        Self(gauges)
    }
}

impl Drop for DepthGuard {
    fn drop(&mut self) {
        self.0.iter().for_each(prometheus::IntGauge::dec);
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
        let labels = self.labels.clone();
        Box::pin(async move {
            let ctx = context_of(&req)?;
            let priority = req.extensions().get::<Priority>().copied().unwrap_or_default();
            let client = labels.label(&ctx.client);
            let depth = DepthGuard::new([
                metrics.queue_depth.clone(),
                metrics.queue_depth_priority.with_label_values(&[priority.as_str()]),
                metrics.queue_depth_client.with_label_values(&[&*client]),
            ]);
            let permit = queue.acquire_with(ctx.client, priority, ctx.deadline).await;
            drop(depth);
            let permit = permit?;
            let waited = permit.waited.as_secs_f64();
            metrics.queue_wait.observe(waited);
            metrics.queue_wait_priority.with_label_values(&[priority.as_str()]).observe(waited);
            metrics.queue_wait_client.with_label_values(&[&*client]).observe(waited);
            req.extensions_mut().insert(permit.ticket());
            let mut resp = inner.oneshot(req).await?;
            resp.extensions_mut().insert(QueueWait(permit.waited));
            drop(permit);
            Ok(resp)
        })
    }
}
