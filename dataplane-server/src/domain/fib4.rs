//! IPv4 flat tables: each routes-mode VRF's IPv4 routes as a 16-8-8 multibit trie in the
//! kernel's chunk pool (layout: `dataplane_common::route::fib4`), kept next to the LPM trie.
//!
//! The trie stays the record of what the routes are (it is what a restart reads back and what
//! `ListRoutes` mirrors); the flat table is what the route stage reads, because a lookup there is
//! at most three array reads where the trie walks up to 32 nodes. A VRF the pool cannot hold
//! falls back to the trie (correct, slower) instead of refusing routes, and moves back when room
//! is made.
//!
//! Updates are made in place, in an order that keeps every state a program can see a correct
//! table of some prefix of the batch: a new chunk is filled before the entry that points at it,
//! and a chunk that became unreachable is reused only after an RCU grace period.

pub(super) mod restore;

use std::collections::{BTreeMap, BTreeSet};

use dataplane_common::route::fib4::{self, Chunk, CHUNK, INDEX, LEAF, ROOT_CHUNKS};

use crate::dataplane::{Dataplane, DataplaneError};

/// What a flat-table operation needs from the kernel: [`Dataplane`], or nothing for a table
/// built only to be compared with one.
pub trait Sink {
    fn store(&self, chunk: u32, first: usize, values: &[u32]) -> Result<(), DataplaneError>;
    fn wait_for_readers(&self) -> Result<(), DataplaneError>;
}

impl<D: Dataplane> Sink for D {
    fn store(&self, chunk: u32, first: usize, values: &[u32]) -> Result<(), DataplaneError> {
        self.fib4_store(chunk, first, values)
    }
    fn wait_for_readers(&self) -> Result<(), DataplaneError> {
        crate::dataplane::Lifecycle::wait_for_readers(self)
    }
}

/// A [`Sink`] that writes nothing (a scratch table).
pub struct NoSink;

impl Sink for NoSink {
    fn store(&self, _: u32, _: usize, _: &[u32]) -> Result<(), DataplaneError> {
        Ok(())
    }
    fn wait_for_readers(&self) -> Result<(), DataplaneError> {
        Ok(())
    }
}

/// Why a flat-table operation stopped.
#[derive(Debug, thiserror::Error)]
pub enum Fib4Error {
    #[error("the IPv4 flat tables' pool has no free chunk left ({capacity} chunks)")]
    Full { capacity: u32 },
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
}

/// How one VRF's IPv4 routes are looked up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// In its flat table, of `chunks` pool chunks (its root's 256 included).
    Flat { chunks: u32 },
    /// In the trie: its flat table did not fit the pool (or was never built).
    Trie,
}

/// An IPv4 prefix as the table takes it: address (host order, host bits zero) and length.
pub type V4Prefix = (u32, u8);

/// The pool's shadow and who owns what in it.
pub struct Fib4 {
    /// What the kernel's pool holds once `dirty` is flushed.
    pool: Vec<Chunk>,
    /// Whether the pool grows on demand (a scratch table) instead of running out.
    grows: bool,
    free: BTreeSet<u32>,
    /// Chunks unreachable since the last grace period: a program may still be reading them.
    retired: Vec<u32>,
    /// VRF -> root (block + 1, as `FIB4_VRFS` holds it).
    roots: BTreeMap<u32, u32>,
    /// VRF -> chunks it holds.
    used: BTreeMap<u32, u32>,
    /// VRFs left to the trie because the pool could not hold them.
    overflow: BTreeSet<u32>,
    /// (chunk, first entry, entry count) written in `pool` and not yet in the kernel, in the
    /// order they must reach it.
    dirty: Vec<(u32, u16, u16)>,
}

impl Fib4 {
    /// An empty pool of `capacity` chunks.
    pub fn new(capacity: u32) -> Self {
        Self {
            pool: vec![[0; 256]; capacity as usize],
            grows: false,
            free: (0..capacity).collect(),
            retired: Vec::new(),
            roots: BTreeMap::new(),
            used: BTreeMap::new(),
            overflow: BTreeSet::new(),
            dirty: Vec::new(),
        }
    }

    /// A table that grows as needed and is never written anywhere.
    fn scratch() -> Self {
        Self { grows: true, ..Self::new(0) }
    }

    pub fn capacity(&self) -> u32 {
        self.pool.len() as u32
    }

