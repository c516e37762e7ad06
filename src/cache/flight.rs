//! Misses: one upstream call for all identical requests in flight (single-flight on a tokio
//! `OnceCell` per key and generation), conditional when a stored entry has validators, and
//! storing what may be stored.
//!
//! If the leader is cancelled, its `get_or_init` future is dropped and the next waiter runs
//! its own fetch: followers still get an answer, never a shared cancellation.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use http::{header, HeaderMap, StatusCode};
use parking_lot::Mutex;
use tokio::{sync::OnceCell, time::Instant};
use tower::{Service, ServiceExt};

use super::{
    encoding::{encoding_accepted, is_success},
    freshness::storage,
    key::{collection_of, parse_vary, CacheKey, ResourceKey},
    store::{mark, to_response, Entry, Stored},
    Cache, CacheStatus,
};
use crate::{
    body::{self, collect_bounded, Collected},
    context::{duplicate, ProxyRequest, ProxyResponse},
    error::ProxyError,
};

/// The outcome of one shared upstream call.
#[derive(Clone)]
pub(super) enum Flight {
    /// A complete answer; `Miss` when fetched, `Revalidated` when a 304 refreshed an entry;
    /// the key it answers (by its `Vary`), `None` for `Vary: *`.
    Done(Arc<Stored>, CacheStatus, Option<CacheKey>),
    Failed(ProxyError),
    /// Too large to share: the leader streams its own, followers fetch their own.
    Unshareable,
}

pub(super) type FlightCell = Arc<OnceCell<Flight>>;

/// What a miss needs besides the request.
pub(super) struct Miss {
    pub resource: ResourceKey,
    pub key: CacheKey,
    pub generation: u64,
    /// A current entry with validators: the fetch is conditional.
    pub revalidate: Option<Arc<Entry>>,
}

impl<S> Cache<S>
where
    S: Service<ProxyRequest, Response = ProxyResponse, Error = ProxyError> + Clone + Send + Sync + 'static,
    S::Future: Send,
{
    /// One upstream call for all identical misses of the same generation.
    pub(super) async fn shared_fetch(&self, req: ProxyRequest, miss: Miss) -> Result<ProxyResponse, ProxyError> {
        let flight_key = (miss.key.clone(), miss.generation);
        let cell = self.store.0.inflight.lock().entry(flight_key.clone()).or_default().clone();
        let led = AtomicBool::new(false);
        let own: Mutex<Option<ProxyResponse>> = Mutex::new(None);
        let timings: Mutex<Option<http::Extensions>> = Mutex::new(None);
        let mut flight = cell
            .get_or_init(|| {
                led.store(true, Ordering::Relaxed);
                self.fetch(duplicate(&req), &miss, &own, &timings)
            })
            .await
            .clone();
        {
            let mut inflight = self.store.0.inflight.lock();
            if inflight.get(&flight_key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                inflight.remove(&flight_key);
            }
        }
        let mut led = led.load(Ordering::Relaxed);
        if !led && !answers(&flight, &miss.resource, req.headers()) {
            // The leader's answer varies on a header whose value differs here: fetch our own.
            flight = self.fetch(duplicate(&req), &miss, &own, &timings).await;
            led = true;
        }
        if !led && !matches!(flight, Flight::Unshareable) {
            self.count(CacheStatus::Coalesced);
            self.store.0.metrics.cache_saved.inc();
        }
        match flight {
            Flight::Done(stored, status, _) => {
                let status = if led { status } else { CacheStatus::Coalesced };
                if led {
                    self.count(status);
                }
                let shown = if stored.status.is_success() { status } else { CacheStatus::Miss };
                let mut resp = to_response(&stored, shown);
                if let Some(leader) = timings.into_inner().filter(|_| led) {
                    resp.extensions_mut().extend(leader); // queue wait, upstream time, attempts: for the log line
                }
                Ok(resp)
            }
            Flight::Failed(e) => {
                if led {
                    self.count(CacheStatus::Miss);
                }
                Err(e)
            }
            Flight::Unshareable => match own.into_inner() {
                Some(mut resp) => {
                    self.count(CacheStatus::Miss);
                    mark(&mut resp, CacheStatus::Miss);
                    Ok(resp)
                }
                None => self.pass(req, CacheStatus::Miss).await,
            },
        }
    }

    /// The leader's upstream call: buffer the answer (bounded), store it when cacheable.
    async fn fetch(
        &self,
        mut req: ProxyRequest,
        miss: &Miss,
        own: &Mutex<Option<ProxyResponse>>,
        timings: &Mutex<Option<http::Extensions>>,
    ) -> Flight {
        let request_headers = req.headers().clone();
        set_validators(req.headers_mut(), miss.revalidate.as_deref());
        let resp = match self.inner.clone().oneshot(req).await {
            Ok(resp) => resp,
            Err(e) => return Flight::Failed(e),
        };
        let (parts, body) = resp.into_parts();
        *timings.lock() = Some(parts.extensions.clone());
        if let (StatusCode::NOT_MODIFIED, Some(entry)) = (parts.status, &miss.revalidate) {
            let _ = collect_bounded(body, 0).await; // a 304 has no body; read it so the connection is reused
            let merged = Arc::new(refreshed(&entry.stored, &parts.headers));
            self.store.0.metrics.cache_revalidations.with_label_values(&["not_modified"]).inc();
            self.maybe_store(miss, &merged, &request_headers).await;
            let answers = answer_key(&miss.resource, &request_headers, &merged);
            return Flight::Done(merged, CacheStatus::Revalidated, answers);
        }
        if miss.revalidate.is_some() {
            self.store.0.metrics.cache_revalidations.with_label_values(&["modified"]).inc();
        }
        let max = self.store.0.settings.max_entry_bytes;
        let bytes = match collect_bounded(body, max).await {
            Ok(Collected::Complete(bytes)) => bytes,
            Ok(Collected::TooLarge { head, rest }) => {
                *own.lock() = Some(http::Response::from_parts(parts, body::chain(head, rest)));
                return Flight::Unshareable;
            }
            Err(e) => return Flight::Failed(ProxyError::UpstreamUnavailable(format!("upstream body broke off: {e}"))),
        };
        let stored =
            Arc::new(Stored { status: parts.status, version: parts.version, headers: parts.headers, body: bytes });
        self.maybe_store(miss, &stored, &request_headers).await;
        let answers = answer_key(&miss.resource, &request_headers, &stored);
        Flight::Done(stored, CacheStatus::Miss, answers)
    }

    /// Store a complete 200 `success: true` answer the upstream allows to be stored, under the
    /// key its `Vary` names, unless a write to its collection happened meanwhile.
    async fn maybe_store(&self, miss: &Miss, stored: &Arc<Stored>, request_headers: &HeaderMap) {
        let inner = &self.store.0;
        let decoded_limit = inner.settings.max_entry_bytes.saturating_mul(8); // a bound on what a check may inflate
        if stored.status != StatusCode::OK || !is_success(&stored.headers, &stored.body, decoded_limit) {
            return;
        }
        if !encoding_accepted(request_headers, &stored.headers) {
            return; // never store what this client could not have asked for
        }
        let collection = collection_of(miss.key.path());
        let Some(policy) = storage(&stored.headers, inner.settings.ttl_for(collection)) else { return };
        let has_validator =
            stored.headers.contains_key(header::ETAG) || stored.headers.contains_key(header::LAST_MODIFIED);
        if policy.lifetime.is_zero() && !has_validator {
            return; // could never be used
        }
        if self.store.generation(collection) != miss.generation {
            return; // a write happened meanwhile: this answer may be stale already
        }
        let vary = parse_vary(&stored.headers).unwrap_or_default();
        let key = CacheKey::varying(&miss.resource, request_headers, &vary);
        inner.vary.insert(miss.resource.clone(), vary.into()).await;
        let mut headers = stored.headers.clone();
        strip_moment_headers(&mut headers);
        let now = Instant::now();
        let fresh_until = now + policy.lifetime;
        let stale_until = if policy.no_stale { fresh_until } else { fresh_until + inner.settings.stale_max };
        let clean = Arc::new(Stored { headers, body: stored.body.clone(), ..**stored });
        let entry = Entry {
            stored: clean,
            stored_at: now,
            initial_age: policy.initial_age,
            fresh_until,
            stale_until,
            generation: miss.generation,
        };
        inner.entries.insert(key, Arc::new(entry)).await;
    }
}

