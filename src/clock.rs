//! Wall-clock time derived from tokio's clock.
//!
//! The system clock is read once, at construction; after that the epoch advances with
//! `tokio::time::Instant`, so it moves (and stands still) with paused test time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// An epoch clock anchored to tokio time.
#[derive(Clone, Copy, Debug)]
pub struct EpochClock {
    base: Duration,
    start: Instant,
}

impl EpochClock {
    /// Anchor at the current system time.
    #[allow(clippy::disallowed_methods)] // the one read of the wall clock: everything else is tokio time
    pub fn system() -> Self {
        let base = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Self::at(base)
    }

    /// Anchor at a given epoch offset (tests and the mock's skew).
    pub fn at(base: Duration) -> Self {
        Self { base, start: Instant::now() }
    }

    /// Time since the unix epoch, now.
    pub fn since_epoch(&self) -> Duration {
        self.base + self.start.elapsed()
    }

    /// The same instant as a `SystemTime` (for formatting only).
    pub fn now(&self) -> SystemTime {
        UNIX_EPOCH + self.since_epoch()
    }

    /// The clock shifted by `offset` (positive: ahead).
    pub fn shifted(&self, offset_ms: i64) -> Self {
        let base = if offset_ms >= 0 {
            self.base + Duration::from_millis(offset_ms as u64)
        } else {
            self.base.saturating_sub(Duration::from_millis(offset_ms.unsigned_abs()))
        };
        Self { base, start: self.start }
    }
}

/// RFC 3339 timestamp with second precision, as the RackNap envelope's `meta.timestamp`.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}
