//! The GET cache over real sockets: what reaches the upstream is counted by the mock.

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use http::Method;
use serde_json::json;

use crate::support::{self, assert_envelope, client};

async fn setup(
    tweak: impl FnOnce(&mut racknap_proxy::Config),
) -> (racknap_proxy::mock::MockServer, racknap_proxy::App) {
    let up = support::upstream_with(1000, Duration::from_secs(60), |m| m.latency = Duration::from_millis(100)).await;
    let mut cfg = support::config(&up, 1000, Duration::from_secs(60));
    tweak(&mut cfg);
    let app = support::proxy(&cfg).await;
    (up, app)
}

#[tokio::test]
async fn repeated_gets_reach_the_upstream_once_and_a_post_invalidates_them() {
    let (up, app) = setup(|_| {}).await;
    let c = client(app.proxy_addr);
    let first = c.get("/v1/invoices?limit=5").await;
    assert_eq!(first.header("x-cache"), Some("MISS"));
    for _ in 0..3 {
        let again = c.get("/v1/invoices?limit=5").await;
        assert_eq!(again.header("x-cache"), Some("HIT"));
        assert_eq!(again.body, first.body);
        assert!(again.header("age").is_some());
    }
    assert_eq!(up.stats().requests, 1);
    let customer = first.json()["data"][0]["customerId"].as_str().unwrap().to_owned();
    let total_before = first.json()["pagination"]["total"].as_u64().unwrap();
    let created = c
        .post_json("/v1/invoices", &json!({"customerId": customer, "items": [{"description": "x", "quantity": 1, "unitPrice": 2}], "dueDate": "2027-01-15"}))
        .await;
    assert_eq!(created.status, 201);
    let after = c.get("/v1/invoices?limit=5").await;
    assert_eq!(after.header("x-cache"), Some("MISS"), "the write dropped the listing");
    assert_eq!(after.json()["pagination"]["total"].as_u64().unwrap(), total_before + 1, "the new data is served");
    assert_eq!(up.stats().requests, 3);
}

#[tokio::test]
async fn concurrent_identical_gets_make_one_upstream_call() {
    let (up, app) = setup(|_| {}).await;
    let c = client(app.proxy_addr);
    let answers = join_all((0..50).map(|_| {
        let c = c.clone();
        async move { c.get("/v1/customers?limit=3").await }
    }))
    .await;
    assert!(answers.iter().all(|a| a.status == 200 && a.body == answers[0].body));
    assert_eq!(up.stats().requests, 1, "50 identical misses, one upstream call");
}

#[tokio::test]
async fn query_order_does_not_split_the_cache() {
    let (up, app) = setup(|_| {}).await;
    let c = client(app.proxy_addr);
    c.get("/v1/invoices?offset=0&limit=2").await;
    assert_eq!(c.get("/v1/invoices?limit=2&offset=0").await.header("x-cache"), Some("HIT"));
    assert_eq!(up.stats().requests, 1);
}

#[tokio::test]
async fn client_no_cache_bypasses_and_errors_are_not_stored() {
    let (up, app) = setup(|_| {}).await;
    let c = client(app.proxy_addr);
    c.get("/v1/customers?limit=1").await;
    let fresh = c.send(Method::GET, "/v1/customers?limit=1", &[("cache-control", "no-cache")], Bytes::new()).await;
    assert_eq!(fresh.header("x-cache"), Some("MISS"));
    assert_eq!(c.get("/v1/invoices/inv_00000000").await.status, 404);
    assert_eq!(c.get("/v1/invoices/inv_00000000").await.status, 404);
    assert_eq!(up.stats().requests, 4, "no-cache went upstream; 404s were not cached");
}

#[tokio::test]
async fn entries_expire_after_the_ttl() {
    let (up, app) = setup(|c| c.cache.ttl = Duration::from_millis(300)).await;
    let c = client(app.proxy_addr);
    c.get("/v1/customers").await;
    tokio::time::sleep(Duration::from_millis(400)).await; // the TTL itself is what is tested
    assert_eq!(c.get("/v1/customers").await.header("x-cache"), Some("MISS"));
    assert_eq!(up.stats().requests, 2);
}

#[tokio::test]
async fn only_if_cached_never_spends_budget() {
    let (up, app) = setup(|_| {}).await;
    let c = client(app.proxy_addr);
    let a = c.send(Method::GET, "/v1/customers", &[("cache-control", "only-if-cached")], Bytes::new()).await;
    assert_envelope(&a, 504, "proxy_not_cached");
    assert_eq!(up.stats().requests, 0);
}

#[tokio::test]
async fn cache_metrics_move() {
    let (_up, app) = setup(|_| {}).await;
    let c = client(app.proxy_addr);
    c.get("/v1/customers").await;
    c.get("/v1/customers").await;
    assert_eq!(support::metric(&app, "racknap_proxy_cache_lookups_total{result=\"hit\"}").await, 1.0);
    assert_eq!(support::metric(&app, "racknap_proxy_cache_lookups_total{result=\"miss\"}").await, 1.0);
    assert_eq!(support::metric(&app, "racknap_proxy_cache_entries").await, 1.0);
    let m = client(app.admin_addr).get("/metrics").await.text();
    assert!(m.contains("racknap_proxy_requests_total{cache=\"hit\",method=\"GET\",status=\"200\"} 1"), "{m}");
    assert!(m.contains("racknap_proxy_upstream_attempts_total{status=\"200\"} 1"), "{m}");
    assert!(m.contains("racknap_proxy_ratelimit_limit 1000"), "{m}");
    assert!(!m.contains(support::KEY));
    assert_eq!(client(app.admin_addr).get("/healthz").await.status, 200);
}
