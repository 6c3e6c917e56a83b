//! Held misses by request id, stored in the order the kernel numbered them rather than hashed.
//!
//! A request id is `cpu << REQUEST_CPU_SHIFT | n`, `n` counting up per CPU, and the ring buffer
//! delivers each CPU's misses in that order. So each CPU's misses go into a deque at
//! `n - first`: recording one is a push at the back, finding one is a subtraction, and the
//! oldest are at the front, where aging looks. In a miss storm a hash map of 100,000+ held
//! misses cost two cache misses per insert and per removal (a third of the server's CPU then);
//! the deques are written and aged in sequence.
//!
//! Numbers the server never sees (events lost to a full ring buffer, PUNT-rule packets, which
//! are not held) leave empty slots; a gap longer than [`MAX_GAP`] starts a new run instead, so
//! memory follows the misses held, not the numbers skipped. Slots are boxed: an empty one
//! (a miss answered while an older one still waits) costs a pointer.

use std::collections::VecDeque;

use dataplane_common::flow::REQUEST_CPU_SHIFT;

/// The longest gap in a CPU's numbering filled with empty slots.
const MAX_GAP: u64 = 1024;

/// CPUs beyond this (a corrupt id) are refused rather than sized for.
const MAX_CPUS: usize = 1 << 14;

/// Values by request id, per CPU in numbering order.
#[derive(Debug)]
pub(in crate::domain) struct IdRing<V> {
    cpus: Vec<VecDeque<Run<V>>>,
    len: usize,
}

/// Consecutive numbers of one CPU from `first` on.
#[derive(Debug)]
struct Run<V> {
    first: u64,
    slots: VecDeque<Option<Box<V>>>,
}

impl<V> Run<V> {
    fn one(first: u64, v: V) -> Self {
        Self { first, slots: VecDeque::from([Some(Box::new(v))]) }
    }

    fn end(&self) -> u64 {
        self.first + self.slots.len() as u64
    }

    /// Drops the empty slots at the front.
    fn trim(&mut self) {
        while matches!(self.slots.front(), Some(None)) {
            self.slots.pop_front();
            self.first += 1;
        }
    }
}

impl<V> Default for IdRing<V> {
    fn default() -> Self {
        Self { cpus: Vec::new(), len: 0 }
    }
}

fn split(id: u64) -> (usize, u64) {
    ((id >> REQUEST_CPU_SHIFT) as usize, id & ((1 << REQUEST_CPU_SHIFT) - 1))
}

impl<V> IdRing<V> {
    pub fn len(&self) -> usize {
        self.len
    }

    /// Records `v` under `id`; returns what was there. An id of an impossible CPU is not
    /// recorded (and `v` is handed back).
    pub fn insert(&mut self, id: u64, v: V) -> Result<Option<V>, V> {
        let (cpu, n) = split(id);
        if cpu >= MAX_CPUS {
            return Err(v);
        }
        if cpu >= self.cpus.len() {
            self.cpus.resize_with(cpu + 1, VecDeque::new);
        }
        let runs = &mut self.cpus[cpu];
        // The common case: the CPU's next number, or one after a short gap.
        match runs.back_mut() {
            Some(r) if n >= r.end() && n - r.end() <= MAX_GAP => {
                for _ in r.end()..n {
                    r.slots.push_back(None);
                }
                r.slots.push_back(Some(Box::new(v)));
                self.len += 1;
                return Ok(None);
            }
            Some(r) if n >= r.end() => {
                runs.push_back(Run::one(n, v));
                self.len += 1;
                return Ok(None);
            }
            None => {
                runs.push_back(Run::one(n, v));
                self.len += 1;
                return Ok(None);
            }
            Some(_) => {}
        }
        // Out of order (not from the ring buffer): into the run that spans it, or a run of its
        // own where it belongs.
        let i = runs.partition_point(|r| r.end() <= n);
        if let Some(r) = runs.get_mut(i).filter(|r| r.first <= n) {
            let old = r.slots[(n - r.first) as usize].replace(Box::new(v)).map(|b| *b);
            if old.is_none() {
                self.len += 1;
            }
            return Ok(old);
        }
        runs.insert(i, Run::one(n, v));
        self.len += 1;
        Ok(None)
    }

    /// Where `id` is: CPU, run, slot.
    fn locate(&self, id: u64) -> Option<(usize, usize, usize)> {
        let (cpu, n) = split(id);
        let runs = self.cpus.get(cpu)?;
        // Nearly always the last run (or the only one).
        let i = match runs.back() {
            Some(r) if r.first <= n && n < r.end() => runs.len() - 1,
            _ => runs.partition_point(|r| r.end() <= n),
        };
        let r = runs.get(i).filter(|r| r.first <= n)?;
        Some((cpu, i, (n - r.first) as usize))
    }

    pub fn get(&self, id: &u64) -> Option<&V> {
        let (c, r, s) = self.locate(*id)?;
        self.cpus[c][r].slots[s].as_deref()
    }

    pub fn remove(&mut self, id: &u64) -> Option<V> {
        let (c, r, s) = self.locate(*id)?;
        let runs = &mut self.cpus[c];
        let v = runs[r].slots[s].take().map(|b| *b)?;
        self.len -= 1;
        runs[r].trim();
        if runs[r].slots.is_empty() {
            runs.remove(r);
        }
        Some(v)
    }

