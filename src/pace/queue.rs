//! The queue in front of the Budget: bounded, per-client sub-queues served round-robin, a
//! deadline per waiter, and cancellation by `drop` (a waiter that leaves spends nothing).
//!
//! One dispatcher task hands out permits in order as the Budget allows. Every operation is
//! O(1) amortised in the queue's length: dead waiters are skipped lazily and compacted in bulk.

use std::{
    collections::{HashMap, VecDeque},
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

/// A granted send. Dropping it tells the Budget the attempt is over.
#[derive(Debug)]
pub struct Permit {
    ticket: Ticket,
    budget: Arc<dyn Budget>,
    /// How long the request waited for it.
    pub waited: Duration,
}

impl Permit {
    /// The Budget's record of this send.
    pub fn ticket(&self) -> Ticket {
        self.ticket
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.budget.finish(self.ticket);
    }
}

impl std::fmt::Debug for dyn Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Budget")
    }
}

struct Waiter {
    tx: oneshot::Sender<Ticket>,
}

#[derive(Default)]
struct Lanes {
    lanes: HashMap<ClientId, VecDeque<Waiter>>,
    /// Clients with waiters, in service order.
    ring: VecDeque<ClientId>,
    /// Entries in `lanes`, dead ones included.
    entries: usize,
    closed: bool,
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
    /// A queue over `budget` holding at most `capacity` waiters; spawns the dispatcher.
    pub fn spawn(budget: Arc<dyn Budget>, capacity: usize) -> Self {
        let shared = Arc::new(Shared {
            budget,
            lanes: Mutex::new(Lanes::default()),
            live: AtomicUsize::new(0),
            wake: Notify::new(),
            capacity,
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

    /// Wait for a permit until `deadline`. Dropping the future leaves the queue at no cost.
    pub async fn acquire(&self, client: ClientId, deadline: Instant) -> Result<Permit, ProxyError> {
        let start = Instant::now();
        let rx = match self.enqueue_or_grant(client, start)? {
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
        Permit { ticket, budget: self.shared.budget.clone(), waited: start.elapsed() }
    }

    /// Grant at once when nobody waits and the Budget allows, else join `client`'s lane.
    #[allow(clippy::type_complexity)]
    fn enqueue_or_grant(
        &self,
        client: ClientId,
        now: Instant,
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
        let (tx, rx) = oneshot::channel();
        let lane = lanes.lanes.entry(client.clone()).or_default();
        if lane.is_empty() {
            lanes.ring.push_back(client.clone());
        }
        lanes.lanes.get_mut(&client).expect("lane exists").push_back(Waiter { tx });
        lanes.entries += 1;
        s.live.fetch_add(1, Ordering::AcqRel);
        if lanes.entries > 1024 && lanes.entries > 2 * (live + 1) {
            lanes.compact();
        }
        drop(lanes);
        s.wake.notify_one();
        Ok(Err(rx))
    }

    /// Rough time until a request joining now would be served.
    pub fn estimated_wait(&self) -> Duration {
        let now = Instant::now();
        let snap = self.shared.budget.snapshot(now);
        let gate = self.shared.budget.gate_until(now).map_or(Duration::ZERO, |g| g - now);
        let per = snap.window / snap.limit.max(1);
        gate + per * (self.depth() as u32).saturating_add(1)
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

impl Lanes {
    /// Pop the next live waiter, round-robin over clients.
    fn pop(&mut self) -> Option<Waiter> {
        while let Some(client) = self.ring.pop_front() {
            let lane = self.lanes.get_mut(&client).expect("ring names a lane");
            let mut found = None;
            while let Some(w) = lane.pop_front() {
                self.entries -= 1;
                if !w.tx.is_closed() {
                    found = Some(w);
                    break;
                }
            }
            if lane.is_empty() {
                self.lanes.remove(&client);
            } else {
                self.ring.push_back(client);
            }
            if found.is_some() {
                return found;
            }
        }
        None
    }

    /// Whether any waiter is still alive (dropping dead ones at the heads).
    fn has_live(&mut self) -> bool {
        self.ring.iter().any(|c| self.lanes.get(c).is_some_and(|l| l.iter().any(|w| !w.tx.is_closed())))
    }

    /// Drop every dead waiter.
    fn compact(&mut self) {
        let mut entries = 0;
        self.lanes.retain(|_, lane| {
            lane.retain(|w| !w.tx.is_closed());
            entries += lane.len();
            !lane.is_empty()
        });
        self.ring.retain(|c| self.lanes.contains_key(c));
        self.entries = entries;
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
    if lanes.closed {
        lanes.lanes.clear(); // dropping the senders answers every waiter with ShuttingDown
        lanes.ring.clear();
        lanes.entries = 0;
        return Step::Idle;
    }
    if lanes.entries == 0 {
        return Step::Idle;
    }
    let now = Instant::now();
    match shared.budget.try_acquire(now) {
        Err(at) => {
            if !lanes.has_live() {
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
