//! Flow aging and removal notices: per-flow idle and hard timeouts (OpenFlow's), the server-wide
//! idle and HOLD timeouts, flows the kernel's LRU evicted, and a [`FlowRemoved`] for every
//! installed flow that leaves the table, whatever took it.
//!
//! The kernel's flow value has no room for timeouts (its spare bytes are NAT's) and the XDP
//! program never needs them, so they stay here, in a [`FlowBook`] of the flows installed with a
//! timeout or for a miss. The book has its own lock, taken after the state's when both are: the
//! aging pass walks the whole kernel table and evaluates every flow against the book without the
//! domain's lock, and takes that lock once, for the few flows it found expired or evicted. A
//! flow in the book takes about 130 bytes (key, entry, the hash map's slack).

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashSet},
    sync::{Arc, Mutex, MutexGuard, RwLock},
    time::Duration,
};

use dataplane_common::flow::{FlowValue, FLOW_HOLD};
use tracing::debug;

use super::monotonic_ns;
use crate::domain::sharded::Sharded;
use crate::{
    dataplane::{Dataplane, FlowKey},
    domain::{Domain, DomainError},
};

/// Why an installed flow left the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlowRemovedReason {
    /// No packet for its idle timeout (its own, or the server-wide one).
    IdleTimeout,
    /// Its hard timeout passed since it was installed, busy or not.
    HardTimeout,
    /// Deleted by a controller (`DeleteFlows`, a session's cleanup).
    Deleted,
    /// The kernel's LRU table made room for another flow; found missing by an aging pass.
    Evicted,
    /// The next hop it forwarded through was deleted.
    NextHopRemoved,
}

/// One installed flow gone, with its final counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowRemoved {
    pub key: FlowKey,
    pub reason: FlowRemovedReason,
    /// Evicted: as the last aging pass that saw the flow read them (0 if none did).
    pub packets: u64,
    pub bytes: u64,
    /// From its installation to its removal.
    pub duration: Duration,
    /// The miss its installation answered (0: none).
    pub request_id: u64,
    pub idle_timeout: Option<Duration>,
    pub hard_timeout: Option<Duration>,
}

/// Where removals go. Called after the removal committed, without the domain's lock (a
/// persistent event hub records its sequence floor through the domain), from the thread of the
/// call that removed the flows (an RPC's, the aging task's): it should not block.
pub type FlowRemovedSink = Arc<dyn Fn(FlowRemoved) + Send + Sync>;

/// What the domain keeps of an installed flow beyond its kernel entry.
#[derive(Clone, Copy, Debug)]
pub(in crate::domain) struct Installed {
    pub(in crate::domain) idle: Option<Duration>,
    pub(in crate::domain) hard: Option<Duration>,
    pub(in crate::domain) request_id: u64,
    /// `created_ns` of the kernel entry as the domain wrote it: tells this flow from a later entry
    /// of the same key (a HOLD the kernel created after evicting it).
    pub(in crate::domain) created_ns: u64,
    /// Counters as the last aging pass that saw it read them (what an eviction reports).
    packets: u64,
    bytes: u64,
    /// The aging pass that last saw it in the kernel's table.
    seen: u64,
    /// When its own timeouts could take it at the earliest, as last computed (`u64::MAX`: it
    /// has none; the walk ages it by the server-wide idle timeout): its slot in the book's
    /// schedule, where an entry of another time is stale.
    due: u64,
}

impl Installed {
    pub(in crate::domain) fn new(
        idle: Option<Duration>,
        hard: Option<Duration>,
        request_id: u64,
        created_ns: u64,
    ) -> Self {
        let mut e = Self { idle, hard, request_id, created_ns, packets: 0, bytes: 0, seen: 0, due: u64::MAX };
        e.due = e.due_after(created_ns);
        e
    }

    /// The earliest its own timeouts could take it, last seen at `last_seen_ns`.
    fn due_after(&self, last_seen_ns: u64) -> u64 {
        let at = |base: u64, d: Option<Duration>| {
            d.map_or(u64::MAX, |d| base.saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)))
        };
        at(self.created_ns, self.hard).min(at(last_seen_ns, self.idle))
    }

    /// Whether `v` is this flow's kernel entry (not a later one of the same key).
    fn is(&self, v: &FlowValue) -> bool {
        v.action != FLOW_HOLD && v.created_ns == self.created_ns
    }
}

/// The flows installed with a timeout or for a miss, and the removal sink.
#[derive(Default)]
pub(in crate::domain) struct FlowBook {
    book: Mutex<Book>,
    sink: RwLock<Option<FlowRemovedSink>>,
}

