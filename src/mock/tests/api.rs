//! The API surface over a real socket: envelopes, paging, auth, validation, writes.

use http::{Method, Request, StatusCode};
use http_body_util::Full;

use super::support::{config, start, Answer, TestClient, KEY};
use crate::mock::store::{customer_id, invoice_id, CUSTOMERS, INVOICES};

fn assert_meta(a: &Answer) {
    let id = a.json["meta"]["requestId"].as_str().expect("meta.requestId");
    assert!(id.starts_with("req_"), "{id}");
    assert!(a.json["meta"]["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(a.header("content-type"), Some("application/json"));
    assert!(a.header("date").is_some() && a.header("x-ratelimit-limit").is_some());
}

#[tokio::test]
async fn lists_invoices_with_envelope_and_paging() {
    let server = start(config()).await;
    let client = TestClient::new(&server);

    let a = client.get("/v1/invoices").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!((a.json["success"].as_bool(), a.json["code"].as_u64()), (Some(true), Some(200)));
    assert_eq!(a.json["data"].as_array().map(Vec::len), Some(10));
    let p = &a.json["pagination"];
    assert_eq!((p["total"].as_u64(), p["offset"].as_u64(), p["limit"].as_u64()), (Some(250), Some(0), Some(10)));
    assert_eq!(p["hasMore"], true);
    assert_meta(&a);
    let inv = &a.json["data"][0];
    assert_eq!(inv["id"], invoice_id(0));
    assert_eq!(inv["currency"], "USD");
    for field in ["customerId", "amount", "status", "items", "dueDate", "createdAt"] {
        assert!(!inv[field].is_null(), "invoice has {field}");
    }

    let last = client.get("/v1/invoices?offset=240&limit=100").await;
    assert_eq!(last.json["data"].as_array().map(Vec::len), Some(10));
    assert_eq!(last.json["pagination"]["hasMore"], false);
}

#[tokio::test]
async fn filters_invoices_by_customer() {
    let server = start(config()).await;
    let client = TestClient::new(&server);
    let cust = customer_id(3);
    let a = client.get(&format!("/v1/invoices?customerId={cust}&limit=100")).await;
    let data = a.json["data"].as_array().expect("data array");
    assert!(!data.is_empty());
    assert!(data.iter().all(|i| i["customerId"] == cust.as_str()));
    assert_eq!(a.json["pagination"]["total"].as_u64(), Some(data.len() as u64));
    assert!(data.len() < INVOICES as usize);
}

#[tokio::test]
async fn serves_customers_and_single_records() {
    let server = start(config()).await;
    let client = TestClient::new(&server);
    let list = client.get("/v1/customers?limit=100").await;
    assert_eq!(list.json["pagination"]["total"].as_u64(), Some(u64::from(CUSTOMERS)));
    assert_eq!(list.json["pagination"]["hasMore"], false);
    let one = client.get(&format!("/v1/customers/{}", customer_id(7))).await;
    assert_eq!(one.status, StatusCode::OK);
    assert!(one.json["data"]["email"].as_str().is_some_and(|e| e.contains('@')));
    let inv = client.get(&format!("/v1/invoices/{}", invoice_id(42))).await;
    assert_eq!(inv.json["data"]["id"], invoice_id(42));
}

#[tokio::test]
async fn unknown_ids_and_paths_get_404_envelopes() {
    let server = start(config()).await;
    let client = TestClient::new(&server);
    let a = client.get("/v1/invoices/inv_invalid").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.error_type(), "not_found");
    assert!(a.json["error"]["message"].as_str().is_some_and(|m| m.contains("inv_invalid")));
    assert_meta(&a);
    assert_eq!(client.get("/v1/webhooks").await.error_type(), "not_found");
    assert_eq!(client.get("/v1/customers/cust_00000000").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn wrong_or_missing_key_gets_401_without_echoing_it() {
    let server = start(config()).await;
    let client = TestClient::new(&server);
    let wrong = client.send(Method::GET, "/v1/invoices", Some("sk_wrong_key"), None).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.error_type(), "unauthorized");
    assert!(!String::from_utf8_lossy(&wrong.body).contains("sk_wrong_key"));
    assert!(!String::from_utf8_lossy(&wrong.body).contains(KEY));
    assert_eq!(wrong.number("x-ratelimit-remaining"), 999, "401s spend budget");
    let missing = client.send(Method::GET, "/v1/invoices", None, None).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(server.stats().unauthorized, 2);
}

#[tokio::test]
async fn bad_paging_is_a_validation_error() {
    let server = start(config()).await;
    let client = TestClient::new(&server);
    for query in ["limit=0", "limit=101", "limit=abc", "offset=-1", "offset=1.5"] {
        let a = client.get(&format!("/v1/invoices?{query}")).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(a.error_type(), "validation_error", "{query}");
    }
}

#[tokio::test]
async fn other_methods_get_405_with_allow() {
    let server = start(config()).await;
    let client = TestClient::new(&server);
    let a = client.call(Method::PUT, "/v1/customers", Some("{}")).await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(a.error_type(), "method_not_allowed");
    assert_eq!(a.header("allow"), Some("GET, HEAD"));
}

#[tokio::test]
async fn head_has_the_get_headers_and_no_body() {
    let server = start(config()).await;
    let client = TestClient::new(&server);
    let get = client.get("/v1/customers").await;
    let head = client.call(Method::HEAD, "/v1/customers", None).await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), Some(get.body.len().to_string().as_str()));
    assert_eq!(head.header("content-type"), Some("application/json"));
    assert!(head.header("x-ratelimit-remaining").is_some());
}

