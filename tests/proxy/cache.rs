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
async fn a_hundred_concurrent_identical_gets_make_one_upstream_call() {
    let (up, app) = setup(|_| {}).await;
    let c = client(app.proxy_addr);
    let answers = join_all((0..100).map(|_| {
        let c = c.clone();
        async move { c.get("/v1/customers?limit=3").await }
    }))
    .await;
    assert!(answers.iter().all(|a| a.status == 200 && a.body == answers[0].body));
    assert_eq!(up.stats().requests, 1, "100 identical misses, one upstream call");
    let saved = support::metric(&app, "racknap_proxy_cache_upstream_requests_saved_total").await;
    assert_eq!(saved, 99.0, "every follower saved a request");
}

#[tokio::test]
async fn query_order_does_not_split_the_cache() {
    let (up, app) = setup(|_| {}).await;
    let c = client(app.proxy_addr);
    c.get("/v1/invoices?offset=0&limit=2").await;
    assert_eq!(c.get("/v1/invoices?limit=2&offset=0").await.header("x-cache"), Some("HIT"));
    c.get("/v1/customers?a=1&b=2").await;
    assert_eq!(c.get("/v1/customers?b=2&a=1").await.header("x-cache"), Some("HIT"));
    assert_eq!(up.stats().requests, 2);
}

#[tokio::test]
async fn client_no_cache_bypasses_and_errors_are_not_stored() {
    let (up, app) = setup(|_| {}).await;
    let c = client(app.proxy_addr);
    c.get("/v1/customers?limit=1").await;
    let fresh = c.send(Method::GET, "/v1/customers?limit=1", &[("cache-control", "no-cache")], Bytes::new()).await;
    assert_eq!(fresh.header("x-cache"), Some("REVALIDATED"), "went upstream (conditionally: the mock sends ETags)");
    let max_age_0 = [("cache-control", "max-age=0")];
    assert_eq!(
        c.send(Method::GET, "/v1/customers?limit=1", &max_age_0, Bytes::new()).await.header("x-cache"),
        Some("REVALIDATED")
    );
    assert_eq!(c.get("/v1/invoices/inv_00000000").await.status, 404);
    assert_eq!(c.get("/v1/invoices/inv_00000000").await.status, 404);
    assert_eq!(up.stats().requests, 5, "no-cache and max-age=0 went upstream; 404s were not cached");
}

#[tokio::test]
async fn entries_expire_after_the_ttl() {
    let (up, app) = setup(|c| c.cache.ttl = Duration::from_millis(300)).await;
    let c = client(app.proxy_addr);
    c.get("/v1/customers").await;
    tokio::time::sleep(Duration::from_millis(400)).await; // the TTL itself is what is tested
    assert_eq!(c.get("/v1/customers").await.header("x-cache"), Some("REVALIDATED"), "expired: asked upstream");
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
    assert!(m.contains("racknap_proxy_cache_upstream_requests_saved_total 1"), "{m}");
    assert!(m.contains("racknap_proxy_cache_bytes "), "{m}");
    assert!(!m.contains(support::KEY));
    assert_eq!(client(app.admin_addr).get("/healthz").await.status, 200);
}

async fn setup_with(
    mock: impl FnOnce(&mut racknap_proxy::mock::MockConfig),
    tweak: impl FnOnce(&mut racknap_proxy::Config),
) -> (racknap_proxy::mock::MockServer, racknap_proxy::App) {
    let up = support::upstream_with(1000, Duration::from_secs(60), mock).await;
    let mut cfg = support::config(&up, 1000, Duration::from_secs(60));
    tweak(&mut cfg);
    let app = support::proxy(&cfg).await;
    (up, app)
}

fn cache_header(m: &mut racknap_proxy::mock::MockConfig, name: &'static str, value: &'static str) {
    m.cache_headers.push((http::HeaderName::from_static(name), http::HeaderValue::from_static(value)));
}

#[tokio::test]
async fn dot_segments_share_the_normalised_entry_and_poison_nothing() {
    let (up, app) = setup(|_| {}).await;
    let c = client(app.proxy_addr);
    let customers = c.get("/v1/customers?limit=1").await;
    let sneaky = c.get("/v1/invoices/../customers?limit=1").await;
    assert_eq!(sneaky.header("x-cache"), Some("HIT"), "normalised to /v1/customers");
    assert_eq!(sneaky.body, customers.body);
    let invoices = c.get("/v1/invoices?limit=1").await;
    assert_eq!(invoices.header("x-cache"), Some("MISS"), "/v1/invoices was not poisoned");
    assert!(invoices.json()["data"][0]["id"].as_str().unwrap().starts_with("inv_"));
    assert_envelope(&c.get("/v1/invoices/../../admin").await, 403, "proxy_forbidden");
    assert_eq!(up.stats().requests, 2);
}