#[derive(Default)]
pub(in crate::domain) struct Book {
    pub(in crate::domain) flows: Sharded<FlowKey, Installed>,
    /// Aging passes so far.
    pass: u64,
    /// The flows with timeouts of their own, by when to look at them again (earliest first):
    /// [`Domain::expire_due`] looks at those due and no others. An entry whose time is not its
    /// flow's `due` is stale (the flow was looked at, installed again or removed since).
    schedule: BinaryHeap<Reverse<(u64, FlowKey)>>,
}

impl Book {
    /// Records an installed flow and schedules its first look.
    pub(in crate::domain) fn insert(&mut self, key: FlowKey, e: Installed) {
        if e.due != u64::MAX {
            self.schedule.push(Reverse((e.due, key)));
        }
        self.flows.insert(key, e);
    }

    /// The flows due by `now` (at most `max`), taken off the schedule.
    fn take_due(&mut self, now: u64, max: usize) -> Vec<FlowKey> {
        let mut due = Vec::new();
        while due.len() < max {
            match self.schedule.peek() {
                Some(Reverse((at, _))) if *at <= now => {}
                _ => break,
            }
            let Some(Reverse((at, key))) = self.schedule.pop() else { break };
            if self.flows.get(&key).is_some_and(|e| e.due == at) {
                due.push(key);
            }
        }
        due
    }

    /// The entry of `key` if `v` is its flow.
    pub(in crate::domain) fn of(&self, key: &FlowKey, v: &FlowValue) -> Option<&Installed> {
        self.flows.get(key).filter(|e| e.is(v))
    }

    /// Forgets a flow of the book the kernel no longer has (the LRU took it) and says what
    /// went, with its counters as last read.
    fn evicted(&mut self, key: FlowKey, now: u64) -> FlowRemoved {
        let e = self.flows.remove(&key);
        FlowRemoved {
            key,
            reason: FlowRemovedReason::Evicted,
            packets: e.map_or(0, |e| e.packets),
            bytes: e.map_or(0, |e| e.bytes),
            duration: Duration::from_nanos(now.saturating_sub(e.map_or(now, |e| e.created_ns))),
            request_id: e.map_or(0, |e| e.request_id),
            idle_timeout: e.and_then(|e| e.idle),
            hard_timeout: e.and_then(|e| e.hard),
        }
    }

    /// Forgets a removed flow and says what went.
    fn removed(&mut self, key: FlowKey, v: &FlowValue, reason: FlowRemovedReason, now: u64) -> FlowRemoved {
        let e = self.flows.remove(&key).filter(|e| e.is(v));
        FlowRemoved {
            key,
            reason,
            packets: v.packets,
            bytes: v.bytes,
            duration: Duration::from_nanos(now.saturating_sub(v.created_ns)),
            request_id: e.map_or(0, |e| e.request_id),
            idle_timeout: e.and_then(|e| e.idle),
            hard_timeout: e.and_then(|e| e.hard),
        }
    }
}

impl FlowBook {
    pub(in crate::domain) fn lock(&self) -> MutexGuard<'_, Book> {
        // Every method leaves the book consistent before it can panic.
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Flows removed (or looked at again) per taking of the domain's lock in an aging pass: two
/// syscalls each, ~0.5 ms a chunk.
const SWEEP_CHUNK: usize = 256;

/// Flows of the book looked at per [`Domain::expire_due`] at most (the rest wait for the next):
/// a lookup each, ~1 us.
const DUE_MAX: usize = 65_536;

/// Why `v` should go now, if it should (HOLDs: `IdleTimeout` stands for their hold timeout).
fn expiry(
    v: &FlowValue,
    own: Option<&Installed>,
    now: u64,
    hold_timeout: Duration,
    idle_timeout: Duration,
) -> Option<FlowRemovedReason> {
    let idle = Duration::from_nanos(now.saturating_sub(v.last_seen_ns));
    let age = Duration::from_nanos(now.saturating_sub(v.created_ns));
    if v.action == FLOW_HOLD {
        return (age > hold_timeout).then_some(FlowRemovedReason::IdleTimeout);
    }
    if own.and_then(|e| e.hard).is_some_and(|hard| age >= hard) {
        return Some(FlowRemovedReason::HardTimeout);
    }
    let idle_timeout = own.and_then(|e| e.idle).unwrap_or(idle_timeout);
    (idle >= idle_timeout).then_some(FlowRemovedReason::IdleTimeout)
}

impl<D: Dataplane> Domain<D> {
    /// Where every removal of an installed flow is reported from now on (see [`FlowRemovedSink`]).
    pub fn set_flow_removed_sink(&self, sink: FlowRemovedSink) {
        *self.flow_book.sink.write().unwrap_or_else(|p| p.into_inner()) = Some(sink);
    }

