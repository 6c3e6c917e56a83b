//! Flows: per-interface flow mode, flows installed by controllers (resolving the HOLDs their
//! misses created, then re-injecting the captured first packets), deletion, listing and aging.
//!
//! HOLD accounting: the XDP program counts HOLDs it created (with a miss event); the domain counts
//! the ones it resolved (installed over, deleted, expired, or found evicted) and publishes that
//! total, so the kernel's cap applies to `created - resolved`. Every created HOLD reaches the
//! domain as a miss (`record_miss`), so the domain knows each outstanding one by request id.
//!
//! Aging, per-flow timeouts and removal notices: `aging`.

mod aging;
mod held;
pub(super) mod restore;

pub(super) use aging::FlowBook;
pub use aging::{FlowRemoved, FlowRemovedReason, FlowRemovedSink};

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    time::{Duration, Instant},
};

use dataplane_common::flow::{FlowConfig, FlowValue, FLOW_DROP, FLOW_FORWARD, FLOW_HOLD, MAX_PUNT_RATE};
use tracing::{debug, warn};

use super::{
    nexthops,
    txn::{KernelOp, Write},
    vrfs, Atomicity, BatchError, Domain, DomainError, InterfaceName, State,
};
use crate::dataplane::{Dataplane, FlowKey, FlowMiss, NO_EGRESS};

/// Flow mode of one interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowMode {
    pub enabled: bool,
    /// While held (and for misses not punted): forward by route instead of dropping.
    pub miss_forward: bool,
    pub hold_cap: u32,
    /// Punts per second per CPU, and burst.
    pub punt_rate: u32,
    pub punt_burst: u32,
}

/// What an installed flow does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowAction {
    /// Forward through next hop `id`.
    Forward(u32),
    Drop,
}

/// Which flow an `InstallFlows` entry is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowTarget {
    Key(FlowKey),
    /// The flow of a punted miss, by its request id.
    Request(u64),
}

/// One flow of an `InstallFlows` batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowSpec {
    pub target: FlowTarget,
    pub action: FlowAction,
    /// Also install the reply direction with this action.
    pub reverse: Option<FlowAction>,
    /// Removed after this long without a packet (`None`: the server-wide idle timeout); the
    /// reply direction gets the same.
    pub idle_timeout: Option<Duration>,
    /// Removed this long after its installation, busy or not (`None`: never).
    pub hard_timeout: Option<Duration>,
}

/// Entries of the flow tables, by family and kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowCounts {
    /// [IPv4, IPv6]: installed flows that forward, that drop, and HOLDs (misses waiting).
    pub forward: [u64; 2],
    pub drop: [u64; 2],
    pub hold: [u64; 2],
}

/// A flow as listed.
#[derive(Clone, Debug)]
pub struct FlowView {
    pub key: FlowKey,
    /// `None` while held.
    pub action: Option<FlowAction>,
    pub request_id: u64,
    pub packets: u64,
    pub bytes: u64,
    pub idle: Duration,
    /// Its own timeouts, as installed.
    pub idle_timeout: Option<Duration>,
    pub hard_timeout: Option<Duration>,
}

/// A punted miss the domain keeps until its flow is installed, deleted or expires.
#[derive(Debug)]
pub(super) struct Held {
    key: FlowKey,
    ifindex: u32,
    frame: bytes::Bytes,
    since: Instant,
    /// Re-inject on install (the kernel dropped it; with miss-forward it already went by route).
    reinject: bool,
}

/// Held misses, beside the state under a lock of their own: the ring-buffer reader records a
/// burst of misses without waiting for a batch being applied under the state's lock (which
/// held its misses up for as long as the batch's kernel writes took). Taken after the state's
/// lock when both are, never before.
#[derive(Debug, Default)]
pub(super) struct HeldStore {
    held: held::IdRing<Held>,
    /// Slots whose flow mode forwards held flows by route (their misses are not re-injected):
    /// the flow modes' flag, mirrored here for the reader.
    miss_forward: HashSet<u32>,
}

impl HeldStore {
    /// The held misses older than `timeout` at `now`, as (request id, key): each CPU's oldest,
    /// without a look at the younger ones. They stay held.
    pub(super) fn older_than(&self, now: Instant, timeout: Duration) -> Vec<(u64, FlowKey)> {
        self.held
            .oldest_while(|h| now.saturating_duration_since(h.since) > timeout)
            .into_iter()
            .map(|(id, h)| (id, h.key))
            .collect()
    }

