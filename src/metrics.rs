//! Every Prometheus metric the proxy exports, registered in one place.
//!
//! Labels come from closed sets (method, status code, cache result, reason), never from paths,
//! ids or keys.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// The proxy's metrics and their registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Downstream requests answered, by method, status and cache result.
    pub requests: IntCounterVec,
    /// Upstream attempts, by status (`error` when no response).
    pub upstream_attempts: IntCounterVec,
    /// Upstream time to response head.
    pub upstream_duration: Histogram,
    /// Requests waiting for a permit.
    pub queue_depth: IntGauge,
    /// Time spent waiting for a permit.
    pub queue_wait: Histogram,
    /// 429s received from the upstream.
    pub upstream_429: IntCounter,
    /// Replays, by reason: `429`, `5xx` (502/503/504), `reset`, `timeout`, `connect` (refused).
    pub retries: IntCounterVec,
    /// Requests the proxy refused or failed itself, by error type.
    pub refused: IntCounterVec,
    /// Cache lookups, by result (hit, miss, coalesced, stale, revalidated, bypass).
    pub cache_lookups: IntCounterVec,
    /// Entries dropped by the cache on its own, by cause (size, expired).
    pub cache_evictions: IntCounterVec,
    /// Upstream requests the cache made unnecessary: hits, coalesced followers, stale serves.
    pub cache_saved: IntCounter,
    /// Conditional requests for stored entries, by result (not_modified, modified).
    pub cache_revalidations: IntCounterVec,
    /// Entries in the cache.
    pub cache_entries: IntGauge,
    /// Bytes in the cache.
    pub cache_bytes: IntGauge,
    /// Last limit in force.
    pub ratelimit_limit: IntGauge,
    /// Remaining budget as the proxy estimates it.
    pub ratelimit_remaining: IntGauge,
    /// Seconds until the budget resets.
    pub ratelimit_reset_seconds: prometheus::Gauge,
    /// Last reset the server reported (epoch seconds on its clock).
    pub ratelimit_reset_epoch: IntGauge,
    /// Server clock minus ours, seconds.
    pub clock_offset_seconds: IntGauge,
    /// Whether a 429 holds all traffic (1) or not (0).
    pub gate_closed: IntGauge,
    /// Client connections open on the proxy listener (at most `server.max_connections`).
    pub connections_open: IntGauge,
    /// Client connections the proxy ended itself, by reason (hyper's refusals are not envelopes).
    pub connections_closed: IntCounterVec,
    /// Downstream request duration, end to end.
    pub request_duration: HistogramVec,
    /// Requests waiting for a permit, by priority class.
    pub queue_depth_priority: IntGaugeVec,
    /// Time waited for a permit, by priority class.
    pub queue_wait_priority: HistogramVec,
    /// Requests waiting for a permit, by client (bounded label set; the rest are `other`).
    pub queue_depth_client: IntGaugeVec,
    /// Time waited for a permit, by client (bounded label set; the rest are `other`).
    pub queue_wait_client: HistogramVec,
}

fn buckets() -> Vec<f64> {
    vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0]
}

