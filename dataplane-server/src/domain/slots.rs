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

    /// Takes `id` out of the pool (restoring an allocation made by an earlier run). `false` if
    /// it is out of range or already taken.
    pub fn reserve(&mut self, id: u32) -> bool {
        match self.free.iter().position(|&f| f == id) {
            Some(i) => {
                self.free.remove(i);
                true
            }
            None => false,
        }
    }

    /// Returns `id` to the pool. Freeing an id twice or one out of range is a bug in the caller.
    pub fn free(&mut self, id: u32) {
        debug_assert!(id < self.capacity && !self.free.contains(&id), "bad free of slot {id}");
        self.free.push(id);
    }
}

/// Ids of `0..capacity` for millions of users (IPv4 route records): freed ids first, then the
/// next never used, so everything handed out stays below a high-water mark (`mark`) that the
/// kernel keeps too, and a restart reads only that far.
#[derive(Debug)]
pub struct MarkAllocator {
    capacity: u32,
    mark: u32,
    free: Vec<u32>,
}

impl MarkAllocator {
    pub fn new(capacity: u32) -> Self {
        Self { capacity, mark: 0, free: Vec::new() }
    }

    /// An earlier run's allocator: `used` are the ids in use, all below `mark`.
    pub fn restore(capacity: u32, mark: u32, used: impl Iterator<Item = u32>) -> Self {
        let mark = mark.min(capacity);
        let mut taken = vec![false; mark as usize];
        for id in used {
            if let Some(t) = taken.get_mut(id as usize) {
                *t = true;
            }
        }
        let free = (0..mark).rev().filter(|&id| !taken[id as usize]).collect();
        Self { capacity, mark, free }
    }

    pub fn alloc(&mut self) -> Option<u32> {
        if let Some(id) = self.free.pop() {
            return Some(id);
        }
        (self.mark < self.capacity).then(|| {
            self.mark += 1;
            self.mark - 1
        })
    }

    pub fn free(&mut self, id: u32) {
        self.free.push(id);
    }

    /// Takes back an id of a batch that failed, the last handed out first: the allocator is
    /// as before, its mark included (the kernel's was put back too).
    pub fn unalloc(&mut self, id: u32) {
        if id + 1 == self.mark {
            self.mark -= 1;
        } else {
            self.free.push(id);
        }
    }

    /// Every id handed out so far is below this.
    pub fn mark(&self) -> u32 {
        self.mark
    }
}

/// Hands out contiguous ranges of `0..capacity` (first fit) and takes them back, merging
/// neighbours; for the policy word pool and rule slots, where a table needs one run of indexes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeAllocator {
    capacity: u32,
    /// Free ranges (start, len), sorted by start, never adjacent.
    free: Vec<(u32, u32)>,
}

impl RangeAllocator {
    pub fn new(capacity: u32) -> Self {
        Self { capacity, free: vec![(0, capacity)] }
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// The start of a free run of `len` indexes (`Some(0)` for `len == 0`, taking nothing).
    pub fn alloc(&mut self, len: u32) -> Option<u32> {
        if len == 0 {
            return Some(0);
        }
        let i = self.free.iter().position(|&(_, l)| l >= len)?;
        let (start, l) = self.free[i];
        if l == len {
            self.free.remove(i);
        } else {
            self.free[i] = (start + len, l - len);
        }
        Some(start)
    }

    /// Returns a run `alloc` handed out.
    /// Takes `start..start + len` out of the pool (restoring an earlier run's allocation).
    /// `false` if any of it is not free.
    pub fn reserve(&mut self, start: u32, len: u32) -> bool {
        if len == 0 {
            return true;
        }
        let Some(i) = self.free.iter().position(|&(s, l)| s <= start && start + len <= s + l) else { return false };
        let (s, l) = self.free.remove(i);
        let mut at = i;
        if s < start {
            self.free.insert(at, (s, start - s));
            at += 1;
        }
        if start + len < s + l {
            self.free.insert(at, (start + len, s + l - start - len));
        }
        true
    }

    pub fn free(&mut self, start: u32, len: u32) {
        if len == 0 {
            return;
        }
        let i = self.free.partition_point(|&(s, _)| s < start);
        self.free.insert(i, (start, len));
        // Merge with the next, then with the previous.
        if i + 1 < self.free.len() && self.free[i].0 + self.free[i].1 == self.free[i + 1].0 {
            self.free[i].1 += self.free[i + 1].1;
            self.free.remove(i + 1);
        }
        if i > 0 && self.free[i - 1].0 + self.free[i - 1].1 == self.free[i].0 {
            self.free[i - 1].1 += self.free[i].1;
            self.free.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_takes_exactly_what_was_allocated_and_rejects_taken() {
        let mut s = SlotAllocator::new(8);
        assert!(s.reserve(3) && !s.reserve(3) && !s.reserve(8));
        assert_eq!(s.alloc(), Some(0));
        let mut r = RangeAllocator::new(100);
        assert!(r.reserve(10, 20));
        assert!(!r.reserve(25, 10), "overlaps");
        assert_eq!(r.alloc(10), Some(0));
        assert_eq!(r.alloc(5), Some(30), "10..30 is taken");
        r.free(10, 20);
        assert_eq!(r.alloc(20), Some(10));
    }

    #[test]
    fn range_allocator_first_fit_and_merge_on_free() {
        let mut r = RangeAllocator::new(100);
        let a = r.alloc(30).unwrap();
        let b = r.alloc(30).unwrap();
        let c = r.alloc(40).unwrap();
        assert_eq!((a, b, c), (0, 30, 60));
        assert_eq!(r.alloc(1), None);
        r.free(a, 30);
        r.free(c, 40);
        assert_eq!(r.alloc(35), Some(60), "first run that fits");
        r.free(b, 30);
        r.free(60, 35);
        assert_eq!(r.alloc(100), Some(0), "everything merged back");
    }

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