    fn set_mode(&mut self, slot: u32, mode: Option<&FlowMode>) {
        if mode.is_some_and(|m| m.enabled && m.miss_forward) {
            self.miss_forward.insert(slot);
        } else {
            self.miss_forward.remove(&slot);
        }
    }
}

/// The domain's flow state.
#[derive(Debug, Default)]
pub(super) struct Flows {
    modes: HashMap<u32, FlowMode>,
    resolved: u64,
    /// HOLDs that expired with no decision (their captured packets dropped).
    unanswered: u64,
}

impl Flows {
    pub(super) fn modes(&self) -> &HashMap<u32, FlowMode> {
        &self.modes
    }

    pub(super) fn set_mode(&mut self, slot: u32, mode: FlowMode) {
        self.modes.insert(slot, mode);
    }

    pub(super) fn unanswered(&self) -> u64 {
        self.unanswered
    }

    /// A HOLD expired with no decision.
    pub(super) fn count_unanswered(&mut self) {
        self.unanswered += 1;
    }
}

/// The result of a batch whose entries are validated one by one.
#[derive(Debug)]
pub struct BatchOutcome {
    pub generation: u64,
    /// Entries applied (0 when an ALL_OR_NOTHING batch had a failure).
    pub applied: usize,
    /// Failed entries: index in the request, and why.
    pub failed: Vec<(usize, DomainError)>,
    /// The flows written (reply directions included), for a session that removes its flows
    /// when it ends.
    pub installed: Vec<FlowKey>,
}

/// Smallest frame a packet-out may carry (an Ethernet header), and the largest (a 9,000-byte
/// jumbo payload with its Ethernet and VLAN headers).
const MIN_FRAME: usize = 14;
const MAX_FRAME: usize = 9018;

/// A flow table entry as the kernel holds it.
pub(super) type Entry = (FlowKey, FlowValue);

/// Bounds of the stored held frames: a flood of misses cannot grow the server without limit.
const MAX_HELD: usize = 65536;

impl<D: Dataplane> Domain<D> {
    /// Sets the flow mode of an attached interface.
    pub fn set_flow_mode(&self, interface: &InterfaceName, mode: FlowMode) -> Result<u64, DomainError> {
        let mut state = self.lock();
        let slot = state
            .interfaces
            .get(interface)
            .ok_or_else(|| super::interfaces::not_attached(interface).at("interface"))?
            .slot;
        if mode.enabled {
            if mode.punt_rate == 0 || mode.punt_rate > MAX_PUNT_RATE {
                return Err(DomainError::invalid(
                    "punt_rate",
                    format!("1 to {MAX_PUNT_RATE} punts per second per CPU"),
                ));
            }
            if mode.punt_burst == 0 {
                return Err(DomainError::invalid("punt_burst", "at least 1"));
            }
            if mode.hold_cap == 0 {
                return Err(DomainError::invalid("hold_cap", "at least 1"));
            }
        }
        let current = state.flows.modes.get(&slot);
        if current == Some(&mode) || (current.is_none() && !mode.enabled) {
            // Set again as it is (a controller's replay): nothing to write, same generation.
            return Ok(state.generation);
        }
        let cfg = FlowConfig {
            enabled: mode.enabled.into(),
            miss_forward: mode.miss_forward.into(),
            punt_rate: mode.punt_rate,
            punt_burst: mode.punt_burst,
            hold_cap: mode.hold_cap,
            _pad: 0,
        };
        self.dataplane.set_flow_config(slot, &cfg)?;
        state.flows.modes.insert(slot, mode);
        self.held().set_mode(slot, Some(&mode));
        self.bump(&mut state);
        Ok(state.generation)
    }

    /// Drops the HOLD entries a previous run left (their captured packets are gone) and starts
    /// the resolved count level with the kernel's created count.
    pub(super) fn restore_holds(&self, state: &mut State) -> Result<(), DomainError> {
        for (k, v) in self.dataplane.flows()? {
            if v.action == FLOW_HOLD {
                self.dataplane.remove_flow(&k)?;
            }
        }
        state.flows.resolved = self.dataplane.holds_created()?;
        self.publish_resolved(state);
        Ok(())
    }

