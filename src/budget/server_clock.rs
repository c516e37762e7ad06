//! The server's clock, estimated to a fraction of a second from the `Date` headers it sends.
//!
//! `Date` is truncated to whole seconds, so `Reset − Date` alone can place a reset up to a
//! second late: with short windows that idles a large part of each window. Every answer brackets
//! the server's clock: it was stamped with second `D` at some server time in `[D, D + 1)`, between
//! our send and our receipt. The latest lower bound over many answers converges on the true
//! offset (skew included, whatever its size), and a reset placed with it is never early: it is
//! the latest instant consistent with everything the server said. An answer that contradicts
//! the bound (the server's clock stepped back) starts the estimate afresh.

use std::time::Duration;

use tokio::time::Instant;

/// Added to every estimated server instant.
const MARGIN: f64 = 0.002;

/// Lower bound of the server's epoch on our clock.
#[derive(Clone, Copy, Debug)]
pub struct ServerClock {
    anchor: Instant,
    /// `server_epoch(t) ≥ low + (t − anchor)`, seconds.
    low: Option<f64>,
}

impl ServerClock {
    /// No knowledge yet; `anchor` is any fixed instant.
    pub fn new(anchor: Instant) -> Self {
        Self { anchor, low: None }
    }

    /// An answer stamped `date` (epoch seconds), for a request sent at `sent`, arrived at `received`.
    pub fn observe(&mut self, date: u64, sent: Option<Instant>, received: Instant) {
        let since = |t: Instant| t.saturating_duration_since(self.anchor).as_secs_f64();
        let lower = date as f64 - since(received);
        let upper = sent.map(|s| date as f64 + 1.0 - since(s));
        self.low = Some(match self.low {
            Some(low) if upper.is_some_and(|u| u < low) => lower, // the server's clock stepped back
            Some(low) => low.max(lower),
            None => lower,
        });
    }

    /// The latest instant on our clock at which the server's clock can read `epoch`.
    pub fn instant_of(&self, epoch: u64) -> Option<Instant> {
        // A few milliseconds past the bound: float rounding must never place a reset early.
        let at = epoch as f64 - self.low? + MARGIN;
        Some(self.anchor + Duration::try_from_secs_f64(at.max(0.0)).ok()?)
    }

    /// Place a reset announced as `epoch` in an answer that arrived at `now` with
    /// `reset_after = Reset − Date`: the estimate, kept within what `Date`'s truncation allows
    /// (`(reset_after − 1 s, reset_after]` from now).
    pub fn reset_at(&self, epoch: Option<u64>, reset_after: Duration, now: Instant) -> Instant {
        let latest = now + reset_after;
        let earliest = now + reset_after.saturating_sub(Duration::from_secs(1));
        match epoch.and_then(|e| self.instant_of(e)) {
            Some(at) => at.clamp(earliest, latest),
            None => latest,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn many_answers_pin_the_offset_to_a_fraction_of_a_second() {
        let anchor = Instant::now();
        let mut c = ServerClock::new(anchor);
        // Server epoch = 1000.3 + elapsed; answers every 70 ms, received at once.
        for i in 0..40u64 {
            let t = anchor + Duration::from_millis(70 * i);
            let server = 1000.3 + (70 * i) as f64 / 1000.0;
            c.observe(server.floor() as u64, Some(t), t);
        }
        let at = c.instant_of(1003).unwrap();
        let truth = anchor + Duration::from_millis(2700);
        assert!(at >= truth && at - truth < Duration::from_millis(85), "{:?}", at - truth);
    }

    #[tokio::test(start_paused = true)]
    async fn a_clock_that_steps_back_restarts_the_estimate() {
        let anchor = Instant::now();
        let mut c = ServerClock::new(anchor);
        c.observe(1000, Some(anchor), anchor);
        let later = anchor + Duration::from_secs(1);
        c.observe(900, Some(later), later); // 100 s behind what it said a second ago
        assert_eq!(c.instant_of(901), Some(anchor + Duration::from_millis(2002)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reset_is_kept_within_what_date_allows() {
        let now = Instant::now();
        let c = ServerClock::new(now);
        assert_eq!(c.reset_at(Some(5), Duration::from_secs(3), now), now + Duration::from_secs(3));
    }
}