    /// Chunks the VRFs' tables hold (not those waiting for a grace period to be free again).
    pub fn chunks_used(&self) -> u32 {
        self.used.values().sum()
    }

    pub fn lookup_mode(&self, vrf: u32) -> Option<Lookup> {
        match (self.roots.contains_key(&vrf), self.overflow.contains(&vrf)) {
            (true, _) => Some(Lookup::Flat { chunks: self.used.get(&vrf).copied().unwrap_or(0) }),
            (false, true) => Some(Lookup::Trie),
            _ => None,
        }
    }

    pub fn is_flat(&self, vrf: u32) -> bool {
        self.roots.contains_key(&vrf)
    }

    pub fn overflowed(&self) -> impl Iterator<Item = u32> + '_ {
        self.overflow.iter().copied()
    }

    /// Chunks a table of `routes` takes when built: its root, one per /16 holding a longer
    /// prefix, one per /24 holding a longer prefix.
    pub fn chunks_needed(routes: &[(V4Prefix, u32)]) -> u32 {
        let mut l2 = std::collections::HashSet::new();
        let mut l3 = std::collections::HashSet::new();
        for &((addr, len), _) in routes {
            if len > 16 {
                l2.insert(addr >> 16);
            }
            if len > 24 {
                l3.insert(addr >> 8);
            }
        }
        ROOT_CHUNKS + l2.len() as u32 + l3.len() as u32
    }

    /// Chunks free now or after the next grace period.
    fn available(&self) -> u32 {
        (self.free.len() + self.retired.len()) as u32
    }

    /// The route `addr` takes in `vrf`'s table: (prefix length, next-hop slot).
    #[cfg(test)]
    pub fn lookup(&self, vrf: u32, addr: u32) -> Option<(u8, u32)> {
        let root = *self.roots.get(&vrf)?;
        crate::dataplane::fib4::walk(root, addr, |c, i| self.pool[c as usize][i])
    }

    fn write(&mut self, chunk: u32, i: usize, value: u32) {
        if self.pool[chunk as usize][i] != value {
            self.pool[chunk as usize][i] = value;
            self.dirty.push((chunk, i as u16, 1));
        }
    }

    /// Sends what changed to the kernel, in order.
    pub fn flush(&mut self, sink: &impl Sink) -> Result<(), DataplaneError> {
        let dirty = std::mem::take(&mut self.dirty);
        for (chunk, first, count) in dirty {
            let (first, count) = (usize::from(first), usize::from(count));
            sink.store(chunk, first, &self.pool[chunk as usize][first..first + count])?;
        }
        Ok(())
    }

    /// Makes the retired chunks free again: what points at them is in the kernel already, and
    /// a grace period later no program can still be reading them.
    fn reclaim(&mut self, sink: &impl Sink) -> Result<bool, DataplaneError> {
        if self.retired.is_empty() {
            return Ok(false);
        }
        self.flush(sink)?;
        sink.wait_for_readers()?;
        self.free.extend(self.retired.drain(..));
        Ok(true)
    }

    /// A chunk for `vrf`, filled with `fill` (in the kernel before anything can point at it).
    fn alloc(&mut self, sink: &impl Sink, vrf: u32, fill: u32) -> Result<u32, Fib4Error> {
        let c = match self.free.pop_last() {
            Some(c) => c,
            None if self.grows => {
                self.pool.push([0; 256]);
                self.pool.len() as u32 - 1
            }
            None => {
                if !self.reclaim(sink)? {
                    return Err(Fib4Error::Full { capacity: self.capacity() });
                }
                self.free.pop_last().ok_or(Fib4Error::Full { capacity: self.capacity() })?
            }
        };
        self.pool[c as usize] = [fill; 256];
        self.dirty.push((c, 0, 256));
        *self.used.entry(vrf).or_default() += 1;
        Ok(c)
    }

    fn retire(&mut self, vrf: u32, chunk: u32) {
        self.retired.push(chunk);
        if let Some(n) = self.used.get_mut(&vrf) {
            *n = n.saturating_sub(1);
        }
    }

    /// The lowest root block whose 256 chunks are all free (roots come from the bottom of the
    /// pool, other chunks from the top, so the two rarely fragment each other).
    fn alloc_root(&mut self, sink: &impl Sink, vrf: u32) -> Result<u32, Fib4Error> {
        let find = |free: &BTreeSet<u32>, capacity: u32| {
            (0..capacity / ROOT_CHUNKS)
                .find(|b| free.range(b * ROOT_CHUNKS..(b + 1) * ROOT_CHUNKS).count() == ROOT_CHUNKS as usize)
        };
        let block = match find(&self.free, self.capacity()) {
            Some(b) => b,
            None if self.grows => {
                let b = self.capacity().div_ceil(ROOT_CHUNKS);
                self.free.extend(self.capacity()..(b + 1) * ROOT_CHUNKS);
                self.pool.resize(((b + 1) * ROOT_CHUNKS) as usize, [0; 256]);
                b
            }
            None => {
                let again = self.reclaim(sink)?.then(|| find(&self.free, self.capacity())).flatten();
                again.ok_or(Fib4Error::Full { capacity: self.capacity() })?
            }
        };
        for c in block * ROOT_CHUNKS..(block + 1) * ROOT_CHUNKS {
            self.free.remove(&c);
            self.pool[c as usize] = [0; 256];
            self.dirty.push((c, 0, 256));
        }
        *self.used.entry(vrf).or_default() += ROOT_CHUNKS;
        Ok(block + 1)
    }

    /// Gives `vrf` a flat table holding `routes` ((prefix, next-hop slot), IPv4 only) and points
    /// its lookups at it. Where the pool cannot hold it, the VRF stays with the trie and is
    /// remembered, to be tried again when chunks are freed.
    pub fn promote(
        &mut self,
        sink: &impl Sink,
        set_root: impl FnOnce(u32) -> Result<(), DataplaneError>,
        vrf: u32,
        routes: &[(V4Prefix, u32)],
    ) -> Result<bool, DataplaneError> {
        if self.roots.contains_key(&vrf) {
            return Ok(true);
        }
        if !self.grows && Self::chunks_needed(routes) > self.available() {
            self.overflow.insert(vrf);
            return Ok(false);
        }
        match self.build(sink, vrf, routes) {
            Ok(root) => {
                self.flush(sink)?;
                set_root(root)?;
                self.overflow.remove(&vrf);
                Ok(true)
            }
            Err(Fib4Error::Full { .. }) => {
                // Never reachable: free again at once.
                self.used.remove(&vrf);
                if let Some(root) = self.roots.remove(&vrf) {
                    let chunks = self.chunks_of(root);
                    self.free.extend(chunks);
                }
                self.overflow.insert(vrf);
                Ok(false)
            }
            Err(Fib4Error::Dataplane(e)) => Err(e),
        }
    }

    /// Replaces `vrf`'s table by one built afresh from `routes`, switched to in one write: the
    /// old table serves until then, and is retired after. `false` (nothing changed) where the
    /// pool cannot hold both for that moment.
    pub fn rebuild(
        &mut self,
        sink: &impl Sink,
        set_root: impl FnOnce(u32) -> Result<(), DataplaneError>,
        vrf: u32,
        routes: &[(V4Prefix, u32)],
    ) -> Result<bool, DataplaneError> {
        let Some(old) = self.roots.remove(&vrf) else {
            return self.promote(sink, set_root, vrf, routes);
        };
        let old_used = self.used.remove(&vrf).unwrap_or(0);
        let keep_old = |me: &mut Self| {
            me.roots.insert(vrf, old);
            me.used.insert(vrf, old_used);
        };
        if !self.grows && Self::chunks_needed(routes) > self.available() {
            keep_old(self);
            return Ok(false);
        }
        match self.build(sink, vrf, routes) {
            Ok(root) => {
                self.flush(sink)?;
                set_root(root)?;
                let old_chunks = self.chunks_of(old);
                self.retired.extend(old_chunks);
                Ok(true)
            }
            Err(Fib4Error::Full { .. }) => {
                if let Some(new) = self.roots.remove(&vrf) {
                    let chunks = self.chunks_of(new);
                    self.free.extend(chunks);
                }
                keep_old(self);
                Ok(false)
            }
            Err(Fib4Error::Dataplane(e)) => Err(e),
        }
    }

    fn build(&mut self, sink: &impl Sink, vrf: u32, routes: &[(V4Prefix, u32)]) -> Result<u32, Fib4Error> {
        let root = self.alloc_root(sink, vrf)?;
        self.roots.insert(vrf, root);
        let mut sorted: Vec<&(V4Prefix, u32)> = routes.iter().collect();
        // Shorter first: a longer prefix then only ever overwrites, never descends.
        sorted.sort_unstable_by_key(|((_, len), _)| *len);
        for &&(prefix, slot) in &sorted {
            self.put(sink, vrf, root, prefix, slot)?;
        }
        Ok(root)
    }

    /// Every chunk of the table rooted at `root`: the root block and what it reaches.
    fn chunks_of(&self, root: u32) -> Vec<u32> {
        let base = (root - 1) * ROOT_CHUNKS;
        let mut out: Vec<u32> = (base..base + ROOT_CHUNKS).collect();
        let mut i = 0;
        while i < out.len() {
            for e in self.pool[out[i] as usize] {
                if e & CHUNK != 0 {
                    out.push(e & INDEX);
                }
            }
            i += 1;
        }
        out
    }

    /// Points `vrf` back at the trie (first: the trie holds every route already) and retires
    /// its chunks.
    pub fn demote(
        &mut self,
        sink: &impl Sink,
        set_root: impl FnOnce(u32) -> Result<(), DataplaneError>,
        vrf: u32,
    ) -> Result<(), DataplaneError> {
        let Some(root) = self.roots.get(&vrf).copied() else {
            self.overflow.remove(&vrf);
            return Ok(());
        };
        self.flush(sink)?;
        set_root(0)?;
        self.roots.remove(&vrf);
        for c in self.chunks_of(root) {
            self.retired.push(c);
        }
        self.used.remove(&vrf);
        Ok(())
    }

    /// Leaves `vrf` to the trie after an insert did not fit (see [`Self::insert`]), to be tried
    /// again by [`Self::retry_overflowed`].
    pub fn give_up(
        &mut self,
        sink: &impl Sink,
        set_root: impl FnOnce(u32) -> Result<(), DataplaneError>,
        vrf: u32,
    ) -> Result<(), DataplaneError> {
        self.demote(sink, set_root, vrf)?;
        self.overflow.insert(vrf);
        Ok(())
    }

    /// Forgets `vrf` altogether (deleted, or no longer forwarding by routes).
    pub fn remove_vrf(
        &mut self,
        sink: &impl Sink,
        set_root: impl FnOnce(u32) -> Result<(), DataplaneError>,
        vrf: u32,
    ) -> Result<(), DataplaneError> {
        self.demote(sink, set_root, vrf)?;
        self.overflow.remove(&vrf);
        Ok(())
    }

    /// Adds or re-points `prefix` in `vrf`'s table (which must exist). On `Full`, what was
    /// written is a correct table of the routes before this one; the caller demotes the VRF.
    pub fn insert(&mut self, sink: &impl Sink, vrf: u32, prefix: V4Prefix, slot: u32) -> Result<(), Fib4Error> {
        let root = self.roots[&vrf];
        self.put(sink, vrf, root, prefix, slot)
    }

    fn put(
        &mut self,
        sink: &impl Sink,
        vrf: u32,
        root: u32,
        (addr, len): V4Prefix,
        slot: u32,
    ) -> Result<(), Fib4Error> {
        let leaf = fib4::leaf(slot, len);
        let base = (root - 1) * ROOT_CHUNKS;
        let top = addr >> 16;
        if len <= 16 {
            for i in top..top + (1 << (16 - len)) {
                self.cover(base + (i >> 8), (i & 0xff) as usize, leaf, len);
            }
            return Ok(());
        }
        let c2 = self.descend(sink, vrf, base + (top >> 8), (top & 0xff) as usize)?;
        let mid = ((addr >> 8) & 0xff) as usize;
        if len <= 24 {
            for j in mid..mid + (1 << (24 - len)) {
                self.cover(c2, j, leaf, len);
            }
            return Ok(());
        }
        let c3 = self.descend(sink, vrf, c2, mid)?;
        let low = (addr & 0xff) as usize;
        for k in low..low + (1 << (32 - len)) {
            self.cover(c3, k, leaf, len);
        }
        Ok(())
    }

    /// The chunk entry `i` of `chunk` points at, made (from the leaf it held) if needed.
    fn descend(&mut self, sink: &impl Sink, vrf: u32, chunk: u32, i: usize) -> Result<u32, Fib4Error> {
        let e = self.pool[chunk as usize][i];
        if e & CHUNK != 0 {
            return Ok(e & INDEX);
        }
        let c = self.alloc(sink, vrf, e)?;
        self.write(chunk, i, CHUNK | c);
        Ok(c)
    }

    /// Writes `leaf` (of length `len`) over entry `i` of `chunk` wherever no longer prefix
    /// holds it, below it included.
    fn cover(&mut self, chunk: u32, i: usize, leaf: u32, len: u8) {
        let e = self.pool[chunk as usize][i];
        if e & CHUNK != 0 {
            let child = e & INDEX;
            for j in 0..256 {
                self.cover(child, j, leaf, len);
            }
        } else if fib4::depth(e) <= len {
            self.write(chunk, i, leaf);
        }
    }

    /// Removes `prefix` from `vrf`'s table: where it was the longest match, `replacement` (the
    /// longest shorter route covering it: prefix length and next-hop slot) takes over.
    pub fn remove(&mut self, vrf: u32, (addr, len): V4Prefix, replacement: Option<(u8, u32)>) {
        let Some(&root) = self.roots.get(&vrf) else { return };
        let repl = replacement.map_or(0, |(l, slot)| fib4::leaf(slot, l));
        let base = (root - 1) * ROOT_CHUNKS;
        let top = addr >> 16;
        if len <= 16 {
            for i in top..top + (1 << (16 - len)) {
                self.uncover(vrf, base + (i >> 8), (i & 0xff) as usize, len, repl, 16);
            }
            return;
        }
        let (r, ri) = (base + (top >> 8), (top & 0xff) as usize);
        let e2 = self.pool[r as usize][ri];
        if e2 & CHUNK == 0 {
            return;
        }
        let c2 = e2 & INDEX;
        let mid = ((addr >> 8) & 0xff) as usize;
        if len <= 24 {
            for j in mid..mid + (1 << (24 - len)) {
                self.uncover(vrf, c2, j, len, repl, 24);
            }
        } else {
            let e3 = self.pool[c2 as usize][mid];
            if e3 & CHUNK != 0 {
                let c3 = e3 & INDEX;
                let low = (addr & 0xff) as usize;
                for k in low..low + (1 << (32 - len)) {
                    self.uncover(vrf, c3, k, len, repl, 32);
                }
                self.collapse(vrf, c2, mid, 24);
            }
        }
        self.collapse(vrf, r, ri, 16);
    }

    /// Entry `i` of `chunk` (whose leaves are at most `max` long), and below it: leaves of
    /// length `len` become `repl`.
    fn uncover(&mut self, vrf: u32, chunk: u32, i: usize, len: u8, repl: u32, max: u8) {
        let e = self.pool[chunk as usize][i];
        if e & CHUNK != 0 {
            let child = e & INDEX;
            for j in 0..256 {
                self.uncover(vrf, child, j, len, repl, max + 8);
            }
            self.collapse(vrf, chunk, i, max);
        } else if e & LEAF != 0 && fib4::depth(e) == len {
            self.write(chunk, i, repl);
        }
    }

    /// Replaces entry `i` of `chunk` by the leaf its child chunk holds everywhere, if it does
    /// and that leaf is no longer than `max` (what an entry at this level may hold), and
    /// retires the child.
    fn collapse(&mut self, vrf: u32, chunk: u32, i: usize, max: u8) {
        let e = self.pool[chunk as usize][i];
        if e & CHUNK == 0 {
            return;
        }
        let child = e & INDEX;
        let first = self.pool[child as usize][0];
        if first & CHUNK == 0 && fib4::depth(first) <= max && self.pool[child as usize].iter().all(|&x| x == first) {
            self.write(chunk, i, first);
            self.retire(vrf, child);
        }
    }

    /// Tries again the VRFs the pool could not hold, those that fit now.
    /// `routes(vrf)` lists a VRF's IPv4 routes; `set_root(vrf, root)` writes `FIB4_VRFS`.
    pub fn retry_overflowed(
        &mut self,
        sink: &impl Sink,
        mut set_root: impl FnMut(u32, u32) -> Result<(), DataplaneError>,
        mut routes: impl FnMut(u32) -> Vec<(V4Prefix, u32)>,
    ) -> Result<Vec<u32>, DataplaneError> {
        let mut promoted = Vec::new();
        for vrf in self.overflow.clone() {
            let r = routes(vrf);
            // `promote` refuses at once (no chunk touched) while the table cannot fit.
            if self.promote(sink, |root| set_root(vrf, root), vrf, &r)? {
                promoted.push(vrf);
            }
        }
        Ok(promoted)
    }

    /// Takes over the tables an earlier run left in the kernel's pool of `capacity` chunks
    /// (`roots` as `FIB4_VRFS` has them; `load` reads a chunk): each VRF's that is well formed
    /// and still forwards by routes (`keep(vrf)`). Only chunks some table reaches are read, so
    /// the shadow costs memory for what is in use only. Returns the VRFs whose tables were not
    /// taken: the caller clears their roots and waits for a grace period before anything else is
    /// written (their chunks count as free here).
    pub fn adopt(
        capacity: u32,
        roots: &[(u32, u32)],
        mut load: impl FnMut(u32) -> Result<Chunk, DataplaneError>,
        keep: impl Fn(u32) -> bool,
    ) -> Result<(Self, Vec<u32>), DataplaneError> {
        let mut owner: Vec<Option<u32>> = vec![None; capacity as usize];
        let mut me = Self::new(capacity);
        let mut dropped = Vec::new();
        for &(vrf, root) in roots {
            let mut mine = Vec::new();
            let ok = keep(vrf)
                && root >= 1
                && root <= capacity / ROOT_CHUNKS
                && me.claim(&mut owner, vrf, root, &mut mine, &mut load)?;
            if ok {
                me.roots.insert(vrf, root);
                me.used.insert(vrf, mine.len() as u32);
            } else {
                for c in mine {
                    owner[c as usize] = None;
                }
                dropped.push(vrf);
            }
        }
        me.free = (0..capacity).filter(|&c| owner[c as usize].is_none()).collect();
        Ok((me, dropped))
    }

    /// Reads the table at `root` into the shadow and marks its chunks as `vrf`'s: false if it
    /// reaches outside the pool, a chunk twice, or a chunk below the last level.
    fn claim(
        &mut self,
        owner: &mut [Option<u32>],
        vrf: u32,
        root: u32,
        mine: &mut Vec<u32>,
        load: &mut impl FnMut(u32) -> Result<Chunk, DataplaneError>,
    ) -> Result<bool, DataplaneError> {
        let base = (root - 1) * ROOT_CHUNKS;
        let mut level: Vec<u32> = (base..base + ROOT_CHUNKS).collect();
        for depth in 0..3 {
            let mut next = Vec::new();
            for &c in &level {
                if owner[c as usize].is_some() {
                    return Ok(false);
                }
                owner[c as usize] = Some(vrf);
                mine.push(c);
                self.pool[c as usize] = load(c)?;
                for e in self.pool[c as usize] {
                    if e & CHUNK == 0 {
                        continue;
                    }
                    let child = e & INDEX;
                    if depth == 2 || child as usize >= owner.len() {
                        return Ok(false);
                    }
                    next.push(child);
                }
            }
            level = next;
        }
        Ok(true)
    }

    /// Whether `vrf`'s table gives every address the same leaf (next hop and prefix length) as
    /// a table built afresh from `routes`.
    pub fn matches(&self, vrf: u32, routes: &[(V4Prefix, u32)]) -> bool {
        let Some(&root) = self.roots.get(&vrf) else { return false };
        let mut expected = Self::scratch();
        let Ok(other) = expected.build(&NoSink, vrf, routes) else { return false };
        let (a, b) = ((root - 1) * ROOT_CHUNKS, (other - 1) * ROOT_CHUNKS);
        (0..ROOT_CHUNKS).all(|c| {
            (0..256).all(|i| self.same(self.pool[(a + c) as usize][i], &expected, expected.pool[(b + c) as usize][i]))
        })
    }

    fn same(&self, a: u32, other: &Self, b: u32) -> bool {
        match (a & CHUNK != 0, b & CHUNK != 0) {
            (false, false) => a == b,
            (true, false) => self.pool[(a & INDEX) as usize].iter().all(|&x| self.same(x, other, b)),
            (false, true) => other.pool[(b & INDEX) as usize].iter().all(|&y| self.same(a, other, y)),
            (true, true) => {
                let (ca, cb) = (&self.pool[(a & INDEX) as usize], &other.pool[(b & INDEX) as usize]);
                ca.iter().zip(cb.iter()).all(|(&x, &y)| self.same(x, other, y))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute force: the longest of `routes` containing `a`.
    fn lpm(routes: &BTreeMap<V4Prefix, u32>, a: u32) -> Option<(u8, u32)> {
        (0..=32u8).rev().find_map(|len| {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            routes.get(&(a & mask, len)).map(|&s| (len, s))
        })
    }

    fn p(s: &str) -> V4Prefix {
        let (a, l) = s.split_once('/').unwrap();
        (u32::from(a.parse::<std::net::Ipv4Addr>().unwrap()), l.parse().unwrap())
    }

    use dataplane_common::rng::Rng;

    /// Addresses at and around each prefix's edges, and random ones.
    fn probes(routes: &BTreeMap<V4Prefix, u32>, rng: &mut Rng) -> Vec<u32> {
        let mut out: Vec<u32> = (0..2000).map(|_| rng.next() as u32).collect();
        for &(a, len) in routes.keys() {
            let span = if len == 0 { u32::MAX } else { (1u32 << (32 - len)) - 1 };
            out.extend([
                a,
                a.wrapping_sub(1),
                a.wrapping_add(span),
                a.wrapping_add(span).wrapping_add(1),
                a.wrapping_add(span / 2),
            ]);
        }
        out
    }

    fn check(t: &Fib4, vrf: u32, routes: &BTreeMap<V4Prefix, u32>, rng: &mut Rng) {
        for a in probes(routes, rng) {
            assert_eq!(t.lookup(vrf, a), lpm(routes, a), "address {}", std::net::Ipv4Addr::from(a));
        }
    }

    fn cover(routes: &BTreeMap<V4Prefix, u32>, (a, len): V4Prefix) -> Option<(u8, u32)> {
        (0..len).rev().find_map(|l| {
            let mask = if l == 0 { 0 } else { u32::MAX << (32 - l) };
            routes.get(&(a & mask, l)).map(|&s| (l, s))
        })
    }

    #[test]
    fn fib4_random_inserts_and_deletes_match_brute_force_lpm_and_free_every_chunk() {
        let mut rng = Rng(0x5eed_1234_abcd);
        let mut t = Fib4::new(4096);
        assert!(t.promote(&NoSink, |_| Ok(()), 7, &[]).unwrap());
        let mut routes = BTreeMap::new();
        // Clustered under a few /8s so that prefixes nest at every level.
        for _ in 0..3000 {
            let len = [0, 4, 8, 12, 15, 16, 17, 20, 23, 24, 25, 28, 30, 31, 32][rng.next() as usize % 15];
            let a = (((rng.next() as u32) % 4) << 24 | (rng.next() as u32 & 0x00ff_ffff)) + (10 << 24);
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            let prefix = (a & mask, len);
            let slot = (rng.next() % 5) as u32;
            t.insert(&NoSink, 7, prefix, slot).unwrap();
            routes.insert(prefix, slot);
        }
        check(&t, 7, &routes, &mut rng);
        assert!(t.matches(7, &routes.iter().map(|(p, s)| (*p, *s)).collect::<Vec<_>>()));
        // Re-pointing in place.
        let some: Vec<V4Prefix> = routes.keys().copied().step_by(7).collect();
        for pfx in &some {
            t.insert(&NoSink, 7, *pfx, 9).unwrap();
            routes.insert(*pfx, 9);
        }
        check(&t, 7, &routes, &mut rng);
        // Deleting everything, in random order: every chunk below the root comes back.
        let mut keys: Vec<V4Prefix> = routes.keys().copied().collect();
        for i in (1..keys.len()).rev() {
            keys.swap(i, rng.next() as usize % (i + 1));
        }
        for (n, pfx) in keys.iter().enumerate() {
            routes.remove(pfx);
            t.remove(7, *pfx, cover(&routes, *pfx));
            if n % 500 == 0 {
                check(&t, 7, &routes, &mut rng);
            }
        }
        assert_eq!(t.lookup(7, 0x0a01_0203), None);
        assert_eq!(t.lookup_mode(7), Some(Lookup::Flat { chunks: ROOT_CHUNKS }), "only the root is left");
        assert_eq!(t.chunks_used(), ROOT_CHUNKS);
        assert_eq!(t.free.len() + t.retired.len(), 4096 - ROOT_CHUNKS as usize);
    }

    #[test]
    fn fib4_pool_full_leaves_vrf_on_trie_then_promotes_when_room() {
        // Room for two roots and 3 more chunks.
        let mut t = Fib4::new(2 * ROOT_CHUNKS + 3);
        let cell = std::cell::RefCell::new(BTreeMap::new());
        let roots = &cell;
        let set = |vrf: u32| {
            move |root: u32| -> Result<(), DataplaneError> {
                roots.borrow_mut().insert(vrf, root);
                Ok(())
            }
        };
        assert!(t.promote(&NoSink, set(1), 1, &[(p("192.0.2.0/24"), 1), (p("198.51.100.0/25"), 2)]).unwrap());
        assert_eq!(t.lookup(1, u32::from(std::net::Ipv4Addr::new(198, 51, 100, 1))), Some((25, 2)));
        // VRF 2 needs 4 chunks beyond its root: 3 /24s in distinct /16s and a /25.
        let big =
            [(p("203.0.113.0/24"), 1), (p("198.18.0.0/24"), 1), (p("198.19.0.0/24"), 1), (p("203.0.113.128/25"), 2)];
        assert!(!t.promote(&NoSink, set(2), 2, &big).unwrap());
        assert_eq!(t.lookup_mode(2), Some(Lookup::Trie));
        assert!(!roots.borrow().contains_key(&2), "never pointed at a half-built table");
        assert_eq!(t.chunks_used(), ROOT_CHUNKS + 3, "what the failed build took is free again");
        // Room is made: VRF 1 goes.
        t.remove_vrf(&NoSink, set(1), 1).unwrap();
        assert_eq!(roots.borrow()[&1], 0);
        let promoted = t.retry_overflowed(&NoSink, |v, r| set(v)(r), |_| big.to_vec()).unwrap();
        assert_eq!(promoted, vec![2]);
        assert_eq!(t.lookup(2, u32::from(std::net::Ipv4Addr::new(203, 0, 113, 200))), Some((25, 2)));
        assert_eq!(t.lookup_mode(2), Some(Lookup::Flat { chunks: ROOT_CHUNKS + 4 }));
    }

    #[test]
    fn fib4_adopt_takes_well_formed_tables_and_drops_the_rest() {
        let mut t = Fib4::new(3 * ROOT_CHUNKS + 8);
        let routes = [(p("192.0.2.0/24"), 1), (p("192.0.2.64/26"), 2), (p("10.0.0.0/8"), 3)];
        t.promote(&NoSink, |_| Ok(()), 0, &routes).unwrap();
        t.promote(&NoSink, |_| Ok(()), 5, &routes[..1]).unwrap();
        let roots: Vec<(u32, u32)> = t.roots.iter().map(|(v, r)| (*v, *r)).collect();
        let load = |pool: Vec<Chunk>| move |c: u32| Ok(pool[c as usize]);
        let (a, dropped) = Fib4::adopt(t.capacity(), &roots, load(t.pool.clone()), |v| v != 5).unwrap();
        assert_eq!(dropped, vec![5]);
        assert!(a.matches(0, &routes));
        assert!(!a.matches(0, &routes[..2]), "a route missing from the table is seen");
        assert_eq!(a.lookup(0, u32::from(std::net::Ipv4Addr::new(192, 0, 2, 65))), Some((26, 2)));
        assert_eq!(a.chunks_used(), t.used[&0], "VRF 5's chunks are free");
        // Rebuilt while the old table serves: the root moves in one write, the old chunks retire.
        let mut a = a;
        let before = a.roots[&0];
        let mut set = None;
        assert!(a
            .rebuild(
                &NoSink,
                |r| {
                    set = Some(r);
                    Ok(())
                },
                0,
                &routes[..2]
            )
            .unwrap());
        assert_ne!(set, Some(before));
        assert!(a.matches(0, &routes[..2]));
        assert_eq!(a.lookup(0, u32::from(std::net::Ipv4Addr::new(10, 1, 1, 1))), None);
        // A root pointing twice at one chunk is refused.
        let mut bad = t.pool.clone();
        let r0 = (roots[0].1 - 1) * ROOT_CHUNKS;
        let e = bad[(r0 + 192) as usize][0];
        bad[(r0 + 10) as usize][0] = e;
        let (b, dropped) = Fib4::adopt(t.capacity(), &roots[..1], load(bad), |_| true).unwrap();
        assert_eq!((dropped, b.is_flat(0)), (vec![0], false));
    }
}
