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
/// The longest status message (a call's own): what a caller sent is echoed in errors, and a
/// megabyte of it in `grpc-message` is a header no client accepts (they see a protocol error,
/// not the INVALID_ARGUMENT that was meant).
const MAX_MESSAGE: usize = 1024;
/// Bytes a batch's status takes in the trailer at most: gRPC C-core (Python's client) refuses
/// metadata past a soft limit of 8 KiB, and the trailer has other headers too. 64 entries of 256
/// bytes would be 16 KiB once encoded: the entries listed are cut to what fits.
const MAX_TRAILER: usize = 7 * 1024;
/// Of a batch's details, what is not the entries (code, `Any` type, framing) at most.
const DETAILS_OVERHEAD: usize = 96;

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

/// The gRPC code of each kind of domain failure.
pub(super) fn code(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::Exhausted => Code::ResourceExhausted,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::Internal => Code::Internal,
    }
}

/// A domain error's code and message where it travels inside a message (a session's stream
/// error, a batch's entry status) rather than as the call's status; INTERNAL is logged as the
/// call's status would be.
pub(super) fn code_and_message(e: &DomainError) -> (Code, String) {
    let msg = short(e.to_string());
    let code = code(e.kind());
    if code == Code::Internal {
        error!(error = %msg, "internal dataplane error");
    }
    (code, msg)
}

