//! HTTP semantics of the cache on paused time: validation, `Vary`, stale serving, encodings,
//! `HEAD`, per-collection TTLs, invalidation by `Location`, evictions and the saved counter.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

use super::{ok, read, req, settings, upstream, OK};
use crate::{
    body,
    budget::{Budget, Observation, Snapshot, Ticket},
    cache::{CacheLayer, CacheSettings, CacheStore},
    context::{ProxyRequest, ProxyResponse},
    error::ProxyError,
    metrics::Metrics,
};

/// A Budget whose gate the test opens and closes, and whose remaining budget it can spend.
#[derive(Default)]
struct Gate(AtomicBool, AtomicBool);

impl Budget for Gate {
    fn try_acquire(&self, _: Instant) -> Result<Ticket, Instant> {
        Ok(Ticket { seq: 1 })
    }
    fn refund(&self, _: Ticket) {}
    fn finish(&self, _: Ticket) {}
    fn observe(&self, _: Option<Ticket>, _: &Observation, _: Instant) {}
    fn gate_until(&self, now: Instant) -> Option<Instant> {
        self.0.load(Ordering::SeqCst).then(|| now + Duration::from_secs(30))
    }
    fn snapshot(&self, _: Instant) -> Snapshot {
        Snapshot {
            limit: 10,
            window: Duration::from_secs(60),
            remaining: if self.1.load(Ordering::SeqCst) { 0 } else { 5 },
            reset_in: Duration::from_secs(if self.1.load(Ordering::SeqCst) { 20 } else { 1 }),
            gated: self.0.load(Ordering::SeqCst),
            server_reset_epoch: None,
            clock_offset_secs: None,
        }
    }
}

fn with(headers: &[(&'static str, &'static str)], body: &'static str) -> Result<ProxyResponse, ProxyError> {
    let mut resp = Response::new(body::full(body));
    for (k, v) in headers {
        resp.headers_mut().append(*k, v.parse().unwrap());
    }
    Ok(resp)
}

fn get_with(uri: &str, headers: &[(&'static str, &'static str)]) -> ProxyRequest {
    let mut r = req(Method::GET, uri);
    for (k, v) in headers {
        r.headers_mut().append(*k, v.parse().unwrap());
    }
    r
}

fn stale_settings() -> CacheSettings {
    CacheSettings { stale_max: Duration::from_secs(60), ..settings() }
}

#[tokio::test(start_paused = true)]
async fn a_304_refreshes_the_entry_and_keeps_the_body() {
    let calls = Arc::new(AtomicUsize::new(0));
    let metrics = Metrics::new();
    let svc = CacheLayer::new(CacheStore::new(settings(), metrics.clone())).layer(upstream(
        calls.clone(),
        Duration::ZERO,
        |r| match r.headers().get("if-none-match") {
            Some(v) if v == "\"v1\"" => {
                let mut resp = with(&[("etag", "\"v1\""), ("cache-control", "max-age=10")], "")?;
                *resp.status_mut() = StatusCode::NOT_MODIFIED;
                Ok(resp)
            }
            _ => with(&[("etag", "\"v1\""), ("cache-control", "max-age=10")], OK),
        },
    ));
    let get = || svc.clone().oneshot(req(Method::GET, "/v1/customers"));
    assert_eq!(read(get().await.unwrap()).await.1.as_deref(), Some("MISS"));
    tokio::time::advance(Duration::from_secs(11)).await;
    let revalidated = read(get().await.unwrap()).await;
    assert_eq!(revalidated, (StatusCode::OK, Some("REVALIDATED".into()), Bytes::from(OK)), "the stored body, as 200");
    assert_eq!(read(get().await.unwrap()).await.1.as_deref(), Some("HIT"), "the 304 made it fresh again");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(metrics.cache_revalidations.with_label_values(&["not_modified"]).get(), 1);
}

