//! An in-process simulation of the account under adversity, on paused tokio time: the real
//! [`LocalBudget`] and [`Queue`] in front of the bundled mock's pure limiter, no sockets.
//!
//! Clients offer load at a fixed rate; every granted permit is "sent" to the limiter at that
//! instant, and its answer (the mock's own `X-RateLimit-*`, `Retry-After` and `Date`, on the
//! mock's possibly skewed clock) comes back after `latency` and is parsed and observed exactly
//! as `forward` does. The outcome counts 429s, what was used of what was allowed, waits and
//! fairness.

use std::{sync::Arc, time::Duration};

use http::{HeaderMap, HeaderValue};
use parking_lot::Mutex;
use tokio::time::Instant;

use super::{parse_ratelimit_headers, Budget, LocalBudget};
use crate::{
    clock::EpochClock,
    mock::{
        limiter::{Limiter, MockClock, Quota, Verdict},
        WindowKind,
    },
    pace::queue::{Priority, Queue, QueueSettings},
};

/// Our epoch at the start of a run: deliberately not on a whole second.
const BASE_MS: u64 = 1_800_000_000_370;

/// What the world looks like.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub kind: WindowKind,
    pub limit: u32,
    pub window: Duration,
    pub skew_ms: i64,
    /// Another consumer's requests per second.
    pub external_rate: f64,
    pub latency: Duration,
    /// The proxy's configured limit (the server's replaces it).
    pub configured_limit: u32,
    pub headroom: f64,
    /// Per client: name, priority and offered requests per second.
    pub clients: Vec<(&'static str, Priority, f64)>,
    pub duration: Duration,
    /// At this time after the start, the server lowers its limit to the given value.
    pub lower_limit_at: Option<(Duration, u32)>,
    /// At this time after the start, the proxy restarts (a fresh Budget and queue).
    pub restart_at: Option<Duration>,
    pub high_priority_share: f64,
}

impl Scenario {
    /// `limit` per `window`, load at five times the limit from two equal clients.
    pub fn new(kind: WindowKind, limit: u32, window: Duration) -> Self {
        let per_client = 5.0 * f64::from(limit) / window.as_secs_f64() / 2.0;
        Self {
            kind,
            limit,
            window,
            skew_ms: 0,
            external_rate: 0.0,
            latency: Duration::from_millis(5),
            configured_limit: limit,
            headroom: 0.01,
            clients: vec![("a", Priority::Low, per_client), ("b", Priority::Low, per_client)],
            duration: window * 10,
            lower_limit_at: None,
            restart_at: None,
            high_priority_share: 0.2,
        }
    }
}

/// What happened.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Upstream answers by status: 2xx.
    pub ok: u64,
    /// Upstream 429s.
    pub limited: u64,
    /// Served requests per client, in `Scenario::clients` order.
    pub served: Vec<u64>,
    /// Waits of served requests per client.
    pub waits: Vec<Vec<Duration>>,
    /// Instants our requests reached the server.
    pub sent_at: Vec<Instant>,
    /// Instants our allowed requests reached the server.
    pub ok_at: Vec<Instant>,
    /// Allowed requests within the measured span (whole fixed windows; after the first window
    /// for a sliding one).
    pub ok_measured: u64,
    /// What the account allowed us over the run (limit × windows − the other consumer's).
    pub allowed: f64,
}

impl Outcome {
    /// Our successful sends over what was allowed, in the measured span.
    pub fn share_used(&self) -> f64 {
        self.ok_measured as f64 / self.allowed
    }

    /// min/max served between clients.
    pub fn fairness(&self) -> f64 {
        let max = self.served.iter().copied().max().unwrap_or(0).max(1);
        self.served.iter().copied().min().unwrap_or(0) as f64 / max as f64
    }