    /// Turns flow mode off for a slot being freed, so its next interface starts without it.
    pub(super) fn reset_flow_mode(&self, state: &mut State, slot: u32) -> Result<(), DomainError> {
        if state.flows.modes.remove(&slot).is_some() {
            self.held().set_mode(slot, None);
            let off = FlowConfig { enabled: 0, miss_forward: 0, punt_rate: 0, punt_burst: 0, hold_cap: 0, _pad: 0 };
            self.dataplane.set_flow_config(slot, &off)?;
        }
        Ok(())
    }

    /// Keeps a punted miss (its captured frame) until its flow is decided.
    pub fn record_miss(&self, miss: &FlowMiss) {
        self.record_misses(std::slice::from_ref(miss));
    }

    /// [`Self::record_miss`] for every miss the ring buffer had, under one taking of the held
    /// store's lock (not the state's: see [`HeldStore`]).
    pub fn record_misses(&self, misses: &[FlowMiss]) {
        let mut store = self.held();
        // One clock reading per batch: they were read together.
        let now = Instant::now();
        for miss in misses {
            Self::record_one(&mut store, miss, now);
        }
    }

    /// The held misses (after the state's lock, if both are taken).
    pub(super) fn held(&self) -> std::sync::MutexGuard<'_, HeldStore> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Misses held for a decision now.
    pub(super) fn held_now(&self) -> u64 {
        self.held().held.len() as u64
    }

    fn record_one(store: &mut HeldStore, miss: &FlowMiss, now: Instant) {
        if miss.reason != dataplane_common::flow::MISS_NO_FLOW {
            // A PUNT rule's packet went on to the kernel stack: no HOLD, nothing to re-inject.
            return;
        }
        let reinject = !store.miss_forward.contains(&miss.slot);
        let frame_kept = store.held.len() < MAX_HELD;
        if !frame_kept {
            // The kernel cap keeps this from happening unless the cap is set above MAX_HELD:
            // keep the HOLD, drop its frame.
            debug!(request_id = miss.request_id, "held-frame store full; frame not kept");
        }
        let held = Held {
            key: miss.key,
            ifindex: miss.ifindex,
            frame: if frame_kept { miss.frame.clone() } else { bytes::Bytes::new() },
            since: now,
            reinject: reinject && frame_kept,
        };
        if store.held.insert(miss.request_id, held).is_err() {
            warn!(request_id = miss.request_id, "flow miss with an impossible request id; not held");
        }
    }

    /// Installs flows, all or nothing; HOLDs they replace are resolved and their captured
    /// packets re-injected through the XDP program (so the first packet is not lost).
    pub fn install_flows(&self, batch: Vec<FlowSpec>) -> Result<u64, DomainError> {
        let out = self.install_flows_with(batch, &[], false)?;
        match out.failed.into_iter().next() {
            Some((_, e)) => Err(e),
            None => Ok(out.generation),
        }
    }

