//! The in-memory Budget of one replica.
//!
//! Sends are paced evenly (`window / limit`, plus headroom), never more than `limit` in any
//! trailing `window` (a sliding log of our own sends), never more than the server's last
//! `Remaining` before its `Reset` (spread evenly up to the reset), and not at all while a 429's
//! gate is closed. Until the first response arrives, only one request is in flight: a proxy
//! that (re)starts mid-window does not know what was already spent.

use std::{collections::VecDeque, time::Duration};

use parking_lot::Mutex;
use tokio::time::Instant;

use super::{Budget, Observation, Snapshot, Ticket};

/// What the server last told us, anchored to our clock.
#[derive(Clone, Copy, Debug)]
struct ServerView {
    /// Remaining as estimated right after the observation (our later sends subtracted).
    remaining: i64,
    /// `sent` when that estimate was made.
    sent_at_estimate: u64,
    /// The reset instant on our clock.
    reset_at: Instant,
}

#[derive(Debug)]
struct State {
    limit: u32,
    window: Duration,
    headroom: f64,
    /// Instants of our sends within the trailing window, oldest first.
    log: VecDeque<Instant>,
    last_send: Option<Instant>,
    sent: u64,
    gate_until: Option<Instant>,
    server: Option<ServerView>,
    /// No response seen yet: probe with one request at a time.
    learned: bool,
    probes_in_flight: u32,
    server_reset_epoch: Option<u64>,
    clock_offset_secs: Option<i64>,
}

/// In-memory Budget.
#[derive(Debug)]
pub struct LocalBudget {
    state: Mutex<State>,
}

impl LocalBudget {
    /// A budget of `limit` per `window`, keeping `headroom` (a fraction) unused for jitter.
    pub fn new(limit: u32, window: Duration, headroom: f64) -> Self {
        Self {
            state: Mutex::new(State {
                limit: limit.max(1),
                window,
                headroom,
                log: VecDeque::new(),
                last_send: None,
                sent: 0,
                gate_until: None,
                server: None,
                learned: false,
                probes_in_flight: 0,
                server_reset_epoch: None,
                clock_offset_secs: None,
            }),
        }
    }
}

impl State {
    fn spacing(&self) -> Duration {
        self.window.mul_f64((1.0 + self.headroom) / f64::from(self.limit))
    }

    fn prune(&mut self, now: Instant) {
        while self.log.front().is_some_and(|t| *t + self.window <= now) {
            self.log.pop_front();
        }
        if self.gate_until.is_some_and(|g| g <= now) {
            self.gate_until = None;
        }
        if self.server.is_some_and(|s| s.reset_at <= now) {
            self.server = None;
        }
    }

    fn server_remaining(&self) -> Option<(i64, Instant)> {
        self.server.map(|s| (s.remaining - (self.sent - s.sent_at_estimate) as i64, s.reset_at))
    }

    /// The earliest instant the next send is allowed (may be in the past).
    fn next_allowed(&self, now: Instant) -> Instant {
        let mut next = now;
        if let Some(gate) = self.gate_until {
            next = next.max(gate);
        }
        if !self.learned && self.probes_in_flight > 0 {
            // Wait for the probe's answer (observe wakes the queue); a lost probe gives way
            // after one pacing interval times the limit's worth of caution.
            next = next.max(self.last_send.unwrap_or(now) + self.window);
        }
        if let Some(last) = self.last_send {
            next = next.max(last + self.spacing());
        }
        let cap = self.effective_cap();
        if self.log.len() >= cap {
            next = next.max(self.log[self.log.len() - cap] + self.window);
        }
        if let Some((remaining, reset_at)) = self.server_remaining() {
            next = next.max(spread(remaining, reset_at, self.last_send.unwrap_or(now)));
        }
        next
    }

    /// Sends allowed in one window after the headroom.
    fn effective_cap(&self) -> usize {
        ((f64::from(self.limit) / (1.0 + self.headroom)).floor() as usize).max(1)
    }
}

/// With `remaining` sends left before `reset_at`, the next one is due at an even share of the
/// time left after `from`; with none left, at the reset.
fn spread(remaining: i64, reset_at: Instant, from: Instant) -> Instant {
    if remaining <= 0 {
        return reset_at;
    }
    let left = reset_at.saturating_duration_since(from);
    from + left / (remaining as u32).saturating_add(1)
}