#[tokio::test]
async fn records_requests_and_serves_stats_without_counting_them() {
    let server = start(config()).await;
    let client = TestClient::new(&server);
    client.get("/v1/customers?limit=2").await;
    client.call(Method::POST, "/v1/invoices", Some("{}")).await;
    client.get("/v1/nope").await;

    let req = Request::get(format!("{}/__mock/stats", server.base_url())).body(Full::default()).expect("request");
    let stats = client.request(req).await;
    assert_eq!(stats.status, StatusCode::OK);
    assert_eq!(stats.json["requests"].as_u64(), Some(3));
    assert_eq!(stats.json["ok"].as_u64(), Some(1));
    assert_eq!(stats.json["clientErrors"].as_u64(), Some(2));
    assert_eq!(stats.json["byPath"]["GET /v1/customers"].as_u64(), Some(1));
    assert_eq!(stats.json["byPath"]["GET other"].as_u64(), Some(1));
    assert_eq!(server.stats().requests, 3, "the stats endpoint is not counted");

    let recorded = server.requests();
    let seen: Vec<(String, String)> =
        recorded.iter().map(|r| (r.method.to_string(), r.path_and_query.clone())).collect();
    assert_eq!(seen[0], ("GET".into(), "/v1/customers?limit=2".into()));
    assert_eq!(seen[1], ("POST".into(), "/v1/invoices".into()));
    assert_eq!(&recorded[1].body[..], b"{}");
    assert!(recorded[0].headers.contains_key("authorization"));
    assert!(!format!("{:?}", recorded[0]).contains(KEY), "Debug of a record hides the key");
}

#[tokio::test]
async fn shutdown_stops_accepting() {
    let server = start(config()).await;
    let addr = server.addr();
    server.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn reads_carry_an_etag_and_a_matching_if_none_match_gets_304() {
    let mut cfg = config();
    cfg.cache_headers.push((http::header::CACHE_CONTROL, http::HeaderValue::from_static("max-age=5")));
    let server = start(cfg).await;
    let client = TestClient::new(&server);
    let a = client.get("/v1/customers?limit=2").await;
    let etag = a.header("etag").expect("ETag on a 200 read").to_owned();
    assert_eq!(a.header("cache-control"), Some("max-age=5"));
    assert_eq!(client.get("/v1/customers?limit=2").await.header("etag"), Some(etag.as_str()), "meta is not hashed");
    assert_ne!(client.get("/v1/customers?limit=3").await.header("etag"), Some(etag.as_str()));
    let conditional = Request::get(format!("{}/v1/customers?limit=2", server.base_url()))
        .header("authorization", format!("Bearer {KEY}"))
        .header("if-none-match", &etag)
        .body(Full::default())
        .unwrap();
    let b = client.request(conditional).await;
    assert_eq!(b.status, StatusCode::NOT_MODIFIED);
    assert!(b.body.is_empty() && b.header("x-ratelimit-remaining").is_some());
    assert_eq!(server.stats().not_modified, 1);
}