    /// Installs flows, each entry validated on its own: with `continue_on_error` the valid ones
    /// are installed (as one atomic batch) and the others reported, otherwise any invalid entry
    /// leaves everything as it was. A kernel failure undoes the whole batch and is the error.
    /// `positions[i]` is entry i's index in the request (errors name `flows[position]`; empty:
    /// the batch is the request).
    pub fn install_flows_with(
        &self,
        batch: Vec<FlowSpec>,
        positions: &[usize],
        continue_on_error: bool,
    ) -> Result<BatchOutcome, DomainError> {
        let mut state = self.lock();
        let mut planned = Vec::with_capacity(batch.len());
        let mut failed = Vec::new();
        {
            let held = self.held();
            for (i, f) in batch.iter().enumerate() {
                let at = positions.get(i).copied().unwrap_or(i);
                match plan_entry(&state, &held.held, at, i, f) {
                    Ok(w) => planned.extend(w),
                    Err(e) => failed.push((at, e)),
                }
            }
        }
        let applied = batch.len() - failed.len();
        if planned.is_empty() || (!failed.is_empty() && !continue_on_error) {
            return Ok(BatchOutcome { generation: state.generation, applied: 0, failed, installed: Vec::new() });
        }
        // Previous values, to undo a kernel failure and to find the HOLDs replaced.
        let mut previous = Vec::with_capacity(planned.len());
        for p in &planned {
            previous.push(self.dataplane.get_flow(&p.key)?);
        }
        let installed = planned.iter().map(|p| p.key).collect();
        let writes = planned
            .iter()
            .zip(&previous)
            .map(|(p, prev)| Write {
                op: KernelOp::PutFlow(p.key, p.value),
                undo: vec![put_back(p.key, prev)],
                at: None,
            })
            .collect();
        // Held until the batch committed (past `bump_volatile`).
        let intent = self.apply_logged(&state, writes)?;
        self.book_installed(&batch, &planned, &previous);
        let mut reinject = Vec::new();
        for (p, prev) in planned.iter().zip(&previous) {
            let Some(prev) = prev.filter(|v| v.action == FLOW_HOLD) else { continue };
            if let Some(h) = self.resolve_hold(&mut state, prev.request_id) {
                if h.reinject && !h.frame.is_empty() {
                    reinject.push((h, single_egress(&state, &p.value)));
                }
            }
        }
        self.publish_resolved(&state);
        self.bump_volatile(&mut state);
        drop(intent);
        let generation = state.generation;
        drop(state);
        for (h, egress) in reinject {
            // The flow is in place: the packet now follows it. Through an ENCAP next hop the
            // program's verdict and frame are computed by a plain test run and sent out of its
            // interface (a live test run builds and tears down a page pool per call: a quarter
            // of the server's CPU at high setup rates); a flow that drops, by a plain test run
            // alone; anything else runs live.
            let r = match egress {
                Some(egress) => self.dataplane.reinject_via(h.ifindex, egress, &h.frame),
                None => self.dataplane.reinject(h.ifindex, &h.frame),
            };
            if let Err(e) = r {
                warn!(error = %e, ifindex = h.ifindex, "re-injecting a held packet failed");
            }
        }
        Ok(BatchOutcome { generation, applied, failed, installed })
    }

    /// The entries of a batch that [`Self::install_flows_with`] would refuse, and why; changes
    /// nothing.
    pub fn validate_flows(&self, batch: &[FlowSpec], positions: &[usize]) -> Vec<(usize, DomainError)> {
        let state = self.lock();
        let held = self.held();
        batch
            .iter()
            .enumerate()
            .filter_map(|(i, f)| {
                let at = positions.get(i).copied().unwrap_or(i);
                plan_entry(&state, &held.held, at, i, f).err().map(|e| (at, e))
            })
            .collect()
    }

    /// Removes those of `keys` still in the flow table (a session's flows when it ends with
    /// DELETE_FLOWS); absent ones are skipped. Returns how many went.
    pub fn remove_flows_present(&self, keys: &[FlowKey]) -> Result<usize, DomainError> {
        let mut state = self.lock();
        let mut found = Vec::new();
        for k in keys {
            if let Some(v) = self.dataplane.get_flow(k)? {
                if v.action != FLOW_HOLD {
                    found.push((*k, v));
                }
            }
        }
        if found.is_empty() {
            return Ok(0);
        }
        let writes = found
            .iter()
            .map(|(k, v)| Write { op: KernelOp::RemoveFlow(*k), undo: vec![KernelOp::PutFlow(*k, *v)], at: None })
            .collect();
        let _intent = self.apply_logged(&state, writes)?;
        self.bump_volatile(&mut state);
        Ok(found.len())
    }

    /// Sends a controller's frame out of an attached interface, or (`ingress`) runs it through
    /// the XDP program as if it had arrived there.
    pub fn packet_out(&self, interface: &InterfaceName, frame: &[u8], ingress: bool) -> Result<(), DomainError> {
        if frame.len() < MIN_FRAME || frame.len() > MAX_FRAME {
            return Err(DomainError::invalid(
                "packet_out.frame",
                format!("{} bytes: a frame is {MIN_FRAME} to {MAX_FRAME} bytes", frame.len()),
            ));
        }
        let ifindex = {
            let state = self.lock();
            state
                .interfaces
                .get(interface)
                .ok_or_else(|| super::interfaces::not_attached(interface).at("packet_out.interface"))?
                .link
                .ifindex
        };
        if ingress {
            self.dataplane.reinject(ifindex, frame)?;
        } else {
            self.dataplane.transmit(ifindex, frame)?;
        }
        Ok(())
    }

    /// Deletes flows, all or nothing; NOT_FOUND names the first absent one.
    pub fn delete_flows(&self, keys: &[FlowKey]) -> Result<u64, DomainError> {
        self.delete_flows_each(keys.iter().map(|k| Ok(*k)), Atomicity::AllOrNothing).map_err(BatchError::into_first)
    }

