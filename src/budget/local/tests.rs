//! Window arithmetic on paused tokio time.

use std::time::Duration;

use tokio::time::{advance, Instant};

use super::LocalBudget;
use crate::budget::{Budget, Observation, Ticket};

const W: Duration = Duration::from_secs(60);

/// A budget that has already learned (no start-up probing) from an uninformative response.
fn learned(limit: u32, window: Duration, headroom: f64) -> LocalBudget {
    let b = LocalBudget::new(limit, window, headroom);
    b.observe(None, &Observation { status: 200, ..Default::default() }, Instant::now());
    b
}

/// Acquire as fast as allowed for `span`, returning the send instants.
async fn drain_for(b: &LocalBudget, span: Duration) -> Vec<Instant> {
    let end = Instant::now() + span;
    let mut sent = Vec::new();
    loop {
        let now = Instant::now();
        match b.try_acquire(now) {
            Ok(t) => {
                b.finish(t);
                sent.push(now);
            }
            Err(at) if at > end => return sent,
            Err(at) => tokio::time::sleep_until(at).await,
        }
    }
}

fn max_in_any_window(sent: &[Instant], window: Duration) -> usize {
    (0..sent.len()).map(|i| sent[i..].iter().take_while(|t| **t < sent[i] + window).count()).max().unwrap_or(0)
}

#[tokio::test(start_paused = true)]
async fn sends_are_paced_evenly_not_in_bursts() {
    let b = learned(10, Duration::from_secs(10), 0.0);
    let sent = drain_for(&b, Duration::from_secs(30)).await;
    for pair in sent.windows(2) {
        assert_eq!(pair[1] - pair[0], Duration::from_secs(1));
    }
    assert!(max_in_any_window(&sent, Duration::from_secs(10)) <= 10);
}

#[tokio::test(start_paused = true)]
async fn never_more_than_the_limit_in_any_trailing_window_with_headroom() {
    let b = learned(1000, W, 0.01);
    let sent = drain_for(&b, Duration::from_secs(180)).await;
    assert!(max_in_any_window(&sent, W) <= 990, "{}", max_in_any_window(&sent, W));
    assert!(sent.len() as f64 >= 3.0 * 1000.0 * 0.98, "uses what is allowed: {}", sent.len());
}

#[tokio::test(start_paused = true)]
async fn the_first_request_probes_until_the_first_answer() {
    let b = LocalBudget::new(100, W, 0.0);
    let now = Instant::now();
    let probe = b.try_acquire(now).expect("the first request goes at once");
    advance(Duration::from_secs(5)).await;
    assert!(b.try_acquire(Instant::now()).is_err(), "no second request before the probe is answered");
    b.observe(
        Some(probe),
        &Observation {
            status: 200,
            remaining: Some(50),
            reset_after: Some(Duration::from_secs(30)),
            limit: Some(100),
            ..Default::default()
        },
        Instant::now(),
    );
    b.finish(probe);
    assert!(b.try_acquire(Instant::now()).is_ok(), "opens up once the server told the truth");
}

