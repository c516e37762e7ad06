//! One request through the mock: count it against the account, read the (bounded) body,
//! record it, wait the artificial latency, check auth, route, and render.
//!
//! The rate-limit decision is made at arrival, before anything else, so 401s, 404s and 413s
//! spend budget like any other request; 429s (real or forced) spend none. An injected fault
//! (`fault.rs`) is decided first: a 5xx answer or a reset spends no budget, a slow answer is
//! an ordinary answer given late.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::{
    fault::{FaultKind, FaultPlan},
    limiter::{Limiter, MockClock, Verdict},
    reply::Reply,
    routes::{dispatch, Call, Route},
    store::Store,
    MockStats, RecordedRequest,
};
use crate::{
    body::{collect_bounded, Body, Collected},
    clock::rfc3339,
    envelope::{new_request_id, Meta},
    secret::Secret,
};

/// Largest request body accepted.
pub(crate) const MAX_BODY: usize = 1024 * 1024;
/// The counters endpoint.
pub(crate) const STATS_PATH: &str = "/__mock/stats";

/// Counters and the request log, kept under one lock so they agree.
#[derive(Debug, Default)]
pub(crate) struct Log {
    pub stats: MockStats,
    pub requests: Vec<RecordedRequest>,
}

/// State shared by every connection.
#[derive(Debug)]
pub(crate) struct Shared {
    pub key: Secret,
    pub latency: Duration,
    pub cache_headers: Vec<(http::HeaderName, HeaderValue)>,
    pub clock: MockClock,
    pub limiter: Mutex<Limiter>,
    pub store: Mutex<Store>,
    pub log: Mutex<Log>,
    pub faults: Mutex<FaultPlan>,
}

/// An injected reset: the service fails, so hyper closes the connection without an answer.
#[derive(Debug, thiserror::Error)]
#[error("injected fault: connection closed without an answer")]
pub(crate) struct InjectedReset;

/// What the request's body turned out to be.
enum ReadBody {
    Ok(Bytes),
    TooLarge(Bytes),
    Failed,
}

/// Serve one request.
pub(crate) async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, InjectedReset> {
    let at = Instant::now();
    if req.uri().path() == STATS_PATH {
        return Ok(stats_response(&shared));
    }
    let fault = shared.faults.lock().pick();
    let mut delay = shared.latency;
    match fault {
        Some(FaultKind::Slow(d)) => delay += d,
        Some(kind) => return fail(&shared, at, req, kind).await,
        None => {}
    }
    let verdict = shared.limiter.lock().admit(at);
    let (parts, incoming) = req.into_parts();
    let body = read_body(incoming).await;
    let route = Route::parse(parts.uri.path());
    record(&shared, at, &parts, &body, route.as_ref());
    if fault.is_some() {
        shared.log.lock().stats.faults += 1;
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let reply = match verdict {
        Verdict::Forced(f) => Reply::forced(&f.quota, f.headers),
        Verdict::Limited(q) => Reply::limited(&q),
        Verdict::Allowed(q) => conditional(&shared, &parts, answer(&shared, &parts, &body)).with_quota(&q),
    };
    count_outcome(&shared, reply.status, matches!(verdict, Verdict::Forced(_)));
    Ok(finish(&shared, reply, parts.method == Method::HEAD))
}

/// An injected 5xx or reset: recorded and counted, no budget spent.
async fn fail(
    shared: &Shared,
    at: Instant,
    req: Request<Incoming>,
    kind: FaultKind,
) -> Result<Response<Body>, InjectedReset> {
    let (parts, incoming) = req.into_parts();
    let body = read_body(incoming).await;
    record(shared, at, &parts, &body, Route::parse(parts.uri.path()).as_ref());
    shared.log.lock().stats.faults += 1;
    let reply = match kind {
        FaultKind::Status(status) => Reply::error(status, "service_unavailable", "Injected upstream fault"),
        FaultKind::RetryAfter(after) => {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            Reply::error(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", "Injected upstream fault")
                .with_header(header::RETRY_AFTER, &secs.to_string())
        }
        FaultKind::Reset | FaultKind::Slow(_) => return Err(InjectedReset),
    };
    Ok(finish(shared, reply, parts.method == Method::HEAD))
}

/// An allowed request: auth, body size, then the route.
fn answer(shared: &Shared, parts: &http::request::Parts, body: &ReadBody) -> Reply {
    if !authorized(&parts.headers, &shared.key) {
        return Reply::error(StatusCode::UNAUTHORIZED, "unauthorized", "Missing or invalid API key")
            .with_header(header::WWW_AUTHENTICATE, "Bearer");
    }
    let bytes = match body {
        ReadBody::Ok(bytes) => bytes,
        ReadBody::TooLarge(_) => {
            let message = format!("Request body exceeds {MAX_BODY} bytes");
            return Reply::error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message);
        }
        ReadBody::Failed => {
            return Reply::error(StatusCode::BAD_REQUEST, "validation_error", "Request body could not be read");
        }
    };
    let now = rfc3339(shared.clock.system_time_at(Instant::now()));
    let call = Call { method: &parts.method, path: parts.uri.path(), query: parts.uri.query(), body: bytes, now };
    dispatch(call, &shared.store)
}

/// A 200 read gets its `ETag` and the configured cache headers; a matching `If-None-Match`
/// turns it into a 304.
fn conditional(shared: &Shared, parts: &http::request::Parts, reply: Reply) -> Reply {
    let read = parts.method == Method::GET || parts.method == Method::HEAD;
    let Some(etag) = reply.etag().filter(|_| read && reply.status == StatusCode::OK) else {
        return reply;
    };
    let mut reply = reply.with_header(header::ETAG, &etag);
    for (name, value) in &shared.cache_headers {
        reply.headers.insert(name.clone(), value.clone());
    }
    let matches = parts.headers.get_all(header::IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok());
    if matches.flat_map(|v| v.split(',')).any(|t| t.trim() == "*" || t.trim().trim_start_matches("W/") == etag) {
        return reply.not_modified();
    }
    reply
}

/// `Authorization: Bearer <key>` with the account's key (scheme case-insensitive).
fn authorized(headers: &http::HeaderMap, key: &Secret) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some((scheme, token)) = value.trim().split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer") && constant_time_eq(token.trim().as_bytes(), key.expose().as_bytes())
}

