//! The cache layer in-process, on paused time, over a counting fake upstream.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::time::Instant;
use tower::{service_fn, Layer, ServiceExt};

use super::{CacheLayer, CacheSettings, CacheStore};
use crate::{
    body,
    context::{ProxyRequest, ProxyResponse, RequestContext},
    error::ProxyError,
    metrics::Metrics,
};

mod semantics;

pub(super) const OK: &str = r#"{"success":true,"code":200,"data":[]}"#;

pub(super) fn settings() -> CacheSettings {
    CacheSettings { ttl: Duration::from_secs(30), max_bytes: 1 << 20, max_entry_bytes: 1024, ..CacheSettings::new("a") }
}

pub(super) fn req(method: Method, uri: &str) -> ProxyRequest {
    let mut r = Request::builder().method(method).uri(uri).body(Bytes::new()).unwrap();
    r.extensions_mut().insert(RequestContext {
        id: Arc::from("req_1"),
        client: Arc::from("c"),
        deadline: Instant::now() + Duration::from_secs(60),
    });
    r
}

/// An upstream that counts calls, waits `delay`, and answers what `answer` says.
pub(super) fn upstream(
    calls: Arc<AtomicUsize>,
    delay: Duration,
    answer: impl Fn(&ProxyRequest) -> Result<ProxyResponse, ProxyError> + Clone + Send + Sync + 'static,
) -> impl tower::Service<ProxyRequest, Response = ProxyResponse, Error = ProxyError, Future = impl Send>
       + Clone
       + Send
       + Sync
       + 'static {
    service_fn(move |r: ProxyRequest| {
        let (calls, answer) = (calls.clone(), answer.clone());
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(delay).await;
            answer(&r)
        }
    })
}

pub(super) fn ok(body: &'static str) -> Result<ProxyResponse, ProxyError> {
    Ok(Response::new(body::full(body)))
}

pub(super) async fn read(resp: ProxyResponse) -> (StatusCode, Option<String>, Bytes) {
    let status = resp.status();
    let x = resp.headers().get("x-cache").map(|v| v.to_str().unwrap().to_owned());
    (status, x, resp.into_body().collect().await.unwrap().to_bytes())
}