#[tokio::test]
async fn percent_encoding_variants_share_entries() {
    let (up, app) = setup(|_| {}).await;
    let c = client(app.proxy_addr);
    assert_eq!(c.get("/v1/customers?limit=1&x=~").await.header("x-cache"), Some("MISS"));
    for variant in ["/v1/customers?x=%7E&limit=1", "/v1/customers?x=%7e&limit=1", "/v1/cust%6Fmers?limit=1&x=~"] {
        assert_eq!(c.get(variant).await.header("x-cache"), Some("HIT"), "{variant}");
    }
    assert_eq!(c.get("/v1/cust%6fmers?limit=%31&x=%7e").await.header("x-cache"), Some("HIT"));
    assert_eq!(up.stats().requests, 1);
}

#[tokio::test]
async fn accept_encoding_variants_never_share() {
    let (up, app) = setup(|_| {}).await;
    let c = client(app.proxy_addr);
    let gz = [("accept-encoding", "gzip")];
    assert_eq!(c.send(Method::GET, "/v1/customers", &gz, Bytes::new()).await.header("x-cache"), Some("MISS"));
    assert_eq!(c.get("/v1/customers").await.header("x-cache"), Some("MISS"));
    assert_eq!(c.send(Method::GET, "/v1/customers", &gz, Bytes::new()).await.header("x-cache"), Some("HIT"));
    assert_eq!(c.get("/v1/customers").await.header("x-cache"), Some("HIT"));
    assert_eq!(up.stats().requests, 2);
}

#[tokio::test]
async fn no_store_answers_are_never_stored() {
    let (up, app) = setup_with(|m| cache_header(m, "cache-control", "private, no-store"), |_| {}).await;
    let c = client(app.proxy_addr);
    for _ in 0..3 {
        assert_eq!(c.get("/v1/customers").await.header("x-cache"), Some("MISS"));
    }
    assert_eq!(up.stats().requests, 3);
}

#[tokio::test]
async fn no_cache_answers_are_revalidated_with_if_none_match() {
    let (up, app) = setup_with(|m| cache_header(m, "cache-control", "no-cache"), |_| {}).await;
    let c = client(app.proxy_addr);
    let first = c.get("/v1/customers?limit=2").await;
    let second = c.get("/v1/customers?limit=2").await;
    assert_eq!(second.header("x-cache"), Some("REVALIDATED"));
    assert_eq!((second.status.as_u16(), &second.body), (200, &first.body), "the stored body, as a full 200");
    let stats = up.stats();
    assert_eq!((stats.requests, stats.not_modified), (2, 1), "a 304 saves the body, not the permit");
    let conditional = up.requests().into_iter().nth(1).unwrap();
    assert_eq!(conditional.headers.get("if-none-match"), first.headers.get("etag"));
}

#[tokio::test]
async fn vary_names_from_the_upstream_split_entries() {
    let (up, app) = setup_with(|m| cache_header(m, "vary", "X-Tenant"), |_| {}).await;
    let c = client(app.proxy_addr);
    let get = |t: &'static str| {
        let c = c.clone();
        async move { c.send(Method::GET, "/v1/customers", &[("x-tenant", t)], Bytes::new()).await }
    };
    assert_eq!(get("north").await.header("x-cache"), Some("MISS"));
    assert_eq!(get("south").await.header("x-cache"), Some("MISS"));
    assert_eq!(get("north").await.header("x-cache"), Some("HIT"));
    assert_eq!(get("south").await.header("x-cache"), Some("HIT"));
    assert_eq!(up.stats().requests, 2);
}

#[tokio::test]
async fn head_is_never_answered_from_a_get_entry() {
    let (up, app) = setup(|_| {}).await;
    let c = client(app.proxy_addr);
    let head = || c.send(Method::HEAD, "/v1/customers", &[], Bytes::new());
    assert!(head().await.body.is_empty());
    let get = c.get("/v1/customers").await;
    assert_eq!((get.header("x-cache"), get.json()["success"].as_bool()), (Some("MISS"), Some(true)));
    assert_eq!(c.get("/v1/customers").await.header("x-cache"), Some("HIT"));
    let again = head().await;
    assert_eq!((again.header("x-cache"), again.body.is_empty()), (Some("MISS"), true));
    assert_eq!(up.stats().requests, 3);
}