    /// Deletes flows, each entry on its own (a key that did not decode, or names no flow, fails
    /// alone): all or nothing, or the others deleted with `Atomicity::ContinueOnError`.
    pub fn delete_flows_each(
        &self,
        keys: impl IntoIterator<Item = super::Entry<FlowKey>>,
        atomicity: Atomicity,
    ) -> Result<u64, BatchError> {
        let mut state = self.lock();
        let mut found = Vec::new();
        let mut failed = Vec::new();
        let mut entries = 0;
        for (i, k) in keys.into_iter().enumerate() {
            entries += 1;
            let k = match k {
                Ok(k) => k,
                Err(error) => {
                    failed.push(super::EntryError { index: i, error });
                    continue;
                }
            };
            match self.dataplane.get_flow(&k).map_err(DomainError::from)? {
                Some(v) => found.push((k, v)),
                None => failed.push(super::EntryError {
                    index: i,
                    error: DomainError::NotFound { kind: "flow", name: describe(&k), detail: "" }
                        .at(format!("keys[{i}]")),
                }),
            }
        }
        if !failed.is_empty() && (atomicity == Atomicity::AllOrNothing || found.is_empty()) {
            return Err(BatchError::Entries { atomicity, failed, entries, applied: 0, generation: state.generation });
        }
        let applied = entries - failed.len();
        let writes = found
            .iter()
            .map(|(k, v)| Write { op: KernelOp::RemoveFlow(*k), undo: vec![KernelOp::PutFlow(*k, *v)], at: None })
            .collect();
        let intent = self.apply_logged(&state, writes)?;
        // A key listed twice went once.
        let mut once = HashSet::with_capacity(found.len());
        found.retain(|(k, _)| once.insert(*k));
        for (_, v) in &found {
            if v.action == FLOW_HOLD {
                self.resolve_hold(&mut state, v.request_id);
            }
        }
        let removed = self.removal_notices(&found, FlowRemovedReason::Deleted);
        self.publish_resolved(&state);
        self.bump_volatile(&mut state);
        drop(intent);
        let generation = state.generation;
        drop(state);
        self.announce(removed);
        if failed.is_empty() {
            return Ok(generation);
        }
        Err(BatchError::Entries { atomicity, failed, entries, applied, generation })
    }

    /// The flow tables' entries, counted by a walk a page at a time (the kernel keeps no count of
    /// an LRU hash's entries): ~0.2 us per entry, the dataplane's lock held for a page at most.
    pub fn count_flows(&self) -> Result<FlowCounts, DomainError> {
        let mut c = FlowCounts::default();
        self.dataplane.walk_flows(&mut |page| {
            for (k, v) in page {
                let family = usize::from(k.src.is_ipv6());
                match v.action {
                    FLOW_FORWARD => c.forward[family] += 1,
                    FLOW_DROP => c.drop[family] += 1,
                    _ => c.hold[family] += 1,
                }
            }
        })?;
        Ok(c)
    }

    /// Every flow (optionally of one VRF), with counters.
    pub fn list_flows(&self, vrf: Option<u32>) -> Result<Vec<FlowView>, DomainError> {
        let state = self.lock();
        let flows = self.dataplane.flows()?;
        let book = self.flow_book.lock();
        let now = monotonic_ns();
        let mut out = Vec::new();
        for (k, v) in flows {
            if vrf.is_some_and(|x| x != k.vrf) {
                continue;
            }
            let action = match v.action {
                FLOW_FORWARD => Some(FlowAction::Forward(state.nh_ids.get(&v.nexthop).copied().unwrap_or(u32::MAX))),
                FLOW_DROP => Some(FlowAction::Drop),
                _ => None,
            };
            out.push(FlowView {
                key: k,
                action,
                request_id: v.request_id,
                packets: v.packets,
                bytes: v.bytes,
                idle: Duration::from_nanos(now.saturating_sub(v.last_seen_ns)),
                idle_timeout: book.of(&k, &v).and_then(|e| e.idle),
                hard_timeout: book.of(&k, &v).and_then(|e| e.hard),
            });
        }
        out.sort_by_key(|f| f.key);
        Ok(out)
    }

