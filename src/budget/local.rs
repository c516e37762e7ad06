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

use super::{server_clock::ServerClock, Budget, Observation, Snapshot, Ticket};

/// What the server last told us, anchored to our clock.
#[derive(Clone, Copy, Debug)]
struct ServerView {
    /// Remaining as estimated right after the observation (our later sends subtracted).
    remaining: i64,
    /// `sent` when that estimate was made.
    sent_at_estimate: u64,
    /// The reset instant on our clock.
    reset_at: Instant,
    /// When the answer arrived, and which of our sends it had counted (at most).
    observed_at: Instant,
    counted_upto: u64,
}

#[derive(Debug)]
struct State {
    limit: u32,
    window: Duration,
    headroom: f64,
    /// Instants of our sends within the trailing window, oldest first.
    log: VecDeque<Instant>,
    last_send: Option<Instant>,
    /// The next send's slot on the ideal, evenly spaced schedule (a send that the timer made a
    /// little late does not push the ones after it), and the one before the last send.
    next_slot: Option<Instant>,
    prev_slot: Option<Instant>,
    sent: u64,
    gate_until: Option<Instant>,
    server: Option<ServerView>,
    /// No response seen yet: probe with one request at a time.
    learned: bool,
    probes_in_flight: u32,
    server_reset_epoch: Option<u64>,
    clock_offset_secs: Option<i64>,
    /// The server's clock, from the `Date` headers.
    server_clock: ServerClock,
    /// Other consumers' spending, requests per second (smoothed).
    others_rate: f64,
    /// The server's window has been seen to slide (its reset moved by less than a window).
    sliding: bool,
    /// Longest recent time from a send to its answer.
    rtt: Duration,
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
                next_slot: None,
                prev_slot: None,
                sent: 0,
                gate_until: None,
                server: None,
                learned: false,
                probes_in_flight: 0,
                server_reset_epoch: None,
                clock_offset_secs: None,
                server_clock: ServerClock::new(Instant::now()),
                others_rate: 0.0,
                sliding: false,
                rtt: Duration::ZERO,
            }),
        }
    }
}

impl State {
    fn spacing(&self) -> Duration {
        self.window.mul_f64((1.0 + self.headroom) / f64::from(self.limit))
    }

    fn prune(&mut self, now: Instant) {
        // Kept two windows: the last answers still speak of sends a window and a round trip old,
        // and each one that has left the server's window since counts as freed (`own_frees`).
        while self.log.front().is_some_and(|t| *t + 2 * self.window + self.rtt <= now) {
            self.log.pop_front();
        }
        if self.gate_until.is_some_and(|g| g <= now) {
            self.gate_until = None;
        }
        if self.server.is_some_and(|s| s.reset_at <= now) {
            self.server = None;
        }
    }

    /// The server's remaining as of `now` (our sends since subtracted, our counted sends that
    /// have left its window since added) and its reset.
    fn server_remaining(&self, now: Instant) -> Option<(i64, Instant)> {
        let v = self.server?;
        let spent = (self.sent - v.sent_at_estimate) as i64;
        Some((v.remaining - spent + self.own_frees(&v, v.observed_at, now).0, v.reset_at))
    }

    /// Our sends the server had counted that leave any window in `(after, until]`: each one
    /// frees a request whether the window is fixed or slides (whoever else spends the
    /// account), and the first instant one does.
    fn own_frees(&self, v: &ServerView, after: Instant, until: Instant) -> (i64, Option<Instant>) {
        let age = self.window + self.rtt;
        let Some(first) = (self.sent + 1).checked_sub(self.log.len() as u64) else { return (0, None) };
        let upto = usize::try_from((v.counted_upto + 1).saturating_sub(first)).unwrap_or(0).min(self.log.len());
        // Only sends the answer counted: in a fixed window those since it began (`reset −
        // window`; the previous window's were never in its count); in a sliding one those
        // within a window of the answer (its rounded reset would exclude too many).
        let start = if self.sliding { v.observed_at } else { v.reset_at };
        let start = start.checked_sub(self.window).unwrap_or(start);
        let from = self.log.partition_point(|t| *t + age <= after).max(self.log.partition_point(|t| *t < start));
        let to = self.log.partition_point(|t| *t + age <= until).min(upto);
        let first_free = (from < to).then(|| self.log[from] + age);
        (to.saturating_sub(from) as i64, first_free)
    }