#[tokio::test]
async fn an_expired_entry_is_served_stale_while_the_account_is_limited() {
    let (up, app) = setup_with(
        |m| cache_header(m, "cache-control", "max-age=0"), // expired at once, so no test waits for a TTL
        |c| {
            c.cache.stale_max = Duration::from_secs(60);
            c.retry.max_attempts = std::num::NonZeroU32::new(1).unwrap();
        },
    )
    .await;
    let c = client(app.proxy_addr);
    let first = c.get("/v1/customers").await;
    up.force_429(1, Duration::from_secs(30), racknap_proxy::mock::ForcedHeaders::RateLimit);
    let failed = c.get("/v1/customers").await;
    assert_eq!(failed.header("x-cache"), Some("STALE"), "the 429 was not passed on: {}", failed.text());
    assert_eq!(failed.header("warning"), Some("110 - \"Response is Stale\""));
    assert_eq!(failed.body, first.body);
    let gated = c.get("/v1/customers").await;
    assert_eq!(gated.header("x-cache"), Some("STALE"));
    assert_eq!(up.stats().requests, 2, "the closed gate was not queued for");
    assert_eq!(support::metric(&app, "racknap_proxy_cache_lookups_total{result=\"stale\"}").await, 2.0);
}

#[tokio::test]
async fn an_expired_entry_is_served_stale_when_the_upstream_is_down() {
    let (up, app) =
        setup_with(|m| cache_header(m, "cache-control", "max-age=0"), |c| c.cache.stale_max = Duration::from_secs(60))
            .await;
    let c = client(app.proxy_addr);
    let first = c.get("/v1/customers").await;
    up.shutdown().await;
    let stale = c.get("/v1/customers").await;
    assert_eq!((stale.header("x-cache"), &stale.body), (Some("STALE"), &first.body), "{}", stale.text());
    assert_envelope(&c.get("/v1/invoices").await, 502, "proxy_upstream_unavailable");
}

#[tokio::test]
async fn stale_serving_is_off_by_default() {
    let (up, app) = setup_with(|m| cache_header(m, "cache-control", "max-age=0"), |_| {}).await;
    let c = client(app.proxy_addr);
    c.get("/v1/customers").await;
    up.shutdown().await;
    assert_envelope(&c.get("/v1/customers").await, 502, "proxy_upstream_unavailable");
}

#[tokio::test]
async fn ttl_by_collection_is_read_from_the_config_file() {
    let cfg = racknap_proxy::Config::from_toml("[cache.ttl_by_collection]\n\"/v1/customers\" = \"5m\"\n").unwrap();
    assert_eq!(*cfg.cache.ttl_by_collection["/v1/customers"], Duration::from_secs(300));
    let bad = racknap_proxy::Config::from_toml("[cache.ttl_by_collection]\n\"/v1/\" = \"5m\"\n").unwrap();
    assert!(bad.validate().unwrap_err().to_string().contains("cache.ttl_by_collection"));
}

#[tokio::test]
async fn a_delete_drops_the_item_and_its_listings_but_not_other_collections() {
    let (up, app) = setup(|_| {}).await;
    let c = client(app.proxy_addr);
    let listing = c.get("/v1/invoices?limit=1").await;
    let id = listing.json()["data"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(c.get(&format!("/v1/invoices/{id}")).await.status, 200);
    c.get("/v1/customers").await;
    assert_eq!(c.send(Method::DELETE, &format!("/v1/invoices/{id}"), &[], Bytes::new()).await.status, 200);
    assert_eq!(c.get(&format!("/v1/invoices/{id}")).await.status, 404, "the deleted item is not served from the cache");
    let after = c.get("/v1/invoices?limit=1").await;
    assert_ne!(after.json()["data"][0]["id"], listing.json()["data"][0]["id"], "the listing was dropped too");
    assert_eq!(c.get("/v1/customers").await.header("x-cache"), Some("HIT"));
    assert_eq!(up.stats().requests, 6);
}

#[tokio::test]
async fn ttl_by_collection_keeps_customers_longer_than_invoices() {
    let (_up, app) = setup(|c| {
        c.cache.ttl = Duration::from_millis(300);
        c.cache.ttl_by_collection.insert("/v1/customers".into(), Duration::from_secs(60).into());
    })
    .await;
    let c = client(app.proxy_addr);
    c.get("/v1/customers").await;
    c.get("/v1/invoices").await;
    tokio::time::sleep(Duration::from_millis(400)).await; // the TTLs themselves are what is tested
    assert_eq!(c.get("/v1/customers").await.header("x-cache"), Some("HIT"));
    assert_eq!(c.get("/v1/invoices").await.header("x-cache"), Some("REVALIDATED"));
}

#[tokio::test]
async fn a_full_cache_evicts_and_counts_it() {
    let (_up, app) = setup(|c| {
        c.cache.max_bytes = bytesize::ByteSize::kib(16);
        c.cache.max_entry_bytes = bytesize::ByteSize::kib(8);
    })
    .await;
    let c = client(app.proxy_addr);
    for offset in 0..12 {
        assert_eq!(c.get(&format!("/v1/invoices?limit=5&offset={offset}")).await.status, 200);
    }
    assert!(support::metric(&app, "racknap_proxy_cache_evictions_total{cause=\"size\"}").await >= 1.0);
    assert!(support::metric(&app, "racknap_proxy_cache_bytes").await <= 16.0 * 1024.0);
}
