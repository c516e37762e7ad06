//! The queue in front of the Budget: bounded, two priority classes with a reserved share for
//! high priority, per-client sub-queues served round-robin within each class, a deadline per
//! waiter (refused at once when the Budget's pace already says it cannot be met), and
//! cancellation by `drop` (a waiter that leaves spends nothing).
//!
//! One dispatcher task hands out permits in order as the Budget allows; it is woken only when
//! it sleeps without a timer or the Budget learned something. Every operation is O(1)
//! amortised in the queue's length: dead waiters are skipped lazily and compacted in bulk
//! (`cargo bench --bench queue_scale` measures depth 100,000).

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use parking_lot::Mutex;
use tokio::{
    sync::{oneshot, Notify},
    time::Instant,
};

use crate::{
    budget::{Budget, Ticket},
    error::ProxyError,
};

/// Who is asking: the fairness unit.
pub type ClientId = Arc<str>;

mod lanes;

pub use lanes::Priority;
use lanes::{Lanes, Waiter};

/// A granted send. Dropping it tells the Budget the attempt is over.
pub struct Permit {
    ticket: Ticket,
    shared: Arc<Shared>,
    /// How long the request waited for it.
    pub waited: Duration,
}

impl Permit {
    /// The Budget's record of this send.
    pub fn ticket(&self) -> Ticket {
        self.ticket
    }
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit").field("ticket", &self.ticket).field("waited", &self.waited).finish()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.shared.budget.finish(self.ticket);
        // An attempt that ends can open the gate (the start-up probe): let the dispatcher look.
        self.shared.wake.notify_one();
    }
}

impl std::fmt::Debug for dyn Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Budget")
    }
}

/// How the queue is bounded and shared.
#[derive(Clone, Copy, Debug)]
pub struct QueueSettings {
    /// Most requests waiting at once.
    pub capacity: usize,
    /// Share of the permits reserved for high priority while both classes wait (0 < share ≤ 1;
    /// 1 is strict priority). A class with nobody waiting lends its share to the other.
    pub high_priority_share: f64,
}

struct Shared {
    budget: Arc<dyn Budget>,
    lanes: Mutex<Lanes>,
    /// Waiters still waiting (dead ones excluded).
    live: AtomicUsize,
    wake: Notify,
    capacity: usize,
}

/// Handle to the queue; cheap to clone.
#[derive(Clone)]
pub struct Queue {
    shared: Arc<Shared>,
}

/// Decrements the live count once, whether the waiter is served, times out or is dropped.
struct LiveGuard<'a>(&'a AtomicUsize);

impl Drop for LiveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Queue {
    /// A queue over `budget` holding at most `capacity` waiters, one class; spawns the dispatcher.
    pub fn spawn(budget: Arc<dyn Budget>, capacity: usize) -> Self {
        Self::spawn_with(budget, QueueSettings { capacity, high_priority_share: 0.2 })
    }

    /// A queue over `budget` with `settings`; spawns the dispatcher.
    pub fn spawn_with(budget: Arc<dyn Budget>, settings: QueueSettings) -> Self {
        let share = settings.high_priority_share.clamp(0.01, 1.0);
        let low = if share >= 1.0 { 1e9 } else { 1.0 / (1.0 - share) };
        let lanes = Lanes::new([1.0 / share, low]);
        let shared = Arc::new(Shared {
            budget,
            lanes: Mutex::new(lanes),
            live: AtomicUsize::new(0),
            wake: Notify::new(),
            capacity: settings.capacity,
        });
        tokio::spawn(dispatch(shared.clone()));
        Self { shared }
    }

    /// The Budget behind the queue.
    pub fn budget(&self) -> &Arc<dyn Budget> {
        &self.shared.budget
    }

    /// Requests waiting now.
    pub fn depth(&self) -> usize {
        self.shared.live.load(Ordering::Acquire)
    }

    /// Wait for a permit until `deadline` (low priority). Dropping the future leaves the queue.
    pub async fn acquire(&self, client: ClientId, deadline: Instant) -> Result<Permit, ProxyError> {
        self.acquire_with(client, Priority::Low, deadline).await
    }

