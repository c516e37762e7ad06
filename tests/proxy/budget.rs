//! Priority classes and per-request deadlines over real sockets, in real time: counts and order.

use std::time::Duration;

use bytes::Bytes;
use http::Method;

use crate::support::{self, assert_envelope, client};

#[tokio::test]
async fn bad_max_wait_and_priority_headers_are_400_naming_the_header() {
    let up = support::upstream(10, Duration::from_secs(1)).await;
    let app = support::proxy(&support::config(&up, 10, Duration::from_secs(1))).await;
    let c = client(app.proxy_addr);
    for (name, value) in [("x-max-wait", "soon"), ("x-max-wait", "-5s"), ("x-priority", "urgent")] {
        let a = c.send(Method::GET, "/v1/customers", &[(name, value)], Bytes::new()).await;
        assert_envelope(&a, 400, "proxy_bad_request");
        assert!(a.json()["error"]["message"].as_str().unwrap().contains(name), "{}", a.text());
    }
    assert_eq!(up.stats().requests, 0, "refused requests spend nothing");
}

#[tokio::test]
async fn a_max_wait_the_queue_cannot_meet_is_answered_at_once_with_retry_after() {
    let (up, app) = support::uncached(1, Duration::from_secs(30), |_| {}).await;
    let c = client(app.proxy_addr);
    assert_eq!(c.get("/v1/customers").await.status, 200); // spends the window
    let asked = tokio::time::Instant::now();
    let a = c.send(Method::GET, "/v1/invoices", &[("x-max-wait", "20s")], Bytes::new()).await;
    assert!(asked.elapsed() < Duration::from_secs(10), "refused at once, not after the wait");
    assert_envelope(&a, 503, "proxy_queue_timeout");
    let retry_after: u64 = a.header("retry-after").unwrap().parse().unwrap();
    assert!(retry_after >= 20, "says when a retry has a chance: {retry_after}");
    assert_eq!(up.stats().requests, 1);
    assert_eq!(support::metric(&app, "racknap_proxy_errors_total{type=\"proxy_queue_timeout\"}").await, 1.0);
}

#[tokio::test]
async fn a_high_priority_request_overtakes_a_low_priority_backlog() {
    let (limit, window) = (10, Duration::from_secs(1));
    let (up, app) = support::uncached(limit, window, |_| {}).await;
    let c = client(app.proxy_addr);
    let mut low = Vec::new();
    for i in 0..12 {
        let c = c.clone();
        low.push(tokio::spawn(async move {
            c.send(Method::GET, &format!("/v1/invoices?offset={i}"), &[("x-client-id", "bulk")], Bytes::new()).await
        }));
    }
    while support::metric(&app, "racknap_proxy_queue_depth ").await < 8.0 {
        tokio::task::yield_now().await;
    }
    let high =
        c.send(Method::GET, "/v1/customers", &[("x-client-id", "billing"), ("x-priority", "high")], Bytes::new()).await;
    assert_eq!(high.status, 200, "{}", high.text());
    let served_before_high =
        up.requests().iter().take_while(|r| !r.path_and_query.starts_with("/v1/customers")).count();
    for t in low {
        assert_eq!(t.await.unwrap().status, 200);
    }
    let queued_when_high_arrived = 12 - 8;
    assert!(
        served_before_high <= queued_when_high_arrived + 2,
        "high went ahead of the backlog: {served_before_high} sent before it"
    );
    assert!(support::metric(&app, "racknap_proxy_queue_priority_wait_seconds_count{priority=\"high\"}").await >= 1.0);
}
