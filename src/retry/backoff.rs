//! Jittered exponential backoff between replays after an upstream fault. Pure.

use std::time::Duration;

/// The wait before fault replay number `replay` (1 for the first): the ceiling
/// `min(max, base × 2^(replay−1))`, scaled into `[ceiling/2, ceiling)` by `unit` (a draw in
/// `[0, 1)`). Half the ceiling is guaranteed, so replays never bunch up; the other half is
/// spread, so clients that faulted together do not come back together.
pub fn backoff(replay: u32, base: Duration, max: Duration, unit: f64) -> Duration {
    let doublings = replay.saturating_sub(1).min(31);
    let ceiling = base.saturating_mul(1u32 << doublings).min(max);
    ceiling.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
}

/// A fresh jittered backoff (thread-local generator).
pub fn jittered(replay: u32, base: Duration, max: Duration) -> Duration {
    backoff(replay, base, max, rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(1);

    #[test]
    fn doubles_per_replay_and_is_capped() {
        let top: Vec<_> = (1..=6).map(|n| backoff(n, BASE, MAX, 1.0)).collect();
        let ms = |d: &Duration| d.as_millis();
        assert_eq!(top.iter().map(ms).collect::<Vec<_>>(), [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff(u32::MAX, BASE, MAX, 1.0), MAX, "no overflow");
    }

    #[test]
    fn jitter_stays_between_half_and_all_of_the_ceiling() {
        assert_eq!(backoff(3, BASE, MAX, 0.0), Duration::from_millis(200));
        for _ in 0..1000 {
            let d = jittered(3, BASE, MAX);
            assert!(d >= Duration::from_millis(200) && d <= Duration::from_millis(400), "{d:?}");
        }
        let draws: std::collections::HashSet<_> = (0..50).map(|_| jittered(3, BASE, MAX)).collect();
        assert!(draws.len() > 10, "jittered, not fixed");
    }
}
