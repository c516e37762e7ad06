//! Pacing and the queue, over real sockets in real time with tiny windows: counts, not durations.

use std::time::Duration;

use futures_util::future::join_all;

use crate::support::{self, assert_envelope, client};

#[tokio::test]
async fn three_times_the_limit_gives_zero_upstream_429s_and_every_request_succeeds() {
    let (limit, window) = (10, Duration::from_secs(1));
    let (up, app) = support::uncached(limit, window, |_| {}).await;
    let c = client(app.proxy_addr);
    let answers = join_all((0..3 * limit).map(|i| {
        let c = c.clone();
        async move { c.get(&format!("/v1/invoices?offset={i}&limit=1")).await }
    }))
    .await;
    for a in &answers {
        assert_eq!(a.status, 200, "{}", a.text());
    }
    let stats = up.stats();
    assert_eq!(stats.rate_limited, 0, "the proxy paced, so the account never saw a 429");
    assert_eq!(stats.requests, u64::from(3 * limit));
}

#[tokio::test]
async fn a_full_queue_answers_503_envelope_with_retry_after() {
    let (up, app) = support::uncached(1, Duration::from_secs(30), |cfg| cfg.queue.capacity = 1).await;
    let c = client(app.proxy_addr);
    assert_eq!(c.get("/v1/customers").await.status, 200); // spends the one permit of the window
    let waiting = tokio::spawn({
        let c = c.clone();
        async move { c.get("/v1/invoices").await }
    });
    // The waiter is queued once the depth gauge shows it.
    while support::metric(&app, "racknap_proxy_queue_depth").await < 1.0 {
        tokio::task::yield_now().await;
    }
    let refused = c.get("/v1/invoices?offset=1").await;
    assert_envelope(&refused, 503, "proxy_queue_full");
    let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    assert_eq!(up.stats().requests, 1, "neither queued nor refused requests were sent");
    waiting.abort();
}

#[tokio::test]
async fn an_expired_wait_answers_503_envelope() {
    let (up, app) =
        support::uncached(1, Duration::from_secs(30), |cfg| cfg.queue.max_wait = Duration::from_millis(200)).await;
    let c = client(app.proxy_addr);
    assert_eq!(c.get("/v1/customers").await.status, 200);
    let late = c.get("/v1/invoices").await;
    assert_envelope(&late, 503, "proxy_queue_timeout");
    assert!(late.header("retry-after").is_some());
    assert_eq!(up.stats().requests, 1);
}

#[tokio::test]
async fn a_client_that_disconnects_while_queued_spends_no_budget() {
    let (up, app) = support::uncached(1, Duration::from_secs(2), |_| {}).await;
    let c = client(app.proxy_addr);
    assert_eq!(c.get("/v1/customers").await.status, 200);
    let queued = tokio::spawn({
        let c = c.clone();
        async move { c.get("/v1/invoices?offset=7").await }
    });
    while support::metric(&app, "racknap_proxy_queue_depth").await < 1.0 {
        tokio::task::yield_now().await;
    }
    queued.abort(); // the client goes away: its connection closes
    while support::metric(&app, "racknap_proxy_queue_depth").await > 0.0 {
        tokio::task::yield_now().await;
    }
    // The next request is served in the next window, and it is the only other one upstream.
    assert_eq!(c.get("/v1/invoices?offset=8").await.status, 200);
    let paths: Vec<_> = up.requests().into_iter().map(|r| r.path_and_query).collect();
    assert_eq!(paths.len(), 2, "{paths:?}");
    assert!(!paths.iter().any(|p| p.contains("offset=7")), "{paths:?}");
}
