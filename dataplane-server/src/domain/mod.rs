//! The domain: the only owner of the dataplane's state. Validates, allocates ids, keeps the
//! configuration generation, and drives the kernel through the [`Dataplane`] trait so that it can
//! be unit-tested against an in-memory fake.

pub mod arbitration;
mod batch;
#[cfg(test)]
mod batch_tests;
mod classifier;
mod error;
#[cfg(test)]
mod fake;
mod fib4;
mod flows;
pub mod intent;
mod interfaces;
mod nexthops;
pub mod persist;
mod policies;
#[cfg(test)]
mod restore_tests;
mod resync;
mod routes;
mod sharded;
mod slots;
mod status;
mod telemetry;
mod txn;
mod vrfs;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Mutex, MutexGuard},
    time::Instant,
};

/// The kernel seam's vocabulary the API speaks too (the domain's views and requests carry these),
/// re-exported so that `api/` depends on the domain alone.
pub use crate::dataplane::{Dataplane, FlowKey, FlowMiss, Hook, ProgramStatus, XdpMode};
pub use batch::{Atomicity, BatchError, Entry, EntryError};
pub use error::{DomainError, ErrorKind};
pub use fib4::Lookup as Ipv4Lookup;
pub use flows::{
    BatchOutcome, FlowAction, FlowCounts, FlowMode, FlowRemoved, FlowRemovedReason, FlowRemovedSink, FlowSpec,
    FlowTarget, FlowView,
};
pub use interfaces::{AddInterface, InterfaceName, InterfaceView};
pub use nexthops::{NewNextHop, NextHopSpec, NextHopState, NextHopView};
pub use policies::{
    AttachmentView as PolicyAttachmentView, Direction, PolicyName, PolicyView, RuleAction, RuleSpec, RuleView,
};
pub use resync::ResyncReport;
pub use routes::{RouteSpec, RouteView};
pub use status::{AttachmentView, MapView, PinFix, PinHealth, PinRepair, StatusView};
pub use telemetry::StatsSample;
pub use txn::OnExisting;
pub use vrfs::{VrfMode, VrfView};

use std::net::IpAddr;

use crate::net::{Mac, Prefix};
use interfaces::InterfaceEntry;
use nexthops::NextHopEntry;
use policies::{Attached, Installed, PolicyEntry};
use slots::{MarkAllocator, RangeAllocator, SlotAllocator};

/// Mutable state, behind one lock: every mutation is serialised, so a batch or a multi-step
/// kernel update is never interleaved with another.
struct State {
    generation: u64,
    slots: SlotAllocator,
    interfaces: BTreeMap<InterfaceName, InterfaceEntry>,
    vrfs: BTreeMap<u32, VrfMode>,
    nh_slots: SlotAllocator,
    nexthops: BTreeMap<u32, NextHopEntry>,
    /// Next-hop slot -> id, to name what the kernel's maps point at.
    nh_ids: HashMap<u32, u32>,
    /// (VRF, prefix) -> next-hop id and, for IPv4, its record slot.
    routes: BTreeMap<(u32, Prefix), routes::RouteEntry>,
    /// IPv4 route record slots (`ROUTE4_RECORDS`), and the high-water mark the kernel has.
    route4_slots: MarkAllocator,
    route4_mark: u32,
    /// Routes per address family (IPv4, IPv6), kept with `routes` so capacity checks and status
    /// stay O(1) at millions of routes.
    route_counts: [u64; 2],
    policies: BTreeMap<policies::PolicyName, PolicyEntry>,
    policy_attachments: BTreeMap<(InterfaceName, policies::Direction), Attached>,
    policy_tables: SlotAllocator,
    policy_pool: RangeAllocator,
    rule_slots: RangeAllocator,
    /// Tables no attachment points at any more, freed after the next grace period.
    retired_policies: Vec<Installed>,
    flows: flows::Flows,
    /// The kernel's resolved neighbours (netlink): (ifindex, address) -> MAC, what gateway next
    /// hops forward to.
    neighbours: HashMap<(u32, IpAddr), Mac>,
    /// An open resync: what the controller has replayed so far.
    resync: Option<resync::Touched>,
    /// The IPv4 flat tables (what the route stage reads for routes-mode VRFs).
    fib4: fib4::Fib4,
}

/// The dataplane's configuration and the operations on it.
pub struct Domain<D: Dataplane> {
    dataplane: D,
    state: Mutex<State>,
    started: Instant,
    /// Where to ask the kernel to resolve a gateway (the netlink task), once it runs.
    resolver: Mutex<Option<tokio::sync::mpsc::UnboundedSender<NeighbourRequest>>>,
    /// The state file (none in unit tests).
    state_file: Option<std::path::PathBuf>,
    /// Per event stream, the sequence number this run stays below (see `reserve_seq`).
    seq_floors: Mutex<BTreeMap<String, u64>>,
    /// A change not yet in the state file (flow installs write it lazily: see `flush`).
    dirty: std::sync::atomic::AtomicBool,
    /// After a reset the state file stays gone.
    reset_done: std::sync::atomic::AtomicBool,
    /// The pins this domain's kernel state lives in (`Lifecycle::pins_id`), recorded in the state
    /// file so that a file never describes another dataplane's pins.
    pins_id: Option<u64>,
    /// What the start's restore found (for `GetStatus`).
    restored: Mutex<Option<persist::RestoreReport>>,
    /// Installed flows' timeouts and request ids, and where their removals go: beside the state,
    /// under a lock of its own (see `flows::aging`).
    flow_book: flows::FlowBook,
    /// Misses held for a decision (see `flows::HeldStore`).
    held: Mutex<flows::HeldStore>,
    /// The crash journal's file, kept open (see `intent`).
    intent_file: std::sync::Arc<intent::IntentFile>,
    /// Controller sessions and who may write.
    arbiter: std::sync::Arc<arbitration::Arbiter>,
    /// New at every start: a controller that sees it change replays its state.
    instance_id: String,
}

