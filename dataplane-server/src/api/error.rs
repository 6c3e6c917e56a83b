//! The one place where errors become gRPC statuses: the domain's, by kind, and the few a
//! handler meets outside the domain (a blocking task that did not finish, a netlink dump), which
//! are INTERNAL.

use dataplane_proto::{rpc, v1 as pb};
use prost::Message;
use thiserror::Error;
use tonic::{Code, Status};
use tracing::error;

use crate::{
    domain::{Atomicity, BatchError, DomainError, ErrorKind},
    events::netlink::NetlinkError,
};

/// The `Any` type of the one detail a failed batch's status carries.
pub const BATCH_STATUS_TYPE: &str = "type.googleapis.com/dataplane.v1.BatchStatus";
/// Failed entries a batch's details list at most; the others are counted (`unlisted`).
const MAX_LISTED: usize = 64;
/// Bytes of an entry's message a batch's details keep.
const MAX_ENTRY_MESSAGE: usize = 256;
/// Bytes of encoded entries a batch's details hold at most: the trailer carries them in base64
/// (4/3 as many), next to the message, and gRPC C-core (Python's client) refuses metadata past
/// a soft limit of 8 KiB. 64 entries of 256 bytes would be 16 KiB: this is the cap that holds.
const MAX_LISTED_BYTES: usize = 4096;

/// A domain call run on the blocking pool (see [`super::blocking`]) that did not return: it
/// panicked, or the runtime is shutting down.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct TaskFailed(#[from] pub tokio::task::JoinError);

/// INTERNAL, logged: the client cannot do anything about it, the operator should see it.
fn internal(msg: String) -> Status {
    error!(error = %msg, "internal dataplane error");
    Status::internal(msg)
}

/// The gRPC code of a kind of failure.
fn code(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::Exhausted => Code::ResourceExhausted,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::Internal => Code::Internal,
    }
}

impl From<DomainError> for Status {
    fn from(e: DomainError) -> Self {
        let msg = e.to_string();
        match e.kind() {
            ErrorKind::Internal => internal(msg),
            kind => Status::new(code(kind), msg),
        }
    }
}

impl From<BatchError> for Status {
    fn from(e: BatchError) -> Self {
        batch_status(e)
    }
}

/// The status of a batch write that did not apply every entry. Failed entries: the first one's
/// code; its message (all or nothing, as a whole-batch error reads), or "K of N entries failed,
/// the others were applied; first: ..." (continue on error); and every failed entry as a
/// `BatchStatus` in the details (`grpc-status-details-bin`), capped to stay within every gRPC
/// implementation's metadata limit. A failure of the batch as a whole: its own status, no
/// details.
fn batch_status(e: BatchError) -> Status {
    let (atomicity, failed, entries, applied, generation) = match e {
        BatchError::Batch(e) => return e.into(),
        BatchError::Entries { atomicity, failed, entries, applied, generation } => {
            (atomicity, failed, entries, applied, generation)
        }
    };
    let Some(first) = failed.first() else {
        return internal("a batch reported failed entries without any".into());
    };
    let kind = first.error.kind();
    let message = match atomicity {
        Atomicity::AllOrNothing => first.error.to_string(),
        Atomicity::ContinueOnError => format!(
            "{} of {entries} entries failed, the others were applied; first: {}",
            failed.len(),
            first.error
        ),
    };
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let mut batch = pb::BatchStatus {
        failed: Vec::with_capacity(failed.len().min(MAX_LISTED)),
        unlisted: 0,
        entries: count(entries),
        applied: count(applied),
        generation,
    };
    let mut listed_bytes = 0;
    for f in &failed {
        if batch.failed.len() < MAX_LISTED && listed_bytes < MAX_LISTED_BYTES {
            let mut message = f.error.to_string();
            truncate(&mut message, MAX_ENTRY_MESSAGE);
            let entry = pb::EntryStatus { index: count(f.index), code: code(f.error.kind()) as i32, message };
            listed_bytes += entry.encoded_len() + 4;
            if listed_bytes <= MAX_LISTED_BYTES {
                batch.failed.push(entry);
                continue;
            }
        }
        batch.unlisted += 1;
    }
    let details = rpc::Status {
        code: code(kind) as i32,
        message: message.clone(),
        details: vec![prost_types::Any { type_url: BATCH_STATUS_TYPE.into(), value: batch.encode_to_vec() }],
    };
    if kind == ErrorKind::Internal {
        error!(error = %message, "internal dataplane error");
    }
    Status::with_details(code(kind), message, details.encode_to_vec().into())
}

/// Cuts `s` to at most `max` bytes, on a character boundary.
fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

impl From<TaskFailed> for Status {
    fn from(e: TaskFailed) -> Self {
        internal(e.to_string())
    }
}

impl From<NetlinkError> for Status {
    fn from(e: NetlinkError) -> Self {
        internal(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn status_from_domain_error_maps_each_kind() {
        let cases = [
            (DomainError::invalid("name", "must not be empty"), Code::InvalidArgument),
            (DomainError::NotFound { kind: "interface", name: "x".into(), detail: "" }, Code::NotFound),
            (DomainError::AlreadyExists { kind: "interface", name: "x".into() }, Code::AlreadyExists),
            (DomainError::Exhausted { what: "interface slots", capacity: 1 }, Code::ResourceExhausted),
            (DomainError::FailedPrecondition("busy".into()), Code::FailedPrecondition),
        ];
        for (e, code) in cases {
            assert_eq!(Status::from(e).code(), code);
        }
        let s = Status::from(DomainError::invalid("interfaces[3].name", "must not be empty"));
        assert_eq!(s.message(), "interfaces[3].name: must not be empty");
        let nested = DomainError::NotFound { kind: "next hop", name: "9".into(), detail: "" }.at("routes[2].next_hop");
        let s = Status::from(nested);
        assert_eq!((s.code(), s.message()), (Code::NotFound, "routes[2].next_hop: next hop 9 not found"));
    }

    #[tokio::test]
    async fn status_from_task_failed_panicked_task_is_internal_with_join_message() {
        let join = tokio::task::spawn_blocking(|| panic!("boom")).await.unwrap_err();
        let want = join.to_string();
        let s = Status::from(TaskFailed(join));
        assert_eq!((s.code(), s.message()), (Code::Internal, want.as_str()));
    }

    #[test]
    fn status_from_netlink_error_is_internal_with_its_message() {
        let e = NetlinkError::Socket { source: std::io::Error::other("no netlink here") };
        let s = Status::from(e);
        assert_eq!((s.code(), s.message()), (Code::Internal, "opening the rtnetlink socket: no netlink here"));
    }
}