    /// Hands removals to the sink, if one is set.
    pub(in crate::domain) fn announce(&self, removed: Vec<FlowRemoved>) {
        if removed.is_empty() {
            return;
        }
        let sink = self.flow_book.sink.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(sink) = sink {
            for r in removed {
                sink(r);
            }
        }
    }

    /// What removing these kernel entries took away (HOLDs are no flow yet: not reported), their
    /// book entries forgotten. Called under the state's lock, after the removal committed; the
    /// caller announces them once it let the lock go.
    pub(in crate::domain) fn removal_notices(
        &self,
        removed: &[super::Entry],
        reason: FlowRemovedReason,
    ) -> Vec<FlowRemoved> {
        let now = monotonic_ns();
        let mut book = self.flow_book.lock();
        removed.iter().filter(|(_, v)| v.action != FLOW_HOLD).map(|(k, v)| book.removed(*k, v, reason, now)).collect()
    }

    /// Ages flows out: HOLDs older than `hold_timeout`; installed flows past their own hard
    /// timeout, or idle for their own idle timeout (`idle_timeout` for those without one); and
    /// reports the flows of the book the kernel evicted. Forgets held frames whose HOLD the LRU
    /// evicted. Returns how many flows it removed.
    pub fn expire_flows(&self, hold_timeout: Duration, idle_timeout: Duration) -> Result<usize, DomainError> {
        self.expire_flows_paced(hold_timeout, idle_timeout, &mut |_| {})
    }

