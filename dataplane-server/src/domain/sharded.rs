//! A hash map split into shards, for the domain's large per-flow map (the flow book). A
//! `HashMap` grows by rehashing every entry at once, under whatever lock guards it:
//! at 100,000 flows that is 5-20 ms during which no miss is recorded and no decision applied
//! (the p99 of the miss -> controller latency under a sustained load was that rehash). Split
//! in [`SHARDS`], a map grows a shard at a time, each a sixty-fourth of the entries.

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
};

/// Shards per map.
pub const SHARDS: usize = 64;

/// FNV-1a over what a key hashes: picks the shard. Not the shards' own hasher (a shard's
/// entries sharing bits of the hash its table indexes by would crowd its buckets).
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// A map of `K` to `V` in [`SHARDS`] hash maps, with the count kept.
#[derive(Debug)]
pub struct Sharded<K, V> {
    shards: Vec<HashMap<K, V>>,
    len: usize,
}

impl<K, V> Default for Sharded<K, V> {
    fn default() -> Self {
        Self { shards: (0..SHARDS).map(|_| HashMap::new()).collect(), len: 0 }
    }
}

impl<K: Hash + Eq, V> Sharded<K, V> {
    fn shard(k: &K) -> usize {
        let mut h = Fnv(0xcbf2_9ce4_8422_2325);
        k.hash(&mut h);
        // The top bits: FNV's low bits mix least.
        (h.finish() >> 58) as usize % SHARDS
    }

    pub fn get(&self, k: &K) -> Option<&V> {
        self.shards[Self::shard(k)].get(k)
    }

    pub fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        self.shards[Self::shard(k)].get_mut(k)
    }

    pub fn insert(&mut self, k: K, v: V) -> Option<V> {
        let old = self.shards[Self::shard(&k)].insert(k, v);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    pub fn remove(&mut self, k: &K) -> Option<V> {
        let old = self.shards[Self::shard(k)].remove(k);
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    #[cfg_attr(not(test), allow(dead_code))]
    pub fn len(&self) -> usize {
        self.len
    }

    #[cfg_attr(not(test), allow(dead_code))]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards.iter().flat_map(|s| s.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sharded_insert_remove_get_len_iterate_as_one_map() {
        let mut m = Sharded::default();
        for i in 0..10_000u64 {
            assert_eq!(m.insert(i, i * 2), None);
        }
        assert_eq!(m.insert(7, 0), Some(14), "replacing is no new entry");
        assert_eq!(m.len(), 10_000);
        assert_eq!(m.get(&7), Some(&0));
        *m.get_mut(&8).unwrap() = 1;
        assert_eq!(m.remove(&8), Some(1));
        assert_eq!(m.remove(&8), None);
        assert_eq!(m.len(), 9_999);
        let mut keys: Vec<u64> = m.iter().map(|(k, _)| *k).collect();
        keys.sort_unstable();
        assert_eq!(keys, (0..10_000).filter(|k| *k != 8).collect::<Vec<_>>());
        assert!(m.get(&8).is_none() && m.get(&9).is_some() && !m.is_empty());
    }

    #[test]
    fn sharded_keys_spread_over_every_shard() {
        let mut per = [0usize; SHARDS];
        for i in 0..64_000u64 {
            per[Sharded::<u64, ()>::shard(&i)] += 1;
        }
        // 1,000 each on average: none empty, none more than twice its share.
        assert!(per.iter().all(|&n| n > 500 && n < 2000), "{per:?}");
    }
}