#[tokio::test(start_paused = true)]
async fn a_hundred_concurrent_identical_misses_make_one_call() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = CacheLayer::new(CacheStore::new(settings(), Metrics::new())).layer(upstream(
        calls.clone(),
        Duration::from_millis(500),
        |_| ok(OK),
    ));
    let barrier = Arc::new(tokio::sync::Barrier::new(100));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (svc, barrier) = (svc.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                read(svc.oneshot(req(Method::GET, "/v1/invoices")).await.unwrap()).await
            })
        })
        .collect();
    for t in tasks {
        let (status, _, body) = t.await.unwrap();
        assert_eq!((status, body), (StatusCode::OK, Bytes::from(OK)));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn coalesced_callers_share_the_error_too() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = CacheLayer::new(CacheStore::new(settings(), Metrics::new())).layer(upstream(
        calls.clone(),
        Duration::from_millis(100),
        |_| Err(ProxyError::UpstreamTimeout { after: Duration::from_secs(1) }),
    ));
    let (a, b) =
        tokio::join!(svc.clone().oneshot(req(Method::GET, "/v1/x")), svc.clone().oneshot(req(Method::GET, "/v1/x")));
    assert!(
        matches!(a, Err(ProxyError::UpstreamTimeout { .. })) && matches!(b, Err(ProxyError::UpstreamTimeout { .. }))
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Errors are not cached: the next request goes upstream again.
    let _ = svc.oneshot(req(Method::GET, "/v1/x")).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn freshness_follows_tokio_time() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = CacheLayer::new(CacheStore::new(settings(), Metrics::new())).layer(upstream(
        calls.clone(),
        Duration::ZERO,
        |_| ok(OK),
    ));
    let first = read(svc.clone().oneshot(req(Method::GET, "/v1/invoices")).await.unwrap()).await;
    assert_eq!(first.1.as_deref(), Some("MISS"));
    tokio::time::advance(Duration::from_secs(29)).await;
    assert_eq!(
        read(svc.clone().oneshot(req(Method::GET, "/v1/invoices")).await.unwrap()).await.1.as_deref(),
        Some("HIT")
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(
        read(svc.clone().oneshot(req(Method::GET, "/v1/invoices")).await.unwrap()).await.1.as_deref(),
        Some("MISS")
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_get_that_overlaps_a_write_is_not_stored() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = CacheLayer::new(CacheStore::new(settings(), Metrics::new())).layer(upstream(
        calls.clone(),
        Duration::from_millis(100),
        |_| ok(OK),
    ));
    let get = tokio::spawn(svc.clone().oneshot(req(Method::GET, "/v1/invoices")));
    tokio::time::sleep(Duration::from_millis(10)).await;
    svc.clone().oneshot(req(Method::POST, "/v1/invoices")).await.unwrap();
    get.await.unwrap().unwrap();
    let after = read(svc.clone().oneshot(req(Method::GET, "/v1/invoices")).await.unwrap()).await;
    assert_eq!(after.1.as_deref(), Some("MISS"), "the overlapped answer may predate the write");
}

#[tokio::test(start_paused = true)]
async fn writes_invalidate_only_their_collection() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = CacheLayer::new(CacheStore::new(settings(), Metrics::new())).layer(upstream(
        calls.clone(),
        Duration::ZERO,
        |_| ok(OK),
    ));
    for uri in ["/v1/invoices?limit=1", "/v1/invoices/inv_1", "/v1/customers"] {
        svc.clone().oneshot(req(Method::GET, uri)).await.unwrap();
    }
    svc.clone().oneshot(req(Method::DELETE, "/v1/invoices/inv_1")).await.unwrap();
    let x = |uri: &'static str| {
        let svc = svc.clone();
        async move { read(svc.oneshot(req(Method::GET, uri)).await.unwrap()).await.1 }
    };
    assert_eq!(x("/v1/invoices?limit=1").await.as_deref(), Some("MISS"));
    assert_eq!(x("/v1/invoices/inv_1").await.as_deref(), Some("MISS"));
    assert_eq!(x("/v1/customers").await.as_deref(), Some("HIT"));
}

#[tokio::test(start_paused = true)]
async fn only_complete_successful_envelopes_are_stored() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = CacheLayer::new(CacheStore::new(settings(), Metrics::new())).layer(upstream(
        calls.clone(),
        Duration::ZERO,
        |r| match r.uri().path() {
            "/v1/fail" => ok(r#"{"success":false,"code":200}"#),
            "/v1/nostore" => {
                let mut resp = Response::new(body::full(OK));
                resp.headers_mut().insert("cache-control", "no-store".parse().unwrap());
                Ok(resp)
            }
            "/v1/429" => {
                let mut resp = Response::new(body::full(OK));
                *resp.status_mut() = StatusCode::TOO_MANY_REQUESTS;
                Ok(resp)
            }
            _ => ok("not json"),
        },
    ));
    for path in ["/v1/fail", "/v1/nostore", "/v1/429", "/v1/garbage"] {
        svc.clone().oneshot(req(Method::GET, path)).await.unwrap();
        svc.clone().oneshot(req(Method::GET, path)).await.unwrap();
    }
    assert_eq!(calls.load(Ordering::SeqCst), 8, "nothing was served from the cache");
}

#[tokio::test(start_paused = true)]
async fn a_body_over_the_entry_limit_streams_through_uncached() {
    static BIG: [u8; 4096] = [b'x'; 4096];
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = CacheLayer::new(CacheStore::new(settings(), Metrics::new())).layer(upstream(
        calls.clone(),
        Duration::ZERO,
        |_| Ok(Response::new(body::full(Bytes::from_static(&BIG)))),
    ));
    for _ in 0..2 {
        let (status, _, body) = read(svc.clone().oneshot(req(Method::GET, "/v1/big")).await.unwrap()).await;
        assert_eq!((status, body.len()), (StatusCode::OK, 4096));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_leader_hands_over_to_a_follower() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = CacheLayer::new(CacheStore::new(settings(), Metrics::new())).layer(upstream(
        calls.clone(),
        Duration::from_secs(1),
        |_| ok(OK),
    ));
    let leader = tokio::spawn(svc.clone().oneshot(req(Method::GET, "/v1/invoices")));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let followers: Vec<_> =
        (0..10).map(|_| tokio::spawn(svc.clone().oneshot(req(Method::GET, "/v1/invoices")))).collect();
    tokio::time::sleep(Duration::from_millis(10)).await;
    leader.abort();
    for f in followers {
        let (status, _, body) = read(f.await.unwrap().unwrap()).await;
        assert_eq!((status, body), (StatusCode::OK, Bytes::from(OK)), "no follower sees the cancellation");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2, "the cancelled call, then one call for all ten followers");
    let after = read(svc.oneshot(req(Method::GET, "/v1/invoices")).await.unwrap()).await;
    assert_eq!(after.1.as_deref(), Some("HIT"), "the follower's answer was stored");
}

#[tokio::test(start_paused = true)]
async fn the_leaders_answer_keeps_the_timings_for_its_log_line() {
    // Found by a user test: every GET miss logged queue_ms=0 upstream_ms=0 attempts=0.
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = CacheLayer::new(CacheStore::new(settings(), Metrics::new())).layer(upstream(
        calls.clone(),
        Duration::ZERO,
        |_| {
            let mut resp = Response::new(body::full(OK));
            resp.extensions_mut().insert(crate::context::Attempts(2));
            Ok(resp)
        },
    ));
    let resp = svc.oneshot(req(Method::GET, "/v1/invoices")).await.unwrap();
    assert_eq!(resp.extensions().get::<crate::context::Attempts>().map(|a| a.0), Some(2));
}
