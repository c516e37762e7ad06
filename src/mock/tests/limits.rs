//! Rate limiting over a real socket, in real time: counts and headers, not durations.

use std::time::Duration;

use http::{Method, StatusCode};

use super::support::{config, mid_window_skew, start, Answer, TestClient};
use crate::{
    clock::EpochClock,
    mock::{ForcedHeaders, MockConfig, WindowKind},
};

fn limited_config(kind: WindowKind, limit: u32, window: Duration) -> MockConfig {
    let mut cfg = config();
    cfg.limit = limit;
    cfg.window = window;
    cfg.window_kind = kind;
    if kind == WindowKind::Fixed {
        cfg.clock_skew_ms = mid_window_skew(window);
    }
    cfg
}

fn assert_limited(a: &Answer, window: Duration) {
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.error_type(), "rate_limit_exceeded");
    assert_eq!(a.number("x-ratelimit-remaining"), 0);
    let retry_after = a.number("retry-after");
    assert!(retry_after >= 1 && retry_after <= window.as_secs(), "Retry-After {retry_after}");
    let until_reset = a.number("x-ratelimit-reset") - a.date();
    // Date is stamped a moment after the decision, so allow a second either way.
    let expected = retry_after.saturating_sub(1)..=retry_after + 1;
    assert!(expected.contains(&until_reset), "Reset − Date {until_reset} vs Retry-After {retry_after}");
}

async fn fourth_request_is_limited(kind: WindowKind) {
    let window = Duration::from_secs(60);
    let server = start(limited_config(kind, 3, window)).await;
    let client = TestClient::new(&server);
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let a = client.get("/v1/customers").await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.number("x-ratelimit-limit"), 3);
        remaining.push(a.number("x-ratelimit-remaining"));
    }
    assert_eq!(remaining, [2, 1, 0]);
    assert_limited(&client.get("/v1/customers").await, window);
    assert_limited(&client.get("/v1/nope").await, window);
    let stats = server.stats();
    assert_eq!((stats.ok, stats.rate_limited), (3, 2));
}

#[tokio::test]
async fn fixed_window_limits_the_fourth_request() {
    fourth_request_is_limited(WindowKind::Fixed).await;
}

#[tokio::test]
async fn sliding_window_limits_the_fourth_request() {
    fourth_request_is_limited(WindowKind::Sliding).await;
}

#[tokio::test]
async fn budget_comes_back_after_a_tiny_window() {
    for kind in [WindowKind::Fixed, WindowKind::Sliding] {
        let window = Duration::from_secs(1);
        let server = start(limited_config(kind, 2, window)).await;
        let client = TestClient::new(&server);
        let mut statuses = Vec::new();
        for _ in 0..3 {
            statuses.push(client.get("/v1/customers").await.status.as_u16());
        }
        tokio::time::sleep(window + Duration::from_millis(50)).await;
        statuses.push(client.get("/v1/customers").await.status.as_u16());
        assert_eq!(statuses, [200, 200, 429, 200], "{kind:?}");
    }
}

#[tokio::test]
async fn every_answer_spends_budget_except_429s() {
    let server = start(limited_config(WindowKind::Fixed, 3, Duration::from_secs(3600))).await;
    let client = TestClient::new(&server);
    client.send(Method::GET, "/v1/customers", Some("sk_wrong"), None).await;
    client.get("/v1/invoices/inv_invalid").await;
    client.get("/v1/invoices?limit=0").await;
    let limited = client.get("/v1/customers").await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS, "401, 404 and 400 each spent one");
}

#[tokio::test]
async fn external_consumer_spends_the_same_budget() {
    let mut cfg = limited_config(WindowKind::Sliding, 1000, Duration::from_secs(60));
    cfg.external_rate = 100.0;
    let server = start(cfg).await;
    let client = TestClient::new(&server);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let remaining = client.get("/v1/customers").await.number("x-ratelimit-remaining");
    assert!(remaining <= 1000 - 1 - 15, "the other consumer spent about 20: {remaining}");
}

#[tokio::test]
async fn clock_skew_moves_the_date_header() {
    let mut cfg = config();
    cfg.clock_skew_ms = 3_600_000;
    let server = start(cfg).await;
    let a = TestClient::new(&server).get("/v1/customers").await;
    let ours = EpochClock::system().since_epoch().as_secs();
    let ahead = a.date() as i64 - ours as i64;
    assert!((3595..=3605).contains(&ahead), "Date is an hour ahead: {ahead}");
    assert!(a.number("x-ratelimit-reset") > a.date());
}

async fn forced(headers: ForcedHeaders) -> (Answer, Answer, Answer) {
    let server = start(config()).await;
    let client = TestClient::new(&server);
    let before = client.get("/v1/customers").await;
    server.force_429(1, Duration::from_secs(30), headers);
    let forced = client.get("/v1/customers").await;
    let after = client.get("/v1/customers").await;
    assert_eq!(forced.status, StatusCode::TOO_MANY_REQUESTS, "{headers:?}");
    assert_eq!(forced.error_type(), "rate_limit_exceeded");
    assert_eq!(after.status, StatusCode::OK, "only one was forced");
    assert_eq!(after.number("x-ratelimit-remaining"), 998, "the forced 429 spent nothing");
    assert_eq!((server.stats().forced, server.stats().rate_limited), (1, 1));
    (before, forced, after)
}

#[tokio::test]
async fn forced_429_with_rate_limit_headers() {
    let (_, f, _) = forced(ForcedHeaders::RateLimit).await;
    assert_eq!(f.number("x-ratelimit-remaining"), 999, "Remaining is given as it is");
    assert!((30..=31).contains(&(f.number("x-ratelimit-reset") - f.date())));
    assert!(f.header("retry-after").is_none());
}

#[tokio::test]
async fn forced_429_with_retry_after_seconds() {
    let (_, f, _) = forced(ForcedHeaders::RetryAfterSeconds).await;
    assert_eq!(f.header("retry-after"), Some("30"));
    assert!(f.header("x-ratelimit-reset").is_none() && f.header("x-ratelimit-remaining").is_none());
}

#[tokio::test]
async fn forced_429_with_retry_after_date() {
    let (_, f, _) = forced(ForcedHeaders::RetryAfterDate).await;
    let when = httpdate::parse_http_date(f.header("retry-after").expect("Retry-After")).expect("HTTP-date");
    let when = when.duration_since(std::time::UNIX_EPOCH).expect("after epoch").as_secs();
    assert!((30..=31).contains(&(when - f.date())), "Retry-After date − Date = {}", when - f.date());
    assert!(f.header("x-ratelimit-reset").is_none());
}

#[tokio::test]
async fn forced_429_with_no_headers() {
    let (_, f, _) = forced(ForcedHeaders::None).await;
    for name in ["retry-after", "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"] {
        assert!(f.header(name).is_none(), "{name}");
    }
    assert!(f.header("date").is_some());
}