impl From<DomainError> for Status {
    fn from(e: DomainError) -> Self {
        let msg = short(e.to_string());
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
    let message = short(match atomicity {
        Atomicity::AllOrNothing => first.error.to_string(),
        Atomicity::ContinueOnError => {
            format!("{} of {entries} entries failed, the others were applied; first: {}", failed.len(), first.error)
        }
    });
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let mut batch = pb::BatchStatus {
        failed: Vec::with_capacity(failed.len().min(MAX_LISTED)),
        unlisted: 0,
        entries: count(entries),
        applied: count(applied),
        generation,
    };
    // The message travels twice: percent-encoded in `grpc-message` (at most 3 bytes per byte),
    // and in the details, which go in base64 (4 bytes per 3).
    let room = MAX_TRAILER.saturating_sub(3 * message.len()) * 3 / 4;
    let room = room.saturating_sub(message.len() + DETAILS_OVERHEAD);
    let mut listed_bytes = 0;
    for f in &failed {
        if batch.failed.len() < MAX_LISTED && listed_bytes < room {
            let mut message = f.error.to_string();
            truncate(&mut message, MAX_ENTRY_MESSAGE);
            let entry = pb::EntryStatus { index: count(f.index), code: code(f.error.kind()) as i32, message };
            // With its tag and length.
            listed_bytes += entry.encoded_len() + 3;
            if listed_bytes <= room {
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
/// `msg` cut to [`MAX_MESSAGE`] bytes on a character boundary, saying how long it was.
fn short(mut msg: String) -> String {
    if msg.len() > MAX_MESSAGE {
        let len = msg.len();
        truncate(&mut msg, MAX_MESSAGE);
        msg.push_str(&format!("... ({len} bytes in all)"));
    }
    msg
}

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
    use super::*;
    use crate::domain::EntryError;

    #[test]
    fn status_from_domain_error_maps_each_kind() {
        let cases = [
            (DomainError::invalid("name", "must not be empty"), Code::InvalidArgument),
            (DomainError::NotFound { kind: "interface", name: "x".into(), detail: "" }, Code::NotFound),
            (DomainError::AlreadyExists { kind: "interface", name: "x".into() }, Code::AlreadyExists),
            (DomainError::Exhausted { what: "interface slots", capacity: 1 }, Code::ResourceExhausted),
            (DomainError::FailedPrecondition("busy".into()), Code::FailedPrecondition),
            (DomainError::PermissionDenied("not primary".into()), Code::PermissionDenied),
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

    /// The BatchStatus in a status's details, as a client decodes it.
    fn details(s: &Status) -> (rpc::Status, pb::BatchStatus) {
        let outer = rpc::Status::decode(s.details()).expect("google.rpc.Status in the details");
        assert_eq!(outer.details.len(), 1, "{outer:?}");
        assert_eq!(outer.details[0].type_url, BATCH_STATUS_TYPE);
        let batch = pb::BatchStatus::decode(outer.details[0].value.as_slice()).unwrap();
        (outer, batch)
    }

    fn entries(atomicity: Atomicity, failed: Vec<DomainError>, entries: usize) -> BatchError {
        let applied = if atomicity == Atomicity::ContinueOnError { entries - failed.len() } else { 0 };
        let failed = failed.into_iter().enumerate().map(|(i, error)| EntryError { index: i * 3 + 1, error }).collect();
        BatchError::Entries { atomicity, failed, entries, applied, generation: 7 }
    }

    fn two_failures() -> Vec<DomainError> {
        vec![
            DomainError::NotFound { kind: "next hop", name: "9".into(), detail: "" }.at("routes[1].next_hop"),
            DomainError::invalid("routes[4].prefix", "host bits set"),
        ]
    }

    #[test]
    fn status_from_domain_error_echoing_a_megabyte_is_cut_to_a_short_message() {
        let e = DomainError::invalid("routes[0].prefix", format!("{:?} is not an IP prefix", "é".repeat(1 << 19)));
        let s = Status::from(e);
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(
            s.message().starts_with("routes[0].prefix: ") && s.message().len() < MAX_MESSAGE + 64,
            "{}",
            s.message().len()
        );
        assert!(s.message().ends_with("bytes in all)"), "says it was cut");
    }

    #[test]
    fn batch_status_all_or_nothing_first_entry_message_every_entry_in_details() {
        let s = Status::from(entries(Atomicity::AllOrNothing, two_failures(), 10));
        assert_eq!((s.code(), s.message()), (Code::NotFound, "routes[1].next_hop: next hop 9 not found"));
        let (outer, batch) = details(&s);
        assert_eq!((outer.code, outer.message.as_str()), (Code::NotFound as i32, s.message()));
        let want = pb::BatchStatus {
            failed: vec![
                pb::EntryStatus {
                    index: 1,
                    code: Code::NotFound as i32,
                    message: "routes[1].next_hop: next hop 9 not found".into(),
                },
                pb::EntryStatus {
                    index: 4,
                    code: Code::InvalidArgument as i32,
                    message: "routes[4].prefix: host bits set".into(),
                },
            ],
            unlisted: 0,
            entries: 10,
            applied: 0,
            generation: 7,
        };
        assert_eq!(batch, want);
    }

    #[test]
    fn batch_status_continue_on_error_message_counts_failed_and_names_first() {
        let s = Status::from(entries(Atomicity::ContinueOnError, two_failures(), 10));
        assert_eq!(s.code(), Code::NotFound);
        assert_eq!(
            s.message(),
            "2 of 10 entries failed, the others were applied; first: routes[1].next_hop: next hop 9 not found"
        );
        let (_, batch) = details(&s);
        assert_eq!((batch.failed.len(), batch.applied, batch.generation), (2, 8, 7));
    }

    /// 10,000 failed entries with long messages (multi-byte characters at the cut): the details
    /// list a prefix of them, each message cut on a character boundary, the rest counted, and
    /// the trailer stays well within gRPC C-core's 8 KiB.
    #[test]
    fn batch_status_many_long_failures_capped_truncated_under_metadata_limit() {
        let long = "é".repeat(400);
        let failed = (0..10_000).map(|i| DomainError::invalid(format!("routes[{i}].prefix"), long.clone())).collect();
        let s = Status::from(entries(Atomicity::ContinueOnError, failed, 20_000));
        assert!(s.message().starts_with("10000 of 20000 entries failed"), "{}", &s.message()[..40]);
        let (_, batch) = details(&s);
        assert!(!batch.failed.is_empty() && batch.failed.len() <= MAX_LISTED, "{}", batch.failed.len());
        assert_eq!(batch.failed.len() as u32 + batch.unlisted, 10_000);
        for (k, e) in batch.failed.iter().enumerate() {
            assert_eq!(e.index as usize, k * 3 + 1, "a prefix of the failures, in order");
            assert!(e.message.len() <= MAX_ENTRY_MESSAGE && e.message.len() > MAX_ENTRY_MESSAGE - 2, "{}", e.message);
        }
        let mut trailer = tonic::codegen::http::HeaderMap::new();
        s.add_header(&mut trailer).unwrap();
        let size: usize = trailer.iter().map(|(k, v)| k.as_str().len() + v.len()).sum();
        assert!(size <= MAX_TRAILER, "{size} bytes of trailer");
        assert!(size > MAX_TRAILER / 2, "{size} bytes of trailer: the room is used");
        // Short messages: the 64-entry cap is what holds.
        let failed = (0..100).map(|i| DomainError::invalid(format!("routes[{i}].prefix"), "bad")).collect();
        let (_, batch) = details(&Status::from(entries(Atomicity::AllOrNothing, failed, 100)));
        assert_eq!((batch.failed.len(), batch.unlisted), (MAX_LISTED, 100 - MAX_LISTED as u32));
    }

    #[test]
    fn batch_status_whole_batch_failure_plain_status_without_details() {
        let e = BatchError::Batch(DomainError::Exhausted { what: "next-hop slots", capacity: 4 });
        let s = Status::from(e);
        assert_eq!((s.code(), s.message()), (Code::ResourceExhausted, "next-hop slots: all 4 in use"));
        assert!(s.details().is_empty());
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