impl Budget for LocalBudget {
    fn try_acquire(&self, now: Instant) -> Result<Ticket, Instant> {
        let mut s = self.state.lock();
        s.prune(now);
        let next = s.next_allowed(now);
        if next > now {
            return Err(next);
        }
        s.log.push_back(now);
        s.last_send = Some(now);
        s.sent += 1;
        if !s.learned {
            s.probes_in_flight += 1;
        }
        Ok(Ticket { seq: s.sent })
    }

    fn next_send(&self, now: Instant) -> (Instant, Duration) {
        let mut s = self.state.lock();
        s.prune(now);
        let next = s.next_allowed(now);
        let interval = match s.server_remaining() {
            Some((r, at)) if r > 0 && at > next => (at - next) / (r as u32).saturating_add(1),
            _ => Duration::ZERO,
        };
        (next, interval.max(s.spacing()))
    }

    fn refund(&self, ticket: Ticket) {
        let mut s = self.state.lock();
        if s.sent == ticket.seq {
            s.log.pop_back();
            s.last_send = s.log.back().copied();
            s.sent -= 1;
            if !s.learned {
                s.probes_in_flight = s.probes_in_flight.saturating_sub(1);
            }
        }
    }

    fn finish(&self, _ticket: Ticket) {
        let mut s = self.state.lock();
        s.probes_in_flight = s.probes_in_flight.saturating_sub(1);
    }

    fn observe(&self, ticket: Option<Ticket>, obs: &Observation, now: Instant) {
        let mut s = self.state.lock();
        s.learned = true;
        if let Some(limit) = obs.limit {
            s.limit = limit;
        }
        if obs.reset_epoch.is_some() {
            s.server_reset_epoch = obs.reset_epoch;
        }
        if obs.clock_offset_secs.is_some() {
            s.clock_offset_secs = obs.clock_offset_secs;
        }
        let reset_at = obs.reset_after.map(|d| now + d);
        if let (Some(remaining), Some(reset_at)) = (obs.remaining, reset_at) {
            // Sends after this request's may not have been counted yet: assume they were not.
            let later = ticket.map_or(0, |t| s.sent.saturating_sub(t.seq)) as i64;
            let estimate = i64::from(remaining) - later;
            let keep_lower = s.server_remaining().is_some_and(|(cur, at)| {
                cur <= estimate && at.max(reset_at) - at.min(reset_at) < Duration::from_secs(1)
            });
            if !keep_lower && reset_at > now {
                s.server = Some(ServerView { remaining: estimate, sent_at_estimate: s.sent, reset_at });
            }
        }
        if obs.status == 429 {
            let wait = [obs.retry_after, obs.reset_after].into_iter().flatten().max().unwrap_or(s.window);
            let until = now + wait;
            s.gate_until = Some(s.gate_until.map_or(until, |g| g.max(until)));
            s.server = Some(ServerView { remaining: 0, sent_at_estimate: s.sent, reset_at: until });
        }
    }

    fn gate_until(&self, now: Instant) -> Option<Instant> {
        self.state.lock().gate_until.filter(|g| *g > now)
    }

    fn snapshot(&self, now: Instant) -> Snapshot {
        let mut s = self.state.lock();
        s.prune(now);
        let own_left = s.effective_cap().saturating_sub(s.log.len()) as i64;
        let own_reset = s.log.front().map_or(Duration::ZERO, |t| (*t + s.window).saturating_duration_since(now));
        let (remaining, reset_in) = match s.server_remaining() {
            Some((r, at)) => (r.min(own_left), at.saturating_duration_since(now)),
            None => (own_left, own_reset),
        };
        Snapshot {
            limit: s.limit,
            window: s.window,
            remaining: remaining.clamp(0, i64::from(u32::MAX)) as u32,
            reset_in,
            gated: s.gate_until.is_some(),
            server_reset_epoch: s.server_reset_epoch,
            clock_offset_secs: s.clock_offset_secs,
        }
    }
}

#[cfg(test)]
mod tests;
