//! Batches as plan -> apply. A batch is first planned: validated and computed whole (kernel
//! parameters, slots) while the kernel and the domain's maps stay as they are. It is then
//! applied through a [`Journal`], which performs each kernel write and records its inverse; if a
//! write fails, the journal undoes the ones before it in reverse order, so the kernel is as it
//! was and the error names the entry that failed. The domain's state takes the change only after
//! every write succeeded ([`Journal::commit`]).
//!
//! The inverses are values ([`KernelOp`]), not closures, so that a log can be read (and logged)
//! and one mechanism serves every batch kind.

use dataplane_common::{flow::FlowValue, RouteRecord4};

use super::{intent::Pending, Domain, DomainError, State};
use crate::{
    dataplane::{Dataplane, DataplaneError, FlowKey, NextHopParams, PolicyImage},
    net::Prefix,
};

/// What a batch does when an entry exists already.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnExisting {
    /// Refuse the batch (ALREADY_EXISTS naming the entry), unless a resync is open.
    #[default]
    Refuse,
    /// Keep the entry if it is the same, or rewrite it in place if it changed.
    Replace,
}

/// One kernel write, as performed by a batch or as the inverse that undoes one. Kept small
/// (asserted below): batches hold one per entry.
#[derive(Clone, Debug)]
pub(super) enum KernelOp {
    InsertRoute {
        vrf: u32,
        prefix: Prefix,
        nexthop_slot: u32,
    },
    RemoveRoute {
        vrf: u32,
        prefix: Prefix,
    },
    /// Sets the IPv4 route records' high-water mark.
    Route4Reserve(u32),
    Route4Store(Vec<(u32, RouteRecord4)>),
    Route4Clear(Vec<u32>),
    SetNextHop {
        slot: u32,
        params: NextHopParams,
        fresh: bool,
    },
    ClearNextHop(u32),
    PutFlow(FlowKey, FlowValue),
    RemoveFlow(FlowKey),
    SetPolicyAttachment {
        slot: u32,
        direction: u32,
        word: u32,
    },
    /// Boxed: an image's header is 2 KiB, and every op would be that size (a 10,000-route
    /// batch's undo list of 10,000 ops cost 20 MiB of copies, 40% of AddRoutes' time).
    WritePolicy(Box<PolicyImage>),
    ClearPolicy(Box<PolicyImage>),
    /// A grace period: no XDP program still reads what was unpublished before it.
    WaitForReaders,
}

/// Batches build one op per entry (and an undo list per entry): a variant that grows the enum
/// slows every batch.
const _: () = assert!(std::mem::size_of::<KernelOp>() <= 128, "KernelOp grew: box the large variant");

impl KernelOp {
    pub(super) fn run<D: Dataplane>(&self, dp: &D) -> Result<(), DataplaneError> {
        match self {
            Self::InsertRoute { vrf, prefix, nexthop_slot } => dp.insert_route(*vrf, prefix, *nexthop_slot),
            Self::RemoveRoute { vrf, prefix } => dp.remove_route(*vrf, prefix),
            Self::Route4Reserve(mark) => dp.route4_reserve(*mark),
            Self::Route4Store(records) => dp.route4_store(records),
            Self::Route4Clear(slots) => dp.route4_clear(slots),
            Self::SetNextHop { slot, params, fresh } => dp.set_nexthop(*slot, params, *fresh),
            Self::ClearNextHop(slot) => dp.clear_nexthop(*slot),
            Self::PutFlow(key, value) => dp.put_flow(key, value),
            Self::RemoveFlow(key) => dp.remove_flow(key),
            Self::SetPolicyAttachment { slot, direction, word } => dp.set_policy_attachment(*slot, *direction, *word),
            Self::WritePolicy(image) => dp.write_policy(image),
            Self::ClearPolicy(image) => dp.clear_policy(image),
            Self::WaitForReaders => dp.wait_for_readers(),
        }
    }
}

/// The undo log of a batch being applied. Dropped without [`Self::commit`] (an error returned
/// with `?` included), it undoes every write it recorded, last first.
pub(super) struct Journal<'a, D: Dataplane> {
    dataplane: &'a D,
    /// The inverses of the writes so far, to run from the end (each write's own inverses are
    /// stored back to front, so they run in the order given).
    undo: Vec<KernelOp>,
}

impl<'a, D: Dataplane> Journal<'a, D> {
    pub(super) fn new(dataplane: &'a D) -> Self {
        Self { dataplane, undo: Vec::new() }
    }

    /// Performs `op`; once it succeeded, `undo` (run in this order) is what takes it back.
    pub(super) fn write<I>(&mut self, op: KernelOp, undo: I) -> Result<(), DataplaneError>
    where
        I: IntoIterator<Item = KernelOp>,
        I::IntoIter: DoubleEndedIterator,
    {
        op.run(self.dataplane)?;
        self.wrote(undo);
        Ok(())
    }

    /// Records the undo of a write the dataplane made in a call of its own (a batched insert).
    pub(super) fn wrote<I>(&mut self, undo: I)
    where
        I: IntoIterator<Item = KernelOp>,
        I::IntoIter: DoubleEndedIterator,
    {
        self.undo.extend(undo.into_iter().rev());
    }