    /// [`Self::expire_flows`], with `pace` called after each page of the walk with the time
    /// the page took (its read and its look at the book): the aging task sleeps there, so that
    /// a pass over a large table is spread out rather than taking a CPU for its whole length.
    pub fn expire_flows_paced(
        &self,
        hold_timeout: Duration,
        idle_timeout: Duration,
        pace: &mut dyn FnMut(Duration),
    ) -> Result<usize, DomainError> {
        // The walk (a page of flows per syscall) runs without the domain's lock, so misses,
        // installs and every other call go on meanwhile; only what it found expired or missing
        // is looked at again, and removed, under the lock.
        let walk_start = monotonic_ns();
        let mut candidates = Vec::new();
        let mut live_holds = HashSet::new();
        let mut missing = Vec::new();
        let pass = {
            let mut book = self.flow_book.lock();
            book.pass += 1;
            book.pass
        };
        // Each page under the book's lock alone (a hash lookup per flow, no syscall): an
        // install waits for one page at most (its end takes the book's lock), nothing else
        // waits at all.
        let mut page_start = std::time::Instant::now();
        self.dataplane.walk_flows(&mut |page| {
            let now = monotonic_ns();
            let mut book = self.flow_book.lock();
            for (k, v) in &page {
                // A HOLD is never the book's: the kernel creates one only where no flow is.
                let found = if v.action == FLOW_HOLD { None } else { book.flows.get_mut(k) };
                let own = match found {
                    Some(e) if e.is(v) => {
                        e.seen = pass;
                        e.packets = v.packets;
                        e.bytes = v.bytes;
                        Some(*e)
                    }
                    _ => None,
                };
                if expiry(v, own.as_ref(), now, hold_timeout, idle_timeout).is_some() {
                    candidates.push(*k);
                } else if v.action == FLOW_HOLD {
                    live_holds.insert(v.request_id);
                }
            }
            drop(book);
            drop(page);
            pace(page_start.elapsed());
            page_start = std::time::Instant::now();
        })?;
        // Installed before the walk began and not in it: evicted, or (a walk of a hash map that
        // changes under it can skip entries) missed; the second look tells. One scan of the
        // book (7 ms at 262,144 flows).
        missing.extend(
            self.flow_book
                .lock()
                .flows
                .iter()
                .filter(|(_, e)| e.seen != pass && e.created_ns < walk_start)
                .map(|(k, _)| *k),
        );

        let mut gone = 0;
        let mut removed = Vec::new();
        // Removed a chunk at a time under the domain's lock, which misses and decisions take
        // too: they wait for a chunk at most, and the pass is paced between chunks as the walk
        // was. A kernel failure part way stops the pass, but what it removed is still announced.
        let swept = (|| -> Result<(), DomainError> {
            let mut chunk_start = std::time::Instant::now();
            for chunk in candidates.chunks(SWEEP_CHUNK) {
                let mut state = self.lock();
                let mut book = self.flow_book.lock();
                for &k in chunk {
                    // A HOLD answered, or a flow that saw a packet, since the walk stays.
                    let Some(v) = self.dataplane.get_flow(&k)? else { continue };
                    let now = monotonic_ns();
                    let Some(reason) = expiry(&v, book.of(&k, &v), now, hold_timeout, idle_timeout) else {
                        if v.action == FLOW_HOLD {
                            live_holds.insert(v.request_id);
                        }
                        continue;
                    };
                    self.dataplane.remove_flow(&k)?;
                    gone += 1;
                    if v.action == FLOW_HOLD {
                        if self.resolve_hold(&mut state, v.request_id).is_some() {
                            state.flows.count_unanswered();
                        }
                    } else {
                        removed.push(book.removed(k, &v, reason, now));
                    }
                }
                drop(book);
                // HOLDs resolved free the cap's room now, not at the end of the pass.
                self.publish_resolved(&state);
                drop(state);
                pace(chunk_start.elapsed());
                chunk_start = std::time::Instant::now();
            }
            for chunk in missing.chunks(SWEEP_CHUNK) {
                let mut book = self.flow_book.lock();
                let now = monotonic_ns();
                for &k in chunk {
                    // Deleted, or installed again, since the walk: nothing of this flow to report here.
                    let Some(e) = book.flows.get(&k).copied() else { continue };
                    if e.created_ns >= walk_start {
                        continue;
                    }
                    if let Some(v) = self.dataplane.get_flow(&k)? {
                        if e.is(&v) {
                            continue; // the walk missed it
                        }
                        if v.action == FLOW_HOLD {
                            live_holds.insert(v.request_id);
                        }
                    }
                    removed.push(book.evicted(k, now));
                }
                drop(book);
                pace(chunk_start.elapsed());
                chunk_start = std::time::Instant::now();
            }
            Ok(())
        })();
        let mut state = self.lock();
        if swept.is_ok() {
            // Held frames whose HOLD is no longer in the table (evicted, or replaced by a flow
            // the kernel cannot tell us about) are resolved too, once older than the hold timeout.
            let now = std::time::Instant::now();
            let stale: Vec<u64> = self
                .held()
                .held
                .iter()
                .filter(|(id, h)| !live_holds.contains(id) && now.saturating_duration_since(h.since) > hold_timeout)
                .map(|(id, _)| id)
                .collect();
            for id in stale {
                if self.resolve_hold(&mut state, id).is_some() {
                    state.flows.count_unanswered();
                }
            }
        }
        self.publish_resolved(&state);
        drop(state);
        let evicted = removed.iter().filter(|r| r.reason == FlowRemovedReason::Evicted).count();
        if evicted > 0 {
            debug!(evicted, "installed flows found evicted by the kernel's LRU");
        }
        self.announce(removed);
        swept.map(|()| gone)
    }

