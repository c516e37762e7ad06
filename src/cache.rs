//! The GET cache: fresh hits answered at once (`X-Cache: HIT`), identical misses in flight
//! share one upstream call, writes invalidate their collection.
//!
//! Freshness lives in each entry as a `tokio::time::Instant` (moka's own TTL clock ignores
//! paused time, so it is only the eviction bound). Invalidation is by generation: every write to
//! a collection bumps its generation before and after it is sent, and an entry (or a fetch in
//! flight) from an older generation is never served.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use parking_lot::Mutex;
use tokio::{sync::OnceCell, time::Instant};
use tower::{Layer, Service, ServiceExt};

use crate::{
    body::{self, collect_bounded, Collected},
    context::{duplicate, ProxyFuture, ProxyRequest, ProxyResponse},
    envelope,
    error::ProxyError,
    metrics::Metrics,
};

pub mod freshness;
pub mod key;

#[cfg(test)]
mod tests;

use freshness::{lifetime, parse_cache_control};
use key::{collection_of, CacheKey};

/// How the cache answered a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from a fresh entry.
    Hit,
    /// Fetched upstream (and stored when cacheable).
    Miss,
    /// Shared the upstream call of an identical request in flight.
    Coalesced,
    /// Not eligible for the cache (method, directives).
    Bypass,
}

impl CacheStatus {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Coalesced => "coalesced",
            Self::Bypass => "bypass",
        }
    }

    fn header(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Self::Hit | Self::Coalesced => "HIT",
            Self::Miss | Self::Bypass => "MISS",
        })
    }
}

/// Cache settings.
#[derive(Clone, Debug)]
pub struct CacheSettings {
    /// Cache GETs at all.
    pub enabled: bool,
    /// Keeps accounts apart should several share one store.
    pub account: String,
    /// Default freshness.
    pub ttl: Duration,
    /// Bound on the weighted size.
    pub max_bytes: u64,
    /// Larger bodies are streamed, not stored.
    pub max_entry_bytes: usize,
}

/// A complete upstream answer that can be served many times.
struct Stored {
    status: StatusCode,
    version: http::Version,
    headers: HeaderMap,
    body: Bytes,
}

struct Entry {
    stored: Arc<Stored>,
    stored_at: Instant,
    fresh_until: Instant,
    generation: u64,
}

/// The outcome of one shared upstream call.
#[derive(Clone)]
enum Flight {
    Done(Arc<Stored>),
    Failed(ProxyError),
    /// Too large to share: the leader streams its own, followers fetch their own.
    Unshareable,
}

type FlightCell = Arc<OnceCell<Flight>>;

struct Inner {
    settings: CacheSettings,
    entries: moka::future::Cache<CacheKey, Arc<Entry>>,
    inflight: Mutex<HashMap<(CacheKey, u64), FlightCell>>,
    generations: Mutex<HashMap<String, u64>>,
    next_generation: AtomicU64,
    metrics: Metrics,
}

/// The store behind [`CacheLayer`]; cheap to clone.
#[derive(Clone)]
pub struct CacheStore(Arc<Inner>);

impl CacheStore {
    /// An empty store.
    pub fn new(settings: CacheSettings, metrics: Metrics) -> Self {
        let entries = moka::future::Cache::builder()
            .max_capacity(settings.max_bytes)
            .weigher(|k: &CacheKey, e: &Arc<Entry>| weight(k, &e.stored))
            // Only an eviction bound: freshness is checked against tokio time in each entry.
            .time_to_live(settings.ttl + Duration::from_secs(60))
            .build();
        Self(Arc::new(Inner {
            settings,
            entries,
            inflight: Mutex::default(),
            generations: Mutex::default(),
            next_generation: AtomicU64::new(1),
            metrics,
        }))
    }

    /// Entries and weighted bytes, for the gauges (pending evictions applied first).
    pub async fn usage(&self) -> (u64, u64) {
        self.0.entries.run_pending_tasks().await;
        (self.0.entries.entry_count(), self.0.entries.weighted_size())
    }

