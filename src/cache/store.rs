//! The cache's state: entries (moka, weighed by bytes, evictions counted), the `Vary` names
//! the upstream gave per resource, collection generations for invalidation, and the Budget
//! (read only) to know when the account is limited.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use moka::notification::RemovalCause;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::{
    flight::FlightCell,
    key::{CacheKey, ResourceKey},
    CacheSettings, CacheStatus,
};
use crate::{body, budget::Budget, context::ProxyResponse, metrics::Metrics};

/// How many resources' `Vary` names are remembered (an LRU-ish bound, not a correctness one:
/// a forgotten list only costs a miss).
const VARY_CAPACITY: u64 = 100_000;

/// A complete upstream answer that can be served many times.
#[derive(Debug)]
pub(super) struct Stored {
    pub status: StatusCode,
    pub version: http::Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// One stored answer and what decides how it may be served.
pub(super) struct Entry {
    pub stored: Arc<Stored>,
    /// When the answer (or its last 304) arrived.
    pub stored_at: Instant,
    /// The upstream's `Age` at that moment.
    pub initial_age: Duration,
    pub fresh_until: Instant,
    /// Last instant it may be served stale (equal to `fresh_until` when it never may).
    pub stale_until: Instant,
    pub generation: u64,
}

impl Entry {
    /// `Age` now: the upstream's plus our residence time.
    pub fn age(&self, now: Instant) -> Duration {
        self.initial_age + now.saturating_duration_since(self.stored_at)
    }

    /// Fresh for a client that accepts answers up to `max_age` old.
    pub fn is_fresh(&self, now: Instant, max_age: Option<Duration>) -> bool {
        now < self.fresh_until && max_age.is_none_or(|m| self.age(now) <= m)
    }

    /// Expired, but within the configured staleness bound.
    pub fn may_serve_stale(&self, now: Instant) -> bool {
        now >= self.fresh_until && now < self.stale_until
    }

    /// `ETag` and `Last-Modified`, if the upstream gave any.
    pub fn validators(&self) -> (Option<&HeaderValue>, Option<&HeaderValue>) {
        (self.stored.headers.get(header::ETAG), self.stored.headers.get(header::LAST_MODIFIED))
    }

    /// The answer for a client, with `Age` (and `Warning` when stale).
    pub fn respond(&self, status: CacheStatus, now: Instant) -> ProxyResponse {
        let mut resp = to_response(&self.stored, status);
        resp.headers_mut().insert(header::AGE, HeaderValue::from(self.age(now).as_secs()));
        if status == CacheStatus::Stale {
            resp.headers_mut().insert(header::WARNING, HeaderValue::from_static("110 - \"Response is Stale\""));
        }
        resp
    }
}

pub(super) struct Inner {
    pub settings: CacheSettings,
    pub entries: moka::future::Cache<CacheKey, Arc<Entry>>,
    /// `Vary` names per resource, as the upstream last said.
    pub vary: moka::future::Cache<ResourceKey, Arc<[String]>>,
    pub inflight: Mutex<HashMap<(CacheKey, u64), FlightCell>>,
    generations: Mutex<HashMap<String, u64>>,
    next_generation: AtomicU64,
    pub budget: Option<Arc<dyn Budget>>,
    pub metrics: Metrics,
}

/// The store behind [`super::CacheLayer`]; cheap to clone.
#[derive(Clone)]
pub struct CacheStore(pub(super) Arc<Inner>);

impl CacheStore {
    /// An empty store.
    pub fn new(settings: CacheSettings, metrics: Metrics) -> Self {
        let evictions = metrics.cache_evictions.clone();
        let entries = moka::future::Cache::builder()
            .max_capacity(settings.max_bytes)
            .weigher(|k: &CacheKey, e: &Arc<Entry>| weight(k, &e.stored))
            // Only an eviction bound: freshness is checked against tokio time in each entry.
            .time_to_live(settings.longest_ttl() + settings.stale_max + Duration::from_secs(60))
            .eviction_listener(move |_k, _v, cause| match cause {
                RemovalCause::Size => evictions.with_label_values(&["size"]).inc(),
                RemovalCause::Expired => evictions.with_label_values(&["expired"]).inc(),
                RemovalCause::Explicit | RemovalCause::Replaced => {}
            })
            .build();
        Self(Arc::new(Inner {
            settings,
            entries,
            vary: moka::future::Cache::new(VARY_CAPACITY),
            inflight: Mutex::default(),
            generations: Mutex::default(),
            next_generation: AtomicU64::new(1),
            budget: None,
            metrics,
        }))
    }

    /// Serve stale entries (within `cache.stale_max`) while this Budget says the account is
    /// limited. Read only: the cache never spends or observes.
    pub fn with_budget(self, budget: Arc<dyn Budget>) -> Self {
        let inner =
            Arc::try_unwrap(self.0).unwrap_or_else(|_| panic!("with_budget is called before the store is shared"));
        Self(Arc::new(Inner { budget: Some(budget), ..inner }))
    }

    /// Entries and weighted bytes, for the gauges (pending evictions applied first).
    pub async fn usage(&self) -> (u64, u64) {
        self.0.entries.run_pending_tasks().await;
        (self.0.entries.entry_count(), self.0.entries.weighted_size())
    }

    pub(super) fn generation(&self, collection: &str) -> u64 {
        self.0.generations.lock().get(collection).copied().unwrap_or(0)
    }

    pub(super) fn bump(&self, collection: &str) {
        let g = self.0.next_generation.fetch_add(1, Ordering::Relaxed);
        self.0.generations.lock().insert(collection.to_owned(), g);
    }

    /// The key of a request for `resource`, with the `Vary` names the upstream last gave.
    pub(super) async fn key_for(&self, resource: &ResourceKey, headers: &HeaderMap) -> CacheKey {
        match self.0.vary.get(resource).await {
            Some(vary) => CacheKey::varying(resource, headers, &vary),
            None => CacheKey::varying(resource, headers, &[]),
        }
    }

    /// The entry for `key` if it belongs to the current `generation` of its collection.
    pub(super) async fn entry(&self, key: &CacheKey, generation: u64) -> Option<Arc<Entry>> {
        self.0.entries.get(key).await.filter(|e| e.generation == generation)
    }

    /// The account cannot send now: a 429 closed the gate, or the budget is spent for longer
    /// than `cache.stale_if_wait`.
    pub(super) fn limited(&self, now: Instant) -> bool {
        let Some(budget) = &self.0.budget else { return false };
        if budget.gate_until(now).is_some_and(|until| until > now) {
            return true;
        }
        let snap = budget.snapshot(now);
        snap.remaining == 0 && snap.reset_in > self.0.settings.stale_if_wait
    }
}

fn weight(key: &CacheKey, stored: &Stored) -> u32 {
    let headers: usize = stored.headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    let total = stored.body.len() + headers + std::mem::size_of::<Entry>() + format!("{key:?}").len();
    u32::try_from(total).unwrap_or(u32::MAX)
}

/// A stored answer as a response for a client.
pub(super) fn to_response(stored: &Stored, status: CacheStatus) -> ProxyResponse {
    let mut resp = http::Response::new(body::full(stored.body.clone()));
    *resp.status_mut() = stored.status;
    *resp.version_mut() = stored.version;
    *resp.headers_mut() = stored.headers.clone();
    mark(&mut resp, status);
    resp
}

/// `X-Cache` for the client, the status for the log line and metrics.
pub(super) fn mark(resp: &mut ProxyResponse, status: CacheStatus) {
    resp.headers_mut().insert("x-cache", status.header());
    resp.extensions_mut().insert(status);
}