/// The key an answer serves: the request's headers named by the answer's `Vary`.
fn answer_key(resource: &ResourceKey, request: &HeaderMap, stored: &Stored) -> Option<CacheKey> {
    parse_vary(&stored.headers).map(|vary| CacheKey::varying(resource, request, &vary))
}

/// Whether a shared outcome is the answer to a request with `headers` too.
fn answers(flight: &Flight, resource: &ResourceKey, headers: &HeaderMap) -> bool {
    match flight {
        Flight::Done(stored, _, key) => key.is_some() && *key == answer_key(resource, headers, stored),
        Flight::Failed(_) | Flight::Unshareable => true,
    }
}

/// Replace the client's own validators (the key does not hold them, so an answer to them
/// could not be shared) with the stored entry's. The client gets a full 200 either way.
fn set_validators(headers: &mut HeaderMap, entry: Option<&Entry>) {
    headers.remove(header::IF_NONE_MATCH);
    headers.remove(header::IF_MODIFIED_SINCE);
    let Some(entry) = entry else { return };
    let (etag, last_modified) = entry.validators();
    if let Some(etag) = etag {
        headers.insert(header::IF_NONE_MATCH, etag.clone());
    }
    if let Some(lm) = last_modified {
        headers.insert(header::IF_MODIFIED_SINCE, lm.clone());
    }
}

/// The stored answer with the headers of a 304 applied (RFC 9111 §4.3.4), body unchanged.
fn refreshed(stored: &Stored, not_modified: &HeaderMap) -> Stored {
    let mut headers = stored.headers.clone();
    for name in not_modified.keys() {
        if name == header::CONTENT_LENGTH || name == header::CONTENT_TYPE || name == header::CONTENT_ENCODING {
            continue;
        }
        headers.remove(name);
        for v in not_modified.get_all(name) {
            headers.append(name.clone(), v.clone());
        }
    }
    Stored { status: stored.status, version: stored.version, headers, body: stored.body.clone() }
}

/// Headers that describe the moment of the original answer; a stored copy must not repeat
/// them (`Age` is recomputed on every hit).
fn strip_moment_headers(headers: &mut HeaderMap) {
    for name in ["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "retry-after", "age"] {
        headers.remove(name);
    }
}
