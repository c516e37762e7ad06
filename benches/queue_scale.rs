//! The queue at depth: 100,000 waiting requests. Measures memory per waiter (the waiting task
//! included) with a counting allocator, and the time per enqueue, per dispatch at depth 100k
//! against depth 100 (the head must not slow down), and per cancellation.
//!
//! `cargo bench --bench queue_scale`

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::{
        atomic::{AtomicI64, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use racknap_proxy::{
    budget::{Budget, Observation, Snapshot, Ticket},
    pace::queue::{Priority, Queue, QueueSettings},
};
use tokio::time::Instant;

struct Counting;

static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// A Budget that grants exactly the tokens it is given.
#[derive(Default)]
struct Tokens {
    left: AtomicUsize,
    seq: AtomicUsize,
}

impl Budget for Tokens {
    fn try_acquire(&self, now: Instant) -> Result<Ticket, Instant> {
        let taken = self.left.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        match taken {
            Ok(_) => Ok(Ticket { seq: self.seq.fetch_add(1, Ordering::AcqRel) as u64 + 1 }),
            Err(_) => Err(now + Duration::from_secs(3600)),
        }
    }
    fn next_send(&self, now: Instant) -> (Instant, Duration) {
        (now, Duration::ZERO)
    }
    fn refund(&self, _: Ticket) {
        self.left.fetch_add(1, Ordering::AcqRel);
    }
    fn finish(&self, _: Ticket) {}
    fn observe(&self, _: Option<Ticket>, _: &Observation, _: Instant) {}
    fn gate_until(&self, _: Instant) -> Option<Instant> {
        None
    }
    fn snapshot(&self, _: Instant) -> Snapshot {
        Snapshot {
            limit: 1,
            window: Duration::from_secs(1),
            remaining: 0,
            reset_in: Duration::ZERO,
            gated: false,
            server_reset_epoch: None,
            clock_offset_secs: None,
        }
    }
}

fn per(d: Duration, n: usize) -> String {
    format!("{:.2} µs", d.as_secs_f64() * 1e6 / n as f64)
}

async fn settle(q: &Queue, depth: usize) {
    while q.depth() != depth {
        tokio::task::yield_now().await;
    }
}

/// Grant `n` permits to a queue of `depth` waiters and time until all `n` are handed out.
async fn dispatch(tokens: &Tokens, q: &Queue, depth: usize, n: usize) -> Duration {
    let start = Instant::now();
    tokens.left.fetch_add(n, Ordering::AcqRel);
    q.budget_changed();
    settle(q, depth - n).await;
    start.elapsed()
}

async fn fill(q: &Queue, n: usize, tasks: &mut tokio::task::JoinSet<()>) -> Duration {
    let far = Instant::now() + Duration::from_secs(3600);
    let start = Instant::now();
    let before = q.depth();
    for i in 0..n {
        let q = q.clone();
        let priority = if i % 10 == 0 { Priority::High } else { Priority::Low };
        let client: Arc<str> = Arc::from(format!("svc-{}", i % 100));
        tasks.spawn(async move {
            let _ = q.acquire_with(client, priority, far).await;
        });
    }
    settle(q, before + n).await;
    start.elapsed()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    const N: usize = 100_000;
    let tokens = Arc::new(Tokens::default());
    let q = Queue::spawn_with(tokens.clone(), QueueSettings { capacity: 1_000_000, high_priority_share: 0.2 });
    let mut tasks = tokio::task::JoinSet::new();

    // Shallow reference: dispatch at depth 100.
    fill(&q, 1100, &mut tasks).await;
    let shallow = dispatch(&tokens, &q, 1100, 1000).await;
    dispatch(&tokens, &q, 100, 100).await;
    while tasks.try_join_next().is_some() {}

    let bytes_before = LIVE_BYTES.load(Ordering::Relaxed);
    let enqueue = fill(&q, N, &mut tasks).await;
    let bytes = LIVE_BYTES.load(Ordering::Relaxed) - bytes_before;
    let deep = dispatch(&tokens, &q, N, 1000).await;

    while tasks.try_join_next().is_some() {} // the 1000 served
    let n_left = q.depth();
    let start = Instant::now();
    tasks.abort_all();
    settle(&q, 0).await;
    let cancel = start.elapsed();
    // The queue still serves at once after every waiter left.
    let mut after = tokio::task::JoinSet::new();
    fill(&q, 1100, &mut after).await;
    let after_cancel = dispatch(&tokens, &q, 1100, 1000).await;

    println!("queue at depth {N} (100 clients, 10% high priority)");
    println!("  memory per waiter (waiting task + queue entry)   {} bytes", bytes / N as i64);
    println!("  enqueue (spawn + join the lane), per request     {}", per(enqueue, N));
    println!("  dispatch at depth 100, per permit                {}", per(shallow, 1000));
    println!("  dispatch at depth {N}, per permit             {}", per(deep, 1000));
    println!("  cancel (drop) every waiter, per waiter            {}", per(cancel, n_left));
    println!("  dispatch at depth 100 after the mass cancel       {}", per(after_cancel, 1000));
}
