//! The waiting requests: two priority classes, each with per-client lanes served round-robin,
//! and stride scheduling between the classes. Dead waiters (their request left) are skipped
//! lazily and compacted in bulk. Every operation is O(1) amortised.

use std::collections::{HashMap, VecDeque};

use tokio::sync::oneshot;

use super::ClientId;
use crate::budget::Ticket;

/// One waiting request: where its permit goes.
pub(super) struct Waiter {
    pub(super) tx: oneshot::Sender<Ticket>,
}

/// A request's class: high priority has a reserved share of the permits (see [`QueueSettings`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Priority {
    /// `X-Priority: high`.
    High,
    /// `X-Priority: low`, and requests that do not say.
    #[default]
    Low,
}

impl Priority {
    /// Both classes, high first.
    pub const ALL: [Priority; 2] = [Priority::High, Priority::Low];

    /// The metric label and header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::High => "high",
            Self::Low => "low",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::High => 0,
            Self::Low => 1,
        }
    }
}

/// One priority class: per-client lanes served round-robin.
#[derive(Default)]
struct Class {
    lanes: HashMap<ClientId, VecDeque<Waiter>>,
    /// Clients with waiters, in service order.
    ring: VecDeque<ClientId>,
    /// Entries in `lanes`, dead ones included.
    entries: usize,
    /// Stride scheduling between classes: virtual time of this class's next service.
    pass: f64,
}

#[derive(Default)]
pub(super) struct Lanes {
    classes: [Class; 2],
    /// Stride of each class (1 / its share).
    stride: [f64; 2],
    pub(super) closed: bool,
    /// The dispatcher sleeps without a timer: the next waiter must wake it.
    pub(super) idle: bool,
}

impl Lanes {
    /// Empty, with each class's stride (1 / its share).
    pub(super) fn new(stride: [f64; 2]) -> Self {
        Self { stride, ..Self::default() }
    }

    /// Waiters (dead ones included) in `client`'s lane of `priority`.
    pub(super) fn lane_len(&self, priority: Priority, client: &ClientId) -> usize {
        self.classes[priority.index()].lanes.get(client).map_or(0, VecDeque::len)
    }

    pub(super) fn entries(&self) -> usize {
        self.classes[0].entries + self.classes[1].entries
    }

    pub(super) fn push(&mut self, priority: Priority, client: ClientId, waiter: Waiter) {
        let i = priority.index();
        if self.classes[i].entries == 0 {
            // A class that was idle starts level with the other: it banks no credit while idle.
            let other = &self.classes[1 - i];
            if other.entries > 0 {
                self.classes[i].pass = self.classes[i].pass.max(other.pass);
            }
        }
        self.classes[i].push(client, waiter);
    }

    /// Pop the next live waiter: the class whose turn it is (ties go to high priority), then
    /// round-robin over that class's clients.
    pub(super) fn pop(&mut self) -> Option<Waiter> {
        let [high, low] = &self.classes;
        let first = match (high.entries > 0, low.entries > 0) {
            (_, false) => 0,
            (false, true) => 1,
            (true, true) => usize::from(low.pass < high.pass),
        };
        for i in [first, 1 - first] {
            if let Some(w) = self.classes[i].pop() {
                self.classes[i].pass += self.stride[i];
                return Some(w);
            }
        }
        None
    }

    /// Drop every dead waiter.
    pub(super) fn compact(&mut self) {
        for c in &mut self.classes {
            c.compact();
        }
    }

    pub(super) fn clear(&mut self) {
        for c in &mut self.classes {
            c.lanes.clear(); // dropping the senders answers every waiter with ShuttingDown
            c.ring.clear();
            c.entries = 0;
        }
    }
}

impl Class {
    fn push(&mut self, client: ClientId, waiter: Waiter) {
        let lane = self.lanes.entry(client.clone()).or_default();
        if lane.is_empty() {
            self.ring.push_back(client);
        }
        lane.push_back(waiter);
        self.entries += 1;
    }

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