#[tokio::test(start_paused = true)]
async fn no_cache_answers_are_stored_but_revalidated_before_every_use() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(AtomicUsize::new(0));
    let s = seen.clone();
    let svc = CacheLayer::new(CacheStore::new(settings(), Metrics::new())).layer(upstream(
        calls.clone(),
        Duration::ZERO,
        move |r| {
            if r.headers().get("if-none-match").is_some_and(|v| v == "\"v1\"") {
                s.fetch_add(1, Ordering::SeqCst);
            }
            with(&[("etag", "\"v1\""), ("cache-control", "no-cache")], OK)
        },
    ));
    for _ in 0..3 {
        let x = read(svc.clone().oneshot(req(Method::GET, "/v1/customers")).await.unwrap()).await.1;
        assert_ne!(x.as_deref(), Some("HIT"));
    }
    assert_eq!((calls.load(Ordering::SeqCst), seen.load(Ordering::SeqCst)), (3, 2), "conditional after the first");
}

#[tokio::test(start_paused = true)]
async fn a_clients_own_validators_never_reach_a_shared_fetch() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = CacheLayer::new(CacheStore::new(settings(), Metrics::new())).layer(upstream(
        calls.clone(),
        Duration::ZERO,
        |r| {
            assert!(r.headers().get("if-none-match").is_none(), "a 304 for one client cannot be shared");
            with(&[("etag", "\"v1\"")], OK)
        },
    ));
    let a = svc.clone().oneshot(get_with("/v1/customers", &[("if-none-match", "\"v0\"")])).await.unwrap();
    assert_eq!(read(a).await, (StatusCode::OK, Some("MISS".into()), Bytes::from(OK)));
}