    /// Ages out what is due, without walking the table: HOLDs older than `hold_timeout` (from
    /// the held misses, which know each HOLD's key and age) and the flows of the book whose own
    /// timeouts may have come (a lookup each: gone if expired, looked at again when they could
    /// next expire if not; reported evicted if the kernel no longer has them). What this cannot
    /// see (flows aged by the server-wide idle timeout, HOLDs of misses never read, evictions
    /// of flows not yet due) is left to the walk of [`Self::expire_flows_paced`], which can then
    /// run far less often. Returns how many flows it removed.
    pub fn expire_due(&self, hold_timeout: Duration, idle_timeout: Duration) -> Result<usize, DomainError> {
        // The oldest first, from the arrival order: no scan of every held miss.
        let holds = self.held().older_than(std::time::Instant::now(), hold_timeout);
        let due = self.flow_book.lock().take_due(monotonic_ns(), DUE_MAX);
        let (mut gone, mut removed) = (0, Vec::new());
        let swept = (|| -> Result<(), DomainError> {
            for chunk in holds.chunks(SWEEP_CHUNK) {
                let mut state = self.lock();
                // The HOLDs still there go (one kernel run for the chunk); the frames of the
                // others (evicted, or replaced) go all the same.
                let refs: Vec<(FlowKey, u64)> = chunk.iter().map(|&(id, key)| (key, id)).collect();
                gone += self.dataplane.remove_holds(&refs)?;
                for &(id, _) in chunk {
                    if self.resolve_hold(&mut state, id).is_some() {
                        state.flows.count_unanswered();
                    }
                }
                self.publish_resolved(&state);
            }
            for chunk in due.chunks(SWEEP_CHUNK) {
                let _state = self.lock();
                let mut book = self.flow_book.lock();
                for &key in chunk {
                    let Some(e) = book.flows.get(&key).copied() else { continue };
                    let now = monotonic_ns();
                    match self.dataplane.get_flow(&key)? {
                        Some(v) if e.is(&v) => match expiry(&v, Some(&e), now, hold_timeout, idle_timeout) {
                            Some(reason) => {
                                self.dataplane.remove_flow(&key)?;
                                gone += 1;
                                removed.push(book.removed(key, &v, reason, now));
                            }
                            None => {
                                let e = book.flows.get_mut(&key).expect("looked up above under the same lock");
                                (e.packets, e.bytes) = (v.packets, v.bytes);
                                e.due = e.due_after(v.last_seen_ns);
                                let at = e.due;
                                if at != u64::MAX {
                                    book.schedule.push(Reverse((at, key)));
                                }
                            }
                        },
                        // Gone from the kernel, or a later entry of its key (a HOLD after an
                        // eviction): the LRU took it.
                        _ => {
                            removed.push(book.evicted(key, now));
                        }
                    }
                }
            }
            Ok(())
        })();
        self.announce(removed);
        swept.map(|()| gone)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use dataplane_common::flow::{FLOW_DROP, FLOW_FORWARD};

    use super::*;
    use crate::{
        dataplane::{FlowMiss, Flows},
        domain::{fake::FakeDataplane, FlowAction, FlowSpec, FlowTarget, NewNextHop, NextHopSpec},
    };

    const S: u64 = 1_000_000_000;
    const HOLD: Duration = Duration::from_secs(5);
    const IDLE: Duration = Duration::from_secs(60);

    fn key(sport: u16) -> FlowKey {
        FlowKey {
            vrf: 0,
            src: "192.0.2.2".parse().unwrap(),
            dst: "198.51.100.2".parse().unwrap(),
            proto: 17,
            sport,
            dport: 7000,
        }
    }

    /// A domain with next hop 1 whose sink records every removal, and checks it is called with
    /// neither the domain's lock nor the book's held (a sink may call the domain).
    fn domain() -> (Arc<Domain<FakeDataplane>>, Arc<Mutex<Vec<FlowRemoved>>>) {
        let d = Arc::new(Domain::new(FakeDataplane::default()));
        d.add_nexthops(vec![NewNextHop { id: 1, spec: NextHopSpec::Receive }]).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let weak = Arc::downgrade(&d);
        d.set_flow_removed_sink(Arc::new(move |r| {
            let d = weak.upgrade().expect("the domain calls its sink");
            assert!(d.state.try_lock().is_ok(), "the sink was called under the domain's lock: {r:?}");
            assert!(d.flow_book.book.try_lock().is_ok(), "the sink was called under the book's lock: {r:?}");
            s.lock().unwrap().push(r);
        }));
        (d, seen)
    }

    fn spec(sport: u16, idle_ms: Option<u64>, hard_ms: Option<u64>) -> FlowSpec {
        FlowSpec {
            target: FlowTarget::Key(key(sport)),
            action: FlowAction::Forward(1),
            reverse: None,
            idle_timeout: idle_ms.map(Duration::from_millis),
            hard_timeout: hard_ms.map(Duration::from_millis),
        }
    }

    /// Plays the kernel: the flow of `sport` was installed `age` seconds ago, saw its last packet
    /// `idle` seconds ago, and counted `packets` (100 bytes each).
    fn play(d: &Domain<FakeDataplane>, sport: u16, age: u64, idle: u64, packets: u64) {
        let mut flows = d.dataplane().flows.lock().unwrap();
        let v = flows.get_mut(&key(sport)).expect("installed");
        let now = monotonic_ns();
        v.created_ns = now - age * S;
        v.last_seen_ns = now - idle * S;
        v.packets = packets;
        v.bytes = packets * 100;
        drop(flows);
        // The book knows a flow by the creation time the domain wrote: keep it in step, and
        // schedule its next look as the time played says.
        let mut book = d.flow_book.lock();
        if let Some(e) = book.flows.get_mut(&key(sport)) {
            e.created_ns = now - age * S;
            e.due = e.due_after(now - idle * S);
            let due = e.due;
            book.schedule.push(Reverse((due, key(sport))));
        }
    }

    fn left(d: &Domain<FakeDataplane>) -> Vec<u16> {
        d.dataplane().flows().unwrap().iter().map(|(k, _)| k.sport).collect()
    }

    fn reasons(seen: &Mutex<Vec<FlowRemoved>>) -> Vec<(u16, FlowRemovedReason, u64)> {
        let mut r: Vec<_> = seen.lock().unwrap().iter().map(|r| (r.key.sport, r.reason, r.packets)).collect();
        r.sort_by_key(|r| r.0);
        r
    }

    #[test]
    fn expire_flows_removes_old_holds_and_idle_flows_only() {
        let d = Domain::new(FakeDataplane::default());
        let now = monotonic_ns();
        let put = |sport, action, created: u64, seen: u64| {
            let v = FlowValue {
                action,
                request_id: u64::from(sport),
                created_ns: created,
                last_seen_ns: seen,
                ..Default::default()
            };
            d.dataplane().put_flow(&key(sport), &v).unwrap();
        };
        put(1, FLOW_HOLD, now - 10 * S, now - 10 * S); // a HOLD nobody answered: goes
        put(2, FLOW_HOLD, now, now); // a fresh HOLD: stays
        put(3, FLOW_FORWARD, now - 100 * S, now - 100 * S); // idle past the timeout: goes
        put(4, FLOW_FORWARD, now - 100 * S, now); // old but busy: stays
        put(5, FLOW_DROP, now - 100 * S, now - 2 * S); // idle, within the timeout: stays
        let gone = d.expire_flows(HOLD, IDLE).unwrap();
        assert_eq!(gone, 2);
        assert_eq!(left(&d), vec![2, 4, 5]);
    }

    #[test]
    fn expire_due_removes_flows_past_their_own_timeouts_without_a_walk() {
        let (d, seen) = domain();
        let specs = vec![spec(1, Some(1000), None), spec(2, Some(3000), None), spec(3, None, Some(2000))];
        d.install_flows(specs).unwrap();
        play(&d, 1, 10, 2, 7); // idle 2 s of its 1 s: due, goes
        play(&d, 2, 10, 2, 7); // idle 2 s of its 3 s: due in a second, not looked at
        play(&d, 3, 3, 0, 5); // 3 s old of its hard 2 s: due, goes
        assert_eq!(d.expire_due(HOLD, IDLE).unwrap(), 2);
        assert_eq!(left(&d), vec![2]);
        assert_eq!(
            reasons(&seen),
            vec![(1, FlowRemovedReason::IdleTimeout, 7), (3, FlowRemovedReason::HardTimeout, 5)]
        );
        assert_eq!(d.expire_due(HOLD, IDLE).unwrap(), 0, "each went once");
    }

    #[test]
    fn expire_due_busy_flow_stays_and_is_looked_at_when_it_next_could_expire() {
        let (d, seen) = domain();
        d.install_flows(vec![spec(1, Some(1000), None)]).unwrap();
        play(&d, 1, 10, 2, 7); // due: idle 2 s as the book last knew it
                               // ... but the kernel has seen a packet since.
        let now = monotonic_ns();
        d.dataplane().flows.lock().unwrap().get_mut(&key(1)).unwrap().last_seen_ns = now;
        assert_eq!(d.expire_due(HOLD, IDLE).unwrap(), 0);
        assert_eq!(left(&d), vec![1]);
        assert!(seen.lock().unwrap().is_empty());
        let book = d.flow_book.lock();
        let due = book.flows.get(&key(1)).unwrap().due;
        assert!(due >= now + S && due < now + 2 * S, "next look a timeout after its last packet: {due} vs {now}");
        assert!(book.schedule.iter().any(|Reverse((at, k))| *at == due && *k == key(1)), "and scheduled");
    }

    #[test]
    fn expire_due_flow_the_kernel_no_longer_has_reported_evicted() {
        let (d, seen) = domain();
        d.install_flows(vec![spec(1, Some(1000), None)]).unwrap();
        play(&d, 1, 10, 2, 7);
        d.dataplane().flows.lock().unwrap().remove(&key(1));
        assert_eq!(d.expire_due(HOLD, IDLE).unwrap(), 0);
        assert_eq!(reasons(&seen), vec![(1, FlowRemovedReason::Evicted, 0)]);
        assert!(d.flow_book.lock().flows.is_empty());
    }

    #[test]
    fn expire_due_unanswered_hold_goes_by_its_held_miss_and_is_counted() {
        let (d, _) = domain();
        let hold = FlowValue { action: FLOW_HOLD, request_id: 9, created_ns: monotonic_ns(), ..Default::default() };
        d.dataplane().put_flow(&key(1), &hold).unwrap();
        let miss = |request_id: u64, sport: u16| FlowMiss {
            request_id,
            ifindex: 1,
            slot: 0,
            key: key(sport),
            reason: dataplane_common::flow::MISS_NO_FLOW,
            packet_len: 60,
            frame: bytes::Bytes::from_static(&[0; 60]),
        };
        // Its HOLD, and one whose HOLD the kernel lost (evicted): both held misses go.
        d.record_misses(&[miss(9, 1), miss(10, 2)]);
        assert_eq!(d.held_now(), 2);
        assert_eq!(d.expire_due(HOLD, IDLE).unwrap(), 0, "not older than the hold timeout yet");
        assert_eq!(d.expire_due(Duration::ZERO, IDLE).unwrap(), 1);
        assert!(left(&d).is_empty());
        assert_eq!(d.held_now(), 0);
        assert_eq!(d.lock().flows.unanswered(), 2);
    }

    #[test]
    fn flow_idle_timeout_of_its_own_removes_it_once_idle_that_long() {
        let (d, seen) = domain();
        d.install_flows(vec![spec(1, Some(1000), None), spec(2, Some(3000), None)]).unwrap();
        play(&d, 1, 10, 2, 7); // idle 2 s of its 1 s: goes
        play(&d, 2, 10, 2, 7); // idle 2 s of its 3 s: stays
        assert_eq!(d.expire_flows(HOLD, IDLE).unwrap(), 1);
        assert_eq!(left(&d), vec![2]);
        assert_eq!(reasons(&seen), vec![(1, FlowRemovedReason::IdleTimeout, 7)]);
    }

    #[test]
    fn flow_hard_timeout_removes_it_even_while_busy() {
        let (d, seen) = domain();
        d.install_flows(vec![spec(1, None, Some(2000)), spec(2, Some(1000), Some(20_000))]).unwrap();
        play(&d, 1, 3, 0, 500); // 3 s old of its 2 s, a packet just now: goes
        play(&d, 2, 3, 0, 500); // 3 s old of its 20 s, busy: stays
        assert_eq!(d.expire_flows(HOLD, IDLE).unwrap(), 1);
        assert_eq!(left(&d), vec![2]);
        let r = seen.lock().unwrap()[0].clone();
        assert_eq!((r.key, r.reason, r.packets, r.bytes), (key(1), FlowRemovedReason::HardTimeout, 500, 50_000));
        assert_eq!(r.hard_timeout, Some(Duration::from_secs(2)));
        assert!(r.duration >= Duration::from_secs(3) && r.duration < Duration::from_secs(4), "{r:?}");
    }

    #[test]
    fn flow_without_timeouts_of_its_own_ages_by_the_server_idle_timeout() {
        let (d, seen) = domain();
        d.install_flows(vec![spec(1, None, None), spec(2, None, None), spec(3, Some(120_000), None)]).unwrap();
        play(&d, 1, 100, 61, 3); // past the server's 60 s: goes
        play(&d, 2, 100, 59, 3); // within it: stays
        play(&d, 3, 100, 61, 3); // past 60 s but its own 120 s rules: stays
        assert_eq!(d.expire_flows(HOLD, IDLE).unwrap(), 1);
        assert_eq!(left(&d), vec![2, 3]);
        let r = seen.lock().unwrap()[0].clone();
        assert_eq!(
            (r.key.sport, r.reason, r.idle_timeout, r.hard_timeout),
            (1, FlowRemovedReason::IdleTimeout, None, None)
        );
    }

    #[test]
    fn flow_removed_sink_hears_each_removal_once_with_counters_and_reason() {
        let (d, seen) = domain();
        d.add_nexthops(vec![NewNextHop { id: 2, spec: NextHopSpec::Receive }]).unwrap();
        let via2 = FlowSpec { action: FlowAction::Forward(2), ..spec(5, None, None) };
        d.install_flows(vec![
            spec(1, Some(1000), None),
            spec(2, None, Some(1000)),
            spec(3, None, None),
            spec(4, Some(1000), Some(60_000)),
            via2,
        ])
        .unwrap();
        for (sport, packets) in [(1, 11), (2, 22), (3, 33), (4, 44), (5, 55)] {
            play(&d, sport, 5, if sport == 1 { 5 } else { 0 }, packets);
        }
        d.delete_flows(&[key(3)]).unwrap();
        d.delete_nexthops(&[2]).unwrap();
        // The kernel's LRU evicts flow 4 (the aging pass before saw it with 44 packets).
        d.expire_flows(HOLD, IDLE).unwrap();
        d.dataplane().flows.lock().unwrap().remove(&key(4));
        d.expire_flows(HOLD, IDLE).unwrap();
        d.expire_flows(HOLD, IDLE).unwrap();
        assert!(left(&d).is_empty(), "{:?}", left(&d));
        assert_eq!(
            reasons(&seen),
            vec![
                (1, FlowRemovedReason::IdleTimeout, 11),
                (2, FlowRemovedReason::HardTimeout, 22),
                (3, FlowRemovedReason::Deleted, 33),
                (4, FlowRemovedReason::Evicted, 44),
                (5, FlowRemovedReason::NextHopRemoved, 55),
            ]
        );
        let evicted = seen.lock().unwrap().iter().find(|r| r.key == key(4)).cloned().unwrap();
        assert_eq!(
            (evicted.bytes, evicted.idle_timeout, evicted.hard_timeout),
            (4400, Some(Duration::from_secs(1)), Some(Duration::from_secs(60)))
        );
    }

    #[test]
    fn expire_flows_kernel_failure_part_way_still_announces_what_went() {
        let (d, seen) = domain();
        d.install_flows(vec![spec(1, Some(1000), None), spec(2, Some(1000), None)]).unwrap();
        play(&d, 1, 10, 5, 1);
        play(&d, 2, 10, 5, 2);
        d.dataplane().fail_write(2); // the second removal
        assert!(d.expire_flows(HOLD, IDLE).is_err());
        assert_eq!(reasons(&seen), vec![(1, FlowRemovedReason::IdleTimeout, 1)]);
        assert_eq!(d.expire_flows(HOLD, IDLE).unwrap(), 1, "the next pass finishes");
        assert_eq!(
            reasons(&seen),
            vec![(1, FlowRemovedReason::IdleTimeout, 1), (2, FlowRemovedReason::IdleTimeout, 2)]
        );
        assert!(left(&d).is_empty());
    }

    #[test]
    fn install_flows_zero_timeout_is_refused_naming_the_field() {
        let (d, _) = domain();
        let zero = FlowSpec { hard_timeout: Some(Duration::ZERO), ..spec(1, None, None) };
        let e = d.install_flows(vec![spec(2, Some(1), None), zero]).unwrap_err();
        assert_eq!(e.kind(), crate::domain::ErrorKind::InvalidArgument);
        assert!(e.to_string().starts_with("flows[1].hard_timeout"), "{e}");
        assert!(left(&d).is_empty(), "all or nothing");
    }

    #[test]
    fn flow_installed_again_is_no_removal_and_takes_its_new_timeouts() {
        let (d, seen) = domain();
        d.install_flows(vec![spec(1, Some(1000), Some(2000))]).unwrap();
        play(&d, 1, 10, 0, 3);
        // Installed again before the aging pass, without timeouts: its hard timeout went with it.
        d.install_flows(vec![spec(1, None, None)]).unwrap();
        let listed: Vec<_> =
            d.list_flows(None).unwrap().into_iter().map(|f| (f.idle_timeout, f.hard_timeout)).collect();
        assert_eq!(listed, vec![(None, None)]);
        assert_eq!(d.expire_flows(HOLD, IDLE).unwrap(), 0);
        assert_eq!(left(&d), vec![1]);
        assert!(seen.lock().unwrap().is_empty(), "{:?}", seen.lock().unwrap());
    }

    #[test]
    fn flow_removed_reports_the_request_id_of_the_miss_its_install_answered() {
        let (d, seen) = domain();
        let miss = crate::dataplane::FlowMiss {
            request_id: 77,
            ifindex: 1,
            slot: 0,
            key: key(1),
            reason: dataplane_common::flow::MISS_NO_FLOW,
            packet_len: 0,
            frame: bytes::Bytes::new(),
        };
        let hold = FlowValue { action: FLOW_HOLD, request_id: 77, ..Default::default() };
        d.dataplane().put_flow(&key(1), &hold).unwrap();
        d.record_miss(&miss);
        let answer =
            FlowSpec { target: FlowTarget::Request(77), reverse: Some(FlowAction::Drop), ..spec(1, Some(1000), None) };
        d.install_flows(vec![answer]).unwrap();
        let listed: Vec<_> =
            d.list_flows(None).unwrap().into_iter().map(|f| (f.key, f.idle_timeout, f.hard_timeout)).collect();
        let second = Some(Duration::from_secs(1));
        assert_eq!(listed, vec![(key(1), second, None), (key(1).reversed(), second, None)]);
        d.delete_flows(&[key(1), key(1).reversed()]).unwrap();
        let ids: Vec<_> = seen.lock().unwrap().iter().map(|r| (r.key, r.request_id)).collect();
        assert_eq!(ids, vec![(key(1), 77), (key(1).reversed(), 77)]);
    }
}
