//! A faithful in-memory RackNap API server: the `mock` subcommand and the upstream of tests.
//!
//! It serves the endpoints of `shared/racknap-api.md` over HTTP/1.1 and h2 (optionally TLS)
//! with the real envelope, Bearer auth, and per-account rate limiting (fixed or sliding
//! window, `X-RateLimit-*` on every answer), plus the awkward parts the proxy must survive:
//! a skewed server clock, another consumer spending the same budget, artificial latency,
//! and forced 429s with or without rate-limit headers; and upstream faults (5xx answers,
//! connection resets, slow answers), forced or at seeded random rates (`fault.rs`).
//!
//! All time comes from tokio: the epoch is read once at [`MockServer::start`] and then
//! advances with `tokio::time::Instant`, so tests under `tokio::time::pause()` see `Date`
//! and `X-RateLimit-Reset` move with virtual time.
//!
//! Every 200 answer to a `GET`/`HEAD` carries a strong `ETag` (a hash of `data` and
//! `pagination`, not `meta`), and a matching `If-None-Match` gets `304 Not Modified`.
//!
//! `GET /__mock/stats` returns [`MockStats`] as JSON; it needs no auth and is neither rate
//! limited, counted nor recorded.

mod fault;
mod handler;
pub(crate) mod limiter; // crate-visible: the Budget's simulation tests drive it in-process
mod reply;
mod routes;
mod server;
mod store;
mod validate;

#[cfg(test)]
mod tests;

use std::{collections::BTreeMap, net::SocketAddr, str::FromStr, sync::Arc, time::Duration};

use crate::secret::Secret;

pub use fault::{FaultKind, FaultRates};
pub use server::{run, MockServer};

/// How the mock accounts its rate limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WindowKind {
    /// Windows aligned to multiples of the window length on the mock's epoch clock.
    #[default]
    Fixed,
    /// A trailing window over a log of request instants.
    Sliding,
}

impl FromStr for WindowKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fixed" => Ok(Self::Fixed),
            "sliding" => Ok(Self::Sliding),
            other => Err(format!("unknown window kind {other:?} (expected \"fixed\" or \"sliding\")")),
        }
    }
}

/// Everything the mock can be told at start.
#[derive(Clone, Debug)]
pub struct MockConfig {
    /// Where to listen (`127.0.0.1:0` in tests).
    pub listen: SocketAddr,
    /// The account's API key: requests must carry `Authorization: Bearer <key>`.
    pub key: Secret,
    /// Requests per window for the account.
    pub limit: u32,
    /// The window length.
    pub window: Duration,
    /// Fixed or sliding window.
    pub window_kind: WindowKind,
    /// How far the mock's clock is ahead (+) or behind (-) the real one, in milliseconds.
    pub clock_skew_ms: i64,
    /// Requests per second another consumer spends from the same account (0 = none).
    pub external_rate: f64,
    /// Artificial delay before each answer.
    pub latency: Duration,
    /// When set, serve HTTPS with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Headers added to every 200 answer to a `GET`/`HEAD` (e.g. `Cache-Control`, `Vary`).
    pub cache_headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Random upstream faults (none by default); see also [`MockServer::force_fault`].
    pub faults: FaultRates,
}

impl MockConfig {
    /// Defaults: `127.0.0.1:0`, 1000 per 60 s fixed window, no skew, no other consumer,
    /// no latency, plain HTTP.
    pub fn new(key: Secret) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            key,
            limit: 1000,
            window: Duration::from_secs(60),
            window_kind: WindowKind::Fixed,
            clock_skew_ms: 0,
            external_rate: 0.0,
            latency: Duration::ZERO,
            tls: None,
            cache_headers: Vec::new(),
            faults: FaultRates::default(),
        }
    }
}

/// What a forced 429 (see [`MockServer::force_429`]) carries besides the error envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForcedHeaders {
    /// `X-RateLimit-*`: Reset = arrival + `reset_in`, Remaining = the real remaining budget.
    RateLimit,
    /// `Retry-After: <seconds>` (rounded up).
    RetryAfterSeconds,
    /// `Retry-After: <HTTP-date>` on the mock's clock (rounded up to a whole second).
    RetryAfterDate,
    /// No rate-limit or retry header at all.
    None,
}

/// Counters, as returned by [`MockServer::stats`] and `GET /__mock/stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MockStats {
    /// Requests received (the stats endpoint excluded).
    pub requests: u64,
    /// 2xx answers.
    pub ok: u64,
    /// 429 answers, forced ones included.
    pub rate_limited: u64,
    /// 429 answers made by [`MockServer::force_429`].
    pub forced: u64,
    /// 401 answers.
    pub unauthorized: u64,
    /// 304 answers to `If-None-Match`.
    pub not_modified: u64,
    /// Injected faults (5xx answers, resets, slow answers), forced or random.
    pub faults: u64,
    /// Other 4xx answers (400, 404, 405, 413).
    pub client_errors: u64,
    /// Requests per route, keyed `"METHOD /v1/invoices/{id}"` (unknown paths as `"METHOD other"`).
    pub by_path: BTreeMap<String, u64>,
}

/// One request as the mock received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// Arrival time on tokio's clock.
    pub at: tokio::time::Instant,
    /// The method.
    pub method: http::Method,
    /// Path and query as sent.
    pub path_and_query: String,
    /// All request headers (including `Authorization`; never log them).
    pub headers: http::HeaderMap,
    /// The body (at most the first 1 MiB and a bit when it was too large).
    pub body: bytes::Bytes,
}