    /// The `q` quantile of the waits of client `i`.
    pub fn wait_quantile(&self, i: usize, q: f64) -> Duration {
        let mut w = self.waits[i].clone();
        w.sort_unstable();
        w.get(((w.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or_default()
    }
}

struct World {
    limiter: Mutex<Limiter>,
    mock_clock: MockClock,
    our_clock: EpochClock,
    latency: Duration,
    outcome: Mutex<Outcome>,
    end: Instant,
}

fn proxy(s: &Scenario) -> Queue {
    let budget: Arc<dyn Budget> = Arc::new(LocalBudget::new(s.configured_limit, s.window, s.headroom));
    let settings = QueueSettings { capacity: 1_000_000, high_priority_share: s.high_priority_share };
    Queue::spawn_with(budget, settings)
}

/// Run `s` to its end and report.
pub async fn run(s: &Scenario) -> Outcome {
    let our_clock = EpochClock::at(Duration::from_millis(BASE_MS));
    let mock_clock = MockClock::new(our_clock.shifted(s.skew_ms));
    let started = Instant::now();
    let limiter = Limiter::new(s.kind, s.limit, s.window, s.external_rate, mock_clock);
    let world = Arc::new(World {
        limiter: Mutex::new(limiter),
        mock_clock,
        our_clock,
        latency: s.latency,
        outcome: Mutex::new(Outcome {
            served: vec![0; s.clients.len()],
            waits: vec![Vec::new(); s.clients.len()],
            ..Default::default()
        }),
        end: started + s.duration,
    });
    let queue = Arc::new(Mutex::new(proxy(s)));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (name, priority, rate)) in s.clients.iter().enumerate() {
        tasks.spawn(offer(world.clone(), queue.clone(), i, Arc::from(*name), *priority, *rate));
    }
    if let Some((at, limit)) = s.lower_limit_at {
        let world = world.clone();
        tasks.spawn(async move {
            tokio::time::sleep_until(started + at).await;
            world.limiter.lock().set_limit(limit);
        });
    }
    if let Some(at) = s.restart_at {
        let (queue, s) = (queue.clone(), s.clone());
        tasks.spawn(async move {
            tokio::time::sleep_until(started + at).await;
            let old = std::mem::replace(&mut *queue.lock(), proxy(&s));
            old.close();
        });
    }
    while tasks.join_next().await.is_some() {}
    tokio::time::sleep_until(world.end + s.latency * 2).await;
    let mut out = std::mem::take(&mut *world.outcome.lock());
    let (from, to) = measured_span(s, &mock_clock, started);
    let span = (to - from).as_secs_f64();
    out.allowed = f64::from(s.limit) * span / s.window.as_secs_f64() - s.external_rate * span;
    out.ok_measured = out.ok_at.iter().filter(|t| **t >= from && **t < to).count() as u64;
    out
}

/// Whole fixed windows within the run; for a sliding window, all but the first window.
fn measured_span(s: &Scenario, clock: &MockClock, started: Instant) -> (Instant, Instant) {
    let end = started + s.duration;
    if s.kind == WindowKind::Sliding {
        return (started + s.window, end);
    }
    let w = s.window.as_millis();
    let into = clock.epoch_at(started).as_millis() % w;
    let from = started + Duration::from_millis(((w - into) % w) as u64);
    let whole = (end - from).as_millis() / w;
    (from, from + Duration::from_millis((whole * w) as u64))
}

/// One client: a request every `1 / rate` seconds until the end; each waits in the queue.
async fn offer(world: Arc<World>, queue: Arc<Mutex<Queue>>, i: usize, client: Arc<str>, priority: Priority, rate: f64) {
    let every = Duration::from_secs_f64(1.0 / rate);
    let mut requests = tokio::task::JoinSet::new();
    let mut next = Instant::now();
    while next < world.end {
        tokio::time::sleep_until(next).await;
        let (world, queue, client) = (world.clone(), queue.lock().clone(), client.clone());
        requests.spawn(async move { request(&world, &queue, i, client, priority).await });
        next += every;
    }
    tokio::time::sleep_until(world.end).await;
    requests.abort_all(); // what is still queued at the end leaves (spends nothing)
    while requests.join_next().await.is_some() {}
}

async fn request(world: &World, queue: &Queue, i: usize, client: Arc<str>, priority: Priority) {
    let asked = Instant::now();
    let Ok(permit) = queue.acquire_with(client, priority, world.end).await else {
        return;
    };
    let sent = Instant::now();
    let verdict = world.limiter.lock().admit(sent);
    let (status, quota) = match verdict {
        Verdict::Allowed(q) => (200, q),
        Verdict::Limited(q) | Verdict::Forced(crate::mock::limiter::Forced { quota: q, .. }) => (429, q),
    };
    {
        let mut out = world.outcome.lock();
        out.sent_at.push(sent);
        if status == 200 {
            out.ok += 1;
            out.ok_at.push(sent);
            out.served[i] += 1;
            out.waits[i].push(sent - asked);
        } else {
            out.limited += 1;
        }
    }
    tokio::time::sleep(world.latency).await;
    let headers = answer_headers(world, status, &quota);
    let obs = parse_ratelimit_headers(status, &headers, world.our_clock.now());
    queue.budget().observe(Some(permit.ticket()), &obs, Instant::now());
    queue.budget_changed();
}

/// The headers the mock would send, rendered at this instant on its clock.
fn answer_headers(world: &World, status: u16, q: &Quota) -> HeaderMap {
    let mut h = HeaderMap::new();
    let date = world.mock_clock.system_time_at(Instant::now());
    let date = httpdate::fmt_http_date(date);
    h.insert(http::header::DATE, HeaderValue::from_str(&date).expect("ascii"));
    h.insert("x-ratelimit-limit", HeaderValue::from(q.limit));
    h.insert("x-ratelimit-remaining", HeaderValue::from(q.remaining));
    h.insert("x-ratelimit-reset", HeaderValue::from(q.reset));
    if status == 429 {
        h.insert(http::header::RETRY_AFTER, HeaderValue::from(q.retry_after));
    }
    h
}

#[cfg(test)]
mod tests;
