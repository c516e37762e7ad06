//! Key injection, faithful forwarding, envelopes for what the proxy refuses.

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde_json::json;

use crate::support::{self, assert_envelope, client, KEY};

#[tokio::test]
async fn injected_key_reaches_upstream_and_the_clients_own_does_not() {
    let up = support::upstream(100, Duration::from_secs(60)).await;
    let app = support::proxy(&support::config(&up, 100, Duration::from_secs(60))).await;
    let c = client(app.proxy_addr);
    let a = c
        .send(Method::GET, "/v1/customers?limit=2", &[("authorization", "Bearer client-token-xyz")], Bytes::new())
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["success"], true);
    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    let auth: Vec<_> = seen[0].headers.get_all("authorization").iter().collect();
    assert_eq!(auth.len(), 1, "exactly one Authorization upstream");
    assert_eq!(auth[0], format!("Bearer {KEY}").as_str());
    assert!(seen[0].headers.get("host").is_some_and(|h| h.to_str().unwrap() == up.addr().to_string()));
}

#[tokio::test]
async fn post_body_method_and_query_arrive_intact() {
    let up = support::upstream(100, Duration::from_secs(60)).await;
    let app = support::proxy(&support::config(&up, 100, Duration::from_secs(60))).await;
    let c = client(app.proxy_addr);
    let customer = c.get("/v1/customers?limit=1").await.json()["data"][0]["id"].as_str().unwrap().to_owned();
    let invoice = json!({"customerId": customer, "items": [{"description": "Hosting", "quantity": 3, "unitPrice": 10.5}], "dueDate": "2026-12-31"});
    let a = c.post_json("/v1/invoices", &invoice).await;
    assert_eq!(a.status, 201, "{}", a.text());
    assert_eq!(a.json()["data"]["amount"], 31.5);
    let last = up.requests().pop().unwrap();
    assert_eq!(last.method, Method::POST);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&last.body).unwrap(), invoice);
    let q = c.get(&format!("/v1/invoices?customerId={customer}&limit=5&offset=0")).await;
    assert_eq!(q.status, 200);
    assert!(up
        .requests()
        .last()
        .unwrap()
        .path_and_query
        .ends_with(&format!("?customerId={customer}&limit=5&offset=0")));
}

#[tokio::test]
async fn upstream_errors_pass_through_in_their_envelope() {
    let up = support::upstream(100, Duration::from_secs(60)).await;
    let app = support::proxy(&support::config(&up, 100, Duration::from_secs(60))).await;
    let c = client(app.proxy_addr);
    let a = c.get("/v1/invoices/inv_00000000").await;
    assert_eq!(a.status, 404);
    assert_eq!(a.json()["error"]["type"], "not_found");
    let bad = c.post_json("/v1/invoices", &json!({"customerId": "cust_x", "items": []})).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["success"], false);
}

#[tokio::test]
async fn paths_outside_the_api_and_connect_are_refused_with_envelopes() {
    let up = support::upstream(100, Duration::from_secs(60)).await;
    let app = support::proxy(&support::config(&up, 100, Duration::from_secs(60))).await;
    let c = client(app.proxy_addr);
    assert_envelope(&c.get("/admin").await, 403, "proxy_forbidden");
    assert_envelope(&c.get("/v1/../admin").await, 403, "proxy_forbidden");
    assert_envelope(&c.get("/v1/%2e%2e/admin").await, 403, "proxy_forbidden");
    assert_envelope(&c.get("/v1/invoices%2f..%2f..%2fadmin").await, 400, "proxy_bad_request");
    assert_envelope(&c.send(Method::TRACE, "/v1/invoices", &[], Bytes::new()).await, 405, "proxy_method_not_allowed");
    assert!(up.requests().is_empty(), "nothing refused reached the upstream");
}

#[tokio::test]
async fn oversized_bodies_get_413_and_never_reach_upstream() {
    let up = support::upstream(100, Duration::from_secs(60)).await;
    let mut cfg = support::config(&up, 100, Duration::from_secs(60));
    cfg.server.max_request_body = bytesize::ByteSize::kib(1);
    let app = support::proxy(&cfg).await;
    let big = Bytes::from(vec![b'x'; 4096]);
    let a =
        client(app.proxy_addr).send(Method::POST, "/v1/invoices", &[("content-type", "application/json")], big).await;
    assert_envelope(&a, 413, "proxy_payload_too_large");
    assert!(up.requests().is_empty());
}

#[tokio::test]
async fn unreachable_upstream_is_a_502_envelope() {
    let up = support::upstream(100, Duration::from_secs(60)).await;
    let mut cfg = support::config(&up, 100, Duration::from_secs(60));
    up.shutdown().await;
    cfg.upstream.connect_timeout = Duration::from_secs(2);
    let app = support::proxy(&cfg).await;
    let a = client(app.proxy_addr).get("/v1/customers").await;
    assert_envelope(&a, 502, "proxy_upstream_unavailable");
    assert!(!a.text().contains(KEY));
}

#[tokio::test]
async fn responses_carry_a_request_id_and_the_budget_fields() {
    let up = support::upstream(100, Duration::from_secs(60)).await;
    let app = support::proxy(&support::config(&up, 100, Duration::from_secs(60))).await;
    let a = client(app.proxy_addr).get("/v1/customers").await;
    assert!(a.header("x-request-id").is_some_and(|v| v.starts_with("req_")));
    assert_eq!(a.header("ratelimit-policy"), Some("\"account\";q=100;w=60"));
    let rl = a.header("ratelimit").unwrap();
    assert!(rl.starts_with("\"account\";r=") && rl.contains(";t="), "{rl}");
}