impl Metrics {
    /// Create and register everything in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        macro_rules! reg {
            ($m:expr) => {{
                let m = $m.expect("metric definition is valid");
                registry.register(Box::new(m.clone())).expect("metric names are unique");
                m
            }};
        }
        let name = |n: &str| format!("racknap_proxy_{n}");
        let hist = |n: &str, help: &str| HistogramOpts::new(name(n), help).buckets(buckets());
        Self {
            requests: reg!(IntCounterVec::new(
                Opts::new(name("requests_total"), "Downstream requests answered"),
                &["method", "status", "cache"]
            )),
            upstream_attempts: reg!(IntCounterVec::new(
                Opts::new(name("upstream_attempts_total"), "Requests sent upstream, by response status"),
                &["status"]
            )),
            upstream_duration: reg!(Histogram::with_opts(hist(
                "upstream_duration_seconds",
                "Upstream time to response head"
            ))),
            queue_depth: reg!(IntGauge::new(name("queue_depth"), "Requests waiting for a budget permit")),
            queue_wait: reg!(Histogram::with_opts(hist("queue_wait_seconds", "Time waited for a budget permit"))),
            upstream_429: reg!(IntCounter::new(name("upstream_429_total"), "429 answers received from the upstream")),
            retries: reg!(IntCounterVec::new(Opts::new(name("retries_total"), "Upstream replays"), &["reason"])),
            refused: reg!(IntCounterVec::new(
                Opts::new(name("errors_total"), "Requests answered by the proxy itself, by error type"),
                &["type"]
            )),
            cache_lookups: reg!(IntCounterVec::new(
                Opts::new(name("cache_lookups_total"), "GET cache lookups by result"),
                &["result"]
            )),
            cache_evictions: reg!(IntCounterVec::new(
                Opts::new(name("cache_evictions_total"), "GET cache entries evicted, by cause"),
                &["cause"]
            )),
            cache_saved: reg!(IntCounter::new(
                name("cache_upstream_requests_saved_total"),
                "Upstream requests the cache made unnecessary (hits, coalesced, stale)"
            )),
            cache_revalidations: reg!(IntCounterVec::new(
                Opts::new(name("cache_revalidations_total"), "Conditional requests for stored entries, by result"),
                &["result"]
            )),
            cache_entries: reg!(IntGauge::new(name("cache_entries"), "Entries in the GET cache")),
            cache_bytes: reg!(IntGauge::new(name("cache_bytes"), "Weighted size of the GET cache")),
            ratelimit_limit: reg!(IntGauge::new(name("ratelimit_limit"), "Requests allowed per window")),
            ratelimit_remaining: reg!(IntGauge::new(
                name("ratelimit_remaining"),
                "Requests left before the reset, as the proxy estimates"
            )),
            ratelimit_reset_seconds: reg!(prometheus::Gauge::new(
                name("ratelimit_reset_seconds"),
                "Seconds until the budget resets"
            )),
            ratelimit_reset_epoch: reg!(IntGauge::new(
                name("ratelimit_reset_timestamp_seconds"),
                "Last X-RateLimit-Reset from the upstream (epoch seconds, server clock)"
            )),
            clock_offset_seconds: reg!(IntGauge::new(
                name("upstream_clock_offset_seconds"),
                "Upstream Date minus local clock"
            )),
            gate_closed: reg!(IntGauge::new(name("ratelimit_gate_closed"), "1 while a 429 holds all traffic")),
            connections_open: reg!(IntGauge::new(
                name("connections_open"),
                "Client connections open on the proxy listener"
            )),
            connections_closed: reg!(IntCounterVec::new(
                Opts::new(name("connections_closed_total"), "Client connections ended by the proxy, by reason"),
                &["reason"]
            )),
            request_duration: reg!(HistogramVec::new(
                hist("request_duration_seconds", "Downstream request duration"),
                &["cache"]
            )),
            queue_depth_priority: reg!(IntGaugeVec::new(
                Opts::new(name("queue_priority_depth"), "Requests waiting for a permit, by priority"),
                &["priority"]
            )),
            queue_wait_priority: reg!(HistogramVec::new(
                hist("queue_priority_wait_seconds", "Time waited for a permit, by priority"),
                &["priority"]
            )),
            queue_depth_client: reg!(IntGaugeVec::new(
                Opts::new(name("queue_client_depth"), "Requests waiting for a permit, by client (bounded)"),
                &["client"]
            )),
            queue_wait_client: reg!(HistogramVec::new(
                hist("queue_client_wait_seconds", "Time waited for a permit, by client (bounded)"),
                &["client"]
            )),
            registry,
        }
    }

    /// The Prometheus text exposition of everything.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding cannot fail");
        String::from_utf8(buf).expect("prometheus text is utf-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A closed label for a method.
pub fn method_label(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
