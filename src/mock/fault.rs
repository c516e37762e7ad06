//! Upstream faults the mock can inject, for tests and soaks: 5xx answers (502, 503 with or
//! without `Retry-After`, 504), connection resets (the connection is closed without an answer)
//! and slow answers. Pure: the handler asks [`FaultPlan::pick`] once per request.
//!
//! Two sources, forced first: [`FaultPlan::force`] makes the next `count` requests fault the
//! same way (deterministic, for tests); [`FaultRates`] makes a seeded random fraction of
//! requests fault (for soaks and benches).

use std::time::Duration;

use http::StatusCode;
use rand::{rngs::StdRng, Rng, SeedableRng};

/// One injected fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer with this status (502, 503 or 504) and a RackNap error envelope; no budget spent.
    Status(StatusCode),
    /// Answer 503 with `Retry-After: <seconds>` (rounded up); no budget spent.
    RetryAfter(Duration),
    /// Close the connection without answering; no budget spent.
    Reset,
    /// Answer normally, but only after this delay (the request spends budget as usual).
    Slow(Duration),
}

/// Random faults: each request draws once; the rates add up (at most 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FaultRates {
    /// Fraction of requests answered 502, 503 or 504 (equally likely).
    pub status_5xx: f64,
    /// Fraction of requests whose connection is closed without an answer.
    pub reset: f64,
    /// Fraction of requests answered after `slow_for`.
    pub slow: f64,
    /// Delay of a slow answer.
    pub slow_for: Duration,
    /// Seed of the generator: the same seed gives the same sequence of draws.
    pub seed: u64,
}

impl Default for FaultRates {
    fn default() -> Self {
        Self { status_5xx: 0.0, reset: 0.0, slow: 0.0, slow_for: Duration::from_secs(5), seed: 0 }
    }
}

impl FaultRates {
    /// Whether any fault can be drawn.
    pub fn is_active(&self) -> bool {
        self.status_5xx > 0.0 || self.reset > 0.0 || self.slow > 0.0
    }

    /// Rates must be finite, in 0..=1, and add up to at most 1.
    pub fn check(&self) -> Result<(), String> {
        let rates = [self.status_5xx, self.reset, self.slow];
        if rates.iter().any(|r| !r.is_finite() || !(0.0..=1.0).contains(r)) || rates.iter().sum::<f64>() > 1.0 {
            return Err("fault rates must be between 0 and 1 and add up to at most 1".into());
        }
        Ok(())
    }
}

/// Pending faults: forced ones, then random draws.
#[derive(Debug)]
pub(crate) struct FaultPlan {
    forced: Option<(u32, FaultKind)>,
    rates: FaultRates,
    rng: StdRng,
}

impl FaultPlan {
    /// A plan drawing at `rates` (inactive rates: no random faults).
    pub fn new(rates: FaultRates) -> Self {
        Self { forced: None, rates, rng: StdRng::seed_from_u64(rates.seed) }
    }

    /// The next `count` requests fault as `kind` (replacing any forced faults still pending).
    pub fn force(&mut self, count: u32, kind: FaultKind) {
        self.forced = (count > 0).then_some((count, kind));
    }

    /// The fault for the request arriving now, if any.
    pub fn pick(&mut self) -> Option<FaultKind> {
        if let Some((count, kind)) = self.forced.as_mut() {
            let kind = *kind;
            *count -= 1;
            if *count == 0 {
                self.forced = None;
            }
            return Some(kind);
        }
        if !self.rates.is_active() {
            return None;
        }
        self.draw()
    }

    fn draw(&mut self) -> Option<FaultKind> {
        let r = &self.rates;
        let x: f64 = self.rng.gen();
        if x < r.status_5xx {
            let status = [StatusCode::BAD_GATEWAY, StatusCode::SERVICE_UNAVAILABLE, StatusCode::GATEWAY_TIMEOUT]
                [self.rng.gen_range(0..3)];
            return Some(FaultKind::Status(status));
        }
        if x < r.status_5xx + r.reset {
            return Some(FaultKind::Reset);
        }
        (x < r.status_5xx + r.reset + r.slow).then_some(FaultKind::Slow(r.slow_for))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forced_faults_come_first_and_run_out() {
        let mut plan = FaultPlan::new(FaultRates::default());
        plan.force(2, FaultKind::Reset);
        assert_eq!(plan.pick(), Some(FaultKind::Reset));
        assert_eq!(plan.pick(), Some(FaultKind::Reset));
        assert_eq!(plan.pick(), None);
    }

    #[test]
    fn random_faults_follow_the_rates_and_the_seed() {
        let rates = FaultRates { status_5xx: 0.2, reset: 0.1, slow: 0.1, seed: 7, ..Default::default() };
        let draws = |n| {
            let mut plan = FaultPlan::new(rates);
            (0..n).map(|_| plan.pick()).collect::<Vec<_>>()
        };
        let a = draws(10_000);
        assert_eq!(a, draws(10_000), "same seed, same faults");
        let count = |f: fn(&FaultKind) -> bool| a.iter().flatten().filter(|k| f(k)).count();
        let s5xx = count(|k| matches!(k, FaultKind::Status(_)));
        let resets = count(|k| *k == FaultKind::Reset);
        let slow = count(|k| matches!(k, FaultKind::Slow(_)));
        assert!((1_800..2_200).contains(&s5xx), "{s5xx}");
        assert!((850..1_150).contains(&resets), "{resets}");
        assert!((850..1_150).contains(&slow), "{slow}");
    }

    #[test]
    fn rates_are_checked() {
        assert!(FaultRates { status_5xx: 0.7, reset: 0.4, ..Default::default() }.check().is_err());
        assert!(FaultRates { slow: f64::NAN, ..Default::default() }.check().is_err());
        assert!(FaultRates { slow: 0.5, ..Default::default() }.check().is_ok());
    }
}