    /// Every value with its id, each CPU's oldest first.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &V)> {
        self.cpus.iter().enumerate().flat_map(|(cpu, runs)| {
            runs.iter().flat_map(move |r| {
                r.slots.iter().enumerate().filter_map(move |(i, s)| {
                    s.as_deref().map(|v| (((cpu as u64) << REQUEST_CPU_SHIFT) | (r.first + i as u64), v))
                })
            })
        })
    }

    /// The ids, each CPU's oldest first, of the values at the front of their CPU's numbering
    /// for which `old` holds, up to the first for which it does not (numbering order is
    /// arrival order, so what follows is younger). They stay recorded.
    pub fn oldest_while(&self, mut old: impl FnMut(&V) -> bool) -> Vec<(u64, &V)> {
        let mut out = Vec::new();
        for (cpu, runs) in self.cpus.iter().enumerate() {
            'cpu: for r in runs {
                for (i, s) in r.slots.iter().enumerate() {
                    match s.as_deref() {
                        Some(v) if old(v) => out.push((((cpu as u64) << REQUEST_CPU_SHIFT) | (r.first + i as u64), v)),
                        Some(_) => break 'cpu,
                        None => {}
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(cpu: u64, n: u64) -> u64 {
        (cpu << REQUEST_CPU_SHIFT) | n
    }

    #[test]
    fn id_ring_in_order_with_gaps_and_runs_behaves_as_a_map() {
        let mut m = IdRing::default();
        let mut ids: Vec<u64> = Vec::new();
        // CPU 0 in order; CPU 3 with a short gap (filled) and a long one (a new run).
        ids.extend((1..=100).map(|n| id(0, n)));
        ids.extend((1..=10).map(|n| id(3, n)));
        ids.extend((20..=30).map(|n| id(3, n)));
        ids.extend((5_000..=5_010).map(|n| id(3, n)));
        for &i in &ids {
            assert_eq!(m.insert(i, i), Ok(None));
        }
        assert_eq!(m.len(), ids.len());
        assert!(ids.iter().all(|i| m.get(i) == Some(i)));
        for missing in [id(0, 0), id(0, 101), id(3, 15), id(3, 31), id(3, 4_999), id(3, 5_011), id(1, 1), id(9, 1)] {
            assert!(m.get(&missing).is_none(), "{missing:#x}");
        }
        assert_eq!(m.cpus[3].len(), 2, "the long gap started a run");
        let mut seen: Vec<u64> = m
            .iter()
            .map(|(i, v)| {
                assert_eq!(i, *v);
                i
            })
            .collect();
        seen.sort_unstable();
        let mut want = ids.clone();
        want.sort_unstable();
        assert_eq!(seen, want);
    }

    #[test]
    fn id_ring_remove_trims_fronts_and_drops_empty_runs() {
        let mut m = IdRing::default();
        for n in 1..=5 {
            m.insert(id(2, n), n).unwrap();
        }
        m.insert(id(2, 9_000), 9_000).unwrap();
        assert_eq!(m.remove(&id(2, 3)), Some(3), "from the middle");
        assert_eq!(m.remove(&id(2, 3)), None, "once");
        assert_eq!(m.remove(&id(2, 1)), Some(1));
        assert_eq!(m.remove(&id(2, 2)), Some(2));
        // 1..3 gone from the front: the run starts at 4 now.
        assert_eq!(m.cpus[2][0].first, 4);
        assert_eq!(m.remove(&id(2, 9_000)), Some(9_000));
        assert_eq!(m.cpus[2].len(), 1, "the emptied run went");
        assert_eq!((m.len(), m.get(&id(2, 4)), m.get(&id(2, 5))), (2, Some(&4), Some(&5)));
    }

    #[test]
    fn id_ring_out_of_order_insert_lands_in_place_and_replaces() {
        let mut m = IdRing::default();
        m.insert(id(1, 10), 10).unwrap();
        m.insert(id(1, 12), 12).unwrap();
        assert_eq!(m.insert(id(1, 11), 11), Ok(None), "a gap slot");
        assert_eq!(m.insert(id(1, 12), 120), Ok(Some(12)), "replaces");
        assert_eq!(m.insert(id(1, 3), 3), Ok(None), "before every run");
        assert_eq!(m.len(), 4);
        let order: Vec<u64> = m.iter().map(|(i, _)| i & 0xffff).collect();
        assert_eq!(order, vec![3, 10, 11, 12]);
        assert_eq!(m.insert(id(MAX_CPUS as u64, 1), 0), Err(0), "no such CPU");
    }

    #[test]
    fn id_ring_oldest_while_stops_at_each_cpus_first_young_value() {
        let mut m = IdRing::default();
        // Values are ages: CPU 0 old, old, young, old (behind the young one: not taken).
        for (n, age) in [(1, 9), (2, 8), (3, 1), (4, 9)] {
            m.insert(id(0, n), age).unwrap();
        }
        for (n, age) in [(7, 9), (8, 2)] {
            m.insert(id(1, n), age).unwrap();
        }
        m.remove(&id(0, 2));
        let old: Vec<u64> = m.oldest_while(|age| *age > 5).into_iter().map(|(i, _)| i).collect();
        assert_eq!(old, vec![id(0, 1), id(1, 7)]);
    }
}