#[tokio::test(start_paused = true)]
async fn a_429_closes_the_gate_until_the_reset() {
    let b = learned(100, W, 0.0);
    let t = b.try_acquire(Instant::now()).unwrap();
    let obs = Observation {
        status: 429,
        remaining: Some(0),
        reset_after: Some(Duration::from_secs(2)),
        ..Default::default()
    };
    b.observe(Some(t), &obs, Instant::now());
    let opens = b.try_acquire(Instant::now()).unwrap_err();
    assert_eq!(opens - Instant::now(), Duration::from_secs(2));
    assert!(b.gate_until(Instant::now()).is_some());
    advance(Duration::from_secs(2)).await;
    assert!(b.try_acquire(Instant::now()).is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_429_with_remaining_left_is_a_limit_all_the_same() {
    let b = learned(100, W, 0.0);
    let t = b.try_acquire(Instant::now()).unwrap();
    let obs = Observation {
        status: 429,
        remaining: Some(40),
        retry_after: Some(Duration::from_secs(3)),
        ..Default::default()
    };
    b.observe(Some(t), &obs, Instant::now());
    assert_eq!(b.try_acquire(Instant::now()).unwrap_err() - Instant::now(), Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn a_bare_429_waits_one_window() {
    let b = learned(100, Duration::from_secs(10), 0.0);
    let t = b.try_acquire(Instant::now()).unwrap();
    b.observe(Some(t), &Observation { status: 429, ..Default::default() }, Instant::now());
    assert_eq!(b.try_acquire(Instant::now()).unwrap_err() - Instant::now(), Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn remaining_budget_is_spread_evenly_until_the_reset() {
    // Someone else spent most of the window: 9 left, reset in 10 s.
    let b = learned(1000, W, 0.0);
    let t = b.try_acquire(Instant::now()).unwrap();
    let obs = Observation {
        status: 200,
        remaining: Some(9),
        reset_after: Some(Duration::from_secs(10)),
        ..Default::default()
    };
    b.observe(Some(t), &obs, Instant::now());
    let start = Instant::now();
    let sent = drain_for(&b, Duration::from_millis(9_999)).await;
    assert!(sent.len() <= 9, "never more than the server's remaining before its reset: {}", sent.len());
    assert!(sent.len() >= 8, "but uses it: {}", sent.len());
    assert!(sent[0] - start >= Duration::from_millis(900), "spread, not spent at once");
}

#[tokio::test(start_paused = true)]
async fn remaining_counts_our_later_sends_as_unseen() {
    let b = learned(1000, W, 0.0);
    let first = b.try_acquire(Instant::now()).unwrap();
    advance(Duration::from_millis(100)).await;
    let _second = b.try_acquire(Instant::now()).unwrap();
    // The answer to the first arrives after the second was sent: remaining 1 may not count it.
    let obs = Observation {
        status: 200,
        remaining: Some(1),
        reset_after: Some(Duration::from_secs(30)),
        ..Default::default()
    };
    b.observe(Some(first), &obs, Instant::now());
    let next = b.try_acquire(Instant::now()).unwrap_err();
    assert_eq!(next - Instant::now(), Duration::from_secs(30), "nothing left until the reset");
}

#[tokio::test(start_paused = true)]
async fn the_servers_limit_replaces_the_configured_one() {
    let b = learned(1000, Duration::from_secs(10), 0.0);
    let t = b.try_acquire(Instant::now()).unwrap();
    b.observe(Some(t), &Observation { status: 200, limit: Some(10), ..Default::default() }, Instant::now());
    assert_eq!(b.snapshot(Instant::now()).limit, 10);
    assert_eq!(b.try_acquire(Instant::now()).unwrap_err() - Instant::now(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn refund_returns_the_send() {
    let b = learned(10, Duration::from_secs(10), 0.0);
    let t = b.try_acquire(Instant::now()).unwrap();
    assert!(b.try_acquire(Instant::now()).is_err());
    b.refund(t);
    assert_eq!(b.try_acquire(Instant::now()), Ok(Ticket { seq: 1 }));
}

#[tokio::test(start_paused = true)]
async fn snapshot_reports_the_servers_view() {
    let b = learned(1000, W, 0.0);
    let t = b.try_acquire(Instant::now()).unwrap();
    let obs = Observation {
        status: 200,
        limit: Some(1000),
        remaining: Some(700),
        reset_after: Some(Duration::from_secs(20)),
        reset_epoch: Some(1_800_000_000),
        clock_offset_secs: Some(-30),
        ..Default::default()
    };
    b.observe(Some(t), &obs, Instant::now());
    let s = b.snapshot(Instant::now());
    assert_eq!((s.limit, s.remaining, s.reset_in), (1000, 700, Duration::from_secs(20)));
    assert_eq!((s.server_reset_epoch, s.clock_offset_secs, s.gated), (Some(1_800_000_000), Some(-30), false));
}

#[tokio::test(start_paused = true)]
async fn timer_granularity_does_not_accumulate_into_lost_sends() {
    // 40.4 ms spacing on a 1 ms timer: each send is up to 1 ms late; the pace must not drift.
    let b = learned(50, Duration::from_secs(2), 0.01);
    let sent = drain_for(&b, Duration::from_secs(20)).await;
    assert!(sent.len() >= 494, "{} sends in 20 s (the pace allows 495)", sent.len());
    assert!(max_in_any_window(&sent, Duration::from_secs(2)) <= 50);
}

#[tokio::test(start_paused = true)]
async fn snapshot_counts_only_sends_within_the_trailing_window() {
    let b = learned(10, Duration::from_secs(10), 0.0);
    let sent = drain_for(&b, Duration::from_millis(4_500)).await;
    assert_eq!(sent.len(), 5);
    advance(Duration::from_secs(12)).await; // every send has left the window
    let s = b.snapshot(Instant::now());
    assert_eq!((s.remaining, s.reset_in), (10, Duration::ZERO));
}