#[tokio::test(start_paused = true)]
async fn vary_names_key_secondary_entries() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = CacheLayer::new(CacheStore::new(settings(), Metrics::new())).layer(upstream(
        calls.clone(),
        Duration::from_millis(100),
        |r| match r.headers().get("x-tenant").map(|v| v.to_str().unwrap()) {
            Some("a") => with(&[("vary", "X-Tenant")], r#"{"success":true,"data":"a"}"#),
            _ => with(&[("vary", "X-Tenant")], r#"{"success":true,"data":"b"}"#),
        },
    ));
    let get = |tenant: &'static str| {
        let svc = svc.clone();
        async move { read(svc.oneshot(get_with("/v1/customers", &[("x-tenant", tenant)])).await.unwrap()).await }
    };
    // Concurrent first requests: the Vary names are not known yet, so they share a flight,
    // and the follower whose X-Tenant differs must not take the leader's answer.
    let (a, b) = tokio::join!(get("a"), get("b"));
    assert!(a.2.ends_with(br#""a"}"#) && b.2.ends_with(br#""b"}"#), "{a:?} {b:?}");
    assert_eq!(get("a").await.1.as_deref(), Some("HIT"));
    let again = get("b").await;
    assert_eq!((again.1.as_deref(), again.2.ends_with(br#""b"}"#)), (Some("HIT"), true));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn vary_star_is_never_stored() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = CacheLayer::new(CacheStore::new(settings(), Metrics::new())).layer(upstream(
        calls.clone(),
        Duration::ZERO,
        |_| with(&[("vary", "*")], OK),
    ));
    for _ in 0..2 {
        svc.clone().oneshot(req(Method::GET, "/v1/customers")).await.unwrap();
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn an_expired_entry_is_served_stale_while_the_gate_is_closed() {
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Gate::default());
    let metrics = Metrics::new();
    let store = CacheStore::new(stale_settings(), metrics.clone()).with_budget(gate.clone());
    let svc = CacheLayer::new(store).layer(upstream(calls.clone(), Duration::ZERO, |_| ok(OK)));
    let get = || svc.clone().oneshot(req(Method::GET, "/v1/customers"));
    get().await.unwrap();
    tokio::time::advance(Duration::from_secs(31)).await;
    gate.0.store(true, Ordering::SeqCst);
    let stale = get().await.unwrap();
    assert_eq!(stale.headers()["warning"], "110 - \"Response is Stale\"");
    assert_eq!(stale.headers()["age"], "31");
    assert_eq!(read(stale).await, (StatusCode::OK, Some("STALE".into()), Bytes::from(OK)));
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the closed gate was not queued for");
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(read(get().await.unwrap()).await.1.as_deref(), Some("MISS"), "staleness is bounded");
    assert_eq!(metrics.cache_saved.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_expired_entry_is_served_stale_when_the_budget_is_spent_beyond_the_wait_bound() {
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Gate::default());
    let store = CacheStore::new(stale_settings(), Metrics::new()).with_budget(gate.clone());
    let svc = CacheLayer::new(store).layer(upstream(calls.clone(), Duration::ZERO, |_| ok(OK)));
    let get = || svc.clone().oneshot(req(Method::GET, "/v1/customers"));
    get().await.unwrap();
    tokio::time::advance(Duration::from_secs(31)).await;
    assert_eq!(read(get().await.unwrap()).await.1.as_deref(), Some("MISS"), "budget left: no reason for stale");
    tokio::time::advance(Duration::from_secs(31)).await;
    gate.1.store(true, Ordering::SeqCst); // nothing left for 20 s, more than stale_if_wait (1 s)
    assert_eq!(read(get().await.unwrap()).await.1.as_deref(), Some("STALE"));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let bounded = svc.clone().oneshot(get_with("/v1/customers", &[("cache-control", "max-age=60")])).await.unwrap();
    assert_eq!(read(bounded).await.1.as_deref(), Some("MISS"), "a client bounding the age gets no stale answer");
}

#[tokio::test(start_paused = true)]
async fn stale_serving_is_off_by_default() {
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Gate(AtomicBool::new(true), AtomicBool::new(true)));
    let store = CacheStore::new(settings(), Metrics::new()).with_budget(gate);
    let svc = CacheLayer::new(store).layer(upstream(calls.clone(), Duration::ZERO, |_| ok(OK)));
    svc.clone().oneshot(req(Method::GET, "/v1/customers")).await.unwrap();
    tokio::time::advance(Duration::from_secs(31)).await;
    let x = read(svc.oneshot(req(Method::GET, "/v1/customers")).await.unwrap()).await.1;
    assert_eq!((x.as_deref(), calls.load(Ordering::SeqCst)), (Some("MISS"), 2));
}

#[tokio::test(start_paused = true)]
async fn an_expired_entry_is_served_stale_when_the_upstream_fails_unless_it_must_revalidate() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let svc = CacheLayer::new(CacheStore::new(stale_settings(), Metrics::new())).layer(upstream(
        calls.clone(),
        Duration::ZERO,
        move |r| match (c.load(Ordering::SeqCst), r.uri().path()) {
            (1 | 2, "/v1/strict") => with(&[("cache-control", "max-age=5, must-revalidate")], OK),
            (1 | 2, _) => ok(OK),
            (_, "/v1/down") => Err(ProxyError::UpstreamUnavailable("refused".into())),
            _ => {
                let mut resp = Response::new(body::full("bad gateway"));
                *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                Ok(resp)
            }
        },
    ));
    let get = |p: &'static str| {
        let svc = svc.clone();
        async move { svc.oneshot(req(Method::GET, p)).await }
    };
    get("/v1/down").await.unwrap();
    get("/v1/strict").await.unwrap();
    tokio::time::advance(Duration::from_secs(31)).await;
    assert_eq!(read(get("/v1/down").await.unwrap()).await.1.as_deref(), Some("STALE"), "connect error");
    assert_eq!(get("/v1/strict").await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE, "must-revalidate");
}

#[tokio::test(start_paused = true)]
async fn a_compressed_body_is_never_served_to_a_client_that_did_not_ask_for_it() {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(OK.as_bytes()).unwrap();
    let gz = Bytes::from(encoder.finish().unwrap());
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = CacheLayer::new(CacheStore::new(settings(), Metrics::new())).layer(upstream(
        calls.clone(),
        Duration::ZERO,
        move |_| {
            // An upstream that compresses whether asked or not.
            let mut resp = Response::new(body::full(gz.clone()));
            resp.headers_mut().insert("content-encoding", "gzip".parse().unwrap());
            Ok(resp)
        },
    ));
    let x = |h: &'static [(&'static str, &'static str)]| {
        let svc = svc.clone();
        async move { read(svc.oneshot(get_with("/v1/customers", h)).await.unwrap()).await.1 }
    };
    assert_eq!(x(&[("accept-encoding", "gzip")]).await.as_deref(), Some("MISS"));
    assert_eq!(x(&[("accept-encoding", "gzip")]).await.as_deref(), Some("HIT"));
    assert_eq!(x(&[]).await.as_deref(), Some("MISS"));
    assert_eq!(x(&[]).await.as_deref(), Some("MISS"), "gzip sent to a client that did not ask is not stored");
    assert_eq!(x(&[("accept-encoding", "gzip;q=0")]).await.as_deref(), Some("MISS"));
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn head_is_never_stored_nor_answered_from_a_get_entry() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = CacheLayer::new(CacheStore::new(settings(), Metrics::new())).layer(upstream(
        calls.clone(),
        Duration::ZERO,
        |r| if r.method() == Method::HEAD { ok("") } else { ok(OK) },
    ));
    let x = |m: Method| {
        let svc = svc.clone();
        async move { read(svc.oneshot(req(m, "/v1/customers")).await.unwrap()).await }
    };
    assert_eq!(x(Method::HEAD).await.2, Bytes::new());
    assert_eq!(x(Method::GET).await, (StatusCode::OK, Some("MISS".into()), Bytes::from(OK)));
    assert_eq!(x(Method::HEAD).await.1.as_deref(), Some("MISS"));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn ttl_by_collection_replaces_the_default() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut s = settings();
    s.ttl_by_collection.insert("/v1/customers".into(), Duration::from_secs(300));
    let svc =
        CacheLayer::new(CacheStore::new(s, Metrics::new())).layer(upstream(calls.clone(), Duration::ZERO, |_| ok(OK)));
    let x = |p: &'static str| {
        let svc = svc.clone();
        async move { read(svc.oneshot(req(Method::GET, p)).await.unwrap()).await.1 }
    };
    x("/v1/customers/cust_1").await;
    x("/v1/invoices").await;
    tokio::time::advance(Duration::from_secs(200)).await;
    assert_eq!(x("/v1/customers/cust_1").await.as_deref(), Some("HIT"));
    assert_eq!(x("/v1/invoices").await.as_deref(), Some("MISS"));
}

