//! Events for subscribers: one fan-out mechanism for every stream (flow misses now, netlink
//! later). A [`Hub`] numbers events and broadcasts them through a bounded queue per subscriber;
//! a subscriber that falls behind loses the oldest events and is told how many (it never blocks
//! the producer or other subscribers).

pub mod flow_misses;
pub mod netlink;

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use tokio::sync::broadcast;

/// An event with its sequence number (1, 2, ... per hub).
#[derive(Debug)]
pub struct Sequenced<T> {
    pub seq: u64,
    pub event: T,
}

/// Numbered broadcast of `T` to any number of subscribers.
pub struct Hub<T> {
    tx: broadcast::Sender<Arc<Sequenced<T>>>,
    seq: AtomicU64,
}

impl<T: Send + Sync + 'static> Hub<T> {
    /// Each subscriber queues up to `capacity` events before it starts losing them.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity);
        Self { tx, seq: AtomicU64::new(0) }
    }

    /// Publishes to every current subscriber; returns the sequence number.
    pub fn publish(&self, event: T) -> u64 {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        // No subscriber is fine: the event is simply not seen.
        let _ = self.tx.send(Arc::new(Sequenced { seq, event }));
        seq
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Sequenced<T>>> {
        self.tx.subscribe()
    }
}