    /// The batch is in the kernel: nothing to undo any more.
    pub(super) fn commit(mut self) {
        self.undo.clear();
    }
}

impl<D: Dataplane> Drop for Journal<'_, D> {
    fn drop(&mut self) {
        for op in self.undo.drain(..).rev() {
            // Best effort: the batch's own error is what the caller reports.
            if let Err(e) = op.run(self.dataplane) {
                tracing::error!(error = %e, op = ?op, "undoing a kernel write of a failed batch failed");
            }
        }
    }
}

/// A planned kernel write: what to do, what undoes it, and the request entry it is for.
pub(super) struct Write {
    pub op: KernelOp,
    /// Run in this order to take `op` back.
    pub undo: Vec<KernelOp>,
    /// The request field named in the error if `op` fails (`next_hops[2]`); `None`: the
    /// request as a whole.
    pub at: Option<String>,
}

impl<D: Dataplane> Journal<'_, D> {
    /// Performs planned writes in order, all or nothing.
    pub(super) fn apply(dataplane: &D, writes: Vec<Write>) -> Result<(), DomainError> {
        let mut journal = Journal::new(dataplane);
        for w in writes {
            if let Err(e) = journal.write(w.op, w.undo) {
                let e = DomainError::from(e);
                return Err(match w.at {
                    Some(at) => e.at(at),
                    None => e,
                });
            }
        }
        journal.commit();
        Ok(())
    }
}

/// The undo operations of `writes`, in the order that takes them all back: the last write's
/// first, each write's own in the order given (as [`Journal`] runs them).
pub(super) fn undo_order(writes: &[Write]) -> impl Iterator<Item = &KernelOp> {
    writes.iter().rev().flat_map(|w| w.undo.iter())
}

impl<D: Dataplane> Domain<D> {
    /// [`Journal::apply`], safe across a crash: the batch's intent (see `intent`) is recorded
    /// before its first write. Hold the returned intent until the batch committed (past `bump`):
    /// dropping it removes the record. On an error the writes were undone in process and the
    /// record is gone.
    pub(super) fn apply_logged(&self, state: &State, writes: Vec<Write>) -> Result<Pending, DomainError> {
        let intent = self.intend(state.generation + 1, writes.len(), undo_order(&writes))?;
        Journal::apply(&self.dataplane, writes)?;
        Ok(intent)
    }
}

/// The half-way failure check every batch kind's tests use.
#[cfg(test)]
pub(super) mod testing {
    use crate::domain::{fake::FakeDataplane, Domain, DomainError, ErrorKind};

    /// Fake kernel writes a batch makes after it committed: the flat tables, the generation,
    /// the published HOLD count, freed records. They are best effort, not part of the batch.
    const AFTER_COMMIT: [&str; 5] =
        ["fib4_store", "fib4_set_root", "set_generation", "set_holds_resolved", "route4_clear"];

    /// What a failed batch must leave as it was: the fake kernel's maps, the domain's
    /// listings and its generation (`times`: flows' timestamps included).
    fn observe(d: &Domain<FakeDataplane>, times: bool) -> impl PartialEq + std::fmt::Debug {
        let listings = format!(
            "{:?}",
            (
                d.list_routes(None, None),
                d.list_nexthops().unwrap(),
                d.list_interfaces(None).unwrap(),
                d.list_policies(None).unwrap(),
                d.list_vrfs(),
            )
        );
        let (maps, fib4) = d.dataplane().snapshot(times);
        (d.status().unwrap().generation, listings, maps, fib4.len(), fib4)
    }

    /// Runs `batch` on domains `setup` builds, the fake kernel failing its first write, then its
    /// second, ... up to its last before it commits. Each failure must be an internal error that
    /// leaves everything as before, and the same batch must then succeed with the same outcome
    /// as without the failure (so slots and table allocations were given back). Returns the
    /// errors, one per write.
    pub(in crate::domain) fn fail_at_every_write(
        setup: impl Fn() -> Domain<FakeDataplane>,
        batch: impl Fn(&Domain<FakeDataplane>) -> Result<u64, DomainError>,
    ) -> Vec<String> {
        let clean = setup();
        let from = clean.dataplane().write_log().len();
        batch(&clean).expect("the batch succeeds when the kernel does");
        let log = clean.dataplane().write_log();
        let writes = log[from..].iter().take_while(|w| !AFTER_COMMIT.contains(w)).count();
        assert!(writes > 0, "the batch writes nothing: {:?}", &log[from..]);
        let mut errors = Vec::new();
        for n in 1..=writes {
            let d = setup();
            let before = observe(&d, true);
            d.dataplane().fail_write(n as i64);
            let e = batch(&d).expect_err("the failed write fails the batch");
            assert_eq!(e.kind(), ErrorKind::Internal, "write {n} of {writes}: {e}");
            assert!(observe(&d, true) == before, "write {n} of {writes} ({}) left a change", log[from + n - 1]);
            batch(&d).unwrap_or_else(|e| panic!("after failing write {n}, the batch again: {e}"));
            let (after, expected) = (observe(&d, false), observe(&clean, false));
            if after != expected {
                panic!("after failing write {n}, the batch ends elsewhere:\n{after:?}\n{expected:?}");
            }
            errors.push(e.to_string());
        }
        errors
    }
}
