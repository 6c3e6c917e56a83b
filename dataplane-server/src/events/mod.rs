//! Events for subscribers: one fan-out mechanism for every stream (flow misses, flow removals,
//! netlink changes). A [`Hub`] numbers events and broadcasts them through a bounded queue per subscriber;
//! a subscriber that falls behind loses the oldest events and is told how many (it never blocks
//! the producer or other subscribers).

pub mod flow_misses;
pub mod flow_removed;
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

/// Records that a run hands out sequence numbers below the given floor (persisted before use).
pub type Reserve = Box<dyn Fn(u64) + Send + Sync>;

/// Sequence numbers reserved at a time: one state-file write per this many events.
const SEQ_BLOCK: u64 = 1 << 16;

/// Numbered broadcast of `T` to any number of subscribers.
pub struct Hub<T> {
    tx: broadcast::Sender<Arc<Sequenced<T>>>,
    seq: AtomicU64,
    /// Numbers up to here may be handed out without recording anything.
    reserved: std::sync::Mutex<u64>,
    reserve: Option<Reserve>,
}

impl<T: Send + Sync + 'static> Hub<T> {
    /// Each subscriber queues up to `capacity` events before it starts losing them.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity);
        Self { tx, seq: AtomicU64::new(0), reserved: std::sync::Mutex::new(u64::MAX), reserve: None }
    }

    /// A hub numbering from `floor + 1`, that records (through `reserve`) a new floor before it
    /// hands out a number at or above the last one recorded: numbers never repeat across
    /// restarts, even after a crash.
    pub fn persistent(capacity: usize, floor: u64, reserve: Reserve) -> Self {
        let (tx, _) = broadcast::channel(capacity);
        Self { tx, seq: AtomicU64::new(floor), reserved: std::sync::Mutex::new(floor), reserve: Some(reserve) }
    }

    /// Publishes to every current subscriber; returns the sequence number.
    pub fn publish(&self, event: T) -> u64 {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(reserve) = &self.reserve {
            let mut reserved = self.reserved.lock().unwrap_or_else(|p| p.into_inner());
            if seq >= *reserved {
                *reserved = seq + SEQ_BLOCK;
                reserve(*reserved);
            }
        }
        // No subscriber is fine: the event is simply not seen.
        let _ = self.tx.send(Arc::new(Sequenced { seq, event }));
        seq
    }

    /// Open subscriptions.
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Sequenced<T>>> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_persistent_numbers_continue_above_floor_and_reserve_before_use() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        let hub: Hub<u32> = Hub::persistent(4, 1000, Box::new(move |f| s.lock().unwrap().push(f)));
        assert_eq!(hub.publish(1), 1001);
        assert_eq!(*seen.lock().unwrap(), vec![1001 + SEQ_BLOCK]);
        for _ in 0..SEQ_BLOCK - 1 {
            hub.publish(0);
        }
        assert_eq!(seen.lock().unwrap().len(), 1, "inside the reserved block");
        let n = hub.publish(0);
        assert_eq!(n, 1001 + SEQ_BLOCK);
        assert_eq!(*seen.lock().unwrap().last().unwrap(), n + SEQ_BLOCK);
    }
}
