//! The account's Budget: when may one more request go out, and what did the server say.
//!
//! [`Budget::try_acquire`] answers "now" (and records the send) or "not before T";
//! [`Budget::observe`] learns from every response (`X-RateLimit-*`, `Retry-After`, 429s).
//! The queue in front (`pace::queue`) does the waiting; the Budget only does arithmetic.

use std::time::Duration;

use tokio::time::Instant;

pub mod headers;
pub mod local;
pub mod server_clock;
#[cfg(test)]
mod sim;

pub use headers::{parse_ratelimit_headers, Observation};
pub use local::LocalBudget;

/// Proof that a send was counted: its sequence number in our own count of sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    /// 1 for the first send, 2 for the next, ...
    pub seq: u64,
}

/// The Budget as the proxy sees it now (for metrics and the `RateLimit` response fields).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Snapshot {
    /// The limit in force (learned from the server, else configured).
    pub limit: u32,
    /// The window.
    pub window: Duration,
    /// Requests we may still send before `reset_in` elapses, as we estimate it.
    pub remaining: u32,
    /// Time until the budget resets (server's reset, else until our oldest send leaves the window).
    pub reset_in: Duration,
    /// Whether a 429 has closed the gate.
    pub gated: bool,
    /// Server reset as epoch seconds on the server's clock, as last reported.
    pub server_reset_epoch: Option<u64>,
    /// Last seen server clock offset (server − us), seconds.
    pub clock_offset_secs: Option<i64>,
}

/// One account's budget. Implementations must be cheap: they run under the queue's lock.
pub trait Budget: Send + Sync + 'static {
    /// Count a send now, or say when the next one is allowed.
    fn try_acquire(&self, now: Instant) -> Result<Ticket, Instant>;
    /// Without counting anything: the earliest the next send is allowed, and the interval
    /// expected between sends after it at the current pace. For wait estimates, so it is a
    /// lower bound: the start-up probe's wait for its answer is not counted.
    /// The default reads the gate and the even pace from [`Budget::snapshot`].
    fn next_send(&self, now: Instant) -> (Instant, Duration) {
        let snap = self.snapshot(now);
        (self.gate_until(now).unwrap_or(now), snap.window / snap.limit.max(1))
    }
    /// Undo a send that never happened (its waiter left between the grant and the hand-over).
    fn refund(&self, ticket: Ticket);
    /// The attempt for `ticket` finished (answered or failed).
    fn finish(&self, ticket: Ticket);
    /// Learn from a response that arrived at `now` for the request sent with `ticket`.
    fn observe(&self, ticket: Option<Ticket>, obs: &Observation, now: Instant);
    /// Until when a 429 holds all traffic, if it does.
    fn gate_until(&self, now: Instant) -> Option<Instant>;
    /// Current state.
    fn snapshot(&self, now: Instant) -> Snapshot;
}