#[tokio::test(start_paused = true)]
async fn a_write_drops_the_collection_its_location_names() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = CacheLayer::new(CacheStore::new(settings(), Metrics::new())).layer(upstream(
        calls.clone(),
        Duration::ZERO,
        |r| if r.method() == Method::POST { with(&[("location", "/v1/invoices/inv_1")], OK) } else { ok(OK) },
    ));
    let x = |m: Method, p: &'static str| {
        let svc = svc.clone();
        async move { read(svc.oneshot(req(m, p)).await.unwrap()).await.1 }
    };
    x(Method::GET, "/v1/invoices/inv_1").await;
    x(Method::GET, "/v1/customers").await;
    x(Method::POST, "/v1/payments").await;
    assert_eq!(x(Method::GET, "/v1/invoices/inv_1").await.as_deref(), Some("MISS"));
    assert_eq!(x(Method::GET, "/v1/customers").await.as_deref(), Some("HIT"));
}

#[tokio::test(start_paused = true)]
async fn evictions_are_counted_and_bytes_stay_bounded() {
    static BODY: [u8; 900] = [b' '; 900];
    let calls = Arc::new(AtomicUsize::new(0));
    let metrics = Metrics::new();
    let store = CacheStore::new(CacheSettings { max_bytes: 4096, ..settings() }, metrics.clone());
    let svc = CacheLayer::new(store.clone()).layer(upstream(calls.clone(), Duration::ZERO, |_| {
        let mut body = BODY.to_vec();
        body[..OK.len()].copy_from_slice(OK.as_bytes());
        Ok(Response::new(body::full(body)))
    }));
    for i in 0..20 {
        svc.clone().oneshot(req(Method::GET, &format!("/v1/customers/cust_{i}"))).await.unwrap();
        store.usage().await;
    }
    let (_, bytes) = store.usage().await;
    assert!(bytes <= 4096, "{bytes}");
    assert!(metrics.cache_evictions.with_label_values(&["size"]).get() >= 10);
}

#[tokio::test(start_paused = true)]
async fn saved_counts_hits_and_coalesced_followers() {
    let calls = Arc::new(AtomicUsize::new(0));
    let metrics = Metrics::new();
    let svc = CacheLayer::new(CacheStore::new(settings(), metrics.clone())).layer(upstream(
        calls.clone(),
        Duration::from_millis(100),
        |_| ok(OK),
    ));
    let get = || svc.clone().oneshot(req(Method::GET, "/v1/customers"));
    let _ = tokio::join!(get(), get(), get());
    get().await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(metrics.cache_saved.get(), 3, "two coalesced followers and one hit");
    assert_eq!(metrics.cache_lookups.with_label_values(&["coalesced"]).get(), 2);
}