    /// The writes that remove the flows forwarding through next-hop `slots` (about to be
    /// cleared and reused), each undone by putting the flow back, and the flows they remove (for
    /// `removal_notices` once the batch committed). One walk of the flow tables for all of
    /// them: a walk visits every bucket (~1 ms), however few flows there are.
    pub(super) fn purge_flows_via(&self, slots: &HashSet<u32>) -> Result<(Vec<Write>, Vec<Entry>), DomainError> {
        let purged: Vec<Entry> = self
            .dataplane
            .flows()?
            .into_iter()
            .filter(|(_, v)| v.action == FLOW_FORWARD && slots.contains(&v.nexthop))
            .collect();
        let writes = purged
            .iter()
            .map(|(k, v)| Write { op: KernelOp::RemoveFlow(*k), undo: vec![KernelOp::PutFlow(*k, *v)], at: None })
            .collect();
        Ok((writes, purged))
    }

    /// Records in the book the flows of a committed install that have timeouts or answered a
    /// miss (its request id: the HOLD's it replaced; the reply direction shares it), and forgets
    /// the earlier flows of keys installed again without.
    fn book_installed(&self, batch: &[FlowSpec], planned: &[Planned], previous: &[Option<FlowValue>]) {
        let mut book = self.flow_book.lock();
        let mut request_id = 0;
        for (p, prev) in planned.iter().zip(previous) {
            let spec = &batch[p.spec];
            let held = prev.filter(|v| v.action == FLOW_HOLD).map(|v| v.request_id);
            request_id = match (held, p.reverse, spec.target) {
                (Some(id), _, _) => id,
                (None, true, _) => request_id,
                (None, false, FlowTarget::Request(id)) => id,
                (None, false, FlowTarget::Key(_)) => 0,
            };
            if spec.idle_timeout.is_some() || spec.hard_timeout.is_some() || request_id != 0 {
                let e = aging::Installed::new(spec.idle_timeout, spec.hard_timeout, request_id, p.value.created_ns);
                book.insert(p.key, e);
            } else {
                book.flows.remove(&p.key);
            }
        }
    }

    fn resolve_hold(&self, state: &mut State, request_id: u64) -> Option<Held> {
        let h = self.held().held.remove(&request_id);
        if h.is_some() {
            state.flows.resolved += 1;
        }
        h
    }

    fn publish_resolved(&self, state: &State) {
        if let Err(e) = self.dataplane.set_holds_resolved(state.flows.resolved) {
            warn!(error = %e, "publishing resolved HOLDs failed; the HOLD cap may bind early");
        }
    }
}

fn value_of(state: &State, action: FlowAction) -> Result<FlowValue, DomainError> {
    let now = monotonic_ns();
    Ok(match action {
        FlowAction::Forward(id) => {
            let nh = state.nexthops.get(&id).ok_or_else(|| nexthops::not_found(id))?;
            FlowValue {
                action: FLOW_FORWARD,
                nexthop: nh.slot,
                created_ns: now,
                last_seen_ns: now,
                ..Default::default()
            }
        }
        FlowAction::Drop => FlowValue { action: FLOW_DROP, created_ns: now, last_seen_ns: now, ..Default::default() },
    })
}

fn describe(k: &FlowKey) -> String {
    let ep = |a: IpAddr, p: u16| match a {
        IpAddr::V4(a) => format!("{a}:{p}"),
        IpAddr::V6(a) => format!("[{a}]:{p}"),
    };
    format!("vrf {} proto {} {} -> {}", k.vrf, k.proto, ep(k.src, k.sport), ep(k.dst, k.dport))
}

/// CLOCK_MONOTONIC in ns, the clock of `bpf_ktime_get_ns`.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// One kernel entry an `InstallFlows` batch writes.
struct Planned {
    key: FlowKey,
    value: FlowValue,
    /// Index of its flow in the batch, and whether it is that flow's reply direction.
    spec: usize,
    reverse: bool,
}

