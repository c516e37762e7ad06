//! The GET cache: fresh hits answered at once (`X-Cache: HIT`), identical misses in flight
//! share one upstream call, writes invalidate their collection, and (when configured) an
//! expired entry is served `X-Cache: STALE` while the account is limited or the upstream fails.
//!
//! Freshness lives in each entry as a `tokio::time::Instant` (moka's own TTL clock ignores
//! paused time, so it is only the eviction bound). Invalidation is by generation: every write to
//! a collection bumps its generation before and after it is sent, and an entry (or a fetch in
//! flight) from an older generation is never served. `HEAD` bypasses the cache both ways: it is
//! never stored and never answered from a `GET` entry.

use std::{
    collections::HashMap,
    task::{Context, Poll},
    time::Duration,
};

use http::{header, HeaderValue, Method, StatusCode};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use crate::{
    config::CacheConfig,
    context::{ProxyFuture, ProxyRequest, ProxyResponse},
    error::ProxyError,
};

mod encoding;
mod flight;
pub mod freshness;
pub mod key;
mod store;

#[cfg(test)]
mod tests;

use flight::Miss;
use freshness::parse_cache_control;
use key::{collection_of, ResourceKey};
use store::mark;
pub use store::CacheStore;

/// How the cache answered a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from a fresh entry.
    Hit,
    /// Fetched upstream (and stored when cacheable).
    Miss,
    /// Shared the upstream call of an identical request in flight.
    Coalesced,
    /// An expired entry, served because the account is limited or the upstream failed.
    Stale,
    /// A stored entry confirmed by a conditional request (304): the body was saved, the
    /// permit was not.
    Revalidated,
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
            Self::Stale => "stale",
            Self::Revalidated => "revalidated",
            Self::Bypass => "bypass",
        }
    }

    fn header(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Self::Hit | Self::Coalesced => "HIT",
            Self::Stale => "STALE",
            Self::Revalidated => "REVALIDATED",
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
    /// Freshness per collection (`/v1/customers`), replacing `ttl` there.
    pub ttl_by_collection: HashMap<String, Duration>,
    /// How long past expiry an entry may be served while limited or failing (zero: never).
    pub stale_max: Duration,
    /// Serve stale rather than queue when the budget is spent for longer than this.
    pub stale_if_wait: Duration,
    /// Bound on the weighted size.
    pub max_bytes: u64,
    /// Larger bodies are streamed, not stored.
    pub max_entry_bytes: usize,
}

impl CacheSettings {
    /// Settings from `[cache]` for `account`.
    pub fn from_config(cfg: &CacheConfig, account: &str) -> Self {
        Self {
            enabled: cfg.enabled,
            account: account.to_owned(),
            ttl: cfg.ttl,
            ttl_by_collection: cfg.ttl_by_collection.iter().map(|(k, v)| (k.clone(), **v)).collect(),
            stale_max: cfg.stale_max,
            stale_if_wait: cfg.stale_if_wait,
            max_bytes: cfg.max_bytes.as_u64(),
            max_entry_bytes: usize::try_from(cfg.max_entry_bytes.as_u64()).unwrap_or(usize::MAX),
        }
    }

    /// Default settings: enabled, 30 s, no staleness, 64 MiB, 1 MiB entries.
    pub fn new(account: &str) -> Self {
        Self::from_config(&CacheConfig::default(), account)
    }

    /// The TTL in force for `collection`.
    pub fn ttl_for(&self, collection: &str) -> Duration {
        self.ttl_by_collection.get(collection).copied().unwrap_or(self.ttl)
    }

    fn longest_ttl(&self) -> Duration {
        self.ttl_by_collection.values().copied().fold(self.ttl, Duration::max)
    }
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

