//! The mock's per-account rate limiter: pure window maths on tokio time, no I/O.
//!
//! Time is kept as the [`Duration`] elapsed since the limiter was made; the mock's epoch is
//! `base + elapsed`, so `Date` and `X-RateLimit-Reset` stay consistent with each other and
//! move under paused tokio time. Another consumer of the same account is modelled lazily:
//! it makes evenly spaced requests at `external_rate` per second from the start, and those
//! are counted whenever the budget is looked at.

use std::{
    collections::VecDeque,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::time::Instant;

use super::{ForcedHeaders, WindowKind};
use crate::clock::EpochClock;

/// Longest window, forced reset or external spacing honoured (100 years): keeps the
/// epoch arithmetic far from `Duration` overflow whatever the config says.
const LONGEST: Duration = Duration::from_secs(100 * 365 * 86_400);

/// The budget as one answer reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Quota {
    /// `X-RateLimit-Limit`.
    pub limit: u32,
    /// `X-RateLimit-Remaining`, after this request.
    pub remaining: u32,
    /// `X-RateLimit-Reset`: epoch seconds, rounded up.
    pub reset: u64,
    /// Whole seconds from now until `reset_at`, rounded up (`Retry-After`).
    pub retry_after: u64,
}

/// A forced 429: what it carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Forced {
    /// Which headers to send.
    pub headers: ForcedHeaders,
    /// The real budget, not consumed; `reset`/`retry_after` measured from `reset_in`.
    pub quota: Quota,
}

/// The limiter's answer for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Within budget; one unit spent.
    Allowed(Quota),
    /// Over budget; nothing spent.
    Limited(Quota),
    /// A forced 429; nothing spent.
    Forced(Forced),
}

/// Pending forced 429s.
#[derive(Clone, Copy, Debug)]
struct ForcePlan {
    count: u32,
    reset_in: Duration,
    headers: ForcedHeaders,
}

/// What the account has used at one instant.
struct Usage {
    used: u64,
    /// When the next unit frees up, as elapsed time since start (None: nothing used).
    frees_at: Option<Duration>,
}

/// The mock's epoch clock: `base` at tokio instant `start`, moving with tokio time.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MockClock {
    base: Duration,
    start: Instant,
}

impl MockClock {
    /// Anchor `clock` (already skewed) at tokio's now.
    pub fn new(clock: EpochClock) -> Self {
        Self { base: clock.since_epoch(), start: Instant::now() }
    }

    /// Time since start at `now`.
    pub fn elapsed_at(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.start)
    }

    /// The mock's epoch at `now`.
    pub fn epoch_at(&self, now: Instant) -> Duration {
        self.base + self.elapsed_at(now)
    }

    /// The mock's epoch at `now`, as a `SystemTime` for formatting.
    pub fn system_time_at(&self, now: Instant) -> SystemTime {
        UNIX_EPOCH + self.epoch_at(now)
    }
}

/// Per-account accounting.
#[derive(Debug)]
pub(crate) struct Limiter {
    kind: WindowKind,
    limit: u32,
    window: Duration,
    external_rate: f64,
    clock: MockClock,
    /// Epoch at the clock's start.
    base: Duration,
    /// Fixed: index of the current window and our requests in it.
    fixed: (u64, u64),
    /// Sliding: our admitted requests, as elapsed time since start.
    log: VecDeque<Duration>,
    force: Option<ForcePlan>,
}

impl Limiter {
    /// A limiter on the mock's clock.
    pub fn new(kind: WindowKind, limit: u32, window: Duration, external_rate: f64, clock: MockClock) -> Self {
        let window = window.clamp(Duration::from_millis(1), LONGEST);
        let external_rate = if external_rate.is_finite() { external_rate.max(0.0) } else { 0.0 };
        Self {
            kind,
            limit,
            window,
            external_rate,
            clock,
            base: clock.base,
            fixed: (0, 0),
            log: VecDeque::new(),
            force: None,
        }
    }

    /// Make the next `count` requests get a 429, resetting `reset_in` after each one arrives.
    pub fn force(&mut self, count: u32, reset_in: Duration, headers: ForcedHeaders) {
        self.force = (count > 0).then_some(ForcePlan { count, reset_in: reset_in.min(LONGEST), headers });
    }

    /// Change the account's limit from now on (a contract change mid-run); usage is kept.
    #[cfg_attr(not(test), allow(dead_code))] // used by the simulation tests only
    pub fn set_limit(&mut self, limit: u32) {
        self.limit = limit;
    }