    /// The earliest instant the next send is allowed (may be in the past).
    fn next_allowed(&self, now: Instant) -> Instant {
        let mut next = self.next_paced(now);
        if !self.learned && self.probes_in_flight > 0 {
            // Wait for the probe's answer (observe wakes the queue); a lost probe gives way
            // after one pacing interval times the limit's worth of caution.
            next = next.max(self.last_send.unwrap_or(now) + self.window);
        }
        next
    }

    /// The earliest next send by the gate, the pace and what the server said (the start-up
    /// probe's wait aside: its answer usually comes within a round trip).
    fn next_paced(&self, now: Instant) -> Instant {
        let mut next = now;
        if let Some(gate) = self.gate_until {
            next = next.max(gate);
        }
        if let Some(slot) = self.next_slot {
            next = next.max(slot);
        }
        let cap = self.effective_cap();
        if self.log.len() >= cap {
            next = next.max(self.log[self.log.len() - cap] + self.window);
        }
        if let (Some((remaining, reset_at)), Some(v)) = (self.server_remaining(now), self.server) {
            // What others will spend before a fixed window's reset is not ours to spend (in a
            // sliding window their old requests free as fast as their new ones spend).
            let others = if self.sliding { 0 } else { self.others_until(now, reset_at) };
            // Our own sends that will leave the window before the reset free requests too
            // (never in a fixed window: its sends all leave at the reset).
            let (upcoming, first_free) = self.own_frees(&v, now, reset_at);
            next = next.max(spread(remaining + upcoming - others, reset_at, self.last_send.unwrap_or(now)));
            // With others spending a sliding window, a lone free request may be theirs by the
            // time ours arrives: keep one in hand.
            let keep = i64::from(self.sliding && self.others_rate > 0.0);
            if remaining <= keep {
                next = next.max(first_free.unwrap_or(reset_at).min(reset_at));
            }
        }
        next
    }

    /// What the others spent: the server's used count (`limit − remaining`) minus our own sends
    /// since the window it speaks of began (`reset − window`: the window's start when it is
    /// fixed, the oldest counted request when it slides), over the time since then.
    fn learn_others(&mut self, limit: u32, remaining: u32, reset_at: Instant, seq: u64, now: Instant) {
        // A sliding window's reset is rounded up: the window it counts is the one ending now.
        let end = if self.sliding { now.checked_sub(self.rtt).unwrap_or(now) } else { reset_at };
        let Some(start) = end.checked_sub(self.window) else { return };
        let span = now.saturating_duration_since(start);
        if span < self.window / 4 {
            return; // too early in the window to tell a rate from noise
        }
        let Some(first) = (self.sent + 1).checked_sub(self.log.len() as u64) else { return };
        let upto = usize::try_from(seq.saturating_sub(first) + 1).unwrap_or(0).min(self.log.len());
        let ours = upto.saturating_sub(self.log.partition_point(|t| *t < start));
        // One send of ours near the window's start may be counted on either side of it.
        let others = (i64::from(limit) - i64::from(remaining) - ours as i64 - 1).max(0) as f64;
        let rate = others / span.as_secs_f64();
        self.others_rate = 0.8 * self.others_rate + 0.2 * rate;
    }

    /// Others' expected spending between now and `until`.
    fn others_until(&self, now: Instant, until: Instant) -> i64 {
        (self.others_rate * until.saturating_duration_since(now).as_secs_f64()).ceil() as i64
    }

    /// When send `seq` left, while it is still in the log.
    fn send_instant(&self, seq: u64) -> Option<Instant> {
        let first = self.sent.checked_sub(self.log.len() as u64)? + 1;
        self.log.get(usize::try_from(seq.checked_sub(first)?).ok()?).copied()
    }