/// 128 bits from the kernel's random source, as hex; if that cannot be read, the start time and
/// pid (still distinct between runs, which is what a controller needs of it).
fn new_instance_id() -> String {
    let mut b = [0u8; 16];
    // SAFETY: getrandom writes at most `b.len()` bytes into the buffer.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        b[..8].copy_from_slice(&(t.as_nanos() as u64).to_be_bytes());
        b[8..12].copy_from_slice(&std::process::id().to_be_bytes());
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A request to the kernel about a gateway: resolve `address` on `ifindex` and keep it resolved
/// (`keep`), or no gateway next hop needs it any more (`!keep`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighbourRequest {
    pub ifindex: u32,
    pub address: IpAddr,
    pub keep: bool,
}

impl<D: Dataplane> Domain<D> {
    pub fn new(dataplane: D) -> Self {
        Self::build(dataplane, None)
    }

    /// A domain that records its state in `state_file` (see `persist`).
    pub fn with_state_file(dataplane: D, state_file: std::path::PathBuf) -> Self {
        Self::build(dataplane, Some(state_file))
    }

    fn build(dataplane: D, state_file: Option<std::path::PathBuf>) -> Self {
        let fib4_capacity = dataplane.fib4_capacity();
        let route4_capacity = dataplane.route4_capacity();
        let pins_id = match dataplane.pins_id() {
            Ok(id) => Some(id),
            Err(e) => {
                tracing::warn!(error = %e, "the pins' identity is unknown: the state file will not record it");
                None
            }
        };
        Self {
            dataplane,
            state: Mutex::new(State {
                generation: 0,
                slots: SlotAllocator::new(dataplane_common::MAX_INTERFACES),
                interfaces: BTreeMap::new(),
                vrfs: BTreeMap::from([(0, VrfMode::Routes)]),
                nh_slots: SlotAllocator::new(dataplane_common::MAX_NEXTHOPS),
                nexthops: BTreeMap::new(),
                nh_ids: HashMap::new(),
                routes: BTreeMap::new(),
                route4_slots: MarkAllocator::new(route4_capacity),
                route4_mark: 0,
                route_counts: [0; 2],
                policies: BTreeMap::new(),
                policy_attachments: BTreeMap::new(),
                policy_tables: SlotAllocator::new(dataplane_common::policy::POLICY_TABLES),
                policy_pool: RangeAllocator::new(dataplane_common::policy::POLICY_POOL_WORDS),
                rule_slots: RangeAllocator::new(dataplane_common::policy::POLICY_RULE_SLOTS),
                retired_policies: Vec::new(),
                flows: flows::Flows::default(),
                neighbours: HashMap::new(),
                resync: None,
                fib4: fib4::Fib4::new(fib4_capacity),
            }),
            resolver: Mutex::new(None),
            state_file,
            seq_floors: Mutex::new(BTreeMap::new()),
            dirty: std::sync::atomic::AtomicBool::new(false),
            reset_done: std::sync::atomic::AtomicBool::new(false),
            pins_id,
            restored: Mutex::new(None),
            started: Instant::now(),
            intent_file: Default::default(),
            held: Mutex::default(),
            arbiter: Default::default(),
            instance_id: new_instance_id(),
            flow_book: flows::FlowBook::default(),
        }
    }

    /// Controller arbitration: sessions by role, and the write fence.
    pub fn arbiter(&self) -> &std::sync::Arc<arbitration::Arbiter> {
        &self.arbiter
    }

    /// The configuration generation now.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// This run's instance id (128 random bits, hex).
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// The dataplane this domain drives (for shutdown).
    pub fn dataplane(&self) -> &D {
        &self.dataplane
    }

    /// A change went into the kernel: a new generation, recorded in the state file and then in
    /// the kernel. This is a batch's commit point (see `intent`): the file first, so that once
    /// either copy has the new generation the file has the change too.
    fn bump(&self, state: &mut State) {
        state.generation += 1;
        self.save(state);
        self.record_generation(state.generation);
    }

    /// As `bump`, for changes too frequent to write the file each time (flow installs): the
    /// generation is in the kernel at once (their commit point), the file follows within one
    /// `flush` period.
    fn bump_volatile(&self, state: &mut State) {
        state.generation += 1;
        self.record_generation(state.generation);
        self.dirty.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn record_generation(&self, generation: u64) {
        if let Err(e) = self.dataplane.set_generation(generation) {
            tracing::warn!(error = %e, generation, "recording the generation in the kernel failed");
        }
    }

    /// Writes the state file if a volatile change is not in it yet.
    pub fn flush(&self) {
        if self.dirty.swap(false, std::sync::atomic::Ordering::Relaxed) {
            let state = self.lock();
            self.save(&state);
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every method leaves State consistent before it can panic, so a poisoned lock still
        // guards valid data.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}