    fn generation(&self, collection: &str) -> u64 {
        self.0.generations.lock().get(collection).copied().unwrap_or(0)
    }

    fn bump(&self, collection: &str) {
        let g = self.0.next_generation.fetch_add(1, Ordering::Relaxed);
        self.0.generations.lock().insert(collection.to_owned(), g);
    }
}

fn weight(key: &CacheKey, stored: &Stored) -> u32 {
    let headers: usize = stored.headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    let total = stored.body.len() + headers + std::mem::size_of::<Entry>() + format!("{key:?}").len();
    u32::try_from(total).unwrap_or(u32::MAX)
}

/// Layer for [`Cache`].
#[derive(Clone)]
pub struct CacheLayer {
    store: CacheStore,
}

impl CacheLayer {
    /// Cache through `store`.
    pub fn new(store: CacheStore) -> Self {
        Self { store }
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = Cache<S>;
    fn layer(&self, inner: S) -> Cache<S> {
        Cache { inner, store: self.store.clone() }
    }
}

/// Serves GETs from the store, coalesces identical misses, invalidates on writes.
#[derive(Clone)]
pub struct Cache<S> {
    inner: S,
    store: CacheStore,
}

impl<S> Cache<S>
where
    S: Service<ProxyRequest, Response = ProxyResponse, Error = ProxyError> + Clone + Send + Sync + 'static,
    S::Future: Send,
{
    async fn run(self, req: ProxyRequest) -> Result<ProxyResponse, ProxyError> {
        let settings = &self.store.0.settings;
        match *req.method() {
            Method::GET if settings.enabled => self.get(req).await,
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE => self.write(req).await,
            _ => self.pass(req, CacheStatus::Bypass).await,
        }
    }

    async fn pass(&self, req: ProxyRequest, status: CacheStatus) -> Result<ProxyResponse, ProxyError> {
        self.count(status);
        let mut resp = self.inner.clone().oneshot(req).await?;
        mark(&mut resp, status);
        Ok(resp)
    }

    async fn write(&self, req: ProxyRequest) -> Result<ProxyResponse, ProxyError> {
        let collection = collection_of(req.uri().path()).to_owned();
        self.store.bump(&collection);
        let result = self.inner.clone().oneshot(req).await;
        self.store.bump(&collection); // a GET that overlapped the write must not be stored as current
        self.count(CacheStatus::Bypass);
        let mut resp = result?;
        mark(&mut resp, CacheStatus::Bypass);
        Ok(resp)
    }

    async fn get(&self, req: ProxyRequest) -> Result<ProxyResponse, ProxyError> {
        let directives = parse_cache_control(req.headers());
        if directives.no_store || req.headers().contains_key(header::RANGE) {
            return self.pass(req, CacheStatus::Bypass).await;
        }
        let inner = &self.store.0;
        let key = CacheKey::new(&inner.settings.account, req.uri().path(), req.uri().query(), req.headers());
        let generation = self.store.generation(collection_of(key.path()));
        let refresh = directives.no_cache || directives.max_age == Some(Duration::ZERO);
        if !refresh {
            if let Some(resp) = self.lookup(&key, generation, directives.max_age).await {
                self.count(CacheStatus::Hit);
                return Ok(resp);
            }
        }
        if directives.only_if_cached {
            return Err(ProxyError::NotCached);
        }
        self.shared_fetch(req, key, generation).await
    }

    async fn lookup(&self, key: &CacheKey, generation: u64, max_age: Option<Duration>) -> Option<ProxyResponse> {
        let entry = self.store.0.entries.get(key).await?;
        let now = Instant::now();
        let age = now.saturating_duration_since(entry.stored_at);
        let fresh = entry.generation == generation && now < entry.fresh_until && max_age.is_none_or(|m| age <= m);
        if !fresh {
            return None;
        }
        let mut resp = to_response(&entry.stored, CacheStatus::Hit);
        resp.headers_mut().insert(header::AGE, HeaderValue::from(age.as_secs()));
        Some(resp)
    }

    /// One upstream call for all identical misses of the same generation.
    async fn shared_fetch(
        &self,
        req: ProxyRequest,
        key: CacheKey,
        generation: u64,
    ) -> Result<ProxyResponse, ProxyError> {
        let flight_key = (key.clone(), generation);
        let cell = self.store.0.inflight.lock().entry(flight_key.clone()).or_default().clone();
        let led = AtomicBool::new(false);
        let own: Mutex<Option<ProxyResponse>> = Mutex::new(None);
        let flight = cell
            .get_or_init(|| {
                led.store(true, Ordering::Relaxed);
                self.fetch(duplicate(&req), key, generation, &own)
            })
            .await
            .clone();
        {
            let mut inflight = self.store.0.inflight.lock();
            if inflight.get(&flight_key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                inflight.remove(&flight_key);
            }
        }
        let led = led.load(Ordering::Relaxed);
        let status = if led { CacheStatus::Miss } else { CacheStatus::Coalesced };
        match flight {
            Flight::Done(stored) => {
                self.count(status);
                Ok(to_response(&stored, if led || !stored.status.is_success() { CacheStatus::Miss } else { status }))
            }
            Flight::Failed(e) => {
                self.count(status);
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
        req: ProxyRequest,
        key: CacheKey,
        generation: u64,
        own: &Mutex<Option<ProxyResponse>>,
    ) -> Flight {
        let resp = match self.inner.clone().oneshot(req).await {
            Ok(resp) => resp,
            Err(e) => return Flight::Failed(e),
        };
        let (parts, body) = resp.into_parts();
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
        self.maybe_store(key, generation, &stored).await;
        Flight::Done(stored)
    }

    async fn maybe_store(&self, key: CacheKey, generation: u64, stored: &Arc<Stored>) {
        let inner = &self.store.0;
        if stored.status != StatusCode::OK || !envelope::is_success(&stored.body) {
            return;
        }
        let Some(life) = lifetime(&stored.headers, inner.settings.ttl) else { return };
        if self.store.generation(collection_of(key.path())) != generation {
            return; // a write happened meanwhile: this answer may be stale already
        }
        let mut headers = stored.headers.clone();
        strip_budget_headers(&mut headers);
        let now = Instant::now();
        let clean = Arc::new(Stored { headers, body: stored.body.clone(), ..**stored });
        let entry = Entry { stored: clean, stored_at: now, fresh_until: now + life, generation };
        inner.entries.insert(key, Arc::new(entry)).await;
    }

    fn count(&self, status: CacheStatus) {
        self.store.0.metrics.cache_lookups.with_label_values(&[status.as_str()]).inc();
    }
}

/// Budget headers describe the moment of the original answer; a stored copy must not repeat them.
fn strip_budget_headers(headers: &mut HeaderMap) {
    for name in ["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "retry-after"] {
        headers.remove(name);
    }
}

fn to_response(stored: &Stored, status: CacheStatus) -> ProxyResponse {
    let mut resp = http::Response::new(body::full(stored.body.clone()));
    *resp.status_mut() = stored.status;
    *resp.version_mut() = stored.version;
    *resp.headers_mut() = stored.headers.clone();
    mark(&mut resp, status);
    resp
}

fn mark(resp: &mut ProxyResponse, status: CacheStatus) {
    resp.headers_mut().insert("x-cache", status.header());
    resp.extensions_mut().insert(status);
}

impl<S> Service<ProxyRequest> for Cache<S>
where
    S: Service<ProxyRequest, Response = ProxyResponse, Error = ProxyError> + Clone + Send + Sync + 'static,
    S::Future: Send,
{
    type Response = ProxyResponse;
    type Error = ProxyError;
    type Future = ProxyFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: ProxyRequest) -> ProxyFuture {
        Box::pin(self.clone().run(req))
    }
}