    /// Sends allowed in one window after the headroom (whole requests of it: the pacing keeps
    /// the fraction).
    fn effective_cap(&self) -> usize {
        let keep = (f64::from(self.limit) * self.headroom).floor() as usize;
        (self.limit as usize).saturating_sub(keep).max(1)
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
        // Late by less than half a spacing: stay on the grid; later than that: start afresh.
        let spacing = s.spacing();
        let grid = s.next_slot.filter(|slot| *slot + spacing / 2 >= now).unwrap_or(now);
        s.prev_slot = s.next_slot;
        s.next_slot = Some(grid + spacing);
        s.sent += 1;
        if !s.learned {
            s.probes_in_flight += 1;
        }
        Ok(Ticket { seq: s.sent })
    }

    fn next_send(&self, now: Instant) -> (Instant, Duration) {
        let mut s = self.state.lock();
        s.prune(now);
        let next = s.next_paced(now);
        let interval = match s.server_remaining(now) {
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
            s.next_slot = s.prev_slot;
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
        if let Some(limit) = obs.limit.filter(|l| *l != s.limit) {
            s.limit = limit;
            // The pace changes now: the next slot moves to the new spacing after the last send.
            if let Some(last) = s.last_send {
                let spaced = last + s.spacing();
                s.next_slot = Some(s.next_slot.map_or(spaced, |slot| slot.max(spaced)));
            }
        }
        if let (Some(new), Some(old)) = (obs.reset_epoch, s.server_reset_epoch) {
            // A fixed window's reset jumps by whole windows; a sliding one's creeps.
            s.sliding |= new > old && Duration::from_secs(new - old) < s.window;
        }
        if obs.reset_epoch.is_some() {
            s.server_reset_epoch = obs.reset_epoch;
        }
        if obs.clock_offset_secs.is_some() {
            s.clock_offset_secs = obs.clock_offset_secs;
        }
        let sent = ticket.and_then(|t| s.send_instant(t.seq));
        if let Some(sent) = sent {
            s.rtt = s.rtt.mul_f64(0.99).max(now - sent);
        }
        if let Some(date) = obs.date_epoch {
            s.server_clock.observe(date, sent, now);
        }
        let reset_at = obs.reset_after.map(|d| s.server_clock.reset_at(obs.reset_epoch, d, now));
        if let (Some(remaining), Some(reset_at)) = (obs.remaining, reset_at) {
            // Sends after this request's may not have been counted yet: assume they were not.
            let later = ticket.map_or(0, |t| s.sent.saturating_sub(t.seq)) as i64;
            let estimate = i64::from(remaining) - later;
            if let (Some(limit), Some(t)) = (obs.limit, ticket) {
                s.learn_others(limit, remaining, reset_at, t.seq, now);
            }
            let keep_lower = s.server_remaining(now).is_some_and(|(cur, at)| {
                cur <= estimate && at.max(reset_at) - at.min(reset_at) < Duration::from_secs(1)
            });
            if !keep_lower && reset_at > now {
                let counted_upto = ticket.map_or(0, |t| t.seq);
                s.server = Some(ServerView {
                    remaining: estimate,
                    sent_at_estimate: s.sent,
                    reset_at,
                    observed_at: now,
                    counted_upto,
                });
            }
        }
        if obs.status == 429 {
            let wait = [obs.retry_after, obs.reset_after].into_iter().flatten().max().unwrap_or(s.window);
            let until = now + wait;
            s.gate_until = Some(s.gate_until.map_or(until, |g| g.max(until)));
            s.server = Some(ServerView {
                remaining: 0,
                sent_at_estimate: s.sent,
                reset_at: until,
                observed_at: now,
                counted_upto: 0,
            });
        }
    }

    fn gate_until(&self, now: Instant) -> Option<Instant> {
        self.state.lock().gate_until.filter(|g| *g > now)
    }

    fn snapshot(&self, now: Instant) -> Snapshot {
        let mut s = self.state.lock();
        s.prune(now);
        let first_in_window = s.log.partition_point(|t| *t + s.window <= now);
        let own_left = s.effective_cap().saturating_sub(s.log.len() - first_in_window) as i64;
        let own_reset =
            s.log.get(first_in_window).map_or(Duration::ZERO, |t| (*t + s.window).saturating_duration_since(now));
        let (remaining, reset_in) = match s.server_remaining(now) {
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
