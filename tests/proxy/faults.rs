//! Upstream faults (resets, timeouts, 502/503/504) from the mock: idempotent requests are
//! replayed within the bounds, each attempt paying its own permit; POSTs that may have reached
//! the upstream are not; a refused connection is retried for any method.

use std::time::Duration;

use http::{Method, StatusCode};
use racknap_proxy::{
    mock::{FaultKind, MockServer},
    App, Config,
};

use crate::support::{self, assert_envelope, client};

async fn setup(tweak: impl FnOnce(&mut Config)) -> (MockServer, App) {
    let up = support::upstream(100, Duration::from_secs(1)).await;
    let mut cfg = support::config(&up, 100, Duration::from_secs(1));
    cfg.cache.enabled = false;
    cfg.retry.backoff_base = Duration::from_millis(10);
    cfg.retry.backoff_max = Duration::from_millis(100);
    tweak(&mut cfg);
    let app = support::proxy(&cfg).await;
    (up, app)
}

async fn retries(app: &App, reason: &str) -> f64 {
    support::metric(app, &format!("racknap_proxy_retries_total{{reason=\"{reason}\"}}")).await
}

fn invoice() -> serde_json::Value {
    serde_json::json!({"customerId": "cust_missing", "items": [{"description": "x", "quantity": 1, "unitPrice": 1}], "dueDate": "2026-12-31"})
}

fn posts(up: &MockServer) -> usize {
    up.requests().iter().filter(|r| r.method == Method::POST).count()
}

#[tokio::test]
async fn a_get_survives_502_503_and_504_and_every_attempt_pays_a_permit() {
    let (up, app) = setup(|_| {}).await;
    let c = client(app.proxy_addr);
    for status in [StatusCode::BAD_GATEWAY, StatusCode::SERVICE_UNAVAILABLE, StatusCode::GATEWAY_TIMEOUT] {
        up.force_fault(1, FaultKind::Status(status));
        let a = c.get("/v1/customers").await;
        assert_eq!(a.status, 200, "after a {status}: {}", a.text());
    }
    assert_eq!(up.stats().requests, 6, "one fault and one replay each");
    assert_eq!(up.stats().faults, 3);
    assert_eq!(retries(&app, "5xx").await, 3.0);
    let permits = support::metric(&app, "racknap_proxy_queue_wait_seconds_count").await;
    assert_eq!(permits, 6.0, "each attempt waited for its own budget permit");
}

#[tokio::test]
async fn a_get_is_replayed_after_the_upstream_closes_the_connection_without_an_answer() {
    let (up, app) = setup(|_| {}).await;
    up.force_fault(1, FaultKind::Reset);
    let a = client(app.proxy_addr).get("/v1/customers").await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(up.stats().requests, 2);
    assert_eq!(retries(&app, "reset").await, 1.0);
}

#[tokio::test]
async fn a_get_is_replayed_after_an_upstream_timeout() {
    let (up, app) = setup(|c| c.upstream.timeout = Duration::from_millis(300)).await;
    up.force_fault(1, FaultKind::Slow(Duration::from_secs(5)));
    let a = client(app.proxy_addr).get("/v1/customers").await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(up.stats().requests, 2);
    assert_eq!(retries(&app, "timeout").await, 1.0);
}

#[tokio::test]
async fn persistent_faults_are_passed_on_after_fault_attempts() {
    let (up, app) = setup(|c| c.retry.fault_attempts = std::num::NonZeroU32::new(3).unwrap()).await;
    up.force_fault(10, FaultKind::Status(StatusCode::BAD_GATEWAY));
    let a = client(app.proxy_addr).get("/v1/customers").await;
    assert_eq!(a.status, 502, "the upstream's own answer");
    assert_eq!(a.json()["error"]["type"], "service_unavailable", "{}", a.text());
    assert_eq!(up.stats().requests, 3, "bounded: exactly fault_attempts");
}

#[tokio::test]
async fn a_503_retry_after_is_honoured() {
    let (up, app) = setup(|_| {}).await;
    up.force_fault(1, FaultKind::RetryAfter(Duration::from_secs(1)));
    let a = client(app.proxy_addr).get("/v1/customers").await;
    assert_eq!(a.status, 200);
    let at: Vec<_> = up.requests().iter().map(|r| r.at).collect();
    assert_eq!(at.len(), 2);
    assert!(at[1] - at[0] >= Duration::from_millis(950), "replayed {:?} after, before Retry-After", at[1] - at[0]);
}

#[tokio::test]
async fn a_post_is_not_replayed_after_a_reset() {
    let (up, app) = setup(|_| {}).await;
    up.force_fault(1, FaultKind::Reset);
    let a = client(app.proxy_addr).post_json("/v1/invoices", &invoice()).await;
    assert_envelope(&a, 502, "proxy_upstream_unavailable");
    assert_eq!(posts(&up), 1, "the POST may have been processed: never sent twice");
}

#[tokio::test]
async fn a_post_is_not_replayed_after_a_5xx_or_a_timeout() {
    let (up, app) = setup(|c| c.upstream.timeout = Duration::from_millis(300)).await;
    let c = client(app.proxy_addr);
    up.force_fault(1, FaultKind::Status(StatusCode::SERVICE_UNAVAILABLE));
    let a = c.post_json("/v1/invoices", &invoice()).await;
    assert_eq!(a.status, 503, "passed on as it was: {}", a.text());
    assert_eq!(posts(&up), 1);
    up.force_fault(1, FaultKind::Slow(Duration::from_secs(5)));
    let a = c.post_json("/v1/invoices", &invoice()).await;
    assert_envelope(&a, 504, "proxy_upstream_timeout");
    assert_eq!(posts(&up), 2, "one attempt each");
}

#[tokio::test]
async fn a_refused_connection_is_retried_even_for_a_post() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let up = support::upstream(100, Duration::from_secs(1)).await;
    let mut cfg = support::config(&up, 100, Duration::from_secs(1));
    cfg.upstream.url = format!("http://127.0.0.1:{port}");
    cfg.retry.backoff_base = Duration::from_millis(10);
    let app = support::proxy(&cfg).await;
    let a = client(app.proxy_addr).post_json("/v1/invoices", &invoice()).await;
    assert_envelope(&a, 502, "proxy_upstream_unavailable");
    assert_eq!(retries(&app, "connect").await, 2.0, "nothing was sent, so the POST was tried fault_attempts times");
    assert_eq!(support::metric(&app, "racknap_proxy_upstream_attempts_total{status=\"error\"}").await, 3.0);
}