/// The kernel entries entry `spec` of an `InstallFlows` batch writes (its reply direction
/// too), validated against the state; errors name it `flows[position]`.
fn plan_entry(
    state: &State,
    held: &held::IdRing<Held>,
    position: usize,
    spec: usize,
    f: &FlowSpec,
) -> Result<Vec<Planned>, DomainError> {
    let i = spec;
    let at = |field: &str| format!("flows[{position}].{field}");
    let key = match f.target {
        FlowTarget::Key(k) => k,
        FlowTarget::Request(id) => held.get(&id).map(|h| h.key).ok_or_else(|| {
            DomainError::NotFound { kind: "held flow miss", name: format!("request {id}"), detail: "" }
                .at(at("request_id"))
        })?,
    };
    if key.src.is_ipv4() != key.dst.is_ipv4() {
        return Err(DomainError::invalid(at("key"), "source and destination of different families"));
    }
    if !state.vrfs.contains_key(&key.vrf) {
        return Err(vrfs::not_found(key.vrf).at(at("key.vrf")));
    }
    for (field, t) in [("idle_timeout", f.idle_timeout), ("hard_timeout", f.hard_timeout)] {
        if t.is_some_and(|t| t.is_zero()) {
            return Err(DomainError::invalid(at(field), "at least 1 ms, or none"));
        }
    }
    let value = value_of(state, f.action).map_err(|e| e.at(at("next_hop")))?;
    let mut writes = vec![Planned { key, value, spec: i, reverse: false }];
    if let Some(r) = f.reverse {
        let value = value_of(state, r).map_err(|e| e.at(at("reverse_next_hop")))?;
        writes.push(Planned { key: key.reversed(), value, spec: i, reverse: true });
    }
    Ok(writes)
}

/// The interface a FORWARD flow's packets leave by, when its next hop is an ENCAP one (one
/// interface, a fixed rewrite): its ifindex. `None` for anything else (ECMP, gateway, RECEIVE,
/// DROP), whose packets a live test run must place.
fn single_egress(state: &State, v: &FlowValue) -> Option<u32> {
    match v.action {
        // Dropped by the program whatever the frame: a plain test run counts it, nothing to send.
        FLOW_DROP => return Some(NO_EGRESS),
        FLOW_FORWARD => {}
        _ => return None,
    }
    let id = state.nh_ids.get(&v.nexthop)?;
    match &state.nexthops.get(id)?.spec {
        nexthops::NextHopSpec::Encap { interface, .. } => state.interfaces.get(interface).map(|i| i.link.ifindex),
        nexthops::NextHopSpec::Discard => Some(NO_EGRESS),
        _ => None,
    }
}

/// The write that puts back what a flow's entry was before (`None`: absent).
fn put_back(key: FlowKey, previous: &Option<FlowValue>) -> KernelOp {
    match previous {
        Some(v) => KernelOp::PutFlow(key, *v),
        None => KernelOp::RemoveFlow(key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fake::FakeDataplane;

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

    /// A forwarding next hop (id 1) and one flow through it (source port 1).
    fn with_flow() -> Domain<FakeDataplane> {
        let d = Domain::new(FakeDataplane::default());
        d.add_nexthops(vec![crate::domain::NewNextHop { id: 1, spec: crate::domain::NextHopSpec::Receive }]).unwrap();
        let spec = FlowSpec {
            target: FlowTarget::Key(key(1)),
            action: FlowAction::Forward(1),
            reverse: None,
            idle_timeout: None,
            hard_timeout: None,
        };
        d.install_flows(vec![spec]).unwrap();
        d
    }

    #[test]
    fn install_flows_kernel_failure_at_every_write_changes_nothing() {
        let errors = crate::domain::txn::testing::fail_at_every_write(with_flow, |d| {
            d.install_flows(vec![
                FlowSpec {
                    target: FlowTarget::Key(key(2)),
                    action: FlowAction::Forward(1),
                    reverse: Some(FlowAction::Drop),
                    idle_timeout: None,
                    hard_timeout: None,
                },
                FlowSpec {
                    target: FlowTarget::Key(key(1)),
                    action: FlowAction::Drop,
                    reverse: None,
                    idle_timeout: None,
                    hard_timeout: None,
                },
            ])
        });
        assert_eq!(errors.len(), 3, "a flow, its reply, a flow replaced: {errors:?}");
    }

    #[test]
    fn delete_flows_kernel_failure_at_every_write_changes_nothing() {
        let setup = || {
            let d = with_flow();
            let spec = FlowSpec {
                target: FlowTarget::Key(key(2)),
                action: FlowAction::Drop,
                reverse: Some(FlowAction::Drop),
                idle_timeout: None,
                hard_timeout: None,
            };
            d.install_flows(vec![spec]).unwrap();
            d
        };
        let errors = crate::domain::txn::testing::fail_at_every_write(setup, |d| {
            d.delete_flows(&[key(2), key(1), key(2).reversed()])
        });
        assert_eq!(errors.len(), 3, "{errors:?}");
    }
}