/// Compare without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn read_body(incoming: Incoming) -> ReadBody {
    match collect_bounded(incoming, MAX_BODY).await {
        Ok(Collected::Complete(bytes)) => ReadBody::Ok(bytes),
        Ok(Collected::TooLarge { head, .. }) => ReadBody::TooLarge(head),
        Err(_) => ReadBody::Failed,
    }
}

fn record(shared: &Shared, at: Instant, parts: &http::request::Parts, body: &ReadBody, route: Option<&Route>) {
    let body = match body {
        ReadBody::Ok(b) | ReadBody::TooLarge(b) => b.clone(),
        ReadBody::Failed => Bytes::new(),
    };
    let path_and_query = parts.uri.path_and_query().map_or_else(|| parts.uri.path().to_string(), |pq| pq.to_string());
    let key = format!("{} {}", parts.method, route.map_or("other", Route::template));
    let mut headers = parts.headers.clone();
    if let Some(auth) = headers.get_mut(header::AUTHORIZATION) {
        auth.set_sensitive(true); // a recorded request's `Debug` must not print the key
    }
    let request = RecordedRequest { at, method: parts.method.clone(), path_and_query, headers, body };
    let mut log = shared.log.lock();
    log.stats.requests += 1;
    *log.stats.by_path.entry(key).or_default() += 1;
    log.requests.push(request);
}

fn count_outcome(shared: &Shared, status: StatusCode, forced: bool) {
    let mut log = shared.log.lock();
    let stats = &mut log.stats;
    match status {
        s if s.is_success() => stats.ok += 1,
        StatusCode::TOO_MANY_REQUESTS => {
            stats.rate_limited += 1;
            stats.forced += u64::from(forced);
        }
        StatusCode::UNAUTHORIZED => stats.unauthorized += 1,
        StatusCode::NOT_MODIFIED => stats.not_modified += 1,
        s if s.is_client_error() => stats.client_errors += 1,
        _ => {}
    }
}

fn stats_response(shared: &Shared) -> Response<Body> {
    let stats = shared.log.lock().stats.clone();
    let json = serde_json::to_vec(&stats).unwrap_or_default();
    finish(shared, Reply::raw(Bytes::from(json)), false)
}

/// Render with `meta` and `Date` from the mock's clock at this moment.
fn finish(shared: &Shared, reply: Reply, head: bool) -> Response<Body> {
    let now = shared.clock.system_time_at(Instant::now());
    let meta = Meta { timestamp: rfc3339(now), request_id: new_request_id() };
    let mut res = reply.render(&meta, head);
    if let Ok(date) = HeaderValue::from_str(&httpdate::fmt_http_date(now)) {
        res.headers_mut().insert(header::DATE, date);
    }
    res
}
