//! 429s are waited out, not passed on.

use std::time::Duration;

use racknap_proxy::mock::ForcedHeaders;

use crate::support::{self, client};

async fn forced(headers: ForcedHeaders, reset_in: Duration) -> (Vec<tokio::time::Instant>, u16) {
    let (up, app) = support::uncached(100, Duration::from_secs(60), |_| {}).await;
    up.force_429(1, reset_in, headers);
    let a = client(app.proxy_addr).get("/v1/customers").await;
    (up.requests().iter().map(|r| r.at).collect(), a.status.as_u16())
}

#[tokio::test]
async fn a_429_with_reset_two_seconds_ahead_is_retried_after_the_reset_and_not_before() {
    let (at, status) = forced(ForcedHeaders::RateLimit, Duration::from_secs(2)).await;
    assert_eq!(status, 200, "the client never sees the 429");
    assert_eq!(at.len(), 2, "one 429, one replay");
    let gap = at[1] - at[0];
    assert!(gap >= Duration::from_millis(1900), "replayed {gap:?} after the 429, before the reset");
}

#[tokio::test]
async fn retry_after_seconds_is_honoured() {
    let (at, status) = forced(ForcedHeaders::RetryAfterSeconds, Duration::from_secs(1)).await;
    assert_eq!(status, 200);
    assert_eq!(at.len(), 2);
    assert!(at[1] - at[0] >= Duration::from_millis(900));
}

#[tokio::test]
async fn retry_after_http_date_is_honoured() {
    let (at, status) = forced(ForcedHeaders::RetryAfterDate, Duration::from_secs(2)).await;
    assert_eq!(status, 200);
    assert_eq!(at.len(), 2);
    assert!(at[1] - at[0] >= Duration::from_millis(900), "{:?}", at[1] - at[0]);
}

#[tokio::test]
async fn a_bare_429_waits_one_window_then_replays() {
    let (up, app) = support::uncached(100, Duration::from_secs(1), |_| {}).await;
    up.force_429(1, Duration::from_secs(1), ForcedHeaders::None);
    let a = client(app.proxy_addr).get("/v1/customers").await;
    assert_eq!(a.status, 200);
    let at: Vec<_> = up.requests().iter().map(|r| r.at).collect();
    assert_eq!(at.len(), 2);
    assert!(at[1] - at[0] >= Duration::from_millis(900));
}

#[tokio::test]
async fn persistent_429s_are_passed_on_as_they_were_after_the_attempts_bound() {
    let (up, app) = support::uncached(100, Duration::from_secs(60), |cfg| {
        cfg.retry.max_attempts = std::num::NonZeroU32::new(2).unwrap()
    })
    .await;
    up.force_429(10, Duration::from_millis(300), ForcedHeaders::RetryAfterSeconds);
    let a = client(app.proxy_addr).get("/v1/customers").await;
    assert_eq!(a.status, 429);
    assert_eq!(a.json()["error"]["type"], "rate_limit_exceeded", "the upstream's own envelope");
    assert_eq!(up.stats().requests, 2, "bounded: exactly max_attempts");
    assert!(support::metric(&app, "racknap_proxy_retries_total").await >= 1.0);
}

#[tokio::test]
async fn a_429_whose_reset_is_beyond_the_total_wait_is_passed_on_at_once() {
    let (up, app) =
        support::uncached(100, Duration::from_secs(60), |cfg| cfg.retry.max_wait = Duration::from_secs(1)).await;
    up.force_429(1, Duration::from_secs(30), ForcedHeaders::RateLimit);
    let a = client(app.proxy_addr).get("/v1/customers").await;
    assert_eq!(a.status, 429);
    assert_eq!(up.stats().requests, 1);
}

#[tokio::test]
async fn a_post_is_replayed_byte_for_byte() {
    let (up, app) = support::uncached(100, Duration::from_secs(60), |_| {}).await;
    let c = client(app.proxy_addr);
    let customer = c.get("/v1/customers?limit=1").await.json()["data"][0]["id"].as_str().unwrap().to_owned();
    up.force_429(1, Duration::from_secs(1), ForcedHeaders::RetryAfterSeconds);
    let body = serde_json::json!({"customerId": customer, "items": [{"description": "Ünïcode ✓", "quantity": 1, "unitPrice": 1}], "dueDate": "2026-12-31"});
    let a = c.post_json("/v1/invoices", &body).await;
    assert_eq!(a.status, 201, "{}", a.text());
    let posts: Vec<_> = up.requests().into_iter().filter(|r| r.method == http::Method::POST).collect();
    assert_eq!(posts.len(), 2);
    assert_eq!(posts[0].body, posts[1].body);
}
