//! Per-entry results of batch writes (P4Runtime's atomicity, gRIBI's per-entry results). A
//! batch kind checks each entry on its own and collects every failure, in request order; then
//! [`Atomicity`] decides: all or nothing refuses the batch if any entry failed, continue on
//! error applies the valid entries as one batch (through `txn`, so still atomic among
//! themselves) and reports the others. A failure of the batch as a whole (capacity, a kernel
//! write) is not an entry's: it changes nothing, whatever the atomicity.

use super::DomainError;

/// How a batch treats its failed entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Atomicity {
    /// Any failed entry fails the batch: nothing changes.
    #[default]
    AllOrNothing,
    /// The valid entries are applied as one atomic write; the failed ones change nothing.
    ContinueOnError,
}

/// A batch entry as the API decoded it: a decoding failure (a malformed prefix) is that entry's
/// failure like any other.
pub type Entry<T> = Result<T, DomainError>;

/// A failed entry: its position in the request and why (naming the field as a whole-batch
/// error would: `routes[7].next_hop: next hop 9 not found`).
#[derive(Debug)]
pub struct EntryError {
    pub index: usize,
    pub error: DomainError,
}

/// Why a batch write did not apply every entry.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// Entries failed (`failed` in request order, never empty). All or nothing: nothing changed
    /// and `applied` is 0; continue on error: the `applied` others are in, as `generation`.
    #[error("{}", failed.first().map(|f| f.error.to_string()).unwrap_or_default())]
    Entries {
        atomicity: Atomicity,
        failed: Vec<EntryError>,
        entries: usize,
        applied: usize,
        /// The generation after the call.
        generation: u64,
    },
    /// The batch as a whole failed: nothing changed.
    #[error(transparent)]
    Batch(#[from] DomainError),
}

impl BatchError {
    /// The error an all-or-nothing caller that wants one error gets: the first entry's.
    pub fn into_first(self) -> DomainError {
        match self {
            Self::Entries { failed, .. } => failed.into_iter().next().map(|f| f.error).unwrap_or_else(|| {
                DomainError::FailedPrecondition("a batch reported failed entries without any".into())
            }),
            Self::Batch(e) => e,
        }
    }
}

/// The failed entries of a batch being checked, and what the atomicity makes of them.
pub(super) struct Failures {
    pub atomicity: Atomicity,
    pub failed: Vec<EntryError>,
    /// Entries in the request.
    pub entries: usize,
}

impl Failures {
    pub fn new(atomicity: Atomicity) -> Self {
        Self { atomicity, failed: Vec::new(), entries: 0 }
    }

    pub fn push(&mut self, index: usize, error: DomainError) {
        self.failed.push(EntryError { index, error });
    }

    /// Whether the batch stops before any write: an entry failed and the batch is all or
    /// nothing, or no entry is left to apply. `Err` is what the caller returns then.
    pub fn stop(&mut self, valid: usize, generation: u64) -> Result<(), BatchError> {
        if self.failed.is_empty() || (self.atomicity == Atomicity::ContinueOnError && valid > 0) {
            return Ok(());
        }
        Err(self.report(0, generation))
    }

    /// The outcome once `applied` valid entries are in (as `generation`).
    pub fn finish(mut self, applied: usize, generation: u64) -> Result<u64, BatchError> {
        if self.failed.is_empty() {
            Ok(generation)
        } else {
            Err(self.report(applied, generation))
        }
    }

    fn report(&mut self, applied: usize, generation: u64) -> BatchError {
        // A kind that checks in passes finds failures out of order; stable, so one entry's
        // failures keep theirs.
        self.failed.sort_by_key(|f| f.index);
        BatchError::Entries {
            atomicity: self.atomicity,
            failed: std::mem::take(&mut self.failed),
            entries: self.entries,
            applied,
            generation,
        }
    }
}
