//! The queue on paused time: order, fairness, bounds, cancellation.

use std::{sync::Arc, time::Duration};

use tokio::time::Instant;

use super::queue::Queue;
use crate::{
    budget::{Budget, LocalBudget, Observation},
    error::ProxyError,
};

fn queue(limit: u32, window: Duration, capacity: usize) -> (Queue, Arc<dyn Budget>) {
    let b: Arc<dyn Budget> = Arc::new(LocalBudget::new(limit, window, 0.0));
    b.observe(None, &Observation { status: 200, ..Default::default() }, Instant::now());
    (Queue::spawn(b.clone(), capacity), b)
}

fn far() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}

#[tokio::test(start_paused = true)]
async fn one_flooding_client_cannot_starve_another() {
    let (q, _) = queue(10, Duration::from_secs(10), 1000);
    let order = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (q, order) = (q.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let p = q.acquire(Arc::from("flood"), far()).await.unwrap();
            order.lock().push(format!("flood{i}"));
            drop(p);
        }));
        tokio::task::yield_now().await;
    }
    for i in 0..3 {
        let (q, order) = (q.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let p = q.acquire(Arc::from("quiet"), far()).await.unwrap();
            order.lock().push(format!("quiet{i}"));
            drop(p);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let order = order.lock();
    let last_quiet = order.iter().position(|s| s == "quiet2").unwrap();
    assert!(last_quiet <= 8, "round-robin serves the quiet client early: {order:?}");
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_waiter_spends_no_permit() {
    let (q, b) = queue(1, Duration::from_secs(10), 10);
    let first = q.acquire(Arc::from("a"), far()).await.unwrap();
    drop(first);
    let waiting = tokio::spawn({
        let q = q.clone();
        async move { q.acquire(Arc::from("a"), far()).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    waiting.abort();
    let _ = waiting.await;
    assert_eq!(q.depth(), 0);
    tokio::time::sleep(Duration::from_secs(20)).await;
    // The cancelled waiter never took the slot: one send so far.
    let next = q.acquire(Arc::from("b"), far()).await.unwrap();
    assert_eq!(next.ticket().seq, 2);
    assert_eq!(b.snapshot(Instant::now()).limit, 1);
}

#[tokio::test(start_paused = true)]
async fn capacity_is_a_bound() {
    let (q, _) = queue(1, Duration::from_secs(60), 2);
    let _p = q.acquire(Arc::from("a"), far()).await.unwrap();
    let _w1 = tokio::spawn({
        let q = q.clone();
        async move { q.acquire(Arc::from("a"), far()).await }
    });
    let _w2 = tokio::spawn({
        let q = q.clone();
        async move { q.acquire(Arc::from("b"), far()).await }
    });
    tokio::task::yield_now().await;
    tokio::task::yield_now().await;
    assert_eq!(q.depth(), 2);
    match q.acquire(Arc::from("c"), far()).await {
        Err(ProxyError::QueueFull { capacity: 2, retry_after }) => assert!(retry_after >= Duration::from_secs(60)),
        other => panic!("expected QueueFull, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_that_cannot_be_sent_before_its_deadline_is_refused_at_once() {
    let (q, _) = queue(1, Duration::from_secs(60), 10);
    let _p = q.acquire(Arc::from("a"), far()).await.unwrap();
    let start = Instant::now();
    let r = q.acquire(Arc::from("a"), start + Duration::from_secs(5)).await;
    match r {
        Err(ProxyError::QueueDeadline { retry_after, .. }) => assert!(retry_after >= Duration::from_secs(59)),
        other => panic!("expected QueueDeadline, got {other:?}"),
    }
    assert_eq!(start.elapsed(), Duration::ZERO, "answered at once, not after the wait");
    assert_eq!(q.depth(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_that_the_lanes_backlog_would_miss_is_refused_at_once() {
    let (q, _) = queue(10, Duration::from_secs(10), 100);
    let _p = q.acquire(Arc::from("a"), far()).await.unwrap();
    let mut waiting = Vec::new();
    for _ in 0..5 {
        let q = q.clone();
        waiting.push(tokio::spawn(async move { q.acquire(Arc::from("a"), far()).await }));
    }
    tokio::task::yield_now().await;
    // Five ahead in the same lane at one per second: 3 s is not enough, 7 s is.
    let start = Instant::now();
    let r = q.acquire(Arc::from("a"), start + Duration::from_secs(3)).await;
    assert!(matches!(r, Err(ProxyError::QueueDeadline { .. })), "{r:?}");
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert!(q.acquire(Arc::from("a"), start + Duration::from_secs(7)).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn high_priority_jumps_a_low_priority_backlog_within_its_share() {
    use crate::pace::queue::{Priority, QueueSettings};
    let b: Arc<dyn Budget> = Arc::new(LocalBudget::new(10, Duration::from_secs(10), 0.0));
    b.observe(None, &Observation { status: 200, ..Default::default() }, Instant::now());
    let q = Queue::spawn_with(b, QueueSettings { capacity: 1000, high_priority_share: 0.2 });
    let order = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    let mut add = |name: String, p: Priority| {
        let (q, order) = (q.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = q.acquire_with(Arc::from("svc"), p, far()).await.unwrap();
            order.lock().push(name);
        }));
    };
    for i in 0..20 {
        add(format!("low{i}"), Priority::Low);
    }
    tokio::task::yield_now().await;
    for i in 0..4 {
        add(format!("high{i}"), Priority::High);
    }
    for t in tasks {
        t.await.unwrap();
    }
    let order = order.lock();
    let pos = |n: &str| order.iter().position(|s| s == n).unwrap();
    assert!(pos("high0") <= 2, "the first high request goes next: {order:?}");
    // Backlogged together, high gets its reserved fifth of the permits and low the rest.
    let first_ten_high = order[..10].iter().filter(|s| s.starts_with("high")).count();
    assert!((2..=3).contains(&first_ten_high), "{order:?}");
}

#[tokio::test(start_paused = true)]
async fn closing_answers_every_waiter() {
    let (q, _) = queue(1, Duration::from_secs(60), 10);
    let _p = q.acquire(Arc::from("a"), far()).await.unwrap();
    let w = tokio::spawn({
        let q = q.clone();
        async move { q.acquire(Arc::from("a"), far()).await }
    });
    tokio::task::yield_now().await;
    q.close();
    assert!(matches!(w.await.unwrap(), Err(ProxyError::ShuttingDown)));
    assert!(matches!(q.acquire(Arc::from("b"), far()).await, Err(ProxyError::ShuttingDown)));
}

#[tokio::test(start_paused = true)]
async fn a_deep_queue_drains_in_order_at_the_pace() {
    let (q, _) = queue(100, Duration::from_secs(1), 200_000);
    let n = 2_000;
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let q = q.clone();
        tasks.push(tokio::spawn(async move { q.acquire(Arc::from("a"), far()).await.map(|p| p.ticket().seq) }));
    }
    let start = Instant::now();
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap().unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=n as u64).collect::<Vec<_>>());
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(19_900) && took <= Duration::from_millis(20_100), "{took:?}");
}

#[tokio::test(start_paused = true)]
async fn a_short_deadline_is_not_refused_while_the_start_up_probe_is_out() {
    // The probe's answer usually comes in milliseconds: the window-long fallback is no estimate.
    let b: Arc<dyn Budget> = Arc::new(LocalBudget::new(100, Duration::from_secs(60), 0.0));
    let q = Queue::spawn(b.clone(), 10);
    let probe = q.acquire(Arc::from("a"), far()).await.unwrap();
    let second = tokio::spawn({
        let q = q.clone();
        async move { q.acquire(Arc::from("a"), Instant::now() + Duration::from_secs(1)).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    b.observe(Some(probe.ticket()), &Observation { status: 200, ..Default::default() }, Instant::now());
    q.budget_changed();
    assert!(second.await.unwrap().is_ok(), "granted once the probe was answered");
}

#[tokio::test(start_paused = true)]
async fn a_start_up_probe_that_fails_lets_the_next_request_go_at_once() {
    // No answer has been observed yet: one request at a time. When the probe's attempt ends
    // without an answer (a connect error), the next waiter must not sit out a whole window.
    let b: Arc<dyn Budget> = Arc::new(LocalBudget::new(10, Duration::from_secs(60), 0.0));
    let q = Queue::spawn(b, 10);
    let probe = q.acquire(Arc::from("a"), far()).await.unwrap();
    let next = tokio::spawn({
        let q = q.clone();
        async move { q.acquire(Arc::from("a"), far()).await.map(|_| Instant::now()) }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let failed_at = Instant::now();
    drop(probe); // the attempt failed: nothing observed
    let granted_at = next.await.unwrap().unwrap();
    assert!(
        granted_at - failed_at <= Duration::from_secs(6),
        "waited {:?} after the probe ended",
        granted_at - failed_at
    );
}