    /// Decide one request arriving at `now`, spending budget only when it is allowed.
    pub fn admit(&mut self, now: Instant) -> Verdict {
        let elapsed = self.clock.elapsed_at(now);
        if let Some(forced) = self.take_forced(elapsed) {
            return Verdict::Forced(forced);
        }
        let before = self.usage(elapsed);
        if before.used >= u64::from(self.limit) {
            return Verdict::Limited(self.quota(elapsed, &before, true));
        }
        self.spend(elapsed);
        let after = self.usage(elapsed);
        Verdict::Allowed(self.quota(elapsed, &after, false))
    }

    fn take_forced(&mut self, elapsed: Duration) -> Option<Forced> {
        let plan = self.force.as_mut()?;
        plan.count -= 1;
        let plan = *plan;
        if plan.count == 0 {
            self.force = None;
        }
        let usage = self.usage(elapsed);
        let mut quota = self.quota(elapsed, &usage, false);
        let reset_at = elapsed + plan.reset_in;
        quota.reset = ceil_secs(self.base + reset_at);
        quota.retry_after = ceil_secs(plan.reset_in);
        Some(Forced { headers: plan.headers, quota })
    }

    fn quota(&self, elapsed: Duration, usage: &Usage, limited: bool) -> Quota {
        let frees_at = usage.frees_at.unwrap_or(elapsed + self.window);
        let remaining = u64::from(self.limit).saturating_sub(usage.used);
        Quota {
            limit: self.limit,
            remaining: if limited { 0 } else { u32::try_from(remaining).unwrap_or(u32::MAX) },
            reset: ceil_secs(self.base + frees_at),
            retry_after: ceil_secs(frees_at.saturating_sub(elapsed)),
        }
    }

    fn spend(&mut self, elapsed: Duration) {
        match self.kind {
            WindowKind::Fixed => self.fixed.1 += 1,
            WindowKind::Sliding => self.log.push_back(elapsed),
        }
    }

    fn usage(&mut self, elapsed: Duration) -> Usage {
        match self.kind {
            WindowKind::Fixed => self.fixed_usage(elapsed),
            WindowKind::Sliding => self.sliding_usage(elapsed),
        }
    }

    /// Fixed: our requests in the current aligned window plus the other consumer's.
    fn fixed_usage(&mut self, elapsed: Duration) -> Usage {
        let window_ms = self.window.as_millis().max(1);
        let epoch_ms = (self.base + elapsed).as_millis();
        let index = u64::try_from(epoch_ms / window_ms).unwrap_or(u64::MAX);
        if index != self.fixed.0 {
            self.fixed = (index, 0);
        }
        let window_start = Duration::from_millis(u64::try_from(u128::from(index) * window_ms).unwrap_or(u64::MAX));
        let window_end = window_start + self.window;
        let counted_from = window_start.saturating_sub(self.base);
        let external = self.external_between(counted_from, elapsed);
        Usage { used: self.fixed.1.saturating_add(external), frees_at: Some(window_end.saturating_sub(self.base)) }
    }

    /// Sliding: our logged requests and the other consumer's in `(elapsed - window, elapsed]`.
    fn sliding_usage(&mut self, elapsed: Duration) -> Usage {
        let horizon = elapsed.checked_sub(self.window);
        if let Some(horizon) = horizon {
            // An entry at `t` expires once `t + window <= elapsed`.
            while self.log.front().is_some_and(|&t| t <= horizon) {
                self.log.pop_front();
            }
        }
        let from = horizon.unwrap_or(Duration::ZERO);
        let external = self.external_between(from, elapsed);
        let oldest_external = (external > 0).then(|| self.external_nth(self.external_count(from).saturating_add(1)));
        let oldest = [self.log.front().copied(), oldest_external].into_iter().flatten().min();
        Usage { used: (self.log.len() as u64).saturating_add(external), frees_at: oldest.map(|t| t + self.window) }
    }

    /// The other consumer's requests made in `(from, to]` (elapsed times).
    fn external_between(&self, from: Duration, to: Duration) -> u64 {
        self.external_count(to).saturating_sub(self.external_count(from))
    }

    /// The other consumer's requests made in `(0, t]`: one every `1 / rate` seconds.
    fn external_count(&self, t: Duration) -> u64 {
        if self.external_rate <= 0.0 {
            return 0;
        }
        // Tiny epsilon so that k / rate * rate lands on k despite float rounding.
        (t.as_secs_f64() * self.external_rate + 1e-9).floor() as u64
    }

    /// When the other consumer makes its `k`-th request (k ≥ 1), as elapsed time.
    fn external_nth(&self, k: u64) -> Duration {
        Duration::try_from_secs_f64(k as f64 / self.external_rate).map_or(LONGEST, |d| d.min(LONGEST))
    }
}

/// Whole seconds, rounded up.
pub(crate) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}
