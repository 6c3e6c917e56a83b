//! Id allocation with a free list (Katran-style): ids index array maps, so they must be dense,
//! bounded, and reused after a delete.

/// Hands out ids in `0..capacity`, lowest first, and takes them back.
#[derive(Debug)]
pub struct SlotAllocator {
    capacity: u32,
    /// Free ids, highest first so `pop` yields the lowest.
    free: Vec<u32>,
}

impl SlotAllocator {
    pub fn new(capacity: u32) -> Self {
        Self { capacity, free: (0..capacity).rev().collect() }
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    pub fn in_use(&self) -> u32 {
        self.capacity - self.free.len() as u32
    }

    pub fn alloc(&mut self) -> Option<u32> {
        self.free.pop()
    }

    /// Returns `id` to the pool. Freeing an id twice or one out of range is a bug in the caller.
    pub fn free(&mut self, id: u32) {
        debug_assert!(id < self.capacity && !self.free.contains(&id), "bad free of slot {id}");
        self.free.push(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_fresh_pool_yields_lowest_first() {
        let mut a = SlotAllocator::new(3);
        assert_eq!([a.alloc(), a.alloc(), a.alloc(), a.alloc()], [Some(0), Some(1), Some(2), None]);
        assert_eq!(a.in_use(), 3);
    }

    #[test]
    fn alloc_after_free_reuses_freed_id() {
        let mut a = SlotAllocator::new(3);
        let _ = (a.alloc(), a.alloc(), a.alloc());
        a.free(1);
        assert_eq!(a.in_use(), 2);
        assert_eq!(a.alloc(), Some(1));
        assert_eq!(a.alloc(), None);
    }
}
