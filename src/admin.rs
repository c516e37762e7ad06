//! The admin listener: `/metrics` (Prometheus text), `/healthz` (the process is alive),
//! `/readyz` (accepting traffic: not shutting down).

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::{body, body::Body, budget::Budget, cache::CacheStore, metrics::Metrics};

/// What the admin endpoints read.
#[derive(Clone)]
pub struct Admin {
    /// Metrics to render.
    pub metrics: Metrics,
    /// For the budget gauges.
    pub budget: Arc<dyn Budget>,
    /// For the cache gauges.
    pub cache: CacheStore,
    /// False once shutdown began.
    pub ready: Arc<AtomicBool>,
}

impl Admin {
    /// Answer one admin request.
    pub async fn handle(&self, req: &Request<Incoming>) -> Response<Body> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        }
        match req.uri().path() {
            "/metrics" => {
                self.refresh().await;
                let mut r = text(StatusCode::OK, self.metrics.render());
                r.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
                r
            }
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" if self.ready.load(Ordering::Acquire) => text(StatusCode::OK, "ready\n"),
            "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
            _ => text(StatusCode::NOT_FOUND, "not found: try /metrics, /healthz or /readyz\n"),
        }
    }

    /// Gauges that are read, not counted.
    async fn refresh(&self) {
        let m = &self.metrics;
        let snap = self.budget.snapshot(Instant::now());
        m.ratelimit_limit.set(i64::from(snap.limit));
        m.ratelimit_remaining.set(i64::from(snap.remaining));
        m.ratelimit_reset_seconds.set(snap.reset_in.as_secs_f64());
        if let Some(epoch) = snap.server_reset_epoch {
            m.ratelimit_reset_epoch.set(i64::try_from(epoch).unwrap_or(i64::MAX));
        }
        if let Some(off) = snap.clock_offset_secs {
            m.clock_offset_seconds.set(off);
        }
        m.gate_closed.set(i64::from(snap.gated));
        let (entries, bytes) = self.cache.usage().await;
        m.cache_entries.set(i64::try_from(entries).unwrap_or(i64::MAX));
        m.cache_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
}

fn text(status: StatusCode, s: impl Into<bytes::Bytes>) -> Response<Body> {
    let mut r = Response::new(body::full(s));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}
