//! The limiter's window maths, without sockets, under paused tokio time.

use std::time::Duration;

use tokio::time::{advance, Instant};

use crate::{
    clock::EpochClock,
    mock::{
        limiter::{Limiter, MockClock, Quota, Verdict},
        ForcedHeaders, WindowKind,
    },
};

/// An epoch that is a multiple of 60 s (and of 10 s).
const BASE: u64 = 1_700_000_040;

fn clock(skew_ms: i64) -> MockClock {
    MockClock::new(EpochClock::at(Duration::from_secs(BASE)).shifted(skew_ms))
}

fn limiter(kind: WindowKind, limit: u32, window_secs: u64, external_rate: f64) -> Limiter {
    Limiter::new(kind, limit, Duration::from_secs(window_secs), external_rate, clock(0))
}

fn allowed(v: Verdict) -> Quota {
    match v {
        Verdict::Allowed(q) => q,
        other => panic!("expected Allowed, got {other:?}"),
    }
}

fn limited(v: Verdict) -> Quota {
    match v {
        Verdict::Limited(q) => q,
        other => panic!("expected Limited, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn fixed_window_resets_at_the_aligned_boundary() {
    let mut l = limiter(WindowKind::Fixed, 3, 60, 0.0);
    advance(Duration::from_secs(20)).await;
    let remaining: Vec<u32> = (0..3).map(|_| allowed(l.admit(Instant::now())).remaining).collect();
    assert_eq!(remaining, [2, 1, 0]);
    let q = limited(l.admit(Instant::now()));
    assert_eq!((q.remaining, q.reset, q.retry_after), (0, BASE + 60, 40));

    advance(Duration::from_millis(39_999)).await;
    let q = limited(l.admit(Instant::now()));
    assert_eq!((q.reset, q.retry_after), (BASE + 60, 1), "rounded up, never early");

    advance(Duration::from_millis(1)).await;
    let q = allowed(l.admit(Instant::now()));
    assert_eq!((q.remaining, q.reset), (2, BASE + 120));
}

#[tokio::test(start_paused = true)]
async fn rejected_requests_spend_no_budget() {
    let mut l = limiter(WindowKind::Fixed, 1, 60, 0.0);
    allowed(l.admit(Instant::now()));
    for _ in 0..5 {
        limited(l.admit(Instant::now()));
    }
    advance(Duration::from_secs(60)).await;
    assert_eq!(allowed(l.admit(Instant::now())).remaining, 0);
}

#[tokio::test(start_paused = true)]
async fn sliding_window_frees_one_slot_when_the_oldest_expires() {
    let mut l = limiter(WindowKind::Sliding, 2, 10, 0.0);
    let q = allowed(l.admit(Instant::now()));
    assert_eq!((q.remaining, q.reset), (1, BASE + 10));
    advance(Duration::from_secs(4)).await;
    assert_eq!(allowed(l.admit(Instant::now())).remaining, 0);

    advance(Duration::from_secs(1)).await;
    let q = limited(l.admit(Instant::now()));
    assert_eq!((q.reset, q.retry_after), (BASE + 10, 5), "the request at 0 s frees at 10 s");

    advance(Duration::from_secs(5)).await;
    let q = allowed(l.admit(Instant::now()));
    assert_eq!((q.remaining, q.reset), (0, BASE + 14), "one slot freed; next frees at 4 + 10 s");
    advance(Duration::from_secs(1)).await;
    assert_eq!(limited(l.admit(Instant::now())).retry_after, 3);
}

#[tokio::test(start_paused = true)]
async fn external_consumer_spends_its_share_of_a_fixed_window() {
    // One request every 10 s from the start; 35 s in, it has made 3 in this window.
    let mut l = limiter(WindowKind::Fixed, 10, 60, 0.1);
    advance(Duration::from_secs(35)).await;
    assert_eq!(allowed(l.admit(Instant::now())).remaining, 6);
    // In the next window it starts again from zero: at 65 s it has made 0 of this window's.
    advance(Duration::from_secs(30)).await;
    assert_eq!(allowed(l.admit(Instant::now())).remaining, 9);
}

#[tokio::test(start_paused = true)]
async fn external_consumer_fills_a_sliding_window() {
    // One request per second; in (20 s, 30 s] it made 10 of the 12 allowed.
    let mut l = limiter(WindowKind::Sliding, 12, 10, 1.0);
    advance(Duration::from_secs(30)).await;
    assert_eq!(allowed(l.admit(Instant::now())).remaining, 1);
    assert_eq!(allowed(l.admit(Instant::now())).remaining, 0);
    let q = limited(l.admit(Instant::now()));
    assert_eq!((q.reset, q.retry_after), (BASE + 31, 1), "its request at 21 s frees at 31 s");
}

#[tokio::test(start_paused = true)]
async fn external_consumer_alone_can_exhaust_the_budget() {
    let mut l = limiter(WindowKind::Fixed, 5, 60, 1.0);
    advance(Duration::from_secs(10)).await;
    assert_eq!(limited(l.admit(Instant::now())).remaining, 0);
}

#[tokio::test(start_paused = true)]
async fn clock_skew_shifts_date_and_reset_together() {
    for kind in [WindowKind::Fixed, WindowKind::Sliding] {
        let deltas: Vec<(u64, u64)> = [30_000, -30_000]
            .into_iter()
            .map(|skew| {
                let c = clock(skew);
                let mut l = Limiter::new(kind, 5, Duration::from_secs(60), 0.0, c);
                let now = Instant::now();
                let q = allowed(l.admit(now));
                let date = c.epoch_at(now).as_secs();
                (date, q.reset - date)
            })
            .collect();
        assert_eq!(deltas[0].0 - deltas[1].0, 60, "{kind:?}: the Dates are 60 s apart");
        assert_eq!(deltas[0].1, deltas[1].1, "{kind:?}: Reset − Date does not depend on skew");
        assert!(deltas[0].1 > 0 && deltas[0].1 <= 60, "{kind:?}: {deltas:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn forced_429s_spend_nothing_and_reset_from_arrival() {
    let mut l = limiter(WindowKind::Fixed, 10, 60, 0.0);
    allowed(l.admit(Instant::now()));
    l.force(2, Duration::from_millis(2_500), ForcedHeaders::RateLimit);
    advance(Duration::from_secs(5)).await;
    for _ in 0..2 {
        let Verdict::Forced(f) = l.admit(Instant::now()) else { panic!("forced") };
        assert_eq!(f.headers, ForcedHeaders::RateLimit);
        assert_eq!((f.quota.remaining, f.quota.reset, f.quota.retry_after), (9, BASE + 8, 3));
    }
    assert_eq!(allowed(l.admit(Instant::now())).remaining, 8);
}