    /// Wait for a permit until `deadline`. A request that cannot be granted in time by the
    /// queue's estimate is refused at once; dropping the future leaves the queue at no cost.
    pub async fn acquire_with(
        &self,
        client: ClientId,
        priority: Priority,
        deadline: Instant,
    ) -> Result<Permit, ProxyError> {
        let start = Instant::now();
        let rx = match self.enqueue_or_grant(client, priority, start, deadline)? {
            Ok(ticket) => return Ok(self.permit(ticket, start)),
            Err(rx) => rx,
        };
        let _live = LiveGuard(&self.shared.live);
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(ticket)) => Ok(self.permit(ticket, start)),
            Ok(Err(_)) => Err(ProxyError::ShuttingDown),
            Err(_) => Err(ProxyError::QueueDeadline {
                max_wait: deadline.saturating_duration_since(start),
                retry_after: self.estimated_wait(),
            }),
        }
    }

    fn permit(&self, ticket: Ticket, start: Instant) -> Permit {
        Permit { ticket, shared: self.shared.clone(), waited: start.elapsed() }
    }

    /// Grant at once when nobody waits and the Budget allows, else join `client`'s lane (or
    /// refuse when full, or when even the lane's own backlog at the current pace would miss
    /// `deadline`).
    #[allow(clippy::type_complexity)]
    fn enqueue_or_grant(
        &self,
        client: ClientId,
        priority: Priority,
        now: Instant,
        deadline: Instant,
    ) -> Result<Result<Ticket, oneshot::Receiver<Ticket>>, ProxyError> {
        let s = &self.shared;
        let mut lanes = s.lanes.lock();
        if lanes.closed {
            return Err(ProxyError::ShuttingDown);
        }
        let live = s.live.load(Ordering::Acquire);
        if live == 0 {
            if let Ok(ticket) = s.budget.try_acquire(now) {
                return Ok(Ok(ticket));
            }
        }
        if live >= s.capacity {
            return Err(ProxyError::QueueFull { capacity: s.capacity, retry_after: self.estimated_wait() });
        }
        let ahead = lanes.lane_len(priority, &client);
        let earliest = self.earliest_grant(now, ahead);
        if earliest > deadline {
            return Err(ProxyError::QueueDeadline {
                max_wait: deadline.saturating_duration_since(now),
                retry_after: earliest - now,
            });
        }
        let (tx, rx) = oneshot::channel();
        lanes.push(priority, client, Waiter { tx });
        s.live.fetch_add(1, Ordering::AcqRel);
        if lanes.entries() > 1024 && lanes.entries() > 2 * (live + 1) {
            lanes.compact();
        }
        let wake = std::mem::take(&mut lanes.idle); // otherwise it already waits on the Budget
        drop(lanes);
        if wake {
            s.wake.notify_one();
        }
        Ok(Err(rx))
    }

    /// The earliest a waiter with `ahead` waiters before it could be granted, at the Budget's
    /// current pace (a lower bound: other clients' turns are not counted).
    fn earliest_grant(&self, now: Instant, ahead: usize) -> Instant {
        let (next, interval) = self.shared.budget.next_send(now);
        next + interval * u32::try_from(ahead).unwrap_or(u32::MAX)
    }

    /// Rough time until a request joining now would be served.
    pub fn estimated_wait(&self) -> Duration {
        let now = Instant::now();
        let (next, interval) = self.shared.budget.next_send(now);
        (next - now) + interval * u32::try_from(self.depth()).unwrap_or(u32::MAX)
    }

    /// Refuse new waiters and wake the dispatcher so it can drop the ones left.
    pub fn close(&self) {
        self.shared.lanes.lock().closed = true;
        self.shared.wake.notify_one();
    }

    /// Wake the dispatcher: the Budget learned something that may move the next send.
    pub fn budget_changed(&self) {
        self.shared.wake.notify_one();
    }
}

/// Hand out permits as the Budget allows, for as long as the queue exists.
async fn dispatch(shared: Arc<Shared>) {
    loop {
        let next = step(&shared);
        if Arc::strong_count(&shared) == 1 {
            return; // every Queue handle is gone
        }
        match next {
            Step::Idle => shared.wake.notified().await,
            Step::Until(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = shared.wake.notified() => {}
                }
            }
            Step::Again => {}
        }
    }
}

enum Step {
    Idle,
    Until(Instant),
    Again,
}

fn step(shared: &Shared) -> Step {
    let mut lanes = shared.lanes.lock();
    let next = step_locked(shared, &mut lanes);
    lanes.idle = matches!(next, Step::Idle);
    next
}

fn step_locked(shared: &Shared, lanes: &mut Lanes) -> Step {
    if lanes.closed {
        lanes.clear();
        return Step::Idle;
    }
    if lanes.entries() == 0 {
        return Step::Idle;
    }
    let now = Instant::now();
    match shared.budget.try_acquire(now) {
        Err(at) => {
            if shared.live.load(Ordering::Acquire) == 0 {
                lanes.compact();
                return Step::Idle;
            }
            Step::Until(at)
        }
        Ok(ticket) => match lanes.pop() {
            None => {
                shared.budget.refund(ticket);
                Step::Idle
            }
            Some(w) => {
                if let Err(ticket) = w.tx.send(ticket) {
                    shared.budget.refund(ticket); // left between the check and the hand-over
                }
                Step::Again
            }
        },
    }
}