    /// A write drops its collection (and the one its `Location` names) before and after it
    /// is sent.
    async fn write(&self, req: ProxyRequest) -> Result<ProxyResponse, ProxyError> {
        let collection = collection_of(req.uri().path()).to_owned();
        self.store.bump(&collection);
        let result = self.inner.clone().oneshot(req).await;
        self.store.bump(&collection); // a GET that overlapped the write must not be stored as current
        if let Some(location) = result.as_ref().ok().and_then(|r| r.headers().get(header::LOCATION)) {
            let path = location.to_str().ok().and_then(|l| l.parse::<http::Uri>().ok());
            if let Some(other) = path.map(|u| collection_of(u.path()).to_owned()).filter(|o| *o != collection) {
                self.store.bump(&other);
            }
        }
        self.count(CacheStatus::Bypass);
        let mut resp = result?;
        mark(&mut resp, CacheStatus::Bypass);
        Ok(resp)
    }

    async fn get(&self, req: ProxyRequest) -> Result<ProxyResponse, ProxyError> {
        let directives = parse_cache_control(req.headers());
        let h = req.headers();
        let preconditions = [header::RANGE, header::IF_MATCH, header::IF_UNMODIFIED_SINCE, header::IF_RANGE];
        if directives.no_store || preconditions.iter().any(|p| h.contains_key(p)) {
            return self.pass(req, CacheStatus::Bypass).await;
        }
        let store = &self.store;
        let resource = ResourceKey::new(&store.0.settings.account, req.uri().path(), req.uri().query());
        let key = store.key_for(&resource, req.headers()).await;
        let generation = store.generation(collection_of(key.path()));
        let entry = store.entry(&key, generation).await;
        let now = Instant::now();
        let refresh = directives.no_cache || directives.max_age == Some(Duration::ZERO);
        if let Some(e) = entry.as_ref().filter(|e| !refresh && e.is_fresh(now, directives.max_age)) {
            self.count(CacheStatus::Hit);
            store.0.metrics.cache_saved.inc();
            return Ok(e.respond(CacheStatus::Hit, now));
        }
        // A client that bounds the age it accepts (max-age) or wants a fresh answer gets no stale one.
        let stale = entry.clone().filter(|e| !refresh && directives.max_age.is_none() && e.may_serve_stale(now));
        if directives.only_if_cached {
            return Err(ProxyError::NotCached);
        }
        if let Some(e) = stale.as_ref().filter(|_| store.limited(now)) {
            return Ok(self.serve_stale(e, "the account is rate limited"));
        }
        let revalidate = entry.filter(|e| matches!(e.validators(), (Some(_), _) | (_, Some(_))));
        let result = self.shared_fetch(req, Miss { resource, key, generation, revalidate }).await;
        match stale {
            Some(e) if failed(&result) => Ok(self.serve_stale(&e, "the upstream failed")),
            _ => result,
        }
    }

    fn serve_stale(&self, entry: &store::Entry, why: &'static str) -> ProxyResponse {
        tracing::debug!(reason = why, "Serving a stale entry");
        self.count(CacheStatus::Stale);
        self.store.0.metrics.cache_saved.inc();
        entry.respond(CacheStatus::Stale, Instant::now())
    }

    fn count(&self, status: CacheStatus) {
        self.store.0.metrics.cache_lookups.with_label_values(&[status.as_str()]).inc();
    }
}

/// The upstream could not give a usable answer: a gateway error, a 429 that outlived the
/// retries, or no answer within the queue's or the upstream's limits.
fn failed(result: &Result<ProxyResponse, ProxyError>) -> bool {
    match result {
        Ok(resp) => matches!(
            resp.status(),
            StatusCode::BAD_GATEWAY
                | StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::GATEWAY_TIMEOUT
                | StatusCode::TOO_MANY_REQUESTS
        ),
        Err(e) => matches!(
            e,
            ProxyError::UpstreamUnavailable(_)
                | ProxyError::UpstreamConnect(_)
                | ProxyError::UpstreamTimeout { .. }
                | ProxyError::QueueDeadline { .. }
                | ProxyError::QueueFull { .. }
        ),
    }
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
